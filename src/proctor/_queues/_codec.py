"""Items to frames and back: pickle protocol 5, large buffers in memfds.

::

    put side                                          get side
    encode(obj) ── pickle protocol 5
      ├─ the pickle ───────────────────────▶ ring ─────┐
      │    (over the spill limit: a memfd)             ├─▶ decode(payload, flags, fds):
      └─ buffers >= OOB_THRESHOLD: a memfd each        │     unpickle, buffers mapped
           (and a spilled pickle) ─────────▶ mailbox ──┘     from their memfds
    encode_batches(objs) ── one pickle of up to BATCH_ITEMS items ─▶ one BATCH frame
    an item that owns descriptors (a queue, a lock, shared memory put on a queue):
      pickled collecting them (_core._reduction) ─▶ HANDLES frame, its descriptors
      in the mailbox (after a spilled pickle's memfd); unpickled inside receiving()

An ``Encoded`` is one frame to put: the bytes for the ring, the memfds for the
mailbox, its flags and how many items it carries. Large buffers (numpy arrays,
bytearrays: pickle protocol 5 out-of-band buffers) cost one copy in and none
out: the consumer's array is a writable view of memory the kernel frees when
the array is gone. A pickle too large for its share of the ring is spilled to a
memfd too, so one item can never hog the ring.

What ``get()`` took but has not decoded yet is a ``(payload, flags, fds)``
tuple, a ``Batch`` (part of a batch frame) or a ``Failed`` (an item that
cannot be rebuilt: its buffers were lost, or unpickling it raised), kept in
order and decoded once the get lock is released: unpickling runs user code,
which must not hold up the other consumers.
"""

from __future__ import annotations

import _pickle as pickle  # (not pickle.py: with re and enum, milliseconds of a spawned child)
import os

from .._core import _serialization
from .._core._closing import close_all, close_all_quietly
from .._core._reduction import DescriptorsNeedACarrier, TooManyDescriptors, receiving
from .._core._wire import map_memfd, memfd_with
from ._mailbox import MAX_FDS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._spares import Spares

__all__ = (
    "BATCH",
    "BATCH_ITEMS",
    "HANDLES",
    "OOB_THRESHOLD",
    "SCALARS",
    "SPILLED_BUFFERS",
    "SPILLED_PICKLE",
    "SPILL_FRACTION",
    "Batch",
    "Encoded",
    "Failed",
    "decode",
    "encode",
    "encode_batches",
)

#: Out-of-band pickle buffers at least this large travel as memfds (zero-copy on
#: the way out); smaller ones are cheaper to copy through the ring.
OOB_THRESHOLD = _serialization.OOB_THRESHOLD
#: A pickle larger than capacity // SPILL_FRACTION is spilled to a memfd too, so
#: one item can never hog the ring.
SPILL_FRACTION = 4
#: Items pickled together into one frame by put_many on an unbounded queue: one
#: pickle.dumps of a list is far cheaper than one per item.
BATCH_ITEMS = 4096  # well under the 2**24 items a frame can count

# Frame flags.
SPILLED_BUFFERS = 1  # memfds for out-of-band buffers follow in the mailbox
SPILLED_PICKLE = 2  # the pickle itself is the first of those memfds
BATCH = 4  # the pickle is a list of the frame's items (put_many)
HANDLES = 8  # the item owns descriptors: they follow in the mailbox (after a spilled pickle)

#: Objects that can never hold an out-of-band buffer: pickled directly, no callback.
SCALARS = frozenset({int, float, str, bool, type(None), complex})

_MEMFD_NAME = "proctor-queue-item"


class Encoded:
    """One frame to put: the bytes for the ring, memfds for large buffers, item count."""

    __slots__ = ("fds", "flags", "items", "payload")

    def __init__(self, payload: bytes, fds: list[int], flags: int, items: int = 1) -> None:
        self.payload = payload
        self.fds = fds
        self.flags = flags
        self.items = items

    def close(self) -> None:
        fds, self.fds = self.fds, []
        close_all(fds)


class Failed:
    """An item taken from the queue that could not be unpickled here."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Undecoded:
    """An entry taken from the queue and not unpickled yet: unpickling an earlier one
    was interrupted (KeyboardInterrupt, SystemExit), and this one waits in the handle
    for the next get(). ``entry`` is a ``(payload, flags, fds)`` tuple or a Batch."""

    __slots__ = ("entry",)

    def __init__(self, entry: Any) -> None:
        self.entry = entry


class Batch:
    """Items taken from a batch frame, still to decode: ``payload`` is the whole frame's."""

    __slots__ = ("key", "left", "n", "payload", "taken")

    def __init__(self, key: int, payload: bytes, taken: int, n: int, left: int) -> None:
        self.key = key
        self.payload = payload
        self.taken = taken
        self.n = n
        self.left = left  # items of the frame still in the ring after these


def encode(obj: Any, spill_limit: int, spares: Spares | None = None) -> Encoded:
    """Pickle ``obj`` into one frame, spilling large buffers (and a pickle over ``spill_limit``).

    Large buffers go into ``spares`` taken from the queue when there are some of
    their size (``_spares``), else into fresh memfds.

    Raises:
        ValueError: for an item with more large buffers or descriptors than one
            message carries.
        TypeError, pickle.PicklingError: when ``obj`` cannot be pickled.
    """
    try:
        payload, buffers = _serialization.dumps_oob(obj, OOB_THRESHOLD)
    except DescriptorsNeedACarrier as exc:
        if not exc.messages:
            raise
        return _encode_owning_fds(obj, spill_limit)
    fds: list[int] = []
    try:
        flags = 0
        if len(payload) > spill_limit:
            fds.append(memfd_with(payload, _MEMFD_NAME))
            payload = b""
            flags |= SPILLED_PICKLE
        for buffer in buffers:
            raw = buffer.raw()
            fd = None if spares is None else spares.fill(raw)
            fds.append(memfd_with(raw, _MEMFD_NAME) if fd is None else fd)
        if len(fds) > MAX_FDS:
            raise ValueError(
                f"an item with {len(buffers)} large buffers cannot be queued (at most "
                f"{MAX_FDS}); put fewer, larger arrays, or several items"
            )
        if fds:
            flags |= SPILLED_BUFFERS
    except BaseException:
        close_all_quietly(fds)
        raise
    return Encoded(payload, fds, flags)


def _encode_owning_fds(obj: Any, spill_limit: int) -> Encoded:
    """Pickle ``obj``, some of whose objects own descriptors, collecting them.

    Its large buffers stay in the pickle: the mailbox message carries the
    descriptors (and a spilled pickle), one SCM_RIGHTS batch.
    """
    try:
        # MAX_FDS - 1: room for a spilled pickle's memfd.
        payload, descriptors = _serialization.dumps_owning_fds(obj, MAX_FDS - 1)
    except TooManyDescriptors:
        raise ValueError(
            f"this {type(obj).__name__} owns more than {MAX_FDS - 1} file descriptors, and "
            "one queue item carries at most that many; nothing was put. Put it in parts."
        ) from None
    fds, descriptors.fds = descriptors.fds, []
    flags = HANDLES
    if len(payload) > spill_limit:
        try:
            fds.insert(0, memfd_with(payload, _MEMFD_NAME))
        except BaseException:
            close_all_quietly(fds)
            raise
        payload = b""
        flags |= SPILLED_PICKLE
    return Encoded(payload, fds, flags)


def encode_batches(objs: list[Any], spill_limit: int) -> list[Encoded]:
    """Pickle ``objs`` as few frames as possible; items with large buffers go alone."""
    frames: list[Encoded] = []
    try:
        for start in range(0, len(objs), BATCH_ITEMS):
            chunk = objs[start : start + BATCH_ITEMS]
            frames.extend(_encode_chunk(chunk, spill_limit))
    except BaseException:
        for frame in frames:
            frame.close()
        raise
    return frames


def _encode_chunk(chunk: list[Any], spill_limit: int) -> list[Encoded]:
    def in_band_only(buffer: pickle.PickleBuffer) -> bool:
        if buffer.raw().nbytes >= OOB_THRESHOLD:
            raise _NotBatchable
        return True

    if len(chunk) > 1:
        try:
            payload = pickle.dumps(chunk, 5, buffer_callback=in_band_only)
        except Exception:
            payload = None  # something needs cloudpickle, or has a large buffer
        if payload is not None and b"__main__" in payload:
            payload = None  # objects from __main__ go by value: one by one, below
        if payload is not None and len(payload) <= spill_limit:
            return [Encoded(payload, [], BATCH, len(chunk))]
        if payload is not None and len(chunk) >= 2:
            half = len(chunk) // 2
            return _encode_chunk(chunk[:half], spill_limit) + _encode_chunk(
                chunk[half:], spill_limit
            )
    return [encode(obj, spill_limit) for obj in chunk]


class _NotBatchable(Exception):
    """A batch member carries a large buffer: it travels alone, out of band."""


def decode(payload: bytes, flags: int, fds: list[int], spares: Spares | None = None) -> Any:
    """Unpickle one frame's item, mapping its spilled buffers; closes ``fds``.

    Large buffers are views of mappings ``spares`` keeps, whose memfds go back
    to the queue's producers once those views die (``_spares``).
    """
    if not flags:
        return pickle.loads(payload)
    if flags & HANDLES:
        handles = fds
        data: Any = payload
        if flags & SPILLED_PICKLE:
            try:
                data = map_memfd(fds[0])
            except BaseException:
                close_all_quietly(fds)
                raise
            os.close(fds[0])
            handles = fds[1:]
        with receiving(handles):  # the item's objects take theirs; the rest are closed
            return pickle.loads(data)
    maps: list[Any] = []
    try:
        for index, fd in enumerate(fds):
            view = None
            if spares is not None and not (index == 0 and flags & SPILLED_PICKLE):
                view = spares.view(fd)  # (takes fd when it gives a view)
            if view is None:
                maps.append(map_memfd(fd))
                os.close(fd)
            else:
                maps.append(view)
            fds[index] = -1
    finally:
        close_all_quietly([fd for fd in fds if fd >= 0])
    if flags & SPILLED_PICKLE:
        return pickle.loads(maps[0], buffers=maps[1:])
    return pickle.loads(payload, buffers=maps)
