"""Queue, SimpleQueue, JoinableQueue: items live in shared memory, not in the producer.

::

      producer (any process)                     shared by every process holding the queue
      ──────────────────────                     ─────────────────────────────────────────
      put(obj)                                   ┌ ring: anonymous shared memory (memfd) ─┐
        pickle (protocol 5) ── fails? raise now  │ head tail count next_id unfinished ... │
        buffers >= OOB_THRESHOLD ─▶ memfds       │ [frame][frame][frame] ...  (circular)  │
        lock ─┬─ room? ─ mailbox.send(id, fds) ─▶└────────────────────────────────────────┘
              │          ring.put(pickle)        mailbox: Unix datagram socket pair; the
              │          wake a getter if any      kernel holds spilled buffers' memfds
              └─ no room: wait on "not_full"     lock: proctor Lock (taken over from a
                                                   dead holder; the ring is then repaired)
      consumer (any process)                     not_empty / not_full / all_done: OS
      ──────────────────────                       semaphores used as wake-up hints
      get()
        lock ─┬─ count > 0? ─ ring.get() ─ mailbox.recv(id) ─▶ unpickle, buffers mapped
              └─ empty: wait on "not_empty" (in slices, so a lost wake-up costs 0.1 s)

Why this shape:

* No feeder thread: ``put()`` returns once the item is in shared memory, so
  ``qsize()``, ``empty()`` and ``full()`` are exact in every process at that moment,
  an unpicklable item raises in the caller, and a producer that exits -- even by
  SIGKILL right after ``put()`` -- leaves its items gettable. Nothing to join.
* Large buffers (numpy arrays, bytearrays: pickle protocol 5 out-of-band buffers)
  travel as memfds through the mailbox: one copy in, none out; the consumer's
  array is a writable view of memory the kernel frees when the array is gone.
* Every piece is reclaimed by the kernel when the last process holding the queue
  exits: the ring and spilled buffers have no name; only the semaphores do, and
  the resource reaper removes those.
* A process killed while holding the lock leaves the ring consistent up to one
  count, which the next holder recomputes (``Ring.repair``); a consumer killed in
  ``get()`` loses at most the item it was taking.
"""

from __future__ import annotations

import array
import mmap
import os
import pickle
import queue as _stdlib_queue
import socket
import struct
import time
from collections import deque
from collections.abc import Iterable

from . import _reduction, _serialization
from ._anonmem import AnonymousMemory
from ._lock import CHECK_INTERVAL, Lock
from ._ring import HEADER_SIZE, Ring
from ._semlock import SEM_VALUE_MAX, NamedSemaphore
from ._timeout import check_timeout as _check_timeout
from ._wire import fds_from, memfd_with

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("Empty", "Full", "JoinableQueue", "Queue", "SimpleQueue")

Empty = _stdlib_queue.Empty
Full = _stdlib_queue.Full

#: Bytes of pickled items a queue holds in shared memory. Pages are allocated
#: only when touched, so an idle or small queue costs nearly nothing.
DEFAULT_CAPACITY = 64 * 1024 * 1024
#: Out-of-band pickle buffers at least this large travel as memfds (zero-copy on
#: the way out); smaller ones are cheaper to copy through the ring.
OOB_THRESHOLD = 64 * 1024
#: A pickle larger than capacity // SPILL_FRACTION is spilled to a memfd too, so
#: one item can never hog the ring.
SPILL_FRACTION = 4

# Frame flags.
_SPILLED_BUFFERS = 1  # memfds for out-of-band buffers follow in the mailbox
_SPILLED_PICKLE = 2  # the pickle itself is the first of those memfds
_BATCH = 4  # the pickle is a list of the frame's items (put_many)

#: How long a getter watches an empty queue before it sleeps: about the cost of
#: one sleep and wake-up between cores on a VM, so spinning never costs more.
SPIN_SECONDS = 50e-6

#: Non-blocking lock attempts (about 2 us) of put()/get()'s fast path before the
#: general path, whose lock wait may sleep: a sleep and wake-up costs far more.
FAST_TRIES = 40

#: Items pickled together into one frame by put_many on an unbounded queue: one
#: pickle.dumps of a list is far cheaper than one per item.
BATCH_ITEMS = 4096  # well under the 2**24 items a frame can count

_MAILBOX_ID = struct.Struct("<Q")
_MEMFD_NAME = "proctor-queue-item"
_dumps = pickle.dumps
# Objects that can never hold an out-of-band buffer: pickled directly, no callback.
_SCALARS = frozenset({int, float, str, bool, type(None), complex})
_MAX_FDS = 253


class _QueueLock(Lock):
    """The queue's lock: a dead holder's lock is taken over silently.

    The queue repairs its ring after a takeover (see ``Queue._acquire``), so there
    is nothing half-updated for the user to hear about.
    """

    __slots__ = ()
    _warn_on_takeover = False


class _Shared:
    """The OS objects behind one queue; every handle in every process has the same."""

    def __init__(self, capacity: int, joinable: bool) -> None:
        self.memory = AnonymousMemory(HEADER_SIZE + capacity)
        self.lock = _QueueLock()
        self.not_empty = NamedSemaphore(0, SEM_VALUE_MAX)
        self.not_full = NamedSemaphore(0, SEM_VALUE_MAX)
        self.all_done = NamedSemaphore(0, SEM_VALUE_MAX) if joinable else None
        send_end, recv_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        send_end.setblocking(False)
        recv_end.setblocking(False)
        self.mailbox_send = send_end
        self.mailbox_recv = recv_end

    def __del__(self) -> None:
        # A queue dropped without close(): the mailbox goes quietly, as the
        # memory and semaphores do through their own finalizers.
        for name in ("mailbox_send", "mailbox_recv"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close()


class Queue:
    """A process-shared FIFO queue: ``multiprocessing.Queue``, exact and never stuck.

    Args:
        maxsize: the most items the queue holds; ``<= 0`` means no item limit
            (the queue still holds at most ``capacity`` bytes of pickled items).
        capacity: bytes of shared memory for pickled items (keyword-only).

    Raises:
        TypeError: for a non-integer ``maxsize`` or ``capacity``.
        ValueError: for a ``capacity`` below 4 KiB.

    Note:
        There is no feeder thread: ``put()`` stores the item in shared memory
        before it returns. ``join_thread()`` and ``cancel_join_thread()`` exist
        for compatibility and do nothing; a producer never needs to be drained
        before it can exit, and ``qsize()`` is exact on every platform.
    """

    _joinable = False

    def __init__(self, maxsize: int = 0, *, capacity: int = DEFAULT_CAPACITY) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__} ({maxsize!r})")
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int number of bytes, not {capacity!r}")
        if capacity < 4096:
            raise ValueError(f"capacity must be at least 4096 bytes, not {capacity}")
        self._setup(max(maxsize, 0), _Shared(capacity, self._joinable))

    def _setup(self, maxsize: int, shared: _Shared) -> None:
        self._maxsize = maxsize
        self._shared = shared
        self._ring = Ring(memoryview(shared.memory))
        self._lock = shared.lock
        self._closed = False
        self._spill_limit = self._ring.capacity // SPILL_FRACTION
        # The decoded items of the batch frame at the head of the ring, so that
        # getting them one by one unpickles the batch once: (frame id, items).
        self._batch_cache: tuple[int, list] = (-1, [])
        # Items this handle took but has not returned yet, because an item
        # before them could not be unpickled (see _decode_all).
        self._pending: deque[Any] = deque()

    # -- sharing with children ------------------------------------------------------

    def __reduce__(self) -> tuple:
        shared = self._shared
        send_token = _reduction.fd_token(shared.mailbox_send.fileno(), type(self).__name__)
        recv_token = _reduction.fd_token(shared.mailbox_recv.fileno(), type(self).__name__)
        return (
            _rebuild_queue,
            (
                type(self),
                self._maxsize,
                shared.memory,
                shared.lock,
                shared.not_empty,
                shared.not_full,
                shared.all_done,
                send_token,
                recv_token,
            ),
        )

    # -- the stdlib API -------------------------------------------------------------------

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` into the queue.

        Args:
            obj: any picklable object (lambdas and ``__main__`` functions included).
            block: wait for room when the queue is full.
            timeout: with ``block``, wait at most this many seconds.

        Raises:
            queue.Full: when there is no room (at once, or after ``timeout``).
            TypeError, pickle.PicklingError: when ``obj`` cannot be pickled;
                nothing is put.
            ValueError: when this queue handle was closed.
        """
        if self._closed:
            self._check_open("put")
        if timeout is not None:
            _check_queue_timeout(timeout)  # bad values fail even when there is room
        if type(obj) in _SCALARS:
            payload = _dumps(obj, 5)
            if self._put_fast(payload):
                return
            # The general path reuses the pickle (a huge string still spills).
            if len(payload) <= self._spill_limit:
                item = _Encoded(payload, [], 0)
            else:
                item = _encode(obj, self._spill_limit)
        else:
            item = _encode(obj, self._spill_limit)
            if not item.fds and self._put_fast(item.payload):
                return
        try:
            self._put_items([item], block, _deadline(block, timeout))
        finally:
            item.close()

    def _put_fast(self, payload: bytes) -> bool:
        """The common case in one go: lock free (soon), room in the ring. Else False."""
        lock = self._lock
        if not _try_briefly(lock):
            return False
        lock._became_owner()
        ring = self._ring
        wake = False
        try:
            if lock._w[1] != ring.get_field(Ring.REPAIRED):
                return False  # the general path repairs the ring first
            if len(payload) > self._spill_limit or not ring.try_put_one(payload, self._maxsize):
                return False  # the general path spills, waits, or raises Full
            if self._joinable:
                ring.add_to_field(Ring.UNFINISHED, 1)
            wake = ring.get_field(Ring.GETTERS) > 0
        finally:
            lock.release()
        if wake:
            self._shared.not_empty.sem.release()
        return True

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, block=False)``."""
        self.put(obj, False)

    def put_many(
        self, objs: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        """Put every object of ``objs``, in order, taking the lock as few times as possible.

        Every object is pickled first, so an unpicklable one raises before any is
        put. With a bounded queue the objects go in as room appears; on timeout,
        ``queue.Full`` is raised and ``args[1]`` of the error tells how many went in.
        """
        self._check_open("put")
        objs = list(objs)
        if self._maxsize:
            # A bounded queue counts items one by one against maxsize.
            items = [_encode(obj, self._spill_limit) for obj in objs]
        else:
            items = _encode_batches(objs, self._spill_limit)
        try:
            self._put_items(items, block, _deadline(block, timeout))
        finally:
            for item in items:
                item.close()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item.

        Raises:
            queue.Empty: when there is none (at once, or after ``timeout``).
            ValueError: when this queue handle was closed.
        """
        if self._closed:
            self._check_open("get")
        if timeout is not None:
            _check_queue_timeout(timeout)  # bad values fail even when an item is there
        if self._pending:
            return self._take_pending(1)[0]
        if block and not self._ring.count:
            # Watch an empty queue without its lock first: taking the lock
            # only to find nothing slows down the producer that is about to
            # put something.
            _spin_until_items(self._ring, _deadline(block, timeout))
        found, value = self._get_fast()
        if found:
            return value
        return self._get_items(1, block, _deadline(block, timeout))[0]

    def _get_fast(self) -> tuple[bool, Any]:
        """The common case: lock free (soon), a plain item at the head. Else (False, None)."""
        lock = self._lock
        if not _try_briefly(lock):
            return False, None
        lock._became_owner()
        ring = self._ring
        try:
            if lock._w[1] != ring.get_field(Ring.REPAIRED):
                return False, None
            payload = ring.try_get_one()
            if payload is None:
                return False, None  # empty, batches, spilled items: the general path
            wake = ring.get_field(Ring.PUTTERS) > 0
        finally:
            lock.release()
        if wake:
            self._shared.not_full.sem.release()
        return True, pickle.loads(payload)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    def get_many(self, max_items: int, timeout: float | None = None) -> list[Any]:
        """Wait for at least one item, then return up to ``max_items`` of them, oldest first.

        Raises:
            queue.Empty: when no item arrives within ``timeout`` seconds.
            TypeError, ValueError: for a ``max_items`` that is not a positive int.
        """
        self._check_open("get")
        if isinstance(max_items, bool) or not isinstance(max_items, int):
            raise TypeError(f"max_items must be an int, not {max_items!r}")
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        return self._get_items(max_items, True, _deadline(True, timeout))

    def qsize(self) -> int:
        """The number of items in the queue, exact when ``put()``/``get()`` return."""
        self._check_open("qsize")
        return self._ring.count + len(self._pending)

    def empty(self) -> bool:
        """Whether the queue holds no item."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether a bounded queue holds ``maxsize`` items."""
        return self._maxsize > 0 and self.qsize() >= self._maxsize

    def __len__(self) -> int:
        return self.qsize()

    def __bool__(self) -> bool:
        """True while the queue holds items, so ``while q: q.get()`` drains it.

        Note:
            ``multiprocessing.Queue`` is always true; proctor's is true only
            when it is not empty.
        """
        return self.qsize() > 0

    def close(self) -> None:
        """Stop using the queue from this process and release its OS handles here.

        Idempotent. Items already put stay in the queue for the other processes;
        the shared memory and semaphores go once no process holds the queue.
        """
        if self._closed:
            return
        self._closed = True
        shared = self._shared
        self._ring.release()
        shared.mailbox_send.close()
        shared.mailbox_recv.close()
        for hint in (shared.not_empty, shared.not_full, shared.all_done):
            if hint is not None:
                hint.close()
        shared.lock.close()
        shared.memory.close()

    def join_thread(self) -> None:
        """Compatibility no-op: proctor queues have no feeder thread to join.

        Raises:
            ValueError: when the queue was not closed first, as with multiprocessing.
        """
        if not self._closed:
            raise ValueError(f"join_thread() needs close() first: {self!r} is not closed")

    def cancel_join_thread(self) -> None:
        """Compatibility no-op: nothing is ever left in a feeder thread to lose."""

    @property
    def maxsize(self) -> int:
        return self._maxsize

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"qsize={self._ring.count}"
        bound = f" maxsize={self._maxsize}" if self._maxsize else ""
        return f"<proctor.{type(self).__name__} {state}{bound}>"

    # -- machinery ------------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise ValueError(
                f"cannot {what}: this {type(self).__name__} was closed in this process"
            )

    def _acquire(self, deadline: float | None) -> bool:
        lock = self._lock
        if lock._try(False):
            lock._became_owner()
        else:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not lock.acquire(True, remaining):
                return False
        recoveries = lock._w[lock._RECOVERIES]
        ring = self._ring
        if recoveries != ring.get_field(Ring.REPAIRED):
            ring.repair()
            ring.set_field(Ring.REPAIRED, recoveries)
        return True

    def _room_for(self, item: _Encoded) -> bool:
        ring = self._ring
        if self._maxsize and ring.count + item.items > self._maxsize:
            return False
        return ring.free() >= ring.frame_size(len(item.payload))

    def _put_items(self, items: list[_Encoded], block: bool, deadline: float | None) -> None:
        ring = self._ring
        shared = self._shared
        done = 0
        waiting = False
        while True:
            if not self._acquire(deadline):
                raise Full("timed out waiting for the lock of a full queue", done)
            wake_getters = 0
            try:
                if waiting:
                    ring.add_to_field(Ring.PUTTERS, -1)
                    waiting = False
                while done < len(items) and self._room_for(items[done]):
                    item = items[done]
                    if item.fds and not _mail(shared.mailbox_send, ring.next_id, item.fds):
                        break  # the mailbox is full: wait like for a full ring
                    ring.put(item.payload, item.flags, item.items)
                    if self._joinable:
                        ring.add_to_field(Ring.UNFINISHED, item.items)
                    done += 1
                wake_getters = min(ring.get_field(Ring.GETTERS), done)
                if done == len(items):
                    break
                if not block:
                    raise Full(f"the queue is full ({ring.count} items)", done)
                ring.add_to_field(Ring.PUTTERS, 1)
                waiting = True
            finally:
                self._lock.release()
                for _ in range(wake_getters):
                    shared.not_empty.sem.release()
            if not _wait_hint(shared.not_full, deadline):
                self._unwait(Ring.PUTTERS)
                raise Full(f"timed out: the queue stayed full ({ring.count} items)", done)

    def _get_items(self, max_items: int, block: bool, deadline: float | None) -> list[Any]:
        if self._pending:
            return self._take_pending(max_items)
        ring = self._ring
        shared = self._shared
        waiting = False
        spun = False
        while True:
            if not self._acquire(deadline):
                raise Empty("timed out waiting for the lock of the queue")
            # In order: lists of items already decoded (from batches), a
            # _Failed batch, and (payload, flags, fds) tuples still to decode.
            got: list[Any] = []
            count = 0
            wake_putters = 0
            try:
                if waiting:
                    ring.add_to_field(Ring.GETTERS, -1)
                    waiting = False
                while count < max_items and ring.count > 0:
                    length, flags, items, taken, message_id = ring.head_frame()
                    if flags & _BATCH:
                        cached_id, values = self._batch_cache
                        if cached_id != message_id:
                            try:
                                values = pickle.loads(ring.head_payload(length))
                            except Exception as exc:
                                # Its items cannot be rebuilt here: take them
                                # all, or they would block the queue for ever.
                                ring.consume(items - taken, length, items, taken, message_id)
                                if hasattr(exc, "add_note"):  # Python 3.11+
                                    exc.add_note(
                                        f"proctor: {items - taken} items put together by "
                                        "put_many() could not be unpickled and are lost"
                                    )
                                got.append(_Failed(exc))
                                count += items - taken
                                continue
                            self._batch_cache = (message_id, values)
                        n = min(items - taken, max_items - count)
                        got.append(values[taken : taken + n])
                        count += n
                        ring.consume(n, length, items, taken, message_id)
                        if taken + n >= items:
                            self._batch_cache = (-1, [])
                    else:
                        payload = ring.head_payload(length)
                        ring.consume(1, length, 1, 0, message_id)
                        fds = _unmail(shared.mailbox_recv, message_id) if flags else []
                        got.append((payload, flags, fds))
                        count += 1
                if got:
                    wake_putters = min(ring.get_field(Ring.PUTTERS), count)
                elif not block:
                    raise Empty("the queue is empty")
                elif spun:
                    ring.add_to_field(Ring.GETTERS, 1)
                    waiting = True
            finally:
                self._lock.release()
            if not got and not spun:
                # Watch the count (no lock needed to read it) for a few
                # microseconds before sleeping: a producer on another core is
                # usually that close, and a sleep and wake-up cost far more.
                spun = True
                if _spin_until_items(ring, deadline):
                    spun = False
                continue
            if got:
                for _ in range(wake_putters):
                    shared.not_full.sem.release()
                if len(got) == 1 and type(got[0]) is list:
                    return got[0]
                return self._decode_all(got, max_items)
            if not _wait_hint(shared.not_empty, deadline):
                self._unwait(Ring.GETTERS)
                raise Empty("timed out: the queue stayed empty")

    def _decode_all(self, got: list[Any], max_items: int) -> list[Any]:
        """Rebuild taken items in order. An item that fails to unpickle raises
        in the get() that reaches it, alone: items taken with it wait in this
        handle for the next get(), so none is lost."""
        decoded: list[Any] = []
        for entry in got:
            if type(entry) is list:
                decoded.extend(entry)
            elif type(entry) is _Failed:
                decoded.append(entry)
            else:
                try:
                    decoded.append(_decode(*entry))
                except Exception as exc:
                    decoded.append(_Failed(exc))
        self._pending.extend(decoded)
        return self._take_pending(max_items)

    def _take_pending(self, max_items: int) -> list[Any]:
        pending = self._pending
        head = pending[0]
        if type(head) is _Failed:
            pending.popleft()
            raise head.error
        result: list[Any] = []
        while pending and len(result) < max_items and type(pending[0]) is not _Failed:
            result.append(pending.popleft())
        return result

    def _unwait(self, field: int) -> None:
        if self._acquire(None):
            try:
                self._ring.add_to_field(field, -1)
            finally:
                self._lock.release()


class SimpleQueue(Queue):
    """``multiprocessing.SimpleQueue``: ``put``, ``get``, ``empty``, ``close``, unbounded."""

    def __init__(self, *, capacity: int = DEFAULT_CAPACITY) -> None:
        super().__init__(0, capacity=capacity)


class JoinableQueue(Queue):
    """A ``Queue`` with ``task_done()`` and ``join()``, as ``multiprocessing.JoinableQueue``."""

    _joinable = True

    def task_done(self) -> None:
        """Mark one item got from the queue as processed.

        Raises:
            ValueError: when called more times than items were put.
        """
        self._check_open("task_done")
        all_done = self._shared.all_done
        if all_done is None:  # never: a JoinableQueue always makes one (_joinable)
            raise RuntimeError("this JoinableQueue has no all_done semaphore")
        ring = self._ring
        self._acquire(None)
        try:
            if ring.get_field(Ring.UNFINISHED) <= 0:
                raise ValueError("task_done() called too many times")
            left = ring.add_to_field(Ring.UNFINISHED, -1)
            joiners = ring.get_field(Ring.JOINERS) if left == 0 else 0
        finally:
            self._lock.release()
        for _ in range(joiners):
            all_done.sem.release()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every item put has been marked done with ``task_done()``.

        Returns:
            True when all items are done; False when ``timeout`` passed first.
        """
        self._check_open("join")
        all_done = self._shared.all_done
        if all_done is None:  # never: a JoinableQueue always makes one (_joinable)
            raise RuntimeError("this JoinableQueue has no all_done semaphore")
        deadline = _deadline(True, timeout)
        ring = self._ring
        waiting = False
        while True:
            self._acquire(None)
            try:
                if waiting:
                    ring.add_to_field(Ring.JOINERS, -1)
                    waiting = False
                if ring.get_field(Ring.UNFINISHED) <= 0:
                    return True
                ring.add_to_field(Ring.JOINERS, 1)
                waiting = True
            finally:
                self._lock.release()
            if not _wait_hint(all_done, deadline):
                self._unwait(Ring.JOINERS)
                return False


def _rebuild_queue(
    cls: type[Queue],
    maxsize: int,
    memory: AnonymousMemory,
    lock: _QueueLock,
    not_empty: NamedSemaphore,
    not_full: NamedSemaphore,
    all_done: NamedSemaphore | None,
    send_token: int,
    recv_token: int,
) -> Queue:
    shared = _Shared.__new__(_Shared)
    shared.memory, shared.lock = memory, lock
    shared.not_empty, shared.not_full, shared.all_done = not_empty, not_full, all_done
    shared.mailbox_send = socket.socket(fileno=_reduction.take_fd(send_token))
    shared.mailbox_recv = socket.socket(fileno=_reduction.take_fd(recv_token))
    queue = cls.__new__(cls)
    queue._setup(maxsize, shared)
    return queue


# -- waiting ---------------------------------------------------------------------------


def _check_queue_timeout(timeout: Any) -> float | None:
    """A timeout in seconds: None, or a number >= 0 (as ``queue.Queue`` wants)."""
    timeout = _check_timeout(timeout)  # TypeError for non-numbers, ValueError for NaN
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be a non-negative number of seconds, not {timeout}")
    return timeout


def _deadline(block: bool, timeout: Any) -> float | None:
    if not block:
        return time.monotonic()
    timeout = _check_queue_timeout(timeout)
    return None if timeout is None else time.monotonic() + timeout


def _try_briefly(lock: Lock) -> bool:
    """Try the lock a few times without sleeping: the other side holds it for ~1 us."""
    attempt = lock._try
    for _ in range(FAST_TRIES):  # noqa: SIM110 - a loop beats any(genexpr) on this hot path
        if attempt(False):
            return True
    return False


def _spin_until_items(ring: Ring, deadline: float | None) -> bool:
    """Busy-watch the ring's count for up to SPIN_SECONDS; True if items appeared."""
    give_up = time.monotonic() + SPIN_SECONDS
    if deadline is not None:
        give_up = min(give_up, deadline)
    while time.monotonic() < give_up:
        if ring.count:
            return True
    return False


def _wait_hint(hint: NamedSemaphore, deadline: float | None) -> bool:
    """Wait for a wake-up hint, at most CHECK_INTERVAL at a time; False past the deadline.

    A hint may be lost (its waker died) or stale (its waiter gave up): waking to
    look again every CHECK_INTERVAL bounds the first, and looking under the lock
    makes the second harmless.
    """
    if deadline is None:
        hint.sem.acquire(True, CHECK_INTERVAL)
        return True
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    hint.sem.acquire(True, min(remaining, CHECK_INTERVAL))
    return True


# -- items on the wire -----------------------------------------------------------------


class _Failed:
    """An item taken from the queue that could not be unpickled here."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Encoded:
    """One frame to put: the bytes for the ring, memfds for large buffers, item count."""

    __slots__ = ("fds", "flags", "items", "payload")

    def __init__(self, payload: bytes, fds: list[int], flags: int, items: int = 1) -> None:
        self.payload = payload
        self.fds = fds
        self.flags = flags
        self.items = items

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _encode(obj: Any, spill_limit: int) -> _Encoded:
    payload, buffers = _serialization.dumps_oob(obj, OOB_THRESHOLD)
    fds: list[int] = []
    try:
        flags = 0
        if len(payload) > spill_limit:
            fds.append(memfd_with(payload, _MEMFD_NAME))
            payload = b""
            flags |= _SPILLED_PICKLE
        for buffer in buffers:
            fds.append(memfd_with(buffer.raw(), _MEMFD_NAME))
        if len(fds) > _MAX_FDS:
            raise ValueError(
                f"an item with {len(buffers)} large buffers cannot be queued (at most "
                f"{_MAX_FDS}); put fewer, larger arrays, or several items"
            )
        if fds:
            flags |= _SPILLED_BUFFERS
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return _Encoded(payload, fds, flags)


def _encode_batches(objs: list[Any], spill_limit: int) -> list[_Encoded]:
    """Pickle ``objs`` as few frames as possible; items with large buffers go alone."""
    frames: list[_Encoded] = []
    try:
        for start in range(0, len(objs), BATCH_ITEMS):
            chunk = objs[start : start + BATCH_ITEMS]
            frames.extend(_encode_chunk(chunk, spill_limit))
    except BaseException:
        for frame in frames:
            frame.close()
        raise
    return frames


def _encode_chunk(chunk: list[Any], spill_limit: int) -> list[_Encoded]:
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
            return [_Encoded(payload, [], _BATCH, len(chunk))]
        if payload is not None and len(chunk) >= 2:
            half = len(chunk) // 2
            return _encode_chunk(chunk[:half], spill_limit) + _encode_chunk(
                chunk[half:], spill_limit
            )
    return [_encode(obj, spill_limit) for obj in chunk]


class _NotBatchable(Exception):
    """A batch member carries a large buffer: it travels alone, out of band."""


def _decode(payload: bytes, flags: int, fds: list[int]) -> Any:
    if not flags:
        return pickle.loads(payload)
    try:
        maps = [_map(fd) for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)
    if flags & _SPILLED_PICKLE:
        payload, maps = maps[0], maps[1:]
    return pickle.loads(payload, buffers=maps)


def _map(fd: int) -> Any:
    size = os.fstat(fd).st_size
    if size == 0:
        return bytearray()
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    return mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)


# -- the mailbox: memfds held by the kernel between put() and get() --------------------


def _mail(sock: socket.socket, message_id: int, fds: list[int]) -> bool:
    """Send ``fds`` tagged with ``message_id``; False when the mailbox is full."""
    try:
        sock.sendmsg(
            [_MAILBOX_ID.pack(message_id)],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
        )
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        # ETOOMANYREFS: too many descriptors in flight for this user. Waiting
        # for consumers to take some is the right reaction, as for a full queue.
        if exc.errno == getattr(__import__("errno"), "ETOOMANYREFS", -1):
            return False
        raise
    return True


def _unmail(sock: socket.socket, message_id: int) -> list[int]:
    """Receive the descriptors sent for ``message_id``, dropping older orphans.

    An orphan is left by a producer killed between mailing and committing its
    item, or a consumer killed between taking an item and its descriptors; both
    are older than any live item, so they are recognised by their ids.
    """
    while True:
        try:
            data, ancdata, _flags, _addr = sock.recvmsg(
                _MAILBOX_ID.size, socket.CMSG_SPACE(_MAX_FDS * 4)
            )
        except BlockingIOError:
            raise RuntimeError(
                f"queue item {message_id} lost its large buffers: they are not in the "
                "queue's mailbox (was the queue's memory corrupted?)"
            ) from None
        fds = fds_from(ancdata)
        (got,) = _MAILBOX_ID.unpack(data)
        if got == message_id:
            return fds
        for fd in fds:
            os.close(fd)
        if got > message_id:
            raise RuntimeError(
                f"queue item {message_id}'s large buffers are missing (found item {got}'s)"
            )
