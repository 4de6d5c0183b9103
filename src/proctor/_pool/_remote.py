"""Pools whose workers are a cluster's: the dispatcher behind ``Pool(backend=...)`` (issue 16).

::

    Pool / ProcessPoolExecutor        RemoteDispatcher (one thread)     engine (Dask, Ray)
    ──────────────────────────        ─────────────────────────────     ──────────────────
    pickle f once, xs in chunks  ──▶  pending ─▶ engine.submit(run_task, ─▶ a worker runs
      (RemoteCodec: the frame's         [(args, shared)])                 run_task: the same
      parts, not one bytes object)    large buffers: engine.share() once  chunk code as a
                                        per array, passed as handles      local worker, its
                                      done queue ◀── engine's callback ◀─ log records kept
    result._deliver ◀──────────────── decode the result frame, re-emit
                                        the records, WorkerLostError /
                                        TaskTimeoutError / the task's error

The same ``Pool``, executor, result classes, chunking and progress code run in front of
it: only the dispatcher differs. A task is one chunk, run by ``run_task`` on a worker
of the engine with the local worker's own code (``_worker._run``), so values, errors
with their remote traceback, coroutines and starmap behave as locally.

The engine is reached through an *engine adapter* (the ``Engine`` protocol below),
which the integration layer makes from what the user passed as ``backend=`` (a Dask
``Client``, a Ray runtime...): this layer imports no engine. An adapter submits a call,
calls back when it ends (from any thread: the callback only queues), ships a buffer
once (``share``), and stops a task.

Differences from local workers, which docs/scale-out.md spells out: a task's timeout
runs from its submission to the engine (tasks with a timeout are only submitted while
the engine has a free slot, so that the wait for a worker does not count); progress
counts a chunk's items when it ends (no reports from inside a running chunk); log
records come back with the chunk's result, not while it runs; the initializer and
``maxtasksperchild``/``max_memory_per_child``/``task_concurrency`` are refused.
"""

from __future__ import annotations

import collections
import itertools
import logging
import pickle
import threading
import time
import weakref

from .._core._errors import PicklingError, PoolTerminatedError, TaskTimeoutError, WorkerLostError
from .._core._reduction import Descriptors
from .._logging import _logger
from . import _dispatcher, _worker
from ._results import MapResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from ._dispatcher import Task, TaskResult
    from ._results import IMapIterator

    class Engine(Protocol):
        """What ``RemoteDispatcher`` needs of a cluster engine (see ``_integrations``)."""

        #: The engine's name in messages: "dask", "ray".
        name: str
        #: Whether each ``outcomes`` call costs a round trip to the cluster (Dask fetches
        #: the values from its workers then): the dispatcher then holds a ``map``'s
        #: chunks that ``succeeded`` and asks for their outcomes together.
        fetch_together: bool

        def slots(self) -> int:
            """How many tasks the cluster runs at once (its workers' threads or CPUs)."""

        def share(self, buffer: Any) -> Any:
            """Ship ``buffer`` to the cluster once; return what a task takes in its place."""

        def submit(
            self,
            func: Callable[..., Any],
            calls: list[tuple[tuple[Any, ...], tuple[Any, ...]]],
            done: list[Callable[[Any], None]],
        ) -> list[Any]:
            """Run ``func(*args, *shared)`` on a worker for each ``(args, shared)`` of
            ``calls`` (``shared``: handles from ``share``, replaced by their values
            there), all submitted at once; return their handles, and call
            ``done[i](handle)`` once call ``i`` ends."""

        def succeeded(self, handle: Any) -> bool:
            """Whether an ended task returned a value (known without fetching it)."""

        def outcomes(self, handles: list[Any]) -> list[tuple[bool, Any, str | None]]:
            """For each ended task: (True, its value, None), (False, the error, None),
            or (False, the error, why) when the worker running it was lost. One call
            for many, so that an engine fetches their values in one round trip."""

        def stop(self, handle: Any, end_worker: bool) -> None:
            """Cancel a task; with ``end_worker``, also end the worker process running it
            (a timeout, a cancelled running task), where the engine cannot interrupt it."""

        def close(self) -> None:
            """Release what the adapter made (a client it connected itself)."""


__all__ = ("RemoteCodec", "RemoteDispatcher", "engine_for", "register_resolver", "run_task")

RUNNING, CLOSED, TERMINATING = "running", "closed", "terminating"

#: Buffers of at least this many bytes are shipped to the cluster once each (Dask
#: scatter, Ray's object store) and reused by every task that has them; smaller ones
#: travel inside the task, where a round trip to ship them would cost more.
SHARE_THRESHOLD = 64 * 1024
#: Shared buffers kept (the oldest let go first): a map over one large array ships it
#: once; a long series of different arrays does not pin them all on the cluster.
SHARED_KEPT = 32
#: The most chunks per worker slot ``map``'s default sizes cut: a task on a cluster
#: costs about a millisecond, so fewer and larger chunks than a local pool's 64; the
#: guided sizes still shrink towards the end, down to length / (slots * this).
CHUNKS_PER_WORKER = 4
#: ...and fewer when the function's earlier chunks were measured so quick that a chunk
#: would hold less than this much work: each chunk is a call to the engine, which costs
#: about a millisecond (Ray's actor call, Dask's scheduling), so 10 ms keeps that cost
#: near a tenth. 1,000 items of a microsecond each then go as one chunk per worker.
MIN_CHUNK_SECONDS = 0.01
#: Functions whose item durations are remembered for that (the most recent kept).
TIMED_FUNCTIONS_KEPT = 256
#: With an engine whose outcomes cost a round trip (``Engine.fetch_together``: Dask), a
#: ``map``'s chunks that ended well wait to be fetched together, as ``client.map`` +
#: ``gather`` fetch: until none of the map's chunks is left running, or this many wait
#: (a bound on the values held on the workers meanwhile). Only ``map``/``starmap``'s:
#: their caller sees nothing before the last chunk (progress is counted as each ends);
#: ``imap``, ``apply_async`` and ``submit`` results as each ends (FETCH_HOLD_MAX). 1,000
#: one-item tasks made about 550 fetches when each was fetched as it ended, each a
#: request served by a worker between its tasks.
PARKED_MAX = 256
#: With such an engine, an ``apply_async``/``submit``/``imap`` result that ends while no
#: fetch is in flight waits for the running tasks about to end, so that they come in the
#: same fetch: at most as long as the last fetch took (what a result that ends during a
#: fetch waits anyway) and at most this many seconds, and only while tasks lately ended
#: closer together than that (ENDS_KEPT of them). 200 one-item submits made a median of
#: 41-46 fetches on 2 Dask workers without it, 26-27 with it (1 worker: 146-149, 90-118).
FETCH_HOLD_MAX = 0.005
ENDS_KEPT = 4
#: Log records a chunk returns at most; beyond them, one warning says how many were
#: dropped (a task that logs in a tight loop must not make its result huge).
MAX_RECORDS = 1000

_resolvers: list[Callable[[Any], Any]] = []


def register_resolver(resolver: Callable[[Any], Any]) -> None:
    """Have ``engine_for`` ask ``resolver(backend)`` for an adapter (None: not mine).

    The integration layer registers itself: this layer cannot import it.
    """
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def engine_for(backend: Any) -> Engine:
    """The engine adapter for a ``backend=`` argument.

    Raises:
        TypeError: nothing knows ``backend``.
        ImportError: its engine is not installed (raised by the resolver).
    """
    for resolver in _resolvers:
        engine = resolver(backend)
        if engine is not None:
            return engine
    raise TypeError(
        "backend must be a Dask distributed.Client (or a scheduler address such as "
        "'tcp://10.0.0.1:8786'), 'ray' (the running Ray runtime) or a Ray address "
        f"('ray://head:10001'), not {type(backend).__name__} ({backend!r:.80}); "
        "None runs the pool on local processes"
    )


class RemoteCodec(_worker.PickledCodec):
    """``PickledCodec``, with a task as its parts: the function's pickle is made once
    per call and shared by the chunks' tasks, not copied into each task's bytes."""

    @staticmethod
    def encode_task(task_id: int, kind: int, func: Any, payload: Any) -> Any:
        return (task_id, kind, func, payload)


# -- the worker's side -------------------------------------------------------------------

#: Per worker thread: its ``_worker._FunctionCache`` (a cache is not thread-safe, and a
#: Dask worker runs tasks on several threads).
_local = threading.local()
#: The root logger's level is lowered to the callers' while tasks run: the threads that
#: run one, the level to restore when the last of them ends, and whether one lowered it
#: (``Logger.setLevel`` clears the cached levels of every logger of the process: Ray's
#: workers have a hundred, and a restore at each task's end, even to the same level,
#: took 40% of ``run_task``'s time on a Ray actor, sampled with py-spy).
_level_lock = threading.Lock()
_level_users = 0
_level_saved = logging.NOTSET
_level_lowered = False
#: Log record fields kept as they are; any other value travels as its repr() (a record's
#: ``extra=`` may hold objects that cannot be pickled, or not rebuilt in the caller).
_PLAIN = (str, int, float, bool, type(None))


class _Records(logging.Handler):
    """Keeps the log records of one task, made ready to be pickled.

    One per worker thread, reused by its tasks (``in_use`` while one runs): making a
    ``logging.Handler`` takes the logging module's lock and registers it for shutdown,
    a quarter of ``run_task``'s own time for a tiny task.
    """

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[dict[str, Any]] = []
        self.dropped = 0
        self.thread = threading.get_ident()
        self.in_use = False

    def take(self) -> _Records:
        """This handler, emptied for a new task (or a new one if this one is in use:
        a task that runs another on the same thread)."""
        if self.in_use:
            return _Records()
        self.records = []
        self.dropped = 0
        self.in_use = True
        return self

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return  # another task's thread (a worker with several threads)
        if len(self.records) >= MAX_RECORDS:
            self.dropped += 1
            return
        fields = {
            key: value if type(value) in _PLAIN else repr(value)
            for key, value in record.__dict__.items()
        }
        fields["msg"] = record.getMessage()
        fields["args"] = None
        if record.exc_info:
            fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
        fields["exc_info"] = None
        self.records.append(fields)


def run_task(parts: tuple[Any, ...], level: int, *shared: Any) -> tuple[Any, ...]:
    """Run one task on a cluster's worker; never raises.

    ``parts`` are the task's (id, kind, function pickle, payload pickle, its buffers),
    where the function and each buffer may instead be a position in ``shared`` (what
    was shipped once); ``level`` is the caller's
    root logger level: the worker's root logger lets records of that level through
    while the task runs, and they come back with the result.

    Returns:
        (result frame, the value's large buffers, the log records, records dropped).
    """
    task_id, kind, func_bytes, payload, buffers = parts
    buffers = [shared[b] if type(b) is int else b for b in buffers] if buffers else None
    if type(func_bytes) is int:
        func_bytes = bytes(shared[func_bytes])
    function_cache = getattr(_local, "functions", None)
    if function_cache is None:
        function_cache = _local.functions = _worker._FunctionCache()
        _local.records = _Records()
    handler = _local.records.take()
    root = logging.getLogger()
    root.addHandler(handler)
    _lower_root_level(root, level)
    started = time.perf_counter()
    try:
        frame = _worker.encode_task(task_id, kind, func_bytes, payload)
        _, message, out_buffers = _worker._run(frame, function_cache, buffers)
    finally:
        root.removeHandler(handler)
        handler.in_use = False
        _restore_root_level(root)
    seconds = time.perf_counter() - started
    result = _worker._result_frame(task_id, message, seconds)
    # Bytes: engines pickle a task's return value below protocol 5 (Dask does), where
    # a PickleBuffer cannot go; this copies the value's large buffers once.
    return result, [bytes(b.raw()) for b in out_buffers], handler.records, handler.dropped


def _lower_root_level(root: logging.Logger, level: int) -> None:
    global _level_users, _level_saved, _level_lowered
    with _level_lock:
        if _level_users == 0:
            _level_saved = root.level
        _level_users += 1
        if level < root.getEffectiveLevel():
            root.setLevel(level)
            _level_lowered = True


def _restore_root_level(root: logging.Logger) -> None:
    global _level_users, _level_lowered
    with _level_lock:
        _level_users -= 1
        if _level_users == 0 and _level_lowered:
            root.setLevel(_level_saved)
            _level_lowered = False


# -- the caller's side -------------------------------------------------------------------


class _Shared:
    """Buffers shipped to the cluster once each, by the object that exports them."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # id(exporter) -> (weakref or the exporter, nbytes, the engine's handle)
        self._kept: collections.OrderedDict[int, tuple[Any, int, Any]] = collections.OrderedDict()

    def handle(self, buffer: Any) -> Any:
        view = buffer.raw() if hasattr(buffer, "raw") else memoryview(buffer)
        exporter = view.obj
        key = id(exporter)
        kept = self._kept.get(key)
        if kept is not None:
            ref, nbytes, handle = kept
            alive = ref() if isinstance(ref, weakref.ref) else ref
            if alive is exporter and nbytes == view.nbytes:
                self._kept.move_to_end(key)
                return handle
        handle = self._engine.share(pickle.PickleBuffer(view))
        try:
            ref = weakref.ref(exporter)
        except TypeError:  # bytes and other objects without weak references: kept alive
            ref = exporter
        self._kept[key] = (ref, view.nbytes, handle)
        if len(self._kept) > SHARED_KEPT:
            self._kept.popitem(last=False)
        return handle

    def clear(self) -> None:
        self._kept.clear()


class RemoteDispatcher:
    """A pool's dispatcher whose workers are an engine's (the API ``Pool`` uses of
    ``_dispatcher.Dispatcher``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.codec = RemoteCodec()
        self.processes = max(1, engine.slots())
        self.concurrency = 1
        self.chunks_per_worker = CHUNKS_PER_WORKER
        # Function name -> (seconds an item took on the workers, items of the chunk
        # that measured it): see _time_items.
        self._item_seconds: collections.OrderedDict[str, tuple[float, int]] = (
            collections.OrderedDict()
        )
        self.state = RUNNING
        self._lock = threading.Condition(threading.Lock())
        self._joining = False
        self._stopped = False
        self._ended = threading.Event()  # set as the thread ends (see Dispatcher._ended)
        self._ids = itertools.count(1)
        self._pending: collections.deque[Task] = collections.deque()
        self._tasks: dict[int, Task] = {}  # pending or running, by id
        self._running: dict[int, tuple[Task, Any]] = {}  # id -> (task, engine handle)
        self._timed: dict[int, tuple[Task, Any]] = {}  # the running ones with a timeout
        self._cancel_seen = False  # wake() was called: look for cancelled running tasks
        self._done: collections.deque[tuple[int, Any]] = collections.deque()
        # (as Dispatcher's)
        self._lazy: weakref.WeakSet[IMapIterator] = weakref.WeakSet()
        self._unconsumed: set[IMapIterator] = set()
        self._woken = False
        self._shared = _Shared(engine)
        self._fetch_together = bool(getattr(engine, "fetch_together", False))
        self._fetch_seconds = 0.0  # how long the last fetch of outcomes took
        # When the last tasks ended (see FETCH_HOLD_MAX).
        self._ends: collections.deque[float] = collections.deque(maxlen=ENDS_KEPT)
        # id(a MapResult) -> (it, its chunks that ended well, not fetched yet): they stay
        # in _tasks until fetched (see PARKED_MAX).
        self._parked: dict[int, tuple[MapResult, list[tuple[Task, Any]]]] = {}
        self._thread = threading.Thread(
            target=self._run, name=f"proctor-{engine.name}-dispatcher-{id(self):x}", daemon=True
        )
        self._thread.start()
        _dispatcher._live.add(self)  # type: ignore[arg-type]  # stopped at exit as pools are
        _dispatcher._register_exit_hook()

    # -- the API of Dispatcher (any thread) -------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    def chunks_per_worker_for(self, function: str, length: int, workers: int) -> int:
        """How many chunks per worker ``map``'s default sizes cut ``length`` items of
        ``function`` into: CHUNKS_PER_WORKER, or fewer (down to one) when the
        function's items measured so far say that chunks would each hold less than
        MIN_CHUNK_SECONDS of work. Unknown functions get CHUNKS_PER_WORKER."""
        measured = self._item_seconds.get(function)  # written by the dispatcher thread
        if measured is None:
            return self.chunks_per_worker
        chunks = int(length * measured[0] / (max(1, workers) * MIN_CHUNK_SECONDS))
        return max(1, min(self.chunks_per_worker, chunks))

    def submit(self, tasks: list[Task], lazy: bool = False) -> None:
        """Queue ``tasks`` for the engine.

        Raises:
            ValueError: the pool is closed (lazy chunks are still taken) or terminated.
            PicklingError: a task's arguments hold a queue, lock or shared memory.
        """
        for task in tasks:
            buffers = task.buffers
            if buffers and type(buffers[0]) is Descriptors:
                raise PicklingError(
                    f"the arguments of {task.function} hold {buffers[0]!r:.80}: queues, "
                    f"locks and shared memory are this machine's, and cannot travel to a "
                    f"{self.engine.name} worker. Pass data, or use a local pool."
                )
        with self._lock:
            if self._stopped or (self.state != RUNNING and not (lazy and self.state == CLOSED)):
                raise ValueError(f"the pool is {self.state}: it takes no new tasks")
            for task in tasks:
                self._tasks[task.id] = task
            self._pending.extend(tasks)
            self._wake_locked()

    def pending_results(self) -> list[TaskResult]:
        with self._lock:
            return [task.result for task in self._pending]

    def add_lazy(self, iterator: IMapIterator) -> None:
        with self._lock:
            self._lazy.add(iterator)
            self._unconsumed.add(iterator)

    def lazy_consumed(self, iterator: IMapIterator) -> None:
        with self._lock:
            self._unconsumed.discard(iterator)

    def lazy_done(self, iterator: IMapIterator) -> None:
        with self._lock:
            self._lazy.discard(iterator)
            self._unconsumed.discard(iterator)
            self._wake_locked()

    def wake(self) -> None:
        """Make the dispatcher look again (a result was cancelled)."""
        with self._lock:
            self._cancel_seen = True
            self._wake_locked()

    def _wake_locked(self) -> None:
        self._woken = True
        self._lock.notify()

    def close(self) -> None:
        with self._lock:
            if self.state == RUNNING:
                self.state = CLOSED
        _dispatcher.finish_at_exit(self)  # type: ignore[arg-type]

    def join(self, timeout: float | None, wait_for_it: bool = True, read_rest: bool = True) -> None:
        """Run what is left, then end the thread (after ``close()``).

        Raises:
            ValueError: while the pool is running.
            ProcessTimeoutError: the work is not done within ``timeout``.
        """
        if self.state == RUNNING:
            raise ValueError("the pool is still running: call close() or terminate() first")
        _dispatcher.run_rest_and_join(self, timeout, wait_for_it, read_rest)

    def terminate(self, wait_for_it: bool = True, kill: bool = False) -> None:
        """Stop every task now; unfinished results fail with ``PoolTerminatedError``."""
        with self._lock:
            self.state = TERMINATING
            self._wake_locked()
            lazy = list(self._lazy)
        for iterator in lazy:
            iterator._abort(
                PoolTerminatedError("the pool was terminated before this input was read")
            )
        if wait_for_it and threading.current_thread() is not self._thread:
            self._ended.wait()

    # -- the engine's callback (any thread) ---------------------------------------------

    def _finished(self, task_id: int, handle: Any) -> None:
        with self._lock:
            if self._stopped:
                return  # (a call the engine ends as the pool closes: nobody takes it)
            self._done.append((task_id, handle))
            self._ends.append(time.monotonic())
            self._wake_locked()

    # -- the dispatcher thread -----------------------------------------------------------

    def _run(self) -> None:
        failure: BaseException | None = None
        try:
            self._loop()
        except BaseException as exc:  # a bug here must not leave callers waiting for ever
            failure = exc
            _logger.get_logger().exception(f"proctor {self.engine.name} dispatcher failed")
        finally:
            with self._lock:
                self._stopped = True
                running = list(self._running.values())
                self._running.clear()
                self._timed.clear()
                tasks = list(self._tasks.values())
                self._tasks.clear()
                self._pending.clear()
                self._parked.clear()
            for _, handle in running:
                # terminate(): cancelled, not ended: a cluster's workers are shared, and
                # a running task's result is dropped (docs/scale-out.md).
                self._stop_quietly(handle, end_worker=False)
            for task in tasks:
                if failure is None:
                    error: BaseException = PoolTerminatedError(
                        "the pool was terminated before this task completed"
                    )
                else:
                    error = RuntimeError(f"the pool's dispatcher failed: {failure!r}")
                    error.__cause__ = failure
                self._fail(task, error)
            self._shared.clear()
            try:
                self.engine.close()
            except Exception:
                _logger.get_logger().exception(f"the {self.engine.name} engine did not close")
            finally:
                self._ended.set()  # (as Dispatcher._ended)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._woken:
                    nearest = self._nearest_deadline()
                    wait = None if nearest is None else nearest - time.monotonic()
                    if wait is not None and wait <= 0:
                        break
                    self._lock.wait(wait)
                self._woken = False
                done = list(self._done)
                self._done.clear()
                state = self.state
            if state == TERMINATING:
                return
            if done and self._fetch_together:
                done = self._coalesce(done)
                if self.state == TERMINATING:  # while it held them: fetched no more
                    return
            if done or self._parked:
                self._take_all(done)
                done = []  # the handles go now, not at the next wake-up (Dask frees a value then)
            self._stop_expired()
            self._send()
            with self._lock:
                if self._joining and not self._tasks and not self._lazy and not self._done:
                    return

    def _coalesce(self, done: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        """``done`` and the tasks that end while it waits to be fetched (see
        FETCH_HOLD_MAX): none, unless one of them is to be fetched now (not a map's
        chunk that ended well, which waits for the map's others) and other tasks run
        that lately ended faster than a fetch takes."""
        hold = min(self._fetch_seconds, FETCH_HOLD_MAX)
        with self._lock:
            ends = self._ends
            if (
                self._pending
                or len(self._running) <= len(done)
                or len(ends) < ENDS_KEPT
                or ends[-1] - ends[0] >= hold * (ENDS_KEPT - 1)
            ):
                return done
            if all(
                type(self._running[task_id][0].result) is MapResult
                and self.engine.succeeded(handle)
                for task_id, handle in done
                if task_id in self._running
            ):
                return done
            deadline = time.monotonic() + hold
            while self.state != TERMINATING and not self._pending:
                if len(self._running) <= len(done) + len(self._done):
                    break  # all the running tasks have ended
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            done += self._done
            self._done.clear()
        return done

    def _nearest_deadline(self) -> float | None:
        # Only tasks with a timeout, at most one per slot: not every running task.
        deadlines = [task.deadline for task, _ in self._timed.values() if task.deadline]
        return min(deadlines) if deadlines else None

    def _send(self) -> None:
        """Submit the pending tasks, in one call to the engine: all of them, except that
        a task with a timeout waits for a free slot (its clock starts when submitted)."""
        batch: list[tuple[Task, tuple[tuple[Any, ...], tuple[Any, ...]]]] = []
        while True:
            with self._lock:
                if not self._pending:
                    break
                task = self._pending[0]
                if task.timeout is not None and len(self._running) + len(batch) >= self.processes:
                    break
                self._pending.popleft()
            if not task.claim():
                with self._lock:
                    self._tasks.pop(task.id, None)
                continue
            try:
                batch.append((task, self._arguments(task)))
            except Exception as exc:  # shipping a shared buffer failed
                self._not_sent(task, exc)
        if not batch:
            return
        try:
            handles = self.engine.submit(
                run_task,
                [call for _, call in batch],
                [self._callback(task.id) for task, _ in batch],
            )
        except Exception as exc:  # the engine refused them (the cluster is gone...)
            for task, _ in batch:
                self._not_sent(task, exc)
            return
        now = time.monotonic()
        for (task, _), handle in zip(batch, handles, strict=True):
            task.sent_at = now
            if task.timeout is not None:
                task.deadline = now + task.timeout
            task.frame = b""  # the parts are the engine's now
            task.buffers = None
            with self._lock:
                self._running[task.id] = (task, handle)
                if task.timeout is not None:
                    self._timed[task.id] = (task, handle)

    def _not_sent(self, task: Task, exc: Exception) -> None:
        with self._lock:
            self._tasks.pop(task.id, None)
        error = WorkerLostError(
            f"{task.function}({task.describe()}) could not be sent to the "
            f"{self.engine.name} cluster: {exc!r}",
            None,
            None,
            task.function,
            task.describe(),
        )
        error.__cause__ = exc
        self._fail(task, error)

    def _callback(self, task_id: int) -> Callable[[Any], None]:
        return lambda handle: self._finished(task_id, handle)

    def _arguments(self, task: Task) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """``run_task``'s arguments for ``task``: (parts, level), and apart from them
        the handles of the buffers shipped once (``Engine.submit``'s ``shared``)."""
        parts: Any = task.frame  # RemoteCodec's: (id, kind, function pickle, payload)
        task_id, kind, func_bytes, payload = parts
        function: Any = func_bytes
        shared: list[Any] = []
        positions: list[Any] = []
        for buffer in task.buffers or ():
            view = buffer.raw() if hasattr(buffer, "raw") else memoryview(buffer)
            if view.nbytes >= SHARE_THRESHOLD:
                positions.append(len(shared))
                shared.append(self._shared.handle(buffer))
            else:
                positions.append(bytes(view))
        if len(func_bytes) >= SHARE_THRESHOLD:  # a function holding a large array
            shared.append(self._shared.handle(func_bytes))
            function = len(shared) - 1
        return ((task_id, kind, function, payload, positions), self._level()), tuple(shared)

    @staticmethod
    def _level() -> int:
        return logging.getLogger().getEffectiveLevel()

    def _take_all(self, done: list[tuple[int, Any]]) -> None:
        """Deliver the outcomes of the tasks that ``done`` says have ended (or hold a
        map's, see PARKED_MAX), and of the held ones whose time has come."""
        taken = []
        parked = []
        with self._lock:
            for task_id, handle in done:
                entry = self._running.pop(task_id, None)
                self._timed.pop(task_id, None)
                if entry is None:
                    continue  # stopped earlier (a timeout, a cancellation): failed already
                task = entry[0]
                if task.stopped:
                    self._tasks.pop(task_id, None)
                elif (
                    self._fetch_together
                    and type(task.result) is MapResult
                    and self.engine.succeeded(handle)
                ):
                    parked.append((task, handle))  # stays in _tasks until fetched
                else:
                    self._tasks.pop(task_id, None)
                    taken.append((task, handle))
        for task, handle in parked:
            if task.progress is not None:  # its items are done: counted now, not when fetched
                task.progress.finished(task)
                task.progress = None
            held = self._parked.setdefault(id(task.result), (task.result, []))  # type: ignore[arg-type]
            held[1].append((task, handle))
        self._deliver(taken + self._unpark())
        # A chunk's error may have completed a map early: its held chunks go now.
        if taken and self._parked:
            self._deliver(self._unpark())

    def _unpark(self) -> list[tuple[Task, Any]]:
        """The held chunks to fetch now: a map's once none of its chunks is left to
        end (or it completed early: a chunk's error, cancel()), or PARKED_MAX of them."""
        out: list[tuple[Task, Any]] = []
        for key, (result, held) in list(self._parked.items()):
            if result._finished or len(held) >= min(result._chunks_left, PARKED_MAX):
                del self._parked[key]
                out += held
        if out:
            with self._lock:
                for task, _ in out:
                    self._tasks.pop(task.id, None)
        return out

    def _deliver(self, taken: list[tuple[Task, Any]]) -> None:
        if not taken:
            return
        began = time.monotonic()
        try:
            outcomes = self.engine.outcomes([handle for _, handle in taken])
            self._fetch_seconds = time.monotonic() - began
        except Exception as exc:  # the engine could not answer: these tasks fail, not the pool
            outcomes = [(False, exc, None)] * len(taken)
        for (task, _), (ok, value, lost) in zip(taken, outcomes, strict=True):
            self._take(task, ok, value, lost)

    def _take(self, task: Task, ok: bool, value: Any, lost: str | None) -> None:
        if not ok:
            if lost is not None:
                error = WorkerLostError(
                    f"{task.function}({task.describe()}) was lost with its "
                    f"{self.engine.name} worker: {lost}",
                    None,
                    None,
                    task.function,
                    task.describe(),
                )
                error.__cause__ = value
                value = error
            elif isinstance(value, Exception) and not isinstance(value, PicklingError):
                # The engine's own failure (it could not run or return the task).
                error = WorkerLostError(
                    f"{task.function}({task.describe()}) failed on the {self.engine.name} "
                    f"cluster: {value!r}",
                    None,
                    None,
                    task.function,
                    task.describe(),
                )
                error.__cause__ = value
                value = error
            self._fail(task, value)
            return
        frame, buffers, records, dropped = value
        _emit(records, dropped)
        _, outcome, seconds, _ = _worker.decode_result(frame, buffers=buffers or None)
        observe = task.result._observe
        if observe is not None:
            observe(seconds, task.size)
        self._time_items(task.function, seconds, task.size)
        if outcome.exception is not None:
            if outcome.done:  # a chunk's item raised: the values before it come too
                task.result._deliver_partial(task.index, outcome.done, outcome.exception)
            else:
                task.result._deliver(task.index, False, outcome.exception)
        elif outcome.value_error is not None:
            from .._core._errors import MaybeEncodingError

            call = f"{task.function}({task.describe()})"
            text = (
                f"{call} ran on a {self.engine.name} worker, but its result could not be "
                f"{'rebuilt here' if outcome.rebuild_failed else 'sent back'}: "
                f"{outcome.value_error}"
            )
            task.result._deliver(
                task.index,
                False,
                MaybeEncodingError(
                    text,
                    outcome.value_error,
                    f"the result of {call}",
                    pickling_failed=not outcome.rebuild_failed,
                ),
            )
        else:
            if task.progress is not None:
                task.progress.finished(task)
            task.result._deliver(task.index, True, outcome.value)

    def _time_items(self, function: str, seconds: float, items: int) -> None:
        """Remember how long ``function``'s items take (see chunks_per_worker_for).

        A chunk's seconds include what running any chunk costs on the worker (its
        call, loading the function), which a chunk of one item charges to that item
        alone: the figure kept is the one measured on the largest chunk lately, and
        a chunk of less than half as many items does not replace it.
        """
        kept = self._item_seconds
        items = max(1, items)
        before = kept.get(function)
        if before is None or items * 2 >= before[1]:
            kept[function] = (seconds / items, items)
        kept.move_to_end(function)  # the least recently measured go first
        if len(kept) > TIMED_FUNCTIONS_KEPT:
            kept.popitem(last=False)

    def _stop_expired(self) -> None:
        now = time.monotonic()
        with self._lock:
            # Every running task is looked at only after a wake() (a result was
            # cancelled), not at each completion: thousands of tasks may be running.
            look_at = self._running if self._cancel_seen else self._timed
            self._cancel_seen = False
            expired = [
                (task, handle)
                for task, handle in look_at.values()
                if not task.stopped
                and (task.cancelled() or (task.deadline is not None and task.deadline <= now))
            ]
            for task, _ in expired:
                self._timed.pop(task.id, None)
                self._running.pop(task.id, None)
                self._tasks.pop(task.id, None)
        for task, handle in expired:
            task.stopped = True
            self._stop_quietly(handle, end_worker=True)
            if task.cancelled():
                continue
            self._fail(
                task,
                TaskTimeoutError(
                    f"{task.function}({task.describe()}) ran past its timeout of "
                    f"{task.timeout:g} s on the {self.engine.name} cluster and was stopped "
                    "(its worker process was ended; the engine starts another)",
                    None,
                    task.timeout or 0.0,
                    task.function,
                    task.describe(),
                ),
            )

    def _stop_quietly(self, handle: Any, end_worker: bool) -> None:
        try:
            self.engine.stop(handle, end_worker)
        except Exception:
            _logger.get_logger().debug("stopping a task on the engine failed", exc_info=True)

    def _fail(self, task: Task, error: BaseException) -> None:
        if task.progress is not None:
            task.progress.finished(task)
        task.result._deliver(task.index, False, error)


def _emit(records: list[dict[str, Any]], dropped: int) -> None:
    """Hand a task's log records to this process's handlers for their loggers."""
    for fields in records:
        logger = logging.getLogger(fields["name"])
        if logger.isEnabledFor(fields["levelno"]):
            logger.handle(logging.makeLogRecord(fields))
    if dropped:
        _logger.get_logger().warning(
            f"a task logged more than {MAX_RECORDS} records; {dropped} were dropped"
        )
