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
in the background, from the session's start on, beside the rest of the test suite
(``compat/background.py``); these tests run last and read their results.

Set ``PROCTOR_COMPAT_RESULTS`` to a directory to keep each run's per-test results
(``<target>-<method>.json``, ``futures-<target>-<method>.json``) and worker output there.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from compat import harness, mp_alias
from helpers import START_METHODS

#: Set to 1 to fail, rather than skip, where the interpreter lacks the suite.
REQUIRE_ENV = "PROCTOR_REQUIRE_CPYTHON_SUITE"
#: A method's runs may follow each other (proctor's, then the stdlib's): each is
#: bounded by harness.RUN_TIMEOUT.
SUITE_TIMEOUT = 2 * harness.RUN_TIMEOUT
#: A directory to copy the results to (they are in a temporary directory otherwise).
RESULTS_ENV = "PROCTOR_COMPAT_RESULTS"
#: Fewer passes than this means the suite did not really run. Counted as
#: ``harness.suite_passes`` does: where the stdlib ran only the tests proctor did not
#: pass, proctor's passes and those -- the excluded tests then run nowhere. Here
#: that is 240 to 320 of the first (by method; the stdlib alone passes about 290)
#: and 33 to 35 of the second on 3.13 (the stdlib alone 52 to 60 by version; 24
#: of its tests are excluded).
MIN_STDLIB_PASSES = {"multiprocessing": 100, "futures": 20}


def _keep(workdir: Path, method: str) -> None:
    destination = os.environ.get(RESULTS_ENV)
    if destination:
        Path(destination).mkdir(parents=True, exist_ok=True)
        for path in workdir.iterdir():
            if path.is_file() and path.name.endswith((f"-{method}.json", f"-{method}.log")):
                shutil.copy(path, destination)


def _check(suite: str, method: str, background_suites) -> None:  # type: ignore[no-untyped-def]
    # The first test may wait minutes by design; the harness bounds every test and
    # every run itself, so the suite-wide 50 s stack dump would only be noise.
    faulthandler.cancel_dump_traceback_later()
    driver = background_suites[suite]
    if driver.missing is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(driver.missing, pytrace=False)
        pytest.skip(driver.missing)
    stdlib, proctor = driver.results(timeout=SUITE_TIMEOUT + 60)[method]
    _keep(driver.workdir, method)
    passes = harness.suite_passes(stdlib, proctor)
    assert passes >= MIN_STDLIB_PASSES[suite], harness.report(method, stdlib, proctor, [])
    differences = harness.compare(stdlib, proctor, harness.load_excluded(harness.SUITES[suite][1]))
    if differences:
        pytest.fail(harness.report(method, stdlib, proctor, differences), pytrace=False)


@pytest.mark.slow
@pytest.mark.background_suite("multiprocessing")
@pytest.mark.timeout(SUITE_TIMEOUT + 120)
@pytest.mark.parametrize("method", START_METHODS)
def test_proctor_passes_what_the_stdlib_passes(method, background_suites):
    _check("multiprocessing", method, background_suites)


@pytest.mark.slow
@pytest.mark.background_suite("futures")
@pytest.mark.timeout(SUITE_TIMEOUT + 120)
@pytest.mark.parametrize("method", START_METHODS)
def test_proctor_executor_passes_what_the_stdlib_passes(method, background_suites):
    _check("futures", method, background_suites)


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


def test_a_run_read_back_from_its_file_is_the_same_run():
    """The background driver writes each run with ``to_json``; the tests read it back."""
    run = harness.Run("proctor", "spawn", sys.executable, log="/tmp/x.log", suite="futures")
    run.results = {"Case.test_a": {"outcome": "pass", "message": ""}}
    run.seconds, run.restarts, run.complete, run.only_needed = 12.5, 1, True, ["Case.test_a"]
    assert harness.Run.from_json(json.loads(json.dumps(run.to_json()))) == run


def test_the_background_jobs_processes_are_no_tests_children():
    """``process_tree`` leaves out a background job and what it started, and only that."""
    from helpers import BACKGROUND, process_tree

    starts_a_child = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print(c.pid, flush=True); time.sleep(60)"
    )
    job = subprocess.Popen([sys.executable, "-c", starts_a_child], stdout=subprocess.PIPE)
    own = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    grandchild = None
    try:
        grandchild = int(job.stdout.readline())
        assert {job.pid, grandchild, own.pid} <= set(process_tree())
        BACKGROUND.add(job.pid)
        try:
            tree = set(process_tree())
        finally:
            BACKGROUND.discard(job.pid)
        assert own.pid in tree
        assert not {job.pid, grandchild} & tree
    finally:
        if grandchild is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)
        for process in (job, own):
            process.kill()
            process.wait(timeout=30)
        job.stdout.close()


def test_stopping_a_driver_ends_the_workers_it_started(tmp_path):
    """SIGTERM ends the harness's command line and every worker's process group (each
    worker leads its own, which the signal to the driver does not reach)."""
    from compat import background
    from helpers import wait_until

    driver = background.start("futures", ["spawn"], tmp_path)
    if driver.missing is not None:
        pytest.skip(driver.missing)
    try:
        # A worker is running once it has recorded its first test.
        results = tmp_path / f"{harness.stem('futures', 'proctor', 'spawn')}.jsonl"
        wait_until(lambda: results.exists() and results.stat().st_size > 0, timeout=60)
    finally:
        driver.stop()
    assert driver.process.returncode == -signal.SIGTERM or driver.process.returncode == 128 + 15
    # Its workers (and theirs) are gone: nothing runs that names its directory.
    wait_until(lambda: not _running_in(tmp_path), timeout=10)


def _running_in(directory: Path) -> list[int]:
    """The processes whose command line names ``directory``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(directory) in part for part in proc.info["cmdline"] or ()):
            found.append(proc.pid)
    return found
