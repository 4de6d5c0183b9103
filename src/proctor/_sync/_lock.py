"""Lock and RLock: process-shared locks that are handed on when their holder dies.

A lock is an OS semaphore (``_semlock.NamedSemaphore``) plus two words of
anonymous shared memory (``_sharedwords.SharedWords``) that record what the
semaphore cannot say: *which process holds it*::

    acquire() fast path                   a waiter (_wait.wait_for_post)
    ───────────────────                   ──────────────────────────────
    sem_trywait() ── ok ─▶ owner := me    sem_timedwait(a slice) ──────── ok ─▶ owner := me
                                               │ timed out
    release()                                  ▼
    ─────────                             owner recorded and its identity byte free?
    owner := fresh token (<= 0)                │ yes: under an fcntl lock (freed by
    sem_post()                                 │ the kernel if *we* die), re-check
                                               ▼ and take the dead owner's place
                                          OwnerDiedWarning(pid)

The owner is recorded as a process identity (``_sharedwords.ident``: the pid
and a nonce), and every process holds an ``fcntl`` lock on its identity's byte
of the arena for as long as it maps it. The kernel drops that lock when the
process dies, so "the byte is free" means "the holder is dead" exactly -- a
zombie, or a pid already reused by another process, changes nothing.

Only the holder writes ``owner``, so the record needs no atomic instructions: a
dead identity still recorded while the semaphore is taken proves that process
died holding the lock (a release would have overwritten it, and a dead process
cannot take the lock again). Release writes a token that changes every time, so
a waiter can also tell "nobody recorded, nothing moved for LIMBO_GRACE seconds"
(a process killed in the instant between ``sem_trywait`` and the owner store)
from a lock that is merely busy.

This module also holds the helpers the other primitives share (timeouts, the
process identity, the pickling guard).
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import itertools
import os
import time
import warnings
from collections.abc import Callable

from .._core import _lazy_errors, _reduction, _runtime, _sharedwords
from .._core._afterfork import PerProcess
from .._core._closing import ClosedWhenCollected
from .._core._sharedwords import SharedWords, lockf, pid_of
from .._core._system import random_bits
from .._core._timeout import check_timeout as _check_timeout
from .._core._timeout import deadline as _deadline
from .._core._wait import CHECK_INTERVAL, POSTED, TIMED_OUT, wait_for_post
from .._reaper._semlock import NamedSemaphore
from . import _accel
from ._memsem import MemorySemaphore

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from typing import Any

__all__ = (
    "CHECK_INTERVAL",
    "LIMBO_GRACE",
    "SPIN_TRIES",
    "Lock",
    "LockNotOwnedError",
    "PyLock",
    "PyRLock",
    "RLock",
)

#: Non-blocking retries before a contended acquire() goes to sleep: about 2 us,
#: the length of a short critical section on another core, and far cheaper than a
#: futex sleep and wake-up (10-20 us). Keeps two busy processes from convoying.
SPIN_TRIES = 50

#: A lock that is taken while no owner is recorded, and whose release token has
#: not changed for this long, was taken by a process that died before it could
#: record itself (a window of a few hundred nanoseconds). A live process passes
#: that window in microseconds, so this only has to outlast scheduling hiccups.
LIMBO_GRACE = 1.0

_get_ident = _thread.get_ident
_monotonic = time.monotonic

_native = _accel.native


def _tokens() -> Any:
    """A fresh sequence of release tokens (negative), one per process.

    With the C accelerator, its counter is the process's one sequence (both
    implementations draw from it); else an ``itertools.count``.
    """
    first = -random_bits(28) - 1.0
    if _native is None:
        return itertools.count(first, -1.0).__next__
    _native.set_process(_ident, first)
    return _native.next_token


# Per-process state, reset in a forked child. The owner word holds _ident or a
# token, as doubles (SharedWords.floats: an identity has up to 53 bits, and a
# float is stored as fast as a small int, a large int ~20 ns slower).
_ident = float(_sharedwords.ident())
_next_token = _tokens()
# fcntl record locks belong to the process: this serialises our own threads first.
# (Made again on first use in a forked child: recovery is rare, and every fork
# child of a lock user would otherwise allocate one in the hook below.)
_recovery_mutex: PerProcess[Any] = PerProcess(_thread.allocate_lock)


def _after_fork_in_child() -> None:
    global _ident, _next_token
    # (_sharedwords' hook, registered first, has drawn the child's identity.)
    _ident = float(_sharedwords.ident())
    # A fresh token sequence: the parent's continues, and equal tokens written by
    # two processes would hide activity from a waiter watching for limbo.
    _next_token = _tokens()


os.register_at_fork(after_in_child=_after_fork_in_child)


class LockNotOwnedError(AssertionError, RuntimeError):
    """A lock or condition was used by a thread or process that does not hold it.

    Subclasses ``AssertionError`` (what ``multiprocessing`` raises for an
    ``RLock`` released by a non-owner) and ``RuntimeError`` (what ``threading``
    raises), so ``except`` clauses written for either keep working.
    """


# ─── helpers ─────────────────────────────────────────────────────────────────


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - _monotonic())


def _blocking(block: Any, timeout: Any) -> bool:
    """``acquire(block, timeout)``'s arguments, judged before the lock is tried.

    So a free lock and a taken one accept and refuse the same calls (as the
    stdlib's do): ``block``'s truth is taken, raising what it raises, and a
    ``timeout`` other than ``None`` is checked (``_core._timeout.check_timeout``)
    whether or not the call blocks. Returns ``bool(block)``.
    """
    blocking = bool(block)
    if timeout is not None:
        _check_timeout(timeout)
    return blocking


def _as_acquire(method: Callable[..., bool]) -> Callable[..., bool]:
    """Name ``method`` ``acquire`` for Python's own errors about the call.

    A call with wrong arguments (``acquire(1, 2, 3)``, ``acquire(blocking=1)``)
    then says ``acquire() ...``, as the stdlib's locks do, rather than naming
    the private class (or the C accelerator's fallback) that holds the code.
    """
    method.__qualname__ = "acquire"
    return method


@contextlib.contextmanager
def _recovery_guard(shared: SharedWords):
    """Serialise lock recovery among all processes; the kernel frees it if we die."""
    fd, byte = shared.fd, shared.offset
    with _recovery_mutex.get():
        lockf(fd, fcntl.LOCK_EX, 1, byte)
        try:
            yield
        finally:
            lockf(fd, fcntl.LOCK_UN, 1, byte)


def _holder_name() -> str:
    """How the stdlib's reprs name the calling thread as a lock's holder."""
    # threading is imported for a repr, not with this module: a fork server that
    # loads the locks would have it, and its after-fork hook, in every child (issue 17).
    import threading

    name = _runtime.process_name()
    thread = threading.current_thread().name
    return name if thread == "MainThread" else f"{name}|{thread}"


def _not_shareable(obj: object) -> None:
    """Refuse to pickle ``obj`` where nothing can carry its descriptors and names."""
    _reduction.need_carrier(
        type(obj).__name__,
        f"{type(obj).__name__} objects should only be shared between processes through "
        "inheritance or proctor's messages: pass it to Process(target=..., args=(...)) "
        "when the child is started, or send it with Connection.send() through a Unix "
        "socket, put it on a proctor Queue, or pass it to a proctor Pool's task; it "
        "cannot be pickled into a file or with plain pickle",
    )


# ─── Lock and RLock ──────────────────────────────────────────────────────────


_LOCK_WORDS = 2  # owner, recoveries
# The attributes of every lock object (declared by the concrete classes, so that
# a native class can put its C base's layout first).
_LOCK_SLOTS = ("__weakref__", "_limbo", "_named", "_post", "_shared", "_try", "_w")


class _OwnedLock(ClosedWhenCollected):
    """Shared machinery of Lock and RLock: the semaphore, the owner word, recovery."""

    if not TYPE_CHECKING:  # (the type checker takes the attributes as declared below)
        __slots__ = ()  # the concrete classes declare _LOCK_SLOTS

    _OWNER = 0  # index of the owner word in the shared block
    _RECOVERIES = 1  # how many times a dead holder was replaced (Barrier watches it)
    # proctor's own users of a lock whose data cannot be left half-updated
    # (queues: every change commits with one store) turn the warning off.
    _warn_on_takeover = True
    # Non-blocking tries before the slow path sleeps (a native class has spun in C).
    _spin = SPIN_TRIES
    # A Condition waiter's sleep slice in C (_native.wait_slice), or None: the
    # Condition on this lock then runs it in Python (the lock tells which
    # implementation is active for the objects built on it).
    _wait_slice: Callable[..., int] | None = None
    # Condition.notify() and Event.set() in one C call each (_native.cond_notify,
    # _native.event_set), or None: they run in Python. Either may answer
    # NotImplemented (having changed nothing) to leave a call to Python.
    _c_notify: Callable[..., Any] | None = None
    _c_event_set: Callable[..., Any] | None = None

    _named: NamedSemaphore | MemorySemaphore
    _shared: SharedWords
    _try: Any
    _post: Any
    _w: memoryview[float] | _ClosedWords
    _limbo: list
    # None, or the wake-ups a Condition's notify() deferred to the release that
    # ends this holding (zero-argument callables; see _condition.py). Only the
    # holder adds to it; the release takes the whole list after its own post.
    _deferred: list[Callable[[], Any]] | None

    if TYPE_CHECKING:  # provided by Lock and RLock; Condition uses them on either

        def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...
        def release(self) -> None: ...
        def _release_save(self) -> Any: ...
        def _acquire_restore(self, state: Any) -> None: ...

    def __init__(self, *, ctx: Any = None) -> None:
        _runtime.check_ctx(ctx, type(self).__name__)
        self._setup(NamedSemaphore(1, 1), SharedWords(_LOCK_WORDS))

    @classmethod
    def _over(cls, semaphore: NamedSemaphore | MemorySemaphore) -> Any:
        """A new lock over ``semaphore`` (made with count 1 and maxvalue 1).

        For proctor's own users of a lock that choose where its semaphore lives
        (a queue's locks: in shared memory where ``_memsem.AVAILABLE``).
        """
        return _rebuild_lock(cls, semaphore, SharedWords(_LOCK_WORDS))

    def _setup(self, named: NamedSemaphore | MemorySemaphore, shared: SharedWords) -> None:
        self._named = named
        self._shared = shared
        # Bound once: the fast path is a C call and a store, nothing else.
        self._try = named.sem.acquire
        self._post = named.sem.release
        self._w = shared.floats
        # [release token seen while no owner was recorded, since when]: kept
        # across calls, so that callers looping on short timeouts still see a
        # holder that died before recording itself stay dead for LIMBO_GRACE.
        self._limbo = [None, 0.0]
        self._deferred = None
        self._attach_fast_paths()

    # -- hooks for subclasses --------------------------------------------------

    def _attach_fast_paths(self) -> None:
        """Point the C fast paths at the semaphore and the owner word (native classes)."""

    def _detach(self) -> None:
        """Let the C fast paths go of the semaphore and the arena (native classes)."""

    def _arm_probe_here(self) -> None:
        """Let the C ``acquire(False)`` ask here whether a holder lives (native classes)."""

    def _became_owner(self) -> None:
        """Record process-local ownership after taking the semaphore (RLock)."""
        self._w[0] = _ident

    # -- slow path -------------------------------------------------------------

    def _acquire_slow(self, block: bool, timeout: Any) -> bool:
        """Wait for the lock in slices, taking it over from a dead holder."""
        watched = self._limbo
        if not block:
            # (A forked child's C probe is its parent's until armed here.)
            self._arm_probe_here()
            return self._recover(watched)
        outcome = wait_for_post(
            self._try, _deadline(timeout), lambda: self._recover(watched), self._spin
        )
        if outcome == POSTED:
            self._became_owner()
        return outcome != TIMED_OUT  # READY: _recover() took the lock over

    def _recover(self, watched: list) -> bool:
        """Take the lock if its holder is dead; return whether we now hold it."""
        owner = self._w[0]
        if owner > 0:
            watched[0] = None
            if owner == _ident or self._shared.process_alive(owner):
                return False
            return self._take_over(owner)
        now = _monotonic()
        if watched[0] != owner:
            watched[0], watched[1] = owner, now
            return False
        if now - watched[1] < LIMBO_GRACE:
            return False
        return self._take_over(owner)

    def _take_over(self, expected: float) -> bool:
        with _recovery_guard(self._shared):
            if self._try(False):
                # Released in the meantime: an ordinary acquisition.
                self._became_owner()
                return True
            if self._w[0] != expected:
                return False  # someone else recovered it, or a live holder recorded itself
            self._became_owner()
            self._w[self._RECOVERIES] += 1
        if not self._warn_on_takeover:
            return True
        if expected > 0:
            what = (
                f"process {pid_of(expected)} died while holding {type(self).__name__} "
                f"{self._named.name!r}"
            )
        else:
            what = (
                f"{type(self).__name__} {self._named.name!r} was taken by a process that "
                f"died before recording itself (no owner recorded for {LIMBO_GRACE} s)"
            )
        try:
            warnings.warn(
                f"{what}; process {pid_of(_ident)} has taken it over. The data it protected may be "
                "half-updated: check it before relying on it. (To make this an error: "
                "warnings.simplefilter('error', proctor.OwnerDiedWarning).)",
                _lazy_errors.OwnerDiedWarning,
                # (The same frames under the C acquire, which shows none: its
                # Python fallback, _acquire_after_c, stands where acquire stands.)
                stacklevel=5,
            )
        except BaseException as exc:
            # The warning is an error here: leave the lock as the dead holder left it,
            # so every acquirer hears about the death until one accepts it.
            self._forget_ownership()
            self._w[0] = expected
            if isinstance(exc, _lazy_errors.OwnerDiedWarning):
                # Its text said the lock was taken over: not so.
                exc.args = (
                    f"{what}. The lock stays with the dead holder: every acquire() "
                    "raises this while OwnerDiedWarning is an error; let the warning "
                    "through (a 'default' or 'ignore' filter for it) to take the lock over "
                    "once the data it protected has been checked.",
                )
            raise
        return True

    def _forget_ownership(self) -> None:
        """Drop process-local ownership state (RLock)."""

    # -- deferred wake-ups (Condition.notify) -------------------------------------

    def _defer(self, post: Callable[[], Any], count: int) -> None:
        """Have the release that ends this holding call ``post`` ``count`` times.

        The calls come right after the lock's own post, so that a woken
        condition waiter finds the lock free instead of waking, finding it
        taken and sleeping again. Called by the holder only.
        """
        todo = self._deferred
        if todo is None:
            self._deferred = todo = []
        todo.extend([post] * count)

    def _run_deferred(self) -> None:
        """After a release's post: make the deferred wake-ups (each once), then yield.

        The kernel tends to queue a woken process on the waker's CPU, where it
        waits until the waker blocks or its slice ends; yielding lets it run
        now (as ``Event.set()`` does).
        """
        todo = self._deferred
        if todo is not None:
            self._deferred = None
            for post in todo:
                post()
            os.sched_yield()

    # -- sharing ----------------------------------------------------------------

    def __reduce__(self):
        _not_shareable(self)
        return (_rebuild_lock, (type(self), self._named, self._shared))

    # -- introspection ----------------------------------------------------------

    def _owner_text(self) -> str:
        if self._shared.closed:
            return "closed"
        owner = self._w[0]
        if owner > 0:
            mine = " (this process)" if owner == _ident else ""
            return f"locked by pid {pid_of(owner)}{mine}"
        try:
            zero = self._named.sem._is_zero()
        except (ValueError, OSError, NotImplementedError):
            return "state unknown"
        return "locked (owner not recorded yet)" if zero else "unlocked"

    def _is_owned(self) -> bool:
        return self._w[0] == _ident

    def close(self) -> None:
        """Release this process's handles on the OS objects; idempotent.

        Other processes keep using the lock. Any use after ``close()`` in this
        process raises ``ValueError``. Garbage collection does the same.
        """
        # Drop the C fast paths' and the bound methods' hold first: they keep the C
        # semaphore open, and the reaper only unlinks a name that no process still maps.
        self._detach()
        self._deferred = None
        self._try = self._post = _closed_call
        self._w = _ClosedWords()
        self._named.close()
        self._shared.close()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.release()


def _closed_error(what: str = "lock") -> ValueError:
    """The error of any use of a primitive (``what``) after its ``close()`` here."""
    return ValueError(f"this {what} is closed in this process; it cannot be used any more")


def _closed_call(*args: Any) -> Any:
    raise _closed_error()


class _ClosedWords:
    """Stands in for a closed primitive's shared words: every use raises its closed error."""

    __slots__ = ("what",)

    def __init__(self, what: str = "lock") -> None:
        self.what = what

    def __getitem__(self, index: int) -> float:
        raise _closed_error(self.what)

    def __setitem__(self, index: int, value: float) -> None:
        raise _closed_error(self.what)


def _rebuild_lock(
    cls: type[_OwnedLock], named: NamedSemaphore | MemorySemaphore, shared: SharedWords
) -> _OwnedLock:
    obj = cls.__new__(cls)
    obj._setup(named, shared)
    return obj


class _LockMethods(_OwnedLock):
    """The pure-Python Lock: its fast paths, and what the C ones call for the rest."""

    if not TYPE_CHECKING:
        __slots__ = ()

    @_as_acquire
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the lock.

        Args:
            block: wait for the lock if it is taken; ``False`` only tries.
            timeout: with ``block``, give up after this many seconds (``None``
                waits forever).

        Returns:
            Whether the lock was acquired.

        Raises:
            TypeError: ``timeout`` is not a number.
            ValueError: ``timeout`` is NaN.
            OwnerDiedWarning: (as an error, only if the warnings filter says so) the
                previous holder died; the lock then stays with the dead holder.
        """
        if block is not True or timeout is not None:
            block = _blocking(block, timeout)
        if self._try(False):
            self._w[0] = _ident
            return True
        return self._acquire_slow(block, timeout)

    @_as_acquire
    def _acquire_after_c(self, block: bool = True, timeout: float | None = None) -> bool:
        """``acquire()`` once the C fast path found the lock taken (or the call unusual)."""
        if block is not True or timeout is not None:
            block = _blocking(block, timeout)
        if self._try(False):
            self._became_owner()  # (the C version: also which thread took it)
            return True
        return self._acquire_slow(block, timeout)

    def release(self) -> None:
        """Release the lock.

        Raises:
            ValueError: the lock is not locked.
        """
        self._w[0] = _next_token()
        try:
            self._post()
        except ValueError:
            raise ValueError(
                "release() called on an unlocked Lock: every release() must match an "
                "earlier acquire()"
            ) from None
        if self._deferred is not None:
            self._run_deferred()

    def __enter__(self) -> bool:
        if self._try(False):
            self._w[0] = _ident
            return True
        return self._acquire_slow(True, None)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._w[0] = _next_token()
        self._post()
        if self._deferred is not None:
            self._run_deferred()

    # Condition support: the lock is released around a wait and taken back after.
    def _release_save(self) -> None:
        self.release()

    def _acquire_restore(self, state: None) -> None:
        self.acquire()

    def _taken_by_this_thread(self) -> bool:
        """Whether the thread calling took the lock this process holds."""
        # The semaphore's own counters (per process) tell which thread took it
        # last. A lock taken over from a dead holder was not taken through them:
        # then all that is known is that this process holds it.
        sem = self._named.sem
        return bool(sem._is_mine() or sem._count() <= 0)

    def __repr__(self) -> str:
        # multiprocessing's form: owner=None, =MainProcess (the calling thread holds
        # it; "|<thread>" if that is not the main thread), =SomeOtherThread,
        # =SomeOtherProcess. (The holder's pid is in error messages.)
        name = type(self).__name__
        if self._shared.closed:
            return f"<{name}(closed)>"
        owner = self._w[0]
        try:
            if owner == _ident:
                holder = _holder_name() if self._taken_by_this_thread() else "SomeOtherThread"
            elif owner > 0 or self._named.sem._is_zero():
                holder = "SomeOtherProcess"
            else:
                holder = "None"
        except (ValueError, OSError, NotImplementedError):
            holder = "unknown"
        return f"<{name}(owner={holder})>"


class _RLockMethods(_OwnedLock):
    """The pure-Python RLock: its fast paths, and what the C ones call for the rest."""

    if not TYPE_CHECKING:
        __slots__ = ()

    if TYPE_CHECKING:
        _tid: int | None
        _depth: int

    def _setup(self, named: NamedSemaphore | MemorySemaphore, shared: SharedWords) -> None:
        self._tid = None
        self._depth = 0
        super()._setup(named, shared)

    def _became_owner(self) -> None:
        self._tid = _get_ident()
        self._depth = 1
        self._w[0] = _ident

    def _forget_ownership(self) -> None:
        self._tid = None
        self._depth = 0

    @_as_acquire
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the lock, or go one level deeper if this thread holds it.

        Args:
            block: wait for the lock if another thread holds it.
            timeout: with ``block``, give up after this many seconds.

        Returns:
            Whether the lock was acquired.

        Raises:
            TypeError: ``timeout`` is not a number.
            ValueError: ``timeout`` is NaN.
        """
        if block is not True or timeout is not None:
            block = _blocking(block, timeout)
        me = _get_ident()
        if self._tid == me and self._w[0] == _ident:
            self._depth += 1
            return True
        if self._try(False):
            self._tid = me
            self._depth = 1
            self._w[0] = _ident
            return True
        return self._acquire_slow(block, timeout)

    def release(self) -> None:
        """Leave one level; release the lock when the outermost level is left.

        Raises:
            LockNotOwnedError: (an ``AssertionError``, as in ``multiprocessing``) the
                calling thread does not hold the lock.
        """
        if self._tid != _get_ident() or self._w[0] != _ident:
            raise LockNotOwnedError(
                "release() of an RLock that this thread does not hold "
                f"({self._owner_text()}); only the thread that acquired it may release it"
            )
        depth = self._depth - 1
        if depth:
            self._depth = depth
            return
        self._depth = 0
        self._tid = None
        self._w[0] = _next_token()
        self._post()
        if self._deferred is not None:
            self._run_deferred()

    __enter__ = acquire

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.release()

    def _is_owned(self) -> bool:
        return self._w[0] == _ident and self._tid == _get_ident()

    def _release_save(self) -> int:
        depth = self._depth
        self._depth = 1
        self.release()
        return depth

    def _acquire_restore(self, depth: int) -> None:
        self.acquire()
        self._depth = depth

    def __repr__(self) -> str:
        # multiprocessing's form: (holder, depth), with the holder named as for Lock.
        name = type(self).__name__
        if self._shared.closed:
            return f"<{name}(closed)>"
        owner = self._w[0]
        try:
            if owner == _ident and self._tid == _get_ident():
                holder, depth = _holder_name(), str(self._depth)
            elif owner == _ident:
                holder, depth = "SomeOtherThread", "nonzero"
            elif owner > 0 or self._named.sem._is_zero():
                holder, depth = "SomeOtherProcess", "nonzero"
            else:
                holder, depth = "None", "0"
        except (ValueError, OSError, NotImplementedError):
            holder, depth = "unknown", "unknown"
        return f"<{name}({holder}, {depth})>"


_LOCK_DOC = """A non-recursive lock shared by processes, handed on when its holder dies.

    Behaves as ``multiprocessing.Lock``: any process or thread may release it.

    Args:
        ctx: keyword-only, as for ``multiprocessing.synchronize.Lock(ctx=...)``:
            ``None`` or any proctor context (the lock works under every start
            method, so the context is not kept).

    Raises:
        TypeError: ``ctx`` is not ``None`` or a proctor context (a
            ``multiprocessing`` context, say).

    Note:
        If the process holding the lock dies (even by SIGKILL), the next
        ``acquire()`` -- here or in any other process -- succeeds within 0.5 s
        of the death (sooner in a wait that began recently: a wait's re-checks
        back off from every ``CHECK_INTERVAL``, 0.1 s, to every 0.5 s), returns
        ``True`` and issues
        :class:`proctor.OwnerDiedWarning` naming the dead pid.
        ``multiprocessing.Lock`` stays locked forever in that case.
    """

_RLOCK_DOC = """A recursive lock shared by processes, handed on when its holder dies.

    Behaves as ``multiprocessing.RLock``: the thread that acquired it may acquire
    it again, and must release it as many times.

    Args:
        ctx: keyword-only; ``None`` or any proctor context, as for :class:`Lock`.

    Raises:
        TypeError: ``ctx`` is not ``None`` or a proctor context.

    Note:
        A dead holder is replaced as for :class:`Lock`; the new holder starts
        at recursion depth 1 whatever the dead one's depth was.
    """


# The implementations. Each is named by what it is (the qualified name, which
# pickling uses to find the class again in the receiver) and calls itself by
# the public name (__name__, which reprs and messages show).


class PyLock(_LockMethods):
    __doc__ = _LOCK_DOC
    __slots__ = (*_LOCK_SLOTS, "_deferred")  # (a native class has _deferred in C)


class PyRLock(_RLockMethods):
    __doc__ = _RLOCK_DOC
    __slots__ = (*_LOCK_SLOTS, "_deferred", "_depth", "_tid")


PyLock.__name__, PyRLock.__name__ = "Lock", "RLock"

if _native is not None:
    from ._native import LockCore, RLockCore, cond_notify, event_set

    # (None on macOS, which has no sem_timedwait: Condition then sleeps in Python.)
    _c_wait_slice: Callable[..., int] | None = getattr(_native, "wait_slice", None)

    def _arm_c_probe(self: Any) -> None:
        # (Each native class's _arm_probe_here.)
        self._arm_probe(*self._shared.identity_probe())

    class NativeLock(LockCore, _LockMethods):
        # The C base comes first: its acquire, release, __enter__, __exit__ and
        # _became_owner are the ones called; the rest is _LockMethods'.
        __doc__ = _LOCK_DOC
        __slots__ = _LOCK_SLOTS
        _spin = 0  # the C acquire has spun already
        _wait_slice = staticmethod(_c_wait_slice) if _c_wait_slice else None
        _c_notify = staticmethod(cond_notify)
        _c_event_set = staticmethod(event_set)

        def _attach_fast_paths(self) -> None:
            self._attach(
                self._named.sem,
                self._shared.floats.obj,
                self._shared.offset,
                _LockMethods._acquire_after_c,
                _LockMethods.release,
            )
            self._arm_probe_here()

        _arm_probe_here = _arm_c_probe

        def _taken_by_this_thread(self) -> bool:
            tid = self._holder_tid
            return tid is None or tid == _get_ident()

    class NativeRLock(RLockCore, _RLockMethods):
        # _tid and _depth are the C base's (properties over its fields).
        __doc__ = _RLOCK_DOC
        __slots__ = _LOCK_SLOTS
        _spin = 0
        _wait_slice = staticmethod(_c_wait_slice) if _c_wait_slice else None
        _c_notify = staticmethod(cond_notify)

        def _attach_fast_paths(self) -> None:
            self._attach(
                self._named.sem,
                self._shared.floats.obj,
                self._shared.offset,
                _RLockMethods.acquire,
                _RLockMethods.release,
            )
            self._arm_probe_here()

        _arm_probe_here = _arm_c_probe

    NativeLock.__name__, NativeRLock.__name__ = "Lock", "RLock"


def __getattr__(name: str) -> type:
    # A native lock pickled to a process that runs the pure implementation
    # (PROCTOR_PURE_PYTHON set only there) is rebuilt as the pure one: both run
    # the same protocol on the same semaphore and words.
    if name in ("NativeLock", "NativeRLock") and _native is None:
        return PyLock if name == "NativeLock" else PyRLock
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The public classes: the active implementation (the type checker sees the pure
# one, whose API both share).
if TYPE_CHECKING:
    Lock = PyLock
    RLock = PyRLock
elif _native is not None:
    Lock, RLock = NativeLock, NativeRLock
else:
    Lock, RLock = PyLock, PyRLock
