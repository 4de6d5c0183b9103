"""A connection's awaitable twins: ``arecv``, ``arecv_bytes``, ``asend``, ``asend_bytes``.

A connection's waits are waits for a descriptor, which an event loop watches
itself (``loop.add_reader``/``add_writer``): no thread is involved::

    arecv()                                    asend(obj) on a Pipe() end
      poll(0)? ── a message (or EOF) ──▶ recv()  send(obj, timeout=0): whole, or
      │ no                                     │ nothing sent (ProcessTimeoutError)
      ▼                                        ▼
      await the frame channel readable         await the descriptor without room
      (pipe or socket), in slices that grow    (pipe, datagram or stream socket);
      from CHECK_INTERVAL to LONGEST_SLICE     all have room: the send lock is
                                               held elsewhere, pause and try again

    asend(obj) on a Listener/Client socket
      pickle once; take the send lock (pausing while another sender holds it);
      send what the socket takes now, await room for the rest. Once a
      message's first byte is out, the rest is sent by a task of its own that
      the caller's cancellation does not stop, so the stream never goes out of
      step: the caller's CancelledError comes once the message is whole.

Waiting only for a message to *start* is what ``recv(timeout=...)`` bounds
too: on a ``Pipe()`` end a started message is whole but for a big body that its
sender is still streaming on the stream socket, which proctor senders write
without pausing (a dead one gives ``EOFError``). A ``send(timeout=0)`` on a
``Pipe()`` end sends the whole message or nothing (big bodies go in a memfd),
so a cancelled ``asend`` has sent the message or not at all. Each coroutine
shares one watch per descriptor and direction of its loop with the others
waiting for the same, so that several coroutines can wait on one end.
"""

from __future__ import annotations

import _pickle
import _socket as socket  # (not socket.py: with enum and selectors, ms of a spawned start)
import os
import select
import time

from .._core import _lazy_errors
from .._core._reduction import DescriptorsNeedACarrier
from .._core._reduction import registered_reducers as _registered_reducers
from .._core._timeout import check_timeout
from .._core._wait import CHECK_INTERVAL, slice_seconds
from ._fdchannel import FdChannel
from ._frames import (
    HEADER,
    HEADER_SIZE,
    ID_SIZE,
    LENGTH_MASK,
    PICKLE_PROTOCOL,
    TAG,
    TAG_BITS,
    TAG_FDS_INLINE,
    TAG_SHIFT,
    memory_limit,
    parts_after,
    pickle_fallback,
)
from ._receiving import PREALLOCATE_LIMIT

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from collections.abc import Callable
    from typing import Any

__all__ = ("arecv", "asend", "asend_body")

#: First pause of a sender that found room everywhere but not the send lock
#: (another thread or process sends a big message). Doubles up to CHECK_INTERVAL.
LOCK_PAUSE = 0.0005

_MSG_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0))
_MSG_NOSIGNAL = int(getattr(socket, "MSG_NOSIGNAL", 0))
_monotonic = time.monotonic


def _deadline(timeout: Any) -> float | None:
    timeout = check_timeout(timeout)
    return None if timeout is None else _monotonic() + max(0.0, timeout)


class _Watch:
    """One ``add_reader``/``add_writer`` on a descriptor, shared by the coroutines waiting."""

    __slots__ = ("fd", "future", "loop", "users", "write")

    def __init__(self, loop: Any, fd: int, write: bool) -> None:
        self.loop = loop
        self.fd = fd
        self.write = write
        self.users = 0
        self.future = loop.create_future()
        (loop.add_writer if write else loop.add_reader)(fd, self._fire)

    def _fire(self) -> None:
        self._stop()
        if not self.future.done():
            self.future.set_result(None)

    def _stop(self) -> None:
        key = (id(self.loop), self.fd, self.write)
        if _watches.get(key) is self:
            del _watches[key]
        (self.loop.remove_writer if self.write else self.loop.remove_reader)(self.fd)


# (id(loop), fd, write) -> the watch. An entry holds its loop, so the id cannot be
# reused while it exists; it goes when the descriptor is ready or nobody waits.
_watches: dict[tuple[int, int, bool], _Watch] = {}
# A forked child starts with none: its parent's loops do not run there.
os.register_at_fork(after_in_child=_watches.clear)


async def _await_fd(fd: int, write: bool, deadline: float | None, slept: float = 0.0) -> None:
    """Wait until ``fd`` is ready, at most one slice and not past ``deadline``.

    The slice is ``_wait.slice_seconds``': CHECK_INTERVAL, longer (up to
    LONGEST_SLICE) for a wait that has already ``slept`` that long, as every
    liveness-aware wait backs off. A dead peer shows on the descriptor at once;
    the slices only bound how late a connection closed by another task is noticed.
    """
    import asyncio  # deferred: importing proctor must not import asyncio

    loop = asyncio.get_running_loop()
    key = (id(loop), fd, write)
    watch = _watches.get(key)
    if watch is None:
        watch = _watches[key] = _Watch(loop, fd, write)
    wait = slice_seconds(deadline, slept)
    watch.users += 1
    try:
        # asyncio.wait never cancels the shared future, whatever happens to us.
        await asyncio.wait([watch.future], timeout=max(0.0, wait))
    finally:
        watch.users -= 1
        if not watch.users and not watch.future.done():
            watch._stop()  # nobody waits: the descriptor may be closed and reused


def _ready(fd: int, write: bool) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(0))


async def arecv(conn: Any, as_bytes: bool, maxlength: int | None, timeout: Any) -> Any:
    """Await a message on ``conn``: ``recv()``, or with ``as_bytes`` ``recv_bytes(maxlength)``."""
    conn._check_readable()
    if conn._partial is not None:  # the rest of a message a cancelled arecv() began
        rest = await _resume_body(conn, maxlength)
        return bytes(rest) if as_bytes else _pickle.loads(rest)
    deadline = _deadline(timeout)
    began = _monotonic()
    while not conn.poll(0):
        if deadline is not None and _monotonic() >= deadline:
            raise _lazy_errors.ProcessTimeoutError(
                f"no message arrived on {conn!r} within {timeout} s; the sender is alive "
                "but has not sent (pass a longer timeout, or timeout=None to wait forever)"
            )
        await _await_fd(conn._fd, False, deadline, _monotonic() - began)
        conn._check_readable()  # closed meanwhile (by another task)?
    if conn._rfd < 0:
        # One stream for everything: the rest of a started frame may still be on
        # its way (its sender may even be a coroutine of this loop).
        body = await _socket_frame(conn, maxlength)
        if body is not None:
            return bytes(body) if as_bytes else _pickle.loads(body)
    return conn.recv_bytes(maxlength) if as_bytes else conn.recv()


async def _socket_frame(conn: Any, maxlength: int | None) -> bytearray | None:
    """Gather the started frame of a socket connection without blocking the loop.

    Returns None when the frame is then whole in the read-ahead buffer (or is
    one the blocking path must judge: a bad header, a frame with descriptors
    too big for that buffer), which ``recv()`` then parses; else the body of a
    plain frame too big for that buffer, gathered here.
    """
    need = HEADER_SIZE
    while True:
        have = conn._rend - conn._rpos
        if have >= HEADER_SIZE:
            word = HEADER.unpack_from(conn._rbuf, conn._rpos)[0]
            tag, n = word >> TAG_SHIFT, word & LENGTH_MASK
            if tag == TAG_FDS_INLINE and conn._fd_inbox is not None:
                need = HEADER_SIZE + ID_SIZE + n
            elif tag == TAG:
                need = HEADER_SIZE + n
            else:
                return None  # recv() says what is wrong with it
            if need > len(conn._rbuf):
                if tag != TAG or (maxlength is not None and n > maxlength):
                    return None
                if n > memory_limit() or n > PREALLOCATE_LIMIT:
                    return None  # judged, and received, by the blocking path
                return await _big_body(conn, n)
        if have >= need:
            return None
        if conn._rpos:  # make room at the end of the read-ahead buffer
            conn._rbuf[:have] = conn._rbuf[conn._rpos : conn._rend]
            conn._rpos, conn._rend = 0, have
        got = await _read_some(conn, conn._rview[conn._rend :], have, need)
        conn._rend += got


async def _read_some(conn: Any, view: memoryview, have: int, need: int) -> int:
    """One read of what is there (awaiting it) into ``view``; EOF mid-frame raises."""
    while True:
        try:
            got: int = conn._recv_into(view, 0, _MSG_DONTWAIT)
        except BlockingIOError:
            got = -1
        except ConnectionResetError as exc:
            conn._eof_mid_message(have, need, exc)
        if got == 0:
            conn._eof_mid_message(have, need)
        if got > 0:
            return got
        await _await_fd(conn._fd, False, None)
        conn._check_readable()


async def _big_body(conn: Any, n: int) -> bytearray:
    """The ``n``-byte body of the plain frame whose header is at the read-ahead's start."""
    body = bytearray(n)
    view = memoryview(body)
    start = conn._rpos + HEADER_SIZE
    have = min(conn._rend - start, n)
    view[:have] = conn._rview[start : start + have]
    conn._rpos = start + have
    return await _gather(conn, body, have)


async def _resume_body(conn: Any, maxlength: int | None) -> bytearray:
    """The rest of the message a cancelled ``arecv()`` was gathering (``conn._partial``)."""
    body, have = conn._take_partial(maxlength)  # ProtocolError past maxlength
    return await _gather(conn, body, have)


async def _gather(conn: Any, body: bytearray, have: int) -> bytearray:
    """Receive into ``body[have:]`` until it is full, without blocking the loop.

    Cancelled (or interrupted) part-way, the connection keeps the body gathered so
    far for the next receive: the message is neither lost nor left in the stream
    ahead of the next one.
    """
    n = len(body)
    view = memoryview(body)
    try:
        while have < n:
            have += await _read_some(conn, view[have:], have, n)
    except _lazy_errors.if_loaded(EOFError, "ProtocolError"):
        raise
    except BaseException:
        conn._keep_partial(body, have)
        raise
    return body


async def asend(conn: Any, send_now: Callable[[], None], timeout: Any) -> None:
    """Send on a ``Pipe()`` end: ``send_now()`` (a send with ``timeout=0``) until it goes."""
    conn._check_writable()
    deadline = _deadline(timeout)
    pause = LOCK_PAUSE
    while True:
        try:
            send_now()  # the whole message, or nothing and ProcessTimeoutError
            return
        except _lazy_errors.if_loaded("ProcessTimeoutError"):
            if deadline is not None and _monotonic() >= deadline:
                raise _lazy_errors.ProcessTimeoutError(
                    f"could not send on {conn!r} within {timeout} s (the peer is not "
                    "reading, or another sender holds the end); nothing of it was sent "
                    "and the connection is still usable"
                ) from None
        fds = [conn._wfd]
        if conn._dsock is not None:
            fds.append(conn._dsock.fileno())
        fds.append(conn._sock.fileno())
        full = next((fd for fd in fds if not _ready(fd, True)), None)
        if full is not None:
            pause = LOCK_PAUSE
            await _await_fd(full, True, deadline)
        else:
            pause = await _pause(pause, deadline)
        conn._check_writable()


async def _pause(pause: float, deadline: float | None) -> float:
    import asyncio

    if deadline is not None:
        pause = min(pause, max(0.0, deadline - _monotonic()))
    await asyncio.sleep(pause)
    return min(pause * 2 or LOCK_PAUSE, CHECK_INTERVAL)


def socket_body(obj: Any) -> bytes | None:
    """The pickle a socket connection's ``send()`` makes of ``obj``; None when it
    owns descriptors (sent by the blocking path, once the socket has room)."""
    try:
        try:
            body = _pickle.dumps(obj, PICKLE_PROTOCOL)
        except (_pickle.PicklingError, TypeError, AttributeError):
            return pickle_fallback(obj)
        if b"__main__" in body or _registered_reducers:
            return pickle_fallback(obj)  # as send(): by value, or with the reducers
        return body
    except DescriptorsNeedACarrier:
        return None


async def asend_body(conn: Any, body: Any, send_blocking: Callable[[], None], timeout: Any) -> None:
    """Send one frame on a ``Listener``/``Client`` connection (or a descriptor's).

    Args:
        body: the frame's body, bytes-like; None to use ``send_blocking()`` once
            the socket has room (a message with descriptors, a non-socket end).
    """
    import asyncio

    conn._check_writable()
    deadline = _deadline(timeout)
    sock = conn._sock
    if body is None or isinstance(sock, FdChannel):
        while not _ready(sock.fileno(), True):
            if deadline is not None and _monotonic() >= deadline:
                raise conn._send_timeout("the peer is not reading")
            await _await_fd(sock.fileno(), True, deadline)
        send_blocking()
        return
    view = memoryview(body).cast("B")
    parts: list[Any] = [HEADER.pack(TAG_BITS | view.nbytes), view]
    total = HEADER_SIZE + view.nbytes
    lock = conn._send_lock
    pause = LOCK_PAUSE
    while True:
        holder = lock.acquire(_monotonic())
        if holder is None:
            break
        if deadline is not None and _monotonic() >= deadline:
            raise conn._send_timeout(f"{holder} is sending on this end")
        pause = await _pause(pause, deadline)
    try:
        sent = _send_some(conn, parts, total, 0)
    except BaseException:
        lock.release()
        raise
    if sent == total:
        lock.release()
        return
    # Part of the frame is out: a task of its own sends the rest (and releases
    # the lock), so that cancelling the caller cannot cut the message.
    rest = asyncio.get_running_loop().create_task(_finish(conn, parts, total, sent, deadline))
    rest.add_done_callback(_retrieve)
    await asyncio.shield(rest)


def _retrieve(task: Any) -> None:
    """Mark the finishing task's error as seen (its caller may have been cancelled)."""
    if not task.cancelled():
        task.exception()


async def _finish(
    conn: Any, parts: list[Any], total: int, sent: int, deadline: float | None
) -> None:
    try:
        while sent < total:
            if deadline is not None and _monotonic() >= deadline:
                conn._break_send()
                raise conn._send_timeout("the peer is not reading", sent=sent, total=total)
            await _await_fd(conn._sock.fileno(), True, deadline)
            sent = _send_some(conn, parts, total, sent)
    except BaseException as exc:
        if not isinstance(exc, _lazy_errors.if_loaded("ProcessTimeoutError")) and sent < total:
            conn._break_send()
        raise
    finally:
        conn._send_lock.release()


def _send_some(conn: Any, parts: list[Any], total: int, sent: int) -> int:
    """Send what the socket takes now, without waiting; return the count sent so far."""
    sock = conn._sock
    try:
        while sent < total:
            try:
                sent += sock.sendmsg(parts_after(parts, sent), (), _MSG_DONTWAIT | _MSG_NOSIGNAL)
            except BlockingIOError:
                break
    except OSError as exc:
        if sent:
            conn._break_send()
        conn._send_failed(exc)
    return sent
