"""A child logging 100,000 records: forwarded to the parent's FileHandler, vs writing them itself.

The target of issue 7: forwarding within 2x of the child writing its own file.
The "multiprocessing" column is a stdlib child with its own FileHandler (stdlib
cannot forward); proctor's child doing the same is printed in the note.
Run: ``python benchmarks/bench_logging.py [--quick]``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import interleaved, row

import proctor

FORMAT = "%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"


def log_records(n: int, own_file: str | None) -> None:
    logger = logging.getLogger("bench.child")
    if own_file is not None:
        handler = logging.FileHandler(own_file)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    for i in range(n):
        logger.info("record %d of the benchmark", i)
    if own_file is not None:
        handler.close()


def _timed_child(ctx, n, own_file, **kwargs):
    began = time.perf_counter()
    p = ctx.Process(target=log_records, args=(n, own_file), **kwargs)
    p.start()
    p.join()
    elapsed = time.perf_counter() - began
    if p.exitcode != 0:
        raise RuntimeError(f"benchmark child failed with exit code {p.exitcode}")
    return elapsed


def run(quick: bool = False) -> list[dict]:
    n = 20_000 if quick else 100_000
    rounds = 3 if quick else 5
    directory = tempfile.mkdtemp(prefix="proctor-bench-logging-")
    parent_file = os.path.join(directory, "parent.log")
    child_file = os.path.join(directory, "child.log")
    handler = logging.FileHandler(parent_file)
    handler.setFormatter(logging.Formatter(FORMAT))
    bench_logger = logging.getLogger("bench")
    bench_logger.addHandler(handler)
    bench_logger.setLevel(logging.INFO)
    px = proctor.get_context("fork")
    mp = multiprocessing.get_context("fork")
    try:
        got = interleaved(
            {
                "forwarded": lambda: _timed_child(px, n, None),
                "proctor own file": lambda: _timed_child(px, n, child_file, forward_logs=False),
                "stdlib own file": lambda: _timed_child(mp, n, child_file),
            },
            rounds,
        )
    finally:
        bench_logger.removeHandler(handler)
        handler.close()
    with open(parent_file) as f:
        forwarded_lines = sum(1 for _ in f)
    expected = n * rounds
    if forwarded_lines != expected:
        raise RuntimeError(f"the parent wrote {forwarded_lines} lines, expected {expected}")
    for path in (parent_file, child_file):
        os.unlink(path)
    os.rmdir(directory)
    rate = n / got["forwarded"]
    return [
        row(
            f"child logs {n:,} records to a file (fork)",
            got["forwarded"],
            got["stdlib own file"],
            "s",
            higher_is_better=False,
            note=(
                f"proctor forwards to the parent's FileHandler ({rate:,.0f} rec/s); "
                f"multiprocessing = stdlib child writing its own file; proctor child "
                f"writing its own file: {got['proctor own file']:.3f} s"
            ),
        )
    ]


if __name__ == "__main__":
    from _common import print_rows

    print_rows(run(quick="--quick" in sys.argv))
