"""Blocking methods of the stdlib's queues and locks, run in a manager so that a call
its client gave up on takes nothing that nobody will receive.

::

    client thread                           serving thread (manager)
    ─────────────                           ────────────────────────
    (ident, "get", (), {})  ──────────────▶ q.get(True, CANCEL_POLL), again and
                                              again, looking at the connection in
                                              between: the client sends nothing
                                              during a call, so bytes there mean it
    interrupted (Ctrl-C, a signal             gave up (a "#cancel", or its end)
    handler raised):
    (None, "#cancel", (), {}) ────────────▶ seen: nothing taken   ─▶ (CANCELLED, True)
                                            seen just after an item was taken:
                                              the item goes back  ─▶ (CANCELLED, True)
    reads every reply up to CANCELLED;      the reply had gone out before the cancel:
    a result that came first goes back:       (the reply), then   ─▶ (CANCELLED, False)
    (ident, "#undo", (name, result), {}) ──▶ undo(): the item back at the front, the
                                              lock released

Only the types below, exactly (a subclass may block elsewhere): ``queue.Queue``
(``Manager().Queue()`` and ``JoinableQueue()``), ``LifoQueue``, ``PriorityQueue``,
``threading``'s locks, semaphores, ``Condition`` and ``Event``. ``Barrier.wait``
is left whole: a timed-out wait breaks the barrier for every party. Other
methods run as they are; a call of one that the client gave up on runs to its
end, and its result is dropped.
"""

from __future__ import annotations

import _thread
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .._core._timeout import check_timeout

__all__ = ("CANCEL_POLL", "RUNNERS", "Cancelled", "undo")

#: Seconds a serving thread waits on a queue or lock before it looks whether its
#: client gave up on the call. A call that gets what it waits for returns at
#: once (the wait ends with it); this bounds only how long an abandoned call
#: lingers, and how long an interrupted client waits for the answer to its
#: cancel (``_session.CANCEL_WAIT``).
CANCEL_POLL = 0.05

_monotonic = time.monotonic


class Cancelled(Exception):
    """The client gave up on the call (it is interrupted, or gone); nothing was taken."""


def _timeout(timeout: Any) -> float | None:
    """``timeout`` in seconds, as the waits below take it: ``None`` for ever
    (``math.inf`` too, which made the stdlib's waits raise ``OverflowError``).

    Raises:
        TypeError: not a number.
        ValueError: NaN (which made ``queue.Queue.get`` wait for ever, and
            ``Event.wait`` return at once).
    """
    return check_timeout(timeout)


def _slice(deadline: float | None) -> float:
    if deadline is None:
        return CANCEL_POLL
    return max(0.0, min(CANCEL_POLL, deadline - _monotonic()))


def _expired(deadline: float | None) -> bool:
    return deadline is not None and _monotonic() >= deadline


# -- queues -------------------------------------------------------------------------


def _queue_timeout(timeout: Any) -> Any:
    """A queue's ``timeout``: NaN refused, ``math.inf`` for ever; others as given (a
    negative one is refused by the queue itself, as ``queue.Queue`` does)."""
    if timeout is not None and _timeout(timeout) is None:
        return None
    return timeout


def _queue_get(
    q: Any, cancelled: Callable[[], bool], block: Any = True, timeout: Any = None
) -> Any:
    timeout = _queue_timeout(timeout)
    if not block or (timeout is not None and timeout <= CANCEL_POLL):
        return q.get(block, timeout)
    try:
        return q.get(False)
    except queue.Empty:
        pass
    deadline = None if timeout is None else _monotonic() + timeout
    while True:
        try:
            item = q.get(True, _slice(deadline))
        except queue.Empty:
            if _expired(deadline):
                raise
            if cancelled():
                raise Cancelled from None
            continue
        if cancelled():  # (taken as the client gave up: its reply would be lost)
            _give_back(q, item)
            raise Cancelled
        return item


def _queue_put(
    q: Any, cancelled: Callable[[], bool], item: Any, block: Any = True, timeout: Any = None
) -> None:
    timeout = _queue_timeout(timeout)
    if not block or (timeout is not None and timeout <= CANCEL_POLL):
        q.put(item, block, timeout)
        return
    deadline = None if timeout is None else _monotonic() + timeout
    while True:
        try:
            q.put(item, True, _slice(deadline))
            return  # (put, even if the client gave up meanwhile: it may have been)
        except queue.Full:
            if _expired(deadline):
                raise
            if cancelled():
                raise Cancelled from None


def _queue_join(q: Any, cancelled: Callable[[], bool]) -> None:
    with q.all_tasks_done:
        while q.unfinished_tasks:
            if not q.all_tasks_done.wait(CANCEL_POLL) and cancelled():
                raise Cancelled


def _give_back(q: Any, item: Any) -> None:
    """Put ``item``, just taken by ``get()``, back where the next ``get()`` takes it.

    Its task stays unfinished (``get`` does not count it done). The queue may
    hold one item over its ``maxsize`` until the next ``get()``: a ``put`` may
    have taken the room meanwhile, and the item must not wait behind it.
    """
    with q.mutex:
        if type(q) is queue.Queue:
            q.queue.appendleft(item)  # its front, where it was
        else:
            q._put(item)  # the top of a LifoQueue, its place in a PriorityQueue
        q.not_empty.notify()


# -- locks, semaphores, conditions, events ---------------------------------------------------


def _acquire_in_slices(lock: Any, cancelled: Callable[[], bool], wait: float | None) -> bool:
    if lock.acquire(False):
        return True
    deadline = None if wait is None else _monotonic() + wait
    while True:
        if lock.acquire(True, _slice(deadline)):
            if cancelled():  # (taken as the client gave up: nobody would release it)
                lock.release()
                raise Cancelled
            return True
        if _expired(deadline):
            return False
        if cancelled():
            raise Cancelled


def _lock_acquire(
    lock: Any, cancelled: Callable[[], bool], blocking: Any = True, timeout: Any = -1
) -> bool:
    # A lock's (and a Condition's): -1 waits for ever; math.inf too (it raised
    # OverflowError), NaN is refused.
    if blocking and timeout.__class__ in (int, float):
        wait = None if timeout == -1 else _timeout(timeout)
        if wait is None or wait > CANCEL_POLL:
            return _acquire_in_slices(lock, cancelled, wait)
    return bool(lock.acquire(blocking, timeout))  # (its own checks and errors)


def _semaphore_acquire(
    sem: Any, cancelled: Callable[[], bool], blocking: Any = True, timeout: Any = None
) -> bool:
    if blocking:
        wait = None if timeout is None else _timeout(timeout)
        if wait is None or wait > CANCEL_POLL:
            return _acquire_in_slices(sem, cancelled, wait)
    return bool(sem.acquire(blocking, timeout))


def _event_wait(event: Any, cancelled: Callable[[], bool], timeout: Any = None) -> bool:
    wait = _timeout(timeout)
    if wait is not None and wait <= CANCEL_POLL:
        return bool(event.wait(timeout))
    deadline = None if wait is None else _monotonic() + wait
    while True:
        if event.wait(_slice(deadline)):
            return True
        if _expired(deadline):
            return False
        if cancelled():
            raise Cancelled


def _condition_wait(cond: Any, cancelled: Callable[[], bool], timeout: Any = None) -> bool:
    wait = _timeout(timeout)
    if wait is not None and wait <= CANCEL_POLL:
        return bool(cond.wait(timeout))
    deadline = None if wait is None else _monotonic() + wait
    # threading.Condition.wait() made again, its lock let go once: a waiter lock of
    # our own, waited on in slices. Slices of cond.wait() lost notifications: a slice
    # that timed out while notify_all() held the lock was notified (its waiter taken
    # off the list) as it waited to take the lock back, and then reported a timeout,
    # so the next slice waited for a notification already spent (CPython's suite:
    # WithManagerTestCondition.test_notify_all, a waiter never woken).
    waiter = _thread.allocate_lock()
    waiter.acquire()
    cond._waiters.append(waiter)
    saved = cond._release_save()
    notified = False
    gave_up = False
    try:
        while True:
            if waiter.acquire(True, _slice(deadline)):
                notified = True
                break
            if _expired(deadline):
                break
            if cancelled():
                gave_up = True
                break
    finally:
        cond._acquire_restore(saved)
        if not notified:
            try:
                cond._waiters.remove(waiter)
            except ValueError:
                notified = True  # notify() took it off between the last slice and now
    if gave_up:
        if notified:
            cond.notify()  # (the notification goes to another waiter)
        raise Cancelled  # (the lock is held again, as after any wait())
    return notified


_QUEUE: dict[str, Callable[..., Any]] = {"get": _queue_get, "put": _queue_put, "join": _queue_join}
_LOCK = {"acquire": _lock_acquire}
_SEMAPHORE = {"acquire": _semaphore_acquire}

#: type -> {method name -> its run in slices, called as run(obj, cancelled, *args, **kwds)}
RUNNERS: dict[Any, dict[str, Callable[..., Any]]] = {
    queue.Queue: _QUEUE,
    queue.LifoQueue: _QUEUE,
    queue.PriorityQueue: _QUEUE,
    type(threading.Lock()): _LOCK,
    type(threading.RLock()): _LOCK,
    threading.Semaphore: _SEMAPHORE,
    threading.BoundedSemaphore: _SEMAPHORE,
    threading.Condition: {"acquire": _lock_acquire, "wait": _condition_wait},
    threading.Event: {"wait": _event_wait},
}


def undo(obj: Any, name: str, result: Any) -> None:
    """Undo what ``obj.name()`` did when it returned ``result``, for a client that never
    got the result: a queue's item goes back to its front, a lock or semaphore is
    released, a condition's notification passes to another waiter. Nothing for
    other methods and types (a ``put`` stays put).
    """
    runners = RUNNERS.get(obj.__class__)
    if runners is None or name not in runners:
        return
    if runners is _QUEUE:
        if name == "get":
            _give_back(obj, result)
    elif name == "wait":
        if result is True and isinstance(obj, threading.Condition):
            obj.notify()
    elif result is True:  # acquire
        obj.release()
