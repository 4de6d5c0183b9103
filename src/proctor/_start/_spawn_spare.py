"""An idle interpreter kept ready for the next spawn start (opt-in: ``PROCTOR_SPAWN_SPARE=1``).

::

    start() n                               spare (spawned at start n-1)
    ─────────                               ────────────────────────────
    take() ── what it was started with ───▶ python -c spawn_main(3, 4, parent)
              still true? else discard        imports the bootstrap, arms the
    send [prep | payload] ── channel ──────▶  parent-death watch, waits in recv
    replenish(): spawn the next spare         ... runs exactly as a spawn child

A spare is a spawn child whose start message has not been sent yet: the same
command line, the same code from the moment the message arrives. What a fresh
spawn takes from the parent *at start time* either travels in the message
(``sys.path``, ``sys.argv``, the working directory, the start method, logging) or
is what the spare was started with, checked at each take: the environment, the
executable and interpreter flags, stdin/stdout/stderr, the umask, the resource
limits, the signal mask, the ignored signals and the working directory (the
interpreter's own imports search it before prep replaces ``sys.path``); when any
differs the spare is killed and the start spawns afresh. Spares are kept for
starts from the main thread only (the parent-death signal follows the thread
that created the child).

Off by default: the spare hides an interpreter's start-up from ``start()``, it
does not remove it (the CPU is spent all the same, on cores that are often all
busy), and one idle interpreter lives beside the parent for as long as it spawns.
The spare is one of proctor's helpers, never a child: ``active_children()`` does
not list it; it dies with its parent (``PR_SET_PDEATHSIG`` or the parent watch,
armed before it waits), and is killed and reaped at exit, or by :func:`discard`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from .._core import _runtime
from ._popen import close_quietly, kill_and_reap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("ENV_VAR", "Spare", "discard", "enabled", "replenish", "take")

#: The switch: a spawn start keeps an idle interpreter for the next one when set to "1".
ENV_VAR = "PROCTOR_SPAWN_SPARE"


class Spare:
    """The parent's side of an idle interpreter: pid, channel, sentinel, start conditions."""

    def __init__(self, pid: int, channel, sentinel: int, conditions: tuple) -> None:
        self.pid = pid
        self.channel = channel
        self.sentinel = sentinel
        self.conditions = conditions


_spare: Spare | None = None
_exit_hook_registered = False


def enabled() -> bool:
    """Whether spawn starts keep a spare (``PROCTOR_SPAWN_SPARE=1``, from the main thread)."""
    return os.environ.get(ENV_VAR) == "1" and threading.current_thread() is threading.main_thread()


def take(executable: str) -> Spare | None:
    """The spare, if it was started as a fresh spawn would be now and is alive; else ``None``.

    A spare that does not fit is discarded.
    """
    global _spare
    spare, _spare = _spare, None
    if spare is None:
        return None
    from .._core._timeout import readable_now

    if spare.conditions != start_conditions(executable) or readable_now(spare.sentinel):
        _end(spare)
        return None
    _runtime.unregister_helper(spare.pid)
    return spare


def replenish(spawn: Callable[[int], tuple[int, Any, int]], executable: str) -> None:
    """Spawn the next spare, if there is none (the caller holds the start lock).

    Args:
        spawn: starts a spawn child told it is a spare of the given parent pid;
            returns its (pid, channel, sentinel) (``_popen_spawn.spawn_child``).
        executable: the interpreter ``spawn`` runs.
    """
    global _spare, _exit_hook_registered
    if _spare is not None:
        return
    conditions = start_conditions(executable)
    try:
        pid, channel, sentinel = spawn(os.getpid())
    except OSError:
        return  # the next start spawns afresh, and reports the error if it persists
    _spare = Spare(pid, channel, sentinel, conditions)
    _runtime.register_helper(pid)
    if not _exit_hook_registered:
        from ._state import register_exit_hook

        register_exit_hook(discard)
        _exit_hook_registered = True


def discard() -> None:
    """Kill and reap the spare, if there is one (at exit; tests call it too)."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None:
        _end(spare)


def _end(spare: Spare) -> None:
    spare.channel.close()
    kill_and_reap(spare.pid)
    close_quietly(spare.sentinel)
    _runtime.unregister_helper(spare.pid)


def start_conditions(executable: str) -> tuple:
    """What a spawned interpreter takes from its parent at start and not from its start message.

    Args:
        executable: the interpreter spawn children run now (``set_executable``).
    """
    return (
        executable,
        tuple(_interpreter_flags()),
        dict(os.environ),
        tuple(_stdio_identity(fd) for fd in (0, 1, 2)),
        _umask(),
        _rlimits(),
        tuple(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))),
        _ignored_signals(),
        # The interpreter's own imports at boot search the directory it started in
        # (``-c`` puts it on sys.path until prep replaces sys.path).
        os.getcwd(),
    )


def _ignored_signals() -> tuple[int, ...]:
    # posix_spawn keeps ignored signals ignored (and the interpreter leaves them so).
    ignored = []
    for sig in signal.valid_signals():
        try:
            if signal.getsignal(sig) is signal.SIG_IGN:
                ignored.append(int(sig))
        except (OSError, ValueError):
            pass
    return tuple(ignored)


def _interpreter_flags() -> list[str]:
    import subprocess

    return subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]


def _stdio_identity(fd: int) -> tuple[int, int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    # The open file itself, not just what it names: /proc/self/fdinfo would be
    # exact, the (device, inode, flags) triple is what a redirection changes.
    import fcntl

    return (st.st_dev, st.st_ino, fcntl.fcntl(fd, fcntl.F_GETFL))


def _umask() -> int:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, as everyone must
    os.umask(mask)
    return mask


def _rlimits() -> tuple:
    try:
        import resource
    except ImportError:
        return ()
    limits: list[tuple[int, int] | None] = []
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            try:
                limits.append(resource.getrlimit(getattr(resource, name)))
            except (OSError, ValueError):
                limits.append(None)
    return tuple(limits)


def _forget_after_fork() -> None:
    # A forked child's copy of the spare is its parent's: let go of the
    # descriptors (so the spare still sees EOF when the parent goes), never kill it.
    global _spare
    spare, _spare = _spare, None
    if spare is not None:
        close_quietly(spare.channel, spare.sentinel)
        _runtime.unregister_helper(spare.pid)


if sys.platform != "win32":
    os.register_at_fork(after_in_child=_forget_after_fork)
