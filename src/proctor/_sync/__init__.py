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

from ._accel import ACTIVE as ACTIVE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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

    #: Each implementation's classes by public name ("native": None where the C
    #: module is not loaded). The public names above are ACTIVE's; the tests run both.
    IMPLEMENTATIONS: dict[str, dict[str, type] | None]

# Each name from the module that defines it, when it is first asked for: a process
# that uses only a Lock or a queue (a spawned child given one, say) imports neither
# the semaphores nor Condition, Event and Barrier (with numbers) -- issue 17.
_WHERE = {
    "Barrier": "_condition",
    "BrokenBarrierError": "_condition",  # (made there at its first use, with threading)
    "Condition": "_condition",
    "Event": "_condition",
    "CHECK_INTERVAL": "_lock",
    "LIMBO_GRACE": "_lock",
    "SPIN_TRIES": "_lock",
    "Lock": "_lock",
    "LockNotOwnedError": "_lock",
    "RLock": "_lock",
    "BoundedSemaphore": "_semaphore",
    "Semaphore": "_semaphore",
}


def _implementations() -> dict[str, dict[str, type] | None]:
    from . import _lock, _semaphore

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


def __getattr__(name: str) -> Any:
    import importlib

    if name == "IMPLEMENTATIONS":
        value: Any = _implementations()
    else:
        where = _WHERE.get(name)
        if where is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


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
