"""A child writes a 64 MiB shared numpy array in place; the parent reads it.

Contenders, in the same run, start method ``fork`` for all:

- proctor: ``proctor.shared_memory.shared_array`` (anonymous shared memory);
- ``multiprocessing.shared_memory.SharedMemory`` + ``np.ndarray(buffer=shm.buf)``;
- ``multiprocessing.Array("d", n, lock=False)`` + ``np.frombuffer``;
- a plain in-process ``np.copyto`` of 64 MiB: the memory bandwidth ceiling.

Rows (ratio > 1 means proctor is better):

- child write bandwidth (timed inside the child: ``np.copyto(shared, local)``),
  against each multiprocessing flavour, and as a percentage of the plain copy;
  "cold" (fresh memory: the kernel allocates and zeroes pages during the write)
  and "warm" (the parent touched every page before starting the child; the
  child still takes one minor page fault per 4 KiB page it maps), and the
  child's second pass over the same memory (steady state: no faults left);
- the same child copies in CPU time: the child's ``time.thread_time`` around each
  copy (user and system time of the copying thread, page faults included), in
  milliseconds per 64 MiB copy. Preemption by other work on a loaded machine
  stretches the wall-clock rows but not these, so their ratios hold still where the
  bandwidth rows swing (docs/shared_memory.md, "Why the first-write rows swing");
- parent read bandwidth of what the child wrote (``np.copyto(local, shared)``);
- end to end: allocate, start the child, child writes, join, parent reads, free.

Medians of several rounds, contenders interleaved within each round.
Run: ``python benchmarks/bench_shared_memory.py [--quick]``.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import time
from multiprocessing import shared_memory as mp_shared_memory

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import row

import proctor
from proctor.shared_memory import shared_array

N = 64 * 1024 * 1024 // 8  # float64 items in 64 MiB
MIB = 64
GB = 1e9
METHOD = "fork"


Copies = tuple[float, float, float, float]
"""Seconds of the two passes of ``_write``: wall first, wall second, CPU first, CPU second."""

Round = tuple[float, float, float, float, float, float]
"""One contender's round: write, read, end to end, rewrite (wall), write, rewrite (CPU)."""


def _write(target: np.ndarray) -> Copies:
    """Copy 64 MiB into ``target`` twice; return the wall and CPU seconds of each pass.

    The first pass pays the page faults of a fresh mapping; the second shows the
    steady state of a long-lived child writing into memory it has mapped. CPU time
    is the copying thread's own (``time.thread_time``: user and system, so the
    kernel's work in the page faults counts, other threads' and processes' does not).
    """
    source = np.full(target.shape, 1.5)
    walls, cpus = [], []
    for _ in range(2):
        cpu_began = time.thread_time()
        began = time.perf_counter()
        np.copyto(target, source)
        walls.append(time.perf_counter() - began)
        cpus.append(time.thread_time() - cpu_began)
    return walls[0], walls[1], cpus[0], cpus[1]


def _proctor_child(array: np.ndarray) -> Copies:
    return _write(array)


def _mp_shm_child(name: str, conn) -> None:
    shm = mp_shared_memory.SharedMemory(name)
    array = np.ndarray((N,), np.float64, buffer=shm.buf)
    conn.send(_write(array))
    del array
    shm.close()


def _mp_array_child(raw, conn) -> None:
    conn.send(_write(np.frombuffer(raw, dtype=np.float64)))


def _read(array: np.ndarray, into: np.ndarray) -> float:
    began = time.perf_counter()
    np.copyto(into, array)
    took = time.perf_counter() - began
    if into[N // 2] != 1.5:
        raise AssertionError("the parent did not see the child's write")
    return took


def _round_proctor(into: np.ndarray, warm: bool = False) -> Round:
    if warm:
        array = shared_array(N, np.float64)
        array[:] = 0
    began = time.perf_counter()
    if not warm:
        array = shared_array(N, np.float64)
    p = proctor.get_context(METHOD).Process(target=_proctor_child, args=(array,))
    p.start()
    p.join(120)
    write, rewrite, write_cpu, rewrite_cpu = p.result
    p.close()
    read = _read(array, into)
    del array
    return write, read, time.perf_counter() - began, rewrite, write_cpu, rewrite_cpu


def _round_mp_shm(into: np.ndarray, warm: bool = False) -> Round:
    ctx = multiprocessing.get_context(METHOD)
    if warm:
        shm = mp_shared_memory.SharedMemory(create=True, size=N * 8)
        array = np.ndarray((N,), np.float64, buffer=shm.buf)
        array[:] = 0
    began = time.perf_counter()
    if not warm:
        shm = mp_shared_memory.SharedMemory(create=True, size=N * 8)
        array = np.ndarray((N,), np.float64, buffer=shm.buf)
    recv_end, send_end = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_mp_shm_child, args=(shm.name, send_end))
    p.start()
    write, rewrite, write_cpu, rewrite_cpu = recv_end.recv()
    p.join(120)
    p.close()
    recv_end.close()
    send_end.close()
    read = _read(array, into)
    del array
    shm.close()
    shm.unlink()
    return write, read, time.perf_counter() - began, rewrite, write_cpu, rewrite_cpu


def _round_mp_array(into: np.ndarray) -> Round:
    ctx = multiprocessing.get_context(METHOD)
    began = time.perf_counter()
    raw = ctx.Array("d", N, lock=False)
    recv_end, send_end = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_mp_array_child, args=(raw, send_end))
    p.start()
    write, rewrite, write_cpu, rewrite_cpu = recv_end.recv()
    p.join(120)
    p.close()
    recv_end.close()
    send_end.close()
    read = _read(np.frombuffer(raw, dtype=np.float64), into)
    del raw
    return write, read, time.perf_counter() - began, rewrite, write_cpu, rewrite_cpu


def _round_memcpy(into: np.ndarray) -> Round:
    source = np.full(N, 1.5)
    cpu_began = time.thread_time()
    began = time.perf_counter()
    np.copyto(into, source)
    took = time.perf_counter() - began
    cpu = time.thread_time() - cpu_began
    return took, took, took, took, cpu, cpu


def run(quick: bool) -> list[dict]:
    rounds = 3 if quick else 7
    into = np.empty(N)
    into[:] = 0  # touch the pages once, outside every measurement
    contenders = {
        "proctor": _round_proctor,
        "mp_shm": _round_mp_shm,
        "mp_array": _round_mp_array,
        "memcpy": _round_memcpy,
        "proctor_warm": lambda into: _round_proctor(into, warm=True),
        "mp_shm_warm": lambda into: _round_mp_shm(into, warm=True),
    }
    samples: dict[str, list[Round]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            samples[name].append(fn(into))

    def median(name: str, index: int) -> float:
        return statistics.median(s[index] for s in samples[name])

    def bandwidth(name: str, index: int) -> float:
        return MIB * 1024 * 1024 / median(name, index) / GB

    def cpu_ms(name: str, index: int) -> float:
        return median(name, index) * 1e3

    memcpy = bandwidth("memcpy", 0)
    note = f"plain memcpy {memcpy:.2f} GB/s"
    cpu_note = f"child's CPU time per copy; plain memcpy {cpu_ms('memcpy', 4):.1f} ms"
    rows = [
        row("child writes 64 MiB, cold, vs mp.shared_memory", bandwidth("proctor", 0),
            bandwidth("mp_shm", 0), "GB/s", higher_is_better=True, note=note),
        row("child writes 64 MiB, pages warm, vs mp.Array", bandwidth("proctor_warm", 0),
            bandwidth("mp_array", 0), "GB/s", higher_is_better=True,
            note="mp.Array zeroes (touches) its pages when created: always warm"),
        row("child writes 64 MiB, pages warm, vs mp.shm", bandwidth("proctor_warm", 0),
            bandwidth("mp_shm_warm", 0), "GB/s", higher_is_better=True, note=note),
        row("child rewrites 64 MiB (2nd pass) vs mp.shm", bandwidth("proctor", 3),
            bandwidth("mp_shm", 3), "GB/s", higher_is_better=True, note=note),
        row("child rewrite as % of plain memcpy (vs mp.shm)",
            100 * bandwidth("proctor", 3) / memcpy, 100 * bandwidth("mp_shm", 3) / memcpy,
            "%", higher_is_better=True),
        row("child writes 64 MiB, cold, CPU, vs mp.shm", cpu_ms("proctor", 4),
            cpu_ms("mp_shm", 4), "ms CPU", higher_is_better=False, note=cpu_note),
        row("child writes 64 MiB, warm, CPU, vs mp.Array", cpu_ms("proctor_warm", 4),
            cpu_ms("mp_array", 4), "ms CPU", higher_is_better=False, note=cpu_note),
        row("child writes 64 MiB, warm, CPU, vs mp.shm", cpu_ms("proctor_warm", 4),
            cpu_ms("mp_shm_warm", 4), "ms CPU", higher_is_better=False, note=cpu_note),
        row("child rewrites 64 MiB, CPU, vs mp.shm", cpu_ms("proctor", 5),
            cpu_ms("mp_shm", 5), "ms CPU", higher_is_better=False, note=cpu_note),
        row("parent reads 64 MiB child wrote vs mp.shm", bandwidth("proctor", 1),
            bandwidth("mp_shm", 1), "GB/s", higher_is_better=True, note=note),
        row("end to end 64 MiB (fork) vs mp.shared_memory", median("proctor", 2) * 1e3,
            median("mp_shm", 2) * 1e3, "ms", higher_is_better=False),
        row("end to end 64 MiB (fork) vs mp.Array", median("proctor", 2) * 1e3,
            median("mp_array", 2) * 1e3, "ms", higher_is_better=False),
    ]  # fmt: skip
    return rows


if __name__ == "__main__":
    from _common import print_rows

    print_rows(run(quick="--quick" in sys.argv))
