"""Benchmark proctor's Pipe against multiprocessing.Pipe and a raw socket pair.

Measured in one run, side by side, medians of several repetitions interleaved
so that drift on a noisy machine hits every contender alike:

* round-trip latency of a small pickled 3-tuple, parent <-> child, both pinned to
  one core (a wake-up across cores costs ~30 us on this VM and hides the rest);
  the floor is a raw ``socket.socketpair()`` 1-byte round trip;
* round-trip latency of 16 KiB and 64 KiB ``send_bytes`` messages, likewise:
  bigger than one atomic pipe write (mid-size messages, see
  proctor/_connections/_sending.py);
* the 3-tuple and 16 KiB round trips again with parent and child free to run on
  different cores, as they do unless pinned: there the time a woken process takes
  to run on an idle core counts, and how early each side is woken (docs/design.md,
  "Several senders on one connection end"), unless the receiver is looking for
  the message when it comes (a proctor ``Pipe()`` end's does, for up to
  ``_receiving.SPIN_NS``: ``_receiving._read_spinning``);
* the 3-tuple round trip on two cores with each side waiting in ``poll(timeout)``,
  or in ``connection.wait([end], timeout)``, before its ``recv()``, as a loop that
  checks something else between messages does (proctor's look before they sleep too);
* throughput of 1 MiB ``send_bytes``/``recv_bytes`` messages, child -> parent;
* ``poll()`` of an end with nothing to read, in a loop, while another thread of the
  process computes: how often the loop gets to look (a look that lets the GIL go
  may wait for the other thread's switch interval to get it back); and ``recv()``
  of small messages already there while another thread of the process waits (a
  process with a thread of its own, mostly asleep: a pool's, a log listener's);
* a 64 MiB float64 array sent by a child and received by the parent (one array,
  fresh pages on both sides), and 64 MiB arrays streamed the same way (each
  received, dropped, and acknowledged before the next is sent), each with a plain
  memory copy's bandwidth in the same run for scale (needs numpy).

The peer is started with ``os.fork()`` for every contender, so start-up costs
are out of the picture. Run as a script (``python benchmarks/bench_connection.py
[--quick]``) or call ``run(quick)``.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import time
from multiprocessing.connection import wait as mp_wait

from _common import calls_beside_busy_thread, interleaved, row

from proctor._connections import _receiving  # (its look length, for a row's note)
from proctor.connection import Pipe, wait

TRIPLE = (1, "two", 3.0)
MIB = 1024 * 1024


def _pin_to_one_core() -> set[int] | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(previous)})
    return previous


def _fork(child_main) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child_main()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


# -- round trip -----------------------------------------------------------------------


def _rt_raw(n: int) -> float:
    a, b = socket.socketpair()

    def child():
        a.close()
        recv, send = b.recv, b.send
        while True:
            d = recv(1)
            if not d:
                return
            send(d)

    pid = _fork(child)
    b.close()
    recv, send = a.recv, a.send
    send(b"x")
    recv(1)  # warm up: the child is running
    t0 = time.perf_counter()
    for _ in range(n):
        send(b"x")
        recv(1)
    dt = time.perf_counter() - t0
    a.close()
    os.waitpid(pid, 0)
    return dt / n


def _polled(end) -> None:
    end.poll(60)


def _rt_pipe(pipe_factory, n: int, before=None) -> float:
    """Round trips of TRIPLE with a fork child echoing it; ``before``: what each side
    calls with its end before each ``recv()`` (a ``poll(timeout)``, a ``wait()``: a
    loop that also checks something else between messages waits that way)."""
    a, b = pipe_factory()

    def child():
        a.close()
        recv, send = b.recv, b.send
        try:
            while True:
                if before is not None:
                    before(b)
                send(recv())
        except EOFError:
            return

    pid = _fork(child)
    b.close()
    recv, send = a.recv, a.send
    send(TRIPLE)
    recv()
    t0 = time.perf_counter()
    for _ in range(n):
        send(TRIPLE)
        if before is not None:
            before(a)
        recv()
    dt = time.perf_counter() - t0
    a.close()
    os.waitpid(pid, 0)
    return dt / n


MEDIUM = 16 * 1024
LARGER = 64 * 1024


def _rt_bytes(pipe_factory, n: int, size: int) -> float:
    a, b = pipe_factory()
    payload = os.urandom(size)

    def child():
        a.close()
        recv_bytes, send_bytes = b.recv_bytes, b.send_bytes
        try:
            while True:
                send_bytes(recv_bytes())
        except EOFError:
            return

    pid = _fork(child)
    b.close()
    recv_bytes, send_bytes = a.recv_bytes, a.send_bytes
    send_bytes(payload)
    recv_bytes()
    t0 = time.perf_counter()
    for _ in range(n):
        send_bytes(payload)
        recv_bytes()
    dt = time.perf_counter() - t0
    a.close()
    os.waitpid(pid, 0)
    return dt / n


# -- throughput ------------------------------------------------------------------------


def _tp_raw(count: int) -> float:
    a, b = socket.socketpair()
    payload = os.urandom(MIB)

    def child():
        a.close()
        for _ in range(count + 1):
            b.sendall(payload)
        b.recv(1)

    pid = _fork(child)
    b.close()
    buf = bytearray(MIB)
    view = memoryview(buf)

    def recv_one():
        got = 0
        while got < MIB:
            got += a.recv_into(view[got:], MIB - got)

    recv_one()
    t0 = time.perf_counter()
    for _ in range(count):
        recv_one()
    dt = time.perf_counter() - t0
    a.send(b"k")
    a.close()
    os.waitpid(pid, 0)
    return count * MIB / dt / MIB


def _tp_pipe(pipe_factory, count: int) -> float:
    a, b = pipe_factory()
    payload = os.urandom(MIB)

    def child():
        a.close()
        for _ in range(count + 1):
            b.send_bytes(payload)
        b.recv_bytes()

    pid = _fork(child)
    b.close()
    recv_bytes = a.recv_bytes
    recv_bytes()
    t0 = time.perf_counter()
    for _ in range(count):
        recv_bytes()
    dt = time.perf_counter() - t0
    a.send_bytes(b"k")
    a.close()
    os.waitpid(pid, 0)
    return count * MIB / dt / MIB


# -- driver --------------------------------------------------------------------------------


ARRAY_BYTES = 64 * 1024 * 1024


def _polls_beside_busy_thread(pipe_factory, seconds: float) -> float:
    """``poll()`` calls a second on an empty end while another thread runs Python code."""
    a, b = pipe_factory()
    try:
        return calls_beside_busy_thread(a.poll, seconds)
    finally:
        a.close()
        b.close()


def _recvs_beside_idle_thread(pipe_factory, batches: int) -> float:
    """``recv()`` calls a second of small messages already sent, while another thread
    of the process waits (batches of 200, each sent before it is received).

    (Not beside a computing thread: there every call that lets the GIL go, as a
    socket read does in both libraries, waits for the other thread's switch
    interval, and the row would measure that.)"""
    import threading

    a, b = pipe_factory()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        spent = 0.0
        for _ in range(batches):
            for i in range(200):
                b.send(i)
            began = time.perf_counter()
            for _ in range(200):
                a.recv()
            spent += time.perf_counter() - began
        return batches * 200 / spent
    finally:
        stop.set()
        thread.join()
        a.close()
        b.close()


def _send_array(conn) -> None:
    import numpy as np

    a = np.random.default_rng(0).random(ARRAY_BYTES // 8)
    conn.recv()  # wait until the parent listens
    conn.send((time.perf_counter(), a))  # CLOCK_MONOTONIC: comparable across processes
    conn.close()


def _array_pipe(ctx) -> float:
    """GB/s of a 64 MiB float64 array sent by a child through a Pipe, received by the parent."""
    here, there = ctx.Pipe()
    p = ctx.Process(target=_send_array, args=(there,))
    p.start()
    there.close()
    here.send("go")
    began, a = here.recv()
    arrived = time.perf_counter()
    p.join()
    here.close()
    assert a.nbytes == ARRAY_BYTES
    return ARRAY_BYTES / (arrived - began) / 1e9


#: Arrays sent in the streamed row, and how many of them warm up first.
STREAM_ARRAYS, STREAM_WARMUP = 10, 2


def _send_arrays(conn) -> None:
    import numpy as np

    a = np.random.default_rng(0).random(ARRAY_BYTES // 8)
    for i in range(STREAM_ARRAYS):
        if i == STREAM_WARMUP:
            conn.send(time.perf_counter())
        a[0] = i  # new contents in every message
        conn.send(a)
        conn.recv()  # the parent dropped it: one array in flight, as a user would
    conn.close()


def _array_stream(ctx) -> float:
    """GB/s of 64 MiB float64 arrays streamed child -> parent through a Pipe.

    The parent receives each array, drops it and says so before the child sends
    the next; timed from the third array sent to the last one received.
    """
    here, there = ctx.Pipe()
    p = ctx.Process(target=_send_arrays, args=(there,))
    p.start()
    there.close()
    began = 0.0
    for i in range(STREAM_ARRAYS):
        if i == STREAM_WARMUP:
            began = here.recv()
        a = here.recv()
        assert a.nbytes == ARRAY_BYTES and a[0] == i
        del a
        here.send(None)
    arrived = time.perf_counter()
    p.join()
    here.close()
    return (STREAM_ARRAYS - STREAM_WARMUP) * ARRAY_BYTES / (arrived - began) / 1e9


def run(quick: bool) -> list[dict]:
    """Run the benchmarks; return one row per measurement (ratio > 1: proctor better)."""
    trips = 2000 if quick else 20000
    repeats = 3 if quick else 7
    count = 50 if quick else 400

    previous = _pin_to_one_core()
    try:
        lat = interleaved(
            {
                "raw": lambda: _rt_raw(trips),
                "proctor": lambda: _rt_pipe(Pipe, trips),
                "multiprocessing": lambda: _rt_pipe(multiprocessing.Pipe, trips),
            },
            repeats,
        )
        medium = interleaved(
            {
                "proctor": lambda: _rt_bytes(Pipe, trips // 4, MEDIUM),
                "multiprocessing": lambda: _rt_bytes(multiprocessing.Pipe, trips // 4, MEDIUM),
                "proctor 64": lambda: _rt_bytes(Pipe, trips // 8, LARGER),
                "multiprocessing 64": lambda: _rt_bytes(multiprocessing.Pipe, trips // 8, LARGER),
            },
            repeats,
        )
    finally:
        if previous is not None:
            os.sched_setaffinity(0, previous)
    spread = interleaved(
        {
            "raw": lambda: _rt_raw(trips // 4),
            "proctor": lambda: _rt_pipe(Pipe, trips // 4),
            "multiprocessing": lambda: _rt_pipe(multiprocessing.Pipe, trips // 4),
            "proctor 16": lambda: _rt_bytes(Pipe, trips // 8, MEDIUM),
            "multiprocessing 16": lambda: _rt_bytes(multiprocessing.Pipe, trips // 8, MEDIUM),
            "proctor polled": lambda: _rt_pipe(Pipe, trips // 4, _polled),
            "multiprocessing polled": lambda: _rt_pipe(multiprocessing.Pipe, trips // 4, _polled),
            "proctor waited": lambda: _rt_pipe(Pipe, trips // 4, lambda end: wait([end], 60)),
            "multiprocessing waited": lambda: _rt_pipe(
                multiprocessing.Pipe, trips // 4, lambda end: mp_wait([end], 60)
            ),
        },
        repeats,
    )
    tp = interleaved(
        {
            "raw": lambda: _tp_raw(count),
            "proctor": lambda: _tp_pipe(Pipe, count),
            "multiprocessing": lambda: _tp_pipe(multiprocessing.Pipe, count),
        },
        repeats,
    )
    polls = interleaved(
        {
            "proctor": lambda: _polls_beside_busy_thread(Pipe, 0.1 if quick else 0.3),
            "multiprocessing": lambda: _polls_beside_busy_thread(
                multiprocessing.Pipe, 0.1 if quick else 0.3
            ),
            "proctor recv": lambda: _recvs_beside_idle_thread(Pipe, 5 if quick else 25),
            "multiprocessing recv": lambda: _recvs_beside_idle_thread(
                multiprocessing.Pipe, 5 if quick else 25
            ),
        },
        repeats,
    )
    import importlib.util

    import proctor

    arrays = streams = None
    if importlib.util.find_spec("numpy") is not None:  # else the array rows are left out
        from bench_queue import _memcpy_bandwidth

        px, mp = proctor.get_context("fork"), multiprocessing.get_context("fork")
        arrays = interleaved(
            {
                "proctor": lambda: _array_pipe(px),
                "multiprocessing": lambda: _array_pipe(mp),
                "memcpy": _memcpy_bandwidth,
            },
            3 if quick else 5,
        )
        streams = interleaved(
            {
                "proctor": lambda: _array_stream(px),
                "multiprocessing": lambda: _array_stream(mp),
                "memcpy": _memcpy_bandwidth,
            },
            2 if quick else 3,
        )
    rows = [
        row(
            "Pipe round trip, pickled 3-tuple, one core",
            lat["proctor"] * 1e6,
            lat["multiprocessing"] * 1e6,
            "us",
            higher_is_better=False,
            note=(
                f"raw socketpair 1-byte round trip {lat['raw'] * 1e6:.2f} us; "
                f"proctor takes {lat['proctor'] / lat['raw']:.2f}x that"
            ),
            floor=lat["raw"] * 1e6,
        ),
        row(
            "Pipe round trip, 16 KiB bytes, one core",
            medium["proctor"] * 1e6,
            medium["multiprocessing"] * 1e6,
            "us",
            higher_is_better=False,
            note="on Linux one send on the frame socket (frames up to 32 KiB), no lock",
        ),
        row(
            "Pipe round trip, 64 KiB bytes, one core",
            medium["proctor 64"] * 1e6,
            medium["multiprocessing 64"] * 1e6,
            "us",
            higher_is_better=False,
            note="the largest mid-size message (64 KiB + 1 takes the stream under the lock)",
        ),
        row(
            "Pipe round trip, pickled 3-tuple, two cores",
            spread["proctor"] * 1e6,
            spread["multiprocessing"] * 1e6,
            "us",
            higher_is_better=False,
            note=(
                f"unpinned; raw socketpair 1-byte round trip {spread['raw'] * 1e6:.2f} us; "
                f"proctor's receiver looks up to {_receiving.SPIN_NS // 1000} us before it "
                "sleeps, the others sleep"
            ),
            floor=spread["raw"] * 1e6,
        ),
        row(
            "Pipe round trip, 16 KiB bytes, two cores",
            spread["proctor 16"] * 1e6,
            spread["multiprocessing 16"] * 1e6,
            "us",
            higher_is_better=False,
            note="unpinned; on Linux one send on the frame socket, looked at before a sleep",
        ),
        row(
            "Pipe round trip via poll(timeout) then recv(), two cores",
            spread["proctor polled"] * 1e6,
            spread["multiprocessing polled"] * 1e6,
            "us",
            higher_is_better=False,
            note="unpinned, pickled 3-tuple; proctor's poll looks before it sleeps, as a recv does",
            floor=spread["raw"] * 1e6,
        ),
        row(
            "Pipe round trip via wait([end]) then recv(), two cores",
            spread["proctor waited"] * 1e6,
            spread["multiprocessing waited"] * 1e6,
            "us",
            higher_is_better=False,
            note="unpinned, pickled 3-tuple; proctor's wait() looks before it sleeps too",
            floor=spread["raw"] * 1e6,
        ),
        row(
            "Pipe 1 MiB send_bytes/recv_bytes",
            tp["proctor"],
            tp["multiprocessing"],
            "MiB/s",
            higher_is_better=True,
            note=(
                f"raw socketpair {tp['raw']:.0f} MiB/s; "
                f"proctor reaches {tp['proctor'] / tp['raw']:.0%} of it"
            ),
            floor=tp["raw"],
        ),
        row(
            "Pipe poll() while another thread computes",
            polls["proctor"],
            polls["multiprocessing"],
            "calls/s",
            higher_is_better=True,
            note="nothing to read; proctor's look at a descriptor keeps the GIL",
        ),
        row(
            "Pipe recv() of messages already there, another thread waiting",
            polls["proctor recv"],
            polls["multiprocessing recv"],
            "msg/s",
            higher_is_better=True,
            note="small ints, 200 sent then received; proctor reads at once what has come",
        ),
    ]
    if arrays is not None and streams is not None:
        rows.append(
            row(
                "Pipe send/recv, 64 MiB float64 array",
                arrays["proctor"],
                arrays["multiprocessing"],
                "GB/s",
                higher_is_better=True,
                note=(
                    "child -> parent; proctor maps the array from a memfd (no copy out); "
                    f"memory copy {arrays['memcpy']:.2f} GB/s "
                    f"(proctor reaches {arrays['proctor'] / arrays['memcpy']:.0%} of it)"
                ),
                floor=arrays["memcpy"],
            )
        )
        rows.append(
            row(
                "Pipe 64 MiB float64 arrays streamed, child -> parent",
                streams["proctor"],
                streams["multiprocessing"],
                "GB/s",
                higher_is_better=True,
                note=(
                    "each received, dropped and acknowledged before the next is sent; "
                    f"memory copy {streams['memcpy']:.2f} GB/s "
                    f"(proctor reaches {streams['proctor'] / streams['memcpy']:.0%} of it)"
                ),
                floor=streams["memcpy"],
            )
        )
    return rows


def main(argv: list[str]) -> None:
    from _common import print_rows

    print_rows(run(quick="--quick" in argv))


if __name__ == "__main__":
    main(sys.argv[1:])
