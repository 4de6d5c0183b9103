"""Start payloads that need no pickle: a process object of plain data, carried by marshal.

A spawned child that unpickles its start message imports ``_pickle``, and with it
``functools``, ``collections``, ``copyreg`` and ``types``: ~13 M instructions, about a
third of what the child adds to ``python -c pass`` (issue 17). Most start messages
need none of that: no target, or a function of the main script or of a module, and
a few numbers and strings as arguments. For those the parent writes the process
object with :mod:`marshal` (built into the interpreter) instead::

    parent (dump_process)                    child (load_process)
    ─────────────────────                    ────────────────────
    Process/SpawnProcess/ForkServerProcess   the same class, by name
    its fields, every one plain data   ──▶   the same values
    target: None                             None
            a module's function/class        imported, found by name (as pickle)
            a main-script function           rebuilt as _by_value rebuilds it:
              (code, defaults, globals of         one namespace per main script,
               plain data, modules, and           remembered under its origin
               module functions by name)

*Plain data* is exactly these types, never a subclass: ``None``, ``bool``, ``int``,
``float``, ``complex``, ``str``, ``bytes``, and ``tuple``, ``list``, ``dict``, ``set``,
``frozenset`` of plain data, at most ``MAX_ITEMS`` objects in all, with no mutable
container reached twice (marshal would not keep the sharing pickle keeps). Anything
else -- a subclass, a bytearray (marshal would turn it into bytes), a closure, a
lambda, a class of the main script, a descriptor -- sends the whole payload through
pickle as before; so does a registered reducer (``reduction.register``). The check
runs in the parent, before any child exists, and cannot fail: what it accepts,
marshal writes.
"""

from __future__ import annotations

import marshal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from typing import Any

__all__ = ("MARK", "dump_plain", "dump_process", "load_plain", "load_process")

#: The first byte of a marshalled payload; a pickle's first byte is PROTO (0x80).
MARK = b"\x00"
#: marshal's format version (4 since Python 3.4, on every Python proctor runs on).
_VERSION = 4
#: Payloads with more objects than this go through pickle: the check walks every
#: one, and large data is pickle's job (out-of-band buffers, memfds).
MAX_ITEMS = 2000

_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes})
_CONTAINERS = frozenset({tuple, list, dict, set, frozenset})
_MUTABLE = frozenset({list, dict, set})
#: Process fields a child gets fresh rather than sent (as ``BaseProcess.__reduce__``).
_NOT_SENT = ("_popen", "_outcome_cache")
#: The classes whose objects travel here (no subclass of the user's): the child has
#: them loaded.
_PROCESS_MODULE = "proctor._start._process"
_CLASSES = ("Process", "SpawnProcess", "ForkServerProcess")


class _NotPlain(Exception):
    pass


def _check(obj: Any, budget: list[int], seen: set[int]) -> None:
    """Raise ``_NotPlain`` unless ``obj`` is plain data (see the module docstring)."""
    todo = [obj]
    while todo:
        item = todo.pop()
        kind = type(item)
        budget[0] -= 1
        if budget[0] < 0:
            raise _NotPlain
        if kind in _ATOMS:
            continue
        if kind not in _CONTAINERS:
            raise _NotPlain
        if kind in _MUTABLE:
            if id(item) in seen:
                raise _NotPlain
            seen.add(id(item))
        if kind is dict:
            todo.extend(item)
            todo.extend(item.values())
        else:
            todo.extend(item)


_FUNCTION = type(_check)
_BUILTIN = type(len)
_MODULE = type(sys)
#: What pickle saves by name when its module has it under its qualified name:
#: functions and builtins (``print``, ``os.getpid``); classes are checked apart.
_NAMED_KINDS = frozenset({_FUNCTION, _BUILTIN})
_PLAIN_KINDS = _ATOMS | _CONTAINERS


def _by_name(obj: Any) -> tuple[str, str] | None:
    """(module, qualname) when pickle would send ``obj`` by reference, else None."""
    from .._core._by_value import importable_by_reference

    if (type(obj) in _NAMED_KINDS or isinstance(obj, type)) and importable_by_reference(obj):
        return (obj.__module__, obj.__qualname__)
    return None


class _Functions:
    """The main-script functions a payload carries, each once: the target first, then
    the ones their globals name (a helper it calls, itself when it recurses)."""

    def __init__(self, budget: list[int], seen: set[int]) -> None:
        self.records: list[tuple | None] = []
        self._index: dict[int, int] = {}
        self._budget = budget
        self._seen = seen

    def add(self, func: Any) -> int:
        index = self._index.get(id(func))
        if index is None:
            index = self._index[id(func)] = len(self.records)
            self.records.append(None)  # taken before its globals, which may name it
            self.records[index] = _main_function(func, self)
        return index

    def global_(self, value: Any) -> tuple:
        """One global a main-script function uses: plain data, a module, a name, or
        another main-script function."""
        if type(value) is _MODULE:
            from .._core._by_value import reduce_module

            if reduce_module(value) is None:
                raise _NotPlain
            return ("m", value.__name__)
        if type(value) is _FUNCTION and value.__module__ == "__main__":
            return ("f", self.add(value))
        named = _by_name(value) if type(value) not in _PLAIN_KINDS else None
        if named is not None:
            return ("n", *named)
        self.check(value)
        return ("v", value)

    def check(self, value: Any) -> None:
        _check(value, self._budget, self._seen)


def _namespace_token(globals_: dict[str, Any]) -> bytes:
    """The token of the main script whose namespace ``globals_`` is (as ``_pickler``)."""
    from .._core import _rebuilding, _runtime

    main = sys.modules.get("__main__")
    if main is not None and globals_ is main.__dict__:
        return _runtime.MAIN_SCRIPT_TOKEN
    token = _rebuilding._namespace_tokens.get(id(globals_))
    if token is None:
        raise _NotPlain  # a stand-in for a module's globals: pickle's job
    return token


def _main_function(func: Any, functions: _Functions) -> tuple:
    """A main-script function as ``_by_value`` would carry it, or ``_NotPlain``."""
    from .._core import _by_value, _pickler

    origin = _pickler._origin(func)
    if origin is None or func.__closure__ or func.__dict__:
        raise _NotPlain
    if getattr(func, "__type_params__", ()):
        raise _NotPlain
    original = func.__globals__
    token = _namespace_token(original)
    names = _by_value.global_names(func.__code__)
    used = {name: original[name] for name in names if name in original}
    if _by_value._submodules(names, list(used.values())):
        raise _NotPlain
    globals_ = tuple((name, *functions.global_(value)) for name, value in used.items())
    attributes = {k: original[k] for k in _by_value.MODULE_ATTRIBUTES if k in original}
    annotations = []
    for name, value in func.__annotations__.items():
        if isinstance(value, type) and _by_name(value) == ("builtins", value.__qualname__):
            annotations.append((name, "n", value.__qualname__))
        else:
            functions.check(value)
            annotations.append((name, "v", value))
    plain = (attributes, func.__defaults__, func.__kwdefaults__, func.__doc__)
    functions.check(plain)
    code = marshal.dumps(func.__code__, _VERSION)
    return (origin, token, code, func.__name__, globals_, tuple(annotations), *plain)


def dump_plain(obj: Any) -> bytes | None:
    """``obj`` marshalled after ``MARK`` when it is plain data, else ``None``."""
    try:
        _check(obj, [MAX_ITEMS], set())
    except _NotPlain:
        return None
    return MARK + marshal.dumps(obj, _VERSION)


def dump_process(process: Any) -> bytes | None:
    """``process`` marshalled for a new child, or ``None`` when it needs pickle."""
    from .._core._reduction import registered_reducers

    kind = type(process)
    if kind.__module__ != _PROCESS_MODULE or kind.__qualname__ not in _CLASSES:
        return None
    if _by_name(kind) is None:
        return None
    if registered_reducers:
        return None  # the user's reducers decide how their objects travel
    fields = {k: v for k, v in process.__dict__.items() if k not in _NOT_SENT}
    if "_authkey" in fields:
        # An AuthenticationString, a bytes subclass: made again in the child.
        fields["_authkey"] = bytes(fields["_authkey"])
    target = fields.pop("_target", None)
    budget, seen = [MAX_ITEMS], set[int]()
    try:
        _check(fields, budget, seen)
        if target is None:
            sent: tuple | None = None
        elif type(target) is _FUNCTION and target.__module__ == "__main__":
            functions = _Functions(budget, seen)
            functions.add(target)  # index 0
            sent = ("main", tuple(functions.records))
        else:
            named = _by_name(target)
            if named is None:
                return None
            sent = ("n", *named)
    except _NotPlain:
        return None
    return MARK + marshal.dumps((kind.__qualname__, fields, sent), _VERSION)


# -- the child's side -------------------------------------------------------------------


def _find(module: str, qualname: str) -> Any:
    """What pickle's ``find_class`` returns for a reference."""
    __import__(module)
    found: Any = sys.modules[module]
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _rebuild_main_functions(records: tuple) -> list[Any]:
    """What unpickling ``_pickler``'s by-value reductions of the functions makes."""
    from .._core import _by_value, _rebuilding

    # Every skeleton first, remembered under its origin: globals may name any of them.
    made = []
    for origin, token, code, name, _, _, attributes, *_ in records:
        namespace = _rebuilding._main_namespace(token, attributes)
        made.append(
            _rebuilding._rebuild(origin, _by_value._make_skeleton, (code, namespace, name, 0))
        )
    for func, (origin, _, _, _, globals_, hinted, _, *rest) in zip(made, records, strict=True):
        defaults, kwdefaults, doc = rest
        used = {}
        for key, how, *value in globals_:
            if how == "m":
                __import__(value[0])
                used[key] = sys.modules[value[0]]
            elif how == "n":
                used[key] = _find(*value)
            elif how == "f":
                used[key] = made[value[0]]
            else:
                used[key] = value[0]
        hints = {
            key: _find("builtins", value) if how == "n" else value for key, how, value in hinted
        }
        # _by_value.reduce_function's state: no closure, no attributes, no type params.
        qualname = origin[1]
        state: tuple = (used, defaults, kwdefaults, (), {}, qualname, "__main__", doc, hints)
        _by_value._fill_function(func, (*state, None, ()))
    return made


def load_plain(data: bytes | memoryview) -> Any:
    """What :func:`dump_plain` wrote."""
    return marshal.loads(data[len(MARK) :])


def load_process(data: bytes | memoryview) -> Any:
    """Rebuild the process object :func:`dump_process` wrote (after ``MARK``)."""
    class_name, fields, sent = marshal.loads(data[len(MARK) :])
    if sent is None:
        target = None
    elif sent[0] == "n":
        target = _find(sent[1], sent[2])
    else:
        target = _rebuild_main_functions(sent[1])[0]
    fields["_target"] = target
    # Found by name, as the pickle of BaseProcess.__reduce__ names them: _process
    # imports the start methods, which import this module.
    if "_authkey" in fields:
        fields["_authkey"] = _find(_PROCESS_MODULE, "AuthenticationString")(fields["_authkey"])
    rebuild = _find(_PROCESS_MODULE, "_rebuild_process")
    return rebuild(_find(_PROCESS_MODULE, class_name), fields)
