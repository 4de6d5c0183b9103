"""Semaphore and BoundedSemaphore: counting semaphores shared by processes.

These are the OS semaphore itself (``_semlock.NamedSemaphore``) with no owner
bookkeeping: any process may release a semaphore, so there is no holder whose
death could be noticed. (Use a ``Lock`` where that matters.) A blocked
``acquire()`` goes through ``_wait.wait_for_post`` like every other wait, with
nothing to re-check: the count is the whole state, and the kernel watches it.
"""

from __future__ import annotations

import numbers
from typing import Any

from .._core import _runtime
from .._core._closing import ClosedWhenCollected
from .._core._wait import POSTED, wait_for_post
from .._reaper._semlock import SEM_VALUE_MAX, NamedSemaphore
from ._lock import _check_timeout, _closed_call, _deadline, _not_shareable

__all__ = ("BoundedSemaphore", "Semaphore")


class Semaphore(ClosedWhenCollected):
    """A counting semaphore shared by processes (``multiprocessing.Semaphore``).

    Args:
        value: the initial count; must be >= 0.
        ctx: keyword-only; ``None`` or any proctor context, as for ``Lock``
            (accepted for ``multiprocessing.synchronize.Semaphore(value, ctx=...)``).

    Raises:
        TypeError: ``value`` is not an int, or ``ctx`` is not ``None`` or a
            proctor context.
        ValueError: ``value`` is negative or too large for the OS.

    Note:
        A semaphore has no owner -- any process may release it -- so the death
        of a process that acquired it cannot be told from a hand-over; use a
        :class:`Lock` where a dead holder must be noticed.
    """

    __slots__ = ("__weakref__", "_acquire", "_named")

    _BOUNDED = False

    def __init__(self, value: int = 1, *, ctx: Any = None) -> None:
        _runtime.check_ctx(ctx, type(self).__name__)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(
                f"{type(self).__name__} value must be an int, not {type(value).__name__} "
                f"({value!r})"
            )
        value = int(value)
        if value < 0:
            raise ValueError(f"{type(self).__name__} initial value must be >= 0, not {value}")
        if value > SEM_VALUE_MAX:
            raise ValueError(
                f"{type(self).__name__} initial value {value} exceeds the OS limit "
                f"SEM_VALUE_MAX={SEM_VALUE_MAX}"
            )
        maxvalue = value if self._BOUNDED else SEM_VALUE_MAX
        self._setup(NamedSemaphore(value, maxvalue))

    def _setup(self, named: NamedSemaphore) -> None:
        self._named = named
        self._acquire = named.sem.acquire

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Decrement the count, waiting while it is zero.

        Args:
            block: wait while the count is zero; ``False`` only tries.
            timeout: with ``block``, give up after this many seconds.

        Returns:
            Whether the count was decremented.

        Raises:
            TypeError: ``timeout`` is not a number.
        """
        acquire = self._acquire
        try:
            if acquire(False, timeout):  # (the C call rejects a non-numeric timeout)
                return True
        except TypeError:
            _check_timeout(timeout)
            raise
        if not block:
            return False
        return wait_for_post(acquire, _deadline(timeout)) == POSTED

    def release(self) -> None:
        """Increment the count, waking one waiter."""
        self._named.sem.release()

    def get_value(self) -> int:
        """The current count (not available on macOS, like ``multiprocessing``)."""
        return self._named.sem._get_value()

    def close(self) -> None:
        """Release this process's handle on the OS semaphore; idempotent."""
        self._acquire = _closed_call
        self._named.close()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.release()

    def __reduce__(self):
        _not_shareable(self)
        return (_rebuild_semaphore, (type(self), self._named))

    def __repr__(self) -> str:
        # multiprocessing's form: <Semaphore(value=2)>, <BoundedSemaphore(value=2,
        # maxvalue=3)>; the value is "unknown" where the OS cannot tell it (macOS).
        name = type(self).__name__
        if self._acquire is _closed_call:
            return f"<{name}(closed)>"
        try:
            value = str(self.get_value())
        except (ValueError, OSError, NotImplementedError):
            value = "unknown"
        return f"<{name}(value={value}{self._bound_text()})>"

    def _bound_text(self) -> str:
        return ""


class BoundedSemaphore(Semaphore):
    """A semaphore whose count may not rise above its initial value.

    Raises:
        ValueError: from ``release()``, when the count is already at its bound.
    """

    __slots__ = ()
    _BOUNDED = True

    def release(self) -> None:
        """Increment the count, waking one waiter.

        Raises:
            ValueError: the count is already at its initial value: ``release()``
                was called more often than ``acquire()``.
        """
        try:
            self._named.sem.release()
        except ValueError:
            raise ValueError(
                f"BoundedSemaphore released too many times: its count is already at its "
                f"bound {self._named.maxvalue}"
            ) from None

    def _bound_text(self) -> str:
        return f", maxvalue={self._named.maxvalue}"


def _rebuild_semaphore(cls: type[Semaphore], named: NamedSemaphore) -> Semaphore:
    obj = cls.__new__(cls)
    obj._setup(named)
    return obj
