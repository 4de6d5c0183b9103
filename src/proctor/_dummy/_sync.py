"""Locks, semaphores, conditions, events and barriers for threads, as ``multiprocessing``'s.

``threading``'s primitives do the work; these classes give them the signatures of
``multiprocessing.synchronize`` -- ``acquire(block=True, timeout=None)``,
``Semaphore.get_value()`` -- and proctor's checks: a timeout that is not a
number is a ``TypeError`` before any wait, a ``Lock`` released while unlocked
and an ``RLock``/``Condition`` used by a thread that does not hold it raise
errors that ``except`` clauses written for either ``threading`` or
``multiprocessing`` catch. ``Condition``, ``Event`` and ``Barrier`` are
subclasses of ``threading``'s; ``Lock`` and ``RLock`` wrap ``threading``'s (whose
types cannot be subclassed).
"""

from __future__ import annotations

import numbers
import threading

from .._core._timeout import check_timeout
from .._sync import LockNotOwnedError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = (
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Lock",
    "NotLockedError",
    "RLock",
    "Semaphore",
)

_TIMEOUT_MAX = threading.TIMEOUT_MAX


class NotLockedError(ValueError, RuntimeError):
    """``release()`` of a ``proctor.dummy.Lock`` that is not locked.

    A ``ValueError`` (what ``multiprocessing.Lock`` raises) and a ``RuntimeError``
    (what ``threading.Lock``, hence ``multiprocessing.dummy.Lock``, raises).
    """


def _lock_arguments(block: Any, timeout: Any, blocking: Any) -> tuple[Any, Any]:
    """``acquire()``'s arguments as ``multiprocessing`` names them, from either API's.

    ``multiprocessing.dummy``'s locks are ``threading``'s, so code written for it
    passes ``blocking=`` and ``timeout=-1`` (``threading``'s "no limit"); code written
    for processes passes ``block=`` and ``timeout=None``. Both are taken.

    Raises:
        TypeError: both ``block`` and ``blocking`` were given.
    """
    if blocking is not None:
        if block is not _UNSET:
            raise TypeError("acquire() takes block= or blocking= (threading's name), not both")
        block = blocking
    elif block is _UNSET:
        block = True
    if timeout == -1 and not isinstance(timeout, bool):
        timeout = None  # threading's default: wait for as long as it takes
    return block, timeout


#: ``acquire()``'s ``block`` when the caller gave none (it may give ``blocking``).
_UNSET: Any = object()


def wait_seconds(timeout: Any) -> float | None:
    """``timeout`` as ``threading`` waits take it: ``None`` for ever, else >= 0.

    Raises:
        TypeError: not a number or ``None``.
        ValueError: NaN.
    """
    timeout = check_timeout(timeout)
    if timeout is None or timeout > _TIMEOUT_MAX:
        return None  # threading refuses more than TIMEOUT_MAX (about 292 years)
    return max(timeout, 0.0)


def _acquire(acquire: Callable[..., bool], block: bool, timeout: Any) -> bool:
    seconds = wait_seconds(timeout)  # checked even when not blocking, as proctor's
    if not block:
        return acquire(False)
    if seconds is None:
        return acquire(True)
    return acquire(True, seconds)


class Lock:
    """A non-recursive lock: ``multiprocessing.Lock``'s API on a ``threading.Lock``.

    Any thread may release it (as with both ``threading`` and ``multiprocessing``).
    """

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(
        self, block: bool = _UNSET, timeout: float | None = None, *, blocking: bool | None = None
    ) -> bool:
        """Acquire the lock.

        Args:
            block: wait while another thread holds it; ``False`` only tries.
            timeout: with ``block``, give up after this many seconds (``None``, or
                ``-1`` as in ``threading``, waits for ever; another negative number
                only tries).
            blocking: ``threading``'s name for ``block`` (``multiprocessing.dummy``'s
                locks are ``threading``'s).

        Returns:
            Whether the lock was acquired.

        Raises:
            TypeError: ``timeout`` is not a number or ``None``; both ``block`` and
                ``blocking`` were given.
        """
        if timeout is None and blocking is None:
            # the common case, without a wrapper's cost
            return self._lock.acquire(True if block is _UNSET else block)
        block, timeout = _lock_arguments(block, timeout, blocking)
        return _acquire(self._lock.acquire, block, timeout)

    def release(self) -> None:
        """Release the lock.

        Raises:
            NotLockedError: (a ``ValueError`` and a ``RuntimeError``) it is not locked.
        """
        try:
            self._lock.release()
        except RuntimeError:
            raise NotLockedError(
                "release() called on an unlocked Lock: every release() must match an "
                "earlier acquire()"
            ) from None

    def locked(self) -> bool:
        """Whether some thread holds the lock."""
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __reduce__(self) -> Any:
        raise TypeError(_NOT_PICKLABLE.format(type(self).__name__))

    def __repr__(self) -> str:
        return f"<proctor.dummy.Lock {'locked' if self._lock.locked() else 'unlocked'}>"


class RLock:
    """A recursive lock: ``multiprocessing.RLock``'s API on a ``threading.RLock``."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def acquire(
        self, block: bool = _UNSET, timeout: float | None = None, *, blocking: bool | None = None
    ) -> bool:
        """Acquire the lock, or go one level deeper if this thread holds it.

        Args and returns as for :meth:`Lock.acquire`.
        """
        if timeout is None and blocking is None:
            return self._lock.acquire(True if block is _UNSET else block)
        block, timeout = _lock_arguments(block, timeout, blocking)
        return _acquire(self._lock.acquire, block, timeout)

    def release(self) -> None:
        """Leave one level; release the lock when the outermost level is left.

        Raises:
            LockNotOwnedError: (an ``AssertionError`` and a ``RuntimeError``) the
                calling thread does not hold the lock.
        """
        try:
            self._lock.release()
        except RuntimeError:
            raise LockNotOwnedError(
                "release() of an RLock that this thread does not hold; only the thread "
                "that acquired it may release it"
            ) from None

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # What threading.Condition uses when it is given this lock.
    def _is_owned(self) -> bool:
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]

    def _release_save(self) -> Any:
        return self._lock._release_save()  # type: ignore[attr-defined]

    def _acquire_restore(self, state: Any) -> None:
        self._lock._acquire_restore(state)  # type: ignore[attr-defined]

    def __reduce__(self) -> Any:
        raise TypeError(_NOT_PICKLABLE.format(type(self).__name__))

    def __repr__(self) -> str:
        if self._is_owned():
            state = f"owned by {threading.current_thread().name}"
        elif self._lock.acquire(False):
            self._lock.release()
            state = "unlocked"
        else:
            state = "owned by another thread"
        return f"<proctor.dummy.RLock {state}>"


def _check_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} value must be an int, not {type(value).__name__} ({value!r})")
    if value < 0:
        raise ValueError(f"{what} initial value must be >= 0, not {value}")
    return int(value)


class Semaphore(threading.Semaphore):
    """A counting semaphore: ``multiprocessing.Semaphore``'s API on ``threading``'s.

    Args:
        value: the initial count, an int >= 0.

    Raises:
        TypeError: ``value`` is not an int.
        ValueError: ``value`` is negative.
    """

    def __init__(self, value: int = 1) -> None:
        super().__init__(_check_count(value, type(self).__name__))

    def acquire(  # type: ignore[override]
        self, block: bool = _UNSET, timeout: float | None = None, *, blocking: bool | None = None
    ) -> bool:
        """Decrement the count, waiting while it is zero.

        Args and returns as for :meth:`Lock.acquire`.
        """
        block, timeout = _lock_arguments(block, timeout, blocking)
        seconds = wait_seconds(timeout)
        if not block:
            return super().acquire(False)
        return super().acquire(True, seconds)

    def get_value(self) -> int:
        """The current count."""
        return int(self._value)

    def __reduce__(self) -> Any:
        raise TypeError(_NOT_PICKLABLE.format(type(self).__name__))

    def __repr__(self) -> str:
        return f"<proctor.dummy.{type(self).__name__}(value={self.get_value()})>"


class BoundedSemaphore(Semaphore, threading.BoundedSemaphore):
    """A semaphore whose count may not rise above its initial value.

    Raises:
        ValueError: from ``release()``, when the count is already at its bound.
    """

    def __init__(self, value: int = 1) -> None:
        threading.BoundedSemaphore.__init__(self, _check_count(value, type(self).__name__))

    def release(self, n: int = 1) -> None:
        """Increment the count, waking one waiter.

        Raises:
            ValueError: the count is already at its initial value: ``release()``
                was called more often than ``acquire()``.
        """
        try:
            threading.BoundedSemaphore.release(self, n)
        except ValueError:
            raise ValueError(
                "BoundedSemaphore released too many times: its count is already at its "
                f"bound {self._initial_value}"  # type: ignore[attr-defined]
            ) from None

    def __repr__(self) -> str:
        return (
            f"<proctor.dummy.BoundedSemaphore(value={self.get_value()}, "
            f"maxvalue={self._initial_value})>"  # type: ignore[attr-defined]
        )


class Condition(threading.Condition):
    """A condition variable: ``threading.Condition`` with proctor's checks.

    Args:
        lock: the lock it uses: a ``Lock`` or ``RLock`` (of this module or of
            ``threading``); ``None`` makes a new ``RLock``.

    Raises:
        TypeError: ``lock`` has no ``acquire``/``release`` methods.
    """

    def __init__(self, lock: Any = None) -> None:
        if lock is None:
            lock = RLock()
        elif not (
            callable(getattr(lock, "acquire", None)) and callable(getattr(lock, "release", None))
        ):
            raise TypeError(
                f"lock must be a Lock or an RLock, not {type(lock).__name__} ({lock!r:.80})"
            )
        super().__init__(lock)

    def _check_owned(self, what: str) -> None:
        if not self._is_owned():  # type: ignore[attr-defined]
            raise LockNotOwnedError(
                f"{what}() on a Condition whose lock this thread does not hold; acquire it "
                f"first (with cond: cond.{what}(...))"
            )

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notify or ``timeout`` seconds, take the lock back.

        Returns:
            False if ``timeout`` passed first, else True.

        Raises:
            TypeError: ``timeout`` is not a number or ``None``.
            LockNotOwnedError: (an ``AssertionError`` and a ``RuntimeError``) this
                thread does not hold the lock.
        """
        seconds = wait_seconds(timeout)
        self._check_owned("wait")
        return super().wait(seconds)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true, or ``timeout`` seconds; return its last value.

        Raises:
            TypeError: ``predicate`` is not callable, or ``timeout`` not a number.
            LockNotOwnedError: this thread does not hold the lock.
        """
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, not {type(predicate).__name__}")
        return super().wait_for(predicate, wait_seconds(timeout))

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiting threads.

        Raises:
            TypeError: ``n`` is not an int.
            LockNotOwnedError: this thread does not hold the lock.
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"n must be an int, not {type(n).__name__} ({n!r})")
        self._check_owned("notify")
        super().notify(int(n))

    def notify_all(self) -> None:
        """Wake every waiting thread.

        Raises:
            LockNotOwnedError: this thread does not hold the lock.
        """
        self._check_owned("notify_all")
        super().notify_all()

    def __reduce__(self) -> Any:
        raise TypeError(_NOT_PICKLABLE.format(type(self).__name__))

    def __repr__(self) -> str:
        return f"<proctor.dummy.Condition({self._lock!r})>"  # type: ignore[attr-defined]


class Event(threading.Event):
    """An event: ``threading.Event`` whose ``wait()`` checks its timeout."""

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is set or ``timeout`` seconds pass; return the flag.

        Raises:
            TypeError: ``timeout`` is not a number or ``None``.
        """
        return super().wait(wait_seconds(timeout))

    def __reduce__(self) -> Any:
        raise TypeError(_NOT_PICKLABLE.format(type(self).__name__))

    def __repr__(self) -> str:
        return f"<proctor.dummy.Event {'set' if self.is_set() else 'unset'}>"


class Barrier(threading.Barrier):
    """A barrier: ``threading.Barrier`` with its arguments checked.

    Args:
        parties: how many threads must call ``wait()``, an int >= 1.
        action: called by one of them when all have arrived.
        timeout: the default for ``wait()``.

    Raises:
        TypeError: ``parties`` is not an int, ``action`` is not callable, or
            ``timeout`` is not a number.
        ValueError: ``parties`` is below 1.
    """

    def __init__(
        self,
        parties: int,
        action: Callable[[], object] | None = None,
        timeout: float | None = None,
    ) -> None:
        if isinstance(parties, bool) or not isinstance(parties, numbers.Integral):
            raise TypeError(f"parties must be an int, not {type(parties).__name__} ({parties!r})")
        if parties < 1:
            raise ValueError(f"parties must be at least 1, not {parties}")
        if action is not None and not callable(action):
            raise TypeError(f"action must be callable or None, not {type(action).__name__}")
        super().__init__(int(parties), action, wait_seconds(timeout))

    def wait(self, timeout: float | None = None) -> int:
        """Wait until every party has called ``wait()``; return this one's index.

        Raises:
            TypeError: ``timeout`` is not a number or ``None``.
            threading.BrokenBarrierError: the barrier was broken (reset, aborted,
                or a wait timed out).
        """
        return super().wait(wait_seconds(timeout))

    def __reduce__(self) -> Any:
        raise TypeError(_NOT_PICKLABLE.format(type(self).__name__))


_NOT_PICKLABLE = (
    "a proctor.dummy {} is shared by the threads of one process and cannot be pickled "
    "or sent to another process; use proctor's own (proctor.Lock...) between processes"
)
