"""The fork server: a clean, single-threaded process that forks children on request.

::

    parent process                          fork server (spawned once, lazily)
    ──────────────                          ──────────────────────────────────
    send [prep | payload] ─── channel ─────────────────────────┐ (waits in the socket)
    ForkServerClient.start_child() ── ctl ─▶ recv request + [channel, status] fds
                                             os.fork() ─▶ child: run_from_channel(channel)
                       pid ◀──────────── ctl ─┘
    sentinel = status socket ◀── exit code ── server reaps the child (SIGCHLD)

The server is a child of the process that first needed it and is private to
that process (children started by other processes use their own server). It
holds nothing but proctor, so forking it is cheap and safe even when the parent
runs threads. Lifetime: the server exits as soon as its control socket reports
EOF -- the parent exited or died -- and its children die with it
(``PR_SET_PDEATHSIG`` on Linux, a parent watch elsewhere).
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time

from .._core import _runtime, _wire
from .._core._errors import StartError
from ._state import flush_std_streams, register_exit_hook

__all__ = ("ForkServerClient", "client", "serve", "set_preload")

_PID = struct.Struct("<q")
# How long the server may take to answer a request (it answers at once when
# healthy; the first request also waits for it to boot).
REPLY_TIMEOUT = 60.0
# How long a server told to exit may take before it is killed.
EXIT_GRACE = 2.0
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
    "psutil",
    "proctor._core._by_value",
)
EXIT_STATUS = struct.Struct("<i")


# -- the server --------------------------------------------------------------------


def serve(ctl_fd: int, parent_pid: int, pdeathsig: bool, preload: list[str]) -> None:
    """Main loop of the fork server process; never returns."""
    from . import _bootstrap

    os.set_inheritable(ctl_fd, False)
    ctl = socket.socket(fileno=ctl_fd)
    _bootstrap.arm_parent_death(parent_pid, pdeathsig)
    # A Ctrl-C in the terminal reaches the whole process group; the parent
    # decides what happens to its children, the server just carries on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _import_quietly(preload)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    status_fds: dict[int, int] = {}
    selector = selectors.DefaultSelector()
    selector.register(ctl, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _events in selector.select():
            if key.fileobj is ctl:
                try:
                    data, fds = _wire.recv_message(ctl)
                except (EOFError, OSError):
                    os._exit(0)  # our parent is gone; our children follow by PDEATHSIG
                if len(fds) != 4:
                    for fd in fds:
                        os.close(fd)
                    ctl.sendall(_PID.pack(-errno.EINVAL))
                    continue
                channel_fd, status_fd, stdout_fd, stderr_fd = fds
                if data:
                    _import_quietly(data.decode().split(","))
                server_pid = os.getpid()
                try:
                    pid = os.fork()
                except OSError as exc:
                    for fd in fds:
                        os.close(fd)
                    ctl.sendall(_PID.pack(-(exc.errno or errno.EAGAIN)))
                    continue
                if pid == 0:
                    _become_child(ctl, selector, (wake_r, wake_w), status_fds, fds, server_pid)
                for fd in (channel_fd, stdout_fd, stderr_fd):
                    os.close(fd)
                status_fds[pid] = status_fd
                ctl.sendall(_PID.pack(pid))
            else:
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                _reap(status_fds)


def _import_quietly(names: list[str]) -> None:
    for name in names:
        if name in sys.modules:
            continue
        try:
            __import__(name)
        except Exception as exc:
            sys.stderr.write(f"proctor fork server: could not preload {name!r}: {exc!r}\n")


def _become_child(ctl, selector, wake_fds, status_fds, fds, server_pid) -> None:
    from . import _bootstrap

    channel_fd, own_status_fd, stdout_fd, stderr_fd = fds
    exitcode = 1
    try:
        # Write where the parent's stdout/stderr point now, not where they
        # pointed when the server started (they may have been redirected since).
        flush_std_streams()
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        os.close(stdout_fd)
        os.close(stderr_fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        selector.close()
        ctl.close()
        for fd in (*wake_fds, *status_fds.values(), own_status_fd):
            os.close(fd)
        channel = socket.socket(fileno=channel_fd)
        exitcode = _bootstrap.run_from_channel(channel, exec_mode=False, server_pid=server_pid)
        flush_std_streams()
    finally:
        os._exit(exitcode)


def _reap(status_fds: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status_fds.pop(pid, None)
        if fd is not None:
            try:
                os.write(fd, EXIT_STATUS.pack(os.waitstatus_to_exitcode(status)))
            except OSError:
                pass  # the parent closed the process object already
            os.close(fd)


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
        self._lock = threading.Lock()
        self._ctl: socket.socket | None = None
        self._pid = 0
        self._followed = 0
        self._atexit_registered = False

    @property
    def pid(self) -> int:
        return self._pid

    def start_child(self, channel_fd: int, status_fd: int) -> int:
        """Ask the server to fork a child wired to the two descriptors; return its pid.

        The child also gets this process's current stdout and stderr.
        """
        with self._lock:
            for attempt in (1, 2):
                if self._ctl is None:
                    self._start_server()
                assert self._ctl is not None
                try:
                    _wire.send_message(
                        self._ctl, self._modules_to_follow(), [channel_fd, status_fd, *_std_fds()]
                    )
                    reply = _wire.recv_exactly(self._ctl, _PID.size)
                except TimeoutError:
                    pid = self._pid
                    self._forget_server()
                    raise StartError(
                        f"the fork server (pid {pid}) did not answer within "
                        f"{REPLY_TIMEOUT:.0f} s (stopped or overloaded?); it was killed, and "
                        "the next start will use a new one"
                    ) from None
                except (OSError, EOFError):
                    self._forget_server()  # it died; start a new one and retry once
                    if attempt == 2:
                        raise
                    continue
                (pid,) = _PID.unpack(reply)
                if pid < 0:
                    raise OSError(-pid, f"the fork server could not fork: {os.strerror(-pid)}")
                return pid
        raise AssertionError("unreachable")

    def _modules_to_follow(self) -> bytes:
        """Names of followed modules loaded here since the server last heard (or b"")."""
        modules = sys.modules
        loaded = [name for name in _FOLLOWED_MODULES if name in modules]
        if len(loaded) == self._followed:
            return b""
        self._followed = len(loaded)
        return ",".join(loaded).encode()

    def _start_server(self) -> None:
        from ._popen_spawn import spawn_interpreter

        ours, theirs = _wire.socketpair()
        try:
            on_main = threading.current_thread() is threading.main_thread()
            entry = f"serve(3, {os.getpid()}, {on_main}, {_preload!r})"
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
        self._followed = 0
        _runtime.register_helper(self._pid)
        if not self._atexit_registered:
            # At exit, once every child is joined, close the control socket (the
            # server then exits) and reap the server: closing it earlier would
            # take the server's children (ours) down with it.
            register_exit_hook(self.stop)
            self._atexit_registered = True

    def _forget_server(self) -> None:
        if self._ctl is not None:
            self._ctl.close()  # a healthy server exits on this EOF
            self._ctl = None
        if self._pid:
            _reap_server(self._pid)
            _runtime.unregister_helper(self._pid)
            self._pid = 0

    def stop(self) -> None:
        """Close the control socket; the server exits, and is reaped here."""
        with self._lock:
            self._forget_server()

    def _reset_after_fork(self) -> None:
        # A forked child must not share its parent's server: closing our copy of
        # the control socket keeps EOF meaningful for the parent's server.
        self._lock = threading.Lock()
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        self._pid = 0
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
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            return
        time.sleep(0.005)


def _std_fds() -> list[int]:
    fds = []
    for fd in (1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:  # closed: give the child /dev/null's place-holder instead
            from ._bootstrap import devnull_fd

            fds.append(devnull_fd())
    return fds


_client = ForkServerClient()


def client() -> ForkServerClient:
    """This process's fork server client."""
    return _client


os.register_at_fork(after_in_child=lambda: _client._reset_after_fork())
