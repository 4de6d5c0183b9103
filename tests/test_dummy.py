"""proctor.dummy: the multiprocessing API on threads (src/proctor/_dummy).

Every blocking call has a timeout; threads hand-shake through events, queues and
pipes (no sleeps); the autouse leak check fails a test that leaves a thread behind.
"""

from __future__ import annotations

import array
import ctypes
import gc
import pickle
import queue
import sys
import threading

import pytest

import proctor
from helpers import wait_until
from proctor import dummy
from proctor.dummy import connection

T = 10.0  # the timeout of every wait that is expected to succeed


def _put(q, *items):
    for item in items:
        q.put(item, timeout=T)


# ─── the tutorial programs, import changed only ──────────────────────────────


def _f(conn):
    conn.send([42, None, "hello"])
    conn.close()


def test_tutorial_pipe():
    parent_conn, child_conn = dummy.Pipe()
    p = dummy.Process(target=_f, args=(child_conn,))
    p.start()
    assert parent_conn.recv(timeout=T) == [42, None, "hello"]
    p.join(T)
    assert p.exitcode == 0


def test_tutorial_queue():
    q = dummy.Queue()
    p = dummy.Process(target=_put, args=(q, [42, None, "hello"]))
    p.start()
    assert q.get(timeout=T) == [42, None, "hello"]
    p.join(T)
    assert not p.is_alive()


def test_tutorial_lock_and_pool():
    lock = dummy.Lock()
    seen = []

    def show(i):
        with lock:
            seen.append(i)

    workers = [dummy.Process(target=show, args=(i,)) for i in range(5)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(T)
    assert sorted(seen) == list(range(5))
    with dummy.Pool(2) as pool:
        assert pool.map(abs, [-1, -2, 3], chunksize=1) == [1, 2, 3]
        assert pool.apply_async(pow, (2, 5)).get(timeout=T) == 32
    pool.join()


# ─── Process ────────────────────────────────────────────────────────────────


def test_process_is_a_thread_with_process_api():
    started = threading.Event()
    go = threading.Event()

    def work(a, b=0):
        started.set()
        go.wait(T)
        assert dummy.current_process().name == "worker"

    p = dummy.Process(target=work, args=[1], kwargs={"b": 2}, name="worker", daemon=True)
    assert isinstance(p, threading.Thread)
    assert (p.exitcode, p.is_alive(), p.daemon, p.name) == (None, False, True, "worker")
    assert p not in dummy.active_children()
    p.start()
    assert started.wait(T)
    assert p.is_alive() and p.exitcode is None
    assert p in dummy.active_children()
    p.join(0.01)  # times out: still running
    assert p.is_alive()
    with pytest.raises(ValueError, match="still running"):
        p.close()
    go.set()
    p.join(T)
    p.close()
    assert (p.exitcode, p.is_alive()) == (0, False)
    assert p not in dummy.active_children()
    assert dummy.current_process() is threading.current_thread()


def test_children_belong_to_the_thread_that_started_them():
    go = threading.Event()
    p = dummy.Process(target=go.wait, args=(T,))
    p.start()
    seen = []
    other = threading.Thread(target=lambda: seen.append(dummy.active_children()))
    other.start()
    other.join(T)
    assert seen == [[]]
    assert dummy.active_children() == [p]
    go.set()
    p.join(T)


def _raise():
    raise ValueError("boom")


@pytest.mark.parametrize(
    ("target", "exitcode"),
    [
        (lambda: None, 0),
        (_raise, 1),
        (lambda: exec("raise SystemExit(3)"), 3),
        (lambda: exec("raise SystemExit"), 0),
    ],
    ids=["returns", "raises", "sys.exit(3)", "sys.exit()"],
)
def test_exitcode_is_what_a_process_would_report(target, exitcode, monkeypatch):
    hooked = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)
    p = dummy.Process(target=target)
    p.start()
    p.join(T)
    assert p.exitcode == exitcode
    assert [type(h.exc_value) for h in hooked] == ([ValueError] if exitcode == 1 else [])


def test_process_bad_input_and_misuse():
    with pytest.raises(TypeError, match="target must be callable"):
        dummy.Process(target=42)
    with pytest.raises(TypeError, match="args must be a tuple or a list"):
        dummy.Process(target=print, args="ab")
    with pytest.raises(TypeError, match="kwargs must be a mapping"):
        dummy.Process(target=print, kwargs=[1])
    p = dummy.Process(target=lambda: None)
    with pytest.raises(RuntimeError):
        p.join(T)  # not started
    p.start()
    with pytest.raises(RuntimeError, match="started already"):
        p.start()
    with pytest.raises(TypeError, match="timeout"):
        p.join("1")
    p.join(T)


def test_subclass_run_is_recorded():
    class Worker(dummy.Process):
        def run(self):
            raise SystemExit(5)

    w = Worker()
    w.start()
    w.join(T)
    assert w.exitcode == 5


def test_module_level_helpers():
    dummy.freeze_support()
    assert dummy.cpu_count() == proctor.cpu_count()
    dummy.shutdown()


# ─── queues ─────────────────────────────────────────────────────────────────


def test_queue_api_and_timeouts():
    q = dummy.Queue(2)
    q.put(1)
    q.put_nowait(2)
    assert (q.qsize(), q.full(), q.empty()) == (2, True, False)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.01)
    with pytest.raises(queue.Full):
        q.put(3, False)
    assert q.get(timeout=T) == 1
    assert q.get_nowait() == 2
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get(timeout=-1)  # multiprocessing's meaning: poll (queue.Queue refuses it)
    with pytest.raises(queue.Empty):
        q.get(False)
    with pytest.raises(TypeError, match="timeout"):
        q.get(timeout="1")
    with pytest.raises(TypeError, match="maxsize"):
        dummy.Queue("2")
    item = []
    q.put(item)
    assert q.get(timeout=T) is item  # never pickled
    # Keywords as queue.Queue (which multiprocessing.dummy.Queue is) names them.
    q.put(item="kw", block=True, timeout=T)
    q.put_nowait(item="kw2")
    assert [q.get(block=True, timeout=T), q.get_nowait()] == ["kw", "kw2"]


def test_queue_close_is_per_thread():
    q = dummy.Queue()
    with pytest.raises(ValueError, match="close"):
        q.join_thread()
    q.close()
    q.close()
    with pytest.raises(proctor.QueueClosedError, match="called close"):
        q.put(1)
    p = dummy.Process(target=_put, args=(q, "from child"))
    p.start()
    assert q.get(timeout=T) == "from child"  # other threads go on
    p.join(T)
    q.join_thread()
    q.cancel_join_thread()
    assert "closed" in repr(q)


def test_joinable_queue_join_with_timeout():
    q = dummy.JoinableQueue()
    _put(q, 1, 2)
    assert q.join(timeout=0.01) is False
    done = []

    def consume():
        for _ in range(2):
            done.append(q.get(timeout=T))
            q.task_done()

    p = dummy.Process(target=consume)
    p.start()
    assert q.join(timeout=T) is True
    p.join(T)
    assert done == [1, 2]
    with pytest.raises(ValueError):
        q.task_done()


# ─── locks and the rest ─────────────────────────────────────────────────────


@pytest.mark.parametrize("make", [dummy.Lock, dummy.RLock])
def test_locks_take_multiprocessing_signatures(make):
    lock = make()
    assert lock.acquire(timeout=None)  # threading's Lock refuses timeout=None
    held = []
    t = threading.Thread(
        target=lambda: held.append((lock.acquire(block=False), lock.acquire(True, 0.01)))
    )
    t.start()
    t.join(T)
    assert held == [(False, False)]
    lock.release()
    assert lock.acquire(True, -2)  # negative: only tries
    lock.release()
    with lock:
        pass
    with pytest.raises(TypeError, match="timeout"):
        lock.acquire(timeout="1")
    assert lock.acquire(timeout=1e12)  # beyond threading.TIMEOUT_MAX: waits for ever
    lock.release()


def _waiting_in_acquire(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "acquire":
            return True
        frame = frame.f_back
    return False


@pytest.mark.parametrize("make", [dummy.Lock, dummy.RLock, lambda: dummy.Semaphore(1)])
def test_locks_take_threading_signatures_too(make):
    # multiprocessing.dummy's locks are threading's: code written for it passes
    # blocking= and timeout=-1 (threading's "no limit").
    lock = make()
    assert lock.acquire(blocking=True)
    outcome: list[object] = []

    def contend() -> None:
        outcome.append(lock.acquire(blocking=False))
        outcome.append(lock.acquire(timeout=-1))  # waits until the main thread releases
        lock.release()

    t = threading.Thread(target=contend)
    t.start()
    wait_until(lambda: len(outcome) == 1 and _waiting_in_acquire(t))
    assert outcome == [False]
    lock.release()
    t.join(T)
    assert not t.is_alive() and outcome == [False, True]
    with pytest.raises(TypeError, match="blocking"):
        lock.acquire(True, blocking=True)


def test_lock_release_errors_catchable_either_way():
    with pytest.raises(ValueError, match="unlocked"):
        dummy.Lock().release()
    with pytest.raises(RuntimeError):
        dummy.Lock().release()
    rlock = dummy.RLock()
    with pytest.raises(proctor.LockNotOwnedError, match="does not hold"):
        rlock.release()
    rlock.acquire()
    rlock.acquire()
    assert "owned by MainThread" in repr(rlock)
    errors = []

    def other():
        try:
            rlock.release()
        except AssertionError as exc:  # multiprocessing's RLock raises AssertionError
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(T)
    assert len(errors) == 1
    rlock.release()
    rlock.release()
    assert "unlocked" in repr(rlock)


def test_semaphores():
    s = dummy.Semaphore(2)
    assert s.get_value() == 2
    assert s.acquire(False) and s.acquire(True, None)
    assert not s.acquire(False, 5)  # multiprocessing allows a timeout with block=False
    assert not s.acquire(timeout=0.01)
    s.release()
    assert repr(s) == "<proctor.dummy.Semaphore(value=1)>"
    b = dummy.BoundedSemaphore(1)
    with pytest.raises(ValueError, match="released too many times"):
        b.release()
    with b:
        assert b.get_value() == 0
    for bad, error in [("1", TypeError), (True, TypeError), (-1, ValueError)]:
        with pytest.raises(error):
            dummy.Semaphore(bad)


@pytest.mark.parametrize("lock", [None, "Lock", "RLock"])
def test_condition_wait_notify(lock):
    cond = dummy.Condition(None if lock is None else getattr(dummy, lock)())
    state = []

    def waiter():
        with cond:
            state.append(cond.wait_for(lambda: "go" in state, timeout=T))

    t = dummy.Process(target=waiter)
    t.start()
    with cond:
        state.append("go")
        cond.notify_all()
    t.join(T)
    assert state == ["go", True]
    with cond:
        assert cond.wait(0.01) is False
        cond.notify(2)


def test_condition_misuse():
    cond = dummy.Condition()
    with pytest.raises(proctor.LockNotOwnedError, match="wait"):
        cond.wait(T)
    with pytest.raises(RuntimeError, match="notify"):
        cond.notify()
    with cond, pytest.raises(TypeError, match="n must be an int"):
        cond.notify("1")
    with pytest.raises(TypeError, match="lock must be"):
        dummy.Condition(42)
    with cond, pytest.raises(TypeError, match="predicate"):
        cond.wait_for(42, T)


def test_event_and_barrier():
    e = dummy.Event()
    assert e.wait(0.01) is False
    e.set()
    assert e.wait(T) is True
    with pytest.raises(TypeError, match="timeout"):
        e.wait("1")
    actions = []
    b = dummy.Barrier(2, action=lambda: actions.append(1), timeout=T)
    t = dummy.Process(target=b.wait)
    t.start()
    assert b.wait(T) in (0, 1)
    t.join(T)
    assert actions == [1]
    with pytest.raises(threading.BrokenBarrierError):
        dummy.Barrier(2).wait(0.01)
    for args, error in [((0,), ValueError), (("2",), TypeError), ((2, 42), TypeError)]:
        with pytest.raises(error):
            dummy.Barrier(*args)


@pytest.mark.parametrize(
    "make",
    [dummy.Lock, dummy.RLock, dummy.Semaphore, dummy.Condition, dummy.Event, dummy.Queue],
)
def test_primitives_refuse_to_be_pickled(make):
    with pytest.raises(TypeError, match="another process"):
        pickle.dumps(make())


# ─── Value, Array, Namespace, Manager ───────────────────────────────────────


def test_value_and_array_are_multiprocessings():
    v = dummy.Value("i", 7)
    with v.get_lock():
        v.value += 1
    assert v.value == 8
    assert isinstance(v.get_lock(), dummy.RLock)
    assert dummy.Value("d").value == 0.0
    assert dummy.Value(ctypes.c_double, 2).value == 2.0
    raw = dummy.Value("i", 1, lock=False)
    assert isinstance(raw, ctypes.c_int)
    a = dummy.Array("i", [1, 2, 3])
    a[0] = 9
    assert (a[:], len(a)) == ([9, 2, 3], 3)
    assert dummy.Array("d", 2)[:] == [0.0, 0.0]
    assert dummy.Array("c", b"ab").value == b"ab"
    own = dummy.Lock()
    assert dummy.Value("i", 0, lock=own).get_lock() is own
    for args, error in [
        (("i", 1.5), TypeError),
        (("x", 1), TypeError),
    ]:
        with pytest.raises(error):
            dummy.Value(*args)
    with pytest.raises(TypeError):
        dummy.Value("i", 1, lock=42)
    for shared in (v, a):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(shared)
    with pytest.raises(ValueError, match="size"):
        dummy.Array("i", -1)
    with pytest.raises(TypeError, match="size_or_initializer"):
        dummy.Array("i", 2.5)


def test_namespace_and_manager():
    ns = dummy.Namespace(a=1, _hidden=2)
    ns.b = "x"
    assert repr(ns) == "Namespace(a=1, b='x')"
    with dummy.Manager() as m:
        shared = m.list([1])
        d = m.dict(a=1)
        assert type(shared) is list and type(d) is dict
        assert isinstance(m.Lock(), dummy.Lock)
        assert isinstance(m.Queue(), dummy.Queue)
        assert m.Value("i", 3).value == 3
        assert m.Namespace(x=1).x == 1
        with m.Pool(1) as pool:
            assert pool.apply(len, ([1, 2],)) == 2
        pool.join()
    m.shutdown()
    called = []
    m.start(called.append, (1,))
    assert called == [1]
    assert dummy.list is list and dummy.dict is dict


def test_pool_is_a_thread_pool_passing_objects():
    items = [[], []]
    with dummy.Pool(2) as pool:
        assert isinstance(pool, dummy.ThreadPool)
        assert pool.map(id, items) == [id(x) for x in items]
    pool.join()
    with pytest.raises(ValueError):
        dummy.Pool(0)


# ─── connections ─────────────────────────────────────────────────────────────


def test_pipe_send_recv_bytes_and_poll():
    a, b = dummy.Pipe()
    assert a.poll() is False and a.poll(0.01) is False and a.poll(-1) is False
    obj = {"k": [1]}
    b.send(obj)
    assert a.poll(T) is True
    assert a.recv(timeout=T) is obj
    buf = bytearray(b"hello")
    b.send_bytes(buf, 1, 3)
    buf[:] = b"xxxxx"  # the message is a copy
    assert a.recv_bytes(timeout=T) == b"ell"
    b.send_bytes(array.array("i", [1, 2]))
    into = bytearray(16)
    assert a.recv_bytes_into(into, 4, timeout=T) == 8
    assert bytes(into[4:12]) == array.array("i", [1, 2]).tobytes()
    b.send_bytes(b"x" * 20)
    with pytest.raises(proctor.BufferTooShort) as info:
        a.recv_bytes_into(bytearray(4))
    assert info.value.args == (b"x" * 20,)
    b.send_bytes(b"long message")
    with pytest.raises(proctor.ProtocolError, match="maxlength"):
        a.recv_bytes(maxlength=4)
    assert a.recv_bytes(timeout=T) == b"long message"  # it was left there
    b.send([1])
    with pytest.raises(TypeError, match="recv"):
        a.recv_bytes_into(bytearray(4))
    assert a.recv(timeout=T) == [1]
    with pytest.raises(proctor.TimeoutError, match=r"within 0\.01 s"):
        a.recv(timeout=0.01)
    a.close()
    b.close()


def test_send_bytes_of_an_object_sends_the_object():
    # multiprocessing.dummy does; programs echo what recv_bytes() returned.
    a, b = dummy.Pipe()
    b.send([1, 2])
    echoed = a.recv_bytes(timeout=T)
    a.send_bytes(echoed)
    assert b.recv(timeout=T) == [1, 2]
    with pytest.raises(TypeError):
        a.send_bytes([1], 1)


def test_send_bytes_bad_arguments():
    a, _b = dummy.Pipe()
    with pytest.raises(ValueError, match="offset"):
        a.send_bytes(b"ab", 3)
    with pytest.raises(ValueError, match="past the end"):
        a.send_bytes(b"ab", 1, 2)
    with pytest.raises(TypeError, match="size"):
        a.send_bytes(b"ab", 0, "1")
    with pytest.raises(TypeError, match="timeout"):
        a.send(1, timeout="1")
    with pytest.raises(TypeError, match="writable"):
        a.recv_bytes_into(b"read-only")


def test_closed_ends():
    a, b = dummy.Pipe()
    b.send("last")
    b.close()
    b.close()  # idempotent
    assert b.closed and "closed" in repr(b)
    assert a.poll(T) is True
    assert a.recv(timeout=T) == "last"  # what was sent comes first
    assert a.poll(T) is True  # then end of file, at once
    with pytest.raises(EOFError):
        a.recv(timeout=T)
    with pytest.raises(EOFError):
        a.recv_bytes()  # no timeout: must not hang
    with pytest.raises(BrokenPipeError):
        a.send(1)
    for call in (b.recv, lambda: b.send(1), b.poll):
        with pytest.raises(OSError, match="closed"):
            call()


def test_duplex_false_ends_are_one_way():
    reader, writer = dummy.Pipe(duplex=False)
    assert (reader.readable, reader.writable, writer.readable, writer.writable) == (
        True,
        False,
        False,
        True,
    )
    writer.send(1)
    assert reader.recv(timeout=T) == 1
    with pytest.raises(OSError, match="read-only"):
        reader.send(2)
    with pytest.raises(OSError, match="write-only"):
        writer.recv()
    with pytest.raises(OSError, match="write-only"):
        writer.poll()


def test_waiting_recv_wakes_when_the_peer_closes():
    a, b = dummy.Pipe()
    outcome = []

    def receive():
        try:
            a.recv()  # no timeout: the peer's close() must end it
        except EOFError as exc:
            outcome.append(exc)

    t = threading.Thread(target=receive)
    t.start()
    wait_until(lambda: a._inbox.cond._waiters)  # it waits (threading.Condition internals)
    b.close()
    t.join(T)
    assert not t.is_alive() and len(outcome) == 1


def test_parent_may_close_its_copy_after_start():
    # The multiprocessing idiom: the child's end is closed in the parent right after
    # start(); the child goes on using it, and its end closes when the child ends.
    parent_conn, child_conn = dummy.Pipe()

    def echo(conn):
        conn.send(conn.recv(timeout=T) * 2)  # never closes its end itself

    p = dummy.Process(target=echo, args=(child_conn,))
    p.start()
    child_conn.close()
    with pytest.raises(OSError, match="closed in this thread"):
        child_conn.send(1)
    parent_conn.send(21)
    assert parent_conn.recv(timeout=T) == 42
    p.join(T)
    with pytest.raises(EOFError):  # the child ended: nobody holds its end any more
        parent_conn.recv(timeout=T)


def test_child_that_dies_closes_its_end(monkeypatch):
    monkeypatch.setattr(threading, "excepthook", lambda args: None)
    parent_conn, child_conn = dummy.Pipe()

    def die(conn):
        raise RuntimeError("child failed")

    p = dummy.Process(target=die, args=(child_conn,))
    p.start()
    child_conn.close()
    with pytest.raises(EOFError):
        parent_conn.recv(timeout=T)
    p.join(T)
    assert p.exitcode == 1


def test_an_end_dropped_without_close_is_end_of_file():
    a, b = dummy.Pipe()
    del b
    gc.collect()
    with pytest.raises(EOFError):
        a.recv(timeout=T)


def test_connection_refuses_to_be_pickled():
    a, _ = dummy.Pipe()
    with pytest.raises(TypeError, match=r"proctor\.Pipe"):
        pickle.dumps(a)


def test_listener_and_client():
    with connection.Listener() as listener:
        assert connection.families == [None]

        def client(address):
            with connection.Client(address) as conn:
                conn.send("hello")
                assert conn.recv(timeout=T) == "bye"

        p = dummy.Process(target=client, args=(listener.address,))
        p.start()
        with listener.accept(timeout=T) as conn:
            assert conn.recv(timeout=T) == "hello"
            conn.send("bye")
        p.join(T)
        assert p.exitcode == 0
        with pytest.raises(proctor.TimeoutError, match="no client"):
            listener.accept(timeout=0.01)
    with pytest.raises(OSError, match="closed"):
        listener.accept(timeout=T)
    with pytest.raises(ConnectionRefusedError, match=r"no proctor\.dummy Listener"):
        connection.Client(listener.address)


def test_listener_named_address_authkey_and_errors():
    address = ("localhost", 6000)
    with connection.Listener(address, "AF_INET", authkey=b"secret") as listener:
        assert listener.address == address
        with pytest.raises(OSError, match=r"another proctor\.dummy Listener"):
            connection.Listener(address)
        with pytest.raises(proctor.AuthenticationError):
            connection.Client(address, authkey=b"wrong")
        with pytest.raises(proctor.AuthenticationError):
            connection.Client(address)
        client = connection.Client(address, authkey=b"secret")  # returns before accept()
        server = listener.accept(timeout=T)
        server.send_bytes(b"hi")
        assert client.poll(T) and client.recv_bytes(timeout=T) == b"hi"
        pending = connection.Client(address, authkey=b"secret")
    with pytest.raises(EOFError):  # closed before it was accepted
        pending.recv(timeout=T)
    for kwargs, error in [
        ({"family": "AF_BOGUS"}, ValueError),
        ({"backlog": "1"}, TypeError),
        ({"backlog": -1}, ValueError),
        ({"address": ["unhashable"]}, TypeError),
        ({"authkey": "str"}, TypeError),
    ]:
        with pytest.raises(error):
            connection.Listener(**kwargs)


def test_accept_wakes_when_the_listener_is_closed():
    listener = connection.Listener()
    errors = []

    def accept():
        try:
            listener.accept()  # no timeout: close() must end it
        except OSError as exc:
            errors.append(exc)

    t = threading.Thread(target=accept)
    t.start()
    wait_until(lambda: listener._cond._waiters)
    listener.close()
    t.join(T)
    assert len(errors) == 1 and "closed" in str(errors[0])


def test_public_names():
    assert dummy.Process is dummy.DummyProcess
    assert dummy.connection is connection
    assert dummy.Pipe is connection.Pipe
    assert proctor.dummy is dummy
    missing = [name for name in dummy.__all__ if not hasattr(dummy, name)]
    assert not missing
