"""Objects collected at interpreter exit, after their modules' globals were cleared."""

from __future__ import annotations

import pytest

import proctor
from proctor import _sync
from proctor._core import _closing, _sharedwords
from proctor._reaper import _semlock
from proctor._sync import _lock, _semaphore


def _clear_globals(monkeypatch, module) -> None:
    """What interpreter finalisation does to a module: every global becomes None."""
    for name in list(vars(module)):
        if not name.startswith("__"):
            monkeypatch.setattr(module, name, None)


_PURE = _sync.IMPLEMENTATIONS["python"]


@pytest.mark.parametrize(
    "make",
    [
        proctor.Lock,
        proctor.RLock,
        lambda: proctor.Semaphore(2),
        lambda: proctor.Value("i", 1),
        # The pure-Python classes too, where the C accelerator is the active one.
        _PURE["Lock"],
        _PURE["RLock"],
        lambda: _PURE["Semaphore"](2),
    ],
    ids=["Lock", "RLock", "Semaphore", "Value", "PyLock", "PyRLock", "PySemaphore"],
)
def test_finalizers_need_no_module_globals(make, monkeypatch):
    obj = make()
    with monkeypatch.context() as m:
        for module in (_closing, _lock, _semaphore, _semlock, _sharedwords):
            _clear_globals(m, module)
        # Must neither raise nor print "Exception ignored in __del__".
        for part in _parts(obj):
            part.__del__()
    for part in _parts(obj):
        part.close()  # with the globals back: release what the finalizer could not


def _parts(obj):
    """The objects with a finalizer inside ``obj``."""
    lock = getattr(obj, "get_lock", lambda: obj)()
    parts = [lock]
    for name in ("_named", "_shared"):
        part = getattr(lock, name, None)
        if part is not None:
            parts.append(part)
    return parts
