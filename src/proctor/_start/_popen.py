"""What the parent holds for each child it started, whatever the start method.

A ``Popen`` owns three things on the parent's side:

* ``pid``: the child's process id;
* ``sentinel``: a descriptor that becomes readable when the child has ended
  (a pidfd on Linux, the read end of a lifeline pipe elsewhere, the status
  socket from the fork server under forkserver);
* ``channel``: the parent's end of a Unix socket pair. The start payload goes
  down it (spawn, forkserver) and the child's outcome -- return value, or
  exception with its traceback -- comes back up it just before the child exits.

Each start method subclasses :class:`Popen` in its own module and fills in how
the child is created and how its exit status is collected.
"""

from __future__ import annotations

import _socket
import os
import signal
import sys
import threading

from .._core import _wire
from .._core._closing import ClosedWhenCollected
from .._core._timeout import readable_now, wait_readable
from ._outcome import Outcome

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from typing import Any

__all__ = (
    "OwnChildPopen",
    "Popen",
    "close_quietly",
    "kill_and_reap",
    "lifeline_pipe",
    "pidfd_usable",
    "reap_status",
)


class Popen(ClosedWhenCollected):
    """Base class: one started child, seen from its parent.

    Collected without ``close()`` (a ``Process`` that was joined and dropped), it
    closes its descriptors quietly, as a garbage-collected file does.
    """

    method = ""
    #: Whether ``sentinel`` is a pidfd of the child (set where one was opened): it
    #: is readable exactly once the child has ended.
    _sentinel_is_pidfd = False
    #: A fork child's token in the log listener (``LogListener.expect``), whose
    #: stream is made only if the child logs; None otherwise (class defaults: no
    #: attribute written for a child that does not forward). The listener is kept
    #: with it: an import statement at join() wrote ~30 pages (the import system's
    #: objects), each a copy-on-write fault after the fork (issue 17).
    log_token: int | None = None
    log_listener: Any = None

    def __init__(self) -> None:
        self.pid: int = 0
        self.sentinel: int = -1
        self.returncode: int | None = None
        self.channel: _socket.socket | None = None
        self._outcome: Outcome | None = None
        self._lock = threading.Lock()
        self.log_stream: Any = None
        # The process whose child this is: in a forked sibling, a copy of this
        # object has no log stream to wait for or detach (the listener is the
        # parent's), and its descriptors point at /dev/null (_state.Children).
        self._owner = os.getpid()

    # -- exit status ---------------------------------------------------------

    def poll(self) -> int | None:
        """Return the exit code if the child has ended, else ``None`` (never blocks).

        In a process that did not start the child (a fork that inherited this
        object: the "watchdog" pattern), ``None`` unless the code can be learnt
        without collecting it (:meth:`_status_elsewhere`): only the starter can
        collect it, and only there does ``ECHILD`` mean a lost status (255).
        """
        if self.returncode is None:
            if self._owner != os.getpid():
                return self._status_elsewhere()
            if self._sentinel_is_pidfd and self.sentinel >= 0 and not readable_now(self.sentinel):
                # Running: a pidfd is readable exactly once its process has ended. (A
                # look that keeps the GIL where waitpid lets it go: beside a thread
                # computing in Python, is_alive() in a loop waited for the GIL at each
                # call, ~1,200 calls a second; the stdlib's ~1,900.)
                return None
            with self._lock:
                if self.returncode is None:
                    self._collect_status(block=False)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for the child to end; return its exit code."""
        if self.returncode is None:
            if not wait_readable(self.sentinel, timeout):
                return None
            if self._owner != os.getpid():
                return self._status_elsewhere()
            with self._lock:
                if self.returncode is None:
                    self._collect_status(block=True)
        return self.returncode

    def _collect_status(self, block: bool) -> None:
        """Set ``returncode`` if the child ended (called with ``_lock`` held)."""
        raise NotImplementedError

    def _status_elsewhere(self) -> int | None:
        """The exit code as a process that did not start the child may learn it,
        leaving it to be collected by the one that did; ``None`` when it cannot
        (``waitpid`` works for the starter alone)."""
        return None

    def has_ended(self) -> bool:
        """Whether the child has ended, in any process that holds this object.

        Where this process did not start the child, its sentinel tells (it stays
        open in fork children: ``_state.Children``), even when the exit code
        cannot be had there.
        """
        if self.poll() is not None:
            return True
        return self._owner != os.getpid() and self._sentinel_ready()

    def _sentinel_ready(self) -> bool:
        return self.sentinel < 0 or readable_now(self.sentinel)

    # -- signals -------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return  # ended and reaped: its pid may be another process's by now
        if self._owner == os.getpid():
            if self.poll() is not None:
                return
        elif self._sentinel_ready():
            # A copy held by a process that did not start the child: the starter
            # may have reaped it, and its pid is the child's only while the
            # sentinel says it runs.
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass  # it ended meanwhile

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    # -- outcome -------------------------------------------------------------

    def outcome(self) -> Outcome:
        """Read what the ended child reported; call only after it has ended."""
        outcome = self._outcome
        if outcome is None:
            # Under the lock: the report is read once, and a second reader's read
            # (which finds the channel empty) must not replace it with nothing.
            with self._lock:
                outcome = self._outcome
                if outcome is None:
                    outcome = self._outcome = self._read_outcome()
        return outcome

    def _read_outcome(self) -> Outcome:
        channel = self.channel
        if channel is None:
            return Outcome()
        # The child has ended, so whatever it sent is already in the socket (or
        # in a spilled file the socket holds). Never block: a grandchild that
        # inherited the child's end could otherwise keep us waiting forever.
        channel.setblocking(False)
        try:
            # A child with nothing to report (its target returned None) sent an
            # empty message: one peek finds it without recv_message's work (and
            # the pages it would touch), and nothing to unpickle.
            head = channel.recv(len(_wire.EMPTY_MESSAGE), _socket.MSG_PEEK)
            if head == _wire.EMPTY_MESSAGE:
                return Outcome()
            if not head:
                return self._unreported()
            data, fds = _wire.recv_message(channel)
        except BlockingIOError:
            return self._unreported()  # (nothing, and a grandchild holds the child's end)
        except (_wire.WireError, OSError):
            return Outcome()
        for fd in fds:
            os.close(fd)
        return Outcome.from_message(data)

    def _unreported(self) -> Outcome:
        """The outcome of a child that ended without sending any (not even "nothing").

        A child killed, or one that exited with an error code, has none to send
        (``Outcome()``, as ever). One that exited 0 had one: code in it closed
        its channel to this process (``os.closerange()`` in a target that
        daemonizes; the child then sends nothing rather than write into whatever
        file took the number), or it left through ``os._exit()``.
        """
        outcome = Outcome()
        if self.returncode == 0:
            outcome.lost = (
                "code in it closed its channel to the parent (something like "
                "os.closerange() that closes descriptors it did not open), or it "
                "left through os._exit() before reporting"
            )
        return outcome

    # -- spawn and forkserver: what goes to the child, and after ---------------

    def _prepare_start(self, process: Any) -> tuple[bytes, Any, Any]:
        """Pickle ``process`` and build its start message (no child exists yet).

        Returns (message, handoff, log channel or None). Raises UnpicklableError
        before anything is created.
        """
        from . import _bootstrap
        from ._payload import pickle_process

        payload, handoff = pickle_process(process, self.method)
        prep = _bootstrap.build_prep(process, self.method)
        log_channel = _bootstrap.add_log_channel(prep, handoff, process)
        return _bootstrap.encode_start_message(prep, payload), handoff, log_channel

    def _deliver_start(self, process: Any, message: bytes, handoff: Any, log_channel: Any) -> None:
        """Send the start message to the new child and finish the parent's side."""
        assert self.channel is not None
        try:
            _wire.send_message(self.channel, message, handoff.fds)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child died at once; join() reports its exit code
        except BaseException:
            # The message did not go (an error of the send itself, or an
            # exception raised by a signal handler in the middle of it): the
            # child would wait for it as long as this process holds the channel,
            # and join() with it. End the child, and let start() fail.
            self._discard_child()
            close_quietly(log_channel)
            raise
        self._finish_start(process, handoff, log_channel)

    def _discard_child(self) -> None:
        """Kill and reap a child that never got its work, and close its descriptors."""
        kill_and_reap(self.pid)
        self.close()

    def _finish_start(self, process: Any, handoff: Any, log_channel: Any) -> None:
        """After the start message is on its way and the child exists (``pid`` set)."""
        if log_channel is not None:
            self.attach_log_channel(log_channel, process.name)
        for hook in handoff.after_start:
            hook(self.pid)

    def attach_log_channel(self, log_channel: Any, name: str) -> None:
        """Hand the child's log channel (parent's end, child's end) to the log
        listener, which keeps this process's copy of the child's end until the
        child has ended (``LogListener.attach``) instead of its being closed."""
        from .._logging._forwarding import listener

        self.log_stream = listener().attach(log_channel[0], name, log_channel[1])

    def wait_logs(self, timeout: float | None) -> None:
        """After the child ended: handle its forwarded log records still unhandled."""
        if self._owner != os.getpid():
            return
        if self.log_token is not None:
            self._claim_fork_stream()
        stream = self.log_stream
        if stream is not None:
            stream.listener.end(stream, timeout)

    def _claim_fork_stream(self) -> None:
        """A fork child has ended: its stream, if it made a channel (it logged),
        becomes this object's to end (``LogListener.claim``)."""
        token, self.log_token = self.log_token, None
        self.log_stream = self.log_listener.claim(token)

    def held_fds(self) -> tuple[int, ...]:
        """Descriptors held for the child besides the sentinel (a fork sibling lets them go).

        The copy of the child's log channel end held for it (``LogStream.keeper``) is
        one: it is closed only after the child is discarded from the record of
        children (``join()``, ``close()``), never while a fork may still point
        its number at /dev/null.
        """
        held = () if self.channel is None else (self.channel.fileno(),)
        stream = self.log_stream
        if stream is not None and stream.keeper is not None:
            held += (stream.keeper.fileno(),)
        return held

    def _close_sentinel(self) -> None:
        if self.sentinel >= 0:
            try:
                os.close(self.sentinel)
            except OSError:
                pass
            self.sentinel = -1

    def detach_logs(self) -> None:
        """Stop handling the child's log records (the process object is being closed)."""
        if self.log_token is not None and self._owner == os.getpid():
            self._claim_fork_stream()  # (its child has ended: Process.close())
        if self.log_stream is not None:
            stream, self.log_stream = self.log_stream, None
            if self._owner != os.getpid():
                return  # a forked sibling's copy: the stream is the parent's listener's
            stream.listener.detach(stream)

    def close(self) -> None:
        """Release the parent's descriptors for this child (idempotent).

        Also what garbage collection does to a ``Process`` dropped without
        ``close()``. The log stream's parent end belongs to the log listener,
        which closes it when the child's records end; the copy of the child's
        end held for it is let go here, so that they do end.
        """
        stream = self.log_stream
        if stream is not None and self._owner == os.getpid():
            stream.listener.release(stream, self.pid)
        elif self.log_token is not None and self._owner == os.getpid():
            token, self.log_token = self.log_token, None
            self.log_listener.release_token(token, self.pid)
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        self._close_sentinel()


def kill_and_reap(pid: int) -> None:
    """SIGKILL a child of this process that has no work to finish, and reap it."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # reaped already


def close_quietly(*resources: Any) -> None:
    """Close sockets, descriptors (ints, negative = none) and pairs of them; for cleanup paths."""
    for resource in resources:
        if resource is None:
            continue
        if isinstance(resource, tuple):
            close_quietly(*resource)
        elif isinstance(resource, int):
            if resource >= 0:
                try:
                    os.close(resource)
                except OSError:
                    pass
        else:
            resource.close()


class OwnChildPopen(Popen):
    """A child of this very process (fork, spawn): its status comes from waitpid."""

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for the child to end; return its exit code."""
        if (
            timeout is not None
            or _WAIT_ENDED is None
            or self.returncode is not None
            or self._owner != os.getpid()  # (waitid works for the starter alone)
        ):
            return super().wait(timeout)
        # No timeout: the kernel says when our child has ended without reaping it
        # (WNOWAIT; the status is collected below, under the lock, as after a wait
        # on the sentinel), in one call where waiting on the sentinel made a poll
        # object and registered it: pages every join wrote (issue 17).
        try:
            os.waitid(os.P_PID, self.pid, _WAIT_ENDED)
        except ChildProcessError:
            pass  # reaped by someone else: _collect_status tells
        with self._lock:
            if self.returncode is None:
                self._collect_status(block=True)
        return self.returncode

    def _collect_status(self, block: bool) -> None:
        code = reap_status(self.pid, block)
        if code is not None:
            self.returncode = code


#: waitid()'s flags that wait for a child's end and leave it to be reaped, where
#: they exist (Linux; elsewhere, such as macOS, WNOWAIT is less dependable): else None.
_WAIT_ENDED = (
    os.WEXITED | os.WNOWAIT
    if sys.platform.startswith("linux") and hasattr(os, "waitid") and hasattr(os, "WNOWAIT")
    else None
)


def reap_status(pid: int, block: bool) -> int | None:
    """``waitpid`` a child of this process; return its exit code, or ``None``.

    A child that someone else already reaped (``ECHILD``: a ``SIGCHLD`` handler,
    ``os.wait()`` behind proctor's back) is reported as 255: it has ended, but
    its real status is lost. Call it only in the process that started ``pid``
    (``Popen.poll`` sees to it): anywhere else ``ECHILD`` says nothing of the
    child, which may well be running.
    """
    try:
        got, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return 255
    if got == 0:
        return None
    return os.waitstatus_to_exitcode(status)


_pidfd_usable: bool | None = None


def pidfd_usable() -> bool:
    """Whether ``os.pidfd_open`` works here (Linux 5.3+); probed once."""
    global _pidfd_usable
    if _pidfd_usable is None:
        try:
            os.close(os.pidfd_open(os.getpid()))
            _pidfd_usable = True
        except (AttributeError, OSError):
            _pidfd_usable = False
    return _pidfd_usable


def lifeline_pipe() -> tuple[int, int]:
    """Where pidfds are missing: a pipe whose write end only the child holds.

    The read end (the parent's sentinel) sees EOF when the child has ended.
    """
    return os.pipe()
