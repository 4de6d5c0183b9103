"""How queue handles wait for each other: the put and get locks, and wake-up hints.

::

    who waits      for        registers               sleeps on   woken by
    ─────────      ───        ─────────               ─────────   ────────
    get()          an item    nothing: tokens count   items       put(): one token per frame
    put()          room       putters += 1, get lock  room        the get() that made room
                                                                  (hand_room: putters -= n)
    join()         all done   joiners += 1, put lock  all_done    the task_done() of the last item

    every sleep: _core._wait.wait_for_post(sem.acquire, deadline, ready)
      one slice on the semaphore (0.1 s, backing off to 0.5 s; put(): always 0.1 s),
      then ready() looks at the ring:
        get()   items in the ring?                          (no lock: a look)
        put()   a room token, or room, under the get lock?  (or Full at the deadline)
        join()  nothing unfinished?                         (no lock; confirmed under it)

The semaphores are hints, the ring is the truth. A waiter registers under the
lock its waker holds when it changes the ring, so no waker can miss it; it then
sleeps without any lock through the one wait every proctor primitive uses
(``_core._wait.wait_for_post``), one slice at a time, and looks at the ring
again before it trusts what it saw. So a hint may be lost (its waker was killed
between its commit and its post) at the cost of one slice (0.1 s early in a
wait, up to ``LONGEST_SLICE``, 0.5 s, in a long one), or stale (its waiter gave
up, or took the item first) at the cost of one look.
The ``items`` semaphore counts frames: a put never misses a sleeping getter
because the token stays in the semaphore until somebody takes it.

The put and get locks are held for about a microsecond (one copy, one store),
so a taker tries them briefly before it sleeps (``try_briefly``), and a getter
tries for a token ITEMS_SPIN_TRIES times (about 50 us) before it sleeps on one.
A lock whose holder died is taken over silently (``QueueLock``): its holder's
changes were committed by single stores, so there is nothing half-done to report.
"""

from __future__ import annotations

import sys
import time
from _queue import Empty  # queue.Empty itself: queue.py re-exports the C module's class

from .._core._timeout import check_timeout as _check_timeout
from .._core._wait import POSTED, READY, wait_for_post
from .._reaper._semlock import NamedSemaphore
from .._sync._lock import Lock
from .._sync._memsem import MemorySemaphore
from ._ring import Ring

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._codec import Encoded

__all__ = (
    "FAST_TRIES",
    "ITEMS_SPIN_TRIES",
    "Empty",
    "Hint",
    "QueueLock",
    "acquire",
    "await_all_done",
    "await_items",
    "await_room",
    "check_queue_timeout",
    "deadline_for",
    "hand_room",
    "post",
    "queue_full",
    "queue_full_if_loaded",
    "try_briefly",
    "unregister",
)


# queue.Full is queue.py's own class, and queue.py imports threading: a fork server
# that loads the queues would have it, and its after-fork hook, in every child it
# forks (issue 17). So the queue modules make a Full when they raise one (importing
# queue then), and their except clauses match it only once it can exist.


def queue_full(message: str, items_put: int) -> Exception:
    """A ``queue.Full`` saying ``message``; ``items_put``: the call's items that went in.

    The count is an attribute, not a second argument, so that ``str(error)`` is
    the message (``put_many`` callers read ``error.items_put``). The first call
    imports ``queue``.
    """
    import queue

    error = queue.Full(message)
    error.items_put = items_put  # type: ignore[attr-defined]
    return error


def queue_full_if_loaded() -> tuple[type[BaseException], ...]:
    """``(queue.Full,)`` once ``queue`` is imported, else ``()`` (for ``except``)."""
    module = sys.modules.get("queue")
    return () if module is None else (module.Full,)


#: Tries for an items token before a getter sleeps on the semaphore: about 50 us
#: (a failed try costs 35-50 ns on the 2-core development VM; the loop it
#: replaced read the clock too, ~70 ns a try), the cost of one sleep and wake-up
#: between cores on a VM, so watching never costs more than sleeping would. A
#: producer on another core is usually microseconds away.
ITEMS_SPIN_TRIES = 1000

#: Non-blocking lock attempts (about 2 us) of put()/get()'s fast path before the
#: general path, whose lock wait may sleep: a sleep and wake-up costs far more.
FAST_TRIES = 40

_monotonic = time.monotonic

#: A wake-up hint: a named semaphore (the pure implementation, macOS), or one
#: in shared memory (the C accelerator on Linux; see ``_sync._memsem``).
Hint = NamedSemaphore | MemorySemaphore


class QueueLock(Lock):
    """A queue's put or get lock: a dead holder's lock is taken over silently.

    Every change a holder makes to the ring is committed by one store, so a
    holder that died left nothing half-updated for the user to hear about.
    """

    __slots__ = ()
    _warn_on_takeover = False


# -- deadlines and locks -----------------------------------------------------------------


def check_queue_timeout(timeout: Any) -> float | None:
    """A timeout in seconds: None, or a number >= 0; a negative one counts as 0.

    As ``multiprocessing.Queue`` takes it (``queue.Queue`` refuses it): a call
    given ``deadline - time.monotonic()`` once the deadline has passed still
    takes an item that is there, or raises ``Empty`` (``Full``) at once.
    """
    timeout = _check_timeout(timeout)  # TypeError for non-numbers, ValueError for NaN
    if timeout is not None and timeout < 0:
        return 0.0
    return timeout


def deadline_for(block: bool, timeout: Any) -> float | None:
    """The ``time.monotonic()`` deadline of a call: now when not blocking, None for ever."""
    if not block:
        return _monotonic()
    timeout = check_queue_timeout(timeout)
    return None if timeout is None else _monotonic() + timeout


def acquire(lock: Lock, deadline: float | None) -> bool:
    """Take a queue lock by the deadline (a dead holder's is taken over)."""
    if try_briefly(lock):
        lock._became_owner()
        return True
    remaining = None if deadline is None else max(0.0, deadline - _monotonic())
    return lock.acquire(True, remaining)


def try_briefly(lock: Lock) -> bool:
    """Try the lock a few times without sleeping: its holder holds it for ~1 us."""
    attempt = lock._try
    for _ in range(FAST_TRIES):  # noqa: SIM110 - a loop beats any(genexpr) on this hot path
        if attempt(False):
            return True
    return False


# -- hints -------------------------------------------------------------------------------


def post(hint: Hint, n: int) -> None:
    """Post a wake-up hint ``n`` times; at the semaphore's limit, give up quietly.

    (macOS counts to 32767; a waiter missing a post looks again within a slice.)
    """
    if n <= 0:
        return  # (a deferred hint nobody waits on stays unopened)
    post = hint.sem.release
    try:
        for _ in range(n):
            post()
    except (OSError, ValueError):
        pass


def unregister(ring: Ring, field: int) -> None:
    """Count one waiter less, never below zero.

    A consumer killed between claiming a waiter and posting for it leaves the
    waiter registered in its own eyes only; going negative would hide the next
    waiter from every consumer (it would then only find room by looking again
    between slices).
    """
    ring.set_field(field, max(ring.get_field(field) - 1, 0))


# -- the three waits ---------------------------------------------------------------------


def await_items(take: Callable[..., bool], ring: Ring, deadline: float | None) -> bool:
    """Wait for an items token: True once taken; False for items seen without one.

    Items without a token are there when their producer died between its
    commit and its post, or a getter died holding their token: they are taken
    anyway.

    Args:
        take: the items semaphore's ``acquire``.

    Raises:
        queue.Empty: past the deadline with the queue still empty.
    """
    spin = ITEMS_SPIN_TRIES
    if deadline is not None and deadline <= _monotonic():
        spin = 0  # get(timeout=0): one look, no watching
    outcome = wait_for_post(take, deadline, lambda: ring.count, spin)
    if outcome == POSTED:
        return True
    if outcome == READY:
        return False
    raise Empty("timed out: the queue stayed empty")


def hand_room(ring: Ring, room: Hint, taken: int) -> None:
    """Wake up to ``taken`` producers waiting for room (get lock held)."""
    n = min(ring.get_field(Ring.PUTTERS), taken)
    if n > 0:
        ring.add_to_field(Ring.PUTTERS, -n)
        post(room, n)


def await_room(
    ring: Ring,
    get_lock: Lock,
    room: Hint,
    item: Encoded,
    maxsize: int,
    mailbox_full: bool,
    deadline: float | None,
    done: int,
) -> None:
    """Wait until ``item`` may fit; raise ``Full`` past the deadline.

    The producer registers in ``putters`` under the *get* lock, which every
    consumer holds when it makes room, so none can miss it; the consumer that
    makes room unregisters it and posts ``room`` for it (``hand_room``).

    Args:
        mailbox_full: the item's descriptors did not fit the mailbox: wait at
            most one round, then try again.
        done: items of this call already put, for ``Full``'s ``items_put``.

    Raises:
        queue.Full: past the deadline, with ``done`` as its ``items_put``.
    """
    nbytes, items = len(item.payload), item.items
    take = room.sem.acquire
    if not acquire(get_lock, deadline):
        raise queue_full("timed out waiting for the queue's get lock", done)
    try:
        if not mailbox_full and ring.has_room(nbytes, items, maxsize):
            return
        ring.add_to_field(Ring.PUTTERS, 1)
    finally:
        get_lock.release()

    def may_put() -> bool:
        """Under the get lock: handed a room token, or room there (then unregistered)?"""
        if not acquire(get_lock, deadline):
            # (still registered: a consumer will post a room token for
            # nobody, which costs the next waiter one extra look)
            raise queue_full(f"timed out: the queue stayed full ({ring.count} items)", done)
        try:
            if take(False):
                return True  # handed over just now
            if not mailbox_full and ring.has_room(nbytes, items, maxsize):
                unregister(ring, Ring.PUTTERS)
                return True
            if deadline is not None and _monotonic() >= deadline:
                unregister(ring, Ring.PUTTERS)
                what = "its mailbox stayed full" if mailbox_full else "the queue stayed full"
                raise queue_full(f"timed out: {what} ({ring.count} items)", done)
            if mailbox_full:
                unregister(ring, Ring.PUTTERS)
                return True  # try again: consumers take descriptors without a word
            return False
        finally:
            get_lock.release()

    # POSTED: a consumer made room and unregistered us; READY: may_put() found
    # room; never TIMED_OUT: may_put() raises Full at the deadline. The slices
    # stay short (no back-off): room tokens count items, not bytes, so room made
    # in a ring full by bytes may wake fewer producers than it lets in (a frame
    # of many bytes taken: one token; a token taken by a producer whose item
    # still does not fit), and the others find it at their next look.
    wait_for_post(take, deadline, may_put, back_off=False)


def await_all_done(ring: Ring, put_lock: Lock, all_done: Hint, deadline: float | None) -> bool:
    """Wait until no item is unfinished (``JoinableQueue.join``); False past the deadline.

    The joiner registers in ``joiners`` under the put lock, which ``task_done()``
    holds when it finishes the last item and posts ``all_done`` once per joiner.
    Between sleeps it looks at the count without the lock, and confirms what it
    saw under the lock.
    """
    take = None  # opened once there is something to wait for (all_done is deferred)
    registered = False
    while True:
        done = look_all_done(ring, put_lock, deadline, registered)
        if done is not None:
            return done
        registered = True
        if take is None:
            take = all_done.sem.acquire
        # Posted, all done at a look, or the deadline: look again under the lock.
        wait_for_post(take, deadline, lambda: ring.unfinished <= 0)


def look_all_done(
    ring: Ring, put_lock: Lock, deadline: float | None, registered: bool
) -> bool | None:
    """One look of a joiner under the put lock (``await_all_done``, ``ajoin``).

    Unregisters the joiner if it is ``registered`` (from its previous look); then
    True when no item is unfinished, False past the deadline, or None after
    registering it in ``joiners``: it then waits for ``all_done`` and looks again.
    """
    if not acquire(put_lock, deadline):
        return False  # (a registration left behind costs a stale wake-up)
    try:
        if registered:
            unregister(ring, Ring.JOINERS)
        if ring.unfinished <= 0:
            return True
        if deadline is not None and _monotonic() >= deadline:
            return False
        ring.add_to_field(Ring.JOINERS, 1)
        return None
    finally:
        put_lock.release()
