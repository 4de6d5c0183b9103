"""The ``forkserver`` start method: children forked by a clean helper process.

Like spawn, the process object is pickled and sent over the channel; unlike
spawn, the child does not boot an interpreter but is forked from the fork server
(see ``_forkserver``), which is fast and safe even when the parent runs threads.
The child is the server's child, not ours, so the server reports its exit code
over a per-child status socket, which is also the sentinel.
"""

from __future__ import annotations

import _socket
import signal

from .._core import _wire
from .._core._timeout import readable_now
from . import _forkserver
from ._popen import Popen, close_quietly

__all__ = ("ForkServerPopen",)


class ForkServerPopen(Popen):
    method = "forkserver"
    _status: _socket.socket | None = None

    def __init__(self, process) -> None:
        super().__init__()
        message, handoff, log_channel = self._prepare_start(process)
        parent_end, child_end = _wire.socketpair()
        status_ours, status_theirs = _status_pair()
        try:
            # The start message waits in the channel while the server forks: the
            # child reads it as soon as it runs, without waiting for this process
            # to hear the pid and send it (one wake-up less on the way to run()).
            # Nothing blocks: a large message goes in a memfd (_wire).
            _wire.send_message(parent_end, message, handoff.fds)
            self.pid = _forkserver.client().start_child(
                child_end.fileno(), status_theirs.fileno(), forwards_logs=log_channel is not None
            )
        except BaseException:
            close_quietly(parent_end, status_ours, log_channel)
            raise
        finally:
            child_end.close()
            status_theirs.close()
        self.channel = parent_end
        self._status = status_ours
        self.sentinel = status_ours.fileno()
        self._finish_start(process, handoff, log_channel)

    def _collect_status(self, block: bool) -> None:
        if not block and not readable_now(self.sentinel):
            return
        assert self._status is not None  # only closed after the status was read
        try:
            data = _wire.recv_exactly(self._status, _forkserver.EXIT_STATUS.size)
        except _wire.WireError:
            # The fork server died before reporting; its children are killed
            # with it (PR_SET_PDEATHSIG / the parent watch).
            self.returncode = -signal.SIGKILL
        else:
            (self.returncode,) = _forkserver.EXIT_STATUS.unpack(data)

    def _status_elsewhere(self) -> int | None:
        # Peeked, not read: the exit code stays in the socket for the starter,
        # with whom a fork shares it.
        status = self._status
        if status is None or not readable_now(self.sentinel):
            return None
        try:
            data = status.recv(_forkserver.EXIT_STATUS.size, _socket.MSG_PEEK)
        except OSError:
            return None
        if len(data) < _forkserver.EXIT_STATUS.size:
            return None  # read by the starter already, or the server died first
        (code,) = _forkserver.EXIT_STATUS.unpack(data)
        return int(code)

    def _close_sentinel(self) -> None:
        # The sentinel is the status socket's descriptor: close the socket.
        if self._status is not None:
            self._status.close()
            self._status = None
        self.sentinel = -1


def _status_pair() -> tuple[_socket.socket, _socket.socket]:
    """The pair the server reports the exit code on: C sockets, blocking.

    Four bytes each way at most, so the buffer sizes do not matter, and the
    C module's sockets do without socket.py's wrappers (and their getsockname).
    """
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    if _socket.getdefaulttimeout() is not None:
        # setdefaulttimeout() makes new sockets non-blocking in the kernel; the
        # server writes on its end, and this end is read once readable.
        ours.settimeout(None)
        theirs.settimeout(None)
    return ours, theirs
