"""numpy arrays whose memory is shared with child processes.

``shared_array(shape, dtype)`` returns a numpy array (an instance of the
``SharedArray`` subclass of ``numpy.ndarray``) backed by anonymous shared memory
(``_anonmem``). Passed to a child as a ``Process`` argument, it pickles by
reference -- the memory's descriptor, the offset, shape, dtype and strides -- so
the child's array is a view of the very same pages, and what it writes the parent
reads, without a copy::

    parent                                        child
    a = shared_array((n,), "f8")
      AnonymousMemory(nbytes) ◀── same pages ──▶  a (rebuilt view)
    Process(target=f, args=(a[::2],)).start()     a[:] = 1.0  (in place)
      pickle: (memory fd, offset, shape,           parent sees it at once
               dtype, strides)

Slices and views of a shared array are shared too. Results of computations
(``a + 1``, ``a.copy()``) live in ordinary memory; they are pickled by value.

numpy is optional: this module imports it, and ``proctor.shared_memory`` imports
this module only on first use, with a clear message when numpy is missing.
"""

from __future__ import annotations

import ctypes
from typing import Any, Literal, SupportsIndex

import numpy as np

from .._core import _anonmem, _reduction
from .._core._integers import integral

__all__ = ("SharedArray", "shared_array")


def _address(memory: _anonmem.AnonymousMemory) -> int:
    address = getattr(memory, "_address", None)
    if address is None:
        probe = ctypes.c_char.from_buffer(memory)
        address = memory._address = ctypes.addressof(probe)  # type: ignore[attr-defined]
        del probe  # its buffer export would stop the memory from being closed
    return address


class SharedArray(np.ndarray):
    """A ``numpy.ndarray`` whose memory is shared with the children it is passed to.

    Create one with :func:`shared_array`. It behaves exactly as an ``ndarray``;
    only pickling differs: an array (or view) that lies in shared memory pickles
    by reference when a child is started, and otherwise raises ``RuntimeError``.
    """

    _proctor_memory: _anonmem.AnonymousMemory | None = None

    def __array_finalize__(self, obj: Any) -> None:
        memory = getattr(obj, "_proctor_memory", None)
        # Views of shared memory stay shared; results of computations do not.
        if memory is not None and self._lies_in(memory):
            self._proctor_memory = memory

    def _lies_in(self, memory: _anonmem.AnonymousMemory) -> bool:
        if memory.closed:
            return False
        start = _address(memory)
        data = self.__array_interface__["data"][0]
        return start <= data < start + len(memory) or (self.size == 0 and data == start)

    @property
    def is_shared(self) -> bool:
        """Whether this array's memory is shared (a shared array or a view of one)."""
        memory = self._proctor_memory
        return memory is not None and self._lies_in(memory)

    def __reduce_ex__(self, protocol: SupportsIndex):
        return self.__reduce__()

    def __reduce__(self):
        memory = self._proctor_memory
        if memory is None or not self._lies_in(memory):
            # Ordinary memory (the result of a computation): send the values.
            return np.asarray(self).__reduce__()
        _reduction.need_carrier(
            "a proctor shared array",
            "a proctor shared array can only reach another process as an argument of "
            "Process(...), or in a proctor message (Connection.send() through a Unix "
            "socket, a proctor Queue, a proctor Pool's task arguments and results); it "
            "cannot be pickled into a file or with plain pickle. Send np.asarray(a) "
            "for a copy of its values.",
        )
        offset = self.__array_interface__["data"][0] - _address(memory)
        return (_rebuild, (memory, offset, self.shape, self.dtype, self.strides))


def _rebuild(
    memory: _anonmem.AnonymousMemory,
    offset: int,
    shape: tuple[int, ...],
    dtype: np.dtype,
    strides: tuple[int, ...],
) -> SharedArray:
    array = SharedArray.__new__(
        SharedArray, shape, dtype, buffer=memory, offset=offset, strides=strides
    )
    array._proctor_memory = memory
    return array


def shared_array(
    shape: int | tuple[int, ...], dtype: Any = float, *, order: Literal["C", "F"] = "C"
) -> Any:
    """Return a zero-filled numpy array whose memory is shared with children.

    Pass it (or any slice of it) to a child as a ``Process`` argument under any
    start method; what the child writes in place, the parent sees, and the
    reverse. The memory is freed when the last array using it is gone, in every
    process -- nothing is left in ``/dev/shm``.

    Args:
        shape: the array's shape, as for ``numpy.zeros``.
        dtype: the array's dtype, as for ``numpy.zeros``.
        order: ``"C"`` or ``"F"`` memory layout.

    Returns:
        A :class:`SharedArray` (an ``ndarray`` subclass).

    Raises:
        TypeError: for a dtype numpy does not know, or an object dtype (Python
            objects cannot live in shared memory).
        ValueError: for a negative dimension or a bad ``order``.
    """
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise TypeError(
            f"dtype {dtype} holds Python objects, which cannot live in shared memory; "
            "use a numeric, bytes or structured dtype"
        )
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")
    shape = integral(shape)
    shape_tuple = (shape,) if isinstance(shape, int) else tuple(integral(n) for n in shape)
    if any(not isinstance(n, int) or n < 0 for n in shape_tuple):
        raise ValueError(f"shape must be non-negative ints, got {shape!r}")
    nbytes = dtype.itemsize
    for n in shape_tuple:
        nbytes *= n
    memory = _anonmem.AnonymousMemory(max(nbytes, 1))
    array = SharedArray.__new__(SharedArray, shape_tuple, dtype, buffer=memory, order=order)
    array._proctor_memory = memory
    return array
