"""The awaitable twins of a queue's waits: ``aget``, ``aput``, ``ajoin``.

Each is the blocking call's own fast path, tried without waiting, around one
awaited wait for a wake-up: the same semaphores the blocking calls sleep on,
waited for through ``_core._loopwait.await_post`` (one watcher thread per
semaphore with waiting coroutines, never one per call). Producers and
consumers that never await pay nothing: ``put()`` posts its items token as
always, and whoever sleeps on it -- a blocking ``get()`` anywhere, or a watcher
thread -- takes it::

    aget()                                   aput(obj)
      get(block=False) ── an item ──▶ it       pickle once; put(block=False)
      │ Empty                                  │ Full
      ▼                                        ▼
      await items token (await_post)           register for room (get lock), await
      │ taken, or items seen at a look         │ a room token (await_post), re-check
      ▼                                        ▼
      take the item: no await from here        put (block=False): no await from here
      to the return, so a cancelled aget()     to the return, so a cancelled aput()
      took nothing                             put nothing

Cancellation between the wake-up and the take gives the token back
(``await_post``), so an item is never taken by a coroutine that then raises
``CancelledError``. The queue's internal locks are taken in the loop's thread:
their holders hold them for one copy, and a dead holder's lock is taken over
as in the blocking calls.
"""

from __future__ import annotations

import time

from .._core._loopwait import await_post
from .._core._wait import CHECK_INTERVAL, POSTED, TIMED_OUT
from ._codec import encode
from ._ring import Ring
from ._waiting import (
    Empty,
    acquire,
    check_queue_timeout,
    deadline_for,
    hand_room,
    look_all_done,
    queue_full,
    queue_full_if_loaded,
    unregister,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._codec import Encoded

__all__ = ("aget", "ajoin", "aput")


#: First pause of a coroutine that found items but not the get lock (or room but
#: not the mailbox): the holder holds it for one copy. Doubles up to CHECK_INTERVAL.
BUSY_PAUSE = 0.0005

_monotonic = time.monotonic


async def _pause(pause: float, deadline: float | None) -> float:
    """Sleep ``pause`` (not past the deadline); return the next, longer pause."""
    import asyncio

    if deadline is not None:
        pause = min(pause, max(0.0, deadline - _monotonic()))
    await asyncio.sleep(pause)
    return min(pause * 2 or BUSY_PAUSE, CHECK_INTERVAL)


async def aget(q: Any, block: bool, timeout: float | None) -> Any:
    """``Queue.aget``: see its docstring."""
    if q._closed:
        q._check_open("aget")
    if timeout is not None:
        check_queue_timeout(timeout)
    try:
        return q.get(False)
    except Empty:
        if not block:
            raise
    deadline = deadline_for(True, timeout)
    sem = q._shared.items.sem  # kept: close() drops the handle's own reference
    ring = q._ring
    pause = BUSY_PAUSE
    while True:
        outcome = await await_post(sem, deadline, lambda: q._closed or ring.count)
        token = outcome == POSTED
        if q._closed:
            if token:
                sem.release()
            q._check_open("aget")
        if outcome == TIMED_OUT:
            raise Empty("timed out: the queue stayed empty")
        # From here to the return nothing is awaited: a cancellation cannot
        # come between taking the item and handing it to the caller.
        if q._pending:
            taken = q._take_pending(1)
            if taken:
                if token:
                    sem.release()
                return taken[0]
        try:
            return q._get_items(1, False, _monotonic(), token)[0]
        except Empty:
            pass  # (a token held was handed on, or was stale and dropped)
        if ring.count:
            # Items there, but another consumer holds the get lock: let it finish.
            if deadline is not None and _monotonic() >= deadline:
                raise Empty("timed out waiting for the lock of the queue") from None
            pause = await _pause(pause, deadline)
        else:
            pause = BUSY_PAUSE


async def aput(q: Any, obj: Any, block: bool, timeout: float | None) -> None:
    """``Queue.aput``: see its docstring."""
    if q._closed:
        q._check_open("aput")
    if timeout is not None:
        check_queue_timeout(timeout)
    item = encode(obj, q._spill_limit, q._spares)  # pickled once, whatever the waits
    try:
        if not item.fds and q._put_fast(item.payload):
            return
        deadline = deadline_for(block, timeout)
        pause = BUSY_PAUSE
        while True:
            try:
                # block=False: no wait for room (the put lock is still waited
                # for, as put_nowait() does: its holder holds it for one copy).
                q._put_items([item], False, None)
                return
            except queue_full_if_loaded():
                if not block:
                    raise
            ring = q._ring
            if ring.has_room(len(item.payload), item.items, q._maxsize):
                # Room in the ring, but the mailbox could not take the item's
                # descriptors: consumers take them without a word, so look again.
                if deadline is not None and _monotonic() >= deadline:
                    raise queue_full(f"timed out: its mailbox stayed full ({ring.count} items)", 0)
                pause = await _pause(pause, deadline)
                continue
            pause = BUSY_PAUSE
            await _await_room(q, item, deadline)
            if q._closed:
                q._check_open("aput")
    finally:
        item.close()


async def _await_room(q: Any, item: Encoded, deadline: float | None) -> None:
    """Wait until ``item`` may fit (``_waiting.await_room``'s protocol); Full past the deadline.

    Registered in ``putters`` under the get lock, so the consumer that makes
    room hands this coroutine a room token. Leaving early (cancelled), it
    unregisters, or passes on the token it was handed, so no producer waiting
    in another process misses its wake-up.
    """
    ring = q._ring
    get_lock = q._get_lock
    room = q._shared.room.sem
    nbytes, items, maxsize = len(item.payload), item.items, q._maxsize
    if not acquire(get_lock, deadline):
        raise queue_full("timed out waiting for the queue's get lock", 0)
    try:
        if ring.has_room(nbytes, items, maxsize):
            return
        ring.add_to_field(Ring.PUTTERS, 1)
    finally:
        get_lock.release()

    def may_put() -> bool:
        """Under the get lock: handed a room token, or room there (then unregistered)?"""
        if q._closed:
            return True  # aput() raises QueueClosedError
        if not acquire(get_lock, _monotonic()):
            return False  # busy: look again after the next slice
        try:
            if room.acquire(False):
                return True  # handed over just now
            if ring.has_room(nbytes, items, maxsize):
                unregister(ring, Ring.PUTTERS)
                return True
            if deadline is not None and _monotonic() >= deadline:
                unregister(ring, Ring.PUTTERS)
                raise queue_full(f"timed out: the queue stayed full ({ring.count} items)", 0)
            return False
        finally:
            get_lock.release()

    try:
        # (Short slices, as await_room's: room tokens count items, not bytes.)
        outcome = await await_post(room, deadline, may_put, back_off=False)
    except queue_full_if_loaded():
        raise  # may_put() unregistered at the deadline
    except BaseException:
        _leave_room_wait(q)  # cancelled
        raise
    if outcome == TIMED_OUT and not q._closed:  # may_put() could not take the lock
        _leave_room_wait(q)
        raise queue_full(f"timed out: the queue stayed full ({ring.count} items)", 0)


def _leave_room_wait(q: Any) -> None:
    """Stop waiting for room: unregister, or pass on the room token a consumer handed us
    (it unregistered us then), so that the next producer waiting is not left asleep."""
    if q._closed:
        return  # its ring is gone from this process; a stale registration costs a look
    ring = q._ring
    get_lock = q._get_lock
    acquire(get_lock, None)
    try:
        if q._shared.room.sem.acquire(False):
            hand_room(ring, q._shared.room, 1)
        else:
            unregister(ring, Ring.PUTTERS)
    finally:
        get_lock.release()


async def ajoin(q: Any, timeout: float | None) -> bool:
    """``JoinableQueue.ajoin``: see its docstring (``_waiting.await_all_done``'s protocol)."""
    q._check_open("ajoin")
    hint = q._all_done()
    all_done = None  # opened once there is something to wait for (it is deferred)
    deadline = deadline_for(True, timeout)
    ring = q._ring
    put_lock = q._put_lock
    waiting = False
    try:
        while True:
            # Not waiting during the look: it unregisters first, and an error there
            # must not unregister again.
            registered, waiting = waiting, False
            done = look_all_done(ring, put_lock, deadline, registered)
            if done is not None:
                return done
            waiting = True
            if all_done is None:
                all_done = hint.sem
            # Posted, all done at a look, or the deadline: look again under the lock.
            await await_post(all_done, deadline, lambda: ring.unfinished <= 0)
    except BaseException:
        if waiting:  # cancelled while registered
            acquire(put_lock, None)
            try:
                unregister(ring, Ring.JOINERS)
            finally:
                put_lock.release()
        raise
