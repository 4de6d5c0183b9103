"""Descriptors as messages: ``send_handle``/``recv_handle`` and ``sendfds``/``recvfds``.

``send_handle(conn, fd, pid)`` is ``conn.send()`` of a :class:`DupFd` that lends
``fd`` (nothing is duplicated in the sender): the descriptor travels as every
descriptor does in proctor, beside the message on the connection's Unix socket
(``_core._reduction``), and ``recv_handle(conn)`` receives it, owned::

    send_handle(conn, fd, pid)                      recv_handle(conn)
      conn.send(DupFd lending fd) ──SCM_RIGHTS──▶     conn.recv() ─▶ DupFd ─▶ detach()

``sendfds``/``recvfds`` are the stdlib's raw helpers for a plain ``AF_UNIX``
socket: one byte (the count, modulo 256) carries the descriptors. They speak
the stdlib's format, so either side may be ``multiprocessing``'s.
"""

from __future__ import annotations

import array
import socket
from collections.abc import Sequence
from typing import Any

from .._core._closing import close_all_quietly
from .._core._reduction import DupFd
from .._core._wire import cloexec_flag, fds_from
from ._connection import Connection

__all__ = ("HAVE_SEND_HANDLE", "recv_handle", "recvfds", "send_handle", "sendfds")

#: Descriptors can be sent between processes (on every POSIX system).
HAVE_SEND_HANDLE = True
_RECV_CLOEXEC = cloexec_flag()


def send_handle(conn: Connection, handle: int, destination_pid: int | None = None) -> None:
    """Send the file descriptor ``handle`` through ``conn``; the caller keeps its own.

    Args:
        conn: a ``Pipe()`` end or an ``AF_UNIX`` ``Listener``/``Client`` connection.
        handle: an open file descriptor.
        destination_pid: the receiving process (unused on POSIX, as in the stdlib).

    Raises:
        TypeError: ``handle`` is not an int.
        OSError: ``handle`` is not open.
        PicklingError: ``conn`` cannot carry descriptors (TCP).
    """
    if isinstance(handle, bool) or not isinstance(handle, int):
        raise TypeError(f"handle must be a file descriptor (an int), not {handle!r}")
    conn.send(DupFd._borrowing(handle))


def recv_handle(conn: Connection) -> int:
    """Receive a file descriptor sent with :func:`send_handle`; the caller owns it.

    Raises:
        RuntimeError: the message received carries no descriptor (it was not
            sent with ``send_handle``); it is consumed.
        EOFError: the other end was closed.
    """
    obj = conn.recv()
    if type(obj) is not DupFd:
        raise RuntimeError(
            f"recv_handle() received a {type(obj).__name__}, not a file descriptor: the "
            "peer did not send this message with send_handle()"
        )
    return obj.detach()


def sendfds(sock: socket.socket, fds: Sequence[int]) -> None:
    """Send the descriptors ``fds`` over the ``AF_UNIX`` socket ``sock`` (the stdlib's format)."""
    fds = array.array("i", fds)
    count = bytes([len(fds) % 256])
    sock.sendmsg([count], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])


def recvfds(sock: socket.socket, size: int) -> list[int]:
    """Receive ``size`` descriptors sent with :func:`sendfds` on ``sock``; the caller owns them.

    Raises:
        EOFError: the peer closed the socket.
        RuntimeError: the message brought no descriptors, or not ``size`` of them
            (those that came are closed).
    """
    msg, ancdata, _flags, _addr = sock.recvmsg(1, socket.CMSG_SPACE(size * 4), _RECV_CLOEXEC)
    fds: list[Any] = fds_from(ancdata)
    if not msg and not ancdata:
        raise EOFError("the peer closed the socket before sending descriptors")
    if len(fds) != size or msg[0] != len(fds) % 256:
        close_all_quietly(fds)
        raise RuntimeError(
            f"expected {size} file descriptor(s) with the message, received {len(fds)}"
        )
    return fds
