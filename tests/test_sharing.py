"""Objects made of OS resources (queues, locks, shared memory) passed to running processes.

Issue 14: they travel as pool task arguments and results, through a ``Pipe`` and on a
``Queue`` (``_core._reduction``, the reaper's pins), and behave in the receiver exactly as
the originals: same semaphores, same memory, same queue.
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import warnings

import numpy as np
import pytest

import proctor
from proctor import OwnerDiedWarning
from proctor._core._anonmem import own_description_locks
from proctor.shared_memory import shared_array
from reaper_helpers import sync_reaper

TIMEOUT = 30

# Elsewhere (macOS) shared memory and what is built on it reach other processes only at
# a start: a process's record locks would go with any descriptor of the memory it closes.
pytestmark = pytest.mark.skipif(
    not own_description_locks(), reason="needs open-file-description locks (Linux)"
)

#: Objects that the sender holds while the receiver tries them (same semaphore?).
HELD = ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition")


def _objects(ctx) -> dict:
    return {
        "Lock": ctx.Lock(),
        "RLock": ctx.RLock(),
        "Semaphore": ctx.Semaphore(1),
        "BoundedSemaphore": ctx.BoundedSemaphore(1),
        "Condition": ctx.Condition(),
        "Event": ctx.Event(),
        "Barrier": ctx.Barrier(2),
        "Queue": ctx.Queue(),
        "SimpleQueue": ctx.SimpleQueue(),
        "JoinableQueue": ctx.JoinableQueue(),
        "Value": ctx.Value("i", 0),
        "Array": ctx.Array("d", 3),
        "RawValue": ctx.RawValue("q", 0),
        "shared_array": shared_array(3, dtype=np.int64),
    }


def use(objs: dict) -> dict:
    """What a receiver does with the objects; returns what the sender checks."""
    seen = {name: objs[name].acquire(timeout=0) for name in HELD}
    objs["Event"].set()
    for name in ("Queue", "SimpleQueue", "JoinableQueue"):
        objs[name].put(f"{name} from pid {os.getpid()}")
    objs["Value"].value = 7
    objs["Array"][:] = [1.0, 2.0, 3.0]
    objs["RawValue"].value = 2**40
    objs["shared_array"][:] = [4, 5, 6]
    seen["Barrier"] = objs["Barrier"].wait(timeout=TIMEOUT) in (0, 1)
    return seen


def _hold(objs: dict) -> None:
    for name in HELD:
        assert objs[name].acquire(timeout=TIMEOUT)


def _check(objs: dict, seen: dict, receiver: int) -> None:
    assert seen == {**dict.fromkeys(HELD, False), "Barrier": True}  # blocked by the sender
    assert objs["Event"].is_set()
    for name in ("Queue", "SimpleQueue", "JoinableQueue"):
        get = objs[name].get
        item = get(timeout=TIMEOUT) if name != "SimpleQueue" else get()
        assert item == f"{name} from pid {receiver}"
    assert objs["Value"].value == 7
    assert list(objs["Array"]) == [1.0, 2.0, 3.0]
    assert objs["RawValue"].value == 2**40
    assert objs["shared_array"].tolist() == [4, 5, 6]
    for name in HELD:
        objs[name].release()


def _close(objs: dict) -> None:
    for name in ("Queue", "SimpleQueue", "JoinableQueue"):
        objs[name].close()


def use_in_pool(objs: dict) -> tuple[int, dict]:
    return os.getpid(), use(objs)


def echo(objs):
    return objs


def test_every_kind_passed_as_a_pool_task_argument_is_the_original(ctx):
    objs = _objects(ctx)
    with ctx.Pool(1) as pool:
        _hold(objs)
        result = pool.apply_async(use_in_pool, (objs,))
        assert objs["Barrier"].wait(timeout=TIMEOUT) in (0, 1)
        pid, seen = result.get(TIMEOUT)
        _check(objs, seen, pid)
    _close(objs)


def test_every_kind_returned_from_a_task_is_the_original(ctx):
    objs = _objects(ctx)
    with ctx.Pool(1) as pool:
        back = pool.apply(echo, (objs,))
        _hold(back)  # the returned copies hold the originals' semaphores
        for name in HELD:
            assert objs[name].acquire(timeout=0) is False
        result = pool.apply_async(use_in_pool, (objs,))
        assert back["Barrier"].wait(timeout=TIMEOUT) in (0, 1)
        pid, seen = result.get(TIMEOUT)
        _check(back, seen, pid)
    _close(objs)
    _close(back)


def make_in_worker() -> dict:
    return {
        "Lock": proctor.Lock(),
        "Queue": proctor.Queue(),
        "Value": proctor.Value("i", 5),
        "shared_array": shared_array(2),
    }


def test_objects_made_in_a_worker_and_returned_work_after_the_pool_ends(ctx):
    with ctx.Pool(1) as pool:
        made = pool.apply(make_in_worker)
    # The pool and its worker, the objects' creator, are gone.
    sync_reaper()
    assert made["Lock"].acquire(timeout=TIMEOUT)
    made["Lock"].release()
    made["Queue"].put("still here")
    assert made["Queue"].get(timeout=TIMEOUT) == "still here"
    assert made["Value"].value == 5
    assert made["shared_array"].tolist() == [0.0, 0.0]
    made["Queue"].close()


def receive_and_use(conn) -> None:
    objs = conn.recv(timeout=TIMEOUT)
    conn.send((os.getpid(), use(objs)))


def test_every_kind_sent_through_a_pipe_is_the_original(ctx):
    objs = _objects(ctx)
    near, far = ctx.Pipe()
    child = ctx.Process(target=receive_and_use, args=(far,))
    child.start()
    _hold(objs)
    near.send(objs)
    assert objs["Barrier"].wait(timeout=TIMEOUT) in (0, 1)
    pid, seen = near.recv(timeout=TIMEOUT)
    _check(objs, seen, pid)
    child.join(TIMEOUT)
    assert child.exitcode == 0
    near.close()
    far.close()
    _close(objs)


def get_and_use(inbox, outbox) -> None:
    objs = inbox.get(timeout=TIMEOUT)
    outbox.put((os.getpid(), use(objs)))


def test_every_kind_put_on_a_queue_is_the_original(ctx):
    objs = _objects(ctx)
    inbox, outbox = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=get_and_use, args=(inbox, outbox))
    child.start()
    _hold(objs)
    inbox.put(objs)
    assert objs["Barrier"].wait(timeout=TIMEOUT) in (0, 1)
    pid, seen = outbox.get(timeout=TIMEOUT)
    _check(objs, seen, pid)
    child.join(TIMEOUT)
    assert child.exitcode == 0
    for q in (inbox, outbox):
        q.close()
    _close(objs)


def count_under(lock, counter, n: int) -> int:
    for _ in range(n):
        with lock:
            counter.value += 1  # a read and a write: lost updates without the lock
    return n


def test_a_counter_under_a_passed_lock_from_two_workers_is_exact(ctx):
    lock = ctx.Lock()
    counter = ctx.RawValue("i", 0)  # no lock of its own: the passed Lock is the only one
    with ctx.Pool(2) as pool:
        done = pool.starmap(count_under, [(lock, counter, 2000)] * 4, chunksize=1)
    assert done == [2000] * 4
    assert counter.value == 8000


def set_event(event) -> None:
    event.set()


def test_an_event_set_in_the_receiver_wakes_the_sender(ctx):
    event = ctx.Event()
    with ctx.Pool(1) as pool:
        result = pool.apply_async(set_event, (event,))
        assert event.wait(timeout=TIMEOUT)
        result.get(TIMEOUT)


def queue_round_trip(inbox, outbox) -> None:
    outbox.put(inbox.get(timeout=TIMEOUT) * 2)


def test_a_queue_passed_to_a_running_worker_carries_items_both_ways(ctx):
    inbox, outbox = ctx.Queue(), ctx.JoinableQueue()
    with ctx.Pool(1) as pool:
        result = pool.apply_async(queue_round_trip, (inbox, outbox))
        inbox.put(21)
        assert outbox.get(timeout=TIMEOUT) == 42
        outbox.task_done()
        assert outbox.join(timeout=TIMEOUT)
        result.get(TIMEOUT)
    inbox.close()
    outbox.close()


def hold_and_die(lock, held) -> None:
    lock.acquire()
    held.set()
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_receiver_killed_holding_a_passed_lock_leaves_it_recoverable(ctx):
    lock, held = ctx.Lock(), ctx.Event()
    with ctx.Pool(1) as pool:
        result = pool.apply_async(hold_and_die, (lock, held))
        assert held.wait(timeout=TIMEOUT)
        with pytest.raises(proctor.WorkerLostError):
            result.get(TIMEOUT)
        with pytest.warns(OwnerDiedWarning, match="died"):
            assert lock.acquire(timeout=TIMEOUT)
        lock.release()
        # The sender's lock still works with the pool's replacement worker.
        counter = ctx.RawValue("i", 0)
        assert pool.apply(count_under, (lock, counter, 10), timeout=TIMEOUT) == 10
        assert counter.value == 10


def send_and_exit(conn) -> None:
    conn.send(
        {
            "Lock": proctor.Lock(),
            "Queue": proctor.Queue(),
            "Event": proctor.Event(),
            "Value": proctor.Value("i", 3),
        }
    )
    os._exit(0)  # the only holder goes at once, before anyone received them


def test_a_sender_that_exits_right_after_sending_leaves_the_objects_usable(ctx):
    near, far = ctx.Pipe()
    child = ctx.Process(target=send_and_exit, args=(far,))
    child.start()
    child.join(TIMEOUT)
    assert child.exitcode == 0
    sync_reaper()  # the sender's death is processed: its names were not unlinked
    objs = near.recv(timeout=TIMEOUT)
    assert objs["Lock"].acquire(timeout=TIMEOUT)
    objs["Lock"].release()
    objs["Queue"].put("kept")
    assert objs["Queue"].get(timeout=TIMEOUT) == "kept"
    objs["Event"].set()
    assert objs["Event"].is_set()
    assert objs["Value"].value == 3
    objs["Queue"].close()
    near.close()
    far.close()


def test_a_message_never_received_releases_its_names(ctx):
    """A message dropped unread (its receiving end closed) keeps nothing in /dev/shm."""
    near, far = ctx.Pipe()
    lock = ctx.Lock()
    near.send(lock)
    lock.close()
    far.close()  # the message goes unread; the no_leaks check sees the name go
    near.close()


def test_a_lock_that_comes_back_leaves_this_process_alive_to_others(ctx):
    """Closing a second descriptor of an arena drops none of this process's locks."""
    lock, q = ctx.Lock(), ctx.Queue()
    assert lock.acquire(timeout=TIMEOUT)
    q.put(lock)
    copy = q.get(timeout=TIMEOUT)
    assert copy._shared._mem is lock._shared._mem  # one arena per process
    del copy
    with ctx.Pool(1) as pool, warnings.catch_warnings():
        warnings.simplefilter("error", OwnerDiedWarning)  # this process is alive
        assert pool.apply(try_lock, (lock,), timeout=TIMEOUT) is False
    lock.release()
    q.close()


def try_lock(lock) -> bool:
    return lock.acquire(timeout=0.5)


def test_a_function_closing_over_a_lock_is_refused_with_the_remedy():
    lock = proctor.Lock()
    with proctor.get_context("fork").Pool(1) as pool:
        with pytest.raises(proctor.PicklingError, match=r"as the task's arguments instead"):
            pool.map(functools.partial(count_under, lock), [1])
        assert pool.apply(count_under, (lock, proctor.RawValue("i"), 1)) == 1


def test_over_tcp_a_lock_is_refused_before_anything_is_sent():
    with (
        proctor.connection.Listener(family="AF_INET") as listener,
        proctor.connection.Client(listener.address, timeout=TIMEOUT) as client,
        listener.accept(timeout=TIMEOUT) as server,
    ):
        lock, q = proctor.Lock(), proctor.Queue()
        for obj in (lock, q, {"nested": q}):
            with pytest.raises(pickle.PicklingError, match="TCP connection"):
                client.send(obj)
        assert not server.poll(0)
        client.send("still usable")
        assert server.recv(timeout=TIMEOUT) == "still usable"
        q.close()


def test_a_plain_pickle_still_refuses_them_with_the_stdlib_message():
    lock, q = proctor.Lock(), proctor.Queue()
    with pytest.raises(RuntimeError, match="should only be shared between processes through"):
        pickle.dumps(lock)
    with pytest.raises(RuntimeError, match="Queue holds an open file descriptor"):
        pickle.dumps(q)
    q.close()
