"""CPython's ``concurrent.futures`` process-pool tests, for one target and one start method.

The interpreter's ``test.test_concurrent_futures`` (a package from Python 3.12, one
module before; never copied into this repository) builds its test classes by
combining each group (``ProcessPoolExecutorTest``, ``ExecutorDeadlockTest``,
``WaitTests``...) with an executor mixin: ``ThreadPoolMixin`` and one
``ProcessPool<Method>Mixin`` per start method, giving
``ProcessPoolSpawnProcessPoolExecutorTest``... This module collects the classes of
the ``PROCTOR_COMPAT_METHOD`` mixin -- every process-pool group, nothing of the
thread pool or of ``Future`` alone -- and, for the proctor target, points them at
proctor::

    ProcessPool<Method>Mixin.executor_type  ─▶ proctor.ProcessPoolExecutor
    ExecutorMixin.get_context()             ─▶ proctor.get_context(self.ctx)
    concurrent.futures.ProcessPoolExecutor  ─▶ proctor.ProcessPoolExecutor
                                               (what the tests that build their own
                                               executor name)

``multiprocessing`` itself stays the stdlib's here (``concurrent.futures.process``,
whose exceptions and helpers the tests import, is built on it); the executors get
proctor contexts, so the semaphores and queues the tests hand to workers are
proctor's. The CPython classes are used as they are, not copied, so workers unpickle
the tests' functions (``mul``, ``_crash``...) from CPython's modules by reference.

A few tests run a script in a fresh interpreter (``assert_python_ok``), which
CPython starts isolated (``python -I``): it would not see the harness. Here they
get the harness's environment instead (for both targets), with
``PROCTOR_COMPAT_SCRIPT=1``, which makes such an interpreter's ``multiprocessing``
and ``concurrent.futures.ProcessPoolExecutor`` proctor's (``mp_alias.install_futures``).

Test ids leave the start method out: ``ProcessPoolSpawnProcessPoolExecutorTest.
test_submit`` is ``ProcessPoolExecutorTest.test_submit`` in every run (each run is
one method), so one line of ``futures_excluded.txt`` covers the three methods.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import types
import unittest

import mp_alias

TARGET = mp_alias.target()
METHOD = os.environ.get(mp_alias.METHOD_ENV, "spawn")
#: The suite: a package from Python 3.12, one module before.
SUITE_MODULE = "test.test_concurrent_futures"
#: What the mixin of each start method is called, and so the prefix of its class names.
PREFIX = "ProcessPool" + METHOD.capitalize()

#: Tests not run yet, with why: proctor lacks what they need (later issues).
DEFERRED_TESTS = {
    "ProcessPoolExecutorTest.test_ressources_gced_in_workers": (
        "needs a Manager (manager, later issue)"
    ),
    # Not run, rather than excluded: run, it leaves three tasks blocked for ever.
    "ProcessPoolShutdownTest.test_processes_terminate": (
        "counts executor._processes (stdlib internal) before it releases the semaphore its "
        "three tasks block on; proctor passes the semaphore to them (issue 14), so after the "
        "failed count they block for ever, and the executor's exit then waits for them, as "
        "the stdlib's would"
    ),
}


def deferred_reason(test_id: str) -> str | None:
    """Why ``test_id`` (``Group.test``) is not run yet, or ``None`` if it is run."""
    return DEFERRED_TESTS.get(test_id)


def test_id(test: unittest.TestCase) -> str:
    """``Group.test_name``: the class name without its start method's prefix."""
    cls = type(test)
    return f"{cls.__name__.removeprefix(PREFIX)}.{test._testMethodName}"


def _modules() -> tuple[types.ModuleType, list[types.ModuleType]]:
    """The module of the mixins, and the modules of the tests."""
    package = importlib.import_module(SUITE_MODULE)
    if not hasattr(package, "__path__"):
        return package, [package]  # Python 3.10 and 3.11: one module
    tests = [
        importlib.import_module(f"{SUITE_MODULE}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if info.name.startswith("test_")
    ]
    return importlib.import_module(f"{SUITE_MODULE}.util"), tests


def _install() -> list[type]:
    """The suite's test classes of this start method's mixin, for this target."""
    util, modules = _modules()
    mixin = getattr(util, f"{PREFIX}Mixin")
    if TARGET == "proctor":
        _substitute(util)
    classes = []
    for module in modules:
        for name, cls in vars(module).items():
            if (
                isinstance(cls, type)
                and issubclass(cls, mixin)
                and issubclass(cls, unittest.TestCase)
                and cls.__module__ == module.__name__
                and name == cls.__name__
            ):
                classes.append(cls)
    return classes


def _substitute(util: types.ModuleType) -> None:
    """Make the suite's process-pool executors and contexts proctor's."""
    import concurrent.futures

    import proctor

    for method in ("Fork", "Spawn", "Forkserver"):
        getattr(util, f"ProcessPool{method}Mixin").executor_type = proctor.ProcessPoolExecutor

    def get_context(self):  # type: ignore[no-untyped-def]
        return proctor.get_context(self.ctx)

    util.ExecutorMixin.get_context = get_context
    concurrent.futures.ProcessPoolExecutor = proctor.ProcessPoolExecutor  # type: ignore[misc]


def _redirect_scripts() -> None:
    """Run ``assert_python_ok``'s scripts with the harness's environment, not ``-I``."""
    from test.support import script_helper

    run_python_until_end = script_helper.run_python_until_end

    def run_with_harness(*args, **env_vars):  # type: ignore[no-untyped-def]
        env_vars.setdefault("__isolated", False)
        env_vars[mp_alias.SCRIPT_ENV] = "1"
        return run_python_until_end(*args, **env_vars)

    script_helper.run_python_until_end = run_with_harness


TEST_CLASSES = _install()
_redirect_scripts()
