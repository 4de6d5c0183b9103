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


# -- _core._timeout.ready_by: the one poll loop, in C or with the select module --------


@pytest.fixture(params=["C", "select"])
def poll_implementation(request, monkeypatch):
    """ready_by with the C accelerator's poll, then with select.poll()."""
    from proctor._core import _system, _timeout

    if request.param == "C":
        if _system.core_native() is None:
            pytest.skip("the C accelerator is not built here")
        monkeypatch.setattr(_timeout, "_c_poll", _system.core_native().poll_readable)
    else:
        monkeypatch.setattr(_timeout, "_c_poll", False)
    return request.param


def test_ready_by_returns_the_readable_ones_and_never_ends_early(poll_implementation):
    import os
    import signal
    import time

    from proctor._core._timeout import ready_by

    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        began = time.monotonic()
        assert ready_by((r1, r2), began + 0.05) == []
        assert time.monotonic() - began >= 0.05
        os.write(w2, b"x")
        assert ready_by([r1, r2], None) == [r2]
        os.close(w1)  # end of file is readable too
        assert sorted(ready_by((r1, r2), time.monotonic() + 10)) == sorted([r1, r2])
        # A signal whose handler returns interrupts the poll: it waits on.
        os.close(w2)
        os.close(r2)
        r2, w2 = os.pipe()
        previous = signal.signal(signal.SIGALRM, lambda *_: None)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.02)
            began = time.monotonic()
            assert ready_by([r2], began + 0.2) == []
            assert time.monotonic() - began >= 0.2
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    finally:
        for fd in (r1, r2, w2):
            os.close(fd)


def test_the_c_poll_refuses_what_is_not_a_descriptor_or_a_wait():
    from proctor._core import _system

    native = _system.core_native()
    if native is None:
        pytest.skip("the C accelerator is not built here")
    for fds, timeout_ms, error in [
        ([True], 0, TypeError),
        (["3"], 0, TypeError),
        ([-1], 0, ValueError),
        (5, 0, TypeError),
        ([0], -2, ValueError),
        ([0], 2**31, ValueError),
        ([0], 0.5, TypeError),
    ]:
        with pytest.raises(error):
            native.poll_readable(fds, timeout_ms)
