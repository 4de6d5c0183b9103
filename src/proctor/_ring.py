"""A byte ring of framed messages in shared memory; the caller provides the locking.

Layout of the shared region (all integers little-endian, 8-byte aligned so that a
reader sees each one whole)::

    offset 0    head      bytes consumed since creation   (advanced by get)
           8    tail      bytes produced since creation   (advanced by put)
           16   count     messages in the ring            (exact: qsize)
           24   next_id   sequence number of the next message
           32   unfinished  JoinableQueue: put() minus task_done()
           40   getters   processes waiting to get        (wake-up hints)
           48   putters   processes waiting to put
           56   joiners   processes waiting in join()
           64   repaired  the lock's recovery count when the ring was last repaired
           128  data      capacity bytes, used circularly

A message is ``<length:u32><flags:u32><id:u64>`` followed by ``length`` bytes,
and may wrap around the end of the data area. ``head`` and ``tail`` only grow;
their difference is the bytes in use.

Commit points: a put writes the frame, then stores ``tail`` (the message now
exists), then ``count``; a get reads the frame, then stores ``head`` (the message
is gone), then ``count``. A process killed in between leaves ``count`` off by one
and nothing else wrong; :meth:`Ring.repair` recounts by walking the frames from
``head`` to ``tail``. It runs when the lock was recovered from a dead holder.
"""

from __future__ import annotations

import struct

__all__ = ("FRAME", "HEADER_SIZE", "Ring")

HEADER_SIZE = 128  # two cache lines; fields past ``repaired`` are spare
FRAME = struct.Struct("<IIQ")

_HEAD, _TAIL, _COUNT, _NEXT_ID, _UNFINISHED, _GETTERS, _PUTTERS, _JOINERS, _REPAIRED = range(9)


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
        return self._fields[_COUNT]

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

    UNFINISHED, GETTERS, PUTTERS, JOINERS, REPAIRED = (
        _UNFINISHED,
        _GETTERS,
        _PUTTERS,
        _JOINERS,
        _REPAIRED,
    )

    # -- messages -------------------------------------------------------------------------

    @staticmethod
    def frame_size(length: int) -> int:
        return FRAME.size + length

    def put(self, payload: bytes | memoryview, flags: int = 0) -> int:
        """Append one message; the caller checked ``free() >= frame_size(len)``.

        Returns the message's id.
        """
        fields = self._fields
        message_id = fields[_NEXT_ID]
        tail = fields[_TAIL]
        self._write(tail, FRAME.pack(len(payload), flags, message_id))
        self._write(tail + FRAME.size, payload)
        fields[_NEXT_ID] = message_id + 1
        fields[_TAIL] = tail + FRAME.size + len(payload)  # commit point
        fields[_COUNT] = fields[_COUNT] + 1
        return message_id

    def peek_frame(self) -> tuple[int, int, int]:
        """(length, flags, id) of the oldest message; the ring must not be empty."""
        return FRAME.unpack(self._read(self._fields[_HEAD], FRAME.size))

    def get(self) -> tuple[bytes, int, int]:
        """Remove the oldest message; return (payload, flags, id)."""
        fields = self._fields
        head = fields[_HEAD]
        length, flags, message_id = FRAME.unpack(self._read(head, FRAME.size))
        if length > self.capacity or head + FRAME.size + length > fields[_TAIL]:
            raise RuntimeError(
                f"queue memory is corrupt: a message of {length} bytes at offset {head}"
            )
        payload = self._read(head + FRAME.size, length)
        fields[_HEAD] = head + FRAME.size + length  # commit point
        fields[_COUNT] = fields[_COUNT] - 1
        return payload, flags, message_id

    def repair(self) -> None:
        """Recount messages after a holder died between a commit and its count update."""
        fields = self._fields
        position, tail, count = fields[_HEAD], fields[_TAIL], 0
        while position < tail:
            length, _flags, _id = FRAME.unpack(self._read(position, FRAME.size))
            position += FRAME.size + length
            count += 1
        fields[_COUNT] = count
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
