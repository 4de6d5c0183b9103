"""``Value``, ``Array``, ``RawValue``, ``RawArray``: ctypes objects in shared memory.

The ``multiprocessing.sharedctypes`` API, on proctor's anonymous shared memory
(``_anonmem``) and proctor's locks::

    Value("i", 0)                     child (any start method)
      allocate(4) ─▶ (arena, offset)   ┌───────────────────────────────────┐
      c_int.from_buffer(arena, offset) │ fork:  the same objects, inherited│
      + RLock ─▶ Synchronized ─ pickle ┤ spawn: arena fd (SCM_RIGHTS) +    │
                                       │        offset ─▶ from_buffer again│
                                       └───────────────────────────────────┘

The ctypes object is an instance of a private subclass of the requested type
(``c_int``, ``c_double * 10``, a ``Structure``), which pickles by reference to its
memory instead of by value. Values and items read from it are plain Python
objects, as with the stdlib.

They reach a child as ``Process`` arguments (inheritance), and, unlike the
stdlib's, any process in a proctor message too (``Connection.send()`` through a
Unix socket, a proctor ``Queue``, a proctor ``Pool``'s tasks and results): the
memory's descriptor travels beside the pickle. A plain pickle (a file) raises
``RuntimeError``; use ``proctor.shared_memory.SharedMemory`` to share memory by
name there.
"""

from __future__ import annotations

import ctypes

from .._core import _anonmem, _reduction
from .._core._integers import integral

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (with re and enum) costs a spawned child given a Value ~5 ms
    from typing import Any, TypeAlias

    #: What RawValue/RawArray return: a plain ctypes object, array or structure whose
    #: memory is shared.
    CData: TypeAlias = "ctypes._SimpleCData[Any] | ctypes.Array[Any] | ctypes.Structure"

__all__ = ("Array", "NotALockError", "RawArray", "RawValue", "Value", "copy", "synchronized")

#: The stdlib's typecodes (the ``array`` module's) and their ctypes.
TYPECODES: dict[str, type] = {
    "c": ctypes.c_char,
    "u": ctypes.c_wchar,
    "b": ctypes.c_byte,
    "B": ctypes.c_ubyte,
    "h": ctypes.c_short,
    "H": ctypes.c_ushort,
    "i": ctypes.c_int,
    "I": ctypes.c_uint,
    "l": ctypes.c_long,
    "L": ctypes.c_ulong,
    "q": ctypes.c_longlong,
    "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float,
    "d": ctypes.c_double,
}

_CTYPES_BASES = (ctypes._SimpleCData, ctypes.Structure, ctypes.Union, ctypes.Array)


def _ctype(typecode_or_type: Any) -> type[Any]:
    if isinstance(typecode_or_type, str):
        try:
            return TYPECODES[typecode_or_type]
        except KeyError:
            # TypeError, as multiprocessing raises ("this type has no size").
            raise TypeError(
                f"unknown typecode {typecode_or_type!r}: use one of "
                f"{', '.join(map(repr, TYPECODES))} or a ctypes type such as "
                "ctypes.c_double"
            ) from None
    if isinstance(typecode_or_type, type) and issubclass(typecode_or_type, _CTYPES_BASES):
        return typecode_or_type
    raise TypeError(
        "typecode_or_type must be a typecode string such as 'i' or a ctypes type, "
        f"not {typecode_or_type!r}"
    )


# ─── raw objects ─────────────────────────────────────────────────────────────

_shared_types: dict[type, type[Any]] = {}


def _shared_type(type_: type) -> type[Any]:
    """The subclass of ``type_`` whose instances pickle by reference to shared memory."""
    shared = _shared_types.get(type_)
    if shared is None:
        namespace: dict[str, Any] = {
            "__reduce__": _reduce_ctype,
            "__module__": type_.__module__,
            "__qualname__": type_.__qualname__,
        }
        if issubclass(type_, ctypes._SimpleCData):
            # ctypes shows "c_int(5)" only for the exact type; keep the stdlib's repr.
            namespace["__repr__"] = lambda self: f"{type_.__name__}({self.value!r})"
        shared = type(type_.__name__, (type_,), namespace)
        _shared_types[type_] = shared
    return shared


def _encode_type(type_: type[Any]) -> Any:
    # ctypes array types (c_int * 10) have no importable name; describe them.
    if issubclass(type_, ctypes.Array):
        # typeshed declares _type_ as an instance property; on the class it is the item type.
        return ("array", _encode_type(type_._type_), type_._length_)  # type: ignore[arg-type]
    if issubclass(type_, (ctypes.Structure, ctypes.Union)) and type_.__module__ == "__main__":
        # A spawn or forkserver child does not run the main script (the stdlib's
        # imports it again), and a ctypes class cannot be pickled by value (its
        # fields are CField descriptors): describe its layout instead.
        return _encode_record_type(type_)
    return type_


def _encode_record_type(type_: type[Any]) -> tuple[Any, ...]:
    """A main-script Structure or Union as its name, base and layout (fields, packing)."""
    base = _encode_type(type_.__bases__[0])  # (a main-script base: described too)
    fields = tuple(
        (field[0], _encode_type(field[1]), *field[2:]) for field in type_.__dict__["_fields_"]
    )
    extras = tuple(
        (name, tuple(value) if isinstance(value, list) else value)  # (hashable: a cache key)
        for name, value in type_.__dict__.items()
        if name in ("_pack_", "_anonymous_", "_align_", "_layout_")
    )
    return ("record", type_.__qualname__, base, fields, extras)


# Main-script record types rebuilt in this process, by their description: one
# class each, so that two objects of the same type have the same type here too.
_rebuilt_records: dict[tuple[Any, ...], type] = {}


def _decode_type(encoded: Any) -> type:
    if isinstance(encoded, tuple):
        if encoded[0] == "record":
            return _decode_record_type(encoded)
        _, item, length = encoded
        return _decode_type(item) * length
    return encoded


def _decode_record_type(encoded: tuple[Any, ...]) -> type:
    rebuilt = _rebuilt_records.get(encoded)
    if rebuilt is None:
        _, qualname, encoded_base, fields, extras = encoded
        base = _decode_type(encoded_base)
        namespace: dict[str, Any] = dict(extras)  # (before _fields_: they shape its layout)
        namespace["_fields_"] = [(f[0], _decode_type(f[1]), *f[2:]) for f in fields]
        namespace["__module__"] = "__main__"
        namespace["__qualname__"] = qualname
        rebuilt = type(base)(qualname.rpartition(".")[2], (base,), namespace)
        _rebuilt_records[encoded] = rebuilt
    return rebuilt


def _new(type_: type) -> Any:
    memory, offset = _anonmem.allocate(ctypes.sizeof(type_))
    return _at(type_, memory, offset)


def _at(type_: type, memory: _anonmem.AnonymousMemory, offset: int) -> Any:
    obj = _shared_type(type_).from_buffer(memory, offset)
    obj._proctor_block = (type_, memory, offset)
    return obj


def _reduce_ctype(obj: Any):
    _reduction.need_carrier(
        f"shared ctypes object {obj!r}",
        f"shared ctypes object {obj!r} (from Value/Array/RawValue/RawArray) can only "
        "reach another process as an argument of Process(...), or in a proctor message "
        "(Connection.send() through a Unix socket, a proctor Queue, a proctor Pool's task "
        "arguments and results); it cannot be pickled into a file or with plain pickle. "
        "Use proctor.shared_memory.SharedMemory to share memory by name instead.",
    )
    type_, memory, offset = obj._proctor_block
    return (_rebuild_ctype, (_encode_type(type_), memory, offset))


def _rebuild_ctype(encoded: Any, memory: _anonmem.AnonymousMemory, offset: int) -> Any:
    return _at(_decode_type(encoded), memory, offset)


def RawValue(typecode_or_type: Any, *args: Any) -> CData:
    """Return a ctypes object in shared memory, with no lock.

    Args:
        typecode_or_type: an ``array``-module typecode (``"i"``, ``"d"``...) or a
            ctypes type (including a ``Structure``).
        *args: passed to the type's constructor; none leaves it zeroed.

    Raises:
        TypeError: for an unknown typecode, or something that is neither a
            typecode nor a ctypes type.
    """
    type_ = _ctype(typecode_or_type)
    obj = _new(type_)
    if args:
        obj.__init__(*args)
    return obj


def RawArray(typecode_or_type: Any, size_or_initializer: Any) -> CData:
    """Return a ctypes array in shared memory, with no lock.

    Args:
        typecode_or_type: the item type, as for :func:`RawValue`.
        size_or_initializer: the length (zero-filled), or a sequence of initial items.

    Raises:
        ValueError: for a negative size.
        TypeError: for an unknown typecode, or a size that is neither an int
            nor a sequence.
    """
    type_ = _ctype(typecode_or_type)
    size_or_initializer = integral(size_or_initializer)
    if isinstance(size_or_initializer, int) and not isinstance(size_or_initializer, bool):
        if size_or_initializer < 0:
            raise ValueError(f"array size must not be negative, got {size_or_initializer!r}")
        return _new(type_ * size_or_initializer)
    try:
        items = list(size_or_initializer)
    except TypeError:
        raise TypeError(
            "size_or_initializer must be an int or a sequence of items, not "
            f"{type(size_or_initializer).__name__}: {size_or_initializer!r}"
        ) from None
    obj = _new(type_ * len(items))
    obj.__init__(*items)
    return obj


def copy(obj: Any) -> Any:
    """Return a new shared ctypes object holding a copy of ``obj``'s bytes."""
    block = getattr(obj, "_proctor_block", None)
    new = _new(block[0] if block else type(obj))
    ctypes.memmove(ctypes.addressof(new), ctypes.addressof(obj), ctypes.sizeof(new))
    return new


# ─── synchronized wrappers ───────────────────────────────────────────────────


class NotALockError(TypeError, AttributeError):
    """``Value``/``Array``/``synchronized`` got a ``lock`` without ``acquire``/``release``.

    A ``TypeError`` (the argument has the wrong type) and an ``AttributeError``,
    which is what ``multiprocessing`` raises there (it reads ``lock.acquire``), so
    ``except`` clauses written for either keep working.
    """


def _default_lock(ctx: Any) -> Any:
    if ctx is not None:
        return ctx.RLock()
    # Imported here: the lock module is only needed once a Value is made.
    from .._sync import RLock

    return RLock()


def Value(
    typecode_or_type: Any, *args: Any, lock: Any = True, ctx: Any = None
) -> SynchronizedBase | CData:
    """Return a shared ctypes object, guarded by a lock unless ``lock=False``.

    Args:
        typecode_or_type: an ``array``-module typecode or a ctypes type.
        *args: passed to the type's constructor.
        lock: ``True``/``None`` for a new proctor ``RLock``, ``False`` for the raw
            object (as :func:`RawValue`), or a lock object to use.
        ctx: the context whose ``RLock`` to create (defaults to proctor's).

    Returns:
        A wrapper with ``.value``, ``get_lock()``, ``get_obj()``, usable as a
        context manager that holds the lock.

    Raises:
        TypeError: for an unknown typecode or type.
        NotALockError: (a ``TypeError`` and an ``AttributeError``, which
            ``multiprocessing`` raises) for a ``lock`` without ``acquire``/``release``.
    """
    obj = RawValue(typecode_or_type, *args)
    if lock is False:
        return obj
    if lock is True or lock is None:
        lock = _default_lock(ctx)
    return synchronized(obj, lock)


def Array(
    typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True, ctx: Any = None
) -> SynchronizedBase | CData:
    """Return a shared ctypes array, guarded by a lock unless ``lock=False``.

    Args and raises as for :func:`RawArray` and :func:`Value`. The wrapper
    supports ``len()``, indexing, slicing, ``get_lock()`` and ``get_obj()``;
    arrays of ``"c"`` also have ``.value`` and ``.raw``.
    """
    obj = RawArray(typecode_or_type, size_or_initializer)
    if lock is False:
        return obj
    if lock is True or lock is None:
        lock = _default_lock(ctx)
    return synchronized(obj, lock)


def synchronized(obj: Any, lock: Any = None, ctx: Any = None) -> SynchronizedBase:
    """Wrap a shared ctypes object so that each access holds ``lock``.

    ``lock`` None or False (as ``multiprocessing`` takes any false value): a new RLock.

    Raises:
        NotALockError: (a ``TypeError`` and an ``AttributeError``) ``lock`` has no
            ``acquire``/``release`` methods.
    """
    if lock is None or lock is False:
        lock = _default_lock(ctx)
    if not (hasattr(lock, "acquire") and hasattr(lock, "release")):
        raise NotALockError(
            "lock must be a lock (an object with acquire() and release() methods), not "
            f"{type(lock).__name__}: {lock!r}; pass None for a new RLock"
        )
    if isinstance(obj, ctypes._SimpleCData):
        return Synchronized(obj, lock)
    if isinstance(obj, ctypes.Array):
        if obj._type_ is ctypes.c_char:
            return SynchronizedString(obj, lock)
        return SynchronizedArray(obj, lock)
    # A Structure or Union: the type asked for, not proctor's subclass of it.
    block = getattr(obj, "_proctor_block", None)
    return _structure_wrapper(block[0] if block else type(obj))(obj, lock)


class SynchronizedBase:
    """A shared ctypes object and the lock that guards it."""

    def __init__(self, obj: Any, lock: Any) -> None:
        self._obj = obj
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release

    def __enter__(self) -> Any:
        return self._lock.__enter__()

    def __exit__(self, *exc_info: Any) -> Any:
        return self._lock.__exit__(*exc_info)

    def __reduce__(self):
        return (synchronized, (self._obj, self._lock))

    def get_obj(self) -> Any:
        """The raw ctypes object (accessing it does not take the lock)."""
        return self._obj

    def get_lock(self) -> Any:
        """The lock that guards the object."""
        return self._lock

    def __repr__(self) -> str:
        return f"<{type(self).__name__} wrapper for {self._obj!r}>"


class Synchronized(SynchronizedBase):
    """A shared scalar; ``.value`` reads and writes under the lock."""

    @property
    def value(self) -> Any:
        with self._lock:
            return self._obj.value

    @value.setter
    def value(self, new: Any) -> None:
        with self._lock:
            self._obj.value = new


class SynchronizedArray(SynchronizedBase):
    """A shared array; indexing and slicing run under the lock."""

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, index: Any) -> Any:
        with self._lock:
            return self._obj[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        with self._lock:
            self._obj[index] = value

    def __iter__(self):
        # A snapshot: iterating item by item would take the lock len() times.
        with self._lock:
            return iter(self._obj[:])


class SynchronizedString(SynchronizedArray):
    """A shared ``c_char`` array, with ``.value`` and ``.raw`` as bytes."""

    @property
    def value(self) -> bytes:
        with self._lock:
            return self._obj.value

    @value.setter
    def value(self, new: bytes) -> None:
        with self._lock:
            self._obj.value = new

    @property
    def raw(self) -> bytes:
        with self._lock:
            return self._obj.raw

    @raw.setter
    def raw(self, new: bytes) -> None:
        with self._lock:
            self._obj.raw = new


_structure_wrappers: dict[type, type] = {}


def _structure_wrapper(type_: type[Any]) -> type:
    """A wrapper class for a Structure/Union type: one locked property per field."""
    cls = _structure_wrappers.get(type_)
    if cls is None:
        namespace = {name: _field_property(name) for name, *_ in type_._fields_}
        cls = type(f"Synchronized{type_.__name__}", (SynchronizedBase,), namespace)
        _structure_wrappers[type_] = cls
    return cls


def _field_property(name: str) -> property:
    def get(self: SynchronizedBase) -> Any:
        with self._lock:
            return getattr(self._obj, name)

    def set_(self: SynchronizedBase, value: Any) -> None:
        with self._lock:
            setattr(self._obj, name, value)

    return property(get, set_, doc=f"The {name!r} field, read and written under the lock.")
