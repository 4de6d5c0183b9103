"""Page faults of a no-op fork start+join: proctor, multiprocessing, a bare ``os.fork()``.

    python benchmarks/fork_faults.py [--starts 300] [--runs 3]

After a fork every page either process writes takes a fault: a copy while the other
process still shares the page (~3 us on the VM this was written on), or only a
change of protection once the child has exited (~0.7 us). Python writes to every
object it touches (reference counts), so what a start costs beyond the fork itself is
mostly how many distinct pages each side writes -- a count, steadier than any timing
on a shared machine. Per start+join this prints:

* ``parent``: the parent's minor faults (``RUSAGE_SELF``), and of those, the ones
  between the fork's return and the end of ``start()`` (``window``: copies, while
  the child runs);
* ``child``: the children's minor faults (``RUSAGE_CHILDREN``, once reaped);
* the CPU time of each side.

Each library and the bare fork run in a fresh interpreter that has imported both
libraries (so every child pays the same ``os.register_at_fork`` hooks), ``--runs``
times, interleaved. Not a ``bench_*`` module: it prints counts, not ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_MEASURE = r"""
import json, multiprocessing, os, resource, sys
import proctor
which, starts = sys.argv[1], int(sys.argv[2])
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counting, window, mark = [False], [0], [0]
if which == "bare":
    def one():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
else:
    ctx = (proctor if which == "proctor" else multiprocessing).get_context("fork")
    def one():
        p = ctx.Process()
        p.start()
        if counting[0]:
            window[0] += faults() - mark[0]
        p.join()
        p.close()
for _ in range(20):
    one()
s0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
for _ in range(starts):
    one()
s1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
if which != "bare":
    # A second pass for the window: the hook that marks the fork's return writes
    # pages of its own, which the first pass must not count.
    os.register_at_fork(after_in_parent=lambda: mark.__setitem__(0, faults()))
    counting[0] = True
    for _ in range(starts):
        one()
cpu = lambda a, b: (b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime) * 1e6 / starts
print(json.dumps({
    "parent": (s1.ru_minflt - s0.ru_minflt) / starts,
    "window": window[0] / starts if which != "bare" else None,
    "child": (c1.ru_minflt - c0.ru_minflt) / starts,
    "parent_us": cpu(s0, s1),
    "child_us": cpu(c0, c1),
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    got: dict[str, list[dict]] = {"proctor": [], "multiprocessing": [], "bare": []}
    names = list(got)
    for index in range(args.runs):
        for name in reversed(names) if index % 2 else names:
            which = "mp" if name == "multiprocessing" else name
            out = subprocess.run(
                [sys.executable, "-c", _MEASURE, which, str(args.starts)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            got[name].append(json.loads(out))
    load = os.getloadavg()[0]
    print(f"per start+join, medians of {args.runs} runs of {args.starts} (load {load:.1f})")
    print(f"{'':16} {'parent':>8} {'window':>8} {'child':>8} {'parent us':>10} {'child us':>9}")
    for name, runs in got.items():

        def median(key: str, runs: list[dict] = runs) -> float | None:
            values = [r[key] for r in runs if r[key] is not None]
            return statistics.median(values) if values else None

        window = median("window")
        print(
            f"{name:16} {median('parent'):8.1f} "
            f"{'-' if window is None else f'{window:.1f}':>8} {median('child'):8.1f} "
            f"{median('parent_us'):10.0f} {median('child_us'):9.0f}"
        )


if __name__ == "__main__":
    main()
