"""How objects that own file descriptors reach another process: at a start, or in a message.

Under ``fork`` nothing is pickled: the child is a copy of the parent and inherits
every descriptor at the same number. Everywhere else a descriptor travels beside
the pickle, with ``SCM_RIGHTS``, and this is the one way it does: the pickling is
done inside a *collector* (:func:`handing_off` when ``Process.start()`` pickles the
process object for a spawn or forkserver child; :func:`collecting_fds` when
``Connection.send()`` sends an object through a Unix socket), and the unpickling
inside :func:`receiving`::

    sender                                          receiver
    ──────                                          ────────
    with handing_off(handoff)                       with receiving(fds):
      or collecting_fds(collector):                     unpickle(...)
        pickle(obj)                                       rebuild(token)
          obj.__reduce__()                                  fd = take_fd(token)
            token = fd_token(fd) ──┐
    send(pickle, collector.fds) ───┴──SCM_RIGHTS──▶ (data, fds)
    (a start: for hook in handoff.after_start: hook(pid))

An object that owns a descriptor writes ``__reduce__`` as
``return (rebuild, (fd_token(self._fd, ..., messages=True), ...))`` and ``rebuild``
calls :func:`take_fd`. ``messages=True`` says that the object may travel in a
message too (a ``Connection``, a socket, a queue, a lock, shared memory): a
descriptor keeps the kernel object alive while it is in flight. Pickling such an
object anywhere else (a plain ``pickle.dumps``, a file, a TCP connection) raises
:class:`DescriptorsNeedACarrier` from :func:`fd_token` (or :func:`need_carrier`)
instead of sending a number that means nothing in the receiver.

Objects known by name (OS semaphores, shared-memory segments) must stay alive
between the pickling and the receiver's rebuilding, even if the sender exits at
once. At a start they register an ``after_start`` hook (the child's pid is
registered with whoever reclaims the name). In a message they take
:meth:`MessageFds.delivery_fd`: the read end of a pipe whose write end travels
with the message and is closed by the receiver once the whole message is
unpickled (every object in it rebuilt and registered), or by the kernel with the
message if nobody ever receives it. The resource reaper keeps the names until it
reads EOF there (``_reaper._client.keep_for_receiver``)::

    sender                                   reaper                 receiver
    pickle: delivery_fd() ─ r ──────────────▶ pin(names) while r
    send(pickle, [..., w]) ───────────── SCM_RIGHTS ──────────────▶ rebuild:
    exit (any time)                                                 register(names)
                                              EOF on r ◀── close w ─ end of unpickling

:class:`Descriptors` is a pickle's descriptors as one object, for a pickle made
now and sent later (a pool's task and result) by a transport that sends objects
(``Connection.send()``).

Also here, the stdlib's pickling hooks: :class:`ForkingPickler` and
:func:`register` (reducers for a class, used by every proctor send), and the
reducer of ``socket.socket``.
"""

from __future__ import annotations

# The C pickler alone (pickle.Pickler is this class): pickle.py, with its re, costs
# a spawned child ~17 M instructions; socket.py, with enum and selectors, ~19 M more.
# socket is imported where a socket is pickled or rebuilt.
import _pickle as pickle
import _thread
import builtins
import copyreg
import errno
import io
import os
import sys

from ._closing import close_all, close_all_quietly

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; a spawned child imports this
    import socket
    from collections.abc import Callable
    from typing import Any

__all__ = (
    "ChildHandoff",
    "Descriptors",
    "DescriptorsNeedACarrier",
    "DupFd",
    "FdCollector",
    "ForkingPickler",
    "MessageFds",
    "TooManyDescriptors",
    "add_socket_reducer",
    "collecting",
    "collecting_fds",
    "current_handoff",
    "current_message",
    "dump",
    "fd_token",
    "handing_off",
    "is_spawning",
    "need_carrier",
    "receiving",
    "reducers",
    "refused_outside_start",
    "register",
    "registered_reducers",
    "take_fd",
)

_local = _thread._local()


class FdCollector:
    """Descriptors met while pickling, to be sent beside the pickle.

    Attributes:
        fds: descriptors to send, in token order.
    """

    def __init__(self) -> None:
        self.fds: list[int] = []
        self._index: dict[int, int] = {}

    def add_fd(self, fd: int) -> int:
        """Record ``fd`` for sending and return its token (dedupes repeats)."""
        if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
            raise ValueError(f"not a file descriptor: {fd!r}")
        token = self._index.get(fd)
        if token is None:
            # Keep first, then record: a descriptor that fails to be kept (not
            # open) must not stay in the index, or a second pickling pass (the
            # exact pickler retries with cloudpickle) would get a token for it
            # and send a message whose descriptor is missing.
            kept = self._keep(fd)
            token = self._index[fd] = len(self.fds)
            self.fds.append(kept)
        return token

    def _keep(self, fd: int) -> int:
        return fd


class ChildHandoff(FdCollector):
    """What a child needs beside its pickle: descriptors and post-start hooks.

    Attributes:
        start_method: the start method in use (``"spawn"`` or ``"forkserver"``).
        fds: descriptors to send, in token order. The parent keeps ownership of
            them; the child receives duplicates.
        after_start: callables run with the child's pid once it exists.
        process: the process object being started, the one that may be pickled
            (``BaseProcess.__reduce__`` refuses any other).
    """

    def __init__(self, start_method: str, process: Any = None) -> None:
        super().__init__()
        self.start_method = start_method
        self.after_start: list[Callable[[int], None]] = []
        self.process = process


class MessageFds(FdCollector):
    """The descriptors of one message (``Connection.send()``): duplicates it owns.

    Each descriptor is duplicated when it is met, so that what is sent is what the
    object held at pickling time, even if the object (a temporary made by a
    ``__reduce__``) closes it before the message goes; an unopened descriptor fails
    there, before anything is written. :meth:`close` closes the duplicates once the
    message is sent (the kernel keeps its own references while it is in flight).

    Args:
        limit: the most descriptors one message may carry; one more stops the
            pickling with :class:`TooManyDescriptors` before it is duplicated, so that an
            object owning thousands of descriptors does not first duplicate them
            all (and run out of descriptors) only to be refused.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        # Per-message state of reducers, by owner (the reaper's names in flight).
        self.notes: dict[str, Any] = {}
        # Called once the pickle is complete (see collecting_fds).
        self.when_complete: list[Callable[[], None]] = []
        self._delivery: int | None = None

    def _keep(self, fd: int) -> int:
        if len(self.fds) >= self.limit:
            raise TooManyDescriptors(f"more than {self.limit} file descriptors in one message")
        return os.dup(fd)

    def delivery_fd(self) -> int:
        """A descriptor that reads EOF once this message was received and unpickled.

        The read end of a pipe made on the first call (later calls return the
        same); its write end goes with the message as one more descriptor, which
        no object takes, so the receiver closes it when its unpickling ends
        (:func:`receiving`), after every object of the message is rebuilt. A
        message nobody receives closes it when the kernel drops the message (its
        receiver died, the queue went with its last holder). The read end belongs
        to this collector: duplicate it to keep it.
        """
        if self._delivery is None:
            if len(self.fds) >= self.limit:
                raise TooManyDescriptors(f"more than {self.limit} file descriptors in one message")
            read_end, write_end = os.pipe()
            self.fds.append(write_end)  # owned: closed with the others by close()
            self._delivery = read_end
        return self._delivery

    def take(self) -> list[int]:
        """Hand the descriptors over to the caller, who closes them; the collector
        keeps none."""
        fds, self.fds = self.fds, []
        self._index.clear()
        self._close_delivery()
        return fds

    def close(self) -> None:
        close_all(self.take())

    def _close_delivery(self) -> None:
        if self._delivery is not None:
            fd, self._delivery = self._delivery, None
            os.close(fd)


class TooManyDescriptors(ValueError):
    """A message would carry more descriptors than :class:`MessageFds` allows."""


class DescriptorsNeedACarrier(RuntimeError):
    """An object that owns a descriptor was pickled where no descriptor can go.

    Raised by :func:`fd_token` when nothing collects descriptors in this thread
    (a plain pickle, a queue, a file). ``Connection.send()`` catches it and pickles
    again while collecting, when its transport can carry descriptors.

    Attributes:
        what: the object that owns the descriptor (``"Connection"``, ``"socket"``).
        messages: whether that object may travel in a message (else only at a start).
    """

    def __init__(self, message: str, what: str, messages: bool) -> None:
        super().__init__(message)
        self.what = what
        self.messages = messages


def handing_off(handoff: ChildHandoff) -> _Collecting:
    """Make ``handoff`` collect descriptors from the pickling done inside (a start)."""
    return _Collecting(handoff)


def collecting_fds(collector: FdCollector) -> _Collecting:
    """Make ``collector`` collect descriptors from the pickling done inside (a message).

    When the block ends without an error (the pickle is complete) the
    collector's ``when_complete`` callbacks run, before anything is sent.
    """
    return _Collecting(collector)


class _Collecting:
    """``with``: this thread's pickling reports descriptors to a collector.

    A class rather than ``contextlib.contextmanager`` (here and in ``receiving``):
    a spawned child would import contextlib for these alone, ~3 M instructions.
    """

    def __init__(self, collector: Any) -> None:
        self._collector = collector
        self._previous: Any = None

    def __enter__(self) -> Any:
        self._previous = getattr(_local, "handoff", None)
        _local.handoff = self._collector
        return self._collector

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        _local.handoff = self._previous
        collector = self._collector
        if exc_type is None and isinstance(collector, MessageFds):
            callbacks, collector.when_complete = collector.when_complete, []
            for callback in callbacks:
                callback()


def current_handoff() -> ChildHandoff | None:
    """Return the handoff of the child being started by this thread, or ``None``.

    ``None`` too while a message is being pickled: what only a start can send
    (named semaphores, shared memory without a name) checks this.
    """
    collector = getattr(_local, "handoff", None)
    return collector if isinstance(collector, ChildHandoff) else None


def current_message() -> MessageFds | None:
    """The descriptors of the message being pickled by this thread, or ``None``."""
    collector = getattr(_local, "handoff", None)
    return collector if isinstance(collector, MessageFds) else None


def collecting() -> bool:
    """Whether this thread is pickling for a start or for a message with descriptors."""
    return getattr(_local, "handoff", None) is not None


def is_spawning() -> bool:
    """Whether this thread is pickling a process object for a new child."""
    return current_handoff() is not None


def fd_token(fd: int, what: str = "this object", *, messages: bool = False) -> int:
    """Register ``fd`` to be sent beside the pickle being made; return its token.

    Args:
        fd: the descriptor the pickled object owns.
        what: a short description for the error message (``"Connection"``).
        messages: the object may travel in a message (``Connection.send()`` over
            a Unix socket) as well as to a child being started.

    Raises:
        DescriptorsNeedACarrier: (a ``RuntimeError``) nothing collects
            descriptors in this thread: a plain pickle, a queue, a file.
        RuntimeError: a message is being pickled and the object can only go to
            a child being started.
        OSError: a message is being pickled and ``fd`` is not open.
    """
    collector = getattr(_local, "handoff", None)
    if collector is None:
        if messages:
            need_carrier(
                what,
                f"{what} holds an open file descriptor, which can only reach another "
                "process as an argument of Process(...) when the child is started, or "
                "in a proctor message: Connection.send() through a Unix socket (a "
                "Pipe() end, an AF_UNIX Listener/Client connection), a proctor Queue, "
                "a proctor Pool's task arguments and results; it cannot be pickled "
                "into a file or with plain pickle.",
            )
        else:
            message = (
                f"{what} holds an open file descriptor and can only be sent to a child "
                "process as an argument of Process(...) (or as an attribute of the process "
                "object) when it is started; it cannot be pickled into a queue, a pipe or a "
                "file. Pass it to the child at start, or create it in the child."
            )
        error = refused_outside_start(what, message)
        raise DescriptorsNeedACarrier(str(error), what, messages)
    if not messages and not isinstance(collector, ChildHandoff):
        raise refused_outside_start(
            what,
            f"{what} holds an open file descriptor and can only be sent to a child "
            "process as an argument of Process(...) (or as an attribute of the process "
            "object) when it is started; it cannot be pickled into a queue, a pipe or a "
            "file. Pass it to the child at start, or create it in the child.",
        )
    try:
        return collector.add_fd(fd)
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot send {what}: its descriptor {fd} is not open ({exc.strerror})"
        ) from None


def need_carrier(what: str, message: str) -> None:
    """Check that what is being pickled now can carry descriptors; else raise.

    For objects that may travel in a message (``messages=True`` of
    :func:`fd_token`) and check before pickling their parts, so that the error
    names them rather than a part.

    Raises:
        DescriptorsNeedACarrier: (a ``RuntimeError``, with ``message``) nothing
            collects descriptors in this thread: a plain pickle, a file. A
            transport that can carry descriptors catches it and pickles again.
    """
    if getattr(_local, "handoff", None) is None:
        error = refused_outside_start(what, message)
        raise DescriptorsNeedACarrier(str(error), what, True)


def refused_outside_start(what: str, message: str) -> RuntimeError:
    """The error for pickling, outside a proctor start, what only a start can send.

    ``message`` is the object's own explanation. When the pickling is
    ``multiprocessing`` starting a process of its own (a proctor object passed to
    a ``multiprocessing.Process``), "pass it to Process(...)" is what the user
    did, so the error says that the process was not a proctor one instead.
    """
    method = _multiprocessing_start_method()
    if method is None:
        return RuntimeError(message)
    return RuntimeError(
        f"{what} cannot be sent to this child: it is a multiprocessing.Process (being "
        f"started with multiprocessing's {method!r} start method), not a proctor.Process, "
        "and only proctor's own start can send proctor objects, with the descriptors and "
        "OS objects they are made of. Start the child with proctor.Process (or "
        f"proctor.get_context({method!r}).Process): import Process from proctor too, not "
        "only the queues and locks. Or use multiprocessing's own objects with "
        "multiprocessing's processes."
    )


def _multiprocessing_start_method() -> str | None:
    """The method of a ``multiprocessing`` start pickling in this thread now, or ``None``.

    ``multiprocessing`` marks its spawn and forkserver starts with
    ``context.get_spawning_popen()``; it is asked only if already imported.
    """
    context = sys.modules.get("multiprocessing.context")
    if context is None:
        return None
    try:
        popen = context.get_spawning_popen()
    except Exception:  # a multiprocessing without it: nothing to tell
        return None
    if popen is None:
        return None
    method = getattr(popen, "method", None)
    return method if isinstance(method, str) else "spawn"


class _Received:
    def __init__(self, fds: list[int]) -> None:
        self.fds = fds
        self.taken: set[int] = set()


def receiving(fds: list[int]) -> _Receiving:
    """In the receiver: resolve tokens against ``fds`` while unpickling inside.

    Descriptors that no object took are closed on exit, so none leaks.
    """
    return _Receiving(fds)


class _Receiving:
    """``with``: what :func:`receiving` returns."""

    def __init__(self, fds: list[int]) -> None:
        self._received = _Received(fds)
        self._previous: _Received | None = None

    def __enter__(self) -> None:
        self._previous = getattr(_local, "received", None)
        _local.received = self._received

    def __exit__(self, *exc_info: object) -> None:
        _local.received = self._previous
        received = self._received
        close_all_quietly(
            fd for index, fd in enumerate(received.fds) if index not in received.taken
        )


def take_fd(token: int) -> int:
    """In the receiver: return the descriptor sent under ``token``; the caller owns it.

    Raises:
        RuntimeError: outside a child's bootstrap unpickling, or for a token that
            was not sent.
    """
    received = getattr(_local, "received", None)
    if received is None:
        raise RuntimeError(
            "a file-descriptor token can only be resolved while a child process "
            "unpickles the arguments it was started with, or while Connection.recv() "
            "unpickles a message that came with its descriptors"
        )
    try:
        fd = received.fds[token]
    except (IndexError, TypeError):
        raise RuntimeError(
            f"file-descriptor token {token!r} was not sent to this process "
            f"(it received {len(received.fds)} descriptors)"
        ) from None
    if token in received.taken:
        # Two objects rebuilt from one descriptor each get their own, so that
        # closing one does not break the other.
        return os.dup(fd)
    received.taken.add(token)
    return fd


# ─── Objects that are descriptors ──────────────────────────────────────────────


class DupFd:
    """A duplicate of a file descriptor that can be sent to another process.

    ``DupFd(fd)`` duplicates ``fd`` at once (so the caller may close its own);
    sent with ``Connection.send()`` through a Unix socket, or passed to a child at
    start, it arrives as a ``DupFd`` of the receiver's own descriptor.
    :meth:`detach` hands the descriptor over; one never detached is closed when
    the object is collected.

    Args:
        fd: an open file descriptor.

    Raises:
        TypeError: ``fd`` is not an int.
        OSError: ``fd`` is not open.
    """

    __slots__ = ("_fd", "_owned")

    def __init__(self, fd: int) -> None:
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"fd must be a file descriptor (an int), not {fd!r}")
        self._fd = os.dup(fd)
        self._owned = True

    @classmethod
    def _borrowing(cls, fd: int) -> DupFd:
        """A ``DupFd`` that sends ``fd`` as it is, and neither closes nor detaches it."""
        self = cls.__new__(cls)
        self._fd = fd
        self._owned = False
        return self

    def detach(self) -> int:
        """Return the descriptor; the caller owns it from now on.

        Raises:
            ValueError: it was detached already.
        """
        fd = self._fd
        if fd < 0:
            raise ValueError("this DupFd was detached already")
        if not self._owned:
            raise ValueError("this DupFd only lends a descriptor to a send; it has none to give")
        self._fd = -1
        return fd

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self._fd < 0:
            raise ValueError("cannot send a DupFd that was detached")
        return (_rebuild_dupfd, (fd_token(self._fd, "DupFd", messages=True),))

    def __del__(self) -> None:
        try:
            if self._owned and self._fd >= 0:
                fd, self._fd = self._fd, -1
                os.close(fd)
        except (AttributeError, OSError):
            pass

    def __repr__(self) -> str:
        state = f"fd={self._fd}" if self._fd >= 0 else "detached"
        return f"<proctor.reduction.DupFd {state}>"


def _rebuild_dupfd(token: int) -> DupFd:
    dupfd = DupFd.__new__(DupFd)
    dupfd._fd = take_fd(token)
    dupfd._owned = True
    return dupfd


class Descriptors:
    """The descriptors a pickle made under :func:`collecting_fds` needs, as one object.

    For a pickle made now and sent later by a transport that sends objects: a
    pool pickles a task's arguments in the caller's thread, and its dispatcher
    sends the task frame and then this object with ``Connection.send()``, which
    carries the descriptors. The receiver unpickles the frame inside
    :meth:`received`. It owns its descriptors until then (closed when collected).

    Args:
        fds: descriptors to own, in token order (``MessageFds.take()``).
    """

    __slots__ = ("fds",)

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        tokens = [fd_token(fd, "Descriptors", messages=True) for fd in self.fds]
        return (_rebuild_descriptors, (tokens,))

    def received(self) -> _Receiving:
        """``with``: unpickle, inside, the pickle these descriptors belong to; gives
        them away (those no object took are closed at the end, as by ``receiving``)."""
        fds, self.fds = self.fds, []
        return receiving(fds)

    def close(self) -> None:
        """Close the descriptors; idempotent."""
        fds, self.fds = self.fds, []
        close_all_quietly(fds)

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Descriptors {self.fds}>"


def _rebuild_descriptors(tokens: list[int]) -> Descriptors:
    fds: list[int] = []
    try:
        for token in tokens:
            fds.append(take_fd(token))
    except BaseException:
        close_all_quietly(fds)
        raise
    return Descriptors(fds)


def reduce_socket(sock: socket.socket) -> tuple[Any, tuple[Any, ...]]:
    """Pickle a socket as its descriptor (sent beside the pickle) and its kind."""
    if sock.fileno() < 0:
        raise OSError(errno.EBADF, "cannot send a closed socket")
    token = fd_token(sock.fileno(), "socket", messages=True)
    return (_rebuild_socket, (token, int(sock.family), int(sock.type), sock.proto))


def _rebuild_socket(token: int, family: int, kind: int, proto: int) -> socket.socket:
    import socket

    fd = take_fd(token)
    try:
        return socket.socket(family, kind, proto, fileno=fd)
    except BaseException:
        os.close(fd)
        raise


# ─── Reducers and the stdlib's pickler hooks ──────────────────────────────────

#: Reducers of proctor's picklers, by exact type: sockets (once a pickler that reads
#: this table exists: :func:`add_socket_reducer`), and what register() adds.
reducers: dict[type, Callable[[Any], Any]] = {}
#: What register() added. Plain pickle knows none of it, so while it is not empty
#: every send takes the exact pass (a dict: its truth is the cheapest check).
registered_reducers: dict[type, Callable[[Any], Any]] = {}


def add_socket_reducer() -> None:
    """Put ``socket.socket``'s reducer in :data:`reducers` (unless register() did).

    Called by each pickler that reads the table, before it pickles anything: a
    process that never makes one (a spawned child that sends back nothing but
    plain values) does not import ``socket``.
    """
    import socket

    reducers.setdefault(socket.socket, reduce_socket)


class ForkingPickler(pickle.Pickler):
    """A pickler that uses the reducers of :func:`register` (the stdlib's hook).

    What ``multiprocessing.reduction.ForkingPickler`` is: ``pickle.Pickler`` with
    the reducers registered for classes (``ForkingPickler.register(cls, reduce)``)
    and for sockets. proctor's own sends (``Connection.send()``, queues, the
    start of a spawn or forkserver child) use the same reducers.
    """

    # The stdlib keeps the registered reducers in this class attribute.
    _extra_reducers = registered_reducers

    def __init__(self, file: Any, protocol: int | None = None, **kwargs: Any) -> None:
        super().__init__(file, protocol, **kwargs)
        add_socket_reducer()
        table = copyreg.dispatch_table.copy()
        table.update(reducers)
        self.dispatch_table = table

    @classmethod
    def register(cls, type: type, reduce: Callable[[Any], Any]) -> None:
        """Pickle instances of ``type`` (exactly that class) with ``reduce(obj)``.

        ``reduce`` returns what ``__reduce__`` would. Every proctor send uses it
        from then on: ``Connection.send()``, ``Queue.put()``, the arguments of a
        spawn or forkserver child.

        Raises:
            TypeError: ``type`` is not a class or ``reduce`` is not callable.
        """
        if not isinstance(type, builtins.type):
            raise TypeError(f"register() takes a class, not {type!r}")
        if not callable(reduce):
            raise TypeError(f"reduce must be callable, not {reduce!r}")
        registered_reducers[type] = reduce
        reducers[type] = reduce

    @classmethod
    def dumps(cls, obj: Any, protocol: int | None = None) -> memoryview:
        """Pickle ``obj`` with the registered reducers; return the bytes (a memoryview)."""
        buffer = io.BytesIO()
        cls(buffer, protocol).dump(obj)
        return buffer.getbuffer()

    loads = staticmethod(pickle.loads)


register = ForkingPickler.register


def dump(obj: Any, file: Any, protocol: int | None = None) -> None:
    """Pickle ``obj`` to the open binary ``file`` with :class:`ForkingPickler`."""
    ForkingPickler(file, protocol).dump(obj)
