"""Condition, Event and Barrier: waiting across processes, never on the dead.

A condition is a wake-up semaphore plus a few counters in anonymous shared
memory. Waiters take tickets in order; ``notify`` advances a "notified" mark
over the tickets it wakes. The table of who waits under which ticket is kept by
the kernel: each waiting thread holds an ``fcntl`` record lock on its ticket's
byte of the arena's lock space (``SharedWords.ticket_byte``), which goes when it
leaves -- or when its process dies. So any number of threads may wait, and
liveness is exact::

    wait()                                   notify(n)   (both under the lock)
    ──────                                   ─────────
    take ticket t, lock its byte ─┐          advance NOTIFIED over the next n
    release the lock              │            tickets whose byte is held (free:
    sleep on the semaphore  ◀─────┼────┐       left or dead, skipped); leave one
      in slices (0.1 s, to 0.5 s) │    │       wake-up per ticket passed that was
      (_wait.wait_for_post)       │    │       held to the lock (Lock._defer)
    t < NOTIFIED? ─ yes ──────────┴─▶ unlock the byte, retake the lock, True
          │                            │     release(): the lock's own post,
          │                            └──── then the deferred wake-ups
          │ no, but a wake-up came: it was another waiter's; pass it on if a
          └──▶ notified waiter still holds its byte, else drop it; sleep again

With the C accelerator, a waiter whose slice has retaken the lock may keep its
byte instead (one system call fewer before ``wait()`` returns): it claims the
header's KEPT word, which ``_pass_on`` skips, and the release of the lock that
ends this holding lets the byte go (see :meth:`_WaitQueue._sleep_in_c`).

The wake-ups wait for the release (``Lock._defer``; the C release runs them
too) so that a woken waiter finds the lock free: posted under the lock, it
would wake -- often on the notifier's CPU, preempting it --, find the lock
taken, sleep on it and be woken a second time. A waiter looks at the mark
after every slice, not only when a wake-up comes, so a notifier killed between
marking and posting (before its release, or in it) delays it by one slice at
most (0.1 s early in a wait, up to 0.5 s once the wait has backed off).
``notify`` never waits for the woken process (``multiprocessing``'s blocks until
the woken process answers -- forever, if it was killed).

``Event`` is a flag on a condition whose waiters return without retaking the
lock, and take no byte (``_BroadcastQueue``: set() wakes them all, which needs
nobody's liveness); set() posts after releasing the lock, so that a woken
waiter finds it free. ``Barrier`` keeps its round counters there, records each
waiting party's process identity, and breaks when one of those processes dies.
Both use a ``Lock`` inside, which is handed on if its holder dies.
"""

from __future__ import annotations

import _thread
import fcntl
import numbers
import os
from collections.abc import Callable

from .._core import _runtime, _sharedwords
from .._core._anonmem import own_description_locks
from .._core._sharedwords import SharedWords, pid_of
from .._core._wait import POSTED, READY, slice_seconds, wait_for_post
from .._reaper._semlock import SEM_VALUE_MAX, NamedSemaphore
from ._lock import (
    Lock,
    LockNotOwnedError,
    RLock,
    _check_timeout,
    _closed_error,
    _ClosedWords,
    _deadline,
    _not_shareable,
    _OwnedLock,
    _remaining,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from typing import Any

__all__ = ("Barrier", "BrokenBarrierError", "Condition", "Event")


_BROKEN_BARRIER_DOC = "A ``Barrier`` was reset or aborted, timed out, or lost a party that died."

if TYPE_CHECKING:
    import threading

    class BrokenBarrierError(threading.BrokenBarrierError): ...  # made by __getattr__


# BrokenBarrierError subclasses threading's, so that ``except
# threading.BrokenBarrierError`` catches proctor's; the class is made at its first
# use (a barrier breaking, or a program naming it), not at import: threading would
# come with this module into a fork server that loads it, and its after-fork hook
# into every child that server forks (issue 17). The lock keeps two threads from
# making two classes.
_made_lock = _thread.allocate_lock()


def __getattr__(name: str) -> Any:
    if name != "BrokenBarrierError":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _made_lock:
        made = globals().get(name)
        if made is None:
            import threading

            made = type(
                name,
                (threading.BrokenBarrierError,),
                {"__doc__": _BROKEN_BARRIER_DOC, "__module__": __name__},
            )
            globals()[name] = made
    return made


def _broken(message: str) -> BrokenBarrierError:
    """A ``BrokenBarrierError`` saying ``message``."""
    return __getattr__("BrokenBarrierError")(message)


# ─── Condition ───────────────────────────────────────────────────────────────

# The condition's block: a header of counters (tickets only ever grow).
_TICKET = 0  # the next ticket to hand out
# words 1..4 belong to the primitive built on the condition (Event, Barrier)
_NOTIFIED = 5  # tickets below this were notified, or had left when notify passed them
_UNMARKED = 6  # waiters not notified yet (an upper bound: one that died counts until
#                notify_all, which resets it)
_LOW = 7  # every ticket below this has left: where _pass_on looks from
_KEPT = 8  # 0, or 1 + the ticket of a woken waiter that has retaken the lock and keeps
#            its byte until it releases the lock (the C slice: _sleep_in_c); _pass_on
#            skips it
_HEADER = 9
_SPAN = _sharedwords.TICKET_SPAN

# What the C accelerator's wait_slice() found (_native.c): nothing within the
# slice; our wake-up (the byte is let go); a wake-up meant for another waiter;
# our wake-up, and the condition's lock was free: the slice has retaken it.
_SLICE_EMPTY, _SLICE_NOTIFIED, _SLICE_OTHER, _SLICE_RETAKEN = 0, 1, 2, 3
# What _WaitQueue.sleep() says of the wake-up when the C slice retook the lock
# too (a true value: the wake-up was taken).
_RETAKEN = 2


class _WaitQueue:
    """The waiting threads of one condition: ticket counters plus the kernel's locks.

    Every method runs under the condition's lock, except :meth:`sleep`,
    :meth:`_pass_on` and :meth:`let_go`: they only read the counters (and
    advance LOW, which any writer may do) and touch the caller's own byte.
    """

    __slots__ = ("_base", "_mine", "_mine_in", "shared", "w")

    #: Whether waiters hold their ticket's byte (the C slice lets it go).
    _holds_bytes = True

    def __init__(self, shared: SharedWords) -> None:
        self.shared = shared
        self.w = shared.words
        self._base = shared.ticket_byte(0)  # ticket t's byte: _base + t % _SPAN
        # Tickets (mod _SPAN) this process's threads wait under: a probe must
        # never touch our own bytes (record locks do not nest; its unlock would
        # drop them).
        self._mine: set[int] = set()
        self._mine_in = _sharedwords.ident()

    def _own(self) -> set[int]:
        if self._mine_in != _sharedwords.ident():  # forked: the parent's waiters stayed there
            self._mine = set()
            self._mine_in = _sharedwords.ident()
        return self._mine

    def _waiting(self, ticket: int, mine: set[int]) -> bool:
        """Whether a thread still waits under ``ticket``."""
        return ticket % _SPAN in mine or self.shared.held_elsewhere(self._base + ticket % _SPAN)

    def enter(self) -> int:
        """Add the calling thread; return its ticket."""
        w, shared = self.w, self.shared
        mine = self._own()
        ticket = w[_TICKET]
        # A byte still held under a ticket 2**40 older is skipped: two waiters
        # never share one.
        while ticket % _SPAN in mine or not shared.try_hold(self._base + ticket % _SPAN):
            ticket += 1
        w[_TICKET] = ticket + 1
        w[_UNMARKED] += 1
        mine.add(ticket % _SPAN)
        kept = w[_KEPT]
        if kept:
            self._check_kept(kept - 1, mine)
        return ticket

    def _check_kept(self, ticket: int, mine: set[int]) -> None:
        """Free KEPT if the waiter that claimed it has died (under the lock).

        Its keeper claims it while it holds the lock and frees it when its
        process releases the lock (or closes the condition or the lock), so a
        caller holding the lock finds it claimed only in the instant between
        a release's post and its let-go, after a release by another process
        (a ``Lock`` allows it: the keeper frees it at its own process's next
        release), or after the keeper's death -- which alone would never free
        it (no later waiter could keep its byte), and leaves the byte free.
        (No other waiter can claim KEPT meanwhile: a claim needs the lock,
        which the caller holds.)
        """
        slot = ticket % _SPAN
        if (
            slot not in mine
            and not self.shared.held_elsewhere(self._base + slot)
            and self.w[_KEPT] == ticket + 1  # (looked at again after the probe)
        ):
            self.w[_KEPT] = 0

    def notified(self, ticket: int) -> bool:
        return self.w[_NOTIFIED] > ticket

    def sleep(
        self,
        ticket: int,
        sem: Any,
        deadline: float | None,
        also: Callable[[], Any] | None,
        wait_slice: Callable[..., int] | None = None,
    ) -> tuple[bool, int]:
        """Without the lock: wait until notified, ``also()`` is true, or the deadline.

        A notified waiter lets go of its ticket's byte at once: it no longer
        needs wake-ups passed on to it, however long it then waits for the lock
        (its notifier may hold it a while). Any other keeps it until
        :meth:`leave`, so that a notify in the meantime counts it, and it
        returns True as notified rather than wasting that notification.

        ``wait_slice`` (the C accelerator's, given by a native lock) runs each
        slice's sleep and what follows a wake-up meant for this waiter -- the
        check of the mark and the release of the byte -- without coming back
        to Python in between (see :meth:`_sleep_in_c`).

        Returns:
            ``(notified, took_wake_up)``; not notified means timed out or ``also``.
        """
        w = self.w
        ready = self._ready(ticket, also)
        if wait_slice is not None and self._holds_bytes:
            return self._sleep_in_c(ticket, sem, deadline, ready, wait_slice, None, None, False)
        passed_on = False
        try:
            while True:
                outcome = wait_for_post(sem.acquire, deadline, ready)
                if outcome == POSTED:
                    if w[_NOTIFIED] > ticket:
                        self.let_go(ticket)
                        return True, True
                    passed_on = self._pass_on(sem, passed_on)
                    continue
                if outcome == READY and w[_NOTIFIED] > ticket:
                    return True, self._take_late(ticket, sem)
                return False, False
        except BaseException:  # interrupted (KeyboardInterrupt): no longer waiting
            self.let_go(ticket)
            raise

    def _ready(self, ticket: int, also: Callable[[], Any] | None) -> Callable[[], bool]:
        """What ends a sleep besides a wake-up: the mark, or ``also()``."""
        w = self.w
        if also is None:

            def ready() -> bool:
                return w[_NOTIFIED] > ticket

        else:

            def ready() -> bool:
                return w[_NOTIFIED] > ticket or bool(also())

        return ready

    def _sleep_in_c(
        self,
        ticket: int,
        sem: Any,
        deadline: float | None,
        ready: Callable[[], bool],
        wait_slice: Callable[..., int],
        lock: Any,
        saved: Any,
        keep: bool = False,
    ) -> tuple[bool, int]:
        """:meth:`sleep` with each slice in C: the loop of ``wait_for_post``, inline.

        ``wait_slice`` sleeps on the semaphore for one slice and, if the
        wake-up it takes is ours, lets go of the byte (as :meth:`let_go`)
        and, given ``lock`` (with ``saved``, what its ``_release_save``
        returned), retakes the lock if it is free, before it returns: the
        whole path from the post to the lock's retake stays in C. Everything
        else -- deadlines, ``ready()``, passing a wake-up on, a busy lock, an
        interruption -- is the same Python as in :meth:`sleep`.

        With ``keep`` (and ``lock``), a slice that retook the lock may also keep
        the byte rather than unlock it -- a system call fewer between the
        wake-up and ``wait()``'s return: it claims the header's KEPT word for
        the ticket (if no other waiter has it), which tells :meth:`_pass_on`
        that this waiter needs no wake-up, and the lock's release that ends
        this holding lets the byte go and frees KEPT (``_native.run_kept``).
        Held until then, without KEPT, the byte would have a stray wake-up
        (a marked waiter that died, a timeout racing a notify) passed round
        the other waiters for as long as the lock is held.

        Returns:
            As :meth:`sleep`; ``(True, _RETAKEN)`` when the slice took the lock back.
        """
        w = self.w
        slot = ticket % _SPAN
        byte = self._base + slot
        fd = self.shared.fd
        cmd = fcntl.F_OFD_SETLK if own_description_locks() else fcntl.F_SETLK
        mine = self._own()
        passed_on = False
        slept = 0.0  # (slices that ended empty: the slices grow with it)
        try:
            while True:
                wait = slice_seconds(deadline, slept)
                if wait <= 0:
                    if ready() and w[_NOTIFIED] > ticket:
                        return True, self._take_late(ticket, sem)
                    return False, False
                found = wait_slice(
                    sem, w, _NOTIFIED, ticket, wait, fd, cmd, byte, slot, mine, lock, saved, keep
                )
                if found == _SLICE_RETAKEN:
                    return True, _RETAKEN  # (the lock ours again; the byte let go or kept)
                if found == _SLICE_NOTIFIED:
                    return True, True  # (the byte is let go)
                if found == _SLICE_OTHER:
                    passed_on = self._pass_on(sem, passed_on)
                elif ready():
                    if w[_NOTIFIED] > ticket:
                        return True, self._take_late(ticket, sem)
                    return False, False
                else:
                    slept += wait
        except BaseException:  # interrupted (KeyboardInterrupt): no longer waiting
            self.let_go(ticket)
            raise

    def _take_late(self, ticket: int, sem: Any) -> bool:
        """Notified, but the wake-up came late (or never: its poster died).

        Take it if it is there, so that it wakes nobody else; let go of the byte.
        """
        took = bool(sem.acquire(False))
        self.let_go(ticket)
        return took

    def _pass_on(self, sem: Any, passed_on: bool) -> bool:
        """A wake-up meant for another waiter: pass it on if one still needs it.

        The notified waiters that have not left yet hold their bytes; the ones
        that left (or died) do not, and the scan never looks at them again.

        Returns:
            Whether this waiter has passed a wake-up on during this wait.
        """
        w = self.w
        mine = self._own()
        ticket, end = w[_LOW], w[_NOTIFIED]
        kept = w[_KEPT] - 1  # (a woken waiter that took its wake-up: -1 if none)
        while ticket < end:
            if ticket != kept and self._waiting(ticket, mine):
                sem.release()
                os.sched_yield()  # let the sleeper it wakes take it, not us again
                passed_on = True
                break
            ticket += 1
        if ticket > w[_LOW]:
            w[_LOW] = ticket  # (racing writers only make a later scan longer)
        return passed_on

    def leave(self, ticket: int, took_wake_up: int, sem: Any) -> bool:
        """After :meth:`sleep`, under the lock: return whether the waiter was notified.

        A waiter that gave up (timeout) may have been notified since: then it
        counts as notified and takes its wake-up.
        """
        w = self.w
        if w[_NOTIFIED] > ticket:
            if not took_wake_up:
                sem.acquire(False)  # the wake-up posted for us, if nobody took it
            self.let_go(ticket)  # (again, if sleep() did: unlocking is idempotent)
            return True
        if w[_UNMARKED] > 0:
            w[_UNMARKED] -= 1
        self.let_go(ticket)
        return False

    def abandon(self, ticket: int) -> None:
        """Under the lock: a waiter interrupted (a signal handler raising) leaves.

        Its byte is let go (if :meth:`sleep` has not done it already); unless
        a notify has passed its ticket, it also leaves the count of waiters not
        yet notified. Passed, it is not counted there any more -- or, skipped
        as gone, it stays counted, as a dead waiter does, until a notify_all --,
        so the count never drops below the waiters it must wake (notify(n)
        posts as many wake-ups as it counts when it marks everyone). Its
        wake-up, if one was posted, is not taken: another waiter may have it,
        and a stray one is passed on or dropped (:meth:`_pass_on`).
        """
        self.let_go(ticket)
        w = self.w
        if w[_NOTIFIED] <= ticket and w[_UNMARKED] > 0:
            w[_UNMARKED] -= 1

    def let_go(self, ticket: int) -> None:
        """Free ``ticket``'s byte: from now on notify and _pass_on skip it."""
        self._own().discard(ticket % _SPAN)
        self.shared.let_go(self._base + ticket % _SPAN)

    def let_go_all(self) -> None:
        """Free the bytes of every waiter of this process (the condition is closing)."""
        mine = self._own()
        for slot in list(mine):
            mine.discard(slot)
            self.shared.let_go(self._base + slot)

    def notify(self, n: int) -> int:
        """Mark up to ``n`` of the oldest waiting threads notified; return how many."""
        w = self.w
        ticket, end = w[_NOTIFIED], w[_TICKET]
        if ticket >= end:
            return 0
        unmarked = w[_UNMARKED]
        if n >= unmarked:
            # Everyone: no need to tell the living from the dead first. A dead
            # waiter's wake-up is dropped by whoever takes it (see _pass_on).
            w[_NOTIFIED] = end
            w[_UNMARKED] = 0
            return unmarked
        mine = self._own()
        count = 0
        while count < n and ticket < end:
            if self._waiting(ticket, mine):
                count += 1
            ticket += 1
        w[_NOTIFIED] = ticket
        w[_UNMARKED] = 0 if ticket >= end else max(0, unmarked - count)
        return count

    def count(self) -> int:
        """Waiters not yet notified (dead ones included until the next notify_all)."""
        return self.w[_UNMARKED]


class _BroadcastQueue(_WaitQueue):
    """The waiters of a condition that only ever wakes them all (Event).

    Waking everyone needs no one's liveness (see :meth:`_WaitQueue.notify`), so
    these waiters take no byte: entering and leaving cost no system call, which
    keeps an Event's wake-up as quick as a bare semaphore's. The price is in
    the rare wake-up taken by a waiter that came after the set() it was posted
    for: with no byte to tell whether its owner still sleeps, it is passed on
    once per wait at most, and its owner may find the flag only at its next
    look, within one slice (0.5 s at most).
    """

    __slots__ = ()
    _holds_bytes = False

    def enter(self) -> int:
        w = self.w
        ticket = w[_TICKET]
        w[_TICKET] = ticket + 1
        w[_UNMARKED] += 1
        return ticket

    def let_go(self, ticket: int) -> None:
        pass

    def _waiting(self, ticket: int, mine: set[int]) -> bool:
        return True  # (only reached by notify(n) with n < all, which Event never does)

    def _pass_on(self, sem: Any, passed_on: bool) -> bool:
        if not passed_on:  # else drop it: stale, or its owner had its chance
            sem.release()
            os.sched_yield()
        return True


class Condition:
    """A condition variable shared by processes (``multiprocessing.Condition``).

    Args:
        lock: a :class:`Lock` or :class:`RLock` to build on; a new
            :class:`RLock` by default.
        ctx: keyword-only; ``None`` or any proctor context, as for ``Lock``
            (accepted for ``multiprocessing.synchronize.Condition(lock, ctx=...)``).

    Raises:
        TypeError: ``lock`` is not a proctor ``Lock`` or ``RLock``, or ``ctx`` is
            not ``None`` or a proctor context.

    Note:
        ``notify()`` never waits for the woken process (``multiprocessing``'s
        does, and hangs if that process died), and a waiter that dies is
        skipped. The wake-ups are posted when the notifying process releases
        the lock, so that the woken thread finds it free; a waiter whose
        notifier died before that, or whose lock another process released
        (a ``Lock`` allows it), still wakes, at its next look: within 0.1 s
        early in a wait, within 0.5 s once the wait has gone on for a while.
        Any number of threads may wait. If a process dies holding the lock, the next acquirer
        (including a ``wait()`` returning) gets :class:`proctor.OwnerDiedWarning`.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_lock",
        "_named",
        "_queue",
        "_shared",
        "_unheld",
        "_w",
        "_what",
    )

    _queue_class: type[_WaitQueue] = _WaitQueue

    def __init__(self, lock: Lock | RLock | None = None, *, ctx: Any = None) -> None:
        _runtime.check_ctx(ctx, type(self).__name__)
        if lock is None:
            lock = RLock()
        elif not isinstance(lock, _OwnedLock):
            raise TypeError(
                "Condition(lock) needs a proctor.Lock or proctor.RLock (one that other "
                f"processes can share), not {type(lock).__name__}"
            )
        self._setup(lock, NamedSemaphore(0, SEM_VALUE_MAX), SharedWords(_HEADER))

    @classmethod
    def _with_words(cls, lock: _OwnedLock, nwords: int) -> Condition:
        """A condition whose block has ``nwords`` (>= _HEADER) for its user's state."""
        obj = cls.__new__(cls)
        obj._setup(lock, NamedSemaphore(0, SEM_VALUE_MAX), SharedWords(nwords))
        return obj

    def _setup(self, lock: _OwnedLock, named: NamedSemaphore, shared: SharedWords) -> None:
        self._lock = lock
        self._named = named
        self._shared = shared
        self._w = shared.words
        self._queue = self._queue_class(shared)
        # None, or {thread: releases to skip} after a wait() whose retake of the
        # lock raised (see _retake), or that a close() ended (see _wait): per
        # process, as the lock's holding is.
        self._unheld: dict[int, int] | None = None
        self._closed = False
        # What the closed error calls this object (an Event's or a Barrier's own
        # condition says "event", "barrier": their users never see the condition).
        self._what = "condition"

    # The lock's interface, delegated.
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the underlying lock (see :meth:`Lock.acquire`).

        Raises:
            ValueError: the condition is closed (as a closed ``Lock``'s ``acquire()``).
        """
        if self._closed:
            raise _closed_error(self._what)
        return self._lock.acquire(block, timeout)

    def release(self) -> None:
        """Release the underlying lock.

        After a :meth:`wait` that could not take the lock back (its holder died,
        and ``OwnerDiedWarning`` is an error), the releases that match the
        calling thread's acquisitions (``with condition:``'s exit included) do
        nothing: the lock is not this thread's, and stays with the dead holder.
        So do those that match a :meth:`wait` that a ``close()`` by another
        thread ended (it did not take the lock back).

        Raises:
            ValueError: the condition is closed (the lock is left as it is, as a
                closed ``Lock``'s ``release()`` leaves it).
        """
        if self._unheld is not None and self._skip_release():
            return
        if self._closed:
            raise _closed_error(self._what)
        self._lock.release()

    def __enter__(self) -> bool:
        if self._closed:
            raise _closed_error(self._what)
        return self._lock.__enter__()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._unheld is not None and self._skip_release():
            return  # (the OwnerDiedWarning, or the closed error, of wait() goes on alone)
        if self._closed:
            raise _closed_error(self._what)
        self._lock.release()

    def _skip_release(self) -> bool:
        """Whether this release matches an acquisition a failed retake undid."""
        unheld = self._unheld
        if unheld is None:
            return False
        me = _thread.get_ident()
        left = unheld.get(me)
        if left is None:
            return False
        if not self._closed and self._lock._is_owned():  # taken again since (accepting the warning)
            del unheld[me]
            return False
        if left > 1:
            unheld[me] = left - 1
        else:
            del unheld[me]
        return True

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
            ValueError: the condition is closed, here or by another thread
                during the wait (which then ends without taking the lock back).
        """
        deadline = _deadline(timeout)
        if self._closed:
            raise _closed_error(self._what)
        if not self._lock._is_owned():
            self._check_owned("wait")
        return self._wait(deadline)

    def _wait(self, deadline: float | None, also: Callable[[], Any] | None = None) -> bool:
        """wait() with a deadline, also ending when ``also()`` (read without the lock) is true."""
        queue = self._queue
        sem = self._named.sem
        lock = self._lock
        ticket = queue.enter()
        try:
            saved = lock._release_save()
        except BaseException:
            queue.abandon(ticket)  # (still under the lock)
            raise
        notified = False
        took: int = False  # (or _RETAKEN: the C slice took the lock back too)
        wait_slice = lock._wait_slice
        try:
            if wait_slice is not None and queue._holds_bytes:
                # (called from here, not through sleep(): the frames between the
                # wake-up and this return are on the path notify() waits for)
                ready = queue._ready(ticket, also)
                notified, took = queue._sleep_in_c(
                    ticket, sem, deadline, ready, wait_slice, lock, saved, True
                )
            else:
                notified, took = queue.sleep(ticket, sem, deadline, also)
        except BaseException as exc:
            if self._closed:
                self._ended_by_close(saved, exc)
            # Interrupted (KeyboardInterrupt, a signal handler raising): the caller
            # holds the lock again, and this waiter no longer counts as one.
            self._retake(saved, ticket)
            queue.abandon(ticket)
            raise
        if took != _RETAKEN:  # (else the C slice has retaken the lock)
            self._retake(saved, ticket)
        if notified and took:
            return True  # (sleep() has let go of the byte)
        if self._closed:  # closed by another thread as the wait ended: no words to look at
            return notified
        return queue.leave(ticket, took, sem)

    def _ended_by_close(self, saved: Any, exc: BaseException) -> None:
        """Raise from a wait that another thread's ``close()`` ended (its words released).

        The condition can no longer be used here, so the lock is not taken back:
        the releases that match this thread's acquisitions (``with``'s exit) are
        skipped, as after a failed retake (:meth:`_retake`), and the closed error
        goes on alone. An interruption (``KeyboardInterrupt``) goes on as it is.
        """
        unheld = self._unheld
        if unheld is None:
            self._unheld = unheld = {}
        unheld[_thread.get_ident()] = saved if type(saved) is int else 1
        if isinstance(exc, Exception):
            raise _closed_error(self._what) from None
        raise exc

    def _retake(self, saved: Any, ticket: int) -> None:
        """Take the lock back after a wait (``saved``: what ``_release_save`` returned).

        If that raises -- ``OwnerDiedWarning`` made an error, the lock's holder
        having died --, the lock stays with the dead holder (see
        ``Lock._take_over``): the releases that match this thread's
        acquisitions must not free it, so that every later acquirer hears of
        the death too. They are counted here, for :meth:`release` to skip.
        """
        try:
            self._lock._acquire_restore(saved)
        except BaseException as exc:
            if self._closed:  # (with its lock: an Event's, a Barrier's close() closes it)
                self._ended_by_close(saved, exc)
            self._queue.let_go(ticket)
            if not self._lock._is_owned():
                unheld = self._unheld
                if unheld is None:
                    self._unheld = unheld = {}
                # (an RLock's saved state is its depth: as many releases to skip)
                unheld[_thread.get_ident()] = saved if type(saved) is int else 1
            raise

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true; return its last value.

        Args:
            predicate: called with the lock held.
            timeout: give up after this many seconds in total.

        Raises:
            ValueError: the condition is closed (see :meth:`wait`).
        """
        deadline = _deadline(timeout)
        if self._closed:
            raise _closed_error(self._what)
        result = predicate()
        while not result:
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                break
            if not self._lock._is_owned():
                self._check_owned("wait")
            self._wait(deadline)  # (wait(), without its frame on the way back)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiting threads (the longest waiting first).

        They are chosen now and woken when this process releases the lock.

        Raises:
            LockNotOwnedError: the caller does not hold the lock.
            ValueError: the condition is closed.
        """
        if self._closed:
            raise _closed_error(self._what)
        lock = self._lock
        fast = lock._c_notify
        if fast is not None and fast(lock, self._named.sem.release, self._w, n) is None:
            return  # all marked and deferred in C (anything else falls through, unchanged)
        if type(n) is not int:  # (the exact type first: the ABC check costs a microsecond)
            if isinstance(n, bool) or not isinstance(n, numbers.Integral):
                raise TypeError(f"n must be an int, not {type(n).__name__} ({n!r})")
            n = int(n)
        if not self._lock._is_owned():
            self._check_owned("notify")
        count = self._queue.notify(n)
        if count:
            # Woken now, a waiter would find the lock still held -- by us, on
            # whose CPU the kernel tends to run it: it would wake, spin, sleep
            # on the lock and wake again. Posted by the release instead, its
            # wake-up finds the lock free.
            self._lock._defer(self._named.sem.release, count)

    def _post(self, count: int) -> None:
        """Post ``count`` wake-ups (after marking as many waiters notified)."""
        release = self._named.sem.release
        for _ in range(count):
            release()

    def notify_all(self) -> None:
        """Wake every waiting thread."""
        self.notify(SEM_VALUE_MAX)

    def close(self) -> None:
        """Release this process's handles (not the lock's); idempotent.

        Afterwards every use of the condition in this process raises
        ``ValueError``, as a closed ``Lock``'s does -- ``acquire()``,
        ``release()`` and ``with`` included, which leave the lock as it is. A
        thread waiting in :meth:`wait` meanwhile gets that error within a slice
        (0.5 s at most), without the lock.
        """
        if self._closed:
            return
        self._closed = True
        let_go_kept = getattr(self._lock, "_let_go_kept", None)  # (a native lock's)
        if let_go_kept is not None:
            let_go_kept()  # a waiter's byte kept until the release: its words go now
        # This process's waiters leave: their bytes go now (the arena may stay open,
        # shared with other blocks), so that no notify() elsewhere counts them.
        self._queue.let_go_all()
        self._w = _ClosedWords(self._what)  # type: ignore[assignment]
        self._named.close()
        self._shared.close()

    def __reduce__(self):
        _not_shareable(self)
        return (_rebuild_condition, (type(self), self._lock, self._named, self._shared))

    def __repr__(self) -> str:
        # multiprocessing's form: <Condition(<its lock>, number of waiters)>.
        name = type(self).__name__
        if self._shared.closed:
            return f"<{name}(closed)>"
        return f"<{name}({self._lock!r}, {self._queue.count()})>"


def _rebuild_condition(
    cls: type[Condition], lock: _OwnedLock, named: NamedSemaphore, shared: SharedWords
):
    obj = cls.__new__(cls)
    obj._setup(lock, named, shared)
    return obj


class _EventCondition(Condition):
    """The condition inside an Event: it only ever wakes all its waiters."""

    __slots__ = ()
    _queue_class = _BroadcastQueue


# ─── Event ───────────────────────────────────────────────────────────────────

_FLAG = 1  # Event: 1 when set
_SETS = 2  # Event: how many times set() was called (a waiter woken by set() sees it move)


class Event:
    """An event flag shared by processes (``multiprocessing.Event``).

    ``is_set()`` reads shared memory without taking any lock. Any number of
    threads may wait; a waiter whose setter died half-way through ``set()``
    still returns once the flag is set, at its next look (within 0.5 s).

    Args:
        ctx: keyword-only; ``None`` or any proctor context, as for ``Lock``
            (accepted for ``multiprocessing.synchronize.Event(ctx=...)``).

    Raises:
        TypeError: ``ctx`` is not ``None`` or a proctor context.
    """

    __slots__ = ("__weakref__", "_cond", "_w")

    def __init__(self, *, ctx: Any = None) -> None:
        _runtime.check_ctx(ctx, type(self).__name__)
        self._setup(_EventCondition(Lock()))

    def _setup(self, cond: Condition) -> None:
        self._cond = cond
        self._w = cond._w
        cond._what = "event"

    def is_set(self) -> bool:
        """Whether the flag is set.

        Raises:
            ValueError: the event is closed.
        """
        return self._w[_FLAG] != 0

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        cond = self._cond
        lock = cond._lock
        fast = lock._c_event_set
        if fast is not None and fast(lock, cond._named.sem, self._w) is None:
            return  # the same steps in one C call (a busy lock falls through)
        if cond._closed:
            raise _closed_error("event")
        with lock:
            self._w[_FLAG] = 1
            self._w[_SETS] += 1
            woken = cond._queue.notify(SEM_VALUE_MAX)
        # Posted after the release: a woken waiter that goes on to use the event
        # (clear(), wait() again) finds its lock free. A setter killed before the
        # posts leaves the flag set and the waiters marked: each finds that at its
        # next look, within a slice (0.5 s at most).
        cond._post(woken)
        if woken:
            # The kernel tends to queue a woken process on the waker's CPU, where it
            # waits until the waker blocks; yielding lets it run now. (multiprocessing's
            # set() gets the same effect by blocking until the woken process answers.)
            os.sched_yield()

    def clear(self) -> None:
        """Reset the flag."""
        with self._cond:  # (closed: the error names the event)
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
            ValueError: the event is closed, here or by another thread during
                the wait (which then ends within a slice, 0.5 s at most).
        """
        # (the timeout first: a set event and an unset one refuse the same ones)
        deadline = None if timeout is None else _deadline(timeout)
        w = self._w
        if w[_FLAG]:
            return True
        cond = self._cond
        lock, queue, sem = cond._lock, cond._queue, cond._named.sem
        with lock:
            if w[_FLAG]:
                return True
            ticket = queue.enter()
        try:
            # Woken by set() (or finding the flag set: a setter may have died before
            # marking us), a waiter returns without the lock. The slices are
            # wait_for_post's loop, inline: between the wake-up and this return only
            # this frame runs. (No byte to let go on the way out: _BroadcastQueue.)
            acquire = sem.acquire
            passed_on = False
            slept = 0.0  # (slices that ended empty: the slices grow with it)
            while True:
                wait = slice_seconds(deadline, slept)
                if wait <= 0:
                    break
                if acquire(True, wait):
                    if w[_NOTIFIED] > ticket:
                        return True
                    passed_on = queue._pass_on(sem, passed_on)  # (another's wake-up)
                elif w[_NOTIFIED] > ticket or w[_FLAG]:
                    break
                else:
                    slept += wait
            if w[_NOTIFIED] > ticket:  # marked, the wake-up late (or its setter died)
                sem.acquire(False)  # take it if it is there, so that it wakes nobody else
                return True
            if w[_FLAG]:  # set, though not (yet) marked: its setter may have died
                return True
            with lock:  # timed out: leave under the lock, unless notified just now
                return queue.leave(ticket, False, sem)
        except ValueError:
            if cond._closed:  # by another thread: its words, lock and semaphore are gone
                raise _closed_error("event") from None
            raise

    def close(self) -> None:
        """Release this process's handles; idempotent.

        Afterwards every use of the event in this process raises ``ValueError``,
        as a closed ``Lock``'s does; a thread waiting meanwhile gets it within a
        slice (0.5 s at most).
        """
        self._cond.close()
        self._cond._lock.close()
        self._w = _ClosedWords("event")  # type: ignore[assignment]

    def __reduce__(self):
        _not_shareable(self)
        return (_rebuild_event, (self._cond,))

    def __repr__(self) -> str:
        # multiprocessing's form: <Event at 0x7f.. set>, or unset.
        if self._cond._shared.closed:
            return f"<{type(self).__qualname__} at {id(self):#x} closed>"
        state = "set" if self.is_set() else "unset"
        return f"<{type(self).__qualname__} at {id(self):#x} {state}>"


def _rebuild_event(cond: Condition) -> Event:
    obj = Event.__new__(Event)
    obj._setup(cond)
    return obj


# ─── Barrier ─────────────────────────────────────────────────────────────────

_ARRIVED = 1  # Barrier: parties waiting in the current round
_ROUND = 2  # Barrier: the round number, bumped when the barrier trips or resets
_BROKEN = 3  # Barrier: 1 when broken
# (word 4: unused)
# Barrier: how each of the last _OUTCOMES rounds ended, at _OUTCOME + round % _OUTCOMES:
# 1 + the round if it tripped, -(1 + the round) if it was reset. A waiter may wake only
# after later rounds have run (more threads than parties): it reads its own round's.
_OUTCOME = _HEADER
_OUTCOMES = 16
_PARTY = _OUTCOME + _OUTCOMES  # Barrier: from here, the identity of each waiting party's process


class Barrier:
    """A barrier for a fixed number of parties across processes.

    Args:
        parties: how many ``wait()`` calls release the barrier; >= 1.
        action: called by one party when the barrier trips, before the others
            are released. (It must be picklable to reach ``spawn`` children.)
        timeout: default timeout of :meth:`wait`.
        ctx: keyword-only; ``None`` or any proctor context, as for ``Lock``
            (accepted for ``multiprocessing.synchronize.Barrier(..., ctx=...)``).

    Raises:
        TypeError: ``parties`` is not an int, ``action`` is not callable, or
            ``ctx`` is not ``None`` or a proctor context.
        ValueError: ``parties`` < 1.

    Note:
        A party that dies while waiting breaks the barrier: the others get
        :class:`BrokenBarrierError` (within 0.5 s) instead of
        waiting for a party that can never come. (A party that dies *before*
        calling ``wait()`` cannot be told from one that has not come yet: any
        thread of any process may be the party still missing.) A ``wait()``
        ended by an exception (``KeyboardInterrupt``, a signal handler that
        raises) breaks the barrier too, as a timeout does, where
        ``threading.Barrier`` forgets the party and the others wait on for
        another.
    """

    __slots__ = ("__weakref__", "_action", "_cond", "_parties", "_timeout", "_w")

    def __init__(
        self,
        parties: int,
        action: Callable[[], Any] | None = None,
        timeout: float | None = None,
        *,
        ctx: Any = None,
    ) -> None:
        _runtime.check_ctx(ctx, type(self).__name__)
        if isinstance(parties, bool) or not isinstance(parties, numbers.Integral):
            raise TypeError(
                f"Barrier parties must be an int, not {type(parties).__name__} ({parties!r})"
            )
        if parties < 1:
            raise ValueError(f"Barrier needs at least 1 party, not {parties}")
        if action is not None and not callable(action):
            raise TypeError(f"Barrier action must be callable or None, not {action!r}")
        _check_timeout(timeout)
        parties = int(parties)
        self._setup(Condition._with_words(Lock(), _PARTY + parties), parties, action, timeout)

    def _setup(self, cond: Condition, parties: int, action: Any, timeout: Any) -> None:
        self._cond = cond
        self._w = cond._w
        cond._what = "barrier"
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
                timeout, a failing action, a waiting party that died, or one
                whose wait an exception ended).
        """
        if timeout is None:
            timeout = self._timeout
        deadline = _deadline(timeout)
        w = self._w
        cond = self._cond
        with cond:
            if w[_BROKEN]:
                raise _broken("the barrier is broken; reset() it before reuse")
            index = w[_ARRIVED]
            this_round = w[_ROUND]
            if index + 1 == self._parties:
                # A waiting party that died would pass with the live ones if this
                # party came before they noticed (a slice, 0.1 s to 0.5 s): look.
                # (One probe per other process among the waiting parties.)
                dead = self._dead_parties() if index else None
                if dead:
                    self._break()
                    raise _broken(self._died_waiting(dead))
                if self._action is not None:
                    try:
                        self._action()
                    except BaseException:
                        self._break()
                        raise
                w[_OUTCOME + this_round % _OUTCOMES] = this_round + 1
                w[_ROUND] = this_round + 1
                w[_ARRIVED] = 0
                cond.notify_all()
                return index
            w[_PARTY + index] = _sharedwords.ident()  # before the count that covers it
            try:
                w[_ARRIVED] = index + 1
                return self._wait_in_round(cond, index, this_round, deadline, timeout)
            except BaseException as exc:
                if cond._closed:  # by another thread: its words and lock are gone
                    if isinstance(exc, Exception):
                        raise _closed_error("barrier") from None
                    raise
                # Interrupted (KeyboardInterrupt, a signal handler raising): the party
                # leaves, and its count would let the next parties trip the barrier
                # one short. It breaks the barrier instead, as a timeout does. (Not if
                # its round has ended -- tripped or reset: the next round is not its
                # -- nor if the lock could not be taken back: see Condition._retake.)
                if w[_ROUND] == this_round and not w[_BROKEN] and cond._lock._is_owned():
                    self._break()
                raise

    def _wait_in_round(
        self, cond: Condition, index: int, this_round: int, deadline: Any, timeout: Any
    ) -> int:
        """Wait, as party ``index`` of ``this_round``, for the round to end (under the lock)."""
        w = self._w
        lock_words = cond._lock._w
        recoveries = lock_words[_OwnedLock._RECOVERIES]

        def something_happened() -> bool:  # read without the lock, every slice
            return (
                w[_ROUND] != this_round
                or w[_BROKEN] != 0
                or lock_words[_OwnedLock._RECOVERIES] != recoveries
                or self._neighbour_died(index)
            )

        while True:
            cond._wait(deadline, something_happened)
            if w[_ROUND] != this_round:
                # (Overwritten: _OUTCOMES rounds have run since; it tripped, then,
                # unless reset -- which would have woken this party long before.)
                if w[_OUTCOME + this_round % _OUTCOMES] != -(this_round + 1):
                    return index
                raise _broken("the barrier was reset while this party waited")
            if w[_BROKEN]:
                raise _broken("the barrier was aborted or broken by another party")
            if lock_words[_OwnedLock._RECOVERIES] != recoveries:
                # A party died inside the barrier's own critical section.
                self._break()
                raise _broken("a process died while holding the barrier's lock; it is now broken")
            dead = self._dead_parties()
            if dead:
                self._break()
                raise _broken(self._died_waiting(dead))
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                self._break()
                raise _broken(
                    f"Barrier.wait() timed out after {timeout} s with "
                    f"{w[_ARRIVED]} of {self._parties} parties waiting; the barrier is "
                    "now broken"
                )

    def _neighbour_died(self, index: int) -> bool:
        """Whether the party that arrived before ours (the last one, for the first) died.

        Each waiting party watches one other, in a ring, so that one probe per
        slice each finds any death: of a run of parties of one process, the
        party after the run watches its last.
        """
        w = self._w
        arrived = w[_ARRIVED]
        other = index - 1 if index > 0 else arrived - 1
        if other == index or not 0 <= other < arrived:
            return False
        identity = w[_PARTY + other]
        return identity > 0 and not self._cond._shared.process_alive(identity)

    def _dead_parties(self) -> list[int]:
        """The pids of waiting parties whose process has died (under the lock).

        One probe (a system call) per other process among them; none for this one's.
        """
        w = self._w
        alive = self._cond._shared.process_alive
        identities = {w[_PARTY + i] for i in range(w[_ARRIVED])}
        return sorted(
            pid_of(identity) for identity in identities if identity > 0 and not alive(identity)
        )

    @staticmethod
    def _died_waiting(dead: list[int]) -> str:
        return (
            f"process(es) {', '.join(map(str, dead))} died while waiting at the barrier; "
            "it is now broken"
        )

    def _break(self) -> None:
        self._w[_BROKEN] = 1
        self._cond.notify_all()

    def reset(self) -> None:
        """Return the barrier to its initial state; current waiters get BrokenBarrierError."""
        with self._cond:
            w = self._w
            if w[_ARRIVED]:
                current = w[_ROUND]
                w[_OUTCOME + current % _OUTCOMES] = -(current + 1)
                w[_ROUND] = current + 1
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
        """Release this process's handles; idempotent.

        Afterwards every use of the barrier in this process raises ``ValueError``
        (``n_waiting`` and ``broken`` too), as a closed ``Lock``'s does; a party
        waiting meanwhile gets it within a slice (0.5 s at most).
        """
        self._cond.close()
        self._cond._lock.close()
        self._w = _ClosedWords("barrier")  # type: ignore[assignment]

    def __reduce__(self):
        _not_shareable(self)
        return (_rebuild_barrier, (self._cond, self._parties, self._action, self._timeout))

    def __repr__(self) -> str:
        # threading's (and so multiprocessing's) form, with the public module's name:
        # <proctor.synchronize.Barrier at 0x7f..: waiters=1/3>, or ": broken>".
        cls = type(self)
        module = "proctor.synchronize" if cls.__module__.startswith("proctor._") else cls.__module__
        where = f"{module}.{cls.__qualname__} at {id(self):#x}"
        if self._cond._shared.closed:
            return f"<{where}: closed>"
        if self.broken:
            return f"<{where}: broken>"
        return f"<{where}: waiters={self.n_waiting}/{self._parties}>"


def _rebuild_barrier(cond: Condition, parties: int, action: Any, timeout: Any) -> Barrier:
    obj = Barrier.__new__(Barrier)
    obj._setup(cond, parties, action, timeout)
    return obj
