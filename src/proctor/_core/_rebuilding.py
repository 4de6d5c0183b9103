"""The receiving side of main references: objects of another process's main script.

``_pickler`` (the sending side, with cloudpickle behind it) reduces an object of
the main script to a call of one of the functions here; its docstring tells the
whole story (who can name what, tokens, serials, origins). They live apart from
it because every spawn or forkserver child whose target is defined in the main
script (the tutorial's programs, a notebook's functions) unpickles them at its
start, and ``_pickler`` imports the Python ``pickle`` module (with ``re`` and
``enum``), ``socket`` and ``threading``: several milliseconds of that child's
start. This module needs only what a child has loaded anyway.

    sender (_pickler)                      receiver (here)
    ─────────────────                      ───────────────
    main reference  ── _main_object ──▶   its own object, or the one rebuilt
                                           before, or rebuilt now and remembered
    by value        ── _rebuild     ──▶   the skeleton, remembered before it is
                                           filled (so that it can refer to itself)
    main globals    ── _main_namespace ─▶ the live ``__main__`` dict, or one dict
                                           per foreign main script
"""

from __future__ import annotations

import _thread
import sys

from . import _afterfork, _runtime

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from collections.abc import Callable
    from typing import Any

Origin = tuple  # (token: bytes, qualname: str, serial: int)

# Identifies this process's main script (drawn when proctor is imported: _runtime).
_TOKEN = _runtime.MAIN_SCRIPT_TOKEN

# What this process rebuilt from other main scripts, by origin; the origin of each
# (by id: _rebuilt keeps them alive); and per foreign token the dict standing in
# for that script's globals (and its token, by the dict's id). The sender reads
# them too: an object rebuilt here is sent on under its origin.
_rebuilt: dict[Origin, Any] = {}
_origins: dict[int, Origin] = {}
_namespaces: dict[bytes, dict[str, Any]] = {}
_namespace_tokens: dict[int, bytes] = {}
# Serialises rebuilding, so that two threads never build two copies of one class,
# and no thread sees a class that another is still filling in. (_thread's lock:
# threading is not loaded in a child that starts no thread.) Made again on first use
# in a forked child: a thread of the parent may have held it mid-rebuild.
_rebuild_lock = _afterfork.PerProcess(_thread.RLock)


class _Missing:
    pass


_MISSING = _Missing()


def lookup(owner: Any, qualname: str) -> Any:
    """``owner.a.b`` for the qualname ``"a.b"``, or ``_MISSING``."""
    found = owner
    for part in qualname.split("."):
        found = getattr(found, part, _MISSING)
        if found is _MISSING:
            break
    return found


def _main_object(token: bytes, qualname: str, serial: int, value: bytes | str | None) -> Any:
    """Unpickle a main reference (``_pickler``'s docstring gives the order).

    ``value`` is the object by value; or, when the sender could not pickle it so,
    why (only a process of the same main script can then use the reference); or
    ``None`` inside the value of an object that refers back to it.
    """
    if token == _TOKEN:
        main = sys.modules.get("__main__")
        found = lookup(main, qualname) if main is not None else _MISSING
        if found is not _MISSING:
            return found
    import _pickle  # here: a child rebuilding a function from marshal (_start._plain) skips it

    origin = (token, qualname, serial)
    with _rebuild_lock.get():
        found = _rebuilt.get(origin, _MISSING)
        if found is not _MISSING:
            return found
        if not isinstance(value, bytes):
            why = f"it could not be pickled by value ({value})" if value else "it came by name only"
            raise _pickle.UnpicklingError(
                f"cannot rebuild {qualname!r}, defined in the main script of another process "
                f"(not a fork of this one): {why}. Only that process and its fork children "
                "can receive it; define it in an importable module to send it anywhere"
            )
        known = set(_rebuilt)
        try:
            obj = _pickle.loads(value)
        except BaseException:
            for half_built in set(_rebuilt) - known:  # must not be found later
                _origins.pop(id(_rebuilt.pop(half_built)), None)
            raise
        _remember(origin, obj)
        return obj


def _remember(origin: Origin, obj: Any) -> None:
    if origin not in _rebuilt:
        _rebuilt[origin] = obj
        _origins[id(obj)] = origin


def _rebuild(origin: Origin, make: Callable[..., Any], args: tuple) -> Any:
    """Create the skeleton of a by-value object and remember it before it is filled.

    Remembering it first lets the objects it refers to refer back to it (a
    method that names its own class, two classes that name each other).
    """
    obj = make(*args)
    _remember(origin, obj)
    return obj


def _main_namespace(token: bytes, attributes: dict[str, Any]) -> dict[str, Any]:
    """The globals of functions rebuilt from the main script ``token`` names.

    Functions of the receiver's own main script (a fork relative sent them) use
    its live namespace; the functions of another process's script share one dict.
    """
    if token == _TOKEN:
        main = sys.modules.get("__main__")
        if main is not None:
            return main.__dict__
    with _rebuild_lock.get():
        namespace = _namespaces.get(token)
        if namespace is None:
            namespace = _namespaces[token] = dict(attributes)
            _namespace_tokens[id(namespace)] = token
        return namespace
