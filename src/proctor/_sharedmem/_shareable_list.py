"""``ShareableList``: a fixed-length list of small values in a named segment.

The segment holds the bytes ``multiprocessing.shared_memory.ShareableList`` lays
out, so a list made by either can be attached by the other -- by name, from
another program::

    offset 0           n, the number of items                        q
    8                  n + 1 slot offsets, counted from D            q * (n + 1)
    D = 8 * (n + 2)    the slots: 8 bytes for a number, a bool or None;
                       a multiple of 8 for a str or bytes
    F = D + offset[n]  each item's struct format, 8 bytes each       "q", "d",
                       (NUL-padded; ``.format`` joins them)          "xxxxxxx?", ...
    F + 8 * n          each item's kind, 1 byte each                 0 number or bool,
                                                                     1 str, 2 bytes, 3 None

(``struct``'s native sizes and byte order). A slot's size is fixed when the list
is created: a str or bytes item gets the next multiple of 8 above its length (in
characters for a str, as the stdlib counts, unless its UTF-8 needs more), any
other item 8 bytes, and a later value must fit in it.

Formats: ``q`` (int), ``d`` (float), ``xxxxxxx?`` (bool), ``xxxxxx?x`` (None) and
``<size>s`` (str as UTF-8, bytes) padded with NUL bytes to the slot's size, which
the reader strips. Stripping would lose a value's own trailing NULs, so proctor
writes such a value as ``<length>s<rest>x`` (``3s5x``): exactly its bytes, then
padding. The stdlib reads that form too (and strips, as it does for everything).
"""

from __future__ import annotations

import itertools
import struct
import types
from collections.abc import Iterable, Iterator

from .._core._integers import integral
from ._shm import SharedMemory

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (with re and enum) is milliseconds of a spawned child's start
    from typing import Any

__all__ = ("ShareableList",)

_ENCODING = "utf-8"
_SLOT = 8  # a number's slot, and the unit of a text slot's size
_FORMAT_SIZE = 8  # bytes of each item's format string

# The kind codes (the stdlib's "back transforms").
_PLAIN, _STR, _BYTES, _NONE = 0, 1, 2, 3

_INT_FORMAT, _FLOAT_FORMAT = "q", "d"
_BOOL_FORMAT = "xxxxxxx?"
_NONE_FORMAT = "xxxxxx?x"

_WORD = struct.Struct("q")


def _kind(value: Any) -> tuple[int, str | None]:
    """The kind code of ``value`` and its format (None: text, sized by its slot)."""
    # bool before int: True is an int too.
    if value is None:
        return _NONE, _NONE_FORMAT
    if isinstance(value, bool):
        return _PLAIN, _BOOL_FORMAT
    if isinstance(value, int):
        return _PLAIN, _INT_FORMAT
    if isinstance(value, float):
        return _PLAIN, _FLOAT_FORMAT
    if isinstance(value, str):
        return _STR, None
    if isinstance(value, bytes):
        return _BYTES, None
    raise TypeError(
        f"a ShareableList holds None, int, float, bool, str and bytes, not "
        f"{type(value).__name__}: {value!r}"
    )


def _text_format(data: bytes, capacity: int) -> str:
    """The format that stores ``data`` in a text slot of ``capacity`` bytes."""
    if not data.endswith(b"\0"):
        return f"{capacity}s"  # the stdlib's form: padded, the padding stripped on reading
    # Exact length: a reader must not strip the value's own NULs. Ends with "x", so
    # that a stdlib writer sizes its next value by the slot, not by this format.
    for form in (f"{len(data)}s{capacity - len(data)}x", f"{len(data)}s0x"):
        if len(form) <= _FORMAT_SIZE:
            return form
    raise ValueError(
        f"a str or bytes value of {len(data)} bytes that ends with NUL bytes cannot be "
        "stored exactly in a ShareableList (its format would not fit in 8 characters); "
        "strip the NULs, or store it in a SharedMemory"
    )


def _text_slot(item: str | bytes) -> int:
    """The size of the slot a str or bytes item is created with."""
    # The stdlib's size: the next multiple of 8 above len(item) -- characters, for a
    # str -- which the same list made by the stdlib would have (and its format, as
    # the stdlib's own test checks). A str whose UTF-8 is longer than that gets the
    # room it needs; the stdlib's would silently cut it.
    size = _SLOT * (len(item) // _SLOT + 1)
    if isinstance(item, str):
        length = len(item.encode(_ENCODING))
        if length > size:
            size = _SLOT * (length // _SLOT + 1)
    return size


def _capacity_format(capacity: int) -> str:
    form = f"{capacity}s"
    if len(form) > _FORMAT_SIZE:
        raise ValueError(
            f"a str or bytes item of {capacity - _SLOT} bytes or more is too large for a "
            "ShareableList (its format must fit in 8 characters, as in the stdlib); "
            "store it in a SharedMemory"
        )
    return form


class ShareableList:
    """A fixed-length list of ``None``/``int``/``float``/``bool``/``str``/``bytes``
    in shared memory, readable and writable by every process that attaches.

    ``ShareableList(sequence)`` creates it (in a new :class:`SharedMemory`);
    ``ShareableList(name=...)`` attaches to an existing one, made by proctor or by
    ``multiprocessing.shared_memory`` (the layout is the same). Its lifetime is its
    segment's: see ``SharedMemory``.

    Args:
        sequence: the initial items (creates a new list; ``None`` with no name
            creates an empty one), or ``None`` to attach.
        name: the segment's name: chosen for a new list when ``None``; required to
            attach.

    Raises:
        TypeError: for an item of another type.
        ValueError: for an int outside 64 bits, a str or bytes item too large for
            the layout (about 10 MB), or a segment that does not hold a ShareableList.

    Note:
        A str or bytes value that ends with NUL bytes keeps them (the stdlib's
        list strips them: a known bug, gh-106939); a stdlib program reading it
        still strips them. ``format`` shows such an item as ``3s5x`` (its length,
        then padding) where the stdlib would show ``8s``. There is no lock; use a
        ``proctor.Lock`` when several processes update the same item.
    """

    __class_getitem__: classmethod[Any, [Any], types.GenericAlias] = classmethod(types.GenericAlias)

    def __init__(self, sequence: Iterable[Any] | None = None, *, name: str | None = None) -> None:
        if sequence is None and name is not None:
            self._adopt(SharedMemory(name))
            return
        items = list(sequence or ())
        kinds = [_kind(item) for item in items]
        offsets = [0]
        for item, (_, form) in zip(items, kinds, strict=True):
            size = _SLOT
            if form is None:
                size = _text_slot(item)
                _capacity_format(size)
            offsets.append(offsets[-1] + size)
        count = len(items)
        data_start = _SLOT * (count + 2)
        shm = SharedMemory(
            name, create=True, size=data_start + offsets[-1] + (_FORMAT_SIZE + 1) * count
        )
        struct.pack_into(f"{count + 2}q", shm.buf, 0, count, *offsets)
        self._setup(shm, offsets)
        try:
            for index, item in enumerate(items):
                self[index] = item
        except BaseException:
            shm.close()
            shm.unlink()
            raise

    def _setup(self, shm: SharedMemory, offsets: list[int]) -> None:
        self._shm = shm
        self._count = len(offsets) - 1
        self._offsets = offsets
        self._data = _SLOT * (self._count + 2)
        self._formats = self._data + offsets[-1]
        self._kinds = self._formats + _FORMAT_SIZE * self._count

    def _adopt(self, shm: SharedMemory) -> None:
        buf = shm.buf
        size = len(buf)
        count = _WORD.unpack_from(buf, 0)[0] if size >= _SLOT else -1
        offsets: list[int] = []
        if count >= 0 and _SLOT * (count + 2) <= size:
            offsets = list(struct.unpack_from(f"{count + 1}q", buf, _SLOT))
        valid = (
            bool(offsets)
            and offsets[0] == 0
            and all(a <= b for a, b in itertools.pairwise(offsets))
            and _SLOT * (count + 2) + offsets[-1] + (_FORMAT_SIZE + 1) * count <= size
        )
        if not valid:
            shm.close()
            raise ValueError(
                f"shared memory segment {shm.name!r} does not hold a ShareableList "
                "(its header does not describe a list that fits in it)"
            )
        self._setup(shm, offsets)

    @property
    def shm(self) -> SharedMemory:
        """The segment that holds the list."""
        return self._shm

    @property
    def format(self) -> str:
        """The ``struct`` formats of the items, joined (as the stdlib's ``format``)."""
        return "".join(self._get_packing_format(index) for index in range(self._count))

    def _position(self, index: int) -> int:
        if index.__class__ is not int:
            index = integral(index)
        if not isinstance(index, int):
            raise TypeError(f"ShareableList indices must be integers, not {type(index).__name__}")
        position = index + self._count if index < 0 else index
        if not 0 <= position < self._count:
            raise IndexError(f"ShareableList index {index} out of range (length {self._count})")
        return position

    def _get_packing_format(self, index: int) -> str:
        """The ``struct`` format item ``index`` is stored with (the stdlib's name)."""
        position = self._position(index)
        raw = struct.unpack_from("8s", self._shm.buf, self._formats + _FORMAT_SIZE * position)
        return raw[0].rstrip(b"\0").decode(_ENCODING)

    def __getitem__(self, index: int) -> Any:
        position = self._position(index)
        buf = self._shm.buf
        start = self._formats + _FORMAT_SIZE * position
        form = buf[start : start + _FORMAT_SIZE].tobytes().rstrip(b"\0")  # (struct takes bytes)
        kind = buf[self._kinds + position]
        try:
            (value,) = struct.unpack_from(form, buf, self._data + self._offsets[position])
        except (struct.error, ValueError):
            raise ValueError(
                f"item {index} of ShareableList {self._shm.name!r} has the format "
                f"{form.decode(_ENCODING, 'replace')!r}, which does not describe one value: "
                "the segment was not written as a ShareableList"
            ) from None
        if kind == _NONE:
            return None
        if kind in (_STR, _BYTES):
            if form.endswith(b"s"):  # padded to its slot: the padding goes
                value = value.rstrip(b"\0")
            return value.decode(_ENCODING) if kind == _STR else value
        return value

    def __setitem__(self, index: int, value: Any) -> None:
        position = self._position(index)
        kind, form = _kind(value)
        buf = self._shm.buf
        offset = self._data + self._offsets[position]
        if form is None:
            data = value.encode(_ENCODING) if kind == _STR else value
            capacity = self._offsets[position + 1] - self._offsets[position]
            if len(data) > capacity:
                raise ValueError(
                    f"{value!r} exceeds available storage: it needs {len(data)} bytes and "
                    f"item {index} of this ShareableList holds at most {capacity} (the "
                    "list's shape is fixed when it is created)"
                )
            form = _text_format(data, capacity)
            struct.pack_into(f"{capacity}s", buf, offset, data)
        else:
            try:
                # Packed first, then copied: pack_into zeroes the slot before its
                # range check fails, and a refused value must leave the item as it was.
                packed = struct.pack(form, False if value is None else value)
            except struct.error:
                raise ValueError(
                    f"{value!r} does not fit in a ShareableList int (64-bit signed)"
                ) from None
            buf[offset : offset + len(packed)] = packed
        struct.pack_into("8s", buf, self._formats + _FORMAT_SIZE * position, form.encode(_ENCODING))
        buf[self._kinds + position] = kind

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
            return f"<{type(self).__name__} name={self._shm.name!r} closed>"
        return f"{type(self).__name__}({list(self)!r}, name={self._shm.name!r})"

    def __reduce__(self):
        return (_rebuild, (self._shm,))


def _rebuild(shm: SharedMemory) -> ShareableList:
    shareable = ShareableList.__new__(ShareableList)
    shareable._adopt(shm)
    return shareable
