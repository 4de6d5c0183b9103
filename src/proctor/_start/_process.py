"""``Process``: the object a parent uses to start, watch and join one child.

Life of a process object::

    Process(target=f, args=...)          created: nothing exists yet
        .start()  ── start method ──▶    Popen: pid, sentinel, channel
                                          child runs f(*args), reports its outcome
        .join()   ◀── sentinel ──────    exit code collected; result/exception read
        .close()                          descriptors released

The start method (fork, spawn, forkserver) is a strategy, one module each
(``_popen_fork``, ``_popen_spawn``, ``_popen_forkserver``); this module knows none of
their details. The child side of a start lives in ``_bootstrap``.
"""

from __future__ import annotations

import atexit
import itertools
import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from .._core import _serialization
from .._core._errors import ResultError
from .._core._system import pid_alive
from .._core._timeout import deadline as _deadline
from .._logging import _logger as _logging

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from typing import Any

__all__ = (
    "Process",
    "active_children",
    "current_process",
    "parent_process",
)


class _Children:
    """This process's started children that have not been seen to end yet.

    Each child's sentinel is registered with a selector (epoll on Linux), so
    finding the children that ended costs one ``select(0)`` plus a poll of each
    ended one, however many are still running: ``start()`` does it every time (as
    multiprocessing does, to reap), and a scan over every child made the n-th
    start cost O(n) (issue 12).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: dict[Process, int] = {}
        self._selector: selectors.BaseSelector | None = None

    def add(self, child: Process, sentinel: int) -> None:
        with self._lock:
            if self._selector is None:
                self._selector = _sentinel_selector()
            self._selector.register(sentinel, selectors.EVENT_READ, child)
            self._fds[child] = sentinel

    def discard(self, child: Process) -> None:
        """Forget ``child``; call before its sentinel is closed."""
        with self._lock:
            fd = self._fds.pop(child, None)
            if fd is not None and self._selector is not None:
                self._selector.unregister(fd)

    def ended(self) -> list[Process]:
        """The children whose sentinel is readable (they ended, or are ending)."""
        with self._lock:
            if not self._fds or self._selector is None:
                return []
            return [key.data for key, _events in self._selector.select(0)]

    def __iter__(self) -> Iterator[Process]:
        with self._lock:
            return iter(list(self._fds))

    def __len__(self) -> int:
        return len(self._fds)

    def __contains__(self, child: object) -> bool:
        return child in self._fds

    def abandon_after_fork(self) -> list[Process]:
        """In a forked child: give up this copy, never unregistering anything.

        An epoll instance is shared with the parent through the fork: unregistering
        here would unregister in the parent too, so this copy of it is only
        closed. Returns the children, whose descriptors the caller closes.
        """
        if self._selector is not None:
            try:
                self._selector.close()
            except OSError:
                pass
            self._selector = None
        return list(self._fds)


def _sentinel_selector() -> selectors.BaseSelector:
    # epoll where there is one: O(ready) per select. Elsewhere poll, whose cost
    # per select grows with the number of children but stays one system call;
    # not kqueue, whose descriptor a forked child does not inherit (closing it
    # there could close another descriptor that reused the number).
    if hasattr(selectors, "EpollSelector"):
        return selectors.EpollSelector()
    return selectors.PollSelector()


class _ProcessState:
    """Per-process globals: who we are, our children, the child counter."""

    def __init__(self) -> None:
        self.current: BaseProcessInfo = _MainProcess()
        self.parent: _ParentProcess | None = None
        self.children = _Children()
        self.counter = itertools.count(1)
        self.atexit_registered = False
        self.exit_hooks: list[Callable[[], object]] = []
        self.start_lock = threading.Lock()
        # True while a new child unpickles its start payload: a Process started
        # then comes from a module imported as a side effect -- the missing
        # ``if __name__ == "__main__":`` guard -- and must not fork-bomb.
        self.unpickling_payload = False


class BaseProcessInfo:
    """What ``current_process()`` returns in any process: name, pid, authkey..."""

    _name: str
    _identity: tuple[int, ...] = ()
    _authkey: bytes
    _daemon = False

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
        return self._authkey

    @authkey.setter
    def authkey(self, value: bytes) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"authkey must be bytes, not {type(value).__name__}")
        self._authkey = bytes(value)

    @property
    def daemon(self) -> bool:
        return self._daemon

    @property
    def pid(self) -> int | None:
        return os.getpid()

    ident = pid


class _MainProcess(BaseProcessInfo):
    def __init__(self) -> None:
        self._name = "MainProcess"
        self._authkey = os.urandom(32)

    def __repr__(self) -> str:
        return f"<_MainProcess name={self._name!r} pid={os.getpid()} started>"


class _ParentProcess:
    """The parent of this child, as seen from the child (``parent_process()``)."""

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self._pid = pid

    @property
    def pid(self) -> int:
        return self._pid

    ident = pid

    def is_alive(self) -> bool:
        """Whether the parent still runs (this child has not been re-parented)."""
        return os.getppid() == self._pid or pid_alive(self._pid)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the parent has ended, up to ``timeout`` seconds."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def __repr__(self) -> str:
        state = "started" if self.is_alive() else "stopped"
        return f"<_ParentProcess name={self.name!r} pid={self._pid} {state}>"


_state = _ProcessState()


def current_process() -> BaseProcessInfo:
    """Return the object describing the process this code runs in."""
    return _state.current


def parent_process() -> _ParentProcess | None:
    """Return the parent of this process, or ``None`` in the main process."""
    return _state.parent


def active_children() -> list[Process]:
    """Return the children of this process that are still running (reaping ended ones)."""
    _reap_finished_children()
    return list(_state.children)


def _reap_finished_children() -> None:
    for child in _state.children.ended():
        popen = child._popen
        if popen is None or popen.poll() is not None:
            _state.children.discard(child)


class Process(BaseProcessInfo):
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

    # Set by the context's subclasses (ForkProcess...); None means "the default
    # context's method at start()".
    _start_method: str | None = None

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
        if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
            raise TypeError(
                f"args must be a tuple or other iterable of arguments, not "
                f"{type(args).__name__} ({args!r:.80}); for one argument write args=(x,)"
            )
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs must be a mapping, not {type(kwargs).__name__}")
        parent = _state.current
        count = next(_state.counter)
        self._identity = (*parent._identity, count)
        self._target = target
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self._authkey = parent.authkey
        self._daemon = parent.daemon if daemon is None else bool(daemon)
        self._parent_pid = os.getpid()
        self._parent_name = parent.name
        self._name = (
            name
            if name is not None
            else type(self).__name__ + "-" + ":".join(str(i) for i in self._identity)
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
        self._check_not_closed()
        if self._popen is not None:
            raise ValueError(f"cannot start a process twice: {self!r} was already started")
        if self._parent_pid != os.getpid():
            raise ValueError(
                "can only start a process object created by the current process "
                f"(created by pid {self._parent_pid}, this is pid {os.getpid()})"
            )
        _check_not_importing_payload()
        _reap_finished_children()
        from .._context import _launcher_for, _resolve_method

        # Recorded before pickling, so the child learns the method it runs under
        # and makes it its own default, as multiprocessing does.
        self._started_with = _resolve_method(self._start_method)
        from ._bootstrap import flush_std_streams

        # What this process printed so far comes out before anything the child
        # prints (stdout may be a block-buffered pipe), and a forked child does
        # not inherit it to print it again, as with multiprocessing.
        flush_std_streams()
        # One start at a time per process: a fork copies every descriptor, so a
        # child forked while another thread holds a new child's ends of its
        # channels would keep them open, and that child's log stream (or
        # lifeline) would not end with it.
        with _state.start_lock:
            self._popen = _launcher_for(self._started_with)(self)
        _state.children.add(self, self._popen.sentinel)
        _register_exit_handler()
        _logging.debug("started %s with the %s start method", self._name, self._started_with)

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
            raise ValueError(f"cannot join a process that was never started: {self!r}")
        if self._parent_pid != os.getpid():
            raise RuntimeError("can only join a child process of the current process")
        deadline = _deadline(timeout)
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if self._popen.wait(timeout) is not None:
            # Every record the child logged is handled before join() returns.
            self._popen.wait_logs(None if deadline is None else deadline - time.monotonic())
            _state.children.discard(self)

    def is_alive(self) -> bool:
        """Whether the child has been started and has not ended yet."""
        self._check_not_closed()
        if self is _state.current:
            return True
        if self._popen is None or self._parent_pid != os.getpid():
            return False
        if self._popen.poll() is None:
            return True
        _state.children.discard(self)
        return False

    def terminate(self) -> None:
        """Send SIGTERM to the child (nothing if it has already ended)."""
        self._started_popen().terminate()

    def kill(self) -> None:
        """Send SIGKILL to the child (nothing if it has already ended)."""
        self._started_popen().kill()

    def close(self) -> None:
        """Release the descriptors held for the child; idempotent.

        Raises:
            ValueError: while the child is still running.
        """
        if self._closed:
            return
        if self._popen is not None:
            if self._popen.poll() is None:
                raise ValueError(
                    f"cannot close {self!r} while it is still running; "
                    "call join() or terminate() first"
                )
            _state.children.discard(self)  # before its sentinel is closed
            self._read_outcome()
            self._popen.detach_logs()
            self._popen.close()
            self._popen = None
        self._closed = True

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self.join()
        self.close()

    # -- attributes ---------------------------------------------------------

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
        if self is _state.current:
            return os.getpid()
        return None if self._popen is None else self._popen.pid

    ident = pid

    @property
    def exitcode(self) -> int | None:
        """The exit code: ``None`` while running, ``-N`` when killed by signal N."""
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
        from .._context import _resolve_method

        return _resolve_method(self._start_method)

    @property
    def result(self) -> Any:
        """The target's return value, once the child has ended.

        ``None`` when the target raised or the child was killed.

        Raises:
            ValueError: while the child has not ended yet.
            ResultError: when the value could not be sent to the parent (it
                could not be pickled in the child or unpickled here).
        """
        outcome = self._ended_outcome("result")
        if outcome.value_error is not None:
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
        if self._popen is None or self._popen.poll() is None:
            raise ValueError(f"{what} is available once the process has ended; join() it first")
        return self._read_outcome()

    def _read_outcome(self) -> Any:
        if self._outcome_cache is None and self._popen is not None:
            self._outcome_cache = self._popen.outcome()
        return self._outcome_cache

    # -- helpers --------------------------------------------------------------

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
            state = "closed"
        elif self is _state.current:
            state = "started"
        elif self._popen is None:
            state = "initial"
        elif self._popen.poll() is None:
            state = "started"
        else:
            state = "stopped"
        parts = [f"<{type(self).__name__} name={self._name!r}"]
        if not self._closed and self._popen is not None:
            parts.append(f"pid={self._popen.pid}")
        parts.append(f"parent={self._parent_pid}")
        parts.append(state)
        if state == "stopped":
            parts.append(f"exitcode={_exitcode_name(self._popen.returncode)}")
        if self._daemon:
            parts.append("daemon")
        return " ".join(parts) + ">"

    def __reduce__(self) -> Any:
        from .._core._reduction import is_spawning

        if not is_spawning():
            raise TypeError(
                "a Process object cannot be pickled; it can only reach the child "
                "it describes when that child starts"
            )
        state = {k: v for k, v in self.__dict__.items() if k not in ("_popen", "_outcome_cache")}
        return (_rebuild_process, (type(self), state))

    # -- child side ---------------------------------------------------------

    def _bootstrap(self) -> tuple[int, bytes]:
        """Run in the child: become current, run, report. Returns (exitcode, outcome)."""
        from .. import _context
        from . import _bootstrap

        _context._inherit_start_method(self._started_with)
        _state.children = _Children()
        _state.counter = itertools.count(1)
        _state.parent = _ParentProcess(self._parent_name, self._parent_pid)
        _state.current = self
        self._popen = None
        exitcode = 1
        outcome: tuple[Any, ...] = _NONE_VALUE
        try:
            try:
                _bootstrap.close_stdin()
                _logging.info("child process calling self.run()")
                value = self.run()
                exitcode = 0
                outcome = _value_message(value)
            finally:
                _exit_children()
        except SystemExit as exc:
            if exc.code is None:
                exitcode = 0
            elif isinstance(exc.code, int):
                exitcode = exc.code
            else:
                sys.stderr.write(str(exc.code) + "\n")
                exitcode = 1
            outcome = _NONE_VALUE
        except BaseException as exc:
            import traceback

            exitcode = 1
            sys.stderr.write(f"Process {self._name}:\n")
            traceback.print_exc()
            outcome = _error_message(exc)
        finally:
            _bootstrap.shutdown_threads()
            _logging.info("process exiting with exitcode %d", exitcode)
            _bootstrap.flush_std_streams()
        if outcome is _NONE_VALUE:
            return exitcode, _NONE_VALUE_BYTES
        return exitcode, _serialization.dumps(outcome)


def _exitcode_name(code: int) -> str:
    # Reprs show ``exitcode=-SIGKILL``, as stdlib's do.
    if code < 0:
        try:
            return "-" + signal.Signals(-code).name
        except ValueError:
            pass
    return str(code)


def _rebuild_process(cls: type[Process], state: dict[str, Any]) -> Process:
    process = cls.__new__(cls)
    process.__dict__.update(state)
    process._popen = None
    process._outcome_cache = None
    return process


# Most targets return None: its outcome message is made once, not per child.
_NONE_VALUE = ("value", _serialization.dumps(None))
_NONE_VALUE_BYTES = _serialization.dumps(_NONE_VALUE)


def _value_message(value: Any) -> tuple[Any, ...]:
    if value is None:
        return _NONE_VALUE
    try:
        return ("value", _serialization.dumps(value))
    except Exception as exc:
        return ("unsendable", f"{type(value).__name__} could not be pickled ({exc})")


def _error_message(exc: BaseException) -> tuple[Any, ...]:
    import traceback

    tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        exc_bytes: bytes | None = _serialization.dumps(exc)
    except Exception:
        exc_bytes = None
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        text = str(exc)
    except Exception:
        text = "<str() failed>"
    return ("error", exc_bytes, type_name, text, tb_text)


def _check_not_importing_payload() -> None:
    if _state.unpickling_payload:
        raise RuntimeError(
            "A new process was started while this child process was still loading the "
            "code it was sent -- most likely because a module it imports starts "
            "processes at import time.\n\n"
            "This usually means a script is missing the idiom that protects code which "
            "must run only in the main program:\n\n"
            "    if __name__ == '__main__':\n"
            "        ...start processes here...\n\n"
            "Move the process creation under that guard (or into a function). proctor "
            "refuses to start the process so that it cannot recurse into a fork bomb."
        )


def _register_exit_handler() -> None:
    if not _state.atexit_registered:
        _state.atexit_registered = True
        atexit.register(_at_exit)


def register_exit_hook(hook: Callable[[], object]) -> None:
    """Run ``hook`` at interpreter exit, after every child has been joined.

    proctor's helpers (the fork server) stop this way, never before the children
    that depend on them have finished.
    """
    _state.exit_hooks.append(hook)
    _register_exit_handler()


def _at_exit() -> None:
    _exit_children()
    while _state.exit_hooks:
        try:
            _state.exit_hooks.pop()()
        except Exception:
            pass  # a helper that cannot stop cleanly is reclaimed by the kernel


def _exit_children() -> None:
    """At exit: terminate daemonic children, then join every remaining child."""
    children = list(_state.children)
    if children:
        _logging.info("process shutting down")
    for child in children:
        if child.daemon and child._popen is not None and child._popen.poll() is None:
            child._popen.terminate()
    for child in children:
        if child._popen is not None:
            _logging.debug("joining %s", child.name)
            child._popen.wait(None)
            child._popen.wait_logs(None)
        _state.children.discard(child)


def _reset_after_fork() -> None:
    # The forked child starts with no children and a fresh counter; the process
    # object it runs replaces ``current`` in ``_bootstrap``. Its copies of the
    # parent's descriptors for its siblings are closed: they are not its own.
    siblings = _state.children.abandon_after_fork()
    _state.children = _Children()
    for sibling in siblings:
        if sibling._popen is not None:
            sibling._popen.forget_in_child()
    _state.atexit_registered = False
    _state.exit_hooks = []
    _state.start_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
