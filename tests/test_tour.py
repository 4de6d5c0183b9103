"""The tutorial's programs print what their author expected, under every start method."""

from __future__ import annotations

import subprocess
import sys

import pytest

from proctor._cli import _tour

EXAMPLES = _tour.load_examples()


def test_every_example_declares_its_expected_output():
    assert len(EXAMPLES) >= 4
    for example in EXAMPLES:
        assert example.expected, example.path


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.path.stem)
def test_example_prints_what_the_tutorial_expects(example, start_method):
    code, output = _tour.run_example(example, start_method)
    assert code == 0, output
    assert _tour.check_output(example, output) == []


def test_check_output_catches_a_wrong_line():
    example = EXAMPLES[0]
    assert _tour.check_output(example, "something else\n")


def test_cli_help_and_info():
    help_text = subprocess.run(
        [sys.executable, "-m", "proctor", "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_text.returncode == 0
    assert "tour" in help_text.stdout and "bench" in help_text.stdout
    info = subprocess.run(
        [sys.executable, "-m", "proctor", "info"], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0 and "start methods" in info.stdout


def test_bench_markdown_table_is_dated_and_has_every_row():
    from proctor._cli._bench import markdown_table

    rows = [
        {"benchmark": "a", "proctor": 2.0, "multiprocessing": 1.0, "unit": "op/s", "ratio": 2.0},
        {
            "benchmark": "b",
            "proctor": 1.0,
            "multiprocessing": 3.0,
            "unit": "ms",
            "ratio": 3.0,
            "note": "n",
        },
    ]
    text = markdown_table(rows, quick=True)
    lines = text.splitlines()
    assert lines[0].startswith("Measured by `python -m proctor bench --quick` on 20")
    assert "| a | 2 | 1 | op/s | 2.00x |  |" in lines
    assert "| b | 1 | 3 | ms | 3.00x | n |" in lines
