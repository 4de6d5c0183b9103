"""Queues: proctor vs multiprocessing, measured side by side in one run.

Rows: one producer to one consumer with small ints (one at a time, and in
batches with put_many/get_many), round trips between two processes (each get()
waits for the other's put(): the getter's watch and wake-up), two producers to
two consumers, a 64 MiB
float64 array put by a child and got by the parent (one array, in a fresh
process and queue: fresh pages on both sides), and 64 MiB arrays streamed
(steady state, where the queue reuses the pages of arrays already dropped), each
with a plain memory copy's bandwidth in the same run for scale.
Run: ``python benchmarks/bench_queue.py [--quick]``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import interleaved, row

import proctor

ARRAY_BYTES = 64 * 1024 * 1024
#: Arrays streamed in the steady-state row, and how many of them warm up first.
STREAM_ARRAYS, STREAM_WARMUP = 10, 2


def produce(q, n):
    for i in range(n):
        q.put(i)


def produce_many(q, n, batch):
    for start in range(0, n, batch):
        q.put_many(range(start, min(n, start + batch)))


def consume(q, n):
    for _ in range(n):
        q.get()


def echo(requests, replies, n):
    for _ in range(n):
        replies.put(requests.get())


def produce_array(q, stamps):
    a = np.random.default_rng(0).random(ARRAY_BYTES // 8)
    stamps.put(time.perf_counter())  # CLOCK_MONOTONIC: comparable across processes
    q.put(a)


def produce_arrays(q, stamps, k):
    a = np.random.default_rng(0).random(ARRAY_BYTES // 8)
    for i in range(k):
        if i == STREAM_WARMUP:
            stamps.put(time.perf_counter())
        q.put(a)


def _one_to_one(ctx, n):
    q = ctx.Queue()
    p = ctx.Process(target=produce, args=(q, n))
    began = time.perf_counter()
    p.start()
    for _ in range(n):
        q.get()
    elapsed = time.perf_counter() - began
    p.join()
    return n / elapsed


def _one_to_one_batched(ctx, n, batch=1000):
    q = ctx.Queue()
    p = ctx.Process(target=produce_many, args=(q, n, batch))
    began = time.perf_counter()
    p.start()
    got = 0
    while got < n:
        got += len(q.get_many(batch))
    elapsed = time.perf_counter() - began
    p.join()
    return n / elapsed


def _round_trips(ctx, n):
    requests, replies = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=echo, args=(requests, replies, n))
    p.start()
    requests.put(-1)  # the child is up and answering: time the round trips only
    replies.get()
    began = time.perf_counter()
    for i in range(n - 1):
        requests.put(i)
        replies.get()
    elapsed = time.perf_counter() - began
    p.join()
    return (n - 1) / elapsed


def _two_to_two(ctx, n):
    q = ctx.Queue()
    half = n // 2
    procs = [ctx.Process(target=produce, args=(q, half)) for _ in range(2)]
    procs += [ctx.Process(target=consume, args=(q, half)) for _ in range(2)]
    began = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return 2 * half / (time.perf_counter() - began)


def _array(ctx):
    q = ctx.Queue()
    stamps = ctx.Queue()
    p = ctx.Process(target=produce_array, args=(q, stamps))
    p.start()
    a = q.get()
    arrived = time.perf_counter()
    began = stamps.get()
    p.join()
    assert a.nbytes == ARRAY_BYTES
    return ARRAY_BYTES / (arrived - began) / 1e9


def _array_stream(ctx):
    # Steady state: one producer streams arrays, the consumer drops each before
    # the next (maxsize=1); timed from the third put to the last get.
    q = ctx.Queue(maxsize=1)
    stamps = ctx.Queue()
    p = ctx.Process(target=produce_arrays, args=(q, stamps, STREAM_ARRAYS))
    p.start()
    for _ in range(STREAM_ARRAYS):
        a = q.get()
        assert a.nbytes == ARRAY_BYTES
        del a
    arrived = time.perf_counter()
    began = stamps.get()
    p.join()
    return (STREAM_ARRAYS - STREAM_WARMUP) * ARRAY_BYTES / (arrived - began) / 1e9


def _memcpy_bandwidth():
    src = np.random.default_rng(1).random(ARRAY_BYTES // 8)
    dst = np.empty_like(src)
    dst[:] = 0  # touch the pages first: measure the copy, not page faults
    began = time.perf_counter()
    np.copyto(dst, src)
    return ARRAY_BYTES / (time.perf_counter() - began) / 1e9


def run(quick: bool = False) -> list[dict]:
    rounds = 3 if quick else 5
    n = 20_000 if quick else 100_000
    px = proctor.get_context("fork")
    mp = multiprocessing.get_context("fork")
    rows = []
    got = interleaved(
        {"proctor": lambda: _one_to_one(px, n), "mp": lambda: _one_to_one(mp, n)}, rounds
    )
    rows.append(
        row(
            "queue 1->1 small ints, put/get",
            got["proctor"],
            got["mp"],
            "msg/s",
            higher_is_better=True,
        )
    )
    got = interleaved(
        {"proctor": lambda: _one_to_one_batched(px, n), "mp": lambda: _one_to_one(mp, n)}, rounds
    )
    rows.append(
        row(
            "queue 1->1 small ints, put_many/get_many",
            got["proctor"],
            got["mp"],
            "msg/s",
            higher_is_better=True,
            note="batches of 1000; multiprocessing has no batch API (one at a time)",
        )
    )
    trips = n // 5
    got = interleaved(
        {"proctor": lambda: _round_trips(px, trips), "mp": lambda: _round_trips(mp, trips)},
        rounds,
    )
    rows.append(
        row(
            "queue round trips, 2 processes",
            got["proctor"],
            got["mp"],
            "trips/s",
            higher_is_better=True,
            note="put, then get() waits for the other process's put()",
        )
    )
    got = interleaved(
        {"proctor": lambda: _two_to_two(px, n), "mp": lambda: _two_to_two(mp, n)}, rounds
    )
    rows.append(
        row("queue 2->2 small ints", got["proctor"], got["mp"], "msg/s", higher_is_better=True)
    )
    got = interleaved(
        {"proctor": lambda: _array(px), "mp": lambda: _array(mp), "memcpy": _memcpy_bandwidth},
        rounds,
    )
    rows.append(
        row(
            "queue 64 MiB float64 array, child->parent",
            got["proctor"],
            got["mp"],
            "GB/s",
            higher_is_better=True,
            note=f"plain memory copy in the same run: {got['memcpy']:.2f} GB/s "
            f"(proctor reaches {got['proctor'] / got['memcpy']:.0%} of it)",
            floor=got["memcpy"],
        )
    )
    got = interleaved(
        {
            "proctor": lambda: _array_stream(px),
            "mp": lambda: _array_stream(mp),
            "memcpy": _memcpy_bandwidth,
        },
        rounds,
    )
    rows.append(
        row(
            "queue 64 MiB float64 arrays streamed, child->parent",
            got["proctor"],
            got["mp"],
            "GB/s",
            higher_is_better=True,
            note=f"steady state, maxsize=1, each array dropped before the next get; "
            f"memory copy {got['memcpy']:.2f} GB/s "
            f"(proctor reaches {got['proctor'] / got['memcpy']:.0%} of it)",
            floor=got["memcpy"],
        )
    )
    return rows


if __name__ == "__main__":
    from _common import print_rows

    print_rows(run(quick="--quick" in sys.argv))
