"""Proxies: objects in a client that stand for an object in a manager's process.

``BaseProxy._callmethod`` is the one path of every call: this thread's
connection of the process's session (``_session``), one frame out, one frame
back. A proxy holds one reference to its object, counted by the server for this
process; unpickling a proxy in another process takes a reference there first.
After a fork the child's first call takes its own reference (the parent's
connections are not shared).

``MakeProxyType`` builds a proxy class with one method per exposed name;
``AutoProxy`` asks the server which names are exposed. The proxy types of
``SyncManager`` are at the bottom.
"""

from __future__ import annotations

import os
import queue
import types
from typing import Any

from .._core._reduction import is_spawning
from .._core._timeout import check_timeout
from .._start._process import current_process
from ._protocol import PROXY, RETURN, Token, public_methods, raise_reply
from ._server import take_for_recipient
from ._session import Session, acquire_session, known_authkey, note_taken_over, session_for

__all__ = (
    "AcquirerProxy",
    "ArrayProxy",
    "AutoProxy",
    "BarrierProxy",
    "BaseListProxy",
    "BasePoolProxy",
    "BaseProxy",
    "ConditionProxy",
    "DictProxy",
    "EventProxy",
    "IteratorProxy",
    "ListProxy",
    "MakeProxyType",
    "NamespaceProxy",
    "PoolProxy",
    "QueueProxy",
    "RebuildProxy",
    "ValueProxy",
    "register_proxytype",
)

#: typeid -> proxy type, for results that come back as new shared objects when
#: the proxy has no manager to ask (a proxy in a child process).
_proxytypes: dict[str, Any] = {}


def register_proxytype(typeid: str, proxytype: Any) -> None:
    """Remember ``proxytype`` as the proxy of ``typeid`` (used when no manager is at hand)."""
    _proxytypes[typeid] = proxytype


class BaseProxy:
    """The base of every proxy: calls methods of a shared object in a manager.

    Args:
        token: the object's ``Token`` (typeid, manager address, id).
        serializer: ``"pickle"`` or ``"xmlrpclib"``.
        manager: the manager that made it, if in this process.
        authkey: the manager's key; ``None`` means this process's ``authkey``.
        exposed: the names the object exposes (``AutoProxy`` uses them).
        incref: take a reference for this process (``False``: the reference
            the creation took for this process is this proxy's).
        manager_owned: accepted for compatibility; proctor counts references
            of the manager's own process like any other's.
    """

    _exposed_: tuple[str, ...] | None = None
    _method_to_typeid_: dict[str, str] | None = None
    _session: Session

    def __init__(
        self,
        token: Token,
        serializer: str,
        manager: Any = None,
        authkey: bytes | None = None,
        exposed: Any = None,
        incref: bool = True,
        manager_owned: bool = False,
    ) -> None:
        self._token = token
        self._id = token.id
        self._serializer = serializer
        self._manager = manager
        self._authkey = bytes(authkey) if authkey is not None else bytes(current_process().authkey)
        self._manager_pid = getattr(manager, "_manager_pid", None)
        self._holds = False
        self._isauto = False
        if incref:
            self._incref()
        else:
            # The reference the creation took for this process; the caller (a
            # manager, or the proxy whose call returned this one) keeps the
            # session open until this proxy holds it too.
            self._session = acquire_session(
                token.address, self._authkey, serializer, self._manager_pid
            )
            self._holds = True

    def _incref(self) -> None:
        session = acquire_session(
            self._token.address, self._authkey, self._serializer, self._manager_pid
        )
        try:
            session.call(None, "incref", (self._id,))
        except BaseException:
            session.unuse()
            raise
        self._session = session
        self._holds = True

    def _connect(self) -> Any:
        """This thread's connection; after a fork, first take this process's reference."""
        session = self._session
        if session.pid != os.getpid():
            self._holds = False
            self._incref()
            session = self._session
        try:
            return session.local.conn
        except AttributeError:
            return session.connection()

    def _callmethod(self, methodname: str, args: tuple[Any, ...] = (), kwds: Any = None) -> Any:
        """Call ``methodname`` of the shared object and return its result.

        Raises:
            ManagerLostError: the manager's process ended or was shut down.
            RemoteError: the object does not expose ``methodname``, or the
                result could not be sent back.
            Exception: what the method raised, with the manager's traceback
                as ``__cause__``.
        """
        session = self._session
        try:
            conn = session.local.conn
        except AttributeError:
            conn = self._connect()
            session = self._session
        if session.pending:
            session.flush(conn)
        try:
            conn.send((self._id, methodname, args, kwds or {}))
        except (EOFError, OSError) as exc:
            raise session.broken(exc, methodname) from exc
        except BaseException:
            # The request could not be pickled, or was cut short (a signal
            # handler raised): this thread's next call opens a new connection.
            session.drop_connection()
            raise
        try:
            kind, result = conn.recv()
        except (EOFError, OSError) as exc:
            raise session.broken(exc, methodname) from exc
        except BaseException:
            # Interrupted before its reply (a signal handler raised, Ctrl-C), or
            # the reply did not unpickle: the manager is told to give the call
            # up, or to drop what the reply counted, and the connection is in
            # step again (or dropped): the next call never gets this one's reply.
            session.resync(conn, self._id, methodname)
            raise
        if kind == RETURN:
            return result
        if kind == PROXY:
            return self._new_proxy(result)
        try:
            raise_reply(kind, result)
        finally:
            del result  # the exception's traceback holds this frame: no cycle (gh-106558)

    def _new_proxy(self, result: Any) -> Any:
        typeid, ident, exposed = result
        proxytype = None
        if self._manager is not None:
            entry = self._manager._registry.get(typeid)
            proxytype = entry[-1] if entry is not None else None
        if proxytype is None:
            proxytype = _proxytypes.get(typeid, AutoProxy)
        token = Token(typeid, self._token.address, ident)
        proxy = proxytype(
            token,
            self._serializer,
            manager=self._manager,
            authkey=self._authkey,
            exposed=exposed,
            incref=False,
        )
        proxy._manager_pid = self._manager_pid
        return proxy

    def _getvalue(self) -> Any:
        """A copy of the shared object (the stdlib's name)."""
        return self._callmethod("#GETVALUE")

    def __del__(self) -> None:
        try:
            if self._holds and self._session.pid == os.getpid():
                self._holds = False
                self._session.release(self._id)
        except Exception:
            pass  # interpreter shutdown

    def __reduce__(self) -> Any:
        kwds: dict[str, Any] = {"manager_pid": self._manager_pid}
        serial = take_for_recipient(self)
        if serial is not None:
            # In the manager, in a reply (a proxy a managed container held, handed
            # back by pop() or get()): the client's reference is counted already;
            # the reply's serial says which reply counted it.
            kwds["counted"] = serial
        if is_spawning():
            # A child started with this proxy gets the key, as the stdlib's do;
            # a proxy sent in a message does not carry it.
            kwds["authkey"] = self._authkey
        if self._isauto:
            kwds["exposed"] = self._exposed_
            return (RebuildProxy, (AutoProxy, self._token, self._serializer, kwds))
        return (RebuildProxy, (type(self), self._token, self._serializer, kwds))

    def __deepcopy__(self, memo: Any) -> Any:
        return self._getvalue()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object, typeid {self._token.typeid!r} at {id(self):#x}>"

    def __str__(self) -> str:
        try:
            return str(self._callmethod("__repr__"))
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"


def RebuildProxy(func: Any, token: Token, serializer: str, kwds: dict[str, Any]) -> Any:
    """Make the proxy of ``token`` in this process (taking a reference here)."""
    kwds = dict(kwds)
    manager_pid = kwds.pop("manager_pid", None)
    kwds.pop("incref", None)
    counted = kwds.pop("counted", False)
    if kwds.get("authkey") is None:
        kwds["authkey"] = known_authkey(token.address)
    proxy = func(token, serializer, incref=not counted, **kwds)
    if counted is not True and counted:
        # (for the manager, should the rest of the reply fail to unpickle)
        note_taken_over(counted, token.id)
    proxy._manager_pid = manager_pid
    if getattr(proxy, "_session", None) is not None and proxy._session.manager_pid is None:
        proxy._session.manager_pid = manager_pid
    return proxy


def _make_method(name: str) -> Any:
    def method(self: BaseProxy, /, *args: Any, **kwds: Any) -> Any:
        return self._callmethod(name, args, kwds)

    method.__name__ = method.__qualname__ = name
    return method


def MakeProxyType(name: str, exposed: Any, _cache: dict[Any, type] = {}) -> type:  # noqa: B006
    """A ``BaseProxy`` subclass named ``name`` with one method per name in ``exposed``."""
    exposed = tuple(exposed)
    try:
        return _cache[(name, exposed)]
    except KeyError:
        pass
    namespace: dict[str, Any] = {name_: _make_method(name_) for name_ in exposed}
    namespace["_exposed_"] = exposed
    proxytype = type(name, (BaseProxy,), namespace)
    _cache[(name, exposed)] = proxytype
    return proxytype


def AutoProxy(
    token: Token,
    serializer: str,
    manager: Any = None,
    authkey: bytes | None = None,
    exposed: Any = None,
    incref: bool = True,
    manager_owned: bool = False,
) -> BaseProxy:
    """A proxy with a method for each name the object exposes (asked from the server if needed)."""
    if exposed is None:
        key = authkey if authkey is not None else bytes(current_process().authkey)
        session = session_for(token.address, key, serializer)
        exposed = session.call(None, "get_methods", (token.id,))
    proxytype = MakeProxyType(f"AutoProxy[{token.typeid}]", exposed)
    proxy = proxytype(
        token,
        serializer,
        manager=manager,
        authkey=authkey,
        incref=incref,
        manager_owned=manager_owned,
    )
    proxy._isauto = True
    return proxy


# -- SyncManager's proxy types ---------------------------------------------------------


class IteratorProxy(BaseProxy):
    """An iterator (or generator) in the manager."""

    _exposed_ = ("__next__", "send", "throw", "close")

    def __iter__(self) -> IteratorProxy:
        return self

    def __next__(self, *args: Any) -> Any:
        return self._callmethod("__next__", args)

    def send(self, *args: Any) -> Any:
        return self._callmethod("send", args)

    def throw(self, *args: Any) -> Any:
        return self._callmethod("throw", args)

    def close(self, *args: Any) -> Any:
        return self._callmethod("close", args)


def _checked_wait(timeout: Any) -> Any:
    """``timeout`` of a managed lock's, event's or condition's wait, checked here.

    Raises:
        TypeError: not a number or ``None``.
        ValueError: NaN (an ``Event`` returned at once, a ``Semaphore`` waited for ever).
    """
    if timeout is not None:
        check_timeout(timeout)  # (math.inf stays: the manager waits for ever then)
    return timeout


def _checked_queue_timeout(block: Any, timeout: Any) -> Any:
    """``timeout`` of a managed queue's ``get()`` or ``put()``, checked here.

    Returns:
        ``None`` for ever (``math.inf`` too, which made ``queue.Queue`` raise
        ``OverflowError``), else ``timeout``.

    Raises:
        TypeError: not a number or ``None``.
        ValueError: NaN (``queue.Queue`` waited for ever), or negative with
            ``block`` (as ``queue.Queue`` refuses it).
    """
    if timeout is None:
        return None
    seconds = check_timeout(timeout)  # (TypeError, or ValueError for NaN)
    if seconds is None:
        return None
    if block and seconds < 0:
        raise ValueError(
            f"timeout must be a non-negative number of seconds or None, not {timeout!r} "
            "(a managed Queue is a queue.Queue, which refuses a negative one)"
        )
    return timeout


class AcquirerProxy(BaseProxy):
    """A lock or semaphore in the manager."""

    _exposed_: tuple[str, ...] = ("acquire", "release")

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Any:
        args = (blocking,) if timeout is None else (blocking, _checked_wait(timeout))
        return self._callmethod("acquire", args)

    def release(self) -> Any:
        return self._callmethod("release")

    def __enter__(self) -> Any:
        return self._callmethod("acquire")

    def __exit__(self, *exc_info: object) -> Any:
        return self._callmethod("release")


class ConditionProxy(AcquirerProxy):
    """A ``threading.Condition`` in the manager."""

    _exposed_ = ("acquire", "release", "wait", "notify", "notify_all")

    def wait(self, timeout: float | None = None) -> Any:
        return self._callmethod("wait", (_checked_wait(timeout),))

    def notify(self, n: int = 1) -> Any:
        return self._callmethod("notify", (n,))

    def notify_all(self) -> Any:
        return self._callmethod("notify_all")

    def wait_for(self, predicate: Any, timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true (evaluated here), or ``timeout`` seconds."""
        import time

        result = predicate()
        if result:
            return result
        endtime = None if timeout is None else time.monotonic() + timeout
        waittime = None
        while not result:
            if endtime is not None:
                waittime = endtime - time.monotonic()
                if waittime <= 0:
                    break
            self.wait(waittime)
            result = predicate()
        return result


class EventProxy(BaseProxy):
    """A ``threading.Event`` in the manager."""

    _exposed_ = ("is_set", "set", "clear", "wait")

    def is_set(self) -> Any:
        return self._callmethod("is_set")

    def set(self) -> Any:
        return self._callmethod("set")

    def clear(self) -> Any:
        return self._callmethod("clear")

    def wait(self, timeout: float | None = None) -> Any:
        return self._callmethod("wait", (_checked_wait(timeout),))


class BarrierProxy(BaseProxy):
    """A ``threading.Barrier`` in the manager."""

    _exposed_ = ("__getattribute__", "wait", "abort", "reset")

    def wait(self, timeout: float | None = None) -> Any:
        return self._callmethod("wait", (timeout,))

    def abort(self) -> Any:
        return self._callmethod("abort")

    def reset(self) -> Any:
        return self._callmethod("reset")

    @property
    def parties(self) -> Any:
        return self._callmethod("__getattribute__", ("parties",))

    @property
    def n_waiting(self) -> Any:
        return self._callmethod("__getattribute__", ("n_waiting",))

    @property
    def broken(self) -> Any:
        return self._callmethod("__getattribute__", ("broken",))


_QueueProxyBase = MakeProxyType("QueueProxy", public_methods(queue.Queue()))


class QueueProxy(_QueueProxyBase):  # type: ignore[valid-type,misc]
    """A ``queue.Queue`` in the manager (``Manager().Queue()``, ``JoinableQueue()``).

    Note:
        The stdlib's is an ``AutoProxy``, with the same methods. Here ``get()``
        and ``put()`` check ``timeout`` before sending it: NaN raises
        ``ValueError`` (``queue.Queue`` waited for ever), ``math.inf`` waits for
        ever (``queue.Queue`` raised ``OverflowError``), as ``proctor.Queue``
        does; a negative one with ``block`` raises ``ValueError``, as
        ``queue.Queue`` does.
    """

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self._callmethod("get", (block, _checked_queue_timeout(block, timeout)))

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> Any:
        return self._callmethod("put", (obj, block, _checked_queue_timeout(block, timeout)))


class NamespaceProxy(BaseProxy):
    """A ``Namespace`` in the manager: attribute reads and writes go there."""

    _exposed_ = ("__getattribute__", "__setattr__", "__delattr__")

    def __getattr__(self, key: str) -> Any:
        if key[0] == "_":
            return object.__getattribute__(self, key)
        return object.__getattribute__(self, "_callmethod")("__getattribute__", (key,))

    def __setattr__(self, key: str, value: Any) -> None:
        if key[0] == "_":
            object.__setattr__(self, key, value)
            return
        object.__getattribute__(self, "_callmethod")("__setattr__", (key, value))

    def __delattr__(self, key: str) -> None:
        if key[0] == "_":
            object.__delattr__(self, key)
            return
        object.__getattribute__(self, "_callmethod")("__delattr__", (key,))


class ValueProxy(BaseProxy):
    """A ``Value`` in the manager."""

    _exposed_ = ("get", "set")

    def get(self) -> Any:
        return self._callmethod("get")

    def set(self, value: Any) -> Any:
        return self._callmethod("set", (value,))

    value = property(get, set)

    __class_getitem__: Any = classmethod(types.GenericAlias)


BaseListProxy = MakeProxyType(
    "BaseListProxy",
    (
        "__add__",
        "__contains__",
        "__delitem__",
        "__getitem__",
        "__len__",
        "__mul__",
        "__reversed__",
        "__rmul__",
        "__setitem__",
        "append",
        "count",
        "extend",
        "index",
        "insert",
        "pop",
        "remove",
        "reverse",
        "sort",
        "__imul__",
    ),
)


class ListProxy(BaseListProxy):  # type: ignore[valid-type,misc]
    """A ``list`` in the manager."""

    def __iadd__(self, value: Any) -> ListProxy:
        self._callmethod("extend", (value,))
        return self

    def __imul__(self, value: Any) -> ListProxy:
        self._callmethod("__imul__", (value,))
        return self

    __class_getitem__: Any = classmethod(types.GenericAlias)


_DictProxyBase = MakeProxyType(
    "DictProxy",
    (
        "__contains__",
        "__delitem__",
        "__getitem__",
        "__ior__",
        "__iter__",
        "__len__",
        "__or__",
        "__reversed__",
        "__ror__",
        "__setitem__",
        "clear",
        "copy",
        "fromkeys",
        "get",
        "items",
        "keys",
        "pop",
        "popitem",
        "setdefault",
        "update",
        "values",
    ),
)


class DictProxy(_DictProxyBase):  # type: ignore[valid-type,misc]
    """A ``dict`` in the manager."""

    _method_to_typeid_ = {"__iter__": "Iterator"}

    def __ior__(self, value: Any) -> DictProxy:
        self._callmethod("__ior__", (value,))
        return self

    __class_getitem__: Any = classmethod(types.GenericAlias)


ArrayProxy = MakeProxyType("ArrayProxy", ("__len__", "__getitem__", "__setitem__"))

BasePoolProxy = MakeProxyType(
    "PoolProxy",
    (
        "apply",
        "apply_async",
        "close",
        "imap",
        "imap_unordered",
        "join",
        "map",
        "map_async",
        "starmap",
        "starmap_async",
        "terminate",
    ),
)


class PoolProxy(BasePoolProxy):  # type: ignore[valid-type,misc]
    """A ``Pool`` in the manager."""

    _method_to_typeid_ = {
        "apply_async": "AsyncResult",
        "map_async": "AsyncResult",
        "starmap_async": "AsyncResult",
        "imap": "Iterator",
        "imap_unordered": "Iterator",
    }

    def __enter__(self) -> PoolProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()
