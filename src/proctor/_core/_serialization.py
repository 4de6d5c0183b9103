"""Turning objects into bytes for another process, and back.

Two flavours, chosen by what is being sent:

* :func:`dumps` -- for messages (pipes, queues, results): plain :mod:`pickle` at the
  highest protocol, which is fast C code; only when it fails (a lambda, a closure)
  or refers to ``__main__`` (a function or class defined in the main script or a
  notebook) does it pickle again, sending those by value.
* :func:`dumps_for_child` -- for the process object sent to a spawn or forkserver
  child: cloudpickle's pickler. Importable objects still travel by reference, but
  anything from ``__main__`` travels by value, because proctor's children do not
  re-run the parent's main script (see docs/start-methods.md). Plain functions go
  the light way of ``_by_value``, so the child need not import cloudpickle.

:func:`loads` is plain :func:`pickle.loads`: cloudpickle output needs nothing else.
"""

from __future__ import annotations

import io
import pickle

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from typing import Any

__all__ = ("dumps", "dumps_for_child", "loads")

PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Out-of-band pickle buffers at least this large (numpy arrays, bytearrays) travel
#: as memfds through queues and pipes: zero-copy on the way out. Smaller ones are
#: cheaper to copy along with the pickle.
OOB_THRESHOLD = 64 * 1024

loads = pickle.loads


# Plain pickle refers to functions and classes of the main script by the name
# ``__main__``, which in a spawn or forkserver process is not that script.
_MAIN_REFERENCE = b"__main__"


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for another process: plain pickle, by value where it must.

    Plain pickle runs first (fast C code). When it fails (lambdas, closures) or
    when its output refers to ``__main__`` -- meaningless in a spawn or
    forkserver process, which does not run the parent's main script -- the
    object is pickled again with the child pickler, which sends such functions
    and classes by value.

    Raises:
        TypeError, pickle.PicklingError: when neither can pickle ``obj``.
    """
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except Exception as plain_error:
        try:
            return _by_value(obj, None)
        except Exception:
            raise plain_error from None
    if _MAIN_REFERENCE in data:
        return _by_value(obj, None)
    return data


def dumps_oob(obj: Any, threshold: int) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Like :func:`dumps`, taking buffers of ``threshold`` bytes or more out of band.

    Returns:
        The pickle and the out-of-band buffers, which ``pickle.loads(data,
        buffers=...)`` needs back in the same order.
    """
    buffers: list[pickle.PickleBuffer] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        if buffer.raw().nbytes >= threshold:
            buffers.append(buffer)
            return False
        return True

    try:
        data = pickle.dumps(obj, PROTOCOL, buffer_callback=out_of_band)
    except Exception as plain_error:
        buffers.clear()
        try:
            return _by_value(obj, out_of_band), buffers
        except Exception:
            raise plain_error from None
    if _MAIN_REFERENCE in data:
        buffers.clear()
        data = _by_value(obj, out_of_band)
    return data, buffers


def _by_value(obj: Any, buffer_callback: Any) -> bytes:
    buffer = io.BytesIO()
    _child_pickler_class()(buffer, PROTOCOL, buffer_callback).dump(obj)
    return buffer.getvalue()


def dumps_for_child(obj: Any) -> bytes:
    """Pickle a process object for a spawn or forkserver child (cloudpickle-based)."""
    buffer = io.BytesIO()
    _child_pickler_class()(buffer, PROTOCOL).dump(obj)
    return buffer.getvalue()


_child_pickler: Any = None


def _child_pickler_class() -> Any:
    """cloudpickle's pickler, with plain functions and modules sent the light way.

    See ``_by_value``: what it rebuilds needs no cloudpickle in the child.
    """
    global _child_pickler
    if _child_pickler is None:
        import types

        from ._by_value import importable_by_reference, reduce_function, reduce_module

        # The base class is only known at run time (cloudpickle is imported lazily).
        class ChildPickler(_cloudpickle().CloudPickler):  # type: ignore[misc]
            def __init__(self, file: Any, protocol: int, buffer_callback: Any = None) -> None:
                super().__init__(file, protocol=protocol, buffer_callback=buffer_callback)
                self._shared_globals: dict[int, dict] = {}

            def reducer_override(self, obj: Any) -> Any:
                kind = type(obj)
                if kind is types.FunctionType and not importable_by_reference(obj):
                    return reduce_function(obj, self._shared_globals)
                if kind is types.ModuleType:
                    reduced = reduce_module(obj)
                    if reduced is not None:
                        return reduced
                return super().reducer_override(obj)

        _child_pickler = ChildPickler
    return _child_pickler


def _cloudpickle():
    # Imported on first use: most programs never need it, and it is not free.
    import cloudpickle  # type: ignore[import-untyped]  # ships no type information

    return cloudpickle
