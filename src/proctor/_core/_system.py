"""Facts about the machine and its processes, and acts on this process's descriptors."""

from __future__ import annotations

import itertools
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

__all__ = (
    "abstract_sockets_supported",
    "close_all_fds_except",
    "cpu_count",
    "describe_fork_list",
    "devnull_fd",
    "fd_identity",
    "fd_is_open",
    "fds_let_go_in_forks",
    "keep_in_forks",
    "let_go_in_forks",
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


def fd_identity(fd: int) -> tuple[int, int] | None:
    """The file that ``fd`` is open on, as ``(st_dev, st_ino)``; None if it is not open.

    Code that closes descriptors it does not own (``os.closerange`` in a child
    that daemonizes) can give a number this process holds to a file of its own:
    a holder that keeps its descriptor's identity checks it (:func:`still_holds`)
    before it writes to or closes the number, which may be another's by then.
    """
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def still_holds(fd: int, identity: tuple[int, int] | None) -> bool:
    """Whether ``fd`` is still open on the file whose :func:`fd_identity` was ``identity``."""
    return identity is not None and fd_identity(fd) == identity


def fd_is_open(fd: int) -> bool:
    """Whether this process has descriptor ``fd`` open."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


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


# -- the descriptors that fork children let go of ------------------------------------
#
# What a process holds for itself -- the log listener's descriptors, those held for
# its children, its sentinels' epoll -- is listed here as it is opened, and taken off
# before it is closed; every process forked from it points the listed numbers at
# /dev/null at once (let_go_of_fds, for the reasons given there) and starts with an
# empty list. With the C accelerator (_core/_native.c) a pthread_atfork handler does
# it inside fork(), before any Python runs in the child; without it, an
# os.register_at_fork hook (_PythonForkList). One list for every owner: the hooks
# that each owner ran, each touching its own objects and calls first, cost a fork
# child ~45 us for the log listener's three or four descriptors (issue 17).


def let_go_in_forks(fd: int) -> None:
    """List ``fd``: every process forked from this one from now on lets go of it."""
    (_fork_list or _make_fork_list()).let_go_in_forks(fd)


def keep_in_forks(fd: int) -> None:
    """Take ``fd`` off the list (call before closing it; nothing if it is not listed).

    Before: a fork in between leaves the child holding a copy of it, where after it
    would point a number that this process may have reused at /dev/null in the child.
    """
    if _fork_list is not None:
        _fork_list.keep_in_forks(fd)


def fds_let_go_in_forks() -> tuple[int, ...]:
    """The listed descriptors."""
    return () if _fork_list is None else tuple(_fork_list.fds_let_go_in_forks())


class _PythonForkList:
    """The list without the C accelerator: an array, let go of by an at-fork hook."""

    def __init__(self) -> None:
        import array  # (here: a spawned child that forks nothing does without it)

        self._fds = array.array("i")
        os.register_at_fork(after_in_child=self._let_go_in_child)

    def let_go_in_forks(self, fd: int) -> None:
        if _fd_number(fd) < 0:
            raise ValueError(f"not a descriptor: {fd}")
        self._fds.append(fd)

    def keep_in_forks(self, fd: int) -> None:
        try:
            self._fds.remove(fd)
        except ValueError:
            pass

    def fds_let_go_in_forks(self) -> tuple[int, ...]:
        return tuple(self._fds)

    def _let_go_in_child(self) -> None:
        if self._fds:
            let_go_of_fds(self._fds)
            del self._fds[:]  # (the parent's numbers)


# The native module (_core._native) or a _PythonForkList, once something is listed.
_fork_list: Any = None
# Why the native module is or is not the one (for ``python -m proctor info``).
_fork_list_reason = "not needed yet"


def describe_fork_list() -> str:
    """One line for ``python -m proctor info``: which implementation lets them go."""
    from . import _accel

    if _fork_list is None:
        _make_fork_list()
    native = _fork_list if not isinstance(_fork_list, _PythonForkList) else None
    return _accel.describe(native, _fork_list_reason)


# (_core._native or None, why), looked up once: by the fork list, or the first wait
# (_timeout.ready_by uses its poll).
_core_native: tuple[Any, str] | None = None


def core_native() -> Any:
    """``_core._native`` if it is built from this source and not switched off, else None."""
    global _core_native
    if _core_native is None:
        from . import _accel

        _core_native = _accel.load_native(__package__ or "proctor._core")
    return _core_native[0]


def _make_fork_list() -> Any:
    global _fork_list, _fork_list_reason
    native = core_native()
    assert _core_native is not None
    _fork_list_reason = _core_native[1]
    if native is not None:
        native.set_devnull(devnull_fd())  # opened here: each child finds it open
        _fork_list = native
    else:
        _fork_list = _PythonForkList()
    return _fork_list


def _fd_number(fd: object) -> int:
    if isinstance(fd, bool) or not isinstance(fd, int):
        raise TypeError(f"descriptors are ints, not {type(fd).__name__} ({fd!r})")
    return fd
