"""``Value``, ``Array`` and ``Namespace`` for threads.

``Value`` and ``Array`` are ``multiprocessing``'s: ctypes objects (``c_int``,
``c_double * 10``...) behind a lock, with ``.value``, ``get_lock()``, ``get_obj()``,
indexing and slicing -- only in this process's ordinary memory, since threads
share it. They use ``_sharedmem``'s typecodes and synchronized wrappers, and
this package's ``RLock``.
"""

from __future__ import annotations

from .._sharedmem._sharedctypes import _ctype, synchronized
from ._sync import RLock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("Array", "Namespace", "Value")


#: wrapper class -> its subclass that refuses to be pickled (made on first use).
_THREADS_ONLY: dict[type, type] = {}


def _refuse_pickling(self: Any) -> Any:
    raise TypeError(
        f"a proctor.dummy {type(self).__name__} lives in this process's ordinary memory and "
        "cannot be pickled or sent to another process; use proctor.Value/proctor.Array there"
    )


def _locked(obj: Any, lock: Any) -> Any:
    if lock is False:
        return obj
    if lock is True or lock is None:
        lock = RLock()
    wrapped = synchronized(obj, lock)
    # The shared-memory wrappers pickle by reference to their memory; these have
    # none, and would fail on the first part that cannot be pickled, obscurely.
    cls = type(wrapped)
    threads_only = _THREADS_ONLY.get(cls)
    if threads_only is None:
        threads_only = type(cls.__name__, (cls,), {"__reduce__": _refuse_pickling})
        threads_only.__qualname__ = cls.__qualname__
        threads_only.__module__ = cls.__module__
        _THREADS_ONLY[cls] = threads_only
    wrapped.__class__ = threads_only
    return wrapped


def Value(typecode_or_type: Any, *args: Any, lock: Any = True) -> Any:
    """Return a ctypes object of this process, guarded by a lock unless ``lock=False``.

    Args:
        typecode_or_type: an ``array``-module typecode (``"i"``, ``"d"``...) or a
            ctypes type.
        *args: passed to the type's constructor (none: zero).
        lock: ``True``/``None`` for a new ``proctor.dummy.RLock``, ``False`` for
            the plain ctypes object, or a lock object to use.

    Returns:
        A wrapper with ``.value``, ``get_lock()``, ``get_obj()``, usable as a
        context manager that holds the lock (``multiprocessing.Value``'s API).

    Raises:
        TypeError: for an unknown typecode or type, a value of the wrong type
            (``Value("i", 1.5)``), or a ``lock`` without ``acquire``/``release``.
    """
    type_ = _ctype(typecode_or_type)
    return _locked(type_(*args), lock)


def Array(typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True) -> Any:
    """Return a ctypes array of this process, guarded by a lock unless ``lock=False``.

    Args:
        typecode_or_type: the item type, as for :func:`Value`.
        size_or_initializer: the length (items start at zero), or a sequence of
            the initial items.
        lock: as for :func:`Value`.

    Returns:
        A wrapper with ``len()``, indexing, slicing (lists), ``get_lock()`` and
        ``get_obj()``; arrays of ``"c"`` also have ``.value`` and ``.raw``.

    Raises:
        TypeError: for an unknown typecode, a size that is neither an int nor a
            sequence, or items of the wrong type.
        ValueError: a negative size.
    """
    type_ = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, bool):
        raise TypeError("size_or_initializer must be an int or a sequence, not a bool")
    if isinstance(size_or_initializer, int):
        if size_or_initializer < 0:
            raise ValueError(f"an Array's size must be >= 0, not {size_or_initializer}")
        obj = (type_ * size_or_initializer)()
    else:
        try:
            items = list(size_or_initializer)
        except TypeError:
            raise TypeError(
                "size_or_initializer must be an int or a sequence, not "
                f"{type(size_or_initializer).__name__}"
            ) from None
        obj = (type_ * len(items))(*items)
    return _locked(obj, lock)


class Namespace:
    """An object whose attributes are set by keyword: ``Namespace(a=1).a == 1``."""

    def __init__(self, /, **kwds: Any) -> None:
        self.__dict__.update(kwds)

    def __repr__(self) -> str:
        shown = sorted(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({', '.join(shown)})"
