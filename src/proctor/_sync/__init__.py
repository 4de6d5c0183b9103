"""Locks, semaphores, conditions, events and barriers that survive a dead process.

The synchronisation primitives of ``multiprocessing``, one concept per module::

    _lock.py        Lock, RLock        owner's process identity in shared memory; a
                                       dead holder's lock is taken over with
                                       OwnerDiedWarning
    _semaphore.py   Semaphore,         the OS semaphore itself (no owner to watch)
                    BoundedSemaphore
    _condition.py   Condition, Event,  ticket counters in shared memory, waiters in
                    Barrier            the kernel's record-lock table: no limit on
                                       waiters; notify never waits for, and never
                                       wakes, a dead process

    each built on   _semlock.NamedSemaphore   (OS semaphore; name reclaimed by _reaper)
                    _sharedwords.SharedWords  (anonymous shared memory; no name; fcntl
                                               record locks that tell who is alive)
    every blocking  _wait.wait_for_post       (sleep at most CHECK_INTERVAL, then
    call through                               re-check the condition and the peers)

See docs/sync.md for the user's view and the exact guarantees.
"""

from __future__ import annotations

from ._condition import Barrier as Barrier
from ._condition import BrokenBarrierError as BrokenBarrierError
from ._condition import Condition as Condition
from ._condition import Event as Event
from ._lock import CHECK_INTERVAL as CHECK_INTERVAL
from ._lock import LIMBO_GRACE as LIMBO_GRACE
from ._lock import SPIN_TRIES as SPIN_TRIES
from ._lock import Lock as Lock
from ._lock import LockNotOwnedError as LockNotOwnedError
from ._lock import RLock as RLock
from ._semaphore import BoundedSemaphore as BoundedSemaphore
from ._semaphore import Semaphore as Semaphore

__all__ = (
    "Barrier",
    "BoundedSemaphore",
    "BrokenBarrierError",
    "Condition",
    "Event",
    "Lock",
    "LockNotOwnedError",
    "RLock",
    "Semaphore",
)
