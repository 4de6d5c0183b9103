"""Start methods and contexts: which strategy creates children, and the factories bound to it.

A context is a namespace of factories (``ctx.Process``, ``ctx.Pipe``, ``ctx.Lock``, ...)
bound to one start method. ``proctor.get_context("spawn")`` returns the spawn
context; the module-level functions (``proctor.Process``...) use the default
context, whose method is chosen by ``set_start_method()`` or, failing that, by
:data:`DEFAULT_METHOD`:

* Linux: ``forkserver`` -- children are forked from a clean single-threaded
  server, so they start fast, and a parent running threads cannot hand them a
  lock that some thread held at the fork (the classic ``fork`` deadlock).
* macOS: ``spawn`` -- forking a process that used system frameworks is unsafe
  there (Apple's libraries are not fork-safe), so the fork server would be too.
"""

from __future__ import annotations

import os
import sys
import threading

from ._start import _process

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from typing import Any

__all__ = (
    "BaseContext",
    "ForkContext",
    "ForkProcess",
    "ForkServerContext",
    "ForkServerProcess",
    "SpawnContext",
    "SpawnProcess",
    "allow_connection_pickling",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_start_method",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
)

START_METHODS = ("fork", "spawn", "forkserver")
DEFAULT_METHOD = "spawn" if sys.platform == "darwin" else "forkserver"

_lock = threading.Lock()
_chosen: str | None = None


class ForkProcess(_process.Process):
    """A ``Process`` that always uses the ``fork`` start method."""

    _start_method = "fork"


class SpawnProcess(_process.Process):
    """A ``Process`` that always uses the ``spawn`` start method."""

    _start_method = "spawn"


class ForkServerProcess(_process.Process):
    """A ``Process`` that always uses the ``forkserver`` start method."""

    _start_method = "forkserver"


def _check_method(method: Any) -> str:
    if not isinstance(method, str):
        raise TypeError(f"a start method is a string, not {type(method).__name__} ({method!r})")
    if method not in get_all_start_methods():
        raise ValueError(
            f"unknown start method {method!r}; valid start methods here are "
            f"{', '.join(repr(m) for m in get_all_start_methods())}"
        )
    return method


def _resolve_method(method: str | None) -> str:
    """The method a process with class-level method ``method`` will use."""
    if method is not None:
        return method
    global _chosen
    with _lock:
        if _chosen is None:
            _chosen = DEFAULT_METHOD
        return _chosen


def _inherit_start_method(method: str) -> None:
    # A child's default is its parent's, as with multiprocessing.
    global _chosen
    _chosen = method


def _launcher_for(method: str | None) -> Any:
    resolved = _resolve_method(method)
    if resolved == "fork":
        from ._start._popen_fork import ForkPopen

        return ForkPopen
    if resolved == "spawn":
        from ._start._popen_spawn import SpawnPopen

        return SpawnPopen
    from ._start._popen_forkserver import ForkServerPopen

    return ForkServerPopen


def get_all_start_methods() -> list[str]:
    """Return the start methods available here, the default first."""
    methods = [DEFAULT_METHOD] + [m for m in START_METHODS if m != DEFAULT_METHOD]
    return methods if os.name == "posix" else ["spawn"]


def get_start_method(allow_none: bool = False) -> str | None:
    """Return the default start method, fixing it to the platform default if unset.

    Args:
        allow_none: return ``None`` instead of fixing the default when none was set.
    """
    global _chosen
    with _lock:
        if _chosen is None:
            if allow_none:
                return None
            _chosen = DEFAULT_METHOD
        return _chosen


def set_start_method(method: str | None, force: bool = False) -> None:
    """Set the start method used by ``proctor.Process`` and the module-level factories.

    Raises:
        RuntimeError: when a method was already set (or used) and ``force`` is false.
        ValueError: for an unknown method.
    """
    global _chosen
    if method is not None:
        _check_method(method)
    with _lock:
        if _chosen is not None and not force:
            raise RuntimeError(
                f"the start method is already set to {_chosen!r}; call "
                "set_start_method() once, early in the main module, or pass force=True"
            )
        _chosen = method


def set_executable(executable: str) -> None:
    """Use ``executable`` as the Python interpreter of spawn children (and fork servers).

    Raises:
        TypeError: when ``executable`` is not a string or path.
    """
    if not isinstance(executable, (str, os.PathLike)):
        raise TypeError(f"executable must be a path, not {type(executable).__name__}")
    from ._start import _popen_spawn

    _popen_spawn.executable = os.fspath(executable)


def set_forkserver_preload(module_names: list[str]) -> None:
    """Modules the fork server imports once, so that children start with them loaded."""
    from ._start._forkserver import set_preload

    set_preload(module_names)


def freeze_support() -> None:
    """Do nothing: kept so that ``multiprocessing`` programs run unchanged.

    ``multiprocessing`` needs it in frozen Windows executables, which proctor does
    not support.
    """


def allow_connection_pickling() -> None:
    """Do nothing: kept for compatibility. proctor connections reach children as
    ``Process`` arguments under every start method (see docs/connection.md)."""


class BaseContext:
    """Factories bound to one start method; see the module docstring."""

    _name: str | None = None
    Process: type[_process.Process] = _process.Process

    def get_start_method(self, allow_none: bool = False) -> str | None:
        return self._name if self._name is not None else get_start_method(allow_none)

    def get_context(self, method: str | None = None) -> BaseContext:
        return get_context(method)

    get_all_start_methods = staticmethod(get_all_start_methods)
    set_start_method = staticmethod(set_start_method)

    def current_process(self) -> Any:
        return _process.current_process()

    def parent_process(self) -> Any:
        return _process.parent_process()

    def active_children(self) -> list[_process.Process]:
        return _process.active_children()

    def cpu_count(self) -> int:
        from ._core._system import cpu_count

        return cpu_count()

    def Pipe(self, duplex: bool = True) -> Any:
        """Two connected ``Connection`` ends (both ways, or read end first if not duplex)."""
        from ._connections._pipe import Pipe

        return Pipe(duplex)

    def Queue(self, maxsize: int = 0, **options: Any) -> Any:
        """A process-shared FIFO queue whose items live in shared memory."""
        from ._queues._queue import Queue

        return Queue(maxsize, **options)

    def SimpleQueue(self, **options: Any) -> Any:
        """An unbounded process-shared queue with put, get, empty and close."""
        from ._queues._queue import SimpleQueue

        return SimpleQueue(**options)

    def JoinableQueue(self, maxsize: int = 0, **options: Any) -> Any:
        """A Queue with task_done() and join()."""
        from ._queues._queue import JoinableQueue

        return JoinableQueue(maxsize, **options)

    def Lock(self) -> Any:
        """A process-shared lock, taken over (with a warning) when its holder dies."""
        from ._sync import Lock

        return Lock()

    def RLock(self) -> Any:
        """A process-shared recursive lock, taken over when its holder dies."""
        from ._sync import RLock

        return RLock()

    def Semaphore(self, value: int = 1) -> Any:
        """A process-shared semaphore."""
        from ._sync import Semaphore

        return Semaphore(value)

    def BoundedSemaphore(self, value: int = 1) -> Any:
        """A process-shared semaphore that refuses to be released past its initial value."""
        from ._sync import BoundedSemaphore

        return BoundedSemaphore(value)

    def Condition(self, lock: Any = None) -> Any:
        """A process-shared condition variable (on a new RLock by default)."""
        from ._sync import Condition

        return Condition(lock)

    def Event(self) -> Any:
        """A process-shared event flag."""
        from ._sync import Event

        return Event()

    def Barrier(self, parties: int, action: Any = None, timeout: float | None = None) -> Any:
        """A process-shared barrier for ``parties`` processes or threads."""
        from ._sync import Barrier

        return Barrier(parties, action, timeout)

    def Value(self, typecode_or_type: Any, *args: Any, lock: Any = True) -> Any:
        """A ctypes object in shared memory, with a lock from this context by default."""
        from ._sharedmem._sharedctypes import Value

        return Value(typecode_or_type, *args, lock=lock, ctx=self)

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True) -> Any:
        """A ctypes array in shared memory, with a lock from this context by default."""
        from ._sharedmem._sharedctypes import Array

        return Array(typecode_or_type, size_or_initializer, lock=lock, ctx=self)

    def RawValue(self, typecode_or_type: Any, *args: Any) -> Any:
        """A ctypes object in shared memory, without a lock."""
        from ._sharedmem._sharedctypes import RawValue

        return RawValue(typecode_or_type, *args)

    def RawArray(self, typecode_or_type: Any, size_or_initializer: Any) -> Any:
        """A ctypes array in shared memory, without a lock."""
        from ._sharedmem._sharedctypes import RawArray

        return RawArray(typecode_or_type, size_or_initializer)

    def get_logger(self) -> Any:
        from ._logging._logger import get_logger

        return get_logger()

    def log_to_stderr(self, level: int | str | None = None) -> Any:
        from ._logging._logger import log_to_stderr

        return log_to_stderr(level)

    set_forkserver_preload = staticmethod(set_forkserver_preload)
    set_executable = staticmethod(set_executable)
    freeze_support = staticmethod(freeze_support)
    allow_connection_pickling = staticmethod(allow_connection_pickling)

    def __repr__(self) -> str:
        return f"<proctor context start_method={self.get_start_method()!r}>"


class DefaultContext(BaseContext):
    """The context behind the module-level API: its method is the default one."""


class ForkContext(BaseContext):
    _name = "fork"
    Process = ForkProcess


class SpawnContext(BaseContext):
    _name = "spawn"
    Process = SpawnProcess


class ForkServerContext(BaseContext):
    _name = "forkserver"
    Process = ForkServerProcess


_contexts: dict[str, BaseContext] = {
    "fork": ForkContext(),
    "spawn": SpawnContext(),
    "forkserver": ForkServerContext(),
}
_default_context = DefaultContext()


def get_context(method: str | None = None) -> BaseContext:
    """Return the context for ``method``, or the default context for ``None``.

    Raises:
        ValueError: for an unknown start method (the message lists the valid ones).
    """
    if method is None:
        return _default_context
    return _contexts[_check_method(method)]
