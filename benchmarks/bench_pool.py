"""Pools: proctor vs the stdlib and the third-party pools, side by side in one run.

Contenders, each with 2 workers (this machine's cores) and its own defaults:
``proctor.Pool`` and ``proctor.ProcessPoolExecutor``; ``multiprocessing.Pool`` and
``concurrent.futures.ProcessPoolExecutor``; and whichever of billiard (``Pool``),
mpire (``WorkerPool``), loky (``ProcessPoolExecutor``, the class behind
``get_reusable_executor``) and pebble (``ProcessPool``) are installed
(``pip install 'proctor[bench-peers]'``); a missing one is left out with a note.
Each row compares one of proctor's pools with its stdlib twin; the peers with the
same API (the ``Pool`` family: billiard, mpire; the futures family: loky, pebble)
follow it as "vs" lines, and its note names the fastest of all the other pools.

* ``map`` of no-op tasks with default arguments: 100,000 tasks for the Pools; the
  executors' default chunksize is 1 (a round trip per task), so they map 10,000;
  in tasks/s;
* one task at a time: ``apply_async``/``submit`` of a no-op, 1,000 submitted, then
  all awaited, three batches; in tasks/s;
* 1,000 tasks of 1 ms (a busy loop) through ``map``: percent of perfect scaling
  over the workers (perfect: n * 1 ms / workers);
* ``map`` of 16 tasks, each returning an 8 MiB float64 array (needs numpy; left
  out with a note without it); in tasks/s;
* start-up: a fresh pool, a first 4-task ``map``, shutdown; per start method (fork,
  spawn, forkserver; loky has no fork row: it warns against fork);
* ``async for`` over ``proctor.Pool.imap`` of 100,000 no-ops in an event loop, against
  the plain ``for`` over the same ``imap`` (proctor only: the row's "multiprocessing"
  column is the plain iterator); in tasks/s, the ratio the issue's target (>= 0.9).
* the cost of a progress bar: ``proctor.Pool.map`` of 100,000 no-ops with
  ``progress=True`` (a tqdm bar, drawn to /dev/null) against the same map without it,
  on the same warm pool, interleaved; its "multiprocessing" column is proctor without
  the bar (needs tqdm, ``pip install 'proctor[progress]'``; left out without it).

The pools of the first four are warm -- started, and a first ``map`` run, before the
clock starts; fork-started (loky: its own default, fork + exec); all alive at once,
so the rounds interleave them. ``--quick`` runs smaller sizes and only the fork
start-up. Run: ``python benchmarks/bench_pool.py [--quick] [--async]`` (``--async``: the
``async for`` row alone).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import interleaved, row

import proctor

#: One worker per core, as the issue's speed targets are stated.
WORKERS = 2
#: The size of each array task's result: np.ones(1 << 20) float64 is 8 MiB.
ARRAY_ITEMS = 1 << 20
#: How long one "1 ms task" spins.
TASK_SECONDS = 0.001
#: The executors map this many times fewer no-op tasks than the Pools (see _bench_map).
EXECUTOR_MAP_SHARE = 10
#: Every result wait is bounded, so a broken pool fails the benchmark instead of hanging it.
WAIT = 300.0


# -- the tasks (module level: every pool can send them by reference) --------------------


def noop(x=None):
    return x


def spin(_x=None):
    # Ends by the clock rather than after a calibrated loop count: the task then
    # occupies its worker for 1 ms of wall time, which is what "perfect scaling"
    # assumes, even when the shared machine's other load slows the loop down.
    end = time.perf_counter() + TASK_SECONDS
    while time.perf_counter() < end:
        pass


def warm_up(x):
    """Have the worker import what the tasks need before the clock starts."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        pass
    # Long enough that each worker takes some of the first map's tasks (and the
    # pools that start workers on demand start them all).
    time.sleep(0.01)
    return x


def make_array(_x=None):
    import numpy as np

    return np.ones(ARRAY_ITEMS)


# -- one adapter per pool: start, map, submit one task, shut down ---------------------------


class Contender:
    """How a benchmark drives one pool library; subclasses fill in the calls."""

    #: The name in the table.
    name = ""
    #: The module it needs; None for proctor and the stdlib.
    requires: str | None = None
    #: "pool" (the multiprocessing.Pool API) or "futures" (submit returns a Future).
    family = "pool"
    #: The start methods it can use; loky has its own default ("loky": fork + exec).
    methods: tuple[str, ...] = ("fork", "spawn", "forkserver")
    #: The method the warm benchmarks use: the library's own default on Linux.
    warm_method = "fork"

    def start(self, method: str):
        raise NotImplementedError

    def map(self, pool, fn, items) -> list:
        return pool.map(fn, items)

    def submit(self, pool, fn):
        return pool.apply_async(fn)

    def result(self, pending):
        return pending.get(WAIT)

    def stop(self, pool) -> None:
        pool.close()
        pool.join()


class ProctorPool(Contender):
    name = "proctor.Pool"

    def start(self, method):
        return proctor.get_context(method).Pool(WORKERS)


class StdlibPool(Contender):
    name = "multiprocessing.Pool"

    def start(self, method):
        return multiprocessing.get_context(method).Pool(WORKERS)


class BilliardPool(Contender):
    name = "billiard.Pool"
    requires = "billiard"

    def start(self, method):
        import billiard

        return billiard.get_context(method).Pool(WORKERS)


class MpireWorkerPool(Contender):
    name = "mpire.WorkerPool"
    requires = "mpire"

    def start(self, method, *, keep_alive=True):
        import mpire

        # keep_alive: without it every map starts and stops its workers, and the
        # warm benchmarks exclude start-up. The start-up one passes False (default).
        return mpire.WorkerPool(n_jobs=WORKERS, start_method=method, keep_alive=keep_alive)

    def map(self, pool, fn, items):
        # concatenate_numpy_output=False: by default mpire glues array results into
        # one array (an extra copy, and not the list the others return).
        return pool.map(fn, items, concatenate_numpy_output=False)

    def stop(self, pool):
        pool.stop_and_join()


class ExecutorContender(Contender):
    family = "futures"

    def map(self, pool, fn, items):
        return list(pool.map(fn, items, timeout=WAIT))

    def submit(self, pool, fn):
        return pool.submit(fn)

    def result(self, pending):
        return pending.result(WAIT)

    def stop(self, pool):
        pool.shutdown(wait=True)


class ProctorExecutor(ExecutorContender):
    name = "proctor.ProcessPoolExecutor"

    def start(self, method):
        return proctor.ProcessPoolExecutor(WORKERS, mp_context=proctor.get_context(method))


class StdlibExecutor(ExecutorContender):
    name = "concurrent.futures.PPE"

    def start(self, method):
        return concurrent.futures.ProcessPoolExecutor(
            WORKERS, mp_context=multiprocessing.get_context(method)
        )


class LokyExecutor(ExecutorContender):
    name = "loky"
    requires = "loky"
    warm_method = "loky"
    # Not fork: loky warns that it "does not respect POSIX" (a forked child of a
    # process with threads), and its own default is fork + exec.
    methods = ("spawn", "forkserver", "loky")

    def start(self, method):
        import loky

        # A fresh executor each time (the start-up benchmark needs one), with
        # get_reusable_executor's defaults otherwise -- except its idle timeout:
        # its workers exit after 10 idle seconds, which the interleaved rounds
        # would turn into start-ups inside the timed maps.
        return loky.ProcessPoolExecutor(
            WORKERS, context=loky.backend.context.get_context(method), timeout=None
        )


class PebblePool(ExecutorContender):
    name = "pebble.ProcessPool"
    requires = "pebble"

    def start(self, method):
        import pebble

        return pebble.ProcessPool(max_workers=WORKERS, context=multiprocessing.get_context(method))

    def map(self, pool, fn, items):
        return list(pool.map(fn, items, timeout=WAIT).result())

    def submit(self, pool, fn):
        return pool.schedule(fn)

    def stop(self, pool):
        pool.close()
        pool.join(WAIT)


#: How the rows name proctor's two pools.
SHORT = {"proctor.Pool": "Pool", "proctor.ProcessPoolExecutor": "PPE"}
#: proctor's two pools, each with its stdlib twin.
PAIRS = ((ProctorPool(), StdlibPool()), (ProctorExecutor(), StdlibExecutor()))
PEERS = (BilliardPool(), MpireWorkerPool(), LokyExecutor(), PebblePool())


def available_peers() -> list[Contender]:
    """The third-party pools that import here; print a note for each that does not."""
    found = []
    for peer in PEERS:
        assert peer.requires is not None
        try:
            importlib.import_module(peer.requires)
        except ImportError:
            print(
                f"bench_pool: {peer.requires} is not installed, left out "
                f"(pip install {peer.requires}, or 'proctor[bench-peers]')",
                flush=True,
            )
        else:
            found.append(peer)
    return found


# -- measuring --------------------------------------------------------------------------------


def _warm_pools(contenders: list[Contender]) -> dict[str, tuple[Contender, object]]:
    """Start every pool, and run a first map so that every worker is up."""
    pools = {}
    try:
        for c in contenders:
            pool = c.start(c.warm_method)
            pools[c.name] = (c, pool)
            c.map(pool, warm_up, range(4 * WORKERS))
    except BaseException:
        _stop_pools(pools)
        raise
    return pools


def _stop_pools(pools: dict[str, tuple[Contender, object]]) -> None:
    """Shut every pool down, even when one of them fails to; then raise the first error."""
    error = None
    for c, pool in pools.values():
        try:
            c.stop(pool)
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error


def _timed_map(c: Contender, pool, fn, items) -> Callable[[], float]:
    def measure():
        began = time.perf_counter()
        results = c.map(pool, fn, items)
        elapsed = time.perf_counter() - began
        if len(results) != len(items):
            raise RuntimeError(f"{c.name}: map returned {len(results)} of {len(items)} results")
        return elapsed

    return measure


def _per_second(timed: Callable[[], float], count: int) -> Callable[[], float]:
    return lambda: count / timed()


def _timed_submits(c: Contender, pool, total: int, batch: int) -> Callable[[], float]:
    def measure():
        began = time.perf_counter()
        for _ in range(total // batch):
            pending = [c.submit(pool, noop) for _ in range(batch)]
            for p in pending:
                c.result(p)
        return total // batch * batch / (time.perf_counter() - began)

    return measure


def _timed_start(c: Contender, method: str) -> Callable[[], float]:
    def measure():
        began = time.perf_counter()
        if isinstance(c, MpireWorkerPool):
            pool = c.start(method, keep_alive=False)
        else:
            pool = c.start(method)
        try:
            # abs, a builtin: a spawned worker loads it without importing this
            # module (with multiprocessing, concurrent.futures and the peers it
            # imports), so the row measures the pool's start, not that import.
            results = c.map(pool, abs, range(4))
        finally:
            c.stop(pool)
        elapsed = time.perf_counter() - began
        if results != [0, 1, 2, 3]:
            raise RuntimeError(f"{c.name}: the first map returned {results!r}")
        return elapsed

    return measure


def _rows(
    title: str,
    got: dict[str, float],
    unit: str,
    *,
    higher_is_better: bool,
    peers: list[Contender],
    note: str = "",
) -> list[dict]:
    """One row per proctor pool: vs its stdlib twin, its family's peers, the fastest other."""
    proctor_names = {p.name for p, _ in PAIRS}
    others = {name: value for name, value in got.items() if name not in proctor_names}
    pick = max if higher_is_better else min

    def _ratio(ours: float, theirs: float) -> float:  # above 1: proctor is better
        return ours / theirs if higher_is_better else theirs / ours

    fastest = pick(others, key=others.__getitem__) if others else None
    rows = []
    for ours, twin in PAIRS:
        if ours.name not in got or twin.name not in got:
            continue
        r = row(
            f"{title}: {SHORT[ours.name]}",
            got[ours.name],
            got[twin.name],
            unit,
            higher_is_better=higher_is_better,
        )
        r["peers"] = [
            {"name": p.name, "value": got[p.name], "ratio": _ratio(got[ours.name], got[p.name])}
            for p in peers
            if p.family == ours.family and p.name in got
        ]
        parts = [note] if note else []
        if fastest is not None:
            value = others[fastest]
            vs = _ratio(got[ours.name], value)
            parts.append(f"fastest other: {fastest} {value:.4g} {unit}, proctor {vs:.3g}x")
        r["note"] = "; ".join(parts)
        rows.append(r)
    return rows


def _bench_map(contenders, pools, rounds, n, peers):
    # The executors' default chunksize is 1: a round trip per task, hundreds of
    # times slower per task than a chunked map, so they map a tenth as many tasks
    # (the rate is what the row compares).
    fns = {}
    for c in contenders:
        items = range(n if c.family == "pool" else n // EXECUTOR_MAP_SHARE)
        fns[c.name] = _per_second(_timed_map(c, pools[c.name][1], noop, items), len(items))
    got = interleaved(fns, rounds)
    return _rows(
        "pool map no-ops, default args",
        got,
        "tasks/s",
        higher_is_better=True,
        peers=peers,
        note=(
            f"{n:,} tasks for Pools, {n // EXECUTOR_MAP_SHARE:,} for executors (by default "
            "the stdlib's, loky's and pebble's send one item per task; proctor's chunks)"
        ),
    )


def _bench_submit(contenders, pools, rounds, total, batch, peers):
    fns = {c.name: _timed_submits(c, pools[c.name][1], total, batch) for c in contenders}
    got = interleaved(fns, rounds)
    return _rows(
        f"pool apply_async/submit no-op x{batch}",
        got,
        "tasks/s",
        higher_is_better=True,
        peers=peers,
    )


def _bench_scaling(contenders, pools, rounds, n, peers):
    ideal = n * TASK_SECONDS / WORKERS
    fns = {}
    for c in contenders:
        timed = _timed_map(c, pools[c.name][1], spin, range(n))
        fns[c.name] = lambda timed=timed: 100 * ideal / timed()
    got = interleaved(fns, rounds)
    return _rows(
        f"pool map {n:,} 1 ms tasks",
        got,
        "% ideal",
        higher_is_better=True,
        peers=peers,
        note=f"ideal = n * 1 ms / {WORKERS} workers = {ideal:.2f} s",
    )


def _bench_arrays(contenders, pools, rounds, n, peers):
    fns = {}
    for c in contenders:
        fns[c.name] = _per_second(_timed_map(c, pools[c.name][1], make_array, range(n)), n)
    got = interleaved(fns, rounds)
    mib = ARRAY_ITEMS * 8 / 2**20
    rows = _rows(
        f"pool map {n} -> {mib:.0f} MiB arrays",
        got,
        "tasks/s",
        higher_is_better=True,
        peers=peers,
    )
    for r in rows:
        gb = r["proctor"] * ARRAY_ITEMS * 8 / 1e9
        r["note"] = f"proctor {gb:.2f} GB/s; " + r["note"]
    return rows


def _bench_startup(contenders, method, rounds, peers):
    fns = {c.name: _timed_start(c, method) for c in contenders if method in c.methods}
    for fn in fns.values():
        fn()  # warm-up, untimed: the fork servers start on first use
    got = {name: value * 1e3 for name, value in interleaved(fns, rounds).items()}
    return _rows(
        f"pool start+map(4)+shutdown ({method})",
        got,
        "ms",
        higher_is_better=False,
        peers=peers,
        note="fresh pool each time",
    )


def _bench_async_imap(rounds, n):
    import asyncio

    with proctor.Pool(WORKERS) as pool:
        pool.map(warm_up, range(WORKERS * 4))

        def plain():
            began = time.perf_counter()
            count = sum(1 for _ in pool.imap(noop, range(n)))
            elapsed = time.perf_counter() - began
            if count != n:
                raise RuntimeError(f"imap yielded {count} of {n} results")
            return n / elapsed

        async def consume():
            count = 0
            async for _ in pool.imap(noop, range(n)):
                count += 1
            return count

        def in_loop():
            began = time.perf_counter()
            count = asyncio.run(asyncio.wait_for(consume(), WAIT))
            elapsed = time.perf_counter() - began
            if count != n:
                raise RuntimeError(f"async for yielded {count} of {n} results")
            return n / elapsed

        got = interleaved({"async for": in_loop, "for": plain}, rounds)
    return [
        row(
            f"pool imap {n:,} no-ops: async for vs for",
            got["async for"],
            got["for"],
            "tasks/s",
            higher_is_better=True,
            note="both proctor.Pool; the second column is the plain iterator (target >= 0.9x)",
        )
    ]


def _bench_progress(rounds, n):
    """proctor.Pool.map of ``n`` no-ops with a progress bar vs without, one warm pool."""
    try:
        import tqdm  # noqa: F401
    except ImportError:
        print(
            "bench_pool: the progress bar row is skipped: it needs tqdm "
            "(pip install 'proctor[progress]')",
            flush=True,
        )
        return []
    items = range(n)

    def timed(progress):
        def measure():
            # The bar is drawn, to /dev/null: a terminal would take the same two
            # lines (tqdm redraws at most every 0.1 s), without cluttering the table.
            with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
                began = time.perf_counter()
                results = pool.map(noop, items, progress=progress)
                elapsed = time.perf_counter() - began
            if len(results) != n:
                raise RuntimeError(f"map returned {len(results)} of {n} results")
            return n / elapsed

        return measure

    pool = ProctorPool().start("fork")
    try:
        pool.map(warm_up, range(4 * WORKERS))
        timed(True)()  # tqdm imported and its bar class made before the clock starts
        # More rounds than the other rows: the difference sought is a few percent.
        got = interleaved({"with": timed(True), "without": timed(False)}, 4 * rounds)
    finally:
        pool.close()
        pool.join(WAIT)
    cost = 100 * (1 - got["with"] / got["without"])
    return [
        row(
            "pool map no-ops, progress=True: Pool",
            got["with"],
            got["without"],
            "tasks/s",
            higher_is_better=True,
            note=(
                f"{n:,} tasks; the multiprocessing column is proctor.Pool without "
                f"progress=: the bar costs {cost:.1f}% (medians of {4 * rounds} "
                "interleaved rounds)"
            ),
        )
    ]


def _numpy_missing() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return True
    return False


def run(quick: bool = False) -> list[dict]:
    peers = available_peers()
    contenders = [c for pair in PAIRS for c in pair] + peers
    rounds = 3 if quick else 5
    rows = []
    pools = _warm_pools(contenders)
    try:
        rows += _bench_map(contenders, pools, rounds, 10_000 if quick else 100_000, peers)
        rows += _bench_submit(
            contenders, pools, rounds, 1_000 if quick else 3_000, 500 if quick else 1_000, peers
        )
        rows += _bench_scaling(contenders, pools, rounds, 200 if quick else 1_000, peers)
        if _numpy_missing():
            print(
                "bench_pool: the 8 MiB array rows are skipped: they need numpy "
                "(pip install 'proctor[numpy]')",
                flush=True,
            )
        else:
            rows += _bench_arrays(contenders, pools, rounds, 8 if quick else 16, peers)
    finally:
        _stop_pools(pools)
    for method in ("fork",) if quick else ("fork", "spawn", "forkserver"):
        rows += _bench_startup(contenders, method, 2 if quick else rounds, peers)
    rows += _bench_async_imap(rounds, 10_000 if quick else 100_000)
    rows += _bench_progress(rounds, 10_000 if quick else 100_000)
    return rows


def run_async_only(quick: bool = False) -> list[dict]:
    """Only the ``async for`` row (``--async``): no peers, a minute less."""
    return _bench_async_imap(3 if quick else 5, 10_000 if quick else 100_000)


if __name__ == "__main__":
    from _common import print_rows

    quick = "--quick" in sys.argv
    print_rows(run_async_only(quick) if "--async" in sys.argv else run(quick=quick))
