"""CPython's multiprocessing test suite, installed for one target and one start method.

The interpreter's ``test._test_multiprocessing`` (never copied into this repository)
defines its tests as mixin-less bases (``_TestQueue``...) that CPython combines with
a ``ProcessesMixin`` for each start method. This module does the same, here:

- it makes ``multiprocessing`` mean proctor first when ``PROCTOR_COMPAT_TARGET`` is
  ``proctor`` (``mp_alias``), so the suite's ``multiprocessing`` is proctor;
- it installs ``WithProcessesTestQueue``... and the plain ``TestCase`` classes in
  this module, whose ``setUpModule`` sets ``PROCTOR_COMPAT_METHOD`` as start method;
  in the ``fork`` run only, also the ``threads`` groups (``WithThreadsTestQueue``...,
  ``multiprocessing.dummy``: ``proctor.dummy`` for the proctor target).

Children are sent test methods (``self._test_args``...) pickled by reference to the
classes here, so every child imports this module and repeats the same steps; both
settings come from the environment, which children inherit.

The suite's own module and class fixtures read stdlib internals
(``multiprocessing.process._dangling``, ``util._cleanup_tests``); for both targets
they are replaced by the plain equivalents below. They only print warnings in
CPython's run, so no test outcome depends on them. One helper that several tests
call between their checks, ``_TestCondition.check_invariant``, reads private
attributes of the stdlib's Condition; it is skipped for objects that lack them.
Tests that are themselves about stdlib internals are listed in ``excluded.txt``.
"""

from __future__ import annotations

import gc
import os
import sys
import unittest

import mp_alias

TARGET = mp_alias.target()
METHOD = os.environ.get(mp_alias.METHOD_ENV, "spawn")

if TARGET == "proctor":
    mp_alias.install()

import multiprocessing  # noqa: E402  (proctor, for the proctor target)

import test._test_multiprocessing as suite  # noqa: E402

#: Classes of groups proctor does not implement yet: not run (later issues).
DEFERRED_CLASSES = {
    "WithProcessesTestHeap": "heap (later issue)",
}

#: Tests of implemented groups that cannot run yet.
DEFERRED_TESTS: dict[str, str] = {}


def deferred_reason(test_id: str) -> str | None:
    """Why ``test_id`` (``Class.method``) is not run yet, or ``None`` if it is run."""
    return DEFERRED_TESTS.get(test_id) or DEFERRED_CLASSES.get(test_id.split(".")[0])


def _set_up_class(cls: type) -> None:
    pass


def _tear_down_class(cls: type) -> None:
    # bpo-26762, as in the suite: break reference cycles between tests.
    gc.collect()


suite.BaseMixin.setUpClass = classmethod(_set_up_class)
suite.BaseMixin.tearDownClass = classmethod(_tear_down_class)

_check_invariant = suite._TestCondition.check_invariant


def _check_invariant_if_stdlib(self: unittest.TestCase, cond: object) -> None:
    # The suite's notify tests call this helper between their checks; it reads
    # the stdlib Condition's private semaphores (_sleeping_count...) and already
    # skips itself where they cannot be read (NotImplementedError). proctor's
    # Condition has none of them: skip the helper, not the notify tests.
    if hasattr(cond, "_sleeping_count"):
        _check_invariant(self, cond)


suite._TestCondition.check_invariant = _check_invariant_if_stdlib

_test_abstract_socket = suite._TestListener.test_abstract_socket


def _test_abstract_socket_alone(self: unittest.TestCase) -> None:
    # The test listens on a fixed abstract address ("\0something"), one per
    # machine, and the harness runs every start method's run, proctor's and the
    # stdlib's, at once: two runs reaching it together failed with EADDRINUSE
    # (seen once in 40 sessions). One run at a time here, by a lock file that all
    # runs on the machine share.
    import fcntl
    import tempfile

    path = os.path.join(tempfile.gettempdir(), "proctor-compat-abstract-socket.lock")
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _test_abstract_socket(self)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


suite._TestListener.test_abstract_socket = _test_abstract_socket_alone


#: The start method whose run also runs the ``threads`` groups (``multiprocessing.dummy``,
#: i.e. ``proctor.dummy``): they do not depend on the start method, so once is enough.
THREADS_METHOD = "fork"


def _types() -> dict[str, type]:
    """The suite's test types installed in this run, and the mixin of each."""
    types = {"processes": suite.ProcessesMixin, "manager": suite.ManagerMixin}
    if METHOD == THREADS_METHOD:
        types["threads"] = suite.ThreadsMixin
    return types


def _install() -> list[type]:
    """Create the ``processes`` and ``manager`` (and ``threads``) test classes and the
    plain ones here, as CPython does."""
    installed = []
    types = _types()
    for name, base in list(vars(suite).items()):
        if not isinstance(base, type):
            continue
        if issubclass(base, suite.BaseTestCase):
            if base is suite.BaseTestCase:
                continue
            made = [
                ("With" + type_.capitalize() + name[1:], (base, mixin, unittest.TestCase))
                for type_, mixin in types.items()
                if type_ in base.ALLOWED_TYPES
            ]
        elif issubclass(base, unittest.TestCase):
            made = [(name, (base,))]
        else:
            continue
        for new_name, bases in made:
            cls = type(new_name, bases, {})
            cls.__qualname__ = new_name
            cls.__module__ = __name__
            globals()[new_name] = cls
            installed.append(cls)
    return installed


TEST_CLASSES = _install()


def setUpModule() -> None:
    """What the suite's own setUpModule does, without its stdlib bookkeeping."""
    multiprocessing.set_forkserver_preload([__name__])
    try:
        multiprocessing.set_start_method(METHOD, force=True)
    except ValueError:
        raise unittest.SkipTest(f"{METHOD} start method not supported") from None
    if sys.platform.startswith("linux"):
        try:
            multiprocessing.RLock()
        except OSError:
            raise unittest.SkipTest("OSError raises on RLock creation, see issue 3111!") from None
    suite.check_enough_semaphores()
    multiprocessing.get_logger().setLevel(suite.LOG_LEVEL)


def tearDownModule() -> None:
    gc.collect()
