"""Queues: exact sizes, data that outlives its producer, zero-copy arrays, no hangs.

The ring's fast paths have two implementations (C, ``_queues/_native.c``, and
pure Python); the tests of the paths they take -- items across processes, kills,
bounds, batches -- take the ``ring_impl`` fixture and run under both in this one
run (the active one under every start method, the other under fork). The pure
ring also gets the pure implementation's semaphores (named ones), the C ring the
accelerator's (in shared memory, where ``_sync._memsem.AVAILABLE``).
test_queue_accel.py checks what only the C module has, and the two together.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import psutil
import pytest

import proctor
import proctor.queues
from helpers import START_METHODS, call_in_thread, wait_until
from proctor import JoinableQueue, Queue, SimpleQueue
from proctor._queues import _accel as _ring_accel
from proctor._queues import _queue as _queue_module
from proctor._queues._ring import Ring

# --- the two implementations of the ring's fast paths ------------------------------------

RING_IMPLS = ("native", "python")
RING_ACTIVE = _ring_accel.ACTIVE
RING_OTHER = next(name for name in RING_IMPLS if name != RING_ACTIVE)


@pytest.fixture
def ring_impl(request, monkeypatch):
    """Rings made in this test (and in its forked children) use ``request.param``'s
    fast paths; a spawned child uses its own active one (the two share a queue).
    Queues made with the pure ring get named semaphores, as the pure
    implementation makes them."""
    native = _ring_accel.native
    if request.param == "native":
        if native is None:
            pytest.skip(f"the queue accelerator is not active here: {_ring_accel.REASON}")
    else:
        monkeypatch.setattr(_ring_accel, "native", None)
        monkeypatch.setattr(_queue_module, "MEMORY_SEMAPHORES", False)
    return request.param


def sem_kind(ring_impl: str) -> str:
    """The class of the semaphores of a queue made under the ``ring_impl`` fixture."""
    memory = ring_impl == "native" and _queue_module.MEMORY_SEMAPHORES
    return "MemorySemaphore" if memory else "NamedSemaphore"


@pytest.fixture
def named_semaphores(monkeypatch):
    """Queues made in this test (and its forked children) get named semaphores."""
    monkeypatch.setattr(_queue_module, "MEMORY_SEMAPHORES", False)


#: Both implementations, in one process.
both_rings = pytest.mark.parametrize("ring_impl", RING_IMPLS, indirect=True)
#: The active implementation under every start method, the other one under fork.
methods_and_both_rings = pytest.mark.parametrize(
    ("start_method", "ring_impl"),
    [(method, RING_ACTIVE) for method in START_METHODS] + [("fork", RING_OTHER)],
    indirect=["ring_impl"],
)

# --- targets ----------------------------------------------------------------------------


def put_range(q, n, start=0):
    for i in range(start, start + n):
        q.put(i)
    return q.qsize()


def put_many_range(q, n):
    q.put_many(range(n))


def get_n(q, n):
    return [q.get(timeout=30) for _ in range(n)]


def consume_forever(q):
    while True:
        try:
            q.get(timeout=60)
        except queue.Empty:
            return


def die_holding_the_put_lock_mid_frame(q, ready):
    # Take the put lock and scribble a half-written frame past the tail, as a
    # producer killed in the middle of a put would leave it.
    assert q._put_lock.acquire(timeout=30)
    ring = q._ring
    ring._write(ring.get_field(Ring.PUT_WORD) & ((1 << 36) - 1), b"\xff" * 40)
    ready.set()
    time.sleep(600)


def die_holding_the_get_lock(q, ready):
    assert q._get_lock.acquire(timeout=30)
    ready.set()
    time.sleep(600)


def take_a_token_and_die(q):
    assert q._take_token(True, 30)
    os._exit(0)  # gone between its token and its item


def commit_without_a_token(q):
    # A producer killed between committing its frame and posting its token.
    assert q._put_lock.acquire(timeout=30)
    try:
        assert q._ring.try_put_one(pickle.dumps("tokenless", 5), 1 << 20)
    finally:
        q._put_lock.release()
    os._exit(0)


def signal_then_get(q, ready):
    ready.set()
    return q.get(timeout=30)


def get_many_and_exit(q, n):
    return q.get_many(n, timeout=30)


def make_array(shape, dtype, order):
    return (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape, order=order)


def put_array(q, shape, dtype, order):
    q.put(make_array(shape, dtype, order))


def work_and_mark_done(q, n):
    for _ in range(n):
        q.get(timeout=30)
        q.task_done()


# --- basics -----------------------------------------------------------------------------


@methods_and_both_rings
def test_items_cross_processes_in_order_and_sizes_are_exact(ctx, ring_impl):
    q = ctx.Queue()
    assert q._ring.impl == ring_impl
    p = ctx.Process(target=put_range, args=(q, 1000))
    p.start()
    p.join(60)
    assert p.result == 1000  # exact in the child the moment put() returned
    assert q.qsize() == len(q) == 1000 and not q.empty() and q  # and here
    assert [q.get(timeout=5) for _ in range(1000)] == list(range(1000))
    assert q.empty() and not q and len(q) == 0
    p.close()


def test_tutorial_loop_drains_the_queue_and_ends(ctx):
    q = ctx.Queue()
    p = ctx.Process(target=put_range, args=(q, 5))
    p.start()
    p.join(60)
    got = []
    while q:
        got.append(q.get(timeout=5))
    assert got == [0, 1, 2, 3, 4]
    p.close()


def test_producer_exits_before_anyone_reads_and_nothing_is_lost(ctx):
    # 60,000 items (~1 MB of pickles) put and the producer joined before a
    # single get: stdlib's documented deadlock. Here the data is in the queue.
    q = ctx.Queue()
    p = ctx.Process(target=put_many_range, args=(q, 60_000))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert q.qsize() == 60_000
    got = []
    while len(got) < 60_000:
        got.extend(q.get_many(10_000, timeout=5))
    assert got == list(range(60_000))
    p.close()


def put_forever(q):
    i = 0
    while True:
        q.put(i)
        i += 1


@methods_and_both_rings
def test_a_producer_killed_mid_stream_leaves_everything_it_put(ctx, ring_impl):
    q = ctx.Queue()
    p = ctx.Process(target=put_forever, args=(q,))
    p.start()
    seen = wait_until(lambda: q.qsize() >= 1000 and q.qsize(), timeout=60)
    p.kill()  # anywhere: between puts, or inside one
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    p.close()
    got = []
    while q:
        got.extend(q.get_many(10_000, timeout=5))
    # Every item whose put had returned is there, once, in order; the one being
    # put at the kill is there whole or not at all.
    assert len(got) >= seen
    assert got == list(range(len(got)))
    q.put("still usable")
    assert q.get(timeout=5) == "still usable"
    q.close()


@methods_and_both_rings
def test_many_producers_and_consumers_see_every_item_once(ctx, ring_impl):
    q = ctx.Queue()
    producers = [ctx.Process(target=put_range, args=(q, 500, 500 * i)) for i in range(2)]
    consumers = [ctx.Process(target=get_n, args=(q, 500)) for _ in range(2)]
    for p in producers + consumers:
        p.start()
    for p in producers + consumers:
        p.join(60)
    assert sorted(consumers[0].result + consumers[1].result) == list(range(1000))
    for p in producers + consumers:
        assert p.exitcode == 0
        p.close()


# --- timeouts and bounds ---------------------------------------------------------------------


@both_rings
def test_get_timeout_and_nowait_raise_empty(ring_impl):
    q = Queue()
    assert q._ring.impl == ring_impl
    began = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    elapsed = time.monotonic() - began
    assert 0.2 <= elapsed < 5
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)


def test_a_negative_timeout_counts_as_zero_as_in_multiprocessing():
    # A deadline already passed (``deadline - time.monotonic()`` < 0) still takes what
    # is there; queue.Queue would refuse the number, multiprocessing.Queue does not.
    q = Queue(maxsize=1)
    q.put("there", timeout=-0.5)
    with pytest.raises(queue.Full):
        q.put("no room", timeout=-0.01)
    assert q.get(timeout=-1) == "there"
    with pytest.raises(queue.Empty):
        q.get(timeout=-1e-9)
    q.close()


@both_rings
def test_bounded_queue_blocks_or_raises_full(ring_impl):
    q = Queue(maxsize=2)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    began = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    assert time.monotonic() - began >= 0.2
    assert q.get(timeout=5) == 1 and not q.full()
    q.put(3, timeout=5)
    assert [q.get(timeout=5), q.get(timeout=5)] == [2, 3]


_FULL_BEFORE_QUEUE = """
import sys
from proctor._queues._queue import Queue
print("queue" in sys.modules or "threading" in sys.modules, end=" ")
import asyncio  # (imports threading, not queue)
q = Queue(maxsize=1)
q.put(1)
caught = []
for put in (q.put_nowait, lambda item: asyncio.run(q.aput(item, timeout=0))):
    try:
        put(2)
    except Exception as exc:
        caught.append(exc)
q.get_nowait()
try:
    q.get_nowait()
except Exception as exc:
    caught.append(exc)
q.close()
import queue
import proctor.queues
print([type(exc) for exc in caught] == [queue.Full, queue.Full, queue.Empty],
      proctor.queues.Full is queue.Full, proctor.queues.Empty is queue.Empty)
"""


def test_the_queue_raises_the_queue_modules_errors_though_it_imports_that_module_only_then():
    # queue.py imports threading, which a fork server loading the queues would put in
    # every child it forks (issue 17): queue.Full is reached when one is raised.
    done = subprocess.run(
        [sys.executable, "-c", _FULL_BEFORE_QUEUE], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "False True True True\n"), done.stderr


@methods_and_both_rings
def test_a_blocked_put_resumes_when_a_child_makes_room(ctx, ring_impl):
    q = ctx.Queue(maxsize=1)
    q.put("first")
    p = ctx.Process(target=get_n, args=(q, 2))
    p.start()
    q.put("second", timeout=30)  # blocks until the child took "first"
    p.join(60)
    assert p.result == ["first", "second"]
    p.close()


def test_waiting_getter_in_another_process_wakes_on_put(ctx):
    q = ctx.Queue()
    ready = ctx.Event()
    p = ctx.Process(target=signal_then_get, args=(q, ready))
    p.start()
    assert ready.wait(30)
    # Asleep in get(): past its spin, waiting on the items semaphore.
    wait_until(lambda: psutil.Process(p.pid).status() == psutil.STATUS_SLEEPING, timeout=30)
    q.put("wake up")
    p.join(60)
    assert p.result == "wake up"
    p.close()


# --- faults -----------------------------------------------------------------------------------


@methods_and_both_rings
def test_killed_consumer_leaves_the_queue_usable(ctx, ring_impl):
    q = ctx.Queue()
    p = ctx.Process(target=consume_forever, args=(q,))
    p.start()
    q.put_many(range(200))
    wait_until(lambda: q.qsize() == 0, timeout=30)
    p.kill()
    p.join(30)
    q.put("after")
    assert q.get(timeout=5) == "after"
    assert q.qsize() == 0
    p.close()


@methods_and_both_rings
def test_producer_killed_inside_the_put_lock_leaves_nothing_half_done(ctx, ring_impl):
    q = ctx.Queue()
    assert type(q._shared.put_lock._named).__name__ == sem_kind(ring_impl)
    q.put_many(["a", "b"])
    ready = ctx.Event()
    p = ctx.Process(target=die_holding_the_put_lock_mid_frame, args=(q, ready))
    p.start()
    assert ready.wait(30)
    p.kill()
    p.join(30)
    assert q.qsize() == 2  # the half-written frame was never committed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the queue takes the lock over silently
        q.put("c", timeout=10)  # overwrites the scribble
    assert q.get_many(10, timeout=5) == ["a", "b", "c"]
    assert q.qsize() == 0
    p.close()


@methods_and_both_rings
def test_consumer_killed_inside_the_get_lock_leaves_the_queue_usable(ctx, ring_impl):
    q = ctx.Queue()
    assert type(q._shared.get_lock._named).__name__ == sem_kind(ring_impl)
    q.put_many(range(10))
    assert q.get_many(3, timeout=5) == [0, 1, 2]  # part of the batch frame
    ready = ctx.Event()
    p = ctx.Process(target=die_holding_the_get_lock, args=(q, ready))
    p.start()
    assert ready.wait(30)
    p.kill()
    p.join(30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert q.get(timeout=10) == 3
    assert q.qsize() == 6
    assert q.get_many(10, timeout=5) == list(range(4, 10))
    p.close()


def test_items_taken_in_another_process_are_counted_from_the_get_word(ctx):
    q = ctx.Queue()
    q.put_many(range(10))
    p = ctx.Process(target=get_many_and_exit, args=(q, 4))
    p.start()
    p.join(60)
    assert p.result == [0, 1, 2, 3]
    assert q.qsize() == 6
    assert q.get(timeout=5) == 4
    p.close()


@methods_and_both_rings
def test_an_item_whose_token_died_with_a_consumer_is_still_got(ctx, ring_impl):
    q = ctx.Queue()
    q.put("orphaned")
    p = ctx.Process(target=take_a_token_and_die, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert q.qsize() == 1
    # No token is left for it: the getter finds it when it looks at the ring again.
    assert q.get(timeout=10) == "orphaned"
    assert q.qsize() == 0
    p.close()


@methods_and_both_rings
def test_an_item_committed_without_its_token_is_still_got(ctx, ring_impl):
    q = ctx.Queue()
    p = ctx.Process(target=commit_without_a_token, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert q.qsize() == 1
    assert q.get_nowait() == "tokenless"  # seen in the ring, token or not
    q.put("next")
    assert q.get(timeout=10) == "next"
    assert q.qsize() == 0
    p.close()


def get_at_the_longest_slice(q, fd):
    """get() with nothing there, telling (through ``fd``) when its wait has backed
    off to LONGEST_SLICE (reached after ~0.6 s: CHECK_INTERVAL 0.02 s here)."""
    from proctor._core import _wait

    _wait.CHECK_INTERVAL = 0.02
    take = q._take_token
    told = []

    def telling(block=True, timeout=None):
        if block and not told and timeout is not None and timeout >= _wait.LONGEST_SLICE:
            told.append(os.write(fd, b"!"))
        return take(block, timeout)

    q._take_token = telling
    return q.get(timeout=60)


@both_rings
def test_a_get_backed_off_to_its_longest_slice_still_gets_an_item_without_its_token(ring_impl):
    """The producer dies between committing its frame and posting its token while
    the getter already sleeps LONGEST_SLICE at a time: it still gets the item."""
    import select

    ctx = proctor.get_context("fork")
    q = ctx.Queue()
    read_fd, write_fd = os.pipe()
    getter = ctx.Process(target=get_at_the_longest_slice, args=(q, write_fd))
    getter.start()
    try:
        ready, _, _ = select.select([read_fd], [], [], 30)
        assert ready and os.read(read_fd, 1) == b"!", "the get never backed off all the way"
        producer = ctx.Process(target=commit_without_a_token, args=(q,))
        producer.start()
        producer.join(60)
        assert producer.exitcode == 0
        producer.close()
        getter.join(30)
        assert getter.exitcode == 0 and getter.result == "tokenless"
    finally:
        if getter.exitcode is None:
            getter.kill()
            getter.join(30)
        getter.close()
        os.close(read_fd)
        os.close(write_fd)
    assert q.qsize() == 0
    q.close()


def test_unpicklable_item_raises_in_the_caller_and_nothing_is_put():
    q = Queue()
    with pytest.raises((TypeError, pickle.PicklingError)) as info:
        q.put(threading.Lock())
    assert "lock" in str(info.value)
    with pytest.raises((TypeError, pickle.PicklingError)):
        q.put_many([1, threading.Lock(), 3])
    assert q.qsize() == 0


def test_lambdas_travel_through_queues():
    q = Queue()
    q.put(lambda x: x + 1)
    assert q.get(timeout=5)(1) == 2


def test_closed_queue_refuses_and_thread_methods_are_compatible():
    q = Queue()
    with pytest.raises(ValueError, match="not closed"):
        q.join_thread()
    q.cancel_join_thread()
    q.close()
    q.close()
    q.join_thread()
    for use in (lambda: q.put(1), q.get, q.qsize):
        with pytest.raises(ValueError, match="closed"):
            use()
    assert "closed" in repr(q)


def test_a_queue_cannot_be_pickled_outside_a_start():
    q = Queue()
    with pytest.raises(RuntimeError, match="argument of Process"):
        pickle.dumps(q)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"maxsize": "3"}, TypeError),
        ({"maxsize": 1.5}, TypeError),
        ({"capacity": 100}, ValueError),
        ({"capacity": "big"}, TypeError),
    ],
)
def test_bad_construction_arguments(kwargs, error):
    with pytest.raises(error):
        Queue(**kwargs)


def test_bad_call_arguments():
    q = Queue()
    q.put("there")  # bad timeouts fail even when the call could succeed at once
    with pytest.raises(TypeError):
        q.put(1, timeout="1")
    with pytest.raises(TypeError):
        q.get(timeout="1")
    with pytest.raises(ValueError, match="NaN"):
        q.get(timeout=float("nan"))
    with pytest.raises(ValueError):
        q.get_many(0)
    with pytest.raises(TypeError):
        q.get_many(1.5)


# --- batches ------------------------------------------------------------------------------------


def test_put_many_and_get_many():
    q = Queue()
    q.put_many(range(10))
    assert q.get_many(4, timeout=5) == [0, 1, 2, 3]
    assert q.get_many(100, timeout=5) == [4, 5, 6, 7, 8, 9]
    with pytest.raises(queue.Empty):
        q.get_many(3, timeout=0.1)


def test_put_many_on_a_bounded_queue_reports_how_many_went_in():
    q = Queue(maxsize=3)
    with pytest.raises(queue.Full) as info:
        q.put_many(range(5), timeout=0.1)
    assert info.value.items_put == 3
    assert str(info.value) == "timed out: the queue stayed full (3 items)"
    assert q.get_many(10, timeout=5) == [0, 1, 2]


# --- arrays: zero-copy through memfds -----------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype", "order"),
    [((1000, 1000), np.float64, "C"), ((300, 700), np.int16, "F"), ((200_000,), np.bool_, "C")],
)
def test_arrays_arrive_whole_writable_and_typed(ctx, shape, dtype, order):
    q = ctx.Queue()
    p = ctx.Process(target=put_array, args=(q, shape, dtype, order))
    p.start()
    p.join(60)
    a = q.get(timeout=10)
    expected = make_array(shape, dtype, order)
    assert a.dtype == expected.dtype and a.shape == expected.shape
    assert np.array_equal(a, expected)
    assert a.flags.writeable
    a[0] = 1  # an ordinary writable array
    p.close()


def test_large_bytes_and_many_arrays_in_one_item():
    q = Queue(capacity=64 * 1024)
    blob = os.urandom(1 << 20)  # larger than the whole ring: spilled
    arrays = [np.full(100_000, i, dtype=np.int32) for i in range(5)]
    text = "x" * (1 << 20)  # a scalar larger than the ring: spilled too
    q.put(blob)
    q.put(text)
    q.put(arrays)
    assert q.get(timeout=5) == blob
    assert q.get(timeout=5) == text
    got = q.get(timeout=5)
    assert all(np.array_equal(a, b) for a, b in zip(got, arrays, strict=True))


# --- JoinableQueue and SimpleQueue ---------------------------------------------------------------


def test_joinable_queue_join_waits_for_task_done(ctx):
    q = ctx.JoinableQueue()
    q.put_many(range(5))
    assert q.join(timeout=0.1) is False
    p = ctx.Process(target=work_and_mark_done, args=(q, 5))
    p.start()
    assert q.join(timeout=60) is True
    p.join(60)
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    p.close()


def test_simple_queue():
    q = SimpleQueue()
    assert q.empty()
    q.put("x")
    assert not q.empty()
    assert q.get(timeout=5) == "x"
    q.close()


def test_queue_types_are_on_contexts_and_front_door():
    ctx = proctor.get_context("spawn")
    for factory, cls in ((ctx.Queue, Queue), (ctx.SimpleQueue, SimpleQueue)):
        with factory() as q:
            assert isinstance(q, cls)
    with ctx.JoinableQueue() as q:
        assert isinstance(q, JoinableQueue)
    assert proctor.Queue is Queue
    assert issubclass(queue.Empty, Exception)


@methods_and_both_rings
def test_batches_are_consumed_partly_across_calls_and_processes(ctx, ring_impl):
    q = ctx.Queue()
    q.put_many(range(10))
    assert [q.get(timeout=5) for _ in range(3)] == [0, 1, 2]
    assert q.qsize() == 7
    p = ctx.Process(target=get_n, args=(q, 7))
    p.start()
    p.join(60)
    assert p.result == [3, 4, 5, 6, 7, 8, 9]
    assert q.qsize() == 0
    p.close()


def test_put_many_keeps_order_across_small_items_and_arrays():
    q = Queue()
    big = np.arange(100_000, dtype=np.float64)
    q.put_many([1, 2, big, 3, lambda: 4])
    got = q.get_many(10, timeout=5)
    assert got[:2] == [1, 2] and np.array_equal(got[2], big) and got[3] == 3
    assert got[4]() == 4


def double(x):
    return 2 * x


class Point:
    def __init__(self, x):
        self.x = x


def call_what_arrives(q):
    f = q.get(timeout=30)
    point = q.get(timeout=30)
    return f(21), type(point).__name__, point.x


def test_functions_and_classes_from_main_reach_spawned_consumers(ctx, monkeypatch):
    # Pretend these were defined in the main script: by name they would mean
    # nothing in a spawn or forkserver child, so they must travel by value.
    monkeypatch.setattr(double, "__module__", "__main__")
    monkeypatch.setattr(Point, "__module__", "__main__")
    q = ctx.Queue()
    q.put(double)
    q.put(Point(5))
    p = ctx.Process(target=call_what_arrives, args=(q,))
    p.start()
    p.join(60)
    assert p.exception is None and p.result == (42, "Point", 5)
    p.close()


def fail_to_rebuild():
    raise ValueError("cannot rebuild this item")


class Unrebuildable:
    def __reduce__(self):
        return (fail_to_rebuild, ())


def test_an_item_that_cannot_be_unpickled_raises_alone_and_blocks_nothing():
    q = Queue()
    q.put(1)
    q.put(Unrebuildable())
    q.put(2)
    q.put_many([3, Unrebuildable(), 4])  # one batch frame: it fails as a whole
    q.put(5)
    got, errors = [], []
    for _ in range(10):
        try:
            got.extend(q.get_many(10, timeout=5))
        except ValueError as exc:
            errors.append(exc)
        if not q:
            break
    # Items taken with a bad one are not lost: they come with the next call.
    assert got == [1, 2, 5]
    assert [str(e) for e in errors] == ["cannot rebuild this item"] * 2
    if sys.version_info >= (3, 11):
        assert "3 items put together by put_many()" in errors[1].__notes__[0]
    assert q.qsize() == 0


def interrupt_unpickling():
    raise KeyboardInterrupt("while unpickling")


class InterruptsUnpickling:
    def __reduce__(self):
        return (interrupt_unpickling, ())


def test_an_interrupted_unpickling_loses_only_the_item_it_interrupted():
    # A KeyboardInterrupt (Ctrl-C) or SystemExit while get_many() unpickles the items
    # it took goes up at once; like a stdlib get(), it loses the item being
    # unpickled, and no other: those taken with it come with the next calls, in order.
    q = Queue()
    q.put(0)
    q.put(InterruptsUnpickling())
    for i in (1, 2):
        q.put(i)
    q.put_many([3, 4])  # a batch frame taken with them
    q.put_many([InterruptsUnpickling(), 5])  # a batch the interruption is in: lost whole
    q.put(6)
    with pytest.raises(KeyboardInterrupt) as info:
        q.get_many(100, timeout=5)
    if sys.version_info >= (3, 11):
        assert "are kept for the next get()" in info.value.__notes__[0]
    got = []
    with pytest.raises(KeyboardInterrupt):
        while len(got) < 10:
            got.extend(q.get_many(100, timeout=5))
    assert got == [0, 1, 2, 3, 4]
    assert q.get_many(100, timeout=5) == [6]
    assert q.qsize() == 0


def test_put_many_on_an_unbounded_queue_counts_items_put_not_batch_frames():
    q = Queue(capacity=64 * 1024)
    items = [i.to_bytes(2, "big") * 500 for i in range(200)]  # more than the ring holds
    with pytest.raises(queue.Full) as info:
        q.put_many(items, timeout=0.1)
    put = info.value.items_put
    assert 0 < put < len(items)
    got = []
    while q:
        got.extend(q.get_many(1000, timeout=5))
    assert got == items[:put]  # so put_many(items[put:]) goes on where it stopped


@both_rings
def test_one_items_token_per_frame_and_gets_take_them_with_the_frames(ring_impl):
    q = Queue()
    tokens = q._shared.items.sem
    q.put_many([1, 2, 3])  # one batch frame: one token
    q.put(4)
    assert q.get_many(2, timeout=5) == [1, 2]  # part of the batch: its token stays
    assert q.get_many(10, timeout=5) == [3, 4]
    assert tokens.acquire(False) is False  # both frames took their tokens along
    q.put_many(range(5))
    assert [q.get(timeout=5) for _ in range(5)] == list(range(5))  # one by one
    assert tokens.acquire(False) is False  # the last item took the batch's token


@both_rings
def test_a_stale_token_costs_a_look_and_nothing_else(ring_impl):
    q = Queue()
    q._give_token()  # as if a getter took an item before its token was posted
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q._give_token()
    began = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert time.monotonic() - began < 5
    q.put("x")
    assert q.get(timeout=5) == "x"


def put_in_order(q, n):
    for i in range(n):
        q.put(i, timeout=30)


def test_one_lock_for_both_sides_where_stores_may_be_reordered(ctx, monkeypatch):
    from proctor._queues import _queue

    monkeypatch.setattr(_queue, "SPLIT_LOCKS", False)
    q = ctx.Queue(maxsize=50)
    assert q._get_lock is q._put_lock
    p = ctx.Process(target=put_in_order, args=(q, 500))
    p.start()
    assert [q.get(timeout=30) for _ in range(500)] == list(range(500))
    p.join(60)
    assert p.exitcode == 0
    assert q.qsize() == 0
    p.close()


def put_one_more(q, ready):
    ready.set()
    q.put("second", timeout=30)


@methods_and_both_rings
def test_a_claimed_waiter_whose_room_never_came_still_puts(ctx, ring_impl):
    q = ctx.Queue(maxsize=1)
    q.put("first")
    ready = ctx.Event()
    p = ctx.Process(target=put_one_more, args=(q, ready))
    p.start()
    assert ready.wait(30)
    wait_until(lambda: q._ring.get_field(Ring.PUTTERS) == 1, timeout=30)
    # What a consumer killed inside _hand_room leaves: the waiter claimed (its
    # registration removed) but no room token posted.
    assert q._get_lock.acquire(timeout=5)
    try:
        q._ring.set_field(Ring.PUTTERS, 0)
        assert q._ring.try_get_one() is not None  # "first" taken: there is room
    finally:
        q._get_lock.release()
    assert q.get(timeout=10) == "second"  # the producer looked again and put
    p.join(30)
    assert p.exitcode == 0
    assert q._ring.get_field(Ring.PUTTERS) == 0  # not -1: the next waiter is seen
    p.close()


def timeouts_and_bounds_in_a_child(q, bounded):
    """What a child sees of timeouts, a full bounded queue and unpicklable items."""
    seen = []
    began = time.monotonic()
    try:
        q.get(timeout=0.2)
    except queue.Empty:
        seen.append(("empty after", time.monotonic() - began >= 0.2))
    bounded.put(1)
    began = time.monotonic()
    try:
        bounded.put(2, timeout=0.2)
    except queue.Full:
        seen.append(("full after", time.monotonic() - began >= 0.2))
    try:
        q.put(threading.Lock())
    except (TypeError, pickle.PicklingError) as exc:
        seen.append(("unpicklable", "lock" in str(exc)))
    q.put("after the bad one")
    return seen


def test_timeouts_bounds_and_unpicklable_items_in_a_child(ctx):
    q = ctx.Queue()
    bounded = ctx.Queue(maxsize=1)
    p = ctx.Process(target=timeouts_and_bounds_in_a_child, args=(q, bounded))
    p.start()
    p.join(60)
    assert p.exitcode == 0, p.exception
    assert p.result == [("empty after", True), ("full after", True), ("unpicklable", True)]
    assert bounded.full() and bounded.get(timeout=5) == 1
    assert q.qsize() == 1 and q.get(timeout=5) == "after the bad one"
    p.close()


def put_unrebuildable_then_good(q):
    q.put(Unrebuildable())
    q.put("good")


def test_an_item_a_child_put_that_cannot_be_unpickled_raises_here_alone(ctx):
    q = ctx.Queue()
    p = ctx.Process(target=put_unrebuildable_then_good, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    with pytest.raises(ValueError, match="cannot rebuild this item"):
        q.get(timeout=10)
    assert q.get(timeout=10) == "good"
    p.close()


# --- found in review: each of these once went wrong -----------------------------------


@both_rings
def test_a_batch_at_the_same_place_and_seq_is_not_mistaken_for_a_cached_one(ring_impl):
    q = Queue(capacity=4096)
    ring = q._ring
    before = (ring.get_field(Ring.GET_WORD), ring.get_field(Ring.PUT_WORD))
    q.put_many([1, 2, 3])
    assert q.get(timeout=5) == 1  # this handle decodes and caches the batch
    # As if 2**27 items later another batch sat at the same position with the
    # same seq: only the mail id tells them apart.
    ring.set_field(Ring.GET_WORD, before[0])
    ring.set_field(Ring.PUT_WORD, before[1])
    q.put_many([7, 8, 9])
    assert [q.get(timeout=5) for _ in range(3)] == [7, 8, 9]


def get_many_or_empty(q):
    try:
        return q.get_many(10, timeout=0.5)
    except queue.Empty:
        return "empty"


def test_items_held_back_in_a_handle_are_not_duplicated_into_a_forked_child():
    ctx = proctor.get_context("fork")
    q = ctx.Queue()
    q.put(Unrebuildable())
    q.put("a")
    q.put("b")
    with pytest.raises(ValueError, match="cannot rebuild"):
        q.get_many(10, timeout=5)  # "a" and "b" now wait in this handle
    p = ctx.Process(target=get_many_or_empty, args=(q,))
    p.start()
    p.join(60)
    assert p.result == "empty"  # the parent's held-back items stay the parent's
    assert q.get_many(10, timeout=5) == ["a", "b"]
    p.close()


def put_and_exit(q):
    q.put("job")
    os._exit(0)  # no clean-up of any kind after the put


def test_a_joinable_put_counts_as_unfinished_with_its_one_store(ctx):
    q = ctx.JoinableQueue()
    p = ctx.Process(target=put_and_exit, args=(q,))
    p.start()
    p.join(60)
    assert q.qsize() == 1
    assert q.join(timeout=0.2) is False
    assert q.get(timeout=5) == "job"
    q.task_done()
    assert q.join(timeout=5) is True
    with pytest.raises(ValueError, match="too many"):
        q.task_done()
    p.close()


def take_the_get_lock_without_recording_and_die(q):
    assert q._get_lock._try(False)  # the semaphore only: no owner recorded
    os._exit(0)


def test_a_get_lock_left_in_limbo_is_recovered_by_short_timeouts_in_a_loop(ctx):
    q = ctx.Queue()
    q.put("x")
    p = ctx.Process(target=take_the_get_lock_without_recording_and_die, args=(q,))
    p.start()
    p.join(60)
    began = time.monotonic()
    got = None
    while got is None and time.monotonic() - began < 20:
        try:
            got = q.get(timeout=0.3)  # each call alone is shorter than LIMBO_GRACE
        except queue.Empty:
            pass
    assert got == "x"
    p.close()


def hold_the_get_lock(q, ready, let_go):
    assert q._get_lock.acquire(timeout=30)
    ready.set()
    assert let_go.wait(30)
    q._get_lock.release()


def test_put_timeout_holds_while_a_consumer_keeps_the_get_lock(ctx):
    q = ctx.Queue(maxsize=1)
    q.put("full")
    ready, let_go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=hold_the_get_lock, args=(q, ready, let_go))
    p.start()
    assert ready.wait(30)
    began = time.monotonic()
    with pytest.raises(queue.Full):
        q.put("more", timeout=0.3)  # the holder lets go only after this returns
    assert time.monotonic() - began < 1.5  # not until the lock's holder let go
    let_go.set()
    p.join(30)
    assert p.exitcode == 0
    p.close()


def hold_the_put_lock(q, ready, seconds):
    assert q._put_lock.acquire(timeout=30)
    ready.set()
    time.sleep(seconds)
    q._put_lock.release()


def test_put_nowait_on_an_unbounded_queue_waits_for_the_put_lock_not_for_room(ctx):
    q = ctx.Queue()
    ready = ctx.Event()
    p = ctx.Process(target=hold_the_put_lock, args=(q, ready, 0.3))
    p.start()
    assert ready.wait(30)
    q.put_nowait("in")  # multiprocessing never raises Full here either
    assert q.get(timeout=5) == "in"
    p.join(30)
    p.close()


def test_an_item_whose_buffers_went_missing_fails_alone():
    q = Queue()
    q.put(1)
    q.put(np.arange(100_000))  # its buffer goes through the mailbox
    q.put(3)
    # Take the array's descriptors out of the mailbox, as a corrupted queue might.
    _data, ancdata, _flags, _addr = q._shared.mailbox.recv_end.recvmsg(8, socket.CMSG_SPACE(4 * 16))
    for fd in proctor._core._wire.fds_from(ancdata):
        os.close(fd)
    assert q.get_many(10, timeout=5) == [1]
    with pytest.raises(RuntimeError, match="large buffers"):
        q.get(timeout=5)
    assert q.get(timeout=5) == 3


def test_one_lost_buffer_fails_its_item_alone_and_later_arrays_arrive_intact():
    q = Queue()
    arrays = [np.full(100_000, i, dtype=np.int64) for i in range(4)]  # each through the mailbox
    for a in arrays:
        q.put(a)
    # Lose the first item's descriptors, as a corrupted queue might.
    _data, ancdata, _flags, _addr = q._shared.mailbox.recv_end.recvmsg(8, socket.CMSG_SPACE(4 * 16))
    for fd in proctor._core._wire.fds_from(ancdata):
        os.close(fd)
    with pytest.raises(RuntimeError, match="large buffers"):
        q.get(timeout=5)
    for a in arrays[1:]:  # the newer items' descriptors were left for them
        assert np.array_equal(q.get(timeout=5), a)
    assert q.empty()
    q.put(arrays[0])  # and the queue goes on
    assert np.array_equal(q.get(timeout=5), arrays[0])
    q.close()


def test_put_timeout_holds_when_the_mailbox_stays_full(monkeypatch):
    from proctor._queues._mailbox import Mailbox

    q = Queue()
    monkeypatch.setattr(Mailbox, "send", lambda self, mail_id, fds: False)  # always full
    began = time.monotonic()
    with pytest.raises(queue.Full, match="mailbox stayed full"):
        q.put(np.arange(100_000), timeout=0.3)
    assert time.monotonic() - began < 5
    assert q.qsize() == 0


_SAME_QUEUE: Queue | None = None


def take_next_from_the_same_queue():
    assert _SAME_QUEUE is not None
    return ("inner", _SAME_QUEUE.get(timeout=5))


class TakesFromTheQueue:
    def __reduce__(self):
        return (take_next_from_the_same_queue, ())


def test_a_batch_is_unpickled_outside_the_get_lock(monkeypatch):
    q = Queue()
    monkeypatch.setattr(sys.modules[__name__], "_SAME_QUEUE", q)
    q.put_many([TakesFromTheQueue(), "first"])  # one batch frame
    q.put("next")
    began = time.monotonic()
    # Rebuilding the batch calls get() on the same queue: it must not wait for
    # the lock its own get_many() holds.
    assert q.get_many(2, timeout=5) == [("inner", "next"), "first"]
    assert time.monotonic() - began < 4
    assert q.qsize() == 0


def test_a_batch_that_fails_to_unpickle_goes_whole_even_when_taken_one_by_one():
    q = Queue()
    q.put_many([Unrebuildable(), 1, 2, 3])  # one batch frame
    q.put("after")
    with pytest.raises(ValueError, match="cannot rebuild") as info:
        q.get(timeout=5)  # takes one item of the batch, decodes, drops the rest
    if sys.version_info >= (3, 11):
        assert "4 items put together by put_many()" in info.value.__notes__[0]
    assert q.qsize() == 1
    assert q.get(timeout=5) == "after"
    assert q._shared.items.sem.acquire(False) is False  # no token left behind


# --- every wait sleeps through the shared wait ----------------------------------------------


class _RecordingSem:
    """Stands in for a queue semaphore's SemLock, recording each ``acquire(block, timeout)``."""

    def __init__(self, sem):
        self.real = sem
        self.calls = []
        self.release = sem.release

    def acquire(self, block=True, timeout=None):
        self.calls.append((block, timeout))
        return self.real.acquire(block, timeout)

    def sleeps(self):
        return [timeout for block, timeout in self.calls if block]


def _blocked_queue_waits():
    """(name, queue, a wait with no timeout, what ends it, the recorder of its semaphore)."""
    getter = Queue()
    get_sem = getter._shared.items.sem = _RecordingSem(getter._shared.items.sem)
    getter._take_token = get_sem.acquire

    putter = Queue(maxsize=1)
    putter.put("fills it")
    room_sem = putter._shared.room.sem = _RecordingSem(putter._shared.room.sem)

    joiner = JoinableQueue()
    joiner.put("work")
    joiner.get(timeout=5)
    done_sem = joiner._shared.all_done.sem = _RecordingSem(joiner._shared.all_done.sem)
    return [
        ("get", getter, getter.get, lambda: getter.put("item"), get_sem),
        ("put", putter, lambda: putter.put("waits"), lambda: putter.get(timeout=5), room_sem),
        ("join", joiner, joiner.join, joiner.task_done, done_sem),
    ]


def test_every_queue_wait_sleeps_through_the_shared_wait_and_looks_again(monkeypatch):
    """get(), put() and join() wait as every proctor primitive does: through
    _core._wait.wait_for_post, in slices that grow from CHECK_INTERVAL to
    LONGEST_SLICE -- but put()'s wait for room, whose wake-ups count items and
    not bytes, which stays at CHECK_INTERVAL. (The schedule is shrunk here so
    that it reaches its longest slice at once.)"""
    from proctor._core import _wait
    from proctor._queues import _waiting

    monkeypatch.setattr(_wait, "CHECK_INTERVAL", 0.01)
    monkeypatch.setattr(_wait, "LONGEST_SLICE", 0.04)
    waits = []

    def recording_wait_for_post(acquire, deadline, ready=None, spin=0, back_off=True):
        waits.append(acquire)
        return _wait.wait_for_post(acquire, deadline, ready, spin, back_off)

    monkeypatch.setattr(_waiting, "wait_for_post", recording_wait_for_post)
    for name, q, wait, end, sem in _blocked_queue_waits():
        t = threading.Thread(target=wait)
        t.start()
        wait_until(lambda sem=sem: len(sem.sleeps()) >= 6, timeout=10)
        end()
        t.join(10)
        assert not t.is_alive(), name
        assert sem.acquire in waits, name
        sleeps = sem.sleeps()
        slept = 0.0
        for s in sleeps[:6]:  # 0.01, 0.01, 0.02, 0.04 (the longest), 0.04, 0.04; put: 0.01
            expected = 0.01 if name == "put" else min(0.04, max(0.01, slept))
            assert s == pytest.approx(expected), (name, sleeps)
            slept += s
        assert all(s is not None and 0 < s <= 0.04 for s in sleeps), (name, sleeps)
        q.close()


def finish_all_without_posting(q):
    # A task_done() killed between marking the last item done and waking the joiner.
    assert q._put_lock.acquire(timeout=30)
    try:
        assert q._ring.mark_done() == 0
    finally:
        q._put_lock.release()
    os._exit(0)


def test_a_join_whose_wake_up_died_with_the_last_task_done_still_returns(ctx):
    q = ctx.JoinableQueue()
    q.put("work")
    q.get(timeout=5)
    p = ctx.Process(target=finish_all_without_posting, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert q._shared.all_done.sem.acquire(False) is False  # no wake-up was posted
    assert q.join(timeout=30) is True  # found by looking at the ring
    p.close()


# --- the stdlib's errors on a closed queue ----------------------------------------------------


def _closed_queue_calls(q):
    """(the call, the name its error gives it): put_nowait() is put(block=False)."""
    calls = [
        (lambda: q.put("x"), "put"),
        (lambda: q.put_nowait("x"), "put"),
        (lambda: q.put_many(["x"]), "put_many"),
        (q.get, "get"),
        (q.get_nowait, "get"),
        (lambda: q.get_many(1), "get_many"),
        (q.qsize, "qsize"),
        (q.empty, "empty"),
        (q.full, "full"),
        (lambda: len(q), "len"),
        (lambda: bool(q), "bool"),
    ]
    if isinstance(q, JoinableQueue):
        calls += [(q.task_done, "task_done"), (q.join, "join")]
    return calls


@pytest.mark.parametrize("call", ["get", "get_many", "put", "put_many", "join"])
def test_a_call_waiting_when_another_thread_closes_the_queue_raises_queue_closed_error(call):
    q = JoinableQueue(1)
    if not call.startswith("get"):
        q.put("item")  # full, and one task not done
    wait_in = {
        "get": lambda: q.get(timeout=30),
        "get_many": lambda: q.get_many(2, timeout=30),
        "put": lambda: q.put(2, timeout=30),
        "put_many": lambda: q.put_many([2, 3], timeout=30),
    }
    thread, outcome = call_in_thread(wait_in.get(call, lambda: q.join(timeout=30)))
    q.close()
    thread.join(60)
    assert not thread.is_alive()
    assert isinstance(outcome[0], proctor.QueueClosedError), outcome
    assert f"cannot call {call}()" in str(outcome[0])


def test_task_done_waiting_for_the_put_lock_when_another_thread_closes_raises_queue_closed_error():
    q = JoinableQueue()
    q.put("item")
    q.get(timeout=30)
    q._put_lock.acquire()  # (held here: task_done() waits for it, in slices)
    thread, outcome = call_in_thread(q.task_done)
    wait_until(lambda: _waiting_in_slices(thread))
    q.close()
    thread.join(60)
    assert not thread.is_alive()
    assert isinstance(outcome[0], proctor.QueueClosedError), outcome
    assert "cannot call task_done()" in str(outcome[0])


def _waiting_in_slices(thread):
    """Whether ``thread`` sleeps in a wait's slices (``_core._wait.wait_for_post``)."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "wait_for_post":
            return True
        frame = frame.f_back
    return False


@pytest.mark.parametrize("maxsize", [0, 5])
def test_calls_running_when_another_thread_closes_the_queue_raise_only_queue_closed_error(
    maxsize,
):
    # Not only waits: a call may be anywhere (a fast path, a count, a mailbox send)
    # when the handle's views, locks and sockets go; whatever it meets, it says
    # that the queue was closed.
    big = bytes(300_000)  # spilled: its put sends a descriptor through the mailbox
    for _ in range(10):
        q = Queue(maxsize)
        outcomes: list[BaseException] = []

        def hammer(call, q=q, outcomes=outcomes):
            try:
                while True:
                    try:
                        call()
                    except (queue.Full, queue.Empty):
                        pass  # (a slow turn of the others: go on until the close)
            except BaseException as exc:
                outcomes.append(exc)

        calls = [
            lambda q=q: q.put(1, timeout=0.5),
            lambda q=q: q.put(big, timeout=0.5),
            lambda q=q: q.put_many([1, 2, 3], timeout=0.5),
            lambda q=q: q.get(timeout=0.5),
            lambda q=q: q.get_many(3, timeout=0.5),
            lambda q=q: q.qsize(),
        ]
        threads = [threading.Thread(target=hammer, args=(c,)) for c in calls]
        for t in threads:
            t.start()
        wait_until(lambda q=q: q.qsize() > 0)
        q.close()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert all(isinstance(e, proctor.QueueClosedError) for e in outcomes), outcomes


@pytest.mark.parametrize("used", [False, True], ids=["unused", "used"])
@pytest.mark.parametrize("cls", [Queue, JoinableQueue, SimpleQueue])
def test_a_closed_queue_raises_queue_closed_error_a_value_error_and_an_os_error(cls, used):
    """multiprocessing raises ValueError("Queue <...> is closed") from put()/get(), and
    (3.13's suite) OSError matching "is closed" from empty(): one error is both."""
    q = cls()
    if used:
        q.put("item")
    q.close()
    for use, call in _closed_queue_calls(q):
        with pytest.raises(proctor.QueueClosedError) as info:
            use()
        error = info.value
        assert isinstance(error, ValueError) and isinstance(error, OSError), call
        message = str(error)
        assert "is closed" in message, call
        assert f"{cls.__name__} <proctor.{cls.__name__} closed> is closed" in message, call
        assert f"cannot call {call}()" in message, call
    with pytest.raises(ValueError, match="is closed"):
        q.get()
    with pytest.raises(OSError, match="is closed"):
        q.empty()


# --- ctx= and subclasses written for multiprocessing.queues ------------------------------------


@pytest.mark.parametrize("cls", [Queue, JoinableQueue, SimpleQueue])
def test_queues_take_the_stdlib_ctx_keyword(cls):
    for ctx in [None, *(proctor.get_context(m) for m in ("fork", "spawn", "forkserver"))]:
        with cls(ctx=ctx) as q:
            q.put(1)
            assert q.get(timeout=5) == 1
    with pytest.raises(TypeError, match=r"multiprocessing's .*proctor.get_context"):
        cls(ctx=multiprocessing.get_context("spawn"))
    with pytest.raises(TypeError, match=r"must be a proctor context .* not str"):
        cls(ctx="spawn")


class CountingQueue(proctor.queues.Queue):
    """A subclass written as multiprocessing's documentation says, import changed:
    ``super().__init__(maxsize, ctx=...)``, and its own state pickled beside the
    queue's with ``__getstate__``/``__setstate__``."""

    def __init__(self, maxsize=0, *, ctx):
        super().__init__(maxsize, ctx=ctx)
        self.puts = proctor.Value("i", 0)

    def __getstate__(self):
        return (super().__getstate__(), self.puts)

    def __setstate__(self, state):
        super().__setstate__(state[0])
        self.puts = state[1]

    def put(self, obj, block=True, timeout=None):
        super().put(obj, block, timeout)
        with self.puts.get_lock():
            self.puts.value += 1


def put_through_a_subclass(q, n):
    for i in range(n):
        q.put(i)
    return type(q).__name__, q.puts.value


def test_a_subclass_written_for_multiprocessing_queues_works_across_processes(ctx):
    q = CountingQueue(maxsize=3, ctx=ctx)
    p = ctx.Process(target=put_through_a_subclass, args=(q, 5))
    p.start()
    assert [q.get(timeout=30) for _ in range(5)] == [0, 1, 2, 3, 4]
    p.join(60)
    assert p.result == ("CountingQueue", 5)
    q.put("parent")
    assert q.puts.value == 6  # one counter, shared with the child
    assert q.get(timeout=5) == "parent"
    q.close()
    p.close()


# --- semaphores in shared memory (the C accelerator on Linux) ------------------------------


def _refuse(*args, **kwargs):
    raise AssertionError("the queue made a named semaphore or talked to the reaper")


@pytest.mark.skipif(
    not _queue_module.MEMORY_SEMAPHORES, reason="semaphores in shared memory are not used here"
)
@pytest.mark.parametrize("start_method", ["fork"])
def test_a_queue_with_semaphores_in_shared_memory_has_no_name_and_needs_no_reaper(ctx, monkeypatch):
    """Made without sem_open and without a word to the reaper, its five semaphores
    still carry every wake-up between processes: items, room, all done."""
    from proctor._reaper import _client, _semlock

    with monkeypatch.context() as m:
        m.setattr(_semlock._multiprocessing, "SemLock", _refuse)
        for name in ("register", "register_new", "new_name"):
            m.setattr(_client, name, _refuse)
        q = ctx.JoinableQueue(maxsize=1)
    shared = q._shared
    semaphores = (shared.put_lock._named, shared.get_lock._named, shared.items, shared.room)
    assert {type(s).__name__ for s in (*semaphores, shared.all_done)} == {"MemorySemaphore"}
    _wake_on_room_then_on_all_done(ctx, q)
    q.close()
    with pytest.raises(ValueError, match="closed"):
        shared.items.sem.release()


# --- the wake-up hints nobody waits on are made on first use -------------------------------


def _sem_exists(named) -> bool:
    return os.path.exists("/dev/shm/sem." + named.name.lstrip("/"))


def get_one_then_task_done(q, n):
    for _ in range(n):
        q.get(timeout=30)
        q.task_done()


def _wake_on_room_then_on_all_done(ctx, q, after_room=lambda: True):
    """A child sleeps on ``q``'s room hint and is woken; then this process on all_done.

    ``q`` is a ``JoinableQueue(maxsize=1)``; ``after_room()`` must hold once the
    child that waited for room has ended.
    """
    p = ctx.Process(target=put_range, args=(q, 3))
    p.start()
    got = []
    for _ in range(3):
        # The child sleeps on the room semaphore for its next put (registered
        # as a putter), and this get() wakes it.
        wait_until(lambda: q._ring.get_field(Ring.PUTTERS) == 1 or len(got) == 2, timeout=30)
        got.append(q.get(timeout=30))
        q.task_done()
    p.join(30)
    assert p.exitcode == 0 and got == [0, 1, 2]
    assert after_room()
    # And the other way: this process's join() sleeps, a child's task_done() wakes it.
    q.put("task")
    c = ctx.Process(target=get_one_then_task_done, args=(q, 1))
    c.start()
    assert q.join(timeout=30)
    c.join(30)
    assert c.exitcode == 0
    for proc in (p, c):
        proc.close()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="looks for the semaphores in /dev/shm")
# (forkserver children get the queue as spawn children do: by name, in a message)
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_room_and_all_done_are_made_by_the_first_process_that_waits_even_a_child(
    ctx, named_semaphores
):
    # Made before the start and first waited on in the child: the child makes
    # the room semaphore, the parent opens the same one to wake it.
    q = ctx.JoinableQueue(maxsize=1)
    shared = q._shared
    assert _sem_exists(shared.items)
    assert not _sem_exists(shared.room) and not _sem_exists(shared.all_done)
    _wake_on_room_then_on_all_done(ctx, q, after_room=lambda: _sem_exists(shared.room))
    q.close()


def test_a_queue_closed_unused_never_makes_its_hints(named_semaphores):
    q = JoinableQueue()
    shared = q._shared
    q.put(1)
    assert q.get(timeout=5) == 1
    q.task_done()  # the last task_done(), with no joiner: nothing to post
    assert q.join(timeout=0)
    for hint in (shared.room, shared.all_done):
        with pytest.raises(AttributeError):
            type(hint).sem.__get__(hint)  # the slot was never set: never opened
    q.close()
    with pytest.raises(ValueError, match="closed"):
        shared.room.sem.release()


def test_a_queue_closed_here_cannot_be_passed_to_a_child_and_says_why():
    ctx = proctor.get_context("spawn")
    q = ctx.Queue()
    q.close()
    p = ctx.Process(target=print, args=(q,))
    with pytest.raises(proctor.UnpicklableError, match="was closed in this process"):
        p.start()
