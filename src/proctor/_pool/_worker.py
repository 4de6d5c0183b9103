"""A pool worker's loop, and the messages between it and the pool (both sides).

::

    parent (_pool dispatcher)                       worker (worker_main)
    ─────────────────────────                       ────────────────────
                                                    run the initializer
    decode() ◀── result frame of task 0 ─────────── ready (None), or the
      (no task is sent before it)                   initializer's error: exit
    encode_task() ── task frame ──────────────────▶ recv_bytes, decode_task
                                                    run the chunk, catching BaseException
    decode() ◀── result frame ──────────────────── result_frame(task id, outcome)
    STOP ── empty frame ──────────────────────────▶ return (the process exits)

A task frame is ``<task id:u64><kind:u8><function length:u32>`` + the pickled function +
the pickled payload: ``(args, kwds)`` for ``APPLY``, a list of items for ``MAP`` (each
called as ``func(item)``) or ``STARMAP`` (``func(*item)``). The function travels as its
own pickle so that a ``map`` pickles it once and a worker unpickles it once while the
same bytes keep coming. A result frame is
``<task id:u64><seconds:f64><flags:u8><records:u64>`` + an outcome message of
``_start._outcome`` (the format a ``Process`` reports with): the value (one value for
``APPLY``, the list of a chunk's values otherwise), or the exception with its traceback.
With flag ``VALUE`` the body is the value's pickle alone, and an empty body is the value
None. ``seconds`` is how long the task ran in the worker (the dispatcher sizes chunks and how
many tasks a worker holds from it); flag ``RETIRING`` says the worker exits after this
result (its resident memory passed ``max_memory_per_child``) and reads no further task.
``records`` is how many log records the worker has sent to the parent so far
(``_runtime.records_forwarded``): the parent delivers the result once its log listener
has handled that many of this worker's records, so that a task's records are handled
before its result (``records_sent``; ``_logging._forwarding``, "records before
results"). Task id 0 (``INITIALIZER``; tasks count from 1) is the worker's
start: its outcome says that the initializer returned, or how it failed.

Arguments or a value that own descriptors (a queue, a lock, shared memory passed to a
running worker) are pickled collecting them (``_serialization.dumps_owning_fds``): the
descriptors take the place of the large buffers, as ``[Descriptors]`` sent after the
frame with ``send()``, which carries them, and the frame's pickle is unpickled inside
``Descriptors.received()``.

A ``MAP``/``STARMAP`` task with the ``REPORTS_PROGRESS`` kind bit (a call with
``progress=``) is run by ``_progress.run_chunk``, whose reporter thread may send
*progress frames* before its result: a result frame's header with flag ``PROGRESS``
(seconds and records 0), then ``<items done:u64>``. They say how many of the chunk's
items have finished; the parent counts them and waits on for the result.

A worker may be sent several tasks before it has finished the first (the pool
pipelines them to hide its round trip); it runs them in order and sends each result
before it reads the next task, so the parent always knows that only the oldest task
without a result may have started.

Whether that one did start, only the worker knows: a task written into the pipe of a
worker that was dying (killed while idle, before the parent saw its sentinel) was
never read. So each worker counts the tasks it starts in a word of shared memory
(``StartCounts``: one ``_anonmem`` block per pool, a word per worker), stored
before anything of the task runs, unpickling included: no message, one store per
task. Once the worker has died, the parent reads the count: the tasks it was sent
beyond it, the oldest without a result among them, never started.


Coroutine functions (kind bit ``COROUTINE``) run on an event loop the worker keeps
for its life. With ``task_concurrency`` N > 1 (``_concurrent_loop``) the worker
starts tasks in the order received, at most N at once, and sends each result before
it starts a task in the freed slot; a plain function's task runs alone (the loop
waits for it) and nothing after it starts before its result is sent. So the tasks
that may have started are the first N without a result, up to the first plain one;
results may come out of order.
"""

from __future__ import annotations

import _thread
import collections
import functools
import itertools
import os
import struct
import sys
import time
import types
import weakref

from .._core import _anonmem, _lazy_errors, _runtime, _serialization
from .._core._reduction import Descriptors, DescriptorsNeedACarrier
from .._core._serialization import OOB_THRESHOLD
from .._start import _outcome

# A spawned worker imports this module before its first task: what only the parent
# uses (pickle's Python module with re, the error types with multiprocessing and
# threading, the progress bars) is imported where it is used, ~15 ms of each
# worker's start (issue 17).

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    import asyncio
    import pickle
    from collections.abc import Callable, Iterable
    from typing import Any

    from .._connections._connection import Connection
    from .._core._anonmem import AnonymousMemory
    from .._core._errors import PicklingError

__all__ = (
    "APPLY",
    "COROUTINE",
    "INITIALIZER",
    "MAP",
    "PROGRESS",
    "REPORTS_PROGRESS",
    "RETIRING",
    "STARMAP",
    "STOP",
    "StartCounts",
    "decode",
    "decode_result",
    "encode_task",
    "function_name",
    "is_coroutine_function",
    "records_sent",
    "started_counter",
    "worker_main",
)

APPLY, MAP, STARMAP, BATCH = 0, 1, 2, 3
#: The task id of a worker's start: its result frame reports the initializer's outcome.
INITIALIZER = 0
#: The frame that tells a worker to return: no task frame is empty.
STOP = b""

#: Result frame flag: the worker exits after this result (see the module docstring).
RETIRING = 1
#: Result frame flag, and task kind bit: the value's (the arguments') large buffers
#: follow as the next message on the connection, a list sent with ``send()``, whose
#: buffers travel as memfds.
BUFFERS_FOLLOW = 0x80
#: Result frame flag: the body is the value's pickle, not an outcome message (an
#: error's or an unsendable value's): one pickle less each way for every result.
VALUE = 2
#: Task kind bit: the function is a coroutine function (see ``is_coroutine_function``).
COROUTINE = 0x40
#: ``code.co_flags`` bit of an ``async def`` function (``inspect.CO_COROUTINE``;
#: importing inspect costs milliseconds).
_CO_COROUTINE = 0x80
#: Result frame flag: a progress frame (items of a running chunk done), not a result.
PROGRESS = 4
#: Task kind bit: report the chunk's progress while it runs (``progress=``).
REPORTS_PROGRESS = 0x20

_RETIRING_VALUE = RETIRING | VALUE
_loads = _serialization.loads
_NONE_VALUE = _outcome.NONE_VALUE
_ANY_EXCEPTION = (BaseException,)

_TASK_HEADER = struct.Struct("<QBI")
_BATCH_LENGTH = struct.Struct("<I")
#: What ``decode`` reads of a result frame's header: task id, seconds, flags...
_RESULT_HEADER = struct.Struct("<QdB")
#: ...and then the log records sent, which only ``records_sent`` reads: the parent
#: needs them only from a worker that forwards its records.
_RECORDS = struct.Struct("<Q")
#: The whole header, as a worker writes it; the body follows.
_RESULT_FRAME = struct.Struct("<QdBQ")
_RESULT_BODY = _RESULT_FRAME.size
_PROGRESS_COUNT = struct.Struct("<Q")
#: The word a worker counts its started tasks in (``StartCounts``): native, only
#: this machine's processes share it ("Q", as ``started_counter``'s cast).
_STARTED = struct.Struct("Q")
#: The length of a result frame of flag VALUE whose value is None: the header alone
#: (most tasks that return nothing return None; no pickle is made or read for it).
_NONE_RESULT_LENGTH = _RESULT_BODY
#: Parts of a frame shorter than this are sliced as bytes (one copy, one object),
#: longer ones as memoryviews (no copy): a memoryview and its slice cost about
#: 1,800 instructions more to make and unpickle from (CPython 3.11).
SMALL_FRAME = 4096


class StartCounts:
    """The words of shared memory in which a pool's workers count the tasks they
    start, one per worker and a cache line apart (one worker's stores do not slow
    another's); the parent reads a worker's once it has died (see the module
    docstring). One block per pool, closed with it: its descriptor does not wait
    for the garbage collector."""

    def __init__(self, workers: int) -> None:
        self.memory = _anonmem.AnonymousMemory(workers * _anonmem.ALIGNMENT)
        self._free = list(range((workers - 1) * _anonmem.ALIGNMENT, -1, -_anonmem.ALIGNMENT))

    def take(self) -> tuple[AnonymousMemory, int] | None:
        """A zeroed word for a new worker, ``(memory, offset)`` (None if none is free:
        that worker's death is then judged by the order of its tasks alone)."""
        if not self._free or self.memory.closed:
            return None
        offset = self._free.pop()
        _STARTED.pack_into(self.memory, offset, 0)
        return self.memory, offset

    def give_back(self, starts: tuple[AnonymousMemory, int] | None) -> None:
        """The word of a worker that has ended (it writes no more)."""
        if starts is not None:
            self._free.append(starts[1])

    def read(self, starts: tuple[AnonymousMemory, int]) -> int:
        """How many tasks the worker counting at ``starts`` has started."""
        count: int = _STARTED.unpack_from(self.memory, starts[1])[0]
        return count

    def close(self) -> None:
        self.memory.close()


def started_counter(starts: tuple[AnonymousMemory, int] | None) -> memoryview:
    """The worker's side of its word: ``counter[0] = n`` once it has started ``n``
    tasks. A word of its own where the pool gave none (a test's worker)."""
    if starts is None:
        return memoryview(bytearray(_STARTED.size)).cast("Q")
    memory, offset = starts
    return memoryview(memory)[offset : offset + _STARTED.size].cast("Q")


def encode_task(task_id: int, kind: int, func_bytes: bytes, payload_bytes: bytes) -> bytes:
    """One task frame (see the module docstring); both pickles are made by the caller."""
    return _TASK_HEADER.pack(task_id, kind, len(func_bytes)) + func_bytes + payload_bytes


def is_coroutine_function(func: object) -> bool:
    """Whether ``func`` is an ``async def`` function (or a method or partial of one)."""
    while isinstance(func, functools.partial):
        func = func.func
    func = getattr(func, "__func__", func)  # a bound method
    code = getattr(func, "__code__", None)
    return isinstance(code, types.CodeType) and bool(code.co_flags & _CO_COROUTINE)


def kind_for(kind: int, coroutine: bool) -> int:
    """``kind``, marked ``COROUTINE`` for a coroutine function's task."""
    return kind | COROUTINE if coroutine else kind


def with_buffers(kind: int, buffers: list[Any]) -> int:
    """``kind``, marked when the payload's large buffers follow the frame."""
    return kind | BUFFERS_FOLLOW if buffers else kind


def encode_batch(frames: list[bytes]) -> bytes:
    """Several task frames in one: header ``<0><BATCH><count>``, their lengths, them."""
    count = len(frames)
    # One pack of every length (the format is cached by struct): no bytecode per frame.
    lengths = struct.pack(f"<{count}I", *map(len, frames))
    return b"".join([_TASK_HEADER.pack(0, BATCH, count), lengths, *frames])


def _split_batch(frame: bytes) -> list[bytes | memoryview]:
    _, _, count = _TASK_HEADER.unpack_from(frame)
    view = memoryview(frame)
    offset = _TASK_HEADER.size + count * _BATCH_LENGTH.size
    frames: list[bytes | memoryview] = []
    for length in struct.unpack_from(f"<{count}I", frame, _TASK_HEADER.size):
        end = offset + length
        frames.append(frame[offset:end] if length < SMALL_FRAME else view[offset:end])
        offset = end
    return frames


def decode_result(
    frame: bytes, conn: Connection | None = None, buffers: list[Any] | None = None
) -> tuple[int, _outcome.Outcome, float, bool]:
    """The task id, the outcome, the seconds it ran and whether the worker retires.

    Reads the value's buffers from ``conn`` when they follow the frame; ``buffers``
    are the value's when they came another way (a cluster's worker returned them).

    Raises:
        EOFError, OSError: the worker's end closed before its buffers came.
    """
    task_id, seconds, flags = _RESULT_HEADER.unpack_from(frame)
    if buffers is None and flags & ~RETIRING == VALUE:
        # The common case: a value, no buffers follow (nor came another way).
        outcome = _outcome.Outcome()
        if len(frame) == _NONE_RESULT_LENGTH:
            return task_id, outcome, seconds, flags == _RETIRING_VALUE  # None
        # BaseException: see below.
        outcome.load_value(memoryview(frame)[_RESULT_BODY:], None, caught=_ANY_EXCEPTION)
        return task_id, outcome, seconds, flags == _RETIRING_VALUE
    if flags & BUFFERS_FOLLOW and conn is not None:
        buffers = conn.recv()
    body = memoryview(frame)[_RESULT_BODY:]
    if flags & VALUE:
        outcome = _outcome.Outcome()
        if not body:  # None (see _NONE_RESULT_LENGTH)
            return task_id, outcome, seconds, bool(flags & RETIRING)
        carried, buffers = _carried(buffers)
        # BaseException: unpickling runs the value's own code (a __setstate__ that
        # raises KeyboardInterrupt); it fails that task only, never the dispatcher
        # thread, which no real Ctrl-C reaches.
        with carried:
            outcome.load_value(body, buffers, caught=_ANY_EXCEPTION)
    else:
        # BaseException, as for a value: rebuilding an exception runs its class's
        # code (a __reduce__ whose callable raises KeyboardInterrupt); it fails that
        # task (RemoteError with the text), never the dispatcher thread.
        outcome = _outcome.Outcome.from_message(body, buffers, caught=_ANY_EXCEPTION)
    return task_id, outcome, seconds, bool(flags & RETIRING)


class _NoCarrier:
    """The context of a pickle that carries no descriptors: nothing to do."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_CARRIER = _NoCarrier()


def _carried(buffers: list[Any] | None) -> tuple[Any, list[Any] | None]:
    """What to unpickle a frame's pickle inside, and its out-of-band buffers.

    ``[Descriptors]`` (from ``_dumps``) stands for the pickle's descriptors: it is
    unpickled inside ``received()``, without buffers.
    """
    if buffers and type(buffers[0]) is Descriptors:
        return buffers[0].received(), None
    return _NO_CARRIER, buffers


def _dumps(obj: Any) -> tuple[bytes, list[Any]]:
    """``dumps_oob(obj)``; for an object that owns descriptors, the pickle and
    ``[Descriptors]``, sent after the frame as the buffers are."""
    try:
        return _serialization.dumps_oob(obj, OOB_THRESHOLD)
    except DescriptorsNeedACarrier as exc:
        if not exc.messages:
            raise  # only a start can send it (a Process)
    body, descriptors = _serialization.dumps_owning_fds(obj)
    return body, [descriptors]


#: What ``decode`` found in a result frame (its second item).
DECODED_VALUE, DECODED_OUTCOME, DECODED_PROGRESS = 0, 1, 2


def decode(frame: bytes, conn: Connection | None = None) -> tuple[int, int, Any, float, bool]:
    """A frame from a worker in one call: ``(task id, what, payload, seconds,
    retiring)``.

    ``what`` is DECODED_VALUE for the common result, a value without buffers
    (``payload`` is the value: no ``Outcome`` is made for it); DECODED_PROGRESS for
    a progress frame (``payload``: the chunk's items done so far); DECODED_OUTCOME
    for any other result (``payload``: its ``Outcome``, from ``decode_result``).
    The dispatcher reads one frame per task: a call and an object less per frame
    are a few per cent of the parent's work per ``apply_async``.

    Raises:
        EOFError, OSError: the worker's end closed before its buffers came.
    """
    task_id, seconds, flags = _RESULT_HEADER.unpack_from(frame)
    if flags & ~RETIRING == VALUE:
        length = len(frame)
        if length == _NONE_RESULT_LENGTH:  # a None value: no pickle
            return task_id, DECODED_VALUE, None, seconds, flags == _RETIRING_VALUE
        try:
            if length < SMALL_FRAME:
                value = _loads(frame[_RESULT_BODY:])
            else:
                value = _loads(memoryview(frame)[_RESULT_BODY:])
        # BaseException: as in decode_result (the value's own code may raise anything).
        except BaseException as exc:
            outcome = _outcome.Outcome()
            outcome.value_not_rebuilt(exc)
            return task_id, DECODED_OUTCOME, outcome, seconds, flags == _RETIRING_VALUE
        return task_id, DECODED_VALUE, value, seconds, flags == _RETIRING_VALUE
    if flags & PROGRESS:
        items = _PROGRESS_COUNT.unpack_from(frame, _RESULT_BODY)[0]
        return task_id, DECODED_PROGRESS, items, 0.0, False
    task_id, outcome, seconds, retiring = decode_result(frame, conn)
    return task_id, DECODED_OUTCOME, outcome, seconds, retiring


def _progress_frame(task_id: int, done: int) -> bytes:
    return _RESULT_FRAME.pack(task_id, 0.0, PROGRESS, 0) + _PROGRESS_COUNT.pack(done)


def records_sent(frame: bytes) -> int:
    """The log records a worker had sent to this process when it sent result ``frame``."""
    records: int = _RECORDS.unpack_from(frame, _RESULT_HEADER.size)[0]
    return records


def _result_frame(
    task_id: int,
    message: tuple[Any, ...],
    seconds: float = 0.0,
    flags: int = 0,
    records: int = 0,
) -> bytes:
    """A result frame; ``records``: the log records this worker has sent so far."""
    if message is _outcome.NONE_VALUE:  # the header alone (see _NONE_RESULT_LENGTH)
        return _RESULT_FRAME.pack(task_id, seconds, flags | VALUE, records)
    if message[0] == "value":  # the value's pickle itself, not inside the message's
        return _RESULT_FRAME.pack(task_id, seconds, flags | VALUE, records) + message[1]
    return _RESULT_FRAME.pack(task_id, seconds, flags, records) + _outcome.encode(message)


def function_name(func: Callable[..., object] | None) -> str:
    """``module.qualname`` of ``func``, for messages."""
    name = getattr(func, "__qualname__", None)
    if isinstance(name, str):
        module = getattr(func, "__module__", None)
        return f"{module}.{name}" if isinstance(module, str) else name
    import reprlib

    return reprlib.repr(func)


def _named(exc: BaseException, what: str) -> PicklingError:
    """``exc`` (a ``PicklingError``) again, its message naming ``what`` could not be pickled."""
    return _lazy_errors.PicklingError(
        f"{what} cannot be pickled for a pool worker: {exc}", getattr(exc, "path", ())
    )


class PickledCodec:
    """How a process pool's tasks and results travel: pickled into frames (above).

    ``ThreadPool`` has another codec (``_threads.ObjectCodec``) that passes the
    objects themselves; the dispatcher and ``Pool`` only call these four.
    """

    in_process = False

    #: Functions whose pickle is kept for reuse (see ``dumps_function``).
    FUNCTIONS_KEPT = 16

    def __init__(self) -> None:
        # id -> (weakref, (pickle, name, is a coroutine function))
        self._functions: dict[int, tuple[Any, tuple[bytes, str, bool]]] = {}
        self._functions_lock = _thread.allocate_lock()
        # The by-value copies of main-script objects (functions, classes) sent for
        # this pool's tasks, made at their first send in this pool: not the
        # process's, which a pool made earlier would have filled with the globals
        # as they were then (see _pickler, "When the value is made").
        self._values: dict[int, bytes | str] = {}

    def dumps_function(self, func: Any) -> tuple[bytes, str, bool]:
        """``dumps(func)``, the function's name (``function_name``) and whether it
        is a coroutine function, made once per function object while it stays in use.

        A task's function is pickled at every call otherwise, and a function of
        ``__main__``, a lambda or a closure goes by value, which costs tens of
        microseconds: more than the rest of an ``apply_async``. The kept pickle holds
        what the function referred to (globals sent by value included) as at its
        first call in this pool -- not in an earlier pool: by-value copies come from
        this codec's own ``_values`` -- as docs/pool.md says.
        """
        key = id(func)
        kept = self._functions.get(key)  # one dict read: atomic, no lock needed
        if kept is not None and kept[0]() is func:
            return kept[1]
        name = function_name(func)
        made = (self.dumps(func, f"the function {name}"), name, is_coroutine_function(func))
        try:
            # A weak reference: the kept pickle must not keep the function (a bound
            # method's object, a closure's cells) alive; the id check above needs the
            # function itself, so an id reused by another object is a miss.
            ref = weakref.ref(func)
        except TypeError:  # a builtin, or another object without weak references
            return made
        with self._functions_lock:
            if len(self._functions) >= self.FUNCTIONS_KEPT:
                del self._functions[next(iter(self._functions))]  # the oldest
            self._functions[key] = (ref, made)
        return made

    def dumps(self, obj: Any, what: str) -> bytes:
        """Pickle ``obj`` for a worker; a failure names ``what`` could not be pickled.

        Raises:
            PicklingError: naming ``what`` and the part of it that failed; also
                when ``obj`` (a task's function) holds objects that own
                descriptors: its pickle is made once and reused, and they travel
                only as the arguments of each task.
        """
        try:
            return _serialization.dumps(obj, self._values)
        except _lazy_errors.if_loaded("PicklingError") as exc:
            raise _named(exc, what) from exc
        except DescriptorsNeedACarrier as exc:
            if not exc.messages:
                raise
            raise _lazy_errors.PicklingError(
                f"{what} cannot be pickled for a pool worker: it holds {exc.what} (a "
                "functools.partial or a closure over a queue, a lock or shared memory?), "
                "and a task's function is pickled once for every task. Pass such objects "
                "as the task's arguments instead -- pool.starmap(f, [(lock, x), ...]) -- "
                "or to every worker at its start with Pool(initializer=..., initargs=...).",
                (what, exc.what),
            ) from exc

    # The module's functions themselves: a wrapper would cost a call per task.
    encode_task = staticmethod(encode_task)
    encode_batch = staticmethod(encode_batch)
    decode = staticmethod(decode)

    def dumps_payload(self, obj: Any, what: str) -> tuple[bytes, list[Any]]:
        """``dumps(obj)`` with buffers of OOB_THRESHOLD bytes or more left out of band
        (they follow the task frame as memfds), or, when objects in ``obj`` own
        descriptors, ``[Descriptors]`` in their place (see the module docstring).

        Raises:
            PicklingError: naming ``what`` and the part of it that failed.
        """
        try:  # (_dumps' common case)
            return _serialization.dumps_oob(obj, OOB_THRESHOLD, self._values)
        except _lazy_errors.if_loaded("PicklingError") as exc:
            raise _named(exc, what) from exc
        except DescriptorsNeedACarrier as exc:
            if not exc.messages:
                raise  # only a start can send it (a Process)
        try:
            body, descriptors = _serialization.dumps_owning_fds(obj)
        except _lazy_errors.if_loaded("PicklingError") as exc:
            raise _named(exc, what) from exc
        return body, [descriptors]


class _FunctionCache:
    """The last function unpickled, kept while the same pickle keeps coming."""

    def __init__(self) -> None:
        self._bytes = b""
        self._func: Callable[..., Any] | None = None

    def get(self, func_bytes: bytes | memoryview) -> Callable[..., Any]:
        # Compared as bytes: a memoryview (a batch's part) compares with bytes item
        # by item, tens of instructions a byte, where bytes compare with memcmp.
        key = bytes(func_bytes)  # the same object when it is bytes already
        if self._func is None or key != self._bytes:
            self._func = _serialization.loads(key)
            self._bytes = key
        return self._func


_loops = _thread._local()


def _event_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop for coroutine tasks, made at the first one and kept
    (a worker's coroutines may share loop-bound objects from task to task)."""
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed() or _loops.pid != os.getpid():
        import asyncio

        loop = _loops.loop = asyncio.new_event_loop()
        _loops.pid = os.getpid()  # a fork's copy is not the parent's loop
    return loop


def _close_event_loop() -> None:
    """Close this thread's loop, if a coroutine task made one (its descriptors go)."""
    loop = getattr(_loops, "loop", None)
    if loop is not None and _loops.pid == os.getpid():
        _loops.loop = None
        loop.close()


def _awaited(value: Any) -> Any:
    """``value``, or what it returns if it is a coroutine (run to its end here)."""
    if type(value) is types.CoroutineType:
        return _event_loop().run_until_complete(value)
    return value


# A chunk's values go into a list its caller holds (``_call``'s ``done``), which keeps
# those of the items before one that raises: they reach the consumer before the error,
# as with one item per task (a comprehension's list goes with the exception). list.extend
# keeps what it appended before its iterator raised, on every CPython. The cheapest
# such loop differs by version: map() from C on 3.10 (instructions per item of a
# no-op function, callgrind: 590 against the comprehension's 892, which lost them);
# from 3.11 a call from C costs more than an inlined one from bytecode, and a loop
# whose values.append is specialized is the cheapest (wall time per item, 12,500
# items, 32nd session: 3.11 41 ns against map()'s 59 and the comprehension's 48, which
# map() here had cost a Pool.map of 100,000 no-ops 15%; 3.13 37 against 65 and 34;
# a local bound to values.append is slower: it is not specialized).
if sys.version_info >= (3, 11):

    def _map_into(values: list[Any], func: Callable[..., Any], items: Iterable[Any]) -> None:
        for item in items:
            values.append(func(item))

else:

    def _map_into(values: list[Any], func: Callable[..., Any], items: Iterable[Any]) -> None:
        values.extend(map(func, items))


def _starmap_into(values: list[Any], func: Callable[..., Any], items: Iterable[Any]) -> None:
    # starmap() from C on every version: 3.10 618 against 963, 3.11 511 against 668,
    # 3.13 614 against 587 (a loop's append: 640).
    values.extend(itertools.starmap(func, items))


def _call(
    kind: int,
    func: Callable[..., Any],
    payload: Any,
    send_progress: Callable[[int, int], object] | None = None,
    task_id: int = 0,
    done: list[Any] | None = None,
) -> Any:
    """Run a task's function on its payload: ``(args, kwds)`` for APPLY, a chunk of
    items for MAP (``func(item)``) and STARMAP (``func(*item)``). A coroutine is run
    to its end on this thread's event loop, one item after another. With the
    REPORTS_PROGRESS bit, ``send_progress(task_id, items done)`` while a chunk runs.
    A chunk's values go into ``done`` (and it is returned): when an item raises, it
    holds the values of the items before it."""
    reports = kind & REPORTS_PROGRESS
    if kind & COROUTINE:
        func = _run_to_end(func)
    kind &= ~(COROUTINE | REPORTS_PROGRESS)
    if kind == APPLY:
        args, kwds = payload
        value = func(*args, **kwds)
        return _awaited(value) if type(value) is types.CoroutineType else value
    values: list[Any] = [] if done is None else done
    run = _map_into if kind == MAP else _starmap_into
    if reports and send_progress is not None:
        from . import _progress  # (only chunks that report progress)

        _progress.run_chunk(run, values, func, payload, send_progress, task_id)
    else:
        run(values, func, payload)
    # A function that returns coroutines (an object with an async __call__) has them
    # run afterwards, one after another.
    if values and type(values[0]) is types.CoroutineType:
        coroutines = values[:]
        values.clear()
        _map_into(values, _awaited, coroutines)
    return values


def _run_to_end(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, a coroutine function, as a plain one that runs each call to its end."""

    def run(*args: Any, **kwds: Any) -> Any:
        return _awaited(func(*args, **kwds))

    return run


async def _call_async(
    kind: int, func: Callable[..., Any], payload: Any, done: list[Any]
) -> tuple[bool, Any]:
    """``_call`` for a coroutine task run alongside others: (True, value) or (False,
    the exception); never raises (BaseException too, as for a plain task). Progress
    is not reported inside such a chunk: it counts when the chunk ends. A chunk's
    values go into ``done``, as in ``_call``."""
    kind &= ~(COROUTINE | REPORTS_PROGRESS)
    try:
        if kind == APPLY:
            args, kwds = payload
            value = await _maybe_await(func(*args, **kwds))
        else:
            star = kind == STARMAP
            for item in payload:
                done.append(await _maybe_await(func(*item) if star else func(item)))
            value = done
    except BaseException as exc:
        return False, exc
    return True, value


async def _maybe_await(value: Any) -> Any:
    if type(value) is types.CoroutineType:
        return await value
    return value


def _run(
    frame: bytes | memoryview,
    functions: _FunctionCache,
    buffers: list[Any] | None = None,
    send_progress: Callable[[int, int], object] | None = None,
) -> tuple[int, tuple[Any, ...], list[pickle.PickleBuffer]]:
    """Run one task frame (its payload's large buffers in ``buffers``); return its id,
    its outcome message and the value's large buffers (never raises)."""
    task_id, kind, func_length = _TASK_HEADER.unpack_from(frame)
    done: list[Any] | None = None  # a chunk's values: those before a failing item go
    try:
        func, payload = _prepare(frame, func_length, functions, buffers)
        if kind == APPLY:  # a plain function's call, the common task: _call's, inline
            args, kwds = payload
            value = func(*args, **kwds)
            if type(value) is types.CoroutineType:
                value = _awaited(value)
        else:
            done = []
            value = _call(kind & ~BUFFERS_FOLLOW, func, payload, send_progress, task_id, done)
    # BaseException: a task that raises SystemExit or KeyboardInterrupt fails that task
    # only; the stdlib's worker dies of it and the task's result never comes.
    except BaseException as exc:
        return task_id, _outcome.error_message(exc, done), []
    del payload  # the arguments' memory is not held while the result travels
    if value is None:  # value_message's first case, a call less
        return task_id, _NONE_VALUE, []
    return (task_id, *value_message(value))


def _prepare(
    frame: bytes | memoryview,
    func_length: int,
    functions: _FunctionCache,
    buffers: list[Any] | None,
) -> tuple[Callable[..., Any], Any]:
    """A task frame's function and payload (raises what unpickling raises);
    ``func_length`` is from its header, which the caller has read already."""
    start = _TASK_HEADER.size
    end = start + func_length
    func = functions.get(frame[start:end])
    if buffers is None:  # the common case, without a context manager's calls
        if len(frame) < SMALL_FRAME:
            return func, _loads(frame[end:])
        return func, _loads(memoryview(frame)[end:])
    carried, buffers = _carried(buffers)
    with carried:
        payload = _serialization.loads(memoryview(frame)[end:], buffers=buffers)
    return func, payload


def value_message(value: Any) -> tuple[tuple[Any, ...], list[pickle.PickleBuffer]]:
    """The outcome message of a task that returned ``value``, and its large buffers.

    Buffers of OOB_THRESHOLD bytes or more (numpy arrays...) stay out of the pickle:
    they travel as memfds after the result frame, and the parent's arrays are
    mapped on them, not copied out of a pickle.
    """
    if value is None:
        return _outcome.NONE_VALUE, []
    try:
        body, buffers = _dumps(value)
    except Exception as exc:
        return _outcome.unsendable_message(value, exc), []
    # SystemExit or KeyboardInterrupt raised by the value's own pickling (a
    # __reduce__) fails the task with it, as one raised by the task does.
    except BaseException as exc:
        return _outcome.error_message(exc), []
    return ("value", body), buffers


def _run_objects(
    task: tuple[Any, ...], send_progress: Callable[[int, int], object] | None = None
) -> tuple[int, _outcome.Outcome, float, bool]:
    """Run one task of a thread worker (objects, not frames); never raises."""
    task_id, kind, func, payload = task
    outcome = _outcome.Outcome()
    started = time.perf_counter()
    done: list[Any] = []  # a chunk's values (see _call)
    try:
        outcome.value = _call(kind, func, payload, send_progress, task_id, done)
    # Exception only: in a thread, SystemExit and KeyboardInterrupt belong to the
    # program, not to the task (a thread cannot be killed, a process worker can).
    except Exception as exc:
        outcome.exception = exc
        outcome.done = done or None
    return task_id, outcome, time.perf_counter() - started, False


def resident_memory() -> int | None:
    """This process's resident memory in bytes (None where it cannot be read).

    Linux: the current figure, from /proc. Elsewhere psutil's (a dependency there),
    else the peak from ``getrusage`` (which only grows: a worker is then replaced
    once its peak passed the limit, which still contains a leak).
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-untyped]  # no stubs installed

        return int(psutil.Process().memory_info().rss)
    except Exception:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def worker_main(
    conn: Connection,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    maxtasks: int | None,
    in_process: bool = False,
    max_memory: int | None = None,
    concurrency: int = 1,
    starts: tuple[AnonymousMemory, int] | None = None,
) -> None:
    """Report the initializer's outcome, then run tasks from ``conn`` until STOP, end
    of file, or ``maxtasks`` tasks are done, or its resident memory passed
    ``max_memory`` bytes after a task; return at once if the initializer failed.

    ``in_process``: a ``ThreadPool``'s worker thread, whose tasks and results are the
    objects themselves (``_threads.ObjectCodec``), not frames. ``concurrency``: how
    many coroutine tasks may run at once (``_concurrent_loop``). ``starts``: the
    shared word (memory, offset) where the worker counts the tasks it has started
    (see ``started_counter``).
    """
    if initializer is not None:
        try:
            initializer(*initargs)
        # BaseException, as for tasks: a SystemExit in the initializer must reach the
        # parent as the reason the pool cannot work, not as one more dead worker.
        except BaseException as exc:
            if in_process:
                failed = _outcome.Outcome()
                failed.exception = exc
                conn.send_bytes((INITIALIZER, failed, 0.0, False))
            else:
                conn.send_bytes(_result_frame(INITIALIZER, _outcome.error_message(exc)))
            conn.close()
            return
    conn.send_bytes((INITIALIZER, _outcome.Outcome(), 0.0, False) if in_process else _READY_FRAME)
    if in_process:
        try:
            _thread_loop(conn, maxtasks)
        finally:
            _close_event_loop()
        return
    # Only this thread receives on it and closes it: a task that starts threads
    # leaves its receives reading at once (Connection._keep_in_thread).
    keep_in_thread = getattr(conn, "_keep_in_thread", None)
    if keep_in_thread is not None:
        keep_in_thread()
    functions = _FunctionCache()
    counter = started_counter(starts)
    if concurrency > 1:
        try:
            _concurrent_loop(conn, functions, concurrency, maxtasks, max_memory, counter)
        finally:
            _close_event_loop()
        return

    def send_progress(task_id: int, items: int) -> None:
        conn.send_bytes(_progress_frame(task_id, items))

    done = started = 0
    clock = time.perf_counter
    send_bytes = conn.send_bytes
    pack_header = _RESULT_FRAME.pack
    while maxtasks is None or done < maxtasks:
        try:
            frame = conn.recv_bytes()
        except EOFError:  # the pool's end was closed: nothing more will come
            break
        if frame == STOP:
            break
        _, kind, _ = _TASK_HEADER.unpack_from(frame)
        tasks = _split_batch(frame) if kind == BATCH else [frame]
        arguments = conn.recv() if kind & BUFFERS_FOLLOW else None  # never batched
        del frame
        for task in tasks:
            # Counted before anything of the task runs (unpickling it may run its
            # code): a task the count does not reach never started (see the module docstring).
            started += 1
            counter[0] = started
            begun = clock()
            task_id, message, buffers = _run(task, functions, arguments, send_progress)
            seconds = clock() - begun
            arguments = None
            retiring = max_memory is not None and (resident_memory() or 0) > max_memory
            flags = (RETIRING if retiring else 0) | (BUFFERS_FOLLOW if buffers else 0)
            # The result goes before the next task starts: the pool then knows that
            # only the oldest task without a result may have started. It carries the
            # count of log records sent: the task's are all in the log channel by now.
            records = _runtime.records_forwarded
            if message is _NONE_VALUE:  # _result_frame's first case, a call less
                send_bytes(pack_header(task_id, seconds, flags | VALUE, records))
            else:
                send_bytes(_result_frame(task_id, message, seconds, flags, records))
            if buffers:
                conn.send(buffers)
                del buffers
            done += 1
            if retiring:
                conn.close()
                return  # the rest of the batch was not started: the pool sends it again
        # Drop the tasks' objects before waiting for the next ones (as the stdlib's
        # worker does), so that their memory is not held while idle.
        del tasks, task
    conn.close()


def _concurrent_loop(
    conn: Connection,
    functions: _FunctionCache,
    concurrency: int,
    maxtasks: int | None,
    max_memory: int | None,
    counter: memoryview,
) -> None:
    """``worker_main``'s loop when up to ``concurrency`` coroutine tasks run at once.

    Tasks start in the order received, while fewer than ``concurrency`` run; a
    finished task's result is sent before another task starts; a plain function's
    task runs alone, to its end, when its turn comes (see the module docstring).
    Idle, it blocks in ``recv_bytes()``; busy, it runs the event loop until a task
    ends or the pool's end becomes readable. Over ``max_memory``, it starts nothing
    more, and sets ``RETIRING`` on the result of the last task running.
    """
    loop = _event_loop()
    received: collections.deque[tuple[bytes | memoryview, list[Any] | None]]
    received = collections.deque()  # not started yet, in order
    # task -> (its id, when it began, the list its chunk's values go into)
    running: dict[asyncio.Task[tuple[bool, Any]], tuple[int, float, list[Any]]] = {}
    finished: collections.deque[asyncio.Task[tuple[bool, Any]]] = collections.deque()
    wake: list[asyncio.Future[None]] = []  # the future the loop runs until, if any
    started = done = 0
    retiring = ended = False

    def on_wake(*_: object) -> None:
        if wake and not wake[0].done():
            wake[0].set_result(None)

    def on_done(task: asyncio.Task[tuple[bool, Any]]) -> None:
        finished.append(task)
        on_wake()

    def send(task_id: int, message: tuple[Any, ...], buffers: list[Any], seconds: float) -> bool:
        """Send one result; True when the worker retires with it."""
        nonlocal retiring, done
        done += 1
        retiring = retiring or (max_memory is not None and (resident_memory() or 0) > max_memory)
        last = retiring and not running
        flags = (RETIRING if last else 0) | (BUFFERS_FOLLOW if buffers else 0)
        records = _runtime.records_forwarded  # see worker_main
        conn.send_bytes(_result_frame(task_id, message, seconds, flags, records))
        if buffers:
            conn.send(buffers)
        return last

    def receive(frame: bytes) -> None:
        nonlocal ended
        if frame == STOP:
            ended = True
            return
        _, kind, _ = _TASK_HEADER.unpack_from(frame)
        if kind == BATCH:
            received.extend((task, None) for task in _split_batch(frame))
        else:
            received.append((frame, conn.recv() if kind & BUFFERS_FOLLOW else None))

    loop.add_reader(conn.fileno(), on_wake)
    try:
        while not (ended and not running) and (maxtasks is None or done < maxtasks):
            # Results first: a slot is free only once its result is sent.
            while finished:
                task = finished.popleft()
                task_id, begun, done_before = running.pop(task)
                success, value = task.result()
                if success:
                    message, buffers = value_message(value)
                else:
                    message, buffers = _outcome.error_message(value, done_before), []
                del task, value, done_before
                if send(task_id, message, buffers, time.perf_counter() - begun):
                    return
            if maxtasks is not None and done >= maxtasks:
                break  # its last result is sent
            try:
                if not running and not received and not ended:  # idle: block
                    receive(conn.recv_bytes())
                # Then every frame that has come, above all those read ahead with the
                # last one: the event loop below wakes when the descriptor becomes
                # readable, which frames already read never make it.
                while not ended and conn.poll(0):
                    receive(conn.recv_bytes())
            except EOFError:  # the pool's end was closed: nothing more will come
                return
            while (
                received
                and len(running) < concurrency
                and not retiring
                and (maxtasks is None or started < maxtasks)
            ):
                frame, arguments = received.popleft()
                task_id, kind, func_length = _TASK_HEADER.unpack_from(frame)
                started += 1
                counter[0] = started  # before the task runs, as in worker_main
                begun = time.perf_counter()
                if kind & COROUTINE:
                    kind &= ~BUFFERS_FOLLOW
                    try:
                        func, payload = _prepare(frame, func_length, functions, arguments)
                    except BaseException as exc:
                        if send(task_id, _outcome.error_message(exc), [], 0.0):
                            return
                        continue
                    chunk_values: list[Any] = []
                    coro = _call_async(kind, func, payload, chunk_values)
                    del func, payload
                    task = loop.create_task(coro)
                    running[task] = (task_id, begun, chunk_values)
                    del chunk_values
                    task.add_done_callback(on_done)
                else:  # runs alone; the loop's coroutines wait for it
                    task_id, message, buffers = _run(frame, functions, arguments)
                    if send(task_id, message, buffers, time.perf_counter() - begun):
                        return
                del frame, arguments
            if running and not finished:
                future = loop.create_future()
                wake[:] = [future]
                loop.run_until_complete(future)
                wake.clear()
    finally:
        loop.remove_reader(conn.fileno())
        conn.close()


def _thread_loop(conn: Connection, maxtasks: int | None) -> None:
    def send_progress(task_id: int, items: int) -> None:
        # (task id, items done): ObjectCodec tells it from a result (four items).
        conn.send_bytes((task_id, items))

    done = 0
    while maxtasks is None or done < maxtasks:
        try:
            task: Any = conn.recv_bytes()  # a thread channel carries the task tuple
        except EOFError:
            break
        if task == STOP:
            break
        result = _run_objects(task, send_progress)
        del task
        conn.send_bytes(result)
        # bpo-29861: hold neither the task's arguments nor its result while idle
        # (the suite's test_release_task_refs).
        del result
        done += 1
    conn.close()


_READY_FRAME = _result_frame(INITIALIZER, _outcome.NONE_VALUE)
