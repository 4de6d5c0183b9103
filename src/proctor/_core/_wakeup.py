"""Waits on descriptors that end at once when another thread closes what they wait on.

Closing a descriptor does not wake a thread blocked on it: on Linux a blocked
``read``, ``accept`` or ``poll`` holds the file and waits on, for ever without a
timeout, while the number may go to a new file that a wait by number would then
watch, or read. So a blocking call of an object that another thread may close
(a connection end, a listener: its *owner*) waits here, in ``poll`` over its
descriptors *and* its thread's wake-up (an eventfd; a pipe where there is none),
which it first puts in the owner's ``_waiting`` set. The owner's ``close()`` sets
the owner's ``_closed`` flag, then writes to every wake-up in that set
(:func:`wake_waiters`), and only then closes its descriptors::

    waiting thread                                 closing thread
    ──────────────                                 ──────────────
    put its wake-up in owner._waiting              owner._closed = True
    owner._closed? ── yes ──▶ return []            wake_waiters(owner._waiting):
    poll(descriptors + wake-up) ◀── written ──────   write to each wake-up there
      a descriptor ready: return it                close the descriptors
      its wake-up: read it; owner._closed? return []
    take its wake-up out of owner._waiting

Each side writes before it reads (the GIL orders them), so either the closer finds
the wake-up in the set or the waiter finds the flag set: no close is missed, and
the caller, seeing ``_closed``, raises its owner's "closed" error without touching
the number again. A wake-up written after its thread stopped waiting (a close
racing a message) only makes that thread's next wait look once more.

One wake-up per thread, made the first time the thread waits here while other
Python threads run, and closed when the thread ends (when its last reference
goes: the thread's local, or a closer's list while it writes). A process with no
other Python thread waits on its descriptors alone and makes no wake-up: nothing
there can close an owner under the wait. A wake-up is the process's own: forked
children let go of it (``_system.let_go_in_forks``) and make their own.
"""

from __future__ import annotations

import _thread
import os
import sys
import time

from . import _afterfork
from ._afterfork import forked_with, inherited_threads
from ._system import keep_in_forks, let_go_in_forks
from ._timeout import ready_by, ready_now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

__all__ = ("forked_with", "inherited_threads", "other_threads", "wait_readable", "wake_waiters")

_count = _thread._count


def other_threads() -> int:
    """How many Python threads run besides this one (``threading`` and ``_thread``
    threads; not native threads, which cannot call ``close()``)."""
    return _count() - inherited_threads[0]


_HAVE_EVENTFD = hasattr(os, "eventfd")
# What a wake-up's writer writes: 1 for an eventfd's counter (a pipe takes any byte).
_ONE = (1).to_bytes(8, sys.byteorder)
_monotonic = time.monotonic


class _Wakeup:
    """A thread's wake-up: readable once written, until that thread reads it."""

    __slots__ = ("fd", "generation", "write_fd")

    def __init__(self) -> None:
        if _HAVE_EVENTFD:
            fd = write_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        else:
            fd, write_fd = os.pipe()
            os.set_blocking(fd, False)
            os.set_blocking(write_fd, False)
        self.fd = fd
        self.write_fd = write_fd
        self.generation = _afterfork.generation
        let_go_in_forks(fd)
        if write_fd != fd:
            let_go_in_forks(write_fd)

    def write(self) -> None:
        if self.generation != _afterfork.generation:
            return  # a copy of the parent's (its numbers point at /dev/null here)
        try:
            os.write(self.write_fd, _ONE)
        except OSError:
            pass  # full: it is readable already

    def read(self) -> None:
        try:
            while os.read(self.fd, 4096) and not _HAVE_EVENTFD:
                pass
        except OSError:
            pass  # (BlockingIOError: nothing left)

    def __del__(self) -> None:
        try:
            for fd in {self.fd, self.write_fd}:
                keep_in_forks(fd)
                os.close(fd)
        except (AttributeError, OSError, TypeError):
            pass  # __init__ failed, or the interpreter is shutting down


_local = _thread._local()


def _wakeup() -> _Wakeup:
    """The calling thread's wake-up (made on first use, and again in a forked child)."""
    wakeup: _Wakeup | None = getattr(_local, "wakeup", None)
    if wakeup is None or wakeup.generation != _afterfork.generation:
        wakeup = _local.wakeup = _Wakeup()
    return wakeup


def wake_waiters(waiting: set[Any]) -> None:
    """Wake every thread waiting on an owner that was just closed (its ``_waiting``)."""
    for wakeup in list(waiting):
        wakeup.write()


def wait_readable(
    fds: Sequence[int],
    timeout: float | None,
    owners: Iterable[Any],
    look: Callable[[Sequence[int], float | None, bool], bool] | None = None,
) -> list[int]:
    """Wait until one of ``fds`` is readable, ``timeout`` passes, or an owner is closed.

    Args:
        fds: the descriptors to watch.
        timeout: seconds; ``None`` waits for ever. Never returns early: the wait
            is rounded up to the next millisecond, and an early or interrupted
            wake-up waits again for what is left.
        owners: the objects ``fds`` belong to (each with a ``_closed`` flag and
            a ``_waiting`` set); another thread's ``close()`` of one ends the wait.
        look: where none is ready at once, called before the wait sleeps as
            ``look(fds, timeout, without_gil)`` (``without_gil``: other threads
            run); it may look for one to become readable for a moment (no longer
            than ``timeout``), and says whether one did (``connection.wait()``'s,
            ``_connections._wait._look``). The timeout counts from before it.

    Returns:
        The ready descriptors; empty when ``timeout`` passed or an owner was
        closed (the caller looks at its owners' ``_closed``).
    """
    # What is ready already needs no deadline, no wake-up registered and no GIL let
    # go: a wait() on a connection whose message had come took 7.5-9.8 us beside a
    # thread, 6.6-9.7 without one (the stdlib's 5.3-6.0); now 4.2-5.2 and 4.2-5.4
    # (37th session, docs/design.md).
    others = other_threads()
    if others:
        # (Closed by another thread already: its descriptors may be -1, or another
        # file's.)
        owners = tuple(owners)
        for owner in owners:
            if owner._closed:
                return []
    ready = ready_now(fds)
    if ready or (timeout is not None and timeout <= 0):
        return ready
    end = None if timeout is None else _monotonic() + timeout
    if look is not None and look(fds, timeout, others > 0):
        ready = ready_now(fds)
        if ready:
            return ready
    if not others:
        return ready_by(fds, end)
    wakeup = _wakeup()
    wakeup_fd = wakeup.fd
    watched = (*fds, wakeup_fd)
    for owner in owners:
        owner._waiting.add(wakeup)
    try:
        while True:
            for owner in owners:
                if owner._closed:
                    return []
            ready = ready_by(watched, end)
            if wakeup_fd not in ready:
                return ready
            wakeup.read()  # an owner's close(), or a stale write: look again
            ready.remove(wakeup_fd)
            if ready and not any(owner._closed for owner in owners):
                return ready
    finally:
        for owner in owners:
            owner._waiting.discard(wakeup)
