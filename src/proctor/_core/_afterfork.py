"""Work to redo in a forked child: proctor's per-process state, and ``util``'s hooks.

Every page a forked child writes is copied (a page fault), and Python writes to an
object whenever it uses it (its reference count). So proctor's per-process state is
not made again in each child at the fork, but the first time the child uses it::

    fork ──▶ child: generation += 1           (the one os.register_at_fork hook here)
    first use of a PerProcess in the child ──▶ its generation is old: make() again
    later uses ──────────────────────────────▶ one comparison, the value

A child that never starts a process, never names an OS object, never waits from an
event loop does not build those modules' locks and records at all. What cannot wait
for a first use -- descriptors the parent relies on the child not holding (the
reaper's connection, log streams, lifelines), identities another process may read
from shared memory -- is still done by an ``os.register_at_fork`` hook in its module.

``register_after_fork(obj, func)`` calls ``func(obj)`` in every child that proctor
forks (the ``fork`` and ``forkserver`` start methods), while ``obj`` lives, oldest
registration first -- the ``multiprocessing.util`` API.
"""

from __future__ import annotations

import _thread
import itertools
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import: not at run time
    import weakref
    from collections.abc import Callable
    from typing import Any, Generic, TypeVar

    _T = TypeVar("_T")

    class _Generic(Generic[_T]):
        pass
else:
    _T = None

    class _Generic:  # what Generic[_T] gives a subclass at run time: nothing needed here
        def __class_getitem__(cls, item: object) -> type:
            return cls


__all__ = (
    "ForkAwareLocal",
    "ForkAwareThreadLock",
    "PerProcess",
    "forked_with",
    "inherited_threads",
    "register_after_fork",
    "renewing",
    "run_after_forkers",
)

#: [the threads of the process that forked this one]: what ``_thread._count()`` goes
#: on counting in a fork child, though none of them is there (CPython does not reset
#: the count); recorded by a proctor fork child as it starts (:func:`forked_with`),
#: [0] elsewhere. A list, so that receives ask ``_thread._count() > inherited_threads[0]``
#: inline (``_wakeup.other_threads()`` costs them ~40 ns more). Here, not in
#: ``_wakeup`` which reads it, because every fork child records it and this module is
#: loaded in every one: a child of a parent with threads (a log listener's, any)
#: importing ``_wakeup`` for it cost each start+join 1.5-3.7 ms (39th session).
inherited_threads = [0]


def forked_with(count: int) -> None:
    """In a fork child, first thing: ``_thread._count()`` then, the forking
    process's threads, which ``_wakeup.other_threads()`` leaves out from now on."""
    if inherited_threads[0] != count:  # (written only if it changes: a page copied)
        inherited_threads[0] = count


#: Forks between the process that imported proctor and this one: 0 there, one more
#: in each forked child. Read it as ``_afterfork.generation`` (never import the name:
#: the hook rebinds it).
generation = 0
# Held while a PerProcess is made again: two threads of a child must not both make
# one. Reentrant: a make() may use another PerProcess. One per generation, made by
# the first renewal in it (a thread of the parent may have held the parent's at the
# fork); dict.setdefault, atomic, gives two threads that race to make it the same.
_renewing: dict[int, Any] = {0: _thread.RLock()}


def renewing() -> Any:
    """The lock to hold while making per-process state again in a forked child.

    For state reset by its own hook to ``None`` and made again on first use
    (``_reaper._client``): reentrant, and fresh in every child.
    """
    lock = _renewing.get(generation)
    if lock is None:
        lock = _renewing.setdefault(generation, _thread.RLock())
    return lock


def _after_fork_in_child() -> None:
    # All the hook does: a child that renews nothing allocates nothing.
    global generation
    generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class PerProcess(_Generic[_T]):
    """A value of this process, made again (by ``make()``) on first use in a forked child.

    For state a child must not share with its parent -- a lock a parent's thread may
    have held at the fork, a record of the parent's helpers -- and that many children
    never use: they never build it, and never copy the pages building it would write.
    Every use goes through :meth:`get` (one comparison when nothing forked).
    """

    __slots__ = ("_generation", "_make", "_value")

    def __init__(self, make: Callable[[], _T]) -> None:
        self._make = make
        self._value = make()
        self._generation = generation

    def get(self) -> _T:
        """This process's value, made now if this is the first use since a fork."""
        if self._generation == generation:
            return self._value
        return self._renew()

    def _renew(self) -> _T:
        with renewing():
            if self._generation != generation:
                value = self._make()
                # Unless a use inside make() renewed it already (a finalizer run by
                # a garbage collection there): that value is the one in use.
                if self._generation != generation:
                    self._value = value
                    # Last: a thread that sees the new generation sees the new value.
                    self._generation = generation
            return self._value

    def __repr__(self) -> str:
        made = "made" if self._generation == generation else "to be made again"
        return f"<PerProcess {self._make.__qualname__} ({made} in this process)>"


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
        self._lock = _thread.allocate_lock()
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()


class ForkAwareLocal(_thread._local):
    """A ``threading.local`` whose attributes a child proctor forks starts without."""

    def __init__(self) -> None:
        register_after_fork(self, lambda local: local.__dict__.clear())

    def __reduce__(self) -> Any:
        return (type(self), ())
