"""Every exception and warning proctor raises, in one place.

Each error subclasses the stdlib error it stands in for, so ``except`` clauses
written for ``multiprocessing`` (or ``pickle``) keep working::

    Exception
    ├── multiprocessing.ProcessError
    │   └── ProcessError
    │       ├── AuthenticationError       (multiprocessing.AuthenticationError) wrong authkey
    │       ├── BufferTooShort            (multiprocessing.BufferTooShort) recv_bytes_into()
    │       │                             buffer too small
    │       ├── ProcessTimeoutError       (multiprocessing.TimeoutError, builtin TimeoutError)
    │       │   │                         a call ran past its timeout (proctor.TimeoutError)
    │       │   └── TaskTimeoutError      a pool task ran past its timeout: its worker was killed
    │       ├── ProtocolError (also OSError)  corrupt frame, or longer than maxlength
    │       ├── StartError                a child could not be started
    │       │   └── UnpicklableError      (also PicklingError) target/args cannot be pickled
    │       ├── WorkerLostError           a pool worker died holding a task (that task failed)
    │       ├── PoolTerminatedError       a pool was terminated before a task completed
    │       ├── ManagerLostError (also EOFError, ConnectionError)  a manager's process
    │       │                             ended or shut down: its proxies cannot reach it
    │       └── InitializerError          a pool's initializer raised: the pool is broken
    ├── pickle.PicklingError, TypeError
    │   └── PicklingError                 an object, or a part of it, cannot be pickled
    ├── RemoteError                       a child's exception that could not travel as itself
    ├── ResultError                       a target's return value could not reach the parent
    │   └── MaybeEncodingError            a pool task's result could not be sent back
    │                                     (multiprocessing.pool's name)
    TypeError, ValueError
    └── ArgumentTypeError                 a wrong argument type where the stdlib raises
                                          ValueError (Pool(maxtasksperchild="2"))
    ValueError, OSError
    └── QueueClosedError                  a queue handle used after its close() (in this process)
    AssertionError, RuntimeError
    └── LockNotOwnedError (_lock)         release/wait by a thread that does not hold the lock
    ValueError, RuntimeError
    └── NotLockedError (_dummy._sync)     release() of a proctor.dummy Lock that is not locked
    TypeError, AttributeError
    └── NotALockError (_sharedctypes)     Value/Array(lock=...) without acquire/release
    threading.BrokenBarrierError
    └── BrokenBarrierError (_condition)   a Barrier was broken (a party died, timed out, abort);
                                          made at its first use, with threading
    RuntimeWarning
    └── OwnerDiedWarning                  a lock's holder died while holding it

A cancelled pool task raises ``concurrent.futures.CancelledError`` itself (see
``_pool._results``), as a cancelled ``Future`` does; it is not defined here because
``concurrent.futures`` imports ``logging``, which ``import proctor`` does not.

``RemoteTraceback`` is attached as ``__cause__`` of an exception that came back
from a child, so the parent's traceback shows where the child failed.
"""

from __future__ import annotations

import pickle

# The stdlib classes live in multiprocessing.context, which cannot be imported
# without the multiprocessing package (~1 ms more at "import proctor": it also
# imports multiprocessing.process and .reduction, whose other imports proctor
# has made already). Subclassing is the only way for ``except
# multiprocessing.TimeoutError:`` to catch proctor's errors: ``except`` matches
# by the real class hierarchy and ignores ABC registration.
from multiprocessing.context import AuthenticationError as _StdAuthenticationError
from multiprocessing.context import BufferTooShort as _StdBufferTooShort
from multiprocessing.context import ProcessError as _StdProcessError
from multiprocessing.context import TimeoutError as _StdTimeoutError

__all__ = (
    "ArgumentTypeError",
    "AuthenticationError",
    "BufferTooShort",
    "InitializerError",
    "MaybeEncodingError",
    "OwnerDiedWarning",
    "PicklingError",
    "PoolTerminatedError",
    "ProcessError",
    "ProcessTimeoutError",
    "ProtocolError",
    "QueueClosedError",
    "RemoteError",
    "RemoteTraceback",
    "ResultError",
    "StartError",
    "TaskTimeoutError",
    "UnpicklableError",
    "WorkerLostError",
)


class ProcessError(_StdProcessError):
    """Base class of proctor's errors about processes and their channels."""


class AuthenticationError(ProcessError, _StdAuthenticationError):
    """A peer failed the HMAC challenge: it does not hold the same authkey."""


class BufferTooShort(ProcessError, _StdBufferTooShort):
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


class PicklingError(pickle.PicklingError, TypeError):
    """An object, or a part of it, cannot be pickled to be sent to another process.

    Raised by ``Queue.put()``, ``Connection.send()`` and (as
    :class:`UnpicklableError`) by ``Process.start()``. The message names the part
    that failed and the path to it (``argument 0 -> closure variable 'lock' ->
    _thread.lock``); ``__cause__`` is the error pickling raised. Both a
    ``pickle.PicklingError`` and a ``TypeError``: plain pickle raises one or the
    other for such objects.

    Attributes:
        path: the steps from the object sent to the part that failed, ending with
            that part's type.
    """

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


class UnpicklableError(StartError, PicklingError):
    """``start()`` could not pickle the target or an argument for a spawn/forkserver child.

    Also a :class:`PicklingError` (so a ``TypeError``), naming the argument and
    the path to the part that failed.
    """


class QueueClosedError(ValueError, OSError):
    """A queue handle was used after ``close()`` was called on it in this process.

    A ``ValueError``, as ``multiprocessing`` raises from ``put()``/``get()`` on a
    closed queue, and an ``OSError``, as it raises (through its closed pipe) from
    ``empty()``, ``qsize()``... The message names the queue and the call. Other
    processes' handles of the same queue still work.
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
    """The target returned a value that could not be sent to the parent, or the
    child's outcome never reached the parent (it closed its channel to it).

    The child still exited normally (exit code 0): returning a value is not an
    error for ``multiprocessing`` code, which never looks at it.
    """


class MaybeEncodingError(ResultError):
    """A pool task ran, but its result could not be sent back to the parent.

    ``multiprocessing.pool.MaybeEncodingError``'s name and attributes, so code that
    imports it from ``proctor.pool`` keeps working; not a subclass of the stdlib's
    class (importing ``multiprocessing.pool`` would cost every ``import proctor``).

    Attributes:
        exc: why the result could not be sent (text, as the stdlib's ``repr``).
        value: which result it was (text: the function and its inputs).
        pickling_failed: True when the worker could not pickle the result; False
            when it came back but could not be unpickled in the parent.
    """

    def __init__(self, message: str, exc: str, value: str, pickling_failed: bool = True) -> None:
        super().__init__(message)
        self.exc = exc
        self.value = value
        self.pickling_failed = pickling_failed

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.args[0], self.exc, self.value, self.pickling_failed))


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type, where the stdlib raises ``ValueError`` for it.

    proctor raises ``TypeError`` for a wrong type; where ``multiprocessing`` raises
    ``ValueError`` instead (``Pool(maxtasksperchild=0.5)``), this is both, so
    ``except ValueError`` written for the stdlib still catches it.
    """


class ProcessTimeoutError(ProcessError, _StdTimeoutError, TimeoutError):
    """A blocking proctor call did not complete within its timeout.

    Also exported as ``proctor.TimeoutError``, the name ``multiprocessing`` uses.
    """


class WorkerLostError(ProcessError):
    """A pool worker died while it held a task; that task (its chunk) failed.

    The worker was replaced and the pool's other tasks went on.

    Attributes:
        pid: the worker's process id (``None`` if unknown).
        exitcode: its exit code, ``-N`` when signal N killed it (``None`` if unknown).
        function: the name of the task's function.
        inputs: which inputs the task held (``args=(...)``, or positions in the input).
    """

    def __init__(
        self, message: str, pid: int | None, exitcode: int | None, function: str, inputs: str
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.function = function
        self.inputs = inputs

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.args[0], self.pid, self.exitcode, self.function, self.inputs))


class PoolTerminatedError(ProcessError):
    """The pool was terminated (``terminate()``, or its ``with`` block ended) before
    this task completed. ``multiprocessing``'s pool leaves such a result waiting for ever."""


class TaskTimeoutError(ProcessTimeoutError):
    """A pool task ran longer than its timeout; its worker was killed and replaced.

    A ``proctor.TimeoutError``, so also a ``multiprocessing.TimeoutError`` and a
    builtin ``TimeoutError``. Unlike the ``TimeoutError`` that ``AsyncResult.get(timeout)``
    raises (the task goes on), this one means the task was stopped.

    Attributes:
        pid: the killed worker's process id.
        timeout: the seconds the task (its chunk) was given.
        function: the name of the task's function.
        inputs: which inputs the task held (``args=(...)``, or positions in the input).
    """

    def __init__(
        self, message: str, pid: int | None, timeout: float, function: str, inputs: str
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.timeout = timeout
        self.function = function
        self.inputs = inputs

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.args[0], self.pid, self.timeout, self.function, self.inputs))


class InitializerError(ProcessError):
    """A pool's initializer raised in a worker: the pool is broken.

    Every unfinished result of the pool, and every call made on it afterwards,
    fails with this error; its ``__cause__`` is the initializer's exception (whose
    own ``__cause__`` carries the worker's traceback). The pool can then only be
    terminated or joined.

    Attributes:
        initializer: the initializer's name.
        pid: the process id of the worker it failed in.
    """

    def __init__(self, message: str, initializer: str, pid: int | None) -> None:
        super().__init__(message)
        self.initializer = initializer
        self.pid = pid

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.args[0], self.initializer, self.pid))


class ManagerLostError(ProcessError, EOFError, ConnectionError):
    """A manager's proxy (or the manager) could not reach the manager's process.

    The message says which manager (address, pid) and how it ended, when that is
    known. Subclasses ``EOFError`` and ``ConnectionError``, which the stdlib's
    proxies raise in the same situation.
    """


class ManagerRefusedError(ManagerLostError, ConnectionRefusedError):
    """Nothing listens at a manager's address (``connect()`` to a manager that is not
    there): a ``ManagerLostError``, and the ``ConnectionRefusedError`` the stdlib raises."""


class RemoteTraceback(Exception):
    """Carries a child's formatted traceback; attached as ``__cause__``."""

    def __init__(self, tb_text: str) -> None:
        super().__init__(tb_text)
        self.tb_text = tb_text

    @property
    def tb(self) -> str:
        """The traceback's text, under the name ``multiprocessing.pool.RemoteTraceback`` uses."""
        return self.tb_text

    def __str__(self) -> str:
        return "\n\n" + '"""\n' + self.tb_text.rstrip("\n") + '\n"""'


class OwnerDiedWarning(RuntimeWarning):
    """A lock was recovered from a holder that died while holding it.

    The state that the lock protected may be half-updated. Turn this warning into
    an error with ``warnings.simplefilter("error", proctor.OwnerDiedWarning)``.
    """
