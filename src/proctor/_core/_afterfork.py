"""Work to redo in a forked child: ``util.register_after_fork`` and fork-aware objects.

``register_after_fork(obj, func)`` calls ``func(obj)`` in every child that proctor
forks (the ``fork`` and ``forkserver`` start methods), while ``obj`` lives, oldest
registration first -- the ``multiprocessing.util`` API. proctor's own per-process
state resets itself through ``os.register_at_fork`` hooks in each module instead.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    import weakref
    from typing import Any

__all__ = ("ForkAwareLocal", "ForkAwareThreadLock", "register_after_fork", "run_after_forkers")

# Made on first use: every child runs run_after_forkers(), few programs register.
_registry: weakref.WeakValueDictionary[tuple[int, int, Callable[..., object]], Any] | None = None
_counter = itertools.count()


def register_after_fork(obj: object, func: Callable[[Any], object]) -> None:
    """Call ``func(obj)`` in each child proctor forks, for as long as ``obj`` lives.

    Raises:
        TypeError: when ``func`` is not callable or ``obj`` cannot be weakly referenced.
    """
    global _registry
    if not callable(func):
        raise TypeError(f"func must be callable, not {type(func).__name__}")
    if _registry is None:
        import weakref

        _registry = weakref.WeakValueDictionary()
    _registry[(next(_counter), id(obj), func)] = obj


def run_after_forkers() -> None:
    """In a child proctor forked: run the registered functions, oldest first.

    One that raises is reported on stderr and the others still run.
    """
    if _registry is None:
        return
    for (_index, _ident, func), obj in sorted(_registry.items(), key=lambda item: item[0][0]):
        try:
            func(obj)
        except Exception:
            import traceback

            traceback.print_exc()


class ForkAwareThreadLock:
    """A ``threading.Lock`` that a child proctor forks gets fresh (never held)."""

    def __init__(self) -> None:
        self._reset()
        register_after_fork(self, ForkAwareThreadLock._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()


class ForkAwareLocal(threading.local):
    """A ``threading.local`` whose attributes a child proctor forks starts without."""

    def __init__(self) -> None:
        register_after_fork(self, lambda local: local.__dict__.clear())

    def __reduce__(self) -> Any:
        return (type(self), ())
