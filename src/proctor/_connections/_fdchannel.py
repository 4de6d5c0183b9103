"""A byte stream on any descriptor: ``Connection(fd)`` of a pipe, a FIFO, a terminal.

``multiprocessing.connection.Connection(handle)`` wraps any descriptor and
reads and writes it with ``os.read``/``os.write``; proctor's ``Connection`` is
written against a stream socket. ``FdChannel`` gives a descriptor that is not a
socket the few socket methods a connection end calls, so the same framing code
runs on it::

    Connection(fd) ── socket.socket(fileno=fd)? ── yes ──▶ a socket connection
                                                └─ no (a pipe, or not open yet) ──▶
                       FdChannel(fd): recv/recv_into ──▶ os.read/os.readv
                                      sendmsg/sendall ──▶ os.writev/os.write

Nothing is checked when the channel is made: a descriptor that is not open
fails at first use (``OSError(EBADF)``), as the stdlib's does. Descriptors
cannot cross a pipe, so a send of an object that owns one is refused before
anything is written (``Connection.send``). The descriptor's blocking mode is left
as the caller set it (its flags are shared with every process holding it): a
non-blocking one is waited on with ``poll``. Writes never raise ``SIGPIPE``: it is
blocked around a write where it is not ignored already.
"""

from __future__ import annotations

import _signal as signal  # type: ignore[import-not-found]  # (signal.py: enum)
import _socket as socket  # (not socket.py: with enum and selectors, ms of a spawned start)
import errno
import os
import select
import time

from ._sendlock import wait_writable

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from typing import Any

__all__ = ("FdChannel",)

# The flags a connection end passes, as plain ints (see _sending).
_MSG_WAITALL = int(getattr(socket, "MSG_WAITALL", 0))
_MSG_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0))
_PIPE_ATOMIC = getattr(select, "PIPE_BUF", 512)
_SIGPIPE: int = getattr(signal, "SIGPIPE", 13)


def _wait_readable(fd: int) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.poll()


class FdChannel:
    """What a ``Connection`` calls on its socket, for a descriptor that is not one.

    Args:
        fd: the descriptor; the channel owns it (``close()`` closes it).
    """

    __slots__ = ("_fd",)

    family = None
    type = None

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:  # never opened: nothing to close
                    raise

    def detach(self) -> int:
        fd, self._fd = self._fd, -1
        return fd

    def __repr__(self) -> str:
        return f"<FdChannel fd={self._fd}>"

    # -- reading -------------------------------------------------------------------

    def _read_into(self, view: memoryview) -> int:
        while True:
            try:
                return os.readv(self._fd, [view])
            except BlockingIOError:
                _wait_readable(self._fd)

    def recv_into(self, view: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(view).cast("B")
        if nbytes:
            view = view[:nbytes]
        if not flags & _MSG_WAITALL:
            return self._read_into(view)
        got = 0
        while got < len(view):
            n = self._read_into(view[got:])
            if not n:
                break
            got += n
        return got

    def recv(self, n: int, flags: int = 0) -> bytes:
        buffer = bytearray(n)
        got = self.recv_into(buffer, n, flags)
        return bytes(buffer) if got == n else bytes(buffer[:got])

    # -- writing -------------------------------------------------------------------

    def sendmsg(self, parts: list[Any], ancdata: Any = (), flags: int = 0) -> int:
        if ancdata:
            raise OSError(errno.EINVAL, "descriptors cannot be sent on a pipe or a file")
        if flags & _MSG_DONTWAIT:
            # At most PIPE_BUF bytes once there is room: a pipe takes them
            # without blocking, whatever the descriptor's mode.
            if not wait_writable(self._fd, time.monotonic()):
                raise BlockingIOError(errno.EAGAIN, "the pipe is full")
            data = b"".join(bytes(p) for p in parts)[:_PIPE_ATOMIC]
            return self._write(lambda: os.write(self._fd, data))
        return self._write(lambda: os.writev(self._fd, parts))

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[self._write(lambda v=view: os.write(self._fd, v)) :]

    def _write(self, write: Any) -> int:
        while True:
            try:
                if signal.getsignal(_SIGPIPE) == signal.SIG_IGN:
                    return int(write())
                return int(_without_sigpipe(write))
            except BlockingIOError:
                wait_writable(self._fd, None)


def _without_sigpipe(write: Any) -> Any:
    """Run ``write()`` with SIGPIPE blocked; a SIGPIPE it raised is taken, not delivered."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {_SIGPIPE})
    try:
        return write()
    except BrokenPipeError:
        if _SIGPIPE not in previous and hasattr(signal, "sigtimedwait"):
            signal.sigtimedwait([_SIGPIPE], 0)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
