"""Starting processes, per start method: proctor vs multiprocessing.

* start + join of a no-op process, with the floors: a bare ``os.fork()`` +
  ``waitpid`` for fork, and ``python -c pass`` for spawn;
* start + join of a no-op process in a parent that has configured logging: 200
  loggers and a stream handler on the root logger (fork, forkserver). proctor's children
  then forward their records to the parent (a pipe and the log listener per
  start); multiprocessing's do not (issue 17: a start looked at every logger);
* spawn start + join of a child given a Queue and a Lock, as the tutorial's programs
  start theirs: what rebuilding them costs the child (its imports, issue 17);
* fork start + join in a light program (a fresh interpreter that imports only the
  library measured) with a thread running, or with logging configured: what a child
  imports on its way, which the benchmark's own process (with everything loaded)
  hides;
* ``is_alive()`` of a running child, in a loop, while another thread of the parent
  computes: how often the loop gets to look (a look that lets the GIL go may wait
  for the other thread's switch interval to get it back);
* the cost of one ``start()`` while 10, 100 and 300 children started before it are
  still alive, each blocked on a queue of its own (issue 12: it grew with the
  number of living children). Flat is the goal.

Run: ``python benchmarks/bench_process.py [--quick]``.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import calls_beside_busy_thread, interleaved, row, time_row

import proctor


def _per_op(fn, ops):
    def measure():
        began = time.perf_counter()
        for _ in range(ops):
            fn()
        return (time.perf_counter() - began) / ops

    return measure


def _start_join(ctx, target=None, args=()):
    def once():
        # No target: run() does nothing, and neither child has to import this module.
        p = ctx.Process(target=target, args=args)
        p.start()
        p.join()
        if hasattr(p, "close"):
            p.close()

    return once


# Loggers the "logging configured" rows make: a program of many modules, one each.
_LOGGERS = 200


def _logging_rows(quick: bool, rounds: int) -> list[dict]:
    """start+join in a parent with _LOGGERS loggers and a stream handler on the root logger."""
    import logging

    names = [f"bench_process.m{i}" for i in range(_LOGGERS)]
    for name in names:
        logging.getLogger(name)
    # A handler that configures logging: a stream (to /dev/null; no child logs). Not
    # a NullHandler, which proctor does not forward to (it configures nothing).
    devnull = open(os.devnull, "w")  # noqa: SIM115 (closed in the finally below)
    handler = logging.StreamHandler(devnull)
    logging.root.addHandler(handler)
    rows = []
    try:
        for method, ops in (("fork", 20 if quick else 100), ("forkserver", 5 if quick else 30)):
            px = proctor.get_context(method)
            mp = multiprocessing.get_context(method)
            _start_join(px)()
            _start_join(mp)()
            got = interleaved(
                {
                    "proctor": _per_op(_start_join(px), ops),
                    "multiprocessing": _per_op(_start_join(mp), ops),
                },
                rounds,
            )
            rows.append(
                time_row(
                    f"start+join, logging configured ({method})",
                    got,
                    "ms",
                    note=(
                        f"{_LOGGERS} loggers, a stream handler on root: proctor's child "
                        "forwards its records, multiprocessing's does not"
                    ),
                )
            )
    finally:
        # Later benchmarks in this interpreter see logging as it was.
        logging.root.removeHandler(handler)
        devnull.close()
        for name in [*names, "bench_process"]:
            logging.root.manager.loggerDict.pop(name, None)
    return rows


def _given_rows(quick: bool, rounds: int) -> list[dict]:
    """spawn start+join of a child whose arguments are a Queue and a Lock."""
    import operator

    def start_join_given(ctx, args):
        # operator.is_: a function of a module every child has loaded, taking two
        # arguments; the child rebuilds both.
        return _start_join(ctx, operator.is_, args)

    px = proctor.get_context("spawn")
    mp = multiprocessing.get_context("spawn")
    px_args = (px.Queue(), px.Lock())
    mp_args = (mp.Queue(), mp.Lock())
    try:
        ops = 3 if quick else 10
        start_join_given(px, px_args)()  # (warm-up: the first spawn of each)
        start_join_given(mp, mp_args)()
        got = interleaved(
            {
                "proctor": _per_op(start_join_given(px, px_args), ops),
                "multiprocessing": _per_op(start_join_given(mp, mp_args), ops),
            },
            rounds,
        )
    finally:
        px_args[0].close()
        px_args[1].close()
        mp_args[0].close()
        mp_args[0].join_thread()
    return [
        time_row(
            "start+join given a Queue and a Lock (spawn)",
            got,
            "ms",
            note="the child rebuilds both: its imports for them",
        )
    ]


def _is_alive_beside_busy_thread(ctx, seconds: float):
    """``is_alive()`` calls a second on a running child while another thread runs Python code."""

    def measure():
        child = ctx.Process(target=time.sleep, args=(60,))
        child.start()
        try:
            return calls_beside_busy_thread(child.is_alive, seconds)
        finally:
            child.kill()
            child.join(30)
            if hasattr(child, "close"):
                child.close()

    return measure


def _is_alive_rows(quick: bool, rounds: int) -> list[dict]:
    seconds = 0.1 if quick else 0.3
    got = interleaved(
        {
            "proctor": _is_alive_beside_busy_thread(proctor.get_context("fork"), seconds),
            "multiprocessing": _is_alive_beside_busy_thread(
                multiprocessing.get_context("fork"), seconds
            ),
        },
        rounds,
    )
    return [
        row(
            "is_alive() while another thread computes",
            got["proctor"],
            got["multiprocessing"],
            "calls/s",
            higher_is_better=True,
            note="a running child; proctor looks at its pidfd, keeping the GIL",
        )
    ]


# A light program, in a fresh interpreter that imports only the library measured:
# the rows above run in this benchmark's process, which has loaded everything, so
# they cannot see what a fork child of a light program imports on its way (until the
# 39th session, a child of a parent with any thread imported one of proctor's
# modules: 6.7 ms a start+join against the stdlib's 3.0).
_LIGHT_PROGRAM = """
import os, sys, threading, time
library, scenario, ops, loggers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
stop = threading.Event()
if scenario == "thread":
    threading.Thread(target=stop.wait, daemon=True).start()
else:  # "logging": configured as the logging rows above (proctor's listener is a thread)
    import logging
    for i in range(loggers):
        logging.getLogger(f"light.m{i}")
    logging.root.addHandler(logging.StreamHandler(open(os.devnull, "w")))
ctx = __import__(library).get_context("fork")
def once():
    p = ctx.Process()
    p.start()
    p.join()
for _ in range(5):
    once()
began = time.perf_counter()
for _ in range(ops):
    once()
print((time.perf_counter() - began) / ops)
stop.set()
"""


def _light_program(library: str, scenario: str, ops: int):
    def measure():
        # (3.12+ warns that the program forks beside a thread, as os.fork() does.)
        command = [sys.executable, "-W", "ignore::DeprecationWarning", "-c", _LIGHT_PROGRAM]
        done = subprocess.run(
            [*command, library, scenario, str(ops), str(_LOGGERS)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the light program ({library}, {scenario}) failed: {done.stderr}")
        return float(done.stdout.split()[-1])

    return measure


def _light_program_rows(quick: bool, rounds: int) -> list[dict]:
    ops = 20 if quick else 60
    rows = []
    for scenario, title, note in (
        ("thread", "a thread running", "a fresh interpreter, one thread besides the main one"),
        (
            "logging",
            "logging configured",
            f"a fresh interpreter, {_LOGGERS} loggers and a stream handler on root: "
            "proctor's child forwards its records, multiprocessing's does not",
        ),
    ):
        got = interleaved(
            {
                "proctor": _light_program("proctor", scenario, ops),
                "multiprocessing": _light_program("multiprocessing", scenario, ops),
            },
            rounds,
        )
        rows.append(
            time_row(f"start+join in a light program, {title} (fork)", got, "ms", note=note)
        )
    return rows


def _bare_fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def _python_pass():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def _living_children(ctx, count):
    """Seconds per start() of ``count`` children that all stay alive until the end.

    Each child gets a queue of its own and blocks in ``get()`` on it; the queue's
    bound ``get`` is the target, so no child imports this module.
    """

    def measure():
        queues, processes = [], []
        try:
            began = time.perf_counter()
            for _ in range(count):
                q = ctx.Queue()
                queues.append(q)
                p = ctx.Process(target=q.get)
                p.start()
                processes.append(p)
            return (time.perf_counter() - began) / count
        finally:
            for q in queues[: len(processes)]:
                q.put(None)
            for p in processes:
                p.join(120)
                if p.exitcode is None:
                    p.kill()
                    p.join(30)
                p.close()
            for q in queues:
                q.close()
                if hasattr(q, "join_thread"):
                    q.join_thread()

    return measure


# Descriptors the parent holds per living child, with room to spare (proctor:
# channel, sentinel, status socket, queue ring and mailbox; multiprocessing:
# sentinel, queue pipe and its lock).
_FDS_PER_LIVING_CHILD = 10


def _living_counts(quick: bool) -> list[int]:
    """10, 100, 300 children, fewer if the descriptor limit cannot be raised enough."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 256 + 300 * _FDS_PER_LIVING_CHILD
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        soft = new_soft
    ceiling = (soft - 256) // _FDS_PER_LIVING_CHILD
    return [n for n in ((10, 100) if quick else (10, 100, 300)) if n <= ceiling]


def _living_rows(quick: bool) -> list[dict]:
    rows = []
    for method in ("fork", "forkserver"):
        px = proctor.get_context(method)
        mp = multiprocessing.get_context(method)
        # Warm up with a queue: the fork servers load what queue users need once.
        _living_children(px, 2)()
        _living_children(mp, 2)()
        for count in _living_counts(quick):
            rounds = 1 if quick else (5 if count <= 10 else 3)
            got = interleaved(
                {
                    "proctor": _living_children(px, count),
                    "multiprocessing": _living_children(mp, count),
                },
                rounds,
            )
            rows.append(
                time_row(
                    f"start with {count} living children ({method})",
                    got,
                    "ms",
                    note="per start(); each child blocks on a queue of its own",
                )
            )
    return rows


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
            time_row(
                f"start+join no-op ({method})",
                got,
                "ms",
                note=note,
                floor=got["floor"] if floor_name else None,
            )
        )
    rows.extend(_given_rows(quick, rounds))
    rows.extend(_logging_rows(quick, rounds))
    rows.extend(_light_program_rows(quick, rounds))
    rows.extend(_is_alive_rows(quick, rounds))
    rows.extend(_living_rows(quick))
    return rows


if __name__ == "__main__":
    from _common import print_rows

    print_rows(run(quick="--quick" in sys.argv))
