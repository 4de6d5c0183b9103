"""Managers (proctor._managers, proctor.managers): every type through a proxy, custom
types, connecting from other processes and over TCP, and the faults of issue 15 --
a manager killed under its clients, a client killed in the middle of a call, a wrong
authkey, values that cannot be pickled, exceptions raised in managed methods.

Most tests use fork (the start method does not change what a proxy does once it
exists); the ones where a proxy crosses into a child, or the manager process is
started, run under each method (``ctx``).
"""

from __future__ import annotations

import os
import queue as stdlib_queue
import signal
import threading

import pytest

import proctor
from helpers import call_in_thread, finish, open_fds, shm_entries, wait_until
from proctor.managers import (
    BaseManager,
    BaseProxy,
    DictProxy,
    IteratorProxy,
    ManagerLostError,
    RemoteError,
    SharedMemoryManager,
    SyncManager,
)

TIMEOUT = 30
FORK = proctor.get_context("fork")


@pytest.fixture
def manager():
    """A started SyncManager (fork) for the test, shut down after it."""
    with SyncManager(ctx=FORK) as m:
        yield m


# -- types and helpers the manager process uses (module level: spawn imports them) --------


class _PicklesOnlyWhereMade:
    """Pickles in the process that made it only: it reaches a manager, but cannot
    come back in a reply."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid

    def __reduce__(self):
        if os.getpid() != self.pid:
            raise TypeError("this object pickles only in the process that made it")
        return (_PicklesOnlyWhereMade, (self.pid,))


class Thing:
    """A custom shared type: an exception, an unpicklable result, a blocking call."""

    def __init__(self, start=0):
        self.value = start
        self.entered = 0
        self.gate = threading.Event()

    def __repr__(self):
        return f"Thing(value={self.value}, entered={self.entered})"

    def add(self, n):
        self.value += n
        return self.value

    def fail(self, message):
        raise KeyError(message)

    def make_lock(self):
        return threading.Lock()  # cannot be pickled

    def wait_here(self):
        self.entered += 1
        self.gate.wait(TIMEOUT)
        return "released"

    def count_entered(self):
        return self.entered

    def open_gate(self):
        self.gate.set()

    def numbers(self):
        return iter(range(3))

    def _private(self):
        return "private"

    def raise_base(self, name):
        import asyncio

        raise {"KeyboardInterrupt": KeyboardInterrupt, "SystemExit": SystemExit,
               "CancelledError": asyncio.CancelledError}[name]("from the method")  # fmt: skip


def _generator():
    yield 1
    yield 2


_store: dict = {}


def get_store():
    return _store


class ThingManager(BaseManager):
    pass


ThingManager.register("Thing", Thing)
ThingManager.register("LimitedThing", Thing, exposed=("add", "_private"))
ThingManager.register("IterThing", Thing, method_to_typeid={"numbers": "Iter"})
ThingManager.register("Iter", proxytype=IteratorProxy, create_method=False)
ThingManager.register("get_store", callable=get_store)
ThingManager.register("Generator", _generator, proxytype=IteratorProxy)
ThingManager.register("descriptor_limits", callable=lambda: _descriptor_limits())


def _descriptor_limits():
    import resource

    return list(resource.getrlimit(resource.RLIMIT_NOFILE))


class StoreClient(BaseManager):
    pass


StoreClient.register("get_store")


def _append_in_child(shared_list, shared_dict):
    shared_list.append(os.getpid())
    shared_dict["child"] = os.getpid()
    shared_dict["nested"].append("from child")
    return len(shared_list)


def _use_store(address, authkey, key, value):
    client = StoreClient(address=address, authkey=authkey)
    client.connect()
    store = client.get_store()  # an AutoProxy: public methods only
    store.update({key: value})
    return sorted(store.keys())


def _call_after_kill(proxy, ready, killed, timeout):
    len(proxy)  # connected
    ready.set()
    if not killed.wait(timeout):
        return "the parent never killed the manager"
    try:
        proxy.append(1)
    except ManagerLostError as exc:
        return f"ManagerLostError: {exc}"
    return "the call returned"


def _create_and_block(address, authkey, created):
    client = ThingManager(address=address, authkey=authkey)
    client.connect()
    mine = [client.Thing() for _ in range(3)]  # noqa: F841  (held until killed)
    created.set()
    gate = client.Thing()
    gate.wait_here()  # never returns: this process is killed in the call


def _gate_entered(manager):
    return "entered=1" in manager._debug_info()


def _initializer(namespace, value):
    namespace.initialized = value


def _serve(address, authkey, ready):
    server = ThingManager(address=address, authkey=authkey).get_server()
    ready.set()
    server.serve_forever()


# -- every type -------------------------------------------------------------------------


def test_every_syncmanager_type_works_through_its_proxy(manager):
    shared_list = manager.list([3, 1, 2])
    shared_list.sort()
    shared_list += [4]
    assert shared_list[:] == [1, 2, 3, 4] and len(shared_list) == 4 and 2 in shared_list
    assert shared_list._getvalue() == [1, 2, 3, 4] and str(shared_list) == "[1, 2, 3, 4]"
    shared_dict = manager.dict(a=1)
    shared_dict["b"] = 2
    assert sorted(shared_dict.items()) == [("a", 1), ("b", 2)]
    assert sorted(shared_dict) == ["a", "b"] and shared_dict.get("c", 0) == 0
    namespace = manager.Namespace(x=1)
    namespace.y = 2
    assert (namespace.x, namespace.y) == (1, 2)
    for lock in (manager.Lock(), manager.RLock()):
        with lock:
            pass
        assert lock.acquire(timeout=1) is True
        lock.release()
    semaphore = manager.Semaphore(2)
    assert semaphore.acquire() and semaphore.acquire() and not semaphore.acquire(False)
    bounded = manager.BoundedSemaphore(1)
    with pytest.raises(ValueError):
        bounded.release()
    condition = manager.Condition()
    with condition:
        assert condition.wait(0.01) is False
        condition.notify_all()
    assert condition.wait_for(lambda: True, timeout=0) is True
    event = manager.Event()
    event.set()
    assert event.is_set() and event.wait(0)
    barrier = manager.Barrier(1)
    assert barrier.parties == 1 and barrier.wait(1) == 0
    for queue in (manager.Queue(), manager.JoinableQueue()):
        queue.put("item")
        assert queue.qsize() == 1 and queue.get(timeout=1) == "item"
    joinable = manager.JoinableQueue()
    joinable.put(1)
    joinable.get()
    joinable.task_done()
    joinable.join()
    value = manager.Value("i", 1)
    value.value += 1
    assert value.get() == 2
    array = manager.Array("i", [1, 2, 3])
    array[0] = 9
    assert len(array) == 3 and list(array) == [9, 2, 3]
    with manager.Pool(2) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
        assert pool.apply_async(abs, (-3,)).get(TIMEOUT) == 3
        assert list(pool.imap(abs, [-4, -5])) == [4, 5]


def test_a_list_inside_a_dict_stays_a_proxy_and_is_released_with_it(manager):
    before = manager._number_of_objects()
    outer = manager.dict()
    inner = manager.list([1])
    outer["inner"] = inner
    outer["inner"].append(2)
    assert inner[:] == [1, 2]
    got = outer["inner"]
    assert isinstance(got, BaseProxy)
    del got, inner
    assert manager._number_of_objects() == before + 2
    del outer
    assert manager._number_of_objects() == before, manager._debug_info()


def _append_through_nested(outer, value, done):
    # This child was given ``outer`` (and the key with it) at its start; the inner
    # proxy comes in a reply, without a key.
    outer["inner"].append(value)
    done.put(outer["inner"][:])


def test_nested_proxies_work_under_a_manager_given_its_own_authkey(ctx):
    # A proxy sent in a message carries no key: the manager rebuilt the stored one
    # with its process's authkey, not the manager's, and refused it (the stdlib's
    # manager stores it, and its client fails on the proxy it gets back).
    with SyncManager(authkey=b"a key of its own", ctx=ctx) as manager:
        outer, inner = manager.dict(), manager.list([1])
        outer["inner"] = inner
        got = outer["inner"]
        got.append(2)
        assert inner[:] == [1, 2]
        done = ctx.Queue()
        p = ctx.Process(target=_append_through_nested, args=(outer, 3, done))
        p.start()
        assert done.get(timeout=TIMEOUT) == [1, 2, 3]
        assert finish(p)[0] == 0


def test_a_proxy_taken_out_of_a_managed_container_keeps_its_object(manager):
    # pop() and get() hand back the only reference the manager held: the reply
    # carries it to the caller, who must not find the object released on the way.
    before = manager._number_of_objects()
    mapping, sequence, queue = manager.dict(), manager.list(), manager.Queue()
    mapping["inner"] = manager.list([1, 2])  # the caller's proxy goes at once
    sequence.append(manager.dict(a=1))
    queue.put(manager.dict(z=1))
    popped = mapping.pop("inner")
    assert popped[:] == [1, 2]
    assert sequence.pop()["a"] == 1
    got = queue.get(timeout=TIMEOUT)
    assert got["z"] == 1
    assert manager._number_of_objects() == before + 5, manager._debug_info()
    # The caller's proxies hold the only references now.
    del popped, got
    assert manager._number_of_objects() == before + 3, manager._debug_info()


def _list_refcount(manager) -> int:
    lines = manager._debug_info().splitlines()
    listed = [i for i, line in enumerate(lines) if line.strip().startswith("list:")]
    assert len(listed) == 1, lines
    return int(lines[listed[0] - 1].split("refcount=")[1])


def test_a_proxy_in_a_reply_pickled_twice_takes_one_reference(manager):
    # A class made here goes by value: the manager's first pickler cannot take the
    # reply, and its second one reduces the proxy in it again.
    class MadeHere:
        pass

    mapping = manager.dict()
    mapping["pair"] = [manager.list([1]), MadeHere]
    got = mapping.get("pair")
    assert got[0][:] == [1] and got[1].__name__ == "MadeHere"
    assert _list_refcount(manager) == 2  # the dict's and this client's
    del got
    assert _list_refcount(manager) == 1


class _Mailbox:
    """A queue that tells how many calls have waited in take() (in the manager)."""

    def __init__(self) -> None:
        self._items: stdlib_queue.Queue = stdlib_queue.Queue()
        self._waited = 0

    def take(self):
        self._waited += 1
        return self._items.get()

    def waited(self) -> int:
        return self._waited

    def put(self, item) -> None:
        self._items.put(item)


class _MailboxManager(BaseManager):
    pass


_MailboxManager.register("Mailbox", _Mailbox)
_MailboxManager.register("dict", dict, DictProxy)


def _take_from(box):
    box.take()  # waits in the manager until the test kills this process


def test_a_proxy_handed_to_a_client_that_died_meanwhile_is_released():
    # The dead client's take() is still waiting in the manager when the proxy
    # arrives: no reference is left counted for a client that has gone.
    with _MailboxManager(ctx=FORK) as manager:
        box = manager.Mailbox()
        before = manager._number_of_objects()
        child = FORK.Process(target=_take_from, args=(box,))
        child.start()
        wait_until(lambda: box.waited() == 1, timeout=30)
        child.kill()
        child.join(30)
        inner = manager.dict(x=1)
        box.put(inner)  # the dead client's take() returns it
        del inner
        wait_until(lambda: manager._number_of_objects() == before, timeout=30)


def test_a_proxy_in_a_reply_that_cannot_be_sent_leaves_no_reference(manager):
    mapping = manager.dict()
    mapping["pair"] = [manager.list([1]), _PicklesOnlyWhereMade()]
    with pytest.raises(RemoteError, match="pickles only in the process that made it"):
        mapping.get("pair")
    # The reference taken for this client while the reply was pickled went again:
    # the list has the dict's alone.
    assert _list_refcount(manager) == 1


def _rebuild_in(pid):
    if os.getpid() != pid:
        raise RuntimeError("this object unpickles only in the manager")
    return _UnpicklesOnlyIn(pid)


class _UnpicklesOnlyIn:
    """Unpickles in process ``pid`` only: it reaches a manager, but its reply fails
    to unpickle in the client."""

    def __init__(self, pid):
        self.pid = pid

    def __reduce__(self):
        return (_rebuild_in, (self.pid,))


def test_a_reply_that_fails_to_unpickle_leaves_no_reference_in_the_manager(manager):
    # The references the manager counted for the proxies in such a reply stayed
    # this process's until its session ended: the objects outlived their holders.
    kept = manager.list([1])  # this process's own proxy, besides the reply's
    shared = manager.dict()
    shared["a"] = kept  # rebuilt here (its reference taken over), then dropped
    shared["b"] = _UnpicklesOnlyIn(manager._process.pid)  # fails to unpickle here
    shared["c"] = manager.list([2])  # never rebuilt here
    assert manager._number_of_objects() == 3
    with pytest.raises(RuntimeError, match="unpickles only in the manager"):
        shared.values()
    assert len(shared) == 3  # the connection is in step
    del shared
    wait_until(lambda: manager._number_of_objects() == 1, timeout=TIMEOUT)  # kept's list
    kept.append(3)  # (its reference was not dropped twice)
    assert kept[:] == [1, 3]


def test_proxies_passed_to_a_child_reach_the_same_objects(ctx):
    with SyncManager(ctx=ctx) as manager:
        shared_list = manager.list()
        shared_dict = manager.dict(nested=manager.list())
        p = ctx.Process(target=_append_in_child, args=(shared_list, shared_dict))
        p.start()
        exitcode, result = finish(p, TIMEOUT)
        assert (exitcode, result) == (0, 1)
        assert shared_list[:] == [shared_dict["child"]]
        assert shared_dict["nested"][:] == ["from child"]


def _write_and_read(shared_dict, key):
    shared_dict[key] = os.getpid()
    return sorted(shared_dict.keys())


def test_a_worker_forked_from_the_managers_server_writes_to_the_real_objects():
    # SyncManager.Pool runs in the server process and forks its workers from it:
    # their proxies must reach the server over a socket, not the copy of it that
    # the fork left in each worker (where the write was lost).
    with SyncManager(ctx=proctor.get_context("fork")) as manager:
        shared = manager.dict()
        pool = manager.Pool(1)
        try:
            seen = pool.apply(_write_and_read, (shared, "from a worker"))
        finally:
            pool.terminate()
        assert seen == ["from a worker"]
        assert sorted(shared.keys()) == ["from a worker"]


# -- register, AutoProxy, exposed, method_to_typeid --------------------------------------


def test_registered_types_get_autoproxies_with_their_exposed_methods():
    with ThingManager(ctx=FORK) as manager:
        thing = manager.Thing(1)
        assert thing.add(2) == 3
        assert not hasattr(thing, "_private")
        with pytest.raises(RemoteError, match="not in exposed"):
            thing._callmethod("_private")
        limited = manager.LimitedThing()
        assert limited._private() == "private"
        assert not hasattr(limited, "fail")
        iterating = manager.IterThing()
        numbers = iterating.numbers()
        assert isinstance(numbers, BaseProxy) and list(numbers) == [0, 1, 2]


def test_the_registry_of_a_subclass_does_not_leak_into_its_base():
    assert "Thing" in ThingManager._registry
    assert "Thing" not in BaseManager._registry and "Thing" not in SyncManager._registry


# -- start, shutdown, context manager ----------------------------------------------------


def test_start_runs_the_initializer_in_the_manager_process(ctx, manager):
    namespace = manager.Namespace()
    other = SyncManager(ctx=ctx)
    with pytest.raises(TypeError):
        other.start(1)
    other.start(_initializer, (namespace, "done"))
    try:
        assert namespace.initialized == "done"
    finally:
        other.shutdown()


def test_shutdown_ends_the_process_and_later_calls_say_so():
    manager = SyncManager(ctx=FORK)
    with manager:
        shared = manager.list()
        assert repr(manager).startswith("<SyncManager started")
    assert manager._process.exitcode == 0
    with pytest.raises(ManagerLostError, match="shut down"):
        shared.append(1)
    manager.shutdown()  # idempotent
    with pytest.raises(proctor.ProcessError):
        manager.start()


# -- connecting: another process, TCP, authkey --------------------------------------------


def test_connecting_where_no_manager_listens_is_refused_clearly():
    import socket

    with socket.socket() as probe:  # a free port, with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
    manager = BaseManager(address=address, authkey=b"key")
    with pytest.raises(ConnectionRefusedError, match="no manager is listening") as refused:
        manager.connect()
    assert isinstance(refused.value, ManagerLostError)  # (as documented for connect())
    assert refused.value.errno is not None


def test_connect_from_another_process_and_over_tcp_with_an_authkey(start_method):
    ctx = proctor.get_context(start_method)
    authkey = b"remote secret"
    with ThingManager(address=("127.0.0.1", 0), authkey=authkey, ctx=ctx) as manager:
        p = ctx.Process(target=_use_store, args=(manager.address, authkey, "child", 1))
        p.start()
        assert finish(p, TIMEOUT) == (0, ["child"])
        client = StoreClient(address=manager.address, authkey=authkey)
        client.connect()
        store = client.get_store()
        store.update(parent=2)
        assert sorted(store.keys()) == ["child", "parent"]
        assert store._session.local.conn._wfd < 0  # TCP: calls stay on the socket
        del store
        client.shutdown()


def test_the_xmlrpclib_serializer_carries_xml_rpc_types_and_refuses_others():
    with ThingManager(serializer="xmlrpclib", ctx=FORK) as manager:
        store = manager.get_store()
        store.update({"xml": (1, "two", None, [3.5])})
        assert store.get("xml") == [1, "two", None, [3.5]]  # tuples arrive as lists
        with pytest.raises(TypeError, match="marshal"):
            store.update({"bad": object()})  # not an XML-RPC type: fails to send
        assert store.get("xml") == [1, "two", None, [3.5]]  # and the connection goes on
        store.clear()


def test_importing_managers_leaves_xmlrpc_unloaded():
    # xmlrpc.client brings http.client and the email package (40-150 ms here), which
    # every spawn child of a program using managers would import: only the
    # xmlrpclib serializer loads it.
    import subprocess
    import sys

    code = "import sys, proctor.managers; print('xmlrpc.client' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr


def test_calls_go_on_a_socket_per_thread_and_carry_every_size(manager):
    # Each calling thread's calls go on the socket it connected with (a Unix
    # socket's reader wakes the sleeping sender early: docs/managers.md, "Cause");
    # small, mid-size and large values all travel on it, in both directions.
    shared = manager.dict()
    values = {"small": b"s" * 10, "mid": b"m" * 20_000, "large": b"l" * 2_000_000}
    for key, value in values.items():
        shared[key] = value
        assert shared[key] == value
    conn = shared._session.local.conn
    assert isinstance(conn, proctor.connection.Connection) and conn._sock is not None
    assert conn is not shared._session._anchor
    seen: list[object] = []
    worker = threading.Thread(target=lambda: seen.append(shared["mid"]))
    worker.start()
    worker.join(TIMEOUT)
    assert seen == [values["mid"]]


def test_a_manager_process_may_hold_as_many_descriptors_as_the_hard_limit_allows():
    # Each calling thread of each client holds a socket in the manager: its soft
    # limit is raised to the hard one.
    import resource

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    if before[1] == resource.RLIM_INFINITY or before[1] <= 512:
        pytest.skip("needs a finite hard limit on descriptors above 512")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, before[1]))  # the manager inherits it
    try:
        with ThingManager(ctx=FORK) as manager:
            soft, hard = manager.descriptor_limits()._getvalue()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)
    assert soft == hard == before[1]


def test_a_wrong_authkey_is_refused_and_the_manager_keeps_serving():
    with ThingManager(address=("127.0.0.1", 0), authkey=b"right", ctx=FORK) as manager:
        intruder = StoreClient(address=manager.address, authkey=b"wrong")
        with pytest.raises(proctor.AuthenticationError):
            intruder.connect()
        thing = manager.Thing()
        assert thing.add(1) == 1


def test_a_silent_client_does_not_hold_up_the_others():
    # Each handshake runs in its client's own thread: one that never answers
    # (a port scanner, a stuck peer) blocks nobody.
    import socket

    with ThingManager(address=("127.0.0.1", 0), authkey=b"key", ctx=FORK) as manager:
        silent = socket.create_connection(manager.address, timeout=TIMEOUT)
        try:
            client = StoreClient(address=manager.address, authkey=b"key")
            client.connect()
            store = client.get_store()
            store.update(ok=1)
            assert store.get("ok") == 1
            del store
            client.shutdown()
        finally:
            silent.close()


def test_get_server_serve_forever_in_a_child(tmp_path):
    authkey = b"served"
    address = str(tmp_path / "manager.sock")
    ready = FORK.Event()
    p = FORK.Process(target=_serve, args=(address, authkey, ready))
    p.start()
    try:
        assert ready.wait(TIMEOUT)
        client = ThingManager(address=address, authkey=authkey)
        wait_until(lambda: os.path.exists(address), timeout=TIMEOUT)
        client.connect()
        thing = client.Thing(5)
        assert thing.add(1) == 6
        del thing
        client._session().call(None, "shutdown")
        client.shutdown()
        p.join(TIMEOUT)
        assert p.exitcode == 0
    finally:
        p.kill()
        p.join(TIMEOUT)
        p.close()


def _churn_sessions(address, authkey, rounds):
    client = ThingManager(address=address, authkey=authkey)
    for n in range(rounds):
        client.connect()
        thing = client.Thing(n)
        assert thing.add(1) == n + 1
        del thing  # the session's last proxy: it closes, and the next round opens another


def test_the_server_forgets_a_gone_client_once_its_last_connection_ends(tmp_path):
    # Each session is a client id the server remembers as gone when its anchor ends (a
    # reply still on its way counts no reference for it); it used to remember every one
    # for good (500 entries after 500 sessions).
    authkey = b"churn"
    address = str(tmp_path / "manager.sock")
    server = ThingManager(address=address, authkey=authkey).get_server()
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        # spawn: a forked child would find this process's server and call it directly
        child = proctor.get_context("spawn").Process(
            target=_churn_sessions, args=(address, authkey, 20)
        )
        child.start()
        child.join(TIMEOUT)
        assert child.exitcode == 0
        wait_until(lambda: not server._open_connections, timeout=TIMEOUT)
        assert server._gone_clients == set()
        assert server.number_of_objects() == 0
    finally:
        server.stop_event.set()
        serving.join(TIMEOUT)


# -- values that cannot travel; exceptions in managed methods -------------------------------


def test_unpicklable_values_fail_clearly_and_the_manager_keeps_serving():
    with ThingManager(ctx=FORK) as manager:
        thing = manager.Thing()
        with pytest.raises(TypeError, match="pickle"):
            thing.add(threading.Lock())
        with pytest.raises(RemoteError, match="could not send the result back"):
            thing.make_lock()
        assert thing.add(1) == 1


def test_an_exception_in_a_managed_method_arrives_with_the_managers_traceback(manager):
    shared = manager.list()
    with pytest.raises(IndexError) as info:
        shared[3]
    assert isinstance(info.value.__cause__, proctor.RemoteTraceback)
    assert "IndexError" in info.value.__cause__.tb
    with ThingManager(ctx=FORK) as things:
        with pytest.raises(KeyError, match="no such key") as info:
            things.Thing().fail("no such key")
        assert "in fail" in info.value.__cause__.tb
    with pytest.raises(RemoteError) as failed:
        manager.Pool(0)  # the constructor's error: a RemoteError, as in the stdlib
    assert failed.value.type_name == "ValueError"


# -- faults: the manager killed; a client killed mid-call ------------------------------------


def test_every_call_fails_clearly_when_the_manager_is_killed(ctx):
    manager = SyncManager(ctx=ctx)
    manager.start()
    try:
        shared = manager.list()
        queue = manager.Queue()
        ready, killed = ctx.Event(), ctx.Event()
        child = ctx.Process(target=_call_after_kill, args=(shared, ready, killed, TIMEOUT))
        child.start()
        assert ready.wait(TIMEOUT)
        blocked: list[BaseException] = []

        def get_forever():
            try:
                queue.get()
            except BaseException as exc:
                blocked.append(exc)

        waiter = threading.Thread(target=get_forever)
        waiter.start()
        pid = manager._process.pid
        os.kill(pid, signal.SIGKILL)
        killed.set()
        waiter.join(TIMEOUT)
        assert not waiter.is_alive()
        assert isinstance(blocked[0], ManagerLostError)
        with pytest.raises(ManagerLostError) as info:
            shared.append(1)
        message = str(info.value)
        assert f"pid {pid}" in message and "SIGKILL" in message
        with pytest.raises(EOFError):  # the stdlib's error is still caught
            shared.append(1)
        child.join(TIMEOUT)
        assert child.exitcode == 0, child.exception
        result = child.result
        child.close()
        assert result.startswith("ManagerLostError") and f"pid {pid}" in result
    finally:
        manager.shutdown()


def test_a_manager_killed_while_its_pool_has_workers_still_fails_calls_at_once(ctx):
    # A managed Pool's workers are the manager's children: were they to keep the
    # manager's sockets open, its clients would wait for those workers to go. They
    # die with it (proctor's children never outlive a killed parent).
    manager = SyncManager(ctx=ctx)
    manager.start()
    try:
        pool = manager.Pool(2)
        assert pool.apply(abs, (-3,)) == 3
        shared = manager.dict()
        os.kill(manager._process.pid, signal.SIGKILL)
        with pytest.raises(ManagerLostError, match="SIGKILL"):
            shared["x"] = 1
        with pytest.raises(ManagerLostError):
            pool.apply(abs, (-3,))
    finally:
        manager.shutdown()


def test_a_client_killed_mid_call_leaves_the_manager_serving_and_its_objects_released():
    authkey = b"clients"
    with ThingManager(authkey=authkey, ctx=FORK) as manager:
        watcher = manager.Thing()
        before = manager._number_of_objects()
        created = FORK.Event()
        client = FORK.Process(target=_create_and_block, args=(manager.address, authkey, created))
        client.start()
        try:
            assert created.wait(TIMEOUT)
            wait_until(lambda: manager._number_of_objects() == before + 4, timeout=TIMEOUT)
            gate_entered = manager.Thing()
            assert gate_entered.add(0) == 0
            # The client's gate.wait_here() runs in the manager, and blocks.
            wait_until(lambda: _gate_entered(manager), timeout=TIMEOUT)
            os.kill(client.pid, signal.SIGKILL)
            client.join(TIMEOUT)
            assert client.exitcode == -signal.SIGKILL
            wait_until(lambda: manager._number_of_objects() == before + 1, timeout=TIMEOUT)
            assert watcher.add(1) == 1  # still serving
        finally:
            client.kill()
            client.join(TIMEOUT)
            client.close()
        del gate_entered
        assert manager._number_of_objects() == before


# -- SharedMemoryManager ----------------------------------------------------------------------


def test_shared_memory_manager_unlinks_its_segments_at_shutdown():
    before = shm_entries()
    smm = SharedMemoryManager(ctx=FORK)
    with pytest.raises(ValueError, match="not started"):
        smm.SharedMemory(16)
    with smm:
        segment = smm.SharedMemory(64)
        shared_list = smm.ShareableList([1, "two", 3.0])
        assert len(segment.buf) >= 64 and shared_list[1] == "two"
        names = {segment.name, shared_list.shm.name}
        segment.close()
        shared_list.shm.close()
    for name in names:
        with pytest.raises(FileNotFoundError):
            proctor.shared_memory.SharedMemory(name=name)
    assert shm_entries() <= before | set()


def test_shared_memory_manager_unlinks_before_a_shutdown_that_does_not_wait_for_exit():
    # shutdown_timeout=0: the server is terminated as soon as it has answered the
    # shutdown. Its segments must be gone by then, not left to its exit.
    before = shm_entries()
    with SharedMemoryManager(ctx=FORK, shutdown_timeout=0.0) as smm:
        names = []
        for _ in range(20):
            segment = smm.SharedMemory(4096)
            names.append(segment.name)
            segment.close()
    smm.join(timeout=30)  # terminated (or killed) after a join of 0 s: reap it
    assert smm._process.exitcode is not None
    for name in names:
        with pytest.raises(FileNotFoundError):
            proctor.shared_memory.SharedMemory(name=name)
    assert shm_entries() <= before


def test_proctor_manager_returns_a_started_syncmanager():
    manager = proctor.Manager()
    try:
        assert isinstance(manager, SyncManager) and manager._process.is_alive()
        assert manager.dict(a=1)["a"] == 1
    finally:
        manager.shutdown()
    context_manager = FORK.Manager()
    with context_manager:
        assert context_manager._process.start_method == "fork"


def test_a_connection_broken_during_its_handshake_means_the_manager_is_lost(monkeypatch):
    # A thread's first call opens its connection; a manager killed during that
    # handshake broke the pipe under the client's send (BrokenPipeError escaped).
    from proctor._managers import _session

    with SyncManager(ctx=FORK) as manager:
        shared = manager.list()
        os.kill(manager._process.pid, signal.SIGKILL)

        def broken_client(*args, **kwargs):
            raise BrokenPipeError(32, "cannot send: the other end of the connection is closed")

        monkeypatch.setattr(_session, "Client", broken_client)
        caller, failed = call_in_thread(lambda: shared.append(1))
        caller.join(TIMEOUT)
        assert not caller.is_alive()
        assert isinstance(failed[0], ManagerLostError), failed


def test_a_threads_connection_that_fails_to_open_fails_that_call_only(monkeypatch):
    # A manager out of descriptors (or too slow) gives up on a new connection's
    # handshake: only the call that opened it fails; the session -- and every
    # object the manager holds for this process -- stays.
    from proctor._managers import _session

    with SyncManager(ctx=FORK) as manager:
        shared = manager.dict(data="precious")
        before = manager._number_of_objects()

        def reset_client(*args, **kwargs):
            raise ConnectionResetError(104, "the manager gave up on this handshake")

        with monkeypatch.context() as patched:
            patched.setattr(_session, "Client", reset_client)
            caller, failed = call_in_thread(lambda: shared.get("data"))
            caller.join(TIMEOUT)
        assert not caller.is_alive()
        assert isinstance(failed[0], ConnectionError), failed
        assert not isinstance(failed[0], ManagerLostError), failed
        assert "session stands" in str(failed[0])
        caller, got = call_in_thread(lambda: shared.get("data"))
        caller.join(TIMEOUT)
        assert got == ["precious"]
        assert manager._number_of_objects() == before


def _task_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_a_threads_connection_is_closed_when_the_thread_ends(manager):
    # Each calling thread opens a connection (and the manager a serving thread
    # for it); short-lived threads used to leave both behind until the process
    # dropped all its proxies, until the manager ran out of descriptors.
    shared = manager.dict(data="precious")
    assert shared.get("data") == "precious"  # this thread's connection: kept
    pid = manager._process.pid
    fds, tasks = open_fds(), _task_count(pid)
    for _ in range(30):
        caller, got = call_in_thread(lambda: shared.get("data"))
        caller.join(TIMEOUT)
        assert got == ["precious"]
    wait_until(lambda: open_fds() <= fds, timeout=TIMEOUT)
    wait_until(lambda: _task_count(pid) <= tasks, timeout=TIMEOUT)
    assert shared.get("data") == "precious"


class _FullListener:
    """A listener whose connections wait but cannot be accepted: out of descriptors."""

    closed = False

    def __init__(self, readable_fd: int, stop: threading.Event) -> None:
        self._fd = readable_fd
        self._stop = stop
        self.accepts = 0

    def fileno(self) -> int:
        return self._fd

    def accept_then_handshake(self):
        import errno

        self.accepts += 1
        if self.accepts == 100:  # (a loop that never waits stops here)
            self._stop.set()
        raise OSError(errno.EMFILE, "Too many open files")


class _CountingEvent:
    def __init__(self, stop: threading.Event, after: int) -> None:
        self.waits: list[float] = []
        self._stop, self._after = stop, after

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        if len(self.waits) == self._after:
            self._stop.set()
        return False

    def clear(self) -> None:
        pass


def test_the_accept_loop_waits_when_the_manager_is_out_of_descriptors():
    # accept() failing with EMFILE leaves the connection queued and the listener
    # readable: the loop used to retry at once, spinning a core.
    import socket

    from proctor._managers import _server

    server = _server.Server({}, None, b"key", "pickle")
    real_listener = server.listener
    ours, theirs = socket.socketpair()
    try:
        theirs.send(b"x")  # readable, as a listener with a queued connection is
        server.listener = _FullListener(ours.fileno(), server.stop_event)
        backoff = server._connection_ended = _CountingEvent(server.stop_event, after=3)
        server._accept_loop()  # returns once the third wait stopped it
        assert backoff.waits == [_server.ACCEPT_BACKOFF] * 3
        assert server.listener.accepts == 3
    finally:
        ours.close()
        theirs.close()
        real_listener.close()


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum, frame):
    raise _Interrupted()


def test_a_call_interrupted_before_its_reply_leaves_the_next_calls_in_step():
    # A signal handler that raises while a call waits for its reply (Ctrl-C is
    # the same) used to leave the thread's connection one reply behind: the next
    # call returned the interrupted call's result, or hung.
    with ThingManager(ctx=FORK) as manager:
        thing = manager.Thing()
        before = manager._number_of_objects()
        main = threading.get_ident()

        def interrupt_once_entered():
            wait_until(lambda: thing.count_entered() == 1, timeout=TIMEOUT)
            signal.pthread_kill(main, signal.SIGUSR1)

        previous = signal.signal(signal.SIGUSR1, _raise_interrupted)
        try:
            interrupter, _ = call_in_thread(interrupt_once_entered)
            with pytest.raises(_Interrupted):
                thing.wait_here()  # blocks in the manager until the gate opens
        finally:
            signal.signal(signal.SIGUSR1, previous)
        interrupter.join(TIMEOUT)
        opener, _ = call_in_thread(thing.open_gate)  # the interrupted call returns now
        opener.join(TIMEOUT)
        assert thing.add(1) == 1  # its own reply, not wait_here()'s "released"
        assert thing.add(1) == 2
        assert manager._number_of_objects() == before  # the session kept its objects


@pytest.mark.parametrize(
    "name", ["GeneratorExit", "KeyboardInterrupt", "SystemExit", "CancelledError"]
)
def test_a_base_exception_raised_in_a_managed_method_reaches_the_caller_only(name):
    # It used to end the serving thread: the client took the closed connection
    # for a lost manager and closed its session, and the manager dropped every
    # object of this process.
    import asyncio

    expected = {
        "GeneratorExit": GeneratorExit,
        "KeyboardInterrupt": KeyboardInterrupt,
        "SystemExit": SystemExit,
        "CancelledError": asyncio.CancelledError,
    }[name]
    with ThingManager(ctx=FORK) as manager:
        thing = manager.Thing()
        generator = manager.Generator()
        assert next(generator) == 1
        before = manager._number_of_objects()
        with pytest.raises(expected) as raised:
            if name == "GeneratorExit":
                generator.throw(GeneratorExit)
            else:
                thing.raise_base(name)
        assert isinstance(raised.value.__cause__, proctor.RemoteTraceback)
        assert thing.add(1) == 1  # the same connection, still served
        assert manager._number_of_objects() == before


def test_a_threads_connection_that_ends_while_the_manager_serves_fails_that_call_only(manager):
    import socket

    shared = manager.dict(data="precious")
    assert shared.get("data") == "precious"
    shared._session.local.conn._sock.shutdown(socket.SHUT_RDWR)  # as if the manager closed it
    with pytest.raises(EOFError, match="still serves") as info:
        shared.get("data")
    assert not isinstance(info.value, ManagerLostError)
    assert shared.get("data") == "precious"  # on a new connection, same session


def test_a_wrong_authkey_is_refused_even_where_this_process_already_has_a_session(manager):
    # Sessions were kept by address only: a manager (or proxy) given the wrong
    # key rode on the session the right key had opened.
    shared = manager.dict(secret=1)
    intruder = SyncManager(address=manager.address, authkey=b"wrong")
    with pytest.raises(proctor.AuthenticationError):
        intruder.connect()
        intruder.dict(x=1)
    assert shared["secret"] == 1
    friend = SyncManager(address=manager.address, authkey=manager._authkey)
    friend.connect()
    assert friend.dict(x=1)["x"] == 1


def test_a_call_blocked_during_shutdown_says_the_manager_was_shut_down():
    # The state said SHUTDOWN only after the process was joined (and closed): the
    # blocked call read "has ended: its process exited with 0", or failed with
    # an AttributeError from the closed process.
    manager = ThingManager(ctx=FORK)
    manager.start()
    try:
        thing = manager.Thing()
        caller, outcome = call_in_thread(thing.wait_here)
        wait_until(lambda: thing.count_entered() == 1, timeout=TIMEOUT)
    finally:
        manager.shutdown()
    caller.join(TIMEOUT)
    assert not caller.is_alive()
    assert isinstance(outcome[0], ManagerLostError), outcome
    assert "was shut down" in str(outcome[0])


def test_a_forked_child_letting_go_of_its_copies_leaves_the_parents_connections_working(manager):
    # The child closes its copies of this process's connections at the fork; a
    # close in this process shuts its socket down first (so that a call blocked
    # in another thread ends), which a copy's close must not do: the socket is
    # the parent's too.
    shared = manager.dict()
    shared["before"] = 1  # (this thread's connection is open)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    shared["after"] = 2
    assert dict(shared) == {"before": 1, "after": 2}


def test_a_call_blocked_in_a_thread_ends_when_another_thread_shuts_its_client_down():
    # A client's shutdown() closes its session's connections, this thread's and the
    # blocked one's: that call must end at once (it read nothing that a close of
    # its descriptor would end), not when its reply comes -- here, never.
    manager = ThingManager(ctx=FORK)
    manager.start()
    try:
        client = ThingManager(address=manager.address, authkey=manager._authkey)
        client.connect()
        theirs = client.Thing()
        caller, outcome = call_in_thread(theirs.wait_here)
        wait_until(lambda: theirs.count_entered() == 1, timeout=TIMEOUT)
        client.shutdown()
        caller.join(TIMEOUT / 2)  # (wait_here itself returns after TIMEOUT)
        assert not caller.is_alive()
        assert isinstance(outcome[0], ManagerLostError), outcome
        assert "shut down" in str(outcome[0])
    finally:
        manager.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"authkey": 123}, TypeError, "authkey must be bytes"),
        ({"authkey": "s"}, TypeError, "not str"),
        ({"address": 123}, TypeError, "(host, port) tuple"),
        ({"address": ("localhost",)}, ValueError, "(host, port) tuple"),
        ({"ctx": "fork"}, TypeError, "proctor context"),
        ({"shutdown_timeout": "x"}, TypeError, "shutdown_timeout"),
        ({"shutdown_timeout": -1}, ValueError, "shutdown_timeout"),
    ],
)
def test_bad_constructor_arguments_are_refused_up_front(kwargs, error, words):
    # They were taken as given and failed later, if at all: authkey=123 became
    # 123 zero bytes, a bad address failed only in the server process.
    with pytest.raises(error) as info:
        SyncManager(**kwargs)
    assert words in str(info.value)


# -- calls given up on in the client: nothing taken in the manager ---------------------------


def _blocked_in_recv(thread_id: int) -> bool:
    """Whether thread ``thread_id`` waits in a connection's ``recv()`` (its request sent)."""
    import sys

    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        if frame.f_code.co_name == "recv" and frame.f_back.f_code.co_name == "_callmethod":
            return True
        frame = frame.f_back
    return False


def _interrupt_when_blocked(call):
    """Run ``call()`` in this (the main) thread and interrupt it with a signal handler
    that raises, once the call waits for its reply; assert that it was interrupted."""
    main = threading.get_ident()

    def interrupt():
        wait_until(lambda: _blocked_in_recv(main), timeout=TIMEOUT)
        signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, _raise_interrupted)
    try:
        interrupter, _ = call_in_thread(interrupt)
        with pytest.raises(_Interrupted):
            call()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    interrupter.join(TIMEOUT)


@pytest.mark.parametrize("typeid", ["Queue", "JoinableQueue"])
def test_an_interrupted_queue_get_takes_no_item_that_is_put_later(manager, typeid):
    # The interrupted get() went on waiting in the manager and took the next item
    # put, whose reply nobody read: the item was lost (the stdlib loses it too).
    shared = getattr(manager, typeid)()
    _interrupt_when_blocked(shared.get)
    shared.put("first")
    shared.put("second")
    assert shared.get(timeout=5) == "first"
    assert shared.get(timeout=5) == "second"
    if typeid == "JoinableQueue":
        shared.task_done()
        shared.task_done()
        shared.join()  # (the given-up get counted no task)


class _InterruptedOnceTheReplyIsThere:
    """A connection whose next recv() raises as a signal handler would, once the
    reply has arrived (unread): the race where an item is taken just as the client
    gives up."""

    def __init__(self, conn):
        self._conn = conn
        self._armed = True

    def recv(self, *args, **kwargs):
        if self._armed:
            self._armed = False
            assert self._conn.poll(TIMEOUT)
            raise _Interrupted()
        return self._conn.recv(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_an_item_taken_just_as_the_get_is_interrupted_goes_back_to_the_front(manager):
    shared = manager.Queue()
    for item in ("a", "b", "c"):
        shared.put(item)
    session = shared._session
    real = session.local.conn
    session.local.conn = _InterruptedOnceTheReplyIsThere(real)
    try:
        with pytest.raises(_Interrupted):
            shared.get()  # "a" arrives, unread
    finally:
        session.local.conn = real
    assert [shared.get(timeout=5) for _ in range(3)] == ["a", "b", "c"]  # nothing lost


def test_an_interrupted_lock_acquire_leaves_the_lock_free_once_released(manager):
    # The interrupted acquire() went on waiting in the manager, took the lock once
    # it was released, and held it for ever.
    lock = manager.Lock()
    assert lock.acquire()
    _interrupt_when_blocked(lock.acquire)
    lock.release()
    holder, outcome = call_in_thread(lambda: lock.acquire(timeout=5))
    holder.join(TIMEOUT)
    assert outcome == [True]


def test_an_interrupted_semaphore_acquire_takes_no_count(manager):
    semaphore = manager.Semaphore(0)
    _interrupt_when_blocked(semaphore.acquire)
    semaphore.release()
    assert semaphore.acquire(timeout=5)
    assert not semaphore.acquire(timeout=0.1)


def test_an_interrupted_condition_wait_keeps_the_lock_with_its_caller(manager):
    # The interrupted wait() left the thread's connection, and the manager's thread
    # that owned the condition's RLock: the caller's release() then failed
    # ("cannot release un-acquired lock") and the lock stayed held.
    condition = manager.Condition()
    with pytest.raises(_Interrupted), condition:
        _interrupt_when_blocked(condition.wait)
        raise _Interrupted()  # (as the with-block's body would go on raising)
    other, outcome = call_in_thread(lambda: condition.acquire(timeout=5))
    other.join(TIMEOUT)
    assert outcome == [True]


def test_an_interrupted_event_wait_leaves_no_thread_waiting_in_the_manager(manager):
    # The interrupted wait() went on in a serving thread of the manager until the
    # event was set, beside the new connection's thread.
    event = manager.Event()
    assert event.is_set() is False  # this thread's connection: open
    pid = manager._process.pid
    tasks = _task_count(pid)
    _interrupt_when_blocked(event.wait)
    assert event.is_set() is False  # its own reply
    wait_until(lambda: _task_count(pid) <= tasks, timeout=TIMEOUT)
    event.set()
    assert event.wait(timeout=5) is True


@pytest.mark.parametrize("typeid", ["Queue", "JoinableQueue"])
def test_a_managed_queue_checks_its_timeout_before_sending_it(manager, typeid):
    # NaN made the manager's queue.Queue wait for ever (and the caller with it);
    # math.inf raised OverflowError in the manager. proctor.Queue refuses NaN and
    # waits for ever on inf; a negative timeout stays queue.Queue's ValueError.
    nan, inf = float("nan"), float("inf")
    shared = getattr(manager, typeid)(1)
    for call in (
        lambda: shared.get(timeout=nan),
        lambda: shared.put(1, timeout=nan),
        lambda: shared.get(False, nan),
    ):
        with pytest.raises(ValueError, match="not NaN") as info:
            call()
        assert info.value.__cause__ is None  # raised here, not in the manager
    with pytest.raises(ValueError, match="non-negative"):
        shared.get(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        shared.put(1, timeout=-1)
    with pytest.raises(stdlib_queue.Empty):
        shared.get(False, -1)  # (not blocking: queue.Queue ignores the timeout)
    with pytest.raises(TypeError, match="number of seconds"):
        shared.get(timeout="1")
    with pytest.raises(ValueError, match="not NaN"):
        proctor.Queue().get(timeout=nan)  # the same words
    putter, _ = call_in_thread(lambda: shared.put("late", timeout=inf))
    assert shared.get(timeout=inf) == "late"
    putter.join(TIMEOUT)
    shared.put("full")
    with pytest.raises(stdlib_queue.Full):
        shared.put("over", timeout=0.01)


def test_a_queue_registered_with_an_autoproxy_refuses_a_nan_timeout_in_the_manager():
    class QueueManager(BaseManager):
        pass

    QueueManager.register("Queue", stdlib_queue.Queue)
    QueueManager.register("Event", threading.Event)  # (AutoProxies: nothing checked here)
    with QueueManager(ctx=FORK) as manager:
        shared = manager.Queue()
        with pytest.raises(ValueError, match="not NaN"):
            shared.get(timeout=float("nan"))
        with pytest.raises(ValueError, match="not NaN"):
            manager.Event().wait(float("nan"))
        assert shared.qsize() == 0  # in step


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_tcp_manager_reached_under_another_spelling_hands_back_nested_proxies(host):
    # A manager bound to ('', port) calls itself ('0.0.0.0', port): a proxy spelled
    # (host, port) was not known as its own, so the manager reached it through a
    # socket to itself, and handing it back in a reply counted no reference for
    # the client: the object went before the client's incref (KeyError).
    with SyncManager(address=("", 0), ctx=FORK) as manager:
        client = SyncManager(address=(host, manager.address[1]))
        client.connect()
        shared = client.dict()
        inner = client.list([1])
        pid = manager._process.pid
        tasks = _task_count(pid)
        shared["inner"] = inner
        assert _task_count(pid) == tasks  # no session of the manager with itself
        del inner  # the dict holds the list's last reference
        taken = shared.pop("inner")
        assert taken[:] == [1]
        del taken, shared
        # (asked through the client's session, which sends its dropped references)
        wait_until(lambda: client._number_of_objects() == 0, timeout=TIMEOUT)
        client.shutdown()


def test_a_condition_waiter_gets_a_notify_made_while_its_wait_slice_ended():
    # The manager waits on a Condition in slices (to notice a client that gave up).
    # A slice used to be cond.wait(slice): one that timed out while the notifier held
    # the lock was notified as it waited to take the lock back, reported a timeout,
    # and the next slice waited for a notification already spent.
    import time

    from proctor._managers._cancellable import CANCEL_POLL

    with proctor.Manager() as manager:
        cond = manager.Condition()
        holding = threading.Event()
        results = []

        def waiter():
            with cond:
                holding.set()
                results.append(cond.wait(10))

        thread = threading.Thread(target=waiter)
        thread.start()
        assert holding.wait(30)
        with cond:  # taken once the waiter's wait has let the lock go
            time.sleep(4 * CANCEL_POLL)  # (a slice of the waiter's ends meanwhile)
            cond.notify_all()
        thread.join(30)
        assert not thread.is_alive()
        assert results == [True]
