"""Instructions per ``Pool.apply_async`` task in the parent, counted by callgrind.

Wall-clock rates on a shared machine are noisy; instruction counts are not. This runs
a forkserver ``proctor.Pool(2)`` (its workers are not traced: ``--trace-children=no``)
that takes ``n`` no-op ``apply_async`` tasks in batches of 500, each batch's results
awaited, under ``valgrind --tool=callgrind`` for n = 1000 and n = 5000, and prints
``(Ir(5000) - Ir(1000)) / 4000``: the parent's instructions per task, start-up and
shut-down cancelled out. ``callgrind_annotate`` on the files it leaves (in the
directory given, default the current one) shows where they go.

Run: ``python -m compileall -q src && python benchmarks/callgrind_apply.py [DIR]``
(needs valgrind). ``python benchmarks/callgrind_apply.py --run N`` is the traced program.
"""

from __future__ import annotations

import os
import subprocess
import sys

#: Tasks submitted before their results are awaited.
BATCH = 500


def noop(x: object = None) -> object:
    return x


def run(n: int) -> None:
    import proctor

    with proctor.get_context("forkserver").Pool(2) as pool:
        pool.map(noop, range(10))  # every worker up
        for _ in range(n // BATCH):
            pending = [pool.apply_async(noop) for _ in range(BATCH)]
            for result in pending:
                result.get(60)


def instructions(n: int, directory: str) -> int:
    out = os.path.join(directory, f"callgrind.apply.{n}.out")
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            os.path.abspath(__file__),
            "--run",
            str(n),
        ],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    with open(out) as data:
        for line in data:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no total in {out}")


def main() -> None:
    if sys.argv[1:2] == ["--run"]:
        run(int(sys.argv[2]))
        return
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    low, high = instructions(1000, directory), instructions(5000, directory)
    print(f"parent instructions per apply_async task: {(high - low) / 4000:,.0f}")


if __name__ == "__main__":
    main()
