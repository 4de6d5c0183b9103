"""Synchronisation primitives: proctor against multiprocessing, side by side.

Run as a script (``python benchmarks/bench_sync.py [--quick]``) or call
``run(quick)``. Each measurement is repeated and the median is reported; the two
libraries alternate within every repetition so that machine noise hits both.

Rows:
- ``lock_uncontended``: ``lock.acquire(); lock.release()`` of an uncontended
  Lock, in ns (lower is better; ratio = multiprocessing / proctor).
- ``lock_uncontended_prebound``: the same through pre-bound methods
  (``acquire = lock.acquire``), which strips the attribute lookups and shows the
  pure per-call cost (multiprocessing's methods are C functions).
- ``lock_uncontended_with``: the same through ``with lock:``.
- ``lock_uncontended_pure``: ``lock_uncontended`` with proctor's pure-Python
  implementation, where the C accelerator is the active one (what an install
  without a compiler, or ``PROCTOR_PURE_PYTHON=1``, runs).

The note of each Lock row names the implementation measured
(``python -m proctor info`` says which one is active).
- ``lock_counter_2proc``: two processes incrementing a counter in anonymous
  shared memory under one Lock, in increments per second (higher is better;
  ratio = proctor / multiprocessing). The final count is checked exactly. Where
  the OS puts the two processes decides the regime: on one CPU they take turns
  (little contention; the per-call cost decides), on two they contend.
- ``lock_counter_2proc_2cpus``: the same with each process pinned to its own CPU
  (Linux), so that they really contend every run.
- ``rlock_uncontended``, ``semaphore_uncontended``, ``rlock_counter_2proc``,
  ``semaphore_counter_2proc``: the uncontended and counter rows for an RLock and
  for a Semaphore(1) used as a lock (issue 17's targets name all three).
- ``event_wake_latency``: ``Event.set()`` in one process to ``Event.wait()``
  returning in another, in microseconds (lower is better; ratio =
  multiprocessing / proctor).

In every row, ratio > 1 means proctor is better.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import statistics
import sys
import time

import proctor
from proctor import _sync

_FORK = "fork"  # both libraries share the counter page by inheritance


def _factory(ctx, name: str):
    # proctor's contexts gain Lock/Event once the lead wires them in; until then
    # the classes themselves serve (they do not depend on the start method).
    return getattr(ctx, name, None) or getattr(_sync, name)


def _ns_per_op(lock, n: int, mode: str) -> float:
    start = time.perf_counter()
    if mode == "with":
        for _ in range(n):
            with lock:
                pass
    elif mode == "prebound":
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            release()
    else:
        for _ in range(n):
            lock.acquire()
            lock.release()
    return (time.perf_counter() - start) / n * 1e9


def _counter_worker(lock, words, n: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    while not words[1]:  # start together
        time.sleep(0.0005)
    for _ in range(n):
        with lock:
            words[0] += 1


def _semaphore_1(lib):
    """A Semaphore(1) maker: a semaphore used as a lock."""
    return lambda: _factory(lib, "Semaphore")(1)


def _counter_rate(lib, n: int, pinned: bool = False, kind: str = "Lock") -> float:
    ctx = lib.get_context(_FORK)
    lock = _factory(ctx, kind)(*((1,) if kind == "Semaphore" else ()))
    page = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous, MAP_SHARED: inherited by fork children
    words = memoryview(page).cast("q")
    cpus = sorted(os.sched_getaffinity(0))[:2] if pinned else [None, None]
    procs = [ctx.Process(target=_counter_worker, args=(lock, words, n, cpu)) for cpu in cpus]
    for p in procs:
        p.start()
    time.sleep(0.05)  # both children are polling the start flag
    start = time.perf_counter()
    words[1] = 1
    for p in procs:
        p.join(120)
    elapsed = time.perf_counter() - start
    count = words[0]
    for p in procs:
        p.close()
    del procs, p, words
    page.close()
    if count != 2 * n:
        raise AssertionError(f"{lib.__name__}: lost increments: {count} != {2 * n}")
    return 2 * n / elapsed


def _latency_child(go, done, words, rounds: int) -> None:
    for i in range(rounds):
        go.wait(30)
        words[2 + i] = time.monotonic_ns()
        go.clear()
        done.set()


def _wake_up_rounds(ctx, child, first, rounds: int, signal) -> float:
    """Median microseconds from ``signal(i, words)`` (which returns its start time) to
    the moment the child stamps in ``words[2 + i]``; the child then sets ``done``."""
    done = _factory(ctx, "Event")()
    page = mmap.mmap(-1, 8 * (rounds + 8))
    words = memoryview(page).cast("q")
    p = ctx.Process(target=child, args=(first, done, words, rounds))
    p.start()
    samples = []
    for i in range(rounds):
        time.sleep(0.002)  # let the child block in wait()
        t0 = signal(i, words)
        done.wait(30)
        done.clear()
        samples.append((words[2 + i] - t0) / 1000)
    p.join(30)
    p.close()
    del p, words
    page.close()
    return statistics.median(samples)


def _event_latency_us(lib, rounds: int) -> float:
    """From ``set()`` to the waiter's return from ``wait()``."""
    ctx = lib.get_context(_FORK)
    go = _factory(ctx, "Event")()

    def signal(i, words):
        t0 = time.monotonic_ns()
        go.set()
        return t0

    return _wake_up_rounds(ctx, _latency_child, go, rounds, signal)


def _notify_child(cond, done, words, rounds: int) -> None:
    for i in range(rounds):
        with cond:
            cond.wait_for(lambda i=i: words[1] > i, 30)  # round i posted (no lost notify)
            words[2 + i] = time.monotonic_ns()
        done.set()


def _notify_latency_us(lib, rounds: int) -> float:
    """From ``notify()`` to the waiter's return from ``wait()``, lock handed over."""
    ctx = lib.get_context(_FORK)
    cond = _factory(ctx, "Condition")()

    def signal(i, words):
        with cond:
            words[1] = i + 1
            t0 = time.monotonic_ns()
            cond.notify()
        return t0

    return _wake_up_rounds(ctx, _notify_child, cond, rounds, signal)


def _row(
    name: str,
    ours: list[float],
    theirs: list[float],
    unit: str,
    higher_better: bool,
    note: str = "",
    reference: bool = False,
):
    a, b = statistics.median(ours), statistics.median(theirs)
    ratio = a / b if higher_better else b / a
    extra = {"reference": True} if reference else {}
    return {
        "benchmark": name,
        "proctor": round(a, 3),
        "multiprocessing": round(b, 3),
        "unit": unit,
        "ratio": round(ratio, 3),
        "better": "higher" if higher_better else "lower",
        "note": note,
        **extra,
    }


def _implementation_note() -> str:
    active = getattr(_sync, "ACTIVE", "python")
    return "proctor: C accelerator" if active == "native" else "proctor: pure Python"


def run(quick: bool) -> list[dict]:
    """Measure every row; ``quick`` uses fewer iterations and repetitions."""
    reps = 3 if quick else 7
    n_ops = 100_000 if quick else 500_000
    n_count = 20_000 if quick else 100_000
    rounds = 50 if quick else 200
    rows = []

    note = _implementation_note()
    implementations = getattr(_sync, "IMPLEMENTATIONS", {})
    pure = implementations.get("python") if implementations.get("native") else None
    for mode, name, make, make_std in (
        ("call", "lock_uncontended", _factory(proctor, "Lock"), multiprocessing.Lock),
        ("prebound", "lock_uncontended_prebound", _factory(proctor, "Lock"), multiprocessing.Lock),
        ("with", "lock_uncontended_with", _factory(proctor, "Lock"), multiprocessing.Lock),
        ("call", "lock_uncontended_pure", pure["Lock"] if pure else None, multiprocessing.Lock),
        ("call", "rlock_uncontended", _factory(proctor, "RLock"), multiprocessing.RLock),
        ("call", "semaphore_uncontended", _semaphore_1(proctor), _semaphore_1(multiprocessing)),
    ):
        if make is None:
            continue  # the pure implementation is the active one: the first row is it
        ours, theirs = [], []
        mine, std = make(), make_std()
        for _ in range(reps):
            ours.append(_ns_per_op(mine, n_ops, mode))
            theirs.append(_ns_per_op(std, n_ops, mode))
        mine.close()
        # The pure row is for reference: the fallback a build without a compiler runs,
        # next to the stdlib's C lock (a Python call alone costs what that lock does).
        pure_row = name.endswith("_pure")
        row_note = "proctor: pure Python" if pure_row else note
        rows.append(_row(name, ours, theirs, "ns/op", False, note=row_note, reference=pure_row))

    ours, theirs = [], []
    for _ in range(reps + 2):  # the noisiest row: scheduling decides who convoys
        ours.append(_counter_rate(proctor, n_count))
        theirs.append(_counter_rate(multiprocessing, n_count))
    rows.append(
        _row("lock_counter_2proc", ours, theirs, "increments/s", higher_better=True, note=note)
    )

    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        ours, theirs = [], []
        for _ in range(reps + 2):
            ours.append(_counter_rate(proctor, n_count, pinned=True))
            theirs.append(_counter_rate(multiprocessing, n_count, pinned=True))
        rows.append(
            _row(
                "lock_counter_2proc_2cpus",
                ours,
                theirs,
                "increments/s",
                higher_better=True,
                note=note,
            )
        )

    for kind in ("RLock", "Semaphore"):
        ours, theirs = [], []
        for _ in range(reps):
            ours.append(_counter_rate(proctor, n_count, kind=kind))
            theirs.append(_counter_rate(multiprocessing, n_count, kind=kind))
        name = f"{kind.lower()}_counter_2proc"
        rows.append(_row(name, ours, theirs, "increments/s", higher_better=True, note=note))

    ours, theirs = [], []
    for _ in range(max(1, reps // 2)):
        ours.append(_event_latency_us(proctor, rounds))
        theirs.append(_event_latency_us(multiprocessing, rounds))
    rows.append(_row("event_wake_latency", ours, theirs, "us", higher_better=False))

    ours, theirs = [], []
    for _ in range(max(1, reps // 2)):
        ours.append(_notify_latency_us(proctor, rounds))
        theirs.append(_notify_latency_us(multiprocessing, rounds))
    rows.append(_row("condition_notify_latency", ours, theirs, "us", higher_better=False))
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(
            f"{row['benchmark']:24} proctor {row['proctor']:>14,.3f}  multiprocessing "
            f"{row['multiprocessing']:>14,.3f} {row['unit']:13} ratio {row['ratio']:.2f} "
            f"({row['better']} is better)"
        )
