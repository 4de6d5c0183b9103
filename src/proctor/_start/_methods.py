"""Which start method creates children: the names, the default, and the one chosen.

This module only keeps the choice; ``_process`` turns a method into its strategy
(``_popen_fork``, ``_popen_spawn``, ``_popen_forkserver``) and ``proctor._context``
builds the contexts on top. A child learns the method it was started with and
makes it its own default, as with ``multiprocessing``.

The default is the running Python's ``multiprocessing`` default, so that changing
only the import keeps a program's behaviour:

* macOS: ``spawn`` -- forking a process that used system frameworks is unsafe
  there (Apple's libraries are not fork-safe).
* other POSIX systems: ``fork`` up to Python 3.13, ``forkserver`` from 3.14 on.
"""

from __future__ import annotations

import _thread
import os
import sys

from .._core import _afterfork

__all__ = (
    "DEFAULT_METHOD",
    "START_METHODS",
    "check_method",
    "get_all_start_methods",
    "get_start_method",
    "inherit_start_method",
    "resolve_method",
    "set_start_method",
)

#: Every start method proctor implements, in ``multiprocessing``'s order.
START_METHODS = ("fork", "spawn", "forkserver")


def _stdlib_default_method() -> str:
    # What multiprocessing.get_start_method() answers here, without asking it.
    if sys.platform == "darwin":
        return "spawn"  # since Python 3.8
    if sys.version_info >= (3, 14):
        return "forkserver"
    return "fork"


#: The start method used unless ``set_start_method()`` chose another: the
#: ``multiprocessing`` default of the running Python on this platform.
DEFAULT_METHOD = _stdlib_default_method()

# Another thread may hold it at a fork: a forked child makes its own, on first use.
_lock = _afterfork.PerProcess(_thread.allocate_lock)
_chosen: str | None = None


def get_all_start_methods() -> list[str]:
    """Return the start methods available here, the default first.

    The same list as ``multiprocessing.get_all_start_methods()`` on this Python.
    """
    if os.name != "posix":
        return ["spawn"]
    return [DEFAULT_METHOD] + [m for m in START_METHODS if m != DEFAULT_METHOD]


def check_method(method: object) -> str:
    """Return ``method`` if it names a start method available here.

    Raises:
        TypeError: when ``method`` is not a string.
        ValueError: when it names no available start method (the message lists them).
    """
    if not isinstance(method, str):
        raise TypeError(f"a start method is a string, not {type(method).__name__} ({method!r})")
    if method not in get_all_start_methods():
        raise ValueError(
            f"unknown start method {method!r}; valid start methods here are "
            f"{', '.join(repr(m) for m in get_all_start_methods())}"
        )
    return method


def resolve_method(method: str | None) -> str:
    """The method a process whose class names ``method`` (``None``: the default) uses.

    Resolving the default fixes it, as starting a process does in ``multiprocessing``.
    """
    global _chosen
    if method is not None:
        return method
    chosen = _chosen
    if chosen is not None:  # every start but the first: no lock needed to read it
        return chosen
    with _lock.get():
        if _chosen is None:
            _chosen = DEFAULT_METHOD
        return _chosen


def inherit_start_method(method: str) -> None:
    """In a new child: make the method it was started with its default."""
    global _chosen
    _chosen = method


def get_start_method(allow_none: bool = False) -> str | None:
    """Return the default start method, fixing it to the platform default if unset.

    Args:
        allow_none: return ``None`` instead of fixing the default when none was set.
    """
    global _chosen
    with _lock.get():
        if _chosen is None:
            if allow_none:
                return None
            _chosen = DEFAULT_METHOD
        return _chosen


def set_start_method(method: str | None, force: bool = False) -> None:
    """Set the start method used by ``proctor.Process`` and the module-level factories.

    Args:
        method: a start method, or ``None`` (with ``force``) to go back to "not set".
        force: replace a method that was already set or used.

    Raises:
        RuntimeError: when a method was already set (or used) and ``force`` is false.
        ValueError: for an unknown method.
    """
    global _chosen
    if method is not None:
        check_method(method)
    with _lock.get():
        if _chosen is not None and not force:
            raise RuntimeError(
                f"the start method is already set to {_chosen!r}; call "
                "set_start_method() once, early in the main module, or pass force=True"
            )
        _chosen = method
