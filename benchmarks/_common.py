"""Shared helpers for the benchmarks: timing, medians, result rows."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], *, ops: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean seconds per call of ``fn`` (``ops`` calls a round)."""
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(ops):
            fn()
        samples.append((time.perf_counter() - began) / ops)
    return statistics.median(samples)


def calls_beside_busy_thread(call: Callable[[], object], seconds: float) -> float:
    """Calls a second of ``call``, made for ``seconds`` while another thread of this
    process runs Python code (and so wants the GIL whenever ``call`` lets it go)."""
    import threading

    stop = threading.Event()

    def busy() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        calls = 0
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            call()
            calls += 1
        return calls / (time.perf_counter() - began)
    finally:
        stop.set()
        thread.join()


def interleaved(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run each measurement once per round, interleaved, and take each one's median.

    Interleaving spreads the noise of a shared machine over every contender
    instead of penalising whichever happened to run during a burst. Every other
    round runs them in reverse order: what one measurement leaves behind (work a
    pool's threads finish after a call returns, garbage) falls on its successor,
    which must not always be the same contender.
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for index in range(rounds):
        for name in reversed(names) if index % 2 else names:
            samples[name].append(fns[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


def row(
    benchmark: str,
    proctor: float,
    multiprocessing: float,
    unit: str,
    *,
    higher_is_better: bool,
    note: str = "",
    floor: float | None = None,
    reference: bool = False,
) -> dict:
    """A result row; ``ratio`` > 1 always means proctor is better.

    ``reference`` marks a row shown for comparison only, not a path a user runs by
    default (proctor's pure-Python lock where the C accelerator is active):
    ``bench --plot`` draws it grey and labels it so.

    ``floor``, in the row's unit, is the best this machine allows for the same work,
    measured in the same run (a bare ``os.fork()``, a raw socket pair, a plain memory
    copy); the row then also has ``floor_ratio``, the ratio to the stdlib that the
    floor itself would get -- how far ahead proctor could go (``bench --plot`` marks it).
    """
    ratio = proctor / multiprocessing if higher_is_better else multiprocessing / proctor
    result = {
        "benchmark": benchmark,
        "proctor": proctor,
        "multiprocessing": multiprocessing,
        "unit": unit,
        "ratio": ratio,
        "note": note,
    }
    if reference:
        result["reference"] = True
    if floor is not None:
        result["floor"] = floor
        result["floor_ratio"] = (
            floor / multiprocessing if higher_is_better else multiprocessing / floor
        )
    return result


#: Seconds are shown in these units (``time_row``).
_SCALES = {"ms": 1e3, "us": 1e6}


def time_row(
    benchmark: str, got: dict[str, float], unit: str, *, note: str = "", floor: float | None = None
) -> dict:
    """A row of seconds per operation (``got``'s "proctor" and "multiprocessing", and
    ``floor``, all in seconds), shown in ``unit`` ("ms" or "us"); lower is better."""
    scale = _SCALES[unit]
    return row(
        benchmark,
        got["proctor"] * scale,
        got["multiprocessing"] * scale,
        unit,
        higher_is_better=False,
        note=note,
        floor=None if floor is None else floor * scale,
    )


def print_rows(rows: list[dict]) -> None:
    """Print rows as a table (used when a benchmark runs as a script).

    A row may carry ``peers``, other libraries measured in the same run (each a dict
    of ``name``, ``value`` and ``ratio``, above 1 when proctor is better): one line
    each under the row, the value in the multiprocessing column.
    """
    print(f"{'benchmark':44} {'proctor':>12} {'multiproc.':>12} {'unit':>8} {'ratio':>7}  note")
    for r in rows:
        print(
            f"{r['benchmark']:44} {r['proctor']:12.4g} {r['multiprocessing']:12.4g} {r['unit']:>8} "
            f"{r['ratio']:6.2f}x  {r.get('note', '')}"
        )
        for peer in r.get("peers", ()):
            print(
                f"{'  vs ' + peer['name']:44} {'':12} {peer['value']:12.4g} {r['unit']:>8} "
                f"{peer['ratio']:6.2f}x"
            )
