"""The resource reaper's client: the counterpart of ``multiprocessing.resource_tracker``.

proctor's reaper unlinks a named OS object (a ``SharedMemory`` segment, a named
semaphore) once no live process uses it. ``register(name, kind)`` tells it that this
process uses ``name``; ``unregister(name, kind)`` that it no longer does.

Note:
    proctor's kinds are ``"shm"`` and ``"semaphore"`` (the stdlib's are
    ``"shared_memory"`` and ``"semaphore"``), and unregistering does not leave a
    segment behind: the reaper unlinks it once no registered or mapping process lives.
"""

from ._reaper._client import ensure_started as ensure_running
from ._reaper._client import register as register
from ._reaper._client import unregister as unregister

__all__ = ("ensure_running", "register", "unregister")
