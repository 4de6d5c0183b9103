"""Condition, Event and Barrier: waiting across processes, never on the dead.

A condition keeps a table of waiting threads in anonymous shared memory (pid,
thread, ticket, notified) next to a wake-up semaphore::

    wait()                                   notify(n)   (both under the lock)
    ──────                                   ─────────
    enter a slot (ticket t) ─┐               mark the n oldest live slots notified
    release the lock         │               post n wake-ups
    sem_wait() ◀─────────────┼──────────────┘
    retake the lock          │
    my slot notified? ─ yes ─┴─▶ leave the slot, return True
          │ no: the wake-up was meant for another waiter (or a dead one):
          └──▶ hand it back if a live notified waiter still needs it, wait again

``notify`` never waits for the woken process (``multiprocessing.Condition.notify``
blocks until the woken process answers -- forever, if it was killed), and a
dead waiter is skipped. Each waiting process holds an ``fcntl`` record lock on a
byte of its own (``SharedWords.liveness_byte``); the kernel drops it when the
process dies, so liveness checks see neither zombies nor reused pids.

``Event`` is a flag on a condition whose waiters do not need to retake the lock
to return; ``Barrier`` keeps its round counters there and breaks when a waiting
party dies. Both use a ``Lock`` inside, which is handed on if its holder dies.
"""

from __future__ import annotations

import fcntl
import numbers
import os
import threading
from collections.abc import Callable
from typing import Any

from .._core._sharedwords import SharedWords
from .._reaper._semlock import SEM_VALUE_MAX, NamedSemaphore
from . import _lock
from ._lock import (
    CHECK_INTERVAL,
    Lock,
    LockNotOwnedError,
    RLock,
    _check_timeout,
    _deadline,
    _get_ident,
    _monotonic,
    _not_shareable,
    _OwnedLock,
    _remaining,
)

__all__ = ("Barrier", "BrokenBarrierError", "Condition", "Event")


class BrokenBarrierError(threading.BrokenBarrierError):
    """A ``Barrier`` was reset or aborted, timed out, or lost a party that died."""


# ─── Condition ───────────────────────────────────────────────────────────────

# The condition's block: a small header, then one slot per waiting thread.
_TICKET = 0  # next ticket number: notify wakes the oldest waiters first
_USED = 7  # slots in use are all below this word index (bounds every scan)
_HEADER = 8  # words 1..6 belong to the primitive built on the condition
_SLOT = 4  # pid, thread id, ticket, notified
_PID, _TID, _TKT, _NOTIFIED = range(4)
#: Room for this many waiting threads per condition (4 KiB of shared memory).
_MAX_WAITERS = 126
_CONDITION_WORDS = _HEADER + _MAX_WAITERS * _SLOT


class _WaitQueue:
    """The shared table of waiting threads.

    Every method runs under the condition's lock, except :meth:`take_if_notified`,
    which only clears the caller's own slot.
    """

    __slots__ = ("end", "fd", "shared", "w")

    def __init__(self, shared: SharedWords) -> None:
        self.shared = shared
        self.w = shared.words
        self.fd = shared.fd
        self.end = _HEADER + (len(self.w) - _HEADER) // _SLOT * _SLOT

    def _mark_alive(self) -> None:
        # The byte at offset <pid> stays locked by this process until it dies: the
        # kernel drops the lock then (before the process even becomes a zombie),
        # so a probe tells a live waiter from a dead one exactly, reused pids too.
        # Taken again on every enter(): a record lock also goes when *any*
        # descriptor of the file is closed in this process. One cheap syscall.
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, self.shared.liveness_byte(_lock._pid))

    def alive(self, pid: int) -> bool:
        """Whether waiter process ``pid`` still runs (it holds its byte lock)."""
        if pid == _lock._pid:
            return True
        byte = self.shared.liveness_byte(pid)
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, byte)
        except OSError:
            return True  # the byte is locked: its process lives
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, byte)
        return False

    def enter(self) -> int:
        """Add the calling thread; return its slot."""
        w = self.w
        self._mark_alive()
        for attempt in range(2):
            for slot in range(_HEADER, self.end, _SLOT):
                if w[slot + _PID] == 0:
                    ticket = w[_TICKET] + 1
                    w[_TICKET] = ticket
                    w[slot + _TID] = _get_ident()
                    w[slot + _TKT] = ticket
                    w[slot + _NOTIFIED] = 0
                    w[slot + _PID] = _lock._pid
                    if slot + _SLOT > w[_USED]:
                        w[_USED] = slot + _SLOT
                    return slot
            if attempt == 0:
                self.purge()
        raise RuntimeError(
            f"more than {(self.end - _HEADER) // _SLOT} threads are waiting on one "
            "Condition; proctor's condition table is full"
        )

    def leave(self, slot: int) -> None:
        if self.w[slot + _PID] == _lock._pid:
            self.w[slot + _PID] = 0

    def notified(self, slot: int) -> bool:
        return self.w[slot + _NOTIFIED] != 0

    def take_if_notified(self, slot: int) -> bool:
        """Without the lock: if our slot was notified, free it and return True."""
        w = self.w
        if w[slot + _NOTIFIED]:
            # Notifiers skip notified slots, and a new waiter can only claim the
            # slot under the lock after this store: clearing our own slot is safe.
            w[slot + _PID] = 0
            return True
        return False

    def _slots(self) -> range:
        return range(_HEADER, min(self.w[_USED], self.end), _SLOT)

    def purge(self) -> list[int]:
        """Free the slots of dead processes; return their pids."""
        w = self.w
        dead: list[int] = []
        for slot in self._slots():
            pid = w[slot + _PID]
            if pid and (pid in dead or not self.alive(pid)):
                w[slot + _PID] = 0
                if pid not in dead:
                    dead.append(pid)
        return dead

    def notify(self, n: int) -> int:
        """Mark up to ``n`` of the oldest unnotified live waiters; return how many."""
        w = self.w
        waiting = [
            (w[slot + _TKT], slot)
            for slot in self._slots()
            if w[slot + _PID] and not w[slot + _NOTIFIED]
        ]
        if len(waiting) <= n:
            # Everyone is woken: no need to tell the dead from the living first. A
            # dead waiter's wake-up is dropped by whichever live waiter takes it.
            for _, slot in waiting:
                w[slot + _NOTIFIED] = 1
            return len(waiting)
        waiting.sort()
        count = 0
        verdict: dict[int, bool] = {}
        for _, slot in waiting:
            if count >= n:
                break
            pid = w[slot + _PID]
            alive = verdict.get(pid)
            if alive is None:
                alive = verdict[pid] = self.alive(pid)
            if not alive:
                w[slot + _PID] = 0
                continue
            w[slot + _NOTIFIED] = 1
            count += 1
        return count

    def someone_notified(self) -> bool:
        """Whether a live waiter was notified and has not taken its wake-up yet."""
        w = self.w
        for slot in self._slots():
            pid = w[slot + _PID]
            if pid and w[slot + _NOTIFIED]:
                if self.alive(pid):
                    return True
                w[slot + _PID] = 0
        return False

    def count(self) -> int:
        """Waiters not yet notified (dead ones included until purged)."""
        w = self.w
        return sum(1 for slot in self._slots() if w[slot + _PID] and not w[slot + _NOTIFIED])


class Condition:
    """A condition variable shared by processes (``multiprocessing.Condition``).

    Args:
        lock: a :class:`Lock` or :class:`RLock` to build on; a new
            :class:`RLock` by default.

    Raises:
        TypeError: ``lock`` is not a proctor ``Lock`` or ``RLock``.

    Note:
        ``notify()`` never waits for the woken process (``multiprocessing``'s
        does, and hangs if that process died), and a waiter that dies is
        skipped. If a process dies holding the lock, the next acquirer
        (including a ``wait()`` returning) gets :class:`proctor.OwnerDiedWarning`.
    """

    __slots__ = ("__weakref__", "_lock", "_named", "_queue", "_shared", "_w")

    def __init__(self, lock: Lock | RLock | None = None) -> None:
        if lock is None:
            lock = RLock()
        elif not isinstance(lock, _OwnedLock):
            raise TypeError(
                "Condition(lock) needs a proctor.Lock or proctor.RLock (one that other "
                f"processes can share), not {type(lock).__name__}"
            )
        self._setup(lock, NamedSemaphore(0, SEM_VALUE_MAX), SharedWords(_CONDITION_WORDS))

    def _setup(self, lock: _OwnedLock, named: NamedSemaphore, shared: SharedWords) -> None:
        self._lock = lock
        self._named = named
        self._shared = shared
        self._w = shared.words
        self._queue = _WaitQueue(shared)

    # The lock's interface, delegated.
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the underlying lock (see :meth:`Lock.acquire`)."""
        return self._lock.acquire(block, timeout)

    def release(self) -> None:
        """Release the underlying lock."""
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._lock.release()

    def _check_owned(self, what: str) -> None:
        if not self._lock._is_owned():
            raise LockNotOwnedError(
                f"Condition.{what}() called without holding the condition's lock; "
                f"acquire it first (with condition: ...). The lock is {self._lock._owner_text()}"
            )

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notification, take the lock back.

        Args:
            timeout: give up waiting after this many seconds (``None``: never).

        Returns:
            ``True`` if notified, ``False`` on timeout.

        Raises:
            LockNotOwnedError: the caller does not hold the lock.
            TypeError: ``timeout`` is not a number.
        """
        deadline = _deadline(timeout)
        self._check_owned("wait")
        queue = self._queue
        sem = self._named.sem
        slot = queue.enter()
        saved = self._lock._release_save()
        held = False
        try:
            while True:
                got = sem.acquire(True, _remaining(deadline))
                self._lock._acquire_restore(saved)
                held = True
                if queue.notified(slot):
                    if not got:
                        # Timed out just as we were notified: our wake-up is still in
                        # the semaphore, or a thief holds it and will drop it.
                        sem.acquire(False)
                    return True
                # A wake-up meant for another waiter (or for one that died): hand it
                # back if someone live still needs it.
                if got and queue.someone_notified():
                    sem.release()
                if deadline is not None and _monotonic() >= deadline:
                    return False
                saved = self._lock._release_save()
                held = False
        finally:
            try:
                if not held:  # interrupted (KeyboardInterrupt) while waiting
                    self._lock._acquire_restore(saved)
            finally:
                # Clearing our own slot is safe even without the lock (see
                # _WaitQueue.take_if_notified), should taking it back have failed.
                queue.leave(slot)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true; return its last value.

        Args:
            predicate: called with the lock held.
            timeout: give up after this many seconds in total.
        """
        deadline = _deadline(timeout)
        result = predicate()
        while not result:
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiting threads (the longest waiting first).

        Raises:
            LockNotOwnedError: the caller does not hold the lock.
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"n must be an int, not {type(n).__name__} ({n!r})")
        self._check_owned("notify")
        count = self._queue.notify(int(n))
        release = self._named.sem.release
        for _ in range(count):
            release()

    def notify_all(self) -> None:
        """Wake every waiting thread."""
        self.notify(SEM_VALUE_MAX)

    def close(self) -> None:
        """Release this process's handles (not the lock's); idempotent."""
        self._named.close()
        self._shared.close()

    def __reduce__(self):
        _not_shareable(self)
        return (_rebuild_condition, (type(self), self._lock, self._named, self._shared))

    def __repr__(self) -> str:
        if self._shared.closed:
            return "<proctor.Condition closed>"
        return f"<proctor.Condition {self._lock!r} waiters={self._queue.count()}>"


def _rebuild_condition(
    cls: type[Condition], lock: _OwnedLock, named: NamedSemaphore, shared: SharedWords
):
    obj = cls.__new__(cls)
    obj._setup(lock, named, shared)
    return obj


# ─── Event ───────────────────────────────────────────────────────────────────

_FLAG = 1  # Event: 1 when set
_SETS = 2  # Event: how many times set() was called (a waiter woken by set() sees it move)


class Event:
    """An event flag shared by processes (``multiprocessing.Event``).

    ``is_set()`` reads shared memory without taking any lock.
    """

    __slots__ = ("__weakref__", "_cond", "_w")

    def __init__(self) -> None:
        self._setup(Condition(Lock()))

    def _setup(self, cond: Condition) -> None:
        self._cond = cond
        self._w = cond._w

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._w[_FLAG] != 0

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        cond = self._cond
        with cond._lock:
            self._w[_FLAG] = 1
            self._w[_SETS] += 1
            woken = cond._queue.notify(SEM_VALUE_MAX)
            release = cond._named.sem.release
            for _ in range(woken):
                release()
        if woken:
            # The kernel tends to queue a woken process on the waker's CPU, where it
            # waits until the waker blocks; yielding lets it run now. (multiprocessing's
            # set() gets the same effect by blocking until the woken process answers.)
            os.sched_yield()

    def clear(self) -> None:
        """Reset the flag."""
        with self._cond:
            self._w[_FLAG] = 0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is set.

        Args:
            timeout: give up after this many seconds (``None``: never).

        Returns:
            ``True`` if the flag was set (even if cleared again since),
            ``False`` on timeout.

        Raises:
            TypeError: ``timeout`` is not a number.
        """
        if self._w[_FLAG]:
            return True
        deadline = _deadline(timeout)
        cond = self._cond
        lock, queue, sem = cond._lock, cond._queue, cond._named.sem
        with lock:
            if self._w[_FLAG]:
                return True
            slot = queue.enter()
        try:
            while True:
                got = sem.acquire(True, _remaining(deadline))
                # The common case needs no lock: set() marked our slot and posted.
                # (Unlike Condition.wait, an event waiter need not retake the lock,
                # so it runs while set() is still finishing.)
                if got and queue.take_if_notified(slot):
                    slot = -1
                    return True
                with lock:
                    if queue.notified(slot):
                        if not got:
                            sem.acquire(False)  # our wake-up, unless a thief drops it
                        return True
                    if got and queue.someone_notified():
                        sem.release()  # it was meant for another waiter
                    if deadline is not None and _monotonic() >= deadline:
                        return False
        finally:
            if slot >= 0:
                with lock:
                    queue.leave(slot)

    def close(self) -> None:
        """Release this process's handles; idempotent."""
        self._cond.close()
        self._cond._lock.close()

    def __reduce__(self):
        _not_shareable(self)
        return (_rebuild_event, (self._cond,))

    def __repr__(self) -> str:
        if self._cond._shared.closed:
            return "<proctor.Event closed>"
        return f"<proctor.Event {'set' if self.is_set() else 'unset'}>"


def _rebuild_event(cond: Condition) -> Event:
    obj = Event.__new__(Event)
    obj._setup(cond)
    return obj


# ─── Barrier ─────────────────────────────────────────────────────────────────

_ARRIVED = 1  # Barrier: parties waiting in the current round
_ROUND = 2  # Barrier: the round number, bumped when the barrier trips or resets
_BROKEN = 3  # Barrier: 1 when broken
_TRIPPED = 4  # Barrier: the last round that tripped (its waiters pass)


class Barrier:
    """A barrier for a fixed number of parties across processes.

    Args:
        parties: how many ``wait()`` calls release the barrier; >= 1.
        action: called by one party when the barrier trips, before the others
            are released. (It must be picklable to reach ``spawn`` children.)
        timeout: default timeout of :meth:`wait`.

    Raises:
        TypeError: ``parties`` is not an int.
        ValueError: ``parties`` < 1.

    Note:
        A party that dies while waiting breaks the barrier: the others get
        :class:`BrokenBarrierError` (within about ``CHECK_INTERVAL``) instead of
        waiting for a party that can never come.
    """

    __slots__ = ("__weakref__", "_action", "_cond", "_parties", "_timeout", "_w")

    def __init__(
        self, parties: int, action: Callable[[], Any] | None = None, timeout: float | None = None
    ) -> None:
        if isinstance(parties, bool) or not isinstance(parties, numbers.Integral):
            raise TypeError(
                f"Barrier parties must be an int, not {type(parties).__name__} ({parties!r})"
            )
        if parties < 1:
            raise ValueError(f"Barrier needs at least 1 party, not {parties}")
        if action is not None and not callable(action):
            raise TypeError(f"Barrier action must be callable or None, not {action!r}")
        _check_timeout(timeout)
        self._setup(Condition(Lock()), int(parties), action, timeout)

    def _setup(self, cond: Condition, parties: int, action: Any, timeout: Any) -> None:
        self._cond = cond
        self._w = cond._w
        self._parties = parties
        self._action = action
        self._timeout = timeout

    def wait(self, timeout: float | None = None) -> int:
        """Wait until all parties have called ``wait()``.

        Args:
            timeout: seconds; defaults to the barrier's timeout. On timeout the
                barrier breaks.

        Returns:
            An index in ``range(parties)``, different for each party of a round.

        Raises:
            BrokenBarrierError: the barrier is or becomes broken (reset, abort,
                timeout, a failing action, or a waiting party that died).
        """
        if timeout is None:
            timeout = self._timeout
        deadline = _deadline(timeout)
        w = self._w
        cond = self._cond
        with cond:
            if w[_BROKEN]:
                raise BrokenBarrierError("the barrier is broken; reset() it before reuse")
            index = w[_ARRIVED]
            this_round = w[_ROUND]
            if index + 1 == self._parties:
                if self._action is not None:
                    try:
                        self._action()
                    except BaseException:
                        self._break()
                        raise
                w[_TRIPPED] = this_round
                w[_ROUND] = this_round + 1
                w[_ARRIVED] = 0
                cond.notify_all()
                return index
            w[_ARRIVED] = index + 1
            lock_words = cond._lock._w
            recoveries = lock_words[_OwnedLock._RECOVERIES]
            while True:
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    self._break()
                    raise BrokenBarrierError(
                        f"Barrier.wait() timed out after {timeout} s with "
                        f"{w[_ARRIVED]} of {self._parties} parties waiting; the barrier is "
                        "now broken"
                    )
                wait = CHECK_INTERVAL if remaining is None else min(remaining, CHECK_INTERVAL)
                cond.wait(wait)
                if w[_ROUND] != this_round:
                    if w[_TRIPPED] == this_round:
                        return index
                    raise BrokenBarrierError("the barrier was reset while this party waited")
                if w[_BROKEN]:
                    raise BrokenBarrierError("the barrier was aborted or broken by another party")
                if lock_words[_OwnedLock._RECOVERIES] != recoveries:
                    # A party died inside the barrier's own critical section.
                    self._break()
                    raise BrokenBarrierError(
                        "a process died while holding the barrier's lock; it is now broken"
                    )
                dead = cond._queue.purge()
                if dead:
                    self._break()
                    raise BrokenBarrierError(
                        f"process(es) {', '.join(map(str, dead))} died while waiting at the "
                        "barrier; it is now broken"
                    )

    def _break(self) -> None:
        self._w[_BROKEN] = 1
        self._cond.notify_all()

    def reset(self) -> None:
        """Return the barrier to its initial state; current waiters get BrokenBarrierError."""
        with self._cond:
            w = self._w
            if w[_ARRIVED]:
                w[_ROUND] += 1
            w[_ARRIVED] = 0
            w[_BROKEN] = 0
            self._cond.notify_all()

    def abort(self) -> None:
        """Break the barrier: current and future waiters get BrokenBarrierError."""
        with self._cond:
            self._break()

    @property
    def parties(self) -> int:
        """The number of parties needed to trip the barrier."""
        return self._parties

    @property
    def n_waiting(self) -> int:
        """Parties waiting in the current round (0 when broken)."""
        return 0 if self._w[_BROKEN] else self._w[_ARRIVED]

    @property
    def broken(self) -> bool:
        """Whether the barrier is broken."""
        return self._w[_BROKEN] != 0

    def close(self) -> None:
        """Release this process's handles; idempotent."""
        self._cond.close()
        self._cond._lock.close()

    def __reduce__(self):
        _not_shareable(self)
        return (_rebuild_barrier, (self._cond, self._parties, self._action, self._timeout))

    def __repr__(self) -> str:
        if self._cond._shared.closed:
            return "<proctor.Barrier closed>"
        return (
            f"<proctor.Barrier parties={self._parties} waiting={self.n_waiting} "
            f"broken={self.broken}>"
        )


def _rebuild_barrier(cond: Condition, parties: int, action: Any, timeout: Any) -> Barrier:
    obj = Barrier.__new__(Barrier)
    obj._setup(cond, parties, action, timeout)
    return obj
