"""Passing a connection end to another process: what travels, and the end rebuilt there.

An end goes to a child as an argument of ``Process`` (any start method) or in a
message over a Unix socket. Its descriptors travel as tokens of the carrier
(``_core._reduction``); so does whatever this end already holds for the messages
still to come, which would otherwise be lost::

    reduce_end(conn)                            rebuild_end(cls, ...)  (the other process)
      socket, pipes, datagram socket,     ──▶     the same descriptors, a new end
      the send lock's file (macOS)                  (the lock file: every sender of the
                                                     end locks the same one)
      the spare socket (large buffers'    ──▶     the same socket (its kept mappings
        memfds come back on it)                     stay here: a new end keeps its own)
      bytes read ahead                    ──▶     its read-ahead buffer
      datagrams stashed (by frame id)     ──▶     its stash
      descriptors read ahead ("PU")       ──▶     its FdInbox
      a keyless Client's greeting check   ──▶     checked at its first receive

A passed end is shared from then on: ``keep_in_process()``'s promise is withdrawn.
"""

from __future__ import annotations

import _socket as socket  # (not socket.py: with enum and selectors, ms of a spawned start)

from .._core import _reduction
from ._end import EndState
from ._fdchannel import FdChannel
from ._sendlock import SendLock

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from typing import Any

__all__ = ("rebuild_end", "reduce_end")


def reduce_end(conn: EndState, cls: Any) -> tuple[Any, tuple[Any, ...]]:
    """``conn.__reduce__()``: the end as ``rebuild_end`` and its arguments.

    ``cls`` is the class the end is rebuilt as: ``Connection`` (whatever subclass
    ``conn`` is of, as ever).

    Raises:
        OSError: the end is closed.
        TypeError: it was made from a descriptor that is not a socket.
        ValueError: it is in the middle of receiving a message.
    """
    if conn._closed:
        raise OSError("cannot send or pass a closed Connection")
    if isinstance(conn._sock, FdChannel):
        raise TypeError(
            "a Connection made from a descriptor that is not a socket (Connection(fd) "
            "of a pipe or a file) cannot be sent to another process; pass the "
            "descriptor itself (reduction.DupFd) and wrap it there"
        )
    if conn._partial is not None:
        raise ValueError(
            "cannot send or pass a Connection in the middle of receiving a message "
            "(an arecv() was cancelled part-way through it): receive that message first"
        )

    def token(fd: int) -> int:
        return _reduction.fd_token(fd, "Connection", messages=True)

    sock_token = token(conn._sock.fileno())
    fsock = conn._fsock
    ftoken = token(fsock.fileno()) if fsock is not None else -1
    # (A frame socket is _rfd and _wfd at once: it travels once, as ftoken.)
    rtoken = token(conn._rfd) if conn._rfd >= 0 and fsock is None else -1
    wtoken = token(conn._wfd) if conn._wfd >= 0 and fsock is None else -1
    lock = conn._send_lock
    lock.process_private = False  # shared from now on (keep_in_process)
    ltoken = token(lock.fd) if lock.owns_fd else -1
    dsock = conn._dsock
    dtoken = token(dsock.fileno()) if dsock is not None else -1
    spare = conn._spare_sock
    stoken = token(spare.fileno()) if spare is not None else -1
    # Bytes already read ahead belong to the next messages, and so do the
    # datagrams whose headers are still to come, and the descriptors that
    # came with those bytes: they travel too.
    pending = bytes(conn._rview[conn._rpos : conn._rend])
    stash = dict(conn._stash) if conn._stash else None
    inbox = conn._fd_inbox
    itokens = [token(fd) for fd in inbox.fds] if inbox is not None and inbox.fds else None
    return rebuild_end, (
        cls,
        sock_token,
        conn._readable,
        conn._writable,
        pending,
        rtoken,
        wtoken,
        ltoken,
        dtoken,
        stash,
        itokens,
        conn._greeting,
        stoken,
        ftoken,
        conn._private_frames,
    )


def rebuild_end(
    cls: Any,
    token: int,
    readable: bool,
    writable: bool,
    pending: bytes = b"",
    rtoken: int = -1,
    wtoken: int = -1,
    ltoken: int = -1,
    dtoken: int = -1,
    stash: dict[int, bytes] | None = None,
    itokens: list[int] | None = None,
    greeting: Any = None,
    stoken: int = -1,
    ftoken: int = -1,
    private: bool = False,
) -> Any:
    """The end ``reduce_end`` described, in this process (``cls``: its class, ``Connection``)."""
    sock = socket.socket(fileno=_reduction.take_fd(token))
    rfd = _reduction.take_fd(rtoken) if rtoken >= 0 else -1
    wfd = _reduction.take_fd(wtoken) if wtoken >= 0 else -1
    dsock = _blocking_socket(dtoken)
    spare = _blocking_socket(stoken)
    fsock = _blocking_socket(ftoken)
    if fsock is not None or rfd >= 0 or wfd >= 0:
        conn = cls._with_pipes(
            sock, rfd, wfd, readable, writable, dsock, spare, fsock, private=private
        )
    else:
        conn = cls(sock, readable, writable)
    if ltoken >= 0:
        # The end's lock file travels with it: every sender must lock the same file.
        conn._send_lock.close()
        conn._send_lock = SendLock(_reduction.take_fd(ltoken), owns_fd=True)
    if pending:
        conn._rbuf[: len(pending)] = pending
        conn._rend = len(pending)
    if stash:
        conn._stash = stash
    if itokens and conn._fd_inbox is not None:
        conn._fd_inbox.fds = [_reduction.take_fd(t) for t in itokens]
    if greeting is not None:
        conn._greeting = greeting
        conn._can_recv = False
    return conn


def _blocking_socket(token: int) -> socket.socket | None:
    """The socket whose descriptor ``token`` names (None for -1), left blocking.

    socket.setdefaulttimeout() in this process would make a new socket object
    non-blocking in the kernel, for every process that shares the socket: the
    side and frame sockets of an end must stay blocking.
    """
    if token < 0:
        return None
    sock = socket.socket(fileno=_reduction.take_fd(token))
    if socket.getdefaulttimeout() is not None:
        sock.settimeout(None)
    return sock
