"""What the reaper and its clients both know: the protocol's constants and who a process is.

Imported by the client (``proctor._reaper._client``) and loaded *by path* by the
reaper's own ``_server.py``, which imports nothing from proctor (see its
docstring): so this file, like it, uses the standard library's C modules and
``os`` only. It is apart from ``_server`` because a client needs only these
names, and every process that opens a semaphore by name is a client -- a spawned
child given a ``Lock`` imported the server's ``json``, ``re``, ``selectors`` and
``socket`` for them, ~5 ms of its start (issue 17).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # ints: signal.py builds enums (enum.py)
import os

#: The kinds of names the reaper keeps.
KINDS = ("shm", "semaphore")

#: Signals aimed at a terminal's foreground jobs (Ctrl-C, hang-up): they kill the
#: users, and the reaper must survive them to clean up.
IGNORED_SIGNALS = (_signal.SIGINT, _signal.SIGHUP)

#: Sent to each new client: "the reaper is running".
READY = b"+"


HAVE_PROC_STAT = os.path.exists("/proc/self/stat")


def create_time(pid: int) -> float | None:
    """Start time of ``pid`` (identifies the process across pid reuse), or None if dead.

    On Linux, the start time in clock ticks since boot from ``/proc/<pid>/stat``
    (exact, and immune to changes of the wall clock); elsewhere psutil's
    ``create_time()``. A zombie counts as dead.
    """
    if HAVE_PROC_STAT:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return None
        # Fields after the ")" that closes the command name: state is field 3,
        # the start time field 22.
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X", b"x"):
            return None
        return float(fields[19])
    import psutil  # type: ignore[import-untyped]  # no stubs installed

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def pid_namespace() -> int | None:
    """This process's pid namespace (an inode number), if ``/proc`` is this namespace's."""
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return None  # a /proc mounted for another pid namespace
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, digit = divmod(n, 36)
        out = digits[digit] + out
        if not n:
            return out


def owner_tag() -> str:
    """What proctor's object names say about their creator (this process).

    ``<pid>.<start time>.<pid namespace>`` (the last two in base 36) where
    ``/proc`` tells them, so that a later reaper can prove the creator dead
    (``_server.find_orphans``); elsewhere just ``<pid>`` (such names are never swept).
    """
    pid = os.getpid()
    namespace = pid_namespace() if HAVE_PROC_STAT else None
    start = create_time(pid) if namespace is not None else None
    if namespace is None or start is None:
        return str(pid)
    return f"{pid}.{base36(int(start))}.{base36(namespace)}"
