"""A byte ring of framed messages in shared memory; the caller provides the locking.

Layout of the shared region (all integers little-endian, 8-byte aligned so that a
reader sees each one whole). What getters write and what putters write sit on
different cache lines, so that a producer and a consumer on two cores do not
take each other's line at every operation::

    offset 0    head      bytes consumed since creation   (getters' line)
           8    got       items consumed since creation
           16   taken     items already taken from the head frame, with its id
           24   getters   processes waiting to get        (wake-up hints)
           32   joiners   processes waiting in join()
           40   repaired  the lock's recovery count when the ring was last repaired
           64   tail      bytes produced since creation   (putters' line)
           72   put       items produced since creation
           80   next_id   sequence number of the next frame
           88   putters   processes waiting to put
           96   unfinished  JoinableQueue: put() minus task_done()
           128  data      capacity bytes, used circularly

The number of items in the ring (``qsize``) is ``put - got``.

A frame is ``<length:u32><meta:u32><id:u64>`` followed by ``length`` bytes, and
may wrap around the end of the data area. ``meta`` holds the frame's flags (top
8 bits) and how many items it carries (low 24 bits): 1, or a batch written by
``put_many``, which getters may consume a few items at a time. ``head`` and
``tail`` only grow; their difference is the bytes in use.

Commit points, each a single 8-byte store: a put writes the frame, then stores
``tail`` (the items now exist), then ``put``; a get that empties the head frame
stores ``head``; one that takes part of a batch stores ``taken`` (the frame's id
and the items taken, in one word, so that it means nothing once ``head`` moves
past that frame); ``got`` follows. A process killed between a commit and the
counter update leaves the count wrong and nothing else; :meth:`Ring.repair`
recounts by walking the frames. It runs when the lock was recovered from a dead
holder.
"""

from __future__ import annotations

import struct

__all__ = ("FRAME", "HEADER_SIZE", "Ring")

HEADER_SIZE = 128  # two cache lines, one per side
FRAME = struct.Struct("<IIQ")

_HEAD, _GOT, _TAKEN, _GETTERS, _JOINERS, _REPAIRED = 0, 1, 2, 3, 4, 5
_TAIL, _PUT, _NEXT_ID, _PUTTERS, _UNFINISHED = 8, 9, 10, 11, 12
_ITEMS_MASK = (1 << 24) - 1
_ID_MASK = (1 << 39) - 1  # with 24 bits of count, the word stays a positive int64


class Ring:
    """Framed messages in a circular byte area; every method expects the lock held.

    Args:
        buffer: the shared region (at least ``HEADER_SIZE`` + 64 bytes), zeroed
            when new.
    """

    def __init__(self, buffer: memoryview) -> None:
        if len(buffer) < HEADER_SIZE + 64:
            raise ValueError(f"a ring needs at least {HEADER_SIZE + 64} bytes, got {len(buffer)}")
        self._buffer = buffer
        self._fields = buffer[:HEADER_SIZE].cast("q")
        # (the ``q`` view of an mmap is aligned: mmaps start on a page)
        self._data = buffer[HEADER_SIZE:]
        self.capacity = len(self._data)

    def release(self) -> None:
        """Let go of the shared memory (so that its mapping can be closed)."""
        self._fields.release()
        self._data.release()
        self._buffer.release()

    # -- header fields: single aligned 8-byte loads and stores --------------------

    @property
    def count(self) -> int:
        fields = self._fields
        got = fields[_GOT]  # first: both only grow, so the difference is never negative
        return fields[_PUT] - got

    @property
    def used(self) -> int:
        return self._fields[_TAIL] - self._fields[_HEAD]

    def free(self) -> int:
        return self.capacity - self.used

    def get_field(self, index: int) -> int:
        return self._fields[index]

    @property
    def next_id(self) -> int:
        return self._fields[_NEXT_ID]

    def set_field(self, index: int, value: int) -> None:
        self._fields[index] = value

    def add_to_field(self, index: int, delta: int) -> int:
        value = self._fields[index] + delta
        self._fields[index] = value
        return value

    UNFINISHED, GETTERS, PUTTERS, JOINERS, REPAIRED, PUT = (
        _UNFINISHED,
        _GETTERS,
        _PUTTERS,
        _JOINERS,
        _REPAIRED,
        _PUT,
    )

    # -- messages -------------------------------------------------------------------------

    @staticmethod
    def frame_size(length: int) -> int:
        return FRAME.size + length

    def put(self, payload: bytes | memoryview, flags: int = 0, items: int = 1) -> int:
        """Append one frame of ``items`` items; the caller checked the room.

        Returns the frame's id.
        """
        fields = self._fields
        message_id = fields[_NEXT_ID]
        tail = fields[_TAIL]
        size = FRAME.size + len(payload)
        start = tail % self.capacity
        header = FRAME.pack(len(payload), (flags << 24) | items, message_id)
        if start + size <= self.capacity:  # the common case: one contiguous copy
            data = self._data
            data[start : start + FRAME.size] = header
            data[start + FRAME.size : start + size] = payload
        else:
            self._write(tail, header)
            self._write(tail + FRAME.size, payload)
        fields[_NEXT_ID] = message_id + 1
        fields[_TAIL] = tail + size  # commit point
        fields[_PUT] = fields[_PUT] + items
        return message_id

    def try_put_one(self, payload: bytes, maxsize: int) -> bool:
        """Put a plain one-item frame if it fits (and ``count < maxsize``, when > 0).

        The hot path of ``Queue.put``: one call instead of several.
        """
        fields = self._fields
        if maxsize and fields[_PUT] - fields[_GOT] >= maxsize:
            return False
        tail = fields[_TAIL]
        size = FRAME.size + len(payload)
        capacity = self.capacity
        if capacity - (tail - fields[_HEAD]) < size:
            return False
        message_id = fields[_NEXT_ID]
        start = tail % capacity
        if start + size > capacity:
            self.put(payload)
            return True
        data = self._data
        data[start : start + FRAME.size] = FRAME.pack(len(payload), 1, message_id)
        data[start + FRAME.size : start + size] = payload
        fields[_NEXT_ID] = message_id + 1
        fields[_TAIL] = tail + size  # commit point
        fields[_PUT] = fields[_PUT] + 1
        return True

    def try_get_one(self) -> bytes | None:
        """Take the head frame if it is a plain one-item frame; else ``None``.

        The hot path of ``Queue.get``; batches and spilled items go the long way.
        """
        fields = self._fields
        head = fields[_HEAD]
        if head == fields[_TAIL]:
            return None
        capacity = self.capacity
        start = head % capacity
        if start + FRAME.size > capacity:
            return None
        length, meta, _message_id = FRAME.unpack_from(self._data, start)
        end = start + FRAME.size + length
        if meta != 1 or end > capacity or head + FRAME.size + length > fields[_TAIL]:
            return None
        payload = self._data[start + FRAME.size : end].tobytes()
        fields[_HEAD] = head + FRAME.size + length  # commit point
        fields[_GOT] = fields[_GOT] + 1
        return payload

    def head_frame(self) -> tuple[int, int, int, int, int]:
        """The oldest frame, not removed: (length, flags, items, items taken, id)."""
        fields = self._fields
        head = fields[_HEAD]
        length, meta, message_id = FRAME.unpack(self._read(head, FRAME.size))
        if length > self.capacity or head + FRAME.size + length > fields[_TAIL]:
            raise RuntimeError(
                f"queue memory is corrupt: a message of {length} bytes at offset {head}"
            )
        taken_word = fields[_TAKEN]
        taken = taken_word & _ITEMS_MASK if taken_word >> 24 == message_id & _ID_MASK else 0
        return length, meta >> 24, meta & _ITEMS_MASK, taken, message_id

    def head_payload(self, length: int) -> bytes:
        """The bytes of the oldest frame (see :meth:`head_frame`)."""
        return self._read(self._fields[_HEAD] + FRAME.size, length)

    def consume(self, n: int, length: int, items: int, taken: int, message_id: int) -> None:
        """Remove ``n`` items of the oldest frame (all that are left: the frame goes)."""
        fields = self._fields
        if taken + n >= items:
            fields[_HEAD] = fields[_HEAD] + FRAME.size + length  # commit point
        else:
            fields[_TAKEN] = ((message_id & _ID_MASK) << 24) | (taken + n)  # commit point
        fields[_GOT] = fields[_GOT] + n

    def get(self) -> tuple[bytes, int, int]:
        """Remove the oldest frame, which must carry one item; return (payload, flags, id)."""
        length, flags, items, taken, message_id = self.head_frame()
        payload = self._read(self._fields[_HEAD] + FRAME.size, length)
        self.consume(items - taken, length, items, taken, message_id)
        return payload, flags, message_id

    def repair(self) -> None:
        """Recount items after a holder died between a commit and its count update."""
        fields = self._fields
        position, tail, count = fields[_HEAD], fields[_TAIL], 0
        first = True
        while position < tail:
            length, meta, message_id = FRAME.unpack(self._read(position, FRAME.size))
            count += meta & _ITEMS_MASK
            if first:
                taken_word = fields[_TAKEN]
                if taken_word >> 24 == message_id & _ID_MASK:
                    count -= taken_word & _ITEMS_MASK
                first = False
            position += FRAME.size + length
        fields[_GOT] = fields[_PUT] - count
        for waiting in (_GETTERS, _PUTTERS, _JOINERS):
            # A dead waiter may have left its mark; an overcount only costs
            # a spurious wake-up, an undercount would cost a missed one.
            fields[waiting] = max(fields[waiting], 0)

    # -- circular copying -----------------------------------------------------------------

    def _write(self, position: int, data: bytes | memoryview) -> None:
        start = position % self.capacity
        first = min(len(data), self.capacity - start)
        self._data[start : start + first] = data[:first]
        if first < len(data):
            self._data[: len(data) - first] = data[first:]

    def _read(self, position: int, length: int) -> bytes:
        start = position % self.capacity
        end = start + length
        if end <= self.capacity:
            return self._data[start:end].tobytes()
        return self._data[start:].tobytes() + self._data[: end - self.capacity].tobytes()
