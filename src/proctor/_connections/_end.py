"""What one connection end holds: its descriptors, read-ahead buffer and flags.

``Connection`` fills these in; its sending half (``_sending``) and its
receiving half (``_receiving``) share them. They are slots, so the hot paths
read them without a dictionary lookup.
"""

from __future__ import annotations

import io
import socket
from typing import Any

from ._sendlock import SendLock

__all__ = ("EndState",)


class EndState:
    """The state of one connection end (the base of ``Connection`` and its halves)."""

    __slots__ = (
        "_broken",
        "_broken_send",
        "_can_recv",
        "_can_send",
        "_closed",
        "_dbuf",
        "_dgram_limit",
        "_dsock",
        "_dview",
        "_fd",
        "_pipe_file",
        "_rbuf",
        "_readable",
        "_readinto",
        "_recv",
        "_recv_into",
        "_rend",
        "_rfd",
        "_rpos",
        "_rview",
        "_send_lock",
        "_sendall",
        "_sock",
        "_stash",
        "_wfd",
        "_writable",
    )

    # The socket: a Listener/Client connection's only channel, a Pipe() end's
    # stream socket (bodies too big for a datagram).
    _sock: socket.socket
    # Pipe() ends where the platform has them: a SOCK_SEQPACKET socket for bodies
    # of up to _dgram_limit bytes (else None and 0). Received datagrams land in
    # _dbuf (allocated on first use); those whose header is still to come wait in
    # _stash, by frame id (None while empty).
    _dsock: socket.socket | None
    _dgram_limit: int
    _dbuf: bytearray | None
    _dview: memoryview | None
    _stash: dict[int, bytes] | None
    # Pipe() ends: the read end of the incoming pipe and the write end of the
    # outgoing one (-1 where there is none); frames travel there, not on _sock.
    _rfd: int
    _wfd: int
    # The descriptor that is readable when a message arrives (fileno()).
    _fd: int
    _readable: bool
    _writable: bool
    _closed: bool
    # Why this end can no longer receive / send (its stream is out of step), or None.
    _broken: str | None
    _broken_send: str | None
    # One flag per direction keeps the hot paths to a single check.
    _can_recv: bool
    _can_send: bool
    # Read-ahead buffer: bytes _rpos.._rend are received but not yet consumed.
    _rbuf: bytearray
    _rview: memoryview
    _rpos: int
    _rend: int
    # Bound methods of the channels, looked up once.
    _recv: Any
    _recv_into: Any
    _sendall: Any
    _pipe_file: io.FileIO | None
    _readinto: Any
    # Whole messages from every thread and process (see _sendlock).
    _send_lock: SendLock
