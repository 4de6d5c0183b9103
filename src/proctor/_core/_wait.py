"""Waiting on a semaphore without trusting the wake-up to come.

A post on an OS semaphore is a hint, sent by a peer that may die before it posts
(or be killed between updating shared state and posting). Every blocking call of
the synchronisation primitives therefore sleeps through :func:`wait_for_post`,
which sleeps in slices and asks its caller, between slices, whether the wait is
over anyway::

    spin: try the semaphore without sleeping (``spin`` times)
      │
      ▼
    sleep on the semaphore for one slice (slice_seconds) ── posted ──▶ POSTED
      │ not posted (or the deadline came)
      ▼
    ready()?  (the caller's re-check: state in shared memory that says the wait
      │        is over -- a flag set, a notification marked, a dead holder
      │        replaced, a dead peer found)               ── yes ──▶ READY
      │ no
      ▼
    past the deadline? ── yes ──▶ TIMED_OUT;  no: sleep again, a longer slice

A long wait backs off: its first slices last ``CHECK_INTERVAL`` (0.1 s), and each
later one as long as the wait has slept so far (0.1, 0.1, 0.2, 0.4 s, ...), up to
``LONGEST_SLICE`` (0.5 s). So a wait notices what its re-check looks for (a dead
peer, a post lost with its killed poster) within the longer of CHECK_INTERVAL
and the time it has already waited, and never later than LONGEST_SLICE -- well
inside the one second in which a dead peer must be noticed -- while a process
blocked for long wakes about twice a second, not ten times (each wake-up of a
sleeping process costs ~90 us of CPU: a timer, two context switches, cold
caches). Only slices that ended empty count as slept; a deadline bounds the last
slice exactly. The back-off costs normal operation nothing because every
wake-up owed to a waiter is posted, and a look only makes up for a fault -- but
for a producer waiting for room (``_queues._waiting.await_room``: room tokens
count items, not bytes), which keeps the short slice (``back_off=False``), and
two rare cases that wait up to one slice (``_sync._condition``): a condition
notified under a ``Lock`` that another process then releases, and an ``Event``
wake-up taken twice by a waiter that came after the ``set()``.

Every wait has something to look at between slices, if only whether another
thread of its process has closed the object meanwhile (``ready()`` then raises
the object's closed error): a counting semaphore, whose count the kernel itself
watches, has nothing else. (Its wait used to sleep once, for as long as it was
allowed to, and a ``close()`` from another thread never ended it.)
Two waits on the path a waker waits for run this same loop inline, with the same
slices and re-checks, so that between a wake-up and their return only the
caller's frame runs: a condition waiter's (``_sync._condition._WaitQueue._sleep_in_c``,
its slices in C) and ``Event.wait``.
The same helper serves any wait on a semaphore-like object whose ``acquire``
has the ``(block, timeout)`` signature of ``_multiprocessing.SemLock``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = (
    "CHECK_INTERVAL",
    "LONGEST_SLICE",
    "POSTED",
    "READY",
    "TIMED_OUT",
    "slice_seconds",
    "wait_for_post",
)

#: How long a blocked wait first sleeps before it re-checks its condition and its
#: peers: a short wait is as responsive as it was before waits backed off.
CHECK_INTERVAL = 0.1

#: The longest slice of a wait that has gone on for a while: a dead peer is still
#: noticed within half a second (well inside the one second allowed), and a
#: process blocked for long wakes twice a second (each wake-up costs ~90 us of
#: CPU: a fifth of what ten wake-ups a second cost).
LONGEST_SLICE = 0.5

#: Outcomes of :func:`wait_for_post`.
TIMED_OUT = 0  # the deadline passed and ``ready()`` stayed false
POSTED = 1  # the semaphore was taken (one unit is now the caller's)
READY = 2  # ``ready()`` said the wait is over; the semaphore was not taken

_monotonic = time.monotonic


def slice_seconds(deadline: float | None, slept: float = 0.0) -> float:
    """How long the next slice of a wait sleeps; 0 or less: past ``deadline``.

    As long as the wait has ``slept`` so far (the slices that ended empty), at
    least CHECK_INTERVAL and at most LONGEST_SLICE; or what is left until
    ``deadline`` (``time.monotonic()``) when that is less.
    """
    wait = slept if slept > CHECK_INTERVAL else CHECK_INTERVAL
    if wait > LONGEST_SLICE:
        wait = LONGEST_SLICE
    if deadline is None:
        return wait
    left = deadline - _monotonic()
    return left if left < wait else wait


def wait_for_post(
    acquire: Callable[[bool, float | None], bool],
    deadline: float | None,
    ready: Callable[[], object],
    spin: int = 0,
    back_off: bool = True,
) -> int:
    """Take a semaphore, re-checking ``ready()`` between slices (``slice_seconds``).

    Args:
        acquire: the semaphore's ``acquire(block, timeout)``.
        deadline: a ``time.monotonic()`` instant, or ``None`` to wait for ever.
        ready: called between sleeps (and once more at the deadline); a true
            result ends the wait, an exception (the object was closed) ends it too.
        spin: non-blocking attempts before the first sleep.
        back_off: let the slices grow while the wait goes on (up to
            LONGEST_SLICE); False: every slice is CHECK_INTERVAL, for a wait
            whose wake-ups may not come for every waiter that could go on.

    Returns:
        ``POSTED``, ``READY`` or ``TIMED_OUT``.
    """
    for _ in range(spin):
        if acquire(False, None):
            return POSTED
    slept = 0.0
    while True:
        wait = slice_seconds(deadline, slept)
        if wait <= 0:
            return READY if ready() else TIMED_OUT
        if acquire(True, wait):
            return POSTED
        if ready():
            return READY
        if back_off:
            slept += wait
