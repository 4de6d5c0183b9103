"""Pools on a cluster: ``Pool(backend=...)`` / ``ProcessPoolExecutor(backend=...)`` (issue 16).

Each test runs against both engines, each a real one started once for the module: a
Dask ``LocalCluster`` (two worker processes on localhost, one thread each) and a local
Ray runtime (``ray.init(num_cpus=2)``). An engine that is not installed is skipped,
saying how to get it.

The leak check (``no_leaks``) is off here: the engines' own processes and threads live
for the whole module, and come and go as the engine sees fit (a killed worker is
restarted). Instead every test checks that the pool's own dispatcher thread ended, and
the module's teardown that the engines left no child process behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import itertools
import logging
import os
import signal
import sys
import threading
import time
import weakref
from multiprocessing import resource_tracker
from pathlib import Path

import psutil
import pytest

import proctor
from helpers import child_processes, wait_until
from proctor import _integrations

pytestmark = pytest.mark.leaks_ok  # see the module docstring

TESTS_DIR = str(Path(__file__).resolve().parent)
# A user's logger, outside proctor's own ("proctor", which does not propagate to the
# root logger once proctor.get_logger() has run in the process, as the stdlib's
# "multiprocessing" logger does not: a cluster worker captures what reaches the root).
LOGGER = "tests.scale_out"


# -- the engines ----------------------------------------------------------------------


def _dask():
    pytest.importorskip(
        "distributed", reason="Dask's distributed is not installed: pip install 'proctor[dask]'"
    )
    import dask
    from distributed import Client, LocalCluster

    # proctor's promise: a task whose worker dies fails (WorkerLostError) rather than
    # running again; Dask reruns it allowed-failures times first (default 3).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0"
        )
    client = Client(cluster)

    def close():
        client.close()
        cluster.close()

    return client, close


def _ray():
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'proctor[ray]'")
    # Ray's workers import this module's functions by name: they inherit the runtime's
    # environment, made here.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS_DIR, old) if p)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    return "ray", ray.shutdown


@pytest.fixture(scope="module", params=["dask", "ray"])
def backend(request):
    """What ``backend=`` takes for the engine: a Dask ``Client``, or "ray"."""
    tracker = resource_tracker._resource_tracker
    tracker_was_running = tracker._pid is not None
    value, close = {"dask": _dask, "ray": _ray}[request.param]()
    yield value
    close()
    # Dask's nannies start their workers with multiprocessing's spawn, which starts the
    # stdlib's resource tracker in this process: stopped, for the next modules' leak checks.
    if not tracker_was_running and tracker._pid is not None:
        tracker._stop()
    wait_until(lambda: not child_processes(live_only=True), timeout=30)


@pytest.fixture(autouse=True)
def dispatcher_ends():
    """The pool's dispatcher thread ends with the pool (the engine's threads may stay)."""
    yield
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("proctor-")],
        timeout=10,
    )


# -- task functions -------------------------------------------------------------------


def square(x):
    return x * x


def fail(x):
    raise ValueError(f"bad input {x}")


def wait_to_be_killed(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(60)


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def log_and_square(x):
    logging.getLogger(LOGGER).warning("item %d done in pid %d", x, os.getpid())
    return x * x


def total(array, k):
    return float(array.sum()) * k


async def async_square(x):
    await asyncio.sleep(0)
    return x * x


# -- results --------------------------------------------------------------------------


def test_map_imap_starmap_and_apply_give_the_local_results(backend):
    with proctor.Pool(backend=backend) as pool:
        assert pool.map(square, range(50)) == [x * x for x in range(50)]
        assert pool.map(square, range(20), chunksize=3) == [x * x for x in range(20)]
        assert list(pool.imap(square, range(20))) == [x * x for x in range(20)]
        assert sorted(pool.imap_unordered(square, range(20), chunksize=2)) == [
            x * x for x in range(20)
        ]
        assert pool.starmap(pow, [(2, 5), (3, 3)]) == [32, 27]
        assert pool.apply_async(square, (7,)).get(timeout=30) == 49
        assert pool.map(async_square, range(5)) == [0, 1, 4, 9, 16]  # coroutine functions


def test_executor_submit_as_completed_and_map(backend):
    with proctor.ProcessPoolExecutor(backend=backend) as executor:
        futures = {executor.submit(square, x): x for x in range(10)}
        for future in concurrent.futures.as_completed(futures, timeout=30):
            assert future.result() == futures[future] ** 2
        assert list(executor.map(square, range(10), chunksize=4)) == [x * x for x in range(10)]


def test_asyncio_forms(backend):
    async def main(pool, executor):
        value = await pool.apply_async(square, (6,))
        squares = [v async for v in pool.imap(square, range(8))]
        loop = asyncio.get_running_loop()
        ran = await loop.run_in_executor(executor, square, 9)
        return value, squares, ran

    with (
        proctor.Pool(backend=backend) as pool,
        proctor.ProcessPoolExecutor(backend=backend) as executor,
    ):
        result = asyncio.run(asyncio.wait_for(main(pool, executor), 30))
    assert result == (36, [x * x for x in range(8)], 81)


def test_an_error_arrives_with_the_remote_traceback(backend):
    with proctor.Pool(backend=backend) as pool:
        with pytest.raises(ValueError, match="bad input 3") as caught:
            pool.apply(fail, (3,))
        assert isinstance(caught.value.__cause__, proctor.RemoteTraceback)
        assert "in fail" in str(caught.value.__cause__)
        # A failed item fails its map; the others' chunks still ran.
        results = list(pool.imap(square, range(5)))
        assert results == [0, 1, 4, 9, 16]


def test_imap_yields_the_values_of_a_failed_chunk_before_its_error(backend):
    with proctor.Pool(backend=backend) as pool:
        iterator = pool.imap(fail_on_3, range(8), chunksize=4)
        assert [iterator.next(60) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="bad input 3"):
            iterator.next(60)
        assert list(iterator) == [4, 5, 6, 7]  # the next chunk; item 3's chunk ends there


def test_chunks_and_progress(backend):
    # Remote chunks report their items when they end: each count a progress callable
    # sees is a whole number of chunks, and the last is the total.
    seen = []
    with proctor.Pool(backend=backend) as pool:
        values = pool.map(square, range(100), chunksize=25, progress=lambda d, t: seen.append(d))
    assert values == [x * x for x in range(100)]
    assert seen[-1] == 100
    assert all(done % 25 == 0 for done in seen)


def fail_on_3(x):
    if x == 3:
        raise ValueError("bad input 3")
    return x


def test_a_maps_values_are_fetched_together_and_its_error_ends_it(backend):
    # On Dask each fetch of values is a round trip through the scheduler to a worker:
    # a map's chunks that ended well are fetched together once the last one ends
    # (progress counts each as it ends); one that fails completes the map at once.
    if backend == "ray":
        pytest.skip("a Ray call's value comes with its end: nothing to fetch together")
    seen = []
    with proctor.Pool(backend=backend) as pool:
        engine = pool._dispatcher.engine
        fetches = []
        outcomes = engine.outcomes
        engine.outcomes = lambda handles: fetches.append(len(handles)) or outcomes(handles)
        values = pool.map(square, range(8), chunksize=1, progress=lambda d, t: seen.append(d))
        assert values == [x * x for x in range(8)]
        assert fetches == [8]
        assert seen[-1] == 8
        with pytest.raises(ValueError, match="bad input 3"):
            pool.map(fail_on_3, range(8), chunksize=1)


def _hold_long(dispatcher, monkeypatch):
    """Make ``dispatcher`` hold a result that ends for the other running tasks for up to
    30 s (FETCH_HOLD_MAX and the last fetch's duration), as if its tasks had ended close
    together: long enough that a result held when it should not be times out a test's
    ``result(timeout=10)``."""
    from proctor._pool import _remote

    monkeypatch.setattr(_remote, "FETCH_HOLD_MAX", 30.0)
    with dispatcher._lock:
        dispatcher._fetch_seconds = 30.0
        dispatcher._ends.extend([time.monotonic()] * _remote.ENDS_KEPT)


def test_submits_that_end_together_are_each_delivered_once(backend, tmp_path, monkeypatch):
    # Six submitted tasks wait for one signal, then end close together on two Dask
    # workers, the first held for the others: each result is delivered, each fetched
    # exactly once.
    if backend == "ray":
        pytest.skip("a Ray call's value comes with its end: nothing to fetch")
    with proctor.ProcessPoolExecutor(backend=backend) as executor:
        _hold_long(executor._dispatcher, monkeypatch)
        engine = executor._dispatcher.engine
        fetched = []
        outcomes = engine.outcomes
        engine.outcomes = lambda handles: fetched.extend(handles) or outcomes(handles)
        futures = {executor.submit(run_once_when_told, str(tmp_path), x): x for x in range(6)}
        (tmp_path / "go").touch()
        for future in concurrent.futures.as_completed(futures, timeout=30):
            assert future.result() == futures[future]
        assert sorted(future.key for future in fetched) == sorted({f.key for f in fetched})
        assert len(fetched) == 6


def _held_keys(dask_scheduler, keys):
    return [key for key in keys if key in dask_scheduler.tasks]


def test_a_delivered_tasks_value_is_let_go_on_the_cluster(backend):
    # Once a value is delivered its Dask future is released, even while something
    # still holds the future: the scheduler and the workers forget its value.
    if backend == "ray":
        pytest.skip("a Ray call's value travels with its end: nothing is kept for it")
    with proctor.Pool(backend=backend) as pool:
        engine = pool._dispatcher.engine
        futures = []
        submit = engine.submit
        engine.submit = lambda *args: futures.extend(submit(*args)) or futures[-len(args[1]) :]
        assert pool.map(square, range(6), chunksize=1) == [x * x for x in range(6)]
        assert pool.apply_async(square, (7,)).get(timeout=30) == 49
        keys = [future.key for future in futures]
        assert len(keys) == 7
        wait_until(lambda: not backend.run_on_scheduler(_held_keys, keys=keys), timeout=10)


def test_lazy_input_stays_lazy(backend):
    read = itertools.count()

    def endless():
        for x in itertools.count():
            next(read)
            yield x

    with proctor.Pool(backend=backend) as pool:
        first = list(itertools.islice(pool.imap(square, endless(), chunksize=1), 10))
        assert first == [x * x for x in range(10)]
        # Read ahead is bounded (8 chunks per worker slot), however long the input.
        assert next(read) < 10 + 8 * 2 + 2


# -- faults ---------------------------------------------------------------------------


def test_a_worker_killed_mid_task_fails_that_task_with_WorkerLostError(backend, tmp_path):
    marker = tmp_path / "pid"
    with proctor.Pool(backend=backend) as pool:
        result = pool.apply_async(wait_to_be_killed, (str(marker),))
        pid = int(wait_until(lambda: marker.exists() and marker.read_text(), timeout=30))
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(proctor.WorkerLostError, match="wait_to_be_killed"):
            result.get(timeout=30)
        # The pool goes on, on the engine's replacement worker.
        assert pool.map(square, range(10)) == [x * x for x in range(10)]


def run_once_when_told(directory, x):
    """Wait for the file ``go``, then return ``x``; running twice for one ``x`` fails."""
    directory = Path(directory)
    deadline = time.monotonic() + 30
    while not (directory / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never told to go")
        time.sleep(0.01)  # the test's signal is a file: looked at until it appears
    with open(directory / f"ran-{x}", "x"):  # FileExistsError on a second run
        pass
    return x


def test_only_the_killed_workers_running_task_fails(backend, tmp_path):
    # Five calls on two workers: the killed one holds its running task and at least one
    # queued behind it. Only the running one fails; each other one runs exactly once.
    if backend != "ray":
        # Dask sends tasks to a worker ahead of time and cannot say which of them was
        # running when it died: with allowed-failures 0 all of them fail with
        # KilledWorker (docs/scale-out.md says so).
        pytest.skip("on Dask, a killed worker's queued tasks fail with its running one")
    marker = tmp_path / "pid"
    with proctor.Pool(backend=backend) as pool:
        doomed = pool.apply_async(wait_to_be_killed, (str(marker),))
        pid = int(wait_until(lambda: marker.exists() and marker.read_text(), timeout=30))
        others = [pool.apply_async(run_once_when_told, (str(tmp_path), x)) for x in range(4)]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(proctor.WorkerLostError, match="wait_to_be_killed"):
            doomed.get(timeout=30)
        (tmp_path / "go").touch()
        assert [result.get(timeout=30) for result in others] == [0, 1, 2, 3]


def test_a_ray_calls_handles_go_without_the_cyclic_collector(backend):
    # A call's handle (and its future and ObjectRef) is freed once the call is
    # delivered, by reference counting: no cycle left for the cyclic collector to free
    # later, during other work (1,000 calls left 27,000 objects).
    if backend != "ray":
        pytest.skip("the Ray adapter's call handles")
    from proctor._integrations import _ray

    def calls():
        return [o for o in gc.get_objects() if isinstance(o, _ray._Call)]

    def calls_alive():  # of this test's map: not those earlier tests' pools left
        return sum(call not in earlier for call in calls())

    with proctor.Pool(backend=backend) as pool:
        gc.collect()
        earlier = weakref.WeakSet(calls())
        gc.disable()
        try:
            assert pool.map(square, range(20), chunksize=1) == [x * x for x in range(20)]
            wait_until(lambda: calls_alive() == 0, timeout=10)
        finally:
            gc.enable()


def test_a_terminated_ray_pools_call_handles_go_without_the_cyclic_collector(backend, tmp_path):
    # Ray reports a terminated pool's running and queued calls after the pool has
    # ended (their actors were killed): those handles are let go too, not kept by the
    # stopped dispatcher or the dead actors in cycles for the collector to find later.
    if backend != "ray":
        pytest.skip("the Ray adapter's call handles")
    from proctor._integrations import _ray

    def calls():
        return [o for o in gc.get_objects() if isinstance(o, _ray._Call)]

    marker = tmp_path / "pid"
    gc.collect()
    earlier = weakref.WeakSet(calls())
    gc.disable()
    try:
        pool = proctor.Pool(backend=backend)
        running = [pool.apply_async(wait_to_be_killed, (str(marker),)) for _ in range(3)]
        wait_until(lambda: marker.exists(), timeout=30)
        pool.terminate()
        for result in running:
            with pytest.raises(proctor.PoolTerminatedError):
                result.get(timeout=30)
        del pool, running, result
        wait_until(lambda: sum(call not in earlier for call in calls()) == 0, timeout=10)
    finally:
        gc.enable()


def test_task_timeout_stops_a_stuck_task(backend):
    with proctor.Pool(backend=backend) as pool:
        with pytest.raises(proctor.TaskTimeoutError, match="sleep_for"):
            pool.apply(sleep_for, (60,), timeout=1)
        with proctor.ProcessPoolExecutor(backend=backend, task_timeout=1) as executor:
            future = executor.submit(sleep_for, 60)
            with pytest.raises(proctor.TaskTimeoutError):
                future.result(timeout=30)
        assert pool.map(square, range(4)) == [0, 1, 4, 9]


def test_cancel_running_stops_a_running_cluster_task(backend, tmp_path):
    marker = tmp_path / "pid"
    with proctor.ProcessPoolExecutor(backend=backend, cancel_running=True) as executor:
        future = executor.submit(wait_to_be_killed, str(marker))
        wait_until(lambda: marker.exists() and marker.read_text(), timeout=30)
        assert future.cancel()
        assert future.cancelled()
        # The worker that ran it was ended (the engine starts another); work goes on.
        pid = int(marker.read_text())
        wait_until(lambda: not psutil.pid_exists(pid), timeout=30)
        assert list(executor.map(square, range(4))) == [0, 1, 4, 9]


# -- what comes back besides values ---------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_workers_log_records_reach_the_callers_handlers(backend):
    logger = logging.getLogger(LOGGER)
    handler = _Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with proctor.Pool(backend=backend) as pool:
            assert pool.map(log_and_square, range(4), chunksize=1) == [0, 1, 4, 9]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    messages = sorted(r.getMessage().split(" in pid")[0] for r in handler.records)
    assert messages == [f"item {x} done" for x in range(4)]
    assert {r.process for r in handler.records} - {os.getpid()}  # logged in the workers


def test_a_large_array_is_shipped_once(backend):
    np = pytest.importorskip("numpy")
    array = np.arange(1_000_000, dtype=np.float64)
    with proctor.Pool(backend=backend) as pool:
        engine = pool._dispatcher.engine
        shared = []
        share = engine.share
        engine.share = lambda buffer: shared.append(buffer) or share(buffer)
        values = pool.starmap(total, [(array, k) for k in range(6)], chunksize=1)
    assert values == [float(array.sum()) * k for k in range(6)]
    assert len(shared) == 1


# -- a Dask client closed under a pool -------------------------------------------------

_started, _release = threading.Event(), threading.Event()


def report_and_wait():
    """Runs in this process (a Dask worker thread): says it started, waits to be let go."""
    _started.set()
    _release.wait(60)
    return "released"


def test_a_pools_tasks_fail_saying_that_its_dask_client_was_closed():
    # Not the module's engine, which later tests use: a cluster of one worker thread in
    # this process, quick to start.
    pytest.importorskip(
        "distributed", reason="Dask's distributed is not installed: pip install 'proctor[dask]'"
    )
    from distributed import Client, LocalCluster

    _started.clear()
    _release.clear()
    cluster = LocalCluster(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0"
    )
    client = Client(cluster)
    try:
        with proctor.ProcessPoolExecutor(backend=client) as executor:
            future = executor.submit(report_and_wait)
            assert _started.wait(60)
            client.close()
            error = future.exception(60)
    finally:
        _release.set()
        client.close()
        cluster.close()
    # It used to say: failed on the dask cluster: AttributeError("'NoneType' object
    # has no attribute 'gather'").
    assert isinstance(error, proctor.WorkerLostError)
    assert "report_and_wait() failed on the dask cluster" in str(error)
    assert "the pool's Dask client was closed" in str(error)


# -- choosing the engine (no cluster needed) ------------------------------------------


@pytest.mark.parametrize(
    ("module", "backend_value", "extra"),
    [("distributed", "tcp://127.0.0.1:1", "dask"), ("ray", "ray", "ray")],
)
def test_a_missing_engine_says_what_to_install(monkeypatch, module, backend_value, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, f"proctor._integrations._{extra}", raising=False)
    monkeypatch.delattr(_integrations, f"_{extra}", raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'proctor\[{extra}\]'"):
        proctor.Pool(backend=backend_value)


def test_backend_refuses_what_it_cannot_be_or_do():
    with pytest.raises(TypeError, match=r"backend must be a Dask distributed\.Client"):
        proctor.Pool(backend=42)
    with pytest.raises(ValueError, match="initializer cannot be used with backend="):
        proctor.Pool(initializer=print, backend="tcp://127.0.0.1:1")


def log_with_extra(x):
    logging.getLogger(LOGGER).warning("with extra %d", x, extra={"lock": threading.Lock()})
    return x


def test_a_cluster_task_returns_its_records_ready_to_pickle():
    # What a cluster worker runs, here in-process: a record whose extra= holds an object
    # that cannot be pickled comes back with that field as its repr.
    import pickle

    from proctor._pool import _remote, _worker

    codec = _remote.RemoteCodec()
    func_bytes, _, _ = codec.dumps_function(log_with_extra)
    payload, _ = codec.dumps_payload([5], "x")
    returned = _remote.run_task((1, _worker.MAP, func_bytes, payload, []), logging.INFO)
    frame, buffers, records, dropped = pickle.loads(pickle.dumps(returned))
    assert dropped == 0
    assert [r["msg"] for r in records] == ["with extra 5"]
    assert records[0]["lock"].startswith("<unlocked _thread.lock")
    _, outcome, _, _ = _worker.decode_result(frame, buffers=buffers or None)
    assert outcome.value == [5]


class _InlineEngine:
    """An engine adapter that runs each call at once, in the submitting thread, and
    counts the calls: the remote dispatcher's own logic, without a cluster."""

    name = "inline"

    def __init__(self, slots):
        self._slots = slots
        self.calls = 0

    def slots(self):
        return self._slots

    def share(self, buffer):
        return bytes(buffer.raw() if hasattr(buffer, "raw") else buffer)

    def submit(self, func, calls, done):
        self.calls += len(calls)
        handles = [func(*args, *shared) for args, shared in calls]
        for handle, callback in zip(handles, done, strict=True):
            callback(handle)
        return handles

    def outcomes(self, handles):
        return [(True, value, None) for value in handles]

    def stop(self, handle, end_worker):
        pass

    def close(self):
        pass


def test_map_cuts_a_quick_functions_input_into_fewer_chunks_once_measured():
    # A chunk is a call to the engine (about a millisecond): once the function's items
    # are measured quick, map's default chunks are one per worker, not four.
    from proctor._pool import _remote

    resolver = lambda b: b if isinstance(b, _InlineEngine) else None  # noqa: E731
    _remote.register_resolver(resolver)
    try:
        engine = _InlineEngine(slots=2)
        with proctor.Pool(backend=engine) as pool:
            dispatcher = pool._dispatcher
            name = f"{__name__}.square"
            assert dispatcher.chunks_per_worker_for(name, 1000, 2) == _remote.CHUNKS_PER_WORKER
            assert pool.map(square, range(1000)) == [x * x for x in range(1000)]
            first = engine.calls
            assert first >= 2 * _remote.CHUNKS_PER_WORKER
            assert name in dispatcher._item_seconds
            # What the measurements decide, with measured figures set here (the real
            # ones depend on this machine): one microsecond an item, and one second.
            dispatcher._item_seconds[name] = (1e-6, 1000)
            assert dispatcher.chunks_per_worker_for(name, 1000, 2) == 1
            assert pool.map(square, range(1000)) == [x * x for x in range(1000)]
            assert engine.calls - first == 2
            dispatcher._item_seconds[name] = (1.0, 1000)
            assert dispatcher.chunks_per_worker_for(name, 1000, 2) == _remote.CHUNKS_PER_WORKER
            # Explicit chunk sizes are honoured whatever was measured.
            dispatcher._item_seconds[name] = (1e-6, 1000)
            before = engine.calls
            assert pool.map(square, range(100), chunksize=10) == [x * x for x in range(100)]
            assert engine.calls - before == 10
            # A chunk of one item (whose time is mostly the chunk's own cost) does not
            # replace what a large chunk measured; one at least half as large does.
            dispatcher._time_items(name, 0.05, 1)
            assert dispatcher._item_seconds[name] == (1e-6, 1000)
            dispatcher._time_items(name, 0.5, 500)
            assert dispatcher._item_seconds[name] == (0.001, 500)
        # The executor's map (its whole input read at once) sizes chunks the same way.
        with proctor.ProcessPoolExecutor(backend=engine) as executor:
            executor._dispatcher._item_seconds[name] = (1e-6, 1000)
            before = engine.calls
            assert list(executor.map(square, range(1000))) == [x * x for x in range(1000)]
            assert engine.calls - before == 2
    finally:
        _remote._resolvers.remove(resolver)


class _ManualEngine:
    """An engine adapter whose calls end when the test says (``end``), whose outcomes,
    like Dask's, are fetched (``fetch_together``), and which records each fetch."""

    name = "manual"
    fetch_together = True

    def __init__(self):
        self.calls = []  # [(func, args, shared, done callback)], in submission order
        self.fetches = []  # [[call index, ...]] per outcomes()
        self.submitted = threading.Semaphore(0)  # released once per call
        self.lost = set()  # the calls whose worker is lost before their value is fetched

    def slots(self):
        return 2

    def share(self, buffer):
        return bytes(buffer.raw() if hasattr(buffer, "raw") else buffer)

    def submit(self, func, calls, done):
        handles = []
        for (args, shared), callback in zip(calls, done, strict=True):
            handles.append(len(self.calls))
            self.calls.append((func, args, shared, callback))
            self.submitted.release()
        return handles

    def end(self, index):
        """Call ``index`` ends (in the test's thread, as an engine's callback thread)."""
        self.calls[index][3](index)

    def succeeded(self, handle):
        return True

    def outcomes(self, handles):
        self.fetches.append(list(handles))
        found = []
        for index in handles:
            func, args, shared, _ = self.calls[index]
            if index in self.lost:
                found.append((False, RuntimeError("its worker was lost"), "lost"))
            else:
                found.append((True, func(*args, *shared), None))
        return found

    def stop(self, handle, end_worker):
        pass

    def close(self):
        pass


@pytest.fixture
def manual_executor(monkeypatch):
    """A ``ProcessPoolExecutor`` on a ``_ManualEngine`` whose dispatcher holds results
    long (``_hold_long``)."""
    from proctor._pool import _remote

    resolver = lambda b: b if isinstance(b, _ManualEngine) else None  # noqa: E731
    _remote.register_resolver(resolver)
    engine = _ManualEngine()
    executor = proctor.ProcessPoolExecutor(backend=engine)
    _hold_long(executor._dispatcher, monkeypatch)
    try:
        yield executor, engine
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        _remote._resolvers.remove(resolver)


def _submit_and_see_sent(executor, engine, count):
    futures = [executor.submit(square, x) for x in range(count)]
    for _ in range(count):
        assert engine.submitted.acquire(timeout=10)
    return futures


def test_results_that_end_together_come_in_one_fetch_in_the_order_they_ended(
    manual_executor,
):
    # While other tasks run that have lately ended close together, a result that ends
    # waits for them to end too, and they are all fetched in one round trip; when the
    # last running one ends nothing is held any longer. Callbacks run in the order the
    # tasks ended; a task whose worker was lost fails alone.
    executor, engine = manual_executor
    dispatcher = executor._dispatcher
    futures = _submit_and_see_sent(executor, engine, 4)
    order = []
    for x, future in enumerate(futures):
        future.add_done_callback(lambda _, x=x: order.append(x))
    engine.lost.add(3)
    engine.end(2)
    wait_until(lambda: not dispatcher._done, timeout=10)  # the dispatcher has taken it
    for index in (0, 3, 1):
        engine.end(index)
    assert [future.result(timeout=10) for future in futures[:3]] == [0, 1, 4]
    with pytest.raises(proctor.WorkerLostError, match="lost"):
        futures[3].result(timeout=10)
    assert engine.fetches == [[2, 0, 3, 1]]
    assert order == [2, 0, 3, 1]


def test_a_held_result_goes_when_new_work_is_submitted(manual_executor):
    # A result held for others still running (1 of 2 here) is fetched, and the new task
    # sent, as soon as a task is submitted: holding never delays sending.
    executor, engine = manual_executor
    dispatcher = executor._dispatcher
    futures = _submit_and_see_sent(executor, engine, 2)
    engine.end(0)
    wait_until(lambda: not dispatcher._done, timeout=10)  # the dispatcher holds it
    late = _submit_and_see_sent(executor, engine, 1)
    assert futures[0].result(timeout=10) == 0
    assert not futures[1].done()
    engine.end(1)
    engine.end(2)
    assert futures[1].result(timeout=10) == 1
    assert late[0].result(timeout=10) == 0


def test_a_result_is_not_held_when_tasks_end_far_apart(manual_executor):
    # Tasks that have lately ended further apart than a fetch takes: a result that ends
    # is fetched at once, not held for the others still running.
    executor, engine = manual_executor
    dispatcher = executor._dispatcher
    with dispatcher._lock:
        now = time.monotonic()
        dispatcher._ends.extend(now - 1000.0 * k for k in reversed(range(len(dispatcher._ends))))
    futures = _submit_and_see_sent(executor, engine, 2)
    engine.end(1)
    assert futures[1].result(timeout=10) == 1
    assert not futures[0].done()
    engine.end(0)
    assert futures[0].result(timeout=10) == 0
    assert engine.fetches == [[1], [0]]


def test_terminate_while_a_result_is_held_fetches_nothing_more(monkeypatch):
    # terminate() ends a hold at once, and what was held is not fetched: it fails with
    # the pool's other unfinished tasks, as a result that ended just before terminate()
    # did when nothing was held.
    from proctor._pool import _remote

    resolver = lambda b: b if isinstance(b, _ManualEngine) else None  # noqa: E731
    _remote.register_resolver(resolver)
    try:
        engine = _ManualEngine()
        pool = proctor.Pool(backend=engine)
        dispatcher = pool._dispatcher
        _hold_long(dispatcher, monkeypatch)
        results = [pool.apply_async(square, (x,)) for x in range(2)]
        for _ in results:
            assert engine.submitted.acquire(timeout=10)
        engine.end(0)
        wait_until(lambda: not dispatcher._done, timeout=10)  # the dispatcher holds it
        pool.terminate()
        for result in results:
            with pytest.raises(proctor.PoolTerminatedError):
                result.get(timeout=10)
        assert engine.fetches == []
    finally:
        _remote._resolvers.remove(resolver)
