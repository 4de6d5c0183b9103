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
