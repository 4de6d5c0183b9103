"""What a pool call returns: ``AsyncResult``, ``MapResult``, ``IMapIterator``.

The dispatcher thread delivers each task's outcome with ``_deliver(index, success,
value)``: ``index`` is the chunk's position in the call's input, ``value`` the chunk's
list of values (one value for ``apply``) or the exception. A chunk whose item raised
comes with ``_deliver_partial(index, values, error)``, the values of the items before
it: the iterators yield them before they raise the error (``_task.ChunkFailure``),
``map()`` raises the error alone. Callers wait on an event (``AsyncResult``) or a
condition (the iterators).

The iterators read their input lazily, in the consumer's thread (``imap()`` and each
``next()``), at most ``read_ahead`` chunks ahead of what was consumed; an error raised
by the input becomes a failed chunk at its position. See docs/design.md, "Pools".

In an event loop, ``await result`` and ``async for value in iterator`` wait without a
thread: the first await registers an asyncio future, and the delivery (in the
dispatcher thread) resolves it with ``loop.call_soon_threadsafe``, one wake-up per
delivery.
"""

from __future__ import annotations

import collections
import threading
import time
import weakref

from .._core._errors import ProcessTimeoutError
from .._core._timeout import check_timeout
from .._core._timeout import deadline as _deadline
from .._logging._logger import get_logger
from ._task import ChunkFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Generator, Iterator
    from typing import Any, Protocol

    _Waiters = list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]

    class _Submitter(Protocol):
        def submit_lazy_chunk(
            self, result: IMapIterator, index: int, start: int, items: list[Any]
        ) -> None: ...

        def lazy_consumed(self, result: IMapIterator) -> None: ...

        def lazy_done(self, result: IMapIterator) -> None: ...


__all__ = (
    "ApplyResult",
    "AsyncResult",
    "ChunkSizer",
    "IMapIterator",
    "IMapUnorderedIterator",
    "MapResult",
)


def _wake(future: asyncio.Future[None]) -> None:
    # In the awaiting loop's thread: the future may have been cancelled meanwhile.
    if not future.done():
        future.set_result(None)


def _wake_all(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    """Resolve awaiting coroutines' futures, each in its loop's thread (any thread)."""
    for loop, future in waiters:
        try:
            loop.call_soon_threadsafe(_wake, future)
        except RuntimeError:  # that loop was closed: nothing awaits there any more
            pass


def _refuse_the_delivering_thread(pool: Any) -> None:
    """Raise if this thread delivers ``pool``'s results (its callbacks run in it):
    waiting there for one of them would wait for ever, the pool stalled with it."""
    dispatcher = getattr(pool, "_dispatcher", None)
    if dispatcher is not None and threading.current_thread() is getattr(
        dispatcher, "_thread", None
    ):
        raise RuntimeError(
            "a pool's callback cannot wait for a result of the same pool: the callbacks "
            "run in the thread that delivers its results, which would then wait for "
            "ever. Hand the work to another thread, or use the result's own callback"
        )


def _call_back(callback: Callable[[Any], object], argument: Any, in_caller: bool = False) -> None:
    # A callback runs in the dispatcher thread; its exception must not stop the pool,
    # and must not vanish either: it is logged with its traceback. SystemExit and
    # KeyboardInterrupt too: raised there, they would end the dispatcher (every
    # unfinished task failing) and leave this result never ready; they cannot stop
    # the program from that thread anyway. Called by ``cancel()`` (``in_caller``),
    # they are the calling thread's own, and propagate once the result is complete.
    try:
        callback(argument)
    except Exception:
        get_logger().exception("pool callback %r raised", callback)
    except BaseException:
        if in_caller:
            raise
        get_logger().exception("pool callback %r raised (in the pool's thread: ignored)", callback)


#: Decides whether ``cancel()`` or the delivery completes a result (the delivery and
#: the sending take it only once a cancel has begun: see ``ApplyResult._claim``). One
#: lock for all results: it is held for a few assignments, and one lock made per
#: ``apply_async`` would cost more than all the contention on this one.
_STATE_LOCK = threading.Lock()


#: Classes of the timeouts ``get()`` checks inline (the others: ``check_timeout``).
_PLAIN_SECONDS = (float, int)


class ApplyResult:
    """The result of ``apply_async``: ``get()``, ``wait()``, ``ready()``, ``successful()``,
    and ``cancel()``/``cancelled()`` as on a ``concurrent.futures.Future``; ``await
    result`` in an event loop.

    The dispatcher thread completes it with ``_deliver``; ``cancel()`` may complete it
    first from any thread. Whichever comes first wins (see ``_claim``).
    """

    # Slots: one is made per apply_async, and an instance dict's values are one more
    # block allocated, freed and walked by the garbage collector per task (CPython
    # 3.11). ``__dict__`` and ``__weakref__`` keep what a plain class allows (the
    # stdlib's results take any attribute and weak references); the dict is made only
    # when something sets an attribute of its own.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_callback",
        "_cancelled",
        "_cancelling",
        "_describe",
        "_error_callback",
        "_finished",
        "_name",
        "_on_cancel",
        "_owner",
        "_ready",
        "_ready_lock",
        "_started",
        "_success",
        "_value",
        "_waiters",
    )

    def __init__(
        self,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        on_cancel: Callable[[], object] | None = None,
        describe: Callable[[], str] | None = None,
        name: str | None = None,
    ) -> None:
        # A one-shot event, set once the call completed (after its callbacks): the
        # flag, and a lock made only when a thread has to wait (see _wait_ready).
        self._ready = False
        self._ready_lock: threading.Lock | None = None
        self._finished = False  # completed or cancelled (the event is set after callbacks)
        self._cancelled = False
        self._success: bool | None = None
        self._value: Any = None
        self._callback = callback
        self._error_callback = error_callback
        self._on_cancel = on_cancel  # tells the dispatcher to drop or kill the tasks
        # The call in words, for the cancellation's message: ``describe()``, or with
        # ``name`` ``name(describe())`` (apply_async: the task's own describe, its
        # arguments in words, serves both, one object less per task).
        self._describe = describe
        self._name = name
        self._started = False  # a task of the call was sent to a worker (``_claim``)
        self._cancelling = False  # a cancel() has begun (see _claim)
        self._waiters: _Waiters | None = None  # coroutines awaiting it (``__await__``)
        # The Pool that made it, kept alive as long as this result is, as the
        # stdlib's results keep theirs: ``Pool(2).apply_async(f).get()`` must not
        # see its pool collected (and so terminated) before the value comes.
        self._owner: Any = None

    def ready(self) -> bool:
        """Whether the call has completed (successfully or not, or was cancelled)."""
        return self._ready

    def successful(self) -> bool:
        """Whether the call completed without raising.

        Raises:
            ValueError: when the call has not completed yet.
        """
        if not self._ready:
            raise ValueError(f"{self!r} is not ready: successful() needs a completed call")
        return bool(self._success)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the call completes, or ``timeout`` seconds pass."""
        checked = check_timeout(timeout)
        if not self._ready:
            self._wait_ready(None if checked is None else max(checked, 0.0))

    def _wait_ready(self, timeout: float | None) -> None:
        """Wait for ``_set()``, at most ``timeout`` seconds.

        The lock is made by the first thread that has to wait (most results are
        ready when ``get()`` is called, and a lock made and taken per
        ``apply_async`` costs thousands of instructions), held from its making and
        released by ``_set()``; a waiter acquires it and releases it for the
        next. ``_set()`` stores the flag, then looks for the lock; a waiter
        stores the lock, then looks at the flag: whichever comes second sees what
        the other stored (the GIL orders them), so no waiter sleeps past it.
        """
        lock = self._ready_lock
        if lock is None:
            with _STATE_LOCK:  # one lock for every waiter of this result
                lock = self._ready_lock
                if lock is None:
                    lock = threading.Lock()
                    lock.acquire()
                    self._ready_lock = lock
        # The look after the lock is seen, by every waiter: _set may have looked for
        # the lock before it was made, and will not release it.
        if self._ready:
            return
        _refuse_the_delivering_thread(self._owner)
        if lock.acquire(timeout=-1 if timeout is None else timeout):
            lock.release()

    def get(self, timeout: float | None = None) -> Any:
        """The call's value once it completes; re-raises its exception.

        Raises:
            proctor.TimeoutError: when ``timeout`` seconds pass first (also a
                ``multiprocessing.TimeoutError``); the task goes on.
            proctor.TaskTimeoutError: the task ran past its own ``timeout``/
                ``task_timeout`` and was killed with its worker.
            concurrent.futures.CancelledError: ``cancel()`` was called first.
            Exception: what the task raised (the worker's traceback is its
                ``__cause__``), ``WorkerLostError`` when its worker died,
                ``PoolTerminatedError`` when the pool was terminated first,
                ``InitializerError`` when the pool's initializer failed.
        """
        # A completed result's timeout is still checked (as by wait()), inline for
        # the usual ones: get() is called once per apply_async.
        if not (
            self._ready
            and (timeout is None or (timeout.__class__ in _PLAIN_SECONDS and timeout == timeout))
        ):
            self.wait(timeout)
            if not self._ready:
                raise ProcessTimeoutError(f"the pool's result was not ready within {timeout} s")
        if self._success:
            return self._value
        raise self._value

    def cancel(self) -> bool:
        """Cancel the call, as ``concurrent.futures.Future.cancel()`` does.

        A task not yet sent to a worker is dropped; a running one is stopped by
        killing its worker (SIGKILL), which the pool replaces. ``get()`` then raises
        ``concurrent.futures.CancelledError``, and ``error_callback`` gets that error
        in this thread. For ``map_async``, every chunk not yet done is cancelled.

        Returns:
            True if the call is cancelled (now or before); False if it had already
            completed.
        """
        return self._cancel(only_pending=False)

    def _cancel(self, only_pending: bool) -> bool:
        if self._finished:
            return self._cancelled
        # Made before the lock is taken: describing the call runs the arguments' reprs.
        error = _cancelled_error(self._describe, self._name)
        with _STATE_LOCK:
            # Said first, then the looks: _claim and _complete store their flag, then
            # look at this one (see _claim).
            self._cancelling = True
            if self._finished:
                return self._cancelled
            if only_pending and self._started:
                return False
            self._finished = self._cancelled = True
            self._success = False
            self._value = error
        try:
            if self._on_cancel is not None:
                self._on_cancel()
            if self._error_callback is not None:
                _call_back(self._error_callback, self._value, in_caller=True)
        finally:
            self._set()
        return True

    def cancelled(self) -> bool:
        """Whether ``cancel()`` cancelled the call."""
        return self._cancelled

    def _claim(self) -> bool:
        """The dispatcher is about to send a task of the call: False if it was
        cancelled (the task is dropped); from now on an ``await`` that is cancelled
        no longer cancels the call (see ``__await__``).

        No lock unless a ``cancel()`` has begun (a lock per task costs thousands of
        instructions): this stores ``_started``, then looks at ``_cancelling``;
        ``_cancel`` stores ``_cancelling``, then looks at ``_started``, under the
        lock. The GIL orders the two threads' steps, so a cancel that this misses
        sees ``_started``; one this sees has decided, or decides under the lock,
        which is taken here to read its decision.
        """
        self._started = True
        if not self._cancelling:
            return True
        with _STATE_LOCK:
            return not self._cancelled

    def __await__(self) -> Generator[Any, None, Any]:
        """``await result`` in a running event loop: the value, or the call's error.

        The loop is not blocked and no thread waits: the dispatcher thread wakes the
        awaiting coroutine when the result comes. Cancelling the awaiting coroutine
        (``Task.cancel()``, ``asyncio.wait_for``'s timeout) cancels the call only if
        none of its tasks was sent to a worker yet, as ``asyncio.wrap_future`` does
        with a ``concurrent.futures.Future``: a running task goes on, and its result
        can still be awaited or taken with ``get()``. Call ``cancel()`` to stop it.
        """
        return self._wait_async().__await__()

    async def _wait_async(self) -> Any:
        if not self._ready:
            import asyncio  # imported already: an event loop is running

            loop = asyncio.get_running_loop()
            future = loop.create_future()
            waiter = (loop, future)
            with _STATE_LOCK:
                if self._waiters is None:
                    self._waiters = []
                self._waiters.append(waiter)
            # Registered first, then the look (``_set`` does the two the other way
            # round, without the lock): if the result is not complete now, ``_set``
            # will see this future; if it is, ``_set`` may have missed it.
            waiting = True
            if self._ready:
                with _STATE_LOCK:
                    if self._waiters is not None and waiter in self._waiters:
                        self._waiters.remove(waiter)  # missed: nothing to wait for
                        waiting = False
                    # Otherwise ``_set`` took it and resolves it: wait for that.
            if waiting:
                try:
                    await future
                except asyncio.CancelledError:
                    with _STATE_LOCK:
                        if self._waiters is not None and waiter in self._waiters:
                            self._waiters.remove(waiter)
                    self._cancel(only_pending=True)
                    raise
        if self._success:
            return self._value
        raise self._value

    def _set(self) -> None:
        # Once: _finished and _cancelling decide who completes the result. After the
        # callbacks, the threads waiting in get() (see _wait_ready); then the
        # coroutines: the flag first, then the look for waiters (see _wait_async),
        # with the lock only when a coroutine awaits (most results are never awaited).
        self._ready = True
        lock = self._ready_lock
        if lock is not None:
            lock.release()
        if self._waiters is not None:
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        with _STATE_LOCK:
            waiters, self._waiters = self._waiters, None
        if waiters:
            _wake_all(waiters)

    def _complete(self, success: bool, value: Any) -> None:
        """Complete the call with its value or exception (a ``MapResult``'s last
        chunk, or its first failure); nothing after a ``cancel()``."""
        ApplyResult._deliver(self, 0, success, value)

    def _deliver_partial(self, index: int, values: list[Any], error: BaseException) -> None:
        # map() raises without values, as the stdlib's: a failed chunk is a failure.
        self._deliver(index, False, error)

    # -- the dispatcher's side (see _dispatcher.TaskResult; _claim is above) -----------

    #: No chunk sizes to learn from durations: a call's chunks are sized before they
    #: are submitted (None: the dispatcher makes no call per task for it).
    _observe = None

    def _deliver(self, index: int, success: bool, value: Any) -> None:
        # ``_complete``'s work, here rather than called (once per apply_async).
        # Against cancel() as in _claim: the flag stored, then the look, no lock
        # unless a cancel has begun (it wins if it saw no _finished).
        if self._finished:
            return  # cancelled first
        self._finished = True
        if self._cancelling:
            with _STATE_LOCK:
                if self._cancelled:
                    return
        self._success = success
        self._value = value
        try:
            if success and self._callback is not None:
                _call_back(self._callback, value)
            if not success and self._error_callback is not None:
                _call_back(self._error_callback, value)
        finally:  # (_finished is set: nothing else would ever complete it)
            # _set()'s work, inline for the same reason.
            self._ready = True
            lock = self._ready_lock
            if lock is not None:
                lock.release()
            if self._waiters is not None:
                self._wake_waiters()

    def __repr__(self) -> str:
        if not self._ready:
            state = "pending"
        elif self._cancelled:
            state = "cancelled"
        else:
            state = "successful" if self._success else f"failed {type(self._value).__name__}"
        return f"<{type(self).__name__} {state}>"


def _cancelled_error(describe: Callable[[], str] | None, name: str | None) -> BaseException:
    # concurrent.futures imports logging (milliseconds): only when something is cancelled.
    from concurrent.futures import CancelledError

    if describe is None:
        what = "this pool call"
    elif name is None:
        what = describe()
    else:
        what = f"{name}({describe()})"
    return CancelledError(
        f"{what} was cancelled by cancel(): a task not yet started was dropped, a running "
        "one was stopped by killing its worker (SIGKILL), which the pool replaced"
    )


AsyncResult = ApplyResult


class MapResult(ApplyResult):
    """The result of ``map_async``/``starmap_async``: a list once every chunk is in.

    The first chunk to fail completes it with that chunk's exception, as in the stdlib.
    """

    def __init__(
        self,
        length: int,
        chunks: int,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        on_cancel: Callable[[], object] | None = None,
        describe: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(callback, error_callback, on_cancel, describe)
        self._values: list[Any] = [None] * length
        self._chunks_left = chunks if length else 0
        if not self._chunks_left:  # an empty input: done at once (no callback, as the stdlib)
            self._finished = True
            self._success = True
            self._value = []
            self._ready = True

    def _deliver(self, index: int, success: bool, value: Any) -> None:
        """A chunk's values; ``index`` is the position of its first input item."""
        if self._finished:
            return  # a chunk that came after a failure or cancel()
        if not success:
            self._values = []
            self._complete(False, value)
            return
        self._values[index : index + len(value)] = value
        self._chunks_left -= 1
        if not self._chunks_left:
            values, self._values = self._values, []
            self._complete(True, values)


class ChunkSizer:
    """Chunk sizes for an input read lazily: fixed, or (``chunksize=None``) adaptive.

    Adaptive sizes aim at chunks of CHUNK_SECONDS of work, from the durations the
    workers measured for this call's chunks so far: one item at a time until the
    first result, then at most doubling from chunk to chunk (an input whose first
    items are quick and later ones slow does not start with a huge chunk), and down
    at once when items turn out slow.
    """

    def __init__(self, chunksize: int | None) -> None:
        self.fixed = chunksize
        self._last = 0
        self._item_seconds: float | None = None  # running average per input item

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        seconds = self._item_seconds
        if seconds is None:
            size = 1
        else:
            ideal = max(1, min(MAX_CHUNK, int(CHUNK_SECONDS / max(seconds, 1e-9))))
            size = min(ideal, max(1, 2 * self._last))
        self._last = size
        return size

    def observe(self, seconds: float, items: int) -> None:
        """A chunk of ``items`` items took ``seconds`` in a worker (dispatcher thread)."""
        per_item = seconds / max(items, 1)
        average = self._item_seconds
        self._item_seconds = per_item if average is None else (average + per_item) / 2


#: How long an iterator told to read no more of its input (the interpreter exits)
#: waits for a thread that is reading it (blocked in the input's own code).
STOP_WAIT = 1.0
#: Adaptive chunks aim at this much work each: the per-chunk cost (a frame each way,
#: the dispatcher's turn; tens of microseconds) is then about 1% of it, and the last
#: chunks of a call leave workers idle for no longer than this.
CHUNK_SECONDS = 0.005
#: ... and hold at most this many items.
MAX_CHUNK = 65536


class ChunkSink:
    """What the tasks of an ``imap`` iterator deliver to: the iterator, held weakly.

    The pool's queue and its workers' tasks must not keep alive an iterator its
    consumer dropped (a loop left with ``break``): with it they would keep its input,
    its results and the pool it holds (``_owner``). Once it is collected, the
    outcomes of its chunks still in flight are dropped.
    """

    __slots__ = ("_ref",)

    #: The iterators have no cancel(): their tasks are always sent.
    _cancelled = False

    def __init__(self, iterator: IMapIterator) -> None:
        self._ref = weakref.ref(iterator)

    def _claim(self) -> bool:
        return True

    @property
    def _observe(self) -> Callable[[float, int], None] | None:
        iterator = self._ref()
        return None if iterator is None else iterator._observe

    def _deliver(self, index: int, success: bool, value: Any) -> None:
        iterator = self._ref()
        if iterator is not None:
            iterator._deliver(index, success, value)

    def _deliver_partial(self, index: int, values: list[Any], error: BaseException) -> None:
        iterator = self._ref()
        if iterator is not None:
            iterator._deliver(index, False, ChunkFailure(values, error))


class IMapIterator:
    """The iterator ``imap`` returns: values in input order, input read lazily.

    A failed chunk raises its exception once, at its position (after the values of
    its items before the one that raised); iteration then goes on with the next
    chunk. ``next(timeout)`` raises ``proctor.TimeoutError`` when
    nothing is ready in time. ``async for`` works too, in a running event loop.
    """

    def __init__(
        self,
        pool: _Submitter,
        iterable: Iterator[Any],
        chunksize: int | None,
        read_ahead: int,
    ) -> None:
        self._pool = pool
        self._input: Iterator[Any] | None = iterable
        self._sizer = ChunkSizer(chunksize)
        self._read_ahead = read_ahead
        self._items_read = 0  # input items read so far
        self._feed_lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._submitted = 0  # chunk positions handed out (input errors included)
        self._exhausted = False  # the input has no more
        self._taken = 0  # chunks the consumer has taken
        self._items: collections.deque[Any] = collections.deque()
        self._aborted: BaseException | None = None
        #: The error of a chunk whose values before it are in _items: raised once
        #: they are taken (see ChunkFailure).
        self._failed: BaseException | None = None
        self._waiters: _Waiters | None = None  # coroutines awaiting a chunk (``__anext__``)
        self._owner: Any = None  # the Pool, kept alive with the iterator (ApplyResult._owner)
        self._sink = ChunkSink(self)  # what its tasks deliver to
        self._consumed = False  # next() was called: the pool holds it weakly from then on
        self._init_results()

    def _init_results(self) -> None:
        self._results: dict[int, tuple[bool, Any]] = {}

    # -- the input ------------------------------------------------------------------

    def _feed(self, unbounded: bool = False, beyond_done: bool = False) -> None:
        """Submit chunks until ``read_ahead`` are outstanding beyond those the
        consumer took (beyond those done, taken or not, with ``beyond_done``; all of
        them if ``unbounded``)."""
        with self._feed_lock:
            while self._input is not None and (
                unbounded
                or self._submitted - (self._chunks_done() if beyond_done else self._taken)
                < self._read_ahead
            ):
                items: list[Any] = []
                error: BaseException | None = None
                end = False
                for _ in range(self._sizer.next_size()):
                    try:
                        items.append(next(self._input))
                    except StopIteration:
                        end = True
                        break
                    except Exception as exc:  # the input's own error, at its position
                        error, end = exc, True
                        break
                if items:
                    self._submit(items)
                if error is not None:
                    self._fail_next(error)
                if end or self._aborted is not None:
                    self._end_input()

    def _fail_next(self, error: BaseException) -> None:
        """``error`` at the next position of the input (with the feed lock)."""
        with self._cond:
            index = self._submitted
            self._submitted += 1
        self._deliver(index, False, error)

    def _end_input(self) -> None:
        """No more input (with the feed lock): the consumer stops after what was sent."""
        self._input = None
        with self._cond:
            self._exhausted = True
            waiters = self._notify_locked()
        if waiters:
            _wake_all(waiters)
        self._pool.lazy_done(self)

    def _feed_rest(self, deadline: float | None) -> bool:
        """Read the rest of the input (a closed pool's ``join()``), keeping at most
        ``read_ahead`` chunks in the pool beyond those done (the pool's queue stays
        short). The results are kept for the consumer, who may take them after
        ``join()`` (as from the stdlib's pool): memory grows with those not taken.
        An iterator whose consumer began and then dropped it is not read here at
        all (it was collected: see ``_consume``). False if ``deadline`` passed first."""
        while True:
            self._feed(beyond_done=True)
            with self._cond:
                while self._input is not None and (
                    self._submitted - self._chunks_done() >= self._read_ahead
                ):
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                if self._input is None:
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _chunks_done(self) -> int:
        """Chunks whose outcome arrived, taken by the consumer or not (exact under
        ``_cond``; ``_feed`` reads it without, as a bound)."""
        return self._taken + len(self._results)

    def _stop_reading(self, error: BaseException) -> None:
        """Read no more of the input (the interpreter exits): a consumer meets
        ``error`` after the chunks already submitted. A thread inside ``_feed``
        (blocked in the input) is not waited for beyond ``STOP_WAIT``."""
        if not self._feed_lock.acquire(timeout=STOP_WAIT):
            # The thread feeding it ends the input itself, with this error at the
            # position of its next chunk (as after terminate()).
            self._abort(error)
            self._pool.lazy_done(self)
            return
        try:
            if self._input is not None:
                self._fail_next(error)
                self._end_input()
        finally:
            self._feed_lock.release()

    def _submit(self, items: list[Any]) -> None:
        with self._cond:
            index = self._submitted
            self._submitted += 1
        start = self._items_read
        self._items_read += len(items)
        if self._aborted is not None:
            self._deliver(index, False, self._aborted)
            return
        self._pool.submit_lazy_chunk(self, index, start, items)

    def _observe(self, seconds: float, items: int) -> None:
        self._sizer.observe(seconds, items)

    def _abort(self, exc: BaseException) -> None:
        """The pool was terminated: chunks not yet submitted fail with ``exc``."""
        self._aborted = exc

    # -- results --------------------------------------------------------------------

    def _deliver(self, index: int, success: bool, value: Any) -> None:
        with self._cond:
            self._results[index] = (success, value)
            waiters = self._notify_locked()
        if waiters:
            _wake_all(waiters)

    def _notify_locked(self) -> _Waiters | None:
        """Wake the threads waiting in ``next()``; return the coroutines to wake."""
        self._cond.notify_all()
        waiters, self._waiters = self._waiters, None
        return waiters

    def _ready_chunk(self) -> tuple[bool, Any] | None:
        return self._results.pop(self._taken, None)

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        """The next value; waits at most ``timeout`` seconds for it.

        Raises:
            StopIteration: when every value has been taken.
            proctor.TimeoutError: when ``timeout`` seconds pass first.
            Exception: a failed chunk's exception, at its position.
        """
        deadline = _deadline(timeout)
        while not self._items:
            if self._failed is not None:
                error, self._failed = self._failed, None
                raise error
            # (Here, not per value: the first next() always finds no values yet.)
            if not self._consumed:
                self._consume()
            self._feed()
            with self._cond:
                while (chunk := self._ready_chunk()) is None:
                    if self._exhausted and self._taken >= self._submitted:
                        raise StopIteration
                    if self._input is not None and self._submitted - self._taken < 1:
                        break  # nothing submitted yet: feed first (another thread took it)
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise ProcessTimeoutError(
                            f"the pool's next result was not ready within {timeout} s"
                        )
                    _refuse_the_delivering_thread(self._owner)
                    self._cond.wait(left)
                if chunk is None:
                    continue
                self._taken += 1
            success, value = chunk
            if not success:
                if type(value) is ChunkFailure:  # its values first, then its error
                    self._items.extend(value.values)
                    self._failed = value.error
                    continue
                raise value
            self._items.extend(value)
        return self._items.popleft()

    __next__ = next

    def _consume(self) -> None:
        """The consumer takes its first result: the iterator is its own from now on.
        The pool held it until then (a call never iterated runs to the end of its
        input at ``close(); join()``, as the stdlib's does); now it holds it weakly,
        so that one dropped in the middle (a loop left with ``break``) is collected,
        its input read no more, rather than kept with its results and its pool."""
        self._consumed = True
        self._pool.lazy_consumed(self)

    def __aiter__(self) -> IMapIterator:
        return self

    async def __anext__(self) -> Any:
        """The next value, awaited in a running event loop (``async for``).

        No thread waits: the dispatcher thread wakes the coroutine when a chunk
        comes. Bound the wait with ``asyncio.wait_for``/``asyncio.timeout``;
        cancelling the awaiting coroutine leaves the iterator and its tasks as they
        are (the iterators have no ``cancel()``).

        Raises:
            StopAsyncIteration: when every value has been taken.
            Exception: a failed chunk's exception, at its position.
        """
        if self._items:
            return self._items.popleft()
        return await self._anext_chunk()

    async def _anext_chunk(self) -> Any:
        import asyncio  # imported already: an event loop is running

        loop = asyncio.get_running_loop()
        if not self._consumed:
            self._consume()
        while not self._items:
            if self._failed is not None:
                error, self._failed = self._failed, None
                raise error
            self._feed()
            future = None
            with self._cond:
                chunk = self._ready_chunk()
                if chunk is None:
                    if self._exhausted and self._taken >= self._submitted:
                        raise StopAsyncIteration
                    if self._input is not None and self._submitted - self._taken < 1:
                        continue  # nothing submitted yet: feed first (as in next())
                    future = loop.create_future()
                    if self._waiters is None:
                        self._waiters = []
                    self._waiters.append((loop, future))
                else:
                    self._taken += 1
            if future is not None:
                try:
                    await future
                except asyncio.CancelledError:
                    with self._cond:
                        if self._waiters is not None and (loop, future) in self._waiters:
                            self._waiters.remove((loop, future))
                    raise
                continue
            assert chunk is not None
            success, value = chunk
            if not success:
                if type(value) is ChunkFailure:  # as in next()
                    self._items.extend(value.values)
                    self._failed = value.error
                    continue
                raise value
            self._items.extend(value)
        return self._items.popleft()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} chunks submitted={self._submitted} taken={self._taken}"
            f"{' input done' if self._exhausted else ''}>"
        )


class IMapUnorderedIterator(IMapIterator):
    """The iterator ``imap_unordered`` returns: values in the order chunks complete."""

    def _init_results(self) -> None:
        self._done: collections.deque[tuple[bool, Any]] = collections.deque()

    def _deliver(self, index: int, success: bool, value: Any) -> None:
        with self._cond:
            self._done.append((success, value))
            waiters = self._notify_locked()
        if waiters:
            _wake_all(waiters)

    def _ready_chunk(self) -> tuple[bool, Any] | None:
        return self._done.popleft() if self._done else None

    def _chunks_done(self) -> int:
        return self._taken + len(self._done)
