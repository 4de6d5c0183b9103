"""The connection handshake and the stdlib's address helpers.

``deliver_challenge``/``answer_challenge`` on bare connection pairs, with the
stdlib's calling pattern; ``families``, ``default_family``, ``address_type()``;
Windows pipe addresses refused; Linux abstract socket addresses; ``Listener``
and ``Client`` as context managers. Each side of a handshake that needs a peer
runs in a thread joined with a timeout (every handshake step also gives up on
its own after 30 s of silence).
"""

from __future__ import annotations

import multiprocessing.connection as mp_connection
import os
import socket
import sys
import threading

import pytest

from proctor import AuthenticationError
from proctor._connections import _connection
from proctor.connection import (
    Client,
    Connection,
    Listener,
    Pipe,
    address_type,
    answer_challenge,
    default_family,
    deliver_challenge,
    families,
    wait,
)


def socket_pair():
    a, b = socket.socketpair()
    _connection.configure_socket(a)
    _connection.configure_socket(b)
    return Connection(a), Connection(b)


@pytest.fixture(params=["Pipe", "socketpair"])
def pair(request):
    a, b = Pipe() if request.param == "Pipe" else socket_pair()
    yield a, b
    a.close()
    b.close()


def _in_thread(fn, *args):
    """Run ``fn(*args)`` in a thread; returns (thread, results) where results gets its outcome."""
    results = []

    def run():
        try:
            results.append(fn(*args))
        except Exception as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def _stdlib_server_side(conn, key):
    # What multiprocessing's Listener.accept() does with an authkey.
    deliver_challenge(conn, key)
    answer_challenge(conn, key)
    return "authenticated"


# --- deliver_challenge / answer_challenge ------------------------------------------


def test_the_same_key_authenticates_both_ways(pair):
    a, b = pair
    server, results = _in_thread(_stdlib_server_side, a, b"shared")
    try:
        # What multiprocessing's Client() does with an authkey: answer, then deliver.
        answer_challenge(b, b"shared")
        deliver_challenge(b, b"shared")  # proctor proved both ways at once: returns at once
    finally:
        server.join(30)
    assert results == ["authenticated"]
    a.send("after the handshake")
    assert b.recv(timeout=10) == "after the handshake"
    b.send_bytes(b"back")
    assert a.recv_bytes(timeout=10) == b"back"


def test_the_handshake_works_with_the_sides_swapped_and_another_digest(pair):
    a, b = pair
    server, results = _in_thread(answer_challenge, a, bytearray(b"shared"))
    try:
        deliver_challenge(b, memoryview(b"shared"), digest_name="sha512")
    finally:
        server.join(30)
    assert results == [None]
    b.send(1)
    assert a.recv(timeout=10) == 1


def test_a_wrong_key_is_refused_on_both_sides(pair):
    a, b = pair
    server, results = _in_thread(deliver_challenge, a, b"right")
    try:
        with pytest.raises(AuthenticationError, match="refused this Client's authkey"):
            answer_challenge(b, b"wrong")
    finally:
        server.join(30)
    assert len(results) == 1 and isinstance(results[0], AuthenticationError)
    assert "digest is wrong" in str(results[0])


def test_a_peer_that_is_not_doing_the_handshake_is_refused(pair):
    a, b = pair
    a.send_bytes(b"hello, not a challenge")
    with pytest.raises(AuthenticationError, match="not a proctor Listener"):
        answer_challenge(b, b"key")
    b.send_bytes(b"PROCTOR/1 PROOF " + bytes(10))  # the right prefix, a wrong length
    with pytest.raises(AuthenticationError, match="malformed"):
        deliver_challenge(a, b"key")
    b.send_bytes(b"PROCTOR/1 PROOF " + bytes(64))  # the right length, a wrong digest
    with pytest.raises(AuthenticationError, match="digest is wrong"):
        deliver_challenge(a, b"key")
    # What the refused peer saw each time: the challenge, then the refusal.
    for _ in range(2):
        assert b.recv_bytes(timeout=10).startswith(b"PROCTOR/1 AUTH ")
        assert b.recv_bytes(timeout=10) == b"PROCTOR/1 DENIED"
    assert not b.poll(0)


@pytest.mark.parametrize("family", ["AF_UNIX", "AF_INET"])
def test_challenges_on_a_keyless_listener_and_client_connection(family):
    # The stdlib pattern of a program that authenticates by hand: Listener and
    # Client without a key, then deliver_challenge/answer_challenge on the
    # connection. The client side reads the open listener's greeting first.
    with (
        Listener(family=family) as listener,
        Client(listener.address, timeout=30) as client,
        listener.accept(timeout=30) as server,
    ):
        thread, results = _in_thread(_stdlib_server_side, server, b"by hand")
        try:
            answer_challenge(client, b"by hand")
            deliver_challenge(client, b"by hand")
        finally:
            thread.join(30)
        assert results == ["authenticated"]
        client.send("trusted")
        assert server.recv(timeout=30) == "trusted"
        server.send("both ways")
        assert client.recv(timeout=30) == "both ways"


@pytest.mark.parametrize("family", ["AF_UNIX", "AF_INET"])
def test_wait_does_not_take_a_keyless_clients_greeting_for_a_message(family):
    import select

    with (
        Listener(family=family) as listener,
        Client(listener.address, timeout=30) as quiet,
        listener.accept(timeout=30) as quiet_server,
        Client(listener.address, timeout=30) as talking,
        listener.accept(timeout=30) as talking_server,
    ):
        talking_server.send("a message")
        for end in (quiet, talking):  # the greetings (and the message) have arrived
            assert select.select([end.fileno()], [], [], 30)[0]
        assert wait([quiet, talking], timeout=30) == [talking]
        assert wait([quiet], timeout=0.1) == []  # only the greeting: nothing to receive
        quiet_server.send("now one")
        assert wait([quiet, talking], timeout=30) == [quiet, talking]
        assert quiet.recv(timeout=30) == "now one"
        assert talking.recv(timeout=30) == "a message"


@pytest.mark.parametrize("function", [deliver_challenge, answer_challenge])
@pytest.mark.parametrize(
    ("authkey", "match"),
    [("text", "not str"), (None, "not None"), (1234, "not int"), ([1, 2], "not list")],
)
def test_an_authkey_that_is_not_bytes_is_a_type_error(pair, function, authkey, match):
    a, b = pair
    with pytest.raises(TypeError, match=match):
        function(a, authkey)
    assert not b.poll(0)  # checked before anything was sent


@pytest.mark.parametrize("digest", ["md5", "sha1", "no-such-digest", 256])
def test_a_weak_or_unknown_digest_is_a_value_error(pair, digest):
    a, b = pair
    with pytest.raises(ValueError, match="digest_name must be one of"):
        deliver_challenge(a, b"key", digest_name=digest)
    assert not b.poll(0)


def test_the_handshake_bytes_are_exported_under_the_stdlib_names():
    from proctor import connection

    assert connection.CHALLENGE.startswith(b"PROCTOR/1 ")
    assert connection.WELCOME.startswith(b"PROCTOR/1 ")
    assert connection.FAILURE.startswith(b"PROCTOR/1 ")
    # proctor's own bytes, not the stdlib's (b"#CHALLENGE#"..., private from Python
    # 3.12): a multiprocessing peer's handshake is not accepted.
    stdlib = getattr(mp_connection, "CHALLENGE", None) or mp_connection._CHALLENGE
    assert stdlib.startswith(b"#CHALLENGE#")
    assert not connection.CHALLENGE.startswith(stdlib)


# --- families and addresses --------------------------------------------------------


def test_families_and_default_family_match_the_stdlib():
    assert families == mp_connection.families
    assert default_family == mp_connection.default_family
    for family in families:
        with Listener(family=family) as listener:
            assert address_type(listener.address) == family


@pytest.mark.parametrize(
    ("address", "family"),
    [
        (("127.0.0.1", 0), "AF_INET"),
        (("::1", 0, 0, 0), "AF_INET6"),
        ("/tmp/some.sock", "AF_UNIX"),
        (b"/tmp/some.sock", "AF_UNIX"),
        ("\0abstract", "AF_UNIX"),
        (r"\\.\pipe\name", "AF_PIPE"),
    ],
)
def test_address_type_names_the_family(address, family):
    assert address_type(address) == family


@pytest.mark.parametrize("address", [1234, None, ("127.0.0.1",), (1, 2)])
def test_address_type_of_something_else_is_a_value_error(address):
    with pytest.raises(ValueError):
        address_type(address)


def test_windows_pipe_families_and_addresses_are_value_errors():
    with pytest.raises(ValueError, match="Windows named pipe"):
        Listener(family="AF_PIPE")
    with pytest.raises(ValueError, match="Windows named pipe"):
        Listener(r"\\.\pipe\proctor-test")
    with pytest.raises(ValueError, match="Windows named pipe"):
        Client(r"\\.\pipe\proctor-test", timeout=5)
    with pytest.raises(ValueError, match="unknown address family 'AF_BOGUS'"):
        Client("/tmp/x.sock", family="AF_BOGUS", timeout=5)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract socket names exist only on Linux"
)
@pytest.mark.parametrize("authkey", [None, b"key"])
def test_an_abstract_unix_address_works_for_listener_and_client(authkey):
    address = f"\0proctor-test-{os.getpid()}-{os.urandom(6).hex()}"
    with Listener(address, authkey=authkey) as listener:
        assert listener.address == address
        assert address_type(listener.address) == "AF_UNIX"
        if authkey is None:
            # Keyless: the Client returns once connected; this thread accepts after.
            with Client(address, timeout=30) as client, listener.accept(timeout=30) as server:
                client.send("over an abstract name")
                assert server.recv(timeout=30) == "over an abstract name"
                server.send("back")
                assert client.recv(timeout=30) == "back"
        else:
            server, results = _in_thread(listener.accept, 30)
            try:
                with Client(address, authkey=authkey, timeout=30) as client:
                    client.send("authenticated")
                    server.join(30)
                    with results[0] as accepted:
                        assert accepted.recv(timeout=30) == "authenticated"
            finally:
                server.join(30)
    # No file was made for the name, so nothing is left to remove; the name is free again.
    with Listener(address) as again:
        assert again.address == address


def test_listener_and_client_are_context_managers():
    with Listener() as listener:
        path = listener.address
        with Client(path, timeout=30) as client:
            with listener.accept(timeout=30) as server:
                client.send("hi")
                assert server.recv(timeout=30) == "hi"
            assert server.closed
        assert client.closed
        assert not listener.closed
    assert listener.closed
    assert not os.path.exists(path)
    with pytest.raises(OSError, match="closed"):
        listener.fileno()


def _stdlib_deliver(sock, key):
    conn = mp_connection.Connection(sock.detach())
    try:
        mp_connection.deliver_challenge(conn, key)
    finally:
        conn.close()


def test_a_proctor_peer_and_a_multiprocessing_peer_cannot_authenticate_each_other():
    ours, theirs = socket.socketpair()
    server, results = _in_thread(_stdlib_deliver, theirs, b"key")
    try:
        with Connection(ours) as conn, pytest.raises(AuthenticationError):
            answer_challenge(conn, b"key")
        # Closing our end ends the stdlib side's wait for an answer.
    finally:
        server.join(30)
        theirs.close()
    assert not server.is_alive()
    assert len(results) == 1 and isinstance(results[0], (EOFError, OSError)), results


def test_a_nonce_that_starts_with_a_brace_is_not_read_as_a_digest_name(pair, monkeypatch):
    # Regression (found by the managers' many handshakes): a random nonce starting
    # with b"{" was parsed as "{digest}" and 1 handshake in 256 was refused.
    from proctor._connections import _handshake

    real_urandom = os.urandom
    nonces = [b"{" + real_urandom(31)]
    monkeypatch.setattr(
        _handshake.os, "urandom", lambda n: nonces.pop() if nonces and n == 32 else real_urandom(n)
    )
    a, b = pair
    server, results = _in_thread(_stdlib_server_side, a, b"shared")
    try:
        answer_challenge(b, b"shared")
        deliver_challenge(b, b"shared")
    finally:
        server.join(30)
    assert results == ["authenticated"]


def test_keep_in_process_sends_without_the_process_lock():
    # Connection.keep_in_process(): the manager's connections are used by one
    # process only; their sends skip the fcntl record lock, nothing else changes.
    a, b = socket_pair()
    try:
        a.keep_in_process()
        assert a._send_lock.process_private
        for i in range(3):
            a.send(("frame", i))
            assert b.recv(timeout=10) == ("frame", i)
        a.send_bytes(b"x" * 60_000)  # a big frame, several writes under the lock
        assert b.recv_bytes(timeout=10) == b"x" * 60_000
        assert not a._send_lock.locked()
    finally:
        a.close()
        b.close()
