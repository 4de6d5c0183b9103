"""One task of a pool call, and what the dispatcher knows of the worker that holds it.

A call becomes one ``Task`` per chunk, pickled into its frame in the caller's thread;
the dispatcher moves it from the pool's queue into a ``WorkerState``'s ``held`` (the
tasks sent to that worker whose result has not come, in sending order) and delivers
its outcome to its ``TaskResult``. ``may_have_started`` says which held tasks a dead
worker may have started, from the order it runs them in and the count of tasks it
started (see docs/design.md, "Pools").
"""

from __future__ import annotations

import collections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from .._connections._connection import Connection
    from .._core._anonmem import AnonymousMemory
    from .._start._process import Process

    class TaskResult(Protocol):
        """What a task's outcome is delivered to: ``_results``' classes, the executor's
        future slots. Every one has all five members (no ``getattr`` with a default:
        a missing attribute costs a caught exception, per task)."""

        #: True once cancelled: a running task of it is stopped.
        _cancelled: bool

        def _claim(self) -> bool:
            """Called before the task is sent; False drops it (it was cancelled)."""

        @property
        def _observe(self) -> Callable[[float, int], None] | None:
            """Called as ``_observe(seconds, items)``: a chunk of ``items`` inputs ran
            for ``seconds`` (sizes later chunks); None when nothing is sized from its
            durations (``ApplyResult``: no call made per task)."""

        def _deliver(self, index: int, success: bool, value: Any) -> None: ...

        def _deliver_partial(self, index: int, values: list[Any], error: BaseException) -> None:
            """A ``map`` chunk whose item ``len(values)`` raised ``error``: ``values``
            are those of the items before it (see ``ChunkFailure``)."""


__all__ = ("ChunkFailure", "Task", "TaskResult", "WorkerState", "may_have_started")


class ChunkFailure:
    """A chunk that failed at one item: the values of the items before it, then the
    error. The iterators (``imap``, the executor's ``map``) yield the values, then
    raise the error at that item's position, as with one item per task; the items
    after it in the chunk did not run. (``map()`` and ``map_async()`` raise the
    error alone: a call that raises returns no values.)"""

    __slots__ = ("error", "values")

    def __init__(self, values: list[Any], error: BaseException) -> None:
        self.values = values
        self.error = error


class Task:
    """One chunk of a call, from submission until its outcome is delivered."""

    __slots__ = (
        "buffers",
        "claimed",
        "coroutine",
        "deadline",
        "describe",
        "frame",
        "function",
        "id",
        "index",
        "progress",
        "result",
        "sent_at",
        "size",
        "stopped",
        "timeout",
    )

    def __init__(
        self,
        task_id: int,
        frame: bytes,
        result: TaskResult,
        index: int,
        function: str,
        describe: Callable[[], str],
        timeout: float | None = None,
        size: int = 1,
        buffers: list[Any] | None = None,
        coroutine: bool = False,
    ) -> None:
        self.id = task_id
        self.frame = frame
        self.result = result
        self.index = index
        self.function = function
        self.describe = describe  # the inputs, in words (computed only for an error)
        self.timeout = timeout  # seconds the chunk may run, from its sending to a worker
        self.deadline: float | None = None  # time.monotonic() it must be done by, once sent
        self.size = size  # input items in the chunk
        # The payload's large buffers (numpy arrays...), sent as memfds after the
        # frame; such a task goes alone, to a worker that holds nothing.
        self.buffers = buffers or None
        self.claimed = False  # claim() said yes: a task sent again is not claimed again
        self.stopped = False  # failed or cancelled, and its worker killed to stop it
        self.sent_at = 0.0  # time.monotonic() it was sent to a worker
        # Its function is a coroutine function: it may run alongside others in a
        # worker (task_concurrency); a plain one runs alone (see may_have_started).
        self.coroutine = coroutine
        self.progress: Any = None  # the call's _progress.Tracker (progress=), counting items

    def cancelled(self) -> bool:
        return self.result._cancelled

    def claim(self) -> bool:
        """Whether to send the task now; False: its result was cancelled, drop it.

        The result decides: an executor's future becomes running there, after
        which ``Future.cancel()`` can no longer cancel it.
        """
        return self.result._claim()


class WorkerState:
    """What the dispatcher knows of one worker: its process, its end of the pipe, the
    tasks it holds."""

    __slots__ = (
        "blocking",
        "conn",
        "conn_open",
        "exiting",
        "held",
        "killed",
        "log_listener",
        "log_token",
        "logs",
        "process",
        "queued_bytes",
        "ready",
        "retiring",
        "send_failed",
        "sent",
        "starts",
    )

    def __init__(
        self,
        process: Process,
        conn: Connection,
        starts: tuple[AnonymousMemory, int] | None = None,
    ) -> None:
        self.process = process
        self.conn = conn
        #: The shared word, ``(memory, offset)``, where it counts the tasks it has
        #: started (``_worker.tasks_started``); None for a thread worker.
        self.starts = starts
        #: Its end of the pipe is open for reading: what it sent is still taken.
        self.conn_open = True
        #: A send to it failed (it died, or exited after its last result): it is sent
        #: nothing more, but what it sent before is still read, up to its end of file.
        self.send_failed = False
        self.ready = False  # its initializer returned (task 0's result came)
        # Tasks sent whose result has not come, in sending order: only held[0] may
        # have started (see the module docstring).
        self.held: collections.deque[Task] = collections.deque()
        self.queued_bytes = 0  # frame bytes of held[1:]
        self.blocking = 0  # held tasks of plain (not coroutine) functions
        self.sent = 0  # tasks sent (not given back by a failed send): results + held
        self.retiring = False  # sent its last task (maxtasksperchild), or said it exits
        self.exiting = False  # said it exits (RETIRING): it reads no task it holds
        self.killed = False  # SIGKILLed to stop a held task: its sentinel is awaited
        popen = getattr(process, "_popen", None)
        #: Its log stream in this process's log listener (None: it does not forward,
        #: or it is a fork worker that has not logged yet: see log_stream).
        self.logs = getattr(popen, "log_stream", None)
        #: A fork worker's token in the listener, whose stream comes with its first
        #: record (``LogListener.expect``); None otherwise.
        self.log_token: int | None = getattr(popen, "log_token", None)
        self.log_listener: Any = getattr(popen, "log_listener", None)

    def log_stream(self) -> Any:
        """Its log stream, looked up for a fork worker that has logged (None if none)."""
        if self.logs is None and self.log_token is not None:
            self.logs = self.log_listener.stream_for(self.log_token)
        return self.logs


def may_have_started(
    held: collections.deque[Task] | list[Task],
    concurrency: int,
    started: int | None = None,
    finished: int = 0,
) -> int:
    """How many of the oldest tasks in ``held`` may have started in their worker.

    A worker starts its tasks in the order it was sent them, at most
    ``concurrency`` at once, and sends a task's result before it starts another
    in its place; a plain function's task runs alone, so nothing behind it starts
    before its result is sent. With one at a time: ``held[0]`` only.

    ``started``: the worker's own count of the tasks it started (its shared word,
    read once it died), ``finished``: how many of them the parent has taken the
    result of. Tasks start in sending order, so the ones started and unfinished
    are the first ``started - finished`` of ``held``: those behind never started,
    not even ``held[0]`` when the worker died before it read it.
    """
    count = 0
    for task in held:
        if count == concurrency:
            break
        count += 1
        if not task.coroutine:
            break
    if started is not None:
        count = min(count, max(started - finished, 0))
    return count
