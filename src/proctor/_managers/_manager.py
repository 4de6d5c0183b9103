"""``BaseManager`` and ``SyncManager``: start (or connect to) a manager and make shared objects.

::

    BaseManager.start()                       manager process (a proctor Process)
    ───────────────────                       ─────────────────────────────────
    control, theirs = _control_pair() ─────▶  _run_server: ignore SIGINT, initializer,
    Process(target=_run_server).start()         Server(registry, address, authkey)
    control.recv() ◀─── server.address ──────   a "manager-control" thread waits on
    Finalize(shutdown) at exit or shutdown():     the pipe; serve_forever()
      "#shutdown" on control ───────────────▶   release_resources() (unlinks...),
      wait for "#released" ◀─────────────────    then the server stops, the process exits
      join(shutdown_timeout), then terminate, then kill

``manager.dict()`` (a method ``register`` added) sends ``create`` on this
process's session and wraps the reply in the type's proxy. ``connect()`` opens a
session with a manager someone else started (another process, another machine).
"""

from __future__ import annotations

import array
import queue
import signal
import tempfile
import threading
from typing import Any

from .._connections._connection import Connection
from .._connections._handshake import check_authkey
from .._connections._listener import _family_of_address
from .._core._errors import ManagerLostError, ProcessError
from .._core._finalize import Finalize
from .._core._timeout import check_duration
from .._pool._pool import Pool
from .._start._process import Process, _exitcode_name, current_process
from ._protocol import Token, check_serializer
from ._proxy import (
    AcquirerProxy,
    ArrayProxy,
    AutoProxy,
    BarrierProxy,
    ConditionProxy,
    DictProxy,
    EventProxy,
    IteratorProxy,
    ListProxy,
    NamespaceProxy,
    PoolProxy,
    QueueProxy,
    ValueProxy,
    register_proxytype,
)
from ._server import Server
from ._session import acquire_session, close_sessions, describe_owned

try:
    # Loaded with this module, not in the server process: a forked server would
    # otherwise load it after its fork, 0.3 ms of every Manager()'s start.
    import resource as _resource
except ImportError:  # not a POSIX system
    _resource = None  # type: ignore[assignment]

__all__ = ("Array", "BaseManager", "Namespace", "State", "SyncManager", "Value")


class State:
    """A manager's state: ``INITIAL``, ``STARTED`` or ``SHUTDOWN`` (the stdlib's names)."""

    __slots__ = ("value",)
    INITIAL = 0
    STARTED = 1
    SHUTDOWN = 2

    def __init__(self) -> None:
        self.value = State.INITIAL


class BaseManager:
    """A manager: a server process holding shared objects, and proxies to them.

    Args:
        address: where the server listens: a Unix socket path, or
            ``(host, port)`` for TCP (``('', 0)``: every interface, a free
            port). ``None``: a fresh Unix socket path. For ``connect()``, the
            address of a running manager.
        authkey: the key clients must hold (HMAC handshake; a client without it
            is refused before anything it sent is unpickled). ``None``: this
            process's ``authkey``.
        serializer: ``"pickle"`` or ``"xmlrpclib"``.
        ctx: the context whose ``Process`` starts the server (its start method).
        shutdown_timeout: seconds ``shutdown()`` waits for the server to exit
            before terminating it (then as long again before killing it).

    Note:
        Unlike the stdlib's, a proxy whose manager has gone raises
        ``ManagerLostError`` (an ``EOFError`` and ``ConnectionError``) saying which
        manager and how it ended, and the references of a client that dies are
        dropped in the manager.
    """

    _registry: dict[str, tuple[Any, Any, Any, Any]] = {}
    _Server: type[Server] = Server

    def __init__(
        self,
        address: Any = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: Any = None,
        *,
        shutdown_timeout: float | None = 1.0,
    ) -> None:
        key = check_authkey(authkey)  # (checked here, not first in the server process)
        if address is not None:
            _family_of_address(address)
        if ctx is not None and not callable(getattr(ctx, "Process", None)):
            raise TypeError(
                f"ctx must be a proctor context (proctor.get_context('spawn')) or None, not {ctx!r}"
            )
        check_duration(shutdown_timeout, "shutdown_timeout", allow_zero=True)
        self._address = address
        self._authkey = bytes(current_process().authkey) if key is None else key
        self._state = State()
        self._serializer = check_serializer(serializer)
        self._ctx = ctx
        self._shutdown_timeout = shutdown_timeout
        # [the server process], replaced by an _EndedProcess record once it has
        # been joined and closed (its descriptors released at shutdown).
        self._process_box: list[Any] = [None]
        self._manager_pid: int | None = None
        self._finalizer: Finalize | None = None
        # This process's session, held open for the manager's own calls (a
        # proxy it creates takes the reference its ``create`` took).
        self._held: Any = None

    # -- life cycle -----------------------------------------------------------------

    @property
    def _process(self) -> Any:
        """The server process (``exitcode``, ``pid``...); ``None`` before ``start()``."""
        return self._process_box[0]

    @property
    def address(self) -> Any:
        """The server's address (known once started or given)."""
        return self._address

    def _server_registry(self) -> dict[str, tuple[Any, Any, Any]]:
        return {typeid: entry[:3] for typeid, entry in self._registry.items()}

    def get_server(self) -> Server:
        """A ``Server`` for this manager's types, to run in this process with ``serve_forever()``.

        Raises:
            ProcessError: the manager was already started or shut down.
        """
        self._check_initial()
        return self._Server(self._server_registry(), self._address, self._authkey, self._serializer)

    def connect(self) -> None:
        """Connect to a manager already serving at ``address``.

        Raises:
            ManagerLostError: nothing serves at ``address``.
            AuthenticationError: ``authkey`` is not the manager's.
        """
        session = acquire_session(self._address, self._authkey, self._serializer)
        try:
            session.call(None, "dummy")
        except BaseException:
            session.release()
            raise
        self._held = session
        self._state.value = State.STARTED

    def _check_initial(self) -> None:
        if self._state.value == State.STARTED:
            raise ProcessError("Already started server: a manager starts once")
        if self._state.value == State.SHUTDOWN:
            raise ProcessError("Manager has shut down: create a new one")

    def start(self, initializer: Any = None, initargs: tuple[Any, ...] = ()) -> None:
        """Start the server process; return once it serves.

        Args:
            initializer: called as ``initializer(*initargs)`` in the server
                process before it serves.
            initargs: its arguments.

        Raises:
            TypeError: ``initializer`` is not callable.
            ProcessError: already started, or shut down.
            ManagerLostError: the server process ended before serving (its
                exit code is in the message).
        """
        self._check_initial()
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        # The control pipe: the server's address comes back on it, and shutdown()
        # goes out on it (no connection and handshake to a server that may
        # still be starting: about 5 ms, half of a Manager()'s life).
        control, theirs = _control_pair()
        process_class = self._ctx.Process if self._ctx is not None else Process
        process = process_class(
            target=type(self)._run_server,
            args=(
                self._server_registry(),
                self._address,
                self._authkey,
                self._serializer,
                theirs,
                initializer,
                initargs,
            ),
        )
        process.name = f"{type(self).__name__}-{process.name.rpartition('-')[2]}"
        # The server's listener lives in a directory made under it. tempfile finds
        # it once per process, by creating and removing a file there: found here,
        # a forked server inherits it instead of doing that before it serves.
        tempfile.gettempdir()
        try:
            process.start()
        finally:
            theirs.close()
        try:
            self._address = control.recv()
        except EOFError:
            control.close()
            process.join(timeout=self._shutdown_timeout)
            code = process.exitcode
            raise ManagerLostError(
                f"the manager process (pid {process.pid}) ended before serving, "
                f"exit code {'unknown' if code is None else _exitcode_name(code)}: "
                "its initializer or a registered type may have failed (see its output)"
            ) from None
        except BaseException:
            control.close()
            raise
        self._process_box[0] = process
        self._manager_pid = process.pid
        self._state.value = State.STARTED
        state = self._state
        address = self._address

        def describe() -> str:
            if state.value == State.SHUTDOWN:
                return "was shut down"
            try:
                process.join(timeout=1.0)
                code = process.exitcode
            except ValueError:  # closed meanwhile: by the shutdown (_finalize_manager)
                return "was shut down"
            if state.value == State.SHUTDOWN:  # (shut down while this joined)
                return "was shut down"
            if code is None:
                return "closed the connection (its process still runs)"
            return f"has ended: its process exited with {_exitcode_name(code)}"

        describe_owned(address, describe)
        self._finalizer = Finalize(
            self,
            type(self)._finalize_manager,
            args=(
                self._process_box,
                address,
                self._authkey,
                state,
                self._serializer,
                self._shutdown_timeout,
                control,
            ),
            exitpriority=0,
        )

    @classmethod
    def _run_server(
        cls,
        registry: dict[str, tuple[Any, Any, Any]],
        address: Any,
        authkey: bytes,
        serializer: str,
        control: Any,
        initializer: Any = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        # bpo-36368: a Ctrl-C meant for the parent must not kill the manager
        # under it; the parent shuts it down.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _raise_descriptor_limit()
        if initializer is not None:
            initializer(*initargs)
        server = cls._Server(registry, address, authkey, serializer)
        control.send(server.address)
        threading.Thread(
            target=_obey_control, args=(control, server), name="manager-control", daemon=True
        ).start()
        server.serve_forever()

    @staticmethod
    def _finalize_manager(
        process_box: list[Any],
        address: Any,
        authkey: bytes,
        state: State,
        serializer: str,
        shutdown_timeout: float,
        control: Any,
    ) -> None:
        process = process_box[0]
        if process.is_alive():
            # Before the server hears it: a call it breaks then says "was shut
            # down" (describe), not how the process exited.
            state.value = State.SHUTDOWN
            try:
                control.send(_SHUTDOWN)
                # What the server must free (a SharedMemoryManager's segments) is
                # freed before it answers, so the terminate below never leaves it
                # behind. A server that died answers at once (end of file).
                if control.poll(RELEASE_TIMEOUT):
                    control.recv()
            except (OSError, EOFError):
                pass  # it is dying already: terminated below
            process.join(timeout=shutdown_timeout)
            if process.is_alive():
                process.terminate()
                process.join(timeout=shutdown_timeout)
                if process.is_alive():
                    process.kill()
                    process.join(timeout=shutdown_timeout)
        else:
            process.join(timeout=0)
        control.close()
        state.value = State.SHUTDOWN
        close_sessions(address, "the manager was shut down")
        describe_owned(address, None)
        if process.exitcode is not None:
            process_box[0] = _EndedProcess(process.name, process.pid, process.exitcode)
            process.close()

    def shutdown(self) -> None:
        """Stop the server process (if this process started it); close the connections.

        Idempotent.
        """
        if self._finalizer is not None:
            self._finalizer()
        elif self._state.value == State.STARTED:
            close_sessions(self._address, "this client's manager was shut down")
            self._state.value = State.SHUTDOWN

    def join(self, timeout: float | None = None) -> None:
        """Wait for the server process to end (if this process started it)."""
        if self._process is not None:
            self._process.join(timeout)

    def __enter__(self) -> BaseManager:
        if self._state.value == State.INITIAL:
            self.start()
        if self._state.value != State.STARTED:
            raise ProcessError(
                "Unable to start server: the manager has shut down; create a new one"
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        states = {0: "initial", 1: "started", 2: "shut down"}
        pid = f" pid={self._manager_pid}" if self._manager_pid else ""
        return f"<{type(self).__name__} {states[self._state.value]} address={self._address!r}{pid}>"

    # -- shared objects ----------------------------------------------------------------

    def _session(self) -> Any:
        if self._state.value != State.STARTED:
            if self._state.value == State.SHUTDOWN:
                raise ManagerLostError(
                    f"the manager at {self._address!r} was shut down: create a new one"
                )
            raise ProcessError("the manager is not started: call start() or connect() first")
        session = self._held
        if session is None or session.closed:
            session = self._held = acquire_session(
                self._address, self._authkey, self._serializer, self._manager_pid
            )
        return session

    def _create(self, typeid: str, /, *args: Any, **kwds: Any) -> tuple[Token, list[str]]:
        ident, exposed = self._session().call(None, "create", (typeid, *args), kwds)
        return Token(typeid, self._address, ident), exposed

    def _number_of_objects(self) -> int:
        """How many shared objects the server holds."""
        return int(self._session().call(None, "number_of_objects"))

    def _debug_info(self) -> str:
        """One line per shared object: id, reference count, type."""
        return str(self._session().call(None, "debug_info"))

    @classmethod
    def register(
        cls,
        typeid: str,
        callable: Any = None,
        proxytype: Any = None,
        exposed: Any = None,
        method_to_typeid: dict[str, str] | None = None,
        create_method: bool = True,
    ) -> None:
        """Register a type: ``manager.<typeid>(...)`` then makes one in the server.

        Args:
            typeid: the name of the type (and of the manager's method).
            callable: what makes the object in the server; ``None`` for types
                only produced by ``method_to_typeid``.
            proxytype: the proxy class (``AutoProxy`` by default).
            exposed: the method names proxies may call (default: the proxy
                type's ``_exposed_``, else the object's public methods).
            method_to_typeid: method name -> typeid of the shared object its
                result becomes (a proxy is returned instead of a copy).
            create_method: whether to add the ``typeid`` method to the manager.

        Raises:
            TypeError: ``method_to_typeid`` maps something else than names to names.
        """
        if "_registry" not in cls.__dict__:
            cls._registry = cls._registry.copy()
        if proxytype is None:
            proxytype = AutoProxy
        exposed = exposed or getattr(proxytype, "_exposed_", None)
        method_to_typeid = method_to_typeid or getattr(proxytype, "_method_to_typeid_", None)
        if method_to_typeid:
            for key, value in method_to_typeid.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise TypeError(
                        f"method_to_typeid maps names to typeids, got {key!r}: {value!r}"
                    )
        cls._registry[typeid] = (
            callable,
            tuple(exposed) if exposed is not None else None,
            dict(method_to_typeid) if method_to_typeid else None,
            proxytype,
        )
        register_proxytype(typeid, proxytype)
        if create_method:

            def create(self: BaseManager, /, *args: Any, **kwds: Any) -> Any:
                token, exp = self._create(typeid, *args, **kwds)
                proxy = proxytype(
                    token,
                    self._serializer,
                    manager=self,
                    authkey=self._authkey,
                    exposed=exp,
                    incref=False,
                )
                proxy._manager_pid = self._manager_pid
                return proxy

            create.__name__ = create.__qualname__ = typeid
            setattr(cls, typeid, create)


def _raise_descriptor_limit() -> None:
    """Let the manager process hold as many descriptors as the hard limit allows.

    Each calling thread of each client holds one here (its connection's socket):
    many clients would otherwise reach a soft limit of 1024 (the reaper does the same).
    """
    if _resource is None:
        return
    try:
        soft, hard = _resource.getrlimit(_resource.RLIMIT_NOFILE)
        if soft != _resource.RLIM_INFINITY and (hard == _resource.RLIM_INFINITY or soft < hard):
            _resource.setrlimit(_resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass  # a sandbox that forbids it: the soft limit stays


def _control_pair() -> tuple[Connection, Connection]:
    """The two ends of a manager's control pipe: connections on one Unix socket pair.

    Not a ``Pipe()``, whose ends are made for big messages from several senders
    (four socket pairs, each socket's buffers set: ~50 us more of each
    ``Manager()``, and more descriptors for the fork child to sort); the control
    pipe carries a few small messages, each end read by one thread.
    """
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        return Connection(ours), Connection(theirs)
    except BaseException:
        ours.close()
        theirs.close()
        raise


#: What the process that started a manager sends on its control pipe to stop it.
_SHUTDOWN = "#shutdown"
#: The server's answer, once its ``release_resources()`` is done.
_RELEASED = "#released"
#: Seconds a shutdown waits for that answer. A live server answers in milliseconds
#: (a few ``shm_unlink`` calls); a dead one at once (end of file). Apart from
#: ``shutdown_timeout``, as the stdlib's shutdown waits for its server's reply to
#: the shutdown request before its own join(shutdown_timeout).
RELEASE_TIMEOUT = 10.0


def _obey_control(control: Any, server: Server) -> None:
    """In the manager: stop the server when the starting process says so on ``control``.

    Its ``release_resources()`` runs first, and the answer goes back once it is
    done: the starting process may terminate this one soon after.

    The pipe's end (the starting process gone) changes nothing: the manager
    goes on serving its other clients, as before.
    """
    try:
        try:
            while control.recv() != _SHUTDOWN:
                pass
        except (EOFError, OSError):
            return
        try:
            server.release_resources()
        finally:
            server.stop_event.set()
            try:
                control.send(_RELEASED)
            except OSError:
                pass  # the starting process stopped waiting: nothing to tell
    finally:
        control.close()


class _EndedProcess:
    """What is left of a manager's server process once it is joined and closed."""

    def __init__(self, name: str, pid: int | None, exitcode: int) -> None:
        self.name = name
        self.pid = pid
        self.exitcode = exitcode

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        pass

    def __repr__(self) -> str:
        code = _exitcode_name(self.exitcode)
        return f"<ended process name={self.name!r} pid={self.pid} exitcode={code}>"


# -- SyncManager's server-side types ------------------------------------------------------


class Namespace:
    """A plain object whose attributes are the shared state."""

    def __init__(self, /, **kwds: Any) -> None:
        self.__dict__.update(kwds)

    def __repr__(self) -> str:
        items = sorted((k, v) for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"Namespace({', '.join(f'{k}={v!r}' for k, v in items)})"


class Value:
    """A value with a typecode, as ``multiprocessing.Value`` but in the manager."""

    def __init__(self, typecode: Any, value: Any, lock: Any = True) -> None:
        self._typecode = typecode
        self._value = value

    def get(self) -> Any:
        return self._value

    def set(self, value: Any) -> None:
        self._value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._typecode!r}, {self._value!r})"

    value = property(get, set)


def Array(typecode: Any, sequence: Any, lock: Any = True) -> array.array[Any]:
    """An ``array.array`` in the manager."""
    return array.array(typecode, sequence)


class SyncManager(BaseManager):
    """A manager with the stdlib's types: ``list``, ``dict``, ``Namespace``, locks, queues..."""

    if False:  # pragma: no cover - for type checkers: the methods register() adds
        list: Any
        dict: Any


SyncManager.register("Queue", queue.Queue, QueueProxy)
SyncManager.register("JoinableQueue", queue.Queue, QueueProxy)
SyncManager.register("Event", threading.Event, EventProxy)
SyncManager.register("Lock", threading.Lock, AcquirerProxy)
SyncManager.register("RLock", threading.RLock, AcquirerProxy)
SyncManager.register("Semaphore", threading.Semaphore, AcquirerProxy)
SyncManager.register("BoundedSemaphore", threading.BoundedSemaphore, AcquirerProxy)
SyncManager.register("Condition", threading.Condition, ConditionProxy)
SyncManager.register("Barrier", threading.Barrier, BarrierProxy)
SyncManager.register("Pool", Pool, PoolProxy)
SyncManager.register("list", list, ListProxy)
SyncManager.register("dict", dict, DictProxy)
SyncManager.register("Value", Value, ValueProxy)
SyncManager.register("Array", Array, ArrayProxy)
SyncManager.register("Namespace", Namespace, NamespaceProxy)
# Types of objects that methods return (method_to_typeid), never created directly.
SyncManager.register("Iterator", proxytype=IteratorProxy, create_method=False)
SyncManager.register("AsyncResult", create_method=False)
