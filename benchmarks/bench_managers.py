"""Managers: proctor's against multiprocessing's, side by side.

Both managers are started with fork in the same run; measurements are
interleaved medians (``_common.interleaved``) so that machine noise hits both.

Rows (ratio > 1 means proctor is better):

* ``manager d[k] = v round trip``: ``d[k] = v`` on a managed dict, one client thread, in
  microseconds per call (a proxy method's full round trip: pickle, send, the
  server's dispatch, reply, unpickle);
* ``..., one core``: the same with the client and both manager
  processes pinned to one core, which takes the cross-core wake-ups (about 30 us
  on this VM) out and leaves the per-call work;
* ``manager l[0] round trip``: ``l[0]`` on a managed list, microseconds per call;
* ``manager ns.x round trip``: ``ns.x``, microseconds per call;
* the round-trip rows' floor (``--plot`` marks it): a one-byte round trip on raw pipes
  between this process and a forked echo child placed alike, interleaved with them.
  Unpinned, both managers' round trips are mostly cross-core wake-ups of sleeping
  threads, which on the idle 2-core VM swing between runs (one run: raw pipes 8 us,
  both managers 50-70 us; another: raw pipes 19-58 us); pinned, the per-call work;
* ``manager calls, 4 threads of one client``: four threads of one client calling at once, calls per
  second (each has its own connection and serving thread, in both libraries);
* ``Manager() then shutdown()``: ``Manager()`` then ``shutdown()``, milliseconds: the
  median of 25 interleaved pairs (7 until the 26th session: one start+shutdown is ~5 ms,
  and with 7 the row swung 0.92-1.05x within one dated run where 25-pair sets read
  1.06-1.15x in a fresh interpreter).

Run as a script (``python benchmarks/bench_managers.py [--quick]``) or call
``run(quick)``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time

from _common import interleaved, print_rows, row, time_row

import proctor


def _per_call(fn, ops: int) -> float:
    began = time.perf_counter()
    for _ in range(ops):
        fn()
    return (time.perf_counter() - began) / ops


def _setitem(d, ops: int) -> float:
    began = time.perf_counter()
    for i in range(ops):
        d[i & 63] = i
    return (time.perf_counter() - began) / ops


class _RawEcho:
    """A forked child echoing one byte per pipe write: the machine's round trip floor.

    Measured interleaved with both managers and placed as they are (pinned or not),
    it is the round trip with no work on either side: what the scheduler and the
    wake-ups alone cost in that run.
    """

    def __init__(self) -> None:
        self._to_child_r, self._to_child_w = os.pipe()
        self._to_parent_r, self._to_parent_w = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:  # the echo: nothing but reads and writes, then leave
            try:
                os.close(self._to_child_w)
                os.close(self._to_parent_r)
                while os.read(self._to_child_r, 1):
                    os.write(self._to_parent_w, b"y")
            finally:
                os._exit(0)
        os.close(self._to_child_r)
        os.close(self._to_parent_w)

    def round_trips(self, ops: int) -> float:
        """Seconds per one-byte round trip, over ``ops`` of them."""
        write, read, out, back = os.write, os.read, self._to_child_w, self._to_parent_r
        began = time.perf_counter()
        for _ in range(ops):
            write(out, b"x")
            read(back, 1)
        return (time.perf_counter() - began) / ops

    def close(self) -> None:
        os.close(self._to_child_w)  # end of file: the echo leaves
        os.waitpid(self._pid, 0)
        os.close(self._to_parent_r)


def _threads_rate(d, threads: int, ops: int) -> float:
    def work() -> None:
        for i in range(ops):
            d[i & 63] = i

    workers = [threading.Thread(target=work) for _ in range(threads)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return threads * ops / (time.perf_counter() - began)


def _start_shutdown(lib) -> float:
    began = time.perf_counter()
    manager = lib.get_context("fork").Manager()
    manager.shutdown()
    return time.perf_counter() - began


def _call_rows(ops: int, rounds: int, suffix: str = "") -> list[dict]:
    ours = proctor.get_context("fork").Manager()
    theirs = multiprocessing.get_context("fork").Manager()
    echo = _RawEcho()
    try:
        dicts = {"proctor": ours.dict(), "multiprocessing": theirs.dict()}
        lists = {"proctor": ours.list([1]), "multiprocessing": theirs.list([1])}
        spaces = {"proctor": ours.Namespace(x=1), "multiprocessing": theirs.Namespace(x=1)}
        for d in dicts.values():  # connections opened, code paths warm
            _setitem(d, 200)
        rows = []
        floor = {"raw pipe": lambda: echo.round_trips(ops)}
        got = interleaved(
            {name: (lambda d=d: _setitem(d, ops)) for name, d in dicts.items()} | floor, rounds
        )
        title = "manager d[k] = v round trip" + (", one core" if suffix else "")
        rows.append(_round_trip_row(title, got))
        if suffix:
            return rows
        got = interleaved(
            {name: (lambda seq=seq: _per_call(lambda: seq[0], ops)) for name, seq in lists.items()}
            | floor,
            rounds,
        )
        rows.append(_round_trip_row("manager l[0] round trip", got))
        got = interleaved(
            {name: (lambda ns=ns: _per_call(lambda: ns.x, ops)) for name, ns in spaces.items()}
            | floor,
            rounds,
        )
        rows.append(_round_trip_row("manager ns.x round trip", got))
        got = interleaved(
            {name: (lambda d=d: _threads_rate(d, 4, ops // 4)) for name, d in dicts.items()},
            rounds,
        )
        rows.append(
            row(
                "manager calls, 4 threads of one client",
                got["proctor"],
                got["multiprocessing"],
                "calls/s",
                higher_is_better=True,
            )
        )
        return rows
    finally:
        # Proxies first: multiprocessing's decref at shutdown would otherwise warn.
        dicts = lists = spaces = None
        ours.shutdown()
        theirs.shutdown()
        echo.close()


def _round_trip_row(title: str, got: dict[str, float]) -> dict:
    floor = got["raw pipe"]
    return time_row(
        title,
        got,
        "us",
        floor=floor,
        note=f"raw pipe 1-byte round trip between two processes placed alike: {floor * 1e6:.1f} us",
    )


def run(quick: bool) -> list[dict]:
    """Measure every row; ``quick`` uses fewer calls and rounds."""
    ops = 2_000 if quick else 10_000
    rounds = 5 if quick else 9
    rows = _call_rows(ops, rounds)
    if hasattr(os, "sched_setaffinity"):
        previous = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(previous)})  # the managers started now inherit it
        try:
            rows += _call_rows(ops, rounds, "_one_core")
        finally:
            os.sched_setaffinity(0, previous)
    got = interleaved(
        {
            "proctor": lambda: _start_shutdown(proctor),
            "multiprocessing": lambda: _start_shutdown(multiprocessing),
        },
        7 if quick else 25,
    )
    rows.append(time_row("Manager() then shutdown()", got, "ms"))
    return rows


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
