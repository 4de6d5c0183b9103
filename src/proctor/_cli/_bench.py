"""``python -m proctor bench``: run benchmarks/ and print proctor vs multiprocessing ratios.

Every benchmark module ``benchmarks/bench_<name>.py`` has ``run(quick) -> rows``;
each row measures proctor and the stdlib ``multiprocessing`` in the same run, and
its ``ratio`` is above 1 when proctor is better (faster, or more throughput). A row
may also carry ``peers``: other libraries measured in the same run (loky, pebble...
for the pools), each a dict of ``name``, ``value`` and ``ratio`` (proctor's, above 1
when proctor is better), shown as "vs NAME" lines under it with the value in the
multiprocessing column.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

__all__ = ("benchmarks_dir", "combine_runs", "modules_without_bytecode", "run_benchmarks")

#: Where a Markdown file's generated table begins (its first line).
MARKDOWN_START = "Measured by `python -m proctor bench"
#: Said for a benchmark module that needs numpy where it is not installed (loading
#: it, or running it, imports numpy).
_NEEDS_NUMPY = "{}: skipped: it needs numpy (pip install 'proctor[numpy]')"
#: How to read the peer rows, said under the table's first line when there are some.
PEERS_SENTENCE = (
    ' A "vs NAME" row under a benchmark gives another library\'s figure from the same'
    " run, in the multiprocessing column, and proctor's ratio to it."
)


def benchmarks_dir() -> Path:
    """Where the benchmark modules are: inside the installed package, or the source tree."""
    # proctor/_cli/ -> proctor/ (installed) or src/proctor/ (source tree)
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "benchmarks", here.parent.parent / "benchmarks"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the benchmarks were not found; reinstall proctor")


def modules_without_bytecode(package_dir: Path | None = None) -> list[Path]:
    """proctor's source files that have no up-to-date bytecode cache (``.pyc``).

    A spawned child imports proctor from scratch; without caches it compiles every
    module it imports, which costs it more than the imports themselves (about
    three times the instructions). An installed proctor has them (pip compiles at
    install time), and so has a source checkout once imported by a Python allowed
    to write them; one run under ``PYTHONDONTWRITEBYTECODE`` (or ``-B``) has none.
    """
    package_dir = package_dir or Path(__file__).resolve().parent.parent
    missing = []
    for source in sorted(package_dir.rglob("*.py")):
        cached = Path(importlib.util.cache_from_source(str(source)))
        try:
            header = cached.read_bytes()[:16]
            stat = source.stat()
        except OSError:
            missing.append(source)
            continue
        if len(header) < 16:
            missing.append(source)
            continue
        # A timestamp-based cache (PEP 552 flags 0) records the source's mtime and
        # size; a hash-based one is checked by the import system itself.
        if int.from_bytes(header[4:8], "little") == 0 and (
            int.from_bytes(header[8:12], "little") != int(stat.st_mtime) & 0xFFFFFFFF
            or int.from_bytes(header[12:16], "little") != stat.st_size & 0xFFFFFFFF
        ):
            missing.append(source)
    return missing


def _bytecode_note(out) -> None:
    missing = modules_without_bytecode()
    if not missing:
        return
    package_dir = Path(__file__).resolve().parent.parent
    print(
        f"note: {len(missing)} of proctor's modules have no up-to-date bytecode cache"
        f"{' (PYTHONDONTWRITEBYTECODE or -B is on)' if sys.dont_write_bytecode else ''}, "
        "so every spawn child compiles what it imports and the spawn start-up rows "
        "measure compilation; multiprocessing's caches came with Python. An install "
        f"compiles them once; here: {os.path.basename(sys.executable)} -m compileall "
        f"-q {package_dir}",
        file=out,
    )


def run_benchmarks(
    names: list[str],
    *,
    quick: bool,
    out=None,
    markdown: str | None = None,
    plot: str | None = None,
    runs: int = 1,
) -> int:
    """Run the selected benchmarks (all when ``names`` is empty); return an exit status.

    Args:
        names: benchmark names (``queue``, ``process``...); empty for all.
        quick: fewer repetitions and smaller sizes.
        out: where the table goes (stdout by default).
        markdown: also write the results, dated, as a Markdown table to this file.
        plot: also draw the ratios (and the machine's floors) into this image file
            (needs matplotlib; checked before anything runs).
        runs: run the whole selection this many times, one after the other, and
            report each row from its median run with the range of its ratio
            (:func:`combine_runs`). On a shared machine a single run's ratio
            near 1.0 can land on either side of it; the range says how far.

    Raises:
        ValueError: ``runs`` is below 1.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs!r}")
    out = out or sys.stdout
    if plot:
        from ._plot import check_matplotlib

        try:
            check_matplotlib()
        except ModuleNotFoundError as exc:
            print(str(exc), file=out)
            return 2
    measured: list[dict] = []
    directory = benchmarks_dir()
    sys.path.insert(0, str(directory))
    modules = sorted(directory.glob("bench_*.py"))
    if names:
        wanted = {n.removeprefix("bench_").removesuffix(".py") for n in names}
        unknown = wanted - {m.stem.removeprefix("bench_") for m in modules}
        if unknown:
            known = ", ".join(m.stem.removeprefix("bench_") for m in modules)
            print(f"unknown benchmark(s) {sorted(unknown)}; known: {known}", file=out)
            return 2
        modules = [m for m in modules if m.stem.removeprefix("bench_") in wanted]
    print(
        f"{'benchmark':46} {'proctor':>11} {'multiproc.':>11} {'unit':>7} {'ratio':>7}  note",
        file=out,
    )
    print("(ratio > 1: proctor is better; medians of several runs, side by side)", file=out)
    _bytecode_note(out)
    failures = 0
    loaded = []
    for path in modules:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        try:
            spec.loader.exec_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != "numpy":
                raise
            print(_NEEDS_NUMPY.format(path.stem), file=out)
            continue
        except Exception as exc:  # one broken benchmark must not hide the others
            failures += 1
            print(f"{path.stem}: FAILED: {type(exc).__name__}: {exc}", file=out)
            continue
        loaded.append(module)
    each_run: list[list[dict]] = []
    for run in range(runs):
        if runs > 1:
            print(f"-- run {run + 1} of {runs}", file=out, flush=True)
        measured = []
        for module in list(loaded):
            try:
                rows = module.run(quick=quick)
            except ModuleNotFoundError as exc:
                if exc.name != "numpy":
                    raise
                loaded.remove(module)
                print(_NEEDS_NUMPY.format(module.__name__), file=out)
                continue
            except Exception as exc:  # one broken benchmark must not hide the others
                failures += 1
                loaded.remove(module)  # a benchmark that failed once is not run again
                print(f"{module.__name__}: FAILED: {type(exc).__name__}: {exc}", file=out)
                continue
            _print_rows(rows, out)
            measured.extend(rows)
        each_run.append(measured)
    measured = each_run[0] if runs == 1 else combine_runs(each_run)
    if runs > 1 and measured:
        print(f"-- median run of {runs} (ratio range over the runs in brackets)", file=out)
        _print_rows(measured, out)
    if markdown:
        write_markdown(Path(markdown), markdown_table(measured, quick=quick, runs=runs))
    if plot and measured:
        from ._plot import plot_ratios

        plot_ratios(measured, Path(plot), title=run_title(quick=quick, runs=runs))
        print(f"plot written to {plot}", file=out)
    return 1 if failures else 0


def _print_rows(rows: list[dict], out) -> None:
    for r in rows:
        print(
            f"{r['benchmark']:46} {r['proctor']:11.4g} {r['multiprocessing']:11.4g} "
            f"{r['unit']:>7} {_ratio_text(r):>7}  {r.get('note', '')}",
            file=out,
            flush=True,
        )
        for peer in r.get("peers", ()):
            print(
                f"{'  vs ' + peer['name']:46} {'':11} {peer['value']:11.4g} "
                f"{r['unit']:>7} {_ratio_text(peer):>7}",
                file=out,
                flush=True,
            )


def _ratio_text(row: dict) -> str:
    """``1.23x``, or ``1.23x (0.96-1.40)`` for a row combined from several runs."""
    text = f"{row['ratio']:.2f}x"
    if "ratio_range" in row:
        low, high = row["ratio_range"]
        text += f" ({low:.2f}-{high:.2f})"
    return text


def combine_runs(runs: list[list[dict]]) -> list[dict]:
    """One row per benchmark from several runs' rows: the median run, and the ratio's range.

    A combined row is the row of the run whose ratio is the median over the runs
    that measured it (for an even count, the lower of the middle two: the less
    flattering one), so its figures, its ratio, its floor and its note, which
    quotes that run's own figures (a floor, a percentage), all agree with each
    other: medians taken column by column would mix runs, and a reader could no
    longer check a note's "proctor/floor" against the row. ``ratio_range`` is the
    lowest and highest ratio, ``runs`` how many runs measured the row; each of the
    median run's peers gets its own ratio's range over the runs. Rows keep the
    order in which they first appeared.
    """
    by_name: dict[str, list[dict]] = {}
    for rows in runs:
        for row in rows:
            by_name.setdefault(row["benchmark"], []).append(row)
    combined = []
    for name, measured in by_name.items():
        by_ratio = sorted(measured, key=lambda r: r["ratio"])
        median_run = by_ratio[(len(by_ratio) - 1) // 2]
        row = {
            **median_run,
            "benchmark": name,
            "ratio_range": (by_ratio[0]["ratio"], by_ratio[-1]["ratio"]),
            "runs": len(measured),
        }
        ranges: dict[str, list[float]] = {}
        for r in measured:
            for peer in r.get("peers", ()):
                ranges.setdefault(peer["name"], []).append(peer["ratio"])
        if "peers" in median_run:
            row["peers"] = [
                {**peer, "ratio_range": (min(ranges[peer["name"]]), max(ranges[peer["name"]]))}
                for peer in median_run["peers"]
            ]
        combined.append(row)
    return combined


def _command(*, quick: bool, runs: int) -> str:
    return (
        "python -m proctor bench"
        + (" --quick" if quick else "")
        + (f" --runs {runs}" if runs > 1 else "")
    )


def run_title(*, quick: bool, runs: int = 1) -> str:
    """What, when and where a run measured: the first line of its table and plot."""
    import datetime
    import platform

    when = datetime.date.today().isoformat()
    machine = (
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    medians = f"; median run of {runs}, whiskers: the ratio's range" if runs > 1 else ""
    return f"{_command(quick=quick, runs=runs)}, {when} ({machine}{medians})"


def write_markdown(path: Path, table: str) -> None:
    """Write ``table`` to ``path``, replacing only the table an earlier run wrote there.

    The prose around it (a title, what each benchmark measures) stays. A file that
    has no generated table yet (or does not exist) gets the table alone.
    """
    try:
        old = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        old = []
    starts = [i for i, line in enumerate(old) if line.startswith(MARKDOWN_START)]
    if not starts:
        path.write_text(table, encoding="utf-8")
        return
    begin = starts[0]
    end = begin + 1
    while end < len(old) and not old[end].strip():  # the blank line before the table
        end += 1
    while end < len(old) and old[end].startswith("|"):
        end += 1
    path.write_text("".join(old[:begin]) + table + "".join(old[end:]), encoding="utf-8")


def markdown_table(rows: list[dict], *, quick: bool, runs: int = 1) -> str:
    """The rows as a dated Markdown table, with the machine they were measured on.

    Rows combined from several runs (``runs`` > 1, :func:`combine_runs`) show their
    median run's figures with the ratio's range over the runs.
    """
    import datetime
    import platform

    when = datetime.date.today().isoformat()
    machine = (
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    medians = (
        f" Of {runs} runs, one after the other, each row shows the run whose ratio is"
        " the median (its figures and note all come from that run); the ratio's range"
        " over the runs is in brackets."
        if runs > 1
        else ""
    )
    lines = [
        f"Measured by `{_command(quick=quick, runs=runs)}` on {when} "
        f"({machine}); ratio above 1: proctor is better."
        + medians
        + (PEERS_SENTENCE if any(r.get("peers") for r in rows) else ""),
        "",
        "| benchmark | proctor | multiprocessing | unit | ratio | note |",
        "|---|---:|---:|---|---:|---|",
    ]
    for r in rows:
        name = r["benchmark"] + (" (reference)" if r.get("reference") else "")
        lines.append(
            f"| {name} | {r['proctor']:.4g} | {r['multiprocessing']:.4g} | "
            f"{r['unit']} | {_ratio_text(r)} | {r.get('note', '')} |"
        )
        for peer in r.get("peers", ()):
            lines.append(
                f"| &nbsp;&nbsp;vs {peer['name']} | | {peer['value']:.4g} | {r['unit']} | "
                f"{_ratio_text(peer)} | |"
            )
    return "\n".join(lines) + "\n"
