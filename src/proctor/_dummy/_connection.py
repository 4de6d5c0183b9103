"""``Pipe``, ``Listener`` and ``Client`` between the threads of this process.

::

    Pipe()                     Connection a ── _Channel (a's outbox, b's inbox) ──▶ b
                               Connection a ◀── _Channel (b's outbox, a's inbox) ── b
    Listener(address)          registry: address -> Listener (weakly)
    Client(address) ─────────▶ listener's pending deque ──▶ accept(): the other end

A ``_Channel`` is a deque under a condition, with two flags: its writer closed
(the reader gets what is left, then ``EOFError``) and its reader closed (the
writer's ``send()`` raises ``BrokenPipeError``). An end that is closed, or dropped
without ``close()`` and collected, sets both flags of its channels and wakes their
waiters, so a peer's wait never outlives it. Objects are passed as they are,
never pickled (as ``multiprocessing.dummy``'s); ``send_bytes()`` copies its bytes.
"""

from __future__ import annotations

import collections
import errno
import itertools
import threading
import time
import weakref

from .._connections._connection import checked_view
from .._connections._handshake import check_authkey
from .._core._errors import AuthenticationError, BufferTooShort, ProcessTimeoutError, ProtocolError
from .._core._timeout import check_timeout
from ._sync import wait_seconds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Hashable
    from typing import Any

__all__ = ("Client", "Connection", "Listener", "Pipe", "families")

#: The address families: one, this process (``multiprocessing.dummy``'s ``[None]``).
families: list[str | None] = [None]

#: Family names accepted, and ignored, so that code written for sockets runs.
_KNOWN_FAMILIES = (None, "AF_INET", "AF_INET6", "AF_UNIX", "AF_PIPE")


def _deadline(timeout: Any) -> float | None:
    seconds = wait_seconds(timeout)
    return None if seconds is None else time.monotonic() + seconds


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


class _Channel:
    """One direction between two ends: messages, and whether either end has gone."""

    __slots__ = ("cond", "items", "reader_gone", "writer_gone")

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.items: collections.deque[Any] = collections.deque()
        self.writer_gone = False
        self.reader_gone = False

    def put(self, item: Any) -> None:
        with self.cond:
            if self.reader_gone:
                raise BrokenPipeError(
                    errno.EPIPE, "the other end of the connection was closed: nothing can be sent"
                )
            self.items.append(item)
            self.cond.notify()

    def close_writer(self) -> None:
        with self.cond:
            self.writer_gone = True
            self.cond.notify_all()

    def close_reader(self) -> None:
        with self.cond:
            self.reader_gone = True
            self.items.clear()
            self.cond.notify_all()


def _close_channels(inbox: _Channel | None, outbox: _Channel | None) -> None:
    if inbox is not None:
        inbox.close_reader()
    if outbox is not None:
        outbox.close_writer()


def _byte_message(buf: Any, offset: Any, size: Any) -> bytes:
    """What ``send_bytes(buf, offset, size)`` sends, checked as a process connection's."""
    return bytes(checked_view(buf, offset, size))


class Connection:
    """One end of a ``Pipe()`` or of a ``Listener``/``Client`` pair, within this process.

    The API of ``multiprocessing.connection.Connection`` with proctor's additions
    (``timeout=`` on the receives, ``closed``/``readable``/``writable``); made by
    ``Pipe()``, ``Listener.accept()`` and ``Client()``.

    Note:
        Objects travel as they are, not pickled: the receiver gets the very
        object sent. ``send_bytes()`` sends a copy of the bytes, so the sender may
        reuse its buffer; given an object that is not bytes-like it sends the
        object itself (as ``multiprocessing.dummy`` does), which ``recv()`` and
        ``recv_bytes()`` then return as it is. There is no ``fileno()``: these
        ends are not descriptors, so ``multiprocessing.connection.wait()`` and
        ``select()`` cannot watch them; ``poll(timeout)`` does.
    """

    def __init__(self, inbox: _Channel | None, outbox: _Channel | None) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._closed = False  # for every thread: the peer sees EOF
        # The threads holding this end (see "Holders" in docs/dummy.md), as each
        # process holds its own copy of a pipe end; the end closes when the last
        # lets go. Those that let go with close() may no longer use it.
        self._holds_lock = threading.Lock()
        self._holders = {threading.current_thread()}
        self._released: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
        # Also run when the end is collected without close(): its peer sees EOF.
        self._finalizer = weakref.finalize(self, _close_channels, inbox, outbox)

    # -- holders -------------------------------------------------------------------

    def _hold(self, thread: threading.Thread) -> None:
        """``thread`` (a ``DummyProcess`` given this end) holds it too, until it ends."""
        with self._holds_lock:
            if not self._closed:
                self._holders.add(thread)

    def _adopt(self) -> None:
        """The calling thread becomes the only holder (``Listener.accept()``)."""
        with self._holds_lock:
            self._holders = {threading.current_thread()}

    def _let_go(self, thread: threading.Thread, ended: bool) -> None:
        """``thread`` lets go of this end: by ``close()``, or (``ended``) by ending."""
        with self._holds_lock:
            if thread in self._holders:
                self._holders.discard(thread)
                if not ended:
                    self._released.add(thread)
            elif ended:
                return
            else:
                self._holders.clear()  # close() by a thread that was never a holder
            if self._holders or self._closed:
                return
            self._closed = True
        self._finalizer()

    # -- state ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether this end is closed for the calling thread (it called ``close()``,
        or every holder let go)."""
        return self._closed or (
            bool(self._released) and threading.current_thread() in self._released
        )

    @property
    def readable(self) -> bool:
        """Whether this end can receive."""
        return self._inbox is not None

    @property
    def writable(self) -> bool:
        """Whether this end can send."""
        return self._outbox is not None

    def close(self) -> None:
        """Close this end for the calling thread; idempotent.

        Once no thread holds the end any more, the peer receives what was sent,
        then ``EOFError``, and its sends raise ``BrokenPipeError``. The holders
        are the thread that made the end and each ``DummyProcess`` started with
        it among its arguments, until that thread ends: so a parent may close its
        copy right after ``start()``, as with processes. A ``close()`` by a thread
        that does not hold the end closes it for all.
        """
        self._let_go(threading.current_thread(), ended=False)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError(
            "a proctor.dummy Connection joins threads of one process and cannot be pickled "
            "or sent to another process; use proctor.Pipe() between processes"
        )

    def __repr__(self) -> str:
        if self.closed:
            return "<proctor.dummy.Connection closed>"
        if self.readable and self.writable:
            mode = "duplex"
        elif self.readable:
            mode = "read-only"
        else:
            mode = "write-only"
        return f"<proctor.dummy.Connection {mode}>"

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(
                errno.EBADF,
                "the Connection is closed (close() was called on this end by every thread "
                "that held it); open a new Pipe",
            )
        if self._released and threading.current_thread() in self._released:
            raise OSError(
                errno.EBADF,
                "the Connection is closed in this thread (it called close() on this end); "
                "open a new Pipe",
            )

    def _writer(self) -> _Channel:
        self._check_open()
        if self._outbox is None:
            raise OSError(
                "this Connection is read-only (the receiving end of Pipe(duplex=False)); "
                "send on the other end"
            )
        return self._outbox

    def _reader(self) -> _Channel:
        self._check_open()
        if self._inbox is None:
            raise OSError(
                "this Connection is write-only (the sending end of Pipe(duplex=False)); "
                "receive on the other end"
            )
        return self._inbox

    # -- sending -------------------------------------------------------------------

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Send ``obj`` itself to the other end (it is not copied).

        Args:
            obj: any object.
            timeout: accepted for proctor's ``Connection.send`` signature; a send
                here never waits.

        Raises:
            BrokenPipeError: the other end is closed.
            OSError: this end is closed or read-only.
            TypeError: ``timeout`` is not a number or ``None``.
        """
        if timeout is not None:
            check_timeout(timeout)
        self._writer().put(obj)

    def send_bytes(
        self,
        buf: Any,
        offset: int = 0,
        size: int | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        """Send a copy of bytes from a bytes-like object.

        Args:
            buf: a bytes-like object (see the class's note for other objects).
            offset: where to start, in bytes.
            size: how many bytes to send; ``None`` sends to the end of ``buf``.
            timeout: as for :meth:`send`.

        Raises:
            TypeError: ``offset``/``size`` given with an object that is not
                bytes-like, or not ints.
            ValueError: ``offset``/``size`` are negative or run past ``buf``'s end.
            BrokenPipeError, OSError: as for :meth:`send`.
        """
        check_timeout(timeout)
        outbox = self._writer()
        try:
            message = _byte_message(buf, offset, size)
        except TypeError:
            if isinstance(buf, (bytes, bytearray, memoryview)) or offset != 0 or size is not None:
                raise
            # multiprocessing.dummy sends any object; programs echo what
            # recv_bytes() returned (the object sent with send()) this way.
            message = buf
        outbox.put(message)

    # -- receiving -----------------------------------------------------------------

    def _take(self, timeout: Any, keep: Any = None) -> Any:
        inbox = self._reader()
        deadline = None if timeout is None else _deadline(timeout)
        with inbox.cond:
            while not inbox.items:
                if self._closed:
                    self._check_open()  # closed by another thread while waiting
                if inbox.writer_gone:
                    raise EOFError("the other end of the connection was closed")
                left = _left(deadline)
                if left == 0.0:
                    raise ProcessTimeoutError(
                        f"no message arrived on {self!r} within {timeout} s; the other "
                        "end is open but has not sent (pass a longer timeout, or "
                        "timeout=None to wait for ever)"
                    )
                inbox.cond.wait(left)
            if keep is not None:
                keep(inbox.items[0])  # raises to leave the message where it is
            return inbox.items.popleft()

    def recv(self, *, timeout: float | None = None) -> Any:
        """Receive the next object sent; block until one arrives.

        Args:
            timeout: seconds to wait (``None``: for ever); a proctor addition.

        Raises:
            EOFError: the other end was closed (or collected) and nothing is left.
            ProcessTimeoutError: nothing arrived within ``timeout``.
            OSError: this end is closed or write-only.
            TypeError: ``timeout`` is not a number or ``None``.
        """
        return self._take(timeout)

    def recv_bytes(self, maxlength: int | None = None, *, timeout: float | None = None) -> Any:
        """Receive the next message sent with ``send_bytes()``.

        Args:
            maxlength: refuse a message longer than this many bytes.
            timeout: as for :meth:`recv`.

        Returns:
            The bytes (or the object itself, if one was sent; see the class's note).

        Raises:
            ProtocolError: (an ``OSError``) the message is longer than
                ``maxlength``; it stays in the connection, to be received whole.
            EOFError, ProcessTimeoutError, OSError, TypeError: as for :meth:`recv`.
        """
        if maxlength is not None:
            if isinstance(maxlength, bool) or not isinstance(maxlength, int):
                raise TypeError(f"maxlength must be an int or None, not {maxlength!r}")
            if maxlength < 0:
                raise ValueError(f"maxlength must be >= 0, got {maxlength}")

        def fits(message: Any) -> None:
            if isinstance(message, bytes) and len(message) > maxlength:  # type: ignore[operator]
                raise ProtocolError(
                    f"the next message has {len(message)} bytes, more than maxlength="
                    f"{maxlength}; it was left in the connection"
                )

        return self._take(timeout, None if maxlength is None else fits)

    def recv_bytes_into(self, buf: Any, offset: int = 0, *, timeout: float | None = None) -> int:
        """Receive the next message into a writable buffer, starting at byte ``offset``.

        Returns:
            The message's length in bytes.

        Raises:
            BufferTooShort: the message does not fit; it is in ``args[0]``.
            TypeError: ``buf`` is not a writable bytes-like object, or the message
                is an object sent with ``send()`` (it stays in the connection).
            ValueError: ``offset`` is negative or past the end of ``buf``.
            EOFError, ProcessTimeoutError, OSError: as for :meth:`recv`.
        """
        view = memoryview(buf).cast("B")
        if view.readonly:
            raise TypeError(f"buf must be writable, got a read-only {type(buf).__name__}")
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be an int, not {offset!r}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if offset > view.nbytes:
            raise ValueError(f"offset {offset} is past the end of the {view.nbytes}-byte buffer")

        def is_bytes(message: Any) -> None:
            if not isinstance(message, bytes):
                raise TypeError(
                    f"the next message is a {type(message).__name__} sent with send(), not "
                    "bytes; it was left in the connection: receive it with recv()"
                )

        message = self._take(timeout, is_bytes)
        n = len(message)
        if n > view.nbytes - offset:
            raise BufferTooShort(message)
        view[offset : offset + n] = message
        return n

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Return whether a message (or end-of-file) is ready to be received.

        Args:
            timeout: seconds to wait; ``0`` (or less) checks and returns at once,
                ``None`` waits for ever.

        Raises:
            OSError: this end is closed or write-only.
            TypeError: ``timeout`` is not a number or ``None``.
        """
        inbox = self._reader()
        deadline = _deadline(timeout)
        with inbox.cond:
            while not (inbox.items or inbox.writer_gone or self._closed):
                left = _left(deadline)
                if left == 0.0:
                    return False
                inbox.cond.wait(left)
            self._check_open()
            return True


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """Return the two ends of a new in-process connection.

    Args:
        duplex: ``True`` for two ends that both send and receive; ``False`` for
            ``(reader, writer)``: the first only receives, the second only sends.
    """
    forth = _Channel()
    if not duplex:
        return Connection(forth, None), Connection(None, forth)
    back = _Channel()
    return Connection(forth, back), Connection(back, forth)


_registry_lock = threading.Lock()
#: address -> its Listener; weakly, so a listener dropped without close() frees it.
_listeners: weakref.WeakValueDictionary[Any, Listener] = weakref.WeakValueDictionary()
_counter = itertools.count(1)


class Listener:
    """Accepts ``Client(address)`` connections from threads of this process.

    Args:
        address: any hashable name (``("localhost", 6000)``, ``"jobs"``...) that
            ``Client`` will use; ``None`` makes a new one (``address`` property).
        family: ``None``, or a socket family name, accepted and ignored.
        backlog: accepted for the signature (an int >= 0); connections are
            never refused for want of room.
        authkey: bytes that a ``Client`` must give too, or ``None``.

    Raises:
        OSError: (``EADDRINUSE``) another open ``Listener`` has this address.
        TypeError: ``address`` is not hashable, ``backlog`` not an int, or
            ``authkey`` not bytes.
        ValueError: an unknown ``family``, or a negative ``backlog``.
    """

    def __init__(
        self,
        address: Hashable | None = None,
        family: str | None = None,
        backlog: int = 1,
        authkey: bytes | None = None,
    ) -> None:
        if family not in _KNOWN_FAMILIES:
            raise ValueError(f"family must be one of {_KNOWN_FAMILIES}, not {family!r}")
        if isinstance(backlog, bool) or not isinstance(backlog, int):
            raise TypeError(f"backlog must be an int, not {backlog!r}")
        if backlog < 0:
            raise ValueError(f"backlog must be >= 0, got {backlog}")
        self._authkey = check_authkey(authkey)
        self._cond = threading.Condition(threading.Lock())
        self._pending: collections.deque[Connection] = collections.deque()
        self._closed = False
        with _registry_lock:
            if address is None:
                address = f"proctor.dummy-listener-{next(_counter)}"
            try:
                taken = address in _listeners
            except TypeError:
                raise TypeError(
                    f"address must be hashable (a str or a tuple), not {type(address).__name__}"
                ) from None
            if taken:
                raise OSError(
                    errno.EADDRINUSE,
                    f"another proctor.dummy Listener is open at {address!r}; close it first "
                    "or pick another address",
                )
            _listeners[address] = self
        self._address = address

    @property
    def address(self) -> Hashable:
        """The address that ``Client`` connects to."""
        return self._address

    @property
    def last_accepted(self) -> None:
        """``None``: in-process clients have no address of their own."""
        return None

    def accept(self, timeout: float | None = None) -> Connection:
        """Wait for a ``Client`` and return the connection to it.

        Args:
            timeout: seconds to wait (``None``: for ever); a proctor addition.

        Raises:
            ProcessTimeoutError: no client came within ``timeout``.
            OSError: the listener is closed (also by another thread while waiting).
            TypeError: ``timeout`` is not a number or ``None``.
        """
        deadline = _deadline(timeout)
        with self._cond:
            while not self._pending:
                self._check_open()
                left = _left(deadline)
                if left == 0.0:
                    raise ProcessTimeoutError(f"no client connected to {self!r} within {timeout} s")
                self._cond.wait(left)
            self._check_open()
            conn = self._pending.popleft()
        conn._adopt()
        return conn

    def _connect(self, authkey: bytes | None) -> Connection:
        if authkey != self._authkey:
            raise AuthenticationError(
                f"the authkey given to Client() is not the one of the Listener at "
                f"{self._address!r}" + (" (which has none)" if self._authkey is None else "")
            )
        mine, theirs = Pipe()
        with self._cond:
            self._check_open()
            self._pending.append(mine)
            self._cond.notify()
        return theirs

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"{self!r} is closed")

    def close(self) -> None:
        """Stop listening; clients not yet accepted see their connection closed. Idempotent."""
        with _registry_lock:
            if _listeners.get(self._address) is self:
                del _listeners[self._address]
        with self._cond:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for conn in pending:
            conn.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError("a proctor.dummy Listener cannot be pickled or sent to another process")

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<proctor.dummy.Listener address={self._address!r}{state}>"


def Client(
    address: Hashable, family: str | None = None, authkey: bytes | None = None
) -> Connection:
    """Connect to the ``Listener`` at ``address`` in this process.

    Returns at once: the listener's ``accept()`` returns the other end.

    Raises:
        ConnectionRefusedError: no open ``Listener`` has this address.
        AuthenticationError: ``authkey`` is not the listener's.
        TypeError: ``address`` is not hashable, or ``authkey`` not bytes.
        ValueError: an unknown ``family``.
    """
    if family not in _KNOWN_FAMILIES:
        raise ValueError(f"family must be one of {_KNOWN_FAMILIES}, not {family!r}")
    key = check_authkey(authkey)
    with _registry_lock:
        try:
            listener = _listeners.get(address)
        except TypeError:
            raise TypeError(
                f"address must be hashable (a str or a tuple), not {type(address).__name__}"
            ) from None
    if listener is None:
        raise ConnectionRefusedError(
            errno.ECONNREFUSED,
            f"no proctor.dummy Listener is open at {address!r} in this process (proctor.dummy "
            "connects threads; use proctor.connection.Client for other processes)",
        )
    try:
        return listener._connect(key)
    except OSError:
        raise ConnectionRefusedError(
            errno.ECONNREFUSED, f"the proctor.dummy Listener at {address!r} was closed"
        ) from None
