"""Process-shared queues: the counterpart of ``multiprocessing.queues``.

::

    from proctor.queues import JoinableQueue, Queue, SimpleQueue

``Empty`` and ``Full`` are the :mod:`queue` module's exceptions, as in the stdlib.
"""

from ._queues._queue import Empty as Empty
from ._queues._queue import Full as Full
from ._queues._queue import JoinableQueue as JoinableQueue
from ._queues._queue import Queue as Queue
from ._queues._queue import SimpleQueue as SimpleQueue

__all__ = ("JoinableQueue", "Queue", "SimpleQueue")
