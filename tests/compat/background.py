"""The CPython suites' runs, started when the test session starts and run beside it.

A suite's runs take about two minutes of mostly waiting (children starting, sleeps,
timeouts), while the rest of the test suite keeps one of CI's two cores busy: run
one after the other, the session waited for both. So each suite with a test selected
(``@pytest.mark.background_suite(name)``, in ``test_cpython_suite.py``) runs in a
*driver*, this directory's ``harness.py`` command line in a process of its own,
started before the first test; its tests run last (``conftest.py`` moves them) and
find the results written, or wait for them::

    session start ──▶ start(): one driver per selected suite ──▶ <stem>.json files
    every test ─────▶ leak check: the drivers' process trees are left out
                      (helpers.BACKGROUND)
    suite's tests ──▶ Driver.results(): wait for the driver, read its files
    session end ────▶ stop(): SIGTERM (the driver kills its workers' groups)

The driver and the workers it starts are other interpreters: nothing of the test
process is in them, so leaving them out of the leak checks hides no leak of its.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from compat import harness
from helpers import BACKGROUND

#: Set to 1 to run the stdlib's whole suite beside proctor's (``harness.run_methods``'
#: ``stdlib="full"``), rather than only the tests proctor did not pass.
FULL_STDLIB_ENV = "PROCTOR_COMPAT_FULL_STDLIB"
#: Seconds a driver gets to end after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


@dataclass
class Driver:
    """One suite's runs in the background (or why they cannot run)."""

    suite: str
    methods: list[str]
    workdir: Path
    process: subprocess.Popen | None
    #: Why the suite cannot run here (the interpreter lacks it), if so.
    missing: str | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"driver-{self.suite}.log"

    def results(self, timeout: float) -> dict[str, tuple[harness.Run, harness.Run]]:
        """method -> (stdlib run, proctor run), once the driver has ended.

        Raises:
            TimeoutError: the driver is still running after ``timeout`` seconds.
            RuntimeError: it ended without writing a run's results.
        """
        assert self.process is not None, self.missing
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"the {self.suite} suite's runs did not end within {timeout:.0f} s; "
                f"driver output: {self.log}"
            ) from None
        runs = {}
        for method in self.methods:
            pair = []
            for target in ("stdlib", "proctor"):
                path = self.workdir / f"{harness.stem(self.suite, target, method)}.json"
                if not path.exists():
                    tail = self.log.read_text()[-3000:]
                    raise RuntimeError(
                        f"the {self.suite} suite's driver exited with status {status} "
                        f"without writing {path.name}; its output ends with:\n{tail}"
                    )
                pair.append(harness.Run.from_json(json.loads(path.read_text())))
            runs[method] = (pair[0], pair[1])
        return runs

    def stop(self) -> None:
        """End the driver (and its workers) if it still runs."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        BACKGROUND.discard(self.process.pid)


def start(suite: str, methods: list[str], workdir: Path) -> Driver:
    """Start ``suite``'s runs under ``methods`` (in ``harness.METHODS`` order) in a
    driver process writing to ``workdir``.

    The stdlib runs only the tests proctor did not pass (``harness.run_methods``'
    ``stdlib="needed"``), or its whole suite where ``FULL_STDLIB_ENV`` is 1.
    """
    stdlib = "full" if os.environ.get(FULL_STDLIB_ENV) == "1" else "needed"
    ordered = [m for m in harness.METHODS if m in methods]
    missing = harness.suite_missing(module=harness.SUITES[suite][0])
    if missing is not None:
        return Driver(suite, ordered, workdir, None, missing)
    driver = Driver(suite, ordered, workdir, None)
    command = [sys.executable, str(Path(harness.__file__))]
    command += ["--out", str(workdir), "--suite", suite, "--stdlib", stdlib]
    command += ["--methods", *ordered]
    with driver.log.open("w") as log:
        # Its own session: a test that signals its process group does not reach it.
        driver.process = subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    BACKGROUND.add(driver.process.pid)
    return driver
