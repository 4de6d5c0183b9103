"""Shared memory between processes: named segments and shared numpy arrays.

The ``multiprocessing.shared_memory`` API, with the lifetime done right:

- :class:`SharedMemory` -- a named POSIX segment (``/dev/shm`` on Linux), created
  ``0600``. It stays until ``unlink()`` while its creator lives; after that
  proctor's resource reaper unlinks it once no process uses it, even if every
  user was SIGKILLed, and never while a live process still maps it.
- :class:`ShareableList` -- a fixed-length list of small values in such a segment.
- :func:`shared_array` -- a numpy array in anonymous shared memory (nothing in
  ``/dev/shm`` at all), passed to children by reference under every start method
  and written by them in place. Needs numpy.

Example::

    import numpy as np
    from proctor import Process
    from proctor.shared_memory import shared_array

    def fill(a, value):
        a[:] = value

    if __name__ == "__main__":
        a = shared_array((1000,), np.float64)
        p = Process(target=fill, args=(a, 3.0))
        p.start()
        p.join()
        assert a[0] == 3.0
"""

from __future__ import annotations

from ._sharedmem._shareable_list import ShareableList as ShareableList
from ._sharedmem._shm import SharedMemory as SharedMemory

TYPE_CHECKING = False
if TYPE_CHECKING:  # at run time, __getattr__ below imports it with numpy, on demand
    from typing import Any  # (typing, with re and enum, is milliseconds of a child's start)

    from ._sharedmem._sharedarray import SharedArray as SharedArray

__all__ = ("ShareableList", "SharedArray", "SharedMemory", "shared_array")


def _numpy_part() -> Any:
    try:
        from ._sharedmem import _sharedarray
    except ImportError as exc:
        if exc.name != "numpy":
            raise
        raise ImportError(
            "proctor.shared_memory.shared_array needs numpy, which is not installed. "
            "Install it with: pip install numpy"
        ) from exc
    return _sharedarray


def shared_array(shape: int | tuple[int, ...], dtype: Any = float, *, order: str = "C") -> Any:
    """Return a zero-filled numpy array whose memory is shared with children.

    Pass it (or any slice of it) to a child as a ``Process`` argument under any
    start method; what the child writes in place, the parent sees. The memory is
    freed when the last array using it is gone, in every process.

    Args:
        shape: the array's shape, as for ``numpy.zeros``.
        dtype: the array's dtype, as for ``numpy.zeros``.
        order: ``"C"`` or ``"F"`` memory layout.

    Returns:
        A ``SharedArray``: a ``numpy.ndarray`` subclass that pickles by reference.

    Raises:
        ImportError: when numpy is not installed.
        TypeError: for an object dtype.
        ValueError: for a negative dimension or a bad ``order``.
    """
    return _numpy_part().shared_array(shape, dtype, order=order)


def __getattr__(name: str) -> Any:
    # SharedArray subclasses numpy.ndarray: it exists only once numpy is imported.
    if name == "SharedArray":
        return _numpy_part().SharedArray
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
