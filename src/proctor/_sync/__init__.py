"""Locks, semaphores, conditions, events and barriers that survive a dead process.

The synchronisation primitives of ``multiprocessing``, one concept per module::

    _lock.py        Lock, RLock        owner's process identity in shared memory; a
                                       dead holder's lock is taken over with
                                       OwnerDiedWarning
    _semaphore.py   Semaphore,         the OS semaphore itself (no owner to watch)
                    BoundedSemaphore
    _native.c       (optional)         C fast paths of the four above: the same
    _accel.py                          protocol, the Python methods as fallback;
                                       which implementation runs, and why
    _condition.py   Condition, Event,  ticket counters in shared memory, waiters in
                    Barrier            the kernel's record-lock table: no limit on
                                       waiters; notify never waits for, and never
                                       wakes, a dead process

    _memsem.py      (internal)         unnamed process-shared semaphores in shared
                                       memory (Linux, C accelerator): a queue's
                                       locks and wake-up hints; no name to reclaim

    each built on   _semlock.NamedSemaphore   (OS semaphore; name reclaimed by _reaper)
                    _sharedwords.SharedWords  (anonymous shared memory; no name; fcntl
                                               record locks that tell who is alive)
    every blocking  _wait.wait_for_post       (sleep one slice -- 0.1 s, backing off
    call through                               to 0.5 s --, then re-check the
                                               condition and the peers)

See docs/sync.md for the user's view and the exact guarantees.
"""

from __future__ import annotations

from . import _condition, _lock, _semaphore
from ._accel import ACTIVE as ACTIVE
from ._condition import Barrier as Barrier
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

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from typing import Any


def _implementations() -> dict[str, dict[str, type] | None]:
    def classes(*found: type) -> dict[str, type]:
        return dict(zip(("Lock", "RLock", "Semaphore", "BoundedSemaphore"), found, strict=True))

    native = None
    if ACTIVE == "native":
        native = classes(
            _lock.NativeLock,
            _lock.NativeRLock,
            _semaphore.NativeSemaphore,
            _semaphore.NativeBoundedSemaphore,
        )
    python = classes(
        _lock.PyLock, _lock.PyRLock, _semaphore.PySemaphore, _semaphore.PyBoundedSemaphore
    )
    return {"native": native, "python": python}


if TYPE_CHECKING:
    from ._condition import BrokenBarrierError as BrokenBarrierError


def __getattr__(name: str) -> Any:
    # BrokenBarrierError is made at its first use, with threading (see _condition).
    if name == "BrokenBarrierError":
        return _condition.BrokenBarrierError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Each implementation's classes by public name ("native": None where the C
#: module is not loaded). The public names above are ACTIVE's; the tests run both.
IMPLEMENTATIONS = _implementations()

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
