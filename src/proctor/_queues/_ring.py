"""A byte ring of framed messages in shared memory, with one writer side and one reader side.

Producers (under the queue's put lock) only ever store the *put word*; consumers
(under its get lock) only ever store the *get word*. Each word packs a position
and an item count into one aligned 8-byte integer, so a single store commits a
whole operation: there is no moment at which a process killed mid-operation
leaves the ring half-updated, and nothing to repair afterwards::

    offset 0    get word   got items (mod 2**27) << 36 | head position   (consumers' line)
           8    putters    producers waiting for room (changed under the get lock)
           64   put word   put items (mod 2**27) << 36 | tail position   (producers' line)
           72   next_id    mailbox id of the next spilled frame (put lock)
           80   done       JoinableQueue: task_done() calls (mod 2**27; put lock)
           88   joiners    processes waiting in join() (put lock)
           128  data       capacity bytes, used circularly

Positions run over ``[0, 2 * capacity)``, so that head == tail means empty and
``tail - head == capacity`` means full; the byte offset is the position modulo
``capacity``. The number of items in the ring is ``put - got`` modulo 2**27;
producers treat the ring as full before that could overflow.

A frame is ``<length:u32><meta:u32><seq:u32><mail_id:u32>`` and ``length`` bytes,
and may wrap around the end of the data area. ``meta`` holds flags (top 8 bits)
and how many items the frame carries (low 24 bits): 1, or a batch written by
``put_many``, which getters may take a few items at a time. ``seq`` is the put
count (mod 2**27) before the frame, so the items already taken from the head
frame are ``got - seq``: no separate word to keep in step. ``mail_id`` tags
spilled frames' descriptors in the queue's mailbox, and tells batch frames
apart (a getter caches a decoded batch under its position, seq and mail id).

A JoinableQueue's unfinished count is ``put - done``: a put still commits with
its one store, and only ``task_done()`` writes ``done``.

Memory ordering: a consumer reads the put word without the put lock and then the
frame it covers; a producer reads the get word without the get lock and then
reuses the room it frees. Both rely on total store order (x86: stores become
visible in program order, and loads are not reordered with later stores). On
other CPUs the queue gives both sides the same lock (see ``_queue.SPLIT_LOCKS``),
whose semaphore operations order everything.

Two implementations of the hot paths, ``try_put_one`` and ``try_get_one``: the
methods below, and the C module ``_native`` (``_accel``), which does the same
reads, copies and single store (the other side's word loaded with acquire
ordering, its own stored with release ordering) in one call. A ring uses the
C ones when the module is active (``Ring.impl``); either kind of process can
share a queue with the other.
"""

from __future__ import annotations

import mmap
import struct

from . import _accel

__all__ = ("FRAME", "HEADER_SIZE", "MAX_CAPACITY", "MAX_FRAME", "MAX_ITEMS", "Ring")

HEADER_SIZE = 128  # two cache lines, one per side
FRAME = struct.Struct("<IIII")
_HEADER = FRAME.size

_POSITION_BITS = 36
_POSITION_MASK = (1 << _POSITION_BITS) - 1
_COUNT_MASK = (1 << 27) - 1  # 36 + 27 bits: the word stays a positive int64
_ITEMS_MASK = (1 << 24) - 1

#: Positions run up to 2 * capacity, which must fit the word's position bits.
MAX_CAPACITY = 1 << (_POSITION_BITS - 2)
#: Items the ring holds at once, at most: well inside the count's modulus.
MAX_ITEMS = 1 << 26
#: A frame's length is a u32.
MAX_FRAME = (1 << 32) - 1 - FRAME.size

_pack_frame = FRAME.pack
_unpack_length_meta = struct.Struct("<II").unpack_from

_GET, _PUTTERS = 0, 1
_PUT, _NEXT_ID, _DONE, _JOINERS = 8, 9, 10, 11


class Ring:
    """Framed messages in a circular byte area.

    Methods that read or store the get word expect the get lock held, those
    that store the put word the put lock; ``count`` and ``used`` need neither.

    Args:
        buffer: the shared region (at least ``HEADER_SIZE`` + 64 bytes), zeroed
            when new.
    """

    GET_WORD, PUT_WORD = _GET, _PUT
    PUTTERS, JOINERS = _PUTTERS, _JOINERS

    def __init__(self, memory: mmap.mmap) -> None:
        if len(memory) < HEADER_SIZE + 64:
            raise ValueError(f"a ring needs at least {HEADER_SIZE + 64} bytes, got {len(memory)}")
        # The frames are read and written through the mmap itself: its slices
        # are the cheapest copies Python has (no memoryview in between).
        self._memory = memory
        self._buffer = memoryview(memory)
        self._fields = self._buffer[:HEADER_SIZE].cast("q")
        # (the ``q`` view of an mmap is aligned: mmaps start on a page)
        self.capacity = len(memory) - HEADER_SIZE
        if self.capacity > MAX_CAPACITY:
            raise ValueError(f"a ring holds at most {MAX_CAPACITY} bytes, not {self.capacity}")
        self._span = 2 * self.capacity
        self._core = None
        native = _accel.native
        #: "native" when the C fast paths run on this ring, else "python".
        self.impl = "python"
        if native is not None:
            core = self._core = native.RingCore(memory)
            # Instance attributes: found before the class's pure methods.
            self.try_put_one = core.put_one  # type: ignore[method-assign]
            self.try_get_one = core.get_one  # type: ignore[method-assign]
            self.putters = core.putters  # type: ignore[method-assign]
            self.impl = "native"

    def release(self) -> None:
        """Let go of the shared memory (so that its mapping can be closed)."""
        if self._core is not None:
            self._core.release()
        self._fields.release()
        self._buffer.release()

    # -- the two words and the plain fields -----------------------------------------

    @property
    def count(self) -> int:
        """Items in the ring; exact once the put()/get() that changed it returned."""
        fields = self._fields
        got = fields[_GET] >> _POSITION_BITS  # first: the count is then never too low
        return ((fields[_PUT] >> _POSITION_BITS) - got) & _COUNT_MASK

    @property
    def used(self) -> int:
        fields = self._fields
        head = fields[_GET] & _POSITION_MASK
        return ((fields[_PUT] & _POSITION_MASK) - head) % self._span

    def has_room(self, payload_size: int, items: int, maxsize: int) -> bool:
        """Whether a frame of ``items`` items and ``payload_size`` bytes fits now."""
        count = self.count
        limit = min(maxsize, MAX_ITEMS) if maxsize else MAX_ITEMS
        if count + items > limit and count > 0:
            return False  # (an empty ring takes any batch: a frame holds < 2**24 items)
        return self.capacity - self.used >= _HEADER + payload_size

    @property
    def unfinished(self) -> int:
        """JoinableQueue: items put and not yet marked done (put lock held)."""
        return ((self._fields[_PUT] >> _POSITION_BITS) - self._fields[_DONE]) & _COUNT_MASK

    def mark_done(self) -> int:
        """JoinableQueue: count one ``task_done()``; return the unfinished left (put lock)."""
        self._fields[_DONE] = (self._fields[_DONE] + 1) & _COUNT_MASK
        return self.unfinished

    def putters(self) -> int:
        """Producers registered as waiting for room (get lock held)."""
        return self._fields[_PUTTERS]

    def get_field(self, index: int) -> int:
        return self._fields[index]

    def set_field(self, index: int, value: int) -> None:
        self._fields[index] = value

    def add_to_field(self, index: int, delta: int) -> int:
        value = self._fields[index] + delta
        self._fields[index] = value
        return value

    # -- producers (put lock held) -----------------------------------------------------

    def put(
        self, payload: bytes | memoryview, flags: int = 0, items: int = 1, mail_id: int = 0
    ) -> None:
        """Append one frame of ``items`` items; the caller checked the room.

        ``mail_id`` (from :meth:`next_mail_id`) tags a spilled frame's descriptors.
        """
        fields = self._fields
        word = fields[_PUT]
        put, tail = word >> _POSITION_BITS, word & _POSITION_MASK
        self._write(tail, FRAME.pack(len(payload), (flags << 24) | items, put, mail_id))
        self._write(tail + _HEADER, payload)
        tail = (tail + _HEADER + len(payload)) % self._span
        fields[_PUT] = (((put + items) & _COUNT_MASK) << _POSITION_BITS) | tail  # commit

    def next_mail_id(self) -> int:
        """Reserve the mailbox id of the next spilled frame (before mailing it).

        Stored before the descriptors are mailed, so that a producer killed
        before its commit leaves an id nobody reuses: its orphans stay older
        than any later frame's.
        """
        mail_id = self._fields[_NEXT_ID] + 1
        self._fields[_NEXT_ID] = mail_id
        return mail_id & 0xFFFFFFFF

    def try_put_one(self, payload: bytes, limit: int) -> bool:
        """Put a plain one-item frame if it fits and ``count < limit``; else False.

        The hot path of ``Queue.put``: everything in one call, few operations.
        """
        fields = self._fields
        got_word = fields[_GET]
        word = fields[_PUT]
        put = word >> _POSITION_BITS
        if (put - (got_word >> _POSITION_BITS)) & _COUNT_MASK >= limit:
            return False
        tail = word & _POSITION_MASK
        used = tail - (got_word & _POSITION_MASK)
        if used < 0:
            used += self._span
        capacity = self.capacity
        size = _HEADER + len(payload)
        if capacity - used < size:
            return False
        start = tail if tail < capacity else tail - capacity
        if start + size > capacity:
            self.put(payload)  # wraps around: the general path
            return True
        at = HEADER_SIZE + start
        self._memory[at : at + size] = _pack_frame(len(payload), 1, put, 0) + payload
        tail += size
        if tail >= self._span:
            tail -= self._span
        fields[_PUT] = (((put + 1) & _COUNT_MASK) << _POSITION_BITS) | tail  # commit
        return True

    # -- consumers (get lock held) -----------------------------------------------------

    def try_get_one(self) -> bytes | None:
        """Take the head frame if it is a plain one-item frame; else ``None``.

        The hot path of ``Queue.get``; batches and spilled items go the long way.
        """
        fields = self._fields
        word = fields[_GET]
        head = word & _POSITION_MASK
        if head == fields[_PUT] & _POSITION_MASK:
            return None
        capacity = self.capacity
        start = head if head < capacity else head - capacity
        if start + _HEADER > capacity:
            return None
        memory = self._memory
        at = HEADER_SIZE + start
        length, meta = _unpack_length_meta(memory, at)
        end = at + _HEADER + length
        if meta != 1 or end > HEADER_SIZE + capacity:
            return None
        payload = memory[at + _HEADER : end]
        head += _HEADER + length
        if head >= self._span:
            head -= self._span
        fields[_GET] = ((((word >> _POSITION_BITS) + 1) & _COUNT_MASK) << _POSITION_BITS) | head
        return payload

    def head_frame(self) -> tuple[int, int, int, int, int, int]:
        """The oldest frame, not removed: (length, flags, items, taken, mail id, key).

        ``key`` tells this frame apart from any other that will ever sit at the
        head (a decoded batch is cached under it): position, seq and mail id
        would all have to come round again together.
        """
        fields = self._fields
        word = fields[_GET]
        head = word & _POSITION_MASK
        length, meta, seq, mail_id = FRAME.unpack(self._read(head, _HEADER))
        items = meta & _ITEMS_MASK
        taken = ((word >> _POSITION_BITS) - seq) & _COUNT_MASK
        if _HEADER + length > self.used or not 0 < items <= _ITEMS_MASK or taken >= items:
            raise RuntimeError(
                f"queue memory is corrupt: a frame of {length} bytes and {items} items "
                f"({taken} taken) at position {head}"
            )
        return length, meta >> 24, items, taken, mail_id, (mail_id << 64) | (head << 27) | seq

    def head_payload(self, length: int) -> bytes:
        """The bytes of the oldest frame (see :meth:`head_frame`)."""
        return self._read((self._fields[_GET] & _POSITION_MASK) + _HEADER, length)

    def consume(self, n: int, length: int, items: int, taken: int) -> bool:
        """Take ``n`` items of the oldest frame; return whether the frame went."""
        fields = self._fields
        word = fields[_GET]
        head = word & _POSITION_MASK
        gone = taken + n >= items
        if gone:
            head = (head + _HEADER + length) % self._span
        fields[_GET] = ((((word >> _POSITION_BITS) + n) & _COUNT_MASK) << _POSITION_BITS) | head
        return gone

    # -- circular copying -----------------------------------------------------------------

    def _write(self, position: int, data: bytes | memoryview) -> None:
        start = position % self.capacity
        first = min(len(data), self.capacity - start)
        at = HEADER_SIZE + start
        self._memory[at : at + first] = data[:first]
        if first < len(data):
            self._memory[HEADER_SIZE : HEADER_SIZE + len(data) - first] = data[first:]

    def _read(self, position: int, length: int) -> bytes:
        start = position % self.capacity
        end = start + length
        memory = self._memory
        if end <= self.capacity:
            return memory[HEADER_SIZE + start : HEADER_SIZE + end]
        return (
            memory[HEADER_SIZE + start : HEADER_SIZE + self.capacity]
            + memory[HEADER_SIZE : HEADER_SIZE + end - self.capacity]
        )
