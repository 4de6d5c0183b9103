"""The send lock of a connection end: whole messages from every thread and process.

A ``Pipe()`` end may be shared by several processes (inherited, or handed to
children) and used by several threads. A message that takes more than one write
-- a frame header on the pipe and its body on the stream socket, or a long write
on a socket -- must not be interleaved with another sender's, so its sender
holds the end's send lock from its first write to its last::

    thread ─▶ a _thread lock (this process's threads; a forked child gets a new one)
          ─▶ fcntl record lock on byte 0 of the end's socket (other processes;
             a small unlinked file where sockets cannot be locked: macOS)
          ─▶ the writes of one message
          ◀─ both released; the kernel releases the record lock of a holder that dies

Record locks belong to a process, not to a descriptor, so processes that share
one open socket (a forked child, a spawn child that received it) still exclude
each other. Frames of at most ``PIPE_BUF`` bytes need no lock: one ``write()``
to a pipe is atomic. Nor do mid-size ones: their body is one datagram, their
header one pipe write, and the reader pairs them by frame id (see _sending).

Also here: frame ids (unique among the live senders of an end) and the wait for
room that every send with a timeout uses.
"""

from __future__ import annotations

import _thread
import errno
import fcntl
import itertools
import os
import select
import sys
import time
from collections.abc import Callable

from .._core import _afterfork

__all__ = ("LOCK_ON_SOCKET", "SendLock", "next_frame_id", "wait_writable")

#: Linux takes fcntl record locks on sockets; macOS only on files.
LOCK_ON_SOCKET = sys.platform.startswith("linux")

#: Polling a busy lock under a deadline: the first and the longest pause (seconds).
POLL_FIRST = 0.0005
POLL_MAX = 0.02

# A forked child is told by _afterfork's generation, looked at when it first uses
# something made before the fork: a lock object may be held there by a thread that
# does not exist in the child, and its frame ids must differ from its parent's. (A
# fork hook that renewed them wrote ~17 pages every fork child copied, sending or
# not: issue 17.)


def _new_ids() -> Callable[[], int]:
    # A random 62-bit start: the count stays within 64 bits for 2**62 messages.
    return itertools.count(int.from_bytes(os.urandom(8), "little") >> 2).__next__


_ids = _afterfork.PerProcess(_new_ids)


def next_frame_id() -> int:
    """A 64-bit frame id no other live sender uses: a random per-process start plus
    a count (made anew at a forked child's first id)."""
    return _ids.get()()


def new_lock_file() -> int:
    """An unlinked file whose byte 0 serves as a send lock (where sockets cannot be locked)."""
    import tempfile

    with tempfile.TemporaryFile(prefix="proctor-send-lock-") as f:
        return os.dup(f.fileno())


class SendLock:
    """The send lock of one connection end.

    Args:
        fd: the descriptor whose byte 0 is locked: the end's socket, or a lock
            file (then owned: :meth:`close` closes it).
        owns_fd: whether ``fd`` is a lock file this object owns.
    """

    __slots__ = ("_generation", "_thread_lock", "fd", "owns_fd", "process_private")

    def __init__(self, fd: int, owns_fd: bool = False) -> None:
        self.fd = fd
        self.owns_fd = owns_fd
        self._thread_lock = _thread.allocate_lock()
        self._generation = _afterfork.generation
        #: Set by ``Connection.keep_in_process()``: no other process sends on
        #: this end, so the record lock (two system calls a send) is skipped.
        self.process_private = False

    def _renew(self) -> None:
        """In a forked child, the first use: a lock of its own (a thread of the parent
        may have held the parent's at the fork). Once, however many of the child's
        threads come at once: each made its own, and two took two locks and sent
        together. The lock is set before the generation, so that a thread that
        sees the new generation reads the new lock."""
        with _afterfork.renewing():
            generation = _afterfork.generation
            if self._generation != generation:
                self._thread_lock = _thread.allocate_lock()
                self.process_private = False  # a forked child shares the end
                self._generation = generation

    def acquire(self, deadline: float | None) -> str | None:
        """Take the lock by ``deadline`` (``time.monotonic()``; None: wait forever).

        Returns:
            None once taken; past the deadline, who holds it ("another thread" or
            "another process").
        """
        if self._generation != _afterfork.generation:
            self._renew()
        lock = self._thread_lock  # (read after the look: see _renew)
        if deadline is None:
            lock.acquire()
        elif not lock.acquire(True, max(0.0, deadline - time.monotonic())):
            return "another thread"
        if self.process_private:
            return None
        try:
            if not _record_lock(self.fd, deadline):
                lock.release()
                return "another process"
        except BaseException:
            lock.release()
            raise
        return None

    def release(self) -> None:
        if self.process_private:
            self._thread_lock.release()
            return
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 0)
        finally:
            self._thread_lock.release()

    def locked(self) -> bool:
        """Whether a thread of this process holds it (for tests and reprs)."""
        return self._thread_lock.locked()

    def close(self) -> None:
        if self.owns_fd and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


def _record_lock(fd: int, deadline: float | None) -> bool:
    """Take the fcntl record lock on byte 0 of ``fd``; False past the deadline.

    Linux's deadlock detection reasons about processes, and wrongly reports
    EDEADLK when a holder has other threads waiting for other locks: then, as
    under a deadline, poll.
    """
    if deadline is None:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
            return True
        except OSError as exc:
            if exc.errno != errno.EDEADLK:
                raise
    pause = POLL_FIRST
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                raise
        if deadline is None:
            time.sleep(pause)
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
        pause = min(pause * 2, POLL_MAX)


def wait_writable(fd: int, deadline: float | None) -> bool:
    """Wait until ``fd`` has room (or its reader is gone); False past the deadline."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while True:
        if deadline is None:
            wait_ms = None
        else:
            # Milliseconds, rounded up: never give up before the deadline.
            wait_ms = max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
        if poller.poll(wait_ms):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
