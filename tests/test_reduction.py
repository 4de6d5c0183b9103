"""proctor.reduction: descriptors in messages, send_handle/recv_handle, sendfds/recvfds, register.

Every receive passes a timeout (``recv_handle`` has none of its own, so a
``poll(timeout)`` comes first) and every child is joined with one.
"""

from __future__ import annotations

import errno
import io
import multiprocessing.reduction as mp_reduction
import os
import pickle
import select
import signal
import socket
import tempfile

import pytest

import proctor
from helpers import finish
from proctor import reduction
from proctor._connections._frames import MAX_HANDLES
from proctor.connection import Client, Connection, Listener, Pipe
from proctor.reduction import DupFd, ForkingPickler, recv_handle, recvfds, send_handle, sendfds

CONTENT = b"the file's own bytes"


def _recv_handle(conn, timeout=30):
    """recv_handle() with a bound: it has no timeout of its own."""
    assert conn.poll(timeout), "no descriptor arrived"
    return recv_handle(conn)


def _readable(fd, timeout=30):
    ready, _, _ = select.select([fd], [], [], timeout)
    assert ready, f"descriptor {fd} did not become readable"


def _same_file(fd1, fd2):
    s1, s2 = os.fstat(fd1), os.fstat(fd2)
    return (s1.st_dev, s1.st_ino) == (s2.st_dev, s2.st_ino)


@pytest.fixture
def data_file():
    """An open temporary file holding CONTENT; yields its descriptor."""
    fd, path = tempfile.mkstemp(prefix="proctor-test-")
    os.unlink(path)
    os.write(fd, CONTENT)
    yield fd
    os.close(fd)


# --- child targets ----------------------------------------------------------------


def read_handle_and_send_it_back(conn):
    fd = _recv_handle(conn)
    try:
        data = os.pread(fd, 100, 0)
        send_handle(conn, fd, os.getppid())
    finally:
        os.close(fd)  # the parent received its own duplicate
    conn.close()
    return data


def use_what_arrived(conn):
    assert conn.poll(30)
    end, sock, dupfd = conn.recv(timeout=30)
    with end, sock:
        end.send("through the Connection")
        sock.sendall(b"through the socket")
        fd = dupfd.detach()
        try:
            os.write(fd, b"through the DupFd")
        finally:
            os.close(fd)
    conn.close()
    return type(end).__name__, type(sock).__name__, type(dupfd).__name__


def hold_descriptors_until_killed(conn):
    end, dupfd = conn.recv(timeout=30)
    conn.send("holding")
    conn.recv(timeout=60)  # never comes: the parent kills this process
    return end, dupfd  # keeps both alive until then


def receive_nothing_until_killed(conn):
    conn.send("ready")
    # The parent's message with descriptors waits unread in this end's socket.
    os.kill(os.getpid(), signal.SIGSTOP)


# --- send_handle / recv_handle ----------------------------------------------------


def test_send_handle_reaches_a_child_and_comes_back_as_a_duplicate(ctx, data_file):
    a, b = Pipe()
    p = ctx.Process(target=read_handle_and_send_it_back, args=(b,))
    p.start()
    b.close()
    try:
        send_handle(a, data_file, p.pid)
        fd = _recv_handle(a)
        try:
            # The descriptor that came back is a new one for the same open file.
            assert fd != data_file
            assert _same_file(fd, data_file)
            assert os.pread(fd, 100, 0) == CONTENT
        finally:
            os.close(fd)
    finally:
        result = finish(p)
        a.close()
    assert result == (0, CONTENT)
    assert os.pread(data_file, 100, 0) == CONTENT  # the sender kept its own


def test_recv_handle_of_a_message_without_a_descriptor_raises_and_consumes_it(data_file):
    a, b = Pipe()
    with a, b:
        a.send("not a descriptor")
        send_handle(a, data_file)
        with pytest.raises(RuntimeError, match=r"received a str.*send_handle"):
            _recv_handle(b)
        fd = _recv_handle(b)  # the bad message is gone; the next one is intact
        try:
            assert os.pread(fd, 100, 0) == CONTENT
        finally:
            os.close(fd)


def test_send_handle_refuses_what_is_not_an_open_descriptor():
    a, b = Pipe()
    with a, b:
        with pytest.raises(TypeError, match="file descriptor"):
            send_handle(a, "3")
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        with pytest.raises(OSError, match="not open"):
            send_handle(a, r)
        assert not b.poll(0)  # nothing was sent
        assert reduction.HAVE_SEND_HANDLE is True


# --- objects that own descriptors, in messages ----------------------------------


def test_a_connection_a_socket_and_a_dupfd_reach_a_child_that_uses_them(ctx):
    a, b = Pipe()
    p = ctx.Process(target=use_what_arrived, args=(b,))
    p.start()
    b.close()
    # Made after the start, so that a forked child has them only from the message.
    near, far = Pipe()
    here, there = socket.socketpair()
    r, w = os.pipe()
    try:
        dupfd = DupFd(w)
        os.close(w)  # the DupFd holds its own duplicate
        a.send((far, there, dupfd))
        far.close()
        there.close()
        os.close(dupfd.detach())
        assert near.recv(timeout=30) == "through the Connection"
        here.settimeout(30)
        assert here.recv(100) == b"through the socket"
        _readable(r)
        assert os.read(r, 100) == b"through the DupFd"
        result = finish(p)
        assert result == (0, ("Connection", "socket", "DupFd"))
        # The child's copies are gone with it: every far side reads EOF.
        with pytest.raises(EOFError):
            near.recv(timeout=30)
        assert here.recv(100) == b""
        _readable(r)
        assert os.read(r, 100) == b""
    finally:
        a.close()
        near.close()
        here.close()
        os.close(r)


def test_a_received_dupfd_is_the_receivers_own_duplicate(data_file):
    a, b = Pipe()
    with a, b:
        sent = DupFd(data_file)
        a.send(sent)
        got = b.recv(timeout=10)
        fd = got.detach()
        try:
            assert fd != sent._fd and _same_file(fd, data_file)
            assert os.pread(fd, 100, 0) == CONTENT
        finally:
            os.close(fd)
        with pytest.raises(ValueError, match="detached already"):
            got.detach()
        os.close(sent.detach())
        with pytest.raises(ValueError, match="detached"):
            a.send(sent)
        assert not b.poll(0)
        with pytest.raises(TypeError):
            DupFd("0")


def test_as_many_descriptors_as_one_message_carries_arrive():
    pipes = [os.pipe() for _ in range(MAX_HANDLES // 2)]
    fds = [fd for pair in pipes for fd in pair]
    assert len(fds) == MAX_HANDLES - MAX_HANDLES % 2
    a, b = Pipe()
    try:
        a.send([DupFd._borrowing(fd) for fd in fds])
        got = [d.detach() for d in b.recv(timeout=30)]
        try:
            assert all(_same_file(x, y) for x, y in zip(got, fds, strict=True))
            os.write(got[1], b"x")  # the received write end of the first pipe
            assert os.read(pipes[0][0], 1) == b"x"
        finally:
            for fd in got:
                os.close(fd)
    finally:
        a.close()
        b.close()
        for fd in fds:
            os.close(fd)


def _pipe_ends():
    """160 Pipe() ends: they own some 500 descriptors."""
    ends = [end for _ in range(80) for end in Pipe()]
    return ends, ends, lambda: [end.close() for end in ends]


def _os_pipe_ends():
    """300 os.pipe() ends, each lent to the message by a DupFd."""
    fds = [fd for _ in range(150) for fd in os.pipe()]
    return [DupFd._borrowing(fd) for fd in fds], fds, lambda: [os.close(fd) for fd in fds]


@pytest.mark.parametrize("make", [_pipe_ends, _os_pipe_ends], ids=["Pipe-ends", "os.pipe-ends"])
def test_more_descriptors_than_one_message_carries_fail_before_anything_is_sent(make):
    # Linux lets one message carry 253 descriptors (SCM_MAX_FD); proctor keeps
    # one for a body memfd. Collecting stops at the limit, so a huge object is
    # refused without first duplicating every descriptor it owns.
    obj, owners, close = make()
    a, b = Pipe()
    try:
        with pytest.raises(ValueError, match=f"more than {MAX_HANDLES} file descriptors") as info:
            a.send(obj)
        assert "nothing was sent" in str(info.value)
        assert not b.poll(0)
        a.send("still usable")
        assert b.recv(timeout=10) == "still usable"
    finally:
        a.close()
        b.close()
        close()
    assert len(owners) >= 160


def test_a_connection_over_tcp_is_refused_and_the_connection_stays_usable():
    # A keyless Client returns once connected, so one thread may also accept.
    with (
        Listener(family="AF_INET") as listener,
        Client(listener.address, timeout=30) as client,
        listener.accept(timeout=30) as server,
    ):
        near, far = Pipe()
        with near, far, socket.socket() as sock:
            with pytest.raises(pickle.PicklingError, match="TCP connection") as info:
                client.send(far)
            assert isinstance(info.value, TypeError)
            with pytest.raises(pickle.PicklingError, match="the socket in it"):
                client.send({"sock": sock})
        assert not server.poll(0)  # nothing was sent
        client.send("still usable")
        assert server.recv(timeout=30) == "still usable"


def test_a_connection_over_an_af_unix_listener_travels(data_file):
    with (
        Listener(family="AF_UNIX") as listener,
        Client(listener.address, timeout=30) as client,
        listener.accept(timeout=30) as server,
    ):
        send_handle(client, data_file)
        fd = _recv_handle(server)
        try:
            assert os.pread(fd, 100, 0) == CONTENT
        finally:
            os.close(fd)


def test_a_descriptor_cannot_cross_a_connection_over_os_pipe(data_file):
    r, w = os.pipe()
    with Connection(r, writable=False) as reader, Connection(w, readable=False) as writer:
        with pytest.raises(pickle.PicklingError, match="not a Unix socket"):
            send_handle(writer, data_file)
        writer.send("after")
        assert reader.recv(timeout=10) == "after"


@pytest.mark.parametrize("what", ["Connection", "socket", "DupFd"])
def test_a_descriptor_owner_goes_through_a_queue_but_not_into_a_plain_pickle(what, data_file):
    near, far = Pipe()
    sock = socket.socket(socket.AF_UNIX)
    dupfd = DupFd(data_file)
    owner = {"Connection": far, "socket": sock, "DupFd": dupfd}[what]
    q = proctor.Queue()
    got = None
    try:
        q.put(owner, timeout=10)
        got = q.get(timeout=10)
        assert type(got) is type(owner)
        if what == "Connection":
            near.send("through the queue's copy")
            assert got.recv(timeout=10) == "through the queue's copy"
        carriers = r"Pipe\(\) end, an AF_UNIX Listener/Client connection\), a proctor Queue"
        with pytest.raises(
            RuntimeError, match=f"^{what} holds an open file descriptor.*{carriers}"
        ):
            ForkingPickler.dumps(owner)  # plain pickle: the stdlib refuses a socket itself
    finally:
        q.close()
        q.join_thread()
        near.close()
        far.close()
        sock.close()
        os.close(dupfd.detach())
        if what == "DupFd":
            os.close(got.detach())
        elif got is not None:
            got.close()


def _received_through(path, fd):
    """A descriptor for ``fd``'s file, as ``path`` delivers one (the caller closes it)."""
    if path == "recvfds":
        left, right = socket.socketpair()
        with left, right:
            right.settimeout(30)
            sendfds(left, [fd])
            return recvfds(right, 1)[0]
    if path == "Queue.get":
        q = proctor.Queue()
        try:
            q.put(DupFd(fd), timeout=10)
            return q.get(timeout=10).detach()
        finally:
            q.close()
            q.join_thread()
    if path == "Listener":
        with (
            Listener(family="AF_UNIX") as listener,
            Client(listener.address, timeout=30) as client,
            listener.accept(timeout=30) as server,
        ):
            send_handle(client, fd)
            return _recv_handle(server)
    a, b = Pipe()
    with a, b:
        if path == "recv_handle":
            send_handle(a, fd)
            return _recv_handle(b)
        a.send(("a message that begins", DupFd(fd)))
        return b.recv(timeout=10)[1].detach()


@pytest.mark.parametrize(
    "path", ["recv_handle", "Connection.recv", "Listener", "Queue.get", "recvfds"]
)
def test_every_received_descriptor_is_close_on_exec(path, data_file):
    # As every descriptor Python makes is (PEP 446). Received ones were inheritable:
    # a program the receiver ran with close_fds=False held them (a fork-server
    # child, its channel to the parent). The stdlib's are inheritable.
    os.set_inheritable(data_file, True)
    fd = _received_through(path, data_file)
    try:
        assert _same_file(fd, data_file)
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)


# --- sendfds / recvfds: the stdlib's wire format ------------------------------------


@pytest.mark.parametrize(
    ("send", "recv"),
    [(sendfds, mp_reduction.recvfds), (mp_reduction.sendfds, recvfds)],
    ids=["proctor-to-stdlib", "stdlib-to-proctor"],
)
def test_sendfds_and_recvfds_interoperate_with_the_stdlib(send, recv, data_file):
    left, right = socket.socketpair()
    r, w = os.pipe()
    with left, right:
        right.settimeout(30)
        send(left, [data_file, w])
        got = recv(right, 2)
        try:
            assert len(got) == 2
            assert _same_file(got[0], data_file) and _same_file(got[1], w)
            assert os.pread(got[0], 100, 0) == CONTENT
        finally:
            for fd in got:
                os.close(fd)
            os.close(r)
            os.close(w)


def test_recvfds_of_another_count_raises_and_closes_what_came(data_file):
    left, right = socket.socketpair()
    with left, right:
        right.settimeout(30)
        sendfds(left, [data_file, data_file])
        with pytest.raises(RuntimeError, match=r"expected 3 file descriptor.*received 2"):
            recvfds(right, 3)  # the two that came are closed (the leak check sees it)
        sendfds(left, [])
        with pytest.raises(RuntimeError, match=r"expected 1 file descriptor.*received 0"):
            recvfds(right, 1)


def test_recvfds_from_a_closed_peer_raises_eof():
    left, right = socket.socketpair()
    with right:
        left.close()
        right.settimeout(30)
        with pytest.raises(EOFError):
            recvfds(right, 1)


# --- register, ForkingPickler, dump ---------------------------------------------------


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def reduce_point(point):
    return rebuild_point, (point.x, point.y)


def rebuild_point(x, y):
    rebuilt = Point(x, y)
    rebuilt.via = "reducer"
    return rebuilt


@pytest.fixture
def point_reducer():
    from proctor._core import _reduction

    reduction.register(Point, reduce_point)
    yield
    # register() is process-wide; leave no reducer behind for other tests.
    _reduction.registered_reducers.pop(Point, None)
    _reduction.reducers.pop(Point, None)


def test_a_registered_reducer_is_used_by_connection_send_and_queue_put(point_reducer):
    a, b = Pipe()
    with a, b:
        a.send(Point(1, 2))
        got = b.recv(timeout=10)
        assert (got.x, got.y, got.via) == (1, 2, "reducer")
    q = proctor.Queue()
    try:
        q.put([Point(3, 4)], timeout=10)
        (got,) = q.get(timeout=10)
        assert (got.x, got.y, got.via) == (3, 4, "reducer")
    finally:
        q.close()
        q.join_thread()


def test_forking_pickler_round_trips_with_registered_reducers(point_reducer):
    data = ForkingPickler.dumps({"p": Point(5, 6)})
    assert isinstance(data, memoryview)
    got = ForkingPickler.loads(data)["p"]
    assert (got.x, got.y, got.via) == (5, 6, "reducer")
    buffer = io.BytesIO()
    reduction.dump(Point(7, 8), buffer)
    got = pickle.loads(buffer.getvalue())
    assert (got.x, got.y, got.via) == (7, 8, "reducer")
    # Plain pickle does not know the reducer.
    assert not hasattr(pickle.loads(pickle.dumps(Point(0, 0))), "via")


def test_register_rejects_what_is_not_a_class_or_a_callable():
    with pytest.raises(TypeError, match="takes a class"):
        reduction.register(Point(0, 0), reduce_point)
    with pytest.raises(TypeError, match="callable"):
        reduction.register(Point, "reduce_point")


# --- a child killed while descriptors are on their way or in its hands -------------


def test_a_child_killed_while_holding_received_descriptors_never_hangs_the_parent(ctx):
    a, b = Pipe()
    p = ctx.Process(target=hold_descriptors_until_killed, args=(b,))
    p.start()
    b.close()
    near, far = Pipe()
    r, w = os.pipe()
    try:
        a.send((far, DupFd._borrowing(w)))
        far.close()
        os.close(w)
        assert a.recv(timeout=30) == "holding"
        os.kill(p.pid, signal.SIGKILL)
        # Each wait notices the death: the child held the only other copies.
        with pytest.raises(EOFError):
            near.recv(timeout=30)
        with pytest.raises(EOFError):
            a.recv(timeout=30)
        _readable(r)
        assert os.read(r, 1) == b""
        assert finish(p) == (-signal.SIGKILL, None)
    finally:
        a.close()
        near.close()
        os.close(r)


def test_descriptors_in_flight_to_a_killed_child_are_released(ctx):
    a, b = Pipe()
    p = ctx.Process(target=receive_nothing_until_killed, args=(b,))
    p.start()
    b.close()
    near, far = Pipe()
    r, w = os.pipe()
    try:
        assert a.recv(timeout=30) == "ready"
        a.send((far, DupFd._borrowing(w)))  # sits unread in the child's socket
        far.close()
        os.close(w)
        os.kill(p.pid, signal.SIGKILL)
        assert finish(p) == (-signal.SIGKILL, None)
        # The kernel dropped the undelivered message and its descriptors with
        # the child's socket: the parent's ends read EOF instead of waiting.
        with pytest.raises(EOFError):
            near.recv(timeout=30)
        _readable(r)
        assert os.read(r, 1) == b""
    finally:
        a.close()
        near.close()
        os.close(r)


def test_close_all_closes_every_descriptor_then_raises_the_first_error():
    from proctor._core._closing import close_all, close_all_quietly

    first, second = os.pipe()
    third, fourth = os.pipe()
    os.close(second)  # closed already: close_all fails on it and goes on
    with pytest.raises(OSError) as caught:
        close_all([first, second, third, second])
    assert caught.value.errno == errno.EBADF
    for fd in (first, third):
        with pytest.raises(OSError):
            os.fstat(fd)
    close_all_quietly([fourth, fourth])  # the second close fails, quietly
    with pytest.raises(OSError):
        os.fstat(fourth)
