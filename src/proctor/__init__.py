"""proctor: process-based parallelism built from OS primitives.

The ``multiprocessing`` API -- ``Process``, ``Pipe``, ``Queue``, ``Lock``,
``log_to_stderr`` -- implemented from ``os``, sockets and shared memory, so that
every wait notices a dead peer, nothing sent is lost, any callable reaches a
child, and children never outlive their parent. Change the import, keep the code::

    from proctor import Process

    def greet(name):
        print("hello", name)

    if __name__ == "__main__":
        p = Process(target=greet, args=("world",))
        p.start()
        p.join()
"""

from ._core._system import cpu_count as cpu_count
from ._logging._logger import SUBDEBUG as SUBDEBUG
from ._logging._logger import SUBWARNING as SUBWARNING
from ._logging._logger import get_logger as get_logger
from ._logging._logger import log_to_stderr as log_to_stderr
from ._start._process import Process as Process
from ._start._process import active_children as active_children
from ._start._process import current_process as current_process
from ._start._process import parent_process as parent_process

# The names below load on first use (PEP 562), and their modules with them: a
# spawned child imports the package before anything else, and these modules
# (errors, contexts, log forwarding, connections, queues, locks, shared memory)
# would add tens of milliseconds to every child's start. They are still listed one
# by one, for readers and type checkers alike.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import connection as connection
    from . import context as context
    from . import dummy as dummy
    from . import managers as managers
    from . import pool as pool
    from . import process as process
    from . import queues as queues
    from . import resource_tracker as resource_tracker
    from . import shared_memory as shared_memory
    from . import sharedctypes as sharedctypes
    from . import synchronize as synchronize
    from . import util as util
    from ._connections._connection import Connection as Connection
    from ._connections._pipe import Pipe as Pipe
    from ._context import BaseContext as BaseContext
    from ._context import Manager as Manager
    from ._context import allow_connection_pickling as allow_connection_pickling
    from ._context import freeze_support as freeze_support
    from ._context import get_all_start_methods as get_all_start_methods
    from ._context import get_context as get_context
    from ._context import get_start_method as get_start_method
    from ._context import set_executable as set_executable
    from ._context import set_forkserver_preload as set_forkserver_preload
    from ._context import set_start_method as set_start_method
    from ._core._errors import AuthenticationError as AuthenticationError
    from ._core._errors import BufferTooShort as BufferTooShort
    from ._core._errors import InitializerError as InitializerError
    from ._core._errors import ManagerLostError as ManagerLostError
    from ._core._errors import OwnerDiedWarning as OwnerDiedWarning
    from ._core._errors import PicklingError as PicklingError
    from ._core._errors import PoolTerminatedError as PoolTerminatedError
    from ._core._errors import ProcessError as ProcessError
    from ._core._errors import ProcessTimeoutError as ProcessTimeoutError
    from ._core._errors import ProcessTimeoutError as TimeoutError
    from ._core._errors import ProtocolError as ProtocolError
    from ._core._errors import QueueClosedError as QueueClosedError
    from ._core._errors import RemoteError as RemoteError
    from ._core._errors import RemoteTraceback as RemoteTraceback
    from ._core._errors import ResultError as ResultError
    from ._core._errors import StartError as StartError
    from ._core._errors import TaskTimeoutError as TaskTimeoutError
    from ._core._errors import UnpicklableError as UnpicklableError
    from ._core._errors import WorkerLostError as WorkerLostError
    from ._logging._policy import set_log_forwarding as set_log_forwarding
    from ._pool._executor import ProcessPoolExecutor as ProcessPoolExecutor
    from ._pool._pool import Pool as Pool
    from ._queues._queue import JoinableQueue as JoinableQueue
    from ._queues._queue import Queue as Queue
    from ._queues._queue import SimpleQueue as SimpleQueue
    from ._sharedmem._sharedctypes import Array as Array
    from ._sharedmem._sharedctypes import RawArray as RawArray
    from ._sharedmem._sharedctypes import RawValue as RawValue
    from ._sharedmem._sharedctypes import Value as Value
    from ._sync import Barrier as Barrier
    from ._sync import BoundedSemaphore as BoundedSemaphore
    from ._sync import BrokenBarrierError as BrokenBarrierError
    from ._sync import Condition as Condition
    from ._sync import Event as Event
    from ._sync import Lock as Lock
    from ._sync import LockNotOwnedError as LockNotOwnedError
    from ._sync import RLock as RLock
    from ._sync import Semaphore as Semaphore

_LAZY: dict[str, tuple[str, str | None]] = {
    # The errors: their module imports multiprocessing (their base classes), which a
    # spawned child that raises none of them need not load (~40 M instructions with
    # the pickle, socket and signal modules it brings).
    "AuthenticationError": ("_core._errors", "AuthenticationError"),
    "BufferTooShort": ("_core._errors", "BufferTooShort"),
    "InitializerError": ("_core._errors", "InitializerError"),
    "ManagerLostError": ("_core._errors", "ManagerLostError"),
    "OwnerDiedWarning": ("_core._errors", "OwnerDiedWarning"),
    "PicklingError": ("_core._errors", "PicklingError"),
    "PoolTerminatedError": ("_core._errors", "PoolTerminatedError"),
    "ProcessError": ("_core._errors", "ProcessError"),
    "ProcessTimeoutError": ("_core._errors", "ProcessTimeoutError"),
    "TimeoutError": ("_core._errors", "ProcessTimeoutError"),
    "ProtocolError": ("_core._errors", "ProtocolError"),
    "QueueClosedError": ("_core._errors", "QueueClosedError"),
    "RemoteError": ("_core._errors", "RemoteError"),
    "RemoteTraceback": ("_core._errors", "RemoteTraceback"),
    "ResultError": ("_core._errors", "ResultError"),
    "StartError": ("_core._errors", "StartError"),
    "TaskTimeoutError": ("_core._errors", "TaskTimeoutError"),
    "UnpicklableError": ("_core._errors", "UnpicklableError"),
    "WorkerLostError": ("_core._errors", "WorkerLostError"),
    "Array": ("_sharedmem._sharedctypes", "Array"),
    "Barrier": ("_sync", "Barrier"),
    "BoundedSemaphore": ("_sync", "BoundedSemaphore"),
    "BrokenBarrierError": ("_sync", "BrokenBarrierError"),
    "Condition": ("_sync", "Condition"),
    "Connection": ("_connections._connection", "Connection"),
    "Event": ("_sync", "Event"),
    "JoinableQueue": ("_queues._queue", "JoinableQueue"),
    "Lock": ("_sync", "Lock"),
    "LockNotOwnedError": ("_sync", "LockNotOwnedError"),
    "Manager": ("_context", "Manager"),
    "Pipe": ("_connections._pipe", "Pipe"),
    "Pool": ("_pool._pool", "Pool"),
    "ProcessPoolExecutor": ("_pool._executor", "ProcessPoolExecutor"),
    "Queue": ("_queues._queue", "Queue"),
    "RLock": ("_sync", "RLock"),
    "RawArray": ("_sharedmem._sharedctypes", "RawArray"),
    "RawValue": ("_sharedmem._sharedctypes", "RawValue"),
    "Semaphore": ("_sync", "Semaphore"),
    "SimpleQueue": ("_queues._queue", "SimpleQueue"),
    "Value": ("_sharedmem._sharedctypes", "Value"),
    # Contexts and log forwarding: a spawned child needs neither to run its target.
    "BaseContext": ("_context", "BaseContext"),
    "allow_connection_pickling": ("_context", "allow_connection_pickling"),
    "freeze_support": ("_context", "freeze_support"),
    "get_all_start_methods": ("_context", "get_all_start_methods"),
    "get_context": ("_context", "get_context"),
    "get_start_method": ("_context", "get_start_method"),
    "set_executable": ("_context", "set_executable"),
    "set_forkserver_preload": ("_context", "set_forkserver_preload"),
    "set_start_method": ("_context", "set_start_method"),
    "set_log_forwarding": ("_logging._policy", "set_log_forwarding"),
    # The stdlib-named public modules, as attributes (``proctor.util``...).
    "connection": ("connection", None),
    "context": ("context", None),
    "dummy": ("dummy", None),
    "managers": ("managers", None),
    "pool": ("pool", None),
    "process": ("process", None),
    # multiprocessing.reducer: the default context's reducer, the reduction module.
    "reducer": ("_connections._reducer", None),
    "queues": ("queues", None),
    "reduction": ("reduction", None),
    "resource_tracker": ("resource_tracker", None),
    "shared_memory": ("shared_memory", None),
    "sharedctypes": ("sharedctypes", None),
    "synchronize": ("synchronize", None),
    "util": ("util", None),
}


def __getattr__(name: str) -> object:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'proctor' has no attribute {name!r}") from None
    import importlib

    module = importlib.import_module(f"{__name__}.{module_name.lstrip('.')}")
    if module_name.startswith("_pool"):
        # The pools' backend= (Dask, Ray) is resolved by the integration layer, which
        # _pool cannot import: this registers it (it imports no engine).
        from ._integrations import _backends  # noqa: F401
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = (
    "SUBDEBUG",
    "SUBWARNING",
    "Array",
    "AuthenticationError",
    "Barrier",
    "BaseContext",
    "BoundedSemaphore",
    "BrokenBarrierError",
    "BufferTooShort",
    "Condition",
    "Connection",
    "Event",
    "InitializerError",
    "JoinableQueue",
    "Lock",
    "LockNotOwnedError",
    "Manager",
    "ManagerLostError",
    "OwnerDiedWarning",
    "PicklingError",
    "Pipe",
    "Pool",
    "PoolTerminatedError",
    "Process",
    "ProcessError",
    "ProcessPoolExecutor",
    "ProcessTimeoutError",
    "ProtocolError",
    "Queue",
    "QueueClosedError",
    "RLock",
    "RawArray",
    "RawValue",
    "RemoteError",
    "RemoteTraceback",
    "ResultError",
    "Semaphore",
    "SimpleQueue",
    "StartError",
    "TaskTimeoutError",
    "TimeoutError",
    "UnpicklableError",
    "Value",
    "WorkerLostError",
    "__version__",
    "active_children",
    "allow_connection_pickling",
    "connection",
    "cpu_count",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "managers",
    "parent_process",
    "reducer",
    "set_executable",
    "set_forkserver_preload",
    "set_log_forwarding",
    "set_start_method",
    "shared_memory",
)
