"""``Listener`` and ``Client``: connections between unrelated processes, over Unix or TCP sockets.

A ``Listener`` binds a socket (a path, or a Linux abstract name, for
``AF_UNIX``; a ``(host, port)`` for TCP) and ``accept()`` returns a
``Connection`` per client, after the handshake (``_handshake``): with an
``authkey``, both sides prove they hold it before either returns, so a peer
without the key never gets one of its objects unpickled::

    Listener(address, family, authkey)          Client(address, family, authkey)
      bind, listen                    ◀─ connect ─  socket
      accept() ─▶ serve_handshake ─── greeting ──▶  with a key: client_handshake,
                  (HMAC both ways)    ◀── proof ──    before Client() returns;
      ◀─ Connection                   ── welcome ▶  without: checked at the first
                                                      receive (check_greeting)
                                                    ─▶ Connection

Also the stdlib's address helpers: ``families``, ``default_family``,
``address_type()``.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import time
from typing import Any

from .._core import _lazy_errors
from .._core._integers import integral
from .._core._timeout import deadline as _deadline
from .._core._wakeup import wait_readable, wake_waiters
from ._connection import Connection, configure_socket
from ._handshake import check_authkey, check_greeting, client_handshake, serve_handshake

__all__ = ("Client", "Listener", "address_type", "default_family", "families")

_FAMILIES = {
    "AF_UNIX": socket.AF_UNIX,
    "AF_INET": socket.AF_INET,
    "AF_INET6": socket.AF_INET6,
}

#: The address families a ``Listener`` takes with no address, as the stdlib lists
#: them (``Listener(family=f)`` works for each). ``"AF_INET6"`` works too where
#: the machine has IPv6, and is left out as the stdlib leaves it out.
families = ["AF_INET", "AF_UNIX"]
#: The family of ``Listener()`` with no address and no family.
default_family = "AF_UNIX"


def address_type(address: Any) -> str:
    """Return the address family of ``address``, as a string (``"AF_UNIX"``...).

    A ``(host, port)`` tuple is ``"AF_INET"``, or ``"AF_INET6"`` when the host is
    an IPv6 address (a proctor addition: the stdlib says ``"AF_INET"`` for both); a
    path (``str``, ``bytes``, ``os.PathLike``) or a Linux abstract name is
    ``"AF_UNIX"``; a string starting with two backslashes is a Windows named pipe,
    ``"AF_PIPE"``, which proctor does not support.

    Raises:
        ValueError: ``address`` is none of those (as ``multiprocessing`` raises).
    """
    if isinstance(address, tuple):
        if len(address) not in (2, 4) or not isinstance(address[0], str):
            raise ValueError(f"a TCP address is a (host, port) tuple, got {address!r}")
        return "AF_INET6" if ":" in address[0] else "AF_INET"
    if isinstance(address, str) and address.startswith("\\\\"):
        return "AF_PIPE"
    if isinstance(address, (str, bytes, os.PathLike)):
        return "AF_UNIX"
    raise ValueError(
        f"address type of {address!r} unrecognized: an address is a (host, port) tuple "
        "for TCP or a path for a Unix socket"
    )


def _family_name(family: Any) -> str:
    if isinstance(family, str):
        if family == "AF_PIPE":
            raise ValueError(_NO_PIPES.format(what="family 'AF_PIPE'"))
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


_NO_PIPES = (
    "{what} is a Windows named pipe, which this platform does not have; use a "
    "filesystem path (a Unix socket) or a (host, port) tuple here"
)


def _family_of_address(address: Any) -> str:
    if not isinstance(address, (tuple, str, bytes, os.PathLike)):
        raise TypeError(
            "address must be a (host, port) tuple for TCP or a path for a Unix socket, "
            f"not {address!r}"
        )
    family = address_type(address)
    if family == "AF_PIPE":
        raise ValueError(_NO_PIPES.format(what=f"address {address!r}"))
    return family


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
        ValueError: an unknown family, a family that does not match ``address``,
            or a Windows named-pipe address (``r"\\\\.\\pipe\\name"``).
        OSError: the address cannot be bound (in use, no permission).
    """

    def __init__(
        self,
        address: Any = None,
        family: Any = None,
        backlog: int = 1,
        authkey: bytes | None = None,
    ) -> None:
        self._authkey = check_authkey(authkey)
        backlog = integral(backlog)
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
        # The wake-ups of the threads blocked in accept(), which close() writes to
        # (see _core._wakeup).
        self._waiting: set[Any] = set()
        if address is None:
            if family == "AF_UNIX":
                self._tempdir = tempfile.mkdtemp(prefix="proctor-listener-")
                address = os.path.join(self._tempdir, "socket")
            else:
                address = ("127.0.0.1", 0) if family == "AF_INET" else ("::1", 0)
        sock = socket.socket(_FAMILIES[family], socket.SOCK_STREAM)
        try:
            # Non-blocking (whatever socket.setdefaulttimeout() says): accept()
            # waits in _core._wakeup, which another thread's close() ends, and a
            # client taken by another process meanwhile sends it back to waiting.
            sock.setblocking(False)
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
            raise self._closed_error()
        return self._socket.fileno()

    def _closed_error(self) -> OSError:
        return OSError(errno.EBADF, "the Listener is closed; create a new one")

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
            OSError: the listener is closed, also by another thread while this
                call waits for a client (it then raises at once).
        """
        if self._closed:
            raise self._closed_error()
        deadline = _deadline(timeout)
        conn = self._accept_socket(deadline)
        if conn is None:
            raise _lazy_errors.ProcessTimeoutError(
                f"no client connected to {self._address!r} within {timeout} s"
            )
        try:
            serve_handshake(conn, self._authkey, deadline)
        except BaseException:
            conn.close()
            raise
        return conn

    def accept_then_handshake(self) -> tuple[Connection, Any]:
        """Accept a waiting client; return its connection and the handshake to run.

        For servers that run each client's handshake in that client's own thread,
        so that a slow or silent client does not hold up the next ones: call the
        returned function (it takes a ``time.monotonic()`` deadline, or ``None``)
        before anything else on the connection, and close the connection if it
        raises ``AuthenticationError``. The caller should know the listening
        socket is readable (``fileno()``), or this blocks until a client comes.

        Raises:
            OSError: the listener is closed (also by another thread meanwhile).
        """
        if self._closed:
            raise self._closed_error()
        conn = self._accept_socket(None)
        assert conn is not None  # (no deadline)
        authkey = self._authkey

        def handshake(deadline: float | None) -> None:
            serve_handshake(conn, authkey, deadline)

        return conn, handshake

    def _accept_socket(self, deadline: float | None) -> Connection | None:
        """The next client's connection, or None if none came by ``deadline``."""
        listening = self._socket
        while True:
            try:
                sock, address = listening.accept()  # (non-blocking)
                break
            except BlockingIOError:
                pass
            except OSError:
                if self._closed:  # (by another thread meanwhile)
                    raise self._closed_error() from None
                raise
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready = wait_readable((listening.fileno(),), timeout, (self,))
            except OSError:
                if self._closed:
                    raise self._closed_error() from None
                raise
            if self._closed:
                raise self._closed_error()
            if not ready and deadline is not None and time.monotonic() >= deadline:
                return None
        self._last_accepted = address
        try:
            _tune(sock, self._family)
        except BaseException:
            sock.close()
            raise
        return Connection(sock)

    def close(self) -> None:
        """Stop listening and remove the Unix socket file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._waiting:
            wake_waiters(self._waiting)  # (before the number can go to a new file)
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

    With an ``authkey``, returns once both sides have proved they hold it (the
    listener must ``accept()`` first). Without one, returns as soon as it is
    connected, as ``multiprocessing``'s ``Client`` does: sends go out at once,
    and the first receive (or ``poll()``, ``wait()``) first reads the listener's
    greeting, raising ``AuthenticationError`` there if the listener requires a key.

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
        AuthenticationError: the keys differ, or the listener has none while
            this client has one. Nothing from the peer has been unpickled.
        ConnectionRefusedError, FileNotFoundError: nothing listens at ``address``.
        TypeError: bad argument types.
        ValueError: bad argument values, a Windows named-pipe address.
    """
    authkey = check_authkey(authkey)
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
    if authkey is None:
        # Nothing to prove: return at once, as multiprocessing's Client does (one
        # thread may connect and then accept). The first receive checks the
        # listener's greeting (see _handshake).
        conn._greeting = check_greeting
        conn._can_recv = False
        return conn
    try:
        client_handshake(conn, authkey, deadline)
    except BaseException:
        conn.close()
        raise
    return conn
