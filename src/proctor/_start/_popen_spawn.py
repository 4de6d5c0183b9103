"""The ``spawn`` start method: a fresh interpreter that receives its work over a socket.

::

    parent                                      fresh interpreter
    ──────                                      ─────────────────
    pickle process (cloudpickle) + fds ─┐
    socketpair() ─ channel              │
    posix_spawn(python -c spawn_main) ──┼────▶  fd 3 = channel (fd 4 = lifeline)
    send [prep | payload] + SCM_RIGHTS ─┘       spawn_main(): recv, prepare,
    sentinel = pidfd (or lifeline pipe)           unpickle, run target
    join(): poll sentinel, waitpid  ◀─────────  send outcome, exit

The payload is pickled *before* the child exists, so an unpicklable target or
argument fails ``start()`` with no child left behind. The message goes into the
socket buffer (or a memfd, when large) at once, so ``start()`` never waits for the
new interpreter to boot. The child does not re-run the parent's ``__main__``;
functions from it travel by value (cloudpickle).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys

from .._core import _wire
from . import _bootstrap, _spawn_spare
from ._popen import OwnChildPopen, close_quietly, lifeline_pipe, pidfd_usable

__all__ = ("SpawnPopen", "spawn_interpreter")

#: The interpreter that spawn children and fork servers run (``set_executable``).
executable = sys.executable

# The child's first statement. Another Python version (``set_executable``) would
# take in this one's start message (marshal, pickle) and import its standard library
# (the parent's sys.path), and fail somewhere deep in that: it says why instead, in
# code that any Python 3 runs. (sys.exit prints its message; the exit status is 1.)
_SAME_VERSION = (
    f"sys.version_info[:2] == {tuple(sys.version_info[:2])} or sys.exit("
    + repr(
        "proctor: %s is Python %d.%d, and a child must run its parent's Python version, "
        f"{sys.version_info[0]}.{sys.version_info[1]}: pass set_executable() an "
        "interpreter of that version"
    )
    + " % ((sys.executable,) + tuple(sys.version_info[:2])))"
)

CHANNEL_FD = 3
LIFELINE_FD = 4
# posix_spawn's dup2 targets must not collide with the source descriptors.
_DUP_FLOOR = 10


class SpawnPopen(OwnChildPopen):
    method = "spawn"

    def __init__(self, process) -> None:
        super().__init__()
        message, handoff, log_channel = self._prepare_start(process)
        keep_spare = _spawn_spare.enabled()
        spare = _spawn_spare.take(executable) if keep_spare else None
        try:
            if spare is not None:
                self.pid, self.channel, self.sentinel = spare.pid, spare.channel, spare.sentinel
            else:
                bare = not _wire.needs_socket(message, handoff.fds)
                self.pid, self.channel, self.sentinel = spawn_child(bare=bare)
        except BaseException:
            close_quietly(log_channel)
            raise
        self._sentinel_is_pidfd = pidfd_usable()  # (spawn_child's choice, a spare's too)
        self._deliver_start(process, message, handoff, log_channel)
        if keep_spare:
            _spawn_spare.replenish(spawn_child, executable)


def spawn_child(spare_of: int = 0, *, bare: bool = False) -> tuple[int, socket.socket, int]:
    """Start a spawn child that waits for its start message; return (pid, channel, sentinel).

    Args:
        spare_of: this process's pid when the child is a spare (``_spawn_spare``).
        bare: the start message will carry no descriptors: the child reads it
            with ``os.read`` and need not load ``_socket`` (``spawn_main``).
    """
    parent_end, child_end = _wire.socketpair()
    lifeline_r = lifeline_w = -1
    try:
        if not pidfd_usable():
            lifeline_r, lifeline_w = lifeline_pipe()
        lifeline = LIFELINE_FD if lifeline_w >= 0 else -1
        entry = f"spawn_main({CHANNEL_FD}, {lifeline}{f', {spare_of}' if spare_of else ''}"
        entry += ", bare=True" if bare else ""
        entry += f", native={_bootstrap.native_parent_death()})"
        pid = spawn_interpreter(entry, {CHANNEL_FD: child_end.fileno(), LIFELINE_FD: lifeline_w})
    except BaseException:
        close_quietly(parent_end, lifeline_r, lifeline_w)
        raise
    finally:
        child_end.close()
    if lifeline_w >= 0:
        os.close(lifeline_w)
        return pid, parent_end, lifeline_r
    return pid, parent_end, os.pidfd_open(pid)


def spawn_interpreter(entry: str, fds: dict[int, int]) -> int:
    """Start ``python -c "<import bootstrap>; <entry>"`` with ``fds`` at fixed numbers.

    The new interpreter holds those and 0, 1 and 2, no other descriptor of this
    process: ``posix_spawn`` passes on every inheritable one (file actions can
    close only descriptors named one by one), so the child's first step, before
    it imports its entry's module (or the fork server its preloaded modules), is
    ``close_all_fds_except`` (one ``close_range``). ``multiprocessing`` passes
    only the descriptors it means to (``spawnv_passfds``); a child or fork server
    that kept the others held, say, the write end of a user's pipe open, so that
    its reader saw no end of file until the child (or, through the fork server,
    the program) ended.

    Args:
        entry: a call to a function of ``proctor._start._bootstrap`` or
            ``proctor._start._forkserver``.
        fds: child descriptor number -> parent descriptor (negative: skip).

    Returns:
        The new process's pid.
    """
    import subprocess

    module = "_forkserver" if entry.startswith("serve") else "_bootstrap"
    # .../site-packages/proctor/_start/_popen_spawn.py -> .../site-packages
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    kept = sorted({0, 1, 2, *(target for target, src in fds.items() if src >= 0)})
    code = (
        f"import sys; {_SAME_VERSION}; sys.path.append({package_parent!r}); "
        f"from proctor._core._system import close_all_fds_except; close_all_fds_except({kept}); "
        f"from proctor._start.{module} import {entry.split('(')[0]}; {entry}"
    )
    # The interpreter's own flags (-X options, -W filters, -O...), as the child
    # of multiprocessing gets them; subprocess knows how to list them.
    flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    argv = [executable, *flags, "-c", code]
    # Move every source above the fixed targets first, so one dup2 cannot
    # clobber another's source.
    moved = {
        target: fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, _DUP_FLOOR)
        for target, src in fds.items()
        if src >= 0
    }
    try:
        actions = [(os.POSIX_SPAWN_DUP2, src, target) for target, src in moved.items()]
        return os.posix_spawn(executable, argv, os.environ, file_actions=actions)
    finally:
        for src in moved.values():
            os.close(src)
