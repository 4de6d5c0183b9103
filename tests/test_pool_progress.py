"""progress= on the pools' map family: counts, moves inside chunks, ends in the right state."""

from __future__ import annotations

import concurrent.futures
import gc
import io
import logging
import os
import signal
import sys
import threading
import time

import pytest

import proctor
from helpers import wait_until
from pool_tasks import TIMEOUT, _block_at, _install, _worker_state
from pool_tasks import _square as _pool_square
from proctor._pool import _progress
from proctor._pool._results import ApplyResult
from proctor.pool import ThreadPool

tqdm = pytest.importorskip("tqdm")


# -- tasks (module level: spawn and forkserver workers import them) -----------------------


def _square(x):
    return x * x


def _add(a, b):
    return a + b


def _raise_at(x, victim=5):
    if x == victim:
        raise ValueError(f"item {x} failed")
    return x


def _kill_self_at(x, victim=5):
    if x == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _wait_at_five(x):
    """Item 5 waits until the test's callback has seen part of its chunk done."""
    if x == 5:
        return _worker_state["release"].wait(TIMEOUT)
    return x


def _wait_at_four(x):
    """Item 4 waits until the test's callback has been shown the four items before it."""
    if x == 4:
        return _worker_state["release"].wait(TIMEOUT)
    return x


# -- helpers ------------------------------------------------------------------------------


class Recorder:
    """A progress callable: keeps every (done, total) it is called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))

    @property
    def dones(self) -> list[int]:
        return [done for done, _ in self.calls]


@pytest.fixture
def bars(monkeypatch):
    """Bars made by progress=True, drawn into a StringIO; the list of them.

    Made at the first count (no BAR_DELAY), so that every call has a bar to check,
    however fast; the delay has tests of its own.
    """
    monkeypatch.setattr(_progress, "BAR_DELAY", 0)
    made = []
    base = _progress._tqdm_class()

    class Spy(base):
        def __init__(self, *args, **kwargs):
            kwargs["file"] = io.StringIO()
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(_progress, "_bar_class", Spy)
    return made


def _closed(bar) -> bool:
    return bar.disable  # tqdm's close() disables the bar: it never draws again


def _events_pool(ctx, processes=1):
    """A pool whose workers hold the test's queue and release event (pool_tasks)."""
    started = ctx.Queue()
    release = ctx.Event()
    pool = ctx.Pool(processes, initializer=_install, initargs=(started, release))
    return pool, started, release


# -- counting -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["map", "starmap", "imap", "imap_unordered", "map_async"])
def test_a_callable_counts_items_up_to_the_total(ctx, method):
    record = Recorder()
    with ctx.Pool(2) as pool:
        if method == "starmap":
            values = pool.starmap(_add, [(x, x) for x in range(100)], 10, progress=record)
            assert values == [2 * x for x in range(100)]
        elif method == "map_async":
            values = pool.map_async(_square, range(100), 10, progress=record).get(TIMEOUT)
            assert values == [x * x for x in range(100)]
        elif method == "map":
            assert pool.map(_square, range(100), 10, progress=record) == [x * x for x in range(100)]
        else:
            values = list(getattr(pool, method)(_square, range(100), 10, progress=record))
            assert sorted(values) == [x * x for x in range(100)]
    # Items, not chunks: ten chunks of ten count to 100. Called first with nothing
    # done, last with everything done, and the count only grows.
    assert record.calls[0] == (0, 100)
    assert record.calls[-1] == (100, 100)
    assert all(total == 100 for _, total in record.calls)
    assert record.dones == sorted(set(record.dones))


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_the_total_is_none_for_a_generator(method):
    record = Recorder()
    with ThreadPool(2) as pool:
        values = list(getattr(pool, method)(_square, (x for x in range(30)), progress=record))
    assert sorted(values) == [x * x for x in range(30)]
    assert {total for _, total in record.calls} == {None}
    assert record.calls[-1] == (30, None)


def test_the_count_moves_while_a_single_chunk_runs(ctx):
    # One chunk of ten items: item 5 waits until the callback has seen some of the
    # chunk done, which only a report from inside the running chunk can show.
    pool, started, release = _events_pool(ctx)
    record = Recorder()

    def watch(done, total):
        record(done, total)
        if 0 < done < total:
            release.set()

    with pool:
        values = pool.map(_wait_at_five, range(10), chunksize=10, progress=watch)
    assert values[5] is True  # item 5 was released, not timed out
    assert any(0 < done < 10 for done in record.dones)
    assert record.calls[-1] == (10, 10)
    started.close()


def test_a_count_held_back_is_shown_while_a_slow_item_runs(ctx):
    # Items 0..3 end within microseconds: the display, updated at most every 0.1 s,
    # is not given all of them at once. Item 4 waits until it has been shown 4, which
    # only the running chunk's repeated (unchanged) reports can bring about.
    pool, started, release = _events_pool(ctx)
    record = Recorder()

    def watch(done, total):
        record(done, total)
        if done == 4:
            release.set()

    with pool:
        values = pool.map(_wait_at_four, range(6), chunksize=1, progress=watch)
    assert values[4] is True
    assert (4, 6) in record.calls
    assert record.calls[-1] == (6, 6)
    started.close()


def test_a_thread_pool_reports_inside_a_chunk_too():
    release = threading.Event()
    record = Recorder()

    def wait_at_five(x):
        return release.wait(TIMEOUT) if x == 5 else x

    def watch(done, total):
        record(done, total)
        if 0 < done < total:
            release.set()

    with ThreadPool(1) as pool:
        values = pool.map(wait_at_five, range(10), chunksize=10, progress=watch)
    assert values[5] is True
    assert any(0 < done < 10 for done in record.dones)
    assert record.calls[-1] == (10, 10)


# -- tqdm bars ----------------------------------------------------------------------------


def test_progress_true_draws_a_bar_that_ends_full_and_closed(ctx, bars):
    with ctx.Pool(2) as pool:
        assert pool.map(_square, range(50), progress=True) == [x * x for x in range(50)]
    (bar,) = bars
    assert (bar.n, bar.total) == (50, 50)
    assert _closed(bar)
    drawn = bar.fp.getvalue()
    assert "_square" in drawn and "50/50" in drawn


def test_a_bar_appears_while_slow_items_run_and_ends_full(bars, monkeypatch):
    # Made BAR_DELAY into the call, by the running chunk's reports: nothing is done yet.
    monkeypatch.setattr(_progress, "BAR_DELAY", 0.2)
    release = threading.Event()
    with ThreadPool(1) as pool:
        began = time.time()
        result = pool.map_async(
            lambda x: release.wait(TIMEOUT), range(3), chunksize=1, progress=True
        )
        wait_until(lambda: bars and "0/3" in bars[0].fp.getvalue(), timeout=TIMEOUT)
        (bar,) = bars
        assert not result.ready()
        # Its clock was set back to the call's start: elapsed time counts the delay.
        # (Not made at once: it would then have been made within the 0.2 s.)
        assert abs(bar.start_t - began) < 0.1
        release.set()
        assert result.get(TIMEOUT) == [True, True, True]
    assert "3/3" in bar.fp.getvalue()
    assert _closed(bar)


@pytest.mark.parametrize("method", ["map", "imap", "map_async"])
def test_a_call_that_ends_within_the_delay_draws_no_bar(bars, monkeypatch, method):
    # As tqdm's delay=: a bar that would live less than BAR_DELAY is never made (an
    # hour here, so that no machine is slow enough to reach it).
    monkeypatch.setattr(_progress, "BAR_DELAY", 3600)
    with ThreadPool(2) as pool:
        if method == "map":
            assert pool.map(_square, range(50), progress=True)[-1] == 49 * 49
        elif method == "imap":
            assert sum(pool.imap(_square, range(20), progress=True)) == 2470
        else:
            assert pool.map_async(_square, range(50), progress=True).get(TIMEOUT)[-1] == 2401
    assert bars == []


def test_a_bar_made_at_the_end_of_a_long_call_shows_the_final_count(bars, monkeypatch):
    # One chunk that outlasts the delay and ends before its worker's first report
    # (REPORT_INTERVAL): the bar is made at the end, full and closed, not skipped.
    monkeypatch.setattr(_progress, "BAR_DELAY", 0.01)
    with ThreadPool(1) as pool:
        assert pool.map(time.sleep, [0.02] * 2, chunksize=2, progress=True) == [None, None]
    (bar,) = bars
    assert (bar.n, bar.total) == (2, 2)
    assert _closed(bar)
    assert "2/2" in bar.fp.getvalue()


def test_a_bar_of_unknown_length_is_closed_when_imap_ends(bars):
    with ThreadPool(2) as pool:
        assert sum(pool.imap(_square, (x for x in range(20)), progress=True)) == 2470
    (bar,) = bars
    assert (bar.n, bar.total) == (20, None)
    assert _closed(bar)


def test_a_callers_tqdm_bar_is_updated_but_left_open(ctx, monkeypatch):
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)  # no monitor thread to outlive it
    bar = tqdm.tqdm(total=40, file=io.StringIO())
    with ctx.Pool(2) as pool:
        pool.map(_square, range(20), progress=bar)
        pool.map(_square, range(20), progress=bar)  # one bar over two calls
    assert bar.n == 40
    assert not _closed(bar)  # its owner closes it
    bar.close()
    assert "40/40" in bar.fp.getvalue()


# -- ending in the right state ------------------------------------------------------------


def test_a_failed_task_stops_the_bar_at_the_items_done(ctx, bars):
    with ctx.Pool(1) as pool:
        with pytest.raises(ValueError, match="item 5 failed"):
            pool.map(_raise_at, range(10), chunksize=1, progress=True)
        pool.close()
        pool.join(TIMEOUT)
    (bar,) = bars
    # One worker, items in order: 0..4 came, 5 failed; what ran after it is not shown.
    assert bar.n == 5
    assert _closed(bar)


def test_a_killed_worker_stops_the_bar_at_the_items_done(ctx, bars):
    record = Recorder()
    with ctx.Pool(1) as pool:
        with pytest.raises(proctor.WorkerLostError):
            pool.map(_kill_self_at, range(10), chunksize=1, progress=True)
        # imap goes on after the lost chunk, but the loop that meets the error ends.
        with pytest.raises(proctor.WorkerLostError):
            for _ in pool.imap(_kill_self_at, range(10), chunksize=1, progress=record):
                pass
        stopped_at = record.calls[-1]
        pool.close()
        pool.join(TIMEOUT)  # the items after the lost one still run...
    assert bars[0].n == 5
    assert _closed(bars[0])
    # ...but the display had stopped: nothing reached it after the error.
    assert record.calls[-1] == stopped_at
    assert 5 <= stopped_at[0] < 10


def test_a_timed_out_task_stops_the_bar_at_the_items_done(ctx, bars):
    pool, started, _ = _events_pool(ctx)
    with pool, pytest.raises(proctor.TaskTimeoutError):
        pool.map(_block_at, range(6), chunksize=1, task_timeout=0.5, progress=True)
    (bar,) = bars
    assert bar.n == 3  # _block_at hangs at item 3
    assert _closed(bar)
    started.close()


def test_an_interrupted_map_stops_the_bar(bars, monkeypatch):
    # Ctrl-C while map() waits: simulated by the wait itself raising, once the bar
    # has moved; the tasks go on, the bar stays where it stopped.
    release = threading.Event()
    moved = threading.Event()

    def slow_after_two(x):
        if x >= 2:
            moved.set()
            release.wait(TIMEOUT)
        return x

    def interrupted_wait(self, timeout=None):
        assert moved.wait(TIMEOUT)
        raise KeyboardInterrupt

    with ThreadPool(1) as pool:
        with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
            patch.setattr(ApplyResult, "wait", interrupted_wait)
            pool.map(slow_after_two, range(6), chunksize=1, progress=True)
        (bar,) = bars
        assert _closed(bar)
        stopped_at = bar.n
        release.set()
        pool.close()
        pool.join(TIMEOUT)
    assert bar.n == stopped_at <= 2


def test_an_interrupted_imap_stops_the_bar(bars):
    with ThreadPool(2) as pool:
        iterator = pool.imap(_square, range(100), chunksize=10, progress=True)
        assert next(iterator) == 0

        def interrupt():
            raise KeyboardInterrupt

        iterator._ready_chunk = interrupt  # Ctrl-C while next() waits
        iterator._items.clear()
        with pytest.raises(KeyboardInterrupt):
            next(iterator)
        (bar,) = bars
        assert _closed(bar)
        del iterator


def test_an_abandoned_imap_stops_its_bar_when_collected(bars):
    with ThreadPool(2) as pool:
        # A generator: no total, so only the iterator's end can stop the bar.
        iterator = pool.imap(_square, (x for x in range(30)), chunksize=10, progress=True)
        assert next(iterator) == 0
        (bar,) = bars
        del iterator  # a loop left with break
        # Collected once its chunks in flight are done (they hold it).
        wait_until(lambda: gc.collect() >= 0 and _closed(bar), timeout=TIMEOUT)
        assert bar.total is None


def test_a_cancelled_map_async_stops_the_bar(bars):
    release = threading.Event()
    with ThreadPool(1) as pool:
        result = pool.map_async(
            lambda x: release.wait(TIMEOUT), range(4), chunksize=1, progress=True
        )
        assert result.cancel()
        release.set()
        (bar,) = bars
        assert _closed(bar)


def test_a_terminated_pool_stops_the_bar(ctx, bars):
    pool, started, _ = _events_pool(ctx)
    with pool:
        result = pool.map_async(_block_at, range(6), chunksize=1, progress=True)
        (bar,) = bars
        wait_until(lambda: bar.n == 3, timeout=TIMEOUT)  # _block_at hangs at item 3
    with pytest.raises(proctor.PoolTerminatedError):
        result.get(TIMEOUT)
    assert bar.n == 3
    assert _closed(bar)
    started.close()


# -- the executor -------------------------------------------------------------------------


def test_executor_map_counts_items_and_closes_its_bar(ctx, bars):
    record = Recorder()
    with proctor.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        assert list(executor.map(_square, range(30), progress=True)) == [x * x for x in range(30)]
        values = executor.map(_add, range(25), range(30), chunksize=5, progress=record)
        assert list(values) == [2 * x for x in range(25)]
        lazy = executor.map(_square, (x for x in range(12)), buffersize=2, progress=record)
        assert sum(lazy) == 506
    (bar,) = bars
    assert (bar.n, bar.total) == (30, 30)
    assert _closed(bar)
    # The shortest iterable is the total; a generator has none.
    assert (25, 25) in record.calls
    assert record.calls[-1] == (12, None)


def test_executor_map_stops_the_bar_on_a_failure(ctx, bars):
    with (
        proctor.ProcessPoolExecutor(1, mp_context=ctx) as executor,
        pytest.raises(ValueError, match="item 5 failed"),
    ):
        list(executor.map(_raise_at, range(10), chunksize=1, progress=True))
    (bar,) = bars
    assert 5 <= bar.n < 10  # later items may be done before the consumer meets item 5
    assert _closed(bar)


def test_executor_map_stops_the_bar_on_its_timeout(ctx, bars):
    started = ctx.Queue()
    release = ctx.Event()
    with proctor.ProcessPoolExecutor(
        1, mp_context=ctx, initializer=_install, initargs=(started, release)
    ) as executor:
        try:
            # The worker is up and has imported pool_tasks before map()'s clock starts.
            assert list(executor.map(_pool_square, range(2))) == [0, 1]
            results = executor.map(_block_at, range(6), chunksize=1, timeout=1.0, progress=True)
            assert [next(results) for _ in range(3)] == [0, 1, 2]
            # concurrent.futures' own class: not the builtin TimeoutError on 3.10.
            with pytest.raises(concurrent.futures.TimeoutError):
                next(results)  # item 3 hangs
        finally:
            release.set()  # a running task cannot be cancelled: let it end
    (bar,) = bars
    assert bar.n == 3
    assert _closed(bar)
    started.close()


# -- a broken display, and bad values -----------------------------------------------------


def test_a_raising_callable_is_logged_once_and_the_call_goes_on():
    records = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = proctor.get_logger()
    logger.addHandler(handler)
    calls = []

    def broken(done, total):
        calls.append(done)
        raise RuntimeError("drawing failed")

    try:
        with ThreadPool(2) as pool:
            assert pool.map(_square, range(40), chunksize=4, progress=broken) == [
                x * x for x in range(40)
            ]
            assert pool.map(_square, range(5)) == [0, 1, 4, 9, 16]  # the pool goes on
    finally:
        logger.removeHandler(handler)
    assert calls == [0]  # called once, then left alone
    (record,) = records
    assert "progress display" in record.getMessage()
    assert record.exc_info[0] is RuntimeError


@pytest.mark.parametrize("bad", [1, "yes", 0.5, object()])
def test_a_bad_progress_value_raises_type_error_before_anything_is_read(bad):
    items = iter(range(5))
    with ThreadPool(1) as pool:
        for call in (pool.map, pool.imap, pool.imap_unordered, pool.map_async):
            with pytest.raises(TypeError, match="progress must be"):
                call(_square, items, progress=bad)
        with pytest.raises(TypeError, match="progress must be"):
            pool.starmap(_add, items, progress=bad)
    with (
        proctor.ProcessPoolExecutor(1) as executor,
        pytest.raises(TypeError, match="progress must be"),
    ):
        executor.map(_square, items, progress=bad)
    assert next(items) == 0  # nothing was read, so nothing was sent


def test_without_tqdm_progress_true_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import tqdm.auto now fails
    monkeypatch.setattr(_progress, "_bar_class", None)
    items = iter(range(5))
    with ThreadPool(1) as pool:
        with pytest.raises(ImportError, match=r"pip install 'proctor\[progress\]'"):
            pool.map(_square, items, progress=True)
        with pytest.raises(ModuleNotFoundError, match="tqdm"):
            pool.imap(_square, items, progress=True)
        # A callable needs no tqdm.
        record = Recorder()
        assert pool.map(_square, range(3), progress=record) == [0, 1, 4]
        assert record.calls[-1] == (3, 3)
    with (
        proctor.ProcessPoolExecutor(1) as executor,
        pytest.raises(ImportError, match="proctor"),
    ):
        executor.map(_square, items, progress=True)
    assert next(items) == 0


def test_progress_false_or_none_shows_nothing(bars):
    with ThreadPool(1) as pool:
        assert pool.map(_square, range(3), progress=False) == [0, 1, 4]
        assert pool.map(_square, range(3), progress=None) == [0, 1, 4]
    assert bars == []
