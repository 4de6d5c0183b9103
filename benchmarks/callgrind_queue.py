"""Instructions per ``Queue.put`` and per ``Queue.get`` of a small int, counted by callgrind.

Wall-clock rates on a shared machine are noisy; instruction counts are not. One
process puts ``n`` ints into a ``proctor.Queue`` (``put`` mode), or puts them and
then gets them all back (``putget`` mode), under ``valgrind --tool=callgrind``, for
n = 2000 and n = 12000; ``(Ir(12000) - Ir(2000)) / 10000`` is the cost of one put,
and the same difference of ``putget`` minus that of ``put`` the cost of one get,
start-up and shut-down cancelled out. Each is counted twice: with the ring's C
fast paths (``_queues/_native.c``, when built) and with the pure-Python ring (the
lock accelerator stays as it is in both). ``callgrind_annotate`` on the files it
leaves (in the directory given, default the current one) shows where they go.

Run: ``python -m compileall -q src && python benchmarks/callgrind_queue.py [DIR]``
(needs valgrind). ``python benchmarks/callgrind_queue.py --run MODE N IMPL`` is the
traced program.
"""

from __future__ import annotations

import os
import subprocess
import sys

SMALL, LARGE = 2000, 12000


def run(mode: str, n: int, impl: str) -> None:
    from proctor._queues import _accel

    if impl == "python":
        _accel.native = None  # this process's new rings: the pure methods
    import proctor

    q = proctor.Queue()
    put = q.put
    for i in range(n):
        put(i)
    if mode == "putget":
        get = q.get
        for _ in range(n):
            get()
    q.close()


def instructions(mode: str, n: int, impl: str, directory: str) -> int:
    out = os.path.join(directory, f"callgrind.queue.{impl}.{mode}.{n}.out")
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            os.path.abspath(__file__),
            "--run",
            mode,
            str(n),
            impl,
        ],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    with open(out) as data:
        for line in data:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no total in {out}")


def main(directory: str) -> None:
    from proctor._queues import _accel

    impls = ["python"] + (["native"] if _accel.native is not None else [])
    for impl in impls:
        per = {}
        for mode in ("put", "putget"):
            counts = [instructions(mode, n, impl, directory) for n in (SMALL, LARGE)]
            per[mode] = (counts[1] - counts[0]) / (LARGE - SMALL)
        print(
            f"ring {impl:6}: put {per['put']:8.0f} instructions, "
            f"get {per['putget'] - per['put']:8.0f} instructions"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--run":
        run(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else ".")
