"""OS semaphores known by name, and who reclaims the name.

``_multiprocessing.SemLock`` is a POSIX named semaphore (``sem_open``). A child
started by ``spawn`` or ``forkserver`` re-opens it by name, so the name must
outlive its creator as long as any process may still open it, and must vanish
once every user is gone -- even if they were all SIGKILLed. The resource reaper
(``_reaper``) does the bookkeeping::

    creator                         reaper                      child (spawn)
    ───────                         ──────                      ─────────────
    sem_open("/proctor-sem-…")
    register(name) ───────────────▶ users = {creator}
    Process.start(): pickle ──▶ name ──────────────────────────▶ sem_open(name)
      after_start: add_user(pid) ─▶ users += {child}            register(name)
    close()/exit/crash ───────────▶ users -= …
                                    no live user ─▶ sem_unlink(name)

In a message (a queue, a pipe, a pool's task or result) the name is pinned to
the message until its receiver has rebuilt it (``_client.keep_for_receiver``).
Under ``fork`` the child inherits the open semaphore (no name lookup) and the
reaper client's registrations. Names are never unlinked eagerly, even for a
``fork`` context: a forked child may still pass the object on to a ``spawn``
grandchild, which needs the name.
"""

from __future__ import annotations

import _multiprocessing  # type: ignore[import-not-found]  # C module without stubs
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from .._core import _reduction
from .._core._closing import ClosedWhenCollected

__all__ = ("SEMAPHORE", "SEM_VALUE_MAX", "NamedSemaphore", "batched_names")

#: ``SemLock`` kinds. proctor only uses SEMAPHORE: ownership and recursion are
#: tracked in shared memory, where a dead owner can be seen (the C
#: RECURSIVE_MUTEX kind keeps its owner in one process's private memory).
SEMAPHORE = 1
SEM_VALUE_MAX = _multiprocessing.SemLock.SEM_VALUE_MAX

#: The reaper's kind for named semaphores.
_KIND = "semaphore"


def _reaper():
    # Imported lazily: importing proctor must not start or even prepare the reaper.
    from . import _client as _reaper

    return _reaper


#: This thread's names registered ahead by :func:`batched_names`, not used yet.
_reserve = threading.local()


@contextlib.contextmanager
def batched_names(count: int) -> Iterator[None]:
    """Register the names of the next ``count`` semaphores made here in one message.

    For an object made of several semaphores (a queue has four): each
    ``NamedSemaphore()`` made in this thread inside the block takes a name
    registered ahead -- before it exists, as always -- so the reaper is woken
    once, not once per semaphore. Names left unused are withdrawn at the end.
    """
    outer = getattr(_reserve, "names", None)
    names = _reaper().register_new(_KIND, count, 5)
    _reserve.names = names
    try:
        yield
    finally:
        _reserve.names = outer
        for name in names:
            with contextlib.suppress(Exception):
                _reaper()._cancel(name, _KIND)


class _Closed:
    """Stands in for a closed semaphore: every use raises a clear ValueError."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __getattr__(self, name: str) -> Any:
        raise ValueError(f"{self.what} is closed; it cannot be used any more in this process")


class NamedSemaphore(ClosedWhenCollected):
    """A ``SemLock`` whose name is reclaimed once no process uses it.

    Args:
        value: initial value.
        maxvalue: the largest value ``release()`` may reach (the C check is
            advisory; see ``SemLock``).

    Attributes:
        sem: the ``_multiprocessing.SemLock`` (call ``acquire``/``release`` on it).
        name: its OS name.
    """

    __slots__ = ("__weakref__", "maxvalue", "name", "sem")

    def __init__(self, value: int, maxvalue: int, *, _name: str | None = None) -> None:
        self.maxvalue = maxvalue
        if _name is not None:
            self.name = _name
            try:
                self.sem = _multiprocessing.SemLock._rebuild(0, SEMAPHORE, maxvalue, _name)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"the OS semaphore {_name!r} behind a proctor synchronisation object no "
                    "longer exists: every process that used it had exited (and it was "
                    "reclaimed) before this process could open it. Keep the object alive "
                    "in the parent until the child has started."
                ) from None
            self._register()
            return
        reaper = _reaper()
        reserved = getattr(_reserve, "names", None)
        for _ in range(100):
            if reserved:
                name = reserved.pop()  # registered already (see batched_names)
            else:
                name = reaper.new_name(5)
                # Registered before it exists: a crash right after sem_open() must
                # not leave a name that nobody knows about.
                reaper.register(name, _KIND)
            try:
                sem = _multiprocessing.SemLock(SEMAPHORE, value, maxvalue, name, False)
            except FileExistsError:
                reaper._cancel(name, _KIND)  # somebody else's: never unlink it
                continue
            except BaseException:
                reaper._cancel(name, _KIND)
                raise
            break
        else:  # pragma: no cover - 100 collisions of 40 random bits
            raise FileExistsError("could not find an unused semaphore name")
        self.name = name
        self.sem = sem

    def _register(self) -> None:
        _reaper().register(self.name, _KIND)

    def close(self) -> None:
        """Close this process's handle and tell the reaper; idempotent."""
        sem = self.sem
        if sem is None or isinstance(sem, _Closed):
            return
        self.sem = _Closed("this semaphore")
        # Drop the SemLock first (sem_close unmaps it) so that the reaper, which
        # looks for mappers before unlinking, does not see this process.
        del sem
        with contextlib.suppress(Exception):
            _reaper().unregister(self.name, _KIND)

    def __reduce__(self):
        if isinstance(self.sem, _Closed):
            raise ValueError("cannot send a closed semaphore to another process")
        reaper = _reaper()
        if not reaper.keep_for_receiver(self.name, _KIND):
            _reduction.need_carrier(
                "a proctor synchronisation object",
                "a proctor synchronisation object can only reach another process as an "
                "argument of Process(...), or in a proctor message (Connection.send() "
                "through a Unix socket, a proctor Queue, a proctor Pool's task "
                "arguments and results); it cannot be pickled into a file or with "
                "plain pickle",
            )
        return (_rebuild, (self.name, self.maxvalue, reaper.address()))

    def __repr__(self) -> str:
        return f"<NamedSemaphore {self.name!r}>"


def _rebuild(name: str, maxvalue: int, reaper_address: str | None) -> NamedSemaphore:
    _reaper().adopt_address(reaper_address)
    return NamedSemaphore(0, maxvalue, _name=name)
