"""Pickling a process object for a spawn or forkserver child, with errors that name the culprit."""

from __future__ import annotations

from .._core import _serialization
from .._core._reduction import ChildHandoff, handing_off
from ._plain import dump_process

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from typing import Any

__all__ = ("pickle_process",)


def pickle_process(process: Any, method: str) -> tuple[bytes, ChildHandoff]:
    """Pickle ``process`` for a new child; return the bytes and the descriptors to send.

    Raises:
        UnpicklableError: naming the target or argument that cannot be pickled,
            the path to the part of it that failed, the start method, and what
            to do instead.
    """
    handoff = ChildHandoff(method, process)
    # Plain data and functions need no pickle in the child (see _plain); the rest
    # is pickled, failing here (before any child exists) when it cannot be.
    plain = dump_process(process)
    if plain is not None:
        return plain, handoff
    try:
        with handing_off(handoff):
            payload = _serialization.dumps_for_child(process)
    except Exception as exc:
        # (Imported here, on the way to the error: _core._errors imports
        # multiprocessing, which a program that starts processes need not load.)
        from .._core._errors import UnpicklableError

        path, cause = _find_culprit(process, method, exc)
        raise UnpicklableError(
            f"cannot start {process.name!r} with the {method!r} start method: "
            f"{' -> '.join(path)} cannot be pickled ({type(cause).__name__}: {cause}), "
            f"and under {method!r} everything the child needs is pickled and sent to it. "
            "Pass something picklable instead (for example the data needed to rebuild "
            "the object in the child), create the object inside the child, or use the "
            "'fork' start method, which copies the parent instead of pickling.",
            path=path,
        ) from exc
    return payload, handoff


def _find_culprit(
    process: Any, method: str, error: Exception
) -> tuple[tuple[str, ...], BaseException]:
    def dump(obj: Any) -> None:
        # A handoff of its own: descriptors met while searching are not sent.
        with handing_off(ChildHandoff(method, process)):
            _serialization.dumps_for_child(obj)

    candidates: list[tuple[str, Any]] = [("the target", getattr(process, "_target", None))]
    candidates += [(f"argument {i}", arg) for i, arg in enumerate(getattr(process, "_args", ()))]
    candidates += [
        (f"keyword argument {key!r}", value)
        for key, value in getattr(process, "_kwargs", {}).items()
    ]
    candidates.append(("the process object", process))
    for label, obj in candidates:
        try:
            dump(obj)
        except Exception as exc:
            from .._core import _culprit

            return _culprit.find_culprit(obj, label, exc, dump)
    return ("the process object",), error
