"""Small deterministic helpers shared by the tests."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

START_METHODS = ("fork", "spawn", "forkserver") if sys.platform != "win32" else ("spawn",)

#: Pids of this process's children that run jobs of the whole session in the
#: background (the CPython suites' drivers, ``compat.background``): they and their
#: descendants are not any test's children (``process_tree``).
BACKGROUND: set[int] = set()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds.

    Returns the truthy value. Replaces ``sleep`` in tests: it waits only as long as needed.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition {predicate!r} not met within {timeout} s")
        time.sleep(interval)


def run_program(code: str, *args: str, stdin: str | None = None) -> str:
    """Run ``code`` in a new interpreter (``python -c code args...``); its stdout.

    Fails the test, with the program's stderr, unless it exits 0 within 120 s.
    """
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


#: The start of a test program whose ``__main__`` functions and class read a global
#: that each round changes: ``change_config(value)`` rebinds it (2 and 4) or mutates
#: it in place (3 and 5), for ``value`` in ``ROUNDS``. A child, worker or executor
#: made after a change must see it, however ``__main__``'s code reaches it.
MAIN_GLOBALS_PREAMBLE = """
import sys, proctor
CONFIG = {"v": 1}
ROUNDS = (2, 3, 4, 5)
def read():
    return CONFIG["v"]
class Model:
    def read(self):
        return CONFIG["v"]
def change_config(value):
    global CONFIG
    if value % 2 == 0:
        CONFIG = {"v": value}
    else:
        CONFIG["v"] = value
"""


def call_in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Start ``call()`` in a new thread: the thread, and a list that gets what the call
    returned or raised (for a test that acts on an object while the call waits on it)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # (what it raised is the result)
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def have_datagrams() -> bool:
    """Whether a ``Pipe()`` end here has its datagram socket for mid-size bodies
    (``AF_UNIX`` ``SOCK_SEQPACKET``: not on macOS)."""
    from proctor import Pipe

    a, b = Pipe()
    with a, b:
        return bool(a._dgram_limit)


def pid_exists(pid: int) -> bool:
    """Whether ``pid`` names a live, non-zombie process."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def process_tree() -> dict[int, float]:
    """This process and its descendants -- but for the ``BACKGROUND`` jobs and what
    they started -- as pid -> start time (``psutil``'s ``create_time``).

    From one reading of every process's parent, so that a job's process started
    meanwhile is never taken for this process's own.
    """
    import psutil

    me = psutil.Process()
    children: dict[int, list[int]] = {}
    started: dict[int, float] = {me.pid: me.create_time()}
    for proc in psutil.process_iter(["ppid", "create_time"]):
        parent = proc.info["ppid"]
        if parent is not None:
            children.setdefault(parent, []).append(proc.pid)
            started[proc.pid] = proc.info["create_time"]
    tree = {me.pid: started[me.pid]}
    pending = [me.pid]
    while pending:
        for pid in children.get(pending.pop(), ()):
            if pid not in BACKGROUND and pid not in tree:
                tree[pid] = started[pid]
                pending.append(pid)
    return tree


def child_processes(*, live_only: bool = False) -> set[int]:
    """This process's descendants (``process_tree``) but for proctor's helper processes
    (the reaper, the fork server: ``_runtime.helper_pids()``); with ``live_only``, the
    zombies about to be reaped left out too."""
    from proctor._core import _runtime

    pids = set(process_tree()) - {os.getpid()} - set(_runtime.helper_pids())
    if live_only:
        pids = {pid for pid in pids if pid_exists(pid)}
    return pids


def open_fds() -> set[int]:
    """The descriptors open in this process."""
    if os.path.isdir("/proc/self/fd"):
        fds = set()
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                os.fstat(fd)
            except OSError:
                continue  # the descriptor listdir itself used
            fds.add(fd)
        return fds
    import resource

    limit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 4096)
    found = set()
    for fd in range(limit):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.add(fd)
    return found


def shm_names() -> set[str]:
    """Every proctor name in /dev/shm, whoever made it (a superset of ``shm_entries``)."""
    try:
        return {n for n in os.listdir("/dev/shm") if "proctor" in n}
    except FileNotFoundError:
        return set()


def shm_entries() -> set[str]:
    """Names in /dev/shm that proctor made in this process tree and did not reclaim.

    proctor names carry the creator's pid. An entry counts if its creator is this
    process or a live descendant -- unless the entry is older than that process: then
    its pid was reused, and the entry is another program's leftover (an untracked
    segment of a killed test run, say, which no reaper ever sweeps). If its creator
    is dead, it counts if this tree's
    resource reaper still tracks the name -- every proctor name is registered with
    it before it exists, and it forgets a name only once unlinked -- so the
    leftovers of another program (another test run on the same machine, whose
    processes die while this one's tests run) are not this run's to judge. Where
    the reaper cannot be asked (this process is not connected to one), every dead
    creator's entry counts. Entries without a pid count. (The background jobs'
    processes are not this tree's: see ``process_tree``.)
    """
    import re

    names = shm_names()
    if not names:
        return set()
    ours = process_tree()
    found = set()
    orphans: dict[tuple[str, str], str] = {}  # (kind, name) as registered -> entry
    for name in names:
        match = re.search(r"proctor\D*?(\d+)", name)
        pid = int(match.group(1)) if match else None
        if pid is None:
            found.add(name)
        elif pid in ours:
            if not _older_than(name, ours[pid]):
                found.add(name)
        elif not pid_exists(pid):
            kind, base = ("semaphore", name[4:]) if name.startswith("sem.") else ("shm", name)
            orphans[(kind, "/" + base)] = orphans[(kind, base)] = name
    if orphans:
        from proctor._reaper import _client
        from reaper_helpers import tracked_names

        tracked = set(orphans)  # where the reaper cannot tell: count them all
        if _client.client().fd is not None:  # (asking must not start or connect a reaper)
            try:
                tracked = tracked_names(list(orphans))
            except (OSError, TimeoutError, ValueError):
                pass
        found.update(orphans[key] for key in tracked)
    return found


def _older_than(name: str, started: float) -> bool:
    """Whether /dev/shm entry ``name`` was last modified over a second before ``started``.

    A file's modification time starts at its creation and only moves forward (nothing
    in proctor sets it back), so such an entry was made before the process that
    started then. (A second of slack: process start times come in clock ticks.)
    """
    try:
        modified = os.stat("/dev/shm/" + name).st_mtime
    except FileNotFoundError:
        return False
    return modified < started - 1.0


def finish(p, timeout: float = 30):
    """Join a started process (failing the test if it does not end) and close it.

    Returns ``(exitcode, result)``; ``result`` is ``None`` unless the child exited 0.
    """
    p.join(timeout)
    assert p.exitcode is not None, f"{p!r} did not finish"
    exitcode = p.exitcode
    result = p.result if exitcode == 0 else None
    p.close()
    return exitcode, result


def describe_shm_leftovers(entries: set[str]) -> str:
    """What keeps each leftover ``/dev/shm`` entry, for a leak check's failure message.

    A leftover that comes and goes (seen twice in full runs, never on demand) can only
    be understood from the state at the failure: this process's registration count
    for the name (above zero: an object of this process still holds it), the live
    objects that hold it and what refers to them, the processes that map it, and
    whether the reaper still tracks it (the caller has synced the reaper already).
    """
    import gc

    from proctor._reaper import _client
    from proctor._reaper._semlock import NamedSemaphore

    lines = []
    keys = {
        entry: ("semaphore", "/" + entry[4:]) if entry.startswith("sem.") else ("shm", "/" + entry)
        for entry in sorted(entries)
    }
    names = {name for _, name in keys.values()}
    refs = _client.client().refs
    holders: dict[str, list[str]] = {}
    objects = gc.get_objects()
    for obj in objects:
        if isinstance(obj, NamedSemaphore) and getattr(obj, "name", None) in names:
            around = [
                f"{type(r).__name__}: {str(r)[:120]}"
                for r in gc.get_referrers(obj)
                if r is not objects
            ]
            holders.setdefault(obj.name, []).extend(around)
    del objects
    # Matched by inode, as the reaper matches them: glibc makes a named semaphore under
    # a temporary name, so its mapping shows as "/dev/shm/sem.XXXXXX (deleted)".
    inodes: dict[str, str] = {}
    for entry in entries:
        try:
            inodes[str(os.stat("/dev/shm/" + entry).st_ino)] = entry
        except OSError:
            pass
    mappers: dict[str, list[str]] = {entry: [] for entry in entries}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as maps:
                shm_maps = [line.split(None, 5) for line in maps if " /dev/shm/" in line]
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rpartition(")")[2].split()[:2]
        except OSError:
            continue
        for fields in shm_maps:
            entry = inodes.get(fields[4])
            if entry is not None:
                mappers[entry].append(f"{pid} (state {state[0]}, parent {state[1]})")
    try:
        from reaper_helpers import tracked_names

        tracked = tracked_names(list(keys.values()))
        asked = ""
    except (OSError, TimeoutError, ValueError) as exc:
        tracked, asked = set(), f" (the reaper could not be asked: {exc!r})"
    for entry, key in keys.items():
        lines.append(
            f"{entry}: registered here {refs.get(key, 0)} time(s); "
            f"reaper tracks it: {key in tracked}{asked}; mapped by {mappers[entry] or 'nobody'}; "
            f"held by {holders.get(key[1]) or 'no live object here'}"
        )
    client = _client.client()
    if client.fd is None:
        lines.append("this process has no connection to a reaper")
    else:
        # A connection whose number something else closed and reused would send the
        # releases elsewhere: say what the number is now.
        try:
            import socket

            with socket.socket(fileno=os.dup(client.fd)) as sock:
                peer = f"a socket connected to {sock.getpeername()!r}"
        except OSError as exc:
            peer = f"not a connected socket ({exc!r}): {os.readlink(f'/proc/self/fd/{client.fd}')}"
        lines.append(
            f"connection to the reaper {client.address!r}: descriptor {client.fd} is {peer}"
        )
    return "\n".join(lines)
