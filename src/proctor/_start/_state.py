"""This process's place in the tree: who it is, who its parent is, which children it has.

One object, :data:`state`, holds it. The parent side (``_process``) adds children
when they start and reaps them; the child side (``_bootstrap``) makes the process
object it runs the current one and records its parent. Neither imports the other:
both import this module.

At interpreter exit (a stage of ``_core._finalize``'s exit function, added by the first
``start()``), daemonic children are terminated and every other child is joined, then
the exit hooks of proctor's helpers (the fork server) run.
"""

from __future__ import annotations

import _thread
import itertools
import os
import sys
import time

from .._core import _finalize, _runtime
from .._core._system import keep_in_forks, let_go_in_forks
from .._logging import _logger

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from collections.abc import Callable, Iterator
    from typing import Any

__all__ = (
    "check_not_importing_payload",
    "exit_children",
    "flush_std_streams",
    "register_exit_handler",
    "register_exit_hook",
    "state",
)


class Children:
    """This process's started children that have not been seen to end yet.

    Each child's sentinel is registered with one poller (``select.epoll`` on Linux),
    so finding the children that ended costs one ``poll(0)`` plus a poll of each
    ended one, however many are still running: ``start()`` does it every time (as
    multiprocessing does, to reap), and a scan over every child made the n-th
    start cost O(n) (issue 12). The poller is used directly, not through
    ``selectors``, whose keys and lookups were a measurable part of a fork start.
    """

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._fds: dict[Any, tuple[int, ...]] = {}  # child -> (sentinel, other fds held)
        self._by_fd: dict[int, Any] = {}  # sentinel -> child
        self._poller: Any = None
        # Sentinels not registered with the poller yet: registration waits for the
        # next reap(), so a child joined before then (start, join: the common
        # case) never costs the two epoll_ctl calls. The poller is level-triggered:
        # a child that ended before its registration is seen at the next poll.
        self._unregistered: set[int] = set()
        # Every descriptor in _fds but the sentinels, and the poller's, is listed
        # among those that fork children let go of (_system.let_go_in_forks): a
        # forked child lets go of its siblings' without touching (and so copying)
        # their objects.

    def add(self, child: Any, sentinel: int, others: tuple[int, ...] = ()) -> None:
        """Track ``child``: its ``sentinel`` and the ``others`` descriptors held for it."""
        with self._lock:
            if self._poller is None:
                # Once per process, at the first start (not at the first look
                # for ended children): its descriptor is held for good from then.
                self._poller, self._readable = _sentinel_poller()
                poller_fd = getattr(self._poller, "fileno", None)
                if poller_fd is not None:  # (a poll object holds no descriptor)
                    let_go_in_forks(poller_fd())
            stale = self._by_fd.pop(sentinel, None)
            if stale is not None:
                # A descriptor number reused while still listed (its old owner's
                # sentinel closed without discard()): forget the old owner.
                for fd in self._fds.pop(stale)[1:]:
                    keep_in_forks(fd)
                self._unregister(sentinel)
            self._unregistered.add(sentinel)
            self._fds[child] = (sentinel, *others)
            self._by_fd[sentinel] = child
            # The sentinel stays open in fork children: a sibling may wait on it, as
            # with the stdlib (a pidfd, a lifeline's read end or a status socket holds
            # nothing open for anyone); the others are this process's alone.
            for fd in others:
                let_go_in_forks(fd)

    def discard(self, child: Any) -> None:
        """Forget ``child``; call before its sentinel is closed."""
        with self._lock:
            held = self._fds.pop(child, None)
            if held is not None:
                del self._by_fd[held[0]]
                for fd in held[1:]:
                    keep_in_forks(fd)
                self._unregister(held[0])

    def _unregister(self, sentinel: int) -> None:
        if sentinel in self._unregistered:
            self._unregistered.discard(sentinel)
        else:
            _unregister_quietly(self._poller, sentinel)

    def reap(self) -> None:
        """Forget the children that have ended (``start()`` and ``active_children()``).

        A child is forgotten once its sentinel is readable and its exit status
        collected (``popen.poll()``), as multiprocessing's ``_cleanup`` does.
        """
        with self._lock:
            if not self._fds:
                return
            while self._unregistered:
                sentinel = self._unregistered.pop()
                try:
                    self._poller.register(sentinel, self._readable)
                except FileExistsError:  # epoll still knew the number
                    self._poller.modify(sentinel, self._readable)
                except OSError:
                    pass  # closed without discard(): its child is not ours to find
            ready = self._poller.poll(0)
            if not ready:
                return  # the usual case: no list, no loop (a start's pages, issue 17)
            by_fd = self._by_fd
            ended = [by_fd[fd] for fd, _events in ready if fd in by_fd]
        for child in ended:
            popen = child._popen
            if popen is None or popen.poll() is not None:
                self.discard(child)

    def __iter__(self) -> Iterator[Any]:
        with self._lock:
            return iter(list(self._fds))

    def __len__(self) -> int:
        return len(self._fds)

    def __contains__(self, child: object) -> bool:
        return child in self._fds


def _sentinel_poller() -> tuple[Any, int]:
    """A new poller for sentinels, and its readable flag."""
    # epoll where there is one: O(ready) per poll. Elsewhere poll, whose cost per
    # call grows with the number of children but stays one system call; not
    # kqueue, whose descriptor a forked child does not inherit (closing it there
    # could close another descriptor that reused the number).
    import select  # here: a spawned child that starts no child does without it

    if hasattr(select, "epoll"):
        return select.epoll(), select.EPOLLIN
    return select.poll(), select.POLLIN


def _unregister_quietly(poller: Any, fd: int) -> None:
    try:
        poller.unregister(fd)
    except (OSError, KeyError):  # closed already (epoll drops it by itself), or unknown
        pass


class ProcessState:
    """Per-process globals: who we are, our children, the child counter."""

    def __init__(self) -> None:
        # The process object describing this process: the main process's (set by
        # ``_process`` when it is imported), or the one a child runs (``_bootstrap``).
        self.current: Any = None
        # The parent as this child sees it (``_process.ParentProcess``); None in
        # the main process.
        self.parent: Any = None
        self.children = Children()
        self.counter = itertools.count(1)
        self.exit_hooks: list[Callable[[], object]] = []
        self.start_lock = _thread.allocate_lock()
        # True while a new child unpickles its start payload: a Process started
        # then comes from a module imported as a side effect -- the missing
        # ``if __name__ == "__main__":`` guard -- and must not fork-bomb.
        self.unpickling_payload = False
        # Whether register_exit_handler() has run in this process (a fork child
        # starts with False: its parent's atexit handlers are not its own).
        self.exit_handler_registered = False

    def become_child(self, process: Any, parent: Any) -> None:
        """In a new child: ``process`` is now this process; it has no children yet."""
        if self.children:
            # Not a fork child's fresh record (_reset_after_fork made one already):
            # a child started from a process object that had children (the fork
            # server's copy). Allocating only when needed saves a forked child
            # the pages a second Children() would touch.
            self.children = Children()
        self.counter = itertools.count(1)
        self.parent = parent
        self.current = process


state = ProcessState()
# Lock reprs and forwarded log records (lower layers) name this process through _runtime.
_runtime.set_process_name(lambda: str(state.current.name))


def check_not_importing_payload() -> None:
    """Refuse a start while this child still unpickles its own work (a fork bomb)."""
    if state.unpickling_payload:
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


def flush_std_streams() -> None:
    """Flush stdout and stderr, ignoring streams that are closed or missing."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


# -- exit ---------------------------------------------------------------------


def register_exit_handler() -> None:
    """Join (or terminate, if daemonic) every child at interpreter exit (idempotent)."""
    # Every start() calls this: after the first, one attribute read.
    if not state.exit_handler_registered:
        _finalize.add_exit_stage(_at_exit)
        state.exit_handler_registered = True


def register_exit_hook(hook: Callable[[], object]) -> None:
    """Run ``hook`` at interpreter exit, after every child has been joined.

    proctor's helpers (the fork server) stop this way, never before the children
    that depend on them have finished.
    """
    state.exit_hooks.append(hook)
    register_exit_handler()


def _at_exit() -> None:
    exit_children()
    while state.exit_hooks:
        try:
            state.exit_hooks.pop()()
        except Exception:
            pass  # a helper that cannot stop cleanly is reclaimed by the kernel


#: Seconds a daemonic child has to end after the SIGTERM of its parent's exit,
#: before it is killed (SIGKILL).
DAEMON_TERMINATE_GRACE = 5.0


def exit_children() -> None:
    """Terminate daemonic children, then join every remaining child."""
    children = list(state.children)
    if children:
        _logger.info("process shutting down")
    # Each child's _popen is read once: another thread (a pool's dispatcher) may
    # close() the child meanwhile, which sets it to None.
    terminated = []
    for child in children:
        popen = child._popen
        if child.daemon and popen is not None and popen.poll() is None:
            popen.terminate()
            terminated.append(popen)
    if terminated:
        # A daemonic child that ignores (or blocks) SIGTERM would hold up this
        # exit for ever (multiprocessing's waits on): SIGKILL after a grace period.
        deadline = time.monotonic() + DAEMON_TERMINATE_GRACE
        for popen in terminated:
            if popen.wait(max(0.0, deadline - time.monotonic())) is None:
                _logger.info("daemonic child %s ignored SIGTERM: killing it", popen.pid)
                popen.kill()
    for child in children:
        popen = child._popen
        if popen is not None:
            _logger.debug("joining %s", child.name)
            popen.wait(None)
        # (Before wait_logs, which closes a descriptor held for the child: see join.)
        state.children.discard(child)
        if popen is not None:
            popen.wait_logs(None)


# What a forked child kept of its ancestors' records of their children (one per
# fork generation), never freed there: see _reset_after_fork.
_ancestors_children: list[Children] = []


def _reset_after_fork() -> None:
    # The forked child starts with no children and a fresh counter; the process
    # object it runs replaces ``current`` in ``_bootstrap``. Its copies of the
    # parent's descriptors for its siblings (and of the parent's poller) were let
    # go of by number already, as listed (_system.let_go_in_forks): they are not
    # its own (their sentinels stay open: see Children.add). The parent's record
    # is kept, not dropped: freeing it would write to every sibling's process
    # object (its reference count) and copy a page or two per living sibling
    # (~180 faults with 300 of them), for memory the child shares with its
    # parent anyway. (Its poller is never unregistered from, nor
    # closed: an epoll instance is shared with the parent through the fork.)
    inherited = state.children
    _ancestors_children.append(inherited)
    state.children = Children()
    state.exit_hooks = []
    state.exit_handler_registered = False
    state.start_lock = _thread.allocate_lock()


os.register_at_fork(after_in_child=_reset_after_fork)
