"""Queue, SimpleQueue, JoinableQueue: items live in shared memory, not in the producer.

::

      producer (any process)                    shared by every process holding the queue
      ──────────────────────                    ─────────────────────────────────────────
      put(obj)
        encode: pickle (protocol 5);
          unpicklable? raise now
          buffers >= OOB_THRESHOLD ─▶ memfds
        put lock ─┬─ room? ─ mailbox.send(fds) ─▶ ┌ mailbox: Unix datagram socket pair ┐
                  │                               │ [mail id │ memfds] ...             │
                  │                               └────────────────────────────────────┘
                  │          ring.put ──────────▶ ┌ ring: anonymous shared memory ─────┐
                  │          (one store of        │ get word │ put word │ next_id ...  │
                  │           the put word)       │ [frame][frame][frame] (circular)   │
                  │                               └────────────────────────────────────┘
                  └─ no room: await_room        put lock / get lock: QueueLocks, taken
        post one "items" token per frame          over silently from a dead holder
                                                items: OS semaphore, one token per frame
      consumer (any process)                    room: OS semaphore, handed to a waiting
      ──────────────────────                      producer by the consumer that made room
      get()
        take an "items" token (await_items: try ITEMS_SPIN_TRIES times, ~50 us, then
          sleep through _core._wait.wait_for_post, looking at the ring between slices)
        get lock ── ring.take: one store of the get word ── mailbox.receive(mail id)
        ─▶ decode: unpickle, large buffers mapped from their memfds

The pieces, one module each: ``_ring`` (the frames and the two words),
``_codec`` (an item or a batch to a frame and back), ``_mailbox`` (the
descriptors of spilled buffers), ``_waiting`` (the locks and who wakes whom),
``_aio`` (``aget``/``aput``/``ajoin``: the same paths around an awaited wait).
This module holds the handles that tie them together, and their fast paths.

Why this shape:

* No feeder thread: ``put()`` returns once the item is in shared memory, so
  ``qsize()``, ``empty()`` and ``full()`` are exact in every process at that moment,
  an unpicklable item raises in the caller, and a producer that exits -- even by
  SIGKILL right after ``put()`` -- leaves its items gettable. Nothing to join.
* Producers and consumers take different locks, so a producer and a consumer
  never wait for each other (see ``SPLIT_LOCKS``). Each side commits with one
  8-byte store of its own word (``_ring``), so a process killed anywhere leaves
  the ring consistent: there is nothing to repair, and a consumer killed in
  ``get()`` loses at most the item it was taking.
* The semaphores are hints and the ring is the truth (``_waiting``): every
  wait sleeps through the one wait of every proctor primitive
  (``_core._wait.wait_for_post``), so a lost token is noticed within a slice
  (0.1 s, backing off to 0.5 s in a long wait), and a stale one costs one look.
* Large buffers (numpy arrays, bytearrays) travel as memfds through the
  mailbox: one copy in, none out (``_codec``).
* Every piece is reclaimed by the kernel when the last process holding the queue
  exits: the ring and spilled buffers have no name, and neither do the
  semaphores with the C accelerator on Linux (``_sync._memsem``: blocks of
  anonymous shared memory, so making a queue costs no ``sem_open`` and no word
  to the reaper). Elsewhere the semaphores are named, and the resource reaper
  removes those.
* The hot paths (``put()``/``get()`` of a small item with the lock free and
  room or an item there) are a few C calls in this module, inlined on purpose.
"""

from __future__ import annotations

import _pickle as pickle  # (not pickle.py: with re and enum, milliseconds of a spawned child)
import _thread
import os
from collections import deque
from collections.abc import Iterable

from .._core import _lazy_errors, _runtime
from .._core._anonmem import AnonymousMemory
from .._core._integers import integral
from .._reaper._semlock import SEM_VALUE_MAX, NamedSemaphore, batched_names
from .._sync._memsem import AVAILABLE as MEMORY_SEMAPHORES
from .._sync._memsem import MemorySemaphore
from . import _aio
from ._codec import (
    BATCH,
    SCALARS,
    SPILL_FRACTION,
    Batch,
    Encoded,
    Failed,
    Undecoded,
    decode,
    encode,
    encode_batches,
)
from ._mailbox import Mailbox
from ._ring import HEADER_SIZE, MAX_CAPACITY, MAX_FRAME, MAX_ITEMS, Ring
from ._spares import Spares
from ._waiting import (
    Empty,
    Hint,
    QueueLock,
    acquire,
    await_all_done,
    await_items,
    await_room,
    check_queue_timeout,
    deadline_for,
    hand_room,
    post,
    queue_full,
    try_briefly,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from queue import Full as Full
    from typing import Any

__all__ = ("Empty", "Full", "JoinableQueue", "Queue", "SimpleQueue")


def __getattr__(name: str) -> Any:
    # queue.Full, imported only when asked for (see _waiting.queue_full).
    if name == "Full":
        import queue

        return queue.Full
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Bytes of pickled items a queue holds in shared memory. Pages are allocated
#: only when touched, so an idle or small queue costs nearly nothing.
DEFAULT_CAPACITY = 64 * 1024 * 1024

#: Whether producers and consumers take separate locks. Each side reads the
#: other's word without the other's lock, which is safe where the CPU keeps
#: stores in program order and loads before later stores (x86's total store
#: order). Elsewhere (ARM, including Apple silicon) both sides share one lock,
#: whose semaphore operations are memory barriers.
SPLIT_LOCKS = os.uname().machine.lower() in {"x86_64", "amd64", "i386", "i686", "x86"}

_dumps = pickle.dumps
_loads = pickle.loads

# What _get_cached did with the frame of the item it took.
_FRAME_GONE, _TOKEN_STAYS = 1, 2


class _Shared:
    """The OS objects behind one queue; every handle in every process has the same."""

    put_lock: QueueLock
    get_lock: QueueLock
    items: Hint
    room: Hint
    all_done: Hint | None

    def __init__(self, capacity: int, joinable: bool) -> None:
        self.memory = AnonymousMemory(HEADER_SIZE + capacity)
        if MEMORY_SEMAPHORES:
            # Each semaphore is a block of anonymous shared memory (_sync._memsem):
            # made by a store, no name, nothing for the reaper; the kernel frees it
            # with the last mapping.
            self.put_lock = QueueLock._over(MemorySemaphore(1, 1))
            self.get_lock = QueueLock._over(MemorySemaphore(1, 1)) if SPLIT_LOCKS else self.put_lock
            self.items = MemorySemaphore(0, SEM_VALUE_MAX)
            self.room = MemorySemaphore(0, SEM_VALUE_MAX)
            self.all_done = MemorySemaphore(0, SEM_VALUE_MAX) if joinable else None
        else:
            # Named semaphores, whose names reach the reaper in one message.
            with batched_names((2 if SPLIT_LOCKS else 1) + 2 + joinable):
                self.put_lock = QueueLock()
                self.get_lock = QueueLock() if SPLIT_LOCKS else self.put_lock
                self.items = NamedSemaphore(0, SEM_VALUE_MAX)
                # Only a producer waiting for room, or a join(), sleeps on these:
                # they are made (or opened) by the first process that waits or wakes
                # on them. Most queues never do, and save a sem_open (and a mapping).
                self.room = NamedSemaphore.deferred(SEM_VALUE_MAX)
                self.all_done = NamedSemaphore.deferred(SEM_VALUE_MAX) if joinable else None
        self.mailbox = Mailbox()


class Queue:
    """A process-shared FIFO queue: ``multiprocessing.Queue``, exact and never stuck.

    Args:
        maxsize: the most items the queue holds; ``<= 0`` means no item limit
            (the queue still holds at most ``capacity`` bytes of pickled items,
            and at most 2**26 items).
        capacity: bytes of shared memory for pickled items (keyword-only).
        ctx: keyword-only; ``None`` or any proctor context. Accepted so that a
            subclass written for ``multiprocessing.queues.Queue`` --
            ``super().__init__(maxsize, ctx=multiprocessing.get_context())`` --
            runs once its imports say proctor. A queue works under every start
            method, so the context is not kept.

    Raises:
        TypeError: for a non-integer ``maxsize`` or ``capacity``, or a ``ctx``
            that is not a proctor context.
        ValueError: for a ``capacity`` below 4 KiB or above 16 GiB.

    Note:
        There is no feeder thread: ``put()`` stores the item in shared memory
        before it returns. ``join_thread()`` and ``cancel_join_thread()`` exist
        for compatibility and do nothing; a producer never needs to be drained
        before it can exit, and ``qsize()`` is exact on every platform. So an
        item that cannot be pickled makes ``put()`` raise, where
        ``multiprocessing``'s feeder thread prints the error and drops the item.
        ``close()`` takes effect at once: every later call on this handle,
        ``empty()`` included, raises ``QueueClosedError`` (``multiprocessing``'s
        ``empty()`` still answers on a handle closed before its first ``put()``).
    """

    _joinable = False

    def __init__(
        self, maxsize: int = 0, *, capacity: int = DEFAULT_CAPACITY, ctx: Any = None
    ) -> None:
        _runtime.check_ctx(ctx, type(self).__name__)
        maxsize = integral(maxsize)
        capacity = integral(capacity)
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__} ({maxsize!r})")
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int number of bytes, not {capacity!r}")
        if not 4096 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be from 4096 to {MAX_CAPACITY} bytes, not {capacity}")
        self._setup(max(maxsize, 0), _Shared(capacity, self._joinable))

    def _setup(self, maxsize: int, shared: _Shared) -> None:
        self._maxsize = maxsize
        self._shared = shared
        self._ring = ring = Ring(shared.memory)
        # The ring's fast paths (its C ones when the accelerator is active), bound once.
        self._try_put_one: Callable[[bytes, int], bool] = ring.try_put_one
        self._try_get_one: Callable[[], bytes | None] = ring.try_get_one
        self._putters: Callable[[], int] = ring.putters
        self._item_limit = min(maxsize, MAX_ITEMS) if maxsize else MAX_ITEMS
        self._put_lock = shared.put_lock
        self._get_lock = shared.get_lock
        # Bound once: the fast paths are a few C calls.
        self._take_token = shared.items.sem.acquire
        self._give_token = shared.items.sem.release
        self._closed = False
        self._spill_limit = min(self._ring.capacity // SPILL_FRACTION, MAX_FRAME)
        # The decoded items of the batch frame at the head of the ring, so that
        # getting them one by one unpickles the batch once: (frame key, items).
        self._batch_cache: tuple[int, list] = (-1, [])
        # Items this handle took but has not returned yet, because an item
        # before them could not be unpickled (see _decode_all). They belong to
        # this process: a forked child's copy of them is dropped (_take_pending).
        self._pending: deque[Any] = deque()
        self._pending_pid = os.getpid()
        self._pending_lock = _thread.allocate_lock()
        # Large buffers' memfds kept mapped on both sides, and sent back for reuse.
        self._spares = Spares(shared.mailbox)

    # -- sharing with children ------------------------------------------------------

    # The stdlib's protocol (``__getstate__``/``__setstate__``, not ``__reduce__``),
    # so that a subclass that pickles state of its own the way
    # ``multiprocessing.queues.Queue``'s subclasses do -- ``(super().__getstate__(),
    # self.extra)`` and ``super().__setstate__(state[0])`` -- works as written.

    def __getstate__(self) -> tuple:
        if self._closed:
            raise _lazy_errors.QueueClosedError(
                f"{type(self).__name__} {self!r} was closed in this process (close()), and a "
                "closed handle cannot be passed on: pass the queue before closing it here"
            )
        shared = self._shared
        send_token, recv_token = shared.mailbox.tokens(type(self).__name__)
        get_lock = None if shared.get_lock is shared.put_lock else shared.get_lock
        return (
            self._maxsize,
            shared.memory,
            shared.put_lock,
            get_lock,
            shared.items,
            shared.room,
            shared.all_done,
            send_token,
            recv_token,
        )

    def __setstate__(self, state: tuple) -> None:
        (
            maxsize,
            memory,
            put_lock,
            get_lock,
            items,
            room,
            all_done,
            send_token,
            recv_token,
        ) = state
        shared = _Shared.__new__(_Shared)
        shared.memory, shared.put_lock = memory, put_lock
        shared.get_lock = put_lock if get_lock is None else get_lock
        shared.items, shared.room, shared.all_done = items, room, all_done
        shared.mailbox = Mailbox.from_tokens(send_token, recv_token)
        self._setup(maxsize, shared)

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
            QueueClosedError (a ValueError): when this queue handle was closed.
        """
        if self._closed:
            self._check_open("put")
        if timeout is not None:
            check_queue_timeout(timeout)  # bad values fail even when there is room
        item = None
        if type(obj) in SCALARS:
            payload = _dumps(obj, 5)
        else:
            item = encode(obj, self._spill_limit, self._spares)
            payload = item.payload
        try:
            if (item is None or not item.fds) and len(payload) <= self._spill_limit:
                # The fast path (_put_fast, inlined: this is the hot path): put lock
                # free (soon), room in the ring.
                lock = self._put_lock
                if lock._try(False) or try_briefly(lock):
                    lock._became_owner()
                    try:
                        put = self._try_put_one(payload, self._item_limit)
                    finally:
                        lock.release()
                    if put:
                        try:
                            self._give_token()
                        except (OSError, ValueError):
                            pass  # at the semaphore's limit (32767 on macOS): see _waiting.post
                        return
            if item is None:
                # The general path reuses the pickle (a huge string still spills).
                if len(payload) <= self._spill_limit:
                    item = Encoded(payload, [], 0)
                else:
                    item = encode(obj, self._spill_limit, self._spares)
            self._put_items([item], block, deadline_for(block, timeout))
        except (ValueError, OSError):
            # A released view, a closed lock or socket: another thread closed this
            # handle during the call.
            self._check_open("put")
            raise
        finally:
            if item is not None:
                item.close()

    def _put_fast(self, payload: bytes) -> bool:
        """The common case in one go: put lock free (soon), room in the ring. Else False."""
        if len(payload) > self._spill_limit:
            return False  # the general path spills it
        lock = self._put_lock
        if not (lock._try(False) or try_briefly(lock)):
            return False
        lock._became_owner()
        try:
            if not self._try_put_one(payload, self._item_limit):
                return False  # the general path waits or raises Full
        finally:
            lock.release()
        try:
            self._give_token()
        except (OSError, ValueError):
            pass  # at the semaphore's limit (32767 on macOS): see _waiting.post
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
        ``queue.Full`` is raised and its ``items_put`` attribute tells how many went in.
        """
        self._check_open("put_many")
        objs = list(objs)
        if self._maxsize:
            # A bounded queue counts items one by one against maxsize.
            items = [encode(obj, self._spill_limit, self._spares) for obj in objs]
        else:
            items = encode_batches(objs, self._spill_limit)
        try:
            try:
                self._put_items(items, block, deadline_for(block, timeout))
            except (ValueError, OSError):
                self._check_open("put_many")  # closed by another thread meanwhile (see put)
                raise
        finally:
            for item in items:
                item.close()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item.

        Raises:
            queue.Empty: when there is none (at once, or after ``timeout``).
            QueueClosedError (a ValueError): when this queue handle was closed.
        """
        if self._closed:
            self._check_open("get")
        if timeout is not None:
            check_queue_timeout(timeout)  # bad values fail even when an item is there
        if self._pending:
            taken = self._take_pending(1)
            if taken:
                return taken[0]
        try:
            token = self._take_token(False)
            if token:
                # The fast path, inlined (the hot path): get lock free (soon), a
                # plain item at the head; else _get_cached, or the general path.
                lock = self._get_lock
                if lock._try(False) or try_briefly(lock):
                    lock._became_owner()
                    try:
                        payload = self._try_get_one()
                        if payload is None:
                            value, cached = self._get_cached()
                        elif self._putters() > 0:
                            hand_room(self._ring, self._shared.room, 1)
                    finally:
                        lock.release()
                    if payload is not None:
                        return _loads(payload)
                    if cached:
                        if cached == _TOKEN_STAYS:
                            self._give_tokens(1)  # the frame stays, and so does its token
                        return value
            return self._get_items(1, block, deadline_for(block, timeout), token)[0]
        except (ValueError, OSError):
            # A released view, a closed lock or socket: another thread closed this
            # handle during the call.
            self._check_open("get")
            raise

    def _get_cached(self) -> tuple[Any, int]:
        """The next item of a batch frame this handle already decoded (get lock held).

        So that getting a put_many batch one item at a time costs one lock, not
        two. Returns ``(item, _FRAME_GONE or _TOKEN_STAYS)``, or ``(None, 0)``
        when the head is not that batch (the general path takes it).
        """
        ring = self._ring
        if self._batch_cache[0] < 0 or not ring.count:
            return None, 0  # spilled items, a stale token: the general path
        length, _flags, items, taken, _mail_id, key = ring.head_frame()
        if key != self._batch_cache[0]:
            return None, 0  # a batch to decode first: the general path
        value = self._batch_cache[1][taken]
        frame_gone = ring.consume(1, length, items, taken)
        if frame_gone:
            self._batch_cache = (-1, [])
        if ring.putters() > 0:
            hand_room(ring, self._shared.room, 1)
        return value, _FRAME_GONE if frame_gone else _TOKEN_STAYS

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    def get_many(self, max_items: int, timeout: float | None = None) -> list[Any]:
        """Wait for at least one item, then return up to ``max_items`` of them, oldest first.

        Raises:
            queue.Empty: when no item arrives within ``timeout`` seconds.
            TypeError, ValueError: for a ``max_items`` that is not a positive int.
            QueueClosedError (a ValueError): when this queue handle was closed.
        """
        self._check_open("get_many")
        max_items = integral(max_items)
        if isinstance(max_items, bool) or not isinstance(max_items, int):
            raise TypeError(f"max_items must be an int, not {max_items!r}")
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        deadline = deadline_for(True, timeout)
        if self._pending:
            taken = self._take_pending(max_items)
            if taken:
                return taken
        try:
            return self._get_items(max_items, True, deadline, self._take_token(False))
        except (ValueError, OSError):
            self._check_open("get_many")  # closed by another thread meanwhile (see put)
            raise

    # -- in an event loop (the waits in _aio) ------------------------------------------

    async def aget(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get()`` for a coroutine: wait for an item without blocking the event loop.

        Same arguments, result and errors as :meth:`get`. Cancelling the
        awaiting task never takes an item: it is either returned or left in the
        queue. A proctor addition.

        Raises:
            queue.Empty: when there is no item (at once, or after ``timeout``).
            QueueClosedError (a ValueError): when this queue handle was closed.
        """
        try:
            return await _aio.aget(self, block, timeout)
        except (ValueError, OSError):
            self._check_open("aget")  # closed by another thread meanwhile (see get)
            raise

    async def aput(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """``put()`` for a coroutine: wait for room without blocking the event loop.

        Same arguments and errors as :meth:`put`; ``obj`` is pickled once, before
        any wait. Cancelling the awaiting task never puts the item half-way: it
        is in the queue once ``aput()`` returns, and not at all if it raised.
        A proctor addition.

        Raises:
            queue.Full: when there is no room (at once, or after ``timeout``).
            TypeError, pickle.PicklingError: when ``obj`` cannot be pickled.
            QueueClosedError (a ValueError): when this queue handle was closed.
        """
        try:
            await _aio.aput(self, obj, block, timeout)
        except (ValueError, OSError):
            self._check_open("aput")  # closed by another thread meanwhile (see get)
            raise

    def qsize(self) -> int:
        """The number of items in the queue, exact when ``put()``/``get()`` return.

        Raises:
            QueueClosedError: when this queue handle was closed.
        """
        return self._size("qsize")

    def empty(self) -> bool:
        """Whether the queue holds no item.

        Raises:
            QueueClosedError: when this queue handle was closed.
        """
        return self._size("empty") == 0

    def full(self) -> bool:
        """Whether a bounded queue holds ``maxsize`` items.

        Raises:
            QueueClosedError: when this queue handle was closed.
        """
        size = self._size("full")  # (first: a closed handle raises, bounded or not)
        return self._maxsize > 0 and size >= self._maxsize

    def __len__(self) -> int:
        return self._size("len")

    def __bool__(self) -> bool:
        """True while the queue holds items, so ``while q: q.get()`` drains it.

        Note:
            ``multiprocessing.Queue`` is always true; proctor's is true only
            when it is not empty.
        """
        return self._size("bool") > 0

    def _size(self, what: str) -> int:
        if self._closed:
            self._check_open(what)
        if self._pending and self._pending_pid != os.getpid():
            self._take_pending(0)  # a forked child: drops its parent's
        try:
            return self._ring.count + len(self._pending)
        except ValueError:
            self._check_open(what)  # closed by another thread meanwhile (see get)
            raise

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
        # Drop the bound methods first: they keep the C semaphore open.
        self._take_token = self._give_token = _closed_call
        self._try_put_one = self._try_get_one = self._putters = _closed_call
        self._spares.close()
        shared.mailbox.close()
        for hint in (shared.items, shared.room, shared.all_done):
            if hint is not None:
                hint.close()
        shared.put_lock.close()
        shared.get_lock.close()
        try:
            shared.memory.close()
        except BufferError:
            # Another handle of this queue in this process (one that came back in a
            # message: a process maps each memory once, see _core._anonmem) still
            # has views on it; the mapping goes with the last of them.
            pass

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

    # -- machinery: producers ---------------------------------------------------------

    def _check_open(self, what: str) -> None:
        """Raise ``QueueClosedError`` for the call ``what`` if this handle was closed."""
        if self._closed:
            raise _lazy_errors.QueueClosedError(
                f"{type(self).__name__} {self!r} is closed in this process: cannot call "
                f"{what}() after close() (the queue's handles in other processes still work; "
                "a fork child inherits a handle closed before its start closed)"
            )

    def _give_tokens(self, n: int) -> None:
        """Post ``n`` items tokens (one per frame put)."""
        post(self._shared.items, n)

    def _room_for(self, item: Encoded) -> bool:
        return self._ring.has_room(len(item.payload), item.items, self._maxsize)

    def _put_items(self, items: list[Encoded], block: bool, deadline: float | None) -> None:
        ring = self._ring
        shared = self._shared
        lock = self._put_lock
        done = 0  # frames of items put
        put = 0  # the items they hold (a put_many batch frame holds several)
        # Not waiting for room (block=False) still waits for the put lock: its
        # holder holds it for one copy, and a dead holder's is taken over.
        lock_deadline = deadline if block else None
        while True:
            if not acquire(lock, lock_deadline):
                raise queue_full("timed out waiting for the queue's put lock", put)
            frames = 0
            mailbox_full = False
            try:
                while done < len(items) and self._room_for(items[done]):
                    item = items[done]
                    mail_id = 0
                    if item.flags:  # spilled buffers to mail, or a batch to tell apart
                        mail_id = ring.next_mail_id()
                    if item.fds and not shared.mailbox.send(mail_id, item.fds):
                        mailbox_full = True  # wait as for a full ring
                        break
                    ring.put(item.payload, item.flags, item.items, mail_id)
                    done += 1
                    put += item.items
                    frames += 1
            finally:
                lock.release()
                self._give_tokens(frames)
            if done == len(items):
                return
            if not block:
                raise queue_full(f"the queue is full ({ring.count} items)", put)
            await_room(
                ring,
                self._get_lock,
                shared.room,
                items[done],
                self._maxsize,
                mailbox_full,
                deadline,
                put,
            )

    # -- machinery: consumers ---------------------------------------------------------

    def _get_items(
        self, max_items: int, block: bool, deadline: float | None, token: bool
    ) -> list[Any]:
        ring = self._ring
        shared = self._shared
        lock = self._get_lock
        while True:
            if not token and not ring.count:
                if not block:
                    raise Empty("the queue is empty")
                token = await_items(self._take_token, ring, deadline)
            if not acquire(lock, deadline):
                if token:
                    self._give_tokens(1)  # not ours to drop: hand it on
                raise Empty("timed out waiting for the lock of the queue")
            # In order: lists of items already decoded (from batches), a
            # Failed batch, and (payload, flags, fds) tuples still to decode.
            got: list[Any] = []
            count = 0
            frames = 0  # frames removed: each takes its token with it
            try:
                while count < max_items and ring.count > 0:
                    length, flags, items, taken, mail_id, key = ring.head_frame()
                    if flags & BATCH:
                        n = min(items - taken, max_items - count)
                        cached_key, values = self._batch_cache
                        if cached_key == key:
                            got.append(values[taken : taken + n])
                        else:
                            # Decoded after the lock is released: unpickling
                            # runs user code, which must not hold up the
                            # other consumers (or call get() on this queue).
                            payload = ring.head_payload(length)
                            got.append(Batch(key, payload, taken, n, items - taken - n))
                        count += n
                        if ring.consume(n, length, items, taken):
                            frames += 1
                            if cached_key == key:
                                self._batch_cache = (-1, [])
                    else:
                        payload = ring.head_payload(length)
                        frames += ring.consume(1, length, 1, 0)
                        count += 1
                        try:
                            fds = shared.mailbox.receive(mail_id) if flags else []
                        except (RuntimeError, OSError) as exc:
                            got.append(Failed(exc))  # raised when reached, alone
                            continue
                        got.append((payload, flags, fds))
                if count:
                    hand_room(ring, shared.room, count)
            finally:
                lock.release()
            self._settle_tokens(token, frames, bool(got))
            token = False
            if got:
                if len(got) == 1:  # the common cases: one item, or one batch's items
                    entry = got[0]
                    if type(entry) is Batch:
                        entry = got[0] = self._decode_batch(entry)
                    if type(entry) is list:
                        return entry
                decoded = self._decode_all(got, max_items)
                if decoded:
                    return decoded
                continue  # another thread of this process returned them first
            if not block:
                raise Empty("the queue is empty")

    def _settle_tokens(self, token: bool, frames: int, took: bool) -> None:
        """Remove one token per frame removed, starting with the one held (if any)."""
        take = self._take_token
        for _ in range(frames - token):
            take(False)  # (failing: its producer has yet to post it; it will be stale)
        if token and not frames and took and self._ring.count:
            # We took part of a batch: the frame stays, and so does its token.
            self._give_tokens(1)

    def _decode_all(self, got: list[Any], max_items: int) -> list[Any]:
        """Rebuild taken items in order. An item that fails to unpickle raises
        in the get() that reaches it, alone: items taken with it wait in this
        handle for the next get(), so none is lost."""
        decoded: list[Any] = []
        spares = self._spares
        entry = None
        try:
            for entry in got:
                if type(entry) is tuple:
                    payload, flags, fds = entry
                    try:
                        decoded.append(decode(payload, flags, fds, spares))
                    except Exception as exc:
                        decoded.append(Failed(exc))
                elif type(entry) is list:
                    decoded.extend(entry)
                elif type(entry) is Failed:
                    decoded.append(entry)
                else:
                    decoded.extend(self._decode_entry(entry))  # a Batch
        except BaseException as exc:
            # Not an Exception (those are Failed items): a KeyboardInterrupt or
            # SystemExit raised while unpickling. It goes up now; the entry it
            # interrupted is lost, as a stdlib get() loses the item it was
            # unpickling, and the rest wait here for the next get().
            at = next(i for i, e in enumerate(got) if e is entry)
            self._keep_after_interruption(decoded, got[at + 1 :], entry, exc)
            raise
        with self._pending_lock:
            self._own_pending().extend(decoded)
        return self._take_pending(max_items)

    def _decode_entry(self, entry: Any) -> list[Any]:
        """The items of one taken entry (a Batch or a ``(payload, flags, fds)`` tuple);
        an Exception raised unpickling them comes back as a Failed item."""
        if type(entry) is Batch:
            result = self._decode_batch(entry)
            return result if type(result) is list else [result]
        payload, flags, fds = entry
        try:
            return [decode(payload, flags, fds, self._spares)]
        except Exception as exc:
            return [Failed(exc)]

    def _keep_after_interruption(
        self, decoded: list[Any], rest: list[Any], lost: Any, exc: BaseException
    ) -> None:
        """Keep what a get() took beyond an entry whose unpickling ``exc`` interrupted."""
        kept = list(decoded)
        for entry in rest:
            if type(entry) is list:
                kept.extend(entry)
            else:
                kept.append(entry if type(entry) is Failed else Undecoded(entry))
        with self._pending_lock:
            self._own_pending().extend(kept)
        if hasattr(exc, "add_note"):  # Python 3.11+
            count = lost.n if type(lost) is Batch else 1
            exc.add_note(
                f"proctor: interrupted while unpickling {count} item(s) taken from the "
                f"queue, which are lost; the {len(kept)} other item(s) taken with them "
                "are kept for the next get()"
            )

    def _decode_batch(self, batch: Batch) -> list[Any] | Failed:
        """The items taken from a batch frame, or the error that unpickling it raised.

        A batch that cannot be unpickled here is dropped whole: its items left
        in the ring would fail every getter in turn.
        """
        try:
            values = _loads(batch.payload)
        except Exception as exc:
            lost = batch.n + (self._drop_rest(batch) if batch.left else 0)
            if hasattr(exc, "add_note"):  # Python 3.11+
                exc.add_note(
                    f"proctor: {lost} items put together by put_many() could not be "
                    "unpickled and are lost"
                )
            return Failed(exc)
        if batch.left:
            self._batch_cache = (batch.key, values)  # the next get() takes more
        elif batch.taken == 0:
            return values  # the whole batch (n is all of it)
        return values[batch.taken : batch.taken + batch.n]

    def _drop_rest(self, batch: Batch) -> int:
        """Take what is left of a batch that failed to unpickle, if still at the head."""
        ring = self._ring
        lock = self._get_lock
        acquire(lock, None)
        try:
            if not ring.count:
                return 0
            length, _flags, items, taken, _mail_id, key = ring.head_frame()
            if key != batch.key:
                return 0  # somebody else took it
            ring.consume(items - taken, length, items, taken)
            if ring.putters() > 0:
                hand_room(ring, self._shared.room, items - taken)
        finally:
            lock.release()
        self._take_token(False)  # the frame's, which it takes along
        return items - taken

    def _own_pending(self) -> deque[Any]:
        """This process's held-back items (``_pending_lock`` held).

        A forked child starts with a copy of its parent's, which the parent
        returns: the child drops them before holding any of its own.
        """
        if self._pending_pid != os.getpid():
            self._pending.clear()
            self._pending_pid = os.getpid()
        return self._pending

    def _take_pending(self, max_items: int) -> list[Any]:
        """Up to ``max_items`` items held back by _decode_all (raising a failed one).

        Returns an empty list when there are none (another thread of this
        process took them, or this is a forked child, whose copies of its
        parent's items are dropped: the parent returns them).
        """
        while True:
            with self._pending_lock:
                pending = self._own_pending()
                if not pending or not max_items:
                    return []
                head = pending[0]
                if type(head) is Failed:
                    raise pending.popleft().error
                if type(head) is not Undecoded:
                    result: list[Any] = []
                    while (
                        pending
                        and len(result) < max_items
                        and type(pending[0]) is not Failed
                        and type(pending[0]) is not Undecoded
                    ):
                        result.append(pending.popleft())
                    return result
                pending.popleft()
            # Unpickled outside the lock: it runs user code, which may use this
            # queue. Its items go back at the head, before those it was taken with.
            values = self._decode_entry(head.entry)
            with self._pending_lock:
                self._own_pending().extendleft(reversed(values))


class SimpleQueue(Queue):
    """``multiprocessing.SimpleQueue``: ``put``, ``get``, ``empty``, ``close``, unbounded."""

    def __init__(self, *, capacity: int = DEFAULT_CAPACITY, ctx: Any = None) -> None:
        super().__init__(0, capacity=capacity, ctx=ctx)


class JoinableQueue(Queue):
    """A ``Queue`` with ``task_done()`` and ``join()``, as ``multiprocessing.JoinableQueue``.

    Unfinished items are counted as items put minus ``task_done()`` calls, both
    under the put lock, so a put still commits with one store. At most 2**27 - 1
    items may be unfinished at once.
    """

    _joinable = True

    def task_done(self) -> None:
        """Mark one item got from the queue as processed.

        Raises:
            ValueError: when called more times than items were put.
            QueueClosedError (a ValueError): when this queue handle was closed.
        """
        self._check_open("task_done")
        all_done = self._all_done()
        ring = self._ring
        lock = self._put_lock
        try:
            acquire(lock, None)
            try:
                if ring.unfinished <= 0:
                    raise ValueError("task_done() called too many times")
                left = ring.mark_done()
                joiners = ring.get_field(Ring.JOINERS) if left == 0 else 0
            finally:
                lock.release()
        except (ValueError, OSError):
            self._check_open("task_done")  # closed by another thread meanwhile (see get)
            raise
        post(all_done, joiners)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every item put has been marked done with ``task_done()``.

        Returns:
            True when all items are done; False when ``timeout`` passed first.

        Raises:
            QueueClosedError (a ValueError): when this queue handle was closed.
        """
        self._check_open("join")
        all_done = self._all_done()
        deadline = deadline_for(True, timeout)
        try:
            return await_all_done(self._ring, self._put_lock, all_done, deadline)
        except (ValueError, OSError):
            self._check_open("join")  # closed by another thread meanwhile (see get)
            raise

    async def ajoin(self, timeout: float | None = None) -> bool:
        """``join()`` for a coroutine: wait without blocking the event loop.

        Returns:
            True when all items are done; False when ``timeout`` passed first.

        Raises:
            QueueClosedError (a ValueError): when this queue handle was closed.
        """
        try:
            return await _aio.ajoin(self, timeout)
        except (ValueError, OSError):
            self._check_open("ajoin")  # closed by another thread meanwhile (see get)
            raise

    def _all_done(self) -> Hint:
        all_done = self._shared.all_done
        if all_done is None:  # never: a JoinableQueue always makes one (_joinable)
            raise RuntimeError("this JoinableQueue has no all_done semaphore")
        return all_done


def _closed_call(*args: Any) -> Any:
    # Reached by a thread whose call began before another thread's close().
    raise _lazy_errors.QueueClosedError(
        "the queue is closed in this process: close() was called during the call"
    )
