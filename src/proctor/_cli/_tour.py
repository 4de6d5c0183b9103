"""``python -m proctor tour``: run the tutorial's programs under proctor and check their output.

Each program in ``examples/`` is the tutorial's code with only the import
changed. Its docstring ends with the output the tutorial's author expected::

    Expected output (any order, "Done" last):
    3 cube is 27
    ...

The tour runs each program in a fresh interpreter (line-buffered, so lines appear
as a terminal would show them) under the chosen start methods, prints its output
under a heading, and says whether the output is what the author expected.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ("Example", "check_output", "examples_dir", "load_examples", "run_example", "tour")

# A program that needs longer than this is hung: the tour says so and goes on.
EXAMPLE_TIMEOUT = 60.0

# Line-buffered stdout, as on a terminal: each print reaches the pipe as one
# whole line, so lines from concurrent processes never tear. (Unbuffered output
# would write the text and its newline separately.) Children copy the setting.
_RUNNER = (
    "import runpy, sys, proctor; sys.stdout.reconfigure(line_buffering=True); "
    "proctor.set_start_method(sys.argv[1]); "
    "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


@dataclass
class Example:
    """One tutorial program and what its author expected it to print."""

    path: Path
    title: str
    expected: list[str]
    any_order: bool
    last: str | None


def examples_dir() -> Path:
    """Where the example programs are: inside the installed package, or the source tree."""
    # proctor/_cli/ -> proctor/ (installed) or src/proctor/ (source tree)
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "examples", here.parent.parent / "examples"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "the tour's example programs were not found (looked in the package and the "
        "source tree); reinstall proctor"
    )


def load_examples(directory: Path | None = None) -> list[Example]:
    """Read every ``NN_name.py`` program and its expected output."""
    directory = directory or examples_dir()
    found = []
    for path in sorted(directory.glob("[0-9][0-9]_*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        lines = doc.splitlines()
        title = lines[0] if lines else path.stem
        header_index = next(
            (i for i, line in enumerate(lines) if line.startswith("Expected output")), None
        )
        if header_index is None:
            raise ValueError(f"{path} has no 'Expected output' section in its docstring")
        header = lines[header_index]
        expected = [line.rstrip() for line in lines[header_index + 1 :] if line.strip()]
        last = re.search(r'"(.+?)" last', header)
        found.append(
            Example(path, title, expected, "any order" in header, last.group(1) if last else None)
        )
    return found


def run_example(example: Example, start_method: str) -> tuple[int | None, str]:
    """Run one program in a fresh interpreter; return (exit code or None on hang, output)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER, start_method, str(example.path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            timeout=EXAMPLE_TIMEOUT,
            cwd=str(example.path.parent),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        return None, out if isinstance(out, str) else out.decode(errors="replace")
    return done.returncode, done.stdout


def check_output(example: Example, output: str) -> list[str]:
    """Return what differs from the author's expectation (empty when it matches)."""
    got = [line.rstrip() for line in output.splitlines() if line.strip()]
    problems = []
    if example.any_order:
        if sorted(got) != sorted(example.expected):
            problems.append(f"expected the lines {example.expected} in any order, got {got}")
    elif got != example.expected:
        problems.append(f"expected {example.expected}, got {got}")
    if example.last is not None and (not got or got[-1] != example.last):
        problems.append(f"expected {example.last!r} last, got {got[-1:]}")
    return problems


def tour(start_methods: list[str], out=None) -> int:
    """Run every example under every given start method; return a process exit status."""
    out = out or sys.stdout
    failures = 0
    for example in load_examples():
        for method in start_methods:
            print(
                f"\n=== {example.path.name} -- {example.title} [start method: {method}]", file=out
            )
            code, output = run_example(example, method)
            print(output.rstrip("\n"), file=out)
            problems = check_output(example, output) if code == 0 else []
            if code is None:
                problems.append(f"did not finish within {EXAMPLE_TIMEOUT:.0f} s")
            elif code != 0:
                problems.append(f"exited with code {code}")
            if problems:
                failures += 1
                for problem in problems:
                    print(f"--- NOT as the tutorial expects: {problem}", file=out)
            else:
                print("--- output as the tutorial expects", file=out)
    total = len(load_examples()) * len(start_methods)
    print(f"\n{total - failures} of {total} runs printed what the tutorial expects.", file=out)
    return 1 if failures else 0
