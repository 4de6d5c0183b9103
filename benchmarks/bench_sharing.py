"""A queue passed to a running pool worker, against one inherited at start.

multiprocessing can pass a Queue only at a process's start ("Queue objects should only
be shared between processes through inheritance"); proctor also passes it to a worker
that is already running (a task argument). The passed queue is the same queue, so it
should be as fast in that worker as one inherited at start. Rows: one producer (the
worker) to the parent, small ints, timed from the first item got to the last, so that
neither the start nor the passing is counted; the multiprocessing column is the
stdlib's Queue inherited at start, and the note gives proctor's own queue inherited at
start in the same run, and the ratio passed/inherited.
Run: ``python benchmarks/bench_sharing.py [--quick]``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import interleaved, row

import proctor


def produce(q, n):
    for i in range(n):
        q.put(i)


def _drain(q, n) -> float:
    """Get ``n`` items; return the rate from the first item to the last."""
    q.get()
    began = time.perf_counter()
    for _ in range(n - 1):
        q.get()
    return (n - 1) / (time.perf_counter() - began)


def _inherited(ctx, n) -> float:
    q = ctx.Queue()
    p = ctx.Process(target=produce, args=(q, n))
    p.start()
    rate = _drain(q, n)
    p.join()
    return rate


def _passed(pool, ctx, n) -> float:
    q = ctx.Queue()
    result = pool.apply_async(produce, (q, n))
    rate = _drain(q, n)
    result.get()
    q.close()
    return rate


def run(quick: bool = False) -> list[dict]:
    rounds = 3 if quick else 5
    n = 20_000 if quick else 100_000
    px = proctor.get_context("fork")
    mp = multiprocessing.get_context("fork")
    with px.Pool(1) as pool:
        pool.apply(int)  # the worker is running before anything is timed
        got = interleaved(
            {
                "passed": lambda: _passed(pool, px, n),
                "inherited": lambda: _inherited(px, n),
                "mp": lambda: _inherited(mp, n),
            },
            rounds,
        )
    return [
        row(
            "queue passed to a running pool worker, 1->1",
            got["passed"],
            got["mp"],
            "msg/s",
            higher_is_better=True,
            note=f"proctor's queue inherited at start: {got['inherited']:.4g} msg/s, "
            f"passed/inherited {got['passed'] / got['inherited']:.2f}x; multiprocessing's "
            "queue inherited at start (it cannot pass one to a running worker)",
        )
    ]


if __name__ == "__main__":
    from _common import print_rows

    print_rows(run(quick="--quick" in sys.argv))
