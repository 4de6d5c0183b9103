"""What one connection end holds: its descriptors, read-ahead buffer and flags.

``Connection`` fills these in; its sending half (``_sending``) and its
receiving half (``_receiving``) share them. They are slots, so the hot paths
read them without a dictionary lookup. Also here: ``FdInbox``, the reads of a
socket connection over ``AF_UNIX`` and the descriptors they bring.
"""

from __future__ import annotations

import _socket as socket  # (not socket.py: with enum and selectors, ms of a spawned start)
import errno
import io

from .._core._closing import close_all_quietly
from .._core._wire import MAX_FDS, cloexec_flag, fds_from
from ._sendlock import SendLock

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from collections.abc import Callable
    from typing import Any

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._core._spares import Spares

__all__ = ("EndState", "FdInbox")

# Plain ints: these flags are enums, and or-ing enums costs microseconds per call.
_MSG_CTRUNC = int(getattr(socket, "MSG_CTRUNC", 0))
# Room for the most descriptors one message can bring.
_ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * 4)
_RECV_CLOEXEC = cloexec_flag()


class FdInbox:
    """The reads of a socket connection over AF_UNIX, and the descriptors they bring.

    Stands in for the socket's ``recv_into``: every read is a ``recvmsg`` whose
    descriptors are kept, in the order they came, for the frames that announced
    them ("PU"). A read may bring the start of such a frame together with
    frames before it (the kernel ends a read after a message with descriptors,
    but not before one), so descriptors cannot wait for their frame to be parsed.
    A bound method of this object, not of the connection, is stored on the
    connection: no reference cycle, so a dropped connection is closed at once.
    """

    __slots__ = ("_recvmsg_into", "fds", "lost")

    def __init__(self, sock: socket.socket) -> None:
        self._recvmsg_into = sock.recvmsg_into
        self.fds: list[int] = []
        # The kernel cut descriptors short (this process at its descriptor
        # limit): which frame lost them cannot be known.
        self.lost = False

    def readinto(self, view: memoryview) -> int:
        """``socket.recv_into(view)``, keeping the descriptors that come."""
        got, ancdata, flags, _addr = self._recvmsg_into([view], _ANCILLARY_SPACE, _RECV_CLOEXEC)
        if ancdata or flags & _MSG_CTRUNC:
            self._keep(ancdata, flags)
        return got

    def recv_into(self, view: memoryview, nbytes: int = 0, flags: int = 0) -> int:
        """``socket.recv_into(view, nbytes, flags)``, keeping the descriptors that come."""
        if nbytes:
            view = view[:nbytes]
        got, ancdata, msg_flags, _addr = self._recvmsg_into(
            [view], _ANCILLARY_SPACE, flags | _RECV_CLOEXEC
        )
        if ancdata or msg_flags & _MSG_CTRUNC:
            self._keep(ancdata, msg_flags)
        return got

    def _keep(self, ancdata: list[Any], flags: int) -> None:
        self.fds.extend(fds_from(ancdata))
        if flags & _MSG_CTRUNC:
            self.lost = True

    def close(self) -> None:
        """Close the descriptors no frame took."""
        fds, self.fds = self.fds, []
        close_all_quietly(fds)


class EndState:
    """The state of one connection end (the base of ``Connection`` and its halves)."""

    __slots__ = (
        "_broken",
        "_broken_send",
        "_can_recv",
        "_can_send",
        "_closable_elsewhere",
        "_closed",
        "_dbuf",
        "_dgram_limit",
        "_dsock",
        "_dview",
        "_fd",
        "_fd_inbox",
        "_fsock",
        "_greeting",
        "_inline_limit",
        "_partial",
        "_pipe_file",
        "_private_frames",
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
        "_shutdown_pid",
        "_sock",
        "_spare_sock",
        "_spares",
        "_spin_backoff",
        "_spin_skip",
        "_stash",
        "_waiting",
        "_wfd",
        "_writable",
    )

    # The socket: a Listener/Client connection's only channel, a Pipe() end's
    # stream socket (bodies too big for a datagram); or for Connection(fd) of a
    # descriptor that is not a socket, an _fdchannel.FdChannel (typed as a socket:
    # it has the methods the halves call).
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
    # Pipe() ends on Linux: the stream socket frames travel on, both ways, in
    # place of the pipes (_rfd and _wfd are then its descriptor); else None.
    _fsock: socket.socket | None
    # The longest body that goes with its header in one write on the frame
    # channel: PIPE_BUF less the header on a pipe, 32 KiB less it on a frame socket.
    _inline_limit: int
    # True for a private frame channel (_pipe.streaming_pipe, a pool worker's):
    # two processes use it for good, one reading each way, so its receiver reads
    # as many frames as have come in one call and its sender does not pad them.
    # False for a Pipe() end, which any process holding it may receive on in turn:
    # frames are padded to PIPE_PREFIX and read one at a time (see _receiving).
    # Both ends of a channel agree: it is set when the pair is made, for good.
    _private_frames: bool
    # Pipe() ends: a datagram socket on which received large buffers' memfds go
    # back to the sender once dropped, and are taken for reuse (_core._spares);
    # else None and None.
    _spare_sock: socket.socket | None
    _spares: Spares | None
    # Pipe() ends on a frame socket, where the C module is built: how many more
    # receives read without looking first (0: the next one looks, see
    # FrameReceiver._read_spinning; -1 for every other end, which never looks),
    # and how many were skipped after the last look that found nothing.
    _spin_skip: int
    _spin_backoff: int
    # The descriptor that is readable when a message arrives (fileno()).
    _fd: int
    _readable: bool
    _writable: bool
    _closed: bool
    # The wake-ups of the threads blocked on this end, which close() writes to
    # (see _core._wakeup).
    _waiting: set[Any]
    # False once its owner promised that no other thread closes it (see
    # Connection._keep_in_thread): its receives skip that wait.
    _closable_elsewhere: bool
    # The process whose close() shuts the socket down first (see
    # Connection._shut_down_at_close), or 0.
    _shutdown_pid: int
    # Why this end can no longer receive / send (its stream is out of step), or None;
    # for receiving, a reason (``ProtocolError`` says it) or the error every receive
    # raises again (a keyless Client's refused greeting).
    _broken: str | BaseException | None
    _broken_send: str | None
    # One flag per direction keeps the hot paths to a single check.
    _can_recv: bool
    _can_send: bool
    # A plain frame whose body an arecv() was gathering when it was cancelled: the
    # body so far and how many of its bytes arrived (None when there is none). The
    # next receive finishes it; _can_recv is False meanwhile, so only the slow
    # paths look here.
    _partial: tuple[bytearray, int] | None
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
    # A socket connection over AF_UNIX: its reads, and the descriptors they
    # brought that no frame has taken yet (see _receiving.FdInbox); else None.
    _fd_inbox: FdInbox | None
    # A keyless Client's connection until its first receive: the check of the
    # listener's greeting (see _handshake.check_greeting), else None.
    _greeting: Callable[[Any, float | None], None] | None

    def _closed_error(self) -> OSError:
        return OSError(
            errno.EBADF,
            "the Connection is closed (close() was called on this end); open a new Pipe",
        )

    def _spares_now(self) -> Spares | None:
        """This end's spares (made at the first large buffer), or None without a spare socket."""
        spares = self._spares
        if spares is None and self._spare_sock is not None and not self._closed:
            # Imported here: only large buffers need it (ctypes, mmap), and a
            # child that sends none skips loading it.
            from .._core._spares import Spares

            spares = self._spares = Spares(self, take="_spare_sock", give="_spare_sock")
        return spares
