"""What a manager's clients and its server say to each other, and how it is encoded.

One request, one reply, on a connection that stays open::

    client                                         server (one thread per connection)
    ──────                                         ──────
    (HELLO, client_id, is_anchor)  ──────────────▶ the connection belongs to client_id
    (ident, method, args, kwds)    ──────────────▶ objects[ident].method(*args, **kwds)
                                   ◀────────────── (RETURN, value)
                                                   (PROXY, (typeid, ident, exposed))
                                                   (RAISE, (exception, traceback text))
                                                   (TRACEBACK, text)   -> RemoteError
    (None, "#decrefs", (idents,), {}) ───────────▶ one way: no reply
    (None, "#cancel", (), {})      ──────────────▶ the call before was given up on
                                   ◀────────────── (CANCELLED, True): it took nothing
                                                   (CANCELLED, False): its reply went first
    (ident, "#undo", (name, result), {}) ────────▶ undo a result that came too late
    (None, "#unreceived", (serial, idents), {}) ─▶ one way: the last reply did not
                                                   unpickle; drop what it counted

``ident`` ``None`` addresses the server itself (create, incref, decref, shutdown...).
A request is a plain tuple and a reply a pair, pickled once by the connection: no
per-call handshake and no dispatch through a ``(kind, result)`` helper object.

The kinds are the stdlib's strings (``'#RETURN'``, ``'#ERROR'``...), so that
:func:`dispatch` speaks the same language as ``multiprocessing.managers.dispatch``;
``'#RAISE'``, ``'#PROXY'`` with a typeid, and the cancel of an interrupted call
(``_session.Session.resync``, ``_cancellable``) are proctor's.
"""

from __future__ import annotations

import traceback
from typing import Any

from .._core._errors import RemoteError, RemoteTraceback

__all__ = (
    "CANCEL",
    "CANCELLED",
    "ERROR",
    "HELLO",
    "PROXY",
    "RAISE",
    "RETURN",
    "TRACEBACK",
    "UNDO",
    "UNRECEIVED",
    "UNSERIALIZABLE",
    "Token",
    "XmlRpcConnection",
    "dispatch",
    "public_methods",
    "raise_reply",
)

RETURN = "#RETURN"
ERROR = "#ERROR"
TRACEBACK = "#TRACEBACK"
UNSERIALIZABLE = "#UNSERIALIZABLE"
RAISE = "#RAISE"
PROXY = "#PROXY"
HELLO = "#HELLO"
#: The reply that answers a ``CANCEL``: True if the call it cancelled took nothing.
CANCELLED = "#CANCELLED"
#: Requests of a client resynchronising after an interrupted call.
CANCEL = "#cancel"
UNDO = "#undo"
UNRECEIVED = "#unreceived"

#: Serializer names a manager accepts, as the stdlib's.
SERIALIZERS = ("pickle", "xmlrpclib")


class Token:
    """What identifies one shared object: its type id, its manager's address, its id."""

    __slots__ = ("address", "id", "typeid")

    def __init__(self, typeid: str, address: Any, id: Any) -> None:
        self.typeid = typeid
        self.address = address
        self.id = id

    def __getstate__(self) -> tuple[str, Any, Any]:
        return (self.typeid, self.address, self.id)

    def __setstate__(self, state: tuple[str, Any, Any]) -> None:
        self.typeid, self.address, self.id = state

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(typeid={self.typeid!r}, address={self.address!r}, id={self.id!r})"


def public_methods(obj: Any) -> list[str]:
    """The names of ``obj``'s callable attributes that do not start with ``_``."""
    names = []
    for name in dir(obj):
        if name[0] == "_":
            continue
        try:
            value = getattr(obj, name)
        except AttributeError:
            continue
        if callable(value):
            names.append(name)
    return names


def remote_error(kind: str, value: Any) -> BaseException:
    """The exception a reply of ``kind`` other than RETURN/RAISE stands for."""
    if kind == ERROR:
        return value if isinstance(value, BaseException) else RemoteError("Exception", str(value))
    if kind == TRACEBACK:
        type_name, _, message = _last_line(value).partition(": ")
        return RemoteError(type_name, message, value)
    if kind == UNSERIALIZABLE:
        return RemoteError(
            "unserializable result",
            "the manager could not send the result back: " + _last_line(value),
            value,
        )
    return ValueError(f"unrecognized message kind {kind!r} from the manager")


def _last_line(text: str) -> str:
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else str(text)


def raise_reply(kind: str, value: Any) -> None:
    """Raise what a reply that is not a plain RETURN stands for.

    A RAISE reply's exception is raised as itself with the server's traceback as
    ``__cause__``. The local names are dropped before leaving, so the exception
    does not keep this frame (and itself) alive in a reference cycle (gh-106558).
    """
    if kind == RAISE:
        exc, tb_text = value
        if isinstance(exc, BaseException):
            exc.__cause__ = RemoteTraceback(tb_text)
        else:
            exc = RemoteError(type(exc).__name__, str(exc), tb_text)
    else:
        exc = remote_error(kind, value)
        if kind in (TRACEBACK, UNSERIALIZABLE):
            exc.__cause__ = RemoteTraceback(value)
    try:
        raise exc
    finally:
        del exc, value


def format_exception(exc: BaseException) -> str:
    """``exc``'s traceback as the manager process saw it."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def dispatch(c: Any, id: Any, methodname: str, args: tuple[Any, ...] = (), kwds: Any = None) -> Any:
    """Send one request on connection ``c`` and return its result (the stdlib's helper).

    Raises:
        Exception: what the reply stands for: the exception raised in the
            manager, or ``RemoteError``.
    """
    c.send((id, methodname, args, kwds or {}))
    kind, result = c.recv()
    if kind == RETURN:
        return result
    try:
        raise_reply(kind, result)
    finally:
        del result  # the exception's traceback holds this frame: no cycle (gh-106558)
    return None  # not reached


class XmlRpcConnection:
    """A connection that sends XML-RPC documents instead of pickles (``serializer="xmlrpclib"``).

    Only XML-RPC's types travel (tuples arrive as lists); anything else fails
    to send, which leaves the connection usable.
    """

    def __init__(self, conn: Any) -> None:
        # Imported here, not with the module: xmlrpc.client brings http.client and
        # the email package (40-150 ms), which every process importing
        # proctor.managers -- each spawn child of a program that does -- would pay.
        import xmlrpc.client

        self._conn = conn
        self._xmlrpc = xmlrpc.client

    def send(self, obj: Any) -> None:
        self._conn.send_bytes(self._xmlrpc.dumps((obj,), allow_none=True).encode("utf-8"))

    def recv(self) -> Any:
        return self._xmlrpc.loads(self._conn.recv_bytes().decode("utf-8"))[0][0]

    def poll(self, timeout: float | None = 0.0) -> bool:
        return bool(self._conn.poll(timeout))

    def fileno(self) -> int:
        return int(self._conn.fileno())

    @property
    def closed(self) -> bool:
        return bool(self._conn.closed)

    def close(self) -> None:
        self._conn.close()


def wrap(conn: Any, serializer: str) -> Any:
    """``conn`` speaking ``serializer``."""
    return XmlRpcConnection(conn) if serializer == "xmlrpclib" else conn


def check_serializer(serializer: Any) -> str:
    """``serializer`` if it is one proctor knows.

    Raises:
        ValueError: it is not ``"pickle"`` or ``"xmlrpclib"``.
    """
    if serializer not in SERIALIZERS:
        raise ValueError(
            f"unknown serializer {serializer!r}: a manager speaks 'pickle' (the default) "
            "or 'xmlrpclib'"
        )
    return str(serializer)
