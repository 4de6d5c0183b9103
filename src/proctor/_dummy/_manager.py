"""``Manager()`` and ``Pool()`` for threads.

Threads share objects directly, so a manager has nothing to serve: its
``list()``, ``dict()``, ``Namespace()``, ``Lock()``... return the plain objects
(``list``, ``dict``) and this package's primitives. ``multiprocessing.dummy``'s
``Manager()`` returns its module; this returns a small object with the same
factories that is also a context manager (``with Manager() as m:``), as a
``SyncManager`` is.
"""

from __future__ import annotations

import builtins

from .._pool._threads import ThreadPool
from . import _queue, _sync, _values

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = ("DummyManager", "Manager", "Pool", "shutdown")


def Pool(
    processes: int | None = None,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
) -> ThreadPool:
    """Return a ``ThreadPool``: the ``Pool`` API run by threads of this process.

    Args and raises as for ``proctor.pool.ThreadPool``.
    """
    return ThreadPool(processes, initializer, initargs)


def shutdown() -> None:
    """Do nothing: there is no manager process to stop (``multiprocessing.dummy``'s)."""


class DummyManager:
    """What ``Manager()`` returns: ``SyncManager``'s factories, for threads.

    Every method returns a plain object or a ``proctor.dummy`` primitive, shared
    by reference; ``start()``, ``shutdown()``, ``join()`` and the context manager
    do nothing but keep code written for ``multiprocessing.Manager()`` running.
    """

    list = builtins.list
    dict = builtins.dict
    Namespace = _values.Namespace
    Lock = _sync.Lock
    RLock = _sync.RLock
    Semaphore = _sync.Semaphore
    BoundedSemaphore = _sync.BoundedSemaphore
    Condition = _sync.Condition
    Event = _sync.Event
    Barrier = _sync.Barrier
    Queue = _queue.Queue
    JoinableQueue = _queue.JoinableQueue
    Value = staticmethod(_values.Value)
    Array = staticmethod(_values.Array)
    Pool = staticmethod(Pool)

    def start(
        self, initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = ()
    ) -> None:
        """Call ``initializer(*initargs)`` here, if given; nothing is started."""
        if initializer is not None:
            if not callable(initializer):
                raise TypeError(f"initializer must be callable, not {type(initializer).__name__}")
            initializer(*initargs)

    def shutdown(self) -> None:
        """Do nothing: there is no manager process."""

    def join(self, timeout: float | None = None) -> None:
        """Do nothing: there is no manager process to wait for."""

    def __enter__(self) -> DummyManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def __repr__(self) -> str:
        return "<proctor.dummy.DummyManager (threads share objects: nothing to serve)>"


def Manager() -> DummyManager:
    """Return a ``DummyManager``: ``list()``, ``dict()``, ``Lock()``... for threads."""
    return DummyManager()
