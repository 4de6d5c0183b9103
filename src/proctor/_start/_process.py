"""``Process``: the object a parent uses to start, watch and join one child.

Life of a process object::

    Process(target=f, args=...)          created: nothing exists yet
        .start()  ── start method ──▶    Popen: pid, sentinel, channel
                                          child runs f(*args), reports its outcome
        .join()   ◀── sentinel ──────    exit code collected; result/exception read
        .close()                          descriptors released

The start method (fork, spawn, forkserver) is a strategy, one module each
(``_popen_fork``, ``_popen_spawn``, ``_popen_forkserver``); this module picks one and
knows none of their details. The child's side of a start lives in ``_bootstrap``,
and what both sides share -- this process's identity, its children, exit
handling -- in ``_state``.
"""

from __future__ import annotations

import os
import time

# collections.abc's ABCs from the module that defines them, which the interpreter
# has loaded at start-up: collections.abc imports the collections package (~7 M
# instructions of a spawned child's start, issue 17).
from _collections_abc import Iterable, Mapping

from .._core._system import pid_alive
from .._core._timeout import deadline as _deadline
from .._core._timeout import readable_now, wait_readable
from .._logging import _logger
from ._methods import resolve_method
from ._state import (
    check_not_importing_payload,
    flush_std_streams,
    register_exit_handler,
    state,
)

# How often ParentProcess.join() looks again whether the parent has ended, where it
# has no sentinel left (a spawned child's exit).
PARENT_JOIN_INTERVAL = 0.05

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from collections.abc import Callable
    from typing import Any, NoReturn

__all__ = (
    "AuthenticationString",
    "BaseProcess",
    "ForkProcess",
    "ForkServerProcess",
    "ParentProcess",
    "Process",
    "SpawnProcess",
    "active_children",
    "current_process",
    "parent_process",
)


class AuthenticationString(bytes):
    """A process's ``authkey``: bytes that refuse to be pickled, except for the child
    being started, as ``multiprocessing.process.AuthenticationString`` does.

    A key that could be pickled would travel unnoticed in a queue item, a pipe
    message or a log record, to whoever reads it; pass ``bytes(key)`` where a
    copy is meant to leave the process.
    """

    __slots__ = ()

    def __reduce__(self) -> Any:
        from .._core._reduction import is_spawning

        if not is_spawning():
            raise TypeError(
                "an authkey (AuthenticationString) cannot be pickled, lest it leave "
                "the process unnoticed; it reaches a child only as part of its start. "
                "Send bytes(key) if another process is meant to have it"
            )
        return (AuthenticationString, (bytes(self),))


def current_process() -> BaseProcess:
    """Return the object describing the process this code runs in."""
    return state.current


def parent_process() -> ParentProcess | None:
    """Return the parent of this process, or ``None`` in the main process."""
    return state.parent


def active_children() -> list[Process]:
    """Return the children of this process that are still running (reaping ended ones)."""
    state.children.reap()
    return list(state.children)


# Start method -> its Popen class, filled on first use: a start then costs one dict
# lookup, not an import statement's trip through the import machinery (whose locks
# and module dicts are pages a fork parent would copy again at every start).
_popen_classes: dict[str, Any] = {}


def _popen_class(method: str) -> Any:
    """The strategy of a start method (imported on first use: each costs start-up time)."""
    cls = _popen_classes.get(method)
    if cls is not None:
        return cls
    if method == "fork":
        from ._popen_fork import ForkPopen as cls
    elif method == "spawn":
        from ._popen_spawn import SpawnPopen as cls
    else:
        from ._popen_forkserver import ForkServerPopen as cls
    _popen_classes[method] = cls
    return cls


class BaseProcess:
    """What every process object has: a ``Process`` and ``current_process()`` alike.

    The common base of :class:`Process` and of the object describing the main
    process, as in ``multiprocessing.process.BaseProcess``: use it for type hints
    and ``isinstance`` checks. Subclass :class:`Process` to run code in a child.
    """

    # Set by the context's subclasses (ForkProcess...); None means "the default
    # context's method at start()".
    _start_method: str | None = None
    # Who created this object (None for the main process's own).
    _parent_pid: int | None
    _parent_name: str | None

    def __init__(
        self,
        group: None = None,
        target: Callable[..., Any] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
        forward_logs: bool | None = None,
    ) -> None:
        if group is not None:
            raise ValueError(f"group must be None (reserved for future use), not {group!r}")
        if target is not None and not callable(target):
            raise TypeError(
                f"target must be callable, not {type(target).__name__} ({target!r:.80})"
            )
        # (The exact-type tests first: the usual tuple and dict skip the ABC checks,
        # whose caches are pages a fork parent would copy again at each start.)
        if type(args) is not tuple and (
            isinstance(args, (str, bytes)) or not isinstance(args, Iterable)
        ):
            raise TypeError(
                f"args must be a tuple or other iterable of arguments, not "
                f"{type(args).__name__} ({args!r:.80}); for one argument write args=(x,)"
            )
        if kwargs is not None and type(kwargs) is not dict and not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs must be a mapping, not {type(kwargs).__name__}")
        parent = state.current
        count = next(state.counter)
        self._identity = (*parent._identity, count)
        self._target = target
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self._authkey = parent.authkey
        self._daemon = parent.daemon if daemon is None else bool(daemon)
        self._parent_pid = os.getpid()
        self._parent_name = parent.name
        # (an empty name too gets the default, as in multiprocessing)
        self._name = (
            name
            if name is not None and name != ""
            else type(self).__name__ + "-" + ":".join(map(str, self._identity))
        )
        if not isinstance(self._name, str):
            raise TypeError(f"name must be a string, not {type(self._name).__name__}")
        if forward_logs is not None and not isinstance(forward_logs, bool):
            raise TypeError(f"forward_logs must be True, False or None, not {forward_logs!r}")
        self._forward_logs = forward_logs
        self._popen: Any = None
        self._closed = False
        self._outcome_cache: Any = None

    # -- what the child runs ------------------------------------------------

    def run(self) -> Any:
        """Run the target; override in a subclass. The return value is ``result``."""
        if self._target is not None:
            return self._target(*self._args, **self._kwargs)
        return None

    # -- life cycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the child process.

        Raises:
            ValueError: when already started or closed.
            RuntimeError: when called while a new child is still unpickling its
                start payload (a module without the main guard starting processes).
            StartError: when the target or arguments cannot be pickled for a
                spawn or forkserver child (no child is left running).
        """
        # Each function called and object used here is a page written, and while
        # earlier children live each page a start writes is copied (~3 us each,
        # issue 17): the usual path tests everything at once and calls no helper
        # that is not needed, the unusual one finds what to refuse.
        if self._closed or self._popen is not None or self._parent_pid != os.getpid():
            self._refuse_start()
        if state.unpickling_payload:
            check_not_importing_payload()
        state.children.reap()
        # Recorded before pickling, so the child learns the method it runs under
        # and makes it its own default, as multiprocessing does.
        method = self._start_method
        if method is None:
            method = resolve_method(None)
        self._started_with = method
        # What this process printed so far comes out before anything the child
        # prints (stdout may be a block-buffered pipe), and a forked child does
        # not inherit it to print it again, as with multiprocessing.
        flush_std_streams()
        # Logged before the start, not after: after a fork each page the parent
        # writes while the child runs is copied, and the call alone writes a few.
        _logger.debug("starting %s with the %s start method", self._name, method)
        popen_class = _popen_classes.get(method) or _popen_class(method)
        # One start at a time per process: a fork copies every descriptor, so a
        # child forked while another thread holds a new child's ends of its
        # channels would keep them open, and that child's log stream (or
        # lifeline) would not end with it.
        with state.start_lock:
            self._popen = popen = popen_class(self)
        state.children.add(self, popen.sentinel, popen.held_fds())
        # The child has its copy of the target and arguments now (forked, or
        # pickled into its start message): let this process collect them, as
        # multiprocessing does.
        self._target = None
        self._args = ()
        self._kwargs = {}
        if not state.exit_handler_registered:
            register_exit_handler()

    def _refuse_start(self) -> None:
        """Raise the error that says why this process object cannot start."""
        self._check_not_closed()
        if self._popen is not None:
            raise ValueError(f"cannot start a process twice: {self!r} was already started")
        raise ValueError(
            "can only start a process object created by the current process "
            f"(created by pid {self._parent_pid}, this is pid {os.getpid()})"
        )

    def join(self, timeout: float | None = None) -> None:
        """Wait until the child ends, or ``timeout`` seconds pass.

        Check ``exitcode`` (``None`` while running) to tell which happened.

        Raises:
            ValueError: before ``start()``, after ``close()``, or for a NaN timeout
                (a negative timeout counts as 0, as in multiprocessing).
            TypeError: for a timeout that is not a number.
            RuntimeError: when a process tries to join itself.
        """
        self._check_not_closed()
        if self._popen is None:
            if self is state.current:
                raise RuntimeError(
                    f"a process cannot join itself: {self!r} is the current process; "
                    "join() waits for a child this process started"
                )
            raise ValueError(f"cannot join a process that was never started: {self!r}")
        if self._parent_pid != os.getpid():
            self._refuse_elsewhere("join")
        # (The usual join(), with no timeout, calls nothing for it: each call is a
        # page or two written while the child may still share them, issue 17.)
        deadline = None if timeout is None else _deadline(timeout)
        # (None also for a timeout too long to be one: _timeout.LONGEST_WAIT.)
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if self._popen.wait(timeout) is not None:
            # Discarded first: the descriptors held for the child (_state.Children)
            # include its log channel's end, which wait_logs closes.
            state.children.discard(self)
            # Every record the child logged is handled before join() returns.
            self._popen.wait_logs(None if deadline is None else deadline - time.monotonic())

    def is_alive(self) -> bool:
        """Whether the child has been started and has not ended yet.

        Raises:
            ValueError: after ``close()``.
            RuntimeError: in a process other than the one that started the child
                (a fork child given this object), which cannot tell: wait on
                ``sentinel`` there instead.
        """
        self._check_not_closed()
        if self is state.current:
            return True
        if self._popen is None:
            return False
        if self._parent_pid != os.getpid():
            self._refuse_elsewhere("test")
        if self._popen.poll() is None:
            return True
        state.children.discard(self)
        return False

    def _refuse_elsewhere(self, what: str) -> NoReturn:
        """Raise the error for a ``join()``/``is_alive()`` outside the starting process."""
        raise RuntimeError(
            f"can only {what} a child process of the current process: {self!r} was "
            f"started by pid {self._parent_pid}, and this is pid {os.getpid()}, which "
            "cannot collect its exit status. Here, wait for its end with "
            "proctor.connection.wait([process.sentinel]); terminate() and kill() work too"
        )

    def terminate(self) -> None:
        """Send SIGTERM to the child (nothing if it has already ended).

        Also from a process that did not start it (a fork child given this object).
        """
        self._started_popen().terminate()

    def kill(self) -> None:
        """Send SIGKILL to the child (nothing if it has already ended).

        Also from a process that did not start it (a fork child given this object).
        """
        self._started_popen().kill()

    def close(self) -> None:
        """Release the descriptors held for the child; idempotent.

        Raises:
            ValueError: while the child is still running.
        """
        if self._closed:
            return
        if self._popen is not None:
            if not self._popen.has_ended():
                raise ValueError(
                    f"cannot close {self!r} while it is still running; "
                    "call join() or terminate() first"
                )
            state.children.discard(self)  # before its sentinel is closed
            if self._parent_pid == os.getpid():  # (elsewhere no outcome is to be had)
                self._read_outcome()
            self._popen.detach_logs()
            self._popen.close()
            self._popen = None
        self._closed = True

    def __enter__(self) -> BaseProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self.join()
        self.close()

    # -- attributes ---------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"name must be a string, not {type(value).__name__}")
        self._name = value

    @property
    def authkey(self) -> bytes:
        """The key that authenticates connections (``Listener``/``Client``) by default
        (an :class:`AuthenticationString`: it refuses to be pickled)."""
        return self._authkey

    @authkey.setter
    def authkey(self, value: bytes) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"authkey must be bytes, not {type(value).__name__}")
        self._authkey = AuthenticationString(value)

    @property
    def daemon(self) -> bool:
        return self._daemon

    @daemon.setter
    def daemon(self, value: bool) -> None:
        if self._popen is not None:
            raise ValueError(f"cannot set daemon after the process has started: {self!r}")
        self._daemon = bool(value)

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before ``start()``)."""
        self._check_not_closed()
        if self is state.current:
            return os.getpid()
        return None if self._popen is None else self._popen.pid

    ident = pid

    @property
    def exitcode(self) -> int | None:
        """The exit code: ``None`` while running, ``-N`` when killed by signal N.

        In a process other than the one that started the child (a fork child
        given this object), ``None`` unless the exit code can be known there
        (under forkserver it can; under fork and spawn only the starter can
        collect it), as with multiprocessing.
        """
        self._check_not_closed()
        if self._popen is None:
            return None
        return self._popen.poll()

    @property
    def sentinel(self) -> int:
        """A descriptor that becomes readable when the child ends (for ``wait()``)."""
        return self._started_popen().sentinel

    @property
    def start_method(self) -> str:
        """The start method this process uses (or will use)."""
        return resolve_method(self._start_method)

    @property
    def result(self) -> Any:
        """The target's return value, once the child has ended.

        ``None`` when the target raised or the child was killed.

        Raises:
            ValueError: while the child has not ended yet.
            ResultError: when the value could not be sent to the parent (it
                could not be pickled in the child or unpickled here), or when the
                child exited 0 without reporting (it closed its channel to the
                parent, or left through ``os._exit()``).
        """
        outcome = self._ended_outcome("result")
        if outcome.lost is not None:
            from .._core._errors import ResultError

            raise ResultError(
                f"{self._name!r} exited with code 0, but its outcome never reached the "
                f"parent: "
                f"{outcome.lost}. Close only the descriptors the target opened itself "
                "(os.closerange(3, ...) closes proctor's too), and return rather than "
                "call os._exit() to have the return value sent."
            )
        if outcome.value_error is not None:
            from .._core._errors import ResultError

            raise ResultError(
                f"{self._name!r} finished, but its return value could not be sent to the "
                f"parent: {outcome.value_error}. Return something picklable, or nothing."
            )
        return outcome.value

    @property
    def exception(self) -> BaseException | None:
        """The exception the target raised, once the child has ended, else ``None``.

        It is the original exception when it could be pickled, otherwise a
        :class:`proctor.RemoteError`; its ``__cause__`` holds the child's traceback.

        Raises:
            ValueError: while the child has not ended yet.
        """
        return self._ended_outcome("exception").exception

    def _ended_outcome(self, what: str) -> Any:
        if self._outcome_cache is not None:
            return self._outcome_cache
        self._check_not_closed()
        if self._popen is not None and self._parent_pid != os.getpid():
            raise RuntimeError(
                f"{what} is available only in the process that started {self!r} "
                f"(pid {self._parent_pid}); this is pid {os.getpid()}"
            )
        if self._popen is None or self._popen.poll() is None:
            raise ValueError(f"{what} is available once the process has ended; join() it first")
        return self._read_outcome()

    def _read_outcome(self) -> Any:
        if self._outcome_cache is None and self._popen is not None:
            self._outcome_cache = self._popen.outcome()
        return self._outcome_cache

    def _parent_seen_from_child(self, sentinel: int) -> ParentProcess:
        """In the child this object describes: its parent, for ``parent_process()``.

        Args:
            sentinel: a descriptor that becomes readable when the parent ends.
        """
        return ParentProcess(self, sentinel)

    # -- helpers --------------------------------------------------------------

    def _stand_for(self, identity: tuple[int, ...], name: str, authkey: bytes) -> None:
        """Fill the fields of an object that stands for a process this one did not
        start (the main process, a child's parent): no target, no start to make."""
        self._identity = identity
        self._name = name
        self._authkey = authkey
        self._daemon = False
        self._parent_pid = None
        self._parent_name = None
        self._target = None
        self._args = ()
        self._kwargs = {}
        self._forward_logs = None
        self._popen = None
        self._closed = False
        self._outcome_cache = None

    def _check_not_closed(self) -> None:
        if self._closed:
            raise ValueError(f"process object {self._name!r} is closed")

    def _started_popen(self) -> Any:
        self._check_not_closed()
        if self._popen is None:
            raise ValueError(f"process {self._name!r} has not been started")
        return self._popen

    def __repr__(self) -> str:
        if self._closed:
            status = "closed"
        elif self is state.current:
            status = "started"
        elif self._popen is None:
            status = "initial"
        elif self._popen.poll() is not None:
            status = "stopped"
        elif self._parent_pid != os.getpid():
            status = "unknown"  # (as multiprocessing says where it cannot tell)
        else:
            status = "started"
        parts = [f"<{type(self).__name__} name={self._name!r}"]
        if not self._closed and self._popen is not None:
            parts.append(f"pid={self._popen.pid}")
        parts.append(f"parent={self._parent_pid}")
        parts.append(status)
        if status == "stopped":
            parts.append(f"exitcode={_exitcode_name(self._popen.returncode)}")
        if self._daemon:
            parts.append("daemon")
        return " ".join(parts) + ">"

    def __reduce__(self) -> Any:
        from .._core._reduction import current_handoff

        handoff = current_handoff()
        if handoff is None:
            raise TypeError(
                "a Process object cannot be pickled; it can only reach the child "
                "it describes when that child starts"
            )
        if handoff.process is not self:
            # As multiprocessing refuses (its authkey cannot be pickled): a copy in
            # another process could not be joined or tested there, and arrived
            # looking never started.
            raise TypeError(
                f"a Process object cannot be sent to another process: {self._name!r} "
                "can only reach the child it describes, when that child starts. Send "
                "what the other process needs instead: the pid (to signal it with "
                "os.kill), or an Event or Pipe that the process sets or closes"
            )
        fields = {k: v for k, v in self.__dict__.items() if k not in ("_popen", "_outcome_cache")}
        return (_rebuild_process, (type(self), fields))


def _exitcode_name(code: int) -> str:
    # Reprs show ``exitcode=-SIGKILL``, as stdlib's do.
    if code < 0:
        import signal  # its enum of names, which a child need not import to start

        try:
            return "-" + signal.Signals(-code).name
        except ValueError:
            pass
    return str(code)


def _rebuild_process(cls: type[BaseProcess], fields: dict[str, Any]) -> BaseProcess:
    process = cls.__new__(cls)
    process.__dict__.update(fields)
    process._popen = None
    process._outcome_cache = None
    return process


class Process(BaseProcess):
    """A child process running ``target(*args, **kwargs)``, or a subclass's ``run()``.

    The stdlib ``multiprocessing.Process`` API, plus:

    * ``result`` and ``exception`` after ``join()``: the target's return value,
      or the exception it raised with the child's traceback as ``__cause__``.
    * Any callable can be the target under every start method: lambdas,
      closures, functions and classes defined in ``__main__`` or a notebook.

    Args:
        group: always ``None``; kept for compatibility with ``threading.Thread``.
        target: the callable to run in the child.
        name: the process name; default ``Process-N`` (``Process-N:M`` in a child).
        args: positional arguments for ``target``.
        kwargs: keyword arguments for ``target``.
        daemon: whether the child is terminated when this process exits,
            rather than joined. Defaults to the current process's flag.
        forward_logs: whether the child's log records are handled by this
            process's logging handlers (see ``proctor.set_log_forwarding``, which
            sets the default, on unless switched off).

    Raises:
        TypeError: for a non-callable ``target`` or malformed ``args``/``kwargs``.
        ValueError: for a ``group`` other than ``None``.

    Note:
        Unlike ``multiprocessing``, a daemonic process may start children of its
        own: proctor guarantees that children never outlive their parent.
    """


# The contexts' processes (``proctor.context.SpawnProcess``...). They live here, not
# in _context, because a child unpickles its process object by its class: a spawn
# child then imports this module, which it needs anyway, and not the contexts.
class ForkProcess(Process):
    """A ``Process`` that always uses the ``fork`` start method."""

    _start_method = "fork"


class SpawnProcess(Process):
    """A ``Process`` that always uses the ``spawn`` start method."""

    _start_method = "spawn"


class ForkServerProcess(Process):
    """A ``Process`` that always uses the ``forkserver`` start method."""

    _start_method = "forkserver"


class _MainProcess(BaseProcess):
    """The process object of the main process (what ``current_process()`` returns there)."""

    def __init__(self) -> None:
        self._stand_for((), "MainProcess", AuthenticationString(os.urandom(32)))

    def __repr__(self) -> str:
        return f"<_MainProcess name={self._name!r} parent=None started>"

    def __reduce__(self) -> Any:
        raise TypeError("the main process's object cannot be pickled")


class ParentProcess(BaseProcess):
    """This process's parent, as its child sees it (what ``parent_process()`` returns).

    As ``multiprocessing``'s: a :class:`BaseProcess` with the parent's ``name``,
    ``pid``, ``authkey`` and a ``sentinel`` that becomes readable when the parent
    ends (for ``proctor.connection.wait()``); ``is_alive()`` and ``join(timeout)``
    wait on it. ``exitcode`` is ``None`` and ``daemon`` ``False``: a child learns
    neither. It cannot be started, joined from elsewhere, signalled (use
    ``os.kill(parent.pid, sig)``) or pickled.

    The sentinel is the child's end of the channel to its parent, the socket pair
    its work came down and its outcome goes back up. The parent holds the other
    end while the child runs and no other process holds it (the parent's fork
    children let go of it, other children never inherit it), so it reads end of
    file when the parent ends, under every start method -- a forkserver child's
    ``getppid()`` is the fork server, not its parent -- and on every platform. It
    is no new descriptor either: nothing to open, to close, or to keep from the
    child's own children.
    """

    def __init__(self, child: BaseProcess, sentinel: int) -> None:
        # (The parent's own record is in the parent; the child knows what its
        # process object was given: the parent's name, pid, identity, key.)
        self._stand_for(child._identity[:-1], str(child._parent_name), child._authkey)
        self._pid = int(child._parent_pid or 0)
        self._sentinel = sentinel

    @property
    def pid(self) -> int:
        """The parent's process id (also after ``close()``, as in the stdlib: proctor
        itself reads it, to name records and to keep segments for the parent)."""
        return self._pid

    ident = pid

    @property
    def sentinel(self) -> int:
        """A descriptor that becomes readable when the parent ends (for ``wait()``).

        Raises:
            ValueError: after ``close()``; in a spawned child once its ``run()``
                has returned (its atexit handlers) on a system without
                ``os.pidfd_open`` (the channel it was has been closed).
        """
        self._check_not_closed()
        if self._sentinel < 0:
            self._sentinel = self._sentinel_after_run()
        return self._sentinel

    def _sentinel_after_run(self) -> int:
        # A spawned child closes its channel once run() has returned, before its
        # atexit handlers run; one of them asking for the sentinel gets a pidfd of
        # the parent (Linux 5.3+), or a pipe at end of file once the parent has
        # ended (this child was handed to another process then).
        if os.getppid() == self._pid:
            try:
                pidfd = os.pidfd_open(self._pid)
            except (AttributeError, OSError) as exc:
                raise ValueError(
                    "the parent's sentinel was this process's channel to its parent, "
                    "closed once run() returned, and this system has no pidfd to "
                    "stand for it: use parent_process().is_alive() or join(timeout)"
                ) from exc
            if os.getppid() == self._pid:
                return pidfd
            os.close(pidfd)  # (the parent ended meanwhile: that pid may be another's)
        ended, other_end = os.pipe()
        os.close(other_end)
        return ended

    def is_alive(self) -> bool:
        """Whether the parent still runs."""
        self._check_not_closed()
        if self._sentinel < 0:
            return os.getppid() == self._pid or pid_alive(self._pid)
        return not readable_now(self._sentinel)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the parent ends, or ``timeout`` seconds pass.

        Raises:
            ValueError: after ``close()``, or for a NaN timeout.
            TypeError: for a timeout that is not a number.
        """
        self._check_not_closed()
        deadline = None if timeout is None else _deadline(timeout)
        if self._sentinel >= 0:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            wait_readable(self._sentinel, left)
            return
        while self.is_alive():  # (a spawned child's exit: see sentinel)
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(PARENT_JOIN_INTERVAL)

    def start(self) -> None:
        """Refused: the parent runs already."""
        raise ValueError(f"cannot start {self!r}: it is this process's parent, running already")

    def _release_sentinel(self) -> None:
        """The channel that is the sentinel is being closed (a spawned child's run
        has returned): from now on, ask whether the pid lives, and make a
        descriptor if ``sentinel`` is asked for (``_sentinel_after_run``)."""
        self._sentinel = -1

    def _started_popen(self) -> Any:
        # What terminate(), kill() and the like would act on.
        self._check_not_closed()
        raise ValueError(
            f"{self!r} is this process's parent, not a child it started: signal it "
            "with os.kill(parent.pid, signal.SIGTERM) if that is meant"
        )

    def _ended_outcome(self, what: str) -> Any:
        raise ValueError(f"{what} is known only for a child this process started, not its parent")

    def __repr__(self) -> str:
        status = "closed" if self._closed else "started" if self.is_alive() else "stopped"
        return f"<ParentProcess name={self._name!r} pid={self._pid} {status}>"


# A child's _bootstrap replaces it with the process object the child runs.
if state.current is None:
    state.current = _MainProcess()
