"""Turning objects into bytes for another process, and back.

Two flavours, chosen by what is being sent:

* :func:`dumps` -- for messages (pipes, queues, results): plain :mod:`pickle` at the
  highest protocol, which is fast C code; only when it fails (a lambda, a closure,
  a function defined in ``__main__`` or a notebook cell) does it retry with
  cloudpickle, which pickles such functions by value.
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

loads = pickle.loads


def dumps(obj: Any) -> bytes:
    """Pickle ``obj``; fall back to cloudpickle for functions pickle cannot handle.

    Raises:
        TypeError, pickle.PicklingError: when neither can pickle ``obj``; the
            message names the type of the object.
    """
    try:
        return pickle.dumps(obj, PROTOCOL)
    except Exception as plain_error:
        try:
            return _cloudpickle().dumps(obj, PROTOCOL)
        except Exception:
            raise plain_error from None


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

        class ChildPickler(_cloudpickle().CloudPickler):
            def __init__(self, file: Any, protocol: int) -> None:
                super().__init__(file, protocol=protocol)
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
    import cloudpickle

    return cloudpickle
