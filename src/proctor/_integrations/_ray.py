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
import itertools
import pickle
import threading
import weakref

from .._logging import _logger

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


#: Calls of each actor the waiter waits on at once (its first ones: an actor's calls end
#: in order); those that are ready together are reported together.
WATCHED_PER_ACTOR = 8
#: Seconds the waiter blocks in ``ray.wait`` before it looks again (new calls on an idle
#: actor report themselves meanwhile; see RayEngine._make).
WAIT_SECONDS = 0.5

#: One CPU to be placed, none held while alive (Ray's default for actors); never
#: restarted, nor its calls retried: a call whose actor dies is handled here.
_RemoteRunner = ray.remote(max_restarts=0, max_task_retries=0)(_Runner)


class _Actor:
    __slots__ = ("calls", "handle")

    def __init__(self) -> None:
        self.handle: Any = _RemoteRunner.remote()  # an ActorHandle (typed loosely by ray)
        self.calls: collections.deque[_Call] = collections.deque()  # made, not reported


class _Call:
    """A handle of ``RayEngine.submit``: one call, made again if its actor dies
    before starting it."""

    __slots__ = ("__weakref__", "actor", "done", "lost", "outcome", "packed", "ref", "shared")

    def __init__(self, packed: bytes, shared: tuple[Any, ...], done: Any) -> None:
        self.packed = packed  # pickled (func, args): see _Runner.run
        self.shared = shared  # ObjectRefs of buffers put in the object store once
        self.done = done
        self.actor: _Actor | None = None
        self.ref: Any = None
        #: (True, the value's pickle) or (False, the error), once its ref is ready.
        self.outcome: tuple[bool, Any] | None = None
        self.lost = False  # its actor died while running it


class RayEngine:
    """The engine adapter of ``_pool._remote`` for the Ray runtime of this process."""

    name = "ray"
    #: A call's value comes with its end (the waiter gets it): nothing to fetch.
    fetch_together = False

    def __init__(self) -> None:
        # Reentrant: a future that is already done runs its callback at once, in
        # the thread that adds it, which may hold the lock.
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)  # the waiter sleeps on it when idle
        self._actors: list[_Actor] = []  # the live ones: a dead one leaves at once
        self._dying: list[_Actor] = []  # dead ones whose calls are not all ready yet
        #: While the waiter blocks in ``ray.wait``: the actors whose calls it waits on.
        self._watched: set[_Actor] | None = None
        self._waiter: threading.Thread | None = None
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
            if self._waiter is None:
                self._waiter = threading.Thread(
                    target=self._wait_loop, name=f"proctor-ray-waiter-{id(self):x}", daemon=True
                )
                self._waiter.start()
            for call in handles:
                self._make(call)
            self._wake.notify()
        return handles

    def _make(self, call: _Call) -> None:
        """Make ``call`` on the live actor with the fewest calls in flight (lock held)."""
        actor = min(self._actors, key=lambda a: len(a.calls))
        actor.calls.append(call)
        call.actor = actor
        ref = call.ref = actor.handle.run.remote(call.packed, *call.shared)
        watched = self._watched
        if watched is not None and actor not in watched:
            # The waiter is blocked in ray.wait on other actors' calls (an actor's calls
            # end in order, so one queued behind a watched call is seen after it): this
            # one, on an idle actor, reports itself, or it would wait for their end.
            # A weak reference: the future keeps its callbacks, and a callback holding
            # the call would keep it, its ObjectRef and value, until the future goes.
            held = weakref.ref(call)
            ref.future().add_done_callback(lambda f: self._from_future(held(), ref, f))

    # -- learning that calls ended ---------------------------------------------------

    def _wait_loop(self) -> None:
        """The waiter thread: wait in ``ray.wait`` (without the GIL) for the first
        calls of each actor, and report those that are ready.

        A call reported through a future's callback runs Python in Ray's own I/O
        thread, which must then take the GIL for each call (and its sends and
        replies wait meanwhile); a future per call also cost the caller about 60 µs
        of CPU a call more than waiting in ``ray.wait`` (1,000 tiny calls on 2
        actors, 7 rounds: 388 against 324 µs). Ray's own pool waits in ``ray.wait``
        too.
        """
        try:
            while self._wait_once():
                pass
        except BaseException as exc:  # Ray shut down under the pool, or a bug
            if self._closed:
                return  # the pool ended meanwhile: nobody waits for its calls
            # An Exception for the calls' results: Ray's shutdown raises SystemExit in a
            # thread blocked in ray.wait, which must not reach the caller as such.
            error = (
                exc
                if isinstance(exc, Exception)
                else RuntimeError(f"the Ray runtime ended while the pool's calls ran ({exc!r})")
            )
            for call in self._abandon(error):
                call.done(call)

    def _wait_once(self) -> bool:
        """One wait of the waiter: False once the engine is closed."""
        with self._lock:
            while not self._closed and not any(a.calls for a in self._actors + self._dying):
                self._wake.wait()
            if self._closed:
                return False
            watch: dict[Any, _Call] = {}
            for actor in self._actors + self._dying:
                # A dead actor's calls all become ready (failed) soon: watched together.
                ahead = len(actor.calls) if actor in self._dying else WATCHED_PER_ACTOR
                for call in itertools.islice(actor.calls, ahead):
                    if call.outcome is None:
                        watch[call.ref] = call
            self._watched = {call.actor for call in watch.values()}  # type: ignore[misc]
        refs = list(watch)
        _check_runtime()
        try:
            ready, _ = ray.wait(refs, num_returns=1, timeout=WAIT_SECONDS)
            if ready and len(refs) > 1:  # and all the others that are ready by now
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        finally:
            with self._lock:
                self._watched = None
        if ready:
            _check_runtime()
            for ref, outcome in zip(ready, _values(ready), strict=True):
                self._settle(watch[ref], ref, outcome)
        return True

    def _from_future(
        self, call: _Call | None, ref: Any, future: concurrent.futures.Future[Any]
    ) -> None:
        if call is None:
            return  # reported by the waiter, and let go
        error = future.exception()
        self._settle(call, ref, (True, future.result()) if error is None else (False, error))

    def _settle(self, call: _Call, ref: Any, outcome: tuple[bool, Any]) -> None:
        """``call``'s ``ref`` is ready (any thread): report it, or if its actor died,
        wait until all that actor's calls are ready and sort them (``_actor_died``)."""
        finished: list[_Call] = []
        with self._lock:
            if call.ref is not ref or call.outcome is not None:
                return  # reported already, or an earlier attempt's (made again elsewhere)
            call.outcome = outcome
            actor = call.actor
            assert actor is not None
            ok, error = outcome
            if not ok and isinstance(error, _ACTOR_GONE) and not self._closed:
                if actor in self._actors:  # the first of its calls to report the death
                    self._actors.remove(actor)
                    self._actors.append(_Actor())  # the replacement, at once
                    self._dying.append(actor)
                if all(c.outcome is not None for c in actor.calls):
                    finished = self._actor_died(actor)
            else:
                if call in actor.calls:  # (not if its actor died and was sorted out)
                    actor.calls.remove(call)  # near the front: calls end in order
                finished = [call]
        for ended in finished:
            ended.done(ended)

    def _actor_died(self, actor: _Actor) -> list[_Call]:
        """Every call of a dead actor is ready: the first that failed was running
        and is lost; those after it had not started and are made again (lock held).
        Returns the lost call, to report; those that ended before the death reported
        themselves."""
        failed = [c for c in actor.calls if c.outcome is not None and not c.outcome[0]]
        actor.calls.clear()
        if actor in self._dying:
            self._dying.remove(actor)
        if not failed:
            return []
        failed[0].lost = True
        for call in failed[1:]:
            call.outcome = None
            self._make(call)
        self._wake.notify()
        return failed[:1]

    def _abandon(self, exc: Exception) -> list[_Call]:
        """The waiter failed: every call not reported fails with ``exc``, rather than
        leave its task waiting for ever."""
        _logger.get_logger().exception("proctor's Ray waiter failed")
        with self._lock:
            self._closed = True
            calls = [c for a in self._actors + self._dying for c in a.calls if c.outcome is None]
            for call in calls:
                call.outcome = (False, exc)
            for actor in self._actors + self._dying:
                actor.calls.clear()
        return calls

    # -- the rest of the engine protocol ---------------------------------------------

    def succeeded(self, handle: Any) -> bool:
        outcome = handle.outcome
        return outcome is not None and outcome[0]

    def outcomes(self, handles: list[Any]) -> list[tuple[bool, Any, str | None]]:
        found: list[tuple[bool, Any, str | None]] = []
        for call in handles:
            ok, value = call.outcome
            if ok:
                found.append((True, pickle.loads(value), None))
            elif call.lost or isinstance(value, _LOST + _ACTOR_GONE):
                found.append((False, value, f"{type(value).__name__}: {value}"))
            else:
                found.append((False, value, None))
        return found

    def stop(self, handle: Any, end_worker: bool) -> None:
        call: _Call = handle
        with self._lock:
            actor = call.actor
            # The call running there is the first not ready (one that ended may still
            # wait to be reported at the front).
            calls = actor.calls if actor in self._actors else ()
            unfinished = [c for c in calls if c.outcome is None]
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
            # Calls still held are let go (each holds its actor: a cycle the cyclic
            # collector would free only later); Ray reports the killed actors' calls
            # after this, to a dispatcher that no longer takes them.
            for actor in actors + self._dying:
                actor.calls.clear()
            self._dying = []
            self._wake.notify()
        if not ray.is_initialized():
            return  # shut down already, actors included (ray.kill would start a new runtime)
        for actor in actors:
            ray.kill(actor.handle, no_restart=True)


def _check_runtime() -> None:
    """Raise if Ray was shut down under the pool: ``ray.wait`` and ``ray.get`` would
    start a new runtime (Ray's auto-init), in which the pool's calls do not exist.

    Raises:
        RuntimeError: the runtime is gone.
    """
    if not ray.is_initialized():
        raise RuntimeError("the Ray runtime was shut down while the pool's calls ran")


def _values(refs: list[Any]) -> list[tuple[bool, Any]]:
    """(True, value) or (False, the error) for each ready ref: in one ``ray.get``
    unless one of them failed."""
    try:
        return [(True, value) for value in ray.get(refs)]
    except Exception as exc:
        _detached(exc)  # (Ray's frames hold it: see _detached)
    found: list[tuple[bool, Any]] = []
    for ref in refs:
        try:
            found.append((True, ray.get(ref)))
        except Exception as exc:
            found.append((False, _detached(exc)))
    return found


def _detached(error: BaseException) -> BaseException:
    """``error`` and the errors chained to it without this thread's tracebacks
    (``ray.get``'s own frames; the task's traceback is in the error's text): they
    hold the waiter's frame, and that frame the calls, one of which may hold the
    error; and ``ray.get``'s frame holds the error it raised -- cycles for the
    cyclic collector, per failed call."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        each = pending.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        each.__traceback__ = None
        pending += (each.__cause__, each.__context__)
    return error


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
