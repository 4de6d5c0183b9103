"""joblib's own ``test_parallel.py``, shipped in its wheel, passes on proctor's backend.

A child pytest runs ``joblib.test.test_parallel`` with ``tests/compat/joblib_plugin.py``:
every test parametrised over joblib's registered backends runs with ``"proctor"`` (about
80 tests, ~20 s). Set ``PROCTOR_JOBLIB_SUITE=full`` to run the whole module with
proctor's backend also under the names ``"loky"`` (joblib's default) and
``"multiprocessing"``, so that the tests written for joblib's process backends run on
proctor's (about 400 tests, ~3 minutes: not in CI). Tests that cannot apply are
listed, with their reasons, in ``tests/compat/joblib_excluded.txt``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("joblib", reason="joblib is not installed (pip install '.[test]')")
pytest.importorskip("joblib.test.test_parallel", reason="this joblib ships no tests")

TESTS = Path(__file__).resolve().parent
SUITE_TIMEOUT = 900  # seconds for the whole child run; each test has 60


@pytest.mark.timeout(SUITE_TIMEOUT + 60)
def test_joblibs_parallel_tests_pass_on_the_proctor_backend(tmp_path):
    full = os.environ.get("PROCTOR_JOBLIB_SUITE") == "full"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )
    # Without the loky alias, only the cases that name "proctor" test proctor; the
    # others are joblib's own backends. back_compat_backend is a loky subclass.
    select = ["-k", "proctor and not back_compat_backend"]
    if full:
        env["PROCTOR_JOBLIB_AS_LOKY"] = "1"
        select = [
            "-k",
            "not multiprocessing and not threading and not sequential and not back_compat",
        ]
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "compat.joblib_plugin",
        "-p",
        "no:cacheprovider",
        "--pyargs",
        "joblib.test.test_parallel",
        "-q",
        "--timeout",
        "60",
        "-rfE",
        *select,
    ]
    # From an empty directory: proctor's pytest settings and conftest stay out of it.
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"{summary}\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert " passed" in summary
    print(f"joblib's test_parallel on proctor ({'full' if full else 'proctor cases'}): {summary}")
