"""CPython's own multiprocessing test suite passes against proctor wherever it passes here.

For each start method, ``tests/compat/harness.py`` runs the interpreter's
``test._test_multiprocessing`` twice -- against the stdlib and against proctor, all
methods at once -- and this test fails listing every test the stdlib passes and
proctor does not, except those in ``tests/compat/excluded.txt`` (tests of stdlib
internals). Groups proctor does not implement yet (manager, dummy, heap) are not
run; the pool groups are (``WithProcessesTestPool``...), the thread-pool ones are not
(only the ``processes`` variants of the suite's classes are installed).

Set ``PROCTOR_COMPAT_RESULTS`` to a directory to keep each run's per-test results
(``<target>-<method>.json``) and worker output there.
"""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from compat import harness
from helpers import START_METHODS

#: Set to 1 to fail, rather than skip, where the interpreter lacks the suite.
REQUIRE_ENV = "PROCTOR_REQUIRE_CPYTHON_SUITE"
#: A directory to copy the results to (they are in a temporary directory otherwise).
RESULTS_ENV = "PROCTOR_COMPAT_RESULTS"
#: Fewer stdlib passes than this means the suite did not really run.
MIN_STDLIB_PASSES = 100


@pytest.fixture(scope="module")
def cpython_suite() -> None:
    """Skip (or fail, if required) when the interpreter has no ``test`` package."""
    missing = harness.suite_missing()
    if missing is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(missing, pytrace=False)
    pytest.skip(missing)


@pytest.fixture(scope="module")
def suite_runs(request, cpython_suite, tmp_path_factory):
    """The runs of every selected start method, started together in the background.

    The suite mostly waits (sleeps, timeouts, children starting up), so six runs
    at once take about as long as the longest one alone; the first test waits
    for all of them, the others find their results ready.
    """
    name = "test_proctor_passes_what_the_stdlib_passes"
    selected = {
        item.callspec.params["method"]
        for item in request.session.items
        if getattr(item, "originalname", None) == name
    }
    methods = [m for m in START_METHODS if m in selected]
    workdir = tmp_path_factory.mktemp("cpython-suite")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cpython-suite")
    future = executor.submit(harness.run_methods, methods, workdir)
    yield future, workdir
    executor.shutdown(wait=True)


def _keep(workdir: Path, method: str, runs: tuple[harness.Run, ...]) -> None:
    destination = os.environ.get(RESULTS_ENV)
    for run in runs:
        (workdir / f"{run.target}-{method}.json").write_text(json.dumps(run.to_json(), indent=1))
    if destination:
        Path(destination).mkdir(parents=True, exist_ok=True)
        for path in workdir.iterdir():
            if path.is_file() and path.name.endswith((f"-{method}.json", f"-{method}.log")):
                shutil.copy(path, destination)


@pytest.mark.slow
@pytest.mark.timeout(harness.RUN_TIMEOUT + 120)
@pytest.mark.parametrize("method", START_METHODS)
def test_proctor_passes_what_the_stdlib_passes(method, suite_runs):
    # The first test waits minutes by design; the harness bounds every test and
    # every run itself, so the suite-wide 50 s stack dump would only be noise.
    faulthandler.cancel_dump_traceback_later()
    future, workdir = suite_runs
    stdlib, proctor = future.result(timeout=harness.RUN_TIMEOUT + 60)[method]
    _keep(workdir, method, (stdlib, proctor))
    assert stdlib.counts()["pass"] >= MIN_STDLIB_PASSES, harness.report(method, stdlib, proctor, [])
    differences = harness.compare(stdlib, proctor, harness.load_excluded())
    if differences:
        pytest.fail(harness.report(method, stdlib, proctor, differences), pytrace=False)


def test_excluded_list_is_well_formed():
    """Every exclusion names a test of the suite's form and gives a reason."""
    excluded = harness.load_excluded()
    assert excluded, "excluded.txt is empty: then delete it and this test"
    for test_id, reason in excluded.items():
        cls, _, name = test_id.partition(".")
        assert cls and name.startswith("test"), test_id
        assert len(reason) > 10, (test_id, reason)


def test_missing_suite_is_explained():
    """Without the suite's module the harness says so, and how to get it."""
    message = harness.suite_missing(module="test._no_such_multiprocessing_suite")
    assert message is not None
    assert "No module named 'test._no_such_multiprocessing_suite'" in message
    assert "testsuite" in message  # the Debian package to install
    assert REQUIRE_ENV in message
