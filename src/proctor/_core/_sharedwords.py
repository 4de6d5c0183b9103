"""A block of anonymous shared memory seen as 64-bit words, and who is alive to use it.

The synchronisation primitives (``_sync``) keep what an OS semaphore cannot say --
a lock's owner, an event's flag, a condition's ticket counters -- in a small block
of ``_anonmem`` shared memory each. Blocks are carved out of shared arenas
(``_anonmem.allocate``), so a thousand locks cost a few descriptors, not a
thousand. The memory has no name, so nothing can leak in ``/dev/shm`` whoever
dies; it reaches children like any ``AnonymousMemory`` (inherited under
``fork``, its descriptor sent at start under ``spawn`` and ``forkserver``).

Liveness. The arena's descriptor also carries ``fcntl`` record locks, which the
kernel drops when their process dies (before it even becomes a zombie), so a
probe tells the living from the dead exactly: no pid is trusted, and a pid the
kernel has handed to a new process does not make a dead one look alive. Each
process has an *identity* (:func:`ident`): its pid in the low ``PID_BITS`` bits
and a random nonzero nonce above, new in every process (a forked child draws its
own). Record locks may lie far beyond the end of the file, so each arena's lock
space is divided up::

    lock-space byte                           held by
    ───────────────                           ───────
    offset                                    whoever recovers the block's lock
                                              (its guard; see _lock)
    TICKET_BASE + offset // 64 * TICKET_SPAN  a thread waiting on the condition in
      + ticket % TICKET_SPAN                  this block under that ticket
    IDENT_BASE + identity                     the process with that identity, for as
                                              long as it maps the arena

Every process takes its identity byte on each arena as soon as it maps it (a
block is created or rebuilt here, or the process was forked with it) and keeps
it while the arena is open, so a lock holder, a barrier party or any process
recorded by identity is alive exactly while its byte is held.

Where the OS has them (Linux), the locks are open-file-description locks, taken
on a description of the arena that the process opened for itself
(``AnonymousMemory.lock_fd``; a forked child opens its own): they belong to that
process alone and go when it dies, and closing another descriptor of the arena (one
that arrived again in a message) drops none of them. Elsewhere they are classic
record locks, which belong to the process and go when it closes *any*
descriptor of the file: a process keeps one ``AnonymousMemory`` per arena, and
keeps a descriptor that arrives again open until the arena closes (``_anonmem``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import weakref

from ._anonmem import ALIGNMENT, AnonymousMemory, allocate, own_description_locks
from ._closing import ClosedWhenCollected
from ._system import pid_alive, random_bits

__all__ = (
    "IDENT_BASE",
    "PID_BITS",
    "PID_MASK",
    "TICKET_BASE",
    "TICKET_SPAN",
    "SharedWords",
    "ident",
    "lockf",
    "pid_of",
)

#: Bits of an identity that hold the pid: Linux pids stay below 2**22
#: (PID_MAX_LIMIT), macOS's and the BSDs' below 100000.
PID_BITS = 22
PID_MASK = (1 << PID_BITS) - 1
#: Bits of the random nonce above the pid. Identities stay below 2**53, so a
#: double holds one exactly (see ``SharedWords.floats``).
_NONCE_BITS = 31
#: Where the identity bytes start in an arena's lock space.
IDENT_BASE = 1 << 62
#: Where the condition tickets' bytes start, and how many each block has.
#: 2**40 tickets per block: two waiters collide only if one of them waits while
#: a trillion others come and go (and a collision is detected and skipped).
TICKET_BASE = 1 << 56
TICKET_SPAN = 1 << 40
# Which errors of a non-blocking lock attempt mean "someone else holds it".
_HELD = (errno.EAGAIN, errno.EACCES)
# Which errors mean "this kind of descriptor takes no record locks".
_UNSUPPORTED = tuple(
    getattr(errno, name)
    for name in ("EINVAL", "ENOTSUP", "EOPNOTSUPP", "ENOSYS")
    if hasattr(errno, name)
)


# struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for these locks).
_FLOCK = struct.Struct("hhqqi4x")


def lockf(fd: int, cmd: int, length: int, start: int) -> None:
    """``fcntl.lockf(fd, cmd, length, start)``, as an open-file-description lock
    where the process takes them (see ``_anonmem.own_description_locks``)."""
    if not own_description_locks():
        fcntl.lockf(fd, cmd, length, start)
        return
    if cmd & fcntl.LOCK_UN:
        op, kind = fcntl.F_OFD_SETLK, fcntl.F_UNLCK
    else:
        op = fcntl.F_OFD_SETLK if cmd & fcntl.LOCK_NB else fcntl.F_OFD_SETLKW
        kind = fcntl.F_WRLCK
    fcntl.fcntl(fd, op, _FLOCK.pack(kind, os.SEEK_SET, start, length, 0))


def _new_ident() -> int:
    pid = os.getpid()
    if pid > PID_MASK:  # pragma: no cover - no supported system has such pids
        raise OSError(f"pid {pid} does not fit in proctor's process identities ({PID_BITS} bits)")
    nonce = random_bits(_NONCE_BITS) or 1  # nonzero: a bare pid is nobody's identity
    return nonce << PID_BITS | pid


_ident = _new_ident()
# The arenas on which this process holds its identity byte: weak references, each
# dropping out by itself when its arena is collected. A plain set of them rather than
# a ``WeakSet``: every forked child walks it at the fork, and a WeakSet's iteration
# (a generator and an iteration guard) and rebuilding (a new reference per arena)
# wrote ~30 pages there, each a copy (issue 17).
_held: set[weakref.ref[AnonymousMemory]] = set()


def ident() -> int:
    """This process's identity: its pid plus a nonce no other process shares."""
    return _ident


def pid_of(identity: int | float) -> int:
    """The pid inside a process identity."""
    return int(identity) & PID_MASK


def _hold_identity(mem: AnonymousMemory) -> None:
    """Take this process's identity byte on ``mem``'s descriptor, once."""
    # (A reference without a callback is the arena's shared one, and equals the
    # entry, which has a callback, while the arena lives.)
    if weakref.ref(mem) not in _held and _lock_identity(mem):
        _held.add(weakref.ref(mem, _held.discard))


def _lock_identity(mem: AnonymousMemory) -> bool:
    """Lock this process's identity byte on ``mem``; False where it takes no locks."""
    try:
        # Blocking: a prober holds the byte for a moment at most.
        lockf(mem.lock_fd, fcntl.LOCK_EX, 1, IDENT_BASE + _ident)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            # Locks work here, only not for us now: going on would let others
            # take this live process for dead.
            raise OSError(
                exc.errno,
                f"cannot take this process's liveness lock on proctor's shared memory "
                f"({exc.strerror}); without it other processes could take its locks over",
            ) from exc
        # No record locks on this kind of descriptor: probes fail the same way
        # in every process, and liveness falls back to the pid (see _probe).
        return False
    return True


def _after_fork_in_child() -> None:
    global _ident
    _ident = _new_ident()
    # Record locks are not inherited: take ours on every arena the child maps. The
    # parent's entries stay (each made again would be a page written here); those
    # of arenas closed or unlockable are dropped.
    for held in list(_held):
        mem = held()
        if mem is None or mem.closed or not _lock_identity(mem):
            _held.discard(held)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _probe(fd: int, byte: int, pid: int = 0) -> bool:
    """Whether another process holds ``byte`` of ``fd``'s lock space.

    Where the process has its own lock description (Linux), one ``F_OFD_GETLK``
    asks the kernel who holds the byte: no lock is taken, nothing is raised
    when the answer is "held" (a blocked ``Lock.acquire`` asks at every slice,
    so the fewer instructions between its sleeps the better), and this
    process's own hold on the byte is never in the way. Elsewhere the probe
    tries to lock the byte and unlocks it again; never call it there for a
    byte this process holds: the probe's own unlock would drop it (record
    locks do not nest).
    """
    try:
        if own_description_locks():
            answer = fcntl.fcntl(
                fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0)
            )
            return _FLOCK.unpack(answer)[0] != fcntl.F_UNLCK
        lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, byte)
    except OSError as exc:
        if exc.errno in _HELD:
            return True
        # No record locks here: all that is left to go by is the pid.
        return pid_alive(pid) if pid else True
    except (OverflowError, struct.error):  # not a byte proctor ever locks
        return pid_alive(pid) if pid else True
    lockf(fd, fcntl.LOCK_UN, 1, byte)
    return False


class SharedWords(ClosedWhenCollected):
    """A block of anonymous shared memory as signed 64-bit words.

    Args:
        nwords: how many words the block holds (zeroed).

    Attributes:
        words: a ``memoryview`` of ``int64`` over the block; index it directly
            (``words[0] = pid``): an aligned 8-byte store is one machine store.
        floats: the same block as ``double``: for a word stored on a hot path
            with values beyond 2**30 (process identities). CPython stores a
            float into a buffer as fast as a one-digit int, while a larger int
            costs some 20 ns more; a double holds any int below 2**53 exactly.
        offset: the block's byte offset in its arena (unique within the arena).
    """

    __slots__ = ("__weakref__", "_mem", "floats", "offset", "words")

    def __init__(self, nwords: int, *, _at: tuple[AnonymousMemory, int] | None = None) -> None:
        mem, offset = allocate(nwords * 8) if _at is None else _at
        self._mem = mem
        self.offset = offset
        # Blocks are 64-byte aligned, so the int64 view is aligned too.
        self.words = memoryview(mem)[offset : offset + nwords * 8].cast("q")
        self.floats = memoryview(mem)[offset : offset + nwords * 8].cast("d")
        _hold_identity(mem)

    @property
    def fd(self) -> int:
        """The arena's descriptor for this process's record locks (take them with :func:`lockf`)."""
        return self._mem.lock_fd

    # -- liveness -----------------------------------------------------------------

    def process_alive(self, identity: int | float) -> bool:
        """Whether the process with this identity (see :func:`ident`) still runs."""
        identity = int(identity)
        if identity == _ident:
            return True
        return _probe(self._mem.lock_fd, IDENT_BASE + identity, identity & PID_MASK)

    def identity_probe(self) -> tuple[int, int]:
        """Where C code may ask the kernel whether an identity's process lives.

        ``(descriptor, IDENT_BASE)``: ``F_OFD_GETLK`` on byte ``IDENT_BASE +
        identity`` of the descriptor reports the byte held exactly while that
        process lives (as :meth:`process_alive` asks, for another process). ``(-1,
        0)`` where this process has no lock description of its own: only
        :meth:`process_alive` can ask there.
        """
        if not own_description_locks():
            return -1, 0
        return self._mem.lock_fd, IDENT_BASE

    def ticket_byte(self, ticket: int) -> int:
        """The lock-space byte a condition waiter holds under ``ticket``."""
        return TICKET_BASE + self.offset // ALIGNMENT * TICKET_SPAN + ticket % TICKET_SPAN

    def try_hold(self, byte: int) -> bool:
        """Lock ``byte`` for this process; False if another process holds it.

        Where the descriptor takes no record locks, True (nothing can be held,
        and every probe then says "held").
        """
        try:
            lockf(self._mem.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, byte)
        except OSError as exc:
            return exc.errno not in _HELD
        return True

    def let_go(self, byte: int) -> None:
        """Unlock ``byte`` (taken with :meth:`try_hold`); nothing to do once closed.

        (A waiter that another thread's ``close()`` woke lets go on its way out:
        its owner let go of its bytes before closing, ``Condition.close``.)
        """
        mem = self._mem
        if mem is None:
            return
        try:
            lockf(mem.lock_fd, fcntl.LOCK_UN, 1, byte)
        except OSError:
            pass  # never held: no record locks on this descriptor

    def held_elsewhere(self, byte: int) -> bool:
        """Whether another process holds ``byte`` (never ask for one of ours)."""
        return _probe(self._mem.lock_fd, byte)

    # -- life cycle -----------------------------------------------------------------

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
        # Every holder of a view sees it released from now on (ValueError on use).
        words.release()
        self.floats.release()
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
