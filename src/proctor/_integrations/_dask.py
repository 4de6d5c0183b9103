"""``DaskEngine``: proctor's pools on a Dask cluster (``Pool(backend=client)``).

::

    RemoteDispatcher                  DaskEngine                      Dask
    ────────────────                  ──────────                      ────
    engine.submit(run_task, args) ─▶  client.map(_run_packed, ...) ─▶ scheduler ─▶ a worker
                                      (each call one pickled bytes object; its result too)
    engine.share(buffer)          ─▶  client.scatter(hash=False): the buffer is sent once;
                                      its Future, as an argument, is its value on the worker
    done queue ◀── add_done_callback ◀─ the future ends
    engine.outcomes(futures)      ─▶  client.gather(the finished ones): one round trip;
                                      KilledWorker: the worker was lost (WorkerLostError)
    engine.stop(future, end)      ─▶  cancel it; with end (a timeout), if a worker was
                                      running it, end that worker's process (its nanny
                                      starts another) and wait until the scheduler knows

Imported only when a pool is given a Dask ``backend=``; see docs/scale-out.md.
"""

from __future__ import annotations

import os
import pickle
import time

try:
    import distributed
    from distributed import Client, KilledWorker
except ImportError as exc:
    raise ImportError(
        f"Pool(backend=...) on Dask needs Dask's distributed package ({exc}); install it "
        "with: pip install 'proctor[dask]'"
    ) from exc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("DaskEngine", "engine")

#: Seconds a stopped task's worker may take to be noticed gone by the scheduler, and
#: how often to ask (its heartbeat notices a closed connection within milliseconds).
REMOVAL_TIMEOUT = 10.0
REMOVAL_POLL = 0.02
#: Seconds a failed task's error may take to come from the scheduler (a round trip).
EXCEPTION_TIMEOUT = 30.0
#: ``Client.status`` once the client is closed, by ``Client.close()`` or by its
#: cluster's ``close()``: nothing more can be fetched through it.
_CLOSED = frozenset(("closing", "closed"))


class DaskEngine:
    """The engine adapter of ``_pool._remote`` for a ``distributed.Client``."""

    name = "dask"
    #: outcomes() fetches values from the workers: a round trip through the scheduler
    #: and a request each worker serves between its tasks (see _remote.PARKED_MAX).
    fetch_together = True

    def __init__(self, client: Client, owned: bool) -> None:
        self.client = client
        self._owned = owned  # made from an address by proctor: closed with the pool

    def slots(self) -> int:
        return sum(self.client.nthreads().values()) or 1

    def share(self, buffer: Any) -> Any:
        return self.client.scatter(buffer, hash=False)

    def submit(
        self,
        func: Callable[..., Any],
        calls: list[tuple[tuple[Any, ...], tuple[Any, ...]]],
        done: list[Callable[[Any], None]],
    ) -> list[Any]:
        # Each call goes as one bytes object (and the shipped buffers' futures beside
        # it), and comes back as one: Dask walks every tuple and list of a task's
        # arguments looking for futures, and serializes and sizes a returned tuple item
        # by item, which cost more per tiny task than pickling them here in one piece.
        packed = [pickle.dumps((func, args), protocol=pickle.HIGHEST_PROTOCOL) for args, _ in calls]
        shipped = [shared for _, shared in calls]
        if len(calls) == 1:
            futures = [self.client.submit(_run_packed, packed[0], shipped[0], pure=False)]
        else:
            # One message to the scheduler for the lot, as client.map sends.
            futures = self.client.map(_run_packed, packed, shipped, pure=False)
        for future, callback in zip(futures, done, strict=True):
            future.add_done_callback(callback)
        return futures

    def succeeded(self, handle: Any) -> bool:
        return bool(handle.status == "finished")

    def outcomes(self, handles: list[Any]) -> list[tuple[bool, Any, str | None]]:
        if self.client.status in _CLOSED:
            # Its futures were cancelled with it; fetching would fail inside Dask
            # (AttributeError: 'NoneType' object has no attribute 'gather').
            raise RuntimeError(
                "the pool's Dask client was closed (Client.close(), or its cluster's "
                "close()) while the task was on the cluster, so its outcome cannot be "
                "fetched; close or shut down the pool before its client"
            )
        finished = [future for future in handles if self.succeeded(future)]
        values = dict(zip(map(id, finished), self.client.gather(finished), strict=True))
        found: list[tuple[bool, Any, str | None]] = []
        for future in handles:
            if id(future) in values:
                found.append((True, pickle.loads(values[id(future)]), None))
                continue
            if future.status not in ("error", "cancelled"):
                # It ended well, then the worker holding its value died before the value
                # was fetched: Dask would run it again to remake the value; proctor runs
                # a task once, so it is lost with its worker, as a running one is.
                future.cancel()
                lost = RuntimeError(
                    f"Dask task {future.key} ended, but the worker holding its value was "
                    "lost before the value was fetched"
                )
                found.append((False, lost, f"{lost}"))
                continue
            try:
                # Done, but the error itself is fetched from the scheduler.
                error = future.exception(timeout=EXCEPTION_TIMEOUT)
            except BaseException as exc:  # cancelled (CancelledError), or the fetch failed
                error = exc
            if isinstance(error, KilledWorker):
                found.append((False, error, f"Dask's KilledWorker: {error}"))
            else:
                found.append((False, error, None))
        for future in handles:
            future.release()  # the value is here now: the worker may let it go
        return found

    def stop(self, handle: Any, end_worker: bool) -> None:
        if not end_worker:
            handle.cancel()
            return
        key = handle.key

        def processing_on(dask_scheduler: Any, key: Any = key) -> str | None:
            state = dask_scheduler.tasks.get(key)
            worker = getattr(state, "processing_on", None)
            return None if worker is None else worker.address

        address = self.client.run_on_scheduler(processing_on)
        handle.cancel()
        if address is not None:
            # A Dask worker cannot interrupt a running task: end its process, as a local
            # pool kills a worker; the nanny starts a new one. (The cancelled key is no
            # longer the scheduler's, so no task is blamed for this worker's death.)
            try:
                self.client.run(os._exit, 1, workers=[address])
            except Exception:
                pass  # the worker went away before its reply: what was wanted
            # Until the scheduler notices the death, it may hand that worker new tasks,
            # which would then be lost with it (KilledWorker): wait for the notice, so
            # that what the caller submits after the TaskTimeoutError is not.
            deadline = time.monotonic() + REMOVAL_TIMEOUT
            while time.monotonic() < deadline and self.client.run_on_scheduler(
                _knows_worker, address=address
            ):
                time.sleep(REMOVAL_POLL)

    def close(self) -> None:
        if self._owned:
            self.client.close()


def _run_packed(packed: bytes, shipped: tuple[Any, ...]) -> bytes:
    """On a Dask worker: ``func(*args, *shipped)`` for ``packed`` = pickled (func, args),
    where Dask has replaced each shipped future by its value; the result pickled."""
    func, args = pickle.loads(packed)
    return pickle.dumps(func(*args, *shipped), protocol=pickle.HIGHEST_PROTOCOL)


def _knows_worker(dask_scheduler: Any, address: str) -> bool:
    return address in dask_scheduler.workers


def engine(backend: Any) -> DaskEngine:
    """A ``DaskEngine`` for a ``Client``, a cluster object, a scheduler address, or
    ``"dask"`` (this process's current client, ``distributed.get_client()``).

    Raises:
        TypeError: ``backend`` is a Dask object of another kind.
        ValueError: ``"dask"`` with no client in this process.
    """
    if isinstance(backend, Client):
        return DaskEngine(backend, owned=False)
    if isinstance(backend, distributed.deploy.Cluster):
        return DaskEngine(Client(backend, set_as_default=False), owned=True)
    if backend == "dask":
        try:
            return DaskEngine(distributed.get_client(), owned=False)
        except ValueError as exc:
            raise ValueError(
                "backend='dask' uses this process's Dask client, and there is none: make "
                "one first (distributed.Client(...)) or pass a scheduler address"
            ) from exc
    if isinstance(backend, str):
        return DaskEngine(Client(backend, set_as_default=False), owned=True)
    raise TypeError(
        f"backend: a Dask {type(backend).__name__} is not a Client, a cluster or a "
        "scheduler address"
    )
