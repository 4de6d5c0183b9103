"""``ProcessPoolExecutor``: the ``concurrent.futures`` API in front of a pool's dispatcher.

::

    submit(fn, *args)                    Dispatcher (one thread)          workers
    ─────────────────                    ───────────────────────          ───────
    pickle fn and args, a Future    ───▶ pending ─▶ _claim: the future ─▶ run the task
      and its _FutureSlot                  becomes running (or, if it
    map(fn, *its): chunks of args,         was cancelled, is dropped)
      each a task with a slot            outcome / WorkerLostError /
    Future.result() ◀── set_result ◀──── TaskTimeoutError ◀─────────────  result
                        set_exception

The executor runs on the same dispatcher and worker loop as ``Pool``: a task is one
``submit`` (``APPLY``) or one chunk of a ``map`` (``STARMAP``), each delivered to a
``_FutureSlot`` that completes a ``concurrent.futures.Future``. A pending future is
cancelled by ``Future.cancel()`` and dropped when its turn comes; a running one cannot
be cancelled, as ``concurrent.futures`` specifies. See docs/pool.md, "ProcessPoolExecutor".
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
import time
import weakref
from functools import partial

from .._core._errors import MaybeEncodingError, PicklingError, WorkerLostError
from .._core._integers import integral
from .._core._system import cpu_count
from .._logging._logger import get_logger
from .._start._methods import resolve_method
from . import _lifecycle, _progress, _worker
from ._dispatcher import Dispatcher, Task, finish_at_exit
from ._pool import (
    _check_callable,
    _check_concurrency,
    _check_memory_limit,
    _check_room_for_workers,
    _check_task_timeout,
    _items_text,
    _positions,
    _process_class,
    call_inputs,
    guided_chunks,
    remote_dispatcher,
)
from ._results import ChunkSizer
from ._task import ChunkFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

__all__ = ("ProcessPoolExecutor",)


class StoppableFuture(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` whose ``cancel()`` also stops a running task.

    What ``ProcessPoolExecutor(cancel_running=True)`` returns. ``cancel()`` of a
    pending future is the stdlib's; of a running one, it cancels the future at once
    (waiters in ``wait()``/``as_completed()`` see it cancelled, callbacks run) and
    has the pool kill the task's worker (SIGKILL), which is replaced. It changes
    state the way ``Future.cancel()`` itself does, through the class's own fields
    (``_condition``, ``_state``, ``_waiters``), which CPython 3.10 to 3.14 share.
    """

    _stop: Callable[[], None] | None = None

    def cancel(self) -> bool:
        if super().cancel():
            return True
        stop = self._stop
        if stop is None:
            return False
        with self._condition:
            if self._state != "RUNNING":
                return False
            self._state = "CANCELLED_AND_NOTIFIED"
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        stop()
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True


class _FutureSlot:
    """Where the dispatcher delivers one task's outcome: a ``Future``.

    ``_claim()`` (dispatcher thread, before sending) and a cancelled future's done
    callback both want to call ``set_running_or_notify_cancel()``, which may be called
    once only; whichever comes first does, under ``_lock``. The callback makes a
    cancelled future count as done for ``wait()``/``as_completed()`` at once, not
    when the dispatcher reaches its task.
    """

    __slots__ = ("__weakref__", "_cancelled", "_lock", "_running", "_sizer", "future")

    def __init__(
        self,
        future: concurrent.futures.Future[Any],
        wake: Callable[[], None] | None = None,
        sizer: ChunkSizer | None = None,
    ) -> None:
        self.future = future
        self._sizer = sizer
        self._lock = threading.Lock()
        self._running: bool | None = None  # set_running_or_notify_cancel()'s answer
        self._cancelled = False  # a running task's StoppableFuture was cancelled: stop it
        future.add_done_callback(self._on_done)
        if wake is not None and isinstance(future, StoppableFuture):

            def stop() -> None:
                self._cancelled = True
                wake()

            future._stop = stop

    def _claim(self) -> bool:
        # A task whose send failed (its worker died idle) is claimed again: same answer.
        with self._lock:
            if self._running is None:
                self._running = self.future.set_running_or_notify_cancel()
            return self._running

    def _on_done(self, future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled():
            with self._lock:
                if self._running is None:
                    self._running = future.set_running_or_notify_cancel()  # notifies waiters

    def _observe(self, seconds: float, items: int) -> None:
        # A map chunk's measured duration sizes the next chunks (dispatcher thread).
        if self._sizer is not None:
            self._sizer.observe(seconds, items)

    def _deliver(self, index: int, success: bool, value: Any) -> None:
        if type(value) is WorkerLostError:
            value = _as_broken_process_pool(value)
        elif isinstance(value, MaybeEncodingError) and value.pickling_failed:
            # Pickling failed in the worker (not unpickling here): code written for
            # concurrent.futures catches the pickle.PicklingError the stdlib gives.
            unsendable = PicklingError(str(value))
            unsendable.__cause__ = value
            value = unsendable
        try:
            if success:
                self.future.set_result(value)
            else:
                self.future.set_exception(value)
        except concurrent.futures.InvalidStateError:
            pass  # a pending future failed by terminate() was cancelled at the same moment
        except BaseException:
            # A done callback that raised SystemExit or KeyboardInterrupt (the Future
            # logs an Exception itself): the future is complete, and the dispatcher
            # thread, which it would end, goes on.
            get_logger().exception("a done callback of %r raised", self.future)

    def _deliver_partial(self, index: int, values: list[Any], error: BaseException) -> None:
        # Only a map() chunk's task has items: its future is map()'s own (never the
        # caller's), whose iterator yields the values, then raises the error.
        self._deliver(index, True, ChunkFailure(values, error))


_lost_class: type[WorkerLostError] | None = None


def _executor_worker_lost_error() -> type[WorkerLostError]:
    """``ExecutorWorkerLostError``: a ``WorkerLostError`` that is also the stdlib's
    ``concurrent.futures.process.BrokenProcessPool``, made at the first worker lost.

    Code written for the stdlib's executor catches a dead worker as
    ``BrokenProcessPool``; here only that worker's future fails with it (the executor
    goes on), and the same ``except`` clause catches it. Made on first use:
    ``concurrent.futures.process`` takes tens of milliseconds to import, which an
    executor whose workers never die should not pay.
    """
    global _lost_class
    if _lost_class is None:
        from concurrent.futures.process import BrokenProcessPool

        class ExecutorWorkerLostError(WorkerLostError, BrokenProcessPool):
            __doc__ = WorkerLostError.__doc__

        # Pickled by reference to this module, whose __getattr__ makes it again.
        ExecutorWorkerLostError.__module__ = __name__
        ExecutorWorkerLostError.__qualname__ = "ExecutorWorkerLostError"
        _lost_class = ExecutorWorkerLostError
    return _lost_class


def _as_broken_process_pool(error: WorkerLostError) -> WorkerLostError:
    """``error`` as an ``ExecutorWorkerLostError``, with the same attributes and cause."""
    lost = _executor_worker_lost_error()(
        error.args[0], error.pid, error.exitcode, error.function, error.inputs
    )
    lost.__cause__ = error.__cause__
    lost.__context__ = error.__context__
    lost.__suppress_context__ = error.__suppress_context__
    return lost


def __getattr__(name: str) -> Any:
    if name == "ExecutorWorkerLostError":  # an unpickling looks it up here
        return _executor_worker_lost_error()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ProcessPoolExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures`` executor whose workers are proctor processes.

    Its futures are ``concurrent.futures.Future`` objects: ``as_completed``, ``wait``,
    ``asyncio.wrap_future`` and ``loop.run_in_executor`` work with them. It runs on
    the machinery of ``proctor.Pool``: the parent knows which task each worker is
    running, so a worker that dies fails only the future it was running, with
    ``proctor.WorkerLostError``, and is replaced; futures it had queued run on
    another worker.

    Args:
        max_workers: the most workers; default ``cpu_count()``. Under fork all start
            with the executor; under spawn and forkserver one does, the others as
            tasks need them (as the stdlib's executor starts them).
        mp_context: the proctor context whose start method the workers use
            (``proctor.get_context("spawn")``); default the module-level one's.
        initializer: called as ``initializer(*initargs)`` in each worker when it starts.
        initargs: arguments for ``initializer``.
        max_tasks_per_child: tasks (``submit`` calls or ``map`` chunks) a worker runs
            before it is replaced by a new one; ``None`` keeps workers for the
            executor's life.
        task_timeout: seconds a task may run once a worker has it (per item for a
            ``map`` chunk); then its worker is killed (SIGKILL) and replaced and the
            future fails with ``proctor.TaskTimeoutError``. ``None``: no limit.
        cancel_running: ``Future.cancel()`` of a running task stops it too: the
            worker is killed (SIGKILL) and replaced, and the future is cancelled
            (see ``StoppableFuture``). False (the default) keeps the stdlib's rule:
            a running future cannot be cancelled, ``cancel()`` returns False.
        max_memory_per_child: bytes of resident memory a worker may reach: one past
            it after a task is replaced (as ``proctor.Pool``'s).
        task_concurrency: how many tasks of coroutine functions (``async def``) a
            worker runs at once on its event loop, as ``proctor.Pool``'s; default 1.
        backend: run the futures on a cluster, as ``proctor.Pool(backend=...)`` does
            (a Dask ``Client`` or scheduler address, ``"ray"`` or a Ray address);
            ``max_workers`` then only sizes ``map``'s chunks. See docs/scale-out.md.

    Raises:
        ValueError: ``max_workers`` or ``max_tasks_per_child`` below 1, a
            ``task_timeout`` that is not positive; ``max_workers`` beyond what this
            process's limits allow (descriptors, processes).
        TypeError: a wrong argument type (a ``multiprocessing`` context included).
        StartError: a worker could not be started.

    Note:
        Unlike the stdlib's, this executor does not break when a worker dies: only
        that worker's future fails (``WorkerLostError``, which is also the stdlib's
        ``BrokenProcessPool``, so that code written for the stdlib catches it), and
        every other goes on. A
        ``max_tasks_per_child`` works with every start method, ``fork`` included. An
        initializer that raises fails every future with ``proctor.InitializerError``
        instead of raising ``BrokenProcessPool`` from ``submit()``.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_child: int | None = None,
        *,
        task_timeout: float | None = None,
        cancel_running: bool = False,
        max_memory_per_child: int | None = None,
        task_concurrency: int = 1,
        backend: Any = None,
    ) -> None:
        self._dispatcher: Dispatcher | None = None
        if backend is not None:
            self._task_timeout = _check_task_timeout(task_timeout, "task_timeout")
            if not isinstance(cancel_running, bool):
                raise TypeError(
                    f"cancel_running must be True or False, not {type(cancel_running).__name__}"
                )
            self._cancel_running = cancel_running
            self._concurrency = 1
            self._shutdown_lock = threading.Lock()
            self._shutdown = False
            max_workers = integral(max_workers)
            if max_workers is not None and (
                isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
            ):
                raise TypeError(f"max_workers must be a positive int or None, not {max_workers!r}")
            self._dispatcher = remote_dispatcher(
                backend,
                {
                    "mp_context": mp_context is not None,
                    "initializer": initializer is not None,
                    "max_tasks_per_child": max_tasks_per_child is not None,
                    "max_memory_per_child": max_memory_per_child is not None,
                    "task_concurrency": task_concurrency != 1,
                },
            )
            self._max_workers = self._dispatcher.processes if max_workers is None else max_workers
            finish_at_exit(self._dispatcher)
            return
        concurrency = _check_concurrency(task_concurrency)
        if not isinstance(cancel_running, bool):
            raise TypeError(
                f"cancel_running must be True or False, not {type(cancel_running).__name__}"
            )
        self._cancel_running = cancel_running
        if max_workers is None:
            max_workers = cpu_count()
        max_workers = integral(max_workers)
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an int or None, not {type(max_workers).__name__}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be greater than 0, not {max_workers}")
        # Checked for all of them, even where one starts now and the others with
        # the tasks that need them (spawn, forkserver).
        _check_room_for_workers(max_workers, "ProcessPoolExecutor(max_workers={})")
        if initializer is not None:
            _check_callable(initializer, "initializer")
        if max_tasks_per_child is not None:
            max_tasks_per_child = integral(max_tasks_per_child)
            if isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int):
                raise TypeError(
                    "max_tasks_per_child must be a positive int or None, not "
                    f"{type(max_tasks_per_child).__name__}"
                )
            if max_tasks_per_child < 1:
                raise ValueError(f"max_tasks_per_child must be >= 1, not {max_tasks_per_child}")
        self._task_timeout = _check_task_timeout(task_timeout, "task_timeout")
        memory_limit = _check_memory_limit(max_memory_per_child)
        process_class = _process_class(mp_context, "mp_context")
        self._max_workers = max_workers
        self._concurrency = concurrency
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        self._dispatcher = Dispatcher(
            process_class,
            max_workers,
            initializer,
            tuple(initargs),
            max_tasks_per_child,
            max_memory_per_child=memory_limit,
            concurrency=concurrency,
            # Not under fork, as the stdlib's executor: its dispatcher thread would
            # fork them while another thread of the program imports a module, and
            # such a worker inherits the module half imported with its lock held (a
            # task that imports it then blocks for ever: see test_pool_faults's
            # xfail). A Pool's replacements run that risk, as the stdlib's pool's do.
            on_demand=resolve_method(process_class._start_method) != "fork",
        )
        # As the stdlib's: what was submitted is done before the interpreter exits,
        # whether or not the executor was shut down (with or without waiting).
        finish_at_exit(self._dispatcher)

    # -- submitting -------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a worker; return its ``Future`` at once.

        Raises:
            RuntimeError: after ``shutdown()``.
            TypeError: ``fn`` is not callable.
            PicklingError: ``fn`` or an argument cannot be pickled (nothing was sent).
        """
        dispatcher = self._check_open()
        _check_callable(fn, "fn")
        # The dispatcher's codec: one per executor, as per Pool, so a function is
        # pickled (with the globals it uses) at its first call in this executor.
        codec = dispatcher.codec
        func_bytes, name, coroutine = codec.dumps_function(fn)
        frame_parts = (func_bytes, codec.dumps_payload((args, kwargs), f"the arguments of {name}"))
        describe = partial(call_inputs, args, kwargs)
        return self._submit_task(
            dispatcher, _worker.APPLY, frame_parts, name, describe, 1, None, coroutine
        )

    def _submit_task(
        self,
        dispatcher: Dispatcher,
        kind: int,
        frame_parts: tuple[bytes, tuple[bytes, list[Any]]],
        name: str,
        describe: Callable[[], str],
        items: int,
        sizer: ChunkSizer | None = None,
        coroutine: bool = False,
        progress: _progress.Tracker | None = None,
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any]
        if self._cancel_running:
            future = StoppableFuture()
            slot = _FutureSlot(future, dispatcher.wake, sizer)
        else:
            future = concurrent.futures.Future()
            slot = _FutureSlot(future, None, sizer)
        timeout = None if self._task_timeout is None else self._task_timeout * items
        with self._shutdown_lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            task_id = dispatcher.next_id()
            func_bytes, (payload, buffers) = frame_parts
            kind = _worker.with_buffers(_worker.kind_for(kind, coroutine), buffers)
            if progress is not None:
                kind |= _worker.REPORTS_PROGRESS
            frame = dispatcher.codec.encode_task(task_id, kind, func_bytes, payload)
            task = Task(task_id, frame, slot, 0, name, describe, timeout, items, buffers, coroutine)
            task.progress = progress
            try:
                dispatcher.submit([task])
            except ValueError as exc:  # the dispatcher has ended (a bug: it was logged)
                raise RuntimeError(f"cannot schedule new futures: {exc}") from exc
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        buffersize: int | None = None,
        progress: Any = None,
    ) -> Iterator[Any]:
        """``fn(*args)`` for each ``args`` of ``zip(*iterables)``, in order.

        The items are sent to the workers in chunks of ``chunksize``; ``None`` (the
        default; the stdlib's is 1) picks the sizes as ``Pool`` does: decreasing
        chunks over the whole input, or, with ``buffersize``, sizes from the measured
        durations of the chunks done so far. ``task_timeout`` applies per item.
        Without ``buffersize`` every chunk is submitted now (what cannot be pickled
        raises here); with it, at most ``buffersize`` chunks are submitted ahead of the
        consumer and the iterables are read lazily (an endless generator streams), as
        in Python 3.14; then an item that cannot be pickled raises at its position,
        and the iterator keeps the executor alive until it has read all the input
        (Python 3.14's stops submitting, and the results end early without an
        error, once the executor is garbage-collected).
        ``progress`` as for ``Pool.map`` (a proctor addition): the total is the
        shortest iterable's ``len()``, unknown when one has none; the display stops
        when the iterator ends, raises, is closed or is garbage-collected.

        Raises:
            TimeoutError: from ``next()``, when the next result is not ready
                ``timeout`` seconds after ``map()`` was called (the rest are cancelled).
            RuntimeError: after ``shutdown()``.
            TypeError, ValueError: a bad ``chunksize`` or ``buffersize``.
            TypeError: a ``progress`` of the wrong type.
            ModuleNotFoundError: ``progress=True`` without tqdm installed.
            Exception: a failed item's exception, from ``next()`` at its position.
        """
        if chunksize is not None:
            chunksize = integral(chunksize)
            if isinstance(chunksize, bool) or not isinstance(chunksize, int):
                raise TypeError(f"chunksize must be an int or None, not {type(chunksize).__name__}")
            if chunksize < 1:
                raise ValueError(f"chunksize must be >= 1, not {chunksize}")
        if buffersize is not None:
            buffersize = integral(buffersize)
            if isinstance(buffersize, bool) or not isinstance(buffersize, int):
                raise TypeError(
                    f"buffersize must be an integer or None, not {type(buffersize).__name__}"
                )
            if buffersize < 1:
                raise ValueError(f"buffersize must be None or > 0, not {buffersize}")
        dispatcher = self._check_open()
        _check_callable(fn, "fn")
        tracker = _progress.tracker(progress)
        end_time = None if timeout is None else timeout + time.monotonic()
        func_bytes, name, coroutine = dispatcher.codec.dumps_function(fn)
        sizer = ChunkSizer(chunksize)
        submitter = _ChunkSubmitter(
            self,
            dispatcher,
            name,
            func_bytes,
            sizer,
            coroutine,
            tracker,
        )
        # The shortest iterable ends the map, as the builtin map and the stdlib's.
        items = zip(*iterables, strict=False)
        chunks: Iterator[list[tuple[Any, ...]]]
        if chunksize is None and buffersize is None:
            # The whole input is read now: decreasing chunks, as Pool.map's.
            whole = list(items)
            slots = self._max_workers * (self._concurrency if coroutine else 1)
            per_worker = dispatcher.chunks_per_worker_for(name, len(whole), slots)
            chunks = _sliced(whole, guided_chunks(len(whole), slots, per_worker))
            total: int | None = len(whole)
        else:
            chunks = _chunks(items, sizer.next_size)
            total = _shortest(iterables) if tracker is not None else None
        if tracker is not None:
            tracker.start(total, name.rpartition(".")[2])
        futures: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
        try:
            for chunk in chunks if buffersize is None else itertools.islice(chunks, buffersize):
                futures.append(submitter.submit(chunk, lazy=buffersize is not None))
        except BaseException:
            if tracker is not None:
                tracker.close()
            raise
        if buffersize is None:
            submitter.done()  # every chunk is submitted
        results = _results(futures, end_time, None if buffersize is None else chunks, submitter)
        if tracker is not None:
            # Never iterated, or left with break: the display stops when it is collected.
            weakref.finalize(results, tracker.close)
        return results

    # -- ending -----------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no new tasks; the workers exit once the submitted ones are done.

        Args:
            wait: return only once every running and pending future is done and the
                workers have exited.
            cancel_futures: cancel every future that has not started running.
        """
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        with self._shutdown_lock:
            self._shutdown = True
        if cancel_futures:
            self._cancel_pending(dispatcher)
        dispatcher.close()
        dispatcher.join(None, wait_for_it=wait)

    def terminate_workers(self) -> None:
        """Cancel the pending futures and stop every worker now with SIGTERM.

        Running futures fail with ``proctor.PoolTerminatedError``. As in Python 3.14,
        the executor is shut down: ``submit()`` raises ``RuntimeError`` afterwards.
        Returns once the workers have exited.
        """
        self._force_shutdown(kill=False)

    def kill_workers(self) -> None:
        """Like ``terminate_workers()``, with SIGKILL."""
        self._force_shutdown(kill=True)

    def _force_shutdown(self, kill: bool) -> None:
        dispatcher = self._dispatcher
        if dispatcher is None:
            return
        with self._shutdown_lock:
            self._shutdown = True
        self._cancel_pending(dispatcher)
        dispatcher.terminate(kill=kill)

    @staticmethod
    def _cancel_pending(dispatcher: Dispatcher) -> None:
        for slot in dispatcher.pending_results():
            if isinstance(slot, _FutureSlot):
                slot.future.cancel()

    def __del__(self) -> None:
        # As the stdlib's: a collected executor finishes its futures, then its workers exit.
        dispatcher = getattr(self, "_dispatcher", None)
        if dispatcher is not None and not self._shutdown:
            self._shutdown = True
            dispatcher.close()
            dispatcher.join(None, wait_for_it=False)

    def __reduce__(self) -> Any:
        raise TypeError(
            "a ProcessPoolExecutor cannot be pickled or passed to another process; "
            "create it in the process that uses it"
        )

    def __repr__(self) -> str:
        dispatcher = self._dispatcher
        if dispatcher is None:
            state = "initial"
        elif dispatcher.state in ("terminating", "broken"):
            state = "terminated" if dispatcher.state == "terminating" else "broken"
        else:
            state = "shutdown" if self._shutdown else "running"
        return f"<proctor.ProcessPoolExecutor state={state} max_workers={self._max_workers}>"

    def _check_open(self) -> Dispatcher:
        dispatcher = self._dispatcher
        if _lifecycle.exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if dispatcher is None or self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if dispatcher.state == _lifecycle.INHERITED:
            raise _lifecycle.inherited_pool_error(self)
        return dispatcher


class _ChunkSubmitter:
    """Turns one ``map`` call's chunks into tasks, numbering their input positions."""

    def __init__(
        self,
        executor: ProcessPoolExecutor,
        dispatcher: Dispatcher,
        name: str,
        func_bytes: bytes,
        sizer: ChunkSizer,
        coroutine: bool = False,
        progress: _progress.Tracker | None = None,
    ) -> None:
        # A strong reference, unlike the stdlib's weak one: with buffersize the map's
        # iterator submits as it goes, and an executor dropped meanwhile
        # (``list(Executor(2).map(f, xs, buffersize=4))``) cut the results short
        # without a word. The iterator lets go of it at the end of its input.
        self._executor: ProcessPoolExecutor | None = executor
        self._coroutine = coroutine
        self._dispatcher = dispatcher
        self._name = name
        self._func_bytes = func_bytes
        self._sizer = sizer  # told each chunk's measured duration (adaptive sizes)
        self._start = 0
        self.progress = progress

    def done(self) -> None:
        """No chunk is left to submit: let go of the executor."""
        self._executor = None

    def submit(self, chunk: list[tuple[Any, ...]], lazy: bool) -> concurrent.futures.Future[Any]:
        """The chunk's future."""
        executor = self._executor
        assert executor is not None  # (only the end of the input lets it go)
        start, self._start = self._start, self._start + len(chunk)
        try:
            payload = self._dispatcher.codec.dumps_payload(
                chunk, f"{_items_text(start, len(chunk))} of {self._name}"
            )
        except PicklingError as exc:
            if not lazy:
                raise
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.set_exception(exc)  # read lazily: it raises at its position
            return future
        return executor._submit_task(
            self._dispatcher,
            _worker.STARMAP,
            (self._func_bytes, payload),
            self._name,
            _positions(start, len(chunk)),
            len(chunk),
            self._sizer,
            self._coroutine,
            self.progress,
        )


def _chunks(
    items: Iterator[tuple[Any, ...]], size: Callable[[], int]
) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(items, size())):
        yield chunk


def _sliced(items: list[tuple[Any, ...]], sizes: list[int]) -> Iterator[list[tuple[Any, ...]]]:
    start = 0
    for size in sizes:
        yield items[start : start + size]
        start += size


def _results(
    futures: collections.deque[concurrent.futures.Future[Any]],
    end_time: float | None,
    chunks: Iterator[list[tuple[Any, ...]]] | None,
    submitter: _ChunkSubmitter,
) -> Iterator[Any]:
    """Yield each chunk's values in order; keep ``len(futures)`` chunks submitted ahead.

    A generator, so that ``map()`` itself submits (and raises) at once; closing it,
    or an error, cancels the chunks not yet started.
    """
    try:
        while futures:
            if chunks is not None:
                chunk = next(chunks, None)
                if chunk is None:
                    chunks = None  # the input is exhausted
                    submitter.done()
                else:
                    futures.append(submitter.submit(chunk, lazy=True))
            future = futures.popleft()
            try:
                if end_time is None:
                    values = future.result()
                else:
                    values = future.result(end_time - time.monotonic())
            finally:
                future.cancel()  # after a timeout: this one, if it has not started
                del future
            error = None
            if type(values) is ChunkFailure:  # an item raised: the values before it first
                failure: ChunkFailure = values
                values, error = failure.values, failure.error
                del failure
            # Hand each value over and drop it: the iterator keeps no reference to a
            # result once it has been yielded (as the stdlib's does).
            values.reverse()
            while values:
                yield values.pop()
            del values
            if error is not None:
                raise error
    finally:
        for future in futures:
            future.cancel()
        if submitter.progress is not None:  # the end, an error, a timeout, close()
            submitter.progress.close()


def _shortest(iterables: tuple[Iterable[Any], ...]) -> int | None:
    """The length of the shortest iterable, None if one has no ``len()``: a bar's total."""
    try:
        return min(len(iterable) for iterable in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None
