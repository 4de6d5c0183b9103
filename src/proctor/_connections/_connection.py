"""``Pipe()`` and ``Connection``: framed messages between processes.

Every message is one frame: an 8-byte big-endian header, then the body. The
header's top 16 bits are a tag, so that garbage or a stream out of step is
caught at the first header; the low 48 bits are the body's length.

A ``Pipe()`` end owns two channels. Frames travel on a pipe, because a pipe
wakes its reader in about half the time a Unix socket does (a small round trip
is ~40% faster). A frame of at most ``PIPE_BUF`` bytes (4096 on Linux) goes in
one ``write()``, which POSIX makes atomic: any number of threads and processes
may send on one end at once and each such message arrives whole, with no lock.
A bigger body travels on a side socket pair, which moves it in one
``MSG_WAITALL`` read with no copy; its header (tag ``"PS"``, or ``"PF"`` for a
pickle whose large buffers come as memfds) still goes on the pipe, so messages
stay in order, followed by the frame's 8-byte id. Such a frame takes two writes
on two channels, so its sender holds the end's *send lock* from the first to
the last: a thread lock plus an ``fcntl`` record lock on the end's socket (a
lock file where sockets cannot be locked), which the kernel releases if the
holder dies::

    sender                                        receiver
    ──────                                        ────────
    send(obj, timeout=None)                       recv()
      body = pickle.dumps(obj, 5)                   read(pipe, 64 KiB) into the
        (cloudpickle if plain pickle fails;          read-ahead buffer: usually the
         before any byte is written)                 whole frame in one system call
      small: write(pipe, "PR" header + body) ──▶    check tag, length <= limits
      big:   send lock                              pickle.loads(body)
             socket: side message, as much   ═══▶   "PS": side header, body and
               as fits without waiting:             trailer in one recvmsg_into,
               [id | fds | flags] body [id]         both ids checked
             write(pipe, "PS" header + id)   ──▶
             socket: the rest of it          ═══▶
             unlock

The side header carries the id, the count of descriptors that come with it, and
whether the body is inline or in the first descriptor (a memfd). The trailer
proves that the whole body came from one sender: a sender killed in the middle
of a body, on an end that other live processes also send on, is reported as a
``ProtocolError``, never delivered as somebody else's bytes. ``Listener`` and
``Client`` connections use one socket for everything (tag ``"PR"``), every
message under the send lock.

Timeouts: a pipe's write end is non-blocking (``O_NONBLOCK``), so an atomic
write either goes whole or not at all, and a sender waits for room with
``poll``. A send with a timeout puts a big body in a memfd, waits (within the
deadline) until the side socket has room for the small message that carries it,
and only then writes the header: so on a ``Pipe()`` end a send that times out
has sent nothing, and the connection stays usable. On a socket connection part
of a message may have gone out; then the end refuses further sends.

Never stuck: a dead process's pipes and sockets are closed by the kernel, so a
reader sees end-of-file at once, even mid-message after a SIGKILL. Never killed:
socket writes use ``MSG_NOSIGNAL``; pipe writes rely on Python ignoring SIGPIPE
and block it around the write where something restored the default (on macOS
``F_SETNOSIGPIPE`` switches it off per pipe). Never misled: a length above
``maxlength`` or this machine's physical memory is refused, and bodies larger
than ``_PREALLOCATE_LIMIT`` are received into a buffer that grows only as bytes
arrive, so a lying header cannot make proctor allocate what it claims.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # C module without stubs
import array
import errno
import fcntl
import io
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable
from typing import Any

from .._core import _reduction
from .._core._errors import BufferTooShort, ProcessTimeoutError, ProtocolError
from .._core._serialization import OOB_THRESHOLD, dumps_oob
from .._core._timeout import check_timeout
from .._core._timeout import wait_readable as _poll_fd
from .._core._wire import MAX_FDS, fds_from, map_memfd, memfd_with
from . import _sendlock
from ._sendlock import SendLock, new_lock_file, next_frame_id, wait_writable

__all__ = ("Connection", "Pipe", "ProtocolError", "wait")

# -- wire format ------------------------------------------------------------------

_HEADER = struct.Struct("!Q")
_HEADER_SIZE = _HEADER.size
_TAG_SHIFT = 48
# "PR": catches a stream that is out of step or not proctor's at the first header.
_TAG = 0x5052
_TAG_BITS = _TAG << _TAG_SHIFT
# "PS": a Pipe() frame whose body follows on the side socket, not on the pipe.
_TAG_SOCKET = 0x5053
_TAG_SOCKET_BITS = _TAG_SOCKET << _TAG_SHIFT
# "PF": a Pipe() frame whose body is a pickle, and whose large out-of-band buffers
# come as memfds with it on the side socket (see _send_side).
_TAG_MEMFD = 0x5046
_TAG_MEMFD_BITS = _TAG_MEMFD << _TAG_SHIFT
# "PM" and "PG": as "PS" and "PF", with the body (the pickle) in a memfd too, the
# first descriptor of the side message (sends with a timeout, see _send_side_within).
_TAG_SOCKET_FD = 0x504D
_TAG_SOCKET_FD_BITS = _TAG_SOCKET_FD << _TAG_SHIFT
_TAG_MEMFD_FD = 0x5047
_TAG_MEMFD_FD_BITS = _TAG_MEMFD_FD << _TAG_SHIFT
_LENGTH_MASK = (1 << _TAG_SHIFT) - 1
# Where a frame's body is: on the frame channel; on the side socket; there, with
# memfds for its large buffers; and the last two with the body in a memfd.
_ON_CHANNEL, _ON_SOCKET, _WITH_MEMFDS, _ON_SOCKET_FD, _WITH_MEMFDS_FD = 0, 1, 2, 3, 4
_SIDE_TAGS = {
    _TAG_SOCKET: _ON_SOCKET,
    _TAG_MEMFD: _WITH_MEMFDS,
    _TAG_SOCKET_FD: _ON_SOCKET_FD,
    _TAG_MEMFD_FD: _WITH_MEMFDS_FD,
}
# After a side frame's header on the pipe: the frame's id, which its side message repeats.
_FRAME_ID = struct.Struct("!Q")
# A side message: frame id, count of descriptors attached, flags (_BODY_IN_FD).
_SIDE = struct.Struct("<QHH")
_BODY_IN_FD = 1
# An inline body on the side socket is followed by the frame id again.
_TRAILER = _FRAME_ID

# -- tunables -----------------------------------------------------------------------

# One recv() of this size usually brings a small frame's header and body at once.
_READ_AHEAD = 64 * 1024
# A write of at most this many bytes to a pipe is atomic (POSIX): concurrent
# senders cannot split it. Pipe() frames up to this size go in one write and need
# no lock; bodies past _ATOMIC_BODY go out on the side socket under the send lock.
_PIPE_ATOMIC = getattr(select, "PIPE_BUF", 512)
_ATOMIC_BODY = _PIPE_ATOMIC - _HEADER_SIZE
# Bodies up to this size are received into a buffer of the announced size (cheap:
# untouched pages cost nothing); larger ones into a buffer that grows as bytes
# arrive, so a corrupt header cannot make us allocate what it claims.
_PREALLOCATE_LIMIT = 64 * 1024 * 1024
# recv_bytes() of a side body up to this size reads it with its header and trailer
# in one system call, then copies it into bytes; larger ones are received straight
# into the bytes object, at the cost of two more calls.
_COPY_LIMIT = 128 * 1024
# Chunk size when receiving a body larger than _PREALLOCATE_LIMIT.
_GROW_CHUNK = 16 * 1024 * 1024
# Kernel socket buffers: large enough that a 1 MiB message crosses in a few
# wake-ups (the kernel caps this at net.core.wmem_max / rmem_max).
_SOCKET_BUFFER = 1024 * 1024

# Plain ints: these flags are enums, and or-ing enums costs microseconds per send.
_MSG_NOSIGNAL = int(getattr(socket, "MSG_NOSIGNAL", 0))
_MSG_WAITALL = int(getattr(socket, "MSG_WAITALL", 0))
_MSG_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0))
_MSG_CTRUNC = int(getattr(socket, "MSG_CTRUNC", 0))
_SEND_NOW = _MSG_NOSIGNAL | _MSG_DONTWAIT
# Room for the most descriptors one message can bring.
_ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * 4)
# macOS has no MSG_NOSIGNAL; the per-socket option does the same job.
_SO_NOSIGPIPE = getattr(socket, "SO_NOSIGPIPE", 0x1022 if sys.platform == "darwin" else None)

# macOS can switch SIGPIPE off per pipe; Linux cannot (see _pipe_send_small).
_F_SETNOSIGPIPE = 73 if sys.platform == "darwin" else None
_SIGPIPE: int = getattr(signal, "SIGPIPE", 13)
# The C function: signal.getsignal wraps its answer in an enum, at a microsecond a send.
_SIG_IGN = int(signal.SIG_IGN)
_getsignal = _signal.getsignal
_write = os.write

_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
_dumps = pickle.dumps
_loads = pickle.loads
_pack = _HEADER.pack
_unpack_from = _HEADER.unpack_from
# Objects that never hold a buffer: pickled without a buffer callback.
_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex})


_physical_memory: int | None = None


def _memory_limit() -> int:
    """The largest body a header may announce: this machine's physical memory."""
    global _physical_memory
    if _physical_memory is None:
        try:
            _physical_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            _physical_memory = _LENGTH_MASK
        if _physical_memory <= 0:
            _physical_memory = _LENGTH_MASK
    return _physical_memory


def _format_size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} TiB"


def _check_timeout(timeout: float | None) -> float | None:
    checked = check_timeout(timeout)
    return None if checked is None else max(0.0, checked)


def _check_maxlength(maxlength: int | None) -> int | None:
    if maxlength is None:
        return None
    if isinstance(maxlength, bool) or not isinstance(maxlength, int):
        raise TypeError(f"maxlength must be an int or None, not {maxlength!r}")
    if maxlength < 0:
        raise ValueError(f"maxlength must be >= 0, got {maxlength}")
    return maxlength


def _pickle_fallback(obj: Any) -> bytes:
    """Pickle ``obj`` exactly, after plain pickle refused it or mentioned ``__main__``.

    Plain pickle is several times faster, so it is tried first; the exact pass
    is needed only for lambdas, closures and objects of the main script. Both
    payloads unpickle with plain ``pickle.loads``.

    Raises:
        PicklingError: naming the part of ``obj`` that cannot be pickled.
    """
    from .._core._serialization import _by_value

    return _by_value(obj, None)


def _pickle_for_send(obj: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle ``obj`` as ``send()`` does, leaving buffers of OOB_THRESHOLD or more out of band."""
    return dumps_oob(obj, OOB_THRESHOLD)


def _pickle_for_send_in_band(body: bytes, buffers: list[pickle.PickleBuffer]) -> bytes:
    """The pickle of an object whose large buffers were taken out: with them back in."""
    return _dumps(_loads(body, buffers=buffers), _PICKLE_PROTOCOL)


def _in_band(obj: Any) -> bytes:
    """What ``recv_bytes()`` returns for an object that came with memfds: its pickle."""
    return _dumps(obj, _PICKLE_PROTOCOL)


def _configure(sock: socket.socket) -> None:
    """Set the options every connection socket needs."""
    if _SO_NOSIGPIPE is not None and not _MSG_NOSIGNAL:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_NOSIGPIPE, 1)
        except OSError:
            pass
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, option) < _SOCKET_BUFFER:
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        except OSError:
            pass  # a smaller buffer is slower, not wrong


def _send_deadline(timeout: Any) -> float:
    """The ``time.monotonic()`` instant a send with ``timeout`` gives up (checked)."""
    checked = check_timeout(timeout) or 0.0
    return time.monotonic() + max(0.0, checked)


def _parts_after(parts: list[Any], sent: int) -> list[Any]:
    """What is left of ``parts`` (bytes-like) once ``sent`` bytes went out."""
    rest = []
    for part in parts:
        size = memoryview(part).nbytes
        if sent >= size:
            sent -= size
            continue
        rest.append(memoryview(part)[sent:] if sent else part)
        sent = 0
    return rest


def _sendall_rest(sendall: Any, parts: list[Any], sent: int) -> None:
    for part in _parts_after(parts, sent):
        sendall(part, _MSG_NOSIGNAL)


class Connection:
    """One end of a message channel: a ``Pipe()`` end, or a ``Listener``/``Client`` socket.

    Objects are sent pickled (cloudpickle when plain pickle cannot), bytes as
    they are. A connection owns its descriptors (a socket; for ``Pipe()`` ends
    also a pipe per direction): close it, or use it as a context manager. It can
    be handed to a child process as an argument of ``Process`` under every start
    method; it cannot be pickled anywhere else.

    Args:
        handle: a connected stream socket's file descriptor, or a
            ``socket.socket``; the connection takes ownership of it.
        readable: whether this end may receive.
        writable: whether this end may send.

    Note:
        Unlike ``multiprocessing``, ``recv()``, ``recv_bytes()`` and
        ``recv_bytes_into()`` take a keyword-only ``timeout``. It bounds the wait
        for a message to *start*; once its first bytes are here, the rest is read
        to the end (a live sender finishes its frame; a dead one gives EOFError).
        ``send()`` and ``send_bytes()`` take one too, which bounds the whole send.
        Unlike ``multiprocessing``'s, one end may be used by several sending
        threads and processes at once: each message arrives whole.
    """

    __slots__ = (
        "__weakref__",
        "_broken",
        "_broken_send",
        "_can_recv",
        "_can_send",
        "_closed",
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
        "_wfd",
        "_writable",
    )

    def __init__(
        self, handle: int | socket.socket, readable: bool = True, writable: bool = True
    ) -> None:
        if not readable and not writable:
            raise ValueError("at least one of readable and writable must be True")
        if isinstance(handle, socket.socket):
            sock = handle
        elif isinstance(handle, int) and not isinstance(handle, bool):
            try:
                sock = socket.socket(fileno=handle)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"Connection needs a connected stream socket, and descriptor {handle} "
                    f"is not one ({exc.strerror})",
                ) from None
        else:
            raise TypeError(
                f"handle must be a socket file descriptor or a socket.socket, not {handle!r}"
            )
        if sock.type != socket.SOCK_STREAM:
            if sock is not handle:
                sock.detach()  # the caller still owns the descriptor it passed
            raise ValueError(f"Connection needs a SOCK_STREAM socket, got {sock.type!r}")
        sock.setblocking(True)
        self._sock = sock
        self._fd = sock.fileno()
        self._readable = bool(readable)
        self._writable = bool(writable)
        self._closed = False
        self._broken: str | None = None
        self._broken_send: str | None = None
        # One flag per direction keeps the hot paths to a single check.
        self._can_recv = self._readable
        self._can_send = self._writable
        # Read-ahead buffer: bytes _rpos.._rend are received but not yet consumed.
        # Reused for every read, so a small message costs no allocation.
        self._rbuf = bytearray(_READ_AHEAD if readable else 0)
        self._rview = memoryview(self._rbuf)
        self._rpos = 0
        self._rend = 0
        self._recv = sock.recv
        self._recv_into = sock.recv_into
        self._sendall = sock.sendall
        # The small-message channel: the socket itself, or a pipe pair (see Pipe()).
        self._rfd = -1
        self._wfd = -1
        self._pipe_file: io.FileIO | None = None
        self._readinto: Any = sock.recv_into
        # Whole messages from every thread and process (see _sendlock): locks
        # byte 0 of this end's socket, or of a lock file where sockets cannot
        # be locked.
        if _sendlock.LOCK_ON_SOCKET:
            self._send_lock = SendLock(sock.fileno())
        else:
            try:
                self._send_lock = SendLock(new_lock_file(), owns_fd=True)
            except BaseException:
                if sock is not handle:
                    sock.detach()
                raise

    @classmethod
    def _with_pipes(
        cls, sock: socket.socket, rfd: int, wfd: int, readable: bool = True, writable: bool = True
    ) -> Connection:
        """A connection whose frames travel on pipes, big bodies on ``sock``.

        A pipe wakes its reader in about half the time a Unix socket does, so
        small messages are much faster on pipes; a socket moves big bodies with
        fewer copies and one ``MSG_WAITALL`` read. The frame header always goes
        on the pipe, which keeps messages in order.
        """
        conn = cls(sock, readable, writable)
        conn._rfd = rfd
        conn._wfd = wfd
        if rfd >= 0:
            conn._pipe_file = io.FileIO(rfd, "rb", closefd=False)
            conn._readinto = conn._pipe_file.readinto
            conn._fd = rfd
        if wfd >= 0 and rfd < 0:
            conn._fd = wfd
        return conn

    # -- state ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    @property
    def readable(self) -> bool:
        """Whether this end can receive."""
        return self._readable

    @property
    def writable(self) -> bool:
        """Whether this end can send."""
        return self._writable

    def fileno(self) -> int:
        """Return the descriptor to wait on (readable when a message arrives).

        Raises:
            OSError: the connection is closed.
        """
        if self._closed:
            self._raise_closed()
        return self._fd

    def close(self) -> None:
        """Close this end; the peer's ``recv()`` then raises ``EOFError``. Idempotent."""
        if not self._closed:
            self._closed = True
            self._can_recv = self._can_send = False
            self._rpos = self._rend = 0
            self._sock.close()
            self._close_pipes()

    def _close_pipes(self) -> None:
        self._pipe_file = None
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1
        self._send_lock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Like multiprocessing's Connection, an end dropped without close() is
        # closed quietly: programs written for the stdlib rely on this.
        try:
            if not self._closed:
                self._closed = True
                self._sock.close()
                self._close_pipes()
        except (AttributeError, OSError):
            pass  # __init__ failed before the socket was stored

    def __repr__(self) -> str:
        if self._closed:
            return "<proctor.Connection closed>"
        if self._readable and self._writable:
            mode = "duplex"
        elif self._readable:
            mode = "read-only"
        else:
            mode = "write-only"
        state = f" broken={self._broken!r}" if self._broken else ""
        if self._broken_send:
            state += f" send_broken={self._broken_send!r}"
        return f"<proctor.Connection fd={self._fd} {mode}{state}>"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self._closed:
            raise OSError("cannot pass a closed Connection to a child process")
        token = _reduction.fd_token(self._sock.fileno(), "Connection")
        rtoken = _reduction.fd_token(self._rfd, "Connection") if self._rfd >= 0 else -1
        wtoken = _reduction.fd_token(self._wfd, "Connection") if self._wfd >= 0 else -1
        lock = self._send_lock
        ltoken = _reduction.fd_token(lock.fd, "Connection") if lock.owns_fd else -1
        # Bytes already read ahead belong to the next messages: they travel too.
        pending = bytes(self._rview[self._rpos : self._rend])
        return _rebuild_connection, (
            token,
            self._readable,
            self._writable,
            pending,
            rtoken,
            wtoken,
            ltoken,
        )

    # -- errors --------------------------------------------------------------------

    def _raise_closed(self) -> None:
        raise OSError(
            errno.EBADF,
            "the Connection is closed (close() was called on this end); open a new Pipe",
        )

    def _check_readable(self) -> None:
        if self._closed:
            self._raise_closed()
        if not self._readable:
            raise OSError(
                "this Connection is write-only (the sending end of Pipe(duplex=False)); "
                "receive on the other end"
            )
        if self._broken is not None:
            raise ProtocolError(
                f"this Connection can no longer receive: {self._broken}. Its stream is "
                "out of step; close it and open a new one."
            )

    def _check_writable(self) -> None:
        if self._closed:
            self._raise_closed()
        if not self._writable:
            raise OSError(
                "this Connection is read-only (the receiving end of Pipe(duplex=False)); "
                "send on the other end"
            )
        if self._broken_send is not None:
            raise ProtocolError(
                f"this Connection can no longer send: {self._broken_send}, so the peer "
                "would misread whatever came next; close it and open a new one."
            )

    def _break_send(self) -> None:
        # Part of a frame is out and the rest never will be: anything sent now
        # would be read as the rest of that frame.
        self._broken_send = "an exception interrupted a send in the middle of a message"
        self._can_send = False

    def _break(self, reason: str) -> None:
        self._broken = reason
        self._can_recv = False

    def _protocol_error(self, reason: str) -> ProtocolError:
        self._break(reason)
        return ProtocolError(
            f"{reason}. The connection can no longer receive: close it and open a new one."
        )

    # -- sending -------------------------------------------------------------------

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Send a picklable object; the peer gets it from ``recv()``.

        The object is pickled before anything is written, so an object that
        cannot be pickled leaves the connection untouched and usable. Several
        threads and processes may send on one end at once: each message arrives
        whole.

        Args:
            obj: the object to send.
            timeout: seconds to wait for room (the peer reads too slowly, or
                another sender holds the end); ``None`` waits forever, ``0``
                sends only if that needs no wait (keyword-only; a proctor
                addition).

        Raises:
            PicklingError: (a ``pickle.PicklingError`` and a ``TypeError``)
                ``obj`` or a part of it cannot be pickled; the message names it.
            ProcessTimeoutError: the message could not be sent within
                ``timeout``. On a ``Pipe()`` end nothing of it was sent and the
                connection is still usable; on a socket connection, if part of it
                went out, the end refuses further sends (the error says which).
            BrokenPipeError: the other end is closed or its process died.
            OSError: this end is closed or read-only.
        """
        if not self._can_send:
            self._check_writable()
        deadline = None if timeout is None else _send_deadline(timeout)
        if self._wfd < 0 or type(obj) in _SCALARS:
            try:
                body = _dumps(obj, _PICKLE_PROTOCOL)
            except (pickle.PicklingError, TypeError, AttributeError):
                body = _pickle_fallback(obj)
            else:
                if b"__main__" in body:
                    # Functions and classes of the main script mean nothing by
                    # name in a spawn or forkserver process: send them by value.
                    body = _pickle_fallback(obj)
        else:
            # Pipe(): large buffers (numpy arrays...) go as memfds, not through
            # the pipe. A first pickle takes every buffer out of band (append
            # returns None): the common case -- no buffer at all -- costs
            # nothing more; anything else is sorted out by _pickle_for_send.
            buffers: list[pickle.PickleBuffer] = []
            try:
                body = _dumps(obj, _PICKLE_PROTOCOL, buffer_callback=buffers.append)
                plain = not buffers and b"__main__" not in body
            except (pickle.PicklingError, TypeError, AttributeError):
                plain = False
            if not plain:
                body, large = _pickle_for_send(obj)
                if large:
                    if len(large) >= MAX_FDS:
                        # More than one message can carry: copy them along instead.
                        body = _pickle_for_send_in_band(body, large)
                    else:
                        self._send_side(_TAG_MEMFD_BITS, memoryview(body), large, deadline)
                        return
        if self._wfd < 0:
            self._socket_send(memoryview(body), deadline)
        elif len(body) <= _ATOMIC_BODY:
            self._pipe_send_small(_pack(_TAG_BITS + len(body)) + body, deadline)
        else:
            self._send_side(_TAG_SOCKET_BITS, memoryview(body), (), deadline)

    def send_bytes(
        self,
        buf: Any,
        offset: int = 0,
        size: int | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        """Send bytes from a bytes-like object; the peer gets them from ``recv_bytes()``.

        Args:
            buf: any object supporting the buffer protocol.
            offset: where to start, in bytes.
            size: how many bytes to send; ``None`` sends to the end of ``buf``.
            timeout: as for :meth:`send`.

        Raises:
            TypeError: ``buf`` is not bytes-like, or ``offset``/``size`` are not ints.
            ValueError: ``offset``/``size`` are negative or run past ``buf``'s end.
            ProcessTimeoutError: as for :meth:`send`.
            BrokenPipeError: the other end is closed or its process died.
            OSError: this end is closed or read-only.
        """
        self._check_writable()
        deadline = None if timeout is None else _send_deadline(timeout)
        view = _byte_view(buf)
        total = view.nbytes
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be an int, not {offset!r}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if offset > total:
            raise ValueError(f"offset {offset} is past the end of the {total}-byte buffer")
        if size is None:
            size = total - offset
        elif isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int or None, not {size!r}")
        elif size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        elif offset + size > total:
            raise ValueError(
                f"offset {offset} + size {size} runs past the end of the {total}-byte buffer"
            )
        if offset or size != total:
            view = view[offset : offset + size]
        if self._wfd < 0:
            self._socket_send(view, deadline)
        elif size <= _ATOMIC_BODY:
            self._pipe_send_small(_pack(_TAG_BITS + size) + view, deadline)
        else:
            self._send_side(_TAG_SOCKET_BITS, view, (), deadline)

    # Pipe(): frames of at most PIPE_BUF bytes, one atomic write, no lock.

    def _pipe_send_small(self, data: bytes, deadline: float | None = None) -> None:
        # A write to a pipe whose reader is gone raises SIGPIPE, which kills the
        # process unless it is ignored. Python ignores it at start-up, so the fast
        # path is a plain write; where something restored the default (an
        # embedder, a child that wants `head`-friendly behaviour) the signal is
        # blocked around the write instead.
        if _F_SETNOSIGPIPE is None and _getsignal(_SIGPIPE) != _SIG_IGN:
            self._pipe_send_masked(data, deadline)
            return
        try:
            # At most PIPE_BUF bytes to a non-blocking pipe: all of it, or
            # BlockingIOError and nothing.
            _write(self._wfd, data)
            return
        except BlockingIOError:
            pass
        except OSError as exc:
            self._send_failed(exc)
        self._pipe_wait_and_write(data, deadline)

    def _pipe_wait_and_write(self, data: bytes, deadline: float | None) -> None:
        """The pipe is full: write ``data`` once the reader has made room."""
        while True:
            if not wait_writable(self._wfd, deadline):
                raise self._send_timeout("the peer is not reading")
            try:
                _write(self._wfd, data)
                return
            except BlockingIOError:
                continue  # another sender took the room first
            except OSError as exc:
                self._send_failed(exc)

    def _pipe_send_masked(self, data: bytes, deadline: float | None) -> None:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {_SIGPIPE})
        try:
            try:
                try:
                    _write(self._wfd, data)
                except BlockingIOError:
                    self._pipe_wait_and_write(data, deadline)
            except BrokenPipeError as exc:
                # The SIGPIPE this write raised is pending on this thread: take
                # it, so that unblocking does not deliver it.
                if _SIGPIPE not in previous and hasattr(signal, "sigtimedwait"):
                    signal.sigtimedwait([_SIGPIPE], 0)
                self._send_failed(exc)
            except OSError as exc:
                if isinstance(exc, ProcessTimeoutError):
                    raise
                self._send_failed(exc)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    # Pipe(): a body on the side socket, under the send lock.

    def _send_side(
        self,
        tag_bits: int,
        body: memoryview,
        buffers: Iterable[pickle.PickleBuffer],
        deadline: float | None,
    ) -> None:
        """Send a frame whose body (and large buffers, as memfds) go on the side socket.

        Under the send lock, so that side messages are on the socket in the order
        of their headers on the pipe. As much of the side message as the socket
        takes at once goes before the header, the rest after it: the reader then
        wakes once, to find its body there (waiting for room *before* the header
        could wait for ever on a reader that waits for the header).
        """
        if deadline is not None:
            self._send_side_within(tag_bits, body, buffers, deadline)
            return
        fds: list[int] = []
        try:
            for buffer in buffers:
                fds.append(memfd_with(buffer.raw(), "proctor-message-buffer"))
            self._lock_send(None)
            try:
                frame_id = next_frame_id()
                parts: list[Any] = [
                    _SIDE.pack(frame_id, len(fds), 0),
                    body,
                    _TRAILER.pack(frame_id),
                ]
                total = _SIDE.size + body.nbytes + _TRAILER.size
                ancillary = (
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
                )
                sent = 0
                try:
                    try:
                        sent = self._sock.sendmsg(parts, ancillary, _SEND_NOW)
                    except BlockingIOError:
                        pass
                    self._pipe_send_small(_pack(tag_bits + body.nbytes) + _FRAME_ID.pack(frame_id))
                    if not sent:
                        sent = self._sock.sendmsg(parts, ancillary, _MSG_NOSIGNAL)
                    if sent < total:
                        # The descriptors went with the first byte; a blocking
                        # stream socket takes the rest.
                        _sendall_rest(self._sendall, parts, sent)
                except OSError as exc:
                    self._break_send()
                    self._send_failed(exc)
                except BaseException:
                    self._break_send()
                    raise
            finally:
                self._unlock_send()
        finally:
            for fd in fds:
                os.close(fd)

    def _send_side_within(
        self,
        tag_bits: int,
        body: memoryview,
        buffers: Iterable[pickle.PickleBuffer],
        deadline: float,
    ) -> None:
        """``_send_side`` with a deadline: the whole message or nothing of it.

        The body goes into a memfd, so that the side message is a few bytes plus
        descriptors. Under the send lock nobody else writes on the side socket,
        so once it has room (``poll``) that small message cannot block; only
        then is the header written (atomic, within the deadline), and only then
        the side message. A timeout before the header leaves nothing behind.
        """
        fds: list[int] = []
        try:
            fds.append(memfd_with(body, "proctor-message"))
            for buffer in buffers:
                fds.append(memfd_with(buffer.raw(), "proctor-message-buffer"))
            self._lock_send(deadline)
            try:
                sock_fd = self._sock.fileno()
                if not wait_writable(sock_fd, deadline):
                    raise self._send_timeout("the peer is not reading")
                frame_id = next_frame_id()
                tag_bits = (
                    _TAG_MEMFD_FD_BITS if tag_bits == _TAG_MEMFD_BITS else _TAG_SOCKET_FD_BITS
                )
                self._pipe_send_small(
                    _pack(tag_bits + body.nbytes) + _FRAME_ID.pack(frame_id), deadline
                )
                side = _SIDE.pack(frame_id, len(fds), _BODY_IN_FD)
                ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                try:
                    sent = self._sock.sendmsg([side], ancillary, _MSG_NOSIGNAL)
                    if sent < len(side):
                        self._sendall(side[sent:], _MSG_NOSIGNAL)
                except OSError as exc:
                    self._break_send()
                    self._send_failed(exc)
                except BaseException:
                    self._break_send()
                    raise
            finally:
                self._unlock_send()
        finally:
            for fd in fds:
                os.close(fd)

    # Listener/Client: one socket for everything, every message under the send lock.

    def _socket_send(self, body: memoryview, deadline: float | None) -> None:
        parts: list[Any] = [_pack(_TAG_BITS | body.nbytes), body]
        total = _HEADER_SIZE + body.nbytes
        self._lock_send(deadline)
        try:
            if deadline is None:
                sent = 0
                try:
                    sent = self._sock.sendmsg(parts, (), _MSG_NOSIGNAL)
                    # A blocking stream socket sends everything unless a signal
                    # interrupted it.
                    if sent < total:
                        _sendall_rest(self._sendall, parts, sent)
                except OSError as exc:
                    if sent:
                        self._break_send()
                    self._send_failed(exc)
                except BaseException:
                    self._break_send()
                    raise
            else:
                self._socket_send_within(parts, total, deadline)
        finally:
            self._unlock_send()

    def _socket_send_within(self, parts: list[Any], total: int, deadline: float) -> None:
        sent = 0
        try:
            while sent < total:
                try:
                    sent += self._sock.sendmsg(_parts_after(parts, sent), (), _SEND_NOW)
                except BlockingIOError:
                    if not wait_writable(self._sock.fileno(), deadline):
                        if sent:
                            self._break_send()
                        raise self._send_timeout(
                            "the peer is not reading", sent=sent, total=total
                        ) from None
        except OSError as exc:
            if isinstance(exc, ProcessTimeoutError):
                raise
            if sent:
                self._break_send()
            self._send_failed(exc)
        except BaseException:
            if sent:
                self._break_send()
            raise

    # The send lock.

    def _lock_send(self, deadline: float | None) -> None:
        """Take this end's send lock by ``deadline``, or raise ProcessTimeoutError."""
        holder = self._send_lock.acquire(deadline)
        if holder is not None:
            raise self._send_timeout(f"{holder} is sending on this end")

    def _unlock_send(self) -> None:
        self._send_lock.release()

    def _send_timeout(self, why: str, *, sent: int = 0, total: int = 0) -> ProcessTimeoutError:
        if sent:
            return ProcessTimeoutError(
                f"could not send the whole message on {self!r} within its timeout ({why}): "
                f"{sent} of its {total} bytes went out, and the peer would read whatever "
                "came next as the rest, so this end can no longer send; close it"
            )
        return ProcessTimeoutError(
            f"could not send on {self!r} within its timeout ({why}); nothing of it was "
            "sent and the connection is still usable (pass a longer timeout, or "
            "timeout=None to wait forever)"
        )

    def _send_failed(self, exc: OSError) -> None:
        if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
            raise BrokenPipeError(
                errno.EPIPE,
                "cannot send: the other end of the connection is closed (its process "
                "may have exited or been killed)",
            ) from exc
        if exc.errno == getattr(errno, "ETOOMANYREFS", -1):
            raise OSError(
                exc.errno,
                "cannot send: too many descriptors are in flight to readers that have "
                "not taken them yet (the kernel limits them to RLIMIT_NOFILE per user); "
                "the peer is not reading",
            ) from exc
        raise exc

    # -- receiving -----------------------------------------------------------------

    def recv(self, *, timeout: float | None = None) -> Any:
        """Receive one object sent with ``send()``; block until one arrives.

        Args:
            timeout: seconds to wait for a message to start; ``None`` waits forever.

        Raises:
            EOFError: the other end was closed or its process died, also when that
                happened in the middle of a message.
            ProcessTimeoutError: no message started within ``timeout``.
            ProtocolError: the bytes received are not a valid frame.
            OSError: this end is closed or write-only.
            Exception: whatever unpickling the message raises.
        """
        if not self._can_recv or timeout is not None:
            self._check_readable()
            if timeout is not None:
                self._wait_readable(timeout)
        pos = self._rpos
        end = self._rend
        if pos == end:
            try:
                end = self._readinto(self._rview)
            except ConnectionResetError as exc:
                raise EOFError("the other end of the connection was closed") from exc
            if not end:
                raise EOFError("the other end of the connection was closed")
            pos = 0
            self._rend = end
        start = pos + _HEADER_SIZE
        if start <= end:
            # One chained comparison checks the tag and the length at once: a
            # wrong tag makes the length negative or beyond 2**48.
            stop = start - _TAG_BITS + _unpack_from(self._rbuf, pos)[0]
            if start <= stop <= end:
                self._rpos = stop
                return _loads(self._rview[start:stop])
        # Rare: a frame split across reads, a big frame, or a bad header.
        self._rpos = pos
        n, where, frame_id = self._read_header(None)
        if where == _ON_CHANNEL:
            return _loads(self._read_body(n, False, False))
        return self._side_frame(n, where, frame_id, False)

    def _read_ahead(self) -> None:
        """Pipe(): fill the read-ahead buffer (bodies of big frames are not on the pipe)."""
        if self._rfd >= 0 and self._rpos == self._rend:
            end = self._readinto(self._rview)
            if not end:
                raise EOFError("the other end of the connection was closed")
            self._rpos = 0
            self._rend = end

    def recv_bytes(self, maxlength: int | None = None, *, timeout: float | None = None) -> bytes:
        """Receive one message sent with ``send_bytes()`` (or ``send()``) as bytes.

        Args:
            maxlength: refuse a message longer than this many bytes.
            timeout: seconds to wait for a message to start; ``None`` waits forever.

        Raises:
            EOFError: the other end was closed or its process died.
            ProtocolError: (an ``OSError``) the message is longer than
                ``maxlength``, or the bytes received are not a valid frame; the
                connection can no longer receive.
            ProcessTimeoutError: no message started within ``timeout``.
            OSError: this end is closed or write-only.
        """
        maxlength = _check_maxlength(maxlength)
        self._check_readable()
        if timeout is not None:
            self._wait_readable(timeout)
        self._read_ahead()
        body = self._read_frame(maxlength, want_bytes=True)
        return body if type(body) is bytes else bytes(body)

    def recv_bytes_into(self, buf: Any, offset: int = 0, *, timeout: float | None = None) -> int:
        """Receive one message into a writable buffer, starting at byte ``offset``.

        Args:
            buf: a writable bytes-like object (``bytearray``, ``memoryview``, array).
            offset: byte position in ``buf`` where the message goes.
            timeout: seconds to wait for a message to start; ``None`` waits forever.

        Returns:
            The message's length in bytes.

        Raises:
            BufferTooShort: the message does not fit; it is in ``args[0]``.
            TypeError: ``buf`` is not a writable bytes-like object.
            ValueError: ``offset`` is negative or past the end of ``buf``.
            EOFError: the other end was closed or its process died.
            OSError: this end is closed or write-only.
        """
        view = _byte_view(buf)
        if view.readonly:
            raise TypeError(f"buf must be writable, got a read-only {type(buf).__name__}")
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be an int, not {offset!r}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if offset > view.nbytes:
            raise ValueError(f"offset {offset} is past the end of the {view.nbytes}-byte buffer")
        self._check_readable()
        if timeout is not None:
            self._wait_readable(timeout)
        self._read_ahead()
        n, where, frame_id = self._read_header(None)
        room = view.nbytes - offset
        if where == _ON_CHANNEL:
            if n > room:
                body = self._read_body(n, True, False)
                raise BufferTooShort(body if type(body) is bytes else bytes(body))
            self._read_body_into(view[offset : offset + n], False)
            return n
        if where != _ON_SOCKET or n > room:
            data = self._side_frame(n, where, frame_id, True)
            if len(data) > room:
                raise BufferTooShort(data if type(data) is bytes else bytes(data))
            view[offset : offset + len(data)] = data
            return len(data)
        self._take_side(frame_id, where)
        self._read_body_into(view[offset : offset + n], True)
        self._check_trailer(frame_id)
        return n

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Return whether a message (or end-of-file) is ready to be received.

        Args:
            timeout: seconds to wait; ``0`` checks and returns at once, ``None``
                waits forever.

        Raises:
            OSError: this end is closed or write-only.
        """
        self._check_readable()
        if self._rpos < self._rend:
            return True
        timeout = _check_timeout(timeout)
        return _poll_fd(self._fd, timeout)

    def _wait_readable(self, timeout: float) -> None:
        if not self.poll(timeout):
            raise ProcessTimeoutError(
                f"no message arrived on {self!r} within {timeout} s; the sender is alive "
                "but has not sent (pass a longer timeout, or timeout=None to wait forever)"
            )

    # -- framing internals ---------------------------------------------------------

    def _take_pending(self) -> memoryview | None:
        """Consume and return the read-ahead bytes (a view: copy before reading more)."""
        pos = self._rpos
        end = self._rend
        if pos == end:
            return None
        self._rpos = end
        return self._rview[pos:end]

    def _untake(self, rest: memoryview) -> None:
        """Give back the tail ``rest`` of what ``_take_pending()`` returned."""
        if len(rest):
            self._rpos = self._rend - len(rest)

    def _reader(self, on_socket: bool) -> Any:
        """The function that reads into a view, for the socket or the frame channel."""
        if on_socket or self._pipe_file is None:
            recv_into = self._recv_into
            return lambda view: recv_into(view, 0, _MSG_WAITALL)
        return self._pipe_file.readinto

    def _recv_exact_small(self, n: int, prefix: memoryview | None) -> bytes:
        """Read exactly ``n`` bytes (a header) from the frame channel, after ``prefix``."""
        out = bytearray(n)
        view = memoryview(out)
        have = 0
        if prefix is not None:
            have = len(prefix)
            view[:have] = prefix
        reader = self._reader(False)
        while have < n:
            try:
                got = reader(view[have:])
            except ConnectionResetError as exc:
                raise EOFError("the other end of the connection was closed") from exc
            if not got:
                if have:
                    raise EOFError(
                        f"the other end of the connection was closed after {have} of "
                        f"{n} header bytes (its process may have died mid-message)"
                    )
                raise EOFError("the other end of the connection was closed")
            have += got
        return bytes(out)

    def _read_header(self, maxlength: int | None) -> tuple[int, int, int]:
        """Read and check the next frame's header.

        Returns:
            The body's length; where it is: ``_ON_CHANNEL``, ``_ON_SOCKET`` (the
            side socket), or ``_WITH_MEMFDS`` (the side socket, with memfds); and
            for the last two the frame's id (else 0).
        """
        pending = self._take_pending()
        if pending is not None and len(pending) >= _HEADER_SIZE:
            header = pending[:_HEADER_SIZE]
            rest = pending[_HEADER_SIZE:]
            self._untake(rest)
            (word,) = _unpack_from(header)
        else:
            (word,) = _unpack_from(self._recv_exact_small(_HEADER_SIZE, pending))
        tag = word >> _TAG_SHIFT
        if tag == _TAG:
            where = _ON_CHANNEL
        elif tag in _SIDE_TAGS and self._rfd >= 0:
            where = _SIDE_TAGS[tag]
        else:
            raise self._protocol_error(
                f"received a frame header with a bad tag (0x{word:016x}): the bytes on "
                "the wire were not written by a proctor Connection, or the stream is "
                "out of step"
            )
        frame_id = 0
        if where != _ON_CHANNEL:
            # The id follows in the same atomic write: read it before anything can fail.
            pending = self._take_pending()
            if pending is not None and len(pending) >= _FRAME_ID.size:
                (frame_id,) = _FRAME_ID.unpack_from(pending)
                self._untake(pending[_FRAME_ID.size :])
            else:
                (frame_id,) = _FRAME_ID.unpack(self._recv_exact_small(_FRAME_ID.size, pending))
        n = word & _LENGTH_MASK
        if maxlength is not None and n > maxlength:
            raise self._protocol_error(
                f"the next message is {n} bytes long, more than maxlength={maxlength}"
            )
        if n > _memory_limit():
            raise self._protocol_error(
                f"a frame header announces {_format_size(n)}, more than this machine's "
                f"{_format_size(_memory_limit())} of memory: the stream is corrupt"
            )
        return n, where, frame_id

    def _read_frame(self, maxlength: int | None, want_bytes: bool) -> bytes | bytearray:
        n, where, frame_id = self._read_header(maxlength)
        if where == _ON_CHANNEL:
            return self._read_body(n, want_bytes, False)
        return self._side_frame(n, where, frame_id, True)

    def _side_frame(self, n: int, where: int, frame_id: int, as_bytes: bool) -> Any:
        """Receive the rest of a frame whose body is on the side socket.

        Returns:
            The object, or with ``as_bytes`` the body as bytes (an object sent
            with large buffers: its pickle, whole, as ``multiprocessing`` would
            send it).
        """
        body: Any
        if where == _ON_SOCKET and (n <= _COPY_LIMIT or (not as_bytes and n <= _PREALLOCATE_LIMIT)):
            # The common case: side header, body and trailer in one system call.
            body, _fds = self._recv_side_at_once(n, frame_id, where)
            if as_bytes:
                return bytes(body)
            return _loads(body)
        if where == _WITH_MEMFDS and n <= _PREALLOCATE_LIMIT:
            body, fds = self._recv_side_at_once(n, frame_id, where)
            obj = _loads(body, buffers=_map_all(fds))
            return _in_band(obj) if as_bytes else obj
        fds = self._take_side(frame_id, where)
        if where == _ON_SOCKET:
            body = self._read_body(n, as_bytes, True)
            self._check_trailer(frame_id)
            return body if as_bytes else _loads(body)
        if where == _WITH_MEMFDS:
            try:
                body = self._read_body(n, True, True)
                self._check_trailer(frame_id)
            except BaseException:
                for fd in fds:
                    os.close(fd)
                raise
            obj = _loads(body, buffers=_map_all(fds))
            return _in_band(obj) if as_bytes else obj
        # The body is in the first memfd (a send with a timeout).
        try:
            size = os.fstat(fds[0]).st_size
            if size != n:
                raise self._protocol_error(
                    f"a message's memfd holds {size} bytes, its header says {n}"
                )
            if where == _ON_SOCKET_FD and as_bytes:
                return _read_whole(fds[0], n)
            body = map_memfd(fds[0])
            buffers = [map_memfd(fd) for fd in fds[1:]]
        finally:
            for fd in fds:
                os.close(fd)
        obj = _loads(body, buffers=buffers)
        return _in_band(obj) if as_bytes and where == _WITH_MEMFDS_FD else obj

    def _recv_side_at_once(self, n: int, frame_id: int, where: int) -> tuple[bytearray, list[int]]:
        """Receive an inline side message (header, ``n``-byte body, trailer); check it.

        Returns the body and the descriptors that came with it (the caller owns them).
        """
        side = bytearray(_SIDE.size)
        body = bytearray(n)
        trailer = bytearray(_TRAILER.size)
        total = _SIDE.size + n + _TRAILER.size
        fds: list[int] = []
        try:
            try:
                got, ancdata, flags, _addr = self._sock.recvmsg_into(
                    [side, body, trailer], _ANCILLARY_SPACE, _MSG_WAITALL
                )
            except ConnectionResetError as exc:
                self._eof_mid_message(0, total, exc)
            fds = fds_from(ancdata)
            if flags & _MSG_CTRUNC:
                raise self._fds_cut_short()
            if got < total:
                # Descriptors end a read early (and a signal may): go on.
                parts = [memoryview(side), memoryview(body), memoryview(trailer)]
                while got < total:
                    if got == 0:
                        self._eof_mid_message(0, total)
                    rest = _parts_after(parts, got)
                    try:
                        more = self._sock.recv_into(rest[0], 0, _MSG_WAITALL)
                    except ConnectionResetError as exc:
                        self._eof_mid_message(got, total, exc)
                    if not more:
                        self._eof_mid_message(got, total)
                    got += more
            self._check_side(side, frame_id, where, fds)
            if _TRAILER.unpack(trailer)[0] != frame_id:
                raise self._died_mid_message()
        except BaseException as exc:
            for fd in fds:
                os.close(fd)
            if not isinstance(exc, (ProtocolError, EOFError)):
                self._break("a receive was interrupted in the middle of a message")
            raise
        return body, fds

    def _check_side(self, side: Any, frame_id: int, where: int, fds: list[int]) -> None:
        got_id, count, flags = _SIDE.unpack(side)
        if got_id != frame_id:
            raise self._died_mid_message()
        if count != len(fds):
            raise self._protocol_error(f"a message announced {count} memfds and brought {len(fds)}")
        in_fd = where in (_ON_SOCKET_FD, _WITH_MEMFDS_FD)
        wrong_fds = not fds if in_fd else (where == _ON_SOCKET and fds)
        if bool(flags & _BODY_IN_FD) != in_fd or wrong_fds:
            raise self._protocol_error("a side message does not match its frame header")

    def _take_side(self, frame_id: int, where: int) -> list[int]:
        """Receive the side message's header of frame ``frame_id``; return its descriptors.

        Under the send lock side messages come in the order of their headers, so
        another frame's message here means that its sender died in the middle of
        it, and another sender went on.
        """
        head = b""
        fds: list[int] = []
        try:
            while len(head) < _SIDE.size:
                try:
                    chunk, ancdata, flags, _addr = self._sock.recvmsg(
                        _SIDE.size - len(head), _ANCILLARY_SPACE
                    )
                except ConnectionResetError as exc:
                    self._eof_mid_message(len(head), _SIDE.size, exc)
                fds.extend(fds_from(ancdata))
                if not chunk:
                    self._eof_mid_message(len(head), _SIDE.size)
                if flags & _MSG_CTRUNC:
                    raise self._fds_cut_short()
                head += chunk
            self._check_side(head, frame_id, where, fds)
        except BaseException as exc:
            for fd in fds:
                os.close(fd)
            if not isinstance(exc, (ProtocolError, EOFError)):
                self._break("a receive was interrupted in the middle of a message")
            raise
        return fds

    def _fds_cut_short(self) -> ProtocolError:
        return self._protocol_error(
            "the memfds of a message were cut short: this process may be out "
            "of file descriptors (raise `ulimit -n`)"
        )

    def _died_mid_message(self) -> ProtocolError:
        return self._protocol_error(
            "the sender of a message died in the middle of it, and another process "
            "sending on the same end went on: the rest of that message never came, "
            "and what follows is out of step"
        )

    def _check_trailer(self, frame_id: int) -> None:
        """After an inline side body: the frame id again, or the body was cut short."""
        try:
            trailer = self._recv(_TRAILER.size, _MSG_WAITALL)
        except ConnectionResetError as exc:
            self._eof_mid_message(0, _TRAILER.size, exc)
        except BaseException:
            self._break("a receive was interrupted in the middle of a message")
            raise
        if len(trailer) < _TRAILER.size:
            self._eof_mid_message(len(trailer), _TRAILER.size)
        if _TRAILER.unpack(trailer)[0] != frame_id:
            raise self._died_mid_message()

    def _read_body(self, n: int, want_bytes: bool, on_socket: bool) -> bytes | bytearray:
        """Read an ``n``-byte body (the header is consumed); never over-allocate."""
        pending = None if on_socket else self._take_pending()
        direct = on_socket or self._pipe_file is None
        if pending is not None:
            if len(pending) >= n:
                body = pending[:n]
                rest = pending[n:]
                self._untake(rest)
                return bytes(body)
        elif want_bytes and direct and n <= _PREALLOCATE_LIMIT:
            # The common big-message path: one recv() straight into the bytes
            # object that is returned (MSG_WAITALL), no copy.
            try:
                whole: bytes = self._recv(n, _MSG_WAITALL) if n else b""
            except ConnectionResetError as exc:
                self._eof_mid_message(0, n, exc)
            except BaseException:
                self._break("a receive was interrupted in the middle of a message")
                raise
            if len(whole) == n:
                return whole
            pending = memoryview(whole)  # short: EOF or a signal; finish below
        if n <= _PREALLOCATE_LIMIT:
            out = bytearray(n)
            view = memoryview(out)
            have = 0
            if pending is not None:
                have = len(pending)
                view[:have] = pending
            self._fill(view, have, on_socket)
            return out
        # Grow the buffer only as bytes arrive: the header may be lying.
        out = bytearray(pending) if pending is not None else bytearray()
        chunk = bytearray(min(_GROW_CHUNK, n - len(out)))
        chunk_view = memoryview(chunk)
        reader = self._reader(on_socket)
        while len(out) < n:
            want = min(len(chunk), n - len(out))
            try:
                got = reader(chunk_view[:want])
            except ConnectionResetError as exc:
                self._eof_mid_message(len(out), n, exc)
            except BaseException:
                self._break("a receive was interrupted in the middle of a message")
                raise
            if not got:
                self._eof_mid_message(len(out), n)
            out += chunk_view[:got]
        return out

    def _read_body_into(self, view: memoryview, on_socket: bool) -> None:
        pending = None if on_socket else self._take_pending()
        n = view.nbytes
        have = 0
        if pending is not None:
            have = min(len(pending), n)
            view[:have] = pending[:have]
            rest = pending[have:]
            self._untake(rest)
        self._fill(view, have, on_socket)

    def _fill(self, view: memoryview, have: int, on_socket: bool) -> None:
        """Receive into ``view[have:]`` until it is full."""
        n = view.nbytes
        reader = self._reader(on_socket)
        while have < n:
            try:
                got = reader(view[have:])
            except ConnectionResetError as exc:
                self._eof_mid_message(have, n, exc)
            except BaseException:
                self._break("a receive was interrupted in the middle of a message")
                raise
            if not got:
                self._eof_mid_message(have, n)
            have += got

    def _eof_mid_message(self, have: int, n: int, cause: BaseException | None = None) -> None:
        raise EOFError(
            f"the other end of the connection was closed after sending {have} of the "
            f"{n} bytes of a message (its process may have died mid-message)"
        ) from cause


def _map_all(fds: list[int]) -> list[Any]:
    """Map each memfd (closing every descriptor, mapped or not)."""
    try:
        return [map_memfd(fd) for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)


def _read_whole(fd: int, n: int) -> bytes:
    """The ``n`` bytes of a memfd, as bytes."""
    data = os.pread(fd, n, 0)
    if len(data) < n:  # past 2 GiB one read stops short
        parts = [data]
        have = len(data)
        while have < n:
            chunk = os.pread(fd, min(n - have, 1 << 30), have)
            if not chunk:
                raise EOFError("a message's memfd ended early")
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
    return data


def _byte_view(buf: Any) -> memoryview:
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(
            f"expected a bytes-like object (bytes, bytearray, memoryview, array), "
            f"not {type(buf).__name__}"
        ) from None
    if view.ndim != 1 or view.itemsize != 1:
        try:
            view = view.cast("B")
        except TypeError:
            raise TypeError(
                f"the {type(buf).__name__} buffer is not C-contiguous; pass a contiguous copy"
            ) from None
    return view


def _rebuild_connection(
    token: int,
    readable: bool,
    writable: bool,
    pending: bytes = b"",
    rtoken: int = -1,
    wtoken: int = -1,
    ltoken: int = -1,
) -> Connection:
    sock = socket.socket(fileno=_reduction.take_fd(token))
    rfd = _reduction.take_fd(rtoken) if rtoken >= 0 else -1
    wfd = _reduction.take_fd(wtoken) if wtoken >= 0 else -1
    if rfd >= 0 or wfd >= 0:
        conn = Connection._with_pipes(sock, rfd, wfd, readable, writable)
    else:
        conn = Connection(sock, readable, writable)
    if ltoken >= 0:
        # The end's lock file travels with it: every sender must lock the same file.
        conn._send_lock.close()
        conn._send_lock = SendLock(_reduction.take_fd(ltoken), owns_fd=True)
    if pending:
        conn._rbuf[: len(pending)] = pending
        conn._rend = len(pending)
    return conn


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """Create a connected pair of ``Connection`` ends.

    Args:
        duplex: when ``True`` both ends send and receive. When ``False`` the
            first end only receives and the second only sends.

    Returns:
        ``(conn1, conn2)``.
    """
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds: list[int] = []
    try:
        _configure(a)
        _configure(b)
        if duplex:
            a_to_b = os.pipe()
            fds.extend(a_to_b)
            b_to_a = os.pipe()
            fds.extend(b_to_a)
            _prepare_write_end(a_to_b[1])
            _prepare_write_end(b_to_a[1])
            return (
                Connection._with_pipes(a, b_to_a[0], a_to_b[1]),
                Connection._with_pipes(b, a_to_b[0], b_to_a[1]),
            )
        # Half-close the unused directions, so the kernel itself refuses them.
        a.shutdown(socket.SHUT_WR)
        b.shutdown(socket.SHUT_RD)
        r, w = os.pipe()
        fds.extend((r, w))
        _prepare_write_end(w)
        return (
            Connection._with_pipes(a, r, -1, writable=False),
            Connection._with_pipes(b, -1, w, readable=False),
        )
    except BaseException:
        a.close()
        b.close()
        for fd in fds:
            os.close(fd)
        raise


def _prepare_write_end(fd: int) -> None:
    """Make a pipe's write end non-blocking, and (macOS) free of SIGPIPE.

    Non-blocking: a write of at most PIPE_BUF bytes then goes whole or not at
    all, and a sender that must wait (or gives up at its deadline) does so in
    ``poll``. The flag belongs to the open file, shared with every process
    holding the end, and every proctor sender expects it.
    """
    os.set_blocking(fd, False)
    if _F_SETNOSIGPIPE is not None:
        fcntl.fcntl(fd, _F_SETNOSIGPIPE, 1)


# -- waiting on many objects -----------------------------------------------------------

# poll() has no FD_SETSIZE limit, unlike select(); every POSIX system we support has it.
_HAVE_POLL = hasattr(select, "poll")


def _fileno_of(obj: Any) -> int:
    if isinstance(obj, int) and not isinstance(obj, bool):
        if obj < 0:
            raise ValueError(f"not a file descriptor: {obj}")
        return obj
    fileno = getattr(obj, "fileno", None)
    if fileno is None:
        raise TypeError(
            f"wait() takes Connections, sockets, process sentinels (ints) and objects "
            f"with a fileno() method, not {type(obj).__name__}"
        )
    return fileno()


def wait(object_list: Iterable[Any], timeout: float | None = None) -> list[Any]:
    """Wait until at least one object is ready; return the ready ones.

    An object is ready when a ``Connection`` has a message (or end-of-file) to
    receive, a socket is readable, or a process sentinel signals that its
    process ended.

    Args:
        object_list: Connections, sockets, ints (file descriptors, such as
            ``Process.sentinel``) and objects with a ``fileno()`` method.
        timeout: seconds to wait; ``None`` waits forever, ``0`` polls.

    Returns:
        The ready objects, in the order given; empty when the timeout expired.

    Raises:
        TypeError: an object is none of the kinds above.
        OSError: a Connection in the list is closed.
    """
    objects = list(object_list)
    timeout = _check_timeout(timeout)
    ready = [o for o in objects if isinstance(o, Connection) and o._rpos < o._rend]
    if ready:
        return ready
    fds = [_fileno_of(o) for o in objects]
    if not fds:
        if timeout is None:
            raise ValueError("wait() on an empty list with timeout=None would never return")
        time.sleep(timeout)
        return []
    if _HAVE_POLL:
        poller = select.poll()
        for fd in set(fds):
            poller.register(fd, select.POLLIN)
        events = poller.poll(None if timeout is None else timeout * 1000.0)
        ready_fds = {fd for fd, _ in events}
    else:
        ready_list, _, _ = select.select(list(set(fds)), [], [], timeout)
        ready_fds = set(ready_list)
    return [o for o, fd in zip(objects, fds, strict=True) if fd in ready_fds]
