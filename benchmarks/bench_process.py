"""Start + join of a no-op process, per start method: proctor vs multiprocessing.

Also measures the floors: a bare ``os.fork()`` + ``waitpid`` for fork, and
``python -c pass`` for spawn. Run: ``python benchmarks/bench_process.py [--quick]``.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import interleaved, row

import proctor


def _per_op(fn, ops):
    def measure():
        began = time.perf_counter()
        for _ in range(ops):
            fn()
        return (time.perf_counter() - began) / ops

    return measure


def _start_join(ctx):
    def once():
        # No target: run() does nothing, and neither child has to import this module.
        p = ctx.Process()
        p.start()
        p.join()
        if hasattr(p, "close"):
            p.close()

    return once


def _bare_fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def _python_pass():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def run(quick: bool = False) -> list[dict]:
    rounds = 3 if quick else 7
    rows = []
    for method, ops in (
        ("fork", 20 if quick else 100),
        ("spawn", 3 if quick else 10),
        ("forkserver", 5 if quick else 30),
    ):
        px = proctor.get_context(method)
        mp = multiprocessing.get_context(method)
        # Warm up: the fork servers start on first use.
        _start_join(px)()
        _start_join(mp)()
        fns = {
            "proctor": _per_op(_start_join(px), ops),
            "multiprocessing": _per_op(_start_join(mp), ops),
        }
        floor_name = None
        if method == "fork":
            floor_name, fns["floor"] = "bare os.fork()+waitpid", _per_op(_bare_fork, ops)
        elif method == "spawn":
            floor_name, fns["floor"] = "python -c pass", _per_op(_python_pass, ops)
        got = interleaved(fns, rounds)
        note = ""
        if floor_name:
            floor_ms, vs_floor = got["floor"] * 1e3, got["proctor"] / got["floor"]
            note = f"{floor_name}: {floor_ms:.2f} ms; proctor/floor = {vs_floor:.2f}x"
        rows.append(
            row(
                f"start+join no-op ({method})",
                got["proctor"] * 1e3,
                got["multiprocessing"] * 1e3,
                "ms",
                higher_is_better=False,
                note=note,
            )
        )
    return rows


if __name__ == "__main__":
    from _common import print_rows

    print_rows(run(quick="--quick" in sys.argv))
