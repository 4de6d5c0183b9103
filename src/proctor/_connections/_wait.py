"""``wait()``: block until one of many connections, sockets or sentinels is ready.

One ``poll()`` over every descriptor (``select()`` where there is no ``poll``);
a ``Connection`` with messages already read ahead is ready without a system call.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterable
from typing import Any

from .._core._timeout import check_timeout
from ._connection import Connection

__all__ = ("wait",)

# poll() has no FD_SETSIZE limit, unlike select(); every POSIX system we support has it.
_HAVE_POLL = hasattr(select, "poll")


def _fileno_of(obj: Any) -> int:
    if isinstance(obj, int) and not isinstance(obj, bool):
        if obj < 0:
            raise ValueError(f"not a file descriptor: {obj}")
        return obj
    fileno = getattr(obj, "fileno", None)
    if fileno is None:
        raise TypeError(
            f"wait() takes Connections, sockets, process sentinels (ints) and objects "
            f"with a fileno() method, not {type(obj).__name__}"
        )
    return fileno()


def _write_only(obj: Any) -> bool:
    return isinstance(obj, Connection) and not obj._readable


def wait(object_list: Iterable[Any], timeout: float | None = None) -> list[Any]:
    """Wait until at least one object is ready; return the ready ones.

    An object is ready when a ``Connection`` has a message (or end-of-file) to
    receive, a socket is readable, or a process sentinel signals that its
    process ended.

    Args:
        object_list: Connections, sockets, ints (file descriptors, such as
            ``Process.sentinel``) and objects with a ``fileno()`` method.
        timeout: seconds to wait; ``None`` waits forever, ``0`` polls.

    Returns:
        The ready objects, in the order given; empty when the timeout expired.

    Raises:
        TypeError: an object is none of the kinds above.
        OSError: a Connection in the list is closed.
    """
    objects = list(object_list)
    checked = check_timeout(timeout)
    timeout = None if checked is None else max(0.0, checked)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        ready = _wait_once(objects, timeout)
        # A keyless Client's first bytes are its listener's greeting, not a message
        # (see _handshake): take it, as poll() does, and keep the connection only if
        # a message (or end-of-file) came with it; else wait on for the others.
        if not any(isinstance(o, Connection) and o._greeting is not None for o in ready):
            return ready
        ready = [o for o in ready if not isinstance(o, Connection) or o.poll(0)]
        if ready:
            return ready
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return []


def _wait_once(objects: list[Any], timeout: float | None) -> list[Any]:
    ready = [o for o in objects if isinstance(o, Connection) and o._rpos < o._rend]
    if ready:
        return ready
    fds = [_fileno_of(o) for o in objects]
    if not fds:
        if timeout is None:
            raise ValueError("wait() on an empty list with timeout=None would never return")
        time.sleep(timeout)
        return []
    # The sending end of Pipe(duplex=False) has nothing to receive: never ready.
    watched = {fd for o, fd in zip(objects, fds, strict=True) if not _write_only(o)}
    if _HAVE_POLL:
        poller = select.poll()
        for fd in watched:
            poller.register(fd, select.POLLIN)
        events = poller.poll(None if timeout is None else timeout * 1000.0)
        ready_fds = {fd for fd, _ in events}
    else:
        ready_list, _, _ = select.select(list(watched), [], [], timeout)
        ready_fds = set(ready_list)
    return [o for o, fd in zip(objects, fds, strict=True) if fd in ready_fds]
