"""The manager's server: shared objects in one process, served to clients over connections.

::

    Listener (Unix socket or TCP, HMAC handshake)
      accept thread ── Connection ──▶ one serving thread per connection
                                        first frame: HELLO(client_id, is_anchor)
                                        then request ─▶ objects[ident] ─▶ reply
    objects:  ident ─▶ (obj, exposed, method_to_typeid)
    refcount: ident ─▶ references held by all clients
    clients:  client_id ─▶ {ident: references this client holds}

A call blocked in a queue's ``get()`` or a lock's ``acquire()`` (``_cancellable``)
waits in slices, looking in between whether its client gave up on it (a
``#cancel``, or the connection's end): it then takes nothing, or gives back
what it took, so an interrupted client loses no item and leaves no lock held.

A client (one process's session, see ``_session``) holds its references through
its *anchor* connection: when that connection ends -- the client closed it, or
its process died, even in the middle of a call -- every reference the client
still held is dropped, and objects nobody else holds are released. A slow call
occupies only its own connection's thread.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .._connections._listener import Listener
from .._core._errors import AuthenticationError, ProcessTimeoutError
from .._core._timeout import wait_readable
from ._cancellable import RUNNERS, Cancelled, undo
from ._protocol import (
    CANCEL,
    CANCELLED,
    HELLO,
    PROXY,
    RAISE,
    RETURN,
    TRACEBACK,
    UNDO,
    UNRECEIVED,
    UNSERIALIZABLE,
    format_exception,
    public_methods,
    wrap,
)

__all__ = ("Server", "local_server")

#: Connections a listening manager lets wait to be accepted (the stdlib's number).
BACKLOG = 128
#: Seconds between the accept thread's checks that the server was asked to stop.
ACCEPT_POLL = 0.2
#: Seconds the accept thread waits, when the process is out of descriptors or
#: memory, for a connection to end before it tries to accept again.
ACCEPT_BACKOFF = 0.1
#: accept() errors that retrying at once cannot cure.
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
#: Seconds a connecting client has to complete the handshake (in its own thread).
HANDSHAKE_TIMEOUT = 30.0

#: Results of these types are sent as lists: dict views cannot be pickled.
_VIEW_TYPES: tuple[type, ...] = (type({}.items()), type({}.keys()), type({}.values()))
#: Methods every object answers, exposed or not.
_FALLBACK = ("__str__", "__repr__", "#GETVALUE")
#: The answer to a "#cancel" that came after its call's reply (see _cancelled).
_CANCEL_ANSWER = (CANCELLED, False)
#: Server requests that get no reply.
_ONE_WAY = ("#decrefs",)

#: The servers running in this process, by address: a proxy of one of their
#: objects unpickled here calls the server directly (``_session.LocalSession``).
_local_servers: dict[Any, Server] = {}


def local_server(address: Any) -> Server | None:
    """The server of ``address`` if it runs in this process (under any spelling of a
    TCP address: ``('localhost', port)`` for one bound to ``('127.0.0.1', port)``,
    any address of this machine for one bound to ``('', port)``)."""
    server = _local_servers.get(address)
    if server is None and address.__class__ is tuple and len(address) == 2:
        server = _local_servers.get(_spelled_as(address))
    return server


# A TCP address as a client spelled it -> the address of this process's server it
# reaches (None: none): without this, a proxy spelled otherwise than the server's
# own address reached the server through a socket to itself, and one handed back
# in a reply took no reference for its client (take_for_recipient), so that its
# object could go before the client's incref arrived (KeyError).
_spellings: dict[Any, Any] = {}


def _spelled_as(address: tuple[Any, Any]) -> Any:
    if address in _spellings:
        return _spellings[address]
    host, port = address
    found = None
    for own in list(_local_servers):
        if own.__class__ is not tuple or own[1] != port:
            continue
        ips = _ips_of(host)
        if own[0] in ("", "0.0.0.0", "::"):
            if any(_is_own_ip(ip) for ip in ips):
                found = own
        elif ips & _ips_of(own[0]):
            found = own
        if found is not None:
            break
    _spellings[address] = found
    return found


def _ips_of(host: Any) -> set[str]:
    try:
        infos = socket.getaddrinfo(host or None, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, TypeError):
        return set()
    return {str(info[4][0]) for info in infos}


def _is_own_ip(ip: str) -> bool:
    """Whether ``ip`` is an address of this machine (one can bind to it)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((ip, 0))
    except OSError:
        return False
    return True


# Set by a server's thread while it pickles a reply: a proxy of that server's own
# objects in the reply (one a managed dict, list or queue held, handed back by
# pop() or get()) takes the reference of the client it goes to then
# (BaseProxy.__reduce__, take_for_recipient). The server's own proxy may be
# dropped as soon as the reply is sent, which would release the object before the
# client's incref arrived.
_replying = threading.local()
# Numbers the replies that count references (``_replying.serial``), so that a
# client whose reply failed to unpickle can say which of them it took over
# (``#unreceived``). Random start: serials of two managers do not meet.
_reply_serials = itertools.count(int.from_bytes(os.urandom(6), "big"))


def take_for_recipient(proxy: Any) -> int | None:
    """In a server's thread pickling a reply: count a reference to ``proxy``'s object
    for the client the reply goes to, if the object is that server's; return the
    reply's serial number then, ``None`` otherwise.

    Once per proxy and reply: a reply that the first pickler could not take is
    pickled again by another (cloudpickle's), which reduces the same proxy again.
    """
    recipient = getattr(_replying, "to", None)
    if recipient is None:
        return None
    server, client_id, taken = recipient
    token = proxy._token
    if server.address != token.address and local_server(token.address) is not server:
        return None
    if id(proxy) not in taken:
        if not server.incref_unless_gone(client_id, token.id):
            return None  # (nobody will take it over: the client has gone)
        if not taken:
            _replying.serial = next(_reply_serials)
        taken[id(proxy)] = token.id
    return int(_replying.serial)


# A process forked from a server's (a SyncManager.Pool's worker, a Process a
# registered callable starts) has a copy of the server, which serves nobody: its
# proxies must reach the real one over a socket, or their writes land in the copy.
os.register_at_fork(after_in_child=_local_servers.clear)


def _stops_this_thread(exc: BaseException) -> bool:
    """Whether ``exc``, raised in a call the server runs, must end the calling thread
    instead of going back to the client: Ctrl-C or ``sys.exit()`` in the main thread
    (a call of the manager's own process, ``handle_request``). Elsewhere it is
    the method's result, as any exception is."""
    return isinstance(exc, (KeyboardInterrupt, SystemExit)) and (
        threading.current_thread() is threading.main_thread()
    )


class _NotExposed(AttributeError):
    pass


class Server:
    """Serve the objects of one manager.

    Args:
        registry: typeid -> ``(callable, exposed, method_to_typeid)``.
        address: where to listen (``None``: a fresh Unix socket path).
        authkey: the key clients must prove they hold.
        serializer: ``"pickle"`` or ``"xmlrpclib"``.
    """

    #: Server methods a client may call (ident ``None``).
    public: tuple[str, ...] = (
        "accept_connection",
        "create",
        "debug_info",
        "decref",
        "dummy",
        "get_methods",
        "incref",
        "number_of_objects",
        "shutdown",
    )

    def __init__(
        self,
        registry: dict[str, tuple[Any, Any, Any]],
        address: Any,
        authkey: bytes | None,
        serializer: str,
    ) -> None:
        self.registry = registry
        self.authkey = authkey
        self.serializer = serializer
        self.listener = Listener(address=address, backlog=BACKLOG, authkey=authkey)
        self.address = self.listener.address
        self.stop_event = threading.Event()
        # Set as a serving thread ends: its connection's descriptor is free again.
        self._connection_ended = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._objects: dict[int, tuple[Any, frozenset[str], dict[str, str] | None]] = {}
        self._typeids: dict[int, str] = {}
        self._refcounts: dict[int, int] = {}
        self._clients: dict[str, dict[int, int]] = {}
        # Clients whose anchor connection has ended (release_client): a reply still
        # being sent to one of them counts no reference for it (take_for_recipient).
        # Forgotten once the client's last connection has ended: no reply can be on
        # its way to it then, and a client never connects again after its anchor
        # ended (each session has a new id), so the set stays as small as the
        # number of clients ending at the moment.
        self._gone_clients: set[str] = set()
        # The open connections of each client (by id), for the above.
        self._open_connections: dict[str, int] = {}
        self._server_calls: dict[str, Callable[..., Any]] = {
            name: getattr(self, "_call_" + name) for name in self.public
        }
        self._server_calls["#decrefs"] = self._call_decrefs

    # -- running -----------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until a client asks for ``shutdown`` (or the process is interrupted)."""
        _local_servers[self.address] = self
        accepter = threading.Thread(target=self._accept_loop, name="manager-accept", daemon=True)
        accepter.start()
        try:
            self.stop_event.wait()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            # The accept thread (a daemon) sees the listener closed within
            # ACCEPT_POLL; the process need not wait for it.
            self.stop_event.set()
            self.listener.close()
            _local_servers.pop(self.address, None)
            _spellings.clear()

    def _accept_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                # accept()'s own timeout would also bound the handshake, which a
                # loaded machine can take longer than ACCEPT_POLL to complete.
                if not wait_readable(self.listener.fileno(), ACCEPT_POLL):
                    continue
                conn, handshake = self.listener.accept_then_handshake()
            except OSError as exc:
                if self.listener.closed:
                    return
                if exc.errno in _OUT_OF_RESOURCES:
                    # The connection stays queued and the listener readable:
                    # retrying at once would spin. Wait for a connection to end
                    # (its descriptor is then free) or ACCEPT_BACKOFF.
                    self._connection_ended.wait(ACCEPT_BACKOFF)
                    self._connection_ended.clear()
                continue
            # The handshake runs in the client's own thread: a slow or silent
            # peer holds up nobody else.
            thread = threading.Thread(
                target=self._serve_client,
                args=(conn, handshake),
                name="manager-client",
                daemon=True,
            )
            thread.start()

    def _serve_client(self, raw: Any, handshake: Callable[[float | None], None]) -> None:
        try:
            self._serve_connection(raw, handshake)
        finally:
            self._connection_ended.set()

    def _serve_connection(self, raw: Any, handshake: Callable[[float | None], None]) -> None:
        # Only this thread sends on it; a child the server forks (a Pool's
        # worker) never uses its copy. Nor does another thread close it: its
        # receives read at once (no wait another thread's close() would end).
        raw.keep_in_process()
        raw._keep_in_thread()
        try:
            handshake(time.monotonic() + HANDSHAKE_TIMEOUT)
        except (AuthenticationError, ProcessTimeoutError, EOFError, OSError):
            raw.close()  # a peer without the key, or gone: nothing of it was unpickled
            return
        conn = wrap(raw, self.serializer)
        try:
            hello = conn.recv()
            if hello[0] != HELLO:
                raw.close()
                return
            client_id, anchor = hello[1], hello[2]
        except BaseException:  # (a serving thread never gets a signal's exception)
            raw.close()
            return
        with self._lock:
            self._open_connections[client_id] = self._open_connections.get(client_id, 0) + 1
        try:
            self._serve_requests(conn, client_id)
        finally:
            conn.close()
            if anchor:
                self.release_client(client_id)
            with self._lock:
                left = self._open_connections[client_id] - 1
                if left:
                    self._open_connections[client_id] = left
                else:
                    del self._open_connections[client_id]
                    self._gone_clients.discard(client_id)

    def _serve_requests(self, conn: Any, client_id: str) -> None:
        recv = conn.recv
        send = conn.send
        poll = conn.poll
        objects = self._objects
        runners_of = RUNNERS.get

        def cancelled() -> bool:
            # A client sends nothing while its call runs: bytes (its "#cancel")
            # or its end mean it gave up on the call.
            try:
                return bool(poll(0))
            except (OSError, ValueError):
                return True

        # (serial, idents) of the references the last reply counted for proxies
        # in it, for an "#unreceived" that says it failed to unpickle.
        last_taken: tuple[int, list[int]] | None = None
        while True:
            ran = None  # (obj, name) of a call run in slices, to undo if not delivered
            try:
                request = recv()
            except (EOFError, OSError):
                return
            except BaseException as exc:  # the request could not be unpickled here
                reply: Any = (TRACEBACK, format_exception(exc))
            else:
                try:
                    ident, name, args, kwds = request
                    if ident is not None:
                        obj, exposed, to_typeid = objects[ident]
                        if name in exposed:
                            runners = runners_of(obj.__class__)
                            try:
                                if runners is not None and name in runners:
                                    ran = (obj, name)
                                    result = runners[name](obj, cancelled, *args, **kwds)
                                else:
                                    result = getattr(obj, name)(*args, **kwds)
                            except Cancelled:
                                ran = None
                                reply = self._cancelled(recv)
                                if reply is None:
                                    return  # (the client has gone)
                            except BaseException as exc:
                                # GeneratorExit (an iterator's throw()),
                                # KeyboardInterrupt, SystemExit, CancelledError
                                # raised by the method are its result too: they
                                # go back to the caller, not end this thread
                                # (which the client took for a lost manager).
                                reply = (RAISE, (exc, format_exception(exc)))
                                del exc
                            else:
                                if to_typeid and name in to_typeid:
                                    reply = (PROXY, self._adopt(client_id, to_typeid[name], result))
                                elif type(result) in _VIEW_TYPES:
                                    reply = (RETURN, list(result))
                                else:
                                    reply = (RETURN, result)
                        else:
                            reply = self._fallback(obj, exposed, name, args)
                    elif name == CANCEL:
                        # The call it cancels had sent its reply already: that
                        # reply is the client's to read (or, failed to unpickle).
                        reply = _CANCEL_ANSWER
                    elif name == UNRECEIVED:
                        if last_taken is not None:
                            self._unreceived(client_id, last_taken, *args)
                            last_taken = None
                        continue
                    else:
                        reply = self.handle_server_call(client_id, name, args, kwds)
                        if reply is None:
                            continue
                except BaseException as exc:
                    reply = (TRACEBACK, self._explain(exc, request))
            taken: dict[int, int] = {}  # id(proxy) -> the id of its object
            _replying.to = (self, client_id, taken)
            try:
                send(reply)
            except (EOFError, OSError):
                if ran is not None and reply[0] == RETURN:
                    undo(ran[0], ran[1], result)  # (an item back, a lock released)
                if taken:  # (the client has gone, or never gets it)
                    self.decref(client_id, list(taken.values()))
                if reply[0] == PROXY:
                    # The client dropped this connection (its call was
                    # interrupted) or died: nobody takes over the reference
                    # counted for it.
                    self.decref(client_id, (reply[1][1],))
                return
            except BaseException as exc:  # the reply cannot be pickled: say so, keep serving
                if taken:  # (pickled first, so nothing was sent: they go again)
                    self.decref(client_id, list(taken.values()))
                    taken.clear()
                text = format_exception(exc)
                if reply[0] == RAISE:
                    text = reply[1][1] + "\n(the exception itself could not be sent back: " + text
                    kind = TRACEBACK
                else:
                    kind = UNSERIALIZABLE
                reply = None
                try:
                    send((kind, text))
                except (EOFError, OSError):
                    return
            finally:
                _replying.to = None
            if taken:
                last_taken = (int(_replying.serial), list(taken.values()))
            elif reply is not _CANCEL_ANSWER:
                last_taken = None
            # Drop this call's objects now, not at the next request: a proxy
            # among them holds a reference the client may be waiting to see go.
            request = args = kwds = obj = result = reply = None
            if self._stopping:
                # Only now: the client that asked has its reply.
                self.stop_event.set()

    @staticmethod
    def _cancelled(recv: Callable[[], Any]) -> tuple[str, bool] | None:
        """The reply to a call its client gave up on (``None``: the client has gone)."""
        try:
            recv()  # the client's "#cancel"
        except (EOFError, OSError):
            return None
        except BaseException:  # (not a "#cancel": the call is given up on all the same)
            pass
        return (CANCELLED, True)

    def _unreceived(
        self, client_id: str, last_taken: tuple[int, list[int]], serial: Any, idents: Any
    ) -> None:
        """Drop the references the last reply counted for proxies its client did not
        take over: that reply failed to unpickle there, before or at their turn. Those
        it did take over (``idents``, if ``serial`` is that reply's) are the client's
        proxies' to drop."""
        taken_serial, left = last_taken[0], list(last_taken[1])
        if serial == taken_serial:
            for ident in idents:
                if ident in left:
                    left.remove(ident)
        if left:
            self.decref(client_id, left)

    def _fallback(
        self, obj: Any, exposed: frozenset[str], name: str, args: Any = ()
    ) -> tuple[str, Any]:
        if name == UNDO:
            undo(obj, *args)
            return (RETURN, None)
        if name == "#GETVALUE":
            return (RETURN, obj)
        if name == "__repr__":
            return (RETURN, repr(obj))
        if name == "__str__":
            return (RETURN, str(obj))
        raise _NotExposed(
            f"method {name!r} of {type(obj).__name__!r} object is not in "
            f"exposed={sorted(exposed)!r}"
        )

    def _explain(self, exc: BaseException, request: Any) -> str:
        if isinstance(exc, KeyError) and isinstance(request, (tuple, list)) and len(request) == 4:
            ident = request[0]
            if ident is not None and ident not in self._objects:
                return (
                    f"KeyError: the manager holds no object with id {ident!r}: it was "
                    "released (every proxy of it was deleted, or the client holding it "
                    "ended) or belongs to another manager"
                )
        if isinstance(exc, (TypeError, ValueError)) and not isinstance(request, (tuple, list)):
            return f"ProtocolError: not a manager request: {request!r}"
        return format_exception(exc)

    def handle_request(self, client_id: str, request: Any) -> Any:
        """The reply to ``request`` (for a client in this process); ``None`` for one-way ones."""
        try:
            ident, name, args, kwds = request
            if ident is None:
                reply = self.handle_server_call(client_id, name, args, kwds)
                if self._stopping:
                    self.stop_event.set()
                return reply
            obj, exposed, to_typeid = self._objects[ident]
            if name not in exposed:
                return self._fallback(obj, exposed, name, args)
            try:
                result = getattr(obj, name)(*args, **kwds)
            except BaseException as exc:
                if _stops_this_thread(exc):
                    raise
                return (RAISE, (exc, format_exception(exc)))
            if to_typeid and name in to_typeid:
                return (PROXY, self._adopt(client_id, to_typeid[name], result))
            if type(result) in _VIEW_TYPES:
                result = list(result)
            return (RETURN, result)
        except BaseException as exc:
            if _stops_this_thread(exc):
                raise
            return (TRACEBACK, self._explain(exc, request))

    def handle_server_call(self, client_id: str, name: str, args: Any, kwds: Any) -> Any:
        """Run the server method ``name``; its reply, or ``None`` for one-way calls."""
        call = self._server_calls.get(name)
        if call is None:
            return (TRACEBACK, f"AttributeError: the manager's server has no method {name!r}")
        try:
            result = call(client_id, *args, **kwds)
        except BaseException as exc:
            if _stops_this_thread(exc):
                raise
            # As the stdlib's: what fails in the server's own methods (a type's
            # constructor in ``create``...) arrives as a RemoteError, whose
            # type_name and traceback say what it was.
            return (TRACEBACK, format_exception(exc))
        if name in _ONE_WAY:
            return None
        return (RETURN, result)

    # -- objects and references ------------------------------------------------------

    def _register(self, client_id: str, typeid: str, obj: Any) -> tuple[int, list[str]]:
        try:
            _callable, exposed, to_typeid = self.registry[typeid]
        except KeyError:
            raise KeyError(
                f"no type {typeid!r} is registered with this manager; register it with "
                f"Manager.register({typeid!r}, callable) before start()"
            ) from None
        names = list(public_methods(obj) if exposed is None else exposed)
        if to_typeid:
            names += [name for name in to_typeid if name not in names]
        with self._lock:
            ident = next(self._ids)
            self._objects[ident] = (obj, frozenset(names), dict(to_typeid) if to_typeid else None)
            self._typeids[ident] = typeid
            self._refcounts[ident] = 0
            self._count_locked(client_id, ident)  # the creating client's
        return ident, names

    def _adopt(self, client_id: str, typeid: str, obj: Any) -> tuple[str, int, list[str]]:
        ident, names = self._register(client_id, typeid, obj)
        return (typeid, ident, names)

    def incref(self, client_id: str, ident: int) -> None:
        """Count one more reference to ``ident``, held by ``client_id``."""
        with self._lock:
            if ident not in self._refcounts:
                raise KeyError(
                    f"the manager holds no object with id {ident!r}: every reference to it "
                    "was dropped before this proxy reached this process; keep a proxy "
                    "alive until the receiver has it"
                )
            self._count_locked(client_id, ident)

    def incref_unless_gone(self, client_id: str, ident: int) -> bool:
        """``incref``, unless ``client_id``'s anchor has ended (False then)."""
        with self._lock:
            if client_id in self._gone_clients or ident not in self._refcounts:
                return False
            self._count_locked(client_id, ident)
        return True

    def _count_locked(self, client_id: str, ident: int) -> None:
        """One more reference to ``ident``, held by ``client_id`` (under the lock)."""
        self._refcounts[ident] += 1
        refs = self._clients.setdefault(client_id, {})
        refs[ident] = refs.get(ident, 0) + 1

    def decref(self, client_id: str, idents: Any) -> None:
        """Drop one reference held by ``client_id`` to each of ``idents``."""
        released = []
        with self._lock:
            refs = self._clients.get(client_id)
            for ident in idents:
                if not refs or not refs.get(ident):
                    continue  # not this client's reference (or already dropped)
                refs[ident] -= 1
                if not refs[ident]:
                    del refs[ident]
                released += self._drop(ident, 1)
        del released  # objects are destroyed here, outside the lock

    def release_client(self, client_id: str) -> None:
        """Drop every reference ``client_id`` still holds (it has gone)."""
        released = []
        with self._lock:
            self._gone_clients.add(client_id)
            refs = self._clients.pop(client_id, None) or {}
            for ident, count in refs.items():
                released += self._drop(ident, count)
        del released

    def _drop(self, ident: int, count: int) -> list[Any]:
        left = self._refcounts.get(ident, 0) - count
        if left > 0:
            self._refcounts[ident] = left
            return []
        self._refcounts.pop(ident, None)
        self._typeids.pop(ident, None)
        entry = self._objects.pop(ident, None)
        return [entry]

    def number_of_objects(self) -> int:
        """How many objects the server holds."""
        return len(self._objects)

    # -- server methods (ident None) ------------------------------------------------

    def _call_accept_connection(self, client_id: str, name: str = "") -> None:
        return None

    def _call_dummy(self, client_id: str) -> None:
        return None

    def _call_create(
        self, client_id: str, typeid: str, /, *args: Any, **kwds: Any
    ) -> tuple[int, list[str]]:
        entry = self.registry.get(typeid)
        if entry is None or entry[0] is None:
            if entry is None:
                raise KeyError(f"no type {typeid!r} is registered with this manager")
            if len(args) != 1 or kwds:
                raise TypeError(f"{typeid!r} has no callable: create it with exactly one object")
            obj = args[0]
        else:
            obj = entry[0](*args, **kwds)
        return self._register(client_id, typeid, obj)

    def _call_get_methods(self, client_id: str, ident: int) -> list[str]:
        return sorted(self._objects[ident][1])

    def _call_incref(self, client_id: str, ident: int) -> None:
        self.incref(client_id, ident)

    def _call_decref(self, client_id: str, ident: int) -> None:
        self.decref(client_id, (ident,))

    def _call_decrefs(self, client_id: str, idents: Any) -> None:
        # The one-way batch of a session's dropped proxies ("#decrefs").
        self.decref(client_id, idents)

    def _call_number_of_objects(self, client_id: str) -> int:
        return self.number_of_objects()

    def _call_debug_info(self, client_id: str) -> str:
        with self._lock:
            lines = [
                f"  {ident}:       refcount={self._refcounts.get(ident, 0)}\n"
                f"    {self._typeids.get(ident)}: {str(entry[0])[:75]}"
                for ident, entry in self._objects.items()
            ]
        return "\n".join(lines)

    def _call_shutdown(self, client_id: str) -> None:
        self.release_resources()
        self._stopping = True

    def release_resources(self) -> None:
        """Free what must not outlive the server, before a shutdown is acknowledged.

        Called by the thread that obeys the starting process's ``"#shutdown"``
        before it answers, by a client's ``shutdown`` call before its reply, and
        once more as ``serve_forever`` ends. The starting process may terminate
        the server right after the acknowledgement, so nothing that must happen
        may wait for the process to exit. Nothing to free here; see
        ``SharedMemoryServer``.
        """
