"""A process's link to one manager: its client id, its connections, its references.

::

    this process                                   manager process
    ────────────                                   ───────────────
    Session(address)            (one per manager and process)
      anchor connection  ═══ HELLO(id, anchor) ═══▶ references of client `id`
                         (no calls: its thread sees our death at once)
      thread A: local.conn ═══ HELLO(id, False), then requests/replies ═══▶ a serving thread
      thread B: local.conn ═══ HELLO(id, False), then requests/replies ═══▶ a serving thread
      pending decrefs ── sent one way before the next request

Proxies of one manager share their process's session. Each thread has its own
connection, opened once and kept while the thread lives (no handshake per
call; its ``threading.local`` holds the connection's only closer, so the
connection closes when the thread ends): the socket it
connected with (a Unix socket's reader wakes the sender sleeping on it as soon
as it takes a message, so each side starts waking while the other still works:
on two idle cores a call on a ``Pipe()`` pair, which wakes its reader only with
the answer, took twice as long; docs/managers.md, "Cause").
References (created objects, unpickled proxies) belong to the session, not to a
connection: the server drops all of them when the anchor connection ends, which
happens when the last proxy here is gone, when the manager is shut down, or when
this process dies. A dropped proxy's decref is queued and sent, without waiting for a reply,
ahead of the next request of any thread: a finalizer never writes on a
connection that may be in the middle of a frame.

A call interrupted while it waits for its reply (a signal handler raised,
Ctrl-C), or whose reply fails to unpickle, brings its connection back in step
(:meth:`Session.resync`): a ``#cancel``, then every reply up to the manager's
answer to it. The manager gives up a queue's ``get()`` or a lock's ``acquire()``
then, taking nothing (``_cancellable``); a result that had gone out first is
given back (``#undo``), and references counted for a reply that failed to
unpickle are dropped (``#unreceived``). The thread keeps its connection, and
with it the manager's thread that holds the ``RLock`` it took.

A connection that ends (EOF, reset) or refuses to open means the manager is
gone -- unless the anchor still stands, in which case only that thread's
connection failed (that call raises; the session and its references stay):
:meth:`Session.lost_error` says which manager, its pid, and how it ended
(from the process object where this process started it, else from the pid).
"""

from __future__ import annotations

import hmac
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .._connections._listener import Client
from .._core._errors import AuthenticationError, ManagerLostError, ManagerRefusedError
from .._core._system import random_hex
from .._core._timeout import wait_readable
from ._protocol import (
    CANCEL,
    CANCELLED,
    HELLO,
    PROXY,
    RETURN,
    UNDO,
    UNRECEIVED,
    raise_reply,
    wrap,
)
from ._server import local_server

__all__ = (
    "LocalSession",
    "Session",
    "acquire_session",
    "close_sessions",
    "describe_owned",
    "known_authkey",
    "note_taken_over",
    "session_for",
)

#: Seconds to wait for a session's anchor connection to show the manager's end,
#: after another connection ended or failed: a dying process's sockets are
#: closed one by one, and an anchor that stays open this long means the manager
#: still serves (only that connection failed).
ANCHOR_GRACE = 1.0

#: Seconds an interrupted call waits for the manager's answer to its cancel when
#: the manager waits for that method in slices (a queue's get and put, a lock's
#: acquire, an event's or condition's wait: ``_cancellable``), which it answers
#: within ``CANCEL_POLL`` (0.05 s) on a machine that is not overloaded; then the
#: connection is dropped (its thread in the manager, and an ``RLock`` it holds,
#: are lost; nothing taken then is: the manager sees the cancel before it replies).
CANCEL_WAIT = 1.0
#: The same for other methods: the answer comes once the call returns in the
#: manager, which may be never; this much covers a reply already on its way, and
#: the answer for a reply that failed to unpickle (one round trip).
CANCEL_WAIT_OTHER = 0.1
#: Methods the manager may wait for in slices.
_SLICED = frozenset({"get", "put", "join", "acquire", "wait"})
#: Methods whose result, come after the call was given up on, goes back (``#undo``).
_UNDOABLE = frozenset({"get", "acquire", "wait"})

# The references this thread's last reply counted for proxies in it that were
# rebuilt here: ((serial, [object ids]), set by RebuildProxy), for a reply that
# then fails to unpickle (Session.resync, "#unreceived").
_taken_over = threading.local()


def note_taken_over(serial: int, ident: Any) -> None:
    """A proxy rebuilt from reply ``serial`` took over the reference counted for it."""
    record = getattr(_taken_over, "record", None)
    if record is None or record[0] != serial:
        _taken_over.record = (serial, [ident])
    else:
        record[1].append(ident)


def _take_record() -> tuple[Any, list[Any]]:
    record = getattr(_taken_over, "record", None)
    _taken_over.record = None
    return record if record is not None else (None, [])


#: This process's sessions, by (manager address, authkey, serializer).
_sessions: dict[Any, Session] = {}
_sessions_lock = threading.RLock()
#: Managers this process started: address -> a function describing how it ended.
_owned: dict[Any, Callable[[], str]] = {}


def describe_owned(address: Any, describe: Callable[[], str] | None) -> None:
    """Record (or, with ``None``, forget) how to tell how the manager at ``address`` ended."""
    if describe is None:
        _owned.pop(address, None)
    else:
        _owned[address] = describe


def session_for(
    address: Any, authkey: bytes | None, serializer: str, manager_pid: int | None = None
) -> Session:
    """This process's session with the manager at ``address`` (opened if needed).

    Sessions are kept by address, key and serializer: a proxy or manager with
    another key than a session's gets its own session, whose handshake checks
    that key (a wrong one was let in by the session another key had opened).

    Raises:
        ManagerLostError: nothing serves at ``address`` any more.
        AuthenticationError: ``authkey`` is not the manager's.
    """
    key = (address, authkey, serializer)
    session = _sessions.get(key)
    if session is not None and not session.closed:
        return session
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None or session.closed:
            server = local_server(address)
            if server is not None:
                if authkey is not None and not hmac.compare_digest(
                    bytes(authkey), bytes(server.authkey or b"")
                ):
                    raise AuthenticationError(
                        f"the key given for the manager at {address!r} is not its authkey"
                    )
                session = LocalSession(server, serializer)
            else:
                session = Session(address, authkey, serializer, manager_pid)
            session.key = key
            _sessions[key] = session
        return session


def known_authkey(address: Any) -> bytes | None:
    """The key of the manager at ``address``, if this process holds it: it runs
    that manager's server, or has a session with it (opened with its key).

    A proxy sent in a message carries no key (as the stdlib's): one unpickled
    where the key is known (in its own manager, stored in another managed object;
    in a client, in a reply from that manager) takes it rather than this
    process's ``authkey``, which is not the key of a manager given its own.
    """
    server = local_server(address)
    if server is not None:
        return server.authkey
    for (known_address, authkey, _serializer), session in list(_sessions.items()):
        if known_address == address and authkey is not None and not session.closed:
            return authkey
    return None


def acquire_session(
    address: Any, authkey: bytes | None, serializer: str, manager_pid: int | None = None
) -> Session:
    """This process's session with the manager at ``address``, with one more user.

    Raises:
        ManagerLostError: nothing serves at ``address`` any more.
        AuthenticationError: ``authkey`` is not the manager's.
    """
    while True:
        session = session_for(address, authkey, serializer, manager_pid)
        if session.acquire():
            return session


def close_sessions(address: Any, reason: str) -> None:
    """Close this process's session with the manager at ``address``.

    Its proxies then fail with ``reason``.
    """
    with _sessions_lock:
        keys = [key for key in _sessions if key[0] == address]
        sessions = [_sessions.pop(key) for key in keys]
    for session in sessions:
        session.close(reason)


class Session:
    """This process's connections and references to one manager (see the module docstring).

    Raises:
        ManagerLostError: the manager cannot be reached.
        AuthenticationError: wrong authkey.
    """

    #: Its key in ``_sessions`` (set by ``session_for``).
    key: Any = None

    def __init__(
        self, address: Any, authkey: bytes | None, serializer: str, manager_pid: int | None
    ) -> None:
        self.address = address
        self.authkey = authkey
        self.serializer = serializer
        self.manager_pid = manager_pid
        self.pid = os.getpid()
        self.client_id = f"{self.pid}-{random_hex(6)}"
        self.local = threading.local()
        self.pending: list[Any] = []
        self.users = 0
        self.closed = False
        self.lost: str | None = None
        self._lock = threading.RLock()
        # The closers of the calling threads' connections: a thread's ends with
        # the thread (its threading.local holds the only closer).
        self._closers: weakref.WeakSet[_Closer] = weakref.WeakSet()
        # The anchor only holds the references: its serving thread always waits
        # in recv(), so it sees this process die at once, even in the middle of a
        # call that another connection of ours is blocked in.
        self._anchor: Any = None
        self._anchor = self._open(True)

    def _open(self, anchor: bool) -> Any:
        try:
            raw = Client(self.address, authkey=self.authkey)
        except ConnectionRefusedError as exc:
            if not anchor or self.manager_pid is not None:
                raise self.lost_error(exc) from exc
            # The session's first connection, to an address given (connect()): no
            # manager may ever have served there.
            refused = ManagerRefusedError(
                f"no manager is listening at {self.address!r} (connection refused): "
                "start it first (BaseManager.start(), or get_server().serve_forever() "
                "in the process that serves), or check the address"
            )
            refused.errno = exc.errno
            raise refused from exc
        except FileNotFoundError as exc:
            # No socket at the address any more: nothing listens there.
            raise self.lost_error(exc) from exc
        except (ConnectionError, EOFError) as exc:
            # Reset or broken pipe in the handshake: the manager died before or
            # while it accepted this connection -- or, for a calling thread's
            # connection while the anchor still stands, gave up on it (a manager
            # out of descriptors, or too slow to answer): that call fails alone.
            if anchor or not self._anchor_stands():
                raise self.lost_error(exc) from exc
            raise self._not_opened(exc) from exc
        except AuthenticationError as exc:
            # The key was good for the anchor, or the manager's process has
            # ended: it ended during the handshake. Otherwise the key is wrong.
            if anchor and not self._manager_ended():
                raise
            if anchor or not self._anchor_stands():
                raise self.lost_error(exc) from exc
            raise self._not_opened(exc) from exc
        # Only this process (one thread at a time) sends on it; a forked child
        # closes its copy (forget_after_fork). Another thread may close it under a
        # call (_close_connections), which the shutdown at close ends.
        raw.keep_in_process()
        raw._shut_down_at_close()
        conn = wrap(raw, self.serializer)
        try:
            conn.send((HELLO, self.client_id, anchor))
        except (OSError, EOFError) as exc:
            conn.close()
            if anchor or not self._anchor_stands():
                raise self.lost_error(exc) from exc
            raise self._not_opened(exc) from exc
        return conn

    def _not_opened(self, exc: BaseException) -> ConnectionError:
        return ConnectionError(
            f"could not open this thread's connection to the manager at {self.address!r}: "
            f"{type(exc).__name__}: {exc}. The manager still holds this process's objects "
            "(its session stands); the next call from this thread tries again"
        )

    def _anchor_stands(self) -> bool:
        """Whether the manager still holds this session (its anchor shows no end).

        A dying manager's kernel closes its sockets one at a time, so another
        connection may end a moment before the anchor does: wait up to
        ``ANCHOR_GRACE`` for the anchor's end before deciding the manager lives.
        """
        anchor = self._anchor
        if anchor is None or self.closed:
            return False
        try:
            return not wait_readable(anchor.fileno(), ANCHOR_GRACE)
        except (OSError, ValueError):
            return False  # closed meanwhile

    def _manager_ended(self) -> bool:
        if self.manager_pid is None or isinstance(self.address, tuple):
            return False
        return _process_state(self.manager_pid) in (None, "Z")

    def connection(self) -> Any:
        """This thread's connection (opened on its first call, closed when the thread ends)."""
        if self.closed:
            raise ManagerLostError(
                self.lost or f"the session with the manager at {self.address!r} is closed"
            )
        conn = self._open(False)
        closer = _Closer(conn)
        with self._lock:
            if self.closed:  # closed meanwhile: _close_connections missed this one
                closer.close()
                raise ManagerLostError(
                    self.lost or f"the session with the manager at {self.address!r} is closed"
                )
            self._closers.add(closer)
        # The thread's local dict holds the only closer: when the thread ends,
        # the closer goes and closes the connection (and the manager's serving
        # thread for it ends), instead of both living until the session closes.
        self.local.closer = closer
        self.local.conn = conn
        return conn

    def call(self, ident: Any, name: str, args: tuple[Any, ...] = (), kwds: Any = None) -> Any:
        """Send one request from this thread and return its result.

        Raises:
            ManagerLostError: the manager went away.
            Exception: what the manager's method raised (with its traceback as
                ``__cause__``), or ``RemoteError``.
        """
        try:
            conn = self.local.conn
        except AttributeError:
            conn = self.connection()
        if self.pending:
            self.flush(conn)
        try:
            conn.send((ident, name, args, kwds or {}))
        except (EOFError, OSError) as exc:
            raise self.broken(exc, name) from exc
        except BaseException:
            self.drop_connection()  # (see drop_connection)
            raise
        try:
            kind, result = conn.recv()
        except (EOFError, OSError) as exc:
            raise self.broken(exc, name) from exc
        except BaseException:
            self.resync(conn, ident, name)  # (interrupted, or the reply did not unpickle)
            raise
        if kind == RETURN:
            return result
        try:
            raise_reply(kind, result)
        finally:
            del result  # the exception's traceback holds this frame: no cycle (gh-106558)

    def flush(self, conn: Any) -> None:
        """Send the queued decrefs, one way, on ``conn``."""
        batch, self.pending[:] = list(self.pending), []
        if batch:
            try:
                conn.send((None, "#decrefs", (batch,), {}))
            except (EOFError, OSError) as exc:
                raise self.broken(exc) from exc
            except BaseException:
                self.drop_connection()  # (a frame may have been cut short)
                raise

    def resync(self, conn: Any, ident: Any, name: str) -> None:
        """Bring this thread's connection ``conn`` back in step after the call of
        ``name`` sent its request but did not take its reply: it was interrupted (a
        signal handler raised, Ctrl-C), or the reply failed to unpickle.

        Sends ``#cancel`` and reads every reply up to the manager's answer to it.
        A queue's ``get()`` or a lock's ``acquire()`` waiting in the manager takes
        nothing then (``_cancellable``); a result that went out before the cancel
        is undone (``#undo``: the item back at the queue's front, the lock
        released); a reply this thread received but could not unpickle has the
        references it counted for proxies in it dropped (``#unreceived``). Should
        no answer come within ``CANCEL_WAIT`` (a method that blocks in the manager
        and is not one of those), or anything fail, the connection is dropped
        instead (:meth:`drop_connection`).

        Raises:
            BaseException: only what interrupts it (a second Ctrl-C); the
                connection is dropped then.
        """
        wait = CANCEL_WAIT if name in _SLICED else CANCEL_WAIT_OTHER
        record = _take_record()
        try:
            if getattr(conn, "_broken", None):
                raise EOFError  # (interrupted in the middle of a reply's frame)
            conn.send((None, CANCEL, (), {}))
            deadline = time.monotonic() + wait
            late = None  # the call's reply, if it came before the answer
            while True:
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError
                kind, value = conn.recv()
                if kind == CANCELLED:
                    break
                late = (kind, value)
            if late is None:
                if not value:
                    # The reply came before the cancel and was this thread's:
                    # it failed to unpickle.
                    conn.send((None, UNRECEIVED, record, {}))
                return
            kind, result = late
            if kind == RETURN and ident is not None and name in _UNDOABLE:
                conn.send((ident, UNDO, (name, result), {}))
                if not conn.poll(wait):
                    raise TimeoutError
                conn.recv()
            elif kind == PROXY:
                self.pending.append(result[1])  # (no proxy takes its reference)
            elif kind == RETURN and ident is None and name == "create":
                self.pending.append(result[0])
        except Exception:
            self.drop_connection()
        except BaseException:
            self.drop_connection()
            raise

    def drop_connection(self) -> None:
        """Close this thread's connection and forget it; its next call opens another.

        For a call interrupted between its request and its whole reply (a signal
        handler raised, Ctrl-C): the reply still on its way would be taken as the
        next call's, or a frame was cut short. The session's references live on
        its anchor connection, so the manager keeps every object of this process
        when this one ends.
        """
        local = self.local
        closer = getattr(local, "closer", None)
        for name in ("conn", "closer"):
            try:
                delattr(local, name)
            except AttributeError:
                pass
        if closer is not None:
            closer.close()

    def broken(self, exc: BaseException, during: str | None = None) -> BaseException:
        """The error for this thread's connection ending (``exc``) during ``during``.

        The manager is lost if the anchor ended too; otherwise only this
        connection broke (the manager still serves and keeps this process's
        objects): it is dropped, and this call fails with an ``EOFError``, as
        the stdlib's does.
        """
        if not self._anchor_stands():
            return self.lost_error(exc, during)
        self.drop_connection()
        call = f"the call {during!r}" if during is not None else "sending dropped references"
        return EOFError(
            f"the manager at {self.address!r} closed this thread's connection during {call} "
            f"({type(exc).__name__}: {exc}); it may or may not have run. The manager still "
            "serves and holds this process's objects: this thread's next call opens a new "
            "connection"
        )

    def acquire(self) -> bool:
        """One more user (a proxy, a manager) holds this session open.

        Returns:
            False if the session has closed meanwhile: take a new one.
        """
        with self._lock:
            if self.closed:
                return False
            self.users += 1
            return True

    def unuse(self) -> None:
        """Undo :meth:`acquire` for a user that never took its reference."""
        with self._lock:
            self.users -= 1

    def release(self, ident: Any = None) -> None:
        """A user let go (the proxy of ``ident``: called from finalizers).

        The last user closes the session: the anchor's end then drops every
        reference the server counts for this process.
        """
        if self.closed:
            return
        if ident is not None:
            self.pending.append(ident)
        with self._lock:
            self.users -= 1
            if self.users > 0:
                return
            self.closed = True  # under the lock: acquire() cannot slip in between
        _forget(self)
        self._close_connections("this process no longer holds any of its objects")

    def close(self, reason: str) -> None:
        """Close every connection of this session. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self._close_connections(reason)

    def _close_connections(self, reason: str) -> None:
        with self._lock:
            self.lost = self.lost or (
                f"the session with the manager at {self.address!r} was closed: {reason}"
            )
            closers, self._closers = list(self._closers), weakref.WeakSet()
            self.pending.clear()
        _close_all(self._anchor, closers)

    def forget_after_fork(self) -> None:
        """In a forked child: close this process's copies of the parent's connections."""
        self.local = threading.local()
        self.closed = True
        closers, self._closers = list(self._closers), weakref.WeakSet()
        _close_all(self._anchor, closers)

    def lost_error(
        self, exc: BaseException | None = None, during: str | None = None
    ) -> ManagerLostError:
        """The error for a manager that cannot be reached; later calls fail with it at once."""
        if self.lost is None or not self.closed:
            how = _describe_end(self.address, self.manager_pid)
            pid = f" (pid {self.manager_pid})" if self.manager_pid else ""
            message = f"the manager at {self.address!r}{pid} {how}"
            if during is not None:
                message += f"; the call {during!r} did not complete (it may or may not have run)"
            message += (
                ". Its shared objects are gone with it: start a new manager "
                "(and check why the old one ended)"
            )
            self.lost = message
            _forget(self)
            self.close(message)
        return ManagerLostError(self.lost)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.users} proxies"
        return f"<proctor manager session {self.address!r} client={self.client_id} {state}>"


class _Closer:
    """Closes one calling thread's connection: when asked, or when it is dropped
    (the thread ended, so its ``threading.local`` let go of it), whichever comes
    first -- only once, even when both happen at once in two threads."""

    __slots__ = ("__weakref__", "_box")

    def __init__(self, conn: Any) -> None:
        self._box = [conn]

    def close(self) -> None:
        try:
            conn = self._box.pop()  # atomic: only one caller gets it
        except IndexError:
            return
        try:
            conn.close()
        except OSError:
            pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass  # interpreter shutdown


def _close_all(anchor: Any, closers: list[_Closer]) -> None:
    for closer in closers:
        closer.close()
    if anchor is not None:
        try:
            anchor.close()
        except OSError:
            pass


class _LocalConnection:
    """A "connection" from the manager's own process to its server: calls it directly."""

    def __init__(self, server: Any, client_id: str) -> None:
        self._server = server
        self._client_id = client_id
        self._reply: Any = None

    def send(self, request: Any) -> None:
        self._reply = self._server.handle_request(self._client_id, request)

    def recv(self) -> Any:
        reply, self._reply = self._reply, None
        return reply

    def close(self) -> None:
        pass


class LocalSession(Session):
    """The session of a manager's own process with its server (nested proxies there)."""

    def __init__(self, server: Any, serializer: str) -> None:
        self.address = server.address
        self.authkey = server.authkey
        self.serializer = serializer
        self.manager_pid = os.getpid()
        self.pid = os.getpid()
        self.client_id = f"{self.pid}-local"
        self.local = threading.local()
        self.pending = []
        self.users = 0
        self.closed = False
        self.lost = None
        self._lock = threading.RLock()
        self._closers = weakref.WeakSet()
        self._anchor = None
        self._server = server

    def connection(self) -> Any:
        conn = _LocalConnection(self._server, self.client_id)
        self.local.conn = conn
        return conn

    def resync(self, conn: Any, ident: Any, name: str) -> None:
        # A direct call has no stream to bring back in step.
        self.drop_connection()

    def release(self, ident: Any = None) -> None:
        # Never called with the server's lock held: objects are dropped outside it.
        if ident is not None:
            self._server.decref(self.client_id, (ident,))

    def flush(self, conn: Any) -> None:
        batch, self.pending[:] = list(self.pending), []
        if batch:
            self._server.decref(self.client_id, batch)


def _forget(session: Session) -> None:
    """Take ``session`` out of this process's sessions (if it is still there)."""
    with _sessions_lock:
        if _sessions.get(session.key) is session:
            del _sessions[session.key]


def _describe_end(address: Any, pid: int | None) -> str:
    describe = _owned.get(address)
    if describe is not None:
        return describe()
    if pid is None or isinstance(address, tuple):
        return "closed the connection (its process ended or shut it down)"
    state = _process_state(pid)
    if state is None:
        return "has ended (its process no longer exists)"
    if state == "Z":
        return "has ended (its process exited and awaits its parent)"
    return "closed the connection (its process still runs: it was shut down, or is exiting)"


def _process_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (``"Z"`` for a zombie), ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 :][:1].decode()
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"


def _after_fork_in_child() -> None:
    global _sessions_lock
    _sessions_lock = threading.RLock()  # another thread may have held it at the fork
    with_sessions = list(_sessions.values())
    _sessions.clear()
    _owned.clear()
    for session in with_sessions:
        if not isinstance(session, LocalSession):
            session.forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
