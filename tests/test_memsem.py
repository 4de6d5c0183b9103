"""Semaphores in anonymous shared memory (``_sync._memsem``): the C ``MemSemaphore``
and the pure-Python ``CtypesSemaphore`` behave as ``_multiprocessing.SemLock`` does
for the calls proctor makes, across processes, and refuse what they cannot do.

The queues that use them are tested in test_queue.py (kills, takeovers, every start
method) and test_queue_accel.py (a pure-Python child on a C parent's semaphores).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import signal
import sys

import pytest

from proctor._core._anonmem import allocate
from proctor._sync import _ctypessem, _memsem
from proctor._sync._ctypessem import CtypesSemaphore
from proctor._sync._memsem import SIZE, MemorySemaphore

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="unnamed process-shared semaphores: Linux only"
)


def _new_ctypes(value: int, maxvalue: int) -> CtypesSemaphore:
    """A semaphore made as a process without the C accelerator would use one."""
    memory, offset = allocate(SIZE)
    libc = _ctypessem._load_libc()
    address = ctypes.addressof((ctypes.c_char * SIZE).from_buffer(memory, offset))
    assert libc.sem_init(ctypes.c_void_p(address), 1, value) == 0
    return CtypesSemaphore(memory, offset, maxvalue, SIZE)


@pytest.fixture(params=["native", "ctypes"])
def make(request):
    """A factory of new semaphores ``(value, maxvalue)`` of either implementation."""
    if request.param == "ctypes":
        return _new_ctypes
    if not _memsem.AVAILABLE:
        pytest.skip("the C accelerator is not active here")
    return lambda value, maxvalue: MemorySemaphore(value, maxvalue).sem


def test_counts_timeouts_and_the_bound_are_those_of_a_semlock(make):
    sem = make(0, 2)
    assert sem.acquire(False) is False
    assert sem.acquire(True, 0) is False
    assert sem.acquire(timeout=0.01) is False  # a timed sleep that nobody ends
    assert sem._is_zero()
    sem.release()
    sem.release()
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()
    assert not sem._is_zero()
    assert sem.acquire(block=False) is True
    assert sem.acquire(True, None) is True  # (a unit is there: no sleep)
    assert sem._is_zero()


def test_a_post_from_another_process_ends_a_wait(make):
    sem = make(0, 1)
    pid = os.fork()
    if pid == 0:  # the child: post, and leave without running any of the parent's code
        try:
            sem.release()
        finally:
            os._exit(0)
    try:
        assert sem.acquire(True, 30) is True  # woken by the child (or taken at once)
    finally:
        os.waitpid(pid, 0)
    assert sem.acquire(False) is False


def test_a_signal_handler_that_raises_ends_a_wait(make):
    sem = make(0, 1)

    def alarm(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            sem.acquire()  # no timeout: only the signal's handler ends this
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert sem._is_zero()


#: acquire() calls that _multiprocessing.SemLock refuses with TypeError, and the
#: name the C type's message gives for each.
BAD_ACQUIRES = [
    ((True, 1, 2), {}, "at most 2 arguments"),
    ((), {"wait": True}, "wait"),
    ((True,), {"block": False}, "block"),
    ((), {"timeout": 1, "block": True, "bogus": 0}, "bogus"),
    ((), {"timeout": "soon"}, "str"),
]


@pytest.mark.parametrize(("args", "kwargs", "names"), BAD_ACQUIRES)
def test_bad_acquire_arguments_raise_type_error_as_a_semlock_does_and_take_nothing(
    make, args, kwargs, names
):
    import _multiprocessing

    reference = _multiprocessing.SemLock(1, 0, 1, "/proctor-test-memsem", True)  # counting
    with pytest.raises(TypeError):
        reference.acquire(*args, **kwargs)
    sem = make(0, 1)
    with pytest.raises(TypeError) as raised:
        sem.acquire(*args, **kwargs)
    if not isinstance(sem, CtypesSemaphore):
        assert names in str(raised.value)  # the C message names what is wrong
    sem.release()
    assert sem.acquire(False) is True  # the one unit is still there: nothing was taken
    assert sem._is_zero()


def test_an_error_from_the_block_arguments_truth_propagates(make):
    class Untruthy:
        def __bool__(self):
            raise ZeroDivisionError("no truth value")

    sem = make(0, 1)
    with pytest.raises(ZeroDivisionError, match="no truth value"):
        sem.acquire(Untruthy())
    sem.release()
    assert sem.acquire(1) is True  # (any true value blocks; a unit is there)


@pytest.mark.skipif(not _memsem.AVAILABLE, reason="the C accelerator is not active here")
def test_the_c_type_refuses_memory_it_cannot_use():
    native = _memsem._MemSemaphore
    memory = mmap.mmap(-1, 4096)
    with pytest.raises(ValueError, match="aligned"):
        native(memory, 4096 - 16, 1, 0)  # no room for a sem_t
    with pytest.raises(ValueError, match="aligned"):
        native(memory, 8, 1, 0)
    with pytest.raises(ValueError, match="maxvalue"):
        native(memory, 0, 0, 0)
    with pytest.raises(BufferError):
        native(b"\0" * 64, 0, 1, 0)  # read-only
    sem = native(memory, 64, 1, 1)
    with pytest.raises(BufferError):
        memory.close()  # the semaphore keeps the mapping
    assert sem.handle == ctypes.addressof(ctypes.c_char.from_buffer(memory, 64))
    assert sem.maxvalue == 1
    with pytest.raises(TypeError):
        sem.acquire(True, 1, 2)
    with pytest.raises(TypeError):
        sem.acquire(wait=True)
    del sem
    memory.close()


@pytest.mark.skipif(not _memsem.AVAILABLE, reason="the C accelerator is not active here")
def test_a_memory_semaphore_travels_only_with_its_memory_and_not_after_close():
    named = MemorySemaphore(0, 1)
    with pytest.raises(RuntimeError):
        pickle.dumps(named)  # its memory has no name: only a start or a message carries it
    named.close()
    named.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        named.sem.acquire(False)
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(named)
