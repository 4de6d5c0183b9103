"""Process-shared queues: the counterpart of ``multiprocessing.queues``.

::

    from proctor.queues import JoinableQueue, Queue, SimpleQueue

``Empty`` and ``Full`` are the :mod:`queue` module's exceptions, as in the stdlib.
"""

from ._queue import Empty as Empty
from ._queue import Full as Full
from ._queue import JoinableQueue as JoinableQueue
from ._queue import Queue as Queue
from ._queue import SimpleQueue as SimpleQueue

__all__ = ("JoinableQueue", "Queue", "SimpleQueue")
