"""How a connection end receives a frame: read-ahead, header checks, side messages.

The reader never trusts what it is told: a header's tag is checked before its
length is used, a length above ``maxlength`` or this machine's physical memory
is refused, and bodies larger than ``PREALLOCATE_LIMIT`` are received into a
buffer that grows only as bytes arrive, so a lying header cannot make proctor
allocate what it claims::

    pipe          ──▶ the end's buffer, exactly one frame (its first PIPE_PREFIX
                        bytes in one read, the rest of a longer body in a second)
    (or a socket) ──▶ read-ahead buffer (64 KiB, reused: usually a whole small
                        frame in one system call)
                      header: tag, length <= limits
                        "PR":  body from the read-ahead buffer, then the channel
                        other tags: the frame id (same atomic write), then
    datagram socket ─ ─▶  "PD": datagrams up to the one with that id, never
                          waiting (it was sent before its header); others are
                          stashed by id until their headers come
    stream socket ══▶     "PS" "PF" "PM" "PG" "PH" "PI": the side message, [id |
                          fds | flags] body [id] in one recvmsg_into, both ids
                          checked; memfds mapped (large buffers), or the body read
                          from one; "PH" "PI": the pickle unpickled with the
                          descriptors that came with it (_core._reduction.receiving)

A ``Listener``/``Client`` connection over ``AF_UNIX`` reads its socket with
``recvmsg``, because a message with descriptors ("PU") may begin anywhere in what
one read brings: the descriptors that come are kept in order (``FdInbox``) until
their frame's header is parsed.

On the stream socket, another frame's id in a side message means that its
sender died in the middle of a message on an end other live processes send on:
``ProtocolError``, never somebody else's bytes. End-of-file mid-message is
``EOFError``: a dead process's pipes and sockets are closed by the kernel, so a
reader is never stuck on a dead sender, even mid-message after a SIGKILL. A
datagram whose header never comes (its sender died between the two, or timed
out) waits in the stash, undelivered, until the connection is closed.
"""

from __future__ import annotations

import _pickle
import _socket as socket  # (not socket.py: with enum and selectors, ms of a spawned start)
import _thread
import os

from .._core import _lazy_errors
from .._core._closing import close_all_quietly
from .._core._reduction import receiving
from .._core._timeout import wait_readable
from .._core._wakeup import inherited_threads as _inherited_threads
from .._core._wire import MAX_FDS, cloexec_flag, fds_from, map_memfd
from ._end import EndState
from ._frames import (
    BODY_IN_FD,
    DATAGRAM_BODY_LIMIT,
    DATAGRAM_SIZE,
    FDS_INLINE,
    FRAME_ID,
    HEADER,
    HEADER_SIZE,
    ID_SIZE,
    IN_DATAGRAM,
    LENGTH_MASK,
    ON_CHANNEL,
    ON_SOCKET,
    ON_SOCKET_FD,
    PIPE_INLINE,
    PIPE_PREFIX,
    SIDE,
    SIDE_TAGS,
    TAG,
    TAG_BITS,
    TAG_DGRAM,
    TAG_FDS_INLINE,
    TAG_SHIFT,
    TOKEN_SIZE,
    TRAILER,
    WITH_HANDLES,
    WITH_HANDLES_FD,
    WITH_MEMFDS,
    WITH_MEMFDS_FD,
    format_size,
    in_band,
    memory_limit,
    parts_after,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from typing import Any

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._core._spares import Spares

__all__ = (
    "READ_AHEAD",
    "SPIN_BACKOFF_LIMIT",
    "SPIN_NS",
    "FrameReceiver",
    "can_spin",
    "longer_backoff",
    "look_length",
)

# _core._native's looks before a read sleeps (spin_recv_into, spin_until_readable),
# and its receives into a new bytes object (recv_bytes(): read_rest_as_bytes,
# recv_datagram_as_bytes); None until can_spin() looked, False where the C module
# is not built.
_spin_recv_into: Any = None
_spin_until_readable: Any = None
_read_rest_as_bytes: Any = None
_recv_datagram_as_bytes: Any = None


def can_spin() -> bool:
    """Whether a receiver can look for its message before it sleeps (the C module is
    built: its receives into bytes are loaded too)."""
    global _spin_recv_into, _spin_until_readable, _read_rest_as_bytes, _recv_datagram_as_bytes
    if _spin_recv_into is None:
        from .._core import _system

        native = _system.core_native()
        if native is None:
            _spin_recv_into = _spin_until_readable = False
            _read_rest_as_bytes = _recv_datagram_as_bytes = False
        else:
            _spin_recv_into = native.spin_recv_into
            _spin_until_readable = native.spin_until_readable
            _read_rest_as_bytes = native.read_rest_as_bytes
            _recv_datagram_as_bytes = native.recv_datagram_as_bytes
    return _spin_recv_into is not False


# One recv() of this size usually brings a small frame's header and body at once.
READ_AHEAD = 64 * 1024
# Bodies up to this size are received into a buffer of the announced size (cheap:
# untouched pages cost nothing); larger ones into a buffer that grows as bytes
# arrive, so a corrupt header cannot make us allocate what it claims.
PREALLOCATE_LIMIT = 64 * 1024 * 1024
# recv_bytes() of a side body up to this size reads it with its header and trailer
# in one system call, then copies it into bytes; larger ones are received straight
# into the bytes object, at the cost of two more calls.
COPY_LIMIT = 128 * 1024
# Chunk size when receiving a body larger than PREALLOCATE_LIMIT.
GROW_CHUNK = 16 * 1024 * 1024
# Chunk size when reading a refused body off the stream socket, to drop it.
DROP_CHUNK = 1024 * 1024
# A drop of a refused body waits this long for its next bytes, then leaves the rest.
DROP_STALL = 1.0
#: How long a receiver looks for its next message before it sleeps
#: (``_read_spinning``, ``_looked_until_readable``). A look that finds the message
#: saves two wake-ups a round trip (on two cores of the reference VM a process
#: woken from a sleep runs 10-15 us after the send that woke it, and one woken
#: late misses the peer's look in turn), so it should outlast the peer's work
#: between a message and its answer: a manager's serving thread takes 20-50 us in
#: Python to dispatch a call (`ns.x` the longest). 30 us caught only the fastest
#: calls, and some runs of `d[k] = v` but not others; 80 us leaves a margin for
#: a busier machine (37th session, docs/design.md, "A receiver looks before it
#: sleeps"). A look that finds nothing backs off (``SPIN_BACKOFF_LIMIT``).
SPIN_NS = 80_000
#: After a look that found nothing, the receives that skip looking double, up to
#: this many: a peer that answers slowly, or that shares this process's CPU (it
#: cannot send while we look), costs a look per this many receives at most.
SPIN_BACKOFF_LIMIT = 1023


def look_length(timeout: float | None) -> int:
    """How long (ns) a wait with ``timeout`` (seconds; None: for ever) may look before
    it sleeps: ``SPIN_NS``, or the timeout where that is shorter (``Connection.poll``,
    ``connection.wait()``)."""
    if timeout is not None and timeout * 1e9 < SPIN_NS:
        return int(timeout * 1e9)
    return SPIN_NS


def longer_backoff(backoff: int) -> int:
    """After a look that did not pay, with ``backoff`` skipped after the last such look:
    how many looks to skip now (twice as many and one, up to ``SPIN_BACKOFF_LIMIT``).
    An end's receives count them (``FrameReceiver._look_less``), and so do the
    process's ``connection.wait()`` calls (``_wait._look``)."""
    return min(2 * backoff + 1, SPIN_BACKOFF_LIMIT)


# Plain ints: these flags are enums, and or-ing enums costs microseconds per call.
_MSG_WAITALL = int(getattr(socket, "MSG_WAITALL", 0))
_MSG_CTRUNC = int(getattr(socket, "MSG_CTRUNC", 0))
_MSG_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0))
# Room for the most descriptors one message can bring.
_ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * 4)
_RECV_CLOEXEC = cloexec_flag()

_thread_count = _thread._count
_loads = _pickle.loads  # (pickle's; pickle.py would import re)
_unpack_from = HEADER.unpack_from
_id_unpack_from = FRAME_ID.unpack_from


class FrameReceiver(EndState):
    """The receiving half of a ``Connection``: frames from its pipe, side socket or socket."""

    __slots__ = ()

    def _break(self, reason: str | BaseException) -> None:
        self._broken = reason
        self._can_recv = False

    def _protocol_error(self, reason: str) -> _lazy_errors.ProtocolError:
        self._break(reason)
        return _lazy_errors.ProtocolError(
            f"{reason}. The connection can no longer receive: close it and open a new one."
        )

    def _read_ahead(self) -> None:
        """Pipe(): read the next frame into the buffer (big bodies are not on the pipe)."""
        if self._rfd >= 0 and self._rpos == self._rend:
            try:
                end = self._next_pipe_frame(self._rview)
            except ConnectionResetError as exc:  # (a frame socket whose peer left)
                raise EOFError("the other end of the connection was closed") from exc
            if not end:
                raise EOFError("the other end of the connection was closed")
            self._rpos = 0
            self._rend = end

    def _next_pipe_frame(self, view: memoryview, whole: bool = True) -> int:
        """Pipe(): read exactly the next frame off the pipe into ``view``.

        Returns:
            How many of its bytes are in ``view`` (padding left out), 0 at
            end-of-file. Unless ``whole``, an inline body longer than
            ``PIPE_INLINE`` is left after its first ``PIPE_PREFIX`` bytes, for
            the caller to read (``recv_bytes()``: ``_rest_as_bytes``).

        A proctor frame is one atomic write, so it is whole in the pipe once its
        first byte is: one read takes its first ``PIPE_PREFIX`` bytes (all of a
        side frame's padded token, all of an inline body up to ``PIPE_INLINE``
        bytes), a second the rest of a longer body. Reading no further leaves
        the next frame in the pipe for whichever process receives next, so
        processes that take turns receiving on one end (a fork child, workers
        sharing an end under a lock) each get their own messages: none twice,
        and none lost with a process that exits after taking its own. A read
        that comes short (bytes a proctor sender did not write) is returned as
        it is: the caller's parse reports them, or reads exactly what their
        header announces.

        A private channel (``_private_frames``) reads ahead instead: every frame
        that has come, up to the buffer's size, in one call.
        """
        readinto = self._readinto
        if self._private_frames:
            return readinto(view)
        skip = self._spin_skip
        others = _thread_count() > _inherited_threads[0]
        if others and self._closable_elsewhere:
            # (The wait before this read looked, or waited out a timeout:
            # Connection._wait_for_message, _prepare_recv.)
            got = readinto(view[:PIPE_PREFIX])
        elif skip == 0:
            got = self._read_spinning(view[:PIPE_PREFIX], others)
        else:
            if skip > 0:
                self._spin_skip = skip - 1
            got = readinto(view[:PIPE_PREFIX])
        if got != PIPE_PREFIX:
            return got
        n = _unpack_from(view)[0] - TAG_BITS
        if 0 <= n <= PIPE_INLINE:
            return HEADER_SIZE + n  # (its padding dropped)
        if not PIPE_INLINE < n <= self._inline_limit:
            # A side frame's token: header and id (its padding dropped); or a bad
            # tag, which the caller's parse reports.
            return TOKEN_SIZE
        if not whole:
            return PIPE_PREFIX
        return PIPE_PREFIX + readinto(view[PIPE_PREFIX : HEADER_SIZE + n])

    def _read_spinning(self, view: memoryview, others: bool) -> int:
        """The first read of a frame, looking for it ``SPIN_NS`` before sleeping.

        A frame socket's receiver. A look that finds nothing makes the next
        receives skip looking, twice as many after each such look (up to
        ``SPIN_BACKOFF_LIMIT``); one that finds a frame come while it looked
        starts again from none (a frame there at once says nothing either way).
        Two processes taking turns on two cores then hand a message over within
        a look instead of a wake-up each way, and a peer on the same CPU, or one
        that takes its time, costs almost nothing. Where ``others`` (threads
        run beside this one) the look lets the GIL go, which it would keep from
        them for its length.
        """
        got = _spin_recv_into(self._rfd, view, SPIN_NS, others)
        if got >= 0:
            return got  # (it was there: says nothing of looking)
        if got < -1:
            self._spin_backoff = 0  # (it came while we looked)
            return -2 - got
        self._look_less()
        return self._readinto(view)

    def _look_before_read(self) -> None:
        """A socket connection's look for its next message before a read that could sleep.

        As ``_read_spinning``, but reading nothing (the read that follows takes
        descriptors too, with ``recvmsg``), and only while ``_spin_skip`` is not
        negative. A message there at the first look cost a ``poll()`` more for
        nothing: it counts as a look not needed, as one that found nothing does.
        """
        others = _thread_count() > _inherited_threads[0]
        if others and self._closable_elsewhere:
            return  # (the wait before looked: _wait_for_message; or _prepare_recv waited)
        self._looked_until_readable(others)

    def _looked_until_readable(self, without_gil: bool, look_ns: int | None = None) -> bool:
        """Whether this end's next message came within a look of ``SPIN_NS`` (or of
        ``look_ns``, when given: ``Connection.poll``'s timeout may be shorter), the
        GIL let go where ``without_gil`` (held, it would stop the other threads for
        the look's length); the look of ``_look_before_read``, and of the wait that
        another thread's ``close()`` can end (``Connection._wait_for_message``, in a
        process with other threads: the read that follows does not look again; an
        end that no other thread closes, ``_keep_in_thread``, skips that wait, and
        its read looks).

        The same back-off as ``_read_spinning``'s (a negative ``_spin_skip``: this
        end never looks).
        """
        skip = self._spin_skip
        if skip:
            if skip > 0:
                self._spin_skip = skip - 1
            return False
        seen = _spin_until_readable(self._fd, SPIN_NS if look_ns is None else look_ns, without_gil)
        if seen == 2:
            self._spin_backoff = 0  # (it came while we looked)
            return True
        self._look_less()
        return seen == 1

    def _look_less(self) -> None:
        """After a look that did not pay: the next receives skip looking, twice as
        many as after the last such look (up to ``SPIN_BACKOFF_LIMIT``)."""
        self._spin_skip = self._spin_backoff = longer_backoff(self._spin_backoff)

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
            The body's length; where it is: ``ON_CHANNEL``, ``ON_SOCKET`` (the
            side socket), or ``WITH_MEMFDS`` (the side socket, with memfds); and
            for the last two the frame's id (else 0).
        """
        self._read_ahead()  # (a Pipe() end: the whole frame, or EOFError)
        pending = self._take_pending()
        if pending is not None and len(pending) >= HEADER_SIZE:
            header = pending[:HEADER_SIZE]
            rest = pending[HEADER_SIZE:]
            self._untake(rest)
            (word,) = _unpack_from(header)
        else:
            (word,) = _unpack_from(self._recv_exact_small(HEADER_SIZE, pending))
        tag = word >> TAG_SHIFT
        if tag == TAG:
            where = ON_CHANNEL
        elif tag in SIDE_TAGS and self._rfd >= 0 and (tag != TAG_DGRAM or self._dsock):
            where = SIDE_TAGS[tag]
        elif tag == TAG_FDS_INLINE and self._fd_inbox is not None:
            where = FDS_INLINE  # the "frame id" read next is the count of descriptors
        else:
            if self._closed:  # (by another thread, after this receive read the header)
                raise self._closed_error()
            raise self._protocol_error(
                f"received a frame header with a bad tag (0x{word:016x}): the bytes on "
                "the wire were not written by a proctor Connection, or the stream is "
                "out of step"
            )
        frame_id = 0
        if where != ON_CHANNEL:
            # The id follows in the same atomic write: read it before anything can fail.
            pending = self._take_pending()
            if pending is not None and len(pending) >= FRAME_ID.size:
                (frame_id,) = FRAME_ID.unpack_from(pending)
                self._untake(pending[FRAME_ID.size :])
            else:
                (frame_id,) = FRAME_ID.unpack(self._recv_exact_small(FRAME_ID.size, pending))
        n = word & LENGTH_MASK
        if maxlength is not None and n > maxlength:
            # (Made first, which breaks the end: an interruption of what follows
            # leaves it broken all the same.)
            refusal = self._protocol_error(
                f"the next message is {n} bytes long, more than maxlength={maxlength}"
            )
            if where == IN_DATAGRAM:
                # Drop its datagram (64 KiB at most), which the next receiver on this
                # end (another process taking turns) would otherwise meet and keep.
                # One that is not there changes nothing: the refusal is the error.
                try:
                    self._take_datagram(frame_id)
                except OSError:  # (ProtocolError: not there; the end is broken anyway)
                    pass
            elif where != ON_CHANNEL and where != FDS_INLINE and n <= memory_limit():
                # Likewise its side message on the stream socket, which the next
                # process to receive a large message on this end would meet first.
                self._drop_side_message(n, where, frame_id)
            raise refusal
        if n > memory_limit():
            raise self._protocol_error(
                f"a frame header announces {format_size(n)}, more than this machine's "
                f"{format_size(memory_limit())} of memory: the stream is corrupt"
            )
        return n, where, frame_id

    def _read_frame(self, maxlength: int | None, want_bytes: bool) -> bytes | bytearray:
        n, where, frame_id = self._read_header(maxlength)
        if where == ON_CHANNEL:
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
        if self._closed:  # (by another thread, after the frame's header was read)
            raise self._closed_error()
        if where == IN_DATAGRAM:
            return self._datagram_frame(n, frame_id, as_bytes)
        if where == FDS_INLINE:
            fds = self._take_inbox(frame_id)
            try:
                body = self._read_body(n, False, False)
            except BaseException:
                close_all_quietly(fds)
                raise
            return self._load_with_fds(body, fds, as_bytes)
        if where == ON_SOCKET and (n <= COPY_LIMIT or (not as_bytes and n <= PREALLOCATE_LIMIT)):
            # The common case: side header, body and trailer in one system call.
            body, _fds = self._recv_side_at_once(n, frame_id, where)
            if as_bytes:
                return bytes(body)
            return _loads(body)
        if where == WITH_MEMFDS and n <= PREALLOCATE_LIMIT:
            body, fds = self._recv_side_at_once(n, frame_id, where)
            obj = _loads(body, buffers=_map_all(fds, self._spares_now()))
            return in_band(obj) if as_bytes else obj
        if where == WITH_HANDLES and n <= PREALLOCATE_LIMIT:
            body, fds = self._recv_side_at_once(n, frame_id, where)
            return self._load_with_fds(body, fds, as_bytes)
        fds = self._take_side(frame_id, where)
        if where == ON_SOCKET:
            body = self._read_body(n, as_bytes, True)
            self._check_trailer(frame_id)
            return body if as_bytes else _loads(body)
        if where in (WITH_MEMFDS, WITH_HANDLES):
            try:
                body = self._read_body(n, True, True)
                self._check_trailer(frame_id)
            except BaseException:
                close_all_quietly(fds)
                raise
            if where == WITH_HANDLES:
                return self._load_with_fds(body, fds, as_bytes)
            obj = _loads(body, buffers=_map_all(fds, self._spares_now()))
            return in_band(obj) if as_bytes else obj
        # The body is in the first memfd (a send with a timeout).
        handles: list[int] = []
        if where == WITH_HANDLES_FD:
            fds, handles = fds[:1], fds[1:]
        try:
            size = os.fstat(fds[0]).st_size
            if size != n:
                raise self._protocol_error(
                    f"a message's memfd holds {size} bytes, its header says {n}"
                )
            if where == ON_SOCKET_FD and as_bytes:
                return _read_whole(fds[0], n)
            body = map_memfd(fds[0])
            buffers = [map_memfd(fd) for fd in fds[1:]]
        except BaseException:
            close_all_quietly(handles)
            raise
        finally:
            close_all_quietly(fds)
        if where == WITH_HANDLES_FD:
            return self._load_with_fds(body, handles, as_bytes)
        obj = _loads(body, buffers=buffers)
        return in_band(obj) if as_bytes and where == WITH_MEMFDS_FD else obj

    def _load_with_fds(self, body: Any, fds: list[int], as_bytes: bool) -> Any:
        """Unpickle ``body``, whose objects take ``fds`` (the rest are closed)."""
        if as_bytes:
            close_all_quietly(fds)
            raise ValueError(
                f"the message received carries {len(fds)} file descriptor(s): it was sent "
                "with send() of an object that owns descriptors (a Connection, a socket, "
                "a DupFd), and recv_bytes() cannot return them. Receive it with recv(). "
                "The message was consumed and its descriptors closed."
            )
        with receiving(fds):
            return _loads(body)

    def _take_inbox(self, count: int) -> list[int]:
        """The ``count`` descriptors of the "PU" frame whose header was just read."""
        inbox = self._fd_inbox
        assert inbox is not None  # only connections with one parse "PU" frames
        if inbox.lost:
            raise self._fds_cut_short()
        if count > len(inbox.fds):
            raise self._protocol_error(
                f"a message announced {count} descriptors and brought {len(inbox.fds)}"
            )
        fds = inbox.fds[:count]
        del inbox.fds[:count]
        return fds

    def _datagram_frame(self, n: int, frame_id: int, as_bytes: bool) -> Any:
        """Receive the rest of a frame whose ``n``-byte body is a datagram."""
        body = self._take_datagram(frame_id, n if as_bytes else -1)
        if len(body) != n:
            raise self._datagram_size_error(len(body), n)
        if not as_bytes:
            return _loads(body)  # (a view of the datagram buffer, good until the next datagram)
        return body if type(body) is bytes else bytes(body)

    def _rest_as_bytes(self, start: int, n: int) -> bytes:
        """The ``n``-byte body of the frame whose start is in the buffer from ``start``
        on (``recv_bytes()``, which consumed it): those bytes, then the rest read
        from the channel straight into the bytes object returned (C:
        ``read_rest_as_bytes``)."""
        if self._closed:  # (by another thread, between the two reads)
            raise self._closed_error()
        head = self._rview[start : self._rend]
        fd = self._rfd
        try:
            body: bytes = _read_rest_as_bytes(fd, head, n, self._fsock is not None)
        except BaseException:
            self._break("a receive was interrupted in the middle of a message")
            raise
        if len(body) != n:  # (end of file, or the peer reset the connection: its process died)
            self._eof_mid_message(len(body), n)
        return body

    def _datagram_size_error(self, size: int, n: int) -> _lazy_errors.ProtocolError:
        return self._protocol_error(f"a message's datagram holds {size} bytes, its header says {n}")

    def _take_datagram(self, frame_id: int, bytes_of: int = -1) -> memoryview | bytes:
        """The body of the datagram of frame ``frame_id``.

        The datagram was sent before its frame's header, so it is here: in the
        stash, where datagrams of frames whose headers are further on wait, or
        on the socket, behind such datagrams, which are stashed on the way.
        Never waits. The body returned is a view of the receive buffer (or of a
        stashed datagram): use it before the next datagram is received. With
        ``bytes_of`` (the length the frame's header announced; ``recv_bytes()``)
        and the C module built, it is a new bytes object instead, received into
        straight from the socket (``recv_datagram_as_bytes``): no copy out.
        """
        if self._closed:  # (by another thread, after the frame's header was read)
            raise self._closed_error()
        stash = self._stash
        if stash is not None and frame_id in stash:
            data = stash.pop(frame_id)
            if not stash:
                self._stash = None
            return memoryview(data)[ID_SIZE:]
        view = self._dview
        if view is None:
            self._dbuf = bytearray(DATAGRAM_SIZE)
            view = self._dview = memoryview(self._dbuf)
        dsock: Any = self._dsock  # (checked with the tag)
        # (Only up to the longest datagram: a header claiming more is a lie, which the
        # caller reports, and must not make us allocate what it claims.)
        as_bytes = _recv_datagram_as_bytes if 0 <= bytes_of <= DATAGRAM_BODY_LIMIT else None
        fd = dsock.fileno() if as_bytes else -1
        while True:
            body: memoryview | bytes
            try:
                if as_bytes:
                    got_id, body = as_bytes(fd, bytes_of, view)
                else:
                    got = dsock.recv_into(view, 0, _MSG_DONTWAIT)
                    got_id = _id_unpack_from(view)[0] if got >= ID_SIZE else -1
                    body = view[ID_SIZE:got]
            except (BlockingIOError, ConnectionResetError):
                got_id = -1
            except BaseException:
                self._break("a receive was interrupted in the middle of a message")
                raise
            if got_id < 0:
                raise self._protocol_error(
                    "a frame header announced a datagram that is not there: the bytes "
                    "on the wire were not written by a proctor Connection"
                )
            if got_id == frame_id:
                return body
            # Another sender's: its header is further on in the pipe.
            if self._stash is None:
                self._stash = {}
            self._stash[got_id] = FRAME_ID.pack(got_id) + body

    def _recv_side_at_once(self, n: int, frame_id: int, where: int) -> tuple[bytearray, list[int]]:
        """Receive an inline side message (header, ``n``-byte body, trailer); check it.

        Returns the body and the descriptors that came with it (the caller owns them).
        """
        side = bytearray(SIDE.size)
        body = bytearray(n)
        trailer = bytearray(TRAILER.size)
        total = SIDE.size + n + TRAILER.size
        fds: list[int] = []
        try:
            try:
                got, ancdata, flags, _addr = self._sock.recvmsg_into(
                    [side, body, trailer], _ANCILLARY_SPACE, _MSG_WAITALL | _RECV_CLOEXEC
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
                    rest = parts_after(parts, got)
                    try:
                        more = self._sock.recv_into(rest[0], 0, _MSG_WAITALL)
                    except ConnectionResetError as exc:
                        self._eof_mid_message(got, total, exc)
                    if not more:
                        self._eof_mid_message(got, total)
                    got += more
            self._check_side(side, frame_id, where, fds)
            if TRAILER.unpack(trailer)[0] != frame_id:
                raise self._died_mid_message()
        except BaseException as exc:
            close_all_quietly(fds)
            if not isinstance(exc, _lazy_errors.if_loaded(EOFError, "ProtocolError")):
                self._break("a receive was interrupted in the middle of a message")
            raise
        return body, fds

    def _check_side(self, side: Any, frame_id: int, where: int, fds: list[int]) -> None:
        got_id, count, flags = SIDE.unpack(side)
        if got_id != frame_id:
            raise self._died_mid_message()
        if count != len(fds):
            raise self._protocol_error(f"a message announced {count} memfds and brought {len(fds)}")
        in_fd = where in (ON_SOCKET_FD, WITH_MEMFDS_FD, WITH_HANDLES_FD)
        wrong_fds = not fds if in_fd else (where == ON_SOCKET and fds)
        if bool(flags & BODY_IN_FD) != in_fd or wrong_fds:
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
            while len(head) < SIDE.size:
                try:
                    chunk, ancdata, flags, _addr = self._sock.recvmsg(
                        SIDE.size - len(head), _ANCILLARY_SPACE, _RECV_CLOEXEC
                    )
                except ConnectionResetError as exc:
                    self._eof_mid_message(len(head), SIDE.size, exc)
                fds.extend(fds_from(ancdata))
                if not chunk:
                    self._eof_mid_message(len(head), SIDE.size)
                if flags & _MSG_CTRUNC:
                    raise self._fds_cut_short()
                head += chunk
            self._check_side(head, frame_id, where, fds)
        except BaseException as exc:
            close_all_quietly(fds)
            if not isinstance(exc, _lazy_errors.if_loaded(EOFError, "ProtocolError")):
                self._break("a receive was interrupted in the middle of a message")
            raise
        return fds

    def _drop_side_message(self, n: int, where: int, frame_id: int) -> None:
        """Take the side message of a refused frame off the stream socket, unread.

        Its descriptors are closed and its ``n``-byte body (where it is inline)
        read into a scratch buffer and dropped, as its sender writes it. Never
        raises an ``OSError`` and never waits long: a wait of ``DROP_STALL`` for
        the next bytes (a sender stopped, or killed while another process holds
        its end, where no end of file comes), end of file or another frame's
        message (a sender that died mid-message) leave the rest where it is, as
        before there was a drop; the end is broken already.
        """
        sock = self._sock
        fd = sock.fileno()
        try:
            # The side message's head comes with its descriptors, in one write.
            if not wait_readable(fd, DROP_STALL):
                return
            head, ancdata, _flags, _addr = sock.recvmsg(
                SIDE.size, _ANCILLARY_SPACE, _RECV_CLOEXEC | _MSG_DONTWAIT
            )
            close_all_quietly(fds_from(ancdata))
            if len(head) < SIDE.size or SIDE.unpack(head)[0] != frame_id:
                return
            if where in (ON_SOCKET_FD, WITH_MEMFDS_FD, WITH_HANDLES_FD):
                return  # (the body was in the first memfd, closed with the others)
            left = n + TRAILER.size
            scratch = memoryview(bytearray(min(left, DROP_CHUNK)))
            while left:
                try:
                    got = sock.recv_into(scratch[: min(left, DROP_CHUNK)], 0, _MSG_DONTWAIT)
                except BlockingIOError:
                    if not wait_readable(fd, DROP_STALL):
                        return
                    continue
                if not got:
                    return
                left -= got
        except OSError:
            return

    def _fds_cut_short(self) -> _lazy_errors.ProtocolError:
        return self._protocol_error(
            "the descriptors of a message were cut short: this process may be out "
            "of file descriptors (raise `ulimit -n`)"
        )

    def _died_mid_message(self) -> _lazy_errors.ProtocolError:
        return self._protocol_error(
            "the sender of a message died in the middle of it, and another process "
            "sending on the same end went on: the rest of that message never came, "
            "and what follows is out of step"
        )

    def _check_trailer(self, frame_id: int) -> None:
        """After an inline side body: the frame id again, or the body was cut short."""
        try:
            trailer = self._recv(TRAILER.size, _MSG_WAITALL)
        except ConnectionResetError as exc:
            self._eof_mid_message(0, TRAILER.size, exc)
        except BaseException:
            self._break("a receive was interrupted in the middle of a message")
            raise
        if len(trailer) < TRAILER.size:
            self._eof_mid_message(len(trailer), TRAILER.size)
        if TRAILER.unpack(trailer)[0] != frame_id:
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
        elif want_bytes and direct and n <= PREALLOCATE_LIMIT:
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
        if n <= PREALLOCATE_LIMIT:
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
        chunk = bytearray(min(GROW_CHUNK, n - len(out)))
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


def _map_all(fds: list[int], spares: Spares | None = None) -> list[Any]:
    """Map each memfd (closing every descriptor, mapped or not).

    With ``spares``, a buffer of a reusable size is a view of a mapping they
    keep, and its memfd goes back to the sender once the view dies.
    """
    left = list(fds)
    try:
        if spares is None:
            return [map_memfd(fd) for fd in fds]
        buffers = []
        for index, fd in enumerate(fds):
            view = spares.view(fd)  # (takes fd when it gives a view)
            if view is None:
                view = map_memfd(fd)
            else:
                left[index] = -1
            buffers.append(view)
        return buffers
    finally:
        # Mapped or not: a mapping keeps its own reference.
        close_all_quietly([fd for fd in left if fd >= 0])


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
