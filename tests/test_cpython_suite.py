"""CPython's own multiprocessing and concurrent.futures tests pass against proctor wherever
they pass here.

For each start method, ``tests/compat/harness.py`` runs the interpreter's
``test._test_multiprocessing`` against proctor, all methods at once, and then
against the stdlib the tests proctor did not pass (the stdlib's outcome of the
others cannot change the verdict; set ``PROCTOR_COMPAT_FULL_STDLIB=1`` to run the
stdlib's whole suite beside proctor's, for its counts and times), and
``test_proctor_passes_what_the_stdlib_passes`` fails listing
every test the stdlib passes and proctor does not, except those in
``tests/compat/excluded.txt`` (tests of stdlib internals, which the proctor run does not
run at all: they are recorded as "excluded"). Groups proctor does not
implement yet (heap) are not run; the pool groups are
(``WithProcessesTestPool``...), and so are the manager groups (``WithManagerTest...``,
``TestSyncManagerTypes``, the SharedMemoryManager tests...) under every method. The
``threads`` groups (``WithThreadsTestQueue``..., ``multiprocessing.dummy``, i.e.
``proctor.dummy``) run in the fork run only: they do not depend on the start method.

``test_proctor_executor_passes_what_the_stdlib_passes`` does the same for the
process-pool groups of ``test.test_concurrent_futures`` (``ProcessPoolExecutorTest``,
``ExecutorDeadlockTest``, ``ProcessPoolShutdownTest``, ``WaitTest``,
``AsCompletedTest``, the initializer groups), with proctor's ``ProcessPoolExecutor``
and contexts in place of the stdlib's (``tests/compat/futures_suite.py``); its
exclusions are in ``tests/compat/futures_excluded.txt``. Both suites run at once,
in the background, from the first of these tests on.

Set ``PROCTOR_COMPAT_RESULTS`` to a directory to keep each run's per-test results
(``<target>-<method>.json``, ``futures-<target>-<method>.json``) and worker output there.
"""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from compat import harness, mp_alias
from helpers import START_METHODS

#: Set to 1 to fail, rather than skip, where the interpreter lacks the suite.
REQUIRE_ENV = "PROCTOR_REQUIRE_CPYTHON_SUITE"
#: Set to 1 to run the stdlib's whole suite beside proctor's (``harness.run_methods``'
#: ``stdlib="full"``), rather than only the tests proctor did not pass.
FULL_STDLIB_ENV = "PROCTOR_COMPAT_FULL_STDLIB"
#: A method's runs may follow each other (proctor's, then the stdlib's): each is
#: bounded by harness.RUN_TIMEOUT.
SUITE_TIMEOUT = 2 * harness.RUN_TIMEOUT
#: A directory to copy the results to (they are in a temporary directory otherwise).
RESULTS_ENV = "PROCTOR_COMPAT_RESULTS"
#: The test of each suite (parametrized by start method).
SUITE_TESTS = {
    "test_proctor_passes_what_the_stdlib_passes": "multiprocessing",
    "test_proctor_executor_passes_what_the_stdlib_passes": "futures",
}
#: Fewer passes than this means the suite did not really run. Counted as
#: ``harness.suite_passes`` does: where the stdlib ran only the tests proctor did not
#: pass, proctor's passes and those -- the excluded tests then run nowhere. Here
#: that is 240 to 320 of the first (by method; the stdlib alone passes about 290)
#: and 33 to 35 of the second on 3.13 (the stdlib alone 52 to 60 by version; 24
#: of its tests are excluded).
MIN_STDLIB_PASSES = {"multiprocessing": 100, "futures": 20}


@pytest.fixture(scope="module")
def suite_runs(request, tmp_path_factory):
    """Each selected suite's runs (every selected start method), started together in
    the background: suite -> a future of ``run_methods``'s answer, or why the suite
    cannot run (a string, where the interpreter lacks it).

    The runs at once take about as long as the longest one alone where the suites
    wait (sleeps, timeouts), and as long as all their work on two busy cores
    otherwise (children starting up): hence the stdlib runs only the tests proctor
    did not pass. The first test waits for its suite, the others find their
    results ready.
    """
    methods: dict[str, set[str]] = {}
    for item in request.session.items:
        suite = SUITE_TESTS.get(getattr(item, "originalname", None))
        if suite is not None:
            methods.setdefault(suite, set()).add(item.callspec.params["method"])
    workdir = tmp_path_factory.mktemp("cpython-suite")
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cpython-suite")
    runs: dict[str, Future | str] = {}
    for suite, selected in methods.items():
        missing = harness.suite_missing(module=harness.SUITES[suite][0])
        if missing is not None:
            runs[suite] = missing
            continue
        ordered = [m for m in START_METHODS if m in selected]
        stdlib = "full" if os.environ.get(FULL_STDLIB_ENV) == "1" else "needed"
        runs[suite] = executor.submit(
            harness.run_methods, ordered, workdir, suite=suite, stdlib=stdlib
        )
    yield runs, workdir
    executor.shutdown(wait=True)


def _keep(workdir: Path, method: str, runs: tuple[harness.Run, ...]) -> None:
    destination = os.environ.get(RESULTS_ENV)
    for run in runs:
        (workdir / f"{run.stem}.json").write_text(json.dumps(run.to_json(), indent=1))
    if destination:
        Path(destination).mkdir(parents=True, exist_ok=True)
        for path in workdir.iterdir():
            if path.is_file() and path.name.endswith((f"-{method}.json", f"-{method}.log")):
                shutil.copy(path, destination)


def _check(suite: str, method: str, suite_runs) -> None:  # type: ignore[no-untyped-def]
    # The first test waits minutes by design; the harness bounds every test and
    # every run itself, so the suite-wide 50 s stack dump would only be noise.
    faulthandler.cancel_dump_traceback_later()
    runs, workdir = suite_runs
    started = runs[suite]
    if isinstance(started, str):
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(started, pytrace=False)
        pytest.skip(started)
    stdlib, proctor = started.result(timeout=SUITE_TIMEOUT + 60)[method]
    _keep(workdir, method, (stdlib, proctor))
    passes = harness.suite_passes(stdlib, proctor)
    assert passes >= MIN_STDLIB_PASSES[suite], harness.report(method, stdlib, proctor, [])
    differences = harness.compare(stdlib, proctor, harness.load_excluded(harness.SUITES[suite][1]))
    if differences:
        pytest.fail(harness.report(method, stdlib, proctor, differences), pytrace=False)


# leaks_ok: the suites run at once in worker interpreters that belong to the module's
# suite_runs fixture, which waits for them when the module ends; when one suite's test
# ends, the other suite's workers may still be running, and the per-test leak check
# would count them. They are other interpreters: nothing of this process leaks there.
@pytest.mark.slow
@pytest.mark.leaks_ok
@pytest.mark.timeout(SUITE_TIMEOUT + 120)
@pytest.mark.parametrize("method", START_METHODS)
def test_proctor_passes_what_the_stdlib_passes(method, suite_runs):
    _check("multiprocessing", method, suite_runs)


@pytest.mark.slow
@pytest.mark.leaks_ok  # see above
@pytest.mark.timeout(SUITE_TIMEOUT + 120)
@pytest.mark.parametrize("method", START_METHODS)
def test_proctor_executor_passes_what_the_stdlib_passes(method, suite_runs):
    _check("futures", method, suite_runs)


@pytest.mark.parametrize("suite", list(harness.SUITES))
def test_excluded_list_is_well_formed(suite):
    """Every exclusion names a test of the suite's form and gives a reason."""
    path = harness.SUITES[suite][1]
    excluded = harness.load_excluded(path)
    assert excluded, f"{path.name} is empty: then delete it and this test"
    for test_id, reason in excluded.items():
        cls, _, name = test_id.partition(".")
        assert cls and name.startswith("test"), test_id
        assert len(reason) > 10, (test_id, reason)
        if suite == "futures":  # one id for every start method: without the mixin's name
            assert not cls.startswith(("ProcessPoolFork", "ProcessPoolSpawn")), test_id


def test_futures_scripts_run_proctor(tmp_path):
    """The scripts the futures suite runs in a fresh interpreter use proctor's executor.

    Otherwise its shutdown tests would quietly check the stdlib's.
    """
    script = (
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from multiprocessing import get_context\n"
        "import concurrent.futures.process, proctor\n"
        "assert ProcessPoolExecutor is proctor.ProcessPoolExecutor\n"
        "assert get_context is proctor.get_context\n"
        "assert concurrent.futures.process.BrokenProcessPool.__module__ == "
        "'concurrent.futures.process'\n"
        "print('proctor')\n"
    )
    env = harness.worker_env("proctor", "spawn", "futures")
    env[mp_alias.SCRIPT_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "proctor"), done.stderr


def test_missing_suite_is_explained():
    """Without the suite's module the harness says so, and how to get it."""
    message = harness.suite_missing(module="test._no_such_multiprocessing_suite")
    assert message is not None
    assert "No module named 'test._no_such_multiprocessing_suite'" in message
    assert "testsuite" in message  # the Debian package to install
    assert REQUIRE_ENV in message


def test_the_stdlib_runs_just_what_the_comparison_needs():
    """Under ``stdlib="needed"`` the stdlib runs every test proctor did not settle,
    and the differences are those of a full stdlib run, whatever the outcomes."""
    outcomes = harness.OUTCOMES
    ids = [f"Case.test_{p}_{s}" for p in outcomes for s in outcomes]
    proctor = harness.Run("proctor", "fork", sys.executable, complete=True)
    full = harness.Run("stdlib", "fork", sys.executable, complete=True)
    for test_id in ids:
        _, mine, theirs = test_id.split("_")
        proctor.results[test_id] = {"outcome": mine, "message": ""}
        full.results[test_id] = {"outcome": theirs, "message": ""}
    needed = harness.stdlib_needed(proctor)
    assert needed == sorted(t for t in ids if t.split("_")[1] not in harness.SETTLED)
    partial = harness.Run("stdlib", "fork", sys.executable, complete=True, only_needed=needed)
    partial.results = {t: full.results[t] for t in needed}
    # proctor's run records as "excluded" just the tests of the exclusions file, which
    # compare() leaves out (harness.run passes it the same file).
    excluded = {t: "a test of stdlib internals" for t in ids if t.split("_")[1] == "excluded"}

    def key(differences):
        return [(d.test_id, d.stdlib, d.proctor) for d in differences]

    assert key(harness.compare(partial, proctor, excluded)) == key(
        harness.compare(full, proctor, excluded)
    )
    assert harness.suite_passes(partial, proctor) == sum(
        1 for t in ids if t.split("_")[1] == "pass" or (t in needed and t.split("_")[2] == "pass")
    )
    proctor.complete = False  # ended early: some tests may have no result
    assert harness.stdlib_needed(proctor) is None


_SUBTESTS_THAT_BLOCK = """
import signal, sys, time, unittest
sys.path.insert(0, {compat!r})
import worker
worker.REPEAT_ALARM = 0.2

class Case(unittest.TestCase):
    def test_blocks(self):
        for i in range(3):
            with self.subTest(i=i):  # records the TestTimeout, goes on to the next
                time.sleep(60)

with open({results!r}, "w") as out:
    recorder = worker._Recorder(out, 0.3, [], test_id=lambda test: test.id())
    signal.signal(signal.SIGALRM, worker._on_alarm)
    unittest.TestSuite([Case("test_blocks")]).run(recorder)
"""


def test_a_test_whose_subtests_swallow_the_timeout_still_ends(tmp_path):
    """A ``subTest`` records the TestTimeout and runs the next subtest, which blocks
    again: the worker keeps interrupting it until the test ends, so the report says
    where each subtest waited instead of the watchdog killing the worker."""
    results = tmp_path / "results.jsonl"
    script = _SUBTESTS_THAT_BLOCK.format(compat=str(harness.HERE), results=str(results))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert records[-1]["outcome"] == "error", records
    assert "TestTimeout" in records[-1]["message"], records
    assert "(i=2)" in records[-1]["message"], records  # the last subtest was reached


def test_a_hung_workers_report_lists_its_live_children():
    """The watchdog's report names each descendant, its state and where it waits."""
    from compat import worker

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        report = worker._describe_descendants(os.getpid())
    finally:
        child.kill()
        child.wait(timeout=30)
    line = next(line for line in report.splitlines() if f"pid {child.pid} " in line)
    assert f"(parent {os.getpid()})" in line, report
    assert "time.sleep(60)" in line, report
