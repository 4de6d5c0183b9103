"""Turning objects into bytes for another process, and back.

Two flavours, chosen by what is being sent:

* :func:`dumps` -- for messages (pipes, queues, results): plain :mod:`pickle` at the
  highest protocol, which is fast C code; only when it fails (a lambda, a closure,
  a function defined in ``__main__`` or a notebook cell) does it retry with
  cloudpickle, which pickles such functions by value.
* :func:`dumps_for_child` -- for the process object sent to a spawn or forkserver
  child: always cloudpickle. Importable objects still travel by reference, but
  anything from ``__main__`` travels by value, because proctor's children do not
  re-run the parent's main script (see docs/start-methods.md).

:func:`loads` is plain :func:`pickle.loads`: cloudpickle output needs nothing else.
"""

from __future__ import annotations

import io
import pickle
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
    """Pickle a process object for a spawn or forkserver child (always cloudpickle)."""
    buffer = io.BytesIO()
    _cloudpickle().CloudPickler(buffer, protocol=PROTOCOL).dump(obj)
    return buffer.getvalue()


def _cloudpickle():
    # Imported on first use: most programs never need it, and it is not free.
    import cloudpickle

    return cloudpickle
