"""proctor.ProcessPoolExecutor: the concurrent.futures API, and the faults it survives.

Workers reach the test's queue and event through ``initializer``/``initargs``. A task
"running" is one that has reported its pid from inside the task; a task that "runs for
ever" waits for an event the test sets only to let it end. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import gc
import itertools
import logging
import multiprocessing
import os
import signal
import threading

import pytest

import proctor
from helpers import MAIN_GLOBALS_PREAMBLE, START_METHODS, pid_exists, run_program, wait_until
from pool_tasks import (
    _block,
    _block_at,
    _fail_at,
    _install,
    _pid,
    _report,
    _report_and_block,
    _square,
    _star_fail_at,
)

TIMEOUT = 60


def _add(x, y=0):
    return x + y


def _fail(message):
    raise ValueError(message)


def _failing_initializer(message):
    raise LookupError(message)


def _executor_with_events(ctx, max_workers=2, **kwargs):
    started = ctx.Queue()
    release = ctx.Event()
    executor = proctor.ProcessPoolExecutor(
        max_workers, mp_context=ctx, initializer=_install, initargs=(started, release), **kwargs
    )
    return executor, started, release


def test_submit_returns_a_concurrent_futures_future(ctx):
    with proctor.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        assert isinstance(executor, concurrent.futures.Executor)
        future = executor.submit(_add, 2, y=3)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(TIMEOUT) == 5
        assert future.done()
        assert executor.submit(_pid).result(TIMEOUT) != os.getpid()
        assert "state=running max_workers=2" in repr(executor)
    assert "state=shutdown" in repr(executor)


def _pool_workers(executor) -> list[int]:
    """The pids of the executor's workers (the pool's record: no process is counted
    twice, and a forkserver's are there too, which are not this process's children)."""
    return [worker.process.pid for worker in executor._dispatcher._workers]


ON_DEMAND_METHODS = [m for m in START_METHODS if m != "fork"]


@pytest.mark.parametrize("start_method", ON_DEMAND_METHODS)
def test_workers_start_as_tasks_need_them(ctx):
    # As the stdlib's executor: not max_workers processes for one task at a time.
    # One starts with the executor, so that what cannot start fails at construction.
    executor, started, release = _executor_with_events(ctx, max_workers=3)
    with executor:
        assert len(_pool_workers(executor)) == 1
        pids = {executor.submit(_pid).result(TIMEOUT) for _ in range(5)}
        assert len(pids) == 1  # one task at a time: the same worker each time
        assert len(_pool_workers(executor)) == 1
        # Tasks that are running together each get a worker: three run at once,
        # each reporting from inside before any can end.
        futures = [executor.submit(_report_and_block, n) for n in range(3)]
        running = {started.get(timeout=TIMEOUT) for _ in range(3)}
        assert len(running) == 3
        assert sorted(_pool_workers(executor)) == sorted(running)
        release.set()
        assert [f.result(TIMEOUT) for f in futures] == [0, 1, 2]
        # Never more than max_workers, and the workers stay for the next tasks.
        assert sorted(executor.map(_square, range(50), chunksize=1)) == [x * x for x in range(50)]
        assert sorted(_pool_workers(executor)) == sorted(running)
    started.close()


@pytest.mark.parametrize("start_method", ON_DEMAND_METHODS)
def test_tasks_submitted_before_a_shutdown_still_get_their_workers(ctx):
    executor, started, release = _executor_with_events(ctx, max_workers=2)
    dispatcher = executor._dispatcher
    dispatcher._may_grow = False  # held back until the executor is shut down
    futures = [executor.submit(_report_and_block, n) for n in range(2)]
    first = started.get(timeout=TIMEOUT)
    executor.shutdown(wait=False)
    dispatcher._may_grow = True
    dispatcher.wake()
    # The second task gets a worker of its own: both run at once.
    assert started.get(timeout=TIMEOUT) != first
    release.set()
    assert [f.result(TIMEOUT) for f in futures] == [0, 1]
    executor.shutdown(wait=True)
    started.close()


@pytest.mark.parametrize("start_method", ON_DEMAND_METHODS)
def test_a_task_submitted_while_the_dispatcher_counts_is_not_queued_behind_a_busy_one(ctx):
    # The dispatcher counts the unfinished tasks, starts workers for them, then hands
    # out what is queued: a task submitted in between was queued behind the running
    # one (pipelined, once short tasks had been measured), where it waited for ever
    # beside the idle worker started next for it.
    executor, started, release = _executor_with_events(ctx, max_workers=2)
    dispatcher = executor._dispatcher
    with executor:
        for _ in range(20):  # short tasks, measured: the dispatcher may now pipeline
            executor.submit(_square, 2).result(TIMEOUT)
        assert dispatcher._depth() > 1
        first = executor.submit(_report_and_block, "A")
        running = started.get(timeout=TIMEOUT)
        second: list = []
        count_then_submit = dispatcher._start_for_demand

        def submit_after_the_count():
            count_then_submit()
            if not second:
                second.append(executor.submit(_report, "B"))

        dispatcher._start_for_demand = submit_after_the_count
        dispatcher.wake()
        assert started.get(timeout=TIMEOUT) == "B"  # while A still runs
        assert sorted(_pool_workers(executor)) != [running]
        release.set()
        assert first.result(TIMEOUT) == "A"
        assert second[0].result(TIMEOUT) == "B"
    started.close()


def test_a_done_callback_raising_systemexit_leaves_the_executor_running(ctx):
    # Done callbacks of a future completed by a result run in the pool's thread:
    # SystemExit there would end it, and every other future would fail. (The
    # callback is on a future whose task holds no event: the logged record's
    # traceback holds the task's arguments, and pytest keeps it past the leak check.)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = proctor.get_logger()
    logger.addHandler(handler)
    release = ctx.Event()
    try:
        with proctor.ProcessPoolExecutor(1, mp_context=ctx) as executor:
            first = executor.submit(_wait_then_value, release, 5)
            future = executor.submit(_add, 2, 1)  # waits for the one worker
            future.add_done_callback(lambda _: _raise_base_exit())
            release.set()
            assert first.result(TIMEOUT) == 5
            assert future.result(TIMEOUT) == 3
            assert executor.submit(_add, 2, 3).result(TIMEOUT) == 5  # the executor goes on
    finally:
        logger.removeHandler(handler)
    assert len(records) == 1, [record.getMessage() for record in records]
    assert records[0].exc_info is not None and records[0].exc_info[0] is SystemExit


def _wait_then_value(event, value):
    event.wait(TIMEOUT)
    return value


def _raise_base_exit():
    raise SystemExit(3)


@pytest.mark.parametrize("start_method", ON_DEMAND_METHODS)
def test_a_replacement_that_cannot_start_leaves_the_executor_running(ctx):
    executor, started, release = _executor_with_events(ctx, max_workers=2)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = proctor.get_logger()
    logger.addHandler(handler)
    try:
        with executor:
            futures = [executor.submit(_report_and_block, n) for n in range(2)]
            workers = {started.get(timeout=TIMEOUT) for _ in range(2)}
            release.set()
            assert [f.result(TIMEOUT) for f in futures] == [0, 1]

            def cannot_start():
                raise OSError(11, "Resource temporarily unavailable")

            executor._dispatcher._start_worker = cannot_start
            victim, survivor = sorted(workers)
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: _pool_workers(executor) == [survivor], timeout=TIMEOUT)
            # Two tasks at once: the replacement is wanted now, cannot start, and
            # the survivor runs both.
            futures = [executor.submit(_add, n, y=1) for n in range(2)]
            assert [f.result(TIMEOUT) for f in futures] == [1, 2]
            wait_until(lambda: records, timeout=TIMEOUT)
            assert executor.submit(_pid).result(TIMEOUT) == survivor
    finally:
        logger.removeHandler(handler)
    assert len(records) == 1, records
    assert "could not start another worker" in records[0]
    assert "goes on with 1" in records[0]
    started.close()


def test_under_fork_every_worker_starts_with_the_executor():
    # A worker forked later, by the dispatcher thread, could inherit a module that
    # another thread was importing, half imported (the stdlib's executor starts them
    # all at once under fork too).
    with proctor.ProcessPoolExecutor(3, mp_context=proctor.get_context("fork")) as executor:
        assert len(_pool_workers(executor)) == 3
        assert executor.submit(_square, 3).result(TIMEOUT) == 9


@pytest.mark.parametrize("start_method", ON_DEMAND_METHODS)
def test_a_worker_that_cannot_start_later_leaves_the_executor_running(ctx):
    executor, started, release = _executor_with_events(ctx, max_workers=3)

    def cannot_start():
        raise OSError(24, "Too many open files")

    executor._dispatcher._start_worker = cannot_start
    logger = proctor.get_logger()  # where the stdlib's pool logs too
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with executor:
            first = executor.submit(_report_and_block, "first")
            started.get(timeout=TIMEOUT)  # running: the next task needs another worker
            second = executor.submit(_add, 2, y=1)
            wait_until(lambda: records, timeout=TIMEOUT)
            release.set()  # the one worker runs both
            assert first.result(TIMEOUT) == "first"
            assert second.result(TIMEOUT) == 3
            futures = [executor.submit(_add, n, y=1) for n in range(4)]
            assert [f.result(TIMEOUT) for f in futures] == [1, 2, 3, 4]
            assert len(_pool_workers(executor)) == 1
    finally:
        logger.removeHandler(handler)
    assert len(records) == 1, records  # once: the executor stops trying
    assert "could not start another worker" in records[0]
    assert "Too many open files" in records[0]
    assert "goes on with 1" in records[0]
    started.close()


def test_map_yields_in_order_over_several_iterables_and_chunks(ctx):
    with proctor.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        assert list(executor.map(_square, range(10))) == [x * x for x in range(10)]
        assert list(executor.map(_square, range(10), chunksize=3)) == [x * x for x in range(10)]
        # The shortest iterable ends it, as the builtin map.
        assert list(executor.map(_add, range(5), range(10, 13))) == [10, 12, 14]
        assert list(executor.map(_square, [])) == []
        assert list(executor.map(_square, range(7), buffersize=2, chunksize=2)) == [
            x * x for x in range(7)
        ]


def test_map_with_buffersize_streams_an_endless_generator(ctx):
    read = []

    def endless():
        for n in itertools.count():
            read.append(n)
            yield n

    with proctor.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        results = executor.map(_square, endless(), chunksize=2, buffersize=3)
        assert [next(results) for _ in range(10)] == [n * n for n in range(10)]
        # At most buffersize chunks (and the one being taken) were read ahead.
        assert len(read) <= 10 + (3 + 1) * 2
        results.close()  # the chunks not started are cancelled


def test_a_lazy_map_keeps_its_executor_until_it_has_read_the_input(ctx):
    # Nothing else holds the executor: its map must still give every result (the
    # stdlib's stops at the chunks submitted before it was collected).
    results = proctor.ProcessPoolExecutor(2, mp_context=ctx).map(
        _square, range(40), chunksize=2, buffersize=2
    )
    gc.collect()
    assert list(results) == [x * x for x in range(40)]
    del results
    gc.collect()  # the executor goes with the iterator: its workers exit (leak check)


@pytest.mark.parametrize(
    "options",
    [{}, {"chunksize": 10}, {"buffersize": 3}],
    ids=["default", "chunksize", "buffersize"],
)
def test_map_yields_every_value_before_the_item_that_raised(options):
    # As the stdlib's map (one item per task): 0-49, then the error. Items 43-49
    # shared a default-sized chunk with 50, and were lost with it.
    with proctor.ProcessPoolExecutor(2) as executor:
        results = executor.map(_fail_at, range(100), timeout=TIMEOUT, **options)
        assert [next(results) for _ in range(50)] == list(range(50))
        with pytest.raises(ValueError, match="50"):
            next(results)
        with pytest.raises(StopIteration):  # the iterator ends at its error, as the stdlib's
            next(results)
        # Several iterables (a starmap chunk), the error in the middle of a chunk.
        results = executor.map(
            _star_fail_at, range(30), itertools.repeat(15), chunksize=10, timeout=TIMEOUT
        )
        assert [next(results) for _ in range(15)] == list(range(15))
        with pytest.raises(ValueError, match="15"):
            next(results)


def test_map_timeout_raises_and_cancels_the_chunks_not_started(ctx):
    executor, started, release = _executor_with_events(ctx, max_workers=1)
    with executor:
        blocker = executor.submit(_report_and_block, "blocker")
        pid = started.get(timeout=TIMEOUT)  # the only worker is busy: the map waits
        results = executor.map(_report, ["a", "b", "c"], timeout=0.2)
        # concurrent.futures.TimeoutError: the builtin TimeoutError from Python 3.11.
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        release.set()
        assert blocker.result(TIMEOUT) == "blocker"
        # One worker runs tasks in order: had "a", "b" or "c" run, they would report first.
        assert executor.submit(_report, "marker").result(TIMEOUT) == "marker"
        assert started.get(timeout=TIMEOUT) == "marker"
        assert executor.submit(_pid).result(TIMEOUT) == pid
    started.close()


def test_as_completed_and_wait_see_every_future(ctx):
    with proctor.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        futures = [executor.submit(_square, n) for n in range(8)]
        done = {f.result() for f in concurrent.futures.as_completed(futures, timeout=TIMEOUT)}
        assert done == {n * n for n in range(8)}
        failing = executor.submit(_fail, "x")
        finished, not_done = concurrent.futures.wait(
            [failing], timeout=TIMEOUT, return_when=concurrent.futures.FIRST_EXCEPTION
        )
        assert finished == {failing}
        assert not not_done


def test_asyncio_run_in_executor_and_wrap_future(ctx):
    async def main(executor):
        loop = asyncio.get_running_loop()
        a = loop.run_in_executor(executor, _square, 7)
        b = asyncio.wrap_future(executor.submit(_add, 1, y=2))
        return await asyncio.wait_for(asyncio.gather(a, b), TIMEOUT)

    with proctor.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        assert asyncio.run(main(executor)) == [49, 3]


def test_an_exception_comes_back_with_the_worker_traceback(ctx):
    with proctor.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        future = executor.submit(_fail, "bad input")
        with pytest.raises(ValueError, match="bad input") as info:
            future.result(TIMEOUT)
        assert isinstance(future.exception(0), ValueError)
        cause = info.value.__cause__
        assert isinstance(cause, proctor.RemoteTraceback)
        assert "_fail" in cause.tb_text
        assert "ValueError: bad input" in cause.tb_text
        results = executor.map(_fail, ["in map"])
        with pytest.raises(ValueError, match="in map"):
            next(results)
        assert executor.submit(_square, 2).result(TIMEOUT) == 4  # the executor goes on


def test_lambdas_and_closures_run_in_workers(ctx):
    offset = 10

    def shifted(x):
        return x + offset

    with proctor.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        assert executor.submit(lambda x: x * 2, 21).result(TIMEOUT) == 42
        assert list(executor.map(shifted, range(3))) == [10, 11, 12]


_GLOBALS_PER_EXECUTOR_PROGRAM = (
    MAIN_GLOBALS_PREAMBLE
    + """
read_lambda = lambda: CONFIG["v"]
def read_through(model):
    return model.read()
if __name__ == "__main__":
    ctx = proctor.get_context(sys.argv[1])
    for value in ROUNDS:
        change_config(value)
        with proctor.ProcessPoolExecutor(1, mp_context=ctx) as executor:
            first = (
                executor.submit(read).result(timeout=60),
                executor.submit(read_lambda).result(timeout=60),
                executor.submit(Model().read).result(timeout=60),
                executor.submit(read_through, Model()).result(timeout=60),
                next(executor.map(read_through, [Model()], timeout=60)),
            )
            CONFIG["v"] = -1  # within this executor, read keeps its first call's globals
            print(value, *first, executor.submit(read).result(timeout=60))
"""
)


def test_each_new_executor_sees_a_main_functions_globals_as_they_are_now(start_method):
    # Every executor shared one codec, whose kept pickles (a function of __main__
    # and a lambda carry the globals they use) outlived the executor: a new one
    # under spawn or forkserver got the globals of the first executor's first
    # call. Each has its own now, as each Pool does; within one executor a
    # function is pickled once, at its first call.
    out = run_program(_GLOBALS_PER_EXECUTOR_PROGRAM, start_method)
    rows = [line.split() for line in out.splitlines()]
    assert rows == [[str(value)] * 7 for value in (2, 3, 4, 5)], out


def test_a_worker_killed_mid_task_fails_only_its_future(ctx):
    executor, started, release = _executor_with_events(ctx)
    with executor:
        blocked = executor.submit(_report_and_block, "never")
        victim = started.get(timeout=TIMEOUT)
        others = [executor.submit(_square, n) for n in range(10)]
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(proctor.WorkerLostError) as info:
            blocked.result(TIMEOUT)
        error = info.value
        # Also the stdlib's BrokenProcessPool: code written for it catches the loss.
        assert isinstance(error, concurrent.futures.process.BrokenProcessPool)
        assert error.pid == victim
        assert error.exitcode == -signal.SIGKILL
        assert "SIGKILL(-9)" in str(error)
        assert error.function.endswith("_report_and_block")
        assert error.inputs == "'never'"
        assert [f.result(TIMEOUT) for f in others] == [n * n for n in range(10)]
        # Not broken, unlike the stdlib's: it takes new work, on a replaced worker.
        release.set()
        pids = set(executor.map(_pid, range(8)))
        assert victim not in pids
        assert 1 <= len(pids) <= 2
    started.close()


def test_a_lost_workers_error_pickles_as_itself():
    import pickle

    with proctor.ProcessPoolExecutor(1) as executor:
        error = executor.submit(os._exit, 3).exception(TIMEOUT)
        assert executor.submit(_square, 4).result(TIMEOUT) == 16  # it goes on
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert isinstance(copy, proctor.WorkerLostError)
    assert isinstance(copy, concurrent.futures.process.BrokenProcessPool)
    assert (copy.exitcode, copy.function, str(copy)) == (3, error.function, str(error))


def test_a_task_past_task_timeout_fails_and_its_worker_is_replaced(ctx):
    executor, started, _release = _executor_with_events(ctx, task_timeout=0.5)
    with executor:
        stuck = executor.submit(_block, "stuck")
        others = [executor.submit(_square, n) for n in range(6)]
        with pytest.raises(proctor.TaskTimeoutError) as info:
            stuck.result(TIMEOUT)
        error = info.value
        assert isinstance(error, TimeoutError)
        assert error.timeout == 0.5
        assert error.inputs == "'stuck'"
        assert [f.result(TIMEOUT) for f in others] == [n * n for n in range(6)]
        wait_until(lambda: not pid_exists(error.pid), timeout=TIMEOUT)
        assert error.pid not in set(executor.map(_pid, range(8)))
        # In map, a chunk's budget is task_timeout per item, and only that chunk fails.
        results = executor.map(_block_at, range(6), chunksize=2)
        assert [next(results), next(results)] == [0, 1]
        with pytest.raises(proctor.TaskTimeoutError) as info:
            next(results)
        assert info.value.inputs == "input items 2..3"
        assert info.value.timeout == 1.0
    started.close()


def test_cancel_drops_a_pending_future_but_not_a_running_one(ctx):
    executor, started, release = _executor_with_events(ctx, max_workers=1)
    with executor:
        running = executor.submit(_report_and_block, "first")
        worker = started.get(timeout=TIMEOUT)
        queued = executor.submit(_report, "cancelled")
        assert queued.cancel() is True
        assert queued.cancelled()
        # Done for wait() at once, while the only worker is still busy.
        finished, _ = concurrent.futures.wait([queued], timeout=TIMEOUT)
        assert finished == {queued}
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result(TIMEOUT)
        assert running.running()
        assert running.cancel() is False  # as concurrent.futures specifies
        release.set()
        assert running.result(TIMEOUT) == "first"
        assert executor.submit(_report, "marker").result(TIMEOUT) == "marker"
        assert started.get(timeout=TIMEOUT) == "marker"  # the cancelled one never ran
        assert executor.submit(_pid).result(TIMEOUT) == worker  # nothing was killed
    started.close()


def test_shutdown_with_cancel_futures_cancels_only_the_pending_ones(ctx):
    executor, started, release = _executor_with_events(ctx, max_workers=1)
    running = executor.submit(_report_and_block, "running")
    started.get(timeout=TIMEOUT)
    pending = [executor.submit(_report, n) for n in range(3)]
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in pending)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(_square, 1)
    release.set()
    assert running.result(TIMEOUT) == "running"
    executor.shutdown(wait=True)
    assert started.empty()  # no pending task ran
    started.close()


def test_shutdown_without_wait_still_runs_what_was_submitted(ctx):
    executor = proctor.ProcessPoolExecutor(2, mp_context=ctx)
    futures = [executor.submit(_square, n) for n in range(6)]
    executor.shutdown(wait=False)
    assert [f.result(TIMEOUT) for f in futures] == [n * n for n in range(6)]
    executor.shutdown()  # idempotent; waits for the workers to exit


@pytest.mark.parametrize("how", ["terminate_workers", "kill_workers"])
def test_terminate_and_kill_workers_stop_them_now(ctx, how):
    executor, started, _release = _executor_with_events(ctx)
    running = [executor.submit(_report_and_block) for _ in range(2)]
    pids = [started.get(timeout=TIMEOUT) for _ in range(2)]
    pending = executor.submit(_square, 3)
    getattr(executor, how)()
    assert pending.cancelled()
    for future in running:
        with pytest.raises(proctor.PoolTerminatedError):
            future.result(TIMEOUT)
    assert not any(pid_exists(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(_square, 1)
    assert "state=terminated" in repr(executor)
    executor.shutdown()  # still fine afterwards
    started.close()


def test_submit_and_map_after_shutdown_raise_runtime_error():
    executor = proctor.ProcessPoolExecutor(1)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(_square, 1)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.map(_square, range(3))


def test_an_unpicklable_argument_raises_at_submit(ctx):
    with proctor.ProcessPoolExecutor(1, mp_context=ctx) as executor:
        with pytest.raises(proctor.PicklingError, match=r"arguments of .*_square"):
            executor.submit(_square, threading.Lock())
        with pytest.raises(proctor.PicklingError, match=r"input item 1 of .*_square"):
            executor.map(_square, [1, threading.Lock()])
        # Read lazily (buffersize): the item fails at its position, the others run.
        results = executor.map(_square, [1, threading.Lock(), 3], buffersize=1)
        assert next(results) == 1
        with pytest.raises(proctor.PicklingError, match=r"input item 1 of .*_square"):
            next(results)
        assert executor.submit(_square, 5).result(TIMEOUT) == 25


def test_a_failing_initializer_fails_every_future(ctx):
    executor = proctor.ProcessPoolExecutor(
        2, mp_context=ctx, initializer=_failing_initializer, initargs=("no database",)
    )
    with executor:
        with pytest.raises(proctor.InitializerError) as info:
            executor.submit(_square, 2).result(TIMEOUT)
        assert isinstance(info.value.__cause__, LookupError)
        with pytest.raises(proctor.InitializerError):
            executor.submit(_square, 3).result(TIMEOUT)
        assert "state=broken" in repr(executor)


def test_max_tasks_per_child_replaces_workers(ctx):
    with proctor.ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=2) as executor:
        pids = [executor.submit(_pid).result(TIMEOUT) for _ in range(6)]
    assert len(set(pids)) == 3


def test_a_collected_executor_still_completes_its_futures():
    future = proctor.ProcessPoolExecutor(1).submit(_square, 6)
    gc.collect()
    assert future.result(TIMEOUT) == 36


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        proctor.ProcessPoolExecutor(0)
    with pytest.raises(TypeError, match="max_workers"):
        proctor.ProcessPoolExecutor("2")  # type: ignore[arg-type]
    # A number of workers the descriptor limit cannot hold is refused before any
    # starts, as Pool's is (they start with the tasks that need them).
    before = set(proctor.active_children())
    with pytest.raises(ValueError, match=r"ProcessPoolExecutor\(max_workers=10+\).*RLIMIT_NOFILE"):
        proctor.ProcessPoolExecutor(10**9)
    assert set(proctor.active_children()) == before
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        proctor.ProcessPoolExecutor(1, max_tasks_per_child=0)
    with pytest.raises(TypeError, match="initializer"):
        proctor.ProcessPoolExecutor(1, initializer=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mp_context must be a proctor context"):
        proctor.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    with pytest.raises(ValueError, match="task_timeout must be a positive number"):
        proctor.ProcessPoolExecutor(1, task_timeout=0)
    with pytest.raises(TypeError, match="task_timeout"):
        proctor.ProcessPoolExecutor(1, task_timeout="1")  # type: ignore[arg-type]
    with proctor.ProcessPoolExecutor(1) as executor:
        with pytest.raises(ValueError, match="chunksize must be >= 1"):
            executor.map(_square, range(3), chunksize=0)
        with pytest.raises(TypeError, match="chunksize"):
            executor.map(_square, range(3), chunksize=1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="buffersize must be None or > 0"):
            executor.map(_square, range(3), buffersize=0)
        with pytest.raises(TypeError, match="buffersize must be an integer or None"):
            executor.map(_square, range(3), buffersize="1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="fn must be callable"):
            executor.submit(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="cannot be pickled"):
            import pickle

            pickle.dumps(executor)
        assert executor.submit(_square, 3).result(TIMEOUT) == 9  # the bad calls sent nothing


def test_the_executor_is_on_the_front_door_only():
    from proctor import pool as pool_module

    assert "ProcessPoolExecutor" in proctor.__all__
    assert issubclass(proctor.ProcessPoolExecutor, concurrent.futures.Executor)
    # Where the stdlib has it: concurrent.futures, not multiprocessing.pool or contexts.
    assert not hasattr(pool_module, "ProcessPoolExecutor")
    assert not hasattr(proctor.get_context("spawn"), "ProcessPoolExecutor")


def test_cancel_running_stops_a_running_task_by_killing_its_worker(ctx):
    executor, started, _release = _executor_with_events(ctx, max_workers=1, cancel_running=True)
    with executor:
        running = executor.submit(_report_and_block, "stopped")
        assert isinstance(running, concurrent.futures.Future)
        worker = started.get(timeout=TIMEOUT)
        waiter = threading.Thread(
            target=concurrent.futures.wait, args=([running],), kwargs={"timeout": TIMEOUT}
        )
        waiter.start()  # a wait() already waiting sees the cancellation
        called = []
        running.add_done_callback(called.append)
        assert running.cancel() is True
        assert running.cancelled()
        waiter.join(TIMEOUT)
        assert not waiter.is_alive()
        assert called == [running]
        with pytest.raises(concurrent.futures.CancelledError):
            running.result(TIMEOUT)
        wait_until(lambda: not pid_exists(worker), timeout=TIMEOUT)
        # The pool goes on, on a new worker.
        assert executor.submit(_pid).result(TIMEOUT) != worker
        finished = executor.submit(_square, 3)
        assert finished.result(TIMEOUT) == 9
        assert finished.cancel() is False  # a finished future stays finished


def test_cancel_running_must_be_a_bool():
    with pytest.raises(TypeError, match="cancel_running"):
        proctor.ProcessPoolExecutor(1, cancel_running="yes")


def test_map_chunks_by_default_and_honours_an_explicit_chunksize(ctx):
    with proctor.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        dispatcher = executor._dispatcher

        def tasks_of(**kwargs):
            before = dispatcher.next_id()
            results = list(executor.map(_square, range(2_000), timeout=TIMEOUT, **kwargs))
            assert results == [x * x for x in range(2_000)]
            return dispatcher.next_id() - before - 1

        # Default: decreasing chunks over the whole input (as Pool.map), not 2,000 tasks.
        assert tasks_of() < 200
        assert tasks_of(chunksize=1) == 2_000  # an explicit chunksize is used as given
        assert tasks_of(chunksize=500) == 4
        # Lazy (buffersize): sizes grow from the measured durations of quick items.
        assert tasks_of(buffersize=4) < 1_000
