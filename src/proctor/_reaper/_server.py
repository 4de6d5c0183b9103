"""The resource reaper process: watches the users of named objects, unlinks unused names.

This module is the server side of ``proctor._reaper._client`` (read its docstring for the
whole design). It runs in its own process, started by ``_reaper`` with
``python -c <bootstrap>``, which loads this file *by path*: it imports nothing from
proctor, only the standard library (and psutil where there is no ``/proc``) and
``_ident.py`` beside it, loaded by path too (what its clients need as well), so that
nothing else in the package -- an import error, a slow optional dependency -- can
keep the reaper from starting::

    clients ──JSON lines──▶ _Reaper.read ─▶ handle: R(egister) U(nregister)
                                                    C(ancel) F(orget) S(ync) P(in)
    pidfd readable / poll ─▶ died(user) ─┐
    pin's pipe at EOF ─────▶ unpin ──────┤
    last user unregistered ──────────────┴▶ pending ─(RECLAIM_DELAY)─▶ reclaim:
        first read what clients already sent (a register may be on its way)
        /proc scan (on the scan thread; the loop goes on greeting and reading)
        then read again; a name registered or freed again meanwhile is left
        someone maps it ─▶ adopt them as users (re-scan after 0.1 s, 0.2 s, ... 2 s)
        nobody ─────────▶ shm_unlink / sem_unlink
    once, at start ─▶ sweep: /dev/shm names of dead creators that nobody maps ─▶ unlink

Protocol: one JSON array per line. ``["R", kind, name, pid, start_time]`` adds a
user, ``["U", kind, name, pid]`` removes one (and reclaims the name if it was the
last; a name this reaper never heard of -- released towards a reaper that died,
through the reconnect that started this one -- goes to a reclaim scan too),
``["C", kind, name, pid]`` removes one without reclaiming (a creation that failed),
``["F", kind, name]`` forgets the name (unlinked explicitly), ``["S"]``
processes every death already visible and answers ``ok``. ``["P", [[kind,
name], ...]]`` comes with a descriptor (``SCM_RIGHTS``): the read end of a pipe
whose write end travels with a message; the names are kept, as by one more user,
until that pipe reads EOF (the message was unpickled by its receiver, who
registered the names itself, or dropped unread). ``["N", [[kind, name], ...]]``
answers the JSON list of those names the reaper tracks (has users for, or is
about to reclaim): tests tell their own tree's leftovers in ``/dev/shm`` from
another program's by it. On accepting a
connection the reaper sends ``+``: the client knows it is alive.

Leftovers of a tree killed whole: a container stop or a cgroup kill SIGKILLs the
reaper together with its users, and nobody unlinks their names. Every new reaper
therefore sweeps ``/dev/shm`` once, right after greeting its first client
(:func:`find_orphans`). proctor's names carry their creator's identity --
``proctor-<pid>.<start>.<pid namespace>-<random>`` (:func:`owner_tag`) -- and a
name is reclaimed only when all of these hold:

* it has that form, belongs to this user, and was made in this pid namespace (so
  the pid means what it says here, and every process that could use it is in this
  ``/proc``);
* its creator is dead: no process has that pid with that start time (exact, pid
  reuse included);
* no live process maps it or holds it open (``/proc/*/maps`` and ``/proc/*/fd``,
  matched by inode).

That is sound because proctor's objects only reach other processes as children of a
holder, and children never outlive their parent: once the creator is dead, every
process that got the object from it is dead or dying -- and a dying one still maps
it. A process that would open the name later, by name, after its creator died and
nobody mapped it, finds it gone -- as it would had the tree's own reaper lived
(that reaper unlinks a name whose registered users are all dead and which nobody
maps). Names without the creator's identity -- user-chosen ``SharedMemory`` names,
macOS, a ``/proc`` that is not this namespace's -- are never swept.
"""

from __future__ import annotations

import array
import contextlib
import json
import math
import os
import re
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import ModuleType


def _load_ident() -> ModuleType:
    """``_ident.py``, beside this file: imported within proctor, loaded by path in the reaper."""
    if __package__:
        from . import _ident

        return _ident
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ident.py")
    spec = importlib.util.spec_from_file_location("proctor_reaper_ident", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ident = _load_ident()
#: The kinds of named objects the reaper knows how to unlink.
KINDS = _ident.KINDS
IGNORED_SIGNALS = _ident.IGNORED_SIGNALS
READY = _ident.READY
create_time = _ident.create_time
owner_tag = _ident.owner_tag
_HAVE_PROC_STAT = _ident.HAVE_PROC_STAT
_pid_namespace = _ident.pid_namespace

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading

#: Liveness poll period where pidfds are not available: quick enough that a
#: crashed user's segment disappears "within a second", cheap enough to ignore.
POLL_INTERVAL = 0.2

#: Names kept alive only by processes found in /proc (not registered) are
#: re-scanned this often, so an unregistered user that unmaps without exiting
#: does not pin the name until it dies.
RESCAN_INTERVAL = 2.0

#: The first re-scan of a name just adopted comes this soon, and the wait doubles
#: up to RESCAN_INTERVAL: the mapping found is most often a last reference about
#: to go (a thread still sleeping on a closed queue's semaphore, which wakes within
#: a slice, 0.1-0.5 s), and the name should not outlive it by two seconds. A
#: name mapped for long costs about four more scans than it did, once.
RESCAN_FIRST = 0.1

#: Names freed within this window share one scan of /proc (a few ms each), so a
#: program that closes a thousand segments in a loop costs a few scans, not 1000.
RECLAIM_DELAY = 0.05

#: A freshly started reaper that sees no client within this time exits: its
#: starter died before connecting.
FIRST_CLIENT_TIMEOUT = 30.0

#: Descriptors one read from a client may bring (one per "P" line; the kernel
#: stops a read after data that brought descriptors, so one is the usual count).
_MAX_FDS = 253
#: Received descriptors close-on-exec, as every one Python makes (_wire.cloexec_flag).
_RECV_CLOEXEC = int(getattr(socket, "MSG_CMSG_CLOEXEC", 0))

#: A name made by :func:`owner_tag` as it appears in /dev/shm ("sem." for semaphores).
_OWNED_NAME = re.compile(r"(sem\.)?(proctor-([0-9]+)\.([0-9a-z]+)\.([0-9a-z]+)-[0-9a-f]+)")


def find_orphans() -> list[tuple[str, str]]:
    """The proctor names in ``/dev/shm`` that no live process uses (see the module docstring).

    Cheap when there is nothing to find: one directory listing, and one read of
    ``/proc/<pid>/stat`` per creator named; the scan of every process's maps
    runs only when some creator is dead.
    """
    namespace = _pid_namespace() if _HAVE_PROC_STAT else None
    if namespace is None:
        return []
    try:
        entries = list(os.scandir("/dev/shm"))
    except OSError:
        return []
    uid = os.getuid()
    alive: dict[tuple[int, float], bool] = {}
    candidates: list[tuple[str, str]] = []
    for entry in entries:
        match = _OWNED_NAME.fullmatch(entry.name)
        if match is None or int(match[5], 36) != namespace:
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue  # gone meanwhile
        creator = (int(match[3]), float(int(match[4], 36)))
        if creator not in alive:
            alive[creator] = create_time(creator[0]) == creator[1]
        if not alive[creator]:
            candidates.append(("semaphore" if match[1] else "shm", "/" + match[2]))
    if not candidates:
        return []
    users = _find_users(candidates)
    return [key for key in candidates if not users[key]]


def _unlink(kind: str, name: str) -> None:
    try:
        if kind == "shm":
            import _posixshmem  # type: ignore[import-not-found]  # C module without stubs

            _posixshmem.shm_unlink(name)
        else:
            import _multiprocessing  # type: ignore[import-not-found]  # C module without stubs

            _multiprocessing.sem_unlink(name)
    except FileNotFoundError:
        pass  # unlinked by someone else already: the goal is reached
    except OSError as exc:
        print(f"proctor reaper: cannot unlink {kind} {name!r}: {exc}", file=sys.stderr)


def _dev_path(kind: str, name: str) -> str:
    # Linux (glibc) keeps both kinds as files in /dev/shm; semaphores get "sem.".
    base = name.lstrip("/")
    return "/dev/shm/" + (base if kind == "shm" else "sem." + base)


def _find_users(keys: list[tuple[str, str]]) -> dict[tuple[str, str], set[int]]:
    """Which live processes map or hold each name (Linux /proc; empty elsewhere).

    Files are matched by device and inode, not by path: glibc creates a named
    semaphore under a temporary name and renames it, so its mapping shows as
    ``/dev/shm/sem.XXXXXX (deleted)``. Costs one read of each process's maps and
    one readlink per open descriptor, whatever the number of names.
    """
    found: dict[tuple[str, str], set[int]] = {key: set() for key in keys}
    if not keys or not os.path.isdir("/proc/self/fd"):
        return found
    by_inode: dict[tuple[int, int, int], tuple[str, str]] = {}
    key: tuple[str, str] | None
    for key in keys:
        try:
            st = os.stat(_dev_path(*key))
        except OSError:
            continue  # the name is gone: nobody can open it any more
        by_inode[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = key
    if not by_inode:
        return found
    me, uid = os.getpid(), os.getuid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        try:
            # A segment is 0600: only its owner (or root) can open it.
            if uid != 0 and entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{pid}/maps", "rb") as f:
                maps = f.read()
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or not ours to look at
        if b" /dev/shm/" in maps:
            for line in maps.splitlines():
                if b" /dev/shm/" not in line:
                    continue
                # address perms offset major:minor inode path
                fields = line.split(None, 5)
                major, _, minor = fields[3].partition(b":")
                key = by_inode.get((int(major, 16), int(minor, 16), int(fields[4])))
                if key is not None:
                    found[key].add(pid)
        for fd in fds:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                if not os.readlink(path).startswith("/dev/shm/"):
                    continue
                st = os.stat(path)
            except OSError:
                continue
            key = by_inode.get((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
            if key is not None:
                found[key].add(pid)
    return found


class _Scanner:
    """Runs one /proc scan at a time on a thread and wakes the loop when it is done.

    The scan only reads /proc and /dev/shm and returns its answer; the loop applies
    it (``_Reaper.finish_scan``), so the reaper's state is only touched by the loop.
    """

    def __init__(self) -> None:
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.kind: str | None = None
        self.keys: list[tuple[str, str]] = []
        self.thread: threading.Thread | None = None
        self.answer: list = [None, None, False]  # [result, exception, done]

    def busy(self) -> bool:
        return self.thread is not None

    def done(self) -> bool:
        """The scan in flight has its answer (its thread only has to end)."""
        return self.thread is not None and self.answer[2]

    def start(self, kind: str, keys: list[tuple[str, str]], work: Callable[[], object]) -> None:
        assert self.thread is None, "one scan at a time"
        answer: list = [None, None, False]

        def run() -> None:
            try:
                answer[0] = work()
            except BaseException as exc:  # handed to the loop, which decides
                answer[1] = exc
            finally:
                answer[2] = True
                with contextlib.suppress(OSError):
                    os.write(self.wake_w, b"x")

        # Imported here: the reaper's clients import this module for its constants
        # (KINDS, owner_tag), and a fork server that loads the client would give
        # every child it forks threading and its after-fork hook (issue 17). The
        # reaper runs this on its main thread, as threading's import expects.
        import threading

        self.kind, self.keys, self.answer = kind, keys, answer
        self.thread = threading.Thread(target=run, name=f"reaper-{kind}", daemon=True)
        self.thread.start()

    def finish(self) -> tuple[str, list[tuple[str, str]], object, BaseException | None]:
        """Wait for the scan in flight: (its kind, its keys, its result, its exception)."""
        assert self.thread is not None and self.kind is not None
        self.thread.join()
        kind, keys, (result, error, _) = self.kind, self.keys, self.answer
        self.thread = self.kind = None
        self.keys = []
        return kind, keys, result, error

    def clear_wake(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.wake_r, 64):
                pass

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=5)  # only reads /proc: it ends
        os.close(self.wake_r)
        os.close(self.wake_w)


class _Reaper:
    """The reaper's state and event loop (runs in the reaper process)."""

    def __init__(self, listener: socket.socket, path: str) -> None:
        self.listener = listener
        self.path = path
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, ("accept", None))
        self.clients: dict[socket.socket, bytearray] = {}
        # Descriptors a client sent that no "P" line has taken yet.
        self.client_fds: dict[socket.socket, list[int]] = {}
        # A pin's read end -> the user that stands for it (a negative pid) and its names.
        self.pins: dict[int, tuple[tuple[int, float], list[tuple[str, str]]]] = {}
        self.pin_serial = 0
        self.users: dict[tuple[str, str], set[tuple[int, float]]] = {}
        # key -> (when to re-scan, the wait before the next); the time is inf while
        # the re-scan is in flight (the key is then pending).
        self.adopted: dict[tuple[str, str], tuple[float, float]] = {}
        self.names_of: dict[tuple[int, float], set[tuple[str, str]]] = {}
        self.pidfds: dict[tuple[int, float], int] = {}
        self.polled: set[tuple[int, float]] = set()
        self.pending: set[tuple[str, str]] = set()
        self.use_pidfd = hasattr(os, "pidfd_open")
        self.started = time.monotonic()
        self.ever_connected = False
        self.swept = False
        # The /proc scans run on a thread: they take from milliseconds to seconds
        # (one read of every process's maps and fds), and the loop must keep
        # greeting clients -- a client that waits CONNECT_TIMEOUT for its greeting
        # takes the reaper for dead -- and reading their registrations meanwhile.
        self.scanner = _Scanner()
        self.selector.register(self.scanner.wake_r, selectors.EVENT_READ, ("scanned", None))

    # ── users ──

    def add(self, key: tuple[str, str], user: tuple[int, float]) -> None:
        if user in self.names_of:
            self.names_of[user].add(key)
            self.users.setdefault(key, set()).add(user)
            self.pending.discard(key)
            return
        if not self.watch(user):
            if key not in self.users or not self.users[key]:
                self.pending.add(key)
            return
        self.names_of[user] = {key}
        self.users.setdefault(key, set()).add(user)
        self.pending.discard(key)

    def watch(self, user: tuple[int, float]) -> bool:
        """Start watching ``user`` for death; False if it is dead already."""
        pid, ctime = user
        if self.use_pidfd:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                return False
            except OSError:
                self.use_pidfd = False  # e.g. seccomp or an old kernel: poll instead
            else:
                # Checked after opening: the pidfd pins this very process, so a
                # matching start time means it is the user, not a reused pid.
                if create_time(pid) != ctime:
                    os.close(fd)
                    return False
                self.pidfds[user] = fd
                self.selector.register(fd, selectors.EVENT_READ, ("pid", user))
                return True
        if create_time(pid) != ctime:
            return False
        self.polled.add(user)
        return True

    def remove(self, key: tuple[str, str], pid: int, *, reclaim: bool) -> None:
        users = self.users.get(key)
        if not users:
            if reclaim and key not in self.adopted:
                # A name this reaper never heard of: released towards a reaper that
                # died since, through the reconnect that started this one (its replay
                # carries only the names still in use). The scan decides, as for any
                # name: unlinked unless some live process maps or holds it.
                self.pending.add(key)
            return
        for user in [u for u in users if u[0] == pid]:
            users.discard(user)
            self._drop_name_of(user, key)
        if not users:
            del self.users[key]
            self.adopted.pop(key, None)
            if reclaim:
                self.pending.add(key)

    def _drop_name_of(self, user: tuple[int, float], key: tuple[str, str]) -> None:
        names = self.names_of.get(user)
        if names is None:
            return
        names.discard(key)
        if not names:
            self.unwatch(user)

    def unwatch(self, user: tuple[int, float]) -> None:
        self.names_of.pop(user, None)
        fd = self.pidfds.pop(user, None)
        if fd is not None:
            self.selector.unregister(fd)
            os.close(fd)
        self.polled.discard(user)

    def died(self, user: tuple[int, float]) -> None:
        for key in self.names_of.get(user, set()).copy():
            users = self.users.get(key)
            if users is not None:
                users.discard(user)
                if not users:
                    del self.users[key]
                    self.adopted.pop(key, None)
                    self.pending.add(key)
        self.unwatch(user)

    def pin(self, keys: list[tuple[str, str]], fd: int) -> None:
        """Keep ``keys`` until ``fd`` (a pipe's read end) reads EOF."""
        self.pin_serial += 1
        user = (-self.pin_serial, 0.0)  # no process has a negative pid
        self.pins[fd] = (user, keys)
        for key in keys:
            self.users.setdefault(key, set()).add(user)
            self.pending.discard(key)
            self.adopted.pop(key, None)
        self.selector.register(fd, selectors.EVENT_READ, ("pin", fd))

    def unpin(self, fd: int) -> None:
        """The pin's pipe is readable: at EOF, it no longer keeps its names."""
        try:
            if os.read(fd, 1):
                return  # nobody writes there; not the end
        except OSError:
            pass
        user, keys = self.pins.pop(fd)
        self.selector.unregister(fd)
        os.close(fd)
        for key in keys:
            users = self.users.get(key)
            if users is None or user not in users:
                continue  # forgotten meanwhile
            users.discard(user)
            if not users:
                del self.users[key]
                self.adopted.pop(key, None)
                self.pending.add(key)

    def forget(self, key: tuple[str, str]) -> None:
        for user in self.users.pop(key, set()):
            self._drop_name_of(user, key)
        self.adopted.pop(key, None)
        self.pending.discard(key)

    def drain_clients(self) -> None:
        """Handle what clients have already sent: it may keep a name.

        A receiver registers a name before it closes the pin that kept it, a
        sender sends its pin before it exits, yet the EOF or the death may be
        seen first. So before a scan starts and again before its answer is
        applied, everything sent until then is read.
        """
        for sock in list(self.clients):
            while sock in self.clients and self.read(sock):
                pass

    def start_reclaim(self) -> None:
        """Scan /proc for the pending names on the scan thread (see ``apply_reclaim``)."""
        self.drain_clients()
        keys = sorted(self.pending)
        self.pending.clear()
        self.scanner.start("reclaim", keys, lambda: _find_users(keys))

    def apply_reclaim(
        self, keys: list[tuple[str, str]], mappers: dict[tuple[str, str], set[int]]
    ) -> None:
        """Unlink every scanned name that no live process maps or holds; adopt the rest.

        (A name its owner unlinked meanwhile ("F") is unlinked again, a no-op, or
        adopted until the next scan finds it gone.)
        """
        self.drain_clients()  # may run a sync(), and its own scan: keys are ours alone
        now = time.monotonic()
        for key in keys:
            if self.users.get(key) or key in self.pending:
                # A user registered while the scan ran, or the name was freed again
                # (it is then decided by the next scan, which sees the newer state).
                continue
            kept = False
            for pid in mappers.get(key, ()):
                ctime = create_time(pid)
                if ctime is not None:
                    self.add(key, (pid, ctime))
                    kept = kept or bool(self.users.get(key))
            if kept:
                # Adopted again after a re-scan: wait twice as long as last time.
                _, wait = self.adopted.get(key, (0.0, RESCAN_FIRST))
                self.adopted[key] = (now + wait, min(2 * wait, RESCAN_INTERVAL))
            else:
                self.adopted.pop(key, None)
                self.pending.discard(key)
                _unlink(*key)

    def rescan_due(self, now: float) -> None:
        """Look again at the adopted names whose re-scan is due at ``now``.

        Their users found in /proc are dropped and the names freed, as if they had
        just lost their last user; the next wait is kept for ``apply_reclaim``.
        """
        for key, (when, wait) in list(self.adopted.items()):
            if when <= now:
                for user in self.users.pop(key, set()):
                    self._drop_name_of(user, key)
                self.adopted[key] = (math.inf, wait)
                self.pending.add(key)

    def start_sweep(self) -> None:
        """Look for what a tree killed whole left behind (see find_orphans), on the scan thread."""
        self.scanner.start("sweep", [], find_orphans)

    def apply_sweep(self, orphans: list[tuple[str, str]]) -> None:
        for key in orphans:
            if key not in self.users:
                _unlink(*key)

    def finish_scan(self) -> None:
        """Wait for the scan in flight, then apply its answer here, on the loop."""
        kind, keys, result, error = self.scanner.finish()
        if kind == "sweep":
            if error is not None:  # a failed sweep only leaves what was there
                print(f"proctor reaper: sweeping /dev/shm failed: {error!r}", file=sys.stderr)
                return
            self.apply_sweep(result)  # type: ignore[arg-type]
            return
        if error is not None:
            raise error  # as before scans had a thread: the traceback goes to reaper.log
        self.apply_reclaim(keys, result)  # type: ignore[arg-type]

    # ── messages ──

    def handle(self, message: list, sock: socket.socket) -> None:
        op = message[0]
        if op == "S":
            self.sync()
            sock.sendall(b"ok\n")
            return
        if op == "N":
            scanning = self.scanner.keys if self.scanner.busy() else []
            known = [
                [kind, name]
                for kind, name in message[1]
                if (kind, name) in self.users
                or (kind, name) in self.pending
                or (kind, name) in self.adopted
                or (kind, name) in scanning
            ]
            sock.sendall(json.dumps(known).encode() + b"\n")
            return
        if op == "P":
            fds = self.client_fds.get(sock)
            if not fds:
                print("proctor reaper: a pin came without its descriptor", file=sys.stderr)
                return
            keys = [(kind, name) for kind, name in message[1] if kind in KINDS]
            self.pin(keys, fds.pop(0))
            return
        kind, name = message[1], message[2]
        if kind not in KINDS or not isinstance(name, str):
            return
        key = (kind, name)
        if op == "R":
            self.add(key, (int(message[3]), float(message[4])))
            # A registered user replaces the guesswork of a /proc adoption.
            self.adopted.pop(key, None)
        elif op == "U":
            self.remove(key, int(message[3]), reclaim=True)
        elif op == "C":
            self.remove(key, int(message[3]), reclaim=False)
        elif op == "F":
            self.forget(key)

    def sync(self) -> None:
        """Process every death that has already happened, and reclaim what it freed.

        Waits for the scans it needs, so that its ``ok`` means "done".
        """
        for user in list(self.names_of):
            if create_time(user[0]) != user[1]:
                self.died(user)
        if self.scanner.busy():
            self.finish_scan()
        if self.pending:
            self.start_reclaim()
            self.finish_scan()

    def read(self, sock: socket.socket) -> bool:
        """Read and handle what ``sock`` sent; False if nothing (was) there.

        Never waits: a client listed as readable by select() may have been
        drained earlier in the same turn of the loop (a sync() or a scan reads
        every client), and a blocking read of it would then wait for its next
        message -- for ever, for a client with nothing more to say -- while no
        new client is greeted (each then waits CONNECT_TIMEOUT and takes the
        reaper for dead).
        """
        if sock not in self.clients:
            # Closed at its EOF earlier in this turn of the loop, after select()
            # had listed it as readable.
            return False
        try:
            # Not socket.recv_fds, which does not pass flags on to recvmsg. The
            # socket stays blocking for the replies the reaper writes.
            data, ancdata, _, _ = sock.recvmsg(
                65536, socket.CMSG_SPACE(_MAX_FDS * 4), socket.MSG_DONTWAIT | _RECV_CLOEXEC
            )
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data, ancdata = b"", []
        fds: list[int] = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
        if fds:
            self.client_fds.setdefault(sock, []).extend(fds)
        if not data:
            self.selector.unregister(sock)
            del self.clients[sock]
            for fd in self.client_fds.pop(sock, []):
                os.close(fd)
            sock.close()
            return False
        buf = self.clients[sock]
        buf += data
        while True:
            end = buf.find(b"\n")
            if end < 0:
                break
            line = bytes(buf[:end])
            del buf[: end + 1]
            try:
                message = json.loads(line)
                self.handle(message, sock)
            except Exception:  # one bad message must not stop the reaper
                print(f"proctor reaper: ignoring bad message {line!r}", file=sys.stderr)
        return True

    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.welcome(sock)
        self.ever_connected = True

    def welcome(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        try:
            sock.sendall(READY)
        except OSError:
            sock.close()  # gone already
            return
        self.clients[sock] = bytearray()
        self.selector.register(sock, selectors.EVENT_READ, ("client", None))

    # ── loop ──

    def idle(self) -> bool:
        return not self.users and not self.clients and not self.pending and not self.scanner.busy()

    def try_exit(self) -> bool:
        """Exit if idle: stop new connections first, then take any already queued."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.listener.setblocking(False)
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError, OSError):
                break
            self.welcome(sock)
        # Someone raced us in: serve them, as they cannot find us again.
        return not self.clients

    def run(self) -> None:
        self.listener.setblocking(False)
        pending_since: float | None = None
        while True:
            reclaim_wait = None
            if self.pending and not self.scanner.busy():
                # Batch the names freed within RECLAIM_DELAY into one /proc scan.
                now = time.monotonic()
                if pending_since is None:
                    pending_since = now
                reclaim_wait = pending_since + RECLAIM_DELAY - now
                if reclaim_wait <= 0:
                    self.start_reclaim()
                    pending_since = reclaim_wait = None
            elif not self.pending:
                pending_since = None
            waited = time.monotonic() - self.started
            if (
                self.idle()
                and (self.ever_connected or waited > FIRST_CLIENT_TIMEOUT)
                and self.try_exit()
            ):
                return
            timeout = None
            if self.polled:
                timeout = POLL_INTERVAL
            rescan = min((when for when, _ in self.adopted.values()), default=math.inf)
            if rescan != math.inf:
                wait = max(0.0, rescan - time.monotonic())
                timeout = wait if timeout is None else min(timeout, wait)
            if not self.ever_connected:
                timeout = 1.0 if timeout is None else min(timeout, 1.0)
            if reclaim_wait is not None:
                timeout = reclaim_wait if timeout is None else min(timeout, reclaim_wait)
            for key, _ in self.selector.select(timeout):
                what, user = key.data
                if what == "accept":
                    self.accept()
                elif what == "client":
                    self.read(key.fileobj)  # type: ignore[arg-type]
                elif what == "pid":
                    self.died(user)
                elif what == "pin":
                    self.unpin(user)
                elif what == "scanned":
                    # The byte may be an earlier scan's, which a sync() finished.
                    self.scanner.clear_wake()
                    if self.scanner.done():
                        self.finish_scan()
            if not self.swept and not self.scanner.busy():
                # Once, after greeting the first client (on the scan thread, so that
                # neither it nor anyone else waits for it).
                self.swept = True
                self.start_sweep()
            for user in list(self.polled):
                if create_time(user[0]) != user[1]:
                    self.died(user)
            self.rescan_due(time.monotonic())

    def close(self, *, keep_log: bool = False) -> None:
        """Release everything; remove the socket, and the log unless asked to keep it."""
        for fd in [*self.pidfds.values(), *self.pins]:
            os.close(fd)
        for fds in self.client_fds.values():
            for fd in fds:
                os.close(fd)
        for sock in self.clients:
            sock.close()
        self.scanner.close()
        self.selector.close()
        self.listener.close()
        directory = os.path.dirname(self.path)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        if keep_log:
            return
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, "reaper.log"))
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def serve(fd: int, path: str) -> None:
    """Entry point of the reaper process."""
    # Users die of Ctrl-C and hang-ups; the reaper must stay to clean up after them.
    for signum in IGNORED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, IGNORED_SIGNALS)
    os.chdir("/")
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        # One pidfd per watched process and one socket per client: allow many.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    listener = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    reaper = _Reaper(listener, path)
    try:
        reaper.run()
    except BaseException:
        # Keep the evidence: the traceback goes to reaper.log, which stays.
        import traceback

        traceback.print_exc()
        reaper.close(keep_log=True)
        raise SystemExit(1) from None
    reaper.close()


if __name__ == "__main__":  # pragma: no cover - the bootstrap loads it by path instead
    serve(int(sys.argv[1]), sys.argv[2])
