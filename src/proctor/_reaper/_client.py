"""The resource reaper's client: tells it which processes use which named objects.

POSIX shared-memory segments and named semaphores outlive the processes that
created them. If every user is SIGKILLed, nobody calls ``shm_unlink``/``sem_unlink``
and ``/dev/shm`` fills up. The reaper is a small helper process
(``_reaper_server``) that watches the users of each name and unlinks the name when
the last one is gone -- and never while a user is alive::

    user process (this module)                reaper process (_reaper_server.py)
    ──────────────────────────                ──────────────────────────────────
    register(name, kind) ─┐                   names:    (kind, name) -> {(pid, ctime)}
    unregister(...)       ├─ one JSON line ─▶ watchers: pidfd per user (Linux) or
    add_user(..., pid)    │  per call on a              a 0.2 s liveness poll (elsewhere)
    forget(...)          ─┘  persistent       last user gone ─▶ scan /proc for mappers
                             AF_UNIX socket     ├─ someone maps it: adopt them as users
                                                └─ nobody: shm_unlink / sem_unlink

One reaper serves a whole process tree. The process that first calls
:func:`register` (or :func:`ensure_started`) binds a listening socket in a private
``0700`` temporary directory and spawns the reaper with ``os.posix_spawn`` in a new
session, SIGINT and SIGHUP ignored (a terminal's Ctrl-C or hang-up kills the users;
it must not kill the one process that cleans up after them). The reaper runs
``_reaper_server.py`` loaded by path -- standard library only (psutil where there is
no ``/proc``) -- and greets each connection, so a reaper that cannot start is a clear error at once
(its stderr is kept in ``reaper.log`` beside the socket), never a silent leak.

Children find the same reaper:

- fork children inherit this module's state and the names (their mappings use
  them). On Linux they register those names when they first need the reaper: until
  then its /proc scan finds them as users of the names they map. Elsewhere they
  open their own connection and register the names at once;
- spawn and forkserver children get the address in their start message (*prep*,
  see ``_bootstrap``), and objects that carry names pickle :func:`address` with
  them and call :func:`adopt_address` when rebuilt.

Objects that carry names and travel in a message (a lock put on a queue, passed
to a pool's worker) have no receiver the reaper knows of while in flight, and
their sender may exit at once: :func:`keep_for_receiver` *pins* their names to
the message. The message carries the write end of a pipe
(``_reduction.MessageFds.delivery_fd``), the reaper gets the read end with the
names (``["P", [[kind, name], ...]]`` and the descriptor as ``SCM_RIGHTS``) and
counts it as one more user of each name until it reads EOF there: when the
receiver has unpickled the whole message (and registered the names itself), or
when the message is dropped unread. At a start, the child's pid is registered
instead (``after_start``).

The address is never put in ``os.environ``, where every unrelated subprocess of the
program would inherit it. A process started with ``PROCTOR_REAPER_ADDRESS`` in its
environment (set on purpose: the tests do, for plain subprocesses) joins that reaper.

Every message wakes the reaper, so names that come together go in one write:
:func:`register_new` registers an object's several fresh names at once (a queue's
semaphores, through ``_semlock.batched_names``), and a start keeps all its names
for the child with one ``after_start`` hook.

Names: :func:`new_name` puts the creator's pid, start time and pid namespace in
every name, which lets the next reaper reclaim what a tree killed whole (reaper
included) left behind; see ``_reaper_server.find_orphans``.

A process whose reaper is gone (killed; or exited, having nothing left to do)
starts a new one and replays everything it registered.

Pid reuse: a user is ``(pid, create_time)``; a pid whose start time changed is a
different process, so the user is dead.

Processes that use a name without telling this reaper (an unrelated proctor
program with its own reaper, a forked child in the instant before it registers, a
program not written with proctor): on Linux, before unlinking, the reaper reads
``/proc/<pid>/maps`` and ``/proc/<pid>/fd`` of every process of the same user and
keeps the name while any of them maps or holds it; those processes become watched
users. macOS has no ``/proc``: there the reaper only knows registered users, so a
process must register (proctor's ``SharedMemory`` does) to keep a name alive.

The reaper exits when it tracks no name and no client is connected. Clients keep
their connection for life, so in practice it exits soon after the last process
of its tree, once every name is reclaimed.

Note: a process that forks and then ``exec``s (``subprocess`` with a
``preexec_fn``) registers the inherited names for the new program too, which then
keeps them until it exits: later reclamation, never an early unlink.
"""

from __future__ import annotations

# The C modules, not socket.py, json or signal.py (with enum, re, selectors): every
# process that opens a semaphore by name is a client, a spawned child given a Lock
# among them, and those cost its start milliseconds (issue 17). tempfile is loaded
# where a reaper is started.
import _signal  # type: ignore[import-not-found]  # C module without stubs
import _socket as socket
import _thread
import array
import contextlib
import os
import sys

from .._core import _afterfork, _reduction, _runtime
from .._core._system import fd_identity, random_hex, still_holds
from ._ident import IGNORED_SIGNALS, KINDS, READY, owner_tag
from ._ident import create_time as _create_time

try:  # (the C function json.encoder uses; json itself, with re, is not imported)
    from _json import encode_basestring_ascii as _quote
except ImportError:  # pragma: no cover - a Python built without _json
    from json.encoder import encode_basestring_ascii as _quote

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import
    from collections.abc import Iterator
    from typing import Any

__all__ = (
    "KINDS",
    "add_user",
    "address",
    "adopt_address",
    "corked",
    "ensure_started",
    "forget",
    "keep_for_receiver",
    "new_name",
    "register",
    "register_new",
    "tracker_ensure_running",
    "tracker_register",
    "tracker_unregister",
    "unregister",
)

#: Environment variable naming a reaper to join (read at import, never set).
ENV_ADDRESS = "PROCTOR_REAPER_ADDRESS"

#: How long a new reaper may take to start (a Python start-up on a loaded machine).
START_TIMEOUT = 60.0

#: How long a running reaper may take to greet a new connection.
CONNECT_TIMEOUT = 10.0


#: ``multiprocessing.resource_tracker``'s names of the kinds, and the reaper's.
TRACKER_KINDS = {"shared_memory": "shm", "semaphore": "semaphore", "shm": "shm"}


def _to_json(message: list) -> str:
    """``message`` as one compact JSON array, as ``json`` writes it.

    The messages are flat lists of strings and numbers: written here directly,
    without the encoder's per-call setup (a queue's creation sends one, and a
    fork parent copies every page its code touches again at each start).
    """
    parts = []
    for value in message:
        kind = type(value)
        if kind is str:
            parts.append(_quote(value))
        elif kind is int:
            parts.append(int.__repr__(value))
        elif kind is float and value - value == 0.0:  # finite
            parts.append(float.__repr__(value))
        else:
            return _json_encode(message)
    return "[" + ",".join(parts) + "]"


_json_encoder = None


def _json_encode(message: list) -> str:
    """Any other message, through ``json`` (one encoder for every such message:
    ``json.dumps`` with ``separators`` builds a new one per call, ~2 us)."""
    global _json_encoder
    if _json_encoder is None:
        import json

        _json_encoder = json.JSONEncoder(separators=(",", ":"))
    return _json_encoder.encode(message)


#: The longest name of a segment or semaphore, in bytes without the leading slash:
#: one file name (NAME_MAX) in /dev/shm.
NAME_MAX = 255


def _check(name: object, kind: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}: {name!r}")
    if not name:
        raise ValueError("name must not be empty")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")


# ─── client ──────────────────────────────────────────────────────────────────


class _Client:
    """This process's connection to the reaper, plus what it told the reaper.

    The record lets a new reaper learn everything again if the old one died.
    """

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        # The thread inside locked(), and the releases that finalizers run inside it
        # asked for (see locked()).
        self.holder: int | None = None
        self.deferred: list[tuple[str, str, str]] = []
        # A bare descriptor rather than a socket object: it lives as long as the
        # process, and a socket object would warn (ResourceWarning) at exit.
        self.fd: int | None = None
        # The connection's (st_dev, st_ino): code that closes descriptors it does
        # not own (os.closerange in a daemonizing child) can give our number to a
        # file of its own, which a registration must not be written into.
        self.fd_id: tuple[int, int] | None = None
        # A spawn or forkserver child's parent named its reaper (_start._bootstrap).
        self.address: str | None = (
            os.environ.get(ENV_ADDRESS) or _runtime.inherited_reaper_address or None
        )
        self.spawned_pid: int | None = None  # the reaper this process started
        self.pid = os.getpid()
        self.ctime: float | None = None
        # (kind, name) -> how many open handles this process has on it
        self.refs: dict[tuple[str, str], int] = {}
        # (kind, name) -> {(pid, ctime)} of other processes registered through us
        self.others: dict[tuple[str, str], set[tuple[int, float]]] = {}
        # (kind, name) -> size of its ``others`` set at which dead users are dropped
        self.prune_at: dict[tuple[str, str], int] = {}
        # The thread holding messages back until corked() ends, and those messages.
        self.corked_by: int | None = None
        self.corked: list[list] = []
        # A fork child that has not told the reaper about the names it inherited
        # yet (see _after_fork_in_child); its first connection replays them.
        self.inherited = False

    @contextlib.contextmanager
    def locked(self) -> Iterator[_Client]:
        """Hold the lock; then make the releases that finalizers deferred meanwhile.

        A garbage collection can run inside a locked section (any allocation may
        start one), and collect a lock or segment whose finalizer unregisters its
        name: :func:`_release` in the same thread, which must neither wait for the
        lock its own thread holds (a deadlock: a fork child hung in
        ``_after_fork_in_child``) nor change ``refs`` while the section iterates
        over it. It queues the release instead, made here before the lock goes.
        """
        me = _thread.get_ident()  # before acquiring: nothing may allocate in between
        self.lock.acquire()
        self.holder = me
        try:
            yield self
        finally:
            try:
                while self.deferred:
                    _release_locked(self, *self.deferred.pop(0))
            finally:
                self.holder = None
                self.lock.release()

    # Every method below is called with self.lock held.

    def send(self, message: list) -> None:
        self.send_lines([message])

    def send_lines(self, messages: list[list]) -> None:
        """Send ``messages`` in one write: one wake-up of the reaper, not one each."""
        if self.corked_by is not None and self.corked_by == _thread.get_ident():
            self.corked.extend(messages)
            return
        data = "".join(_to_json(m) + "\n" for m in messages).encode()
        fd = self.connection()
        if fd is not None:
            try:
                _write_all(fd, data)
                return
            except OSError:
                self._drop_connection()
        self._connect()
        # _connect replayed the records, which already include the effect of every
        # "R" (register, add_user: recorded before they are sent); the other lines
        # (releases) still go. One write less for a child's first registrations.
        rest = [m for m in messages if m[0] != "R"]
        if rest:
            assert self.fd is not None
            _write_all(self.fd, "".join(_to_json(m) + "\n" for m in rest).encode())

    def send_fd(self, message: list, fd: int) -> None:
        """Send ``message`` with a duplicate of ``fd`` attached (``SCM_RIGHTS``)."""
        self.flush_corked()  # in order
        data = (_to_json(message) + "\n").encode()
        for attempt in (1, 2):
            if self.connection() is None:
                self._connect()
            assert self.fd is not None
            sock = socket.socket(fileno=self.fd)
            try:
                sent = sock.sendmsg(
                    [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
                )
                _write_all(self.fd, data[sent:])
                return
            except OSError:
                if attempt == 2:
                    raise
            finally:
                sock.detach()
            self._drop_connection()

    def flush_corked(self) -> None:
        messages, self.corked, self.corked_by = self.corked, [], None
        if messages:
            self.send_lines(messages)

    def connection(self) -> int | None:
        """``fd`` if it is still our connection; else None, and ``fd`` forgotten (unclosed)."""
        fd = self.fd
        if fd is None:
            return None
        if still_holds(fd, self.fd_id):
            return fd
        self.fd = self.fd_id = None  # closed behind our back: the number is not ours now
        return None

    def _drop_connection(self) -> None:
        self.close()
        self._reap_spawned()

    def _reap_spawned(self) -> None:
        # Collect our reaper's exit status if it has exited, so it is no zombie.
        if self.spawned_pid is None:
            return
        try:
            pid, _ = os.waitpid(self.spawned_pid, os.WNOHANG)
        except ChildProcessError:
            pid = self.spawned_pid
        if pid:
            _runtime.unregister_helper(self.spawned_pid)
            self.spawned_pid = None

    def _connect(self) -> None:
        """Connect to the known reaper, or start one; then replay the records."""
        sock = None
        if self.address:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.address)
                _expect_ready(sock, CONNECT_TIMEOUT)
            except ConnectionRefusedError:
                sock.close()
                sock = None
                _remove_stale(self.address)
            except OSError:
                sock.close()
                sock = None
        if sock is None:
            sock = self._spawn()
        self.fd_id = fd_identity(sock.fileno())
        self.fd = sock.detach()
        self.inherited = False
        if self.ctime is None:
            self.ctime = _create_time(self.pid)
        lines = []
        for (kind, name), count in self.refs.items():
            if count > 0:
                lines.append(["R", kind, name, self.pid, self.ctime])
        for (kind, name), users in self.others.items():
            for pid, ctime in users:
                lines.append(["R", kind, name, pid, ctime])
        if lines:
            payload = "".join(_to_json(m) + "\n" for m in lines)
            _write_all(self.fd, payload.encode())

    def _spawn(self) -> socket.socket:
        import tempfile

        directory = tempfile.mkdtemp(prefix="proctor-reaper-")  # mode 0700
        path = os.path.join(directory, "sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(64)
            fd = listener.fileno()
            os.set_inheritable(fd, True)
            server = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_server.py")
            args = [sys.executable, "-c", _BOOTSTRAP, str(fd), path, server]
            log = os.path.join(directory, "reaper.log")
            file_actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                # Not our stderr: a reaper holding its starter's stderr pipe would keep
                # `subprocess.run(..., capture_output=True)` of that starter waiting.
                # A private log instead, kept if the reaper fails.
                (os.POSIX_SPAWN_OPEN, 2, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
            ]
            # Born with the signals it will ignore blocked, so that one arriving during
            # interpreter start-up waits, and is dropped once serve() ignores it.
            options: dict[str, Any] = {"file_actions": file_actions, "setsigmask": IGNORED_SIGNALS}
            try:
                try:
                    pid = os.posix_spawn(sys.executable, args, os.environ, setsid=True, **options)
                except NotImplementedError:  # pragma: no cover - old libc without SETSID
                    pid = os.posix_spawn(sys.executable, args, os.environ, setpgroup=0, **options)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"proctor could not start its resource reaper ({sys.executable!r}): "
                    f"{exc.strerror}. It unlinks shared memory and semaphores that crashed "
                    "processes leave behind; check that sys.executable is a runnable Python.",
                ) from exc
        finally:
            listener.close()
        _runtime.register_helper(pid)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The listening socket exists before the reaper runs: connect() completes
            # through the backlog. Then wait for the reaper to say it runs, so that a
            # reaper that cannot start is an error now, not a silent leak later.
            sock.connect(path)
            _expect_ready(sock, START_TIMEOUT)
        except OSError as exc:
            sock.close()
            with contextlib.suppress(OSError):
                os.kill(pid, _signal.SIGKILL)  # if it hangs rather than failed
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            _runtime.unregister_helper(pid)
            raise OSError(
                f"proctor's resource reaper (pid {pid}) did not start: {exc}. It unlinks "
                "shared memory and semaphores that crashed processes leave behind; its "
                f"error output is in {log}."
            ) from exc
        self.spawned_pid = pid
        self.address = path
        return sock

    def close(self) -> None:
        fd = self.connection()
        if fd is not None:
            self.fd = None
            os.close(fd)


def _remove_stale(path: str) -> None:
    """Remove the socket and directory of a reaper that died without cleaning up.

    A refused connection means nobody listens: the reaper was killed (a reaper
    that exits removes its socket first). Its log stays if it says anything.
    """
    directory = os.path.dirname(path)
    if not os.path.basename(directory).startswith("proctor-reaper-"):
        return
    with contextlib.suppress(OSError):
        os.unlink(path)
    log = os.path.join(directory, "reaper.log")
    with contextlib.suppress(OSError):
        if os.path.getsize(log) == 0:
            os.unlink(log)
    with contextlib.suppress(OSError):
        os.rmdir(directory)


def _expect_ready(sock: socket.socket, timeout: float) -> None:
    """Wait for the reaper's greeting on a new connection."""
    sock.settimeout(timeout)
    try:
        greeting = sock.recv(len(READY))
    except TimeoutError:
        raise OSError(f"no answer within {timeout} s") from None
    finally:
        sock.settimeout(None)
    if greeting != READY:
        raise OSError("it closed the connection")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# The reaper runs _reaper_server.py loaded by path, not "import proctor": nothing
# else in the package (or the user's sys.path) can stop it from starting. Inherited
# descriptors other than its listening socket are dropped first.
_BOOTSTRAP = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "os.closerange(3, fd)\n"
    "os.closerange(fd + 1, 65536)\n"
    "os.chdir('/')\n"
    "import importlib.util\n"
    "spec = importlib.util.spec_from_file_location('proctor_reaper_server', sys.argv[3])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module.serve(fd, sys.argv[2])\n"
)


def _client_for_child(parent: _Client) -> _Client:
    # A forked child's own client, made on its first use of the reaper (an
    # ancestor's, if its parent never used one since its own fork).
    child = _Client()
    child.address = parent.address
    # Taken over, not copied: a copy would touch (and so copy) the page of every
    # key, in proportion to the names the parent holds.
    child.refs = parent.refs
    # A forked child inherits its parent's mappings, so it uses those names too.
    # The reaper finds it in /proc before it unlinks anything (it scans every
    # process's maps and descriptors and adopts the ones that use the name), so the
    # child tells it when it next needs the reaper: connecting and replaying every
    # inherited name at the fork cost each fork child a round trip and work in
    # proportion to the names its parent holds (~10-30 ms with 100 living children
    # that each hold a queue).
    child.inherited = any(count > 0 for count in child.refs.values())
    return child


# This process's client; None in a forked child until it first needs one (most
# never do: building one -- a lock, four containers, a look at the environment --
# cost every fork child ~20 copied pages). Read it as ``_client or _own()``: in the
# parent that is one global read, nothing more written after each fork than before.
_client: _Client | None = _Client()
# What a forked child's own client is made from: its parent's (kept, not freed).
_from_parent: _Client | None = None

#: Whether the reaper finds the users of a name in /proc (see _server._find_users).
_REAPER_SEES_MAPPINGS = sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")


def _own() -> _Client:
    """Make this forked child's client, at its first use of the reaper."""
    global _client
    with _afterfork.renewing():  # two threads must not make two
        client = _client
        if client is None:
            assert _from_parent is not None
            client = _client = _client_for_child(_from_parent)
        return client


def client() -> _Client:
    """This process's client."""
    return _client or _own()


def _after_fork_in_child() -> None:
    # Not at first use: the connection is the parent's, and the reaper must see it
    # close when the parent goes, whatever this child does. (None: the parent never
    # used the reaper since its own fork, whose hook closed the connection before.)
    global _client, _from_parent
    parent = _client
    if parent is not None:
        fd = parent.connection()
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        _from_parent = parent
        _client = None
    if not _REAPER_SEES_MAPPINGS:
        # The reaper only knows registered users there: say so at once, the parent
        # may die any moment.
        child = _own()
        if child.inherited:
            with contextlib.suppress(Exception), child.locked():
                child._connect()


os.register_at_fork(after_in_child=_after_fork_in_child)


_owner: tuple[int, str] = (-1, "")


def new_name(random_bytes: int) -> str:
    """A fresh name for a named OS object created by this process.

    ``/proctor-<owner tag>-<random hex>``: the owner tag (the creator's pid, and on
    Linux its start time and pid namespace) lets a later reaper prove the creator
    dead; "proctor" lets leak checks find leftovers. Short enough for macOS's
    31-character limit there (where the tag is just the pid).
    """
    global _owner
    pid = os.getpid()
    if _owner[0] != pid:  # first name of this process, or a forked child's
        _owner = (pid, owner_tag())
    return f"/proctor-{_owner[1]}-{random_hex(random_bytes)}"


class corked:
    """``with``: this thread's messages to the reaper go in one write when the block ends.

    For a start message unpickled by a spawn or forkserver child: rebuilding a
    queue registers its four semaphores, one message (and reaper wake-up) each.
    The names are already known to the reaper meanwhile (their creator
    registered them, and the parent registers this child as soon as it exists),
    so holding the child's own registrations back for the length of an unpickle
    loses nothing. A class, not ``contextlib.contextmanager``: cheap to enter.
    """

    def __init__(self) -> None:
        self.mine = False

    def __enter__(self) -> None:
        client = _client or _own()
        with client.locked():
            if client.corked_by is None:
                client.corked_by = _thread.get_ident()
                self.mine = True
            else:
                self.mine = False  # nested, or another thread's: leave it to that one

    def __exit__(self, *exc_info: object) -> None:
        if self.mine:
            client = _client or _own()
            with client.locked():
                client.flush_corked()


def ensure_started() -> str:
    """Connect this process to its reaper, starting one if needed; return its address.

    Other calls do this lazily; call it early to hold the connection's descriptor
    before, say, a leak check takes its baseline.
    """
    client = _client or _own()
    with client.locked():
        if client.fd is None:
            client._connect()
        assert client.address is not None
        return client.address


def tracker_ensure_running() -> None:
    """``resource_tracker.ensure_running()``: start this process's reaper if it has none.

    Returns None, as the stdlib's does (:func:`ensure_started` gives the address).
    """
    ensure_started()


def address() -> str | None:
    """The address of the reaper this process uses (None before it needs one).

    Objects that carry names pickle this so that a child rebuilding them can
    :func:`adopt_address` the same reaper.
    """
    return (_client or _own()).address


def adopt_address(addr: str | None) -> None:
    """In a child: use the reaper at ``addr`` if this process has none yet."""
    if not addr:
        return
    client = _client or _own()
    with client.locked():
        if client.fd is None and client.address != addr:
            client.address = addr


def register(name: str, kind: str) -> None:
    """Declare that this process uses ``name`` (a ``kind`` object).

    Calls nest: the reaper hears only the first register and the matching last
    unregister of this process.

    Args:
        name: the OS name, e.g. ``"/proctor-12-ab"``.
        kind: ``"shm"`` or ``"semaphore"``.

    Raises:
        TypeError, ValueError: for a bad name or kind.
        OSError: when no reaper can be reached or started.
    """
    _check(name, kind)
    key = (kind, name)
    client = _client or _own()
    with client.locked():
        count = client.refs.get(key, 0)
        client.refs[key] = count + 1
        if count == 0:
            if client.ctime is None:
                client.ctime = _create_time(client.pid)
            try:
                client.send(["R", kind, name, client.pid, client.ctime])
            except BaseException:
                client.refs[key] = count
                raise


def register_new(kind: str, count: int, random_bytes: int) -> list[str]:
    """``count`` fresh names (see :func:`new_name`), registered in one message.

    For an object made of several named objects (a queue: four semaphores): the
    names are registered before any of them exists, as :func:`register` before a
    creation, but the reaper is woken once rather than once per name. A name that
    is not created after all must be withdrawn with :func:`_cancel`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    # One draw of random bytes for all the names (new_name's form, one syscall).
    prefix = new_name(0)
    hexes = random_hex(random_bytes * count)
    width = 2 * random_bytes
    names = [prefix + hexes[i * width : (i + 1) * width] for i in range(count)]
    client = _client or _own()
    with client.locked():
        if client.ctime is None:
            client.ctime = _create_time(client.pid)
        fresh = [n for n in names if client.refs.get((kind, n), 0) == 0]
        for name in names:
            client.refs[(kind, name)] = client.refs.get((kind, name), 0) + 1
        try:
            client.send_lines([["R", kind, n, client.pid, client.ctime] for n in fresh])
        except BaseException:
            for name in names:
                key = (kind, name)
                client.refs[key] -= 1
                if client.refs[key] <= 0:
                    del client.refs[key]
            raise
    return names


def unregister(name: str, kind: str) -> None:
    """Declare that this process no longer uses ``name``.

    When no live process uses the name any more, the reaper unlinks it.
    """
    _check(name, kind)
    _release(name, kind, "U")


def _cancel(name: str, kind: str) -> None:
    """Withdraw a registration made for an object that was never created.

    Unlike :func:`unregister`, the reaper never unlinks the name for this: it may
    belong to somebody else (creation failed because it exists).
    """
    _check(name, kind)
    _release(name, kind, "C")


def _release(name: str, kind: str, op: str) -> None:
    client = _client or _own()
    if client.holder == _thread.get_ident():
        # Re-entered by a finalizer that a garbage collection ran inside one of this
        # thread's locked sections: made when that section ends (_Client.locked).
        client.deferred.append((name, kind, op))
        return
    with client.locked():
        _release_locked(client, name, kind, op)


def _release_locked(client: _Client, name: str, kind: str, op: str) -> None:
    key = (kind, name)
    count = client.refs.get(key, 0)
    if count <= 0:
        return
    if count > 1:
        client.refs[key] = count - 1
        return
    del client.refs[key]
    if client.fd is None and client.address is None:
        return  # never told anyone
    with contextlib.suppress(OSError):
        client.send([op, kind, name, client.pid])


def add_user(name: str, kind: str, pid: int) -> None:
    """Declare that process ``pid`` (typically a child just started) uses ``name``.

    The reaper then keeps the name until that process dies too, even if this one
    dies before the child attaches. A pid that is already dead is ignored.
    """
    _check(name, kind)
    _add_users([(kind, name)], pid)


def _add_users(keys: list[tuple[str, str]], pid: int) -> None:
    """:func:`add_user` for several names, in one message."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError(f"pid must be a positive int, not {pid!r}")
    ctime = _create_time(pid)
    if ctime is None:
        return
    client = _client or _own()
    with client.locked():
        for key in keys:
            users = client.others.setdefault(key, set())
            # Forget dead children now and then so the record does not grow forever:
            # when it has doubled since the last time, so that a start costs the same
            # however many children use the name (a check at every start once 64 did
            # made the n-th start cost O(n); issue 12).
            if len(users) >= client.prune_at.get(key, 64):
                users.difference_update({(p, c) for p, c in users if _create_time(p) != c})
                client.prune_at[key] = max(64, 2 * len(users))
            users.add((pid, ctime))
        client.send_lines([["R", kind, name, pid, ctime] for kind, name in keys])


class _AddUsersAtStart:
    """The one ``after_start`` hook that registers the child for every name kept."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []

    def __call__(self, pid: int) -> None:
        # The child registers itself when it rebuilds the objects; this covers
        # the moments before that, should the parent die first.
        _add_users(self.keys, pid)


#: The key of the names a message pins, in ``MessageFds.notes``.
_PINNED = "reaper"


def keep_for_receiver(name: str, kind: str) -> bool:
    """Keep ``name`` for the process that will rebuild the object being pickled now.

    Called by the ``__reduce__`` of every object made of named OS objects. At a
    start, the child is registered as a user as soon as it exists. In a message
    (``Connection.send()``, a queue, a pool's task or result), the name is pinned
    to the message until its receiver has unpickled it or it is dropped unread
    (see the module docstring), so that a sender that exits at once does not
    take the name with it.

    Returns:
        False when nothing carries the pickle being made (a plain pickle, a
        file): then nothing is kept, and the caller decides whether to refuse.
    """
    handoff = _reduction.current_handoff()
    if handoff is not None:
        # One hook and one message for all the names a start keeps (a queue has
        # four): a message per name woke the reaper as many times.
        hooks = [h for h in handoff.after_start if isinstance(h, _AddUsersAtStart)]
        if hooks:
            adder = hooks[0]
        else:
            adder = _AddUsersAtStart()
            handoff.after_start.append(adder)
        if (kind, name) not in adder.keys:
            adder.keys.append((kind, name))
        return True
    message = _reduction.current_message()
    if message is None:
        return False
    names = message.notes.get(_PINNED)
    if names is None:
        names = message.notes[_PINNED] = []
        delivery = message.delivery_fd()
        message.when_complete.append(lambda: _pin(delivery, names))
    if [kind, name] not in names:
        names.append([kind, name])
    return True


def _pin(delivery: int, names: list[list[str]]) -> None:
    """Tell the reaper to keep ``names`` until ``delivery`` reads EOF (once sent)."""
    client = _client or _own()
    with client.locked():
        client.send_fd(["P", names], delivery)


def forget(name: str, kind: str) -> None:
    """Stop tracking ``name``: it was unlinked explicitly."""
    client = _client or _own()
    _check(name, kind)
    key = (kind, name)
    with client.locked():
        client.refs.pop(key, None)
        client.others.pop(key, None)
        client.prune_at.pop(key, None)
        if client.fd is None and not client.inherited:
            return  # this process never told a reaper about the name
        with contextlib.suppress(OSError):
            client.send(["F", kind, name])


# ─── multiprocessing.resource_tracker's API ──────────────────────────────────


def _tracker_key(name: object, rtype: object) -> tuple[str, str]:
    """Check a name and kind given to ``resource_tracker``; return the reaper's spelling."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}: {name!r}")
    if not isinstance(rtype, str) or rtype not in TRACKER_KINDS:
        raise ValueError(
            f"rtype must be 'shared_memory' or 'semaphore' (or proctor's 'shm'), not {rtype!r}"
        )
    bare = name.lstrip("/")
    if not bare:
        raise ValueError(f"name must not be empty: {name!r}")
    if len(bare.encode()) > NAME_MAX:
        raise ValueError(
            f"name {name[:20]!r}... is {len(bare.encode())} bytes long, longer than any "
            f"shared memory segment or semaphore name can be ({NAME_MAX} bytes)"
        )
    # Segments and semaphores are named "/name"; the stdlib's objects keep that
    # form in ``_name`` and show it without the slash in ``name``: both mean one object.
    return "/" + bare, TRACKER_KINDS[rtype]


def tracker_register(name: str, rtype: str) -> None:
    """``resource_tracker.register``: this process uses ``name``.

    The reaper unlinks it once no process uses it any more (this one has exited
    and nobody maps it), as the stdlib's tracker does at shutdown.

    Args:
        name: the object's name, with or without its leading ``/``.
        rtype: ``"shared_memory"`` (or ``"shm"``) or ``"semaphore"``.

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: an unknown ``rtype``, an empty name or one too long for the OS.
    """
    name, kind = _tracker_key(name, rtype)
    register(name, kind)


def tracker_unregister(name: str, rtype: str) -> None:
    """``resource_tracker.unregister``: stop tracking ``name``; no reaper unlinks it.

    What the stdlib's ``unregister`` means, and what the common workaround relies on
    (``unregister(shm._name, "shared_memory")`` so that a segment outlives the
    program): the name now lives until someone unlinks it. A name this process
    never registered is ignored.

    Args and raises as for :func:`tracker_register`.
    """
    name, kind = _tracker_key(name, rtype)
    forget(name, kind)
