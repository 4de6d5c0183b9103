"""Waiting on a semaphore without trusting the wake-up to come.

A post on an OS semaphore is a hint, sent by a peer that may die before it posts
(or be killed between updating shared state and posting). Every blocking call of
the synchronisation primitives therefore sleeps through :func:`wait_for_post`,
which sleeps at most ``CHECK_INTERVAL`` at a time and asks its caller, between
sleeps, whether the wait is over anyway::

    spin: try the semaphore without sleeping (``spin`` times)
      │
      ▼
    sleep on the semaphore, at most CHECK_INTERVAL ── posted ──▶ POSTED
      │ not posted (or the deadline came)
      ▼
    ready()?  (the caller's re-check: state in shared memory that says the wait
      │        is over -- a flag set, a notification marked, a dead holder
      │        replaced, a dead peer found)               ── yes ──▶ READY
      │ no
      ▼
    past the deadline? ── yes ──▶ TIMED_OUT;  no: sleep again

A wait with nothing to re-check (``ready=None``: a counting semaphore, whose
count the kernel itself re-checks) sleeps once, for as long as it is allowed to.
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

__all__ = ("CHECK_INTERVAL", "POSTED", "READY", "TIMED_OUT", "slice_seconds", "wait_for_post")

#: How long a blocked wait sleeps before it re-checks its condition and its
#: peers: well inside the one second in which a dead peer must be noticed, yet
#: rare enough (10 wake-ups a second per waiting thread) to cost nothing.
CHECK_INTERVAL = 0.1

#: Outcomes of :func:`wait_for_post`.
TIMED_OUT = 0  # the deadline passed and ``ready()`` stayed false
POSTED = 1  # the semaphore was taken (one unit is now the caller's)
READY = 2  # ``ready()`` said the wait is over; the semaphore was not taken

_monotonic = time.monotonic


def slice_seconds(deadline: float | None) -> float:
    """How long the next slice of a wait sleeps: CHECK_INTERVAL, or what is left
    until ``deadline`` (``time.monotonic()``) when that is less; 0 or less: past it."""
    if deadline is None:
        return CHECK_INTERVAL
    left = deadline - _monotonic()
    return left if left < CHECK_INTERVAL else CHECK_INTERVAL


def wait_for_post(
    acquire: Callable[[bool, float | None], bool],
    deadline: float | None,
    ready: Callable[[], object] | None = None,
    spin: int = 0,
) -> int:
    """Take a semaphore, re-checking ``ready()`` at least every CHECK_INTERVAL.

    Args:
        acquire: the semaphore's ``acquire(block, timeout)``.
        deadline: a ``time.monotonic()`` instant, or ``None`` to wait for ever.
        ready: called between sleeps (and once more at the deadline); a true
            result ends the wait. ``None``: nothing but a post can end it.
        spin: non-blocking attempts before the first sleep.

    Returns:
        ``POSTED``, ``READY`` or ``TIMED_OUT``.
    """
    for _ in range(spin):
        if acquire(False, None):
            return POSTED
    if ready is None:
        if deadline is None:
            return POSTED if acquire(True, None) else TIMED_OUT
        return POSTED if acquire(True, max(0.0, deadline - _monotonic())) else TIMED_OUT
    while True:
        wait = slice_seconds(deadline)
        if wait <= 0:
            return READY if ready() else TIMED_OUT
        if acquire(True, wait):
            return POSTED
        if ready():
            return READY
