"""Synchronisation primitives: the counterpart of ``multiprocessing.synchronize``.

::

    from proctor.synchronize import Barrier, Condition, Event, Lock, RLock, Semaphore

Each survives a dead process: a lock whose holder died is taken over with
``proctor.OwnerDiedWarning``, and a barrier breaks when a waiting party dies
(see docs/sync.md).
"""

from ._reaper._semlock import SEM_VALUE_MAX as SEM_VALUE_MAX
from ._sync import Barrier as Barrier
from ._sync import BoundedSemaphore as BoundedSemaphore
from ._sync import Condition as Condition
from ._sync import Event as Event
from ._sync import Lock as Lock
from ._sync import RLock as RLock
from ._sync import Semaphore as Semaphore

__all__ = ("BoundedSemaphore", "Condition", "Event", "Lock", "RLock", "Semaphore")
