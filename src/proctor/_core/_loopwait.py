"""Waiting on a semaphore from an event loop: one watcher thread per semaphore, not per call.

A POSIX semaphore has no descriptor, so an event loop cannot watch one, and a
coroutine must not sleep on it. :func:`await_post` is the event-loop twin of
``_wait.wait_for_post``: the coroutine registers, and one *watcher* thread per
semaphore (per process, whatever the number of waiting coroutines and loops)
sleeps on the semaphore for all of them and hands each unit it takes to the
oldest waiter still waiting::

    coroutine (its loop's thread)                 watcher thread (one per semaphore
    ─────────────────────────────                 that has waiting coroutines)
    await_post(sem, deadline, ready)
      sem.acquire(False)? ── yes ──▶ POSTED
      register a waiter (a future) ─────────────▶ sleep on sem.acquire(True, a slice)
      await it, at most a slice                     took a unit: the oldest WAITING waiter
                                                    becomes HANDED; its loop is woken
      ◀──────── loop.call_soon_threadsafe ───────   (the loop's own self-pipe)
      HANDED: POSTED (the unit is the caller's)     no waiter waiting: the unit is posted back
      slice over: ready()? ── yes ──▶ READY         no waiter at all: the thread ends
      past the deadline: TIMED_OUT
      cancelled (or timed out) while HANDED: the unit is posted back

So a unit is never dropped: it is the caller's only once ``await_post``
returns POSTED, and a waiter that leaves any other way gives back what it was
handed. As with ``wait_for_post``, no wait trusts the post to come: every slice
ends with the caller's ``ready()``, so a post lost with a killed poster costs
at most a slice. Slices back off as ``wait_for_post``'s do (``slice_seconds``):
a coroutine's from CHECK_INTERVAL to LONGEST_SLICE while its wait goes on, the
watcher's while it takes no unit. Nothing here runs, and no thread exists, until a
coroutine waits; the watcher ends within a slice (LONGEST_SLICE at most) of its
last waiter leaving. A loop that wakes costs the poster nothing: the poster posts the
semaphore as it always does, and blocking waiters in other threads and
processes compete for the units with the watcher on equal terms.
"""

from __future__ import annotations

import _thread
from collections import deque
from collections.abc import Callable

from . import _afterfork
from ._wait import POSTED, READY, TIMED_OUT, slice_seconds

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import Any

__all__ = ("await_post",)

# A waiter's states (changed only under its watcher's condition).
_WAITING = 0  # registered, may be handed a unit
_HANDED = 1  # a unit was taken for it: it owns that unit until it gives it back
_GONE = 2  # unregistered


class _Waiter:
    __slots__ = ("future", "loop", "state")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future = loop.create_future()
        self.state = _WAITING


class _Watcher:
    """The thread that sleeps on one semaphore for this process's waiting coroutines."""

    def __init__(self, sem: Any, registry: _Registry) -> None:
        self.sem = sem
        self.registry = registry
        self.waiters: deque[_Waiter] = deque()
        # Imported here, not with the module: the queues import this module, and a
        # fork server that loads them would have threading in every child it forks
        # (issue 17). A coroutine is waiting, so asyncio has imported it already.
        import threading

        self.cond = threading.Condition(threading.Lock())
        self.thread = threading.Thread(target=self._run, name="proctor-loop-wait", daemon=True)

    def _first_waiting(self) -> _Waiter | None:
        for waiter in self.waiters:
            if waiter.state == _WAITING:
                return waiter
        return None

    def _run(self) -> None:
        sem = self.sem
        slept = 0.0  # since the last unit taken: its slices back off as a wait's do
        while True:
            with self.cond:
                # Every waiter was handed a unit: wait until one leaves or comes.
                while self.waiters and self._first_waiting() is None:
                    self.cond.wait()
                idle = not self.waiters
            if idle:
                registry = self.registry
                with registry.lock, self.cond:
                    if not self.waiters:
                        if registry.watchers.get(id(sem)) is self:
                            del registry.watchers[id(sem)]
                        return
                continue
            wait = slice_seconds(None, slept)
            try:
                taken = sem.acquire(True, wait)
            except (OSError, ValueError):
                taken = False  # the waiters' slices end, and they look for themselves
            if not taken:
                slept += wait
                with self.cond:  # a loop closed with its task still waiting never comes back
                    for closed in [w for w in self.waiters if w.loop.is_closed()]:
                        closed.state = _GONE
                        self.waiters.remove(closed)
                continue
            slept = 0.0
            with self.cond:
                waiter = self._first_waiting()
                if waiter is not None:
                    waiter.state = _HANDED
                    try:
                        waiter.loop.call_soon_threadsafe(_deliver, waiter)
                    except RuntimeError:  # its loop is closed: nobody will come for it
                        waiter.state = _GONE
                        self.waiters.remove(waiter)
                        waiter = None
            if waiter is None:
                sem.release()  # nobody to hand it to: it stays for whoever comes


class _Registry:
    """This process's watchers. A forked child starts with none: their threads did
    not survive the fork (and a thread of the parent may have held the lock)."""

    __slots__ = ("lock", "watchers")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        # Keyed by id() of the semaphore object; the watcher keeps the object
        # alive, so the id cannot be reused while the entry exists.
        self.watchers: dict[int, _Watcher] = {}


_registry = _afterfork.PerProcess(_Registry)


def _deliver(waiter: _Waiter) -> None:
    """In the waiter's loop: wake it (if it already left, it finds HANDED as it unregisters)."""
    if not waiter.future.done():
        waiter.future.set_result(None)


def _slice_over(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _register(sem: Any, loop: asyncio.AbstractEventLoop) -> tuple[_Watcher, _Waiter]:
    waiter = _Waiter(loop)
    registry = _registry.get()
    with registry.lock:
        watcher = registry.watchers.get(id(sem))
        start = watcher is None
        if watcher is None:
            watcher = registry.watchers[id(sem)] = _Watcher(sem, registry)
        with watcher.cond:
            watcher.waiters.append(waiter)
            watcher.cond.notify()
    if start:
        watcher.thread.start()
    return watcher, waiter


def _unregister(watcher: _Watcher, waiter: _Waiter) -> bool:
    """Leave; return whether a unit was handed to this waiter (it is now the caller's)."""
    with watcher.cond:
        handed = waiter.state == _HANDED
        if waiter.state != _GONE:
            waiter.state = _GONE
            watcher.waiters.remove(waiter)
            watcher.cond.notify()
    return handed


async def await_post(
    sem: Any,
    deadline: float | None,
    ready: Callable[[], object] | None = None,
    back_off: bool = True,
) -> int:
    """Take a unit of ``sem`` without blocking the running event loop.

    The coroutine twin of ``_wait.wait_for_post``: ``ready()`` is called in the
    loop's thread between slices (``_wait.slice_seconds``: they grow from
    CHECK_INTERVAL to LONGEST_SLICE while the wait goes on), and once more at
    the deadline.

    Args:
        sem: a ``_multiprocessing.SemLock`` (anything with ``acquire(block,
            timeout)`` and ``release()``).
        deadline: a ``time.monotonic()`` instant, or ``None`` to wait for ever.
        ready: a true result ends the wait (``READY``); ``None``: only a post can.
        back_off: as for ``wait_for_post``; False: every slice is CHECK_INTERVAL.

    Returns:
        ``POSTED`` (one unit is the caller's), ``READY`` or ``TIMED_OUT``.
        Cancelled, it raises ``CancelledError`` and owns no unit.
    """
    import asyncio  # deferred: importing proctor must not import asyncio

    loop = asyncio.get_running_loop()
    slept = 0.0
    while True:
        if sem.acquire(False):
            return POSTED
        wait = slice_seconds(deadline, slept if back_off else 0.0)
        if wait <= 0:
            return READY if ready is not None and ready() else TIMED_OUT
        watcher, waiter = _register(sem, loop)
        timer = loop.call_later(wait, _slice_over, waiter.future)
        try:
            await waiter.future
        except BaseException:
            if _unregister(watcher, waiter):
                sem.release()  # handed to a waiter that is leaving: give it back
            raise
        finally:
            timer.cancel()
        if _unregister(watcher, waiter):
            return POSTED
        if ready is not None and ready():
            return READY
        slept += wait
