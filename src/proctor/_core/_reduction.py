"""How objects that own OS resources (file descriptors, named OS objects) reach a child.

Under ``fork`` nothing is pickled: the child is a copy of the parent and inherits
every descriptor at the same number. Under ``spawn`` and ``forkserver``,
``Process.start()`` pickles the process object inside :func:`handing_off`, and the
descriptors travel beside the pickle with ``SCM_RIGHTS``::

    parent: Process.start()                         child: bootstrap
    ───────────────────────                         ────────────────
    with handing_off(handoff):                      with receiving(fds):
        pickle(process)                                 unpickle(process)
          obj.__reduce__()                                rebuild(token)
            token = fd_token(fd) ──┐                        fd = take_fd(token)
    send(pickle, handoff.fds) ─────┴──SCM_RIGHTS──▶ (data, fds)
    for hook in handoff.after_start: hook(pid)

An object that owns a descriptor writes ``__reduce__`` as
``return (rebuild, (fd_token(self._fd), ...))`` and ``rebuild`` calls
:func:`take_fd`. Pickling such an object anywhere else (into a queue, say) raises
a clear error from :func:`fd_token` instead of sending a number that means
nothing in the receiver.

Objects known by name (OS semaphores, shared-memory segments) register an
``after_start`` hook to tell whoever reclaims the name that the new pid uses it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = (
    "ChildHandoff",
    "current_handoff",
    "fd_token",
    "handing_off",
    "is_spawning",
    "receiving",
    "refused_outside_start",
    "take_fd",
)

_local = threading.local()


class ChildHandoff:
    """What a child needs beside its pickle: descriptors and post-start hooks.

    Attributes:
        start_method: the start method in use (``"spawn"`` or ``"forkserver"``).
        fds: descriptors to send, in token order. The parent keeps ownership of
            them; the child receives duplicates.
        after_start: callables run with the child's pid once it exists.
    """

    def __init__(self, start_method: str) -> None:
        self.start_method = start_method
        self.fds: list[int] = []
        self.after_start: list[Callable[[int], None]] = []
        self._index: dict[int, int] = {}

    def add_fd(self, fd: int) -> int:
        """Record ``fd`` for sending and return its token (dedupes repeats)."""
        if not isinstance(fd, int) or fd < 0:
            raise ValueError(f"not a file descriptor: {fd!r}")
        token = self._index.get(fd)
        if token is None:
            token = self._index[fd] = len(self.fds)
            self.fds.append(fd)
        return token


@contextmanager
def handing_off(handoff: ChildHandoff) -> Iterator[ChildHandoff]:
    """Make ``handoff`` collect descriptors from the pickling done inside."""
    previous = getattr(_local, "handoff", None)
    _local.handoff = handoff
    try:
        yield handoff
    finally:
        _local.handoff = previous


def current_handoff() -> ChildHandoff | None:
    """Return the handoff being pickled for in this thread, or ``None``."""
    return getattr(_local, "handoff", None)


def is_spawning() -> bool:
    """Whether this thread is pickling a process object for a new child."""
    return current_handoff() is not None


def fd_token(fd: int, what: str = "this object") -> int:
    """Register ``fd`` to be sent to the child being started; return its token.

    Args:
        fd: the descriptor the pickled object owns.
        what: a short description for the error message (``"Connection"``).

    Raises:
        RuntimeError: when no child is being started in this thread: descriptors
            cannot travel inside an ordinary pickle.
    """
    handoff = current_handoff()
    if handoff is None:
        raise refused_outside_start(
            what,
            f"{what} holds an open file descriptor and can only be sent to a child "
            "process as an argument of Process(...) (or as an attribute of the process "
            "object) when it is started; it cannot be pickled into a queue, a pipe or a "
            "file. Pass it to the child at start, or create it in the child.",
        )
    return handoff.add_fd(fd)


def refused_outside_start(what: str, message: str) -> RuntimeError:
    """The error for pickling, outside a proctor start, what only a start can send.

    ``message`` is the object's own explanation. When the pickling is
    ``multiprocessing`` starting a process of its own (a proctor object passed to
    a ``multiprocessing.Process``), "pass it to Process(...)" is what the user
    did, so the error says that the process was not a proctor one instead.
    """
    method = _multiprocessing_start_method()
    if method is None:
        return RuntimeError(message)
    return RuntimeError(
        f"{what} cannot be sent to this child: it is a multiprocessing.Process (being "
        f"started with multiprocessing's {method!r} start method), not a proctor.Process, "
        "and only proctor's own start can send proctor objects, with the descriptors and "
        "OS objects they are made of. Start the child with proctor.Process (or "
        f"proctor.get_context({method!r}).Process): import Process from proctor too, not "
        "only the queues and locks. Or use multiprocessing's own objects with "
        "multiprocessing's processes."
    )


def _multiprocessing_start_method() -> str | None:
    """The method of a ``multiprocessing`` start pickling in this thread now, or ``None``.

    ``multiprocessing`` marks its spawn and forkserver starts with
    ``context.get_spawning_popen()``; it is asked only if already imported.
    """
    context = sys.modules.get("multiprocessing.context")
    if context is None:
        return None
    try:
        popen = context.get_spawning_popen()
    except Exception:  # a multiprocessing without it: nothing to tell
        return None
    if popen is None:
        return None
    method = getattr(popen, "method", None)
    return method if isinstance(method, str) else "spawn"


class _Received:
    def __init__(self, fds: list[int]) -> None:
        self.fds = fds
        self.taken: set[int] = set()


@contextmanager
def receiving(fds: list[int]) -> Iterator[None]:
    """In the child: resolve tokens against ``fds`` while unpickling inside.

    Descriptors that no object took are closed on exit, so none leaks.
    """
    received = _Received(fds)
    previous = getattr(_local, "received", None)
    _local.received = received
    try:
        yield
    finally:
        _local.received = previous
        for index, fd in enumerate(fds):
            if index not in received.taken:
                try:
                    os.close(fd)
                except OSError:
                    pass


def take_fd(token: int) -> int:
    """In the child: return the descriptor sent under ``token``; the caller owns it.

    Raises:
        RuntimeError: outside a child's bootstrap unpickling, or for a token that
            was not sent.
    """
    received = getattr(_local, "received", None)
    if received is None:
        raise RuntimeError(
            "a file-descriptor token can only be resolved while a child process "
            "unpickles the arguments it was started with"
        )
    try:
        fd = received.fds[token]
    except (IndexError, TypeError):
        raise RuntimeError(
            f"file-descriptor token {token!r} was not sent to this process "
            f"(it received {len(received.fds)} descriptors)"
        ) from None
    if token in received.taken:
        # Two objects rebuilt from one descriptor each get their own, so that
        # closing one does not break the other.
        return os.dup(fd)
    received.taken.add(token)
    return fd
