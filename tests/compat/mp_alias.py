"""Make ``import multiprocessing`` (and ``multiprocessing.X``) load proctor instead.

The compatibility harness runs CPython's own ``test._test_multiprocessing`` against
proctor. That module says ``import multiprocessing``; here that name is made to
mean proctor, in the harness process and in every child it starts::

    harness process                          every child interpreter (spawn,
    ───────────────                          forkserver, the suite's own scripts)
    PROCTOR_COMPAT_TARGET=proctor ──env──▶   sitecustomize (tests/compat/_startup)
    install():                                 puts _Trigger on sys.meta_path: the first
      stdlib managers/heap                     ``import multiprocessing...`` calls install()
        loaded first (bound to the stdlib)
      sys.modules["multiprocessing"] = proctor
      _ProctorFinder: "multiprocessing.X" ──▶ proctor.X, when proctor has X

Forked children inherit all of it.

What proctor does not have yet (``heap``; a later issue) stays a stand-in, only so
that the suite module imports: the groups that use it are not run (see
``cpython_suite.DEFERRED``); ``multiprocessing.pool``, ``multiprocessing.managers`` and
``multiprocessing.dummy`` are proctor's. A package-level name listed in
``LATER_NAMES`` becomes a stand-in that raises, so an incidental use fails loudly
instead of quietly testing the stdlib. ``heap.BufferWrapper`` -- which the suite's
barrier tests use as a shared counter -- becomes a small stand-in on proctor's
``RawArray``. Every stand-in lives in this harness, never in proctor.

The concurrent.futures suite (``futures_suite``) keeps the stdlib's
``multiprocessing`` in its own process; only the scripts its tests run in a fresh
interpreter (``PROCTOR_COMPAT_SCRIPT=1``) get :func:`install_futures`, through
``_FuturesTrigger``: ``concurrent.futures.ProcessPoolExecutor`` becomes proctor's, then
``multiprocessing`` proctor as above.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import types

TARGET_ENV = "PROCTOR_COMPAT_TARGET"
METHOD_ENV = "PROCTOR_COMPAT_METHOD"
#: Which suite the run is of: "multiprocessing" (the default) or "futures".
SUITE_ENV = "PROCTOR_COMPAT_SUITE"
#: Set (to 1) for the interpreters that the futures suite's tests start to run a
#: script (``assert_python_ok``): there, unlike in the futures run itself,
#: ``multiprocessing`` means proctor (see :func:`install_futures`).
SCRIPT_ENV = "PROCTOR_COMPAT_SCRIPT"

#: CPython's multiprocessing test module, shipped in the ``test`` package.
SUITE_MODULE = "test._test_multiprocessing"

#: stdlib submodules proctor has no counterpart of yet (each comes with a later issue).
LATER_SUBMODULES: tuple[str, ...] = ()

#: Package-level names the suite reads at import time that proctor has not got yet.
LATER_NAMES: tuple[str, ...] = ()

#: Names the suite reads while it is being imported (in decorators and class
#: bodies), set only where proctor lacks them, to values that make the tests that
#: depend on them skip or fail -- never pass. They are listed in the results.
IMPORT_TIME_STAND_INS: dict[str, dict[str, object]] = {
    # @skipUnless(util.abstract_sockets_supported) on test_abstract_socket
    "proctor.util": {"abstract_sockets_supported": False},
}

#: The stand-ins of IMPORT_TIME_STAND_INS that were needed in this process.
STAND_INS_USED: list[str] = []


def target() -> str:
    """The implementation under test in this process: ``"proctor"`` or ``"stdlib"``."""
    return os.environ.get(TARGET_ENV, "stdlib")


def installed() -> bool:
    """Whether ``multiprocessing`` already means proctor in this process."""
    module = sys.modules.get("multiprocessing")
    return module is not None and module.__name__ == "proctor"


def install() -> None:
    """Make ``multiprocessing`` and its submodules resolve to proctor's; idempotent."""
    if installed():
        return
    _remove_trigger()
    # Loaded while ``multiprocessing`` is still the stdlib, so their own imports
    # bind to the stdlib; only their module objects are kept. proctor too: its
    # errors subclass the stdlib's (multiprocessing.context), which it must find.
    for sub in LATER_SUBMODULES:
        importlib.import_module(f"multiprocessing.{sub}")
    import proctor
    import proctor._core._errors  # (loaded on first use otherwise: after the aliasing)

    stdlib = {
        name: module
        for name, module in sys.modules.items()
        if name == "multiprocessing" or name.startswith("multiprocessing.")
    }
    for name in stdlib:
        del sys.modules[name]
    sys.meta_path.insert(0, _ProctorFinder())
    sys.modules["multiprocessing"] = proctor
    for sub in LATER_SUBMODULES:
        sys.modules[f"multiprocessing.{sub}"] = stdlib[f"multiprocessing.{sub}"]
        setattr(proctor, sub, stdlib[f"multiprocessing.{sub}"])
    heap = _heap_stand_in()
    sys.modules["multiprocessing.heap"] = heap
    proctor.heap = heap  # type: ignore[attr-defined]
    for name in LATER_NAMES:
        setattr(proctor, name, _missing(name))
    for module_name, values in IMPORT_TIME_STAND_INS.items():
        module = importlib.import_module(module_name)
        for name, value in values.items():
            if not hasattr(module, name):
                setattr(module, name, value)
                STAND_INS_USED.append(f"{module_name}.{name}")


def install_futures() -> None:
    """Make ``concurrent.futures.ProcessPoolExecutor`` and ``multiprocessing`` proctor's.

    For the scripts the futures suite runs in a fresh interpreter, which say
    ``from concurrent.futures import ProcessPoolExecutor`` and pass it
    ``multiprocessing.get_context(...)``. ``concurrent.futures.process`` is loaded
    first, bound to the stdlib's ``multiprocessing`` (its executor is replaced, the
    rest of the module stays the stdlib's); idempotent.
    """
    _remove_trigger()
    import concurrent.futures

    # Not ``concurrent.futures.process``: called while that module is being loaded
    # (_ThenInstallFutures), it is not yet an attribute of its package.
    process = importlib.import_module("concurrent.futures.process")
    import proctor

    concurrent.futures.ProcessPoolExecutor = proctor.ProcessPoolExecutor  # type: ignore[misc]
    process.ProcessPoolExecutor = proctor.ProcessPoolExecutor
    install()


def install_futures_trigger() -> None:
    """Arrange for :func:`install_futures` to run at the first import that needs it."""
    if not any(isinstance(finder, _FuturesTrigger) for finder in sys.meta_path):
        sys.meta_path.insert(0, _FuturesTrigger())


def install_trigger() -> None:
    """Arrange for :func:`install` to run at the first import of ``multiprocessing``.

    Called from ``sitecustomize`` at every interpreter start-up of the proctor
    target: a child that never imports ``multiprocessing`` (proctor's reaper, say)
    pays nothing.
    """
    if not any(isinstance(finder, _Trigger) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Trigger())


def _remove_trigger() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, (_Trigger, _FuturesTrigger))]


def _is_multiprocessing(fullname: str) -> bool:
    return fullname == "multiprocessing" or fullname.startswith("multiprocessing.")


# The finders and the loader below are duck-typed rather than subclasses of
# importlib.abc's: this module is imported at every interpreter start-up of the
# proctor run, and importlib.abc costs tens of milliseconds to import.


#: proctor's modules whose import loads the stdlib's multiprocessing: the package, and
#: its errors (subclasses of the stdlib's), which the package loads on first use.
_IMPORTS_STDLIB = ("proctor", "proctor._core._errors")


def _proctor_initializing() -> bool:
    """Whether an import of proctor or of its errors is under way (not finished).

    The errors load on first use -- in a spawned child, often while unpickling its
    target, long after ``import proctor`` -- and import ``multiprocessing.context``:
    that import must reach the stdlib, not an alias back to proctor's half-made errors.
    """
    for name in _IMPORTS_STDLIB:
        spec = getattr(sys.modules.get(name), "__spec__", None)
        if getattr(spec, "_initializing", False):
            return True
    return False


class _Trigger:
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if _proctor_initializing():
            # proctor itself imports the stdlib's multiprocessing (its errors
            # subclass the stdlib's): let that import through, and alias at the
            # next trigger, once proctor is whole.
            return None
        if fullname == SUITE_MODULE:
            # A child that unpickles one of the suite's own functions imports the
            # suite first: its import-time probe must already be replaced.
            install()
            return None
        if not _is_multiprocessing(fullname):
            return None
        install()
        return _ProctorFinder().find_spec(fullname, path, target)


class _FuturesTrigger:
    """Runs :func:`install_futures` at the first import of ``concurrent.futures.process``
    (once that module is loaded) or of ``multiprocessing...`` (before it)."""

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if _proctor_initializing():
            return None  # as for _Trigger
        if fullname == "concurrent.futures.process":
            _remove_trigger()
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None:
                spec.loader = _ThenInstallFutures(spec.loader)
            return spec
        if not _is_multiprocessing(fullname):
            return None
        install_futures()
        return _ProctorFinder().find_spec(fullname, path, target)


class _ThenInstallFutures:
    """The loader of ``concurrent.futures.process``, then :func:`install_futures`."""

    def __init__(self, loader) -> None:  # type: ignore[no-untyped-def]
        self.loader = loader

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__spec__.loader = module.__loader__ = self.loader
        self.loader.exec_module(module)
        sys.modules[module.__name__] = module
        install_futures()


class _Alias:
    """Loads ``multiprocessing.X`` as the already existing module ``proctor.X``."""

    def __init__(self, real_name: str) -> None:
        self.real_name = real_name

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        module = importlib.import_module(self.real_name)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # Already executed under its proctor name; importlib has just set the
        # module's __spec__ to the alias's: give it back its own.
        module.__spec__ = self.real_spec


class _ProctorFinder:
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if not _is_multiprocessing(fullname):
            return None
        real = "proctor" + fullname[len("multiprocessing") :]
        if real != "proctor" and real not in sys.modules:
            parent_name = real.rpartition(".")[0]
            parent = importlib.import_module(parent_name)
            if importlib.machinery.PathFinder.find_spec(real, parent.__path__) is None:
                return None  # proctor has no such module: ModuleNotFoundError, as it should
        return importlib.machinery.ModuleSpec(fullname, _Alias(real))


def _missing(name: str):  # type: ignore[no-untyped-def]
    def missing(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise NotImplementedError(
            f"proctor has no {name} yet (a later issue); this compatibility-harness "
            "stand-in fails any test that uses it"
        )

    missing.__name__ = missing.__qualname__ = name
    return missing


class BufferWrapper:
    """A block of ``size`` bytes of proctor shared memory (harness stand-in).

    The suite's barrier tests count with ``heap.BufferWrapper``; this is all of
    ``multiprocessing.heap`` they need.
    """

    def __init__(self, size: int) -> None:
        from proctor import RawArray

        self._array = RawArray("b", max(size, 1))
        self._size = size

    def create_memoryview(self) -> memoryview:
        return memoryview(self._array).cast("B")[: self._size]


def _heap_stand_in() -> types.ModuleType:
    module = types.ModuleType("multiprocessing.heap", "harness stand-in: proctor has no heap")
    module.BufferWrapper = BufferWrapper  # type: ignore[attr-defined]
    return module
