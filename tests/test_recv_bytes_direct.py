"""recv_bytes() of a mid-size message: its body read straight into the bytes returned.

A frame's body longer than ``PIPE_INLINE`` (on the frame channel) or sent as a
datagram is received by the C module into a new bytes object (``_core._native``:
``read_rest_as_bytes``, ``recv_datagram_as_bytes``), not into the end's buffer and
then copied out. These tests check the C calls themselves, that ``recv_bytes()``
takes them, and that what it returns is exact whatever happens on the way: other
senders' datagrams first, a peer that dies mid-message, a signal.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import threading

import pytest

from helpers import finish, have_datagrams
from proctor._connections import _connection, _frames, _pipe, _receiving, _sending
from proctor.connection import Connection, Pipe, ProtocolError

NATIVE = _receiving.can_spin()  # (loads the C receives, or says they are not built)
needs_native = pytest.mark.skipif(not NATIVE, reason="the C module is not built (or is off)")
needs_datagrams = pytest.mark.skipif(
    not have_datagrams(), reason="AF_UNIX has no SOCK_SEQPACKET here (macOS)"
)
FRAME_ID = _frames.FRAME_ID


def stream_only_pipe():
    """A Pipe() as ends get it on macOS: frames on pipes, no datagram socket."""
    saved = _pipe.DATAGRAMS, _pipe.FRAME_SOCKETS
    _pipe.DATAGRAMS = _pipe.FRAME_SOCKETS = False
    try:
        return Pipe()
    finally:
        _pipe.DATAGRAMS, _pipe.FRAME_SOCKETS = saved


# --- the C calls --------------------------------------------------------------------


@needs_native
def test_read_rest_as_bytes_joins_the_head_and_what_the_descriptor_brings():
    read_rest = _receiving._read_rest_as_bytes
    r, w = os.pipe()  # a pipe: not a socket, read with read()
    try:
        os.write(w, b"cde")
        got = read_rest(r, memoryview(b"xxab")[2:], 5, False)
        assert (type(got), got) == (bytes, b"abcde")
        assert read_rest(r, b"head", 4, False) == b"head"  # nothing more to read
        os.write(w, b"f")
        os.close(w)
        w = -1
        assert read_rest(r, b"", 3, False) == b"f"  # end of file: shorter, what came
        with pytest.raises(ValueError, match="shorter than head"):
            read_rest(r, b"abc", 2, False)
        with pytest.raises(ValueError, match="must not be negative"):
            read_rest(r, b"", -1, False)
        with pytest.raises(TypeError, match="4 arguments"):
            read_rest(r, b"", 1)
        with pytest.raises(TypeError):
            read_rest(r, "not bytes", 5, False)
        with pytest.raises(OSError):
            read_rest(r, b"", 1, True)  # not a socket: recv()'s own error
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    directory = os.open("/", os.O_RDONLY)
    try:
        with pytest.raises(IsADirectoryError):
            read_rest(directory, b"", 1, False)  # read()'s own error
    finally:
        os.close(directory)


@needs_native
def test_read_rest_as_bytes_counts_a_connection_reset_as_end_of_file():
    # A peer that closes with bytes it never read (its process died with them) resets
    # the connection: what it had sent first is still returned, then the count ends.
    a, b = socket.socketpair()
    try:
        b.sendall(b"abc")
        a.sendall(b"never read")
        b.close()
        assert _receiving._read_rest_as_bytes(a.fileno(), b">", 10, True) == b">abc"
    finally:
        a.close()
        b.close()


@needs_native
def test_read_rest_as_bytes_waits_for_a_rest_that_is_not_there_yet():
    # Bytes not written by a proctor sender (whose frame is whole once its first
    # byte is there): the read waits for the rest in poll(), the GIL released.
    a, b = socket.socketpair()
    sender = threading.Timer(0.05, lambda: b.sendall(b"later"))
    sender.start()
    try:
        assert _receiving._read_rest_as_bytes(a.fileno(), b"now,", 9, True) == b"now,later"
    finally:
        sender.join(30)
        a.close()
        b.close()


@needs_native
def test_read_rest_as_bytes_raises_what_a_signal_handler_raises():
    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, 0)  # (no second signal once out of the call)
        raise Interrupted

    a, b = socket.socketpair()
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        # (Again every 50 ms: one signal could come between the read that found
        # nothing and the poll() that waits, and not end that wait.)
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
        with pytest.raises(Interrupted):
            _receiving._read_rest_as_bytes(a.fileno(), b"", 10, True)  # nothing ever comes
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        a.close()
        b.close()


@needs_native
@needs_datagrams
def test_recv_datagram_as_bytes_gives_the_id_and_a_body_of_any_length():
    recv = _receiving._recv_datagram_as_bytes
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    spill = bytearray(_frames.DATAGRAM_BODY_LIMIT)
    try:
        bodies = {7: b"x" * 100, 8: b"y" * 250, 9: b"z" * 40, 10: b""}
        for frame_id, body in bodies.items():
            a.send(FRAME_ID.pack(frame_id) + body)
        a.send(b"abc")  # shorter than an id: not a proctor datagram
        assert recv(b.fileno(), 100, spill) == (7, bodies[7])  # as long as expected
        assert recv(b.fileno(), 100, spill) == (8, bodies[8])  # longer: the spill joined
        assert recv(b.fileno(), 100, spill) == (9, bodies[9])  # shorter: cut to size
        assert recv(b.fileno(), 0, spill) == (10, b"")
        assert recv(b.fileno(), 100, spill) == (-1, b"")
        a.send(FRAME_ID.pack(2**64 - 1) + b"top")
        assert recv(b.fileno(), 3, spill) == (2**64 - 1, b"top")  # (unsigned)
        with pytest.raises(BlockingIOError):
            recv(b.fileno(), 100, spill)  # nothing there: never waits
        with pytest.raises(ValueError, match="must not be negative"):
            recv(b.fileno(), -1, spill)
        with pytest.raises(BufferError, match="not writable"):
            recv(b.fileno(), 1, b"read-only spill")
        with pytest.raises(TypeError, match="3 arguments"):
            recv(b.fileno(), 1)
    finally:
        a.close()
        b.close()


# --- recv_bytes() takes them ----------------------------------------------------------


@needs_native
@pytest.mark.parametrize("make", [Pipe, stream_only_pipe], ids=["Pipe", "Pipe-stream-only"])
def test_recv_bytes_reads_mid_size_bodies_into_their_bytes_exactly(monkeypatch, make):
    calls = []
    real = _receiving._read_rest_as_bytes

    def counted(fd, head, n, is_socket):
        calls.append(n)
        return real(fd, head, n, is_socket)

    monkeypatch.setattr(_receiving, "_read_rest_as_bytes", counted)
    a, b = make()
    limits = (121, 500, 504, 20_000, _sending.SOCKET_INLINE_BODY)
    inline = [n for n in limits if n <= a._inline_limit]
    sizes = [0, 119, 120, *inline, 50_000]
    try:
        for size in sizes:
            body = os.urandom(size)
            a.send_bytes(body, timeout=30)
            a.send(("after", size), timeout=30)  # the next frame is not read into the body
            got = b.recv_bytes(timeout=30)
            assert (type(got), got) == (bytes, body)
            assert b.recv(timeout=30) == ("after", size)
        assert calls == inline  # (not for bodies there whole, nor side bodies)
        assert not b.poll(0)
    finally:
        a.close()
        b.close()


@needs_native
@needs_datagrams
def test_recv_bytes_of_datagrams_that_overtook_their_headers_matches_them_by_id(monkeypatch):
    a, b = Pipe()
    # Three frames whose datagrams came in reverse order: the first one read is
    # shorter than the body expected, the second longer (both kept for later).
    bodies = {11: b"a" * 50_000, 12: b"b" * 60_000, 13: b"c" * 40_000}
    calls = []
    real = _receiving._recv_datagram_as_bytes

    def counted(fd, n, spill):
        calls.append(n)
        return real(fd, n, spill)

    monkeypatch.setattr(_receiving, "_recv_datagram_as_bytes", counted)
    try:
        for frame_id in reversed(bodies):
            a._dsock.sendmsg([FRAME_ID.pack(frame_id), bodies[frame_id]])
        for frame_id, body in bodies.items():
            token = _frames.PIPE_TOKEN.pack(_frames.TAG_DGRAM_BITS + len(body), frame_id)
            os.write(a._wfd, token)
        a.send_bytes(b"x" * 45_000, timeout=30)  # a datagram of its own, after them
        assert [b.recv_bytes(timeout=30) for _ in range(4)] == [*bodies.values(), b"x" * 45_000]
        assert b._stash is None
        # Received into bytes: three datagrams read for the first body, none for the
        # next two (stashed), one for the last.
        assert calls == [50_000, 50_000, 50_000, 45_000]
    finally:
        a.close()
        b.close()


def send_mid_size_frame_in_part_then_die(conn):
    # A header announcing a 20,000-byte body (sent inline, in one write, by a
    # proctor sender), 300 bytes of it, then death mid-message.
    os.write(conn._wfd, struct.pack("!Q", _frames.TAG_BITS | 20_000) + b"abc" * 100)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("receive", ["recv", "recv_bytes"])
def test_a_peer_killed_in_the_middle_of_a_mid_size_body_gives_eof(ctx, receive):
    a, b = Pipe()
    p = ctx.Process(target=send_mid_size_frame_in_part_then_die, args=(b,))
    p.start()
    b.close()
    try:
        with pytest.raises(EOFError, match="mid-message"):
            getattr(a, receive)()  # no timeout on purpose: death itself ends the wait
        with pytest.raises(EOFError):
            a.recv_bytes(timeout=30)  # and nothing else is there
    finally:
        exitcode, _ = finish(p)
        a.close()
    assert exitcode == -signal.SIGKILL


def refuse_then_report(conn):
    """Refuse the next message for its maxlength; then what this end says."""
    try:
        conn.recv_bytes(maxlength=100, timeout=30)
    except OSError as exc:
        refused = type(exc).__name__
    else:
        refused = "received"
    try:
        conn.recv_bytes(timeout=0)
    except OSError as exc:  # (broken: it refuses to receive again)
        return refused, type(exc).__name__
    return refused, "received again"


SIDE_BODY = 300_000  # on the stream socket, past COPY_LIMIT (and any datagram)


def _as_array(body):
    return [pickle.PickleBuffer(bytearray(body)), "x" * 200]  # (a pickle past maxlength)


def _with_handle(body, handle):
    return [handle, body]


# Each kind of message a maxlength of 100 refuses: (its body's size, how it is sent).
REFUSED_MESSAGES = {
    # an inline body everywhere (past 120 bytes; macOS's pipes take up to 504)
    "bytes inline": (400, lambda a, body, handle: a.send_bytes(body)),
    # a datagram (the stream socket where there are none: macOS)
    "bytes in a datagram": (40_000, lambda a, body, handle: a.send_bytes(body)),
    "bytes on the stream socket": (SIDE_BODY, lambda a, body, handle: a.send_bytes(body)),
    "bytes in a memfd (a send with a timeout)": (
        SIDE_BODY,
        lambda a, body, handle: a.send_bytes(body, timeout=30),
    ),
    "a pickle with memfds (an array's buffer)": (
        SIDE_BODY,
        lambda a, body, handle: a.send(_as_array(body)),
    ),
    "a pickle with memfds, itself in a memfd": (
        SIDE_BODY,
        lambda a, body, handle: a.send(_as_array(body), timeout=30),
    ),
    "a pickle with a descriptor": (
        SIDE_BODY,
        lambda a, body, handle: a.send(_with_handle(body, handle)),
    ),
    "a pickle with a descriptor, itself in a memfd": (
        SIDE_BODY,
        lambda a, body, handle: a.send(_with_handle(body, handle), timeout=30),
    ),
}


@pytest.mark.parametrize("kind", REFUSED_MESSAGES)
def test_a_message_refused_for_its_maxlength_leaves_the_next_one_whole(ctx, kind):
    # A child refuses a message longer than its maxlength (its end is broken then);
    # the parent, receiving on the same end, gets the next message whole: not the
    # rest of the refused one taken for a frame, nor its datagram or side message
    # ahead of it. (The leak check finds the descriptors that came with it closed.)
    size, send = REFUSED_MESSAGES[kind]
    a, b = Pipe()
    body = b"x" * (size - 20) + _frames.HEADER.pack(_frames.TAG_BITS | 5) + b"FAKE!" * 2
    following = b"next message".ljust(size, b".")  # (as long as the refused body)
    handle = socket.socket(socket.AF_UNIX)
    # Sent from a thread: two bodies may not fit the socket's buffer before anyone reads.
    sender = threading.Thread(target=lambda: (send(a, body, handle), a.send_bytes(following)))
    sender.start()
    try:
        p = ctx.Process(target=refuse_then_report, args=(b,))
        p.start()
        assert finish(p) == (0, ("ProtocolError", "ProtocolError"))
        assert b.recv_bytes(timeout=30) == following
        assert b._stash is None  # (the refused message's datagram did not stay behind)
        assert not b.poll(0)
    finally:
        sender.join(30)
        assert not sender.is_alive()
        a.close()
        b.close()
        handle.close()


def send_a_big_body(conn):
    conn.send_bytes(b"x" * (20 << 20))  # (more than the stream socket holds: it waits)


def test_a_refusal_whose_sender_was_killed_mid_body_does_not_wait_for_the_rest(ctx):
    # The parent holds the sending end too, so no end of file comes: the drop gives
    # up after DROP_STALL without the rest, and the refusal is the error (it waited
    # for ever for the 20 MiB that never come).
    a, b = Pipe()
    p = ctx.Process(target=send_a_big_body, args=(a,))
    p.start()
    try:
        assert b.poll(60)  # the header is here; the body is on its way
        p.kill()
        assert finish(p)[0] == -signal.SIGKILL
        with pytest.raises(ProtocolError, match="more than maxlength=100"):
            b.recv_bytes(maxlength=100, timeout=30)
    finally:
        a.close()
        b.close()


def test_a_refused_side_message_whose_sender_left_mid_body_leaves_the_refusal_as_the_error():
    # The drop meets the end of the stream socket halfway: the maxlength error stands.
    a, b = Pipe()
    try:
        frame_id = 7
        a._sock.sendall(_frames.SIDE.pack(frame_id, 0, 0) + b"y" * 1000)  # of 5,000 bytes
        os.write(a._wfd, _frames.PIPE_TOKEN.pack(_frames.TAG_SOCKET_BITS + 5000, frame_id))
        a.close()
        with pytest.raises(ProtocolError, match="more than maxlength=100"):
            b.recv_bytes(maxlength=100, timeout=30)
    finally:
        a.close()
        b.close()


@needs_datagrams
def test_a_datagram_header_claiming_more_than_any_datagram_is_a_protocol_error(monkeypatch):
    a, b = Pipe()
    calls = []
    if NATIVE:
        real = _receiving._recv_datagram_as_bytes
        monkeypatch.setattr(
            _receiving, "_recv_datagram_as_bytes", lambda *args: calls.append(args) or real(*args)
        )
    try:
        a._dsock.sendmsg([FRAME_ID.pack(5), b"z" * 10])
        os.write(a._wfd, _frames.PIPE_TOKEN.pack(_frames.TAG_DGRAM_BITS + 2**40, 5))
        with pytest.raises(ProtocolError, match="holds 10 bytes, its header says 1099511627776"):
            b.recv_bytes(timeout=30)  # not a MemoryError: nothing of that size was allocated
        assert calls == []  # (the C receive into bytes allocates what it is told)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    "size",
    [
        # an inline body everywhere, whose rest is read apart (the C module)
        pytest.param(400, marks=needs_native),
        40_000,  # a datagram
        200_000,  # the stream socket
    ],
)
def test_a_close_right_after_a_frames_first_read_is_the_closed_error(monkeypatch, size):
    # Another thread's close() after recv_bytes() read a frame's start (or a side
    # frame's header): the closed error, as for any receive on a closed end, not a
    # bad tag, an AttributeError or a complaint about descriptor -1.
    a, b = Pipe()
    real = Connection._next_pipe_frame

    def read_then_closed(self, view, whole=True):
        end = real(self, view, whole)
        self.close()
        return end

    monkeypatch.setattr(Connection, "_next_pipe_frame", read_then_closed)
    _send_then_expect_the_closed_error(a, b, b"y" * size)


def _send_then_expect_the_closed_error(a, b, body):
    try:
        a.send_bytes(body)
        with pytest.raises(OSError, match="closed"):
            b.recv_bytes(timeout=30)
    finally:
        a.close()
        b.close()


@needs_datagrams
def test_a_close_after_a_datagram_frames_token_is_the_closed_error(monkeypatch):
    # The close comes after recv_bytes() parsed the token, before it takes the datagram.
    a, b = Pipe()
    real = _connection._id_unpack_from

    def parsed_then_closed(*args):
        got = real(*args)
        b.close()
        return got

    monkeypatch.setattr(_connection, "_id_unpack_from", parsed_then_closed)
    _send_then_expect_the_closed_error(a, b, b"d" * 40_000)


@needs_datagrams
def test_a_refusal_for_maxlength_whose_datagram_is_not_there_says_so():
    # The refusal drops the refused message's datagram; one that is not there (bytes a
    # proctor sender did not write) leaves the refusal as the error.
    a, b = Pipe()
    try:
        os.write(a._wfd, _frames.PIPE_TOKEN.pack(_frames.TAG_DGRAM_BITS + 40_000, 5))
        with pytest.raises(ProtocolError, match="more than maxlength=100"):
            b.recv_bytes(maxlength=100, timeout=30)
    finally:
        a.close()
        b.close()


def test_an_exception_right_after_a_frames_first_read_leaves_it_to_the_next_receive(
    monkeypatch,
):
    # A signal handler's exception once a frame's start is in the buffer: the next
    # receive of this process finishes that frame, and only it. (One that comes as the
    # read returns, before its bytes are recorded, loses them, as in the stdlib.)
    a, b = Pipe()
    try:
        a.send_bytes(b"first")
        assert b.recv_bytes(timeout=30) == b"first"  # (the buffer's position moves on)
        body = os.urandom(1000)
        a.send_bytes(body)
        a.send("after")
        real = _connection._unpack_from
        raised = []

        def interrupted(*args):
            if not raised:
                raised.append(args)
                raise KeyboardInterrupt
            return real(*args)

        monkeypatch.setattr(_connection, "_unpack_from", interrupted)
        with pytest.raises(KeyboardInterrupt):
            b.recv_bytes(timeout=30)
        assert raised  # (it came where meant: the parse of the frame just read)
        assert b.recv_bytes(timeout=30) == body
        assert b.recv(timeout=30) == "after"
    finally:
        a.close()
        b.close()
