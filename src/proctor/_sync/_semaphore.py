"""Semaphore and BoundedSemaphore: counting semaphores shared by processes.

These are the OS semaphore itself (``_semlock.NamedSemaphore``) with no owner
bookkeeping: any process may release a semaphore, so there is no holder whose
death could be noticed. (Use a ``Lock`` where that matters.) A blocked
``acquire()`` goes through ``_wait.wait_for_post`` like every other wait, in
slices: the count is the whole state, and the kernel watches it, so between
slices there is only one thing to look at -- whether another thread of this
process has closed the semaphore, which ends the wait with the closed error.
"""

from __future__ import annotations

import numbers

from .._core import _runtime
from .._core._closing import ClosedWhenCollected
from .._core._wait import POSTED, wait_for_post
from .._reaper._semlock import SEM_VALUE_MAX, NamedSemaphore
from . import _accel
from ._lock import _as_acquire, _blocking, _closed_error, _deadline, _not_shareable

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from typing import Any

__all__ = (
    "BoundedSemaphore",
    "PyBoundedSemaphore",
    "PySemaphore",
    "Semaphore",
)

_native = _accel.native


def _closed_call(*args: Any) -> Any:
    raise _closed_error("semaphore")


# The attributes of every semaphore object (declared by the concrete classes, so
# that a native class can put its C base's layout first).
_SLOTS = ("__weakref__", "_acquire", "_named")


class _SemaphoreMethods(ClosedWhenCollected):
    """The pure-Python Semaphore: its fast paths, and what the C ones call for the rest."""

    if not TYPE_CHECKING:  # (the type checker takes the attributes as declared below)
        __slots__ = ()  # the concrete classes declare _SLOTS

    _BOUNDED = False

    _named: NamedSemaphore
    _acquire: Any

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
        self._attach_fast_paths()

    def _attach_fast_paths(self) -> None:
        """Point the C fast paths at the semaphore (native classes)."""

    def _detach(self) -> None:
        """Let the C fast paths go of the semaphore (native classes)."""

    @_as_acquire
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Decrement the count, waiting while it is zero.

        Args:
            block: wait while the count is zero; ``False`` only tries.
            timeout: with ``block``, give up after this many seconds.

        Returns:
            Whether the count was decremented.

        Raises:
            TypeError: ``timeout`` is not a number.
            ValueError: ``timeout`` is NaN, or the semaphore is closed (here, or
                by another thread while this one waits).
        """
        if block is not True or timeout is not None:
            block = _blocking(block, timeout)
        acquire = self._acquire
        if acquire(False):
            return True
        if not block:
            return False
        return wait_for_post(acquire, _deadline(timeout), self._closed_meanwhile) == POSTED

    def _closed_meanwhile(self) -> bool:
        """A blocked acquire()'s look between slices: False, or the closed error."""
        if self._acquire is _closed_call:
            _closed_call()
        return False

    def release(self) -> None:
        """Increment the count, waking one waiter."""
        self._named.sem.release()

    def get_value(self) -> int:
        """The current count (not available on macOS, like ``multiprocessing``)."""
        return self._named.sem._get_value()

    def close(self) -> None:
        """Release this process's handle on the OS semaphore; idempotent."""
        self._detach()  # first: the C fast paths keep the semaphore open too
        self._acquire = _closed_call  # (and a waiting acquire() raises at its next look)
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


_SEMAPHORE_DOC = """A counting semaphore shared by processes (``multiprocessing.Semaphore``).

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

_BOUNDED_DOC = """A semaphore whose count may not rise above its initial value.

    Raises:
        ValueError: from ``release()``, when the count is already at its bound.
    """


# The implementations, named as in _lock: by what they are (__qualname__, for
# pickling) and by the public name (__name__, for reprs and messages).


class PySemaphore(_SemaphoreMethods):
    __doc__ = _SEMAPHORE_DOC
    __slots__ = _SLOTS


class PyBoundedSemaphore(PySemaphore):
    __doc__ = _BOUNDED_DOC
    __slots__ = ()
    _BOUNDED = True

    def release(self) -> None:
        """Increment the count, waking one waiter.

        Raises:
            ValueError: the count is already at its initial value: ``release()``
                was called more often than ``acquire()``.
        """
        release = self._named.sem.release  # (a closed semaphore's ValueError says so)
        try:
            release()
        except ValueError:
            raise ValueError(
                f"BoundedSemaphore released too many times: its count is already at its "
                f"bound {self._named.maxvalue}"
            ) from None

    def _bound_text(self) -> str:
        return f", maxvalue={self._named.maxvalue}"


PySemaphore.__name__, PyBoundedSemaphore.__name__ = "Semaphore", "BoundedSemaphore"

if _native is not None:
    from ._native import SemaphoreCore

    class NativeSemaphore(SemaphoreCore, _SemaphoreMethods):
        # The C base comes first: its acquire, release, __enter__ and __exit__
        # are the ones called; the rest is _SemaphoreMethods'.
        __doc__ = _SEMAPHORE_DOC
        __slots__ = _SLOTS

        def _attach_fast_paths(self) -> None:
            py_release = (PyBoundedSemaphore if self._BOUNDED else PySemaphore).release
            self._attach(self._named.sem, None, 0, _SemaphoreMethods.acquire, py_release)

    class NativeBoundedSemaphore(NativeSemaphore):
        # release() is the C one; past the bound it calls PyBoundedSemaphore.release,
        # which raises the error.
        __doc__ = _BOUNDED_DOC
        __slots__ = ()
        _BOUNDED = True
        _bound_text = PyBoundedSemaphore._bound_text

    NativeSemaphore.__name__ = "Semaphore"
    NativeBoundedSemaphore.__name__ = "BoundedSemaphore"


def __getattr__(name: str) -> type:
    # As in _lock: a native semaphore sent to a pure-Python process is rebuilt pure.
    if name in ("NativeSemaphore", "NativeBoundedSemaphore") and _native is None:
        return PySemaphore if name == "NativeSemaphore" else PyBoundedSemaphore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The public classes: the active implementation (see _lock).
if TYPE_CHECKING:
    Semaphore = PySemaphore
    BoundedSemaphore = PyBoundedSemaphore
elif _native is not None:
    Semaphore, BoundedSemaphore = NativeSemaphore, NativeBoundedSemaphore
else:
    Semaphore, BoundedSemaphore = PySemaphore, PyBoundedSemaphore


def _rebuild_semaphore(cls: type[PySemaphore], named: NamedSemaphore) -> PySemaphore:
    obj = cls.__new__(cls)
    obj._setup(named)
    return obj
