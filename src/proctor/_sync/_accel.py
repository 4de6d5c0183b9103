"""Which implementation runs the fast paths of Lock, RLock and Semaphore.

proctor ships one small C module, ``_native`` (``_native.c``), built when the
installing machine has a C compiler. It gives the locks and semaphores C
``acquire``/``release``/``__enter__``/``__exit__`` for the uncontended case and
a short spin; everything else -- waiting, dead-holder recovery, errors -- stays
in the pure-Python methods, which the C code calls. Both implementations run
the same protocol on the same shared memory, so they work together::

    PROCTOR_PURE_PYTHON set (not "0")  ──▶ pure Python; _native not even imported
    else: import _native ── ok ─────────▶ C fast paths      (ACTIVE = "native")
                          └ ImportError ▶ pure Python       (ACTIVE = "python")

``_lock`` and ``_semaphore`` define both classes of each primitive when the C
module loads (``PyLock`` and ``NativeLock``...); the public name (``Lock``) is
the active one. ``python -m proctor info`` prints :func:`describe`.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

__all__ = ("ACTIVE", "ENV_VAR", "REASON", "describe", "native")

#: Set to anything but "" or "0" to run the pure-Python implementation.
ENV_VAR = "PROCTOR_PURE_PYTHON"


def _load() -> tuple[ModuleType | None, str]:
    value = os.environ.get(ENV_VAR, "")
    if value not in ("", "0"):
        return None, f"{ENV_VAR}={value} is set"
    try:
        from ._native import LockCore
    except ImportError as exc:
        return None, (
            f"the C accelerator is not built ({exc}); reinstall proctor on a machine with "
            "a C compiler to get it"
        )
    return sys.modules[LockCore.__module__], "built and loaded"


#: The C module (``_native``), or None when the pure-Python implementation runs.
native, REASON = _load()

#: "native" (the C fast paths) or "python".
ACTIVE = "native" if native is not None else "python"


def describe() -> str:
    """One line for ``python -m proctor info``: which implementation, and why."""
    if native is None:
        return f"pure Python ({REASON})"
    return f"C accelerator ({native.__file__})"
