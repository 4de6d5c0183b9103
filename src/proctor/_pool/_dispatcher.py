"""A pool's workers and the one thread that hands them tasks and takes their results.

::

    submitters (any thread)          dispatcher thread                     workers
    ───────────────────────          ─────────────────                     ───────
    submit(task) ─▶ pending ─▶ wake  _assign: pending ─▶ workers' queues ──▶ task frames
    result.cancel() ─────────▶ wake  wait([wake, conns, sentinels],
                                          timeout=the nearest task deadline)
                                       conn ready:     result frame ◀───── outcome
                                                       (its task's log records
                                                        handled first)
                                                       ─▶ result._deliver
                                       sentinel ready: drain conn, fail the task
                                                       it held (WorkerLostError),
                                                       start a replacement
                                     _stop_expired: a held task past its deadline
                                       or cancelled ─▶ fail it, SIGKILL its worker
                                       (whose sentinel then starts a replacement)

A worker holds a short queue of tasks (chunks): enough of them, judging by how long
its tasks take, that it never waits a round trip for the next one, and a single one
when tasks are long (so that none waits behind a long one while another worker is
idle). It runs them in order and sends each result before it reads the next task, so
only the oldest task it holds may have started: when it dies, that one fails
(``WorkerLostError``) and the others are sent again to other workers, never run twice.
The oldest one too is sent again if the worker's count of the tasks it started (a word
of shared memory, ``_worker.StartCounts``) says it never began it: a task written to a
worker killed while idle, before its sentinel was seen.
With ``task_concurrency`` N, coroutine tasks run up to N at once, so the first N held
ones (up to a plain function's) may have started (``_task.may_have_started``).
A task with a timeout is only sent to a worker that holds nothing, and nothing is sent
behind it, so that its clock starts when it starts. A worker is sent nothing until it
reports that its initializer returned (task 0); an initializer that raises breaks the
pool. See docs/design.md, "Pools".
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import threading
import time
import weakref

from .._connections._pipe import streaming_pipe
from .._connections._wait import wait
from .._core._errors import (
    InitializerError,
    MaybeEncodingError,
    PoolTerminatedError,
    TaskTimeoutError,
    WorkerLostError,
)
from .._logging import _logger
from . import _lifecycle, _worker
from ._lifecycle import BROKEN, CLOSED, RUNNING, TERMINATING, run_rest_and_join
from ._task import Task, WorkerState, may_have_started
from ._worker import function_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .._start._process import Process
    from ._results import IMapIterator
    from ._task import TaskResult as TaskResult


# Task, TaskResult and the life-cycle functions are named here too: _remote's
# RemoteDispatcher takes them from this module.
__all__ = ("Dispatcher", "Task", "finish_at_exit", "run_rest_and_join")

#: Every live dispatcher (``_lifecycle.live``).
_live: weakref.WeakSet[Dispatcher] = _lifecycle.live
_register_exit_hook = _lifecycle.register_exit_hook


def finish_at_exit(dispatcher: Dispatcher) -> None:
    """Have the interpreter's exit wait until ``dispatcher``'s work is done."""
    _lifecycle.finish_at_exit(dispatcher)


#: How long a worker gets to exit after its stop message or SIGTERM before SIGKILL:
#: an idle worker exits at once; this only bounds one that ignores both.
EXIT_GRACE = 5.0
#: How long reading what a dead worker sent may take: its bytes are already in the
#: kernel, so this only bounds a frame it was killed in the middle of writing.
DRAIN_TIMEOUT = 1.0
#: Tasks that take this long or more are sent one at a time (a worker holds one):
#: a round trip through the dispatcher (~0.1 ms) is then under 1% of a task, and no
#: task waits in a busy worker's queue while another worker is free.
LONG_TASK = 0.02
#: Below LONG_TASK, a worker holds enough tasks for about this many seconds of work
#: beyond the one it runs, so it never idles waiting for the dispatcher...
QUEUED_WORK = 0.002
#: ...but at most this many tasks...
MAX_HELD = 32
#: ...and at most this many bytes of task frames queued behind the one it runs: the
#: dispatcher's send must never block on a busy worker's full pipe (it would stop
#: reading results, and a worker blocked on sending one would never read).
MAX_QUEUED_BYTES = 16 * 1024
#: Tasks waiting in the pool's queue past which a submitting thread lets the dispatcher
#: thread have the interpreter (see ``Dispatcher.submit``). A thread that submits in a
#: loop holds the GIL for the interpreter's switch interval (5 ms) at a time, while the
#: workers run out of work and their results wait for a dispatcher that cannot run; a
#: submit costs ~4 us, so 64 of them are ~0.25 ms: about what two workers' 64 held
#: tasks (MAX_HELD each) of a no-op take to run.
YIELD_BACKLOG = 64
#: Weight of the newest task's duration in the running average that sizes queues.
_EWMA_WEIGHT = 0.2
#: Workers in a row that die before their initializer reports break the pool: the
#: initializer kills them, or they cannot start at all, and a replacement would too.
#: (One such death may be an outside kill; three in a row with none ready is not.)
EARLY_DEATHS_BREAK = 3


def _unsendable(task: Task, worker: WorkerState, outcome: Any) -> MaybeEncodingError:
    """The error of a task whose value could not be sent back, or not rebuilt here."""
    pid = worker.process.pid
    call = f"{task.function}({task.describe()})"
    if outcome.rebuild_failed:
        text = (
            f"{call} ran in pool worker pid {pid}, and its result came back but "
            f"could not be rebuilt here: {outcome.value_error}. Return objects "
            "whose classes this process can import."
        )
    else:
        text = (
            f"{call} ran in pool worker pid {pid}, but its result could not be "
            f"sent back: {outcome.value_error}. Return something picklable."
        )
    return MaybeEncodingError(
        text,
        outcome.value_error,
        f"the result of {call}",
        pickling_failed=not outcome.rebuild_failed,
    )


def _exit_text(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}({code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Dispatcher:
    """The pool's state and its dispatcher thread; ``Pool`` is the API in front of it."""

    def __init__(
        self,
        process_class: type[Process],
        processes: int,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        maxtasksperchild: int | None,
        codec: Any = None,
        pipe: Callable[[], tuple[Any, Any]] = streaming_pipe,
        max_memory_per_child: int | None = None,
        concurrency: int = 1,
        on_demand: bool = False,
    ) -> None:
        #: How tasks and results travel: pickled frames (processes), or the objects
        #: themselves (``ThreadPool``'s ``_threads.ObjectCodec``, over ``pipe``).
        self.codec = _worker.PickledCodec() if codec is None else codec
        self._pipe = pipe
        self.processes = processes
        self._process_class = process_class
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasks = maxtasksperchild
        self._max_memory = max_memory_per_child
        #: Coroutine tasks a worker may run at once (task_concurrency).
        self.concurrency = concurrency
        self._task_seconds: float | None = None  # running average of tasks' durations
        #: The most tasks a worker may hold; 1 turns pipelining off, for callers that
        #: meter what is in flight themselves (joblib's backend: a task that waited
        #: behind a slow one would not come back first with return_as="generator_unordered").
        self.max_held = MAX_HELD
        #: The most chunks per worker ``map``'s default sizes cut: _pool.MAX_CHUNKS_PER_WORKER
        #: (a literal here: _pool imports this module).
        self.chunks_per_worker = 64
        self._early_deaths = 0  # workers in a row that died before they were ready
        self._lock = threading.Lock()
        self.state = RUNNING
        self._joining = False
        self._kill = False  # terminate() with SIGKILL rather than SIGTERM
        self._stopped = False  # the dispatcher thread has left its loop
        #: Set as the last thing the dispatcher thread does. Callers wait on it, not on
        #: Thread.join(): on Python <= 3.12 a KeyboardInterrupt in join() can mark a
        #: thread stopped while it still runs (gh-90882), and a pool joined again (at
        #: the exit) then closed the wake-up pipe under its running dispatcher.
        self._ended = threading.Event()
        self._pending: collections.deque[Task] = collections.deque()
        self._tasks: dict[int, Task] = {}  # pending or held, by id
        #: Iterators with unread input, held weakly once their consumer has begun to
        #: take results: one it then dropped (a loop left with break) is collected,
        #: its input read no more (not at join() either), and with it the pool it
        #: holds; its chunks' results are dropped (their tasks hold it weakly too:
        #: _results.ChunkSink). One never iterated is also in _unconsumed, held until
        #: its input ends: close(); join() runs all of it, as the stdlib's does.
        self._lazy: weakref.WeakSet[IMapIterator] = weakref.WeakSet()
        self._unconsumed: set[IMapIterator] = set()
        self._broken: Callable[[], BaseException] | None = None  # the initializer failed
        self._workers: list[WorkerState] = []
        self._ids = itertools.count(1)  # next() on it is atomic: no lock
        #: The next task id: the counter's own method (a C call, no Python frame).
        self.next_id = self._ids.__next__
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_open = True
        self._wake_pending = False  # a wake-up byte is unread: no need for another
        #: The dispatcher's last turn left tasks in the queue that no worker could take
        #: then: its next event (a result, a worker's end, a cancel) looks again, and a
        #: task queued behind them could not go sooner, so a submit need not wake it.
        self._backlogged = False
        self._backlogged_at = 0.0  # time.monotonic() of the turn that left the backlog
        self._thread_id: int | None = None  # the dispatcher thread's ident
        #: Workers start as tasks need them, up to ``processes`` (an executor's, as
        #: the stdlib's executor starts its own): one starts with the pool, so that
        #: what cannot start (an initializer that cannot be sent) fails here; then
        #: a turn that finds more unfinished tasks than workers starts workers for
        #: them (_start_for_demand). True while the pool may still grow.
        self._on_demand = on_demand
        self._may_grow = on_demand and processes > 1
        # Imported now, in the thread that creates the pool, not lazily later (the
        # first task of a __main__ function needs it): a fork replacement that the
        # dispatcher thread starts while another thread imports a module inherits it
        # half imported, with its lock held by a thread the child does not have.
        from .._core import _pickler  # noqa: F401

        #: Where process workers count the tasks they start (a thread worker ends
        #: only of the task it runs: it needs none).
        self._start_counts: _worker.StartCounts | None = None
        try:
            if not self.codec.in_process:
                self._start_counts = _worker.StartCounts(processes)
            for _ in range(1 if on_demand else processes):
                self._workers.append(self._start_worker())
        except BaseException:
            self._stop_workers(terminate=True)
            self._close_counts()
            self._close_wake()
            raise
        self._thread = threading.Thread(
            target=self._run, name=f"proctor-pool-dispatcher-{id(self):x}", daemon=True
        )
        self._thread.start()
        self._thread_id = self._thread.ident
        _live.add(self)
        _register_exit_hook()

    # -- submitting (any thread) ----------------------------------------------------

    def chunks_per_worker_for(self, function: str, length: int, workers: int) -> int:
        """How many chunks per worker ``map``'s default sizes cut: the same for every
        call (a local chunk costs tens of microseconds; see _remote's, which adapts)."""
        return self.chunks_per_worker

    def submit(self, tasks: list[Task], lazy: bool = False) -> None:
        """Queue ``tasks`` for the workers.

        Raises:
            ValueError: when the pool is closed (a lazy iterator's chunks are still
                taken after ``close()``) or terminated.
        """
        # acquire()/release() rather than a with block: once per apply_async, and
        # a with block's __enter__/__exit__ calls cost twice as much (CPython 3.11).
        self._lock.acquire()
        try:
            broken = self._broken
            if broken is None and (
                self._stopped or (self.state != RUNNING and not (lazy and self.state == CLOSED))
            ):
                if self._stopped:
                    raise ValueError(
                        "the pool's dispatcher has ended (its tasks failed with the error "
                        "that ended it): it takes no new tasks"
                    )
                raise ValueError(f"the pool is {self.state}: it takes no new tasks")
            if broken is None:
                for task in tasks:
                    self._tasks[task.id] = task
                pending = self._pending
                pending.extend(tasks)
                # (the call only when a byte is to be written; a backlogged pool
                # that may grow starts a worker for it)
                if not self._wake_pending and (not self._backlogged or self._may_grow):
                    self._wake_locked()
                if len(pending) < YIELD_BACKLOG:
                    return
                if self._backlogged:
                    # Every worker was full at the dispatcher's last turn: it has
                    # something to do once a result has come, about a task's
                    # duration (over the workers) after that turn.
                    seconds = self._task_seconds
                    if seconds is None or (
                        time.monotonic() - self._backlogged_at < seconds / self.processes
                    ):
                        return
        finally:
            self._lock.release()
        if broken is None:
            # A backlog is building while this thread keeps the interpreter: let the
            # dispatcher thread, woken by results or by the wake-up byte, take its
            # turn now (a sleep releases the GIL, and a thread waiting for it takes
            # it) rather than after the switch interval, so that the workers get
            # tasks, and their results are read, while the caller submits. A real
            # sleep, not sleep(0): on Python 3.10 that is a zero select() that keeps
            # the CPU, so a dispatcher woken on this core never ran (on a loaded
            # machine, 1,280 submits went by without one turn); a microsecond sleeps
            # for the timer slack (~50 us) on every version, as sleep(0) does from
            # 3.11. Not while the queue waits on busy workers and no result is due
            # yet: the sleep would be for nothing.
            if threading.get_ident() != self._thread_id:
                time.sleep(1e-6)
            return
        # A broken pool fails every call with the initializer's error, as its result.
        for task in tasks:
            task.result._deliver(task.index, False, broken())

    def pending_results(self) -> list[TaskResult]:
        """The results of the tasks not yet sent to a worker, in queue order."""
        with self._lock:
            return [task.result for task in self._pending]

    def add_lazy(self, iterator: IMapIterator) -> None:
        with self._lock:
            self._lazy.add(iterator)
            self._unconsumed.add(iterator)

    def lazy_consumed(self, iterator: IMapIterator) -> None:
        """Its consumer has begun to take results: it holds it from now on."""
        with self._lock:
            self._unconsumed.discard(iterator)

    def lazy_done(self, iterator: IMapIterator) -> None:
        with self._lock:
            self._lazy.discard(iterator)
            self._unconsumed.discard(iterator)

    def wake(self) -> None:
        """Make the dispatcher look again (a result was cancelled)."""
        with self._lock:
            self._wake_locked()

    def _wake_locked(self) -> None:
        # One unread byte is enough to wake the dispatcher: a burst of submits costs
        # one write, not one each.
        if self._wake_open and not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:  # full: the dispatcher has wake-ups to read already
                pass

    # -- life cycle (caller threads) --------------------------------------------------

    def close(self) -> None:
        """Take no new calls; the work submitted is done, before the interpreter's
        exit too (see ``finish_at_exit``)."""
        with self._lock:
            if self.state == RUNNING:
                self.state = CLOSED
        _lifecycle.finish_at_exit(self)

    def join(self, timeout: float | None, wait_for_it: bool = True, read_rest: bool = True) -> None:
        """Run what is left, stop the workers, end the thread (after ``close()``).

        With ``wait_for_it`` false, return at once: the thread ends by itself once
        the work is done (an executor's ``shutdown(wait=False)``).

        Raises:
            ValueError: while the pool is running (and not broken).
            ProcessTimeoutError: when the work is not done within ``timeout``.
        """
        if self.state == RUNNING and self._broken is None:
            raise ValueError("the pool is still running: call close() or terminate() first")
        # (The dispatcher thread closes its wake-up pipe itself as it ends.)
        run_rest_and_join(self, timeout, wait_for_it, read_rest)

    def terminate(self, wait_for_it: bool = True, kill: bool = False) -> None:
        """Stop every worker now (SIGTERM, or SIGKILL with ``kill``); unfinished
        results fail with ``PoolTerminatedError``."""
        with self._lock:
            self.state = TERMINATING
            self._kill = self._kill or kill
            self._wake_locked()
            # A broken pool's iterators were aborted with the initializer's error.
            lazy = list(self._lazy) if self._broken is None else []
        for iterator in lazy:
            iterator._abort(
                PoolTerminatedError("the pool was terminated before this input was read")
            )
        if wait_for_it and threading.current_thread() is not self._thread:
            self._ended.wait()  # (it closes its wake-up pipe itself as it ends)

    def _close_counts(self) -> None:
        """Close the workers' start counts once none is left to read them."""
        if self._start_counts is not None:
            self._start_counts.close()

    def _close_wake(self) -> None:
        with self._lock:
            if self._wake_open:
                self._wake_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    # -- the dispatcher thread ------------------------------------------------------

    def _run(self) -> None:
        failure: BaseException | None = None
        try:
            self._loop()
        except BaseException as exc:  # a bug here must not leave callers waiting for ever
            failure = exc
            _logger.get_logger().exception("proctor pool dispatcher failed")
        finally:
            with self._lock:
                self._stopped = True
            self._stop_workers(terminate=self.state in (TERMINATING, BROKEN) or failure is not None)

            def error() -> BaseException:
                if self._broken is not None:
                    return self._broken()
                if failure is None:
                    return PoolTerminatedError("the pool was terminated before this task completed")
                exc = RuntimeError(f"the pool's dispatcher failed: {failure!r}")
                exc.__cause__ = failure
                return exc

            self._fail_all(error)
            # Nothing waits on the wake-up pipe any more, and nobody may be left to close
            # it: an executor's shutdown(wait=False), a pool that was garbage-collected.
            # Only this thread closes it once the thread runs (see _ended).
            self._close_counts()
            self._close_wake()
            self._ended.set()

    def _loop(self) -> None:
        while True:
            self._assign()
            with self._lock:
                if self.state in (TERMINATING, BROKEN):
                    return
                if self._joining and not self._tasks and not self._lazy:
                    return
            by_fd: dict[int, WorkerState] = {}
            by_conn: dict[int, WorkerState] = {}
            objects: list[Any] = [self._wake_r]
            nearest: float | None = None  # the nearest deadline of a held task
            for worker in self._workers:
                if worker.conn_open:
                    objects.append(worker.conn)
                    by_conn[id(worker.conn)] = worker
                by_fd[worker.process.sentinel] = worker
                objects.append(worker.process.sentinel)
                if worker.held and not worker.killed:
                    # No task in a local of this frame: it would be kept alive (and its
                    # arguments, its result) while the loop waits (CPython's
                    # test_release_task_refs checks).
                    for deadline in [task.deadline for task in self._running(worker)]:
                        if deadline is not None:
                            nearest = deadline if nearest is None else min(nearest, deadline)
            timeout = None if nearest is None else max(nearest - time.monotonic(), 0.0)
            ready = wait(objects, timeout)
            ended = []
            for obj in ready:
                if isinstance(obj, int):
                    if obj == self._wake_r:
                        self._drain_wake()
                    else:
                        ended.append(by_fd[obj])
                else:
                    self._receive_ready(by_conn[id(obj)])
            # Results that came are taken first: a task that finished at its deadline
            # is not killed, and a cancelled one whose result came is not either.
            self._stop_expired()
            for worker in ended:
                self._worker_ended(worker)

    def _receive_ready(self, worker: WorkerState) -> None:
        """Take every result ``worker`` has sent so far (at least one frame's worth)."""
        while self._receive(worker) and worker.conn.poll(0):
            pass

    def _running(self, worker: WorkerState) -> list[Task]:
        """The tasks ``worker`` may have started: see ``may_have_started``."""
        held = worker.held
        if not held:
            return []
        if self.concurrency == 1:
            return [held[0]]
        return list(itertools.islice(held, may_have_started(held, self.concurrency)))

    def _stop_expired(self) -> None:
        """Kill the workers of running tasks that are past their deadline or cancelled."""
        now = time.monotonic()
        for worker in self._workers:
            if not worker.held or worker.killed:
                continue
            expired = [
                task
                for task in self._running(worker)
                if task.cancelled() or (task.deadline is not None and task.deadline <= now)
            ]
            if not expired:
                continue
            if worker.conn_open and worker.conn.poll(0):
                self._receive_ready(worker)  # their result came after all (or its end closed)
                expired = [task for task in expired if task in worker.held]
                if not expired:
                    continue
            # They stay held (marked stopped) until the worker's end is seen: the
            # tasks it may have started alongside them then fail, and those behind
            # are known not to have started, and are sent again.
            worker.killed = True
            worker.process.kill()
            for task in expired:
                self._stop(worker, task)

    def _stop(self, worker: WorkerState, task: Task) -> None:
        """Fail ``task``, whose worker was killed to stop it (a cancel or a timeout)."""
        task.stopped = True
        with self._lock:
            self._tasks.pop(task.id, None)
        if task.cancelled():
            return  # cancel() has completed the result already
        pid = worker.process.pid
        inputs = task.describe()
        assert task.timeout is not None  # a deadline comes from a timeout
        task.result._deliver(
            task.index,
            False,
            TaskTimeoutError(
                f"{task.function}({inputs}) ran longer than its timeout of "
                f"{task.timeout:g} s in pool worker pid {pid}: the worker was killed "
                "(SIGKILL) and is replaced, and the pool's other tasks go on. Give the "
                "task more time (timeout=/task_timeout=), or find out why it hangs.",
                pid,
                task.timeout,
                task.function,
                inputs,
            ),
        )

    def _drain_wake(self) -> None:
        with self._lock:
            self._wake_pending = False
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _depth(self) -> int:
        """How many tasks a worker may hold (see LONG_TASK, QUEUED_WORK, MAX_HELD)."""
        seconds = self._task_seconds
        # One task each: in a ThreadPool (an abandoned worker thread -- terminate(),
        # cancel() -- would still run what waits in its channel, after the pool sent
        # it again), while nothing is measured (the tasks may be long: one queued
        # behind a long one would wait while another worker may become free), and
        # for long tasks.
        if self.codec.in_process or seconds is None or seconds >= LONG_TASK:
            return 1
        return min(self.max_held, 2 + int(QUEUED_WORK / max(seconds, 1e-7)))

    def _assign(self) -> None:
        """Send pending tasks to workers, in queue order, up to ``_depth()`` each.

        Breadth first: every worker that holds nothing gets a task before any task
        is queued behind another -- unless there are tasks enough to fill every
        worker: each then takes its fill in one go (a call per worker, not per task).
        The tasks a worker gets in one turn go in one write (a batch frame): a write
        that wakes a worker costs more than the bytes it carries. The queue's lock is
        held while the tasks are taken (once a turn, not once a task: a lock costs
        thousands of instructions), not while they are written.
        """
        if self._may_grow:
            self._start_for_demand()
        if not self._pending:  # a look without the lock: a submit after it wakes us
            self._backlogged = False
            return
        workers = [
            worker
            for worker in self._workers
            if worker.ready
            and not worker.retiring
            and not worker.killed
            and worker.conn_open
            and not worker.send_failed
        ]
        # While a worker starts (the pool's start, a replacement), queue nothing: a
        # task queued in a busy worker could wait there while the new one is idle.
        depth = self._depth() if len(workers) == len(self._workers) else 1
        outgoing: dict[WorkerState, list[Task]] = {}
        now = time.monotonic()  # the tasks sent in one turn go at the same moment
        concurrency = self.concurrency
        # With task_concurrency N, the first N tasks a worker holds start at once.
        # Rounds below what every worker holds would take nothing.
        first = min((len(worker.held) for worker in workers), default=0)
        room = self._room(workers, depth)
        with self._lock:
            if depth > 1 and self._may_grow and len(self._tasks) > len(self._workers):
                # Tasks came after _start_for_demand counted them (a submit in
                # between): the next turn starts workers for them, and none may wait
                # behind a busy worker meanwhile (it would stay there, the new worker
                # idle: one task waiting for the other would wait for ever).
                depth = 1
                room = self._room(workers, depth)
            if len(self._pending) >= room:
                # Enough for every worker to take all it may: the rounds would hand
                # them out one each, in turns, ending where this does.
                for worker in workers:
                    taken: list[Task] = []
                    self._take(worker, depth, now, taken, room)
                    if taken:
                        outgoing[worker] = taken
            else:
                for level in range(first, depth + concurrency - 1):
                    if not self._take_round(workers, level, outgoing, depth, now):
                        break
            # What is left waits for an event of the workers' (a result, an end): no
            # task queued behind it could be sent before one (see _backlogged).
            self._backlogged = bool(self._pending)
            self._backlogged_at = now
        for worker, tasks in outgoing.items():
            if tasks:
                self._send(worker, tasks)

    def _room(self, workers: list[WorkerState], depth: int) -> int:
        """How many tasks ``workers`` may still take at ``depth``, at most."""
        concurrency = self.concurrency
        return sum(
            max((1 if worker.blocking else concurrency) + depth - 1 - len(worker.held), 0)
            for worker in workers
        )

    def _take_round(
        self,
        workers: list[WorkerState],
        level: int,
        outgoing: dict[WorkerState, list[Task]],
        depth: int,
        now: float,
    ) -> bool:
        """One more task for each worker that holds ``level`` tasks, into ``outgoing``;
        False when another round would take nothing (the queue is empty, or no worker
        took a task and none holds more than ``level``: a task submitted while every
        worker holds one is still queued behind one, or started beside it). Called
        with the queue's lock held."""
        taken = False
        for worker in workers:
            if worker.retiring:
                continue
            if len(worker.held) > level:
                taken = True  # it may take one in a later round
                continue
            tasks = outgoing.get(worker)
            if tasks is None:
                tasks = outgoing[worker] = []
            if self._take(worker, depth, now, tasks, 1):
                taken = True
            elif not self._pending:
                return False
        return taken

    def _take(
        self, worker: WorkerState, depth: int, now: float, out: list[Task], limit: int
    ) -> int:
        """Move up to ``limit`` pending tasks that ``worker`` may take now, in queue
        order, into its ``held`` and onto ``out``; return how many.

        A task sent to a worker that holds fewer than it runs at once (one; or
        task_concurrency while it holds only coroutine tasks) starts at once; one
        sent to a busier worker waits there, behind ``depth - 1`` at most. Called
        with the queue's lock held."""
        held = worker.held
        pending = self._pending
        maxtasks = self._maxtasks
        count = 0
        while count < limit and pending and not worker.retiring:
            slots = 1 if worker.blocking else self.concurrency
            queued = len(held) >= slots  # it would wait for a running task to end
            if queued and (
                len(held) >= slots + depth - 1
                or held[-1].timeout is not None
                or held[-1].buffers is not None
                or now - held[0].sent_at > LONG_TASK
            ):
                # Nothing waits behind a task whose clock runs from its sending, nor
                # behind one that has run long already (it may run much longer).
                break
            task = pending[0]
            if (held and task.buffers is not None) or (
                queued
                and (
                    task.timeout is not None
                    or worker.queued_bytes + len(task.frame) > MAX_QUEUED_BYTES
                )
            ):
                break  # it waits for a worker where it starts at once
            pending.popleft()
            if not (task.claimed or task.result._claim()):  # as task.claim(), a call less
                self._tasks.pop(task.id, None)  # cancelled before it was sent: dropped
                continue
            task.claimed = True
            if held:
                worker.queued_bytes += len(task.frame)
            if not task.coroutine:
                worker.blocking += 1
            held.append(task)
            task.sent_at = now
            if task.timeout is not None:
                task.deadline = now + task.timeout
            worker.sent += 1
            if maxtasks is not None and worker.sent >= maxtasks:
                worker.retiring = True
            out.append(task)
            count += 1
        return count

    def _send(self, worker: WorkerState, tasks: list[Task]) -> None:
        """Write ``tasks`` (the last ones ``worker`` took) to it, in one frame."""
        if len(tasks) == 1 or self.codec.in_process:  # a thread's channel takes objects
            frames = [task.frame for task in tasks]
        else:
            frames = [self.codec.encode_batch([task.frame for task in tasks])]
        try:
            for frame in frames:
                worker.conn.send_bytes(frame)
            if tasks[0].buffers is not None:  # such a task is sent alone
                worker.conn.send(tasks[0].buffers)
        except OSError:
            # The worker died or retired and reads no more: the tasks go back to the
            # front of the queue, in their order; the sentinel reports the end. Its
            # end stays open for reading: a result it sent before it exited (a
            # retiring worker's last, with the RETIRING flag) is still in the pipe,
            # and is taken, not reported lost.
            worker.send_failed = True
            for _ in tasks:
                task = worker.held.pop()
                worker.sent -= 1
                if not task.coroutine:
                    worker.blocking -= 1
                if worker.held:
                    worker.queued_bytes -= len(task.frame)
                task.deadline = None
            with self._lock:
                self._pending.extendleft(reversed(tasks))

    def _receive(self, worker: WorkerState, timeout: float | None = None) -> bool:
        """Take one result frame from ``worker``; False when its end has closed."""
        try:
            frame = worker.conn.recv_bytes(timeout=timeout)
        except (EOFError, OSError):  # ProtocolError (a frame cut short) is an OSError
            worker.conn_open = False
            return False
        try:
            task_id, what, payload, seconds, retiring = self.codec.decode(frame, worker.conn)
        except (EOFError, OSError):  # it died before its result's buffers came
            worker.conn_open = False
            return False
        if what == _worker.DECODED_PROGRESS:  # a running chunk's items done so far
            held = worker.held
            task = held[0] if held else None
            if task is not None and task.id == task_id and task.progress and not task.stopped:
                task.progress.reported(task, payload)
            return True
        if task_id == _worker.INITIALIZER:
            if what == _worker.DECODED_OUTCOME and payload.exception is not None:
                self._initializer_failed(worker, payload.exception)
            else:
                worker.ready = True
            return True
        if retiring:
            worker.retiring = worker.exiting = True  # what it still holds is sent again
        held = worker.held
        if held and held[0].id == task_id:
            task = held.popleft()
            if held:
                worker.queued_bytes -= len(held[0].frame)
        else:  # a coroutine task that ended before one started earlier
            task = self._take_held(worker, task_id)
            worker.queued_bytes -= len(task.frame)
        if not task.coroutine:
            worker.blocking -= 1
        task.frame = b""
        task.buffers = None
        average = self._task_seconds
        self._task_seconds = (
            seconds if average is None else average + _EWMA_WEIGHT * (seconds - average)
        )
        if task.stopped:
            return True  # it was failed or cancelled when its worker was killed
        # No lock: one dict operation is atomic, and only this thread removes tasks
        # (a lock taken and released costs as much as the rest of this branch).
        self._tasks.pop(task_id, None)
        if worker.logs is not None or worker.log_token is not None:
            # Records before results: every record the worker sent before this
            # result -- the task's -- is handled before the result is delivered
            # (bounded: LogStream.wait_handled; the stream's EOF ends it). A fork
            # worker's stream is looked up once it has sent records.
            records = _worker.records_sent(frame)
            if records:
                logs = worker.log_stream()
                if logs is not None and records > logs.handled:
                    logs.wait_handled(records)
        result = task.result
        observe = result._observe
        if observe is not None:
            observe(seconds, task.size)
        if what == _worker.DECODED_VALUE:
            value = payload
        elif payload.exception is not None:
            if payload.done:  # a chunk's item raised: the values before it come too
                result._deliver_partial(task.index, payload.done, payload.exception)
            else:
                result._deliver(task.index, False, payload.exception)
            return True
        elif payload.value_error is not None:
            result._deliver(task.index, False, _unsendable(task, worker, payload))
            return True
        else:
            value = payload.value
        if task.progress is not None:  # counted before the result completes the call
            task.progress.finished(task)
        result._deliver(task.index, True, value)
        return True

    def _take_held(self, worker: WorkerState, task_id: int) -> Task:
        for index, task in enumerate(worker.held):
            if task.id == task_id:
                del worker.held[index]
                return task
        # Cannot happen: a worker answers only the tasks it was sent, once each.
        raise RuntimeError(f"worker {worker.process.pid} sent the result of task {task_id}")

    def _initializer_failed(self, worker: WorkerState, exc: BaseException) -> None:
        """Break the pool: every task, now and later, fails with ``InitializerError``.

        Restarting the worker would run the same initializer again and fail again,
        for ever; the stdlib's pool does that.
        """
        name = function_name(self._initializer)
        pid = worker.process.pid

        def error() -> BaseException:
            new = InitializerError(
                f"the pool's initializer {name} raised {exc!r} in worker pid {pid}, so the "
                "pool is broken: every unfinished and later task fails with this error (the "
                "initializer's exception, with the worker's traceback, is its __cause__). "
                "Fix the initializer, then terminate() this pool and create a new one.",
                name,
                pid,
            )
            new.__cause__ = exc
            return new

        self._break(error)

    def _break(self, error: Callable[[], BaseException]) -> None:
        with self._lock:
            if self._broken is None:
                self._broken = error
                if self.state == RUNNING or self.state == CLOSED:
                    self.state = BROKEN

    def _workers_cannot_start(self, pid: int | None, exitcode: int | None) -> None:
        """Break the pool: its workers die before their initializer reports (see
        EARLY_DEATHS_BREAK); starting more would loop for ever."""
        name = function_name(self._initializer) if self._initializer is not None else None
        culprit = (
            f"the pool's initializer {name} ended them (os._exit, a signal, a crash)"
            if name is not None
            else "they fail before running anything (see their standard error)"
        )

        def error() -> BaseException:
            return InitializerError(
                f"{EARLY_DEATHS_BREAK} pool workers in a row died before they were ready, "
                f"the last one pid {pid} ({_exit_text(exitcode)}): {culprit}. The pool is "
                "broken: every unfinished and later task fails with this error. Fix the "
                "cause, then terminate() this pool and create a new one.",
                name or "no initializer",
                pid,
            )

        self._break(error)

    def _worker_ended(self, worker: WorkerState) -> None:
        # Whatever it sent before it died is in the kernel already: take it first, so
        # that a result sent just before exiting is not reported lost.
        while worker.conn_open and worker.conn.poll(0):
            if not self._receive(worker, DRAIN_TIMEOUT):
                break
        process = worker.process
        pid = process.pid
        process.join(EXIT_GRACE)
        exitcode = process.exitcode
        held = list(worker.held)
        worker.held.clear()
        # The oldest tasks without a result may have started (the oldest one; the
        # first task_concurrency ones up to a plain function's): they are lost, not
        # run again. Every one behind them is known not to have started (see above).
        # A worker that said it exits started none of those it still holds. One that
        # died idle may have been sent a task it never read (it was dying as the task
        # was written): its count of started tasks, against the results taken (every
        # task sent, less those held), says so, and such a task is sent again.
        counts = self._start_counts
        if worker.exiting:
            started = 0
        elif counts is not None and worker.starts is not None:
            finished = worker.sent - len(held)
            started = may_have_started(held, self.concurrency, counts.read(worker.starts), finished)
        else:  # a thread worker: it ends only of the task it ran
            started = may_have_started(held, self.concurrency)
        lost = [task for task in held[:started] if not task.stopped]
        # A stopped task was failed or cancelled when its worker was killed to stop it.
        held = [task for task in held[started:] if not task.stopped]
        # A ThreadPool's worker thread ends only of what a task raised and it did not
        # catch (SystemExit, KeyboardInterrupt): it is named, not an exit code.
        died_of: BaseException | None = getattr(process, "died_of", None)
        for task in lost:
            with self._lock:
                self._tasks.pop(task.id, None)
            inputs = task.describe()
            if died_of is not None:
                error = WorkerLostError(
                    f"pool worker thread {process.name} ended, raising {died_of!r}, while "
                    f"running {task.function}({inputs}): that task failed (what it raised is "
                    "this error's __cause__), the thread was replaced and the pool's other "
                    "tasks go on. A thread worker does not catch SystemExit or "
                    "KeyboardInterrupt: in a thread, they belong to the program.",
                    pid,
                    exitcode,
                    task.function,
                    inputs,
                )
                error.__cause__ = died_of
                task.result._deliver(task.index, False, error)
                continue
            if worker.killed:  # to stop another task running alongside this one
                text = (
                    f"pool worker pid {pid} was killed ({_exit_text(exitcode)}) to stop "
                    "another task (past its timeout, or cancelled) that it ran at the same "
                    f"time as {task.function}({inputs}) (task_concurrency="
                    f"{self.concurrency}); that task failed too, the worker was replaced "
                    "and the pool's other tasks go on."
                )
            else:
                text = (
                    f"pool worker pid {pid} died ({_exit_text(exitcode)}) while running "
                    f"{task.function}({inputs}); that task failed, the worker was replaced "
                    "and the pool's other tasks go on. SIGKILL often means the kernel's "
                    "out-of-memory killer or a kill from outside the pool."
                )
            task.result._deliver(
                task.index,
                False,
                WorkerLostError(text, pid, exitcode, task.function, inputs),
            )
        if not lost and not (worker.retiring or worker.killed) and self.state == RUNNING:
            _logger.sub_warning("pool worker pid %s ended (%s)", pid, _exit_text(exitcode))
        if worker.ready or worker.killed:
            self._early_deaths = 0
        else:
            self._early_deaths += 1
            if self._early_deaths >= EARLY_DEATHS_BREAK:
                self._workers_cannot_start(pid, exitcode)
        if held:  # never started: they go to the front of the queue, in their order
            for task in held:
                task.deadline = None
            with self._lock:
                self._pending.extendleft(reversed(held))
        self._workers.remove(worker)
        self._close_worker(worker)
        if self.state not in (TERMINATING, BROKEN):
            if self._on_demand:
                # Replaced as any worker starts there: when a task needs it (so a
                # start that fails is handled as there, while other workers run).
                self._may_grow = True
            else:
                self._workers.append(self._start_worker())

    # -- workers ------------------------------------------------------------------------

    def _start_for_demand(self) -> None:
        """Start workers for the unfinished tasks that have none, up to ``processes``.

        A worker that is idle, or will be once its task ends, is not counted as
        free: every unfinished task (queued or held) may need a worker of its own
        now -- two tasks submitted together run together, as under the stdlib's
        executor. A start that fails here, with workers running, leaves the pool
        at the size it has (logged): its tasks go on, and the next worker to end
        lets it try again. With none running, the failure ends the dispatcher, which
        fails every task, as a failed replacement does in a ``Pool``.
        """
        wanted = min(self.processes, len(self._tasks))
        # Closed (shut down) too: what was submitted before still runs, and needs them.
        while len(self._workers) < wanted and self.state in (RUNNING, CLOSED):
            try:
                self._workers.append(self._start_worker())
            except Exception as exc:
                if not self._workers:
                    raise
                self._may_grow = False
                # The text, not the exception: a record kept by a handler would keep
                # its traceback's frames, this pool and its initargs with them.
                _logger.get_logger().warning(
                    "proctor pool: could not start another worker (%s); it goes on with %d",
                    repr(exc),
                    len(self._workers),
                )
                return
        if len(self._workers) >= self.processes:
            self._may_grow = False

    def _start_worker(self) -> WorkerState:
        in_process = self.codec.in_process
        counts = self._start_counts
        starts = None if counts is None else counts.take()
        try:
            parent_end, child_end = self._pipe()
        except BaseException:
            if counts is not None:
                counts.give_back(starts)
            raise
        try:
            process = self._process_class(
                target=_worker.worker_main,
                args=(
                    child_end,
                    self._initializer,
                    self._initargs,
                    self._maxtasks,
                    self.codec.in_process,
                    self._max_memory,
                    self.concurrency,
                    starts,
                ),
                daemon=True,
            )
            process.name = process.name.replace("Process", "PoolWorker", 1)
            process.start()
        except BaseException:
            parent_end.close()
            if counts is not None:
                counts.give_back(starts)
            raise
        finally:
            if not in_process:  # a thread worker owns its end from now on
                child_end.close()
        keep_in_thread = getattr(parent_end, "_keep_in_thread", None)
        if keep_in_thread is not None:
            # Only this thread receives on it and closes it (_close_worker; or the
            # constructor, before this thread runs): its receives need not wait
            # where another thread's close would end the wait (_core._wakeup).
            keep_in_thread()
        return WorkerState(process, parent_end, starts)

    def _stop_workers(self, terminate: bool) -> None:
        for worker in self._workers:
            if terminate and self._kill:
                worker.process.kill()
            elif terminate:
                worker.process.terminate()
            elif worker.conn_open:
                try:
                    worker.conn.send_bytes(_worker.STOP)
                except OSError:
                    pass
        for worker in self._workers:
            worker.process.join(EXIT_GRACE)
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
            self._close_worker(worker)
        self._workers = []

    def _close_worker(self, worker: WorkerState) -> None:
        worker.conn.close()
        worker.process.close()
        if self._start_counts is not None:
            self._start_counts.give_back(worker.starts)

    def _fail_all(self, error: Callable[[], BaseException]) -> None:
        with self._lock:
            tasks = list(self._tasks.values())
            self._tasks.clear()
            self._pending.clear()
            lazy = list(self._lazy)
        for task in tasks:
            task.result._deliver(task.index, False, error())
        for iterator in lazy:
            iterator._abort(error())
