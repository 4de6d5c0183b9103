"""The exact pass of pickling: what the receiver cannot name, and objects of the main script.

``_serialization`` pickles with plain :mod:`pickle` first and comes here only when
that fails or the pickle mentions ``__main__`` (see its docstring). Receivers never
import it: what they call to rebuild objects of another main script is in
``_rebuilding``, which costs a spawned child nothing it has not loaded anyway.

Who can name what
=================
A class or function defined in the main script can be named by the processes that
share that script: the parent and its fork children (copies of it). A spawn or
forkserver child does not run the parent's main script (docs/processes.md), so
``__main__.Point`` names nothing there. Such objects therefore travel as *main
references*, which carry the object by value as a fallback::

    sender                                   receiver
    ──────                                   ────────
    Point, defined in __main__               1. same main script (same token): its
      ──▶ (token, "Point", serial,   ──▶        own __main__.Point, found by name as
           Point by value)                      plain pickle would; the value is not
                                                even unpickled
                                             2. else, if it rebuilt this origin
                                                (token, "Point", serial) before:
                                                that same object again
                                             3. else: rebuilt from the value and
                                                remembered under its origin

The token names one main script: random, drawn when proctor is imported, and
inherited by fork children along with the script itself. The serial tells apart
two versions of one name (a notebook cell run twice): it is the object's id in the
process whose script defined it, which keeps every object it sent alive so that the
id stays unique. A process that sends an object it rebuilt sends the object's
origin, not its own token, so a ``Point`` that a spawn child sends back arrives in
the parent as the parent's own ``Point``: ``isinstance``, ``except MyError:`` and
enum identity hold in every direction, and every ``Point`` one process receives is
of one class. Functions of one main script rebuilt in a receiver share one
namespace there, as they share one module in the sender.

When the value is made
======================
The value is what the object holds when it is pickled: a function's code, defaults
and closure, and the current values of the globals it uses (their contents too); a
class's attributes and methods. Where it is reused decides which sends see a change
(a global rebound or mutated in place):

* a child being started: made at each start, inline (never reused: a child gets the
  globals as they are at its start, and descriptors may ride along);
* a pool's or an executor's tasks (function and arguments): made at the first send
  *in that pool* and reused by it (its codec passes its own ``values`` dict), so a
  new pool sees the globals as they are then;
* other messages: made at the first send in this process and reused
  (``_VALUES``), unless large (``VALUE_CACHE_LIMIT``) or carrying descriptors.

A receiver rebuilds an object once, from the first value it gets: the class
attributes and the values of a function's globals as they were then.
"""

from __future__ import annotations

import functools
import io
import pickle
import sys
import types

from . import _by_value as _functions
from . import _rebuilding, _runtime
from ._rebuilding import _main_namespace, _main_object, _rebuild, lookup
from ._reduction import add_socket_reducer, collecting, current_handoff, reducers

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from collections.abc import Callable
    from typing import Any

__all__ = ("dump_exact", "dump_for_child")

add_socket_reducer()  # sockets travel as descriptors through these picklers too

# The same protocol as _serialization.PROTOCOL (which imports this module lazily).
PROTOCOL = pickle.HIGHEST_PROTOCOL

#: By-value bytes of a main-script object up to this size are kept for its next
#: sends; larger ones (a function whose globals hold big data) are made each time
#: rather than pinned in memory.
VALUE_CACHE_LIMIT = 64 * 1024

# Identifies this process's main script (drawn when proctor is imported: _runtime).
_TOKEN = _runtime.MAIN_SCRIPT_TOKEN

Origin = _rebuilding.Origin

# Sender side: the objects of this process's main script sent so far, by id (kept
# alive so that their ids, the serials, stay unique), and the by-value bytes (or why
# there are none) reused by messages sent outside a pool, by id. (What this process
# rebuilt from other scripts is _rebuilding's; an object rebuilt there is sent on
# under its origin, and kept alive there.)
_sent: dict[int, Any] = {}
_VALUES: dict[int, bytes | str] = {}

# Failures that mean "this object cannot be pickled" (AttributeError: plain pickle
# of a local object before Python 3.14). Anything else -- a RuntimeError from an
# object that refuses to travel outside a start, say -- propagates as it is.
_PICKLING_FAILURES = (TypeError, pickle.PicklingError, AttributeError)


def dump_exact(
    obj: Any,
    buffer_callback: Callable[[], Any] | None = None,
    values: dict[int, bytes | str] | None = None,
) -> bytes:
    """The exact passes: main references, and by value what the receiver cannot name.

    Args:
        obj: what to pickle.
        buffer_callback: makes a fresh pickle ``buffer_callback`` for each attempt
            (one that takes large buffers out of band), or ``None``.
        values: where the by-value bytes of main-script objects are reused from and
            kept (a pool's own dict); ``None`` for this process's (see the module
            docstring, "When the value is made").

    Raises:
        PicklingError: naming the part of ``obj`` that cannot be pickled.
    """
    if values is None:
        values = _VALUES
    try:
        return _dump_exact(obj, buffer_callback, values=values)
    except _PICKLING_FAILURES as exc:
        from ._culprit import describe, pickling_error

        attempt = functools.partial(_dump_exact, values=values)
        raise pickling_error(obj, exc, describe(obj), attempt) from exc


def _dump_exact(
    obj: Any,
    buffer_callback: Callable[[], Any] | None = None,
    *,
    root: Any = None,
    ancestors: tuple = (),
    values: dict[int, bytes | str],
) -> bytes:
    """Pickle with :class:`_Pickler`, or when it cannot, with cloudpickle's pickler."""
    if not isinstance(root, type):  # classes by value need cloudpickle
        buffer = io.BytesIO()
        callback = None if buffer_callback is None else buffer_callback()
        try:
            _Pickler(buffer, PROTOCOL, callback, root, ancestors, values).dump(obj)
            return buffer.getvalue()
        except RecursionError:
            pass
        except RuntimeError:
            raise  # an object that refuses to travel this way: cloudpickle would too
        except Exception:
            pass
    buffer = io.BytesIO()
    callback = None if buffer_callback is None else buffer_callback()
    _child_pickler_class()(buffer, PROTOCOL, callback, root, ancestors, values).dump(obj)
    return buffer.getvalue()


def dump_for_child(obj: Any) -> bytes:
    """Pickle a process object for a spawn or forkserver child (cloudpickle-based)."""
    buffer = io.BytesIO()
    _child_pickler_class()(buffer, PROTOCOL).dump(obj)
    return buffer.getvalue()


# -- main references --------------------------------------------------------------------


def _origin(obj: Any) -> Origin | None:
    """Where ``obj`` comes from, if it belongs to a main script."""
    origin = _rebuilding._origins.get(id(obj))
    if origin is not None and _rebuilding._rebuilt.get(origin) is obj:
        return origin
    if getattr(obj, "__module__", None) != "__main__":
        return None
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(qualname, str) or "<" in qualname:
        return None  # defined in a function, or a lambda: no name to find it by
    main = sys.modules.get("__main__")
    if main is None or lookup(main, qualname) is not obj:
        return None
    _sent.setdefault(id(obj), obj)
    return (_TOKEN, qualname, id(obj))


class _NamespaceRef:
    """Pickles as the receiver's namespace for one main script's functions."""

    def __init__(self, token: bytes, attributes: dict[str, Any]) -> None:
        self.token = token
        self.attributes = attributes

    def __reduce__(self) -> tuple:
        return (_main_namespace, (self.token, self.attributes))


# -- the picklers -----------------------------------------------------------------------


def _refuse_file(obj: Any) -> None:
    # cloudpickle would send the file's current content as a StringIO: the
    # receiver's writes would "succeed" and vanish.
    details = ", ".join(
        f"{attr} {getattr(obj, attr)!r}" for attr in ("name", "mode") if hasattr(obj, attr)
    )
    raise TypeError(
        f"cannot pickle '_io.TextIOWrapper' object ({details}): an open file belongs "
        "to this process; pass its path and open it in the receiver"
    )


def _refuse_memoryview(obj: memoryview) -> None:
    if type(obj.obj) is bytes:
        return  # a copy of immutable bytes is the same thing
    # Over a bytearray, an mmap or shared memory: a copy would not see writes.
    raise TypeError(
        f"cannot pickle 'memoryview' object over a mutable {type(obj.obj).__qualname__}: "
        "the receiver would get a copy that does not share writes. Send bytes(view) "
        "for a copy, or use shared memory (proctor.shared_memory) to share it"
    )


# OS resources that cloudpickle would turn into silent copies, by exact type (as
# cloudpickle dispatches; plain pickle refuses them and their subclasses).
_REFUSED: dict[type, Callable[[Any], None]] = {
    io.TextIOWrapper: _refuse_file,
    memoryview: _refuse_memoryview,
}


class _Reducers:
    """What both picklers do beyond plain pickle (a mixin over a C ``pickle.Pickler``)."""

    def _setup(self, root: Any, ancestors: tuple, values: dict[int, bytes | str] | None) -> None:
        # root: the object this pickler sends by value, inside a main reference;
        # ancestors: the objects being sent so by enclosing picklers; values:
        # where by-value bytes are reused from and kept.
        self._root = root
        self._ancestors = ancestors
        self._values = _VALUES if values is None else values
        self._stand_ins: dict[int, Any] = {}
        # A spawn or forkserver child being started has another main script
        # and has rebuilt nothing yet: objects of the main script go to it by
        # value, inline, as they are now (never from the cache, where the
        # descriptors collected for it must not end up either).
        self._starting = current_handoff() is not None
        # Descriptors are being collected (a start, a message that carries some):
        # a by-value copy may name them by token, good for this pickle only, so
        # none is taken from the cache or put in it.
        self._fresh = collecting()

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is types.MethodType:
            by_name = _method_by_name(obj)
            if by_name is not None:
                return by_name
        if kind is types.FunctionType:
            if _functions.importable_by_reference(obj):
                return NotImplemented
            origin = _origin(obj)
            if origin is None or self._is_member(obj):
                return _functions.reduce_function(obj, self._globals_ref(obj.__globals__))
            if obj is self._root or self._starting:
                reduced = _functions.reduce_function(obj, self._globals_ref(obj.__globals__))
                return self._remembered(origin, reduced)
            return self._main_reference(obj, origin)
        if isinstance(obj, type):
            origin = _origin(obj)
            if origin is None:
                return self._other(obj)
            if obj is self._root or self._starting:
                return self._remembered(origin, self._class_by_value(obj))
            return self._main_reference(obj, origin)
        if kind is types.ModuleType:
            by_name = _functions.reduce_module(obj)
            return by_name if by_name is not None else self._other(obj)
        refuse = _REFUSED.get(kind)
        if refuse is not None:
            refuse(obj)
        reduce = reducers.get(kind)
        if reduce is not None:
            # Sockets, and the reducers of reduction.register().
            return reduce(obj)
        return self._other(obj)

    def _other(self, obj: Any) -> Any:
        return NotImplemented

    def _class_by_value(self, cls: type) -> tuple:
        raise pickle.PicklingError("classes are sent by value with cloudpickle")

    @staticmethod
    def _remembered(origin: Origin, reduced: tuple) -> tuple:
        """``reduced``, with its object remembered under ``origin`` as soon as it exists."""
        make, args, *rest = reduced
        return (_rebuild, (origin, make, args), *rest)

    def _is_member(self, func: types.FunctionType) -> bool:
        """Whether ``func`` is a method of the class being sent by value here."""
        root = self._root
        return isinstance(root, type) and func.__qualname__.startswith(root.__qualname__ + ".")

    def _main_reference(self, obj: Any, origin: Origin) -> tuple:
        if any(obj is ancestor for ancestor in self._ancestors):
            # Being sent by value further out: the receiver will have rebuilt it.
            return (_main_object, (*origin, None))
        values = self._values
        value = None if self._fresh else values.get(id(obj))
        if value is None:
            ancestors = (*self._ancestors, self._root) if self._root is not None else ()
            try:
                value = _dump_exact(obj, root=obj, ancestors=ancestors, values=values)
            except Exception as exc:
                # As with plain pickle, the process's fork relatives can still
                # take it by name; anyone else will say why they cannot.
                value = f"{type(exc).__name__}: {exc}"
            if not ancestors and not self._fresh and len(value) <= VALUE_CACHE_LIMIT:
                # Complete in itself (it refers to no ancestor by reference
                # only), so it can stand anywhere. Its object is kept alive
                # (_sent, _rebuilt): the id stays its own.
                values[id(obj)] = value
        return (_main_object, (*origin, value))

    def _globals_ref(self, globals_: dict[str, Any]) -> Any:
        """What the receiver uses as the globals of a function that had ``globals_``."""
        ref = self._stand_ins.get(id(globals_))
        if ref is None:
            attributes = {k: globals_[k] for k in _functions.MODULE_ATTRIBUTES if k in globals_}
            main = sys.modules.get("__main__")
            if main is not None and globals_ is main.__dict__:
                ref = _NamespaceRef(_TOKEN, attributes)
            elif id(globals_) in _rebuilding._namespace_tokens:
                ref = _NamespaceRef(_rebuilding._namespace_tokens[id(globals_)], attributes)
            else:
                ref = attributes  # one dict for every function of that module
            self._stand_ins[id(globals_)] = ref
        return ref


def _method_by_name(method: types.MethodType) -> tuple | None:
    """``getattr(instance, name)``, plain pickle's reduction of a bound method, when exact.

    cloudpickle reduces a bound method to ``MethodType(function, instance)`` and names
    ``MethodType`` through its own module, which the receiver must then import (~25 ms of
    CPU in each spawn or forkserver child whose target is a method, ``q.get`` say). By name
    it rebuilds the same bound method when the instance's class holds that very function
    under that name and the instance does not shadow it; otherwise ``None`` (cloudpickle's way).
    """
    instance = method.__self__
    function = method.__func__
    name = getattr(function, "__name__", None)
    if not isinstance(name, str) or isinstance(instance, type):
        return None
    if _class_attribute(type(instance), name) is not function:
        return None
    if name in getattr(instance, "__dict__", ()):
        return None
    return (getattr, (instance, name))


def _class_attribute(cls: type, name: str) -> Any:
    """``name`` as found on ``cls`` or its bases, without running descriptors."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


class _Pickler(_Reducers, pickle.Pickler):
    """Plain pickle plus :class:`_Reducers`: no cloudpickle needed on either side."""

    def __init__(
        self,
        file: Any,
        protocol: int,
        buffer_callback: Any = None,
        root: Any = None,
        ancestors: tuple = (),
        values: dict[int, bytes | str] | None = None,
    ) -> None:
        super().__init__(file, protocol, buffer_callback=buffer_callback)
        self._setup(root, ancestors, values)


_child_pickler: Any = None


def _child_pickler_class() -> Any:
    """cloudpickle's pickler, with :class:`_Reducers` taking precedence."""
    global _child_pickler
    if _child_pickler is None:
        cloudpickle = _cloudpickle()

        # The base class is only known at run time (cloudpickle is imported lazily).
        class ChildPickler(_Reducers, _cloudpickle().CloudPickler):  # type: ignore[misc]
            def __init__(
                self,
                file: Any,
                protocol: int,
                buffer_callback: Any = None,
                root: Any = None,
                ancestors: tuple = (),
                values: dict[int, bytes | str] | None = None,
            ) -> None:
                super().__init__(file, protocol=protocol, buffer_callback=buffer_callback)
                self._setup(root, ancestors, values)

            def _other(self, obj: Any) -> Any:
                return cloudpickle.CloudPickler.reducer_override(self, obj)

            def _class_by_value(self, cls: type) -> tuple:
                make, args, *rest = cloudpickle.cloudpickle._dynamic_class_reduce(cls)
                # cloudpickle's own class tracking would hand a receiver that
                # knows the tracker id the class it has -- after overwriting its
                # methods with the copies. The origins do that job here, and
                # never rewrite a class.
                tracker = cloudpickle.cloudpickle._get_or_create_tracker_id(cls)
                args = tuple(None if isinstance(a, str) and a == tracker else a for a in args)
                return (make, args, *rest)

        _child_pickler = ChildPickler
    return _child_pickler


def _cloudpickle() -> Any:
    # Imported on first use: most programs never need it, and it is not free.
    import cloudpickle  # type: ignore[import-untyped]  # ships no type information

    return cloudpickle
