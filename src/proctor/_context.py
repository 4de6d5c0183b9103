"""Contexts: the ``multiprocessing`` API bound to one start method.

A context is a namespace of factories (``ctx.Process``, ``ctx.Pipe``, ``ctx.Lock``, ...)
bound to one start method. ``proctor.get_context("spawn")`` returns the spawn
context, and ``get_context()`` the context of the start method in use (fixing the
default, as ``multiprocessing`` does). The module-level API (``proctor.Process``,
``proctor.Queue``...) is the default context's: its processes use whatever start
method is chosen when they start (``set_start_method()``, else the running Python's
``multiprocessing`` default; see ``_start._methods``).

``forkserver`` is the better choice for a program that runs threads of its own
(see docs/processes.md). proctor keeps ``fork`` safe against its own threads: at
each fork the log listener is made to leave any handler first, and the locks of
proctor's helpers (start, fork-server client, reaper client, log listener) are
replaced in the forked child.

This is the top of proctor's private layers: it may import any of them.
"""

from __future__ import annotations

import os
import types

from ._core import _runtime
from ._start import _process
from ._start._methods import DEFAULT_METHOD as DEFAULT_METHOD
from ._start._methods import START_METHODS as START_METHODS
from ._start._methods import check_method, get_all_start_methods, get_start_method
from ._start._methods import set_start_method as _set_default_start_method
from ._start._process import BaseProcess, active_children, current_process, parent_process
from ._start._process import ForkProcess as ForkProcess
from ._start._process import ForkServerProcess as ForkServerProcess
from ._start._process import SpawnProcess as SpawnProcess

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    import logging
    from collections.abc import Callable
    from typing import Any

    from . import _sync
    from ._connections._connection import Connection
    from ._core import _errors
    from ._managers._manager import SyncManager
    from ._pool._pool import Pool
    from ._queues import _queue
    from ._sharedmem._sharedctypes import CData, SynchronizedBase
    from ._start._process import ParentProcess

__all__ = (
    "BaseContext",
    "DefaultContext",
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


def set_start_method(method: str | None, force: bool = False) -> None:
    """Set the start method used by ``proctor.Process`` and the module-level factories.

    Args:
        method: ``"fork"``, ``"spawn"`` or ``"forkserver"``; ``None`` (with
            ``force``) goes back to "not set".
        force: replace a method that was already set, or fixed by use.

    Raises:
        RuntimeError: when a method was already set (or used) and ``force`` is false.
        ValueError: for an unknown method.
        TypeError: for a method that is not a string.
    """
    _set_default_start_method(method, force)


def set_executable(executable: str | bytes | os.PathLike[str]) -> None:
    """Use ``executable`` as the Python interpreter of spawn children (and fork servers).

    Raises:
        TypeError: when ``executable`` is not a path (``str``, ``bytes`` or path-like).
    """
    if not isinstance(executable, (str, bytes, os.PathLike)):
        raise TypeError(
            "executable must be a path (str, bytes or os.PathLike), "
            f"not {type(executable).__name__}"
        )
    from ._start import _popen_spawn

    _popen_spawn.executable = os.fsdecode(executable)


def set_forkserver_preload(module_names: list[str]) -> None:
    """Modules the fork server imports once, so that children start with them loaded.

    Raises:
        TypeError: when ``module_names`` is not a list of strings.
    """
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


_queue_module: Any = None


def _queues() -> Any:
    """The queues module, imported on first use and then kept: a context's
    ``Queue()`` then skips the import machinery (its locks and lookups are pages
    a fork parent copies again after each start)."""
    global _queue_module
    module = _queue_module
    if module is None:
        from ._queues import _queue as module

        _queue_module = module
    return module


class _ErrorType:
    """One of proctor's exception types as a context's attribute, imported when read.

    ``_core._errors`` subclasses ``multiprocessing``'s exceptions, so importing it
    imports ``multiprocessing`` (with ``pickle``, ``socket``, ``re``: 38 modules). A
    program that only starts processes never needs them: ``import proctor`` then
    ``get_context()`` took 29.0 ms with them, 11.7 ms without (39th session), and
    every fork copies the page tables of the memory they hold.
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, instance: object, owner: type | None = None) -> type[BaseException]:
        from ._core import _errors

        error: type[BaseException] = getattr(_errors, self._name)
        return error


class BaseContext:
    """Factories bound to one start method; see the module docstring."""

    _name: str | None = None
    Process: type[_process.Process] = _process.Process

    # The exceptions, as attributes of every context (``ctx.TimeoutError``...);
    # type checkers see the classes themselves.
    if TYPE_CHECKING:
        ProcessError = _errors.ProcessError
        BufferTooShort = _errors.BufferTooShort
        TimeoutError = _errors.ProcessTimeoutError
        AuthenticationError = _errors.AuthenticationError
    else:
        ProcessError = _ErrorType("ProcessError")
        BufferTooShort = _ErrorType("BufferTooShort")
        TimeoutError = _ErrorType("ProcessTimeoutError")
        AuthenticationError = _ErrorType("AuthenticationError")

    @property
    def reducer(self) -> types.ModuleType:
        """The pickling hooks: ``proctor.reduction``'s names, as ``multiprocessing``'s
        contexts have (``ctx.reducer.ForkingPickler``, ``ctx.reducer.register``...)."""
        from ._connections import _reducer

        return _reducer

    @reducer.setter
    def reducer(self, reduction: object) -> None:
        raise ValueError(
            "proctor's pickler cannot be replaced (there is no AbstractReducer); register "
            "a reducer for a class with proctor.reduction.register(cls, reduce_function)"
        )

    # -- start methods -----------------------------------------------------------

    def get_context(self, method: str | None = None) -> BaseContext:
        """This context (``method=None``), or the context of ``method``."""
        if method is None:
            return self
        return get_context(method)

    def get_start_method(self, allow_none: bool = False) -> str | None:
        """This context's start method."""
        return self._name

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        """Refused: a concrete context's method is fixed (use ``proctor.set_start_method``).

        Raises:
            ValueError: always.
        """
        raise ValueError(
            f"cannot set the start method of the {self._name!r} context, whose method is "
            "fixed; call proctor.set_start_method() to choose the default one"
        )

    def get_all_start_methods(self) -> list[str]:
        """The start methods available here, the default first."""
        return get_all_start_methods()

    # -- processes ------------------------------------------------------------------

    def current_process(self) -> BaseProcess:
        return current_process()

    def parent_process(self) -> ParentProcess | None:
        return parent_process()

    def active_children(self) -> list[_process.Process]:
        return active_children()

    def cpu_count(self) -> int:
        from ._core._system import cpu_count

        return cpu_count()

    # -- connections and queues ------------------------------------------------------

    def Pipe(self, duplex: bool = True) -> tuple[Connection, Connection]:
        """Two connected ``Connection`` ends (both ways, or read end first if not duplex)."""
        from ._connections._pipe import Pipe

        return Pipe(duplex)

    def Queue(self, maxsize: int = 0, **options: Any) -> _queue.Queue:
        """A process-shared FIFO queue whose items live in shared memory."""
        queue: _queue.Queue = _queues().Queue(maxsize, **options)
        return queue

    def SimpleQueue(self, **options: Any) -> _queue.SimpleQueue:
        """An unbounded process-shared queue with put, get, empty and close."""
        queue: _queue.SimpleQueue = _queues().SimpleQueue(**options)
        return queue

    def JoinableQueue(self, maxsize: int = 0, **options: Any) -> _queue.JoinableQueue:
        """A Queue with task_done() and join()."""
        queue: _queue.JoinableQueue = _queues().JoinableQueue(maxsize, **options)
        return queue

    # -- synchronisation ----------------------------------------------------------------

    def Lock(self) -> _sync.Lock:
        """A process-shared lock, taken over (with a warning) when its holder dies."""
        from ._sync import Lock

        return Lock()

    def RLock(self) -> _sync.RLock:
        """A process-shared recursive lock, taken over when its holder dies."""
        from ._sync import RLock

        return RLock()

    def Semaphore(self, value: int = 1) -> _sync.Semaphore:
        """A process-shared semaphore."""
        from ._sync import Semaphore

        return Semaphore(value)

    def BoundedSemaphore(self, value: int = 1) -> _sync.BoundedSemaphore:
        """A process-shared semaphore that refuses to be released past its initial value."""
        from ._sync import BoundedSemaphore

        return BoundedSemaphore(value)

    def Condition(self, lock: _sync.Lock | _sync.RLock | None = None) -> _sync.Condition:
        """A process-shared condition variable (on a new RLock by default)."""
        from ._sync import Condition

        return Condition(lock)

    def Event(self) -> _sync.Event:
        """A process-shared event flag."""
        from ._sync import Event

        return Event()

    def Barrier(
        self, parties: int, action: Callable[[], object] | None = None, timeout: float | None = None
    ) -> _sync.Barrier:
        """A process-shared barrier for ``parties`` processes or threads."""
        from ._sync import Barrier

        return Barrier(parties, action, timeout)

    # -- shared memory -------------------------------------------------------------------

    def Value(
        self, typecode_or_type: Any, *args: Any, lock: bool | _sync.Lock | _sync.RLock = True
    ) -> SynchronizedBase | CData:
        """A ctypes object in shared memory, with a lock from this context by default."""
        from ._sharedmem._sharedctypes import Value

        return Value(typecode_or_type, *args, lock=lock, ctx=self)

    def Array(
        self,
        typecode_or_type: Any,
        size_or_initializer: Any,
        *,
        lock: bool | _sync.Lock | _sync.RLock = True,
    ) -> SynchronizedBase | CData:
        """A ctypes array in shared memory, with a lock from this context by default."""
        from ._sharedmem._sharedctypes import Array

        return Array(typecode_or_type, size_or_initializer, lock=lock, ctx=self)

    def RawValue(self, typecode_or_type: Any, *args: Any) -> CData:
        """A ctypes object in shared memory, without a lock."""
        from ._sharedmem._sharedctypes import RawValue

        return RawValue(typecode_or_type, *args)

    def RawArray(self, typecode_or_type: Any, size_or_initializer: Any) -> CData:
        """A ctypes array in shared memory, without a lock."""
        from ._sharedmem._sharedctypes import RawArray

        return RawArray(typecode_or_type, size_or_initializer)

    # -- pools ------------------------------------------------------------------------------

    def Pool(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        maxtasksperchild: int | None = None,
        *,
        max_memory_per_child: int | None = None,
        task_concurrency: int = 1,
    ) -> Pool:
        """A pool of worker processes started with this context's method (see ``proctor.Pool``)."""
        from ._pool._pool import Pool

        return Pool(
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            context=self,
            max_memory_per_child=max_memory_per_child,
            task_concurrency=task_concurrency,
        )

    # -- managers ---------------------------------------------------------------------------

    def Manager(self) -> SyncManager:
        """A started ``SyncManager`` whose server process uses this context's start method.

        Shut it down with ``shutdown()`` or a ``with`` block (see docs/managers.md).
        """
        from ._managers._manager import SyncManager

        manager = SyncManager(ctx=self)
        manager.start()
        return manager

    # -- logging and compatibility -----------------------------------------------------------

    def get_logger(self) -> logging.Logger:
        from ._logging._logger import get_logger

        return get_logger()

    def log_to_stderr(self, level: int | str | None = None) -> logging.Logger:
        from ._logging._logger import log_to_stderr

        return log_to_stderr(level)

    set_forkserver_preload = staticmethod(set_forkserver_preload)
    set_executable = staticmethod(set_executable)
    freeze_support = staticmethod(freeze_support)
    allow_connection_pickling = staticmethod(allow_connection_pickling)

    def __repr__(self) -> str:
        return f"<proctor context start_method={self.get_start_method()!r}>"


class DefaultContext(BaseContext):
    """The context behind the module-level API: its method is the one chosen at start."""

    def get_context(self, method: str | None = None) -> BaseContext:
        """The context of the start method in use (fixing the default), or of ``method``."""
        if method is None:
            return _contexts[get_start_method()]  # type: ignore[index]
        return get_context(method)

    def get_start_method(self, allow_none: bool = False) -> str | None:
        """The default start method, fixed to the platform default unless ``allow_none``."""
        return get_start_method(allow_none)

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        """Set the default start method; see :func:`proctor.set_start_method`."""
        set_start_method(method, force)


class ForkContext(BaseContext):
    _name = "fork"
    Process = ForkProcess


class SpawnContext(BaseContext):
    _name = "spawn"
    Process = SpawnProcess


class ForkServerContext(BaseContext):
    _name = "forkserver"
    Process = ForkServerProcess


# Queues and primitives accept these as their ``ctx=`` (they cannot import this layer).
_runtime.register_context_type(BaseContext)

_contexts: dict[str, BaseContext] = {
    "fork": ForkContext(),
    "spawn": SpawnContext(),
    "forkserver": ForkServerContext(),
}
_default_context = DefaultContext()


def get_context(method: str | None = None) -> BaseContext:
    """Return the context for ``method``, or that of the start method in use for ``None``.

    ``get_context()`` fixes the default start method, as ``multiprocessing``'s does;
    the same call returns the same object.

    Raises:
        ValueError: for an unknown start method (the message lists the valid ones).
        TypeError: for a method that is not a string.
    """
    if method is None:
        return _default_context.get_context()
    return _contexts[check_method(method)]


def Manager() -> SyncManager:
    """A started ``SyncManager`` of the default context (``proctor.Manager()``)."""
    return default_context().Manager()


def default_context() -> DefaultContext:
    """The context of the module-level API (``proctor.Process``...)."""
    return _default_context
