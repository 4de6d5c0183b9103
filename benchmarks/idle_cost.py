"""What a process blocked in a wait costs while it waits: CPU per second, proctor vs stdlib.

    python benchmarks/idle_cost.py [--seconds 10] [--rounds 3] [--settle 0]
                                   [--start-method fork] [--only WAIT ...]

For each wait -- ``Queue.get()``, ``Lock.acquire()``, ``Event.wait()``,
``Condition.wait()`` -- one child of each library blocks in it with no timeout
and nothing ever comes; the parent reads the child's time on a CPU from
``/proc/<pid>/schedstat`` (nanoseconds, whatever the tick) at the start and the
end of a window of ``--seconds``, then ends the wait. A stdlib child sleeps in the
kernel until woken and costs nothing; a proctor child wakes between slices to
look for a dead peer or a lost wake-up (``_core._wait``), which costs a timer, two
context switches and cold caches each time. Medians of ``--rounds`` rounds, the
two libraries interleaved. Run it with ``PROCTOR_PURE_PYTHON=1`` for the pure
implementation.

Not a ``bench_*`` module: the stdlib's figure is zero, so no ratio is meaningful;
this prints microseconds of CPU per second of waiting, and, to read them against,
what a child that only wakes from ``time.sleep(0.1)`` (``0.5``) in a loop costs on
the machine at that moment: on a VM a wake-up cost 0.06-1.5 ms in one afternoon,
so the wake-ups per second (voluntary context switches) are the steadier figure.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

import proctor


def _wake_ups(pid: int) -> int:
    """How many times ``pid`` has gone to sleep of its own accord (and so woken up)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def _cpu_ns(pid: int) -> int:
    """Nanoseconds ``pid`` has run on a CPU (Linux; utime+stime ticks elsewhere)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except OSError:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 10**9 // os.sysconf("SC_CLK_TCK")


# The waits: (name, make the objects, the child's wait, end it). Each child sets
# ``ready`` just before it blocks.


def _queue(ctx):
    return (ctx.Queue(),)


def _queue_wait(ready, q):
    ready.set()
    q.get()


def _queue_end(q):
    q.put(None)


def _lock(ctx):
    lock = ctx.Lock()
    lock.acquire()
    return (lock,)


def _lock_wait(ready, lock):
    ready.set()
    lock.acquire()


def _lock_end(lock):
    lock.release()


def _event(ctx):
    return (ctx.Event(),)


def _event_wait(ready, event):
    ready.set()
    event.wait()


def _event_end(event):
    event.set()


def _condition(ctx):
    return (ctx.Condition(ctx.Lock()),)


def _condition_wait(ready, cond):
    with cond:
        ready.set()
        cond.wait()


def _condition_end(cond):
    with cond:
        cond.notify_all()


def _sleep_loop(ready, interval):
    ready.set()
    while True:
        time.sleep(interval)


def bare_wake_ups(interval: float, seconds: float, settle: float) -> float:
    """Microseconds of CPU per second of a child that only sleeps ``interval`` in a loop:
    what a wake-up costs on this machine now, with nothing done while awake."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_sleep_loop, args=(ready, interval))
    p.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the sleeping child did not start")
        time.sleep(0.05 + settle)
        began, cpu_before = time.monotonic(), _cpu_ns(p.pid)
        time.sleep(seconds)
        cpu_after, ended = _cpu_ns(p.pid), time.monotonic()
    finally:
        p.kill()
        p.join(30)
    return (cpu_after - cpu_before) / 1e3 / (ended - began)


WAITS = {
    "Queue.get()": (_queue, _queue_wait, _queue_end),
    "Lock.acquire()": (_lock, _lock_wait, _lock_end),
    "Event.wait()": (_event, _event_wait, _event_end),
    "Condition.wait()": (_condition, _condition_wait, _condition_end),
}


def measure(ctx, wait: str, seconds: float, settle: float = 0.0) -> tuple[float, float]:
    """Microseconds of CPU, and wake-ups, per second of a child blocked in ``wait``
    for ``seconds``, from ``settle`` seconds into the wait."""
    make, child_wait, end = WAITS[wait]
    objects = make(ctx)
    ready = ctx.Event()
    p = ctx.Process(target=child_wait, args=(ready, *objects))
    p.start()
    try:
        if not ready.wait(60):
            raise RuntimeError(f"the {wait} child did not start")
        time.sleep(0.05 + settle)  # (into the wait: its set() and the way to the first sleep)
        began, cpu_before, woke_before = time.monotonic(), _cpu_ns(p.pid), _wake_ups(p.pid)
        time.sleep(seconds)
        cpu_after, woke_after, ended = _cpu_ns(p.pid), _wake_ups(p.pid), time.monotonic()
        end(*objects)
        p.join(30)
        if p.exitcode != 0:
            raise RuntimeError(f"the {wait} child ended with {p.exitcode}")
    finally:
        if p.exitcode is None:
            p.kill()
            p.join(30)
    elapsed = ended - began
    return (cpu_after - cpu_before) / 1e3 / elapsed, (woke_after - woke_before) / elapsed


def _implementation() -> str:
    from proctor._sync import _accel

    return "C accelerator" if _accel.native is not None else "pure Python"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--settle", type=float, default=0.0, help="start the window this far into the wait"
    )
    parser.add_argument("--start-method", default="fork")
    parser.add_argument("--only", action="append", choices=list(WAITS))
    args = parser.parse_args(argv)
    libraries = {
        "proctor": proctor.get_context(args.start_method),
        "multiprocessing": multiprocessing.get_context(args.start_method),
    }
    print(
        f"CPU of a blocked child, us per second of waiting ({args.seconds:g} s windows "
        f"from {args.settle:g} s into the wait, "
        f"median of {args.rounds}; {args.start_method}; proctor {_implementation()})"
    )
    print(f"{'wait':20} {'proctor':>10} {'multiproc.':>10}   wake-ups/s: proctor, multiproc.")
    for wait in args.only or WAITS:
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in libraries}
        for index in range(args.rounds):
            names = list(libraries)
            for name in reversed(names) if index % 2 else names:
                samples[name].append(measure(libraries[name], wait, args.seconds, args.settle))
        px, mp = (statistics.median(cpu for cpu, _ in samples[name]) for name in libraries)
        pw, mw = (statistics.median(woke for _, woke in samples[name]) for name in libraries)
        print(f"{wait:20} {px:10.0f} {mp:10.0f}   {pw:.1f}, {mw:.1f}")
        sys.stdout.flush()
    # The machine's own price of a wake-up, which varies with its load (a VM's
    # idle vCPU may cost far more to wake): the floor to read the rows against.
    for interval in (0.1, 0.5):
        cost = statistics.median(
            bare_wake_ups(interval, args.seconds, args.settle) for _ in range(args.rounds)
        )
        print(f"(a bare time.sleep({interval:g}) loop: {cost:.0f} us/s)")


if __name__ == "__main__":
    main()
