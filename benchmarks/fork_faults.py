"""Page faults of a fork start: proctor, multiprocessing, a bare ``os.fork()``.

    python benchmarks/fork_faults.py [--starts 300] [--runs 3]
    python benchmarks/fork_faults.py --living 10 [--rounds 16] [--runs 3]
    ... [--loggers 500] [--log-handler]

After a fork every page either process writes takes a fault: a copy while the other
process still shares the page (~3 us on the VM this was written on), or only a
change of protection once the child has exited (~0.7 us). Python writes to every
object it touches (reference counts), so what a start costs beyond the fork itself is
mostly how many distinct pages each side writes -- a count, steadier than any timing
on a shared machine.

Default mode, per no-op start+join:

* ``parent``: the parent's minor faults (``RUSAGE_SELF``), and of those, the ones
  before the fork in ``start()`` (``pre``) and between the fork's return and the end
  of ``start()`` (``post``: copies, while the child runs);
* ``child``: the children's minor faults (``RUSAGE_CHILDREN``, once reaped);
* the CPU time of each side.

``--living N``: the loop of ``bench_process``'s "start with N living children" row --
``Queue()``, ``Process(target=q.get)``, ``start()``, every child kept alive until the
round's end -- and per start the parent's faults in each part of it: ``queue``,
``process`` (the constructors), ``pre`` (``start()`` up to the fork system call),
``fork`` (the call itself, with every ``os.register_at_fork`` hook), ``post`` (the
rest of ``start()``); ``child``, each child's own faults (``RUSAGE_CHILDREN``: its
fork hooks, its ``q.get()`` and its exit); and the medians of ``start()``'s wall
time and of the CPU time of the whole loop body (``time.thread_time``: the parent's
own, fault handling included, less disturbed by other load than wall time). Every
page written between two forks faults once, so a page that both the end of one start
and the beginning of the next write counts in the first: compare the ``total``, and
the parts for where it goes. Means over the starts of every round but the first (a warm-up). Compare
versions run from copies built the same way: where the interpreter's heap lays its
objects out (source paths' lengths included) moves every count by up to ~10.

``--loggers N`` makes N loggers before either library starts anything (a program of
many modules, each with its logger), ``--log-handler`` puts a handler on the root
logger: proctor's children then forward their records to the parent (issue 17: a
start looked at every logger).

The fork system call is found by wrapping ``os.fork`` (both libraries call it
through the ``os`` module), which costs each library the same few pages. Each
library and the bare fork run in a fresh interpreter that has imported both
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

_PRELUDE = r"""
import json, multiprocessing, os, resource, statistics, sys, time
import proctor
loggers, log_handler = int(sys.argv.pop()), sys.argv.pop() == "handler"
if loggers or log_handler:
    import logging
    for i in range(loggers):
        logging.getLogger(f"app.m{i}")
    if log_handler:
        # (Not a NullHandler, which proctor does not forward to: it configures nothing.)
        logging.root.addHandler(logging.StreamHandler(open(os.devnull, "w")))
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
marks = [0, 0]
_fork = os.fork
def counting_fork():
    marks[0] = faults()
    pid = _fork()
    if pid:
        marks[1] = faults()
    return pid
"""

_NOOP = (
    _PRELUDE
    + r"""
which, starts = sys.argv[1], int(sys.argv[2])
counting, pre, post = [False], [0], [0]
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
        if counting[0]:
            began = faults()
            p.start()
            ended = faults()
            pre[0] += marks[0] - began
            post[0] += ended - marks[1]
        else:
            p.start()
        p.join()
        p.close()
for _ in range(20):
    one()
s0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
for _ in range(starts):
    one()
s1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
if which != "bare":
    # A second pass for the split: wrapping os.fork writes pages of its own, which
    # the first pass must not count.
    os.fork = counting_fork
    counting[0] = True
    for _ in range(starts):
        one()
cpu = lambda a, b: (b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime) * 1e6 / starts
print(json.dumps({
    "parent": (s1.ru_minflt - s0.ru_minflt) / starts,
    "pre": pre[0] / starts if which != "bare" else None,
    "post": post[0] / starts if which != "bare" else None,
    "child": (c1.ru_minflt - c0.ru_minflt) / starts,
    "parent_us": cpu(s0, s1),
    "child_us": cpu(c0, c1),
}))
"""
)

_LIVING = (
    _PRELUDE
    + r"""
which, count, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = (proctor if which == "proctor" else multiprocessing).get_context("fork")
os.fork = counting_fork
parts = {k: [] for k in ("queue", "process", "pre", "fork", "post", "total", "start_us", "cpu_us")}
parts["child"] = []
cpu = time.thread_time
children = lambda: resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
for index in range(rounds):
    queues, processes = [], []
    reaped = children()
    for _ in range(count):
        began = cpu()
        a = faults()
        q = ctx.Queue()
        b = faults()
        p = ctx.Process(target=q.get)
        c = faults()
        t = time.perf_counter()
        p.start()
        t = time.perf_counter() - t
        d = faults()
        spent = cpu() - began
        queues.append(q)
        processes.append(p)
        if index:
            got = {"queue": b - a, "process": c - b, "pre": marks[0] - c,
                   "fork": marks[1] - marks[0], "post": d - marks[1], "total": d - a,
                   "start_us": t * 1e6, "cpu_us": spent * 1e6}
            for key, value in got.items():
                parts[key].append(value)
    for q in queues:
        q.put(None)
    for p in processes:
        p.join(60)
        p.close()
    if index:
        parts["child"].append((children() - reaped) / count)
    for q in queues:
        q.close()
        if hasattr(q, "join_thread"):
            q.join_thread()
result = {k: statistics.mean(v) for k, v in parts.items()}
result["start_us"] = statistics.median(parts["start_us"])
result["cpu_us"] = statistics.median(parts["cpu_us"])
print(json.dumps(result))
"""
)


def _run(code: str, *argv: str, loggers: int = 0, log_handler: bool = False) -> dict:
    logging_argv = ["handler" if log_handler else "-", str(loggers)]
    out = subprocess.run(
        [sys.executable, "-c", code, *argv, *logging_argv],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--living", type=int, default=0, metavar="N")
    parser.add_argument("--rounds", type=int, default=16, help="rounds of N starts (--living)")
    parser.add_argument(
        "--loggers",
        type=int,
        default=0,
        metavar="N",
        help="make N loggers (app.m0, ...) first, as a program with many modules has",
    )
    parser.add_argument(
        "--log-handler",
        action="store_true",
        help="and a handler on the root logger: proctor's children then forward their logs",
    )
    args = parser.parse_args()
    logging_args = {"loggers": args.loggers, "log_handler": args.log_handler}
    names = ["proctor", "multiprocessing"]
    if not args.living:
        names.append("bare")
    got: dict[str, list[dict]] = {name: [] for name in names}
    for index in range(args.runs):
        for name in reversed(names) if index % 2 else names:
            which = "mp" if name == "multiprocessing" else name
            if args.living:
                got[name].append(
                    _run(_LIVING, which, str(args.living), str(args.rounds), **logging_args)
                )
            else:
                got[name].append(_run(_NOOP, which, str(args.starts), **logging_args))
    load = os.getloadavg()[0]
    if args.loggers or args.log_handler:
        handler = ", a handler on the root logger" if args.log_handler else ""
        print(f"with {args.loggers} loggers{handler}")
    if args.living:
        keys = ("queue", "process", "pre", "fork", "post", "total", "child")
        print(
            f"faults per start with {args.living} living children, medians of {args.runs} "
            f"runs of {args.rounds - 1}x{args.living} starts (load {load:.1f})"
        )
        print(f"{'':16}" + "".join(f"{k:>9}" for k in keys) + f"{'start us':>10}{'CPU us':>8}")
        for name, runs in got.items():
            cells = "".join(f"{_median(runs, k):9.1f}" for k in keys)
            print(
                f"{name:16}{cells}{_median(runs, 'start_us'):10.0f}{_median(runs, 'cpu_us'):8.0f}"
            )
        return
    print(f"per start+join, medians of {args.runs} runs of {args.starts} (load {load:.1f})")
    keys = ("parent", "pre", "post", "child")
    print(f"{'':16}" + "".join(f"{k:>8}" for k in keys) + f"{'parent us':>10}{'child us':>9}")
    for name, runs in got.items():
        cells = ""
        for key in keys:
            value = _median(runs, key)
            cells += f"{'-' if value is None else f'{value:.1f}':>8}"
        print(f"{name:16}{cells}{_median(runs, 'parent_us'):10.0f}{_median(runs, 'child_us'):9.0f}")


if __name__ == "__main__":
    main()
