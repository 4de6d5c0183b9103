"""Instructions per log record in the child and in the parent, counted by callgrind.

Wall-clock times on a shared machine are noisy; instruction counts are not. This runs
the record loop of ``bench_logging.py`` (a fork child logging ``n`` records on
``bench.child``, format and file handler as there) under ``valgrind --tool=callgrind``
for n = 2000 and n = 12000, one case at a time:

- ``forwarded``: proctor's child forwards its records to the parent's ``FileHandler``;
- ``proctor-own``: proctor's child with ``forward_logs=False`` writes its own file;
- ``stdlib-own``: a ``multiprocessing`` child writes its own file;

and prints ``(Ir(12000) - Ir(2000)) / 10000`` for the child and for the parent (whose
log listener thread does the parent's share of forwarding): instructions per record,
start-up and shut-down cancelled out. User space only: the system calls (one
``write`` per record on either side) are not counted. ``callgrind_annotate`` on the
files it leaves (in the directory given, default the current one; one per process,
the parent's with the lower pid) shows where they go.

Run: ``python -m compileall -q src && python benchmarks/callgrind_logging.py [DIR]``
(needs valgrind). ``python benchmarks/callgrind_logging.py --run CASE N FILE`` is the
traced program.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile

SMALL, LARGE = 2000, 12000
CASES = ("forwarded", "proctor-own", "stdlib-own")


def run(case: str, n: int, directory: str) -> None:
    import logging
    import multiprocessing

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_logging import FORMAT, log_records

    import proctor

    handler = logging.FileHandler(os.path.join(directory, "parent.log"))
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger("bench").addHandler(handler)
    logging.getLogger("bench").setLevel(logging.INFO)
    own_file = None if case == "forwarded" else os.path.join(directory, "child.log")
    if case == "stdlib-own":
        p = multiprocessing.get_context("fork").Process(target=log_records, args=(n, own_file))
    else:
        p = proctor.get_context("fork").Process(
            target=log_records, args=(n, own_file), forward_logs=case == "forwarded"
        )
    p.start()
    p.join()
    handler.close()
    if p.exitcode != 0:
        raise RuntimeError(f"the child failed with exit code {p.exitcode}")


def instructions(case: str, n: int, directory: str) -> tuple[int, int]:
    """(parent, child) instructions of one traced run."""
    prefix = os.path.join(directory, f"callgrind.logging.{case}.{n}")
    for old in glob.glob(prefix + ".*"):
        os.unlink(old)
    with tempfile.TemporaryDirectory(prefix="proctor-callgrind-logging-") as files:
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={prefix}.%p",
                sys.executable,
                os.path.abspath(__file__),
                "--run",
                case,
                str(n),
                files,
            ],
            check=True,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONHASHSEED="0"),
        )
    outs = sorted(glob.glob(prefix + ".*"), key=lambda path: int(path.rsplit(".", 1)[1]))
    if len(outs) != 2:
        raise RuntimeError(f"expected a parent's and a child's profile, found {outs}")
    totals = []
    for out in outs:
        with open(out) as data:
            totals.append(next(int(line.split()[1]) for line in data if line.startswith("totals:")))
    return totals[0], totals[1]


def main() -> None:
    if sys.argv[1:2] == ["--run"]:
        run(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    for case in CASES:
        (parent_low, child_low) = instructions(case, SMALL, directory)
        (parent_high, child_high) = instructions(case, LARGE, directory)
        span = LARGE - SMALL
        print(
            f"{case:12s} instructions per record: child {(child_high - child_low) / span:,.0f}"
            f", parent {(parent_high - parent_low) / span:,.0f}"
        )


if __name__ == "__main__":
    main()
