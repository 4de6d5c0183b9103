"""A pytest plugin that runs joblib's own ``test_parallel.py`` on proctor's joblib backend.

``tests/test_joblib_suite.py`` runs, in a child pytest::

    python -m pytest -p compat.joblib_plugin --pyargs joblib.test.test_parallel

joblib's tests name their backends as strings. ``proctor`` is registered before the
module is imported, so every test parametrised over all backends gets a ``proctor``
case. With ``PROCTOR_JOBLIB_AS_LOKY=1`` the plugin also registers proctor's backend
under the names ``"loky"`` (joblib's default) and ``"multiprocessing"``, so that the
tests written for joblib's process backends run on proctor's: the full mode. Tests that
cannot apply are deselected from ``joblib_excluded.txt``, each with its reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import joblib.parallel

import proctor.joblib

EXCLUDED = Path(__file__).with_name("joblib_excluded.txt")
AS_LOKY_ENV = "PROCTOR_JOBLIB_AS_LOKY"


def excluded() -> dict[str, str]:
    """``{test name or name[id]: reason}`` from ``joblib_excluded.txt``."""
    found = {}
    for line in EXCLUDED.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            found[name] = reason
    return found


def pytest_configure(config):
    if os.environ.get(AS_LOKY_ENV) == "1":
        for name in ("loky", "multiprocessing"):
            joblib.parallel.register_parallel_backend(name, proctor.joblib.ProctorBackend)


def pytest_collection_modifyitems(config, items):
    skip = excluded()
    kept, dropped = [], []
    for item in items:
        original = getattr(item, "originalname", item.name)
        (dropped if item.name in skip or original in skip else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
