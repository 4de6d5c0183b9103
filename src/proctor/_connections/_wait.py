"""``wait()``: block until one of many connections, sockets or sentinels is ready.

One ``poll()`` over every descriptor (``select()`` where there is no ``poll``),
through ``_core._wakeup``: another thread's ``close()`` of a ``Connection`` or
``Listener`` in the list ends the wait at once, and ``wait()`` then raises that
object's "closed" error, as it does for one closed before the call. A
``Connection`` with messages already read ahead is ready without a system call.
Before it sleeps, a wait on connections looks for a message for a moment, as a
receive does (``_look``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from .._core import _lazy_errors
from .._core._timeout import check_timeout
from .._core._wakeup import wait_readable
from . import _receiving
from ._connection import Connection
from ._listener import Listener
from ._receiving import longer_backoff, look_length

__all__ = ("wait",)

# What another thread may close under a wait (each has _closed, _waiting, _closed_error()).
_OWNERS = (Connection, Listener)

# The back-off of wait()'s looks (_look), the process's: a connection's counts its
# own receives, but a wait may watch many connections, sockets and sentinels, and
# the loops that call it take what any of them brings. How many more waits skip
# looking, and how many skipped after the last look that found nothing.
_skip = 0
_backoff = 0


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
        OSError: a Connection (or Listener) in the list is closed, also when
            another thread closes it while this call waits (it then raises at once).
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
        ready = [o for o in ready if not isinstance(o, Connection) or _has_news(o)]
        if ready:
            return ready
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return []


def _has_news(conn: Connection) -> bool:
    # A message, end of file, or a refusal (a listener that needs a key): what the
    # connection's next recv() tells.
    try:
        return conn.poll(0)
    except _lazy_errors.if_loaded("AuthenticationError"):
        return True


def _wait_once(objects: list[Any], timeout: float | None) -> list[Any]:
    ready = [o for o in objects if isinstance(o, Connection) and o._rpos < o._rend]
    if ready:
        return ready
    if not objects:
        if timeout is None:
            raise ValueError("wait() on an empty list with timeout=None would never return")
        time.sleep(timeout)
        return []
    # One pass (a wait() of a message already come costs about what the stdlib's
    # does): each object's descriptor; those to watch, once each -- the sending end
    # of Pipe(duplex=False) has nothing to receive, and is never ready; and the
    # objects another thread may close, whose close() ends the wait (see
    # _core._wakeup), the closed one then refused as it would have been before.
    # A list with a connection that looks before it sleeps (not a pool's streaming
    # pipes, nor any where the C module is not built) is looked at first, as its
    # receives are.
    fds = []
    watched: dict[int, None] = {}
    owners = []
    look = None
    for o in objects:
        fd = _fileno_of(o)
        fds.append(fd)
        if isinstance(o, _OWNERS):
            owners.append(o)
            if isinstance(o, Connection):
                if not o._readable:
                    continue
                if o._spin_skip >= 0:
                    look = _look
        watched[fd] = None
    try:
        ready_fds = set(wait_readable(list(watched), timeout, owners, look))
    except OSError:
        _check_open(owners)
        raise
    _check_open(owners)
    return [o for o, fd in zip(objects, fds, strict=True) if fd in ready_fds]


def _look(fds: Sequence[int], timeout: float | None, without_gil: bool) -> bool:
    """Before a wait sleeps, none of ``fds`` ready: whether one became readable within
    a look of up to ``_receiving.SPIN_NS`` (no longer than ``timeout``), as a receive
    looks for its message (``_receiving.FrameReceiver._looked_until_readable``), with
    the same back-off, the process's (``_skip``). The GIL let go where
    ``without_gil``. (The wait's timeout counts from before the look:
    ``_wakeup.wait_readable``.)
    """
    global _skip, _backoff
    if _skip:
        _skip -= 1
        return False
    seen = _receiving._spin_until_readable(fds, look_length(timeout), without_gil)
    if seen == 2:
        _backoff = 0  # (it came while we looked)
        return True
    _skip = _backoff = longer_backoff(_backoff)
    return seen == 1  # (there at the first look: a look not needed)


def _check_open(owners: list[Any]) -> None:
    for owner in owners:
        if owner._closed:
            raise owner._closed_error()
