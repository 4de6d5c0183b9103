"""The ``fork`` start method: the child is a copy of the parent, nothing is pickled.

::

    parent                                  child (copy of the parent)
    ──────                                  ─────────────────────────
    start(): flush stdout/stderr
    socketpair() ─ channel ─┐
    os.fork() ──────────────┼────────────▶  close parent's end
    close child's end       │               run_forked(): run target
    pidfd_open(pid) = sentinel              send outcome ──┐
    join(): poll sentinel, waitpid ◀────────────────────────┘  os._exit(code)

Fastest, and the only method under which objects that cannot be pickled reach the
child. Forking a process that runs threads can deadlock the child on a lock some
other thread held at the fork; it is the default only where it is multiprocessing's
(Linux up to Python 3.13), so that changing the import changes nothing.
"""

from __future__ import annotations

import _thread
import gc  # noqa: F401 -- for the child: _bootstrap._age_inherited_objects uses it
import os
import sys
import threading
from collections.abc import Callable

from .._core import _system, _wire
from .._logging import _logger, _policy
from . import _bootstrap
from ._popen import OwnChildPopen, close_quietly, lifeline_pipe, pidfd_usable
from ._state import state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("ForkPopen",)

# (pid, main thread's ident, pidfds usable, what forks) of the process that last made
# ready to fork: each fork start then reads one tuple, where calling for each
# (threading's current_thread() and main_thread(), pidfd_usable(), _bootstrap's
# loaders) wrote ~9 pages that a parent with living children copies at every start
# (issue 17). Keyed by pid: a forked child (whose main thread is the one that
# forked) makes its own.
# _start._native.fork_start: os.fork(), given _fork_safe_threads.
_ForkStart = Callable[[Callable[[], tuple[int, ...]]], int]

_ready: tuple[int, int, bool, _ForkStart | None] = (-1, -1, False, None)

_FORWARDING = "proctor._logging._forwarding"


def _expect_log_channel(forward_logs: bool | None, name: str) -> tuple[Any, tuple[int, int]] | None:
    """The log listener and the (request socket, token) of a child that forwards:
    ``LogListener.expect``. ``None`` if the child does not forward; ``_forwarding``
    is loaded only if it does (and found in ``sys.modules`` once it is: an import
    statement writes the import system's objects, ~15 pages a start, issue 17).

    A process without logging, or whose logging is not configured (a library's
    ``NullHandler``), or that turned forwarding off, forwards nothing; loading the
    module (with ``pickle`` and ``select``, and its fork hooks, which run at every
    fork) made each fork start of such a process slower (``_logging._policy``).
    """
    if not _policy.forwarding_enabled(forward_logs):
        return None
    forwarding: Any = sys.modules.get(_FORWARDING)
    if forwarding is None:
        from .._logging import _forwarding as forwarding
    # What the child sets its forwarding up with, made here once.
    forwarding.ready_fork_child()
    listener = forwarding.listener()
    return listener, listener.expect(name)


def _fork_safe_threads() -> tuple[int, ...]:
    """``_forwarding.fork_safe_threads``; none where that module is not loaded (no listener)."""
    forwarding = sys.modules.get(_FORWARDING)
    return () if forwarding is None else forwarding.fork_safe_threads()


def _get_ready(pid: int) -> tuple[int, int, bool, _ForkStart | None]:
    """Make this process ready to fork children; return its ``_ready`` record."""
    global _ready
    # Resolved once in the parent so that every forked child finds them ready.
    _bootstrap.load_prctl()
    _system.devnull_fd()
    # Children that import logging later name their records after themselves
    # through a finder inherited from here, which they need not make each.
    _logger.stand_by(_started_by_its_parent)
    main = threading.main_thread().ident
    # (Never None once the main thread runs; if it were, no thread is the main one.)
    _ready = (pid, -1 if main is None else main, pidfd_usable(), _fork_function())
    return _ready


def _fork_function() -> _ForkStart | None:
    """``_start._native.fork_start`` where it is built (Linux, Python 3.12 and 3.13),
    else None (os.fork()).

    os.fork() with one difference: Python 3.12+ warns about forking a process that
    runs threads, and os.fork() counts the log listener's thread, which the
    listener's fork hooks make safe to fork with: a parent that forwards logs was
    warned about proctor's own thread at every fork start. fork_start counts the
    threads as os.fork() does, leaves out those fork_safe_threads() says are
    proctor's, and warns as os.fork() does if any other remains. Not on a later
    Python until checked against its os.fork(): it may change its warning (or
    raise it, where 3.12 and 3.13 drop a warning made an error). (The module is
    loaded by load_prctl, just before.)
    """
    native = _bootstrap._native
    if native is None or not (3, 12) <= sys.version_info < (3, 14):
        return None
    return getattr(native, "fork_start", None)


def _started_by_its_parent() -> bool:
    """Whether this process is a child that proctor started from its parent process
    (not one that ``os.fork()`` or ``multiprocessing`` made, which inherit the same
    copy of the parent's state): its record of its parent names its actual parent."""
    parent = state.parent
    return parent is not None and parent.pid == os.getppid()


class ForkPopen(OwnChildPopen):
    method = "fork"

    def __init__(self, process) -> None:
        super().__init__()
        # (Asked before anything is opened: nothing to close should it fail.)
        adopt_stdlib = _bootstrap.stdlib_state_to_adopt()
        parent_end, child_end = _wire.plain_socketpair()
        parent_pid = os.getpid()
        ready = _ready
        if ready[0] != parent_pid:
            ready = _get_ready(parent_pid)
        lifeline_r = lifeline_w = -1
        if not ready[2]:
            lifeline_r, lifeline_w = lifeline_pipe()
        # The parent-death signal is sent when the thread that forked ends: only
        # the main thread's children can rely on it.
        on_main_thread = _thread.get_ident() == ready[1]
        # No capture_config(): the child's logging is a copy of this one's. Its
        # token is taken before the fork: after it, every page this process writes
        # is copied while the child lives. (No stream: the listener makes it if the
        # child logs, LogListener.expect.)
        log_request = None
        try:
            # (Process.start() has flushed stdout and stderr: buffered output would
            # otherwise be written twice. What this process read ahead from stdin
            # stays here: the child takes a stdin object never read, made once.)
            if _bootstrap._blank_stdin is None:
                _bootstrap.ready_blank_stdin()
            # Last: nothing can fail between the token and the fork.
            expected = _expect_log_channel(process._forward_logs, process.name)
        except BaseException:  # (out of descriptors for the listener's thread, say)
            close_quietly(parent_end, child_end, lifeline_r, lifeline_w)
            raise
        if expected is not None:
            self.log_listener, log_request = expected
            self.log_token = log_request[1]
        try:
            # (During shutdown os.fork() refuses, with its own error.)
            fork = ready[3]
            pid = os.fork() if fork is None or sys.is_finalizing() else fork(_fork_safe_threads)
        except BaseException:
            if log_request is not None:
                self._claim_fork_stream()  # (no child: nothing comes)
            close_quietly(parent_end, child_end, lifeline_r, lifeline_w)
            raise
        if pid == 0:  # the child
            try:
                parent_end.close()
                if lifeline_w >= 0:
                    os.close(lifeline_r)
                    _bootstrap.keep_lifeline(lifeline_w)
                _bootstrap.run_forked(
                    process, child_end, parent_pid, on_main_thread, log_request, adopt_stdlib
                )
            finally:
                os._exit(1)
        child_end.close()
        self.pid = pid
        self.channel = parent_end
        if lifeline_w >= 0:
            os.close(lifeline_w)
            self.sentinel = lifeline_r
        else:
            self.sentinel = os.pidfd_open(pid)
            self._sentinel_is_pidfd = True
