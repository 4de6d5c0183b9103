"""Pools of worker processes: the counterpart of ``multiprocessing.pool``.

::

    from proctor.pool import Pool

A worker that dies mid-task fails only that task (``proctor.WorkerLostError``) and is
replaced; a task that runs past its ``timeout=``/``task_timeout=`` is killed with its
worker (``proctor.TaskTimeoutError``); see docs/pool.md. ``ThreadPool`` has the same API,
with threads of this process for workers.
"""

from ._core._errors import InitializerError as InitializerError
from ._core._errors import MaybeEncodingError as MaybeEncodingError
from ._core._errors import RemoteTraceback as RemoteTraceback
from ._core._errors import TaskTimeoutError as TaskTimeoutError
from ._core._errors import WorkerLostError as WorkerLostError
from ._pool._pool import Pool as Pool
from ._pool._results import ApplyResult as ApplyResult
from ._pool._results import AsyncResult as AsyncResult
from ._pool._results import IMapIterator as IMapIterator
from ._pool._results import IMapUnorderedIterator as IMapUnorderedIterator
from ._pool._results import MapResult as MapResult
from ._pool._threads import ThreadPool as ThreadPool

# Pool(backend=...) finds its Dask or Ray adapter through the resolver this registers.
from ._integrations import _backends  # noqa: F401  # isort: skip

__all__ = (
    "InitializerError",
    "MaybeEncodingError",
    "Pool",
    "RemoteTraceback",
    "TaskTimeoutError",
    "ThreadPool",
    "WorkerLostError",
)
