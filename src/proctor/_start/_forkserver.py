"""The fork server: a clean, single-threaded process that forks children on request.

::

    parent process                          fork server (spawned once, lazily)
    ──────────────                          ──────────────────────────────────
    send [prep | payload] ─── channel ─────────────────────────┐ (waits in the socket)
    ForkServerClient.start_child() ── ctl ─▶ recv request + [channel, status] fds
                                             hand [channel, stdio] to the spare ──▶ spare:
                                               (or os.fork() when there is none)    run_from_channel
               (pid, 1) ◀──────────────── ctl ─┤ reply: start() returns
                                             os.fork() the next spare (it closes the
                                               server's fds, arms PDEATHSIG, waits)
               (0, spare pid) ◀────────── ctl ─┘ announcement: read with the next
                                               reply, or by helper_pids()
    sentinel = status socket ◀── exit code ── server reaps the child (SIGCHLD)

The server is a child of the process that first needed it and is private to
that process (children started by other processes use their own server). It
holds nothing but proctor, so forking it is cheap and safe even when the parent
runs threads. Lifetime: the server exits as soon as its control socket reports
EOF -- the parent exited or died -- and its children die with it
(``PR_SET_PDEATHSIG`` on Linux, a parent watch elsewhere).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # C module without stubs
import _socket
import _thread
import errno
import gc
import os
import select
import struct
import sys
import time

from .._core import _runtime, _system, _wire
from .._logging import _logger
from ._state import flush_std_streams, register_exit_hook

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The server imports this module, and every module it loads is copied, page by
# page, into the children it forks as soon as the child touches it (threading's
# after-fork hook alone walks and rewrites its state in each child). So this
# module uses the C modules (_socket, _signal, _thread) rather than socket.py,
# signal.py and threading, and imports the error types, with pickle and
# multiprocessing behind them, only in the parent's paths that raise them.

__all__ = ("ForkServerClient", "client", "serve", "set_preload")

# What the server writes on the control socket, two records per request: the
# reply (the child's pid, or -errno; then _ANNOUNCEMENT_FOLLOWS), then, once it has
# forked the spare for the next request, the announcement (0, the spare's pid or 0).
_REPLY = struct.Struct("<qq")
_ANNOUNCEMENT_FOLLOWS = 1
# Whether the server keeps a spare: a child forked ahead of the next request,
# which has done everything a child does before it reads its start message
# (closing the server's descriptors, the parent-death signal, the after-fork
# reset), so that a start hands it the request instead of forking.
SPARE = True
# How long the server may take to answer a request (it answers at once when
# healthy; the first request also waits for it to boot).
REPLY_TIMEOUT = 60.0
# How long a server told to exit may take before it is killed.
EXIT_GRACE = 2.0
# Whether spares copy ahead, while they wait, the server's pages a child writes on
# its way to its target (_start._native's warm spares: Linux 5.14+). Learned by the
# server's first child; the region holds 16,382 ranges of pages (past that, the
# lowest addresses are warmed).
WARM_SPARES = True
_PAGES_REGION_SIZE = 256 * 1024
# The region's words (_native.c): state, ranges, the learner's pid, then the ranges.
# Its states (LEARN_*): nothing learned, a learner runs, learned, this kernel cannot.
_LEARN_NONE, _LEARN_BUSY, _LEARN_DONE, _LEARN_FAILED = 0, 1, 2, 3
# Modules a child may need that the server imports once it sees the parent use
# them: a child handed a queue or forwarding its logs then finds them loaded,
# while a server for a parent that uses none of them stays small (and quick to fork).
# The reaper's client (and psutil, which it uses where there is no /proc) is what every
# child rebuilding a lock or a queue registers with: importing them cost each
# such child ~30 ms of CPU (issue 12), the main cost of starting many children.
# _by_value rebuilds every function sent by value (from __main__, say).
_FOLLOWED_MODULES = (
    "logging",
    "proctor._connections._connection",
    "proctor._queues._queue",
    "proctor._sync",
    "proctor._sharedmem._sharedctypes",
    "proctor.shared_memory",
    "proctor._reaper._client",
    # Only where there is no /proc, the one place proctor's children use psutil (loaded
    # in the server for nothing, it made every no-op child's start+join ~0.18 ms
    # slower: a larger image to fork, more pages its children write).
    *(() if _system._HAVE_PROC else ("psutil",)),
    "proctor._core._by_value",
)
# What a child that forwards its logs imports to do so (~4 ms of CPU each, logging
# loaded): the server imports it once a child forwards -- once the parent has
# configured logging (a handler somewhere), not merely imported it (which has the
# server import logging, above) -- since it brings selectors and pickle with it.
_FORWARDING_MODULE = "proctor._logging._forwarding"
EXIT_STATUS = struct.Struct("<i")
# What a child whose target raised imports to report it: the error types (with
# pickle and multiprocessing behind them) and traceback, ~4-6 ms of CPU in each
# failing child. The server imports them once one of its children has failed,
# so children that fail often find them loaded, and a server whose children
# never fail stays without them. (The spare forked before keeps importing them
# itself: it is used all the same.)
_FAILURE_MODULES = ["proctor._core._errors", "traceback"]


# -- the server --------------------------------------------------------------------


#: The fork server's state, in the server and (a copy) in its children; None in
#: every other process. What a child's target can look at: its warm-spare region.
_serving: _Server | None = None


def serve(
    ctl_fd: int, parent_pid: int, pdeathsig: bool, preload: list[str], spare: bool = True
) -> None:
    """Main loop of the fork server process; never returns.

    Args:
        spare: keep a spare child forked ahead of the next request (``SPARE``).
    """
    from . import _bootstrap

    # What every child imports to load a plain (marshal) start message and a
    # target from the main script: imported here once, not after each fork
    # (importing them in each child cost a no-op start+join ~0.3 ms).
    _import_quietly(list(_CHILD_MODULES))
    os.set_inheritable(ctl_fd, False)
    ctl = _socket.socket(fileno=ctl_fd)
    _bootstrap.arm_parent_death(parent_pid, pdeathsig)
    # A Ctrl-C in the terminal reaches the whole process group; the parent
    # decides what happens to its children, the server just carries on.
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _import_quietly(preload)
    _settle_logging()
    # Without logging: its children that import it later name their records
    # through a finder inherited from here, which they need not make each.
    _logger.stand_by()
    _freeze_loaded_objects()
    # Opened once here, so every child finds it open for its stdin (close_stdin).
    _system.devnull_fd()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    _signal.set_wakeup_fd(wake_w)
    _signal.signal(_signal.SIGCHLD, lambda *_: None)
    global _serving
    server = _serving = _Server(ctl, (wake_r, wake_w), keep_spare=spare)
    take_request = server.take_request
    # poll(), not selectors: two descriptors, and no key objects built at each wake-up
    # (the server wakes twice per start, for the request and for the child's exit).
    poller = select.poll()
    poller.register(ctl_fd, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        for fd, _events in poller.poll():
            if fd == ctl_fd:
                got: Any = None
                try:
                    if take_request is None:
                        data, fds = _wire.recv_message(ctl)
                    else:
                        # The usual request in C: it hands the spare its work and
                        # replies, or gives back the request it did not take.
                        waiting = server.spare
                        if waiting is None:
                            got = take_request(ctl_fd, -1, b"")
                        else:
                            got = take_request(ctl_fd, waiting.sock.fileno(), waiting.reply)
                except (EOFError, OSError):
                    # Our parent is gone; our children follow by PDEATHSIG.
                    # The spare is ours alone: reap it before leaving.
                    server.discard_spare()
                    os._exit(0)
                if type(got) is int:
                    server.spare_took_request(got)
                else:
                    if got is not None:
                        data, fds, spare_failed = got
                        if spare_failed:
                            server.discard_spare()  # it died, not reaped yet
                    _serve_in_python(server, data, fds)
                server.fork_spare_if_missing()
                _send_or_exit(server, _REPLY.pack(0, server.spare_pid()))
            else:
                # One read drains the few signal bytes; any left wake the next poll.
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                server.reap()


def _serve_in_python(server: _Server, data: bytes | bytearray, fds: list[int]) -> None:
    """A request that needs more than a hand-over to the spare: reply when started."""
    if len(fds) != 4:
        for fd in fds:
            os.close(fd)
        pid = -errno.EINVAL
    else:
        if data and _import_quietly(bytes(data).decode().split(",")):
            # The spare was forked without them: a child forked now
            # would find them loaded, so the spare must not be used.
            server.discard_spare()
            _settle_logging()
            _freeze_loaded_objects()
            server.relearn()
        pid = server.start_child(fds)
    # Reply first: the parent's start() returns, and the child runs,
    # while the next spare is forked. Its pid follows in a second
    # record (the parent reads it with its next reply, or when it
    # lists its helpers), so the parent never waits for that fork.
    _send_or_exit(server, _REPLY.pack(pid, _ANNOUNCEMENT_FOLLOWS))


def _warming_functions() -> tuple[Any, Any, Any, Any]:
    """The warm spares' (region, claim_learning, learn_pages, warm_up); Nones where
    _start._native lacks them (not Linux) or ``WARM_SPARES`` is off."""
    from . import _bootstrap

    native = _bootstrap._native  # (loaded by _native_functions, just before)
    if not WARM_SPARES or native is None or not hasattr(native, "warm_up"):
        return None, None, None, None
    import mmap

    # MAP_SHARED and anonymous: every child sees the same words, zeroed (LEARN_NONE).
    region = memoryview(mmap.mmap(-1, _PAGES_REGION_SIZE))
    return region, native.claim_learning, native.learn_pages, native.warm_up


def _native_functions() -> tuple[Any, Any]:
    """``_start._native``'s take_request and report_exits where built (Linux), else Nones."""
    from . import _bootstrap

    _bootstrap.load_prctl()  # (loads and checks the module, once)
    native = _bootstrap._native
    return getattr(native, "take_request", None), getattr(native, "report_exits", None)


def _send_or_exit(server: _Server, record: bytes) -> None:
    try:
        server.ctl.sendall(record)
    except OSError:
        # Our parent is gone (or gave up on us): leave as on EOF.
        server.discard_spare()
        os._exit(0)


class _Spare:
    """A child forked ahead of a request, waiting on ``sock`` for the request's descriptors."""

    def __init__(self, pid: int, sock: _socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        #: The reply to the request it takes, made now rather than on the way.
        self.reply = _REPLY.pack(pid, _ANNOUNCEMENT_FOLLOWS)


class _Server:
    """The fork server's state: its descriptors, its children's status sockets, its spare.

    Between two requests this state, the spare's socket and the status sockets
    aside (which every child closes first), does not change: the server does
    nothing but wait. The one exception is a request that makes it import a
    module (``_FOLLOWED_MODULES``), which discards the spare.
    """

    def __init__(self, ctl: _socket.socket, wake_fds: tuple[int, int], *, keep_spare: bool) -> None:
        self.keep_spare = keep_spare
        self.ctl = ctl
        self.wake_fds = wake_fds
        # What every child closes first: the control socket's and the wake-up
        # pipe's descriptors (by number: see _become_child).
        self.own_fds: tuple[int, ...] = (ctl.fileno(), *wake_fds)
        self.status_fds: dict[int, int] = {}
        self.spare: _Spare | None = None
        self.pid = os.getpid()
        # The hot paths in C where it is built (_start._native: Linux), which write
        # no Python object on the way: each page the server or a spare writes after
        # a fork is copied, and these steps in Python wrote ~40 pages of the server's
        # per request (~150 us of every start, issue 17), ~45 of the spare's, ~11 per
        # reaped child. None: the same steps in Python (_wire.recv_message, reap()).
        self.take_request, self.report_exits = _native_functions()
        # Warm spares (WARM_SPARES): the region all children share, None where the
        # C functions are not built; whether the child forked next learns; its pid.
        self.pages, self.claim_learning, self.learn_pages, self.warm_up = _warming_functions()
        self.learning = False
        self.learner_pid = 0
        # relearn() was asked while a learner ran: learn again once it has ended.
        self.relearn_pending = False
        #: In a spare: the pages it copied ahead (warm_up's result), else 0.
        self.warmed = 0

    def spare_pid(self) -> int:
        return self.spare.pid if self.spare is not None else 0

    def start_child(self, fds: list[int]) -> int:
        """Start a child for a request's ``[channel, status, stdout, stderr]``; return its pid.

        The spare takes it when there is one; a fresh fork otherwise. The next spare
        is forked after the reply (:meth:`fork_spare_if_missing`).
        """
        channel_fd, status_fd, stdout_fd, stderr_fd = fds
        pid = self._hand_to_spare((channel_fd, stdout_fd, stderr_fd))
        if pid == 0:
            try:
                pid = self._fork()
            except OSError as exc:
                for fd in fds:
                    os.close(fd)
                return -(exc.errno or errno.EAGAIN)
            if pid == 0:
                self._become_child(fds, None)
        for fd in (channel_fd, stdout_fd, stderr_fd):
            os.close(fd)
        self.status_fds[pid] = status_fd
        return pid

    def spare_took_request(self, status_fd: int) -> None:
        """The spare was handed a request (``take_request``), whose status socket this is."""
        spare, self.spare = self.spare, None
        assert spare is not None
        spare.sock.close()
        self.status_fds[spare.pid] = status_fd

    def _hand_to_spare(self, fds: tuple[int, int, int]) -> int:
        """Send the request's descriptors to the spare; return its pid, or 0 (no spare)."""
        # A spare that died is not reaped first: the hand-over fails (EPIPE) and it is
        # reaped then, so a living one gets its work one waitpid() sooner.
        spare, self.spare = self.spare, None
        if spare is None:
            return 0
        try:
            _wire.send_message(spare.sock, b"", fds)
        except OSError:
            # It died and was not reaped yet (killed from outside): a fresh fork.
            self._end_spare(spare)
            return 0
        spare.sock.close()
        return spare.pid

    def fork_spare_if_missing(self) -> None:
        if self.keep_spare and self.spare is None:
            self._fork_spare()

    def _fork_spare(self) -> None:
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            pid = self._fork()
        except OSError:
            ours.close()
            theirs.close()
            return  # the next request forks a child itself
        if pid == 0:
            ours.close()
            self._become_child(None, theirs)
        theirs.close()
        self.spare = _Spare(pid, ours)

    def _fork(self) -> int:
        """``os.fork()``; the child is the learner (warm spares) if nothing is learned."""
        self.learning = self.pages is not None and self.claim_learning(self.pages)
        try:
            pid = os.fork()
        except OSError:
            if self.learning:
                self._set_learning_state(_LEARN_NONE)
            raise
        if pid != 0:
            if self.learning:
                self.learner_pid = pid
            self.learning = False  # (the child keeps it: _become_child reads it)
        return pid

    def relearn(self) -> None:
        """The server loaded modules: its children write other pages now. The next
        child forked learns them (or the first forked after the running learner ends)."""
        if self.pages is None:
            return
        if self.learner_pid:
            self.relearn_pending = True
        else:
            self._set_learning_state(_LEARN_NONE, unless=_LEARN_FAILED)

    def _child_gone(self, pid: int) -> None:
        """A child of the server was reaped: if it was the learner, what it left."""
        if pid != self.learner_pid or self.pages is None:
            return
        self.learner_pid = 0
        if self.relearn_pending:
            self.relearn_pending = False
            self._set_learning_state(_LEARN_NONE, unless=_LEARN_FAILED)
        elif int.from_bytes(self.pages[:8], "little") == _LEARN_BUSY:
            # It ended before it learned (killed, os._exit, a spare discarded):
            # the next child forked learns.
            self._set_learning_state(_LEARN_NONE)

    def _set_learning_state(self, value: int, unless: int = -1) -> None:
        assert self.pages is not None
        if int.from_bytes(self.pages[:8], "little") != unless:
            self.pages[:8] = value.to_bytes(8, "little")

    def discard_spare(self) -> None:
        spare, self.spare = self.spare, None
        if spare is not None:
            self._end_spare(spare)

    def _end_spare(self, spare: _Spare) -> None:
        spare.sock.close()
        try:
            os.kill(spare.pid, _signal.SIGKILL)
            os.waitpid(spare.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            return  # reaped already (by reap())
        self._child_gone(spare.pid)

    def reap(self) -> None:
        """Reap the children that ended; write each started one's exit code for its parent."""
        if self.report_exits is not None:
            # Written to the status sockets in C, before anything here is touched.
            for pid, exitcode in self.report_exits(self.status_fds):
                self._reaped(pid, exitcode, reported=True)
            return
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped(pid, os.waitstatus_to_exitcode(status), reported=False)

    def _reaped(self, pid: int, exitcode: int, *, reported: bool) -> None:
        self._child_gone(pid)
        if self.spare is not None and pid == self.spare.pid:
            self.spare.sock.close()  # killed from outside before it had work
            self.spare = None
            return
        fd = self.status_fds.pop(pid, None)
        if fd is not None:
            if not reported:
                try:
                    os.write(fd, EXIT_STATUS.pack(exitcode))
                except OSError:
                    pass  # the parent closed the process object already
            os.close(fd)
            # 1: the target raised, and the child imported the error types to report
            # it. (Not for other codes: sys.exit(n) or a signal, terminate() say,
            # imports nothing, and the modules would make every later child heavier.)
            if exitcode == 1 and _import_quietly(_FAILURE_MODULES):
                _freeze_loaded_objects()
                self.relearn()

    def _become_child(self, fds: list[int] | None, spare_sock: _socket.socket | None) -> None:
        """In a new child: drop the server's state, then run the request's work; never returns.

        A fresh fork has its request's descriptors (``fds``); a spare waits for them on
        ``spare_sock``, having done everything else first.
        """
        from . import _bootstrap

        learner = self.learning
        exitcode = 1
        try:
            # The C functions: signal.py's wrap each result in an enum, which
            # costs a forked child page copies for nothing.
            _signal.set_wakeup_fd(-1)
            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
            # The server's descriptors go by number, without touching their objects
            # (each object written is a page copied); the objects stay referenced
            # by the server's frames and are never closed or collected here: the
            # child leaves with os._exit.
            for fd in self.own_fds:
                os.close(fd)
            if self.spare is not None:
                os.close(self.spare.sock.fileno())
            for fd in self.status_fds.values():
                os.close(fd)
            if fds is not None:
                os.close(fds[1])  # the status socket: the server's to write
            _bootstrap.become_server_child(self.pid)
            if learner:
                # Just before its target runs: the pages every child writes to get
                # there, not those its target writes (which may run for ever).
                _bootstrap.before_target = lambda: self.learn_pages(self.pages)
            elif spare_sock is not None and self.pages is not None:
                # Copy them now, while idle; stop when the request comes.
                self.warmed = self.warm_up(self.pages, spare_sock.fileno())
            if spare_sock is not None:
                # SIGINT stays ignored while idle, as in the server: a Ctrl-C
                # in the terminal must not kill a process nobody started yet.
                try:
                    if self.take_request is not None:
                        _data, got, _ = self.take_request(spare_sock.fileno(), -1, b"")
                    else:
                        _data, got = _wire.recv_message(spare_sock)
                except (EOFError, OSError):
                    got = []  # the server discarded us, or is gone
                if len(got) != 3:
                    exitcode = 0
                    return
                spare_sock.close()
                channel_fd, stdout_fd, stderr_fd = got
            else:
                channel_fd, _status_fd, stdout_fd, stderr_fd = fds  # type: ignore[misc]
            _signal.signal(_signal.SIGINT, _signal.default_int_handler)
            # Write where the parent's stdout/stderr point now, not where they
            # pointed when the server started (they may have been redirected since).
            flush_std_streams()
            os.dup2(stdout_fd, 1)
            os.dup2(stderr_fd, 2)
            os.close(stdout_fd)
            os.close(stderr_fd)
            # The C socket, as in a spawned child: socket.py's wrapper adds nothing here.
            channel = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, channel_fd)
            exitcode = _bootstrap.run_from_channel(
                channel, exec_mode=False, take_message=self.take_request
            )
            flush_std_streams()
        finally:
            os._exit(exitcode)


#: Loaded by the server for its children (see ``serve``): small, and needed by every
#: child whose start message is plain (``_plain``) or names main-script functions.
_CHILD_MODULES = ("proctor._start._plain", "proctor._core._rebuilding")


def _settle_logging() -> None:
    """Once the server has logging: what every child does when logging is loaded, done once.

    Each child has logging stamp its records with the child's own name
    (``_logger.name_records_after_this_process``) as soon as logging is imported;
    a child forked from a server that did it already finds the wrapper in place
    and keeps it, which saves it replacing logging's record factory on the way
    to its target (the wrapper asks for the process's name when a record is made).
    Likewise the forwarding handler's class, which a forwarding child would build.
    """
    if "logging" in sys.modules:
        from .._logging import _logger

        _logger.name_records_after_this_process()
    forwarding = sys.modules.get(_FORWARDING_MODULE)
    if forwarding is not None:
        forwarding._handler_class()


def _freeze_loaded_objects() -> None:
    """Move every object the server has made so far out of the collector's young generations.

    A collection writes to each object it scans, and the server's objects are its
    children's copy-on-write pages: a child whose first young collection (after ~700
    allocations: any real target) scanned the modules just imported would copy them
    (a forked child ages them itself, ``_bootstrap._age_inherited_objects``, and skips
    that where objects are frozen already, as here). Frozen, they stay out of every
    collection, the server's own included; what the server imports is never garbage.
    """
    gc.freeze()


def _import_quietly(names: list[str]) -> bool:
    """Import ``names`` not loaded yet; whether that loaded any module (theirs included)."""
    loaded = len(sys.modules)
    for name in names:
        if name in sys.modules:
            continue
        try:
            __import__(name)
        except Exception as exc:
            sys.stderr.write(f"proctor fork server: could not preload {name!r}: {exc!r}\n")
    if len(sys.modules) == loaded:
        return False
    # What a module printed while it was imported is written now, once: left in the
    # buffer, every child forked from here would write it again.
    flush_std_streams()
    return True


# -- the client, in the parent -------------------------------------------------------

_preload: list[str] = []


def set_preload(module_names: list[str]) -> None:
    """Modules the fork server imports before forking (takes effect at its next start)."""
    if isinstance(module_names, (str, bytes)) or not all(isinstance(m, str) for m in module_names):
        raise TypeError(
            f"module_names must be a list of strings (module names), not {module_names!r}"
        )
    _preload[:] = list(module_names)


class ForkServerClient:
    """The parent's handle on its fork server: started lazily, restarted if it died."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._ctl: _socket.socket | None = None
        self._pid = 0
        self._spare = 0
        # Whether the server's announcement of its next spare is still unread.
        self._announcement_due = False
        # The names of the modules the server was last told to load.
        self._followed: tuple[str, ...] = ()
        self._atexit_registered = False

    @property
    def pid(self) -> int:
        return self._pid

    def start_child(self, channel_fd: int, status_fd: int, *, forwards_logs: bool = False) -> int:
        """Ask the server to fork a child wired to the two descriptors; return its pid.

        The child also gets this process's current stdout and stderr.

        Args:
            forwards_logs: the child forwards its log records (its start message
                carries a log channel): the server loads what that needs.
        """
        with self._lock:
            for attempt in (1, 2):
                if self._ctl is None:
                    self._start_server()
                assert self._ctl is not None
                try:
                    _wire.send_message(
                        self._ctl,
                        self._modules_to_follow(forwards_logs),
                        [channel_fd, status_fd, *_std_fds()],
                    )
                    # The previous request's announcement, if not read yet, comes
                    # first: both records are read at once.
                    due = self._announcement_due
                    records = _wire.recv_exactly(self._ctl, _REPLY.size * (1 + due))
                except TimeoutError:
                    from .._core._errors import StartError

                    pid = self._pid
                    self._forget_server()
                    raise StartError(
                        f"the fork server (pid {pid}) did not answer within "
                        f"{REPLY_TIMEOUT:.0f} s (stopped or overloaded?); it was killed, and "
                        "the next start will use a new one"
                    ) from None
                except (OSError, EOFError) as exc:
                    pid = self._pid
                    self._forget_server()  # it died; start a new one and retry once
                    if attempt == 2:
                        from .._core._errors import StartError

                        # Twice in a row: a server that cannot start (an executable
                        # of another Python version says so on stderr), not a crash.
                        raise StartError(
                            f"the fork server (pid {pid}) ended before it answered, as did "
                            f"the one before it ({exc!r}); what it wrote on stderr says why"
                        ) from exc
                    continue
                except BaseException:
                    # Interrupted mid-exchange (Ctrl-C, a signal handler's exception):
                    # the reply still comes, and the next start would take it for its
                    # own -- the previous child's pid -- and every start after it
                    # would be one reply behind. The next start uses a new server.
                    self._forget_server()
                    raise
                pid, follows = _REPLY.unpack_from(records, _REPLY.size * due)
                # The spare the server had is the child now, or was discarded.
                self._note_spare(0)
                self._announcement_due = follows == _ANNOUNCEMENT_FOLLOWS
                if pid < 0:
                    raise OSError(-pid, f"the fork server could not fork: {os.strerror(-pid)}")
                return pid
        raise AssertionError("unreachable")

    def spare_pid(self) -> int:
        """The pid of the server's spare (0: none), once the server has announced it."""
        with self._lock:
            self._take_announcement()
            return self._spare

    def _take_pending_announcement(self) -> None:
        # A helper source (_runtime.helper_pids): registers the spare forked after
        # the last reply. Skipped while a start holds the lock: that start reads it.
        if self._announcement_due and self._lock.acquire(blocking=False):
            try:
                self._take_announcement()
            finally:
                self._lock.release()

    def _take_announcement(self) -> None:
        """Read the announcement that follows the last reply, if not read yet (lock held).

        The server writes it as soon as it has forked the spare, so this waits
        for that fork at most (or REPLY_TIMEOUT for a stuck server).
        """
        if not self._announcement_due or self._ctl is None:
            return
        try:
            record = _wire.recv_exactly(self._ctl, _REPLY.size)
        except (OSError, EOFError):
            # The server died (its spare with it): the next start finds out.
            self._announcement_due = False
            return
        self._announcement_due = False
        self._note_spare(_REPLY.unpack(record)[1])

    def _note_spare(self, pid: int) -> None:
        # The server's spare is one of proctor's helpers (not a child of ours:
        # active_children() never lists it, the leak checks leave it alone) until
        # a start makes it the child.
        if pid != self._spare:
            if self._spare:
                _runtime.unregister_helper(self._spare)
            if pid:
                _runtime.register_helper(pid)
            self._spare = pid

    def _modules_to_follow(self, forwards_logs: bool) -> bytes:
        """Names of the modules for the server to load when their list grew (else b"")."""
        modules = sys.modules
        wanted = [name for name in _FOLLOWED_MODULES if name in modules]
        if forwards_logs or _FORWARDING_MODULE in self._followed:
            # Once asked for, it stays in the list, which only grows.
            wanted.append(_FORWARDING_MODULE)
        if len(wanted) == len(self._followed):
            return b""
        self._followed = tuple(wanted)
        return ",".join(wanted).encode()

    def _start_server(self) -> None:
        import threading

        from ._popen_spawn import spawn_interpreter

        ours, theirs = _wire.socketpair()
        try:
            on_main = threading.current_thread() is threading.main_thread()
            entry = f"serve(3, {os.getpid()}, {on_main}, {_preload!r}, {SPARE})"
            self._pid = spawn_interpreter(entry, {3: theirs.fileno()})
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        # Every request is answered at once by a healthy server; a stuck one
        # must not hang start() for ever.
        ours.settimeout(REPLY_TIMEOUT)
        self._ctl = ours
        self._followed = ()
        self._announcement_due = False
        _runtime.register_helper(self._pid)
        _runtime.add_helper_source(self._take_pending_announcement)
        if not self._atexit_registered:
            # At exit, once every child is joined, close the control socket (the
            # server then exits) and reap the server: closing it earlier would
            # take the server's children (ours) down with it.
            register_exit_hook(self.stop)
            self._atexit_registered = True

    def _forget_server(self) -> None:
        self._announcement_due = False
        _runtime.remove_helper_source(self._take_pending_announcement)
        if self._ctl is not None:
            self._ctl.close()  # a healthy server exits on this EOF
            self._ctl = None
        if self._pid:
            _reap_server(self._pid)  # a server that exits reaps its spare first
            _runtime.unregister_helper(self._pid)
            self._pid = 0
        self._note_spare(0)

    def stop(self) -> None:
        """Close the control socket; the server exits, and is reaped here."""
        with self._lock:
            self._forget_server()

    def _reset_after_fork(self) -> None:
        # A forked child must not share its parent's server: closing our copy of
        # the control socket keeps EOF meaningful for the parent's server.
        self._lock = _thread.allocate_lock()
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        self._pid = 0
        self._spare = 0
        self._announcement_due = False
        self._atexit_registered = False


def _reap_server(pid: int) -> None:
    """Wait for a server told to exit; kill it if it does not within EXIT_GRACE."""
    deadline = time.monotonic() + EXIT_GRACE
    while True:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() >= deadline:
            # (Here, not at the top: the server imports this module and forks
            # every child from it; the client in the parent has _popen loaded.)
            from ._popen import kill_and_reap

            kill_and_reap(pid)
            return
        time.sleep(0.005)


def _std_fds() -> list[int]:
    # A closed one: the child gets /dev/null's place-holder instead.
    return [fd if _system.fd_is_open(fd) else _system.devnull_fd() for fd in (1, 2)]


_client = ForkServerClient()


def client() -> ForkServerClient:
    """This process's fork server client."""
    return _client


os.register_at_fork(after_in_child=lambda: _client._reset_after_fork())
