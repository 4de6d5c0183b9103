"""Turning objects into bytes for another process, and back.

Three passes
============
* Plain :mod:`pickle` (fast C code). Its output is final unless pickling failed
  or the output contains the bytes ``__main__``: every reference to the main
  script contains them, so the test never misses one; a false alarm (data that
  merely contains those bytes) costs the exact pass, whose output for objects
  that are not in the main script is plain pickle's, byte for byte.
* The exact pass: a plain pickler with :class:`_Reducers` -- main references,
  lambdas and closures by value (``_by_value``, light to rebuild), modules by
  name, sockets and the reducers of ``reduction.register()`` (the exact pass is
  the only one once some are registered), and a clear error for OS resources
  that cloudpickle would copy.
* When that fails (a class defined in a function, a code object...), the same
  reducers on top of cloudpickle's pickler.

:func:`dumps_for_child` pickles a process object for a spawn or forkserver child
with the last of these directly. :func:`loads` is plain :func:`pickle.loads`.
When nothing can pickle an object, :class:`~proctor.PicklingError` names the part
that failed and the path to it (see ``_culprit``).

The exact passes live in ``_pickler``, imported the first time they are needed: a
child whose messages are all plain data never loads them.
"""

from __future__ import annotations

# The C pickler alone: pickle.py (which is it, plus the pure-Python fallback and
# its re, struct, codecs imports) costs a spawned child ~17 M instructions.
# pickle.Pickler/loads/PicklingError are these same objects.
import _pickle as pickle
import functools

from ._reduction import Descriptors, MessageFds, collecting_fds

# A dict that reduction.register() fills in place: bound once, read on every send.
from ._reduction import registered_reducers as _registered_reducers

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from collections.abc import Callable
    from typing import Any

__all__ = (
    "OOB_THRESHOLD",
    "PROTOCOL",
    "dumps",
    "dumps_exact",
    "dumps_for_child",
    "dumps_oob",
    "dumps_owning_fds",
    "loads",
)

#: pickle.HIGHEST_PROTOCOL (5 on every Python proctor runs on; _pickle does not say it).
PROTOCOL = 5
#: Out-of-band pickle buffers at least this large (numpy arrays, bytearrays) travel
#: as memfds through queues and pipes: zero-copy on the way out. Smaller ones are
#: cheaper to copy along with the pickle.
OOB_THRESHOLD = 64 * 1024

loads = pickle.loads

# Every pickled reference to the main script contains these bytes (the module
# name is written out as a string), so their absence proves there is none.
_MAIN_REFERENCE = b"__main__"
#: ``data.find(_MAIN_REFERENCE)``, not ``_MAIN_REFERENCE in data``: bytes' ``in`` first
#: tries its operand as an int, and raising and clearing that TypeError costs about
#: 1,800 instructions (CPython 3.11), more than the search.
_find = bytes.find


def dumps(obj: Any, values: dict[int, bytes | str] | None = None) -> bytes:
    """Pickle ``obj`` for another process: by reference where the receiver can name it.

    ``values``: where the by-value copies of main-script objects are reused from
    and kept (a pool's own dict, so that a new pool sees its globals afresh);
    ``None`` for this process's (``_pickler``'s docstring, "When the value is made").

    Raises:
        PicklingError: (a ``TypeError`` and a ``pickle.PicklingError``) when ``obj``
            or a part of it cannot be pickled; names the part and the path to it.
    """
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except Exception:
        return _exact(obj, values=values)
    if _find(data, _MAIN_REFERENCE) >= 0 or _registered_reducers:
        return _exact(obj, values=values)
    return data


def dumps_oob(
    obj: Any, threshold: int, values: dict[int, bytes | str] | None = None
) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Like :func:`dumps`, taking buffers of ``threshold`` bytes or more out of band.

    Returns:
        The pickle and the out-of-band buffers, which ``pickle.loads(data,
        buffers=...)`` needs back in the same order.

    Raises:
        PicklingError: as :func:`dumps`.
    """
    buffers: list[pickle.PickleBuffer] = []
    # Every buffer out of band at first, through the list's own append (a C method:
    # no callback object made, no Python call per buffer): most payloads (a pool's
    # task arguments, its results) have no buffer at all, and this is called for each.
    try:
        data = pickle.dumps(obj, PROTOCOL, buffer_callback=buffers.append)
    except Exception:
        return _exact(obj, buffers, threshold, values), buffers
    if buffers and not _all_large(buffers, threshold):
        # Small buffers go in band after all (cheaper to copy than to send apart):
        # pickled again, sorting each buffer by its size as it comes.
        del buffers[:]
        try:
            data = pickle.dumps(
                obj, PROTOCOL, buffer_callback=functools.partial(_take_large, buffers, threshold)
            )
        except Exception:
            return _exact(obj, buffers, threshold, values), buffers
    if _find(data, _MAIN_REFERENCE) >= 0 or _registered_reducers:
        data = _exact(obj, buffers, threshold, values)
    return data, buffers


def _all_large(buffers: list[pickle.PickleBuffer], threshold: int) -> bool:
    """Whether every buffer has ``threshold`` bytes or more (False when one cannot
    tell: pickling again with ``_take_large`` raises what it raises)."""
    try:
        return all(buffer.raw().nbytes >= threshold for buffer in buffers)
    except (BufferError, ValueError):
        return False


def _out_of_band(buffers: list[pickle.PickleBuffer], threshold: int) -> Callable[..., bool]:
    """A ``buffer_callback`` that takes buffers of ``threshold`` bytes or more into ``buffers``."""
    del buffers[:]  # what an earlier, failed or redone, attempt took
    return functools.partial(_take_large, buffers, threshold)


def _take_large(
    buffers: list[pickle.PickleBuffer], threshold: int, buffer: pickle.PickleBuffer
) -> bool:
    """A ``buffer_callback``: True (pickle it in band) for a small buffer; a large
    one goes into ``buffers``."""
    if buffer.raw().nbytes >= threshold:
        buffers.append(buffer)
        return False
    return True


def _exact(
    obj: Any,
    buffers: list[pickle.PickleBuffer] | None = None,
    threshold: int = 0,
    values: dict[int, bytes | str] | None = None,
) -> bytes:
    """Pickle ``obj`` with the exact passes (``_pickler``); large buffers into ``buffers``.

    Raises:
        PicklingError: naming the part of ``obj`` that cannot be pickled.
    """
    from . import _pickler

    if buffers is None:
        return _pickler.dump_exact(obj, None, values)
    return _pickler.dump_exact(obj, lambda: _out_of_band(buffers, threshold), values)


#: The exact passes alone, for callers that already know plain pickle will not do.
dumps_exact = _exact

#: The most descriptors :func:`dumps_owning_fds` takes by default: what one message
#: of a connection carries (the SCM_RIGHTS limit, 253, less one).
MESSAGE_FDS = 252


def dumps_owning_fds(
    obj: Any, limit: int = MESSAGE_FDS, values: dict[int, bytes | str] | None = None
) -> tuple[bytes, Descriptors]:
    """Pickle ``obj``, some of whose objects own descriptors, collecting them.

    For a pickle made now and sent later: the descriptors come back as one
    object, which a connection can send after the pickle; the receiver unpickles
    inside ``Descriptors.received()``. Names of OS objects in ``obj`` are kept
    until then (``_reaper._client.keep_for_receiver``). Large buffers stay in the
    pickle. ``values`` as for :func:`dumps`.

    Raises:
        PicklingError: as :func:`dumps`.
        ValueError: (``TooManyDescriptors``) more than ``limit`` descriptors.
    """
    collector = MessageFds(limit)
    try:
        with collecting_fds(collector):
            data = _exact(obj, values=values)
    except BaseException:
        collector.close()
        raise
    return data, Descriptors(collector.take())


def dumps_for_child(obj: Any) -> bytes:
    """Pickle a process object for a spawn or forkserver child (cloudpickle-based)."""
    from . import _pickler

    return _pickler.dump_for_child(obj)
