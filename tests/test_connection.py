"""Pipe, Connection, wait, Listener and Client: round trips, dead peers, bad input, auth."""

from __future__ import annotations

import array
import mmap
import os
import pickle
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import tracemalloc

import pytest

import proctor
from helpers import call_in_thread, finish, have_datagrams, wait_until
from proctor import AuthenticationError, BufferTooShort, ProcessTimeoutError
from proctor._connections import _connection, _frames, _pipe, _receiving, _sending, _sendlock
from proctor._core._wire import MAX_FDS
from proctor.connection import Client, Connection, Listener, Pipe, ProtocolError, wait

TRIPLE = (1, "two", 3.0)
TAG_BITS = _frames.TAG_BITS


def frame_header(length: int, tag_bits: int = TAG_BITS) -> bytes:
    return struct.pack("!Q", tag_bits | length)


def raw_write(conn, data: bytes) -> None:
    """Write bytes where ``conn``'s frames go, bypassing its framing."""
    fd = conn._wfd if conn._wfd >= 0 else conn._sock.fileno()
    os.write(fd, data)


def socket_pair():
    """Two Connections over one socket pair: the transport Listener/Client use."""
    a, b = socket.socketpair()
    _connection.configure_socket(a)
    _connection.configure_socket(b)
    return Connection(a), Connection(b)


def stream_only_pipe(duplex=True):
    """A Pipe() as ends get it on macOS: frames on pipes, no datagram socket."""
    saved = _pipe.DATAGRAMS, _pipe.FRAME_SOCKETS
    _pipe.DATAGRAMS = _pipe.FRAME_SOCKETS = False
    try:
        return Pipe(duplex)
    finally:
        _pipe.DATAGRAMS, _pipe.FRAME_SOCKETS = saved


needs_datagrams = pytest.mark.skipif(
    not have_datagrams(), reason="AF_UNIX has no SOCK_SEQPACKET here (macOS)"
)


@pytest.fixture(params=["Pipe", "Pipe-stream-only", "Pipe-private", "socket"])
def pipe(request):
    """A connected pair: Pipe() (with or without its datagram socket), a pool worker's
    private pipe (frames unpadded, read ahead), or a socket pair."""
    makers = {
        "Pipe": Pipe,
        "Pipe-stream-only": stream_only_pipe,
        "Pipe-private": _pipe.streaming_pipe,
        "socket": socket_pair,
    }
    a, b = makers[request.param]()
    yield a, b
    a.close()
    b.close()


# --- child targets ----------------------------------------------------------------


def echo_n(conn, n):
    # Echo frames as bytes: a pickle sent with send() comes back for recv().
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes(timeout=30))
    conn.close()
    return "echoed"


def read_only_end(reader):
    got = reader.recv(timeout=30)
    return got, reader.readable, reader.writable


def recv_all_then_report(conn):
    out = []
    try:
        while True:
            out.append(conn.recv(timeout=30))
    except EOFError:
        pass
    return out


def send_partial_frame_then_die(conn):
    # A header announcing 1 MiB, three bytes of it, then death mid-message.
    raw_write(conn, frame_header(1 << 20) + b"abc")
    os.kill(os.getpid(), signal.SIGKILL)


def side_frame_header(length: int, frame_id: int, tag_bits: int) -> bytes:
    """What goes on the pipe for a frame whose body is on the side socket (padded)."""
    return _frames.PIPE_TOKEN.pack(tag_bits + length, frame_id)


def send_partial_socket_body_then_die(conn):
    # A big frame: header on the pipe, then only part of the body on the socket.
    raw_write(conn, side_frame_header(1 << 20, 7, _frames.TAG_SOCKET_BITS))
    conn._sock.sendall(_frames.SIDE.pack(7, 0, 0) + b"x" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)


def block_until_told(conn):
    conn.recv(timeout=30)


def send_with_sigpipe_default():
    # An embedder or a child may restore SIGPIPE's default (death); a send to a
    # closed peer must still be an exception, not the end of the process.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    a, b = Pipe()
    b.close()
    try:
        a.send("into the void")
    except BrokenPipeError as exc:
        return type(exc).__name__
    finally:
        a.close()
    return "no error"


def connect_and_send(address, authkey, obj):
    with Client(address, authkey=authkey, timeout=30) as conn:
        conn.send(obj)
        return conn.recv(timeout=30)


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [None, 0, -(2**70), "héllo", b"", b"\x00" * 100_000, TRIPLE, {"a": [1, 2, {3}]}, 1.5],
    ids=repr,
)
def test_objects_round_trip(pipe, obj):
    a, b = pipe
    a.send(obj)
    assert b.recv(timeout=10) == obj
    b.send(obj)  # and the other way: a duplex pipe
    assert a.recv(timeout=10) == obj


def test_many_small_messages_arrive_in_order_through_the_read_ahead(pipe):
    a, b = pipe
    # 100 fit in a socket's default buffer, whose accounting charges ~1 KiB a message.
    for i in range(100):
        a.send(i)
    a.send_bytes(b"tail")
    assert [b.recv(timeout=10) for _ in range(100)] == list(range(100))
    assert b.recv_bytes(timeout=10) == b"tail"


@pytest.mark.parametrize("size", [5000, 16 * 1024, 64 * 1024, 64 * 1024 + 1, 3 * 1024 * 1024])
def test_big_messages_cross_in_both_apis(pipe, size):
    a, b = pipe
    big = os.urandom(size)
    sender = threading.Thread(target=lambda: (a.send_bytes(big), a.send(big), a.send(1)))
    sender.start()
    try:
        assert b.recv_bytes(timeout=30) == big
        assert b.recv(timeout=30) == big
        assert b.recv(timeout=30) == 1
    finally:
        sender.join(30)
    assert not sender.is_alive()


def test_bodies_past_the_preallocation_limit_are_received_in_chunks(pipe, monkeypatch):
    monkeypatch.setattr(_receiving, "PREALLOCATE_LIMIT", 1000)
    monkeypatch.setattr(_receiving, "GROW_CHUNK", 333)
    monkeypatch.setattr(_sending, "ATOMIC_BODY", 100)
    a, b = pipe
    payload = os.urandom(100_000)
    a.send_bytes(payload)
    a.send(payload)
    a.send_bytes(payload)
    assert b.recv_bytes(timeout=10) == payload
    assert b.recv(timeout=10) == payload
    buf = bytearray(100_010)
    assert b.recv_bytes_into(buf, 10, timeout=10) == len(payload)
    assert buf[10:] == payload


def test_send_bytes_offset_size_and_buffer_kinds(pipe):
    a, b = pipe
    a.send_bytes(b"0123456789", 2, 5)
    assert b.recv_bytes(timeout=10) == b"23456"
    a.send_bytes(b"0123456789", 7)
    assert b.recv_bytes(timeout=10) == b"789"
    a.send_bytes(bytearray(b"xy"))
    assert b.recv_bytes(timeout=10) == b"xy"
    ints = array.array("i", [1, 2, 3])
    a.send_bytes(ints)  # offsets and sizes are in bytes, whatever the item size
    assert b.recv_bytes(timeout=10) == ints.tobytes()
    a.send_bytes(b"")
    assert b.recv_bytes(timeout=10) == b""


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("text",), TypeError, "bytes-like"),
        ((b"abc", -1), ValueError, "offset must be >= 0"),
        ((b"abc", 4), ValueError, "past the end"),
        ((b"abc", 1, 3), ValueError, "runs past the end"),
        ((b"abc", 0, -1), ValueError, "size must be >= 0"),
        ((b"abc", 1.0), TypeError, "offset must be an int"),
        ((b"abc", 0, "2"), TypeError, "size must be an int"),
    ],
)
def test_send_bytes_rejects_bad_arguments_before_writing(pipe, args, error, match):
    a, b = pipe
    with pytest.raises(error, match=match):
        a.send_bytes(*args)
    assert not b.poll()


def test_recv_bytes_into_writes_at_offset_and_reports_short_buffers(pipe):
    a, b = pipe
    buf = bytearray(8)
    a.send_bytes(b"abc")
    assert b.recv_bytes_into(buf, 5, timeout=10) == 3
    assert buf == b"\x00" * 5 + b"abc"
    a.send_bytes(b"too long for it")
    with pytest.raises(BufferTooShort) as info:
        b.recv_bytes_into(buf, 2, timeout=10)
    assert info.value.args[0] == b"too long for it"  # the message is not lost
    mid = os.urandom(20_000)  # a mid-size message, whole or too long
    a.send_bytes(mid)
    big = bytearray(20_010)
    assert b.recv_bytes_into(big, 10, timeout=10) == 20_000
    assert big[10:] == mid
    a.send_bytes(mid)
    with pytest.raises(BufferTooShort) as info:
        b.recv_bytes_into(buf, 0, timeout=10)
    assert info.value.args[0] == mid
    a.send("still usable")
    assert b.recv(timeout=10) == "still usable"


@pytest.mark.parametrize(
    ("buf", "offset", "error"),
    [
        (b"read-only", 0, TypeError),
        (bytearray(4), -1, ValueError),
        (bytearray(4), 5, ValueError),
        (bytearray(4), "0", TypeError),
        (42, 0, TypeError),
    ],
)
def test_recv_bytes_into_rejects_bad_arguments(pipe, buf, offset, error):
    _a, b = pipe
    with pytest.raises(error):
        b.recv_bytes_into(buf, offset)


def test_lambdas_and_closures_travel_through_a_pipe(pipe):
    a, b = pipe
    k = 5
    a.send(lambda x: x + k)
    assert b.recv(timeout=10)(1) == 6


# --- poll, timeouts, wait ----------------------------------------------------------------


def test_poll_honours_its_timeout_and_sees_data(pipe):
    a, b = pipe
    assert b.poll() is False
    assert b.poll(0.05) is False
    a.send(1)
    assert b.poll(None) is True
    assert b.recv(timeout=10) == 1
    assert b.poll(0) is False


def test_recv_timeout_raises_when_nothing_arrives(pipe):
    a, b = pipe
    with pytest.raises(ProcessTimeoutError, match="no message arrived"):
        b.recv(timeout=0.05)
    with pytest.raises(TimeoutError):
        b.recv_bytes(timeout=0)
    a.send("late")
    assert b.recv(timeout=10) == "late"


@pytest.mark.parametrize("timeout", ["1", [1], 1j])
def test_bad_timeouts_are_type_errors(pipe, timeout):
    _a, b = pipe
    with pytest.raises(TypeError, match="timeout"):
        b.poll(timeout)
    with pytest.raises(TypeError, match="timeout"):
        wait([b], timeout)


def test_wait_returns_the_ready_objects_in_order(ctx):
    a1, b1 = Pipe()
    a2, b2 = Pipe()
    s1, s2 = socket.socketpair()
    ctl_parent, ctl_child = Pipe()
    p = ctx.Process(target=block_until_told, args=(ctl_child,))
    p.start()
    ctl_child.close()
    try:
        objects = [b1, b2, s2, p.sentinel]
        assert wait(objects, timeout=0.05) == []
        a2.send("x")
        s1.send(b"y")
        assert wait(objects, timeout=10) == [b2, s2]
        ctl_parent.send("exit")
        assert p.sentinel in wait([b1, p.sentinel], timeout=30)
    finally:
        finish(p)
        for c in (a1, b1, a2, b2, s1, s2, ctl_parent):
            c.close()


def test_wait_sees_messages_already_read_ahead(pipe):
    a, b = pipe
    a.send(1)
    a.send(2)
    assert b.recv(timeout=10) == 1  # the read-ahead took message 2 off the socket too
    assert wait([b], timeout=0) == [b]
    assert b.poll() is True
    assert b.recv(timeout=10) == 2


def test_wait_never_finds_the_sending_end_of_a_one_way_pipe_ready():
    r, w = Pipe(duplex=False)
    try:
        assert wait([w], timeout=0.2) == []
        w.send("x")
        assert wait([w, r], timeout=10) == [r]  # (as the stdlib's, which waits to receive)
    finally:
        r.close()
        w.close()


def test_wait_beside_a_thread_registers_no_wake_up_for_what_is_ready(monkeypatch):
    # (The wake-up, which another thread's close() writes to, is for a wait that
    # sleeps: one whose objects are ready, or with nothing to wait for, needs none.)
    from proctor._core import _wakeup

    def no_wake_up():
        raise AssertionError("a wake-up was registered for a wait that needs none")

    monkeypatch.setattr(_wakeup, "_wakeup", no_wake_up)
    monkeypatch.setattr(_wakeup, "other_threads", lambda: 1)
    a, b = Pipe()
    r, w = os.pipe()
    try:
        a.send("come")
        assert wait([r, b], timeout=10) == [b]
        assert wait([r, b], timeout=0) == [b]
        assert b.recv() == "come"
        assert wait([r, b], timeout=0) == []
    finally:
        for end in (a, b):
            end.close()
        os.close(r)
        os.close(w)


def test_wait_rejects_objects_it_cannot_wait_on():
    with pytest.raises(TypeError, match="wait\\(\\) takes"):
        wait([object()], timeout=0)


# --- dead and closed peers --------------------------------------------------------------


def test_recv_after_peer_close_gives_eof_after_the_queued_messages(pipe):
    a, b = pipe
    a.send(1)
    a.send(2)
    a.close()
    assert b.recv(timeout=10) == 1
    assert b.recv(timeout=10) == 2
    with pytest.raises(EOFError):
        b.recv(timeout=10)
    with pytest.raises(EOFError):
        b.recv_bytes(timeout=10)


@pytest.mark.parametrize(
    "dies_while", [send_partial_frame_then_die, send_partial_socket_body_then_die]
)
def test_peer_killed_mid_message_gives_eof_not_a_hang(ctx, dies_while):
    a, b = Pipe()
    a.send("the child never reads this")  # leaves data unread in the dying end
    p = ctx.Process(target=dies_while, args=(b,))
    p.start()
    b.close()
    try:
        with pytest.raises(EOFError, match="mid-message"):
            a.recv()  # no timeout on purpose: death itself must end the wait
    finally:
        exitcode, _ = finish(p)
        a.close()
    assert exitcode == -signal.SIGKILL


@pytest.mark.parametrize("size", [20_000, 1_000_000])
@pytest.mark.parametrize("timeout", [None, 10])
def test_send_to_closed_peer_raises_broken_pipe(pipe, size, timeout):
    a, b = pipe
    b.close()
    with pytest.raises(BrokenPipeError, match="other end of the connection is closed"):
        a.send("x")
    with pytest.raises(BrokenPipeError):
        a.send_bytes(b"x" * size, timeout=timeout)


def test_send_to_dead_child_raises_broken_pipe(ctx):
    a, b = Pipe()
    p = ctx.Process(target=block_until_told, args=(b,))
    p.start()
    b.close()
    p.kill()
    finish(p)
    try:
        with pytest.raises(BrokenPipeError):
            a.send("anyone there?")
    finally:
        a.close()


def test_send_to_closed_peer_with_default_sigpipe_is_an_exception(ctx):
    p = ctx.Process(target=send_with_sigpipe_default)
    p.start()
    assert finish(p) == (0, "BrokenPipeError")


# --- bad input ------------------------------------------------------------------------


def test_unpicklable_object_fails_before_anything_is_written(pipe):
    a, b = pipe
    with pytest.raises(
        TypeError, match=r"cannot pickle list -> item 2 -> _thread\.lock.*Nothing was sent"
    ):
        a.send([1, 2, threading.Lock()])
    assert not b.poll(0.05)
    a.send("after")
    assert b.recv(timeout=10) == "after"


def test_a_connection_travels_through_another_connection(pipe):
    a, b = pipe
    near, far = Pipe()
    with near, far:
        a.send(far)  # its descriptors ride beside the message (SCM_RIGHTS)
        received = b.recv(timeout=10)
        far.close()  # the sender's copy; the received end owns its own
        with received:
            near.send("through the copy")
            assert received.recv(timeout=10) == "through the copy"
            received.send_bytes(b"back")
            assert near.recv_bytes(timeout=10) == b"back"


def test_a_connection_goes_through_a_queue_but_not_into_bytes(pipe):
    import pickle

    from proctor import Queue

    a, b = pipe
    with pytest.raises(RuntimeError, match="Unix socket"):
        pickle.dumps(a)
    q = Queue()
    try:
        q.put(a, timeout=10)
        with q.get(timeout=10) as copy:
            copy.send("from the copy")
            assert b.recv(timeout=10) == "from the copy"
    finally:
        q.close()
        q.join_thread()


def test_garbage_bytes_raise_a_protocol_error_not_a_hang(pipe):
    a, b = pipe
    raw_write(a, b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ProtocolError, match="bad tag"):
        b.recv(timeout=10)
    with pytest.raises(ProtocolError, match="can no longer receive"):
        b.recv(timeout=10)  # the stream is out of step: refused, not misread
    assert "broken" in repr(b)


def test_absurd_length_is_refused_without_allocating(pipe):
    a, b = pipe
    raw_write(a, frame_header((1 << 48) - 1) + b"xx")
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="memory"):
            b.recv_bytes(timeout=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert isinstance(ProtocolError("x"), OSError)  # stdlib callers catch OSError


def test_lying_header_never_allocates_what_it_claims(pipe, monkeypatch):
    monkeypatch.setattr(_receiving, "PREALLOCATE_LIMIT", 1 << 16)
    monkeypatch.setattr(_receiving, "GROW_CHUNK", 1 << 16)
    a, b = pipe
    raw_write(a, frame_header(512 << 20) + b"only this")
    a.close()
    tracemalloc.start()
    try:
        with pytest.raises(EOFError, match="after sending 9 of the"):
            b.recv(timeout=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


@pytest.mark.parametrize("size", [100, 20_000])
def test_message_longer_than_maxlength_is_refused(pipe, size):
    a, b = pipe
    a.send_bytes(b"x" * size)
    with pytest.raises(OSError, match=f"{size} bytes long, more than maxlength=10"):
        b.recv_bytes(maxlength=10, timeout=10)
    with pytest.raises(ValueError):
        b.recv_bytes(maxlength=-1)
    with pytest.raises(TypeError):
        b.recv_bytes(maxlength="10")


def test_valid_frame_with_garbage_pickle_raises_and_keeps_the_stream(pipe):
    a, b = pipe
    a.send_bytes(b"\x80\x05not a pickle")
    a.send("good")
    with pytest.raises(pickle.UnpicklingError):
        b.recv(timeout=10)
    assert b.recv(timeout=10) == "good"


class SendsPartThen:
    """Stands in for a connection's socket: sends part of a message, then ``then()``."""

    def __init__(self, sock, then):
        self._real = sock
        self._then = then

    def sendmsg(self, parts, ancillary=(), flags=0):
        self._real.sendmsg([bytes(parts[0]), bytes(memoryview(parts[1])[:1000])], ancillary, flags)
        self._then()

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_send_interrupted_mid_frame_refuses_further_sends():
    a, b = Pipe()

    def interrupt():
        raise KeyboardInterrupt

    real = a._sock
    a._sock = SendsPartThen(real, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            a.send(b"x" * 100_000)
    finally:
        a._sock = real
    with a, b:
        with pytest.raises(OSError, match="can no longer send"):
            a.send("next")  # would be misread as the rest of the first frame
        assert "send_broken" in repr(a)
        # The receiver reads what came of the message, then end-of-file (not a wait
        # for ever for its rest) while the sender's end stays open.
        thread, outcome = call_in_thread(lambda: b.recv_bytes(timeout=30))
        thread.join(30)
        assert not thread.is_alive()
        assert isinstance(outcome[0], EOFError), outcome
        b.send("the other direction still works")
        assert a.recv(timeout=30) == "the other direction still works"
        a._lock_send(0.0)  # (a deadline long past: one try) the lock was released
        a._unlock_send()


def test_operations_on_a_closed_connection_raise_oserror(pipe):
    a, _b = pipe
    a.close()
    a.close()  # idempotent
    assert a.closed
    assert repr(a) == "<proctor.Connection closed>"
    for op in (
        lambda: a.send(1),
        lambda: a.send_bytes(b"x"),
        a.recv,
        a.recv_bytes,
        lambda: a.recv_bytes_into(bytearray(1)),
        a.poll,
        a.fileno,
    ):
        with pytest.raises(OSError, match="closed"):
            op()
    with pytest.raises(OSError, match="closed"):
        wait([a], timeout=0)


_SOMEONE_ELSES = b"\0" * 64 + b"someone else's"


def _pipes_of_someone_else(pipes: list[tuple[int, int]]) -> None:
    """Open pipes into ``pipes`` (taking the numbers a closed end let go of), each
    holding bytes of its own that a reader of the closed end must not take."""
    pipes.extend(os.pipe() for _ in range(8))
    for _r, w in pipes:
        os.write(w, _SOMEONE_ELSES)


def _check_untouched_and_close(pipes: list[tuple[int, int]]) -> None:
    try:
        for r, _w in pipes:
            os.set_blocking(r, False)
            assert os.read(r, 1000) == _SOMEONE_ELSES
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_a_recv_waiting_while_another_thread_closes_the_end_reads_no_other_file():
    a, b = Pipe()
    thread, outcome = call_in_thread(lambda: a.recv(timeout=2))
    a.close()
    pipes: list[tuple[int, int]] = []
    try:
        _pipes_of_someone_else(pipes)
        thread.join(30)
        assert not thread.is_alive()
        assert isinstance(outcome[0], OSError) and "closed" in str(outcome[0]), outcome
    finally:
        _check_untouched_and_close(pipes)
        b.close()


def _waiting_in(thread: threading.Thread, function: str) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def test_a_send_waiting_while_another_thread_closes_the_end_says_it_was_closed():
    a, b = Pipe()
    try:
        with pytest.raises(ProcessTimeoutError):
            while True:  # small frames until the frame channel is full
                a.send_bytes(b"x" * 100, timeout=0)
        thread, outcome = call_in_thread(lambda: a.send_bytes(b"y" * 100, timeout=2))
        wait_until(lambda: _waiting_in(thread, "wait_writable"))
        a.close()
        thread.join(30)
        assert not thread.is_alive()
        # Not the raw EBADF of a write to the number the end let go of.
        assert isinstance(outcome[0], OSError) and "closed" in str(outcome[0]), outcome
    finally:
        a.close()
        b.close()


# --- a call blocked on an end or a listener that another thread closes ---------------


def _asleep_in(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` runs ``function`` and sleeps in the kernel (Linux; elsewhere:
    runs it)."""
    if not _waiting_in(thread, function):
        return False
    try:
        with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "S"
    except OSError:
        return True


def _client_pair(authkey=None):
    """A Client's end and the listener's end of one connection (the listener closed)."""
    with Listener(authkey=authkey) as listener:
        thread, accepted = call_in_thread(lambda: listener.accept(timeout=30))
        client = Client(listener.address, authkey=authkey, timeout=30)
        thread.join(30)
    assert isinstance(accepted[0], Connection), accepted
    return client, accepted[0]


_ENDS = {
    "Pipe": Pipe,
    "Pipe-stream-only": stream_only_pipe,  # frames on pipes, as on macOS
    "Client": _client_pair,  # keyless: its first receive takes the listener's greeting
    "Client-authkey": lambda: _client_pair(b"key"),
    "accepted": lambda: _client_pair()[::-1],
}

_BLOCKING_CALLS = {
    "recv": lambda end: end.recv(),
    "recv_bytes": lambda end: end.recv_bytes(),
    "recv_bytes_into": lambda end: end.recv_bytes_into(bytearray(64)),
    "poll": lambda end: end.poll(None),
    "wait": lambda end: wait([end]),
}


@pytest.mark.parametrize("call", list(_BLOCKING_CALLS))
@pytest.mark.parametrize("kind", list(_ENDS))
def test_a_call_blocked_on_an_end_that_another_thread_closes_raises_closed_at_once(kind, call):
    # Closing a descriptor does not wake a thread blocked on it (multiprocessing's
    # call blocks for ever); proctor's raises what the same call raises after close().
    a, b = _ENDS[kind]()
    thread, outcome = call_in_thread(lambda: _BLOCKING_CALLS[call](a))
    try:
        wait_until(lambda: _asleep_in(thread, call))
        a.close()
        thread.join(10)
        assert not thread.is_alive(), f"{call}() still blocks on the end closed by another thread"
        with pytest.raises(OSError, match="closed") as after:
            _BLOCKING_CALLS[call](a)
        assert type(outcome[0]) is OSError and str(outcome[0]) == str(after.value), outcome
    finally:
        a.close()
        b.close()  # (end-of-file ends a call that still blocks: no thread left behind)
        thread.join(30)


def test_a_recv_blocked_without_timeout_reads_no_file_that_took_the_closed_ends_number():
    a, b = Pipe()
    thread, outcome = call_in_thread(a.recv)
    pipes: list[tuple[int, int]] = []
    try:
        wait_until(lambda: _asleep_in(thread, "recv"))
        a.close()
        _pipes_of_someone_else(pipes)
        thread.join(10)
        assert not thread.is_alive()
        assert isinstance(outcome[0], OSError) and "closed" in str(outcome[0]), outcome
    finally:
        _check_untouched_and_close(pipes)
        b.close()
        thread.join(30)


def test_a_thread_whose_wait_a_close_ended_waits_and_receives_on_another_end():
    # The close wrote the thread's wake-up; its next wait is not ended by that write.
    a, b = Pipe()
    c, d = Pipe()

    def recv_after_the_close():
        with pytest.raises(OSError, match="closed"):
            a.recv()
        return c.recv(timeout=30)

    thread, outcome = call_in_thread(recv_after_the_close)
    try:
        wait_until(lambda: _asleep_in(thread, "recv"))
        a.close()
        wait_until(lambda: _waiting_in(thread, "recv") and _asleep_in(thread, "recv"))
        d.send("for c")
        thread.join(30)
        assert outcome == ["for c"]
    finally:
        for end in (a, b, c, d):
            end.close()
        thread.join(30)


_ACCEPTS = {
    "accept": lambda listener: listener.accept(),
    "accept-timeout": lambda listener: listener.accept(timeout=60),
    "wait": lambda listener: wait([listener]),
}


@pytest.mark.parametrize("call", list(_ACCEPTS))
def test_an_accept_blocked_on_a_listener_that_another_thread_closes_raises_closed_at_once(call):
    listener = Listener()
    thread, outcome = call_in_thread(lambda: _ACCEPTS[call](listener))
    try:
        wait_until(lambda: _asleep_in(thread, call.split("-")[0]))
        listener.close()
        thread.join(10)
        assert not thread.is_alive(), f"{call} still blocks on the closed listener"
        with pytest.raises(OSError, match="closed") as after:
            _ACCEPTS[call](listener)
        assert type(outcome[0]) is OSError and str(outcome[0]) == str(after.value), outcome
    finally:
        listener.close()
        thread.join(30)


def test_accepts_racing_for_one_client_leave_none_where_close_cannot_end_it():
    # Both are woken by the one client; the one that loses the race waits again where
    # close() ends the wait (the listening socket is non-blocking), not in accept().
    listener = Listener()
    calls = [call_in_thread(lambda: listener.accept(timeout=60)) for _ in range(2)]
    client = None
    try:
        wait_until(lambda: all(_asleep_in(thread, "accept") for thread, _ in calls))
        client = Client(listener.address)
        wait_until(lambda: any(outcome for _, outcome in calls))
        listener.close()
        for thread, _ in calls:
            thread.join(10)
            assert not thread.is_alive(), "an accept() still blocks on the closed listener"
        got = sorted((outcome[0] for _, outcome in calls), key=lambda o: type(o).__name__)
        assert isinstance(got[0], Connection) and isinstance(got[1], OSError), got
        assert "closed" in str(got[1])
        got[0].close()
    finally:
        listener.close()
        if client is not None:
            client.close()
        for thread, _ in calls:
            thread.join(30)


def test_context_manager_closes():
    a, b = Pipe()
    with a, b:
        assert not a.closed
    assert a.closed and b.closed


def test_connection_over_plain_descriptors():
    # Like multiprocessing's, a Connection takes any descriptor: os.pipe() ends
    # are read and written as a byte stream.
    r, w = os.pipe()
    with Connection(r, writable=False) as reader, Connection(w, readable=False) as writer:
        writer.send({"over": "os.pipe"})
        assert reader.recv(timeout=10) == {"over": "os.pipe"}
        writer.send_bytes(b"x" * 60_000, 10, 30_000)  # within the pipe's buffer
        assert reader.recv_bytes(timeout=10) == b"x" * 30_000
        writer.close()
        with pytest.raises(EOFError):
            reader.recv(timeout=10)
    # A descriptor that is not open fails at first use, with the OS's error.
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    dead = Connection(r)
    with pytest.raises(OSError):
        dead.send("lost")
    try:
        dead.poll(0)  # what the OS says of a closed descriptor; never a hang
    except OSError:
        pass
    dead.close()
    with pytest.raises(TypeError):
        Connection("3")
    with socket.socket() as sock, pytest.raises(ValueError):
        Connection(sock, readable=False, writable=False)
    with socket.socket(type=socket.SOCK_DGRAM) as sock, pytest.raises(ValueError, match="STREAM"):
        Connection(sock.fileno())


# --- duplex=False ---------------------------------------------------------------------


def test_simplex_pipe_carries_big_messages_one_way():
    reader, writer = Pipe(duplex=False)
    big = os.urandom(1 << 20)
    sender = threading.Thread(target=lambda: (writer.send_bytes(big), writer.send(big)))
    sender.start()
    try:
        assert reader.recv_bytes(timeout=30) == big
        assert reader.recv(timeout=30) == big
    finally:
        sender.join(30)
        reader.close()
        writer.close()


def test_simplex_pipe_has_a_reading_and_a_writing_end():
    reader, writer = Pipe(duplex=False)
    with reader, writer:
        assert (reader.readable, reader.writable) == (True, False)
        assert (writer.readable, writer.writable) == (False, True)
        assert "read-only" in repr(reader) and "write-only" in repr(writer)
        writer.send("one way")
        assert reader.recv(timeout=10) == "one way"
        with pytest.raises(OSError, match="read-only"):
            reader.send("back")
        with pytest.raises(OSError, match="write-only"):
            writer.recv()
        with pytest.raises(OSError, match="write-only"):
            writer.poll()


# --- ends passed to children ------------------------------------------------------------


def test_a_private_end_passed_to_a_child_keeps_its_framing(ctx):
    # A pool worker's channel (_pipe.streaming_pipe) reaches its worker under every
    # start method: the rebuilt end must still read ahead and send unpadded frames,
    # as the end left behind expects (padding would read as a bad header there).
    a, b = _pipe.streaming_pipe()
    assert a._private_frames and b._private_frames
    sizes = [0, 1, 60, 200, 4000, 40_000, 70_000, 300_000]
    p = ctx.Process(target=echo_n, args=(b, len(sizes)))
    for size in sizes:  # queued before the start: the child reads them ahead at once
        a.send_bytes(bytes([size % 251]) * size, timeout=30)
    p.start()
    b.close()
    try:
        for size in sizes:
            assert a.recv_bytes(timeout=30) == bytes([size % 251]) * size
        with pytest.raises(EOFError):
            a.recv(timeout=30)
    finally:
        a.close()
        result = finish(p)
    assert result == (0, "echoed")


def test_ends_passed_to_a_child_work_under_every_start_method(ctx):
    a, b = Pipe()
    reader, writer = Pipe(duplex=False)
    p = ctx.Process(target=echo_n, args=(b, 5))
    q = ctx.Process(target=read_only_end, args=(reader,))
    p.start()
    q.start()
    b.close()
    reader.close()
    try:
        a.send(TRIPLE)
        assert a.recv(timeout=30) == TRIPLE
        a.send(lambda x: x * 2)
        assert a.recv(timeout=30)(21) == 42
        a.send_bytes(b"raw")
        assert a.recv_bytes(timeout=30) == b"raw"
        # Big bodies take the side socket, small frames the pipe: order holds.
        big = os.urandom(200_000)
        a.send(big)
        a.send("small after big")
        assert a.recv(timeout=30) == big
        assert a.recv(timeout=30) == "small after big"
        writer.send("to the reader")
        with pytest.raises(EOFError):
            a.recv(timeout=30)  # the child closed its end and exited
    finally:
        p_result = finish(p)
        q_result = finish(q)
        a.close()
        writer.close()
    assert p_result == (0, "echoed")
    assert q_result == (0, ("to the reader", True, False))


def test_read_ahead_messages_travel_with_the_end(ctx):
    a, b = Pipe()
    for i in range(3):
        a.send(i)
    a.close()
    assert b.recv(timeout=10) == 0  # 1 and 2 now sit in b's read-ahead buffer
    p = ctx.Process(target=recv_all_then_report, args=(b,))
    p.start()
    b.close()
    assert finish(p) == (0, [1, 2])


def send_datagram_frames_out_of_order(conn, ids):
    """Mid-size frames whose datagrams are on the socket in the reverse order of their headers."""
    for frame_id in reversed(ids):
        conn._dsock.sendmsg([_frames.FRAME_ID.pack(frame_id), pickle.dumps(("body", frame_id))])
    for frame_id in ids:
        body = pickle.dumps(("body", frame_id))
        raw_write(conn, side_frame_header(len(body), frame_id, _frames.TAG_DGRAM_BITS))


@needs_datagrams
def test_datagrams_that_overtook_their_headers_are_matched_by_id(ctx):
    a, b = Pipe()
    send_datagram_frames_out_of_order(a, [11, 12, 13])
    a.send("last")
    a.close()
    assert b.recv(timeout=10) == ("body", 11)  # 13 and 12 came first: now in the stash
    assert sorted(b._stash) == [12, 13]
    # The stash travels with the end, as the read-ahead bytes do.
    p = ctx.Process(target=recv_all_then_report, args=(b,))
    p.start()
    b.close()
    assert finish(p) == (0, [("body", 12), ("body", 13), "last"])


# --- processes that take turns receiving on one end -----------------------------------------


def take_turns_receiving(conn, lock):
    """A worker of the stdlib's shared-reader pattern: take items until a None."""
    got = []
    while True:
        with lock:
            item = conn.recv(timeout=30)
        if item is None:
            return got
        got.append(item)


def test_workers_sharing_an_end_under_a_lock_each_get_their_own_items(ctx):
    # Each receive reads no further than its own message: a worker that took
    # its None and exited leaves the other workers' items and Nones in the pipe.
    reader, writer = Pipe(duplex=False)
    lock = ctx.Lock()
    workers = [ctx.Process(target=take_turns_receiving, args=(reader, lock)) for _ in range(3)]
    for w in workers:
        w.start()
    items = [("item", i, b"x" * (i % 300)) for i in range(300)]  # inline bodies of many sizes
    for item in items:
        writer.send(item, timeout=30)
    for _ in workers:
        writer.send(None, timeout=30)
    results = [finish(w) for w in workers]
    assert [code for code, _ in results] == [0, 0, 0]
    delivered = [item for _, got in results for item in got]
    assert sorted(delivered) == sorted(items)  # every item once: none lost, none twice


def recv_bytes_then_report(conn):
    return conn.recv_bytes(timeout=30)


@pytest.mark.parametrize("size", [0, 7, 119, 120, 121, 3000, 20_000])
def test_an_end_received_on_in_turn_by_parent_and_child_delivers_each_message_once(ctx, size):
    # The parent takes a message, a child takes the next, the parent the one
    # after: with read-ahead the child got a copy of what the parent had read,
    # and both returned the same message.
    a, b = Pipe()
    try:
        for i in range(3):
            a.send_bytes(bytes([i]) * size if size else b"", timeout=10)
            a.send(("tail", i), timeout=10)
        assert b.recv_bytes(timeout=10) == (b"\x00" * size if size else b"")
        assert b.recv(timeout=10) == ("tail", 0)
        p = ctx.Process(target=recv_bytes_then_report, args=(b,))
        p.start()
        assert finish(p) == (0, b"\x01" * size if size else b"")
        assert b.recv(timeout=10) == ("tail", 1)
        assert b.recv_bytes(timeout=10) == (b"\x02" * size if size else b"")
        assert b.recv(timeout=10) == ("tail", 2)
        assert not b.poll(0)
    finally:
        a.close()
        b.close()


def test_a_pipe_frame_is_read_exactly_whatever_its_size(pipe):
    # Padding, prefix and the rest of a body: a receive takes exactly one frame
    # of every size around the limits (PIPE_INLINE, ATOMIC_BODY on a pipe,
    # SOCKET_INLINE_BODY on a frame socket, datagrams),
    # and nothing of the next one.
    a, b = pipe
    limits = [_frames.PIPE_INLINE, _sending.ATOMIC_BODY, _sending.SOCKET_INLINE_BODY, 65536]
    sizes = sorted({0, 1, *(n + d for n in limits for d in (-1, 0, 1))})
    for n in sizes:
        a.send_bytes(b"y" * n, timeout=10)
    for n in sizes:
        assert b.recv_bytes(timeout=10) == b"y" * n
        if a._wfd >= 0 and not b._private_frames:
            assert b._rpos == b._rend  # nothing of the next frame was read
    assert not b.poll(0)


# --- Listener and Client -------------------------------------------------------------------

unpickled = []


def _mark_unpickled():
    unpickled.append(True)
    return "evil"


class Evil:
    """Unpickling this object records it: proof that a peer's object was loaded."""

    def __reduce__(self):
        return _mark_unpickled, ()


@pytest.fixture
def no_unpickling():
    unpickled.clear()
    yield
    assert not unpickled, "an object from an unauthenticated peer was unpickled"


def _serve_one(listener, results, reply="pong"):
    try:
        with listener.accept(timeout=30) as conn:
            results.append(conn.recv(timeout=30))
            conn.send(reply)
    except Exception as exc:
        results.append(exc)


@pytest.mark.parametrize("family", ["AF_UNIX", "AF_INET"])
def test_listener_and_client_talk_with_the_right_key(family):
    with Listener(family=family, authkey=b"secret") as listener:
        results = []
        server = threading.Thread(target=_serve_one, args=(listener, results))
        server.start()
        try:
            with Client(listener.address, authkey=b"secret", timeout=30) as conn:
                conn.send(TRIPLE)
                assert conn.recv(timeout=30) == "pong"
        finally:
            server.join(30)
        assert results == [TRIPLE]
        if family == "AF_INET":
            assert listener.address[0] == "127.0.0.1" and listener.address[1] > 0
            assert listener.last_accepted[0] == "127.0.0.1"


@pytest.mark.parametrize("family", ["AF_UNIX", "AF_INET"])
@pytest.mark.parametrize(
    ("server_key", "client_key", "server_says", "client_says"),
    [
        (b"right", b"wrong", "digest is wrong", "refused this Client's authkey"),
        (b"right", None, "without an authkey", "requires an authkey"),
    ],
)
def test_wrong_or_missing_key_is_refused_on_both_sides(
    family, server_key, client_key, server_says, client_says, no_unpickling
):
    with Listener(family=family, authkey=server_key) as listener:
        results = []
        server = threading.Thread(target=_serve_one, args=(listener, results, Evil()))
        server.start()
        try:
            with pytest.raises(AuthenticationError, match=client_says):
                conn = Client(listener.address, authkey=client_key, timeout=30)
                # A Client without a key returns once connected, as the stdlib's
                # does; its first receive checks the listener's greeting.
                assert client_key is None
                with conn:
                    conn.recv(timeout=30)
        finally:
            server.join(30)
        assert len(results) == 1 and isinstance(results[0], AuthenticationError)
        assert server_says in str(results[0])


@pytest.mark.parametrize("first", ["wait", "recv"])
def test_a_keyless_client_refused_by_its_listener_says_so_at_every_receive(first):
    # poll() took the refusal for "something to receive" and the recv() after it
    # raised ProtocolError ("out of step"): the AuthenticationError was lost.
    with Listener(authkey=b"right") as listener:
        results = []
        server = threading.Thread(target=_serve_one, args=(listener, results, "unsent"))
        server.start()
        try:
            with Client(listener.address, timeout=30) as conn:
                if first == "poll":
                    assert wait([conn], timeout=30) == [conn]  # (its recv() says why)
                for receive in (conn.poll, conn.recv, conn.poll, conn.recv_bytes):
                    with pytest.raises(AuthenticationError, match="requires an authkey"):
                        receive(timeout=30)
        finally:
            server.join(30)
        assert isinstance(results[0], AuthenticationError)


def test_client_with_a_key_refuses_an_open_listener(no_unpickling):
    with Listener() as listener:
        results = []
        server = threading.Thread(target=_serve_one, args=(listener, results, Evil()))
        server.start()
        try:
            with pytest.raises(AuthenticationError, match="does not authenticate"):
                Client(listener.address, authkey=b"key", timeout=30)
        finally:
            server.join(30)
        assert isinstance(results[0], EOFError)


def test_listener_never_unpickles_from_a_client_that_fails_the_challenge(no_unpickling):
    with Listener(authkey=b"right") as listener:
        results = []

        def accept():
            try:
                results.append(listener.accept(timeout=30))
            except Exception as exc:
                results.append(exc)

        server = threading.Thread(target=accept)
        server.start()
        # A rogue client: answers the challenge with junk and pipelines an object.
        with socket.socket(socket.AF_UNIX) as rogue:
            rogue.connect(listener.address)
            rogue_conn = Connection(rogue.detach())
            with rogue_conn:
                hello = rogue_conn.recv_bytes(256, timeout=30)
                assert hello.startswith(b"PROCTOR/1 AUTH ")
                rogue_conn.send_bytes(b"PROCTOR/1 PROOF " + bytes(64))
                try:
                    rogue_conn.send(Evil())
                except BrokenPipeError:
                    pass  # the listener already hung up: it cannot unpickle it either
                server.join(30)
                assert rogue_conn.recv_bytes(256, timeout=30) == b"PROCTOR/1 DENIED"
        assert isinstance(results[0], AuthenticationError)


def test_client_never_unpickles_from_a_listener_that_fails_the_challenge(no_unpickling):
    directory = tempfile.mkdtemp(prefix="proctor-test-")
    address = os.path.join(directory, "impostor")
    with socket.socket(socket.AF_UNIX) as server_sock:
        server_sock.bind(address)
        server_sock.listen(1)
        try:

            def impostor():
                sock, _ = server_sock.accept()
                with Connection(sock) as conn:
                    conn.send_bytes(b"PROCTOR/1 AUTH " + bytes(32))
                    conn.recv_bytes(256, timeout=30)
                    try:
                        conn.send_bytes(b"PROCTOR/1 WELCOME " + bytes(32))
                        conn.send(Evil())
                    except BrokenPipeError:
                        return  # the client already hung up
                    conn.poll(30)  # until the client hangs up

            server = threading.Thread(target=impostor)
            server.start()
            try:
                with pytest.raises(AuthenticationError, match="failed to prove"):
                    Client(address, authkey=b"key", timeout=30)
            finally:
                server.join(30)
        finally:
            shutil.rmtree(directory)


def test_listener_refuses_a_client_that_speaks_another_protocol(no_unpickling):
    with Listener(authkey=b"k") as listener:
        results = []

        def accept():
            try:
                results.append(listener.accept(timeout=30))
            except Exception as exc:
                results.append(exc)

        server = threading.Thread(target=accept)
        server.start()
        with socket.socket(socket.AF_UNIX) as stranger:
            stranger.connect(listener.address)
            stranger.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            server.join(30)
        assert isinstance(results[0], AuthenticationError)
        assert "not a proctor handshake message" in str(results[0])


def test_client_timeout_covers_a_silent_listener():
    directory = tempfile.mkdtemp(prefix="proctor-test-")
    address = os.path.join(directory, "silent")
    try:
        with socket.socket(socket.AF_UNIX) as silent:
            silent.bind(address)
            silent.listen(1)
            with pytest.raises(ProcessTimeoutError, match="handshake"):
                Client(address, authkey=b"key", timeout=0.2)
            silent.accept()[0].close()
            # Without a key there is no handshake to wait for: connected is done,
            # and the first receive is bounded by its own timeout.
            with Client(address, timeout=0.2) as conn, pytest.raises(ProcessTimeoutError):
                conn.recv(timeout=0.05)
            silent.accept()[0].close()
    finally:
        shutil.rmtree(directory)


def test_listener_accept_timeout_and_cleanup():
    listener = Listener()
    path = listener.address
    assert os.path.exists(path)
    with pytest.raises(ProcessTimeoutError, match="no client connected"):
        listener.accept(timeout=0.05)
    listener.close()
    listener.close()
    assert not os.path.exists(path)
    assert "closed" in repr(listener)
    with pytest.raises(OSError, match="closed"):
        listener.accept()
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        Client(path, timeout=5)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"authkey": "text"}, TypeError),
        ({"family": "AF_BOGUS"}, ValueError),
        ({"address": ("127.0.0.1", 0), "family": "AF_UNIX"}, ValueError),
        ({"address": 1234}, TypeError),
        ({"backlog": -1}, ValueError),
    ],
)
def test_listener_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        Listener(**kwargs)


def test_client_in_a_child_process_authenticates(ctx):
    with Listener(family="AF_INET", authkey=b"k") as listener:
        p = ctx.Process(target=connect_and_send, args=(listener.address, b"k", TRIPLE))
        p.start()
        try:
            with listener.accept(timeout=30) as conn:
                assert conn.recv(timeout=30) == TRIPLE
                conn.send("thanks")
        finally:
            result = finish(p)
    assert result == (0, "thanks")


# --- large messages ---------------------------------------------------------------------

BIG = (2 << 30) + 12345  # past 2 GiB: a 32-bit length would overflow
MARK_EVERY = 256 << 20


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def _marks() -> list[int]:
    """Offsets of the 8-byte marks in the big message: every 256 MiB, and the very end."""
    return [*range(0, BIG - 8, MARK_EVERY), (1 << 31) - 4, BIG - 8]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_message_past_2_gib_round_trips():
    # Memory: the source is anonymous memory left untouched but for its marks,
    # which reads as zeros and costs nothing; only the receiver's 2 GiB are real.
    # Nothing is written to disk.
    if _available_memory() < BIG + (512 << 20):
        pytest.skip("needs about 2.5 GiB of available memory")
    # Private: reading untouched private anonymous memory maps the zero page, where
    # shared anonymous memory (mmap's default) would allocate every page read.
    private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    source = mmap.mmap(-1, BIG, flags=private)
    for offset in _marks():  # each mark says where it is: a misplaced chunk shows
        source[offset : offset + 8] = offset.to_bytes(8, "little")
    a, b = Pipe()
    sender = threading.Thread(target=a.send_bytes, args=(source,))
    sender.start()
    try:
        target = mmap.mmap(-1, BIG, flags=private)
        try:
            assert b.recv_bytes_into(target, timeout=60) == BIG
            # Streamed check, 64 MiB at a time: zeros everywhere but the marks.
            marks = {offset: offset.to_bytes(8, "little") for offset in _marks()}
            chunk = 64 << 20
            zeros = bytes(chunk)
            for start in range(0, BIG, chunk):
                stop = min(start + chunk, BIG)
                expected = bytearray(zeros[: stop - start])
                for offset, mark in marks.items():
                    if start <= offset < stop:
                        expected[offset - start : offset - start + 8] = mark[: stop - offset]
                    elif offset < start < offset + 8:
                        expected[: offset + 8 - start] = mark[start - offset :]
                assert target[start:stop] == expected, f"bytes {start}-{stop} differ"
        finally:
            target.close()
    finally:
        sender.join(60)
        assert not sender.is_alive()
        a.close()
        b.close()
        source.close()


# --- large buffers travel as memfds over Pipe() ----------------------------------------


def send_array_back(conn, n):
    import numpy as np

    conn.send(("before", np.arange(n, dtype=np.float64), "after"))
    conn.send("done")
    conn.close()


def test_a_large_array_arrives_zero_copy_and_writable_under_every_start_method(ctx):
    np = pytest.importorskip("numpy")
    a, b = ctx.Pipe()
    p = ctx.Process(target=send_array_back, args=(b, 1 << 18))  # 2 MiB
    p.start()
    b.close()
    assert a.poll(60)
    before, array_, after = a.recv(timeout=60)
    assert (before, after) == ("before", "after")
    assert array_.dtype == np.float64 and array_.shape == (1 << 18,)
    assert np.array_equal(array_, np.arange(1 << 18, dtype=np.float64))
    assert not array_.flags.owndata  # a view of the mapped memfd: no copy out
    array_[0] = -1.0  # writable
    assert a.recv(timeout=60) == "done"  # order kept across the pipe and the side socket
    assert finish(p)[0] == 0
    a.close()


def test_buffers_large_and_small_keep_their_order_and_contents(pipe):
    np = pytest.importorskip("numpy")
    a, b = pipe
    small = np.arange(10, dtype=np.int32)
    large = [np.full(50_000, i, dtype=np.int16) for i in range(3)]  # 100 KB each
    fortran = np.asfortranarray(np.arange(120_000, dtype=np.float32).reshape(300, 400))
    a.send("first")
    a.send({"small": small, "large": large, "fortran": fortran, "raw": bytearray(70_000)})
    a.send("last")
    assert b.recv(timeout=30) == "first"
    got = b.recv(timeout=30)
    assert np.array_equal(got["small"], small)
    assert [int(x[0]) for x in got["large"]] == [0, 1, 2]
    assert got["fortran"].flags.f_contiguous and np.array_equal(got["fortran"], fortran)
    assert got["raw"] == bytearray(70_000)
    assert b.recv(timeout=30) == "last"


def test_recv_bytes_of_an_object_sent_with_memfds_is_its_pickle():
    np = pytest.importorskip("numpy")
    a, b = Pipe()
    big = np.arange(100_000)
    a.send(big)
    assert np.array_equal(pickle.loads(b.recv_bytes(timeout=30)), big)
    a.send(big)
    buf = bytearray(2_000_000)
    n = b.recv_bytes_into(buf, timeout=30)
    assert np.array_equal(pickle.loads(buf[:n]), big)
    a.send(big)
    with pytest.raises(BufferTooShort) as info:
        b.recv_bytes_into(bytearray(10), timeout=30)
    assert np.array_equal(pickle.loads(info.value.args[0]), big)
    a.close()
    b.close()


def test_more_buffers_than_one_message_can_carry_go_in_band():
    a, b = Pipe()
    many = [bytearray(bytes([i % 256])) * 70_000 for i in range(MAX_FDS + 5)]
    sender = threading.Thread(target=a.send, args=(many,))  # 18 MB: more than the buffers
    sender.start()
    got = b.recv(timeout=30)
    sender.join(30)
    assert not sender.is_alive()
    assert len(got) == len(many) and all(x == y for x, y in zip(got, many, strict=True))
    a.close()
    b.close()


def test_a_peer_gone_before_its_memfds_gives_eof():
    a, b = Pipe()
    # The header of a memfd frame, then nothing: the sender died after it.
    raw_write(a, side_frame_header(100, 1, _frames.TAG_MEMFD_BITS))
    a.close()
    with pytest.raises(EOFError, match="mid-message"):
        b.recv(timeout=30)
    b.close()


def test_a_memfd_count_that_does_not_match_is_a_protocol_error():
    a, b = Pipe()
    raw_write(a, side_frame_header(5, 1, _frames.TAG_MEMFD_BITS))
    # A side message that announces 3 memfds and brings none.
    a._sock.sendall(_frames.SIDE.pack(1, 3, 0) + b"12345" + _frames.TRAILER.pack(1))
    with pytest.raises(ProtocolError, match="announced 3 memfds"):
        b.recv(timeout=30)
    a.close()
    b.close()


# --- large buffers' memfds go back to the sender and are reused -----------------------------

SPARE_FLOATS = (1 << 20) // 8  # 1 MiB: the smallest buffer worth reusing (SPARE_MIN)


def test_a_dropped_arrays_memfd_is_reused_and_never_shows_the_old_bytes():
    np = pytest.importorskip("numpy")
    reader, writer = Pipe(duplex=False)  # spares go back against a one-way pipe too
    with reader, writer:
        writer.send(np.arange(SPARE_FLOATS, dtype=np.float64))
        first = reader.recv(timeout=30)
        assert np.array_equal(first, np.arange(SPARE_FLOATS, dtype=np.float64))
        (key,) = reader._spares._slots  # kept mapped
        del first  # its memfd goes back to the writer
        writer.send(np.full(SPARE_FLOATS, -2.0))
        second = reader.recv(timeout=30)
        assert list(writer._spares._written) == [key]  # the writer wrote the spare...
        assert list(reader._spares._slots) == [key]  # ...and the reader got it again
        # Every byte is the new message's: no value of the first array shows through.
        assert np.array_equal(second, np.full(SPARE_FLOATS, -2.0))
        second[0] = 7.0  # writable, as a fresh one


def test_an_array_still_alive_is_never_given_back_or_overwritten():
    np = pytest.importorskip("numpy")
    a, b = Pipe()
    with a, b:
        a.send(np.full(SPARE_FLOATS, 1.0))
        kept = b.recv(timeout=30)
        view = kept[10:20]  # a view of it keeps it too
        del kept
        a.send(np.full(SPARE_FLOATS, 2.0))
        second = b.recv(timeout=30)
        assert np.array_equal(view, np.full(10, 1.0))  # untouched by the second send
        assert np.array_equal(second, np.full(SPARE_FLOATS, 2.0))
        assert len(b._spares._slots) == 2 and not a._spares._written  # nothing came back
        # The other direction of a duplex pipe has its own spares.
        b.send(np.full(SPARE_FLOATS, 3.0))
        assert np.array_equal(a.recv(timeout=30), np.full(SPARE_FLOATS, 3.0))


def receive_drop_then_hold(conn, done) -> None:
    first = conn.recv(timeout=60)
    del first  # goes back to the sender
    done.send("dropped")
    held = conn.recv(timeout=60)  # held until the parent kills this process
    done.send(float(held[0]))
    done.recv(timeout=60)


def test_a_receiver_that_dies_holding_a_buffer_gives_nothing_back():
    np = pytest.importorskip("numpy")
    ctx = proctor.get_context("spawn")  # the spare socket travels with a passed end
    reader, writer = ctx.Pipe(duplex=False)
    here, there = ctx.Pipe()
    p = ctx.Process(target=receive_drop_then_hold, args=(reader, there))
    p.start()
    reader.close()
    there.close()
    try:
        writer.send(np.full(SPARE_FLOATS, 1.0))
        assert here.recv(timeout=60) == "dropped"
        writer.send(np.full(SPARE_FLOATS, 2.0))
        assert len(writer._spares._written) == 1  # the child's memfd came back, reused
        assert here.recv(timeout=60) == 2.0
        p.kill()
        p.join(60)
        # The held memfd died with the child: nothing to take, and sending now
        # says the reader is gone.
        assert writer._spares._take() is None
        with pytest.raises(BrokenPipeError):
            writer.send(np.full(SPARE_FLOATS, 3.0))
    finally:
        if p.is_alive():
            p.kill()
        p.join(60)
        writer.close()
        here.close()


# --- several senders on one end ------------------------------------------------------------

# Small (one pipe write), mid-size (a datagram, or the stream socket where there
# is none), and big (the stream socket, under the send lock).
SIZES = (40, 3000, 4090, 5000, 16_384, 40_000, 65_536, 65_537, 100_000, 300_000)


def _message(sender: int, seq: int) -> bytes:
    """Every 8 bytes say who sent the message and which one it is: a mix-up shows."""
    size = SIZES[(sender + seq) % len(SIZES)]
    return ((sender << 32) | seq).to_bytes(8, "little") * (size // 8 + 1)


def _check(sender: int, seq: int, data: bytes) -> None:
    assert data == _message(sender, seq), f"message {seq} of sender {sender} arrived mixed up"


def send_many(conn, sender: int, count: int, threads: int = 1) -> None:
    """Send ``count`` messages from each of ``threads`` threads: bytes, objects, arrays."""
    np = pytest.importorskip("numpy")

    def run(first: int) -> None:
        me = sender + first
        for seq in range(count):
            data = _message(me, seq)
            kind = seq % 3
            if kind == 0:
                conn.send_bytes(data)
            elif kind == 1:
                conn.send((me, seq, data))
            else:  # a large array travels as a memfd, the rest as a pickle
                conn.send((me, seq, np.frombuffer(data, dtype=np.uint8)))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(1, threads)]
    for worker in workers:
        worker.start()
    run(0)
    for worker in workers:
        worker.join(120)
        assert not worker.is_alive()


def _receive_all(conn, senders: list[int], count: int) -> None:
    next_seq = dict.fromkeys(senders, 0)
    for _ in range(len(senders) * count):
        if conn.poll(120):
            message = conn.recv_bytes()
        else:
            raise AssertionError(f"messages stopped coming: got {next_seq}")
        try:
            me, seq, data = pickle.loads(message)
        except Exception:  # a send_bytes message
            me, seq = divmod(int.from_bytes(message[:8], "little"), 1 << 32)
            data = message
        data = bytes(data)
        _check(me, seq, data)
        assert seq == next_seq[me], "one sender's messages arrived out of order"
        next_seq[me] += 1
    assert all(n == count for n in next_seq.values())


@pytest.mark.parametrize("datagrams", [True, False], ids=["datagrams", "stream-only"])
def test_processes_and_threads_sending_on_one_end_never_mix_messages(ctx, datagrams):
    pytest.importorskip("numpy")
    reader, writer = ctx.Pipe(duplex=False) if datagrams else stream_only_pipe(duplex=False)
    assert bool(writer._dgram_limit) == (datagrams and have_datagrams())
    count = 30
    children = [
        ctx.Process(target=send_many, args=(writer, 100 * i, count, 2)) for i in range(1, 4)
    ]
    for child in children:
        child.start()

    def send_then_close():
        send_many(writer, 0, count, 2)
        writer.close()

    sender = threading.Thread(target=send_then_close)
    sender.start()
    senders = [s + t for s in (0, 100, 200, 300) for t in (0, 1)]
    _receive_all(reader, senders, count)
    sender.join(60)
    for child in children:
        assert finish(child, 120)[0] == 0
    with pytest.raises(EOFError):
        reader.recv(timeout=30)
    reader.close()


def test_threads_sending_on_one_socket_connection_never_mix_messages():
    pytest.importorskip("numpy")
    a, b = socket_pair()
    count = 30
    sender = threading.Thread(target=send_many, args=(a, 0, count, 4))
    sender.start()
    _receive_all(b, [0, 1, 2, 3], count)
    sender.join(60)
    a.close()
    b.close()


def test_processes_share_an_end_whose_lock_is_a_file(ctx, monkeypatch):
    # Where a record lock cannot be taken on a socket (macOS), each end carries a file.
    pytest.importorskip("numpy")
    monkeypatch.setattr(_sendlock, "LOCK_ON_SOCKET", False)
    reader, writer = ctx.Pipe(duplex=False)
    assert writer._send_lock.owns_fd
    count = 20
    children = [ctx.Process(target=send_many, args=(writer, 100 * i, count)) for i in (1, 2)]
    for child in children:
        child.start()
    writer.close()
    _receive_all(reader, [100, 200], count)
    for child in children:
        assert finish(child, 120)[0] == 0
    reader.close()


def die_in_the_middle_of_a_big_message(conn):
    # A header and part of a body, then death: the other senders carry on.
    conn._sock = SendsPartThen(conn._sock, lambda: os.kill(os.getpid(), signal.SIGKILL))
    conn.send_bytes(b"x" * 100_000)


def test_a_sender_killed_mid_message_on_a_shared_end_never_delivers_wrong_data(ctx):
    reader, writer = ctx.Pipe(duplex=False)
    victim = ctx.Process(target=die_in_the_middle_of_a_big_message, args=(writer,))
    victim.start()
    victim.join(60)
    assert victim.exitcode == -signal.SIGKILL
    victim.close()
    writer.send_bytes(b"y" * 100_000)  # another sender on the same end
    # The first frame's body never came whole: an error, never "yyy..." as its body.
    with pytest.raises(ProtocolError, match="died in the middle"):
        reader.recv_bytes(timeout=30)
    writer.close()
    reader.close()


def next_frame_id():
    return _sendlock.next_frame_id()


def test_a_forked_child_draws_other_frame_ids_than_its_parent():
    # Datagrams are matched to their headers by id: two senders must never share one.
    ctx = proctor.get_context("fork")
    p = ctx.Process(target=next_frame_id)
    p.start()
    mine = _sendlock.next_frame_id()
    exitcode, theirs = finish(p)
    assert exitcode == 0
    assert theirs != mine and abs(theirs - mine) > 1 << 20


def send_big_and_report(conn, out_fd):
    conn.send_bytes(b"z" * 300_000)  # more than one write: it takes the send lock
    os.write(out_fd, b"sent")


def test_a_send_lock_another_thread_held_at_the_fork_is_free_in_the_child():
    # The child's send lock is made anew at its first use there (_afterfork's
    # generation, no fork hook): the parent's thread that held it at the fork does
    # not exist in the child, which would otherwise wait on that copy for ever. (It
    # waits for the parent's record lock, a process's, until the holder lets go.)
    reader, writer = Pipe(duplex=False)
    held, release = threading.Event(), threading.Event()

    def hold():
        assert writer._send_lock.acquire(None) is None
        held.set()
        release.wait(30)
        writer._send_lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        out_r, out_w = os.pipe()
        p = proctor.get_context("fork").Process(target=send_big_and_report, args=(writer, out_w))
        p.start()
        os.close(out_w)
        release.set()
        assert reader.recv_bytes(timeout=30) == b"z" * 300_000
        assert os.read(out_r, 4) == b"sent"
        os.close(out_r)
        exitcode, _ = finish(p)
        assert exitcode == 0
    finally:
        release.set()
        holder.join(30)
    writer.close()
    reader.close()


def _two_threads_take_an_inherited_send_lock(lock) -> int:
    # In a fork child: both threads come to the lock's first use there at once.
    sys.setswitchinterval(1e-6)  # (switch as often as possible: the race's window)
    barrier = threading.Barrier(2)
    inside, most = [0], [0]

    def take():
        barrier.wait(30)
        assert lock.acquire(None) is None
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.0005)
        inside[0] -= 1
        lock.release()

    threads = [threading.Thread(target=take) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return most[0]


def test_two_threads_of_a_fork_child_never_hold_an_inherited_send_lock_together():
    # The child's lock is made once, under _afterfork's renewal lock: when each
    # thread that found it stale made its own, both could hold "the" lock (and one
    # release() failed); 17-39 children in 400 showed it under a fast switch interval.
    a, b = socket.socketpair()
    lock = _sendlock.SendLock(a.fileno())
    try:
        for _ in range(60):
            reader, writer = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    most = _two_threads_take_an_inherited_send_lock(lock)
                    os.write(writer, bytes([most]))
                finally:
                    os._exit(0)
            os.close(writer)
            got = os.read(reader, 1)
            os.close(reader)
            os.waitpid(pid, 0)
            assert got == b"\x01"
    finally:
        a.close()
        b.close()


def die_between_a_datagram_and_its_header(conn):
    # The datagram goes out, then the process dies where the header would be
    # written (on a pipe, or on the frame socket).
    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    _sending._write = die
    type(conn)._pipe_send_small = die
    conn.send_bytes(b"x" * 40_000)


@needs_datagrams
def test_a_sender_killed_between_a_datagram_and_its_header_never_delivers_it(ctx):
    reader, writer = ctx.Pipe(duplex=False)
    victim = ctx.Process(target=die_between_a_datagram_and_its_header, args=(writer,))
    victim.start()
    victim.join(60)
    assert victim.exitcode == -signal.SIGKILL
    victim.close()
    writer.send_bytes(b"y" * 40_000)  # another sender on the same end
    writer.send("after")
    # The dead sender's message never started: the others' arrive, whole and in order.
    assert reader.recv_bytes(timeout=30) == b"y" * 40_000
    assert len(reader._stash) == 1  # the dead sender's datagram, which no header claims
    assert reader.recv(timeout=30) == "after"
    assert not reader.poll(0)
    writer.close()
    with pytest.raises(EOFError):
        reader.recv(timeout=30)
    reader.close()


@needs_datagrams
def test_a_header_without_its_datagram_is_a_protocol_error_not_a_hang():
    a, b = Pipe()
    raw_write(a, side_frame_header(40_000, 5, _frames.TAG_DGRAM_BITS))
    with pytest.raises(ProtocolError, match="datagram that is not there"):
        b.recv(timeout=30)  # a writer still holds the socket: a wait would never end
    a.close()
    b.close()


@needs_datagrams
def test_a_datagram_of_another_length_than_its_header_says_is_a_protocol_error():
    a, b = Pipe()
    a._dsock.sendmsg([_frames.FRAME_ID.pack(5), b"z" * 100])
    raw_write(a, side_frame_header(40_000, 5, _frames.TAG_DGRAM_BITS))
    with pytest.raises(ProtocolError, match="holds 100 bytes, its header says 40000"):
        b.recv_bytes(timeout=30)
    a.close()
    b.close()


# --- send timeouts -------------------------------------------------------------------------


@pytest.mark.parametrize("words", [250, 5000])  # 1000 bytes: small; 20 KB: mid-size
def test_send_timeout_against_a_stuck_reader_sends_whole_messages_or_nothing(pipe, words):
    a, b = pipe
    sent = []
    with pytest.raises(ProcessTimeoutError, match="nothing of it was sent"):
        for i in range(100_000):  # until the channel is full
            a.send_bytes(i.to_bytes(4, "little") * words, timeout=0.05)
            sent.append(i)
    assert sent, "not one message fitted"
    # Every message that send() accepted arrives whole; the refused one never does.
    for i in sent:
        assert b.recv_bytes(timeout=30) == i.to_bytes(4, "little") * words
    assert not b.poll(0)
    a.send_bytes(b"usable", timeout=30)  # the connection is intact
    assert b.recv_bytes(timeout=30) == b"usable"


def test_a_big_timed_send_against_a_stuck_reader_is_whole_or_nothing():
    a, b = Pipe()
    big = os.urandom(1 << 20)
    sent = 0
    with pytest.raises(ProcessTimeoutError):
        while True:
            a.send_bytes(big, timeout=0.05)
            a.send(("object", sent), timeout=0.05)
            sent += 1
    for i in range(sent):
        assert b.recv_bytes(timeout=30) == big
        assert b.recv(timeout=30) == ("object", i)
    assert not b.poll(0)
    a.send("still usable", timeout=30)
    assert b.recv(timeout=30) == "still usable"
    a.close()
    b.close()


def test_timeout_zero_sends_when_there_is_room_and_never_waits(pipe):
    a, b = pipe
    a.send("room", timeout=0)
    assert b.recv(timeout=30) == "room"
    with pytest.raises(ProcessTimeoutError):
        while True:
            a.send_bytes(b"z" * 1000, timeout=0)


def test_a_timed_send_waits_at_most_its_timeout_for_another_sender(pipe):
    a, b = pipe
    holder = threading.Thread(target=a.send_bytes, args=(b"h" * (8 << 20),))
    holder.start()  # blocks inside its send: the reader is not reading yet
    # It holds the lock, and its header is out (the reader could start).
    wait_until(lambda: a._send_lock.locked() and b.poll(0), timeout=30)
    if a._dgram_limit:
        # A mid-size message is a datagram and needs no lock: it goes out at once,
        # and arrives after the message whose header went first.
        a.send_bytes(b"w" * 10_000, timeout=30)
    # A message that needs the send lock waits for it, at most its timeout.
    with pytest.raises(ProcessTimeoutError):
        a.send_bytes(b"v" * (100_000 if a._dgram_limit else 10_000), timeout=0.05)
    assert b.recv_bytes(timeout=30) == b"h" * (8 << 20)
    if a._dgram_limit:
        assert b.recv_bytes(timeout=30) == b"w" * 10_000
    holder.join(30)
    assert not holder.is_alive()
    assert not b.poll(0)


@pytest.mark.parametrize(("timeout", "error"), [("1", TypeError), (1j, TypeError),
                                                (float("nan"), ValueError)])  # fmt: skip
def test_bad_send_timeouts_are_refused_before_sending(pipe, timeout, error):
    a, b = pipe
    with pytest.raises(error):
        a.send("x", timeout=timeout)
    with pytest.raises(error):
        a.send_bytes(b"x", timeout=timeout)
    assert not b.poll(0)


def test_a_timed_send_cut_short_on_a_socket_connection_refuses_further_sends():
    # One stream carries everything: what went out cannot be taken back.
    a, b = socket_pair()
    with pytest.raises(ProcessTimeoutError, match="can no longer send"):
        a.send_bytes(b"s" * (16 << 20), timeout=0.05)
    with pytest.raises(ProtocolError, match="can no longer send"):
        a.send("next")
    # The cut message ends in end-of-file, not in wrong data; at once, although the
    # sender lives on with its end open (a receive's timeout covers only the wait
    # for a message to begin: it waited for the rest for ever).
    thread, outcome = call_in_thread(lambda: b.recv_bytes(timeout=30))
    thread.join(30)
    alive = thread.is_alive()
    b.send("the other direction still works")
    assert a.recv(timeout=30) == "the other direction still works"
    a.close()
    thread.join(30)
    assert not alive
    assert isinstance(outcome[0], EOFError), outcome
    b.close()


# --- a frame socket's receiver looks before it sleeps (_receiving._read_spinning) ---

needs_spin = pytest.mark.skipif(
    not _receiving.can_spin() or not _pipe.FRAME_SOCKETS,
    reason="frame sockets (Linux) and the C module (not PROCTOR_PURE_PYTHON) look before a read",
)


@needs_spin
def test_spin_recv_into_reads_what_is_there_and_says_when_nothing_came():
    spin = _receiving._spin_recv_into
    a, b = socket.socketpair()
    try:
        buf = bytearray(8)
        assert spin(a.fileno(), buf, 0) == -1  # nothing there, no time to look
        b.send(b"abc")
        assert spin(a.fileno(), buf, 10**9) == 3  # there at the first try
        assert buf[:3] == b"abc"
        # What comes while it looks is read too (-2 - its length): from a child
        # that sends once the look has begun (or earlier, if the parent is slow).
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(b.send(b"later") != 5)
        got = spin(a.fileno(), buf, 30 * 10**9)
        assert got in (5, -2 - 5)
        assert buf[:5] == b"later"
        assert os.waitpid(pid, 0)[1] == 0
        b.close()
        assert spin(a.fileno(), buf, 10**9) == 0  # end of file
        fd = a.fileno()
    finally:
        a.close()
        b.close()
    with pytest.raises(OSError):
        spin(fd, buf, 0)  # closed: the read's own error


@needs_spin
def test_spin_recv_into_gives_up_at_once_on_one_cpu():
    # The peer of a process that may run on one CPU only cannot send while it
    # looks: no look at all (a 60 s budget would run into the test's timeout).
    spin = _receiving._spin_recv_into
    allowed = os.sched_getaffinity(0)
    a, b = socket.socketpair()
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert spin(a.fileno(), bytearray(8), 60 * 10**9) == -1
    finally:
        os.sched_setaffinity(0, allowed)
        a.close()
        b.close()


class _LookInterrupted(Exception):
    pass


@needs_spin
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="looks only with two CPUs or more")
def test_a_signal_ends_a_look_at_once():
    def interrupt(signum, frame):
        raise _LookInterrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    a, b = socket.socketpair()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(_LookInterrupted):
            _receiving._spin_recv_into(a.fileno(), bytearray(8), 60 * 10**9)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()


def _receive_numbered(receiver, sender, received, count):
    """Send ``count`` numbers on, each received before the next; ``received[0]`` counts."""
    for _ in range(count):
        received[0] += 1
        sender.send(received[0])
        assert receiver.recv() == received[0]


@needs_spin
def test_a_receiver_looks_less_while_its_looks_find_nothing(monkeypatch):
    real = _receiving._spin_recv_into
    looks = []  # the receives (by number) that looked
    outcome = ["nothing"]

    def look(fd, view, budget, without_gil):
        assert not without_gil  # (no other thread: _thread_count is 0 here)
        looks.append(received[0])
        if outcome[0] == "nothing":
            return -1
        got = real(fd, view, 0)  # (the message is there: read it)
        assert got > 0
        return got if outcome[0] == "there" else -2 - got

    monkeypatch.setattr(_receiving, "_spin_recv_into", look)
    monkeypatch.setattr(_receiving, "_thread_count", lambda: 0)  # (pytest's timer thread)
    received = [0]
    a, b = Pipe()
    try:

        def receive(count):
            _receive_numbered(a, b, received, count)

        receive(10)
        # Each look that found nothing doubles the receives that skip looking: 1, 3, 7.
        assert looks == [1, 3, 7]
        receive(8)  # receives 8-14 skip; 15 looks (nothing: 15 skip next)
        assert looks == [1, 3, 7, 15]
        outcome[0] = "came"
        receive(17)  # 16-30 skip, 31 looks and finds one come: the next looks again
        assert looks[4:] == [31, 32, 33, 34, 35]
        outcome[0] = "there"
        receive(2)  # there at once: looking goes on
        assert looks[-2:] == [36, 37]
    finally:
        a.close()
        b.close()


def test_which_ends_look_before_a_read():
    # Pipe() ends on a frame socket (a look that reads) and socket connections (a
    # look that reads nothing); not pipes, whose frames a pool's workers stream.
    a, b = _pipe.streaming_pipe()  # (a pool's channel: pipes, private frames)
    c, d = socket.socketpair()
    plain = Connection(c)
    try:
        assert a._spin_skip == b._spin_skip == -1
        assert plain._spin_skip == (0 if _receiving.can_spin() else -1)
        e, f = Pipe()
        expected = 0 if _receiving.can_spin() and _pipe.FRAME_SOCKETS else -1
        assert e._spin_skip == f._spin_skip == expected
        e.close()
        f.close()
    finally:
        for end in (a, b, plain):
            end.close()
        d.close()


@needs_spin
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="looks only with two CPUs or more")
def test_spin_until_readable_says_whether_and_when_and_reads_nothing():
    look = _receiving._spin_until_readable
    a, b = socket.socketpair()
    try:
        assert look(a.fileno(), 0) == 0  # nothing there, no time to look
        b.send(b"abc")
        assert look(a.fileno(), 10**9) == 1  # there at the first look
        assert a.recv(8) == b"abc"  # (left there)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(b.send(b"later") != 5)
        assert look(a.fileno(), 30 * 10**9) in (1, 2)
        assert a.recv(8) == b"later"
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        a.close()
        b.close()


@needs_spin
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="looks only with two CPUs or more")
def test_spin_until_readable_looks_at_several_descriptors_at_once():
    look = _receiving._spin_until_readable
    pairs = [socket.socketpair() for _ in range(10)]  # (more than its stack holds)
    fds = [a.fileno() for a, _ in pairs]
    try:
        assert look(fds, 0) == 0
        assert look(fds[:1], 10**6) == 0  # a list of one, as one
        pairs[9][1].send(b"x")
        assert look(fds, 0) == 1
        assert look(tuple(fds[:9]), 0) == 0  # (the others)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(pairs[4][1].send(b"later") != 5)
        assert look(fds[:9], 30 * 10**9) in (1, 2)
        assert os.waitpid(pid, 0)[1] == 0
        assert pairs[4][0].recv(8) == b"later"  # (left there)
        with pytest.raises(TypeError, match="descriptors are ints"):
            look([fds[0], "3"], 0)
        with pytest.raises(TypeError, match="a descriptor or a sequence"):
            look(None, 0)
        with pytest.raises(ValueError, match="not a descriptor"):
            look([-1], 0)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


@needs_spin
def test_a_wait_looks_before_it_sleeps_with_the_receives_back_off(monkeypatch):
    # wait() on connections that look (not a pool's streaming pipes) looks for any of
    # its objects before it sleeps, for no longer than its timeout; a look that finds
    # nothing makes the next waits skip looking, 1, 3, 7 ... (the process's count).
    from proctor._connections import _wait

    looks = []
    answer = [0]  # 0 nothing, 1 there at once, 2 came meanwhile

    def look(fds, budget, without_gil):
        looks.append((tuple(fds), budget))
        if answer[0] == 2:
            a.send("come")  # (as a peer would, while the look goes on)
        return answer[0]

    monkeypatch.setattr(_receiving, "_spin_until_readable", look)
    monkeypatch.setattr(_wait, "_skip", 0)
    monkeypatch.setattr(_wait, "_backoff", 0)
    a, b = Pipe()
    r, w = os.pipe()
    streaming = _pipe.streaming_pipe()
    reader, writer = Pipe(duplex=False)
    try:
        assert wait([writer], timeout=0.001) == []  # nothing it could receive: no look
        assert looks == []
        assert wait([b, r], timeout=20e-6) == []
        assert looks == [((b.fileno(), r), 20_000)]  # (its timeout was shorter)
        for _ in range(4):
            assert wait([b], timeout=0) == []  # a zero timeout never looks
            assert wait([r], timeout=0.001) == []  # no connection: no look
            assert wait([streaming[1]], timeout=0.001) == []  # a pool's: no look
        assert len(looks) == 1
        for _ in range(4):
            wait([b], timeout=0.001)  # skips 1, then looks, then skips 3
        assert len(looks) == 2 and looks[-1][1] == _receiving.SPIN_NS
        monkeypatch.setattr(_wait, "_skip", 0)
        answer[0] = 2
        assert wait([b], timeout=None) == [b]
        assert len(looks) == 3 and looks[-1] == ((b.fileno(),), _receiving.SPIN_NS)
        assert _wait._backoff == 0 and _wait._skip == 0  # it paid: the next looks
        assert b.recv() == "come"
    finally:
        for end in (a, b, *streaming, reader, writer):
            end.close()
        os.close(r)
        os.close(w)


@needs_spin
def test_a_socket_connection_looks_less_while_its_looks_do_not_pay(monkeypatch):
    looks = []
    outcome = [0]  # what each look says: 0 nothing, 1 there at once, 2 came meanwhile

    def look(fd, budget, without_gil):
        assert not without_gil
        looks.append(received[0])
        return outcome[0]

    monkeypatch.setattr(_receiving, "_spin_until_readable", look)
    monkeypatch.setattr(_receiving, "_thread_count", lambda: 0)  # (pytest's timer thread)
    received = [0]
    c, d = socket.socketpair()
    a, b = Connection(c), Connection(d)
    try:

        def receive(count):
            _receive_numbered(a, b, received, count)

        receive(7)
        assert looks == [1, 3, 7]  # found nothing: 1, then 3, then 7 receives skip
        outcome[0] = 1
        receive(8)
        assert looks == [1, 3, 7, 15]  # there at once: a look not needed, the same
        outcome[0] = 2
        receive(18)
        assert looks[4:] == [31, 32, 33]  # came while it looked: every receive looks
    finally:
        a.close()
        b.close()


# --- with other threads, a look lets the GIL go (_receiving._looked_until_readable) ---


def _counting_thread():
    """A thread counting in Python as fast as it can: ``(thread, counter, stop)``."""
    counter = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            counter[0] += 1

    thread = threading.Thread(target=count, daemon=True)
    thread.start()
    wait_until(lambda: counter[0] > 0, timeout=30)
    return thread, counter, stop


@needs_spin
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="looks only with two CPUs or more")
@pytest.mark.parametrize("which", ["spin_recv_into", "spin_until_readable"])
def test_a_look_without_the_gil_lets_other_threads_run_and_says_the_same(which):
    native = _receiving._spin_recv_into if which == "spin_recv_into" else None
    look = native or _receiving._spin_until_readable

    def call(fd, budget):
        if native is not None:
            return native(fd, bytearray(8), budget, True)
        return look(fd, budget, True)

    a, b = socket.socketpair()
    thread, counter, stop = _counting_thread()
    try:
        before = counter[0]
        assert call(a.fileno(), 200 * 10**6) in (-1, 0)  # nothing came in 0.2 s
        assert counter[0] > before  # the other thread ran meanwhile
        b.send(b"abc")
        assert call(a.fileno(), 10**9) in (3, 1)  # there at the first look
        if native is None:
            assert a.recv(8) == b"abc"  # (left there)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os._exit(b.send(b"later") != 5)
        assert call(a.fileno(), 30 * 10**9) in ((5, -2 - 5) if native else (1, 2))
        assert os.waitpid(pid, 0)[1] == 0
        fd = a.fileno()
    finally:
        stop.set()
        thread.join(30)
        a.close()
        b.close()
    if native is not None:
        with pytest.raises(OSError):
            call(fd, 0)  # closed: the read's own error


def test_the_looks_refuse_a_bad_number_of_arguments():
    from proctor._core import _system

    native = _system.core_native()
    if native is None:
        pytest.skip("the C module is not built here")
    with pytest.raises(TypeError, match="3 or 4 arguments"):
        native.spin_recv_into(0, bytearray(1), 0, True, 5)
    with pytest.raises(TypeError, match="2 or 3 arguments"):
        native.spin_until_readable(0)


@needs_spin
@pytest.mark.parametrize("kept_in_thread", [False, True])
def test_a_receive_beside_other_threads_looks_without_the_gil(monkeypatch, kept_in_thread):
    # Beside other threads (pytest's timer thread), an end that another thread may
    # close looks in the wait before its read (_wait_for_message); one kept in its
    # thread (a manager's serving thread's) in its read. Either way once per
    # receive, with the GIL let go, and with the backoff of the looks without
    # threads.
    looks = []
    real_recv_into = _receiving._spin_recv_into

    def look_readable(fd, budget, without_gil):
        looks.append((received[0], without_gil))
        return 0

    def look_recv_into(fd, view, budget, without_gil):
        looks.append((received[0], without_gil))
        return real_recv_into(fd, view, 0)  # (nothing came while "looking" otherwise)

    monkeypatch.setattr(_receiving, "_spin_until_readable", look_readable)
    monkeypatch.setattr(_receiving, "_spin_recv_into", look_recv_into)
    monkeypatch.setattr(_receiving, "_thread_count", lambda: _receiving._inherited_threads[0] + 1)
    monkeypatch.setattr(
        "proctor._connections._connection._thread_count",
        lambda: _receiving._inherited_threads[0] + 1,
    )
    # Each message is sent before its receive; the wait takes it for not there yet
    # (then finds it at once), and the looks that run say nothing came: they back
    # off as without threads, 1, 3, 7.
    monkeypatch.setattr(_connection, "readable_now", lambda fd: False)
    received = [0]
    c, d = socket.socketpair()
    a, b = Connection(c), Connection(d)
    if kept_in_thread:
        a._keep_in_thread()
    try:
        _receive_numbered(a, b, received, 7)
        assert [number for number, _ in looks] == [1, 3, 7]
        assert all(without_gil for _, without_gil in looks)
    finally:
        a.close()
        b.close()


@needs_spin
def test_a_poll_that_would_sleep_looks_first_for_no_longer_than_its_timeout(monkeypatch):
    # poll(timeout) then recv() is a receive too: before it sleeps, poll looks as a
    # receive does (the same back-off), for no longer than the timeout.
    looks = []
    answer = [2]  # what each look says: 2 came meanwhile, 0 nothing

    def look(fd, budget, without_gil):
        looks.append(budget)
        return answer[0]

    monkeypatch.setattr(_receiving, "_spin_until_readable", look)
    monkeypatch.setattr(_receiving, "_thread_count", lambda: 0)  # (pytest's timer thread)
    monkeypatch.setattr("proctor._connections._connection._thread_count", lambda: 0)
    # A message sent before the poll is taken for not there yet by the first check,
    # so the poll goes on to look (which, faked, says it came meanwhile).
    monkeypatch.setattr(_connection, "readable_now", lambda fd: False)
    c, d = socket.socketpair()
    a, b = Connection(c), Connection(d)
    try:
        b.send("one")
        assert a.poll(5) is True
        assert a.poll(None) is True
        assert a.poll(20e-6) is True
        assert looks == [_receiving.SPIN_NS, _receiving.SPIN_NS, 20_000]
        assert a.poll(0) is False  # (the faked check): a zero timeout never looks
        assert len(looks) == 3
        answer[0] = 0
        assert a.poll(0.01) is True  # the look found nothing, the wait finds it
        assert len(looks) == 4
        assert a.poll(5) is True  # the look backs off: this poll only waits,
        assert len(looks) == 4
        assert a.poll(5) is True  # and counts down (beside threads the receive
        assert len(looks) == 5  # after it would not): the next one looks
        assert a.recv() == "one"
    finally:
        a.close()
        b.close()


def _wait_for(conn, how):
    """Wait for ``conn``'s next message the way ``how`` says, before its ``recv()``."""
    if how == "poll":
        assert conn.poll(30)
    elif how == "wait":
        assert wait([conn], timeout=30) == [conn]


@needs_spin
def test_a_poll_or_wait_whose_look_stops_early_still_waits_out_its_timeout(monkeypatch):
    # A look ends early on one CPU (after one try) or at a signal: the wait after it
    # takes what is left of the timeout by the clock, never less.
    from proctor._connections import _wait

    monkeypatch.setattr(_receiving, "_spin_until_readable", lambda fds, budget, gil: 0)
    monkeypatch.setattr(_wait, "_skip", 0)
    a, b = Pipe()
    try:
        for call in (lambda: a.poll(0.05), lambda: wait([a], 0.05)):
            began = time.monotonic()
            assert not call()
            assert time.monotonic() - began >= 0.05
            monkeypatch.setattr(_wait, "_skip", 0)
            a._spin_skip = a._spin_backoff = 0
    finally:
        a.close()
        b.close()


def test_a_wait_beside_threads_on_an_object_closed_already_touches_no_descriptor():
    # (Another thread's close() may have left -1, or another file's number: the
    # closed owner is seen before any poll().)
    from proctor._core import _wakeup

    class Closed:
        _closed = True
        _waiting: set = set()

    done = threading.Event()
    thread = threading.Thread(target=done.wait, args=(30,))
    thread.start()
    try:
        assert _wakeup.wait_readable((-1,), 1.0, (Closed(),)) == []
    finally:
        done.set()
        thread.join(30)


def echo_until_none(conn, how="recv"):
    """In a child: send back what arrives until None does (its receives look first;
    each after a ``poll(timeout)`` or a ``wait()`` as ``how`` says, which look first too)."""
    count = 0
    while True:
        _wait_for(conn, how)
        if (message := conn.recv()) is None:
            return count
        conn.send(message)
        count += 1


@pytest.mark.parametrize("how", ["recv", "poll", "wait"])
def test_round_trips_with_a_child_whose_receives_look_first(how):
    ctx = proctor.get_context("fork")
    a, b = Pipe()
    p = ctx.Process(target=echo_until_none, args=(b, how))
    p.start()
    b.close()
    try:
        for i in range(300):
            message = (i, "x" * (i * 97 % 20000))  # frames inline and on the side
            a.send(message)
            _wait_for(a, how)
            if how == "recv":
                assert a.recv(timeout=30) == message  # (a timed receive: it polls)
            else:
                assert a.recv() == message
        a.send(None)
    finally:
        a.close()
    assert finish(p) == (0, 300)


def threads_here(n_to_start):
    """In a child: other_threads() before and after starting threads of its own."""
    from proctor._core import _wakeup

    before = _wakeup.other_threads()
    done = threading.Event()
    threads = [threading.Thread(target=done.wait, args=(30,)) for _ in range(n_to_start)]
    for t in threads:
        t.start()
    during = _wakeup.other_threads()
    done.set()
    for t in threads:
        t.join(30)
    return before, during, _wakeup.other_threads()


def test_a_fork_child_counts_its_own_threads_not_its_parents():
    # _thread._count() in a fork child still counts the parent's threads, which
    # are not there: the child's receives would take them for company (and not
    # look before a sleep, and wait where a close() elsewhere could end them).
    from proctor._core import _wakeup

    release = threading.Event()
    mine = [threading.Thread(target=release.wait, args=(30,)) for _ in range(2)]
    for t in mine:
        t.start()
    try:
        assert _wakeup.other_threads() >= 2
        p = proctor.get_context("fork").Process(target=threads_here, args=(3,))
        p.start()
        assert finish(p) == (0, (0, 3, 0))
    finally:
        release.set()
        for t in mine:
            t.join(30)
