"""``Listener`` and ``Client``: connections between unrelated processes, over Unix or TCP sockets.

With an ``authkey``, both sides prove they hold it before either returns a
``Connection``, so a peer without the key never gets one of its objects
unpickled. The handshake uses raw byte frames only (``send_bytes`` /
``recv_bytes`` with a small ``maxlength``), never pickle::

    Listener.accept()                               Client(address, authkey=key)
    ─────────────────                               ────────────────────────────
    HELLO  "PROCTOR/1 AUTH" + server_nonce   ──▶
                                             ◀──    PROOF "PROCTOR/1 PROOF" + client_nonce
                                                          + HMAC(key, "client" + server_nonce
                                                                      + client_nonce)
    compare_digest; wrong ──▶ "PROCTOR/1 DENIED",
        raise AuthenticationError
    right ──▶ WELCOME "PROCTOR/1 WELCOME"                 compare_digest; wrong or DENIED:
                 + HMAC(key, "server" + client_nonce           raise AuthenticationError
                             + server_nonce)
    return Connection                                return Connection

Nonces are 32 random bytes from ``os.urandom``; the digest is HMAC-SHA256; the
"client"/"server" labels stop a peer from reflecting one side's proof back to
it. Without an authkey the listener says ``"PROCTOR/1 OPEN"``, and a client that
does hold a key refuses it (it will not send objects to an unauthenticated
peer), while a client without a key is refused by a listener that needs one:
both with ``AuthenticationError`` naming the mismatch.
"""

from __future__ import annotations

import errno
import hmac
import os
import shutil
import socket
import tempfile
import time
from typing import Any

from .._core._errors import AuthenticationError, ProcessTimeoutError, ProtocolError
from .._core._timeout import deadline as _deadline
from .._core._timeout import wait_readable as _poll_fd
from ._connection import Connection, configure_socket

__all__ = ("Client", "Listener")

# How long one side waits for the other's next handshake message before giving
# up: a peer that connects and then says nothing must not block accept() forever.
_HANDSHAKE_TIMEOUT = 30.0
# No handshake message is longer than this; a longer one is refused unread.
_HANDSHAKE_MAXLENGTH = 256
_NONCE_SIZE = 32
_DIGEST = "sha256"
_DIGEST_SIZE = 32

_PREFIX = b"PROCTOR/1 "
_OPEN = _PREFIX + b"OPEN"
_AUTH = _PREFIX + b"AUTH "
_NOKEY = _PREFIX + b"NOKEY"
_PROOF = _PREFIX + b"PROOF "
_DENIED = _PREFIX + b"DENIED"
_WELCOME = _PREFIX + b"WELCOME "

_FAMILIES = {
    "AF_UNIX": socket.AF_UNIX,
    "AF_INET": socket.AF_INET,
    "AF_INET6": socket.AF_INET6,
}


def _family_name(family: Any) -> str:
    if isinstance(family, str):
        if family not in _FAMILIES:
            raise ValueError(
                f"unknown address family {family!r}; use one of {', '.join(sorted(_FAMILIES))}"
            )
        return family
    if isinstance(family, int) and not isinstance(family, bool):
        for name, value in _FAMILIES.items():
            if family == value:
                return name
        raise ValueError(f"unsupported address family {family!r}")
    raise TypeError(f"family must be a string such as 'AF_UNIX', not {family!r}")


def _family_of_address(address: Any) -> str:
    if isinstance(address, tuple):
        if len(address) not in (2, 4) or not isinstance(address[0], str):
            raise ValueError(f"a TCP address is a (host, port) tuple, got {address!r}")
        return "AF_INET6" if ":" in address[0] else "AF_INET"
    if isinstance(address, (str, bytes, os.PathLike)):
        return "AF_UNIX"
    raise TypeError(
        f"address must be a (host, port) tuple for TCP or a path for a Unix socket, not {address!r}"
    )


def _check_authkey(authkey: Any) -> bytes | None:
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


def _digest(key: bytes, label: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(key, label + first + second, _DIGEST).digest()


def _recv_step(conn: Connection, deadline: float | None, peer: str) -> bytes:
    wait = _remaining(deadline)
    try:
        return conn.recv_bytes(_HANDSHAKE_MAXLENGTH, timeout=wait)
    except ProcessTimeoutError:
        if deadline is not None and wait < _HANDSHAKE_TIMEOUT:
            raise ProcessTimeoutError(
                f"the {peer} did not complete the connection handshake within the timeout"
            ) from None
        raise AuthenticationError(
            f"the {peer} said nothing for {_HANDSHAKE_TIMEOUT:g} s during the connection "
            "handshake; it is not a proctor peer, or it is stuck"
        ) from None
    except ProtocolError as exc:
        raise AuthenticationError(
            f"the {peer} sent something that is not a proctor handshake message ({exc})"
        ) from None
    except EOFError:
        raise AuthenticationError(
            f"the {peer} closed the connection during the handshake"
        ) from None


def _serve_handshake(conn: Connection, authkey: bytes | None, deadline: float | None) -> None:
    """The listener's side of the handshake; returns only when the client is trusted."""
    if authkey is None:
        conn.send_bytes(_OPEN)
        return
    server_nonce = os.urandom(_NONCE_SIZE)
    conn.send_bytes(_AUTH + server_nonce)
    reply = _recv_step(conn, deadline, "client")
    if reply == _NOKEY:
        raise AuthenticationError(
            "a client without an authkey tried to connect to a listener that requires "
            "one; give the Client the same authkey as the Listener"
        )
    expected_size = len(_PROOF) + _NONCE_SIZE + _DIGEST_SIZE
    if not reply.startswith(_PROOF) or len(reply) != expected_size:
        conn.send_bytes(_DENIED)
        raise AuthenticationError("the client sent a malformed authentication reply")
    client_nonce = reply[len(_PROOF) : len(_PROOF) + _NONCE_SIZE]
    proof = reply[len(_PROOF) + _NONCE_SIZE :]
    if not hmac.compare_digest(proof, _digest(authkey, b"client", server_nonce, client_nonce)):
        try:
            conn.send_bytes(_DENIED)
        except OSError:
            pass  # the client may already be gone; it is refused either way
        raise AuthenticationError(
            "the client's authentication digest is wrong: it does not hold this listener's authkey"
        )
    conn.send_bytes(_WELCOME + _digest(authkey, b"server", client_nonce, server_nonce))


def _client_handshake(conn: Connection, authkey: bytes | None, deadline: float | None) -> None:
    """The client's side of the handshake; returns only when the listener is trusted."""
    hello = _recv_step(conn, deadline, "listener")
    if hello == _OPEN:
        if authkey is not None:
            raise AuthenticationError(
                "the listener does not authenticate its clients, but this Client was "
                "given an authkey; refusing to talk to an unauthenticated peer (give "
                "the Listener the same authkey, or drop it from the Client)"
            )
        return
    if not hello.startswith(_AUTH) or len(hello) != len(_AUTH) + _NONCE_SIZE:
        raise AuthenticationError("the peer is not a proctor Listener (unexpected greeting)")
    if authkey is None:
        try:
            conn.send_bytes(_NOKEY)
        except OSError:
            pass
        raise AuthenticationError(
            "the listener requires an authkey and this Client has none; pass "
            "authkey=<the listener's key>"
        )
    server_nonce = hello[len(_AUTH) :]
    client_nonce = os.urandom(_NONCE_SIZE)
    conn.send_bytes(_PROOF + client_nonce + _digest(authkey, b"client", server_nonce, client_nonce))
    reply = _recv_step(conn, deadline, "listener")
    if reply == _DENIED:
        raise AuthenticationError("the listener refused this Client's authkey: the two keys differ")
    expected = _WELCOME + _digest(authkey, b"server", client_nonce, server_nonce)
    if not hmac.compare_digest(reply, expected):
        raise AuthenticationError(
            "the listener failed to prove that it holds the authkey: the two keys differ "
            "or the peer is an impostor"
        )


def _tune(sock: socket.socket, family: str) -> None:
    configure_socket(sock)
    if family != "AF_UNIX":
        # Frames are written whole; Nagle's delay would only add latency.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Listener:
    """Accept ``Connection``s from ``Client``s over a Unix or TCP socket.

    Args:
        address: a path for a Unix socket, or a ``(host, port)`` tuple for TCP
            (port ``0`` picks a free one). ``None`` picks a fresh Unix socket path
            in a private temporary directory (or ``127.0.0.1`` and a free port
            for ``family="AF_INET"``).
        family: ``"AF_UNIX"``, ``"AF_INET"`` or ``"AF_INET6"``; ``None`` infers it
            from ``address``.
        backlog: how many connections may wait to be accepted.
        authkey: when given, only clients holding the same key are accepted
            (HMAC-SHA256 challenge in both directions).

    Raises:
        TypeError: an argument has the wrong type (``authkey`` must be bytes).
        ValueError: an unknown family, or a family that does not match ``address``.
        OSError: the address cannot be bound (in use, no permission).
    """

    def __init__(
        self,
        address: Any = None,
        family: Any = None,
        backlog: int = 1,
        authkey: bytes | None = None,
    ) -> None:
        self._authkey = _check_authkey(authkey)
        if isinstance(backlog, bool) or not isinstance(backlog, int):
            raise TypeError(f"backlog must be an int, not {backlog!r}")
        if backlog < 0:
            raise ValueError(f"backlog must be >= 0, got {backlog}")
        if family is not None:
            family = _family_name(family)
        if address is not None:
            inferred = _family_of_address(address)
            if family is None:
                family = inferred
            elif (family == "AF_UNIX") != (inferred == "AF_UNIX"):
                raise ValueError(f"address {address!r} does not match family {family!r}")
        family = family or "AF_UNIX"
        self._family = family
        self._tempdir: str | None = None
        self._unlink: str | None = None
        self._owner_pid = os.getpid()
        self._last_accepted: Any = None
        self._closed = False
        if address is None:
            if family == "AF_UNIX":
                self._tempdir = tempfile.mkdtemp(prefix="proctor-listener-")
                address = os.path.join(self._tempdir, "socket")
            else:
                address = ("127.0.0.1", 0) if family == "AF_INET" else ("::1", 0)
        sock = socket.socket(_FAMILIES[family], socket.SOCK_STREAM)
        try:
            if family != "AF_UNIX":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            if self._tempdir is not None:
                shutil.rmtree(self._tempdir, ignore_errors=True)
            raise
        self._socket = sock
        if family == "AF_UNIX":
            address = os.fsdecode(address)
            # Linux abstract-namespace names start with NUL and have no file to remove.
            if not address.startswith("\0"):
                self._unlink = address
            self._address = address
        else:
            self._address = sock.getsockname()

    @property
    def address(self) -> Any:
        """The address clients connect to (with the real port when 0 was asked)."""
        return self._address

    @property
    def last_accepted(self) -> Any:
        """The peer address of the last accepted connection (``''`` for Unix sockets)."""
        return self._last_accepted

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    def fileno(self) -> int:
        """The listening socket's descriptor (readable when a client is waiting)."""
        if self._closed:
            raise OSError(errno.EBADF, "the Listener is closed")
        return self._socket.fileno()

    def accept(self, timeout: float | None = None) -> Connection:
        """Wait for a client, run the handshake, and return the connection to it.

        Args:
            timeout: seconds to wait for a client and its handshake; ``None``
                waits forever for a client (each handshake step still gives up
                after 30 s of silence).

        Returns:
            A duplex ``Connection``; with an authkey, the client has proved it
            holds the key.

        Raises:
            AuthenticationError: the client does not hold the authkey (or has none,
                or holds one while this listener has none). The listener stays usable.
            ProcessTimeoutError: no client connected within ``timeout``.
            OSError: the listener is closed.
        """
        if self._closed:
            raise OSError(errno.EBADF, "the Listener is closed; create a new one")
        deadline = _deadline(timeout)
        if deadline is not None and not _poll_fd(
            self._socket.fileno(), max(0.0, deadline - time.monotonic())
        ):
            raise ProcessTimeoutError(
                f"no client connected to {self._address!r} within {timeout} s"
            )
        sock, self._last_accepted = self._socket.accept()
        try:
            _tune(sock, self._family)
        except BaseException:
            sock.close()
            raise
        conn = Connection(sock)
        try:
            _serve_handshake(conn, self._authkey, deadline)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Stop listening and remove the Unix socket file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._socket.close()
        # A forked child holding a copy must not delete its parent's socket file.
        if os.getpid() == self._owner_pid:
            if self._unlink is not None:
                try:
                    os.unlink(self._unlink)
                except FileNotFoundError:
                    pass
            if self._tempdir is not None:
                shutil.rmtree(self._tempdir, ignore_errors=True)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "listening"
        auth = " authkey" if self._authkey is not None else ""
        return f"<proctor.Listener {self._family} address={self._address!r} {state}{auth}>"


def Client(
    address: Any,
    family: Any = None,
    authkey: bytes | None = None,
    *,
    timeout: float | None = None,
) -> Connection:
    """Connect to a ``Listener`` and return the connection.

    Args:
        address: the listener's ``address``.
        family: ``"AF_UNIX"``, ``"AF_INET"`` or ``"AF_INET6"``; ``None`` infers it.
        authkey: the listener's key; ``None`` when it has none.
        timeout: seconds for connecting and the handshake; ``None`` waits as
            long as the OS does to connect (each handshake step gives up after
            30 s of silence).

    Returns:
        A duplex ``Connection``.

    Raises:
        AuthenticationError: the keys differ, or one side has a key and the
            other none. Nothing from the peer has been unpickled.
        ConnectionRefusedError, FileNotFoundError: nothing listens at ``address``.
        TypeError, ValueError: bad arguments.
    """
    authkey = _check_authkey(authkey)
    inferred = _family_of_address(address)
    if family is None:
        family = inferred
    else:
        family = _family_name(family)
        if (family == "AF_UNIX") != (inferred == "AF_UNIX"):
            raise ValueError(f"address {address!r} does not match family {family!r}")
    deadline = _deadline(timeout)
    sock = socket.socket(_FAMILIES[family], socket.SOCK_STREAM)
    try:
        if deadline is not None:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.connect(address)
        sock.settimeout(None)
        _tune(sock, family)
    except BaseException:
        sock.close()
        raise
    conn = Connection(sock)
    try:
        _client_handshake(conn, authkey, deadline)
    except BaseException:
        conn.close()
        raise
    return conn
