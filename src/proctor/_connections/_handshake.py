"""The connection handshake: what ``Listener.accept()`` and ``Client()`` say first.

With an ``authkey``, both sides prove they hold it before either returns a
``Connection``, so a peer without the key never gets one of its objects
unpickled. The handshake uses raw byte frames only (``send_bytes`` /
``recv_bytes`` with a small ``maxlength``), never pickle::

    listener: serve_handshake                     client: client_handshake
    ─────────────────────────                     ────────────────────────
    HELLO  "PROCTOR/1 AUTH " [{digest}] + server_nonce ──▶
                                             ◀──    PROOF "PROCTOR/1 PROOF" + client_nonce
                                                          + HMAC(key, "client" + server_nonce
                                                                      + client_nonce)
    compare_digest; wrong ──▶ "PROCTOR/1 DENIED",
        raise AuthenticationError
    right ──▶ WELCOME "PROCTOR/1 WELCOME"                 compare_digest; wrong or DENIED:
                 + HMAC(key, "server" + client_nonce           raise AuthenticationError
                             + server_nonce)

Nonces are 32 random bytes from ``os.urandom``; the digest is HMAC-SHA256 unless
the listener names another in braces (``deliver_challenge(..., digest_name=)``);
the "client"/"server" labels stop a peer from reflecting one side's proof back
to it. Without an authkey the listener says ``"PROCTOR/1 OPEN"``, and a client
that does hold a key refuses it (it will not send objects to an unauthenticated
peer), while a client without a key is refused by a listener that needs one:
both with ``AuthenticationError`` naming the mismatch.

A ``Client`` without a key does not wait for the greeting: it returns as soon as
it is connected (as ``multiprocessing``'s does, which lets one thread connect and
then accept), and its first receive reads and checks the greeting first
(:func:`check_greeting`). It sends nothing that needs trust: it has no key, so
it would talk to any listener that accepts it.

``deliver_challenge`` and ``answer_challenge`` are the stdlib's names for the
two sides. proctor's handshake authenticates both ways at once, so after either
one the connection is authenticated in both directions, and the other (which a
stdlib program calls next) returns at once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
import weakref
from typing import Any

from .._core import _lazy_errors
from ._connection import Connection

__all__ = (
    "CHALLENGE",
    "FAILURE",
    "WELCOME",
    "answer_challenge",
    "check_authkey",
    "check_greeting",
    "client_handshake",
    "deliver_challenge",
    "serve_handshake",
)

# How long one side waits for the other's next handshake message before giving
# up: a peer that connects and then says nothing must not block accept() forever.
_HANDSHAKE_TIMEOUT = 30.0
# No handshake message is longer than this; a longer one is refused unread.
_HANDSHAKE_MAXLENGTH = 256
_NONCE_SIZE = 32
_DIGEST = "sha256"
# Digests a listener may ask for (deliver_challenge's digest_name): HMAC with
# them is sound; MD5 and SHA-1 are refused rather than offered.
_DIGESTS = (
    frozenset(
        {"sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512", "blake2b", "blake2s"}
    )
    & hashlib.algorithms_available
)

_PREFIX = b"PROCTOR/1 "
_OPEN = _PREFIX + b"OPEN"
_AUTH = _PREFIX + b"AUTH "
_NOKEY = _PREFIX + b"NOKEY"
_PROOF = _PREFIX + b"PROOF "
_DENIED = _PREFIX + b"DENIED"
_WELCOME = _PREFIX + b"WELCOME "

#: The stdlib's names for the messages of the handshake (proctor's own bytes:
#: a proctor peer and a ``multiprocessing`` one cannot authenticate each other).
CHALLENGE = _AUTH
WELCOME = _WELCOME
FAILURE = _DENIED

# Connections authenticated both ways, and the key they proved (see module docstring).
_authenticated: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def check_authkey(authkey: Any) -> bytes | None:
    """``authkey`` as bytes, or None.

    Raises:
        TypeError: it is a str, or not bytes-like.
    """
    if authkey is None:
        return None
    if isinstance(authkey, str):
        raise TypeError("authkey must be bytes, not str; encode it first (authkey.encode())")
    try:
        return bytes(memoryview(authkey))
    except TypeError:
        raise TypeError(f"authkey must be bytes or None, not {type(authkey).__name__}") from None


def _remaining(deadline: float | None) -> float:
    """Seconds a handshake step may wait: the caller's deadline, capped."""
    if deadline is None:
        return _HANDSHAKE_TIMEOUT
    return max(0.0, min(_HANDSHAKE_TIMEOUT, deadline - time.monotonic()))


def _digest(key: bytes, label: bytes, first: bytes, second: bytes, name: str = _DIGEST) -> bytes:
    return hmac.new(key, label + first + second, name).digest()


def _recv_step(conn: Any, deadline: float | None, peer: str) -> bytes:
    """The peer's next handshake message; anything amiss is ``AuthenticationError``."""
    if not isinstance(conn, Connection):
        # Any object with the stdlib's recv_bytes(maxlength) (a test's fake, a
        # wrapper): no timeout to give it.
        try:
            data = conn.recv_bytes(_HANDSHAKE_MAXLENGTH)
        except EOFError:
            raise _lazy_errors.AuthenticationError(
                f"the {peer} closed the connection during the handshake"
            ) from None
        return _as_bytes(data, peer)
    wait = _remaining(deadline)
    try:
        return conn.recv_bytes(_HANDSHAKE_MAXLENGTH, timeout=wait)
    except _lazy_errors.if_loaded("ProcessTimeoutError"):
        if deadline is not None and wait < _HANDSHAKE_TIMEOUT:
            raise _lazy_errors.ProcessTimeoutError(
                f"the {peer} did not complete the connection handshake within the timeout"
            ) from None
        raise _lazy_errors.AuthenticationError(
            f"the {peer} said nothing for {_HANDSHAKE_TIMEOUT:g} s during the connection "
            "handshake; it is not a proctor peer, or it is stuck"
        ) from None
    except _lazy_errors.if_loaded(ValueError, "ProtocolError") as exc:
        raise _lazy_errors.AuthenticationError(
            f"the {peer} sent something that is not a proctor handshake message ({exc})"
        ) from None
    except EOFError:
        raise _lazy_errors.AuthenticationError(
            f"the {peer} closed the connection during the handshake"
        ) from None


def _as_bytes(data: Any, peer: str) -> bytes:
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise _lazy_errors.AuthenticationError(
            f"the {peer} sent a {type(data).__name__} where the handshake expects bytes"
        ) from None


def _send_step(conn: Any, data: bytes) -> None:
    conn.send_bytes(data)


def serve_handshake(
    conn: Any, authkey: bytes | None, deadline: float | None, digest: str = _DIGEST
) -> None:
    """The listener's side of the handshake; returns only when the client is trusted.

    Raises:
        AuthenticationError: the client does not hold ``authkey``, has none, or
            sent anything but the expected reply.
        ProcessTimeoutError: the client did not answer by ``deadline``.
    """
    if authkey is None:
        try:
            _send_step(conn, _OPEN)
        except BrokenPipeError:
            # The client may have sent its messages and gone before accept():
            # they are still there to be received.
            pass
        return
    server_nonce = os.urandom(_NONCE_SIZE)
    # An unnamed digest's nonce must not start with "{", which the client reads
    # as the start of a digest name: 1 handshake in 256 failed so.
    while digest == _DIGEST and server_nonce[:1] == b"{":
        server_nonce = os.urandom(_NONCE_SIZE)
    named = b"" if digest == _DIGEST else b"{" + digest.encode("ascii") + b"}"
    _send_step(conn, _AUTH + named + server_nonce)
    reply = _recv_step(conn, deadline, "client")
    if reply == _NOKEY:
        raise _lazy_errors.AuthenticationError(
            "a client without an authkey tried to connect to a listener that requires "
            "one; give the Client the same authkey as the Listener"
        )
    digest_size = hashlib.new(digest).digest_size
    expected_size = len(_PROOF) + _NONCE_SIZE + digest_size
    if not reply.startswith(_PROOF) or len(reply) != expected_size:
        _deny(conn)
        raise _lazy_errors.AuthenticationError("the client sent a malformed authentication reply")
    client_nonce = reply[len(_PROOF) : len(_PROOF) + _NONCE_SIZE]
    proof = reply[len(_PROOF) + _NONCE_SIZE :]
    if not hmac.compare_digest(
        proof, _digest(authkey, b"client", server_nonce, client_nonce, digest)
    ):
        _deny(conn)
        raise _lazy_errors.AuthenticationError(
            "the client's authentication digest is wrong: it does not hold this listener's authkey"
        )
    _send_step(conn, _WELCOME + _digest(authkey, b"server", client_nonce, server_nonce, digest))


def _deny(conn: Any) -> None:
    try:
        _send_step(conn, _DENIED)
    except OSError:
        pass  # the client may already be gone; it is refused either way


def _parse_challenge(hello: bytes) -> tuple[str, bytes] | None:
    """The digest and the nonce of a listener's challenge, or None if it is not one."""
    if not hello.startswith(_AUTH):
        return None
    rest = hello[len(_AUTH) :]
    digest = _DIGEST
    if rest.startswith(b"{"):
        end = rest.find(b"}")
        if end < 0:
            return None
        try:
            digest = rest[1:end].decode("ascii")
        except UnicodeDecodeError:
            return None
        if digest not in _DIGESTS:
            return None
        rest = rest[end + 1 :]
    if len(rest) != _NONCE_SIZE:
        return None
    return digest, rest


def client_handshake(
    conn: Any, authkey: bytes | None, deadline: float | None, hello: bytes | None = None
) -> None:
    """The client's side of the handshake; returns only when the listener is trusted.

    Args:
        hello: the listener's first message, when it was read already.

    Raises:
        AuthenticationError: the listener does not hold ``authkey``, requires a
            key this client has not, has none while this client has one, or
            sent anything but the expected messages.
        ProcessTimeoutError: the listener did not answer by ``deadline``.
    """
    if hello is None:
        hello = _recv_step(conn, deadline, "listener")
    if hello == _OPEN:
        if authkey is not None:
            raise _lazy_errors.AuthenticationError(
                "the listener does not authenticate its clients, but this Client was "
                "given an authkey; refusing to talk to an unauthenticated peer (give "
                "the Listener the same authkey, or drop it from the Client)"
            )
        return
    challenge = _parse_challenge(hello)
    if challenge is None:
        raise _lazy_errors.AuthenticationError(
            "the peer is not a proctor Listener (unexpected greeting)"
        )
    if authkey is None:
        try:
            _send_step(conn, _NOKEY)
        except OSError:
            pass
        raise _lazy_errors.AuthenticationError(
            "the listener requires an authkey and this Client has none; pass "
            "authkey=<the listener's key>"
        )
    digest, server_nonce = challenge
    client_nonce = os.urandom(_NONCE_SIZE)
    _send_step(
        conn,
        _PROOF + client_nonce + _digest(authkey, b"client", server_nonce, client_nonce, digest),
    )
    reply = _recv_step(conn, deadline, "listener")
    if reply == _DENIED:
        raise _lazy_errors.AuthenticationError(
            "the listener refused this Client's authkey: the two keys differ"
        )
    expected = _WELCOME + _digest(authkey, b"server", client_nonce, server_nonce, digest)
    if not hmac.compare_digest(reply, expected):
        raise _lazy_errors.AuthenticationError(
            "the listener failed to prove that it holds the authkey: the two keys differ "
            "or the peer is an impostor"
        )


def check_greeting(conn: Connection, deadline: float | None) -> None:
    """A keyless ``Client``'s first receive: read and check the listener's greeting.

    Raises:
        ProcessTimeoutError: the listener has not accepted by ``deadline``;
            nothing was read.
        AuthenticationError: the listener requires an authkey, or is not a
            proctor listener; every later receive raises it again.
        EOFError: the listener closed the connection without accepting it.
    """
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    # As long as the caller waits for a message: the listener may accept late.
    if not conn._wait_fd(wait):  # (raises if another thread closes the end meanwhile)
        raise _lazy_errors.ProcessTimeoutError(
            f"no message arrived on {conn!r} within the timeout: the listener has not "
            "accepted this connection yet (pass a longer timeout, or timeout=None)"
        )
    try:
        hello = conn.recv_bytes(_HANDSHAKE_MAXLENGTH, timeout=_HANDSHAKE_TIMEOUT)
    except _lazy_errors.if_loaded(ValueError, "ProtocolError", "ProcessTimeoutError") as exc:
        refused = _lazy_errors.AuthenticationError(f"the peer is not a proctor Listener ({exc})")
        conn._break(refused)
        raise refused from None
    if hello == _OPEN:
        return
    try:
        client_handshake(conn, None, None, hello)
    except _lazy_errors.if_loaded("AuthenticationError") as exc:
        conn._break(exc)  # (every later receive raises it again: poll() leaves it to them)
        raise


def _is_authenticated(conn: Any, authkey: bytes) -> bool:
    try:
        known = _authenticated.get(conn)
    except TypeError:  # an object that cannot be weakly referenced
        return False
    return known is not None and hmac.compare_digest(known, authkey)


def _remember(conn: Any, authkey: bytes) -> None:
    try:
        _authenticated[conn] = authkey
    except TypeError:
        pass


def _key_for(authkey: Any) -> bytes:
    key = check_authkey(authkey)
    if key is None:
        raise TypeError("authkey must be bytes, not None")
    return key


def deliver_challenge(connection: Any, authkey: bytes, digest_name: str = _DIGEST) -> None:
    """Check that the peer holds ``authkey`` (the listener's side of the handshake).

    The peer must call :func:`answer_challenge` (or be a ``Client`` with the same
    key). proctor's handshake authenticates both ways at once: this side proves
    that it holds the key too, so a following ``answer_challenge`` on this
    connection (what a ``multiprocessing`` program calls next) returns at once.

    Args:
        connection: a ``Connection``, or any object with ``send_bytes(data)`` and
            ``recv_bytes(maxlength)``.
        authkey: the shared key (bytes).
        digest_name: the HMAC digest, a name ``hashlib`` knows (``"sha256"``,
            ``"sha512"``, ``"blake2b"``...); MD5 and SHA-1 are refused.

    Raises:
        AuthenticationError: the peer does not hold the key, or sent anything but
            the expected reply (nothing of it is unpickled).
        TypeError: ``authkey`` is not bytes.
        ValueError: ``digest_name`` is not one of the digests above.
    """
    key = _key_for(authkey)
    if not isinstance(digest_name, str) or digest_name not in _DIGESTS:
        raise ValueError(
            f"digest_name must be one of {', '.join(sorted(_DIGESTS))}, not {digest_name!r}"
        )
    if _is_authenticated(connection, key):
        return
    serve_handshake(connection, key, None, digest_name)
    _remember(connection, key)


def answer_challenge(connection: Any, authkey: bytes) -> None:
    """Prove to the peer that this side holds ``authkey`` (the client's side).

    The peer must call :func:`deliver_challenge` (or be a ``Listener`` with the
    same key). Both ways at once, as for :func:`deliver_challenge`.

    Args:
        connection: a ``Connection`` (a keyless ``Client()``'s included), or any
            object with ``send_bytes(data)`` and ``recv_bytes(maxlength)``.
        authkey: the shared key (bytes).

    Raises:
        AuthenticationError: the peer does not hold the key, or sent anything but
            the expected messages.
        TypeError: ``authkey`` is not bytes.
    """
    key = _key_for(authkey)
    if _is_authenticated(connection, key):
        return
    hello = None
    if isinstance(connection, Connection) and connection._greeting is not None:
        # A keyless Client's connection: its greeting is still to be read, and
        # an open listener's is followed by the challenge of its deliver_challenge.
        connection._greeting = None
        connection._can_recv = connection._readable and connection._broken is None
        hello = _recv_step(connection, None, "listener")
        if hello == _OPEN:
            hello = None
    client_handshake(connection, key, None, hello)
    _remember(connection, key)
