"""Semaphores in anonymous shared memory: no name, nothing for anyone to reclaim.

A named semaphore (``_reaper._semlock.NamedSemaphore``) costs about nine system
calls to make (``sem_open`` with ``O_CREAT|O_EXCL``: a temporary file in
``/dev/shm``, written, mapped, linked, unlinked...) and a message to the
resource reaper, which must unlink its name once every user is gone. On Linux a
process-shared semaphore can instead be a 32-byte block of the anonymous shared
memory that proctor's primitives already keep their words in (``_anonmem``
arenas): ``sem_init(block, pshared=1, value)`` is one store, the kernel keys
its futex by the memory's file and offset, so every process that maps the
arena -- inherited under ``fork``, its descriptor sent under ``spawn`` and
``forkserver`` -- sleeps and wakes on the same semaphore, and the semaphore
goes with the memory when the last process that maps it closes it or dies::

    maker (C accelerator active, Linux)        any other process
    ───────────────────────────────────        ─────────────────
    allocate(32) ─▶ (arena, offset)            fork: the same mapping
    MemSemaphore(arena, offset, max, value)    spawn / message: pickle(arena, offset)
      sem_init(pshared=1): a store               ─SCM_RIGHTS─▶ mmap ─▶ MemSemaphore
    acquire/release: sem_trywait, sem_post,      (no sem_init: the semaphore is there)
      sem_timedwait (the GIL released)         the last mapping gone ─▶ the kernel frees it

Who uses them: a queue's put and get locks and its wake-up hints
(``_queues._queue._Shared``), when :data:`AVAILABLE`. Waits on them go through
the one liveness-aware wait (``_core._wait.wait_for_post``), and a queue lock's
owner word and dead-holder takeover are the lock's (``_lock``), exactly as over
a named semaphore: only where the ``sem_t`` lives changes.

Where they are not used: with the pure-Python implementation
(``PROCTOR_PURE_PYTHON``, or no C accelerator built), and where the OS has no
working unnamed process-shared semaphores (macOS: ``sem_init`` fails with
``ENOSYS``; the BSDs are not relied on). New objects there keep named ones. A
process running the pure implementation that *receives* an object made with
one (a spawned child with ``PROCTOR_PURE_PYTHON=1``) drives the same ``sem_t``
through ``ctypes`` (``_ctypessem.CtypesSemaphore``, imported only then).
"""

from __future__ import annotations

from .._core._anonmem import AnonymousMemory, allocate
from .._reaper._semlock import _Closed
from ._accel import native

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from typing import Any

__all__ = ("AVAILABLE", "SIZE", "MemorySemaphore")

_MemSemaphore: Any = getattr(native, "MemSemaphore", None)

#: Whether new objects here may keep their semaphores in shared memory: the C
#: accelerator is active and was built with ``MemSemaphore`` (Linux only).
AVAILABLE = _MemSemaphore is not None

#: Bytes reserved for one ``sem_t`` (glibc and musl: 32 on 64-bit systems, 16 on
#: 32-bit ones).
SIZE = 32


class MemorySemaphore:
    """A process-shared semaphore in anonymous shared memory.

    The same interface as ``NamedSemaphore`` where its users need one: ``sem``
    (``acquire(block, timeout)``/``release()``, as ``_multiprocessing.SemLock``),
    ``name`` (for messages), ``maxvalue``, ``close()``, and pickling to a child
    or in a proctor message.

    Args:
        value: the initial count.
        maxvalue: the largest count ``release()`` may make.

    Raises:
        RuntimeError: where shared-memory semaphores are not available (see
            :data:`AVAILABLE`; callers check it first).
    """

    __slots__ = ("__weakref__", "_memory", "_offset", "maxvalue", "name", "sem")

    def __init__(
        self, value: int, maxvalue: int, *, _at: tuple[AnonymousMemory, int] | None = None
    ) -> None:
        self.maxvalue = maxvalue
        if _at is None:
            if not AVAILABLE:
                raise RuntimeError(
                    "semaphores in shared memory need proctor's C accelerator on Linux; "
                    "use a NamedSemaphore"
                )
            memory, offset = allocate(SIZE)
            self.sem = _MemSemaphore(memory, offset, maxvalue, value)
        else:
            memory, offset = _at
            self.sem = _open(memory, offset, maxvalue)
        self._memory = memory
        self._offset = offset
        self.name = f"(a semaphore at byte {offset} of shared memory with no name)"

    def close(self) -> None:
        """Drop this handle's reference; idempotent.

        The ``sem_t`` stays usable through whatever still holds ``sem`` (a bound
        method, a waiting thread), and its memory goes with the last of them.
        """
        if isinstance(self.sem, _Closed):
            return
        self.sem = _Closed("this semaphore")
        self._memory = None  # type: ignore[assignment]

    def __reduce__(self):
        if isinstance(self.sem, _Closed):
            raise ValueError("cannot send a closed semaphore to another process")
        # The memory travels as a descriptor (AnonymousMemory.__reduce__), only
        # where one can: to a starting child, or in a proctor message.
        return (_rebuild, (self._memory, self._offset, self.maxvalue))

    def __repr__(self) -> str:
        return f"<MemorySemaphore at byte {self._offset} of {self._memory!r}>"


def _rebuild(memory: AnonymousMemory, offset: int, maxvalue: int) -> MemorySemaphore:
    return MemorySemaphore(0, maxvalue, _at=(memory, offset))


def _open(memory: AnonymousMemory, offset: int, maxvalue: int) -> Any:
    """The semaphore already at ``offset`` of ``memory`` (made by another process)."""
    if _MemSemaphore is not None:
        return _MemSemaphore(memory, offset, maxvalue)
    # Imported here: ctypes costs a few milliseconds to import, which every
    # spawned child would pay, and only a pure-Python receiver needs it.
    from ._ctypessem import CtypesSemaphore

    return CtypesSemaphore(memory, offset, maxvalue, SIZE)
