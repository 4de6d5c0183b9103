"""``Queue`` and ``JoinableQueue`` for threads: ``queue.Queue`` with ``multiprocessing``'s API.

Items are passed as they are, never pickled (as ``multiprocessing.dummy``'s).
Added to ``queue.Queue``: ``close()``, ``join_thread()``, ``cancel_join_thread()``
(there is no feeder thread), ``join(timeout)``, the context manager, and checked
arguments. ``queue.Empty`` and ``queue.Full`` are raised, as by every proctor queue.
"""

from __future__ import annotations

import numbers
import queue
import threading
import weakref

from .._core._errors import QueueClosedError
from ._sync import wait_seconds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("JoinableQueue", "Queue")


def _wait(block: bool, timeout: Any) -> float | None:
    # queue.Queue refuses a negative timeout; multiprocessing's only polls then.
    if timeout is None:
        return None
    seconds = wait_seconds(timeout)
    return seconds if block else None


class Queue(queue.Queue):
    """A FIFO queue shared by the threads of this process.

    Args:
        maxsize: the most items it holds (``put()`` waits while it is full);
            ``0`` or less: no limit.

    Raises:
        TypeError: ``maxsize`` is not an int.

    Note:
        ``close()`` means what it means for a ``multiprocessing.Queue`` in one
        process, for the calling thread: it will put nothing more, and a later
        ``put()`` by that thread raises ``proctor.QueueClosedError``. Other
        threads (the "processes" sharing the queue) put and get as before, so a
        parent may close its handle while its children go on.
    """

    def __init__(self, maxsize: int = 0) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, numbers.Integral):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__} ({maxsize!r})")
        super().__init__(int(maxsize))
        # The threads that called close(), as each process closes its own handle.
        self._closed_by: weakref.WeakSet[threading.Thread] = weakref.WeakSet()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item`` in the queue, waiting while it is full.

        Args:
            item: any object (it is not copied).
            block: wait for room; ``False`` raises ``queue.Full`` at once.
            timeout: with ``block``, seconds to wait for room (``None``: for ever).

        Raises:
            queue.Full: no room within ``timeout`` (or at once, without ``block``).
            QueueClosedError: (a ``ValueError``) ``close()`` was called.
            TypeError: ``timeout`` is not a number or ``None``.
        """
        if self._closed_by and threading.current_thread() in self._closed_by:
            raise QueueClosedError(
                f"put() on {self!r}: this thread called close(), so it can put nothing more"
            )
        super().put(item, block, _wait(block, timeout))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item, waiting while the queue is empty.

        Raises:
            queue.Empty: nothing arrived within ``timeout`` (or at once, without
                ``block``).
            TypeError: ``timeout`` is not a number or ``None``.
        """
        return super().get(block, _wait(block, timeout))

    def put_nowait(self, item: Any) -> None:
        """``put(item, False)``."""
        self.put(item, False)

    def close(self) -> None:
        """Say that the calling thread will put nothing more; idempotent (see the class's note)."""
        self._closed_by.add(threading.current_thread())

    def join_thread(self) -> None:
        """Compatibility no-op: there is no feeder thread to join.

        Raises:
            ValueError: the queue was not closed first, as with ``multiprocessing``.
        """
        if threading.current_thread() not in self._closed_by:
            raise ValueError(
                f"join_thread() needs close() first: {self!r} was not closed by this thread"
            )

    def cancel_join_thread(self) -> None:
        """Compatibility no-op: nothing is ever left in a feeder thread to lose."""

    def join(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        """Wait until every item put has been marked done with ``task_done()``.

        Args:
            timeout: seconds to wait (``None``: for ever); a proctor addition.

        Returns:
            True when every item is done; False if ``timeout`` passed first.

        Raises:
            TypeError: ``timeout`` is not a number or ``None``.
        """
        seconds = wait_seconds(timeout)
        with self.all_tasks_done:
            return self.all_tasks_done.wait_for(lambda: not self.unfinished_tasks, seconds)

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError(
            f"a proctor.dummy {type(self).__name__} is shared by the threads of one process "
            "and cannot be pickled or sent to another process; use proctor.Queue there"
        )

    def __repr__(self) -> str:
        closed = threading.current_thread() in self._closed_by
        state = (
            f"closed (by this thread) qsize={self.qsize()}" if closed else f"qsize={self.qsize()}"
        )
        bound = f" maxsize={self.maxsize}" if self.maxsize > 0 else ""
        return f"<proctor.dummy.{type(self).__name__} {state}{bound}>"


class JoinableQueue(Queue):
    """A ``Queue`` whose consumers mark items done (``task_done()``) for ``join()``.

    ``queue.Queue`` counts unfinished items for every queue, so this is
    ``Queue`` under the name ``multiprocessing`` gives it.
    """
