"""Loading one of proctor's optional C modules: the off switch and the stale-build check.

proctor has four small C modules, each named ``_native`` in its package (``_sync``: the
locks' fast paths; ``_queues``: the ring's; ``_start``: a child's parent-death signal and watch;
``_core``: the descriptors that fork children let go of).
Each package's ``_accel`` module (``_start._bootstrap.load_prctl`` for ``_start``'s, which
every child loads: so this module imports nothing but ``os`` up front) calls
:func:`load_native` once::

    PROCTOR_PURE_PYTHON set (not "0") ─▶ None: pure Python, _native not even imported
    import PACKAGE._native fails ──────▶ None: not built (no compiler at install time)
    _native.c beside it, other digest ─▶ None: built from older source (see below)
    else ──────────────────────────────▶ the module

The stale-build check matters for editable installs (``pip install -e .``): the module
is compiled in place once, and a later ``git pull`` changes the C source and the Python
that calls it together, leaving a module whose methods or slots the Python no longer
matches -- an ``AttributeError`` deep in a lock, or worse, a different memory layout. The
build hook (``hatch_build.py``) compiles each module with a digest of its source (its
CRC-32 and length: it only has to tell versions apart, and hashlib's OpenSSL import
would cost every spawn child 3 ms) as ``SOURCE_DIGEST``; when that source is still on
disk beside the module (an editable install or a source tree), it must match, or the
pure-Python implementation runs and ``python -m proctor info`` says to rebuild.
Installed wheels carry no C source, so there is nothing to compare and the module is
used as built.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

__all__ = ("ENV_VAR", "describe", "load_native", "source_digest")

#: Set to anything but "" or "0" to run the pure-Python implementations.
ENV_VAR = "PROCTOR_PURE_PYTHON"


def source_digest(path: str) -> str:
    """The stamp of the C source at ``path``: what ``hatch_build.py`` compiles in.

    Its CRC-32 and its length, 16 hex digits (hatch_build.py computes the same).
    """
    with open(path, "rb") as file:
        data = file.read()
    import zlib  # only where a source is beside the module: not in an installed wheel

    return f"{zlib.crc32(data):08x}{len(data) & 0xFFFFFFFF:08x}"


def load_native(package: str) -> tuple[ModuleType | None, str]:
    """Import ``package._native`` if it may be used: (the module or None, why)."""
    value = os.environ.get(ENV_VAR, "")
    if value not in ("", "0"):
        return None, f"{ENV_VAR}={value} is set"
    name = package + "._native"
    try:
        __import__(name)  # importlib's import_module, without importing importlib
    except ImportError as exc:
        return None, (
            f"the C accelerator is not built ({exc}); reinstall proctor on a machine with "
            "a C compiler to get it"
        )
    module = sys.modules[name]
    stale = _stale_build(module)
    if stale is not None:
        return None, stale
    return module, "built and loaded"


def _stale_build(module: ModuleType) -> str | None:
    """Why ``module`` was not built from the C source beside it, or None."""
    built_file = module.__file__ or ""
    source = os.path.join(os.path.dirname(built_file), "_native.c")
    try:
        digest = source_digest(source)
    except OSError:
        return None  # no source here (an installed wheel): nothing to compare
    stamped = getattr(module, "SOURCE_DIGEST", "")
    if stamped == digest:
        return None
    return (
        f"{built_file} was built from another version of {source} (stamp "
        f"{stamped or 'missing'}, source {digest}); run `pip install -e .` again to "
        "rebuild it"
    )


def describe(native: ModuleType | None, reason: str) -> str:
    """One line for ``python -m proctor info``: which implementation, and why."""
    if native is None:
        return f"pure Python ({reason})"
    return f"C accelerator ({native.__file__})"
