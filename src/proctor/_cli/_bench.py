"""``python -m proctor bench``: run benchmarks/ and print proctor vs multiprocessing ratios.

Every benchmark module ``benchmarks/bench_<name>.py`` has ``run(quick) -> rows``;
each row measures proctor and the stdlib ``multiprocessing`` in the same run, and
its ``ratio`` is above 1 when proctor is better (faster, or more throughput).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__all__ = ("benchmarks_dir", "run_benchmarks")


def benchmarks_dir() -> Path:
    """Where the benchmark modules are: inside the installed package, or the source tree."""
    # proctor/_cli/ -> proctor/ (installed) or src/proctor/ (source tree)
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "benchmarks", here.parent.parent / "benchmarks"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the benchmarks were not found; reinstall proctor")


def run_benchmarks(names: list[str], *, quick: bool, out=None, markdown: str | None = None) -> int:
    """Run the selected benchmarks (all when ``names`` is empty); return an exit status.

    Args:
        names: benchmark names (``queue``, ``process``...); empty for all.
        quick: fewer repetitions and smaller sizes.
        out: where the table goes (stdout by default).
        markdown: also write the results, dated, as a Markdown table to this file.
    """
    out = out or sys.stdout
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
    failures = 0
    for path in modules:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        try:
            spec.loader.exec_module(module)
            rows = module.run(quick=quick)
        except ModuleNotFoundError as exc:
            if exc.name != "numpy":
                raise
            print(f"{path.stem}: skipped: it needs numpy (pip install 'proctor[numpy]')", file=out)
            continue
        except Exception as exc:  # one broken benchmark must not hide the others
            failures += 1
            print(f"{path.stem}: FAILED: {type(exc).__name__}: {exc}", file=out)
            continue
        for r in rows:
            print(
                f"{r['benchmark']:46} {r['proctor']:11.4g} {r['multiprocessing']:11.4g} "
                f"{r['unit']:>7} {r['ratio']:6.2f}x  {r.get('note', '')}",
                file=out,
                flush=True,
            )
        measured.extend(rows)
    if markdown:
        Path(markdown).write_text(markdown_table(measured, quick=quick), encoding="utf-8")
    return 1 if failures else 0


def markdown_table(rows: list[dict], *, quick: bool) -> str:
    """The rows as a dated Markdown table, with the machine they were measured on."""
    import datetime
    import os
    import platform

    when = datetime.date.today().isoformat()
    machine = (
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    lines = [
        f"Measured by `python -m proctor bench{' --quick' if quick else ''}` on {when} "
        f"({machine}); ratio above 1: proctor is better.",
        "",
        "| benchmark | proctor | multiprocessing | unit | ratio | note |",
        "|---|---:|---:|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {r['proctor']:.4g} | {r['multiprocessing']:.4g} | "
            f"{r['unit']} | {r['ratio']:.2f}x | {r.get('note', '')} |"
        )
    return "\n".join(lines) + "\n"
