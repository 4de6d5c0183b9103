"""Timeouts every blocking call shares (``_core._timeout.check_timeout``).

``math.inf``, and any timeout longer than ``LONGEST_WAIT`` (~24.8 days), waits without
limit, as ``None`` does: they used to raise ``OverflowError`` or ``OSError(EINVAL)``
from the system call underneath (as they do in the stdlib). Each wait here is ended by
a thread soon after it starts, so the wait itself is exercised.
"""

from __future__ import annotations

import math
import threading

import pytest

import proctor
from proctor._core._timeout import LONGEST_WAIT, check_timeout

NO_LIMIT = [math.inf, 1e300, LONGEST_WAIT * 2]


def soon(action, *args):
    """Run ``action(*args)`` in a thread a moment from now; the thread, to join."""
    timer = threading.Timer(0.05, action, args)
    timer.start()
    return timer


@pytest.mark.parametrize("timeout", NO_LIMIT)
def test_a_timeout_too_long_to_be_one_is_no_limit(timeout):
    assert check_timeout(timeout) is None
    assert check_timeout(LONGEST_WAIT) == LONGEST_WAIT
    assert check_timeout(-1) == -1.0  # (each call says what a negative one means)


@pytest.mark.parametrize("timeout", NO_LIMIT)
@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_locks_and_semaphores_wait_without_limit(kind, timeout):
    lock = getattr(proctor, kind)()
    lock.acquire()
    # (A lock is released by another thread as multiprocessing allows; an RLock by
    # its owner only: the owner waits in a thread of its own.)
    if kind == "RLock":
        held = threading.Event()
        done = threading.Event()

        def hold():
            lock.acquire()
            held.set()
            done.wait(30)
            lock.release()

        lock.release()
        owner = threading.Thread(target=hold)
        owner.start()
        assert held.wait(30)
        timer = soon(done.set)
        try:
            assert lock.acquire(timeout=timeout) is True
        finally:
            owner.join(30)
    else:
        timer = soon(lock.release)
        assert lock.acquire(timeout=timeout) is True
    lock.release()
    timer.join(30)


@pytest.mark.parametrize("timeout", NO_LIMIT)
def test_events_conditions_queues_and_pipes_wait_without_limit(timeout):
    event = proctor.Event()
    timer = soon(event.set)
    assert event.wait(timeout) is True
    timer.join(30)

    condition = proctor.Condition()
    with condition:
        timer = soon(lambda: [condition.acquire(), condition.notify(), condition.release()])
        assert condition.wait(timeout) is True
    timer.join(30)

    q = proctor.Queue()
    timer = soon(q.put, "item")
    assert q.get(timeout=timeout) == "item"
    timer.join(30)
    q.close()

    a, b = proctor.Pipe()
    timer = soon(b.send, "message")
    assert a.poll(timeout) is True
    assert a.recv(timeout=timeout) == "message"
    timer.join(30)
    timer = soon(b.send, "again")
    assert proctor.connection.wait([a], timeout) == [a]
    assert a.recv() == "again"
    timer.join(30)
    a.close()
    b.close()


def _pause():
    import time

    time.sleep(0.05)


@pytest.mark.parametrize("timeout", NO_LIMIT)
def test_join_and_pool_results_wait_without_limit(timeout):
    p = proctor.Process(target=_pause)
    p.start()
    p.join(timeout)
    assert p.exitcode == 0
    p.close()
    with proctor.Pool(1) as pool:
        result = pool.apply_async(pow, (3, 2))
        assert result.get(timeout) == 9
        assert next(pool.imap(abs, [-4]).__iter__()) == 4
        assert pool.imap(abs, [-5]).next(timeout) == 5
