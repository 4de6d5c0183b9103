"""Pools on a cluster (``Pool(backend=...)``) against the engine's own API, same work.

Run by ``python -m proctor bench scale_out``. Each engine that is installed is started
locally (Dask: a ``LocalCluster`` of worker processes with one thread each; Ray:
``ray.init(num_cpus=...)``) and measured with 1 and 2 workers; one that is missing is
skipped with a note. The "multiproc." column holds the engine's own figure, from the
same run:

    dask  1000 tiny tasks, one each   Pool.map(chunksize=1)   vs client.map + gather
    dask  1000 tiny tasks             Pool.map (its chunks)   vs client.map + gather
    dask  200 submits                 Executor.submit + result vs client.submit + gather
    dask  200 submits, each as it ends  + as_completed        vs client.submit + as_completed
    ray   1000 tiny tasks, one each   Pool.map(chunksize=1)   vs f.remote() + ray.get
    ray   1000 tiny tasks             Pool.map (its chunks)   vs ray.util.multiprocessing.Pool.map
    ray   1000 tiny tasks, one each   Pool.map(chunksize=1)   vs ray...Pool.map(chunksize=1)
    *     10 ms tasks, 200            Pool.map(chunksize=1)   vs the engine's own, one each

(``--quick``: 50 sleeping tasks instead of 200, and 3 rounds instead of 5; the sleeping
tasks' rows take 3 rounds either way.)

Figures are seconds per task (lower is better; ratio above 1: proctor is faster). The
1- and 2-worker rows feed the throughput model of docs/scale-out.md.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import interleaved, row

import proctor


def tiny(x):
    return x + 1


def ten_ms(x):
    time.sleep(0.01)
    return x


def _timed(fn, tasks, settle=None):
    def measure():
        began = time.perf_counter()
        fn()
        seconds = (time.perf_counter() - began) / tasks
        if settle is not None:
            settle()
        return seconds

    return measure


# -- Dask -------------------------------------------------------------------------------


def _dask_rows(workers, rounds, n, sleeps):
    import dask
    from distributed import Client, LocalCluster, as_completed

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            processes=True, n_workers=workers, threads_per_worker=1, dashboard_address=":0"
        )
    client = Client(cluster)
    pool = proctor.Pool(backend=client)
    executor = proctor.ProcessPoolExecutor(backend=client)
    rows = []

    def settle():
        # Each measurement starts on a cluster that has forgotten the tasks of the one
        # before: a call returns before the scheduler and the workers have let its tasks
        # go (client.map's 1,000, say), which would otherwise fall on the next one.
        deadline = time.monotonic() + 10
        while client.run_on_scheduler(_scheduler_tasks) and time.monotonic() < deadline:
            time.sleep(0.002)

    def timed(fn, tasks):
        return _timed(fn, tasks, settle)

    try:
        items = list(range(n))
        pool.map(tiny, items)  # warm up: workers import proctor, functions cached
        client.gather(client.map(tiny, items, pure=False))

        def direct_map():
            client.gather(client.map(tiny, items, pure=False))

        def direct_submit():
            # The values, as the pool's side gets them (wait() alone left them on the
            # workers: one gather less than the work the pool does).
            futures = [client.submit(tiny, x, pure=False) for x in range(n // 5)]
            client.gather(futures)

        def pool_submit():
            futures = [executor.submit(tiny, x) for x in range(n // 5)]
            for future in futures:
                future.result()

        # Each result taken as its task ends, as a ProcessPoolExecutor.submit user does
        # (as_completed, callbacks): Dask's own idiom for that is its as_completed with
        # with_results=True, which fetches each value as its task ends (one gather per
        # future, on the event loop). The other one, .result() per future as
        # as_completed yields it, makes the same gathers plus a hand-off from the
        # caller's thread each: 1.37x the time in a quiet run here, 1.06-1.22x the
        # caller's CPU in loaded ones (docs/scale-out.md).
        def pool_as_completed():
            futures = [executor.submit(tiny, x) for x in range(n // 5)]
            for future in concurrent.futures.as_completed(futures):
                future.result()

        def direct_as_completed():
            futures = [client.submit(tiny, x, pure=False) for x in range(n // 5)]
            for _future, _value in as_completed(futures, with_results=True):
                pass

        got = interleaved(
            {
                "one": timed(lambda: pool.map(tiny, items, chunksize=1), n),
                "chunks": timed(lambda: pool.map(tiny, items), n),
                "direct": timed(direct_map, n),
            },
            rounds,
        )
        rows.append(_row(f"dask {workers}w: {n} tiny tasks, one each", got["one"], got["direct"]))
        rows.append(
            _row(f"dask {workers}w: {n} tiny tasks, Pool's chunks", got["chunks"], got["direct"])
        )
        # Apart from the maps: in one interleaving with them, the pool's submits came
        # right after client.map's 1,000 tasks in two rounds of three, and Dask's own
        # submits never did.
        got = interleaved(
            {
                "submit": timed(pool_submit, n // 5),
                "direct_submit": timed(direct_submit, n // 5),
                "as_completed": timed(pool_as_completed, n // 5),
                "direct_as_completed": timed(direct_as_completed, n // 5),
            },
            rounds,
        )
        rows.append(
            _row(
                f"dask {workers}w: {n // 5} submits",
                got["submit"],
                got["direct_submit"],
                "vs client.submit + one gather of all at the end",
            )
        )
        rows.append(
            _row(
                f"dask {workers}w: {n // 5} submits, each as it ends",
                got["as_completed"],
                got["direct_as_completed"],
                "vs client.submit + as_completed(with_results=True)",
            )
        )
        sleep_items = list(range(sleeps))
        got = interleaved(
            {
                "pool": timed(lambda: pool.map(ten_ms, sleep_items, chunksize=1), sleeps),
                "direct": timed(
                    lambda: client.gather(client.map(ten_ms, sleep_items, pure=False)), sleeps
                ),
            },
            max(3, rounds // 2),
        )
        rows.append(_row(f"dask {workers}w: {sleeps} 10 ms tasks", got["pool"], got["direct"]))
    finally:
        executor.shutdown()
        pool.close()
        pool.join(60)
        client.close()
        cluster.close()
    return rows


def _scheduler_tasks(dask_scheduler):
    return len(dask_scheduler.tasks)


# -- Ray --------------------------------------------------------------------------------


def _ray_rows(workers, rounds, n, sleeps):
    import ray
    from ray.util.multiprocessing import Pool as RayPool

    # Ray's workers import this module's functions by name: they inherit the runtime's
    # environment, made here (a cluster would ship the code with runtime_env instead).
    here = os.path.dirname(os.path.abspath(__file__))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, old) if p)
    try:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    rows = []
    try:
        pool = proctor.Pool(backend="ray")
        ray_pool = RayPool(workers)
        remote_tiny = ray.remote(num_cpus=1, max_retries=0)(tiny)
        remote_ten_ms = ray.remote(num_cpus=1, max_retries=0)(ten_ms)
        items = list(range(n))
        pool.map(tiny, items)  # warm up
        ray.get([remote_tiny.remote(x) for x in items])
        ray_pool.map(tiny, items)
        got = interleaved(
            {
                "one": _timed(lambda: pool.map(tiny, items, chunksize=1), n),
                "chunks": _timed(lambda: pool.map(tiny, items), n),
                "direct": _timed(lambda: ray.get([remote_tiny.remote(x) for x in items]), n),
                "raypool": _timed(lambda: ray_pool.map(tiny, items), n),
                "raypool_one": _timed(lambda: ray_pool.map(tiny, items, chunksize=1), n),
            },
            rounds,
        )
        rows.append(_row(f"ray {workers}w: {n} tiny tasks, one each", got["one"], got["direct"]))
        rows.append(
            _row(
                f"ray {workers}w: {n} tiny tasks, Pool's chunks",
                got["chunks"],
                got["raypool"],
                "vs ray.util.multiprocessing.Pool.map",
            )
        )
        rows.append(
            _row(
                f"ray {workers}w: {n} tiny tasks, chunksize=1",
                got["one"],
                got["raypool_one"],
                "vs ray.util.multiprocessing.Pool.map(chunksize=1)",
            )
        )
        sleep_items = list(range(sleeps))
        got = interleaved(
            {
                "pool": _timed(lambda: pool.map(ten_ms, sleep_items, chunksize=1), sleeps),
                "direct": _timed(
                    lambda: ray.get([remote_ten_ms.remote(x) for x in sleep_items]), sleeps
                ),
            },
            max(3, rounds // 2),
        )
        rows.append(_row(f"ray {workers}w: {sleeps} 10 ms tasks", got["pool"], got["direct"]))
        pool.close()
        pool.join(60)
        ray_pool.terminate()
    finally:
        ray.shutdown()
    return rows


def _row(name, proctor_seconds, engine_seconds, note="vs the engine's own API"):
    return row(name, proctor_seconds, engine_seconds, "s/task", higher_is_better=False, note=note)


def _installed(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def run(quick: bool = False) -> list[dict]:
    rounds = 3 if quick else 5
    n = 1_000
    sleeps = 50 if quick else 200
    rows: list[dict] = []
    engines = [("dask", "distributed", _dask_rows), ("ray", "ray", _ray_rows)]
    for name, module, measure in engines:
        if not _installed(module):
            print(
                f"bench_scale_out: the {name} rows are skipped: {module} is not installed "
                f"(pip install 'proctor[{name}]')",
                flush=True,
            )
            continue
        for workers in (1, 2):
            rows += measure(workers, rounds, n, sleeps)
    return rows


if __name__ == "__main__":
    from _common import print_rows

    print_rows(run(quick="--quick" in sys.argv))
