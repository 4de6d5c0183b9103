"""``ShareableList``: a fixed-length list of small values in a named segment.

Layout of the segment (little-endian, every field 8-byte aligned)::

    offset 0    header   b"PRSL" | version u8 | 3 pad | count u64
    16          table    count * (kind u8 | 3 pad | capacity u32 | offset u64)
    ...         slots    one per item, at its table offset:
                           length u64 (str/bytes) or the number (int/float/bool)
                           capacity bytes of text (str/bytes slots only)

Kinds: None, int (int64), float (double), bool, str (UTF-8), bytes. A number fits
any slot; a str or bytes value fits a slot whose capacity (the encoded length of
the item it was created with, rounded up to 8) holds it -- as with the stdlib,
the list's shape is fixed at creation.
"""

from __future__ import annotations

import struct
import types
from collections.abc import Iterable, Iterator
from typing import Any

from ._shm import SharedMemory

__all__ = ("ShareableList",)

_MAGIC = b"PRSL"
_VERSION = 1
_HEADER = struct.Struct("<4sB3xQ")
_ENTRY = struct.Struct("<B3xIQ")
_WORD = struct.Struct("<Q")

_NONE, _INT, _FLOAT, _BOOL, _STR, _BYTES = range(6)
_NUMBERS = {_INT: struct.Struct("<q"), _FLOAT: struct.Struct("<d"), _BOOL: struct.Struct("<Q")}


def _kind(value: Any) -> int:
    # bool before int: True is an int too.
    if value is None:
        return _NONE
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return _FLOAT
    if isinstance(value, str):
        return _STR
    if isinstance(value, bytes):
        return _BYTES
    raise TypeError(
        f"a ShareableList holds None, int, float, bool, str and bytes, not "
        f"{type(value).__name__}: {value!r}"
    )


def _payload(kind: int, value: Any) -> bytes:
    if kind == _STR:
        return value.encode("utf-8")
    if kind == _BYTES:
        return value
    return b""


def _capacity(n: int) -> int:
    return max(8, (n + 7) // 8 * 8)


class ShareableList:
    """A fixed-length list of ``None``/``int``/``float``/``bool``/``str``/``bytes``
    in shared memory, readable and writable by every process that attaches.

    ``ShareableList(sequence)`` creates it (in a new :class:`SharedMemory`);
    ``ShareableList(name=...)`` attaches to an existing one. Its lifetime is its
    segment's: see ``SharedMemory``.

    Args:
        sequence: the initial items (creates a new list), or ``None`` to attach.
        name: the segment's name: chosen for a new list when ``None``; required to
            attach.

    Raises:
        TypeError: for an item of another type.
        ValueError: to attach without a name, or to a segment that is not a
            proctor ShareableList.

    Note:
        Not binary-compatible with ``multiprocessing.shared_memory.ShareableList``:
        a list made by one cannot be attached by the other. There is no lock; use
        a ``proctor.Lock`` when several processes update the same item.
    """

    __class_getitem__: classmethod[Any, [Any], types.GenericAlias] = classmethod(types.GenericAlias)

    def __init__(self, sequence: Iterable[Any] | None = None, *, name: str | None = None) -> None:
        if sequence is None:
            if name is None:
                raise ValueError(
                    "pass a sequence to create a ShareableList, or name= to attach to one"
                )
            self._adopt(SharedMemory(name))
            return
        items = list(sequence)
        payloads = [_payload(_kind(item), item) for item in items]
        # Every slot holds 8 bytes of text at least, so a number's slot takes a short
        # string later (as the stdlib's does).
        capacities = [_capacity(len(p)) for p in payloads]
        offset = _HEADER.size + _ENTRY.size * len(items)
        entries = []
        for capacity in capacities:
            entries.append((capacity, offset))
            offset += 8 + capacity
        shm = SharedMemory(name, create=True, size=offset)
        buf = shm.buf
        _HEADER.pack_into(buf, 0, _MAGIC, _VERSION, len(items))
        for index, (capacity, slot) in enumerate(entries):
            _ENTRY.pack_into(buf, _HEADER.size + index * _ENTRY.size, _NONE, capacity, slot)
        self._shm = shm
        self._count = len(items)
        for index, item in enumerate(items):
            self[index] = item

    def _adopt(self, shm: SharedMemory) -> None:
        try:
            magic, version, count = _HEADER.unpack_from(shm.buf, 0)
        except struct.error:
            magic = b""
        if magic != _MAGIC or version != _VERSION:
            shm.close()
            raise ValueError(
                f"shared memory segment {shm.name!r} does not hold a proctor ShareableList"
            )
        self._shm = shm
        self._count = count

    @property
    def shm(self) -> SharedMemory:
        """The segment that holds the list."""
        return self._shm

    def _entry(self, index: int) -> tuple[int, int, int, int]:
        if not isinstance(index, int):
            raise TypeError(f"ShareableList indices must be integers, not {type(index).__name__}")
        position = index + self._count if index < 0 else index
        if not 0 <= position < self._count:
            raise IndexError(f"ShareableList index {index} out of range (length {self._count})")
        kind, capacity, slot = _ENTRY.unpack_from(
            self._shm.buf, _HEADER.size + position * _ENTRY.size
        )
        return position, kind, capacity, slot

    def __getitem__(self, index: int) -> Any:
        _, kind, _, slot = self._entry(index)
        buf = self._shm.buf
        if kind == _NONE:
            return None
        if kind in _NUMBERS:
            (value,) = _NUMBERS[kind].unpack_from(buf, slot)
            return bool(value) if kind == _BOOL else value
        (length,) = _WORD.unpack_from(buf, slot)
        data = bytes(buf[slot + 8 : slot + 8 + length])
        return data.decode("utf-8") if kind == _STR else data

    def __setitem__(self, index: int, value: Any) -> None:
        position, _, capacity, slot = self._entry(index)
        kind = _kind(value)
        buf = self._shm.buf
        if kind in (_STR, _BYTES):
            data = _payload(kind, value)
            if len(data) > capacity:
                raise ValueError(
                    f"{value!r} needs {len(data)} bytes; item {index} of this ShareableList "
                    f"holds at most {capacity} (the list's shape is fixed when it is created)"
                )
            _WORD.pack_into(buf, slot, len(data))
            buf[slot + 8 : slot + 8 + len(data)] = data
        elif kind in _NUMBERS:
            try:
                _NUMBERS[kind].pack_into(buf, slot, value)
            except struct.error:
                raise ValueError(
                    f"{value!r} does not fit in a ShareableList int (64-bit signed)"
                ) from None
        _ENTRY.pack_into(buf, _HEADER.size + position * _ENTRY.size, kind, capacity, slot)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Any]:
        for index in range(self._count):
            yield self[index]

    def count(self, value: Any) -> int:
        """The number of items equal to ``value``."""
        return sum(1 for item in self if item == value)

    def index(self, value: Any) -> int:
        """The position of the first item equal to ``value``.

        Raises:
            ValueError: if no item equals ``value``.
        """
        for position, item in enumerate(self):
            if item == value:
                return position
        raise ValueError(f"{value!r} not in this ShareableList")

    def __repr__(self) -> str:
        if self._shm.closed:
            return f"<ShareableList name={self._shm.name!r} closed>"
        return f"ShareableList({list(self)!r}, name={self._shm.name!r})"

    def __reduce__(self):
        return (_rebuild, (self._shm,))


def _rebuild(shm: SharedMemory) -> ShareableList:
    shareable = ShareableList.__new__(ShareableList)
    shareable._adopt(shm)
    return shareable
