"""A pool's states, and what happens to live pools when the interpreter exits.

Every live dispatcher (a local pool's, a ``RemoteDispatcher``) is in ``live``; those
whose work must be done before the interpreter exits -- an executor's, a closed
``Pool``'s -- are in ``finish_at_exit``'s set too. A ``threading`` exit hook, which runs
when the main thread ends and before ``atexit``, joins those and terminates the other
running pools (see docs/design.md, "Pools"). A forked child starts with neither set
filled: its copies of the parent's pools are not its own.
"""

from __future__ import annotations

import os
import threading
import time
import weakref

from .._core._errors import PoolTerminatedError, ProcessTimeoutError
from .._logging import _logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = (
    "BROKEN",
    "CLOSED",
    "INHERITED",
    "RUNNING",
    "TERMINATING",
    "finish_at_exit",
    "inherited_pool_error",
    "register_exit_hook",
    "run_rest_and_join",
)

RUNNING, CLOSED, TERMINATING, BROKEN = "running", "closed", "terminating", "broken"
#: A forked child's copy of its parent's pool: it takes no calls there.
INHERITED = "inherited"


def inherited_pool_error(pool: Any) -> ValueError:
    """The error for a call on a pool a forked child inherited from its parent."""
    return ValueError(
        f"{pool!r} belongs to the process that made it, not to this forked child: its "
        "workers and the thread that hands them tasks are the parent's. Make a pool in "
        "the child (or pass the work back to the parent)"
    )


#: Every live dispatcher, and those whose work must be done before the interpreter
#: exits: an executor's (shut down without waiting, or not at all) and a closed
#: ``Pool``'s. The stdlib's executor finishes its work at exit too; a running ``Pool``
#: is terminated, as the stdlib's is.
live: weakref.WeakSet[Any] = weakref.WeakSet()
_finish_at_exit: weakref.WeakSet[Any] = weakref.WeakSet()
_exit_hook_registered = False
#: The exit hook has run: executors take no new work ("after interpreter shutdown").
exiting = False


def register_exit_hook() -> None:
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        # threading's exit hooks run when the main thread ends, before atexit's, so
        # before proctor's own exit stage stops the (daemonic) workers -- and while
        # the dispatchers can still finish or stop without replacing a worker.
        try:
            threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):  # no such hook, or exiting already
            import atexit

            atexit.register(_at_exit)


def _forget_parents_pools() -> None:
    # A forked child's copies of its parent's pools are not its own: their dispatcher
    # threads do not exist here, and their workers and wake-up pipes are the parent's.
    # threading copies its exit hooks into the child, so without this a child that
    # ends through threading._shutdown() (one with threads left at its end: a pool
    # worker forked from the dispatcher thread, say) would close, join or terminate
    # them at its exit -- writing to the parent's wake-up pipe, and logging "a pool
    # could not be stopped at exit" where the fork came from the dispatcher thread.
    for dispatcher in live:
        dispatcher.state = INHERITED  # (calls on it say whose it is, not hang)
    live.clear()
    _finish_at_exit.clear()


os.register_at_fork(after_in_child=_forget_parents_pools)


def run_rest_and_join(
    dispatcher: Any, timeout: float | None, wait_for_it: bool, read_rest: bool = True
) -> bool:
    """A closed pool's ``join()``, for a dispatcher here or a ``RemoteDispatcher``: run
    every task left, then wait for the dispatcher's thread to end (if ``wait_for_it``).

    ``close(); join()`` runs every task, as the stdlib's does: the rest of the input
    of the lazy iterators still held is read now, in this thread, a read-ahead's
    worth beyond the chunks done at a time, and their results are kept for their
    consumers (an endless input runs until ``timeout``, its untaken results filling
    memory as in the stdlib). An iterator its consumer began and then dropped (a
    loop left with ``break``) was collected and is not read. With ``read_rest`` false (the
    interpreter's exit, where no ``join()`` asked for it) the input not read yet is
    left unread: the tasks already submitted run, and a consumer meets
    ``PoolTerminatedError`` after them.

    Returns:
        Whether it waited and the thread ended.

    Raises:
        RuntimeError: called from the dispatcher's own thread (a callback).
        ProcessTimeoutError: the work was not done within ``timeout``.
    """
    if wait_for_it and threading.current_thread() is dispatcher._thread:
        raise RuntimeError("a pool cannot be joined from its own callbacks")
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    with dispatcher._lock:
        lazy = list(dispatcher._lazy)
    for iterator in lazy:
        if not read_rest:
            iterator._stop_reading(
                PoolTerminatedError("the interpreter exited before this input was read")
            )
        elif wait_for_it:
            if not iterator._feed_rest(deadline):
                raise ProcessTimeoutError(
                    f"the pool's input was not all read within {timeout} s (an imap "
                    "iterator's input is read at join(); it may be endless)"
                )
        else:
            # (An executor's shutdown(wait=False): the input is read now, and the
            # dispatcher's thread ends by itself once it has run.)
            iterator._feed(unbounded=True)
    with dispatcher._lock:
        dispatcher._joining = True
        dispatcher._wake_locked()
    if not wait_for_it:
        return False
    # The dispatcher's own event, not Thread.join()/is_alive(): on Python <= 3.12 a
    # KeyboardInterrupt in an earlier join() could have marked the thread stopped
    # while it runs (see Dispatcher._ended).
    if not dispatcher._ended.wait(
        None if deadline is None else max(deadline - time.monotonic(), 0.0)
    ):
        raise ProcessTimeoutError(f"the pool's tasks did not finish within {timeout} s")
    return True


def finish_at_exit(dispatcher: Any) -> None:
    """Have the interpreter's exit wait until ``dispatcher``'s work is done."""
    _finish_at_exit.add(dispatcher)
    register_exit_hook()


def _at_exit() -> None:
    global exiting
    exiting = True
    if _other_threads_run():
        # threading's exit hooks run before it waits for the threads that are not
        # daemons, and one of them may still be taking an imap iterator's results
        # (reading its input as it goes): the pools are finished once they have
        # ended -- by atexit, which runs after that wait (a hook registered now runs
        # first, before proctor's exit stage stops the workers).
        import atexit

        atexit.register(_finish_pools)
    else:
        _finish_pools()


def _other_threads_run() -> bool:
    """Whether a thread other than this one that is not a daemon still runs."""
    me = threading.current_thread()
    return any(
        thread is not me and not thread.daemon and thread.is_alive()
        for thread in threading.enumerate()
    )


def _finish_pools() -> None:
    for dispatcher in list(live):
        try:
            if dispatcher in _finish_at_exit and dispatcher.state in (RUNNING, CLOSED):
                dispatcher.close()
                # What was submitted runs; input no join() asked to read is left
                # unread (an imap iterator left by a break may be endless).
                dispatcher.join(None, read_rest=False)
            elif dispatcher.state in (RUNNING, BROKEN):
                # A pool still running: terminated, as the stdlib's is -- here, so
                # that its dispatcher stops before the exit stage kills its workers
                # (it would start replacements during the exit).
                dispatcher.terminate()
        except Exception:
            # An exit hook must not stop the others.
            _logger.get_logger().exception("a pool could not be stopped at exit")
