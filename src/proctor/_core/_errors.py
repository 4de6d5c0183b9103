"""Every exception and warning proctor raises, in one place.

Each error subclasses the stdlib error it stands in for, so ``except`` clauses
written for ``multiprocessing`` keep working::

    Exception
    ├── ProcessError                      (multiprocessing.ProcessError's role)
    │   ├── AuthenticationError           wrong authkey on a Listener/Client handshake
    │   ├── BufferTooShort                recv_bytes_into() buffer too small
    │   ├── ProtocolError (also OSError)  corrupt frame, or longer than maxlength
    │   └── StartError                    a child could not be started
    │       └── UnpicklableError          (also TypeError) target/args cannot be pickled
    ├── RemoteError                       a child's exception that could not travel as itself
    └── ResultError                       a target's return value could not reach the parent
    ProcessError, TimeoutError (builtin)
    └── ProcessTimeoutError               a call ran past its timeout (proctor.TimeoutError)
    AssertionError, RuntimeError
    └── LockNotOwnedError (_lock)         release/wait by a thread that does not hold the lock
    threading.BrokenBarrierError
    └── BrokenBarrierError (_condition)   a Barrier was broken (a party died, timed out, abort)
    RuntimeWarning
    └── OwnerDiedWarning                  a lock's holder died while holding it

``RemoteTraceback`` is attached as ``__cause__`` of an exception that came back
from a child, so the parent's traceback shows where the child failed.
"""

from __future__ import annotations

__all__ = (
    "AuthenticationError",
    "BufferTooShort",
    "OwnerDiedWarning",
    "ProcessError",
    "ProcessTimeoutError",
    "ProtocolError",
    "RemoteError",
    "RemoteTraceback",
    "ResultError",
    "StartError",
    "UnpicklableError",
)


class ProcessError(Exception):
    """Base class of proctor's errors about processes and their channels."""


class AuthenticationError(ProcessError):
    """A peer failed the HMAC challenge: it does not hold the same authkey."""


class BufferTooShort(ProcessError):
    """The buffer given to ``recv_bytes_into()`` cannot hold the message.

    The message is kept in ``args[0]`` so that it is not lost.
    """


class ProtocolError(ProcessError, OSError):
    """The bytes on a connection do not form a valid message, or one is too long.

    Raised for a frame with a bad tag (garbage or a stream out of step), a length
    above ``maxlength`` or above this machine's memory. The unread rest of the
    frame is still in the stream, so the connection can no longer receive; it is
    a subclass of ``OSError`` because ``multiprocessing`` raises ``OSError`` here.
    """


class StartError(ProcessError):
    """A child process could not be started."""


class UnpicklableError(StartError, TypeError):
    """``start()`` could not pickle the target or an argument for a spawn/forkserver child.

    Also a ``TypeError``, which is what pickling raises for such objects.
    """


class RemoteError(Exception):
    """An exception raised in a child that could not be sent back as itself.

    This happens when the exception cannot be pickled in the child or unpickled
    in the parent. The facts survive as text.

    Attributes:
        type_name: qualified name of the original exception's class.
        message: ``str()`` of the original exception.
        traceback_text: the child's formatted traceback.
    """

    def __init__(self, type_name: str, message: str, traceback_text: str = "") -> None:
        super().__init__(type_name, message, traceback_text)
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


class ResultError(Exception):
    """The target returned a value that could not be sent to the parent.

    The child still exited normally (exit code 0): returning a value is not an
    error for ``multiprocessing`` code, which never looks at it.
    """


class ProcessTimeoutError(ProcessError, TimeoutError):
    """A blocking proctor call did not complete within its timeout.

    Also exported as ``proctor.TimeoutError``, the name ``multiprocessing`` uses.
    """


class RemoteTraceback(Exception):
    """Carries a child's formatted traceback; attached as ``__cause__``."""

    def __init__(self, tb_text: str) -> None:
        super().__init__(tb_text)
        self.tb_text = tb_text

    def __str__(self) -> str:
        return "\n\n" + '"""\n' + self.tb_text.rstrip("\n") + '\n"""'


class OwnerDiedWarning(RuntimeWarning):
    """A lock was recovered from a holder that died while holding it.

    The state that the lock protected may be half-updated. Turn this warning into
    an error with ``warnings.simplefilter("error", proctor.OwnerDiedWarning)``.
    """
