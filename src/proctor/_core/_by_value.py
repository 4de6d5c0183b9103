"""Plain functions by value, rebuilt in the child without importing cloudpickle.

cloudpickle can send any function, but rebuilding what it sends requires
importing cloudpickle in the child, which costs ~25 ms of a spawn child's start
(it imports typing, inspect, dataclasses and logging). Most functions sent by
value are ordinary ones defined in ``__main__``, in a notebook, or as lambdas and
closures; for those, proctor sends the marshalled code object plus the globals,
defaults and closure values the function uses, and rebuilds it with this small
module. Everything else (classes defined in ``__main__``, dynamic modules...)
still goes through cloudpickle.

Functions from one module share one globals dict in the child, as they do in the
parent, so a function calling another and ``global`` statements behave alike.
"""

from __future__ import annotations

import builtins
import marshal
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("importable_by_reference", "reduce_function", "reduce_module")


class _Empty:
    """Marks a closure cell that had no value yet."""

    def __reduce__(self) -> str:
        return "_EMPTY"


_EMPTY = _Empty()


def importable_by_reference(obj: Any) -> bool:
    """Whether ``obj`` can be found again in the child by its module and qualified name."""
    module_name = getattr(obj, "__module__", None)
    if not module_name or module_name == "__main__":
        return False
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__spec__", None) is None:
        return False
    found: Any = module
    for part in obj.__qualname__.split("."):
        found = getattr(found, part, None)
        if found is None:
            return False
    return found is obj


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def reduce_function(func: types.FunctionType, shared_globals: dict[int, dict]) -> tuple:
    """A pickle reduce tuple that rebuilds ``func`` from its code and state.

    Args:
        func: a plain Python function that is not importable by reference.
        shared_globals: per-pickler memo: id(original globals) -> the dict that
            stands for it, so that functions of one module share globals.
    """
    original = func.__globals__
    stand_in = shared_globals.setdefault(id(original), {})
    used = {name: original[name] for name in _global_names(func.__code__) if name in original}
    closure = tuple(_cell_value(cell) for cell in func.__closure__ or ())
    state = (
        used,
        func.__defaults__,
        func.__kwdefaults__,
        closure,
        dict(func.__dict__),
        func.__qualname__,
        func.__module__,
        func.__doc__,
    )
    return (
        _make_skeleton,
        (marshal.dumps(func.__code__), stand_in, func.__name__, len(closure)),
        state,
        None,
        None,
        _fill_function,
    )


def reduce_module(module: types.ModuleType) -> tuple | None:
    """Modules travel by name (``None`` for dynamic ones that cannot be imported)."""
    if module.__name__ == "__main__" or getattr(module, "__spec__", None) is None:
        return None
    return (_import_module, (module.__name__,))


def _cell_value(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not assigned yet
        return _EMPTY


def _make_skeleton(
    code_bytes: bytes, globals_: dict, name: str, n_cells: int
) -> types.FunctionType:
    globals_.setdefault("__builtins__", builtins)
    cells = tuple(types.CellType() for _ in range(n_cells)) if n_cells else None
    return types.FunctionType(marshal.loads(code_bytes), globals_, name, None, cells)


def _fill_function(func: types.FunctionType, state: tuple) -> None:
    used, defaults, kwdefaults, closure, attributes, qualname, module, doc = state
    func.__globals__.update(used)
    func.__defaults__ = defaults
    func.__kwdefaults__ = kwdefaults
    for cell, value in zip(func.__closure__ or (), closure, strict=True):
        if value is not _EMPTY:
            cell.cell_contents = value
    func.__dict__.update(attributes)
    func.__qualname__ = qualname
    func.__module__ = module
    func.__doc__ = doc


def _import_module(name: str) -> types.ModuleType:
    __import__(name)
    return sys.modules[name]
