"""Timeouts: one check and one deadline for every blocking call in proctor.

Every blocking call takes ``timeout=None`` (seconds; ``None`` waits for ever),
checks it here, and turns it once into a ``time.monotonic()`` deadline.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = (
    "LONGEST_WAIT",
    "check_duration",
    "check_timeout",
    "deadline",
    "readable_now",
    "ready_by",
    "ready_now",
    "wait_readable",
)

#: Timeouts longer than this (~24.8 days) wait without limit, as ``None`` does:
#: ``math.inf`` says "no limit" too, and every wait below can take this one
#: (``poll()`` takes a C int of milliseconds, ``sem_timedwait`` a ``time_t``);
#: a longer one made some raise ``OverflowError`` or ``EINVAL``.
LONGEST_WAIT = (2**31 - 1) / 1000


def check_timeout(timeout: Any) -> float | None:
    """Return ``timeout`` as float seconds, or ``None``; negative values stay negative.

    ``None`` for one longer than :data:`LONGEST_WAIT` (``math.inf`` included).

    Every timeout of proctor is checked here, by one rule: ``None``, or a number
    that ``float()`` takes without parsing text -- an ``int`` (``bool`` included:
    ``True`` is one second), a ``float``, or any object with ``__float__`` or
    ``__index__`` (``Fraction``, ``Decimal``, numpy scalars). That is what
    ``multiprocessing``'s locks, ``Event.wait`` and ``Condition.wait`` take (their
    ``SemLock`` converts with ``PyFloat_AsDouble``); its ``Queue`` refuses a
    ``Decimal`` only because it adds the timeout to a float, which a float
    conversion does not need.

    Raises:
        TypeError: for anything else (a string, ``complex``...).
        ValueError: for NaN.
    """
    if timeout is None:
        return None
    cls = timeout.__class__
    if cls is float:  # the usual case first: a float that is not NaN
        if timeout <= LONGEST_WAIT:
            return timeout
        if timeout == timeout:
            return None
    # (the type's methods, as float() and PyFloat_AsDouble look them up; float()
    # would also parse a str, bytes or bytearray, which no stdlib timeout takes)
    elif cls is not int and (
        not (hasattr(cls, "__float__") or hasattr(cls, "__index__"))
        or issubclass(cls, (str, bytes, bytearray))
    ):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {cls.__name__} ({timeout!r:.80})"
        )
    timeout = float(timeout)
    if timeout != timeout:
        raise ValueError("timeout must be a number of seconds or None, not NaN")
    return None if timeout > LONGEST_WAIT else timeout


def check_duration(value: Any, what: str, *, allow_zero: bool = False) -> float | None:
    """A limit given in seconds (``task_timeout``, ``shutdown_timeout``...), checked:
    ``value`` as float seconds, or ``None`` for no limit (``math.inf`` too).

    Unlike a wait's timeout, a negative or NaN one is refused, and zero unless
    ``allow_zero``.

    Raises:
        TypeError: not a real number or ``None`` (``bool`` included); the message
            names ``what``.
        ValueError: negative, NaN, or zero without ``allow_zero``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        import numbers  # only for unusual numbers (Fraction, numpy scalars...)

        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(
                f"{what} must be a number of seconds or None, not {type(value).__name__} "
                f"({value!r:.80})"
            )
    seconds = float(value)
    if not (seconds >= 0 if allow_zero else seconds > 0):  # NaN too
        kind = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
        raise ValueError(f"{what} must be {kind} (or None for no limit), not {value!r}")
    return None if seconds == float("inf") else seconds


def deadline(timeout: Any) -> float | None:
    """The ``time.monotonic()`` instant a wait of ``timeout`` seconds ends (negative: now)."""
    timeout = check_timeout(timeout)
    return None if timeout is None else time.monotonic() + max(timeout, 0.0)


def wait_readable(fd: int, timeout: float | None) -> bool:
    """Wait until ``fd`` is readable or ``timeout`` seconds pass; return readiness.

    Never returns early: the wait is rounded up to the next millisecond, and an
    early or interrupted wake-up waits again for what is left.
    """
    end = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    return bool(ready_by([fd], end))


def readable_now(fd: int) -> bool:
    """Whether ``fd`` is readable now (one look, never a wait; where the C module is
    built, without letting the GIL go, which a thread computing beside would take)."""
    # (ready_now's lines, not a call of it: every poll() and every receive beside
    # threads comes here first.)
    poll = _c_poll if _c_poll is not None else _load_c_poll()
    if poll is False:
        return bool(_ready_by_select((fd,), 0.0))
    return bool(poll((fd,), 0))


def ready_now(fds: Sequence[int]) -> list[int]:
    """The readable ones of ``fds`` now: ``readable_now`` for several."""
    poll = _c_poll if _c_poll is not None else _load_c_poll()
    if poll is False:
        return _ready_by_select(fds, 0.0)
    return poll(fds, 0)


# _core._native.poll_readable, or False where the C module is not built (or is
# switched off): looked up at the first wait.
_c_poll: Any = None


def _load_c_poll() -> Any:
    global _c_poll
    from . import _system

    native = _system.core_native()
    _c_poll = native.poll_readable if native is not None else False
    return _c_poll


def ready_by(fds: Sequence[int], end: float | None) -> list[int]:
    """The readable ones of ``fds``, waiting until the ``time.monotonic()`` ``end``
    at most (``None``: for ever); empty once ``end`` has passed.

    Never returns early: each wait is rounded up to the next millisecond, and an
    early or interrupted wake-up waits again for what is left.
    """
    poll = _c_poll if _c_poll is not None else _load_c_poll()
    if poll is False:
        return _ready_by_select(fds, end)
    # One C poll() a turn: a thread waits here in every receive while others run
    # (_core._wakeup), where select.poll()'s object cost ~6 us a wait.
    while True:
        wait_ms = -1 if end is None else _milliseconds_until(end)
        ready = poll(fds, wait_ms)
        if ready or (end is not None and time.monotonic() >= end):
            return ready


def _milliseconds_until(end: float) -> int:
    # Rounded up (a wait never ends early), within what poll() takes.
    return min(max(0, int((end - time.monotonic()) * 1000 + 0.999)), 2**31 - 1)


def _ready_by_select(fds: Sequence[int], end: float | None) -> list[int]:
    """``ready_by`` with the ``select`` module (no C accelerator)."""
    import select  # here: a spawned child that never waits does without it

    if not hasattr(select, "poll"):  # (select() where there is no poll(): FD_SETSIZE limits it)
        while True:
            left = None if end is None else max(end - time.monotonic(), 0.0)
            ready = select.select(fds, [], [], left)[0]
            if ready or (end is not None and time.monotonic() >= end):
                return ready
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    while True:
        wait_ms = None if end is None else _milliseconds_until(end)
        events = poller.poll(wait_ms)
        if events:
            return [fd for fd, _ in events]
        if end is not None and time.monotonic() >= end:
            return []
