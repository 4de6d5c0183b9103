"""Progress of a pool call, counted in input items: the ``progress=`` argument.

::

    worker (process, or ThreadPool thread)      parent                       display
    ──────────────────────────────────────      ──────                       ───────
    run_chunk: [func(x) for x in iterator]      dispatcher thread:
    _Reporter thread, every REPORT_INTERVAL:      progress frame ─▶ Tracker
      items done = size - length_hint - 1  ──▶      .reported(task, done)  ─▶ tqdm bar
                                                  result frame ─▶ Tracker     .update(n),
                                                    .finished(task)           or fn(done,
    the chunk's result frame  ─────────────▶   caller's thread: end of the    total)
                                                 call, a failure, Ctrl-C
                                                 ─▶ Tracker.close()

A task (chunk) that reports progress has the ``REPORTS_PROGRESS`` kind bit. Its worker
runs it as ``[func(item) for item in iterator]`` -- no per-item work is added -- and registers
the iterator with the process's ``_Reporter``, a daemon thread that wakes every
``REPORT_INTERVAL`` while chunks run and sends how many items each running chunk has
finished (``operator.length_hint`` of a list, tuple or range iterator says how many
are left), so a bar moves while a long chunk runs. It reports even an unchanged
count, so that the parent shows a count it held back (it updates the display at most
every SHOW_INTERVAL) while slow items keep the count from changing. A chunk that runs
for less than the interval sends nothing but its result. The reporter sends under its lock and the
worker unregisters the chunk under it before sending the result, so no progress frame
comes between a result frame and the buffers that follow it.

In the parent, the dispatcher hands each progress frame and each chunk's result to
the call's ``Tracker``, which counts items (never withdrawn: the count only grows) and
updates the display, at most every SHOW_INTERVAL and always with the final count: a
tqdm bar it made (``progress=True``; made only once the call has run for BAR_DELAY, so a
short call draws nothing, as tqdm's ``delay=``), a tqdm bar the user made, or a
callable. See docs/pool.md, "Progress bars".
"""

from __future__ import annotations

import math
import operator
import os
import sys
import threading
import time

from .._core._errors import ProcessTimeoutError
from .._logging._logger import get_logger
from ._results import IMapIterator, IMapUnorderedIterator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

__all__ = ("ITERATORS", "REPORT_INTERVAL", "Tracker", "get", "run_chunk", "tracker")

#: A worker reports a running chunk's items at most this often: ten updates a second
#: look live, and cost a 25-byte frame each.
REPORT_INTERVAL = 0.1
#: A worker's reporter thread ends after this long with no chunk to report on (a
#: later one starts it again), so an idle pool keeps no thread waking for nothing.
REPORTER_IDLE = 0.5
#: The display is updated at most this often (and always with the final count): it
#: runs in the dispatcher thread, where a slow one delays every result, and a tqdm
#: bar redraws no more often than this anyway (its ``mininterval``).
SHOW_INTERVAL = 0.1
#: A bar of ``progress=True`` is made (and first drawn) only once its call has run
#: this long, as tqdm's own ``delay=``: a call that ends sooner draws nothing. Making
#: and closing a tqdm bar costs 0.1-1 ms, as much as 10,000 quick tasks; a bar that
#: would live for less than a tenth of a second shows nobody anything live.
BAR_DELAY = 0.1

_INSTALL = (
    "progress=True draws its bar with tqdm, which is not installed: install it with "
    "pip install 'proctor[progress]' (or pip install tqdm), or pass a callable "
    "progress=fn(done, total) to draw your own."
)


# -- the worker's side --------------------------------------------------------------------


class _Reporter:
    """This process's reporting thread, and the chunks it reports on (by thread)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._lock = threading.Lock()
        # thread ident -> (send, task id, iterator, size)
        self._running: dict[int, tuple[Any, ...]] = {}
        self._thread: threading.Thread | None = None

    def begin(
        self, send: Callable[[int, int], object], task_id: int, iterator: Iterator[Any], size: int
    ) -> None:
        with self._lock:
            self._running[threading.get_ident()] = (send, task_id, iterator, size)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="proctor-progress-reporter", daemon=True
                )
                self._thread.start()

    def end(self) -> None:
        # Under the lock: once this returns, no progress frame of the chunk is being
        # sent, so the result frame (and its buffers) cannot be split by one.
        with self._lock:
            self._running.pop(threading.get_ident(), None)

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            time.sleep(REPORT_INTERVAL)
            with self._lock:
                if not self._running:
                    if time.monotonic() - idle_since >= REPORTER_IDLE:
                        self._thread = None
                        return
                    continue
                idle_since = time.monotonic()
                for key, (send, task_id, iterator, size) in list(self._running.items()):
                    # The item just taken from the iterator is running, not done. Sent
                    # even when it has not changed: the parent then shows a count it
                    # held back (see Tracker.reported) while slow items run.
                    done = max(size - operator.length_hint(iterator) - 1, 0)
                    try:
                        send(task_id, done)
                    # The pool's end is closed (the pool was terminated, or this worker
                    # abandoned): nothing reads reports any more. Any error: the
                    # reporter must go on for the other chunks.
                    except Exception:
                        del self._running[key]


_reporter: _Reporter | None = None
_reporter_lock = threading.Lock()


def _get_reporter() -> _Reporter:
    global _reporter
    reporter = _reporter
    # A forked child inherits the object, not its thread: it makes its own.
    if reporter is None or reporter.pid != os.getpid():
        with _reporter_lock:
            reporter = _reporter
            if reporter is None or reporter.pid != os.getpid():
                reporter = _reporter = _Reporter()
    return reporter


def run_chunk(
    run: Callable[[list[Any], Callable[..., Any], Iterable[Any]], None],
    values: list[Any],
    func: Callable[..., Any],
    items: Any,
    send: Callable[[int, int], object],
    task_id: int,
) -> None:
    """``run(values, func, iterator)`` over ``items`` (the worker's loop of any chunk,
    ``_worker._map_into`` or ``_starmap_into``), while this process's reporter sends
    ``send(task_id, items done)`` every REPORT_INTERVAL."""
    iterator = iter(items)
    reporter = _get_reporter()
    reporter.begin(send, task_id, iterator, len(items))
    try:
        # The same loop as a chunk without progress=: nothing is added per item. The
        # reporter reads the iterator's length hint from its own thread.
        run(values, func, iterator)
    finally:
        reporter.end()


# -- the parent's side ----------------------------------------------------------------------

_NEW_BAR, _USER_BAR, _CALLABLE = "new bar", "user's bar", "callable"
_bar_class: Any = None


def _tqdm_class() -> Any:
    """tqdm.auto's class (a terminal or a notebook bar) without the monitor thread.

    tqdm's monitor thread only forces a redraw of bars whose ``miniters`` grew, and
    ours keep ``miniters=1``; without it no thread outlives the bar (tqdm 4.66+ never
    stops its monitor once started).
    """
    global _bar_class
    if _bar_class is None:
        try:
            from tqdm.auto import tqdm as auto_tqdm  # type: ignore[import-untyped]  # no stubs
        except ImportError as exc:
            raise ModuleNotFoundError(_INSTALL, name="tqdm") from exc

        class ProgressBar(auto_tqdm):
            monitor_interval = 0

        _bar_class = ProgressBar
    return _bar_class


def _is_tqdm(value: object) -> bool:
    std = sys.modules.get("tqdm.std")  # a tqdm bar exists only once tqdm is imported
    return std is not None and isinstance(value, std.tqdm)


def tracker(progress: object) -> Tracker | None:
    """The ``Tracker`` for a call's ``progress=`` argument (None for None or False).

    Checked before anything is sent; nothing is drawn until ``start()``, and a new
    bar not before BAR_DELAY.

    Raises:
        ModuleNotFoundError: ``progress=True`` and tqdm is not installed (an
            ``ImportError`` whose message says how to install it).
        TypeError: ``progress`` is not a bool, a tqdm bar, a callable or None.
    """
    if progress is None or progress is False:
        return None
    if progress is True:
        _tqdm_class()
        return Tracker(_NEW_BAR, None)
    if _is_tqdm(progress):
        return Tracker(_USER_BAR, progress)
    if callable(progress):
        return Tracker(_CALLABLE, progress)
    raise TypeError(
        "progress must be True (a tqdm bar), a tqdm bar to update, a callable "
        f"fn(done, total), or None/False, not {type(progress).__name__} ({progress!r:.80})"
    )


class Tracker:
    """One call's count of input items done, and its display.

    The dispatcher thread calls ``reported()`` and ``finished()``; ``close()`` may come
    from any thread (the caller's, a canceller's, a finalizer), so all of them take
    ``_lock``. The count only grows: a chunk that fails keeps the items it reported.
    Once closed, the display is never touched again.
    """

    def __init__(self, kind: str, sink: Any) -> None:
        self._kind = kind
        self._sink = sink  # the bar, or the callable (a new bar is made by _show())
        # Reentrant: a finalizer (close()) may run during a collection in this thread.
        self._lock = threading.RLock()
        self.total: int | None = None
        self.done = 0
        self._partial: dict[int, int] = {}  # task id -> items a running chunk reported
        self._started = False
        self.closed = False
        self._broken = False  # the display raised: it is left alone from then on
        self._shown = -1  # the count the display was last given (-1: none yet)
        self._shown_at = -math.inf
        self._desc = ""
        self._began = -math.inf  # time.monotonic() at start()

    def start(self, total: int | None, desc: str) -> None:
        """Begin counting ``total`` items (None: unknown), in the caller's thread.

        A callable is given ``(0, total)`` at once; a bar of ``progress=True`` is made
        later, by the first count shown once BAR_DELAY has passed (``_show``).
        """
        with self._lock:
            self.total = total
            self._desc = desc
            self._started = True
            now = time.monotonic()
            self._began = now
            if self._kind != _CALLABLE:
                self._shown = 0  # items given to the bar, which may hold others already
            # A callable gets (0, total) at once; a user's bar is drawn; a new bar is
            # made only if BAR_DELAY is 0.
            self._show(now)
            if total == 0:
                self._close_locked()

    def reported(self, task: Any, done: int) -> None:
        """A running chunk (a ``Task``) has finished ``done`` of its items.

        Workers report every REPORT_INTERVAL while a chunk runs, changed or not: a
        count held back by SHOW_INTERVAL (chunks that ended close together) is shown
        then, not only at the next change, which slow items may put off for long.
        """
        with self._lock:
            if self.closed:
                return
            delta = done - self._partial.get(task.id, 0)
            if delta > 0:
                self._partial[task.id] = done
                self._add(delta)
            else:
                now = time.monotonic()
                if now - self._shown_at >= SHOW_INTERVAL:
                    self._show(now)

    def finished(self, task: Any) -> None:
        """A chunk's values came: all its items are done."""
        with self._lock:
            if not self.closed:
                self._add(task.size - self._partial.pop(task.id, 0))

    def close(self) -> None:
        """Stop the display at the count reached: a bar made here is closed, a user's
        bar is refreshed (its owner closes it), a callable gets the final count."""
        with self._lock:
            self._close_locked()

    def closing(
        self,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> tuple[Callable[[Any], object], Callable[[BaseException], object]]:
        """``callback`` and ``error_callback`` for a result, each closing this first."""

        def on_value(value: Any) -> None:
            self.close()
            if callback is not None:
                callback(value)

        def on_error(error: BaseException) -> None:
            self.close()
            if error_callback is not None:
                error_callback(error)

        return on_value, on_error

    def _add(self, items: int) -> None:
        self.done += items
        if self.total is not None and self.done >= self.total:
            self._close_locked()  # shows the final count
            return
        now = time.monotonic()
        if now - self._shown_at >= SHOW_INTERVAL:
            self._show(now)

    def _show(self, now: float) -> None:
        """Give the display the count (a bar: the items since it was last given one)."""
        if self._broken:
            return
        if self._kind == _NEW_BAR and self._sink is None:
            if now - self._began < BAR_DELAY:
                return  # too early to draw: _shown stays, the next show gives it all
            self._safely(self._make_bar, now)
            if self._broken:
                return
        if self._shown == self.done:
            if self._kind == _NEW_BAR and not self.closed:
                # No change while slow items run: redraw, so that the bar's elapsed
                # time goes on.
                self._shown_at = now
                self._safely(self._sink.refresh)
            return
        self._shown_at = now
        if self._kind == _CALLABLE:
            self._shown = self.done
            self._safely(self._sink, self.done, self.total)
        else:
            items, self._shown = self.done - self._shown, self.done
            self._safely(self._sink.update, items)

    def _make_bar(self, now: float) -> None:
        bar = _tqdm_class()(total=self.total, desc=self._desc, unit="item", miniters=1)
        # Its clock starts when the call did, not BAR_DELAY later: elapsed time and
        # rate count the whole call. (tqdm keeps wall-clock times in start_t and
        # last_print_t; reset() and unpause() set them the same way.)
        bar.start_t = bar.last_print_t = bar._time() - (now - self._began)
        self._sink = bar

    def _close_locked(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self._started:
            return
        self._show(time.monotonic())
        if self._kind == _USER_BAR:
            if not self._broken:
                self._safely(self._sink.refresh)
        elif self._kind == _NEW_BAR and self._sink is not None:
            # Closed even after an error: it must stop drawing. (No bar: the call
            # ended within BAR_DELAY, and nothing is drawn, as with tqdm's delay=.)
            self._safely(self._sink.close)

    def _safely(self, func: Callable[..., object], *args: Any) -> None:
        # The display runs in the dispatcher thread, among every result: its error must
        # neither stop the pool nor vanish. It is logged once, and the display is left
        # alone for the rest of the call (an error ten times a second helps nobody).
        try:
            func(*args)
        except Exception:
            if not self._broken:
                self._broken = True
                get_logger().exception(
                    "the progress display %r raised; the pool call goes on without it",
                    self._sink if self._sink is not None else "(a new tqdm bar)",
                )

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Tracker {self._kind} {self.done}/{self.total} {state}>"


def get(result: Any, tracker: Tracker | None) -> Any:
    """``result.get()``; the display stops if the wait is interrupted (Ctrl-C).

    The tasks go on after an interrupted ``map()``, but nobody will see their results:
    a bar that kept moving would say otherwise.
    """
    if tracker is None:
        return result.get()
    try:
        return result.get()
    except BaseException:
        tracker.close()
        raise


class _ProgressIMapIterator(IMapIterator):
    """An ``imap`` iterator whose ``next()`` stops the call's display when it ends or
    raises. A subclass, so that iterators without ``progress=`` pay nothing per item."""

    _progress: Tracker  # set by Pool._imap

    def next(self, timeout: float | None = None) -> Any:
        try:
            return super().next(timeout)
        except BaseException as exc:
            # The end, a failed chunk, Ctrl-C: the display stops at the count reached.
            # Not next(timeout)'s own timeout (exactly ProcessTimeoutError; a task's is
            # a TaskTimeoutError): the caller may wait again.
            if type(exc) is not ProcessTimeoutError:
                self._progress.close()
            raise

    __next__ = next


class _ProgressIMapUnorderedIterator(_ProgressIMapIterator, IMapUnorderedIterator):
    pass


#: The iterator class ``imap``/``imap_unordered`` return when given ``progress=``.
ITERATORS: dict[type[IMapIterator], type[IMapIterator]] = {
    IMapIterator: _ProgressIMapIterator,
    IMapUnorderedIterator: _ProgressIMapUnorderedIterator,
}
