"""The resource reaper's client: the counterpart of ``multiprocessing.resource_tracker``.

proctor's reaper unlinks a named OS object (a ``SharedMemory`` segment, a named
semaphore) once no live process uses it (a ``SharedMemory`` segment's creator uses
it until it calls ``unlink()`` or exits). ``register(name, rtype)`` tells it that this
process uses ``name``; ``unregister(name, rtype)`` that it must not unlink ``name``
at all any more. ``rtype`` is ``"shared_memory"`` or ``"semaphore"``, as in the stdlib
(proctor's own spelling ``"shm"`` works too); ``name`` may have its leading ``/``
(``shm._name``) or not (``shm.name``).

Note:
    proctor's ``SharedMemory`` needs neither call: it registers every process that
    maps it, so the stdlib's workaround -- ``unregister(shm._name, "shared_memory")``
    after attaching, lest the attaching process unlink the segment when it exits --
    is not needed. It still works as with the stdlib: the segment then stays until
    someone calls ``unlink()``. (On Linux, the next proctor program to start a
    reaper may still reclaim a segment with a name proctor made, once its creator
    has exited and no process maps it; give it a name of your own to keep it.)
"""

from ._reaper._client import tracker_ensure_running as ensure_running
from ._reaper._client import tracker_register as register
from ._reaper._client import tracker_unregister as unregister

__all__ = ("ensure_running", "register", "unregister")
