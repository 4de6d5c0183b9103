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
        {"benchmark": "c", "proctor": 3.0, "multiprocessing": 1.0, "unit": "ns", "ratio": 0.33,
         "reference": True},
    ]  # fmt: skip
    text = markdown_table(rows, quick=True)
    lines = text.splitlines()
    assert lines[0].startswith("Measured by `python -m proctor bench --quick` on 20")
    assert "| a | 2 | 1 | op/s | 2.00x |  |" in lines
    assert "| b | 1 | 3 | ms | 3.00x | n |" in lines
    assert "| c (reference) | 3 | 1 | ns | 0.33x |  |" in lines


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


def test_bench_runs_combine_into_the_median_run_with_the_ratios_range():
    from proctor._cli._bench import combine_runs

    def run(ratio, proctor, note, peer_ratio):
        return [
            {"benchmark": "a", "proctor": proctor, "multiprocessing": proctor / ratio,
             "unit": "op/s", "ratio": ratio, "note": note, "floor": 10.0 * proctor,
             "floor_ratio": 10.0 * ratio,
             "peers": [{"name": "loky", "value": 2.0 * peer_ratio, "ratio": peer_ratio}]},
            {"benchmark": "b", "proctor": 2.0, "multiprocessing": 2.0, "unit": "ms",
             "ratio": 1.0, "note": ""},
        ]  # fmt: skip

    # The median run by ratio is the third, though its proctor figure is no column's
    # median: every figure of the row, its floor, its note and its peers, comes from it.
    runs = [run(1.2, 5.0, "run one", 3.0), run(0.9, 1.0, "run two", 1.0)]
    runs.append(run(1.0, 9.0, "run three", 2.0)[:1])  # "b" failed in the third run
    a, b = combine_runs(runs)
    assert a["benchmark"] == "a" and b["benchmark"] == "b"  # the first run's order
    assert (a["ratio"], a["ratio_range"], a["runs"]) == (1.0, (0.9, 1.2), 3)
    assert (a["proctor"], a["multiprocessing"], a["note"]) == (9.0, 9.0, "run three")
    assert (a["floor"], a["floor_ratio"]) == (90.0, 10.0)
    assert a["peers"] == [{"name": "loky", "value": 4.0, "ratio": 2.0, "ratio_range": (1.0, 3.0)}]
    assert (b["ratio"], b["ratio_range"], b["runs"]) == (1.0, (1.0, 1.0), 2)
    # An even count: the lower of the middle two runs, whatever order they ran in.
    (even,) = combine_runs([run(1.3, 4.0, "high", 1.0)[:1], run(1.1, 2.0, "low", 1.0)[:1]])
    assert (even["ratio"], even["proctor"], even["note"]) == (1.1, 2.0, "low")


def test_bench_runs_several_times_and_reports_the_median(monkeypatch, tmp_path):
    import io
    import textwrap

    from proctor._cli import _bench

    (tmp_path / "bench_fake.py").write_text(
        textwrap.dedent(
            """
            RATIOS = iter([0.9, 1.3, 1.1])
            CALLS = []

            def run(quick):
                CALLS.append(quick)
                ratio = next(RATIOS)
                return [{"benchmark": "fake row", "proctor": ratio, "multiprocessing": 1.0,
                         "unit": "op/s", "ratio": ratio, "note": f"ratio {ratio}"}]
            """
        )
    )
    monkeypatch.setattr(_bench, "benchmarks_dir", lambda: tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # run_benchmarks puts tmp_path on it
    monkeypatch.delitem(sys.modules, "bench_fake", raising=False)
    out = io.StringIO()
    table = tmp_path / "table.md"
    assert _bench.run_benchmarks([], quick=True, out=out, runs=3, markdown=str(table)) == 0
    assert sys.modules.pop("bench_fake").CALLS == [True, True, True]  # loaded once, run 3 times
    text = out.getvalue()
    assert "-- run 1 of 3" in text and "-- run 3 of 3" in text
    assert "-- median run of 3" in text
    assert text.rstrip().endswith("1.10x (0.90-1.30)  ratio 1.1")
    markdown = table.read_text()
    assert "`python -m proctor bench --quick --runs 3`" in markdown
    assert "| fake row | 1.1 | 1 | op/s | 1.10x (0.90-1.30) | ratio 1.1 |" in markdown
    with pytest.raises(ValueError, match="at least 1"):
        _bench.run_benchmarks([], quick=True, out=out, runs=0)


def test_bench_runs_option_refuses_a_count_below_one():
    from proctor.__main__ import _parser

    assert _parser().parse_args(["bench", "--runs", "3"]).runs == 3
    assert _parser().parse_args(["bench"]).runs == 1
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["bench", "--runs", bad])


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


def _bench_common():
    """benchmarks/_common.py, the helpers every benchmark module uses."""
    import importlib.util

    from proctor._cli._bench import benchmarks_dir

    spec = importlib.util.spec_from_file_location("_bench_common", benchmarks_dir() / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_rows_floor_gives_the_ratio_the_floor_itself_would_get():
    row = _bench_common().row
    # Lower is better (ms): stdlib 10, proctor 5, a bare fork 2 -> proctor 2x, floor 5x.
    timed = row("start", 5.0, 10.0, "ms", higher_is_better=False, floor=2.0)
    assert (timed["ratio"], timed["floor_ratio"]) == (2.0, 5.0)
    # Higher is better (GB/s): stdlib 1, proctor 2, memcpy 8 -> 2x, floor 8x.
    rate = row("copy", 2.0, 1.0, "GB/s", higher_is_better=True, floor=8.0)
    assert (rate["ratio"], rate["floor_ratio"]) == (2.0, 8.0)
    assert "floor_ratio" not in row("plain", 1.0, 1.0, "op/s", higher_is_better=True)
    assert row("fallback", 3.0, 1.0, "ns", higher_is_better=False, reference=True)["reference"]
    assert "reference" not in row("plain", 1.0, 1.0, "op/s", higher_is_better=True)


@pytest.fixture(scope="module")
def plotting(tmp_path_factory):
    """plot_ratios, once warmed up: matplotlib keeps the font files it has loaded open
    for the life of the process (its font cache), which the per-test leak check would
    otherwise count against the first test that draws."""
    pytest.importorskip("matplotlib")
    from proctor._cli._plot import plot_ratios

    for suffix in ("png", "svg"):  # the same fonts as the test's (log-scale ticks...)
        plot_ratios(PLOTTED, tmp_path_factory.mktemp("plot") / f"warm.{suffix}", title="warm")
    return plot_ratios


PLOTTED = [
    {"benchmark": "ahead", "proctor": 2.0, "multiprocessing": 1.0, "unit": "op/s",
     "ratio": 2.0, "floor": 6.0, "floor_ratio": 6.0},
    {"benchmark": "behind " * 12, "proctor": 1.0, "multiprocessing": 4.0, "unit": "ms",
     "ratio": 0.25},
    {"benchmark": "several runs", "proctor": 1.0, "multiprocessing": 1.0, "unit": "ms",
     "ratio": 1.03, "ratio_range": (0.91, 1.17), "runs": 3},
    {"benchmark": "fallback", "proctor": 3.0, "multiprocessing": 1.0, "unit": "ns/op",
     "ratio": 0.33, "reference": True},
]  # fmt: skip


def test_bench_plot_draws_every_ratio_and_floor_into_an_image(tmp_path, plotting):
    plot_ratios = plotting
    for name in ("ratios.png", "ratios.svg"):
        plot_ratios(PLOTTED, tmp_path / name, title="a test run")
    assert (tmp_path / "ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "ratios.svg").read_text()
    assert "2.00x" in svg and "0.25x" in svg and "1.03x" in svg and "a test run" in svg
    # A reference row is labelled so and drawn grey, not red like a row behind.
    assert "fallback (reference)" in svg
    assert svg.count("#9e9e9e") == 1 and svg.count("#c62828") == 1
    with pytest.raises(ValueError, match="no benchmark row"):
        plot_ratios([], tmp_path / "empty.png", title="nothing")


def test_bench_plot_without_matplotlib_says_how_to_install_it_before_running(monkeypatch):
    import io

    from proctor._cli import _bench

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    ran = []
    monkeypatch.setattr(_bench, "benchmarks_dir", lambda: ran.append(1))
    out = io.StringIO()
    assert _bench.run_benchmarks([], quick=True, out=out, plot="bench.png") == 2
    assert "pip install 'proctor[plot]'" in out.getvalue()
    assert not ran  # nothing measured for a plot that cannot be drawn
