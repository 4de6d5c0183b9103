"""Facts about the machine."""

from __future__ import annotations

import os

__all__ = ("cpu_count", "pid_alive")

_HAVE_PROC = os.path.isdir("/proc/self")


def cpu_count() -> int:
    """Return the number of CPUs in the system (not just those this process may use).

    Raises:
        NotImplementedError: when the OS does not say, as ``multiprocessing`` does.
    """
    count = os.cpu_count()
    if count is None:
        raise NotImplementedError("cannot determine the number of CPUs")
    return count


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process; a zombie (dead, unreaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    if _HAVE_PROC:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return False  # vanished between the two looks
        # The state letter follows the ")" that closes the command name.
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"
    import psutil  # type: ignore[import-untyped]  # pragma: no cover - systems without /proc

    try:  # pragma: no cover
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # pragma: no cover
        return False
