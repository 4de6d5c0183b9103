"""Plain functions by value, rebuilt in the child without importing cloudpickle.

cloudpickle can send any function, but rebuilding what it sends requires
importing cloudpickle in the child, which costs ~25 ms of a spawn child's start
(it imports typing, inspect, dataclasses and logging). Most functions sent by
value are ordinary ones defined in ``__main__``, in a notebook, or as lambdas and
closures; for those, proctor sends the marshalled code object plus everything
else cloudpickle would carry -- the globals the code uses, defaults, keyword
defaults, closure values, ``__dict__``, name, qualified name, module, docstring,
annotations (and ``__type_params__`` on Python 3.12+), and the submodules the
code reaches through a package -- and rebuilds it with this small module.
Everything else (classes defined in ``__main__``, dynamic modules...) still goes
through cloudpickle.

The pickler chooses the globals dict the rebuilt function gets (``globals_ref``):
functions of one module share one dict in the child, as they do in the parent, so
a function calling another and ``global`` statements behave alike.
"""

from __future__ import annotations

import builtins
import marshal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import types
    from typing import Any

__all__ = (
    "MODULE_ATTRIBUTES",
    "global_names",
    "importable_by_reference",
    "reduce_function",
    "reduce_module",
)

#: Module globals a rebuilt function needs for relative imports and ``__name__``,
#: copied into the dict that stands in for its module's globals.
MODULE_ATTRIBUTES = ("__name__", "__package__", "__path__", "__file__")

# Function attributes that only some Python versions have (PEP 695 generics).
_HAS_TYPE_PARAMS = sys.version_info >= (3, 12)


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


def global_names(code: types.CodeType) -> set[str]:
    """The names ``code`` (and the code nested in it) may look up as globals or attributes."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, _CodeType):
            names |= global_names(const)
    return names


def _submodules(names: set[str], values: list[Any]) -> tuple[types.ModuleType, ...]:
    """Loaded submodules the code reaches as attributes of a package it uses.

    ``import xml.etree.ElementTree`` at module level, then
    ``xml.etree.ElementTree.parse(...)`` in the function: the function's globals
    hold only ``xml``, and importing ``xml`` alone in the child would not load
    ``xml.etree``. Sending these modules (by name) makes the child import them.
    """
    found: list[types.ModuleType] = []
    todo = [value for value in values if type(value) is _ModuleType]
    while todo:
        package = todo.pop()
        if not hasattr(package, "__path__"):
            continue
        for name in names:
            submodule = sys.modules.get(f"{package.__name__}.{name}")
            if submodule is not None and not any(submodule is m for m in found):
                found.append(submodule)
                todo.append(submodule)
    return tuple(found)


def reduce_function(func: types.FunctionType, globals_ref: Any) -> tuple:
    """A pickle reduce tuple that rebuilds ``func`` from its code and state.

    Args:
        func: a plain Python function that is not importable by reference.
        globals_ref: what unpickles, in the receiver, as the dict the rebuilt
            function uses for its globals. Passing the same object for every
            function of one module (pickle memoizes it) makes them share it.
    """
    names = global_names(func.__code__)
    original = func.__globals__
    used = {name: original[name] for name in names if name in original}
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
        func.__annotations__,
        func.__type_params__ if _HAS_TYPE_PARAMS else None,  # type: ignore[attr-defined]
        _submodules(names, [*used.values(), *closure]),
    )
    return (
        _make_skeleton,
        (marshal.dumps(func.__code__), globals_ref, func.__name__, len(closure)),
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
    if n_cells:
        import types

        cells = tuple(types.CellType() for _ in range(n_cells))
    else:
        cells = None
    return _FunctionType(marshal.loads(code_bytes), globals_, name, None, cells)


def _fill_function(func: types.FunctionType, state: tuple) -> None:
    (
        used,
        defaults,
        kwdefaults,
        closure,
        attributes,
        qualname,
        module,
        doc,
        annotations,
        type_params,
        _imported,  # the submodules: imported while unpickling, their purpose
    ) = state
    # Also where the namespace is the receiver's own main script (a fork family
    # shares it): a global made after the fork (a pool started before the cell that
    # defines the data) is missing there, and comes with the function. The merge
    # overwrites none of the names that live namespace had.
    _merge_globals(func.__globals__, used)
    func.__defaults__ = defaults
    func.__kwdefaults__ = kwdefaults
    for cell, value in zip(func.__closure__ or (), closure, strict=True):
        if value is not _EMPTY:
            cell.cell_contents = value
    func.__dict__.update(attributes)
    func.__qualname__ = qualname
    func.__module__ = module
    func.__doc__ = doc
    func.__annotations__ = annotations
    if type_params is not None and _HAS_TYPE_PARAMS:
        func.__type_params__ = type_params  # type: ignore[attr-defined]


#: For each stand-in namespace of another process's main script (by id): the value
#: each global name was last given from a sender.
_received: dict[int, dict[str, Any]] = {}


def _merge_globals(namespace: dict[str, Any], used: dict[str, Any]) -> None:
    """Give ``namespace`` the sender's values of the globals a rebuilt function uses.

    In the namespace that stands in for another process's main script (shared by
    every function of that script rebuilt here), a name the receiver's own code has
    rebound since a sender last set it keeps the receiver's value: an initializer
    that sets a global is seen by the tasks sent after it, as when a spawned child
    imports the main script and the functions are named. Other names take the
    sender's value (a function redefined in a notebook, a constant). In a fork
    child's own main script the names it inherited count as its own: they keep the
    value they had at the fork (as for a function sent by name), and only names it
    lacks, or was last given by a sender, take the sender's.
    """
    if namespace.get("__name__") != "__main__":
        namespace.update(used)  # a module's stand-in, made for this one message
        return
    received = _received.setdefault(id(namespace), {})
    for name, value in used.items():
        if name not in namespace or (name in received and namespace[name] is received[name]):
            namespace[name] = value
            received[name] = value


def _import_module(name: str) -> types.ModuleType:
    __import__(name)
    return sys.modules[name]


# types.FunctionType, CodeType and ModuleType without importing types: a spawned
# child that rebuilds a function of its parent's main script needs no more of it.
_FunctionType: Any = type(_import_module)
_CodeType: Any = type(_import_module.__code__)
_ModuleType: Any = type(sys)
