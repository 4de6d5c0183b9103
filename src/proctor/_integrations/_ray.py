"""``RayEngine``: proctor's pools on a Ray cluster (``Pool(backend="ray")``).

::

    RemoteDispatcher                  RayEngine                       Ray
    ────────────────                  ─────────                       ───
    engine.submit(run_task, args) ─▶  the actor with the fewest   ─▶  that actor's process
                                        calls in flight:               runs its calls one at
                                        actor.run.remote(...)          a time, in order
    engine.share(buffer)          ─▶  ray.put: the object store holds it once; its
                                      ObjectRef, as an argument, is its value on the worker
    done queue ◀── ref.future() callback ◀── the call ends (the future holds its value)
    engine.outcomes(handles)      ─▶  the futures' values; an actor that died: its
                                      first unfinished call was lost (WorkerLostError)
    engine.stop(call)             ─▶  the running call: ray.kill(its actor), replaced;
                                      a call still queued: ray.cancel

The pool's workers are ``slots()`` actors (one per CPU of the cluster), as in Ray's own
``ray.util.multiprocessing.Pool``: a call to an actor goes straight to its process,
where a task (``f.remote``) is scheduled by a raylet and leases a worker, which costs
more per call than the work of a tiny task. The actors use Ray's default resources (a
CPU to be placed, none while they live), so a pool does not starve other Ray work, nor
another pool, of CPUs.

An actor runs its calls in the order they were made. When its process dies, its calls
that had not ended all fail: the first of them was running and is lost (as a local
pool's task whose worker died); the others had not started and are made again on the
other actors, with a replacement actor started at once. So a dead worker fails only its
own task, here too.

Imported only when a pool is given a Ray ``backend=``; see docs/scale-out.md.
"""

from __future__ import annotations

import collections
import pickle
import threading
import weakref

try:
    import ray
    import ray.exceptions as ray_errors
except ImportError as exc:
    raise ImportError(
        f"Pool(backend=...) on Ray needs ray ({exc}); install it with: pip install 'proctor[ray]'"
    ) from exc

TYPE_CHECKING = False
if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable
    from typing import Any

__all__ = ("RayEngine", "engine")


def _errors(*names: str) -> tuple[type[BaseException], ...]:
    return tuple(getattr(ray_errors, name) for name in names if hasattr(ray_errors, name))


#: Ray's errors that mean the process (or node) running a call went away.
_LOST = _errors(
    "WorkerCrashedError",
    "NodeDiedError",
    "LocalRayletDiedError",
    "OutOfMemoryError",
    "ObjectLostError",
)
#: An actor's calls fail with these once its process is gone (ActorDiedError is a
#: RayActorError; ActorUnavailableError: unreachable, so treated as gone and killed).
_ACTOR_GONE = _errors("RayActorError", "ActorUnavailableError")


class _Runner:
    """The process of one pool worker: runs the pool's calls one at a time, in order."""

    def run(self, packed: bytes, *refs: Any) -> bytes:
        """``func(*args, *refs)`` for ``packed`` = pickled (func, args), its value
        pickled: Ray passes a bytes argument and return value as they are, where it
        serializes a tuple through msgpack and then pickle (25 and 11 µs for a tiny
        task's call and result, against 1 µs as bytes: measured with Ray's own
        serialization context). The shared buffers' ObjectRefs stay arguments of their
        own, which Ray resolves to their values only there."""
        func, args = pickle.loads(packed)
        return pickle.dumps(func(*args, *refs), protocol=pickle.HIGHEST_PROTOCOL)


#: One CPU to be placed, none held while alive (Ray's default for actors); never
#: restarted, nor its calls retried: a call whose actor dies is handled here.
_RemoteRunner = ray.remote(max_restarts=0, max_task_retries=0)(_Runner)


class _Actor:
    __slots__ = ("calls", "handle")

    def __init__(self) -> None:
        self.handle: Any = _RemoteRunner.remote()  # an ActorHandle (typed loosely by ray)
        self.calls: collections.deque[_Call] = collections.deque()  # made, not ended


class _Call:
    """A handle of ``RayEngine.submit``: one call, made again if its actor dies
    before starting it."""

    __slots__ = ("__weakref__", "actor", "done", "future", "lost", "packed", "ref", "shared")

    def __init__(self, packed: bytes, shared: tuple[Any, ...], done: Any) -> None:
        self.packed = packed  # pickled (func, args): see _Runner.run
        self.shared = shared  # ObjectRefs of buffers put in the object store once
        self.done = done
        self.actor: _Actor | None = None
        self.ref: Any = None
        self.future: concurrent.futures.Future[Any] | None = None
        self.lost = False  # its actor died while running it


class RayEngine:
    """The engine adapter of ``_pool._remote`` for the Ray runtime of this process."""

    name = "ray"
    #: A call's value comes with its end (its future holds it): nothing to fetch.
    fetch_together = False

    def __init__(self) -> None:
        # Reentrant: a future that is already done runs its callback at once, in
        # the thread that adds it, which may hold the lock.
        self._lock = threading.RLock()
        self._actors: list[_Actor] = []  # the live ones: a dead one leaves at once
        self._slots: int | None = None
        self._closed = False

    def start(self) -> None:
        """Start the pool's actors now, as the pool is made (a local pool starts its
        workers then too, and so does Ray's own pool): an actor's process takes about
        a second to start, which the pool's first map would otherwise wait for. The
        calls return at once; the actors start while the caller goes on."""
        with self._lock:
            if not self._actors and not self._closed:
                self._actors = [_Actor() for _ in range(self.slots())]

    def slots(self) -> int:
        if self._slots is None:  # a round trip to the cluster: once
            self._slots = int(ray.cluster_resources().get("CPU", 1)) or 1
        return self._slots

    def share(self, buffer: Any) -> Any:
        return ray.put(buffer)

    def submit(
        self,
        func: Callable[..., Any],
        calls: list[tuple[tuple[Any, ...], tuple[Any, ...]]],
        done: list[Callable[[Any], None]],
    ) -> list[Any]:
        dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
        handles = [
            _Call(dumps((func, args), protocol), shared, callback)
            for (args, shared), callback in zip(calls, done, strict=True)
        ]
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool's Ray actors were released (the pool ended)")
            if not self._actors:  # (start() made them; a replacement as one dies)
                self._actors = [_Actor() for _ in range(self.slots())]
            for call in handles:
                self._make(call)
        return handles

    def _make(self, call: _Call) -> None:
        """Make ``call`` on the live actor with the fewest calls in flight (lock held)."""
        actor = min(self._actors, key=lambda a: len(a.calls))
        actor.calls.append(call)
        call.actor = actor
        call.ref = actor.handle.run.remote(call.packed, *call.shared)
        future = call.future = call.ref.future()
        # A weak reference: the future keeps its callbacks, and a callback holding the
        # call (which holds the future) would make a cycle of every call, its future
        # and ObjectRef, freed only by the cyclic collector, later and at once (about
        # 27 objects a call; a collection after 1,000 calls took 55-70 ms). The call
        # lives until it settles: its actor's ``calls`` hold it (and the dispatcher).
        held = weakref.ref(call)
        future.add_done_callback(lambda f: self._settled(held(), f))

    def _settled(self, call: _Call | None, future: concurrent.futures.Future[Any]) -> None:
        """A call's future is done (any thread): report it, or if its actor died, wait
        until all that actor's calls are settled and sort them (``_actor_died``)."""
        finished: list[_Call] = []
        with self._lock:
            if call is None or call.future is not future:
                return  # an earlier attempt's, made again on another actor (or let go)
            actor = call.actor
            assert actor is not None
            if isinstance(future.exception(), _ACTOR_GONE) and not self._closed:
                if actor in self._actors:  # the first of its calls to report the death
                    self._actors.remove(actor)
                    self._actors.append(_Actor())  # the replacement, at once
                if all(c.future is not None and c.future.done() for c in actor.calls):
                    finished = self._actor_died(actor)
            else:
                if call in actor.calls:  # (not if its actor died and was sorted out)
                    actor.calls.remove(call)  # near the front: calls end in order
                finished = [call]
        for ended in finished:
            ended.done(ended)

    def _actor_died(self, actor: _Actor) -> list[_Call]:
        """Every call of a dead actor has settled: the first that failed was running
        and is lost; those after it had not started and are made again (lock held).
        Returns the lost call, to report; those that ended before the death report
        themselves (their callbacks may come later)."""
        failed = [c for c in actor.calls if isinstance(c.future.exception(), _ACTOR_GONE)]  # type: ignore[union-attr]
        actor.calls.clear()
        if not failed:
            return []
        failed[0].lost = True
        for call in failed[1:]:
            self._make(call)
        return failed[:1]

    def succeeded(self, handle: Any) -> bool:
        future = handle.future
        return future is not None and future.done() and future.exception(timeout=0) is None

    def outcomes(self, handles: list[Any]) -> list[tuple[bool, Any, str | None]]:
        found: list[tuple[bool, Any, str | None]] = []
        for call in handles:
            error = call.future.exception(timeout=0)
            if error is None:
                found.append((True, pickle.loads(call.future.result(timeout=0)), None))
            elif call.lost or isinstance(error, _LOST + _ACTOR_GONE):
                found.append((False, error, f"{type(error).__name__}: {error}"))
            else:
                found.append((False, error, None))
        return found

    def stop(self, handle: Any, end_worker: bool) -> None:
        call: _Call = handle
        with self._lock:
            actor = call.actor
            # The call running there is the first whose future is not done (one that
            # ended may still wait for its callback at the front).
            calls = actor.calls if actor in self._actors else ()
            unfinished = [c for c in calls if c.future is not None and not c.future.done()]
            running = bool(unfinished) and unfinished[0] is call
        if end_worker and running:
            # Ray cannot interrupt a running actor call: its process is ended, and the
            # calls queued behind it are made again on the others (see _actor_died).
            ray.kill(actor.handle, no_restart=True)  # type: ignore[union-attr]
        else:
            ray.cancel(call.ref)  # a queued call is dropped; a running one ends as it will

    def close(self) -> None:
        with self._lock:
            self._closed = True
            actors, self._actors = self._actors, []
        for actor in actors:
            ray.kill(actor.handle, no_restart=True)


def _started(adapter: RayEngine) -> RayEngine:
    adapter.start()
    return adapter


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
        return _started(RayEngine())
    if isinstance(backend, str):
        if ray.is_initialized():
            raise RuntimeError(
                f"backend={backend!r}: this process is connected to a Ray runtime "
                "already; pass backend='ray' to use it, or ray.shutdown() first"
            )
        ray.init(address=backend)
        return _started(RayEngine())
    raise TypeError(
        f"backend: a Ray {type(backend).__name__} is not a runtime; pass 'ray' (the one "
        "this process runs) or an address 'ray://head:10001'"
    )
