"""The ``multiprocessing`` API on threads: the counterpart of ``multiprocessing.dummy``.

::

    from proctor.dummy import Pool, Process, Queue

Change the import of a program written for ``multiprocessing`` (or
``multiprocessing.dummy``) and its "processes" are threads of this process:
``Process`` is a thread, ``Pool`` a ``ThreadPool``, ``Queue``, ``Lock``... are
``threading``'s and ``queue``'s with ``multiprocessing``'s signatures, and nothing
is pickled. ``proctor.dummy.connection`` has ``Pipe``, ``Listener`` and ``Client``
between threads. Every blocking call takes a timeout, and a closed connection's
``recv()`` raises ``EOFError`` instead of waiting for ever; see docs/dummy.md.
"""

import builtins as _builtins

from .._core._system import cpu_count as cpu_count
from .._dummy._manager import DummyManager as DummyManager
from .._dummy._manager import Manager as Manager
from .._dummy._manager import Pool as Pool
from .._dummy._manager import shutdown as shutdown
from .._dummy._process import DummyProcess as DummyProcess
from .._dummy._process import DummyProcess as Process
from .._dummy._process import active_children as active_children
from .._dummy._process import current_process as current_process
from .._dummy._process import freeze_support as freeze_support
from .._dummy._queue import JoinableQueue as JoinableQueue
from .._dummy._queue import Queue as Queue
from .._dummy._sync import Barrier as Barrier
from .._dummy._sync import BoundedSemaphore as BoundedSemaphore
from .._dummy._sync import Condition as Condition
from .._dummy._sync import Event as Event
from .._dummy._sync import Lock as Lock
from .._dummy._sync import NotLockedError as NotLockedError
from .._dummy._sync import RLock as RLock
from .._dummy._sync import Semaphore as Semaphore
from .._dummy._values import Array as Array
from .._dummy._values import Namespace as Namespace
from .._dummy._values import Value as Value
from .._pool._threads import ThreadPool as ThreadPool
from . import connection as connection
from .connection import Pipe as Pipe

#: What a ``Manager()``'s ``list()`` and ``dict()`` make (``multiprocessing.dummy``'s names).
list = _builtins.list
dict = _builtins.dict

__all__ = (
    "Array",
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "DummyManager",
    "DummyProcess",
    "Event",
    "JoinableQueue",
    "Lock",
    "Manager",
    "Namespace",
    "NotLockedError",
    "Pipe",
    "Pool",
    "Process",
    "Queue",
    "RLock",
    "Semaphore",
    "ThreadPool",
    "Value",
    "active_children",
    "connection",
    "cpu_count",
    "current_process",
    "freeze_support",
    "shutdown",
)
