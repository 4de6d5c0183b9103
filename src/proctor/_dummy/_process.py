"""``DummyProcess``: a thread with the part of ``Process``'s API that threads can have.

A ``DummyProcess`` is a ``threading.Thread``: ``start()``, ``join(timeout)``,
``is_alive()``, ``name``, ``daemon``, ``ident``, plus ``exitcode`` as a process
reports it. Each thread's started children are kept (weakly) under the thread
that started them, for ``active_children()``.
"""

from __future__ import annotations

import sys
import threading
import weakref

from .._core._timeout import check_timeout
from ._connection import Connection

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

__all__ = ("DummyProcess", "active_children", "current_process", "freeze_support")

_children_lock = threading.Lock()
#: parent thread -> {child: None}, both weakly: a finished child is forgotten
#: once nothing else holds it, and so is a finished parent.
_children: weakref.WeakKeyDictionary[threading.Thread, weakref.WeakKeyDictionary[Any, None]]
_children = weakref.WeakKeyDictionary()


def current_process() -> threading.Thread:
    """Return the calling thread (``multiprocessing.dummy``'s ``current_process``)."""
    return threading.current_thread()


def active_children() -> list[DummyProcess]:
    """Return the ``DummyProcess``es the calling thread started that are still running."""
    with _children_lock:
        mine = _children.get(threading.current_thread())
        if mine is None:
            return []
        alive = []
        for child in list(mine):
            if child.is_alive():
                alive.append(child)
            else:
                mine.pop(child, None)
        return alive


def freeze_support() -> None:
    """Do nothing: kept so that ``multiprocessing`` programs run unchanged."""


def _exit_code(code: object) -> int:
    # What a process's exit status would be for sys.exit(code).
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


class DummyProcess(threading.Thread):
    """A thread with ``multiprocessing.Process``'s constructor and ``exitcode``.

    Args:
        group: must be ``None`` (as for ``Process``).
        target: the callable run by ``run()``; ``None`` runs nothing.
        name: the thread's name; by default threading's (``Thread-N (target)``).
        args: positional arguments for ``target`` (a tuple or a list).
        kwargs: keyword arguments for ``target``.
        daemon: keyword-only; whether the thread is a daemon (``None``: the
            creating thread's flag, as for ``threading.Thread``).

    Raises:
        TypeError: ``target`` is not callable, ``args`` is not a tuple or list,
            or ``kwargs`` is not a mapping.

    Note:
        ``exitcode`` is what a process would report: ``None`` until the thread
        has run and ended, then ``0``, or ``1`` if ``run()`` raised (the
        exception is printed by ``threading.excepthook``, as for any thread),
        or the code given to ``sys.exit()`` in the thread. ``multiprocessing.dummy``
        reports ``0`` whatever happened. A thread cannot be killed: there is no
        ``terminate()``/``kill()``; use ``proctor.Process`` for work that may hang.
    """

    def __init__(
        self,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
    ) -> None:
        if target is not None and not callable(target):
            raise TypeError(f"target must be callable or None, not {type(target).__name__}")
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"args must be a tuple or a list, not {type(args).__name__}")
        if kwargs is None:
            kwargs = {}
        elif not hasattr(kwargs, "keys"):
            raise TypeError(f"kwargs must be a mapping, not {type(kwargs).__name__}")
        super().__init__(group, target, name, tuple(args), dict(kwargs), daemon=daemon)
        self._exitcode: int | None = None
        self._start_called = False
        # The connection ends it is given: it holds them until it ends, as a child
        # process holds its copies (see _connection.Connection.close).
        self._ends = [a for a in (*args, *kwargs.values()) if isinstance(a, Connection)]

    def start(self) -> None:
        """Start the thread and count it among the calling thread's children.

        Raises:
            RuntimeError: the thread was started already.
        """
        if self._start_called:
            raise RuntimeError(
                f"{self!r} was started already; a DummyProcess (a thread) can be started "
                "only once: make a new one"
            )
        self._start_called = True
        run = self.run  # a subclass's own run() included

        def run_and_record() -> None:
            try:
                run()
            except SystemExit as exc:
                # threading ignores SystemExit in a thread; a process exits with it.
                self._exitcode = _exit_code(exc.code)
                if self._exitcode and not isinstance(exc.code, int):
                    print(exc.code, file=sys.stderr)  # as a process prints sys.exit("why")
                return
            except BaseException:
                self._exitcode = 1
                raise  # reported by threading.excepthook, as in any thread
            else:
                self._exitcode = 0
            finally:
                for end in self._ends:
                    end._let_go(self, ended=True)
                vars(self).pop("run", None)  # run() is the class's again; no cycle left

        self.run = run_and_record  # type: ignore[method-assign]
        for end in self._ends:
            end._hold(self)
        try:
            super().start()
        except BaseException:
            del self.run  # no thread could be made
            self._start_called = False
            for end in self._ends:
                end._let_go(self, ended=True)
            raise
        with _children_lock:
            parent = threading.current_thread()
            mine = _children.get(parent)
            if mine is None:
                mine = _children[parent] = weakref.WeakKeyDictionary()
            mine[self] = None

    def join(self, timeout: float | None = None) -> None:
        """Wait until the thread ends, or ``timeout`` seconds (``None``: for ever).

        Raises:
            TypeError: ``timeout`` is not a number or ``None``.
            RuntimeError: the thread was not started, or joins itself.
        """
        timeout = check_timeout(timeout)
        super().join(None if timeout is None else max(timeout, 0.0))

    def close(self) -> None:
        """Compatibility with ``Process.close()``: a thread holds nothing to release.

        Raises:
            ValueError: the thread is still running (as ``Process.close()`` raises).
        """
        if self.is_alive():
            raise ValueError(f"cannot close {self!r}: it is still running; join() it first")

    @property
    def exitcode(self) -> int | None:
        """``None`` while not started or running; then 0, 1 or the ``sys.exit()`` code."""
        if self.ident is None or self.is_alive():
            return None
        return 0 if self._exitcode is None else self._exitcode
