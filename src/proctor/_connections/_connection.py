"""``Connection``: one end of a message channel, and what its users call.

A connection end owns its descriptors and its state; how frames cross is the
business of its two halves, which this class puts together::

    send(obj) / send_bytes(buf)          recv() / recv_bytes() / recv_bytes_into()
      check, pickle (before any write)     check, wait for a message to start
      │                                    ▲
      ▼                                    │
    FrameSender (_sending)               FrameReceiver (_receiving)
      pipe write / datagram / stream       read-ahead, header checks,
      (under the send lock) / socket       datagrams, side messages, memfds
      ▼                                    ▲
      └──────── the frame format (_frames) ┘

A ``Pipe()`` end (see ``_pipe``) has a frame channel (a stream socket pair on
Linux, a pipe per direction elsewhere), a datagram socket,
a stream socket and a spare socket (large buffers' memfds come back on it for
reuse, ``_core._spares``); a ``Listener``/``Client`` end has only its socket, which
carries everything. An end can be handed to a child process as an argument of
``Process``; its descriptors, its send lock's file where it has one, the bytes it
has read ahead and the datagrams it stashed travel with it (``_passing``).
"""

from __future__ import annotations

import _pickle
import _socket as socket  # (not socket.py: with enum and selectors, ms of a spawned start)
import _thread
import io
import os
import sys
import time

from .._core import _lazy_errors
from .._core._integers import integral
from .._core._reduction import (
    DescriptorsNeedACarrier,
    MessageFds,
    TooManyDescriptors,
    collecting_fds,
)
from .._core._reduction import registered_reducers as _registered_reducers
from .._core._timeout import check_timeout, readable_now
from .._core._timeout import wait_readable as fd_readable_within
from .._core._wakeup import inherited_threads as _inherited_threads
from .._core._wakeup import wait_readable, wake_waiters
from .._core._wire import MAX_FDS
from . import _aio, _receiving, _sendlock
from ._end import FdInbox
from ._fdchannel import FdChannel
from ._frames import (
    DATAGRAM_BODY_LIMIT,
    FRAME_ID,
    HEADER,
    HEADER_SIZE,
    ID_SIZE,
    LENGTH_MASK,
    MAX_HANDLES,
    ON_CHANNEL,
    ON_SOCKET,
    PICKLE_PROTOCOL,
    SCALARS,
    TAG,
    TAG_BITS,
    TAG_DGRAM,
    TAG_SHIFT,
    byte_view,
    check_maxlength,
    checked_view,
    pickle_fallback,
    pickle_for_send,
    pickle_in_band,
)
from ._passing import reduce_end
from ._receiving import READ_AHEAD, FrameReceiver, can_spin, look_length
from ._sending import ATOMIC_BODY, MSG_NOSIGNAL, SOCKET_INLINE_BODY, FrameSender, send_deadline
from ._sendlock import SendLock, new_lock_file

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from pickle import PickleBuffer
    from typing import Any

__all__ = ("Connection", "checked_view", "configure_socket", "datagram_limit")

# Kernel socket buffers: large enough that a 1 MiB message crosses in a few
# wake-ups (the kernel caps this at net.core.wmem_max / rmem_max).
_SOCKET_BUFFER = 1024 * 1024
# What the kernel keeps of a socket's send buffer for itself (Linux refuses a
# datagram longer than the buffer less 32 bytes); a little more, to be safe.
_DATAGRAM_OVERHEAD = 1024
# macOS has no MSG_NOSIGNAL; the per-socket option does the same job.
_SO_NOSIGPIPE = getattr(socket, "SO_NOSIGPIPE", 0x1022 if sys.platform == "darwin" else None)
# The buffer options a connection socket raises. On Linux an AF_UNIX socket's
# receive buffer limits nothing (a stream or datagram send is bounded by the
# sender's send buffer, a datagram queue by its length), so only the send buffer
# is raised there; elsewhere (macOS bounds a stream by the receiver's) both.
_BUFFER_OPTIONS = (socket.SO_SNDBUF, socket.SO_RCVBUF)
_UNIX_BUFFER_OPTIONS = (socket.SO_SNDBUF,) if sys.platform.startswith("linux") else _BUFFER_OPTIONS
# A new socket's buffer sizes by (family, type, option), read once per process:
# every new socket of a kind starts with the system's default.
_new_socket_buffers: dict[tuple[int, int, int], int] = {}
# The raw family and type of a socket (socket.py's properties make enums: ~1 us each).
_family_of = socket.socket.family.__get__
_type_of = socket.socket.type.__get__

# Whether other threads run: _thread_count() > _inherited_threads[0] (see
# _core._wakeup.inherited_threads: a fork child's count includes its parent's).
_thread_count = _thread._count
# (_pickle's functions are pickle's; pickle.py would also import re: ~6 ms of a
# spawned child's start that only passes objects on a connection.)
_dumps = _pickle.dumps
_loads = _pickle.loads
_unpack_from = HEADER.unpack_from
_id_unpack_from = FRAME_ID.unpack_from


def configure_socket(sock: socket.socket, new: bool = False) -> None:
    """Set the options every connection socket needs.

    ``new``: the socket was just made (``socketpair``), so its buffers have the
    system's default sizes, read once per process rather than from each socket.
    """
    if socket.getdefaulttimeout() is not None:
        # socket.setdefaulttimeout() makes new sockets non-blocking in the kernel,
        # a flag every process holding the socket shares; proctor's blocking
        # calls expect blocking sockets and apply their own timeouts.
        sock.settimeout(None)
    if _SO_NOSIGPIPE is not None and not MSG_NOSIGNAL:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_NOSIGPIPE, 1)
        except OSError:
            pass
    family = _family_of(sock)
    options = _UNIX_BUFFER_OPTIONS if family == socket.AF_UNIX else _BUFFER_OPTIONS
    for option in options:
        try:
            if new:
                key = (family, _type_of(sock), option)
                size = _new_socket_buffers.get(key)
                if size is None:
                    size = _new_socket_buffers[key] = sock.getsockopt(socket.SOL_SOCKET, option)
            else:
                size = sock.getsockopt(socket.SOL_SOCKET, option)
            if size < _SOCKET_BUFFER:
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        except OSError:
            pass  # a smaller buffer is slower, not wrong


def datagram_limit(dsock: socket.socket) -> int:
    """The largest body this end sends in one datagram on ``dsock`` (0: none).

    The kernel refuses a datagram that its socket's send buffer could not hold.
    """
    try:
        room = dsock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) - _DATAGRAM_OVERHEAD
    except OSError:
        return 0
    limit = min(DATAGRAM_BODY_LIMIT, room - FRAME_ID.size)
    return limit if limit > ATOMIC_BODY else 0


def _check_timeout(timeout: float | None) -> float | None:
    checked = check_timeout(timeout)
    return None if checked is None else max(0.0, checked)


class Connection(FrameSender, FrameReceiver):
    """One end of a message channel: a ``Pipe()`` end, or a ``Listener``/``Client`` socket.

    Objects are sent pickled (cloudpickle when plain pickle cannot), bytes as
    they are. Objects that own descriptors (another ``Connection``, a socket, a
    ``reduction.DupFd``) are sent with their descriptors on a Unix socket (a
    ``Pipe()`` end, an ``AF_UNIX`` ``Listener``/``Client`` connection). A connection
    owns its descriptors (a socket; for ``Pipe()`` ends also a pipe per
    direction): close it, or use it as a context manager. It can be handed to a
    child process as an argument of ``Process`` under every start method, or sent
    through another connection over a Unix socket; it cannot be pickled anywhere
    else.

    Args:
        handle: a file descriptor or a ``socket.socket``; the connection takes
            ownership of it. A connected stream socket is the usual handle; any
            other descriptor (an ``os.pipe()`` end, a FIFO) is read and written
            as a byte stream, and one that is not open fails at first use, as
            with ``multiprocessing``.
        readable: whether this end may receive.
        writable: whether this end may send.

    Raises:
        ValueError: ``handle`` is negative, or a socket that is not SOCK_STREAM,
            or neither direction is enabled.
        TypeError: ``handle`` is neither an int nor a socket.

    Note:
        Unlike ``multiprocessing``, ``recv()``, ``recv_bytes()`` and
        ``recv_bytes_into()`` take a keyword-only ``timeout``. It bounds the wait
        for a message to *start*; once its first bytes are here, the rest is read
        to the end (a live sender finishes its frame; a dead one gives EOFError).
        ``send()`` and ``send_bytes()`` take one too, which bounds the whole send.
        Unlike ``multiprocessing``'s, one end may be used by several sending
        threads and processes at once: each message arrives whole.
    """

    __slots__ = ("__weakref__",)

    def __init__(
        self, handle: int | socket.socket, readable: bool = True, writable: bool = True
    ) -> None:
        if not readable and not writable:
            raise ValueError("at least one of readable and writable must be True")
        sock: Any
        if isinstance(handle, socket.socket):
            sock = handle
        elif isinstance(handle, int) and not isinstance(handle, bool):
            if handle < 0:
                raise ValueError(f"invalid handle {handle}: a file descriptor is >= 0")
            try:
                sock = socket.socket(fileno=handle)
            except OSError:
                # Not a socket (an os.pipe() end, a FIFO), or not open: a byte
                # stream, checked at first use as multiprocessing's is.
                sock = FdChannel(handle)
        else:
            raise TypeError(f"handle must be a file descriptor or a socket.socket, not {handle!r}")
        is_socket = sock.__class__ is not FdChannel
        if is_socket:
            if _type_of(sock) != socket.SOCK_STREAM:
                if sock is not handle:
                    sock.detach()  # the caller still owns the descriptor it passed
                raise ValueError(f"Connection needs a SOCK_STREAM socket, got {sock.type!r}")
            sock.setblocking(True)
        self._sock = sock
        self._fd = sock.fileno()
        self._readable = bool(readable)
        self._writable = bool(writable)
        self._closed = False
        self._waiting = set()
        self._closable_elsewhere = True
        self._shutdown_pid = 0
        self._broken = None
        self._broken_send = None
        # One flag per direction keeps the hot paths to a single check.
        self._can_recv = self._readable
        self._can_send = self._writable
        # Read-ahead buffer: bytes _rpos.._rend are received but not yet consumed.
        # Reused for every read, so a small message costs no allocation.
        self._rbuf = bytearray(READ_AHEAD if readable else 0)
        self._rview = memoryview(self._rbuf)
        self._rpos = 0
        self._rend = 0
        self._recv = sock.recv
        self._sendall = sock.sendall
        # The small-message channel: the socket itself, or a pipe pair (see Pipe()).
        self._rfd = -1
        self._wfd = -1
        self._pipe_file = None
        self._fsock = None
        self._inline_limit = ATOMIC_BODY
        self._private_frames = False
        # Its receives look for a message before a read that would sleep
        # (FrameReceiver._look_before_read; a Pipe() end: see _with_pipes).
        self._spin_skip = 0 if can_spin() else -1
        self._spin_backoff = 0
        self._greeting = None
        if is_socket and _family_of(sock) == socket.AF_UNIX:
            # Messages may bring descriptors: every read keeps them (see FdInbox).
            inbox = self._fd_inbox = FdInbox(sock)
            self._recv_into = inbox.recv_into
            self._readinto = inbox.readinto
        else:
            self._fd_inbox = None
            self._recv_into = self._readinto = sock.recv_into
        # Mid-size bodies: a datagram socket (see Pipe()), none here; nor the
        # socket large buffers' memfds come back on.
        self._spare_sock = None
        self._spares = None
        self._dsock = None
        self._dgram_limit = 0
        self._dbuf = None
        self._dview = None
        self._stash = None
        self._partial = None
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
        cls,
        sock: socket.socket,
        rfd: int,
        wfd: int,
        readable: bool = True,
        writable: bool = True,
        dsock: socket.socket | None = None,
        spare_sock: socket.socket | None = None,
        frame_sock: socket.socket | None = None,
        private: bool = False,
    ) -> Connection:
        """A connection whose frames travel on their own channel, bodies on ``dsock`` or ``sock``.

        The frame channel is ``frame_sock``, a stream socket this end reads and
        writes frames on (Linux), or else the pipes ``rfd`` (read end of the
        incoming one) and ``wfd`` (write end of the outgoing one); see
        ``_pipe.FRAME_SOCKETS``. A datagram socket carries a mid-size body whole,
        with no lock; a stream socket moves big bodies with fewer copies and one
        ``MSG_WAITALL`` read. The frame header always goes on the frame channel,
        which keeps messages in order. ``spare_sock`` (a datagram socket) carries
        received large buffers' memfds back for reuse. ``private``: see
        ``EndState._private_frames``.
        """
        conn = cls(sock, readable, writable)
        conn._private_frames = private
        # Descriptors come in side messages, read with recvmsg (see _receiving).
        conn._fd_inbox = None
        conn._recv_into = conn._readinto = sock.recv_into
        if frame_sock is not None:
            conn._fsock = frame_sock
            conn._inline_limit = SOCKET_INLINE_BODY
            fd = frame_sock.fileno()
            rfd = fd if readable else -1
            wfd = fd if writable else -1
        conn._rfd = rfd
        conn._wfd = wfd
        # Only a frame socket's receives look before they sleep (reading: see
        # FrameReceiver._read_spinning); a pipe's do not.
        # (can_spin() also loads the C receives recv_bytes() uses: called either way.)
        spins = can_spin()
        conn._spin_skip = 0 if frame_sock is not None and spins else -1
        conn._spare_sock = spare_sock  # (its Spares are made at the first large buffer)
        if dsock is not None:
            conn._dsock = dsock
            if wfd >= 0:
                conn._dgram_limit = datagram_limit(dsock)
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
        """Close this end; the peer's ``recv()`` then raises ``EOFError``. Idempotent.

        A call blocked on this end in another thread (a receive, ``poll()``,
        ``wait()``) then raises the "closed" ``OSError`` at once.
        """
        if not self._closed:
            self._closed = True
            self._can_recv = self._can_send = False
            self._rpos = self._rend = 0
            if self._waiting:
                wake_waiters(self._waiting)  # (before the numbers can go to new files)
            if self._shutdown_pid and self._shutdown_pid == os.getpid():
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)  # (see _shut_down_at_close)
                except OSError:
                    pass  # not connected any more
            self._sock.close()
            self._close_pipes()

    def _close_pipes(self) -> None:
        if self._fd_inbox is not None:
            self._fd_inbox.close()
        self._pipe_file = None
        if self._fsock is not None:
            self._fsock.close()  # (the frame channel: _rfd and _wfd are its descriptor)
        else:
            for fd in (self._rfd, self._wfd):
                if fd >= 0:
                    os.close(fd)
        self._rfd = self._wfd = -1
        if self._dsock is not None:
            self._dsock.close()
            self._dsock = None
        self._dgram_limit = 0
        self._dbuf = self._dview = None
        self._stash = None
        if self._spares is not None:
            self._spares.close()
            self._spares = None
        if self._spare_sock is not None:
            self._spare_sock.close()
            self._spare_sock = None
        self._send_lock.close()

    def keep_in_process(self) -> None:
        """Promise that only this process sends on this end (a proctor addition).

        Sends then take only the threads' lock, not the lock that excludes other
        processes (an fcntl record lock: two system calls a send). Pickling the
        end (to send it to another process) withdraws the promise; a forked
        child's copy does not keep it. Do not let a forked child send on an end
        its parent still sends on after this call.
        """
        self._send_lock.process_private = True

    def _keep_in_thread(self) -> None:
        """Promise that no other thread closes this end while a receive waits on it
        (proctor's own ends that one thread owns: a manager's serving thread's).

        Its blocking receives then read at once, as in a process with no other
        thread, instead of first waiting where another thread's ``close()`` would
        end the wait (``_core._wakeup``): that wait cost a manager call ~6 us on
        one core. Not for user code: an end another thread closes under such a
        receive leaves it blocked, as the stdlib's.
        """
        self._closable_elsewhere = False

    def _shut_down_at_close(self) -> None:
        """Promise that this end's socket is this process's alone (proctor's own
        connections no other process uses: a manager client's per-thread ones).

        ``close()`` in this process then shuts the socket down before closing it,
        which ends a receive blocked on it in another thread at once (it reads
        end-of-file), so its blocking receives read at once, as in a process
        with no other thread, instead of first waiting where a close would end
        the wait (``_core._wakeup``): that wait and the second release of the
        GIL it takes cost two or four threads of one manager client ~20% of
        their calls. A forked child's ``close()`` of its copy does not shut it
        down (a shutdown acts on the socket, which its parent still uses).
        """
        self._closable_elsewhere = False
        self._shutdown_pid = os.getpid()

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

    @property
    def _handle(self) -> int | None:
        """The descriptor this end was made from (``multiprocessing``'s private name).

        Setting it to ``None`` -- what code written for ``multiprocessing`` does
        to stop a connection from closing a descriptor that is not its own --
        makes the end forget that descriptor without closing it; the end is
        then closed (its other descriptors too).
        """
        return None if self._closed else self._sock.fileno()

    @_handle.setter
    def _handle(self, value: None) -> None:
        if value is not None:
            raise ValueError("a Connection's _handle can only be set to None (to forget it)")
        if not self._closed:
            self._sock.detach()
            self.close()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return reduce_end(self, Connection)

    # -- errors --------------------------------------------------------------------

    def _raise_closed(self) -> None:
        raise self._closed_error()

    def _check_readable(self) -> None:
        if self._closed:
            self._raise_closed()
        if not self._readable:
            raise OSError(
                "this Connection is write-only (the sending end of Pipe(duplex=False)); "
                "receive on the other end"
            )
        if self._broken is not None:
            if isinstance(self._broken, BaseException):
                raise self._broken.with_traceback(None)
            raise _lazy_errors.ProtocolError(
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
            raise _lazy_errors.ProtocolError(
                f"this Connection can no longer send: {self._broken_send}, so the peer "
                "would misread whatever came next; close it and open a new one."
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
        deadline = None if timeout is None else send_deadline(timeout)
        try:
            if self._wfd < 0 or type(obj) in SCALARS:
                try:
                    body = _dumps(obj, PICKLE_PROTOCOL)
                except (_pickle.PicklingError, TypeError, AttributeError):
                    body = pickle_fallback(obj)
                else:
                    # find(), not `in`: bytes.__contains__ first tries the
                    # operand as an int and formats a TypeError (~2,000
                    # instructions a send).
                    if body.find(b"__main__") >= 0 or _registered_reducers:
                        # Functions and classes of the main script mean nothing by
                        # name in a spawn or forkserver process: send them by value.
                        # (And reduction.register()'s reducers need the exact pass.)
                        body = pickle_fallback(obj)
            else:
                # Pipe(): large buffers (numpy arrays...) go as memfds, not through
                # the pipe. A first pickle takes every buffer out of band (append
                # returns None): the common case -- no buffer at all -- costs
                # nothing more; anything else is sorted out by pickle_for_send.
                buffers: list[PickleBuffer] = []
                try:
                    body = _dumps(obj, PICKLE_PROTOCOL, buffer_callback=buffers.append)
                    plain = not buffers and body.find(b"__main__") < 0 and not _registered_reducers
                except (_pickle.PicklingError, TypeError, AttributeError):
                    plain = False
                if not plain:
                    body, large = pickle_for_send(obj)
                    if large:
                        if len(large) >= MAX_FDS:
                            # More than one message can carry: copy them along instead.
                            body = pickle_in_band(body, large)
                        else:
                            self._send_with_buffers(body, large, deadline)
                            return
        except DescriptorsNeedACarrier as exc:
            # An object in it owns a descriptor: pickle again, collecting them.
            self._send_owning_fds(obj, exc, deadline)
            return
        self._send_frame(body, deadline)

    def _send_owning_fds(
        self, obj: Any, need: DescriptorsNeedACarrier, deadline: float | None
    ) -> None:
        """Send ``obj``, some of whose objects own descriptors, with those descriptors.

        Raises:
            PicklingError: this connection cannot carry descriptors (TCP, a pipe).
            RuntimeError: an object in ``obj`` can only go to a child at its start.
            ValueError: more descriptors than one message can carry.
        """
        if not need.messages:
            raise need  # a queue, a lock...: only a start can send it
        if self._wfd < 0 and self._fd_inbox is None:
            if isinstance(self._sock, FdChannel):
                where = "this Connection wraps a descriptor that is not a Unix socket"
            else:
                where = "this Connection is a TCP connection"
            owner = "it" if type(obj).__name__ == need.what else f"the {need.what} in it"
            raise _lazy_errors.PicklingError(
                f"cannot send this {type(obj).__name__} on {self!r}: {owner} owns "
                f"an open file descriptor, and descriptors can only cross a Unix socket "
                f"({where}). Send it through a Pipe() end or an AF_UNIX Listener/Client "
                "connection, or pass it to the child as an argument of Process(...).",
                path=(type(obj).__name__, need.what),
            ) from need
        collector = MessageFds(MAX_HANDLES)
        try:
            try:
                with collecting_fds(collector):
                    body = pickle_fallback(obj)
            except TooManyDescriptors:
                raise ValueError(
                    f"cannot send this {type(obj).__name__}: it owns more than "
                    f"{MAX_HANDLES} file descriptors, and one message carries at most "
                    f"{MAX_HANDLES}; nothing was sent. Send it in parts."
                ) from None
            self._send_with_handles(body, collector.fds, deadline)
        finally:
            collector.close()

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
        if not self._can_send:
            self._check_writable()
        deadline = None if timeout is None else send_deadline(timeout)
        if size is None and offset.__class__ is int and not offset:
            # The whole buffer: nothing to check (bytes are bytes already).
            self._send_frame(buf if buf.__class__ is bytes else byte_view(buf), deadline)
            return
        view = checked_view(buf, offset, size)
        self._send_frame(view, deadline)

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
            if self._partial is not None:
                return _loads(self._finish_partial(None))
            self._prepare_recv(timeout)
        pos = self._rpos
        end = self._rend
        if pos == end:
            if (
                timeout is None
                and self._closable_elsewhere
                and _thread_count() > _inherited_threads[0]
            ):
                # Wait where another thread's close() of this end ends the wait
                # (_core._wakeup), not in the read, which nothing would end.
                self._wait_for_message()
            try:
                # A Pipe() end reads exactly one frame; a socket reads ahead.
                if self._rfd >= 0:
                    end = self._next_pipe_frame(self._rview)
                else:
                    if self._spin_skip >= 0:
                        self._look_before_read()
                    end = self._readinto(self._rview)
            except ConnectionResetError as exc:
                raise EOFError("the other end of the connection was closed") from exc
            if not end:
                raise EOFError("the other end of the connection was closed")
            pos = 0
            # (_rpos too: an exception before this frame is consumed must not leave
            # the next receive parsing from the last frame's end.)
            self._rpos, self._rend = 0, end
        start = pos + HEADER_SIZE
        if start <= end:
            # One chained comparison checks the tag and the length at once: a
            # wrong tag makes the length negative or beyond 2**48.
            word = _unpack_from(self._rbuf, pos)[0]
            stop = start - TAG_BITS + word
            if start <= stop <= end:
                self._rpos = stop
                return _loads(self._rview[start:stop])
            if word >> TAG_SHIFT == TAG_DGRAM and start + ID_SIZE <= end and self._dsock:
                # A mid-size message: its body is a datagram, already here.
                self._rpos = start + ID_SIZE
                body = self._take_datagram(_id_unpack_from(self._rbuf, start)[0])
                if len(body) != word & LENGTH_MASK:
                    raise self._datagram_size_error(len(body), word & LENGTH_MASK)
                return _loads(body)
        # Rare: a frame split across reads, a big frame, or a bad header.
        self._rpos = pos
        n, where, frame_id = self._read_header(None)
        if where == ON_CHANNEL:
            return _loads(self._read_body(n, False, False))
        return self._side_frame(n, where, frame_id, False)

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
        if maxlength is not None:
            maxlength = check_maxlength(maxlength)
        if not self._can_recv or timeout is not None:
            if self._partial is not None:
                return bytes(self._finish_partial(maxlength))
            self._prepare_recv(timeout)
        pos = self._rpos
        end = self._rend
        if (
            pos == end
            and timeout is None
            and self._closable_elsewhere
            and _thread_count() > _inherited_threads[0]
        ):
            self._wait_for_message()  # (as in recv())
        rest_apart = False  # (the frame just read left its body's rest on the channel)
        if pos == end and self._rfd >= 0:
            # As in recv(). (On a socket connection a big body is received
            # straight into the bytes object returned: no read-ahead there.)
            # With the C module, a mid-size inline body's rest is left on the
            # channel, to be read into the bytes returned (below); not under a
            # maxlength, which may refuse the message, whose rest must not stay
            # there to be taken for the next frame (by another process receiving
            # on this end).
            rest_apart = maxlength is None and bool(_receiving._read_rest_as_bytes)
            try:
                end = self._next_pipe_frame(self._rview, not rest_apart)
            except ConnectionResetError as exc:
                raise EOFError("the other end of the connection was closed") from exc
            if not end:
                raise EOFError("the other end of the connection was closed")
            pos = 0
            # (_rpos too: an exception before this frame is consumed must not leave
            # the next receive parsing from the last frame's end.)
            self._rpos, self._rend = 0, end
        start = pos + HEADER_SIZE
        if start <= end:
            word = _unpack_from(self._rbuf, pos)[0]
            n = word & LENGTH_MASK
            if maxlength is None or n <= maxlength:
                stop = start - TAG_BITS + word
                if start <= stop <= end:
                    self._rpos = stop
                    return bytes(self._rview[start:stop])
                tag = word >> TAG_SHIFT
                if tag == TAG_DGRAM and start + ID_SIZE <= end and self._dsock:
                    self._rpos = start + ID_SIZE
                    dbody = self._take_datagram(_id_unpack_from(self._rbuf, start)[0], n)
                    if len(dbody) != n:
                        raise self._datagram_size_error(len(dbody), n)
                    return dbody if type(dbody) is bytes else bytes(dbody)
                if rest_apart and tag == TAG and n <= self._inline_limit:
                    # The frame's start was just read, its rest is next on the
                    # channel: read it into the bytes returned, with no copy out
                    # of the buffer (a copy was 4-5% of a 16 KiB round trip).
                    self._rpos = end
                    return self._rest_as_bytes(start, n)
        self._rpos = pos
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
        view = byte_view(buf)
        if view.readonly:
            raise TypeError(f"buf must be writable, got a read-only {type(buf).__name__}")
        if offset.__class__ is not int:
            offset = integral(offset)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be an int, not {offset!r}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if offset > view.nbytes:
            raise ValueError(f"offset {offset} is past the end of the {view.nbytes}-byte buffer")
        if self._partial is not None:
            data = self._finish_partial(None)
            if len(data) > view.nbytes - offset:
                raise _lazy_errors.BufferTooShort(bytes(data))
            view[offset : offset + len(data)] = data
            return len(data)
        self._prepare_recv(timeout)
        if (
            timeout is None
            and self._rpos == self._rend
            and self._closable_elsewhere
            and _thread_count() > _inherited_threads[0]
        ):
            self._wait_for_message()  # (as in recv())
        n, where, frame_id = self._read_header(None)  # (reads the next frame first)
        room = view.nbytes - offset
        if where == ON_CHANNEL:
            if n > room:
                body = self._read_body(n, True, False)
                raise _lazy_errors.BufferTooShort(body if type(body) is bytes else bytes(body))
            self._read_body_into(view[offset : offset + n], False)
            return n
        if where != ON_SOCKET or n > room:
            data = self._side_frame(n, where, frame_id, True)
            if len(data) > room:
                raise _lazy_errors.BufferTooShort(data if type(data) is bytes else bytes(data))
            view[offset : offset + len(data)] = data
            return len(data)
        self._take_side(frame_id, where)
        self._read_body_into(view[offset : offset + n], True)
        self._check_trailer(frame_id)
        return n

    # -- in an event loop (the waits in _aio) ------------------------------------------

    async def arecv(self, *, timeout: float | None = None) -> Any:
        """``recv()`` for a coroutine: wait for a message without blocking the event loop.

        The wait for a message to start is awaited (the loop watches the
        descriptor); the message itself is then read as ``recv()`` reads it. A
        proctor addition.

        Raises:
            EOFError: the other end was closed or its process died.
            ProcessTimeoutError: no message started within ``timeout``.
            OSError, ProtocolError, Exception: as :meth:`recv`.
        """
        return await _aio.arecv(self, False, None, timeout)

    async def arecv_bytes(
        self, maxlength: int | None = None, *, timeout: float | None = None
    ) -> bytes:
        """``recv_bytes()`` for a coroutine; see :meth:`arecv`."""
        if maxlength is not None:
            maxlength = check_maxlength(maxlength)
        result: bytes = await _aio.arecv(self, True, maxlength, timeout)
        return result

    async def asend(self, obj: Any, *, timeout: float | None = None) -> None:
        """``send()`` for a coroutine: wait for room without blocking the event loop.

        A cancelled ``asend()`` sent the whole message or nothing of it; on a
        ``Listener``/``Client`` connection a message whose first bytes went out
        is finished first, and the cancellation comes after. A proctor addition.

        Raises:
            PicklingError, BrokenPipeError, OSError: as :meth:`send`.
            ProcessTimeoutError: the message could not be sent within
                ``timeout``; on a ``Pipe()`` end nothing of it was sent.
        """
        if self._wfd >= 0:
            await _aio.asend(self, lambda: self.send(obj, timeout=0), timeout)
            return
        if not self._can_send:
            self._check_writable()
        body = _aio.socket_body(obj)
        await _aio.asend_body(self, body, lambda: self.send(obj), timeout)

    async def asend_bytes(
        self,
        buf: Any,
        offset: int = 0,
        size: int | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        """``send_bytes()`` for a coroutine; see :meth:`asend`."""
        view = checked_view(buf, offset, size)  # bad arguments fail before any wait
        if self._wfd >= 0:
            await _aio.asend(self, lambda: self.send_bytes(view, timeout=0), timeout)
            return
        await _aio.asend_body(self, view, lambda: self.send_bytes(view), timeout)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Return whether a message (or end-of-file) is ready to be received.

        Args:
            timeout: seconds to wait; ``0`` checks and returns at once, ``None``
                waits forever.

        Raises:
            OSError: this end is closed or write-only.
            AuthenticationError: a ``Client`` made without an authkey, whose
                listener requires one (as every receive on it does).
        """
        if self._can_recv and self._rpos < self._rend:
            return True  # bytes read ahead: no check to make (the flag says all are met)
        self._check_readable()
        if self._rpos < self._rend or self._partial is not None:
            return True  # (a partial message: its sender streams the rest, or died)
        timeout = _check_timeout(timeout)
        if self._greeting is not None:
            try:
                timeout = self._take_greeting(timeout)
            except _lazy_errors.if_loaded("ProcessTimeoutError"):
                return False
            except _lazy_errors.if_loaded("AuthenticationError"):
                raise  # (this end can never receive: said as every receive says it)
            except _lazy_errors.if_loaded(EOFError, "ProcessError"):
                return True  # recv() will say what happened
            if self._rpos < self._rend:
                return True
        # A look first, which keeps the GIL (_wait_for_message): a message that has
        # come is seen without a wake-up registered or the GIL let go, and a zero
        # timeout needs no more (it cannot block: no close to wait for).
        ready = readable_now(self._fd)
        if ready or timeout == 0.0:
            if self._closed:  # (closed by another thread meanwhile)
                self._raise_closed()
            return ready
        if self._spin_skip >= 0:
            # Then a look for it before the sleep, as a receive's (_receiving,
            # "_looked_until_readable"), with its back-off, which a poll counts down
            # as a receive does (beside other threads the receive after it does
            # not: its wait found the message there). No longer than the timeout,
            # which loses what the look took (by the clock: a look on one CPU, or
            # one a signal ended, stops early).
            began = time.monotonic() if timeout is not None else 0.0
            others = _thread_count() > _inherited_threads[0]
            if self._looked_until_readable(others, look_length(timeout)):
                if self._closed:
                    self._raise_closed()
                return True
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - began))
        return self._wait_fd(timeout)

    def _wait_for_message(self) -> None:
        """Before a blocking read in a process with other threads: return once a
        message (or end-of-file) is there, or raise if another thread closed this end.

        A message already there is read at once: one look that keeps the GIL
        (``_core._timeout.readable_now``), where the wait another thread's
        ``close()`` can end registers a wake-up and lets the GIL go in its
        ``poll()``. With one thread waiting beside, a receive of a message that had
        come took 4.6-4.8 us against the stdlib's 3.4; 3.3 us now (33rd session).
        One that has not come yet is looked for first, the GIL let go
        (``_looked_until_readable``), as a receive in a process without threads
        looks before it sleeps.
        """
        if readable_now(self._fd) and not self._closed:
            return
        # A look (its GIL let go) first: the other threads run meanwhile, and a
        # message that comes within it needs no wake-up. (A close() that came
        # meanwhile is found by the wait, which raises the closed error.)
        if self._looked_until_readable(True) and not self._closed:
            return
        self._wait_fd(None)

    def _wait_fd(self, timeout: float | None) -> bool:
        """Wait until this end's descriptor is readable (True) or ``timeout`` passes.

        Raises:
            OSError: another thread closed this end meanwhile (the wait ends at
                once): its number may be another file's already, whose readiness
                means nothing here, and which a receive must not read.
        """
        try:
            if self._closable_elsewhere:
                ready = bool(wait_readable((self._fd,), timeout, (self,)))
            else:  # (no close to watch for: see _keep_in_thread, _shut_down_at_close)
                ready = fd_readable_within(self._fd, timeout)
        except OSError:
            if self._closed:
                self._raise_closed()
            raise
        if self._closed:
            self._raise_closed()
        return ready

    def _keep_partial(self, body: bytearray, have: int) -> None:
        """An ``arecv()`` was cancelled after ``have`` bytes of a plain frame's ``body``:
        the next receive (awaited or not) finishes that message, so nothing is lost and
        the stream stays in step. Only socket connections gather bodies that way."""
        self._partial = (body, have)
        self._can_recv = False

    def _take_partial(self, maxlength: int | None) -> tuple[bytearray, int]:
        """The kept partial message's body and how much of it arrived, taken off the
        connection, which may receive again (the caller receives the rest first).

        Raises:
            ProtocolError: it is longer than ``maxlength`` (the connection is broken,
                as for any message refused that way).
        """
        partial = self._partial
        assert partial is not None  # the callers checked
        self._partial = None
        body, have = partial
        if maxlength is not None and len(body) > maxlength:
            raise self._protocol_error(
                f"the message is {len(body)} bytes long, more than maxlength={maxlength}"
            )
        self._can_recv = self._readable and self._broken is None and not self._closed
        return body, have

    def _finish_partial(self, maxlength: int | None) -> bytearray:
        """Receive the rest of the kept partial message (blocking) and return its body.

        Raises:
            EOFError: the sender died before sending all of it.
            ProtocolError: it is longer than ``maxlength``.
        """
        body, have = self._take_partial(maxlength)
        self._fill(memoryview(body), have, True)  # breaks the connection if interrupted
        return body

    def _prepare_recv(self, timeout: float | None) -> None:
        """What a receive does first when it cannot go straight to the bytes."""
        self._check_readable()
        if self._greeting is not None:
            timeout = self._take_greeting(timeout)
        if timeout is not None:
            self._wait_readable(timeout)

    def _take_greeting(self, timeout: float | None) -> float | None:
        """A keyless ``Client``'s first receive: the listener's greeting first.

        Returns:
            What is left of ``timeout``.

        Raises:
            ProcessTimeoutError: the listener has not accepted within ``timeout``
                (nothing was read: the next receive waits again).
            AuthenticationError: the listener requires an authkey (this end can
                no longer receive).
            EOFError: the listener closed the connection without accepting it.
        """
        check = self._greeting
        assert check is not None  # the callers checked
        deadline = (
            None if timeout is None else time.monotonic() + max(0.0, check_timeout(timeout) or 0.0)
        )
        self._greeting = None
        try:
            check(self, deadline)
        except _lazy_errors.if_loaded("ProcessTimeoutError"):
            self._greeting = check
            raise
        self._can_recv = self._readable and self._broken is None and not self._closed
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _wait_readable(self, timeout: float) -> None:
        if not self.poll(timeout):  # (raises if another thread closed this end meanwhile)
            raise _lazy_errors.ProcessTimeoutError(
                f"no message arrived on {self!r} within {timeout} s; the sender is alive "
                "but has not sent (pass a longer timeout, or timeout=None to wait forever)"
            )
