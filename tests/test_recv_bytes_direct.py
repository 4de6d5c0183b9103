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
import signal
import socket
import struct
import threading

import pytest

from helpers import finish
from proctor._connections import _frames, _pipe, _receiving, _sending
from proctor.connection import Pipe

NATIVE = _receiving.can_spin()  # (loads the C receives, or says they are not built)
needs_native = pytest.mark.skipif(not NATIVE, reason="the C module is not built (or is off)")
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
        got = read_rest(r, memoryview(b"xxab")[2:], 5)
        assert (type(got), got) == (bytes, b"abcde")
        assert read_rest(r, b"head", 4) == b"head"  # nothing more to read
        os.write(w, b"f")
        os.close(w)
        w = -1
        assert read_rest(r, b"", 3) == b"f"  # end of file: shorter, what came
        with pytest.raises(ValueError, match="shorter than head"):
            read_rest(r, b"abc", 2)
        with pytest.raises(TypeError, match="3 arguments"):
            read_rest(r, b"")
        with pytest.raises(TypeError):
            read_rest(r, "not bytes", 5)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    with pytest.raises(OSError):
        read_rest(r, b"", 1)  # closed: the read's own error


@needs_native
def test_read_rest_as_bytes_waits_for_a_rest_that_is_not_there_yet():
    # On a non-blocking socket (bytes not written by a proctor sender: its frame
    # is whole once its first byte is there) the read waits in poll().
    a, b = socket.socketpair()
    a.setblocking(False)
    sender = threading.Timer(0.05, lambda: b.sendall(b"later"))
    sender.start()
    try:
        assert _receiving._read_rest_as_bytes(a.fileno(), b"now,", 9) == b"now,later"
    finally:
        sender.join(30)
        a.close()
        b.close()


@needs_native
def test_read_rest_as_bytes_raises_what_a_signal_handler_raises():
    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    a, b = socket.socketpair()
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupted):
            _receiving._read_rest_as_bytes(a.fileno(), b"", 10)  # nothing ever comes
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        a.close()
        b.close()


@needs_native
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

    def counted(fd, head, n):
        calls.append(n)
        return real(fd, head, n)

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
def test_recv_bytes_of_datagrams_that_overtook_their_headers_matches_them_by_id():
    a, b = Pipe()
    if not a._dgram_limit:
        pytest.skip("AF_UNIX has no SOCK_SEQPACKET here (macOS)")
    # Three frames whose datagrams came in reverse order: the first one read is
    # shorter than the body expected, the second longer (both kept for later).
    bodies = {11: b"a" * 50_000, 12: b"b" * 60_000, 13: b"c" * 40_000}
    try:
        for frame_id in reversed(bodies):
            a._dsock.sendmsg([FRAME_ID.pack(frame_id), bodies[frame_id]])
        for frame_id, body in bodies.items():
            token = _frames.PIPE_TOKEN.pack(_frames.TAG_DGRAM_BITS + len(body), frame_id)
            os.write(a._wfd, token)
        a.send_bytes(b"x" * 45_000, timeout=30)  # a datagram of its own, after them
        assert [b.recv_bytes(timeout=30) for _ in range(4)] == [*bodies.values(), b"x" * 45_000]
        assert b._stash is None
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
