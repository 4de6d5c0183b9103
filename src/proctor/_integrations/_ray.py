"""``RayEngine``: proctor's pools on a Ray cluster (``Pool(backend="ray")``).

::

    RemoteDispatcher                  RayEngine                       Ray
    ────────────────                  ─────────                       ───
    engine.submit(run_task, args) ─▶  run_task.remote(*args)      ─▶  raylet ─▶ a worker
                                        (max_retries=0: a task whose worker dies fails)
    engine.share(buffer)          ─▶  ray.put: the object store holds it once; its
                                      ObjectRef, as an argument, is its value on the worker
    done queue ◀── ref.future() callback ◀── the task ends (the future holds its value)
    engine.outcomes(handles)      ─▶  the futures' values; WorkerCrashedError and its
                                      kin: the worker was lost (WorkerLostError)
    engine.stop(ref)              ─▶  ray.cancel(force=True): its worker process ends
                                      (terminate(): force=False, an interrupt)

Imported only when a pool is given a Ray ``backend=``; see docs/scale-out.md.
"""

from __future__ import annotations

import threading

try:
    import ray
    import ray.exceptions as ray_errors
except ImportError as exc:
    raise ImportError(
        f"Pool(backend=...) on Ray needs ray ({exc}); install it with: pip install 'proctor[ray]'"
    ) from exc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("RayEngine", "engine")

#: Ray's errors that mean the process (or node) running a task went away.
_LOST = tuple(
    getattr(ray_errors, name)
    for name in (
        "WorkerCrashedError",
        "NodeDiedError",
        "LocalRayletDiedError",
        "OutOfMemoryError",
        "ObjectLostError",
    )
    if hasattr(ray_errors, name)
)

_remote_functions: dict[Any, Any] = {}
_remote_lock = threading.Lock()


def _remote(func: Callable[..., Any]) -> Any:
    """``func`` as a Ray remote function, made once: one CPU, never retried (a task
    whose worker dies fails with WorkerLostError instead of running again)."""
    with _remote_lock:
        remote = _remote_functions.get(func)
        if remote is None:
            remote = _remote_functions[func] = ray.remote(num_cpus=1, max_retries=0)(func)
        return remote


class RayEngine:
    """The engine adapter of ``_pool._remote`` for the Ray runtime of this process."""

    name = "ray"

    def slots(self) -> int:
        return int(ray.cluster_resources().get("CPU", 1)) or 1

    def share(self, buffer: Any) -> Any:
        return ray.put(buffer)

    def submit(
        self,
        func: Callable[..., Any],
        calls: list[tuple[Any, ...]],
        done: list[Callable[[Any], None]],
    ) -> list[Any]:
        remote = _remote(func)
        handles = []
        for args, callback in zip(calls, done, strict=True):
            ref = remote.remote(*args)
            # The ref's future holds the value once done: no second fetch (ray.get).
            handle = (ref, ref.future())
            handle[1].add_done_callback(lambda _, h=handle, c=callback: c(h))
            handles.append(handle)
        return handles

    def outcomes(self, handles: list[Any]) -> list[tuple[bool, Any, str | None]]:
        found: list[tuple[bool, Any, str | None]] = []
        for _, future in handles:
            error = future.exception(timeout=0)
            if error is None:
                found.append((True, future.result(timeout=0), None))
            elif isinstance(error, _LOST):
                found.append((False, error, f"{type(error).__name__}: {error}"))
            else:
                found.append((False, error, None))
        return found

    def stop(self, handle: Any, end_worker: bool) -> None:
        # force=True ends the worker process running the task (Ray starts another);
        # without it, a running task gets a KeyboardInterrupt, which it may ignore.
        ray.cancel(handle[0], force=end_worker)

    def close(self) -> None:
        pass  # the runtime is the program's: it outlives the pool


def engine(backend: Any) -> RayEngine:
    """A ``RayEngine`` for ``"ray"`` or the ``ray`` module (the runtime of this process,
    started with ``ray.init()`` if there is none) or a ``"ray://..."`` address.

    Raises:
        TypeError: a Ray object proctor does not take.
        RuntimeError: another Ray runtime is running already, at another address.
    """
    if backend is ray or backend == "ray":
        if not ray.is_initialized():
            ray.init()
        return RayEngine()
    if isinstance(backend, str):
        if ray.is_initialized():
            raise RuntimeError(
                f"backend={backend!r}: this process is connected to a Ray runtime "
                "already; pass backend='ray' to use it, or ray.shutdown() first"
            )
        ray.init(address=backend)
        return RayEngine()
    raise TypeError(
        f"backend: a Ray {type(backend).__name__} is not a runtime; pass 'ray' (the one "
        "this process runs) or an address 'ray://head:10001'"
    )
