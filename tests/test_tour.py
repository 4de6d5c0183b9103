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


def test_bench_markdown_table_shows_peers_under_their_row():
    from proctor._cli._bench import PEERS_SENTENCE, markdown_table

    peer = {"name": "loky", "value": 4.0, "ratio": 0.5}
    rows = [
        {"benchmark": "a", "proctor": 2.0, "multiprocessing": 1.0, "unit": "op/s", "ratio": 2.0},
        {
            "benchmark": "p",
            "proctor": 2.0,
            "multiprocessing": 1.0,
            "unit": "op/s",
            "ratio": 2.0,
            "peers": [peer],
        },
    ]
    lines = markdown_table(rows, quick=False).splitlines()
    assert lines[0].endswith(PEERS_SENTENCE)
    at = lines.index("| p | 2 | 1 | op/s | 2.00x |  |")
    assert lines[at + 1] == "| &nbsp;&nbsp;vs loky | | 4 | op/s | 0.50x | |"
    assert not markdown_table(rows[:1], quick=False).splitlines()[0].endswith(PEERS_SENTENCE)


def test_bench_markdown_replaces_only_the_table_of_an_earlier_run(tmp_path):
    from proctor._cli._bench import markdown_table, write_markdown

    path = tmp_path / "benchmarks.md"
    old_row = {"benchmark": "old", "proctor": 1.0, "multiprocessing": 1.0, "unit": "s"}
    new_row = {"benchmark": "new", "proctor": 1.0, "multiprocessing": 1.0, "unit": "s"}
    old = markdown_table([{**old_row, "ratio": 1.0}], quick=True)
    path.write_text(f"# Title\n\nIntro.\n\n{old}\n## What they measure\n\nProse.\n")
    write_markdown(path, markdown_table([{**new_row, "ratio": 1.0}], quick=False))
    text = path.read_text()
    assert text.startswith("# Title\n\nIntro.\n\nMeasured by `python -m proctor bench` on ")
    assert "| new |" in text and "| old |" not in text and "--quick" not in text
    assert text.endswith("| new | 1 | 1 | s | 1.00x |  |\n\n## What they measure\n\nProse.\n")
    fresh = tmp_path / "fresh.md"
    write_markdown(fresh, "table\n")
    assert fresh.read_text() == "table\n"


def test_bench_names_the_modules_a_spawn_child_would_have_to_compile(tmp_path):
    # Without bytecode caches every spawn child compiles proctor (PYTHONDONTWRITEBYTECODE
    # and a source checkout): the bench says so instead of reporting compile time as
    # start-up time.
    import py_compile

    from proctor._cli._bench import modules_without_bytecode

    source = tmp_path / "module.py"
    source.write_text("VALUE = 1\n")
    assert modules_without_bytecode(tmp_path) == [source]
    py_compile.compile(str(source), doraise=True)
    assert modules_without_bytecode(tmp_path) == []
    source.write_text("VALUE = 12\n")  # edited after compiling: the cache is stale
    assert modules_without_bytecode(tmp_path) == [source]
