"""Anonymous shared memory: a mapping with no name, freed by the kernel.

Proctor's internal shared state (``Value``/``Array``, shared numpy arrays, queue
and lock bookkeeping) lives in memory that has no name in ``/dev/shm``: on Linux a
``memfd``; elsewhere a POSIX segment unlinked the instant it is created. Nothing
can leak: the kernel frees the memory when the last descriptor and the last
mapping are gone, whoever dies how. No reaper is involved::

    parent                                          child
    ──────                                          ─────
    mem = AnonymousMemory(size)
      memfd_create ─▶ fd ─▶ mmap(MAP_SHARED)
    fork:  inherited mapping (same pages) ────────▶ mem (the same object)
    spawn: pickle(mem) ─▶ fd_token(fd) ─SCM_RIGHTS─▶ take_fd ─▶ mmap ─▶ mem

A process keeps one :class:`AnonymousMemory` per memory: one that arrives again
(in a message, a queue item, a pool task) is the one it already has, so its
record locks (``_sharedwords``: who is alive, who recovers a lock) live on one
description of the memory per process. Where the OS has open-file-description
locks (Linux), those are taken on a description the process opens for itself
(:attr:`AnonymousMemory.lock_fd`), so closing the descriptor that arrived again,
or the duplicate a sender made for a message, drops none of them. Elsewhere
(macOS, the BSDs) record locks belong to the process and go when it closes *any*
descriptor of the memory: there the memory reaches other processes only at a
start, as with ``multiprocessing``.

An :class:`AnonymousMemory` *is* an ``mmap.mmap`` (so ``numpy``, ``ctypes`` and
``memoryview`` use it directly, and whatever they build on it keeps it alive) that
also holds its descriptor, closed when the mapping is closed or collected.

:func:`allocate` carves small blocks (one ``Value`` each) out of shared arenas, so
a thousand ``Value`` objects cost a few descriptors, not a thousand.
"""

from __future__ import annotations

import _thread
import fcntl
import functools
import mmap
import os
import sys
import weakref
from _weakref import _remove_dead_weakref  # type: ignore[attr-defined]  # as weakref.py does

from . import _afterfork, _reduction

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from typing import Any

__all__ = ("AnonymousMemory", "allocate", "own_description_locks")

#: Arena size for small blocks: large enough that most programs need one arena,
#: small enough that pinning one with a single live Value costs little (the pages
#: are allocated by the kernel only when touched).
ARENA_SIZE = 256 * 1024

#: Mappings at least this large ask the kernel for transparent huge pages.
HUGE_PAGE_THRESHOLD = 4 * 1024 * 1024


@functools.cache
def own_description_locks() -> bool:
    """Whether record locks can be taken on a description of the memory that this
    process alone opened (open-file-description locks, on a descriptor reopened
    through /proc): they then survive closing any other descriptor of it.

    Found out once per process (a forked child inherits the answer), when first
    needed: it costs a memfd and an open, ~80 us.
    """
    if not (hasattr(fcntl, "F_OFD_SETLK") and hasattr(os, "memfd_create")):
        return False
    try:
        fd = os.memfd_create("proctor-probe", os.MFD_CLOEXEC)
    except OSError:
        return False
    try:
        os.close(os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC))
    except OSError:  # no /proc, or a sandbox that forbids reopening
        return False
    finally:
        os.close(fd)
    return True


#: Blocks are aligned to a cache line, so counters updated by different processes
#: do not slow each other down by sharing one (false sharing).
ALIGNMENT = 64


def _open_memory(size: int) -> int:
    """Return a descriptor for ``size`` bytes of zeroed shared memory with no name."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("proctor", os.MFD_CLOEXEC)
    else:  # macOS and the BSDs: a POSIX segment, unlinked before anyone can see it
        import _posixshmem  # type: ignore[import-not-found]  # C module without stubs

        while True:
            name = f"/proctor-a{os.getpid()}-{os.urandom(4).hex()}"
            try:
                fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            except FileExistsError:
                continue
            _posixshmem.shm_unlink(name)
            os.set_inheritable(fd, False)
            break
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _FdCloser:
    """Closes one descriptor, the first time it is called."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class AnonymousMemory(mmap.mmap):
    """``size`` bytes of zero-filled memory shared with children, with no name.

    It is an ``mmap.mmap``: index it, slice it, build ``memoryview``/numpy/ctypes
    objects on it (they keep it alive). Pass it to a child as a ``Process``
    argument under any start method; the child maps the same pages.

    Args:
        size: the number of bytes, > 0.

    Raises:
        TypeError: if ``size`` is not an int.
        ValueError: if ``size`` is not positive.
        RuntimeError: when pickled other than to start a child (into a queue, a
            file...): the memory has no name to find it by.
    """

    _fd: int
    _closer: _FdCloser | None = None
    _lock_fd = -1
    _lock_closer: _FdCloser | None = None

    def __new__(cls, size: int) -> AnonymousMemory:
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"size must be an int, not {type(size).__name__}: {size!r}")
        if size <= 0:
            raise ValueError(f"size must be a positive number of bytes, not {size!r}")
        fd = _open_memory(size)
        try:
            return cls._from_fd(fd, size)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _from_fd(cls, fd: int, size: int) -> AnonymousMemory:
        self = super().__new__(cls, fd, size)
        if size >= HUGE_PAGE_THRESHOLD and hasattr(mmap, "MADV_HUGEPAGE"):
            # Where the kernel allows huge pages for shared memory on request
            # (shmem_enabled=advise), a process touching this memory takes one page
            # fault per 2 MiB instead of one per 4 KiB: most of the cost of a child's
            # first write through a fresh mapping.
            try:
                self.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass
        self._fd = fd
        # The descriptor lives as long as the mapping object: whoever still holds
        # the memory (a numpy array, a ctypes object) can still pass it on. (A
        # _FdCloser called by __del__, not a weakref.finalize: every queue makes
        # one, and a finalize's registry and weakref cost a fork parent more
        # copied pages per queue.)
        self._closer = _FdCloser(fd)
        _remember(self, _file_key(fd))
        return self

    @property
    def lock_fd(self) -> int:
        """The descriptor to take this process's record locks on.

        With :func:`own_description_locks`, a description of the memory that this
        process opened for itself (a forked child opens its own); else :attr:`fd`.
        """
        fd = self._lock_fd
        if fd >= 0:
            return fd
        if not own_description_locks():
            return self._fd
        # Under the lock: two threads must not open two descriptions, whose locks
        # would conflict with each other's within this one process.
        with _rebuild_lock.get():
            if self._lock_fd < 0:
                fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDWR | os.O_CLOEXEC)
                self._lock_fd = fd
                # Called by __del__, as _closer is: a weakref.finalize (a registry
                # entry, an info object, a weakref) cost each fork child that
                # reopens this description its own copies of their pages.
                self._lock_closer = _FdCloser(fd)
                _own_descriptions.add(weakref.ref(self, _own_descriptions.discard))
            return self._lock_fd

    @property
    def buf(self) -> memoryview:
        """A new ``memoryview`` of the whole memory."""
        return memoryview(self)

    @property
    def size(self) -> int:  # type: ignore[override]  # a property, not mmap.size()
        """The size in bytes."""
        return len(self)

    @property
    def fd(self) -> int:
        """The descriptor of the memory (owned by this object)."""
        return self._fd

    def close(self) -> None:
        """Unmap the memory and close the descriptor. Idempotent.

        Raises:
            BufferError: while objects built on the memory (memoryviews, numpy
                arrays, ctypes objects) are alive; delete them first, or just drop
                every reference and let the memory go with the last of them.
        """
        if not self.closed:
            super().close()
        if self._closer is not None:
            self._closer()
        if self._lock_closer is not None:
            self._lock_closer()

    def __del__(self) -> None:
        for closer in (self._closer, self._lock_closer):
            if closer is not None:
                try:
                    closer()
                except Exception:  # nothing to tell anyone at garbage collection
                    pass

    def __enter__(self) -> AnonymousMemory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<AnonymousMemory size={len(self) if not self.closed else '?'} {state}>"

    def __reduce__(self):
        if self.closed:
            raise ValueError("cannot send a closed AnonymousMemory to a child")
        # In a message only with private record locks: elsewhere, the sender's
        # closing its duplicate once sent would drop its own locks (see above).
        private = own_description_locks()
        token = _reduction.fd_token(
            self._fd,
            "AnonymousMemory (shared memory with no name)"
            if private
            else "AnonymousMemory (shared memory with no name; this system has no "
            "open-file-description locks, which passing it to a running process needs)",
            messages=private,
        )
        return (_rebuild, (token, len(self)))


def _rebuild(token: int, size: int) -> AnonymousMemory:
    fd = _reduction.take_fd(token)
    try:
        # Under the lock: two threads rebuilding one memory must not map it twice
        # (two descriptions of one process would each wait for the other's locks).
        # (lock_fd takes it too: never call it from inside.)
        with _rebuild_lock.get():
            ref = _by_file.get(_file_key(fd))
            known = None if ref is None else ref()
            if known is not None and not known.closed:
                # The memory this process has already. Closing the descriptor that came
                # drops no lock: they are on lock_fd (only such systems send memory in
                # messages, see __reduce__; a start sends each memory once).
                os.close(fd)
                return known
            return AnonymousMemory._from_fd(fd, size)
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise


def _file_key(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


# A forked child makes its own on first use: another thread may have held it at the fork.
_rebuild_lock = _afterfork.PerProcess(_thread.allocate_lock)
# The memory this process has, by file: one AnonymousMemory each (see the docstring),
# held weakly. A plain dict of the C module's weak references, not a
# WeakValueDictionary: its KeyedRef is Python code, whose calls wrote ~13 pages per
# queue made that a fork parent with living children copies (issue 17).
_by_file: dict[tuple[int, int], weakref.ref[AnonymousMemory]] = {}


def _remember(memory: AnonymousMemory, key: tuple[int, int]) -> None:
    """Record ``memory`` as this process's mapping of the file ``key``, until it dies."""

    # (What it uses is bound now: at interpreter exit the module's globals may be
    # gone when a memory dies.)
    def forget(
        _ref: object,
        key: tuple[int, int] = key,
        by_file: dict = _by_file,
        remove: Any = _remove_dead_weakref,
    ) -> None:
        # Atomically, and only a dead entry: a memory made since may have the same
        # key (an inode number is reused once its file is gone).
        remove(by_file, key)

    _by_file[key] = weakref.ref(memory, forget)


# The memories on which this process opened a description of its own (lock_fd): weak
# references, each dropping out by itself. A plain set of them, not a WeakSet, which
# every forked child's hook walked through its iteration guard (a copied page or two).
_own_descriptions: set[weakref.ref[AnonymousMemory]] = set()


class _Heap:
    """Hands out aligned blocks of small arenas; an arena goes with its last block.

    The heap holds its current arena only weakly: a block's user (a ctypes object
    made with ``from_buffer``) holds the arena, so when every block of an arena is
    gone, the arena's memory and descriptor go too. Memory of dead blocks is not
    reused until then; that is the price of needing no free list across processes.
    """

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.arena: weakref.ref[AnonymousMemory] | None = None
        self.used = 0

    def allocate(self, size: int) -> tuple[AnonymousMemory, int]:
        if size > ARENA_SIZE // 4:
            return AnonymousMemory(_round_up(size, mmap.PAGESIZE)), 0
        with self.lock:
            arena = self.arena() if self.arena is not None else None
            if arena is None or self.used + size > len(arena):
                arena = AnonymousMemory(ARENA_SIZE)
                self.arena = weakref.ref(arena)
                self.used = 0
            offset = self.used
            self.used = _round_up(offset + max(size, 1), ALIGNMENT)
            return arena, offset


def _round_up(n: int, step: int) -> int:
    return (n + step - 1) // step * step


# A forked child must not carve blocks out of the arena its parent is still filling
# (both would hand out the same offsets): it starts a heap of its own on first use.
_heap = _afterfork.PerProcess(_Heap)


def allocate(size: int) -> tuple[AnonymousMemory, int]:
    """Reserve ``size`` zeroed bytes of anonymous shared memory.

    Returns:
        ``(memory, offset)``: the block is ``memory[offset:offset + size]``. Keep a
        reference to ``memory`` (``ctypes`` ``from_buffer`` does) for as long as the
        block is used.
    """
    if size < 0:
        raise ValueError(f"size must not be negative, not {size!r}")
    return _heap.get().allocate(size)


def _reset_after_fork() -> None:
    # The descriptions it inherited are its parent's, and so are the locks on them
    # (closing its copies drops none: the parent still has them). It opens its own.
    # At the fork, not at first use: while the child held a copy, the parent's
    # locks on them would outlive the parent.
    if not _own_descriptions:
        return
    for own in list(_own_descriptions):
        mem = own()
        if mem is None:
            continue
        if mem._lock_closer is not None:
            mem._lock_closer()
        mem._lock_fd = -1
        mem._lock_closer = None
    _own_descriptions.clear()


os.register_at_fork(after_in_child=_reset_after_fork)

if sys.platform == "win32":  # pragma: no cover
    raise ImportError("proctor's shared memory needs a POSIX system")
