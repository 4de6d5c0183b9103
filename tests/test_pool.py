"""proctor.Pool: the stdlib API, and the faults no stdlib pool survives.

Workers reach the test's events and queues through ``initializer``/``initargs``, which
travel with each worker's start under every method. Every wait has a timeout; a worker
killed "mid-task" is one that has reported, from inside the task, that it started.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import math
import multiprocessing
import os
import signal
import threading

import pytest

import proctor
from helpers import MAIN_GLOBALS_PREAMBLE, pid_exists, run_program, wait_until
from pool_tasks import (
    _async_fail_at,
    _block,
    _block_at,
    _fail_at,
    _install,
    _report,
    _report_and_block,
    _square,
)
from proctor._pool._pool import READ_AHEAD_PER_WORKER

TIMEOUT = 60


def _failing_initializer(message):
    raise LookupError(message)


def _add(x, y):
    return x + y


def _fail(message):
    raise ValueError(message)


def _kill_self_at(x, victim=3):
    if x == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _return_a_lock():
    return threading.Lock()


def _raise_base(kind):
    raise {"exit": SystemExit(3), "interrupt": KeyboardInterrupt()}[kind]


def _pid(_=None):
    return os.getpid()


def _pool_with_events(ctx, processes=2, **kwargs):
    started = ctx.Queue()
    release = ctx.Event()
    pool = ctx.Pool(processes, initializer=_install, initargs=(started, release), **kwargs)
    return pool, started, release


def test_the_stdlib_api_gives_the_stdlib_results(ctx):
    with ctx.Pool(2) as pool:
        assert pool.map(_square, range(10)) == [x * x for x in range(10)]
        assert pool.map(_square, range(10), chunksize=3) == [x * x for x in range(10)]
        assert pool.map(_square, []) == []
        assert pool.apply(_add, (2, 3)) == 5
        assert pool.apply(_add, (), {"x": 1, "y": 2}) == 3
        assert pool.apply_async(_square, (7,)).get(TIMEOUT) == 49
        assert pool.map_async(_square, range(5)).get(TIMEOUT) == [0, 1, 4, 9, 16]
        assert pool.starmap(_add, [(1, 2), (3, 4)]) == [3, 7]
        assert pool.starmap_async(_add, [(1, 2)], chunksize=1).get(TIMEOUT) == [3]
        assert list(pool.imap(_square, range(7), chunksize=2)) == [x * x for x in range(7)]
        assert list(pool.imap(_square, iter([]))) == []
        assert sorted(pool.imap_unordered(_square, range(7))) == [x * x for x in range(7)]
        result = pool.apply_async(_square, (3,))
        result.wait(TIMEOUT)
        assert result.ready()
        assert result.successful()


def test_callbacks_run_before_get_returns(ctx):
    values, errors = [], []
    with ctx.Pool(2) as pool:
        ok = pool.apply_async(_square, (4,), callback=values.append)
        bad = pool.apply_async(_fail, ("boom",), error_callback=errors.append)
        mapped = pool.map_async(_square, range(3), callback=values.append)
        assert ok.get(TIMEOUT) == 16
        with pytest.raises(ValueError):
            bad.get(TIMEOUT)
        assert mapped.get(TIMEOUT) == [0, 1, 4]
    assert sorted(values, key=str) == sorted([16, [0, 1, 4]], key=str)
    assert len(errors) == 1
    assert isinstance(errors[0], ValueError)
    assert str(errors[0]) == "boom"


def test_a_callback_waiting_for_a_result_of_its_own_pool_is_refused(ctx):
    # It runs in the thread that delivers the pool's results: the wait would never
    # end, and the pool would stall with it (the stdlib's does).
    pool, _started, release = _pool_with_events(ctx, 2)
    with pool:
        blocked = pool.apply_async(_block)
        outcomes = []

        def wait_in_callback(_value):
            for wait in (blocked.get, lambda: pool.map(_square, range(3))):
                try:
                    wait()
                except RuntimeError as exc:
                    outcomes.append(str(exc))

        assert pool.apply_async(_square, (2,), callback=wait_in_callback).get(TIMEOUT) == 4
        assert len(outcomes) == 2, outcomes
        assert all("cannot wait for a result of the same pool" in text for text in outcomes)
        release.set()
        assert blocked.get(TIMEOUT) is None
        assert pool.apply_async(_square, (6,)).get(TIMEOUT) == 36  # the pool goes on


@pytest.mark.parametrize("kind", ["exit", "interrupt"])
def test_a_callback_raising_systemexit_is_logged_and_its_result_completes(ctx, kind):
    # It runs in the pool's thread: raised there, SystemExit or KeyboardInterrupt
    # would end the dispatcher (every task failing) and leave its result never ready.
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = proctor.get_logger()
    logger.addHandler(handler)

    def raise_base(_value):
        _raise_base(kind)

    try:
        with ctx.Pool(2) as pool:
            ok = pool.apply_async(_square, (4,), callback=raise_base)
            bad = pool.apply_async(_fail, ("boom",), error_callback=raise_base)
            mapped = pool.map_async(_square, range(3), callback=raise_base)
            assert ok.get(TIMEOUT) == 16
            with pytest.raises(ValueError, match="boom"):
                bad.get(TIMEOUT)
            assert mapped.get(TIMEOUT) == [0, 1, 4]
            assert pool.map(_square, range(3)) == [0, 1, 4]  # the pool goes on
    finally:
        logger.removeHandler(handler)
    raised = (SystemExit, KeyboardInterrupt)[kind == "interrupt"]
    assert len(records) == 3, [record.getMessage() for record in records]
    for record in records:
        assert "pool callback" in record.getMessage()
        assert record.exc_info is not None and record.exc_info[0] is raised


def test_an_error_callback_raising_systemexit_in_cancel_propagates_once_cancelled(ctx):
    # cancel() calls it in the caller's thread, whose exit it is: it propagates, and
    # the result is cancelled all the same.
    pool, started, release = _pool_with_events(ctx, 1)
    with pool:
        running = pool.apply_async(_report_and_block, (1,))
        started.get(timeout=TIMEOUT)
        waiting = pool.apply_async(_square, (2,), error_callback=lambda _: _raise_base("exit"))
        with pytest.raises(SystemExit):
            waiting.cancel()
        assert waiting.ready() and waiting.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            waiting.get(TIMEOUT)
        release.set()
        assert running.get(TIMEOUT) == 1


def test_task_exception_comes_back_with_the_worker_traceback(ctx):
    with ctx.Pool(2) as pool:
        result = pool.apply_async(_fail, ("bad input",))
        with pytest.raises(ValueError, match="bad input") as info:
            result.get(TIMEOUT)
        assert not result.successful()
        cause = info.value.__cause__
        assert isinstance(cause, proctor.RemoteTraceback)
        assert type(cause) is proctor.pool.RemoteTraceback  # the stdlib's module has it
        assert "_fail" in cause.tb_text
        assert cause.tb == cause.tb_text  # the stdlib's attribute name
        assert "ValueError: bad input" in cause.tb_text
        with pytest.raises(ValueError, match="bad input"):
            pool.map(_fail, ["bad input"])
        assert pool.apply(_square, (2,)) == 4  # the pool goes on


def test_lambdas_and_closures_run_in_workers(ctx):
    offset = 10

    def shifted(x):
        return x + offset

    with ctx.Pool(2) as pool:
        assert pool.map(lambda x: x * 2, range(4)) == [0, 2, 4, 6]
        assert pool.apply(shifted, (1,)) == 11
        assert list(pool.imap(shifted, range(3))) == [10, 11, 12]


_GLOBALS_PER_POOL_PROGRAM = (
    MAIN_GLOBALS_PREAMBLE
    + """
def read_through(model):
    return model.read()
if __name__ == "__main__":
    ctx = proctor.get_context(sys.argv[1])
    for value in ROUNDS:
        change_config(value)
        with proctor.Pool(1, context=ctx) as pool:
            first = (
                pool.apply(read),
                pool.apply(Model().read),  # a method: its class goes by value
                pool.apply(read_through, (Model(),)),  # the class in the arguments
                pool.map(read_through, [Model()])[0],
            )
            CONFIG["v"] = -1  # within this pool, read keeps its first call's globals
            print(value, *first, pool.apply(read))
"""
)


def test_each_new_pool_sees_a_main_functions_globals_as_they_are_now(start_method):
    # A function of __main__ (and a class of __main__, as a method or an argument)
    # goes by value to spawn and forkserver workers, with the globals its code
    # uses. Its pickle was reused process-wide: every later pool got the globals as
    # they were at the first pool's first call, whether the global was rebound or
    # mutated in place (fork workers, which have their own, saw the new ones).
    # Within one pool it is pickled once, at its first call (docs/pool.md).
    out = run_program(_GLOBALS_PER_POOL_PROGRAM, start_method)
    rows = [line.split() for line in out.splitlines()]
    assert rows == [[str(value)] * 6 for value in (2, 3, 4, 5)], out


def test_a_worker_killed_mid_task_fails_only_its_task(ctx):
    pool, started, release = _pool_with_events(ctx)
    with pool:
        blocked = pool.apply_async(_report_and_block, ("never",))
        victim = started.get(timeout=TIMEOUT)
        others = pool.map_async(_square, range(20), chunksize=1)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(proctor.WorkerLostError) as info:
            blocked.get(TIMEOUT)
        error = info.value
        assert error.pid == victim
        assert error.exitcode == -signal.SIGKILL
        assert "SIGKILL(-9)" in str(error)
        assert error.function.endswith("_report_and_block")
        assert "'never'" in error.inputs
        assert others.get(TIMEOUT) == [x * x for x in range(20)]
        # The worker was replaced: the pool still has two workers, the victim not among them.
        release.set()
        pids = set(pool.map(_pid, range(8), chunksize=1))
        assert victim not in pids
        assert 1 <= len(pids) <= 2
    started.close()


def test_map_raises_worker_lost_and_imap_yields_the_results_before_it(ctx):
    with ctx.Pool(2) as pool:
        with pytest.raises(proctor.WorkerLostError, match="input item 3"):
            pool.map(_kill_self_at, range(6), chunksize=1)
        # chunksize=1: the default sizes chunks from timings, which vary.
        iterator = pool.imap(_kill_self_at, range(6), chunksize=1)
        assert [iterator.next(TIMEOUT) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(proctor.WorkerLostError) as info:
            iterator.next(TIMEOUT)
        assert info.value.inputs == "input item 3"
        # The lost chunk raised once; the items after it still come.
        assert list(iterator) == [4, 5]


def test_an_unpicklable_argument_raises_in_the_caller(ctx):
    with ctx.Pool(2) as pool:
        with pytest.raises(proctor.PicklingError, match=r"arguments of .*_square"):
            pool.apply_async(_square, (threading.Lock(),))
        with pytest.raises(TypeError, match=r"input item 1 of .*_square"):
            pool.map(_square, [1, threading.Lock()], chunksize=1)
        with pytest.raises(TypeError, match=r"input items 0..1 of .*_square"):
            pool.map(_square, [1, threading.Lock()], chunksize=2)
        # imap reads its input lazily: the item fails at its position, the others run.
        iterator = pool.imap(_square, [1, threading.Lock(), 3], chunksize=1)
        assert iterator.next(TIMEOUT) == 1
        with pytest.raises(proctor.PicklingError, match=r"input item 1 of .*_square"):
            iterator.next(TIMEOUT)
        assert iterator.next(TIMEOUT) == 9
        assert pool.apply(_square, (5,)) == 25


def test_an_unpicklable_result_fails_that_task_only(ctx):
    with ctx.Pool(2) as pool:
        with pytest.raises(proctor.ResultError, match="could not be sent back") as info:
            pool.apply(_return_a_lock)
        assert "_thread.lock" in str(info.value)
        # The stdlib's name and attributes, for code that catches it by them.
        assert isinstance(info.value, proctor.pool.MaybeEncodingError)
        assert "_thread.lock" in info.value.exc
        assert "_return_a_lock" in info.value.value
        assert pool.map(_square, range(4)) == [0, 1, 4, 9]


@pytest.mark.parametrize(
    ("kind", "error"), [("exit", SystemExit), ("interrupt", KeyboardInterrupt)]
)
def test_a_base_exception_in_a_task_fails_that_task_only(ctx, kind, error):
    with ctx.Pool(1) as pool:
        worker = pool.apply(_pid)
        with pytest.raises(error):
            pool.apply(_raise_base, (kind,))
        assert pool.apply(_pid) == worker  # the same worker went on
        assert pool.map(_square, range(3)) == [0, 1, 4]


def test_imap_streams_an_endless_generator(ctx):
    read = []

    def endless():
        for n in itertools.count():
            read.append(n)
            yield n

    with ctx.Pool(2) as pool:
        iterator = pool.imap(_square, endless(), chunksize=2)
        assert [iterator.next(TIMEOUT) for _ in range(10)] == [n * n for n in range(10)]
        # Read ahead a bounded number of chunks past what was consumed.
        assert len(read) <= 10 + (READ_AHEAD_PER_WORKER * 2 + 1) * 2


def test_an_imap_iterator_left_with_break_is_freed_and_its_input_read_no_more(ctx):
    # The pool's queue and workers hold an iterator only weakly: one its consumer
    # dropped went away with its input and results, and join() does not read that
    # (here endless) input, in a pool that lives on.
    import gc
    import weakref

    read = []

    def endless():
        for n in itertools.count():
            read.append(n)
            yield n

    pool = ctx.Pool(2)
    try:
        for unordered in (False, True):
            call = pool.imap_unordered if unordered else pool.imap
            iterator = call(_square, endless(), chunksize=1)
            for _value in iterator:
                break
            gone = weakref.ref(iterator)
            del iterator
            gc.collect()
            assert gone() is None
        assert len(pool._dispatcher._lazy) == 0
        assert pool.map(_square, range(20)) == [x * x for x in range(20)]
        count = len(read)
        pool.close()
        pool.join(TIMEOUT)  # (an endless input still held would time out here)
        assert len(read) == count
    finally:
        pool.terminate()


def test_a_pool_left_after_an_imap_loop_with_break_warns_and_is_terminated_when_collected(
    ctx,
):
    # The iterator held the pool, and the pool's dispatcher the iterator (while its
    # input lasted): neither was ever freed, and the workers lived on.
    import gc

    def leave_a_loop():
        pool = ctx.Pool(2)
        for _value in pool.imap(_square, itertools.count(), chunksize=1):
            break
        return pool._dispatcher

    with pytest.warns(ResourceWarning, match="unclosed pool"):
        dispatcher = leave_a_loop()
        gc.collect()
    dispatcher._thread.join(TIMEOUT)
    assert not dispatcher._thread.is_alive()


def _take_all(iterator):
    """Every value of ``iterator`` (``next(TIMEOUT)``), and the errors it raised, in order."""
    taken = []
    while True:
        try:
            taken.append(iterator.next(TIMEOUT))
        except StopIteration:
            return taken
        except ValueError as exc:
            taken.append(exc)


@pytest.mark.parametrize("call", ["imap", "imap_unordered", "async", "progress"])
def test_imap_yields_the_values_of_a_failed_chunk_before_its_error(ctx, call):
    # The chunk of items 40-49 fails at 45: 40-44 ran, and come before the error, as
    # with chunksize=1; 46-49 did not run. The other chunks come whole.
    func, kwargs = _fail_at, {}
    if call == "async":  # a coroutine function: its own loop in the worker
        func = _async_fail_at
    elif call == "progress":  # its chunks run with the progress reporter
        kwargs = {"progress": lambda done, total: None}
    with ctx.Pool(2) as pool:
        method = pool.imap_unordered if call == "imap_unordered" else pool.imap
        iterator = method(functools.partial(func, victim=45), range(60), chunksize=10, **kwargs)
        taken = _take_all(iterator)
        errors = [item for item in taken if isinstance(item, ValueError)]
        assert [error.args for error in errors] == [(45,)]
        values = [item for item in taken if not isinstance(item, ValueError)]
        before = taken[: taken.index(errors[0])]
        if call == "imap_unordered":  # chunks in the order they end; a chunk's in order
            assert sorted(values) == [*range(45), *range(50, 60)]
            assert before[-5:] == [40, 41, 42, 43, 44]
        else:
            assert before == list(range(45))
            assert values == [*range(45), *range(50, 60)]
        # map() raises, without values, as the stdlib's.
        with pytest.raises(ValueError, match="45"):
            pool.map(functools.partial(_fail_at, victim=45), range(60), chunksize=10)


def test_an_error_from_the_input_comes_at_its_position(ctx):
    def broken():
        yield 1
        yield 2
        raise LookupError("input broke")

    with ctx.Pool(2) as pool:
        iterator = pool.imap(_square, broken())
        assert [iterator.next(TIMEOUT), iterator.next(TIMEOUT)] == [1, 4]
        with pytest.raises(LookupError, match="input broke"):
            iterator.next(TIMEOUT)
        with pytest.raises(StopIteration):
            iterator.next(TIMEOUT)


def test_terminate_while_tasks_run_fails_them_and_stops_the_workers(ctx):
    pool, started, _release = _pool_with_events(ctx)
    running = [pool.apply_async(_report_and_block) for _ in range(2)]
    waiting = pool.apply_async(_square, (3,))
    pids = [started.get(timeout=TIMEOUT) for _ in range(2)]
    pool.terminate()
    for result in [*running, waiting]:
        with pytest.raises(proctor.PoolTerminatedError):
            result.get(TIMEOUT)
    assert not any(pid_exists(pid) for pid in pids)
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(_square, (1,))
    started.close()


def test_the_with_block_terminates_the_pool(ctx):
    pool, started, _release = _pool_with_events(ctx)
    with pool:
        blocked = pool.apply_async(_report_and_block)
        pid = started.get(timeout=TIMEOUT)
    with pytest.raises(proctor.PoolTerminatedError):
        blocked.get(TIMEOUT)
    wait_until(lambda: not pid_exists(pid), timeout=TIMEOUT)
    started.close()


def test_close_and_join_run_every_task(ctx):
    pool = ctx.Pool(2)
    mapped = pool.map_async(_square, range(50))
    iterator = pool.imap(_square, range(40))  # more than the read-ahead: join reads the rest
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(_square, (1,))
    pool.join(TIMEOUT)
    assert mapped.get(0) == [x * x for x in range(50)]
    assert list(iterator) == [x * x for x in range(40)]


def _wait_for(event, value):
    event.wait(TIMEOUT)
    return value


class _ThreadThatSeemsStopped:
    """A thread whose join() returns at once and is_alive() says False: what Python
    <= 3.12 leaves after a KeyboardInterrupt interrupted Thread.join()."""

    def __init__(self, thread):
        self._thread = thread

    def join(self, timeout=None):
        return None

    def is_alive(self):
        return False


def test_join_waits_for_the_dispatcher_itself_not_for_what_its_thread_says(ctx):
    # A Ctrl-C in join() could mark the dispatcher thread stopped while it ran: a
    # second join() (the exit's) then returned at once and closed the wake-up pipe
    # under it, dropping the tasks left ("exiting does not lose work").
    release = ctx.Event()
    pool = ctx.Pool(2)
    try:
        results = [pool.apply_async(_wait_for, (release, n)) for n in range(4)]
        dispatcher = pool._dispatcher
        real_thread = dispatcher._thread
        dispatcher._thread = _ThreadThatSeemsStopped(real_thread)

        def release_once_joining():
            wait_until(lambda: dispatcher._joining, timeout=TIMEOUT)
            release.set()

        helper = threading.Thread(target=release_once_joining)
        helper.start()
        pool.close()
        pool.join(TIMEOUT)
        helper.join(TIMEOUT)
        assert all(result.ready() for result in results)
        assert [result.get(0) for result in results] == [0, 1, 2, 3]
        real_thread.join(TIMEOUT)
        assert not real_thread.is_alive()
    finally:
        release.set()
        pool.terminate()


def test_maxtasksperchild_replaces_workers(ctx):
    with ctx.Pool(1, maxtasksperchild=2) as pool:
        pids = pool.map(_pid, range(6), chunksize=1)
    assert len(set(pids)) == 3


def test_get_with_a_timeout_raises_the_stdlib_timeout_error(ctx):
    pool, started, release = _pool_with_events(ctx, processes=1)
    with pool:
        blocked = pool.apply_async(_report_and_block, (1,))
        started.get(timeout=TIMEOUT)
        with pytest.raises(multiprocessing.TimeoutError):
            blocked.get(0.01)
        assert not blocked.ready()
        with pytest.raises(ValueError, match="not ready"):
            blocked.successful()
        release.set()
        assert blocked.get(TIMEOUT) == 1
    started.close()


def test_a_pool_larger_than_the_descriptor_limit_is_refused_before_any_worker_starts():
    import resource

    limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limit != resource.RLIM_INFINITY  # Linux and macOS always set one
    before = set(proctor.active_children())
    with pytest.raises(ValueError, match="RLIMIT_NOFILE"):
        proctor.Pool(limit)  # at least 4 descriptors a worker: cannot fit
    assert set(proctor.active_children()) == before


def test_lifecycle_misuse_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="at least 1"):
        proctor.Pool(0)
    with pytest.raises(TypeError, match="processes"):
        proctor.Pool("2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="initializer"):
        proctor.Pool(1, initializer=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="maxtasksperchild"):
        proctor.Pool(1, maxtasksperchild=0)
    for wrong in (0.5, "12"):  # a TypeError, and a ValueError as the stdlib raises
        with pytest.raises(TypeError, match="maxtasksperchild"):
            proctor.Pool(1, maxtasksperchild=wrong)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="maxtasksperchild"):
            proctor.Pool(1, maxtasksperchild=wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="context"):
        proctor.Pool(1, context=multiprocessing.get_context())
    pool = proctor.Pool(1)
    with pytest.raises(ValueError, match="still running"):
        pool.join(TIMEOUT)
    with pytest.raises(TypeError, match="chunksize"):
        pool.map(_square, range(3), chunksize=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(pool)
    pool.close()
    pool.join(TIMEOUT)
    pool.join(TIMEOUT)  # idempotent
    pool.terminate()


class _FailingThirdStart(proctor.Process):
    starts = 0

    def start(self):
        type(self).starts += 1
        if type(self).starts == 3:
            raise OSError("induced start failure")
        super().start()


def test_a_worker_that_fails_to_start_leaves_no_worker_behind():
    import types

    context = types.SimpleNamespace(Process=_FailingThirdStart)
    with pytest.raises(OSError, match="induced start failure"):
        proctor.Pool(5, context=context)
    assert _FailingThirdStart.starts == 3
    assert proctor.active_children() == []


def test_an_unclosed_pool_warns_and_is_terminated_when_collected():
    import gc

    pool = proctor.Pool(1)
    pid = pool.apply(_pid)
    dispatcher = pool._dispatcher
    assert dispatcher is not None
    with pytest.warns(ResourceWarning, match="unclosed pool"):
        del pool
        gc.collect()
    dispatcher._thread.join(TIMEOUT)
    assert not dispatcher._thread.is_alive()
    assert not pid_exists(pid)


def test_a_pool_held_only_by_its_results_lives_until_they_are_collected():
    # As with the stdlib: a result keeps its pool, so a one-line pool gets its value.
    import gc

    # (Values taken outside the asserts: pytest's rewriting of an assert keeps every
    # part of its expression, the pool among them, until the assert is done.)
    with pytest.warns(ResourceWarning, match="unclosed pool"):
        applied = proctor.Pool(1).apply_async(pow, (3, 2)).get(TIMEOUT)
        mapped = proctor.Pool(1).map_async(abs, [-1, -2]).get(TIMEOUT)
        in_order = list(proctor.Pool(2).imap(abs, [-1, -2, -3]))
        unordered = sorted(proctor.Pool(2).imap_unordered(abs, [-1, -2]))
        gc.collect()  # (each pool goes with its result: terminated, as when unclosed)
    assert (applied, mapped, in_order, unordered) == (9, [1, 2], [1, 2, 3], [1, 2])


def test_pool_is_on_the_front_door_the_contexts_and_proctor_pool():
    from proctor import pool as pool_module

    assert proctor.Pool is pool_module.Pool
    assert issubclass(proctor.WorkerLostError, proctor.ProcessError)
    assert issubclass(proctor.PoolTerminatedError, multiprocessing.ProcessError)
    with proctor.get_context("fork").Pool(1) as pool:
        assert isinstance(pool, proctor.Pool)
        assert pool.apply(_pid) != os.getpid()


# -- task timeouts, cancellation, a failing initializer -------------------------------


def test_a_stuck_task_times_out_and_its_worker_is_replaced(ctx):
    pool, started, _release = _pool_with_events(ctx)
    with pool:
        stuck = pool.apply_async(_block, ("stuck",), timeout=0.5)
        others = pool.map_async(_square, range(20), chunksize=1)
        with pytest.raises(proctor.TaskTimeoutError) as info:
            stuck.get(TIMEOUT)
        error = info.value
        assert isinstance(error, proctor.TimeoutError)
        assert isinstance(error, multiprocessing.TimeoutError)
        assert isinstance(error, TimeoutError)
        assert error.timeout == 0.5
        assert error.function.endswith("_block")
        assert error.inputs == "'stuck'"
        assert f"pool worker pid {error.pid}" in str(error)
        assert "SIGKILL" in str(error)
        assert others.get(TIMEOUT) == [x * x for x in range(20)]
        wait_until(lambda: not pid_exists(error.pid), timeout=TIMEOUT)
        # Replaced: the pool still works, without the killed worker.
        assert error.pid not in set(pool.map(_pid, range(8), chunksize=1))
        assert pool.apply(_square, (3,), timeout=TIMEOUT) == 9  # in time: the value
        assert pool.apply(_square, (4,), timeout=math.inf) == 16  # no limit
    started.close()


def test_map_and_imap_with_task_timeout_fail_only_the_hanging_chunk(ctx):
    pool, started, _release = _pool_with_events(ctx)
    with pool:
        with pytest.raises(proctor.TaskTimeoutError, match="input item 3") as info:
            pool.map(_block_at, range(6), chunksize=1, task_timeout=1.0)
        assert info.value.timeout == 1.0
        # The budget of a chunk is task_timeout per item; imap raises at the chunk's
        # position and goes on.
        iterator = pool.imap(_block_at, range(6), chunksize=2, task_timeout=0.5)
        assert [iterator.next(TIMEOUT), iterator.next(TIMEOUT)] == [0, 1]
        with pytest.raises(proctor.TaskTimeoutError) as info:
            iterator.next(TIMEOUT)
        assert info.value.inputs == "input items 2..3"
        assert info.value.timeout == 1.0
        assert [iterator.next(TIMEOUT), iterator.next(TIMEOUT)] == [4, 5]
        with pytest.raises(StopIteration):
            iterator.next(TIMEOUT)
        assert pool.starmap(_add, [(1, 2), (3, 4)], task_timeout=TIMEOUT) == [3, 7]
    started.close()


def test_cancel_before_start_drops_the_task(ctx):
    errors = []
    pool, started, release = _pool_with_events(ctx, processes=1)
    with pool:
        running = pool.apply_async(_report_and_block, ("first",))
        worker = started.get(timeout=TIMEOUT)
        queued = pool.apply_async(_report, ("cancelled",), error_callback=errors.append)
        assert queued.cancel() is True
        assert queued.cancelled()
        assert queued.ready()
        assert not queued.successful()
        with pytest.raises(concurrent.futures.CancelledError, match=r"cancelled by cancel\(\)"):
            queued.get(TIMEOUT)
        assert len(errors) == 1
        assert isinstance(errors[0], concurrent.futures.CancelledError)
        assert queued.cancel() is True  # again: still cancelled
        release.set()
        assert running.get(TIMEOUT) == "first"
        assert running.cancel() is False  # completed: too late
        assert not running.cancelled()
        # One worker, tasks in order: had the cancelled task run, its report would
        # come before the marker's.
        assert pool.apply(_report, ("marker",)) == "marker"
        assert started.get(timeout=TIMEOUT) == "marker"
        assert pool.apply(_pid) == worker  # nothing was killed
    started.close()


def test_cancel_while_running_kills_and_replaces_the_worker(ctx):
    pool, started, _release = _pool_with_events(ctx)
    with pool:
        running = pool.apply_async(_report_and_block, ("running",))
        victim = started.get(timeout=TIMEOUT)
        assert running.cancel() is True
        assert running.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            running.get(TIMEOUT)
        wait_until(lambda: not pid_exists(victim), timeout=TIMEOUT)
        # A map_async cancelled while its chunks run: every worker holding one is killed.
        mapped = pool.map_async(_report_and_block, range(2), chunksize=1)
        victims = {started.get(timeout=TIMEOUT) for _ in range(2)}
        assert mapped.cancel() is True
        with pytest.raises(concurrent.futures.CancelledError):
            mapped.get(TIMEOUT)
        wait_until(lambda: not any(pid_exists(pid) for pid in victims), timeout=TIMEOUT)
        pids = set(pool.map(_pid, range(8), chunksize=1))
        assert not pids & (victims | {victim})
        assert pool.map(_square, range(5)) == [0, 1, 4, 9, 16]
    started.close()


def test_a_failing_initializer_breaks_the_pool_once(ctx):
    errors = []
    pool = ctx.Pool(2, initializer=_failing_initializer, initargs=("no database",))
    early = pool.apply_async(_square, (2,), error_callback=errors.append)
    with pytest.raises(proctor.InitializerError, match="_failing_initializer") as info:
        early.get(TIMEOUT)
    error = info.value
    assert error.initializer.endswith("_failing_initializer")
    cause = error.__cause__
    assert isinstance(cause, LookupError)
    assert str(cause) == "no database"
    assert isinstance(cause.__cause__, proctor.RemoteTraceback)
    assert "_failing_initializer" in cause.__cause__.tb_text
    assert isinstance(errors[0], proctor.InitializerError)
    # Every later call fails the same way, and no worker is started again.
    with pytest.raises(proctor.InitializerError):
        pool.apply_async(_square, (3,)).get(TIMEOUT)
    with pytest.raises(proctor.InitializerError):
        pool.map(_square, range(4))
    with pytest.raises(proctor.InitializerError):
        list(pool.imap(_square, range(4)))
    assert "state=broken" in repr(pool)
    wait_until(lambda: not proctor.active_children(), timeout=TIMEOUT)
    pool.close()
    pool.join(TIMEOUT)
    pool.terminate()


def test_a_broken_pool_can_be_joined_without_close_and_used_in_a_with_block(ctx):
    with ctx.Pool(1, initializer=_failing_initializer, initargs=("x",)) as pool:
        with pytest.raises(proctor.InitializerError):
            pool.apply(_square, (2,))
        pool.join(TIMEOUT)


def test_bad_timeouts_raise():
    with proctor.Pool(1) as pool:
        for bad in (0, -1, float("nan")):
            with pytest.raises(ValueError, match="timeout must be a positive number"):
                pool.apply_async(_square, (1,), timeout=bad)
            with pytest.raises(ValueError, match="task_timeout must be a positive number"):
                pool.map(_square, range(3), task_timeout=bad)
        for wrong in ("1", True, [1]):
            with pytest.raises(TypeError, match="timeout must be a number of seconds"):
                pool.apply(_square, (1,), timeout=wrong)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="task_timeout must be a number of seconds"):
                pool.imap(_square, range(3), task_timeout=wrong)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="task_timeout"):
            pool.starmap_async(_add, [(1, 2)], task_timeout="2")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="task_timeout"):
            pool.imap_unordered(_square, range(3), task_timeout=-1j)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            pool.apply_async(_square, (1,), {}, None, None, 5)  # type: ignore[misc]
        assert pool.apply(_square, (3,)) == 9  # nothing was submitted by the bad calls


def test_task_errors_are_on_the_front_door_and_proctor_pool():
    from proctor import pool as pool_module

    assert pool_module.TaskTimeoutError is proctor.TaskTimeoutError
    assert pool_module.InitializerError is proctor.InitializerError
    assert issubclass(proctor.TaskTimeoutError, proctor.ProcessTimeoutError)
    assert issubclass(proctor.InitializerError, proctor.ProcessError)
    error = proctor.TaskTimeoutError("m", 42, 1.5, "f", "'x'")
    import pickle

    copy = pickle.loads(pickle.dumps(error))
    assert (copy.pid, copy.timeout, copy.function, copy.inputs) == (42, 1.5, "f", "'x'")


def test_threads_waiting_on_a_result_all_wake_when_it_is_delivered():
    """Every thread in get() wakes when the dispatcher delivers, however their waits
    and the delivery interleave (the result makes its lock only when a thread has to
    wait, and the delivery may look for it before it is made)."""
    from proctor._pool._results import ApplyResult

    for round_number in range(200):
        result = ApplyResult()
        got: list[object] = []
        start = threading.Barrier(4)

        def waiter(result: ApplyResult, got: list[object], start: threading.Barrier) -> None:
            start.wait(timeout=10)
            got.append(result.get(timeout=10))

        threads = [threading.Thread(target=waiter, args=(result, got, start)) for _ in range(3)]
        for thread in threads:
            thread.start()
        start.wait(timeout=10)
        result._deliver(0, True, round_number)
        for thread in threads:
            thread.join(timeout=20)
        assert got == [round_number] * 3
        assert result.ready() and result.successful()


def test_apply_result_delivered_once_and_named_when_cancelled():
    """An ``ApplyResult`` on its own (no pool): a delivery completes it once, with its
    callback; a cancel names the call from the task's describe and the function's name;
    it takes attributes and weak references as the stdlib's result does."""
    import functools
    import weakref

    from proctor._pool._pool import call_inputs
    from proctor._pool._results import ApplyResult

    values = []
    done = ApplyResult(values.append, None, None, functools.partial(call_inputs, (1,), {}), "f")
    done._deliver(0, True, 42)
    done._deliver(0, True, 43)  # a second delivery changes nothing
    assert (done.get(0), values) == (42, [42])
    errors = []
    describe = functools.partial(call_inputs, (1, "x"), {"b": [2]})
    cancelled = ApplyResult(None, errors.append, None, describe, "mod.f")
    assert cancelled.cancel() is True
    cancelled._deliver(0, True, 1)  # the outcome that comes after a cancel is dropped
    with pytest.raises(concurrent.futures.CancelledError, match=r"^mod\.f\(1, 'x', b=\[2\]\) was"):
        cancelled.get(0)
    assert len(errors) == 1
    cancelled.note = "mine"
    assert cancelled.note == "mine"
    assert weakref.ref(cancelled)() is cancelled


def test_apply_says_what_is_wrong_with_its_args_and_kwds():
    with proctor.Pool(1) as pool:
        with pytest.raises(TypeError, match=r"args must be an iterable .* not int"):
            pool.apply(abs, 5)
        with pytest.raises(TypeError, match=r"args=\(value,\)"):
            pool.apply_async(abs, "x")
        with pytest.raises(TypeError, match=r"kwds must be a mapping .* not list"):
            pool.apply(abs, (1,), [("a", 1)])
        with pytest.raises(TypeError, match=r"kwds must be a mapping .* not NoneType"):
            pool.apply(abs, (1,), None)
        assert pool.apply(abs, [-3]) == 3  # any iterable of arguments, as the stdlib
        assert pool.apply(int, ("7",), {"base": 8}) == 7
