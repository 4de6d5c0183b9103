"""Pickling a process object for a spawn or forkserver child, with errors that name the culprit."""

from __future__ import annotations

from .._core import _serialization
from .._core._errors import UnpicklableError
from .._core._reduction import ChildHandoff, handing_off

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from typing import Any

__all__ = ("pickle_process",)


def pickle_process(process: Any, method: str) -> tuple[bytes, ChildHandoff]:
    """Pickle ``process`` for a new child; return the bytes and the descriptors to send.

    Raises:
        UnpicklableError: naming the target or argument that cannot be pickled,
            the start method, and what to do instead.
    """
    handoff = ChildHandoff(method)
    try:
        with handing_off(handoff):
            payload = _serialization.dumps_for_child(process)
    except Exception as exc:
        label, culprit, cause = _find_culprit(process, method, exc)
        raise UnpicklableError(
            f"cannot start {process.name!r} with the {method!r} start method: {label} "
            f"({type(culprit).__name__}: {_short_repr(culprit)}) cannot be pickled, and "
            f"under {method!r} everything the child needs is pickled and sent to it. "
            f"Pickling failed with: {type(cause).__name__}: {cause}. "
            "Pass something picklable instead (for example the data needed to rebuild "
            "the object in the child), create the object inside the child, or use the "
            "'fork' start method, which copies the parent instead of pickling."
        ) from exc
    return payload, handoff


def _find_culprit(process: Any, method: str, error: Exception) -> tuple[str, Any, Exception]:
    candidates: list[tuple[str, Any]] = [("the target", getattr(process, "_target", None))]
    candidates += [(f"argument {i}", arg) for i, arg in enumerate(getattr(process, "_args", ()))]
    candidates += [
        (f"keyword argument {key!r}", value)
        for key, value in getattr(process, "_kwargs", {}).items()
    ]
    for label, obj in candidates:
        try:
            with handing_off(ChildHandoff(method)):
                _serialization.dumps_for_child(obj)
        except Exception as exc:
            return label, obj, exc
    return "the process object", process, error


def _short_repr(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= 120 else text[:117] + "..."
