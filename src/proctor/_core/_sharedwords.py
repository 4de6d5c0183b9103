"""A block of anonymous shared memory seen as 64-bit words, for synchronisation state.

The synchronisation primitives (``_sync``) keep what an OS semaphore cannot say --
a lock's owner pid, an event's flag, a condition's waiters -- in a small block of
``_anonmem`` shared memory each. Blocks are carved out of shared arenas
(``_anonmem.allocate``), so a thousand locks cost a few descriptors, not a
thousand. The memory has no name, so nothing can leak in ``/dev/shm`` whoever
dies; it reaches children like any ``AnonymousMemory`` (inherited under
``fork``, its descriptor sent at start under ``spawn`` and ``forkserver``).

The arena's descriptor also carries ``fcntl`` record locks, which the kernel
drops when their process dies. Each block owns disjoint byte ranges of that
descriptor's lock space (locks may lie beyond the end of the file)::

    byte offset                        used for
    ───────────                        ────────
    offset                             the block's own guard (lock recovery)
    LIVENESS_BASE + offset * PID_SPAN  one byte per pid: "this process is alive and
      + pid                            waits here" (condition waiters)
"""

from __future__ import annotations

from ._anonmem import AnonymousMemory, allocate
from ._closing import ClosedWhenCollected

__all__ = ("LIVENESS_BASE", "PID_SPAN", "SharedWords")

#: Where the per-pid liveness bytes start: far beyond any arena's real size.
LIVENESS_BASE = 1 << 40
#: Liveness bytes reserved per block: Linux pids stay below 2**22, macOS's far lower.
PID_SPAN = 1 << 23


class SharedWords(ClosedWhenCollected):
    """A block of anonymous shared memory as signed 64-bit words.

    Args:
        nwords: how many words the block holds (zeroed).

    Attributes:
        words: a ``memoryview`` of ``int64`` over the block; index it directly
            (``words[0] = pid``): an aligned 8-byte store is one machine store.
        offset: the block's byte offset in its arena (unique within the arena).
    """

    __slots__ = ("__weakref__", "_mem", "offset", "words")

    def __init__(self, nwords: int, *, _at: tuple[AnonymousMemory, int] | None = None) -> None:
        mem, offset = allocate(nwords * 8) if _at is None else _at
        self._mem = mem
        self.offset = offset
        # Blocks are 64-byte aligned, so the int64 view is aligned too.
        self.words = memoryview(mem)[offset : offset + nwords * 8].cast("q")

    @property
    def fd(self) -> int:
        """The arena's descriptor, for ``fcntl`` record locks."""
        return self._mem.fd

    def liveness_byte(self, pid: int) -> int:
        """The lock-space byte that process ``pid`` holds while it may wait here."""
        return LIVENESS_BASE + self.offset * PID_SPAN + pid % PID_SPAN

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self.words is None

    def close(self) -> None:
        """Let go of the block in this process; idempotent.

        The arena goes (its mapping and descriptor closed) with the last block
        that uses it.
        """
        words, self.words = self.words, None  # type: ignore[assignment]
        if words is None:
            return
        # Every holder of `words` sees a released view from now on (ValueError on use).
        words.release()
        self._mem = None  # type: ignore[assignment]

    def __reduce__(self):
        if self.words is None:
            raise ValueError("cannot send closed synchronisation state to a child")
        return (_rebuild, (self._mem, self.offset, len(self.words)))

    def __repr__(self) -> str:
        if self.words is None:
            return "<SharedWords closed>"
        return f"<SharedWords {len(self.words)} words at {self.offset} of {self._mem!r}>"


def _rebuild(mem: AnonymousMemory, offset: int, nwords: int) -> SharedWords:
    return SharedWords(nwords, _at=(mem, offset))
