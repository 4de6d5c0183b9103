"""``ThreadPool``: the pool's dispatcher and worker loop, with threads for workers.

::

    ThreadPool.map(f, xs)            Dispatcher (one thread)          worker threads
    ─────────────────────            ───────────────────────          ──────────────
    f, xs as they are (ObjectCodec)  pending ─▶ idle worker ─ _Lane ─▶ worker_main(
    MapResult.get() ◀── _deliver ─── (task id, Outcome) ◀──── _Lane ──   in_process)

The same ``Dispatcher``, ``worker_main`` and result classes as ``Pool``; only three
things differ. Tasks and results are the objects themselves, never pickled (as the
stdlib's ``ThreadPool`` passes them: a task may mutate its argument, a lock may be
one). A worker's channel is a pair of ``_Lane``s -- a deque and a pipe whose bytes
count its items, so the dispatcher's ``wait()`` sees it like a ``Connection``. A
worker is a ``_WorkerThread``, whose sentinel is a pipe closed when the thread ends.
A thread cannot be killed, so a ``ThreadPool`` has no task timeouts; ``terminate()``
and a running task's ``cancel()`` abandon the worker thread (it finishes its task in
the background, its result dropped) instead of killing it.
"""

from __future__ import annotations

import collections
import os
import select
import threading

from .._core._errors import ProcessTimeoutError
from ._dispatcher import Dispatcher
from ._pool import Pool, _check_workers
from ._worker import DECODED_OUTCOME, DECODED_PROGRESS, function_name, is_coroutine_function

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = ("ObjectCodec", "ThreadPool")


class ObjectCodec:
    """Tasks and results as the objects themselves (see ``_worker.PickledCodec``)."""

    in_process = True

    def dumps(self, obj: Any, what: str) -> Any:
        return obj

    def dumps_function(self, func: Any) -> tuple[Any, str, bool]:
        return func, function_name(func), is_coroutine_function(func)

    def dumps_payload(self, obj: Any, what: str) -> tuple[Any, list[Any]]:
        return obj, []

    @staticmethod
    def encode_task(task_id: int, kind: int, func: Any, payload: Any) -> Any:
        return (task_id, kind, func, payload)

    @staticmethod
    def encode_batch(frames: list[Any]) -> Any:
        raise AssertionError("a thread pool sends one task at a time")  # batches=False

    @staticmethod
    def decode(frame: Any, conn: Any = None) -> tuple[int, int, Any, float, bool]:
        # A worker thread's progress is (task id, items done); a result has four
        # items: (task id, Outcome, seconds, retiring).
        if len(frame) == 2:
            return frame[0], DECODED_PROGRESS, frame[1], 0.0, False
        task_id, outcome, seconds, retiring = frame
        return task_id, DECODED_OUTCOME, outcome, seconds, retiring


def _readable(fd: int, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(timeout, 0.0) * 1000))


class _Lane:
    """One direction of a thread channel: items in a deque, one pipe byte per item.

    The byte makes the reading end's descriptor readable, so ``wait()`` and
    ``poll()`` watch it as they watch a pipe; closing the writing end is the end
    of file.
    """

    def __init__(self) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.r, self.w = os.pipe()

    def put(self, item: Any) -> None:
        self.items.append(item)  # before the byte: a reader that sees it finds the item
        os.write(self.w, b"x")  # OSError (EPIPE) once the reader has closed

    def get(self, timeout: float | None) -> Any:
        if not _readable(self.r, timeout):
            raise ProcessTimeoutError(f"no message within {timeout} s")
        if not os.read(self.r, 1):
            raise EOFError("the other end of the pool's thread channel was closed")
        return self.items.popleft()


class _ThreadEnd:
    """One end of a thread channel, with the part of ``Connection``'s API a pool uses."""

    def __init__(self, inbox: _Lane, outbox: _Lane) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._lock = threading.Lock()
        self.closed = False

    def fileno(self) -> int:
        return self._inbox.r

    def send_bytes(self, item: Any) -> None:
        if self.closed:
            raise OSError("the pool's thread channel is closed")
        self._outbox.put(item)

    def recv_bytes(self, timeout: float | None = None) -> Any:
        if self.closed:
            raise OSError("the pool's thread channel is closed")
        return self._inbox.get(timeout)

    def poll(self, timeout: float | None = 0.0) -> bool:
        return not self.closed and _readable(self._inbox.r, timeout)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        os.close(self._outbox.w)  # the peer reads end of file
        os.close(self._inbox.r)  # the peer's next send fails (EPIPE)


def thread_pipe() -> tuple[_ThreadEnd, _ThreadEnd]:
    """The (dispatcher's, worker's) ends of a new thread channel."""
    down, up = _Lane(), _Lane()
    return _ThreadEnd(up, down), _ThreadEnd(down, up)


class _WorkerThread:
    """A worker thread, with the part of ``Process``'s API the dispatcher uses."""

    def __init__(
        self, target: Callable[..., object], args: tuple[Any, ...], daemon: bool = True
    ) -> None:
        self._target = target
        self._args = args
        self._thread = threading.Thread(target=self._run, daemon=daemon)
        self.name = self._thread.name.replace("Thread", "Process", 1)
        self.pid = os.getpid()
        self._ended_r, self._ended_w = os.pipe()  # the sentinel: end of file = ended
        self._lock = threading.Lock()
        self._signalled = False
        self.exitcode: int | None = None
        #: What the thread died of: a task's SystemExit or KeyboardInterrupt, which a
        #: thread worker does not catch (the dispatcher names it, as the lost task's
        #: error's cause).
        self.died_of: BaseException | None = None

    @property
    def sentinel(self) -> int:
        return self._ended_r

    def start(self) -> None:
        self._thread.name = self.name.replace("Process", "Thread", 1)
        self._thread.start()

    def _run(self) -> None:
        conn = self._args[0]
        try:
            self._target(*self._args)
        except OSError:
            pass  # its channel was closed under it: the pool abandoned it (terminate)
        except BaseException as exc:  # a task's SystemExit, KeyboardInterrupt: the thread's end
            self.died_of = exc
            raise
        finally:
            conn.close()
            self._signal_end()

    def _signal_end(self) -> None:
        with self._lock:
            if self._signalled:
                return
            self._signalled = True
            self.exitcode = 0
        os.close(self._ended_w)

    def kill(self) -> None:
        """Abandon the thread: it cannot be stopped; it ends after its current task
        (its channel, closed by the dispatcher, makes it return), result dropped."""
        self._signal_end()

    terminate = kill

    def join(self, timeout: float | None = None) -> None:
        if not self._signalled:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        os.close(self._ended_r)


class ThreadPool(Pool):
    """A pool of worker threads: ``multiprocessing.pool.ThreadPool``'s API.

    The same methods as ``Pool`` (``apply``, ``map``, ``imap``..., ``close``,
    ``terminate``, ``join``, the context manager), run by threads of this process:
    functions, arguments and results are passed as they are, never pickled.

    Args:
        processes: the number of worker threads; default ``os.cpu_count()``.
        initializer: called as ``initializer(*initargs)`` in each worker thread.
        initargs: arguments for ``initializer``.

    Raises:
        ValueError: ``processes`` below 1.
        TypeError: a non-callable ``initializer``, or a wrong argument type.

    Note:
        A thread cannot be killed: ``timeout=``/``task_timeout=`` raise
        ``ValueError`` here, and ``terminate()`` (or ``cancel()`` of a running
        task) leaves a running task to finish in the background, its result
        dropped. An exception a task raises comes back as itself, with its own
        traceback (no ``RemoteTraceback``), as in the stdlib.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
    ) -> None:
        processes = _check_workers(processes, initializer)
        self._dispatcher: Dispatcher | None = None
        # _WorkerThread has the part of Process's API the dispatcher uses.
        self._dispatcher = Dispatcher(
            _WorkerThread,  # type: ignore[arg-type]
            processes,
            initializer,
            tuple(initargs),
            None,
            codec=ObjectCodec(),
            pipe=thread_pipe,
        )
        self._processes = processes
        self._concurrency = 1  # a coroutine task runs to its end on its thread's loop

    def _check_timeout(self, timeout: object, what: str) -> float | None:
        if timeout is not None:
            raise ValueError(
                f"{what}= needs a process pool: a ThreadPool cannot stop a running thread. "
                "Use proctor.Pool for tasks that may hang, or drop the argument."
            )
        return None

    def __reduce__(self) -> Any:
        raise TypeError("a ThreadPool cannot be pickled or passed to another process")
