"""Finalizers and the interpreter's exit: ``util.Finalize``, ``is_exiting()``, ``get_temp_dir()``.

proctor has one ``atexit`` hook, registered the first time something needs it (a
finalizer with an exit priority, or the first ``start()``). At exit it runs::

    finalizers with exitpriority >= 0      (highest first; equal: newest first)
    exit stages                            (the process layer: terminate daemonic
                                            children, join the others, stop helpers)
    every other finalizer with a priority

as ``multiprocessing.util``'s exit function does, so code that relies on that order
keeps working. A finalizer runs at most once, and only in the process that created
it (a forked child's copy never fires).
"""

from __future__ import annotations

import _thread
import atexit
import itertools
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # weakref is imported by the first Finalize: every child imports this module
    import weakref
    from collections.abc import Callable, Mapping
    from typing import Any

__all__ = (
    "Finalize",
    "add_exit_stage",
    "get_temp_dir",
    "is_exiting",
    "run_finalizers",
)

_registry: dict[tuple[int | None, int], Finalize] = {}
# What a child started by proctor kept of its ancestors' registries (see start_child).
_parents_registries: list[dict[tuple[int | None, int], Finalize]] = []
_counter = itertools.count()
_lock = _thread.allocate_lock()
_exit_stages: list[Callable[[], object]] = []
_exit_hook_registered = False
_exiting = False


class Finalize:
    """Call ``callback(*args, **kwargs)`` when ``obj`` is collected, or at exit.

    The ``multiprocessing.util.Finalize`` API. Calling the object runs the callback
    now (once); ``cancel()`` drops it.

    Args:
        obj: the object whose collection triggers the callback, or ``None`` for a
            callback that runs only at exit (then ``exitpriority`` is required).
        callback: what to call.
        args: its positional arguments.
        kwargs: its keyword arguments.
        exitpriority: run at interpreter exit too, in order of priority (highest
            first); ``None``: only when ``obj`` is collected.

    Raises:
        TypeError: for an ``exitpriority`` that is not an int, or a ``callback`` that
            is not callable.
        ValueError: for ``obj=None`` without an ``exitpriority``.
    """

    def __init__(
        self,
        obj: object,
        callback: Callable[..., object],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        exitpriority: int | None = None,
    ) -> None:
        if exitpriority is not None and (
            isinstance(exitpriority, bool) or not isinstance(exitpriority, int)
        ):
            raise TypeError(f"exitpriority must be an int or None, not {exitpriority!r}")
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if obj is not None:
            import weakref

            self._weakref: weakref.ref[Any] | None = weakref.ref(obj, self)
        elif exitpriority is None:
            raise ValueError("a Finalize without an object needs an exitpriority")
        else:
            self._weakref = None
        self._callback: Callable[..., object] | None = callback
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self._key = (exitpriority, next(_counter))
        self._pid = os.getpid()
        with _lock:
            _registry[self._key] = self
        if exitpriority is not None:
            _ensure_exit_hook()

    def __call__(self, wr: object = None) -> object:
        """Run the callback now, if it has not run yet; return its result."""
        with _lock:
            if _registry.pop(self._key, None) is None:
                return None
        callback = self._callback
        if callback is None or self._pid != os.getpid():
            return None  # cancelled, or a forked child's copy: not this process's
        try:
            return callback(*self._args, **self._kwargs)
        finally:
            self._callback = self._weakref = None
            self._args, self._kwargs = (), {}

    def cancel(self) -> None:
        """Forget the callback without running it."""
        with _lock:
            _registry.pop(self._key, None)
        self._callback = self._weakref = None
        self._args, self._kwargs = (), {}

    def still_active(self) -> bool:
        """Whether the callback has neither run nor been cancelled."""
        return self._key in _registry

    def __repr__(self) -> str:
        obj = self._weakref() if self._weakref is not None else None
        if self._callback is None:
            return "<Finalize object, dead>"
        name = getattr(self._callback, "__name__", repr(self._callback))
        parts = [f"<Finalize object, callback={name}"]
        if obj is not None:
            parts.append(f"obj={type(obj).__name__}")
        if self._args:
            parts.append(f"args={self._args!r}")
        if self._kwargs:
            parts.append(f"kwargs={self._kwargs!r}")
        if self._key[0] is not None:
            parts.append(f"exitpriority={self._key[0]}")
        return ", ".join(parts) + ">"


def run_finalizers(minpriority: int | None = None) -> None:
    """Run the finalizers that have an exit priority (at least ``minpriority``, if given).

    Highest priority first; among equal priorities, the newest first. A callback
    that raises is skipped (the others still run).
    """
    with _lock:
        keys = [
            key
            for key in _registry
            if key[0] is not None and (minpriority is None or key[0] >= minpriority)
        ]
        keys.sort(reverse=True, key=lambda key: (key[0], key[1]))
        finalizers = [_registry[key] for key in keys]
    for finalizer in finalizers:
        try:
            finalizer()
        except Exception:
            import traceback

            traceback.print_exc()


def is_exiting() -> bool:
    """Whether this interpreter is running proctor's exit function."""
    return _exiting


def add_exit_stage(stage: Callable[[], object]) -> None:
    """Run ``stage`` at exit, between the finalizers of priority >= 0 and the others.

    Adding the same stage again does nothing.
    """
    if stage not in _exit_stages:
        _exit_stages.append(stage)
    _ensure_exit_hook()


def start_child() -> None:
    """In a new proctor child: forget the parent's finalizers and exit hook.

    Called by the child's bootstrap after it cleared the ``atexit`` handlers it
    inherited; the child's own finalizers and stages register afresh.
    """
    global _exit_hook_registered, _registry
    with _lock:
        # A new record, the parent's kept rather than cleared: clearing it would
        # write every finalizer's reference count, a copied page per few of them
        # in every forked child (~25 pages for 300), for memory the child shares
        # with its parent anyway. The parent's finalizers never fire here either way.
        _parents_registries.append(_registry)
        _registry = {}
    _exit_hook_registered = False


def _ensure_exit_hook() -> None:
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        atexit.register(_exit_function)


def _exit_function() -> None:
    global _exiting
    _exiting = True
    run_finalizers(0)
    for stage in list(_exit_stages):
        stage()
    run_finalizers()


_temp_dir: str | None = None


def get_temp_dir() -> str:
    """A private temporary directory of this process, removed at its exit."""
    global _temp_dir
    if _temp_dir is None:
        import shutil
        import tempfile

        _temp_dir = tempfile.mkdtemp(prefix="proctor-")
        Finalize(None, shutil.rmtree, args=(_temp_dir, True), exitpriority=-100)
    return _temp_dir


def _reset_after_fork() -> None:
    # Whatever thread held the lock at the fork is gone in the child. The parent's
    # finalizers stay registered here but never fire (they check the pid), and its
    # temporary directory is not this process's to remove.
    global _exiting, _lock, _temp_dir
    _lock = _thread.allocate_lock()
    _exiting = False
    _temp_dir = None


os.register_at_fork(after_in_child=_reset_after_fork)
