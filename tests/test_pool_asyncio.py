"""Pools in an event loop: ``await`` on results, ``async for`` over ``imap``, and
coroutine functions as tasks, run ``task_concurrency`` at a time in each worker.

Every await is bounded by ``asyncio.wait_for``; concurrency is proven by a
rendezvous that completes only when the expected tasks all run at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import signal
import threading
import time

import pytest

import proctor
from pool_tasks import _async_fail_at, _fail_at, _install, _report_and_block, _square
from proctor._pool import _worker
from proctor.pool import ThreadPool

TIMEOUT = 60


def _run(coro):
    """Run ``coro`` in a new event loop, bounded by TIMEOUT."""
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def _fail(message):
    raise ValueError(message)


def _die_at(x, victim=3):
    if x == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


async def _double(x):
    await asyncio.sleep(0)
    return 2 * x


async def _async_fail(message):
    await asyncio.sleep(0)
    raise KeyError(message)


# A worker keeps its event loop from task to task, so tasks running at once in one
# worker meet here (one dict per worker process).
_meetings: dict[str, list] = {}
_running = [0, 0]  # tasks of this worker running now, the most at once


async def _rendezvous(n, key, then="return"):
    """Return this worker's pid once ``n`` tasks with ``key`` run at once in it.

    ``then``: "return"; "hang" (wait until killed); "die" (SIGKILL this worker).
    """
    _running[0] += 1
    _running[1] = max(_running[1], _running[0])
    try:
        meeting = _meetings.setdefault(key, [0, asyncio.Event()])
        meeting[0] += 1
        if meeting[0] >= n:
            meeting[1].set()
        await asyncio.wait_for(meeting[1].wait(), TIMEOUT)
        if then == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if then == "hang":
            await asyncio.sleep(TIMEOUT)
        return os.getpid()
    finally:
        _running[0] -= 1


async def _most_at_once():
    return _running[1]


# -- awaiting results --------------------------------------------------------------


def test_await_apply_async_map_async_and_starmap_async(ctx):
    async def main(pool):
        assert await pool.apply_async(_square, (7,)) == 49
        assert await pool.map_async(_square, range(20)) == [x * x for x in range(20)]
        assert await pool.starmap_async(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert await pool.map_async(_square, []) == []
        result = pool.apply_async(_square, (3,))
        assert await result == 9
        assert await result == 9  # a completed result awaits again
        assert result.get(0) == 9

    with ctx.Pool(2) as pool:
        _run(main(pool))


def test_async_for_over_imap_is_in_order_and_imap_unordered_gets_every_value(ctx):
    async def main(pool):
        ordered = [v async for v in pool.imap(_square, range(200))]
        assert ordered == [x * x for x in range(200)]
        assert [v async for v in pool.imap(_square, range(50), chunksize=7)] == [
            x * x for x in range(50)
        ]
        unordered = [v async for v in pool.imap_unordered(_square, range(200))]
        assert sorted(unordered) == [x * x for x in range(200)]
        assert [v async for v in pool.imap(_square, [])] == []

    with ctx.Pool(2) as pool:
        _run(main(pool))


def test_an_awaited_error_raises_with_the_worker_traceback(ctx):
    async def main(pool):
        with pytest.raises(ValueError, match="bad input") as info:
            await pool.apply_async(_fail, ("bad input",))
        assert "_fail" in str(info.value.__cause__)  # the worker's traceback
        with pytest.raises(ValueError, match="bad input"):
            await pool.map_async(_fail, ["bad input"])
        values = pool.imap(_die_or_fail, range(4), chunksize=1)
        assert [await values.__anext__(), await values.__anext__()] == [0, 1]
        with pytest.raises(ValueError, match="item 2"):
            await values.__anext__()
        assert [v async for v in values] == [3]  # iteration goes on after the error

    with ctx.Pool(2) as pool:
        _run(main(pool))


@pytest.mark.parametrize("concurrency", [1, 2])
def test_async_for_yields_the_values_of_a_failed_chunk_before_its_error(ctx, concurrency):
    # With task_concurrency 2, a coroutine function's chunks run alongside each other
    # on the worker's own loop; a plain one's as in any pool.
    async def main(pool, func):
        values = pool.imap(functools.partial(func, victim=15), range(30), chunksize=10)
        taken = []
        with pytest.raises(ValueError, match="15"):
            async for value in values:
                taken.append(value)
        assert taken == list(range(15))
        assert [v async for v in values] == list(range(20, 30))  # 16-19 did not run

    with ctx.Pool(2, task_concurrency=concurrency) as pool:
        _run(main(pool, _fail_at))
        _run(main(pool, _async_fail_at))


def _die_or_fail(x):
    if x == 2:
        raise ValueError("item 2")
    return x


def test_awaiting_leaves_the_loop_free_and_starts_no_thread(ctx):
    started = ctx.Queue()
    release = ctx.Event()

    async def main(pool):
        threads = threading.active_count()
        results = [pool.apply_async(_report_and_block, (n,)) for n in range(2)]
        waiting = asyncio.ensure_future(asyncio.gather(*results))
        imap_waiting = asyncio.ensure_future(_collect(pool.imap(_report_and_block, [5])))
        await asyncio.sleep(0)
        assert not waiting.done()
        # The loop runs while both awaits wait: this coroutine sets the event the
        # tasks wait for (a blocked loop would never get here).
        assert threading.active_count() == threads
        release.set()
        assert await waiting == [0, 1]
        assert await imap_waiting == [5]

    with ctx.Pool(3, initializer=_install, initargs=(started, release)) as pool:
        _run(main(pool))
    started.close()


async def _collect(iterator):
    return [value async for value in iterator]


def test_a_worker_killed_during_async_for_fails_its_item_and_the_rest_arrive(ctx):
    async def main(pool):
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticking = asyncio.ensure_future(ticker())
        values = []
        lost = []
        iterator = pool.imap(_die_at, range(8), chunksize=1)
        while True:
            try:
                values.append(await iterator.__anext__())
            except StopAsyncIteration:
                break
            except proctor.WorkerLostError as exc:
                lost.append(exc)
        ticking.cancel()
        assert values == [0, 1, 2, 4, 5, 6, 7]
        assert len(lost) == 1 and lost[0].inputs == "input item 3"
        assert lost[0].exitcode == -signal.SIGKILL
        assert ticks > 0  # the loop kept running other coroutines
        assert await pool.apply_async(_square, (4,)) == 16  # and the pool goes on

    with ctx.Pool(2) as pool:
        _run(main(pool))


def test_cancelling_an_await_cancels_a_call_not_yet_started_only(ctx):
    started = ctx.Queue()
    release = ctx.Event()

    async def main(pool):
        running = pool.apply_async(_report_and_block, ("running",))
        assert started.get(timeout=TIMEOUT)  # the only worker runs it
        queued = pool.apply_async(_square, (3,))
        for result in (queued, running):
            waiter = asyncio.ensure_future(_await(result))
            await asyncio.sleep(0)  # it waits on the result now
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert queued.cancelled()  # it had not been sent: the call is cancelled
        with pytest.raises(concurrent.futures.CancelledError):
            await queued
        assert not running.cancelled()  # it runs on, and its result still comes
        release.set()
        assert await running == "running"

    with ctx.Pool(1, initializer=_install, initargs=(started, release)) as pool:
        _run(main(pool))
    started.close()


async def _await(result):
    return await result


def test_threadpool_results_await_too():
    async def main(pool):
        assert await pool.apply_async(_square, (5,)) == 25
        assert await pool.map_async(_square, range(5)) == [0, 1, 4, 9, 16]
        assert [v async for v in pool.imap(_square, range(30))] == [x * x for x in range(30)]
        # A coroutine function runs to its end on the worker thread's own loop.
        assert await pool.map_async(_double, range(5)) == [0, 2, 4, 6, 8]

    with ThreadPool(2) as pool:
        _run(main(pool))


def test_executor_futures_work_with_asyncio_wrap_future(ctx):
    async def main(executor):
        assert await asyncio.wrap_future(executor.submit(_square, 6)) == 36
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(executor, _square, 8) == 64
        with pytest.raises(ValueError, match="oops"):
            await asyncio.wrap_future(executor.submit(_fail, "oops"))
        assert await asyncio.wrap_future(executor.submit(_double, 4)) == 8

    with proctor.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        _run(main(executor))


# -- coroutine functions as tasks -------------------------------------------------------


def test_coroutine_functions_run_as_tasks(ctx):
    with ctx.Pool(2) as pool:
        assert pool.apply(_double, (21,)) == 42
        assert pool.map(_double, range(30)) == [2 * x for x in range(30)]
        assert list(pool.imap(_double, range(10))) == [2 * x for x in range(10)]
        assert sorted(pool.imap_unordered(_double, range(10))) == [2 * x for x in range(10)]
        with pytest.raises(KeyError, match="gone") as info:
            pool.apply(_async_fail, ("gone",))
        assert "_async_fail" in str(info.value.__cause__)


def test_task_concurrency_runs_that_many_coroutine_tasks_at_once_in_a_worker(ctx):
    with ctx.Pool(1, task_concurrency=4) as pool:
        # Four tasks that each finish only once all four run at the same time.
        pids = pool.starmap(_rendezvous, [(4, "four")] * 4, chunksize=1)
        assert len(set(pids)) == 1
        # Never more than four at once: eight tasks meet in two groups of four.
        pool.starmap(_rendezvous, [(4, "a")] * 4 + [(4, "b")] * 4, chunksize=1)
        assert pool.apply(_most_at_once) == 4
        # Plain functions still run, one at a time, in the same workers.
        assert pool.map(_square, range(10)) == [x * x for x in range(10)]

        async def main():
            return [v async for v in pool.imap(_double, range(40))]

        assert _run(main()) == [2 * x for x in range(40)]


def test_the_executor_takes_task_concurrency_too(ctx):
    with proctor.ProcessPoolExecutor(1, mp_context=ctx, task_concurrency=3) as executor:
        futures = [executor.submit(_rendezvous, 3, "three") for _ in range(3)]
        assert len({f.result(TIMEOUT) for f in futures}) == 1
        assert list(executor.map(_double, range(9))) == [2 * x for x in range(9)]


def _wire_bytes(messages):
    """The bytes a connection writes for ``messages``, captured from a real pipe."""
    reader, writer = proctor.Pipe(duplex=False)
    with reader, writer:
        for message in messages:
            writer.send_bytes(message)
        return os.read(reader.fileno(), 1 << 20)


def _wait_until_sleeping(pid):
    """Return once ``pid`` sleeps in a system call (Linux's /proc; elsewhere at once)."""
    path = f"/proc/{pid}/stat"
    if not os.path.exists(path):
        return
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with open(path) as stat:
            if stat.read().rpartition(")")[2].split()[0] == "S":
                return
        time.sleep(0.001)  # polling the kernel's view of the worker, bounded above
    raise AssertionError(f"process {pid} never blocked")


def test_a_worker_starts_the_tasks_it_read_ahead_with_the_first(ctx):
    # The worker blocks, idle, in its receive; then three task frames and STOP reach it
    # in one write, so its one read takes them all. The two behind the first are read
    # already: the loop must start them without waiting for its descriptor to become
    # readable again (it never would). A rendezvous of three proves all three ran at
    # once. (CI once hung on the executor test above when the dispatcher's three
    # frames reached an idle worker together.)
    codec = _worker.PickledCodec()
    func_bytes = codec.dumps_function(_rendezvous)[0]
    payload, _ = codec.dumps_payload(((3, "read ahead"), {}), "the arguments")
    kind = _worker.APPLY | _worker.COROUTINE
    frames = [_worker.encode_task(n, kind, func_bytes, payload) for n in (1, 2, 3)]
    wire = _wire_bytes([*frames, _worker.STOP])
    ours, theirs = proctor.Pipe()
    worker = ctx.Process(target=_worker.worker_main, args=(theirs, None, (), None, False, None, 3))
    worker.start()
    theirs.close()
    try:
        assert _worker.decode_result(ours.recv_bytes(timeout=TIMEOUT))[0] == _worker.INITIALIZER
        _wait_until_sleeping(worker.pid)
        # A duplex Pipe end writes on its own pipe descriptor (fileno() is the read one).
        assert os.write(ours._wfd, wire) == len(wire)
        results = [_worker.decode_result(ours.recv_bytes(timeout=TIMEOUT)) for _ in frames]
        assert sorted(task_id for task_id, _, _, _ in results) == [1, 2, 3]
        assert {outcome.value for _, outcome, _, _ in results} == {worker.pid}
        worker.join(TIMEOUT)
        assert worker.exitcode == 0
    finally:
        worker.kill()
        worker.join(TIMEOUT)
        ours.close()


def test_a_worker_killed_running_concurrent_tasks_fails_those_and_resends_the_rest(ctx):
    with ctx.Pool(1, task_concurrency=3) as pool:
        running = [
            pool.apply_async(_rendezvous, (3, "killed", "hang")),
            pool.apply_async(_rendezvous, (3, "killed", "hang")),
            pool.apply_async(_rendezvous, (3, "killed", "die")),
        ]
        later = [pool.apply_async(_double, (n,)) for n in range(4)]
        for result in running:
            with pytest.raises(proctor.WorkerLostError) as info:
                result.get(TIMEOUT)
            assert info.value.exitcode == -signal.SIGKILL
        # Those not started when it died run on its replacement, once.
        assert [result.get(TIMEOUT) for result in later] == [0, 2, 4, 6]


def test_a_timed_out_coroutine_task_kills_its_worker_and_fails_those_beside_it(ctx):
    with ctx.Pool(1, task_concurrency=2) as pool:
        timed = pool.apply_async(_rendezvous, (2, "timed", "hang"), timeout=1)
        beside = pool.apply_async(_rendezvous, (2, "timed", "hang"))
        with pytest.raises(proctor.TaskTimeoutError):
            timed.get(TIMEOUT)
        with pytest.raises(proctor.WorkerLostError, match="to stop another task"):
            beside.get(TIMEOUT)
        assert pool.apply(_double, (5,)) == 10  # the replacement runs tasks


def test_task_concurrency_is_checked():
    with pytest.raises(ValueError, match="task_concurrency must be at least 1"):
        proctor.Pool(1, task_concurrency=0)
    with pytest.raises(TypeError, match="task_concurrency must be a positive int"):
        proctor.Pool(1, task_concurrency="2")
    with pytest.raises(TypeError, match="task_concurrency"):
        proctor.ProcessPoolExecutor(1, task_concurrency=1.5)


def test_concurrent_workers_retire_after_maxtasksperchild_and_past_their_memory_limit(ctx):
    with ctx.Pool(1, maxtasksperchild=3, task_concurrency=2) as pool:
        assert pool.map(_double, range(10), chunksize=1) == [2 * x for x in range(10)]
        assert pool.map(_square, range(5), chunksize=1) == [x * x for x in range(5)]
    # A limit of one byte: every worker retires after its first tasks; none is lost.
    with ctx.Pool(1, max_memory_per_child=1, task_concurrency=3) as pool:
        pids = pool.starmap(_rendezvous, [(1, "alone")] * 6, chunksize=1)
        assert len(pids) == 6 and len(set(pids)) > 1
        assert pool.map(_double, range(6), chunksize=1) == [2 * x for x in range(6)]
