"""How the pool hands out work: chunk sizes, tasks queued in a worker, memory limits.

The dispatcher queues several short tasks in a worker (to hide its round trip), so
these tests check what that must never change: a dead worker's queued tasks run
once, elsewhere; a task with a timeout never waits behind another; an idle worker
is served before a task is queued behind a busy one.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading

import pytest

import proctor
from helpers import wait_until
from proctor._pool import _dispatcher, _worker
from proctor._pool._pool import MAX_CHUNKS_PER_WORKER, guided_chunks
from proctor._pool._results import CHUNK_SECONDS, MAX_CHUNK, ChunkSizer
from proctor._pool._worker import resident_memory
from proctor._start import _outcome
from proctor.connection import wait

TIMEOUT = 60

_worker_state: dict[str, object] = {}


def _install(started, ran, release):
    _worker_state.update(started=started, ran=ran, release=release)


def _report_and_block(value):
    _worker_state["started"].put(os.getpid())
    _worker_state["release"].wait(TIMEOUT)
    return value


def _record(value):
    _worker_state["ran"].put(value)
    return value


def _identity(value):
    return value


def _pid(_=None):
    return os.getpid()


def _memory(_=None):
    return resident_memory()


_leaked: list[bytes] = []


def _leak(size):
    _leaked.append(b"x" * size)  # written, so resident
    return os.getpid()


# -- chunk sizes (no processes) --------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 7, 100, 10_000, 1_000_000])
@pytest.mark.parametrize("workers", [1, 2, 8])
def test_guided_chunks_cover_the_input_shrinking_to_a_floor(length, workers):
    sizes = guided_chunks(length, workers)
    assert sum(sizes) == length
    assert all(size >= 1 for size in sizes)
    assert sizes == sorted(sizes, reverse=True)  # big first, small at the end
    floor = max(1, length // (workers * MAX_CHUNKS_PER_WORKER))
    assert all(size >= floor for size in sizes[:-1])  # only the last may be smaller
    # Bounded: a long input of quick items is not cut into a tail of tiny chunks.
    assert len(sizes) <= workers * MAX_CHUNKS_PER_WORKER + workers * 4 * 16


def test_guided_chunks_end_with_single_items_for_a_short_input():
    # 100 slow items on 2 workers: the last chunks are single items, so the
    # workers finish within about one item's time of each other.
    sizes = guided_chunks(100, 2)
    assert sizes[0] == 13
    assert sizes[-3:] == [1, 1, 1]


def test_an_explicit_chunksize_is_fixed():
    sizer = ChunkSizer(7)
    sizer.observe(10.0, 7)
    assert [sizer.next_size() for _ in range(3)] == [7, 7, 7]


def test_adaptive_chunks_start_at_one_then_at_most_double_up_to_the_target():
    sizer = ChunkSizer(None)
    assert sizer.next_size() == 1  # nothing measured
    sizer.observe(1e-6, 1)  # quick items: the target is CHUNK_SECONDS of them
    sizes = [sizer.next_size() for _ in range(20)]
    assert sizes[:4] == [2, 4, 8, 16]
    assert max(sizes) <= min(MAX_CHUNK, int(CHUNK_SECONDS / 1e-6))
    assert sizes[-1] == max(sizes)


def test_adaptive_chunks_shrink_at_once_when_items_turn_slow():
    sizer = ChunkSizer(None)
    sizer.observe(1e-6, 1)
    for _ in range(20):
        sizer.next_size()
    for _ in range(10):
        sizer.observe(1.0, 1)  # one second an item
    assert sizer.next_size() == 1


def test_how_many_tasks_a_worker_holds_follows_their_duration():
    pool = proctor.Pool(1)
    try:
        dispatcher = pool._dispatcher
        dispatcher._task_seconds = None
        assert dispatcher._depth() == 1  # unknown: they may be long
        dispatcher._task_seconds = _dispatcher.LONG_TASK
        assert dispatcher._depth() == 1
        dispatcher._task_seconds = 1e-3
        assert dispatcher._depth() == 2 + int(_dispatcher.QUEUED_WORK / 1e-3)
        dispatcher._task_seconds = 1e-7
        assert dispatcher._depth() == _dispatcher.MAX_HELD
    finally:
        pool.terminate()


# -- the pipeline's guarantees, with processes ----------------------------------------


def test_imap_with_the_default_chunksize_batches_quick_items(ctx):
    with ctx.Pool(2) as pool:
        iterator = pool.imap(_identity, range(20_000))
        assert list(iterator) == list(range(20_000))
        # Far fewer chunks than items: sizes grew from the measured durations.
        assert iterator._submitted < 20_000 // 5
        unordered = pool.imap_unordered(_identity, range(5_000))
        assert sorted(unordered) == list(range(5_000))


def test_a_dead_worker_fails_the_task_it_ran_and_its_queued_tasks_run_once(ctx):
    started, ran, release = ctx.Queue(), ctx.Queue(), ctx.Event()
    with ctx.Pool(1, initializer=_install, initargs=(started, ran, release)) as pool:
        # Quick tasks first: the pool then queues several tasks in the worker.
        assert pool.map(_identity, range(200), chunksize=1) == list(range(200))
        assert pool._dispatcher._depth() > 1
        victim = pool.apply_async(_report_and_block, ("victim",))
        queued = [pool.apply_async(_record, (n,)) for n in range(5)]
        pid = started.get(timeout=TIMEOUT)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(proctor.WorkerLostError, match="_report_and_block"):
            victim.get(TIMEOUT)
        assert [result.get(TIMEOUT) for result in queued] == list(range(5))
        # Each queued task ran exactly once, on the replacement worker.
        assert sorted(ran.get(timeout=TIMEOUT) for _ in range(5)) == list(range(5))
        assert ran.empty()
        assert pool.apply(_pid) != pid


def test_two_blocking_tasks_on_two_workers_both_start(ctx):
    started, ran, release = ctx.Queue(), ctx.Queue(), ctx.Event()
    with ctx.Pool(2, initializer=_install, initargs=(started, ran, release)) as pool:
        pool.map(_identity, range(200), chunksize=1)  # quick: the pool pipelines
        results = [pool.apply_async(_report_and_block, (n,)) for n in range(2)]
        pids = {started.get(timeout=TIMEOUT) for _ in range(2)}
        assert len(pids) == 2  # each on its own worker, not one queued behind the other
        release.set()
        assert [result.get(TIMEOUT) for result in results] == [0, 1]


def test_a_task_with_a_timeout_is_not_queued_behind_a_blocked_one(ctx):
    started, ran, release = ctx.Queue(), ctx.Queue(), ctx.Event()
    with ctx.Pool(1, initializer=_install, initargs=(started, ran, release)) as pool:
        pool.map(_identity, range(200), chunksize=1)
        blocked = pool.apply_async(_report_and_block, ("blocked",))
        started.get(timeout=TIMEOUT)
        timed = pool.apply_async(_identity, ("timed",), timeout=0.5)
        # Its clock has not started: it waits in the pool, not in the busy worker.
        release.set()
        assert blocked.get(TIMEOUT) == "blocked"
        assert timed.get(TIMEOUT) == "timed"


def test_a_thread_that_submits_in_a_loop_lets_the_dispatcher_send_tasks_meanwhile():
    # With a switch interval of minutes, the interpreter never takes the GIL from the
    # submitting thread: the dispatcher sends tasks during the loop only because a
    # submit that finds a backlog hands it the GIL (YIELD_BACKLOG).
    interval = sys.getswitchinterval()
    with proctor.get_context("fork").Pool(2) as pool:
        pool.map(_identity, range(100), chunksize=1)  # every worker ready, tasks quick
        dispatcher = pool._dispatcher
        results = []
        sys.setswitchinterval(300.0)
        try:
            while len(results) < 20 * _dispatcher.YIELD_BACKLOG:
                results.append(pool.apply_async(_identity, (len(results),)))
                if len(dispatcher.pending_results()) < len(results):
                    break  # the dispatcher took some while this thread kept submitting
        finally:
            sys.setswitchinterval(interval)
        assert len(dispatcher.pending_results()) < len(results)
        assert [result.get(TIMEOUT) for result in results] == list(range(len(results)))


def test_tasks_submitted_while_every_worker_is_busy_all_run_once_it_frees():
    # While the queue waits on busy workers, a submit does not wake the dispatcher:
    # the worker's next result does, and everything queued behind it then goes.
    ctx = proctor.get_context("fork")
    started, ran, release = ctx.Queue(), ctx.Queue(), ctx.Event()
    with ctx.Pool(1, initializer=_install, initargs=(started, ran, release)) as pool:
        pool.map(_identity, range(200), chunksize=1)  # quick: the pool pipelines
        blocked = pool.apply_async(_report_and_block, ("blocked",))
        started.get(timeout=TIMEOUT)
        count = 3 * _dispatcher.YIELD_BACKLOG
        queued = [
            pool.apply_async(_identity, (n,), timeout=TIMEOUT if n % 50 == 0 else None)
            for n in range(count)
        ]
        release.set()
        assert blocked.get(TIMEOUT) == "blocked"
        assert [result.get(TIMEOUT) for result in queued] == list(range(count))


# -- max_memory_per_child --------------------------------------------------------------


def test_a_worker_past_its_memory_limit_is_replaced_after_its_task(ctx):
    with ctx.Pool(1) as probe:
        baseline = probe.apply(_memory)
    if baseline is None:
        pytest.skip("this system does not report a process's resident memory")
    limit = baseline + (64 << 20)
    with ctx.Pool(1, max_memory_per_child=limit) as pool:
        first = pool.apply(_pid)
        assert pool.apply(_pid) == first  # under the limit: the same worker
        assert pool.apply(_leak, (128 << 20,)) == first  # the leaking task's result is kept
        replacement = pool.apply(_pid)
        assert replacement != first
        assert pool.map(_identity, range(10)) == list(range(10))


@pytest.mark.parametrize(
    ("limit", "error"), [(0, ValueError), (-5, ValueError), ("1G", TypeError), (1.5, TypeError)]
)
def test_max_memory_per_child_must_be_a_positive_int(limit, error):
    with pytest.raises(error, match="max_memory_per_child"):
        proctor.Pool(1, max_memory_per_child=limit)


# -- large arrays travel as memfds, not through pickle ---------------------------------


def _array_of(value):
    import numpy

    return numpy.full(1 << 18, value, dtype=numpy.float64)  # 2 MiB: out of band


def _describe(array):
    return (float(array.sum()), array.shape, str(array.dtype))


def test_large_numpy_arguments_and_results_arrive_whole_and_writable(ctx):
    numpy = pytest.importorskip("numpy")
    with ctx.Pool(2) as pool:
        result = pool.apply(_array_of, (3.0,))
        assert result.shape == (1 << 18,) and float(result.sum()) == 3.0 * (1 << 18)
        result[0] = -1.0  # writable: the parent owns the mapping
        results = pool.map(_array_of, range(6), chunksize=2)
        assert [float(a[0]) for a in results] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        argument = numpy.arange(1 << 18, dtype=numpy.float64)
        expected = (float(argument.sum()), argument.shape, "float64")
        assert pool.apply(_describe, (argument,)) == expected
        assert pool.map(_describe, [argument, argument * 2])[1][0] == 2 * expected[0]
        assert list(pool.imap(_describe, [argument], chunksize=1)) == [expected]
    with proctor.ProcessPoolExecutor(1, mp_context=ctx) as executor:
        assert executor.submit(_describe, argument).result(TIMEOUT) == expected
        assert float(executor.submit(_array_of, 2.0).result(TIMEOUT)[7]) == 2.0


def _leak_at(x, victim, size):
    if x == victim:
        _leak(size)
    return x


def test_a_worker_that_retires_for_memory_hands_back_its_queued_tasks(ctx):
    with ctx.Pool(1) as probe:
        baseline = probe.apply(_memory)
    if baseline is None:
        pytest.skip("this system does not report a process's resident memory")
    with ctx.Pool(1, max_memory_per_child=baseline + (64 << 20)) as pool:
        pool.map(_identity, range(200), chunksize=1)  # quick: the pool queues tasks
        first = pool.apply(_pid)
        # The worker retires after item 20; the items queued behind it run on the
        # replacement, once each, and none is reported lost.
        results = pool.starmap(_leak_at, [(x, 20, 128 << 20) for x in range(100)], chunksize=1)
        assert results == list(range(100))
        assert pool.apply(_pid) != first


async def _wait_then_value(event, value):
    event.wait(TIMEOUT)  # (blocking its loop: nothing else runs there meanwhile)
    return value


def test_a_result_sent_just_before_the_worker_exits_is_kept_when_a_send_to_it_fails(ctx):
    # A worker past its memory limit sends its result and exits. The dispatcher,
    # busy (here: in a callback) while that happened, then sends the exited worker
    # a task, which fails (EPIPE): the result still in the pipe is taken, not reported
    # lost ("died (exit code 0)"), and the task whose send failed runs elsewhere.
    # (A coroutine task, with task_concurrency 2: its worker may take another task
    # beside it whatever the timing, as it would one queued behind a quick task.)
    in_callback, gate = threading.Event(), threading.Event()

    def block_the_dispatcher(_):
        in_callback.set()
        gate.wait(TIMEOUT)

    go = ctx.Event()
    with ctx.Pool(2, max_memory_per_child=1, task_concurrency=2) as pool:
        dispatcher = pool._dispatcher
        wait_until(lambda: all(worker.ready for worker in dispatcher._workers), TIMEOUT)
        late = pool.apply_async(_wait_then_value, (go, "late"))
        wait_until(lambda: any(worker.held for worker in dispatcher._workers), TIMEOUT)
        (holder,) = [worker for worker in dispatcher._workers if worker.held]
        blocker = pool.apply_async(_identity, ("blocker",), callback=block_the_dispatcher)
        assert in_callback.wait(TIMEOUT)
        try:
            go.set()  # "late" returns; its worker, past the limit, exits
            assert wait([holder.process.sentinel], TIMEOUT)
            after = pool.apply_async(_identity, ("after",))  # sent to the exited worker
        finally:
            gate.set()
        assert late.get(TIMEOUT) == "late"
        assert after.get(TIMEOUT) == "after"
        assert blocker.get(TIMEOUT) == "blocker"


def test_a_thread_pool_never_queues_tasks_in_a_worker():
    # An abandoned thread (terminate(), cancel()) would run what waits in its channel
    # after the pool sent it again elsewhere: thread workers hold one task.
    from proctor.pool import ThreadPool

    with ThreadPool(2) as pool:
        assert pool.map(_identity, range(100), chunksize=1) == list(range(100))
        pool._dispatcher._task_seconds = 1e-6
        assert pool._dispatcher._depth() == 1


def test_an_executor_replaces_a_worker_past_its_memory_limit(ctx):
    with ctx.Pool(1) as probe:
        baseline = probe.apply(_memory)
    if baseline is None:
        pytest.skip("this system does not report a process's resident memory")
    with proctor.ProcessPoolExecutor(
        1, mp_context=ctx, max_memory_per_child=baseline + (64 << 20)
    ) as executor:
        first = executor.submit(_pid).result(TIMEOUT)
        assert executor.submit(_leak, 128 << 20).result(TIMEOUT) == first
        assert executor.submit(_pid).result(TIMEOUT) != first
    with pytest.raises(ValueError, match="max_memory_per_child"):
        proctor.ProcessPoolExecutor(1, max_memory_per_child=0)


def test_a_none_result_travels_as_the_header_alone_and_decodes_to_none():
    for flags, retiring in ((0, False), (_worker.RETIRING, True)):
        frame = _worker._result_frame(7, _outcome.NONE_VALUE, 0.5, flags)
        assert len(frame) == _worker._RESULT_BODY  # the header alone: no pickle follows
        assert _worker.decode(frame) == (7, _worker.DECODED_VALUE, None, 0.5, retiring)
        task_id, outcome, seconds, retired = _worker.decode_result(frame)
        assert (task_id, outcome.value, outcome.exception, seconds, retired) == (
            7,
            None,
            None,
            0.5,
            retiring,
        )
    # A small value is still its pickle, read back whole.
    frame = _worker._result_frame(8, ("value", pickle.dumps([1, 2])), 0.25)
    assert _worker.decode(frame) == (8, _worker.DECODED_VALUE, [1, 2], 0.25, False)
