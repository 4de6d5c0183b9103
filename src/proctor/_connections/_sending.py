"""How a connection end sends a frame: the pipe, the datagram socket, the stream socket.

A ``Pipe()`` end writes every frame's header on its frame channel ("pipe"
below): a stream socket pair on Linux, whose sleeping sender is woken as soon
as its message is taken (faster round trips on idle cores), elsewhere a pipe
per direction, which wakes its reader in about half the time a Unix socket
does on one core; one channel keeps every message in order. Where the body
goes depends on its size; the rule throughout is that a message is whole at
the reader even when many threads and processes send on one end at once::

    send(obj, timeout=None)                          (the receiver: see _receiving)
      small (header + body <= PIPE_BUF; on a frame socket <= 32 KiB):
        write(pipe, "PR" header + body)        ──▶  pipe        atomic (POSIX; one buffer
                                                                  on Linux's socket), no lock
      mid-size (<= DATAGRAM_BODY_LIMIT, 64 KiB):
        sendmsg(datagram: [id] body)           ─ ─▶ datagram    atomic (SOCK_SEQPACKET),
        write(pipe, "PD" header + id)          ──▶  pipe          no lock
      big, or with memfds:
        send lock
        sendmsg(stream: side message, as much  ═══▶ stream      many writes on two
          as fits now: [id|fds|flags] body [id])                  channels: under the
        write(pipe, "PS"/"PF" header + id)     ──▶  pipe          end's send lock
        sendall(stream: the rest of it)        ═══▶ stream        (_sendlock)
        unlock

Mid-size: the datagram goes first, then its header. When the reader sees the
header the datagram is there, so the reader never waits on the datagram socket
(a sender that dies in between cannot make it hang); datagrams of concurrent
senders may overtake each other's headers, and the reader matches them by id.
A sender that dies, or times out, between the two writes leaves a datagram no
header claims: it is never delivered.

Why datagrams for mid-size bodies, measured on the 2-core Linux VM (16 KiB round
trips between two processes on one core, raw system calls, no Python framing):
one pipe write 12-13 us; a datagram plus a header on the pipe 20-22 us; a
stream socket read twice, as ``multiprocessing`` does, 19 us. The send lock
alone costs 4-5 us a message (two ``fcntl`` record-lock calls): under it a
16 KiB message ran at 0.55-0.67x ``multiprocessing``. One pipe write per
message would be fastest, but a write of more than ``PIPE_BUF`` bytes may be
split when the pipe is full, and a small frame, sent with no lock, would then
land inside it: every send, small ones included, would need the lock. Splitting
bodies into self-describing page-sized pieces avoids the lock, but costs ~7 us
a message in Python. A datagram is atomic by definition, needs no lock, and
with its header on the pipe keeps the pipe's fast wake-up. What it costs against
``multiprocessing``'s one stream ``send`` is in the kernel, not in Python: per 16 KiB
message proctor runs fewer user-space instructions (one copy of the body, not two), but
a datagram's ``sendmsg`` + ``recv_into`` costs ~1 us more than a stream socket's, and the
header's pipe ``write`` + ``read`` ~1.2 us (docs/connection.md, "Where a 16 KiB message's
time goes"). Where ``AF_UNIX`` has no ``SOCK_SEQPACKET`` (macOS), mid-size bodies
take the stream socket, as big ones.
Big bodies stay on the stream socket: it moves them faster (one ``MSG_WAITALL``
read straight into the bytes returned), and its buffer bounds what a slow
reader lets a sender queue.

``Listener`` and ``Client`` connections use one socket for everything (tag
``"PR"``), every message under the send lock.

Timeouts: a pipe's write end is non-blocking (``O_NONBLOCK``), so an atomic
write either goes whole or not at all, and a sender waits for room with
``poll``; so does a datagram send (``MSG_DONTWAIT``). A big send with a timeout
puts its body in a memfd, waits (within the deadline) until the stream socket
has room for the small message that carries it, and only then writes the
header. So on a ``Pipe()`` end a send that times out has sent nothing the
reader will see, and the connection stays usable. On a socket connection part
of a message may have gone out; then the end refuses further sends.

Never killed: socket writes use ``MSG_NOSIGNAL``; pipe writes rely on Python
ignoring SIGPIPE and block it around the write where something restored the
default (on macOS ``F_SETNOSIGPIPE`` switches it off per pipe).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # C module without stubs
import _socket as socket  # (not socket.py: with enum and selectors, ms of a spawned start)
import array
import errno
import os
import select
import sys
import time

from .._core import _lazy_errors
from .._core._timeout import check_timeout
from .._core._wire import memfd_with
from . import _sendlock
from ._end import EndState
from ._frames import (
    BODY_IN_FD,
    FRAME_ID,
    HEADER,
    HEADER_SIZE,
    PIPE_INLINE,
    PIPE_PADDING,
    PIPE_TOKEN,
    PRIVATE_TOKEN,
    SIDE,
    TAG_BITS,
    TAG_DGRAM_BITS,
    TAG_FDS_INLINE_BITS,
    TAG_HANDLES_BITS,
    TAG_HANDLES_FD_BITS,
    TAG_MEMFD_BITS,
    TAG_MEMFD_FD_BITS,
    TAG_SOCKET_BITS,
    TAG_SOCKET_FD_BITS,
    TRAILER,
    parts_after,
)
from ._sendlock import wait_writable

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from collections.abc import Iterable
    from pickle import PickleBuffer
    from typing import Any

__all__ = (
    "ATOMIC_BODY",
    "F_SETNOSIGPIPE",
    "MSG_NOSIGNAL",
    "SOCKET_INLINE_BODY",
    "FrameSender",
    "send_deadline",
)

# A write of at most this many bytes to a pipe is atomic (POSIX): concurrent
# senders cannot split it. Pipe() frames up to this size go in one write and need
# no lock; bodies past ATOMIC_BODY go out as a datagram, or on the stream socket.
_PIPE_ATOMIC = getattr(select, "PIPE_BUF", 512)
ATOMIC_BODY = _PIPE_ATOMIC - HEADER_SIZE
# On a frame socket (Linux) a send of up to SKB_MAX_HEAD + 32 KiB (UNIX_SKB_FRAGS_SZ,
# since Linux 3.13) is queued as one buffer, whole or not at all, when the send
# buffer is over twice that (connections ask for 1 MiB): frames up to 32 KiB go
# there in one send, with no lock and no datagram. One send instead of a datagram
# plus a header: a 16 KiB round trip on one core 16.8-17.5 -> 13.5 us (the stdlib
# 14.0-14.3), on two cores 57.5-62.6 -> 62.7 us (the stdlib 68-70).
SOCKET_INLINE_BODY = 32 * 1024 - HEADER_SIZE

# Plain ints: these flags are enums, and or-ing enums costs microseconds per send.
MSG_NOSIGNAL = int(getattr(socket, "MSG_NOSIGNAL", 0))
_MSG_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0))
_SEND_NOW = MSG_NOSIGNAL | _MSG_DONTWAIT
# A datagram the kernel cannot build: too long, or no memory for it at the moment.
_NO_DATAGRAM = frozenset({errno.EMSGSIZE, errno.ENOBUFS, errno.ENOMEM})

# macOS can switch SIGPIPE off per pipe; Linux cannot (see _pipe_send_small).
F_SETNOSIGPIPE = 73 if sys.platform == "darwin" else None
_SIGPIPE: int = getattr(_signal, "SIGPIPE", 13)
# The C function: signal.getsignal wraps its answer in an enum, at a microsecond a send.
_SIG_IGN = int(_signal.SIG_IGN)
_getsignal = _signal.getsignal
_write = os.write
_pack = HEADER.pack
_id_pack = FRAME_ID.pack
# (Frame ids come from _sendlock.next_frame_id, always looked up there: forked
# children get a new one.)
# A side frame's header and frame id, in one write, padded to a whole PIPE_PREFIX;
# unpadded on a private channel.
_token_pack = PIPE_TOKEN.pack
_private_token_pack = PRIVATE_TOKEN.pack
# A timed send puts the body in a memfd: the tag that says so, for each tag.
_BODY_IN_FD_TAGS = {
    TAG_SOCKET_BITS: TAG_SOCKET_FD_BITS,
    TAG_MEMFD_BITS: TAG_MEMFD_FD_BITS,
    TAG_HANDLES_BITS: TAG_HANDLES_FD_BITS,
}


def send_deadline(timeout: Any) -> float:
    """The ``time.monotonic()`` instant a send with ``timeout`` gives up (checked)."""
    checked = check_timeout(timeout) or 0.0
    return time.monotonic() + max(0.0, checked)


def _sendall_rest(sendall: Any, parts: list[Any], sent: int) -> None:
    for part in parts_after(parts, sent):
        sendall(part, MSG_NOSIGNAL)


class FrameSender(EndState):
    """The sending half of a ``Connection``: frames onto its pipe, side socket or socket."""

    __slots__ = ()

    def _token(self, word: int, frame_id: int) -> bytes:
        """A side frame's token (header word, frame id) as this end's channel takes it."""
        if self._private_frames:
            return _private_token_pack(word, frame_id)
        return _token_pack(word, frame_id)

    def _send_frame(self, body: Any, deadline: float | None) -> None:
        """Send ``body`` (bytes-like) as one frame, the way its size and this end call for."""
        n = len(body)
        if self._wfd < 0:
            self._socket_send(memoryview(body), deadline)
        elif n <= self._inline_limit:
            frame = _pack(TAG_BITS + n) + body
            if n < PIPE_INLINE and not self._private_frames:
                # (its reader takes a frame's first PIPE_PREFIX bytes at once)
                frame += PIPE_PADDING[n]
            self._pipe_send_small(frame, deadline)
        elif n <= self._dgram_limit:
            if deadline is None:
                # _send_datagram's common case, inline: this is a hot path.
                frame_id = _sendlock.next_frame_id()
                try:
                    self._dsock.sendmsg([_id_pack(frame_id), body], (), MSG_NOSIGNAL)  # type: ignore[union-attr]
                except OSError:
                    pass  # nothing was sent: _send_datagram sorts it out
                else:
                    token = self._token(TAG_DGRAM_BITS + n, frame_id)
                    if self._fsock is None and _getsignal(_SIGPIPE) == _SIG_IGN:
                        # (as _pipe_send_small's fast path for a pipe)
                        try:
                            _write(self._wfd, token)
                            return
                        except OSError:
                            pass  # a full pipe, a dead reader: _pipe_send_small tells which
                    self._pipe_send_small(token)
                    return
            self._send_datagram(body, n, deadline)
        else:
            self._send_side(TAG_SOCKET_BITS, memoryview(body), (), deadline)

    def _send_with_buffers(
        self, body: bytes, buffers: list[PickleBuffer], deadline: float | None
    ) -> None:
        """Send a pickle whose large out-of-band buffers go as memfds (``Pipe()`` ends).

        On the stream socket: datagrams carry no descriptors, so that the reader
        can take them with a plain ``recv_into`` (cheaper than ``recvmsg``).
        """
        self._send_side(TAG_MEMFD_BITS, memoryview(body), buffers, deadline)

    def _buffer_fd(self, buffer: PickleBuffer) -> int:
        """A memfd holding a copy of ``buffer``: a spare the receiver gave back, or a new one.

        A spare is a memfd whose pages are already there and mapped here
        (``_core._spares``): writing it costs one copy, where a new memfd costs
        a page allocation and zeroing per page, about 5.5x that.
        """
        raw = buffer.raw()
        spares = self._spares_now()
        fd = spares.fill(raw) if spares is not None else None
        return memfd_with(raw, "proctor-message-buffer") if fd is None else fd

    def _send_with_handles(self, body: bytes, fds: list[int], deadline: float | None) -> None:
        """Send a pickle whose objects own ``fds``: the descriptors go with it (SCM_RIGHTS).

        On a ``Pipe()`` end, as a side message on the stream socket (never on the
        pipe or in a datagram, which cannot carry descriptors); on a socket
        connection, attached to the frame's header. The caller keeps ``fds``.
        """
        if self._wfd >= 0:
            self._send_side(TAG_HANDLES_BITS, memoryview(body), (), deadline, fds)
            return
        view = memoryview(body)
        parts: list[Any] = [_pack(TAG_FDS_INLINE_BITS | view.nbytes), _id_pack(len(fds)), view]
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        total = HEADER_SIZE + FRAME_ID.size + view.nbytes
        self._socket_send_parts(parts, total, deadline, ancillary)

    def _break_send(self) -> None:
        # Part of a frame is out and the rest never will be: anything sent now
        # would be read as the rest of that frame.
        self._broken_send = "an exception interrupted a send in the middle of a message"
        self._can_send = False
        # And the receiver, which has begun that frame, would wait for its rest for
        # ever (its timeout covers only the wait for a message to begin): end this
        # direction of the streams, so that it reads EOF after the part it has and
        # says the message was cut short. (Their other direction still carries the
        # peer's messages; nobody can send on these streams again, in any process.)
        for stream in (self._sock, self._fsock):
            shutdown = getattr(stream, "shutdown", None)  # (not an FdChannel's)
            if shutdown is not None:
                try:
                    shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # closed or never connected: nothing waits on it

    # Pipe(): frames of at most PIPE_BUF bytes (32 KiB on a frame socket), one
    # atomic write, no lock.

    def _pipe_send_small(self, data: bytes, deadline: float | None = None) -> None:
        fsock = self._fsock
        if fsock is not None:
            # The frame socket (Linux): a frame (at most 32 KiB) is one buffer,
            # queued whole or, without room, not at all (BlockingIOError);
            # MSG_NOSIGNAL: never SIGPIPE.
            try:
                # (Inline, not _frame_socket_send: a call less on the hot path.)
                sent = fsock.send(data, _SEND_NOW)
                if sent != len(data):
                    self._send_rest_of_frame(fsock, data, sent)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                self._send_failed(exc)
            self._pipe_wait_and_write(data, deadline)
            return
        # A write to a pipe whose reader is gone raises SIGPIPE, which kills the
        # process unless it is ignored. Python ignores it at start-up, so the fast
        # path is a plain write; where something restored the default (an
        # embedder, a child that wants `head`-friendly behaviour) the signal is
        # blocked around the write instead.
        if F_SETNOSIGPIPE is None and _getsignal(_SIGPIPE) != _SIG_IGN:
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

    def _frame_socket_send(self, fsock: socket.socket, data: bytes) -> None:
        """Send one frame on the frame socket without waiting (BlockingIOError: no room)."""
        sent = fsock.send(data, _SEND_NOW)
        if sent != len(data):
            self._send_rest_of_frame(fsock, data, sent)

    def _send_rest_of_frame(self, fsock: socket.socket, data: bytes, sent: int) -> None:
        """The kernel took part of a frame (never seen: Linux queues a frame this
        small whole): send the rest at once, so that a lone sender's stream stays
        in step."""
        try:
            fsock.sendall(memoryview(data)[sent:], MSG_NOSIGNAL)
        except BaseException:
            self._break_send()
            raise

    def _pipe_wait_and_write(self, data: bytes, deadline: float | None) -> None:
        """The frame channel is full: write ``data`` once the reader has made room."""
        fsock = self._fsock
        while True:
            if not wait_writable(self._wfd, deadline):
                raise self._send_timeout("the peer is not reading")
            try:
                if fsock is not None:
                    self._frame_socket_send(fsock, data)
                else:
                    _write(self._wfd, data)
                return
            except BlockingIOError:
                continue  # another sender took the room first
            except OSError as exc:
                self._send_failed(exc)

    def _pipe_send_masked(self, data: bytes, deadline: float | None) -> None:
        previous = _signal.pthread_sigmask(_signal.SIG_BLOCK, {_SIGPIPE})
        try:
            try:
                try:
                    _write(self._wfd, data)
                except BlockingIOError:
                    self._pipe_wait_and_write(data, deadline)
            except BrokenPipeError as exc:
                # The SIGPIPE this write raised is pending on this thread: take
                # it, so that unblocking does not deliver it.
                if _SIGPIPE not in previous and hasattr(_signal, "sigtimedwait"):
                    _signal.sigtimedwait([_SIGPIPE], 0)
                self._send_failed(exc)
            except OSError as exc:
                if isinstance(exc, _lazy_errors.if_loaded("ProcessTimeoutError")):
                    raise
                self._send_failed(exc)
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, previous)

    # Pipe(): a mid-size body in one datagram, no lock.

    def _send_datagram(self, body: Any, n: int, deadline: float | None) -> None:
        """Send a frame whose ``n``-byte body is one datagram: whole or nothing, no lock.

        The datagram first, then the header (see the module docstring). A
        datagram the kernel cannot build now goes on the stream socket instead.
        """
        dsock = self._dsock
        assert dsock is not None  # only ends with a datagram socket get here
        frame_id = _sendlock.next_frame_id()
        parts = [_id_pack(frame_id), body]
        try:
            if deadline is None:
                dsock.sendmsg(parts, (), MSG_NOSIGNAL)
            else:
                # Room for the header first, so that the datagram rarely goes
                # out without it (only if another sender takes that room).
                if not wait_writable(self._wfd, deadline):
                    raise self._send_timeout("the peer is not reading")
                self._send_datagram_within(dsock, parts, deadline)
        except OSError as exc:
            if isinstance(exc, _lazy_errors.if_loaded("ProcessTimeoutError")):
                raise
            if exc.errno in _NO_DATAGRAM:
                # The kernel cannot build so big a datagram now (memory too
                # fragmented, a send buffer made smaller): the stream it is.
                self._send_side(TAG_SOCKET_BITS, memoryview(body), (), deadline)
                return
            self._send_failed(exc)
        self._pipe_send_small(self._token(TAG_DGRAM_BITS + n, frame_id), deadline)

    def _send_datagram_within(
        self, dsock: socket.socket, parts: list[Any], deadline: float
    ) -> None:
        """Send one datagram by ``deadline``, or raise ProcessTimeoutError."""
        while True:
            try:
                dsock.sendmsg(parts, (), _SEND_NOW)
                return
            except BlockingIOError:
                if not wait_writable(dsock.fileno(), deadline):
                    raise self._send_timeout("the peer is not reading") from None

    # Pipe(): a body on the stream socket, under the send lock.

    def _send_side(
        self,
        tag_bits: int,
        body: memoryview,
        buffers: Iterable[PickleBuffer],
        deadline: float | None,
        handles: list[int] | tuple[()] = (),
    ) -> None:
        """Send a frame whose body (and large buffers, as memfds) go on the side socket.

        Under the send lock, so that side messages are on the socket in the order
        of their headers on the pipe. As much of the side message as the socket
        takes at once goes before the header, the rest after it: the reader then
        wakes once, to find its body there (waiting for room *before* the header
        could wait for ever on a reader that waits for the header). ``handles``
        (descriptors the caller keeps) travel after the memfds.
        """
        if deadline is not None:
            self._send_side_within(tag_bits, body, buffers, deadline, handles)
            return
        owned: list[int] = []
        try:
            for buffer in buffers:
                owned.append(self._buffer_fd(buffer))
            fds = [*owned, *handles] if handles else owned
            self._lock_send(None)
            try:
                frame_id = _sendlock.next_frame_id()
                parts: list[Any] = [
                    SIDE.pack(frame_id, len(fds), 0),
                    body,
                    TRAILER.pack(frame_id),
                ]
                total = SIDE.size + body.nbytes + TRAILER.size
                ancillary = (
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
                )
                sent = 0
                header = False
                try:
                    try:
                        sent = self._sock.sendmsg(parts, ancillary, _SEND_NOW)
                    except BlockingIOError:
                        pass
                    self._pipe_send_small(self._token(tag_bits + body.nbytes, frame_id))
                    header = True
                    if not sent:
                        sent = self._sock.sendmsg(parts, ancillary, MSG_NOSIGNAL)
                    if sent < total:
                        # The descriptors went with the first byte; a blocking
                        # stream socket takes the rest.
                        _sendall_rest(self._sendall, parts, sent)
                except OSError as exc:
                    # A failed call sent nothing; a refused first send of the
                    # side message (too many descriptors in flight, say) left
                    # the connection as it was.
                    if header or sent:
                        self._break_send()
                    self._send_failed(exc)
                except BaseException:
                    # KeyboardInterrupt and co. may come right after a send
                    # returned, before its count was kept: assume the worst.
                    self._break_send()
                    raise
            finally:
                self._unlock_send()
        finally:
            for fd in owned:
                os.close(fd)

    def _send_side_within(
        self,
        tag_bits: int,
        body: memoryview,
        buffers: Iterable[PickleBuffer],
        deadline: float,
        handles: list[int] | tuple[()] = (),
    ) -> None:
        """``_send_side`` with a deadline: the whole message or nothing of it.

        The body goes into a memfd, so that the side message is a few bytes plus
        descriptors. Under the send lock nobody else writes on the side socket,
        so once it has room (``poll``) that small message cannot block; only
        then is the header written (atomic, within the deadline), and only then
        the side message. A timeout before the header leaves nothing behind.
        """
        owned: list[int] = []
        try:
            owned.append(memfd_with(body, "proctor-message"))
            for buffer in buffers:
                owned.append(self._buffer_fd(buffer))
            fds = [*owned, *handles]
            self._lock_send(deadline)
            try:
                sock_fd = self._sock.fileno()
                if not wait_writable(sock_fd, deadline):
                    raise self._send_timeout("the peer is not reading")
                frame_id = _sendlock.next_frame_id()
                tag_bits = _BODY_IN_FD_TAGS.get(tag_bits, TAG_SOCKET_FD_BITS)
                self._pipe_send_small(self._token(tag_bits + body.nbytes, frame_id), deadline)
                side = SIDE.pack(frame_id, len(fds), BODY_IN_FD)
                ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                try:
                    sent = self._sock.sendmsg([side], ancillary, MSG_NOSIGNAL)
                    if sent < len(side):
                        self._sendall(side[sent:], MSG_NOSIGNAL)
                except OSError as exc:
                    self._break_send()
                    self._send_failed(exc)
                except BaseException:
                    self._break_send()
                    raise
            finally:
                self._unlock_send()
        finally:
            for fd in owned:
                os.close(fd)

    # Listener/Client: one socket for everything, every message under the send lock.

    def _socket_send(self, body: memoryview, deadline: float | None) -> None:
        parts: list[Any] = [_pack(TAG_BITS | body.nbytes), body]
        self._socket_send_parts(parts, HEADER_SIZE + body.nbytes, deadline)

    def _socket_send_parts(
        self, parts: list[Any], total: int, deadline: float | None, ancillary: Any = ()
    ) -> None:
        """Send one whole frame on the socket under the send lock (descriptors, if
        any, ride with its first byte); a frame cut short breaks the sending side."""
        self._lock_send(deadline)
        try:
            if deadline is not None:
                self._socket_send_within(parts, total, deadline, ancillary or None)
                return
            sent = 0
            try:
                sent = self._sock.sendmsg(parts, ancillary, MSG_NOSIGNAL)
                # A blocking stream socket sends everything unless a signal
                # interrupted it.
                if sent < total:
                    _sendall_rest(self._sendall, parts, sent)
            except OSError as exc:
                if sent:
                    self._break_send()
                self._send_failed(exc)
            except BaseException:
                if sent:  # nothing sent: the stream is still in step
                    self._break_send()
                raise
        finally:
            self._unlock_send()

    def _socket_send_within(
        self, parts: list[Any], total: int, deadline: float, ancillary: list[Any] | None = None
    ) -> None:
        sent = 0
        try:
            while sent < total:
                try:
                    # Descriptors ride with the first byte that goes.
                    extra = ancillary if ancillary and not sent else ()
                    sent += self._sock.sendmsg(parts_after(parts, sent), extra, _SEND_NOW)
                except BlockingIOError:
                    if not wait_writable(self._sock.fileno(), deadline):
                        if sent:
                            self._break_send()
                        raise self._send_timeout(
                            "the peer is not reading", sent=sent, total=total
                        ) from None
        except OSError as exc:
            if isinstance(exc, _lazy_errors.if_loaded("ProcessTimeoutError")):
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

    def _send_timeout(self, why: str, *, sent: int = 0, total: int = 0) -> OSError:
        if self._closed:
            # Another thread closed this end while the send waited: the wait
            # watched a number that may be another file's by now.
            return self._closed_error()
        if sent:
            return _lazy_errors.ProcessTimeoutError(
                f"could not send the whole message on {self!r} within its timeout ({why}): "
                f"{sent} of its {total} bytes went out, and the peer would read whatever "
                "came next as the rest, so this end can no longer send; close it"
            )
        return _lazy_errors.ProcessTimeoutError(
            f"could not send on {self!r} within its timeout ({why}); nothing of it was "
            "sent and the connection is still usable (pass a longer timeout, or "
            "timeout=None to wait forever)"
        )

    def _send_failed(self, exc: OSError) -> None:
        if self._closed:
            raise self._closed_error() from exc  # (closed by another thread meanwhile)
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
