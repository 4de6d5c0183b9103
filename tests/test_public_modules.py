"""The stdlib-named public modules: `from multiprocessing.X import Y` works as `proctor.X`."""

from __future__ import annotations

import importlib

import pytest

import proctor
from helpers import run_program

PUBLIC_MODULES = (
    "connection",
    "context",
    "dummy",
    "dummy.connection",
    "pool",
    "managers",
    "process",
    "queues",
    "reduction",
    "resource_tracker",
    "shared_memory",
    "sharedctypes",
    "synchronize",
    "util",
)

# Not yet: each comes with its own issue, and must not exist half-way until then.
LATER_MODULES = ("heap",)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_module_exports_what_its_all_lists(name):
    module = importlib.import_module(f"proctor.{name}")
    assert isinstance(module.__all__, tuple)
    missing = [attr for attr in module.__all__ if not hasattr(module, attr)]
    assert not missing, f"proctor.{name} lists {missing} in __all__ but lacks them"


@pytest.mark.parametrize("name", LATER_MODULES)
def test_later_modules_do_not_exist_yet(name):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"proctor.{name}")


@pytest.mark.parametrize(
    ("module_name", "attribute"),
    [
        ("queues", "Queue"),
        ("queues", "SimpleQueue"),
        ("queues", "JoinableQueue"),
        ("synchronize", "Lock"),
        ("synchronize", "RLock"),
        ("synchronize", "Semaphore"),
        ("synchronize", "BoundedSemaphore"),
        ("synchronize", "Condition"),
        ("synchronize", "Event"),
        ("synchronize", "Barrier"),
        ("sharedctypes", "Value"),
        ("sharedctypes", "Array"),
        ("sharedctypes", "RawValue"),
        ("sharedctypes", "RawArray"),
        ("process", "current_process"),
        ("process", "parent_process"),
        ("process", "active_children"),
        ("pool", "Pool"),
        ("context", "BaseContext"),
        ("context", "Process"),
        ("context", "TimeoutError"),
        ("context", "AuthenticationError"),
        ("util", "get_logger"),
        ("util", "log_to_stderr"),
        ("util", "SUBDEBUG"),
        ("util", "SUBWARNING"),
    ],
)
def test_module_names_are_the_front_doors_objects(module_name, attribute):
    """A name imported from the stdlib-named module is the very object proctor.X is."""
    module = importlib.import_module(f"proctor.{module_name}")
    assert getattr(module, attribute) is getattr(proctor, attribute)


def test_every_public_module_is_an_attribute_after_import_proctor():
    # As after `import multiprocessing` (code registers reducers through
    # multiprocessing.reduction with no other import): a fresh interpreter, as a
    # module imported once is an attribute from then on.
    names = [name for name in PUBLIC_MODULES if "." not in name]
    out = run_program(
        "import sys, proctor\n"
        "for name in sys.argv[1:]:\n"
        "    assert getattr(proctor, name) is sys.modules['proctor.' + name], name\n"
        "print('ok')",
        *names,
    )
    assert out == "ok\n"


def test_the_reducer_of_every_context_is_the_reduction_modules_names():
    from proctor import reduction

    for ctx in [proctor, *(proctor.get_context(m) for m in proctor.get_all_start_methods())]:
        reducer = ctx.reducer
        for name in reduction.__all__:
            assert getattr(reducer, name) is getattr(reduction, name), (ctx, name)
    with pytest.raises(ValueError, match=r"proctor\.reduction\.register"):
        proctor.get_context().reducer = reduction


def test_context_classes_match_get_context():
    from proctor import context

    assert isinstance(proctor.get_context("fork"), context.ForkContext)
    assert isinstance(proctor.get_context("spawn"), context.SpawnContext)
    assert isinstance(proctor.get_context("forkserver"), context.ForkServerContext)
    assert issubclass(context.ForkProcess, proctor.Process)


def test_managers_has_every_proxy_type_the_stdlibs_has_and_names_the_queues():
    import multiprocessing.managers as stdlib_managers

    from proctor import managers

    stdlib_proxies = [  # (public ones: 3.13 has a _BaseDictProxy)
        name for name in dir(stdlib_managers) if name.endswith("Proxy") and name[0] != "_"
    ]
    assert stdlib_proxies, "the stdlib's proxy names were not found"
    missing = [name for name in stdlib_proxies if not hasattr(managers, name)]
    assert not missing, f"proctor.managers lacks {missing}"
    assert issubclass(managers.PoolProxy, managers.BasePoolProxy)
    # The stdlib's Manager().Queue() is an AutoProxy; proctor's has a type of its own.
    manager = managers.SyncManager(ctx=proctor.get_context("fork"))
    with manager:
        assert type(manager.Queue()) is managers.QueueProxy
        assert type(manager.JoinableQueue()) is managers.QueueProxy


def test_queues_empty_and_full_are_the_queue_modules():
    import queue

    from proctor import queues

    assert queues.Empty is queue.Empty
    assert queues.Full is queue.Full


def test_resource_tracker_register_and_unregister_reach_the_reaper():
    """register/unregister are the reaper's: unregistering what was never used is a no-op."""
    from proctor import resource_tracker
    from proctor._reaper import _client as _reaper

    assert resource_tracker.register is _reaper.tracker_register
    assert resource_tracker.unregister is _reaper.tracker_unregister
    assert resource_tracker.ensure_running() is None  # as the stdlib's
    assert _reaper.address() is not None
    resource_tracker.unregister("/proctor-never-registered", "shm")  # must not raise
