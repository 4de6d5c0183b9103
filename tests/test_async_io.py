"""Awaitable queues and connections: aget/aput/ajoin, arecv/asend, inside an event loop."""

from __future__ import annotations

import asyncio
import os
import pickle
import queue
import signal
import threading

import pytest

import proctor
from helpers import wait_until
from proctor import JoinableQueue, Queue, SimpleQueue
from proctor._core import _loopwait
from proctor.connection import Client, Listener

# Every await in these tests is bounded by this (a bug fails, never hangs).
LIMIT = 30


def fill(conn, message):
    """Send ``message`` until the channel has no room for one more; return how many went."""
    sent = 0
    while True:
        try:
            conn.send(message, timeout=0)
        except proctor.ProcessTimeoutError:
            return sent
        sent += 1


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, LIMIT))


# --- targets ----------------------------------------------------------------------------


def echo_queue(inbox, outbox):
    for item in iter(lambda: inbox.get(timeout=LIMIT), None):
        outbox.put(item)


def echo_pipe(conn):
    for message in iter(lambda: conn.recv(timeout=LIMIT), None):
        conn.send(message)


def put_on_credit(q, credits, n):
    for i in range(n):
        credits.get(timeout=LIMIT)
        q.put(i)


def relay_in_an_event_loop(inbox, outbox, conn, n):
    # The loop runs in the child: its watcher threads are the child's own.
    async def main():
        for _ in range(n):
            item = await asyncio.wait_for(inbox.aget(), LIMIT)
            await asyncio.wait_for(outbox.aput(item), LIMIT)
            await asyncio.wait_for(conn.asend(item), LIMIT)
        return await asyncio.wait_for(conn.arecv(), LIMIT)

    return asyncio.run(main())


def say_ready_then_sleep(conn):
    conn.send("ready")
    threading.Event().wait(600)


def die_holding_the_put_lock(q, ready):
    assert q._put_lock.acquire(timeout=LIMIT)
    ready.set()
    threading.Event().wait(600)


# --- round trips between a process and an event loop --------------------------------


def test_queue_round_trip_between_a_process_and_an_event_loop(ctx):
    inbox, outbox = ctx.Queue(maxsize=2), ctx.Queue()
    p = ctx.Process(target=echo_queue, args=(inbox, outbox))
    p.start()
    items = [0, "text", b"x" * 100_000, {"k": [1, 2]}, None]

    async def main():
        got = []
        for item in items[:-1]:
            await asyncio.wait_for(inbox.aput(item), LIMIT)
        for _ in items[:-1]:
            got.append(await asyncio.wait_for(outbox.aget(), LIMIT))
        await asyncio.wait_for(inbox.aput(None), LIMIT)
        return got

    assert run(main()) == items[:-1]
    p.join(LIMIT)
    assert p.exitcode == 0
    inbox.close()
    outbox.close()


def test_an_event_loop_in_the_child_relays_queue_items_and_messages(ctx):
    inbox, outbox = ctx.Queue(), ctx.Queue(maxsize=1)
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=relay_in_an_event_loop, args=(inbox, outbox, theirs, 20))
    p.start()
    theirs.close()
    got, messages = [], []
    for i in range(20):
        inbox.put(i)
        got.append(outbox.get(timeout=LIMIT))
        messages.append(ours.recv(timeout=LIMIT))
    ours.send("done")
    p.join(LIMIT)
    assert p.exitcode == 0
    assert p.result == "done"
    assert got == messages == list(range(20))
    for thing in (inbox, outbox, ours):
        thing.close()


@pytest.mark.parametrize("size", [10, 5000, 70_000, 2 * 1024 * 1024])
def test_pipe_round_trip_between_a_process_and_an_event_loop(ctx, size):
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=echo_pipe, args=(theirs,))
    p.start()
    theirs.close()
    data = os.urandom(size)

    async def main():
        await asyncio.wait_for(ours.asend(data), LIMIT)
        first = await asyncio.wait_for(ours.arecv(), LIMIT)
        await asyncio.wait_for(ours.asend_bytes(pickle.dumps(data)), LIMIT)
        second = await asyncio.wait_for(ours.arecv_bytes(), LIMIT)
        return first, pickle.loads(second)

    assert run(main()) == (data, data)
    ours.send(None)
    p.join(LIMIT)
    ours.close()
    assert p.exitcode == 0


@pytest.mark.parametrize("channel", ["pipe", "socket"])
def test_a_big_message_sent_and_received_in_one_loop(channel):
    # The receiver sees the message start while the sender, a task of the same
    # loop, may still have most of it to send: neither may block the loop.
    data = os.urandom(5 * 1024 * 1024)
    listener = None
    if channel == "pipe":
        sender, receiver = proctor.Pipe()
    else:
        listener = Listener()
        sender = Client(listener.address)
        receiver = listener.accept(timeout=LIMIT)

    async def main():
        reader = asyncio.create_task(receiver.arecv(timeout=LIMIT))
        await asyncio.wait_for(sender.asend(data), LIMIT)
        await asyncio.wait_for(sender.asend_bytes(b"small"), LIMIT)
        first = await asyncio.wait_for(reader, LIMIT)
        return first, await asyncio.wait_for(receiver.arecv_bytes(timeout=LIMIT), LIMIT)

    assert run(main()) == (data, b"small")
    sender.close()
    receiver.close()
    if listener is not None:
        listener.close()


# --- the loop keeps running ---------------------------------------------------------


async def after_ticks(n, action):
    """Let the loop run n other steps, then act: proves the awaiting call did not block it."""
    for _ in range(n):
        await asyncio.sleep(0)
    action()


def test_the_loop_runs_other_tasks_while_aget_aput_and_ajoin_wait():
    q = Queue(maxsize=1)
    jq = JoinableQueue()

    async def main():
        other = asyncio.create_task(after_ticks(20, lambda: q.put("late")))
        got = await asyncio.wait_for(q.aget(), LIMIT)
        await other
        q.put("fill")
        other = asyncio.create_task(after_ticks(20, q.get))
        await asyncio.wait_for(q.aput("second"), LIMIT)
        await other
        jq.put(1)
        jq.get()
        other = asyncio.create_task(after_ticks(20, jq.task_done))
        joined = await asyncio.wait_for(jq.ajoin(), LIMIT)
        await other
        return got, joined, q.get(timeout=LIMIT)

    assert run(main()) == ("late", True, "second")
    q.close()
    jq.close()


def test_the_loop_runs_other_tasks_while_arecv_waits():
    a, b = proctor.Pipe()

    async def main():
        other = asyncio.create_task(after_ticks(20, lambda: b.send("late")))
        got = await asyncio.wait_for(a.arecv(), LIMIT)
        await other
        return got

    assert run(main()) == "late"
    a.close()
    b.close()


def test_one_watcher_thread_serves_many_coroutines_waiting_on_one_queue():
    q = Queue()

    async def main():
        tasks = [asyncio.create_task(q.aget()) for _ in range(5)]
        waiting = lambda: [t for t in threading.enumerate() if t.name == "proctor-loop-wait"]  # noqa: E731
        for _ in range(20):
            await asyncio.sleep(0)
        threads = len(waiting())
        q.put_many(range(5))
        return threads, sorted(await asyncio.wait_for(asyncio.gather(*tasks), LIMIT))

    threads, got = run(main())
    assert threads == 1
    assert got == [0, 1, 2, 3, 4]
    q.close()


def test_simple_queue_has_aget_and_aput():
    q = SimpleQueue()

    async def main():
        await asyncio.wait_for(q.aput([1, 2]), LIMIT)
        return await asyncio.wait_for(q.aget(), LIMIT)

    assert run(main()) == [1, 2]
    q.close()


# --- timeouts ---------------------------------------------------------------------------


def test_timeouts_raise_empty_full_and_timeout_error():
    q = Queue(maxsize=1)
    jq = JoinableQueue()
    a, b = proctor.Pipe()

    async def main():
        with pytest.raises(queue.Empty):
            await asyncio.wait_for(q.aget(timeout=0.05), LIMIT)
        with pytest.raises(queue.Empty):
            await asyncio.wait_for(q.aget(block=False), LIMIT)
        await asyncio.wait_for(q.aput(1), LIMIT)
        with pytest.raises(queue.Full):
            await asyncio.wait_for(q.aput(2, timeout=0.05), LIMIT)
        with pytest.raises(queue.Full):
            await asyncio.wait_for(q.aput(2, block=False), LIMIT)
        jq.put(1)
        assert await asyncio.wait_for(jq.ajoin(timeout=0.05), LIMIT) is False
        with pytest.raises(TimeoutError) as caught:
            await asyncio.wait_for(a.arecv(timeout=0.05), LIMIT)
        assert isinstance(caught.value, proctor.ProcessTimeoutError)
        fill(a, "more")  # b never reads: a timed asend of one more sends nothing
        with pytest.raises(proctor.ProcessTimeoutError, match="nothing of it was sent"):
            await asyncio.wait_for(a.asend("more", timeout=0.05), LIMIT)

    run(main())
    assert q.get(timeout=LIMIT) == 1  # the item put, once; the timed-out one is not there
    assert q.empty()
    for thing in (q, jq, a, b):
        thing.close()


def test_bad_arguments_fail_before_any_wait():
    q = Queue()
    a, b = proctor.Pipe()

    async def main():
        with pytest.raises(ValueError, match="NaN"):
            await asyncio.wait_for(q.aget(timeout=float("nan")), LIMIT)
        with pytest.raises(TypeError):
            await asyncio.wait_for(q.aput(1, timeout="soon"), LIMIT)
        with pytest.raises(proctor.PicklingError):
            await asyncio.wait_for(q.aput(threading.Lock()), LIMIT)
        with pytest.raises(ValueError):
            await asyncio.wait_for(a.asend_bytes(b"abc", offset=5), LIMIT)

    run(main())
    assert q.empty()
    q.close()
    a.close()
    b.close()


# --- cancellation loses nothing -------------------------------------------------------


def test_cancelled_agets_while_items_arrive_lose_and_duplicate_nothing(ctx):
    # Each round: an aget waits on an empty queue, the producer is let put one
    # item, and the aget is cancelled after 0 to 29 turns of the loop -- before
    # the item came, while its token is being handed over, or after it was taken.
    n = 600
    q, credits = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=put_on_credit, args=(q, credits, n))
    p.start()

    async def main():
        got = []
        for step in range(n):
            while q:  # what cancelled agets left behind
                got.append(await asyncio.wait_for(q.aget(), LIMIT))
            task = asyncio.create_task(q.aget())
            await asyncio.sleep(0)  # it waits
            credits.put(None)
            for _ in range(step % 30):
                await asyncio.sleep(0)
            task.cancel()
            try:
                got.append(await asyncio.wait_for(task, LIMIT))
            except asyncio.CancelledError:
                pass  # then the item is still in the queue, or yet to come
        return got

    got = run(main())
    p.join(LIMIT)
    assert p.exitcode == 0
    while q:
        got.append(q.get(timeout=LIMIT))
    assert got == list(range(n))  # none lost, none twice, in order
    q.close()
    credits.close()


def test_a_token_handed_to_a_cancelled_waiter_goes_back_to_the_semaphore():
    q = Queue()
    sem = q._shared.items.sem

    async def main():
        task = asyncio.create_task(_loopwait.await_post(sem, None))
        await asyncio.sleep(0)  # the task registers and waits
        watcher = _loopwait._registry.get().watchers[id(sem)]
        sem.release()
        # Block the loop until the watcher has taken the unit for the task: the
        # task cannot run to take it before it is cancelled.
        wait_until(lambda: watcher.waiters and watcher.waiters[0].state == _loopwait._HANDED)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, LIMIT)
        return sem.acquire(False)

    assert run(main()) is True  # the unit was given back, not dropped
    q.close()


def test_a_cancelled_aput_on_a_full_queue_puts_nothing_and_unregisters():
    q = Queue(maxsize=1)
    q.put("first")

    async def main():
        task = asyncio.create_task(q.aput("second"))
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, LIMIT)

    run(main())
    assert q.get(timeout=LIMIT) == "first"
    assert q.empty()
    from proctor._queues._ring import Ring

    assert q._ring.get_field(Ring.PUTTERS) == 0
    q.close()


def test_a_cancelled_ajoin_unregisters():
    from proctor._queues._ring import Ring

    jq = JoinableQueue()
    jq.put(1)

    async def main():
        task = asyncio.create_task(jq.ajoin())
        for _ in range(5):
            await asyncio.sleep(0)
        registered = jq._ring.get_field(Ring.JOINERS)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, LIMIT)
        return registered

    assert run(main()) == 1
    assert jq._ring.get_field(Ring.JOINERS) == 0
    jq.get(timeout=LIMIT)
    jq.task_done()
    assert jq.join(timeout=LIMIT)
    jq.close()


def test_a_cancelled_asend_on_a_full_pipe_sends_nothing():
    a, b = proctor.Pipe()
    sent = 0
    while True:
        try:
            a.send(sent, timeout=0)
            sent += 1
        except proctor.ProcessTimeoutError:
            break

    async def main():
        task = asyncio.create_task(a.asend("cancelled"))
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, LIMIT)
        sender = asyncio.create_task(a.asend("after"))  # waits until b has read some
        got = [await asyncio.wait_for(b.arecv(), LIMIT) for _ in range(sent)]
        await asyncio.wait_for(sender, LIMIT)
        return got

    assert run(main()) == list(range(sent))
    assert b.recv(timeout=LIMIT) == "after"
    assert not b.poll(0)
    a.close()
    b.close()


def test_a_cancelled_asend_on_a_socket_finishes_the_message_it_started():
    data = os.urandom(8 * 1024 * 1024)  # more than the socket buffers hold
    with Listener() as listener:
        client = Client(listener.address)
        server = listener.accept(timeout=LIMIT)

        async def main():
            task = asyncio.create_task(client.asend(data))
            await asyncio.sleep(0)  # the first part goes out
            task.cancel()
            reader = asyncio.create_task(server.arecv(timeout=LIMIT))
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, LIMIT)
            got = await asyncio.wait_for(reader, LIMIT)
            await asyncio.wait_for(client.asend("next"), LIMIT)
            return got, await asyncio.wait_for(server.arecv(timeout=LIMIT), LIMIT)

        assert run(main()) == (data, "next")
        client.close()
        server.close()


def _cancel_arecv_mid_message(server, monkeypatch, as_bytes):
    """Start an arecv of a big message on ``server``, cancel it once it has read part
    of the body, and check that the connection kept what it had read."""
    from proctor._connections import _aio

    read_some = _aio._read_some
    stalled = asyncio.Event()  # made here, used in the loop of run() below

    async def stalling(conn, view, have, need):
        # A body read (past the 64 KiB read-ahead) with part of the body in already:
        # wait here, before reading, to be cancelled mid-message with nothing in hand.
        if need > 65536 and have > 0:
            stalled.set()
            await asyncio.Event().wait()
        return await read_some(conn, view, have, need)

    monkeypatch.setattr(_aio, "_read_some", stalling)

    async def main():
        task = asyncio.create_task(server.arecv_bytes() if as_bytes else server.arecv())
        await asyncio.wait_for(stalled.wait(), LIMIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, LIMIT)

    run(main())
    monkeypatch.setattr(_aio, "_read_some", read_some)
    assert server._partial is not None and server.poll(0)


@pytest.mark.parametrize("then", ["arecv", "recv"])
def test_a_cancelled_arecv_mid_message_leaves_it_whole_for_the_next_receive(monkeypatch, then):
    big = os.urandom(16 * 1024 * 1024)  # far more than the socket buffers hold
    with Listener() as listener:
        client = Client(listener.address)
        server = listener.accept(timeout=LIMIT)
        # A thread streams the messages with blocking sends, as another process would.
        sender = threading.Thread(target=lambda: [client.send_bytes(big), client.send("next")])
        sender.start()
        _cancel_arecv_mid_message(server, monkeypatch, as_bytes=True)
        if then == "arecv":

            async def rest():
                first = await asyncio.wait_for(server.arecv_bytes(), LIMIT)
                return first, await asyncio.wait_for(server.arecv(), LIMIT)

            got = run(rest())
        else:
            got = server.recv_bytes(), server.recv(timeout=LIMIT)
        sender.join(LIMIT)
        assert got[0] == big and got[1] == "next"  # nothing lost, the stream in step
        assert server._partial is None
        client.close()
        server.close()


def test_a_half_received_message_cannot_be_passed_and_maxlength_still_applies(monkeypatch):
    big = list(range(4_000_000))  # pickled: about 20 MiB
    with Listener() as listener:
        client = Client(listener.address)
        server = listener.accept(timeout=LIMIT)
        failed = []

        def send():
            try:
                client.send(big)
            except OSError as exc:  # the receiver closes its end half-way
                failed.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        _cancel_arecv_mid_message(server, monkeypatch, as_bytes=False)
        with pytest.raises(ValueError, match="middle of receiving a message"):
            pickle.dumps(server)
        with pytest.raises(OSError, match="maxlength"):
            server.recv_bytes(maxlength=1000)  # refused, as for any message that long
        server.close()  # the sender's blocking send ends: its peer is gone
        sender.join(LIMIT)
        assert not sender.is_alive() and failed  # BrokenPipeError, say
        client.close()


# --- dead peers --------------------------------------------------------------------------


def test_a_peer_killed_while_arecv_waits_gives_eoferror(ctx):
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=say_ready_then_sleep, args=(theirs,))
    p.start()
    theirs.close()
    assert ours.recv(timeout=LIMIT) == "ready"

    async def main():
        task = asyncio.create_task(ours.arecv())
        await asyncio.sleep(0)  # it waits
        os.kill(p.pid, signal.SIGKILL)
        with pytest.raises(EOFError, match="closed"):
            await asyncio.wait_for(task, LIMIT)

    run(main())
    p.join(LIMIT)
    assert p.exitcode == -signal.SIGKILL
    ours.close()


def test_a_peer_killed_while_asend_waits_for_room_gives_brokenpipeerror(ctx):
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=say_ready_then_sleep, args=(theirs,))
    p.start()
    theirs.close()
    assert ours.recv(timeout=LIMIT) == "ready"
    fill(ours, "more")

    async def main():
        task = asyncio.create_task(ours.asend("more"))
        await asyncio.sleep(0)
        os.kill(p.pid, signal.SIGKILL)
        with pytest.raises(BrokenPipeError):
            await asyncio.wait_for(task, LIMIT)

    run(main())
    p.join(LIMIT)
    ours.close()


def test_a_process_killed_holding_the_queue_lock_does_not_stall_aput_or_aget(ctx):
    q = ctx.Queue()
    ready = ctx.Event()
    p = ctx.Process(target=die_holding_the_put_lock, args=(q, ready))
    p.start()
    assert ready.wait(LIMIT)
    os.kill(p.pid, signal.SIGKILL)
    p.join(LIMIT)

    async def main():
        getter = asyncio.create_task(q.aget())
        await asyncio.wait_for(q.aput("through"), LIMIT)  # the dead holder's lock is taken over
        return await asyncio.wait_for(getter, LIMIT)

    assert run(main()) == "through"
    q.close()


def test_close_ends_a_waiting_aget_or_aput_and_later_calls_raise():
    q = Queue()
    full = Queue(maxsize=1)
    full.put(0)

    async def main():
        getter = asyncio.create_task(q.aget())
        putter = asyncio.create_task(full.aput(1))
        for _ in range(5):
            await asyncio.sleep(0)
        q.close()
        full.close()
        for task in (getter, putter):
            with pytest.raises(proctor.QueueClosedError):
                await asyncio.wait_for(task, LIMIT)
        with pytest.raises(proctor.QueueClosedError):
            await asyncio.wait_for(q.aget(), LIMIT)
        with pytest.raises(proctor.QueueClosedError):
            await asyncio.wait_for(full.aput(2), LIMIT)

    run(main())


def test_a_loop_closed_with_an_aget_still_waiting_lets_the_watcher_thread_end():
    q = Queue()
    loop = asyncio.new_event_loop()
    task = loop.create_task(q.aget())
    loop.run_until_complete(asyncio.wait([task], timeout=0.05))  # it waits
    watchers = lambda: [t for t in threading.enumerate() if t.name == "proctor-loop-wait"]  # noqa: E731
    assert len(watchers()) == 1
    loop.close()  # without cancelling the task: its waiter never comes back
    wait_until(lambda: not watchers(), timeout=LIMIT)
    q.put("still there")
    assert q.get(timeout=LIMIT) == "still there"
    q.close()


def test_an_arecv_waits_in_slices_that_back_off_and_still_sees_a_close(monkeypatch):
    """A long arecv() wakes its loop less and less often (the slices every liveness-aware
    wait takes, ``_wait.slice_seconds``), and a close by another task still ends it."""
    from proctor._connections import _aio

    asked = []
    real = _aio.slice_seconds

    def recording(deadline, slept=0.0):
        asked.append(slept)
        return min(real(deadline, slept), 0.01)  # short, so that the test is quick

    monkeypatch.setattr(_aio, "slice_seconds", recording)
    a, b = proctor.Pipe()
    first = []

    async def main():
        with pytest.raises(proctor.ProcessTimeoutError):
            await asyncio.wait_for(a.arecv(timeout=0.3), LIMIT)
        first.extend(asked)
        reader = asyncio.create_task(a.arecv())
        while len(asked) == len(first):  # until the reader waits
            await asyncio.sleep(0)
        a.close()  # by another task
        with pytest.raises(OSError):
            await asyncio.wait_for(reader, LIMIT)

    try:
        run(main())
    finally:
        a.close()
        b.close()
    # What each slice was told the wait had slept: from nothing up to the whole wait.
    assert first[0] < 0.05 and first[-1] > 0.2
    assert first == sorted(first)
