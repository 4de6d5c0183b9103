"""Naming what cannot be pickled: the part that failed, and the path to it.

Pickling a lambda that closes over a lock fails with an error about the lambda
(or about ``_thread.lock``, with no word on where it was). :func:`find_culprit`
tries each part of the object on its own -- closure variables, globals, items,
attributes, constructor arguments -- and descends into the first that fails, as
pickling met it, until no part fails: that object is the culprit::

    argument 0 -> closure variable 'lock' -> _thread.lock

Only called once pickling has failed, so it may be slow.
"""

from __future__ import annotations

import pickle
import types

from ._by_value import global_names
from ._errors import PicklingError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

__all__ = ("describe", "find_culprit", "pickling_error")

#: How deep and how wide the search looks before it names the container itself.
MAX_DEPTH = 20
MAX_PARTS = 10_000


def pickling_error(
    obj: Any,
    error: BaseException,
    label: str,
    dump: Callable[[Any], object],
    remedy: str = "",
) -> PicklingError:
    """A :class:`PicklingError` naming the part of ``obj`` that cannot be pickled.

    Args:
        obj: what was being pickled.
        error: the exception pickling ``obj`` raised (the caller makes it the
            ``__cause__``).
        label: how to call ``obj`` in the message (``"argument 0"``).
        dump: pickles one object the way ``obj`` was pickled; raises if it cannot.
        remedy: what the caller can do, appended to the message.
    """
    path, cause = find_culprit(obj, label, error, dump)
    if not remedy:
        remedy = (
            "Nothing was sent. Send something picklable instead, for example the "
            "data needed to rebuild the object in the receiver."
        )
    return PicklingError(
        f"cannot pickle {' -> '.join(path)} ({type(cause).__name__}: {cause}). {remedy}",
        path=path,
    )


def find_culprit(
    obj: Any, label: str, error: BaseException, dump: Callable[[Any], object]
) -> tuple[tuple[str, ...], BaseException]:
    """Find the innermost part of ``obj`` that cannot be pickled, and the path to it.

    Args:
        obj: an object that ``dump`` failed to pickle, with ``error``.
        label: how to call ``obj``: the first step of the path.
        error: what ``dump(obj)`` raised.
        dump: pickles one object; raises if it cannot.

    Returns:
        The path, from ``label`` to the culprit's type (``("argument 0",
        "closure variable 'lock'", "_thread.lock")``), and the error pickling
        the culprit raised.
    """
    path = [label]
    seen = {id(obj)}
    for _depth in range(MAX_DEPTH):
        for part_label, part in _parts(obj):
            if id(part) in seen:
                continue
            try:
                dump(part)
            except Exception as exc:
                path.append(part_label)
                seen.add(id(part))
                obj, error = part, exc
                break
        else:
            break
    culprit = type_name(type(obj))
    if len(path) > 1 or path[0] != culprit:
        path.append(culprit)
    return tuple(path), error


def describe(obj: Any) -> str:
    """How messages call ``obj``: ``function f.<locals>.<lambda>``, ``_thread.lock``."""
    if isinstance(obj, types.FunctionType):
        return f"function {obj.__qualname__}"
    if isinstance(obj, type):
        return f"class {obj.__qualname__}"
    return type_name(type(obj))


def type_name(kind: type) -> str:
    """``list``, ``_thread.lock``: the module is left out for builtins."""
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _parts(obj: Any) -> Iterator[tuple[str, Any]]:
    """The parts pickling ``obj`` pickles, with a label each (at most MAX_PARTS)."""
    for count, item in enumerate(_all_parts(obj)):
        if count >= MAX_PARTS:
            return
        yield item


def _all_parts(obj: Any) -> Iterator[tuple[str, Any]]:
    kind = type(obj)
    if kind is types.FunctionType:
        yield from _function_parts(obj)
    elif isinstance(obj, type):
        for index, base in enumerate(obj.__bases__):
            yield f"base class {index}", base
        for name, value in list(vars(obj).items()):
            if name not in ("__dict__", "__weakref__"):
                yield f"class attribute {name!r}", value
    elif kind in (list, tuple):
        for index, item in enumerate(obj):
            yield f"item {index}", item
    elif kind in (set, frozenset):
        for item in obj:
            yield "an item", item
    elif kind is dict:
        for key, value in list(obj.items()):
            yield f"key {_short_repr(key)}", key
            yield f"item {_short_repr(key)}", value
    elif kind is types.MethodType:
        yield "the bound object", obj.__self__
        yield "the function", obj.__func__
    else:
        yield from _reduced_parts(obj)


def _function_parts(func: types.FunctionType) -> Iterator[tuple[str, Any]]:
    code = func.__code__
    for name, cell in zip(code.co_freevars, func.__closure__ or (), strict=False):
        try:
            yield f"closure variable {name!r}", cell.cell_contents
        except ValueError:  # not assigned yet
            pass
    globals_ = func.__globals__
    for name in sorted(global_names(code)):
        if name in globals_:
            yield f"global {name!r}", globals_[name]
    defaults = func.__defaults__ or ()
    positional = code.co_varnames[: code.co_argcount]
    for name, value in zip(positional[len(positional) - len(defaults) :], defaults, strict=True):
        yield f"default of {name!r}", value
    for name, value in (func.__kwdefaults__ or {}).items():
        yield f"default of {name!r}", value
    for name, value in func.__dict__.items():
        yield f"attribute {name!r}", value


def _reduced_parts(obj: Any) -> Iterator[tuple[str, Any]]:
    """The parts of an object as its ``__reduce_ex__`` gives them."""
    try:
        reduced = obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    except Exception:
        return  # the object itself refuses: it is the culprit
    yield "its class", type(obj)
    if not isinstance(reduced, tuple):
        return  # pickled by name
    args = reduced[1] if len(reduced) > 1 else ()
    if getattr(reduced[0], "__name__", "") == "__newobj__" and args:
        args = args[1:]  # (cls, *args): the class was tried above
    for index, arg in enumerate(args or ()):
        yield f"constructor argument {index}", arg
    state = reduced[2] if len(reduced) > 2 else None
    slots: Any = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    for mapping in (state, slots):
        if isinstance(mapping, dict):
            for name, value in mapping.items():
                yield f"attribute {name!r}", value
        elif mapping is not None:
            yield "its state", mapping
    if len(reduced) > 3 and reduced[3] is not None:
        for index, item in enumerate(reduced[3]):
            yield f"item {index}", item
    if len(reduced) > 4 and reduced[4] is not None:
        for key, value in reduced[4]:
            yield f"item {_short_repr(key)}", value


def _short_repr(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= 60 else text[:57] + "..."
