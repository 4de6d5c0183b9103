"""Which implementation runs the fast paths of a queue's ring.

A second small C module, ``_native`` (``_native.c`` here), built with the lock
accelerator (``_sync._accel``; same build hook, same switch), gives the ring C
``put_one``/``get_one``: the word arithmetic and the copy of one small frame.
Locks, tokens, waits, batches and spilled items stay in Python. Both
implementations read and write the same bytes, so they share a queue::

    PROCTOR_PURE_PYTHON set (not "0")  ──▶ pure Python; _native not even imported
    else: import _native ── ok, layout ─▶ C fast paths      (ACTIVE = "native")
                          │  as _ring's
                          └ ImportError, ▶ pure Python       (ACTIVE = "python")
                            stale build,
                            other layout

``python -m proctor info`` prints :func:`describe`.
"""

from __future__ import annotations

from types import ModuleType

from .._core._accel import ENV_VAR, load_native
from .._core._accel import describe as _describe

__all__ = ("ACTIVE", "ENV_VAR", "REASON", "describe", "native")

#: (HEADER_SIZE, frame header, position bits): _ring's layout, which the C module
#: must have been built for (a module left over from older source is refused).
LAYOUT = (128, 16, 36)


def _load() -> tuple[ModuleType | None, str]:
    module, reason = load_native(__package__ or "proctor._queues")
    if module is None:
        return None, reason
    layout = (module.HEADER_SIZE, module.FRAME_HEADER, module.POSITION_BITS)
    if layout != LAYOUT:
        return None, f"{module.__file__} was built for another ring layout ({layout})"
    return module, reason


#: The C module, or None when the pure-Python ring runs.
native, REASON = _load()

#: "native" (the C fast paths) or "python".
ACTIVE = "native" if native is not None else "python"


def describe() -> str:
    """One line for ``python -m proctor info``: which implementation, and why."""
    return _describe(native, REASON)
