"""Which implementation runs the fast paths of Lock, RLock and Semaphore.

proctor ships one small C module, ``_native`` (``_native.c``), built when the
installing machine has a C compiler. It gives the locks and semaphores C
``acquire``/``release``/``__enter__``/``__exit__`` for the uncontended case and
a short spin; everything else -- waiting, dead-holder recovery, errors -- stays
in the pure-Python methods, which the C code calls. Both implementations run
the same protocol on the same shared memory, so they work together::

    PROCTOR_PURE_PYTHON set (not "0")  ──▶ pure Python; _native not even imported
    else: import _native ── ok ─────────▶ C fast paths      (ACTIVE = "native")
                          └ ImportError, ▶ pure Python       (ACTIVE = "python")
                            stale build

``_lock`` and ``_semaphore`` define both classes of each primitive when the C
module loads (``PyLock`` and ``NativeLock``...); the public name (``Lock``) is
the active one. ``python -m proctor info`` prints :func:`describe`. The switch and
the stale-build check are ``_core._accel``'s, shared with the queue's module.
"""

from __future__ import annotations

from .._core._accel import ENV_VAR, load_native
from .._core._accel import describe as _describe

__all__ = ("ACTIVE", "ENV_VAR", "REASON", "describe", "native")

#: The C module (``_native``), or None when the pure-Python implementation runs.
native, REASON = load_native(__package__ or "proctor._sync")

#: "native" (the C fast paths) or "python".
ACTIVE = "native" if native is not None else "python"


def describe() -> str:
    """One line for ``python -m proctor info``: which implementation, and why."""
    return _describe(native, REASON)
