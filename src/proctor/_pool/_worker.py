"""A pool worker's loop, and the messages between it and the pool (both sides).

::

    parent (_pool dispatcher)                       worker (worker_main)
    ─────────────────────────                       ────────────────────
                                                    run the initializer
    decode_result() ◀── result frame of task 0 ──── ready (None), or the
      (no task is sent before it)                   initializer's error: exit
    encode_task() ── task frame ──────────────────▶ recv_bytes, decode_task
                                                    run the chunk, catching BaseException
    decode_result() ◀── result frame ───────────── result_frame(task id, outcome)
    STOP ── empty frame ──────────────────────────▶ return (the process exits)

A task frame is ``<task id:u64><kind:u8><function length:u32>`` + the pickled function +
the pickled payload: ``(args, kwds)`` for ``APPLY``, a list of items for ``MAP`` (each
called as ``func(item)``) or ``STARMAP`` (``func(*item)``). The function travels as its
own pickle so that a ``map`` pickles it once and a worker unpickles it once while the
same bytes keep coming. A result frame is ``<task id:u64>`` + an outcome message of
``_start._outcome`` (the format a ``Process`` reports with): the value (one value for
``APPLY``, the list of a chunk's values otherwise), or the exception with its traceback.
Task id 0 (``INITIALIZER``; tasks count from 1) is the worker's start: its outcome says
that the initializer returned, or how it failed.
"""

from __future__ import annotations

import struct

from .._core import _serialization
from .._core._errors import PicklingError
from .._start import _outcome

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from collections.abc import Callable
    from typing import Any

    from .._connections._connection import Connection

__all__ = (
    "APPLY",
    "INITIALIZER",
    "MAP",
    "STARMAP",
    "STOP",
    "decode_result",
    "encode_task",
    "worker_main",
)

APPLY, MAP, STARMAP = 0, 1, 2
#: The task id of a worker's start: its result frame reports the initializer's outcome.
INITIALIZER = 0
#: The frame that tells a worker to return: no task frame is empty.
STOP = b""

_TASK_HEADER = struct.Struct("<QBI")
_RESULT_HEADER = struct.Struct("<Q")


def encode_task(task_id: int, kind: int, func_bytes: bytes, payload_bytes: bytes) -> bytes:
    """One task frame (see the module docstring); both pickles are made by the caller."""
    return _TASK_HEADER.pack(task_id, kind, len(func_bytes)) + func_bytes + payload_bytes


def decode_result(frame: bytes) -> tuple[int, _outcome.Outcome]:
    """The task id and the outcome a result frame carries."""
    (task_id,) = _RESULT_HEADER.unpack_from(frame)
    return task_id, _outcome.Outcome.from_message(frame[_RESULT_HEADER.size :])


def _result_frame(task_id: int, message: tuple[Any, ...]) -> bytes:
    return _RESULT_HEADER.pack(task_id) + _outcome.encode(message)


class PickledCodec:
    """How a process pool's tasks and results travel: pickled into frames (above).

    ``ThreadPool`` has another codec (``_threads.ObjectCodec``) that passes the
    objects themselves; the dispatcher and ``Pool`` only call these four.
    """

    in_process = False

    def dumps(self, obj: Any, what: str) -> bytes:
        """Pickle ``obj`` for a worker; a failure names ``what`` could not be pickled.

        Raises:
            PicklingError: naming ``what`` and the part of it that failed.
        """
        try:
            return _serialization.dumps(obj)
        except PicklingError as exc:
            raise PicklingError(
                f"{what} cannot be pickled for a pool worker: {exc}", exc.path
            ) from exc

    @staticmethod
    def encode_task(task_id: int, kind: int, func: Any, payload: Any) -> Any:
        return encode_task(task_id, kind, func, payload)

    @staticmethod
    def decode_result(frame: Any) -> tuple[int, _outcome.Outcome]:
        return decode_result(frame)


class _FunctionCache:
    """The last function unpickled, kept while the same pickle keeps coming."""

    def __init__(self) -> None:
        self._bytes = b""
        self._func: Callable[..., Any] | None = None

    def get(self, func_bytes: bytes) -> Callable[..., Any]:
        if self._func is None or func_bytes != self._bytes:
            self._func = _serialization.loads(func_bytes)
            self._bytes = func_bytes
        return self._func


def _run(frame: bytes, functions: _FunctionCache) -> tuple[int, tuple[Any, ...]]:
    """Run one task frame; return its id and outcome message (never raises)."""
    task_id, kind, func_length = _TASK_HEADER.unpack_from(frame)
    start = _TASK_HEADER.size
    try:
        func = functions.get(frame[start : start + func_length])
        payload = _serialization.loads(memoryview(frame)[start + func_length :])
        if kind == APPLY:
            args, kwds = payload
            value = func(*args, **kwds)
        elif kind == MAP:
            value = [func(item) for item in payload]
        else:
            value = [func(*item) for item in payload]
    # BaseException: a task that raises SystemExit or KeyboardInterrupt fails that task
    # only; the stdlib's worker dies of it and the task's result never comes.
    except BaseException as exc:
        return task_id, _outcome.error_message(exc)
    return task_id, _outcome.value_message(value)


def _run_objects(task: tuple[Any, ...]) -> tuple[int, _outcome.Outcome]:
    """Run one task of a thread worker (objects, not frames); never raises."""
    task_id, kind, func, payload = task
    outcome = _outcome.Outcome()
    try:
        if kind == APPLY:
            args, kwds = payload
            outcome.value = func(*args, **kwds)
        elif kind == MAP:
            outcome.value = [func(item) for item in payload]
        else:
            outcome.value = [func(*item) for item in payload]
    # Exception only: in a thread, SystemExit and KeyboardInterrupt belong to the
    # program, not to the task (a thread cannot be killed, a process worker can).
    except Exception as exc:
        outcome.exception = exc
    return task_id, outcome


def worker_main(
    conn: Connection,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    maxtasks: int | None,
    in_process: bool = False,
) -> None:
    """Report the initializer's outcome, then run tasks from ``conn`` until STOP, end
    of file, or ``maxtasks`` tasks are done; return at once if the initializer failed.

    ``in_process``: a ``ThreadPool``'s worker thread, whose tasks and results are the
    objects themselves (``_threads.ObjectCodec``), not frames.
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
                conn.send_bytes((INITIALIZER, failed))
            else:
                conn.send_bytes(_result_frame(INITIALIZER, _outcome.error_message(exc)))
            conn.close()
            return
    conn.send_bytes((INITIALIZER, _outcome.Outcome()) if in_process else _READY_FRAME)
    if in_process:
        _thread_loop(conn, maxtasks)
        return
    functions = _FunctionCache()
    done = 0
    while maxtasks is None or done < maxtasks:
        try:
            frame = conn.recv_bytes()
        except EOFError:  # the pool's end was closed: nothing more will come
            break
        if frame == STOP:
            break
        task_id, message = _run(frame, functions)
        # Drop the task's objects before waiting for the next one (as the stdlib's
        # worker does), so that their memory is not held while idle.
        del frame
        conn.send_bytes(_result_frame(task_id, message))
        done += 1
    conn.close()


def _thread_loop(conn: Connection, maxtasks: int | None) -> None:
    done = 0
    while maxtasks is None or done < maxtasks:
        try:
            task: Any = conn.recv_bytes()  # a thread channel carries the task tuple
        except EOFError:
            break
        if task == STOP:
            break
        result = _run_objects(task)
        del task
        conn.send_bytes(result)
        done += 1
    conn.close()


_READY_FRAME = _result_frame(INITIALIZER, _outcome.NONE_VALUE)
