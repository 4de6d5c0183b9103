"""Facts about the machine and its processes, and acts on this process's descriptors."""

from __future__ import annotations

import itertools
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = (
    "abstract_sockets_supported",
    "close_all_fds_except",
    "cpu_count",
    "devnull_fd",
    "let_go_of_fds",
    "pid_alive",
    "random_bits",
    "random_hex",
)

_HAVE_PROC = os.path.isdir("/proc/self")

#: Whether Unix socket addresses may start with a NUL byte (Linux's abstract
#: namespace: no file, gone with the last descriptor).
abstract_sockets_supported = sys.platform.startswith("linux")


# Names, nonces and tokens come from os.urandom, not the secrets module: secrets
# imports hmac, hashlib and OpenSSL's _hashlib (2.5-3.7 ms here), which every spawn
# child making a lock or a queue paid before it ran its target.


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as hex, as ``secrets.token_hex`` gives them."""
    return os.urandom(nbytes).hex()


def random_bits(bits: int) -> int:
    """A random integer of ``bits`` bits, as ``secrets.randbits`` gives it."""
    value = int.from_bytes(os.urandom((bits + 7) // 8), "little")
    return value >> (-bits % 8)


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


def close_all_fds_except(fds: Iterable[int]) -> None:
    """Close every descriptor of this process except ``fds``.

    Raises:
        TypeError: when an item of ``fds`` is not an int.
    """
    keep = sorted({-1, *(_fd_number(fd) for fd in fds)})
    try:
        limit = os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        limit = 256
    keep.append(max(limit, keep[-1] + 1))
    for low, high in itertools.pairwise(keep):
        # Never an empty range: os.closerange(n, n) closes every descriptor from n
        # up (CPython turns it into close_range(n, UINT_MAX)).
        if high > low + 1:
            os.closerange(low + 1, high)


# A list, not an int global: the fork child reads it without a global write.
_devnull: list[int] = []


def devnull_fd() -> int:
    """A /dev/null descriptor (read and write), opened once per process and kept.

    A fork parent opens it before its first fork, so that each child finds it
    open: opening it costs a fork child ~25 us (issue 17).
    """
    if not _devnull:
        _devnull.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
    return _devnull[0]


def let_go_of_fds(fds: Iterable[int]) -> None:
    """In a forked child: stop holding the parent's ``fds``, keeping their numbers taken.

    Each is pointed at /dev/null (close-on-exec) rather than closed: the objects
    that own them in the parent's copy of memory are not touched (each one
    touched is a page the child copies), and if one is closed or collected here
    later, it closes /dev/null, never a descriptor of the child's that reused
    the number.
    """
    devnull = devnull_fd()
    for fd in fds:
        try:
            os.dup2(devnull, fd, inheritable=False)
        except OSError:
            pass


def _fd_number(fd: object) -> int:
    if isinstance(fd, bool) or not isinstance(fd, int):
        raise TypeError(f"descriptors are ints, not {type(fd).__name__} ({fd!r})")
    return fd
