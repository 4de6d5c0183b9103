"""``Pool``: the ``multiprocessing.Pool`` API in front of a dispatcher.

::

    Pool.map(f, xs)                      Dispatcher (one thread)         workers
    ───────────────                      ───────────────────────         ───────
    pickle f once, xs in chunks  ──────▶ pending ─▶ idle worker ───────▶ run chunk
    MapResult.get() ◀── _deliver ─────── outcome / WorkerLostError ◀──── result

Every call pickles its function and input in the caller's thread, so what cannot be
pickled raises there. ``imap``/``imap_unordered`` read their input lazily (see
``_results``). See docs/pool.md for the user's view and docs/design.md, "Pools".
"""

from __future__ import annotations

import os
import reprlib
import warnings
import weakref
from functools import partial

from .._core._errors import ArgumentTypeError, PicklingError, PoolTerminatedError
from .._core._integers import integral
from .._core._system import cpu_count
from .._core._timeout import check_duration
from .._start import _process
from . import _lifecycle, _progress, _worker
from ._dispatcher import Dispatcher, Task
from ._remote import RemoteDispatcher, engine_for
from ._results import ApplyResult, IMapIterator, IMapUnorderedIterator, MapResult
from ._worker import function_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any

__all__ = ("READ_AHEAD_PER_WORKER", "Pool")

#: Chunks an ``imap`` iterator keeps submitted but not yet consumed, per worker:
#: enough that each worker has its next chunks queued (the dispatcher pipelines
#: short tasks) while the consumer takes a result, and a bound on memory however
#: long (or endless) the input is.
READ_AHEAD_PER_WORKER = 8
#: ``map``'s default chunks (``chunksize=None``) are "guided": each takes this
#: fraction of the items left divided by the workers, so chunks shrink as the input
#: runs out and the workers finish together to within about one item's time...
GUIDED_SHARE = 4
#: ...but no chunk is smaller than the input divided by this many per worker, so a
#: long input of quick items is not cut into a long tail of one-item chunks.
MAX_CHUNKS_PER_WORKER = 64


def _check_callable(func: object, what: str) -> None:
    if not callable(func):
        raise TypeError(f"{what} must be callable, not {type(func).__name__} ({func!r:.80})")


def _check_workers(processes: object, initializer: object) -> int:
    """The number of workers (``cpu_count()`` for None); checks ``initializer`` too.

    Raises:
        TypeError: ``processes`` not an int or None; ``initializer`` not callable.
        ValueError: ``processes`` below 1.
    """
    if processes is None:
        processes = cpu_count()
    processes = integral(processes)
    if isinstance(processes, bool) or not isinstance(processes, int):
        raise TypeError(f"processes must be an int or None, not {type(processes).__name__}")
    if processes < 1:
        raise ValueError(f"Number of processes must be at least 1, not {processes}")
    if initializer is not None:
        _check_callable(initializer, "initializer")
    return processes


#: File descriptors the parent holds for each worker process, counted low (6.5-7
#: measured under every start method: the worker's frame channel, its sentinel and
#: its status pipe), so that a pool that fits is never refused: the check is for
#: counts that cannot fit at all, which would otherwise start workers for many
#: seconds before ``EMFILE`` stopped them.
_FDS_PER_WORKER = 4


def _check_room_for_workers(processes: int, what: str = "Pool(processes={})") -> None:
    """Refuse at once a number of workers this process's limits cannot hold.

    ``what`` names the call in the message (``{}``: the number).

    Raises:
        ValueError: ``processes`` needs more descriptors than ``RLIMIT_NOFILE``
            allows, or more processes than ``RLIMIT_NPROC`` (not enforced for root).
    """
    try:
        import resource
    except ImportError:  # not POSIX: nothing to ask
        return
    fds, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if fds != resource.RLIM_INFINITY and processes * _FDS_PER_WORKER > fds:
        raise ValueError(
            f"{what.format(processes)} needs at least {processes * _FDS_PER_WORKER} file "
            f"descriptors in this process ({_FDS_PER_WORKER}-7 a worker), but its limit "
            f"(RLIMIT_NOFILE) is {fds}: ask for fewer processes, or raise the limit "
            "(`ulimit -n`, or resource.setrlimit(resource.RLIMIT_NOFILE, ...))"
        )
    nproc = getattr(resource, "RLIMIT_NPROC", None)
    if nproc is None or os.geteuid() == 0:  # root may start processes beyond it
        return
    allowed, _ = resource.getrlimit(nproc)
    if allowed != resource.RLIM_INFINITY and processes > allowed:
        raise ValueError(
            f"{what.format(processes)} asks for more processes than this user may run "
            f"(RLIMIT_NPROC: {allowed}): ask for fewer processes, or raise the limit (`ulimit -u`)"
        )


def _check_task_timeout(timeout: object, what: str) -> float | None:
    """``timeout`` as positive seconds, or None (no limit; ``math.inf`` too).

    Raises:
        TypeError: not a real number or None.
        ValueError: zero, negative or NaN.
    """
    return check_duration(timeout, what)


def _process_class(context: Any, what: str) -> type[_process.Process]:
    """The ``Process`` class of a proctor ``context`` (the default one's for None).

    Raises:
        TypeError: ``context`` is not a proctor context (a ``multiprocessing`` one, say).
    """
    if context is None:
        return _process.Process
    found = getattr(context, "Process", None)
    if not (isinstance(found, type) and issubclass(found, _process.Process)):
        raise TypeError(
            f"{what} must be a proctor context (proctor.get_context(...)) or None, "
            f"not {type(context).__name__}"
        )
    return found


def remote_dispatcher(backend: Any, refused: dict[str, bool]) -> Dispatcher:
    """The dispatcher of a pool on a cluster (``backend=``), its adapter made now.

    Raises:
        ValueError: an option that needs local worker processes (named in ``refused``
            with whether it was given).
        TypeError: a ``backend`` nothing knows; ImportError: its engine is missing.
    """
    given = [name for name, used in refused.items() if used]
    if given:
        raise ValueError(
            f"{', '.join(given)} cannot be used with backend=: the cluster's engine starts "
            "and replaces its own workers (set up workers with Dask's worker plugins or "
            "Ray's runtime_env instead); see docs/scale-out.md"
        )
    # The same methods as Dispatcher's, for the cluster: Pool and the executor call
    # nothing else (see _remote).
    return RemoteDispatcher(engine_for(backend))  # type: ignore[return-value]


def _call_arguments(args: Any) -> tuple[Any, ...]:
    """``apply``'s ``args`` as a tuple; a clear error for what ``func(*args)`` refuses."""
    if isinstance(args, (str, bytes)) or not hasattr(args, "__iter__"):
        raise TypeError(
            f"args must be an iterable of the arguments (a tuple), not {type(args).__name__} "
            f"({args!r:.80}); for one argument write args=(value,)"
        )
    return tuple(args)


def _call_keywords(kwds: Any) -> Any:
    """``apply``'s ``kwds``: a mapping, as ``func(**kwds)`` wants."""
    from collections.abc import Mapping

    if not isinstance(kwds, Mapping):
        raise TypeError(
            f"kwds must be a mapping of keyword arguments (a dict), not {type(kwds).__name__} "
            f"({kwds!r:.80})"
        )
    return kwds


def _check_chunksize(chunksize: object) -> int:
    chunksize = integral(chunksize)
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be a positive int or None, not {type(chunksize).__name__}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be at least 1, not {chunksize}")
    return chunksize


def _check_memory_limit(limit: object) -> int | None:
    if limit is None:
        return None
    limit = integral(limit)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(
            "max_memory_per_child must be a number of bytes (an int) or None, not "
            f"{type(limit).__name__} ({limit!r:.80})"
        )
    if limit < 1:
        raise ValueError(f"max_memory_per_child must be a positive number of bytes, not {limit}")
    return limit


def _check_concurrency(concurrency: object) -> int:
    """``task_concurrency`` as an int of at least 1.

    Raises:
        TypeError: not an int.
        ValueError: below 1.
    """
    concurrency = integral(concurrency)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise TypeError(
            f"task_concurrency must be a positive int, not {type(concurrency).__name__} "
            f"({concurrency!r:.80})"
        )
    if concurrency < 1:
        raise ValueError(
            f"task_concurrency must be at least 1 (coroutine tasks a worker runs at once), "
            f"not {concurrency}"
        )
    return concurrency


def guided_chunks(
    length: int, workers: int, chunks_per_worker: int = MAX_CHUNKS_PER_WORKER
) -> list[int]:
    """Chunk sizes for ``map``'s whole input with ``chunksize=None`` (see GUIDED_SHARE).

    Big chunks first (few round trips for quick items), smaller ones as the input
    runs out (slow items end on all workers at about the same time), none below
    ``length / (workers * chunks_per_worker)`` (a pool on a cluster, whose tasks cost
    a millisecond each, passes fewer than a local pool's MAX_CHUNKS_PER_WORKER).
    """
    floor = max(1, length // (workers * chunks_per_worker))
    sizes = []
    left = length
    while left > 0:
        size = min(left, max(floor, -(-left // (workers * GUIDED_SHARE))))
        sizes.append(size)
        left -= size
    return sizes


class Pool:
    """A pool of worker processes running tasks: the ``multiprocessing.Pool`` API.

    Each worker has its own pipe to the parent, which knows the task (chunk) each
    worker runs, so a worker that dies (SIGKILL, the OOM killer, ``os._exit``) fails
    only that task, with ``proctor.WorkerLostError``, and is replaced; every other
    task completes (tasks queued in the dead worker run on another).

    Args:
        processes: the number of workers; default ``os.process_cpu_count()``
            (``cpu_count()``).
        initializer: called as ``initializer(*initargs)`` in each worker when it starts.
        initargs: arguments for ``initializer``; they reach the worker with its start,
            so queues, locks and events may be among them.
        maxtasksperchild: tasks (chunks) a worker runs before it is replaced by a new
            one; ``None`` keeps workers for the pool's life.
        max_memory_per_child: bytes of resident memory (RSS) a worker may reach:
            a worker past it after a task is replaced by a new one (the task's result
            is kept), which contains memory leaks in the tasks. Keyword-only; a proctor
            addition.
        task_concurrency: how many tasks of coroutine functions (``async def``) a
            worker runs at once on its event loop; default 1. Plain functions' tasks
            always run one at a time. Keyword-only; a proctor addition.
        context: the proctor context whose start method the workers use; default
            the module-level one's.
        backend: run the tasks on a cluster instead of local processes: a Dask
            ``distributed.Client`` (or a scheduler address, ``"tcp://host:8786"``),
            ``"ray"`` (the running Ray runtime, started if there is none) or a Ray
            address (``"ray://head:10001"``). ``processes`` then only sizes chunks
            (default: the cluster's worker threads); ``initializer``,
            ``maxtasksperchild``, ``max_memory_per_child``, ``task_concurrency`` and
            ``context`` are refused. Keyword-only; a proctor addition; see
            docs/scale-out.md.

    Raises:
        ValueError: ``processes`` or ``maxtasksperchild`` below 1; ``processes``
            beyond what this process's limits allow (descriptors, processes).
        TypeError: a non-callable ``initializer``, or a wrong argument type (for
            ``maxtasksperchild`` also a ``ValueError``, which the stdlib raises).
        StartError: a worker could not be started (``UnpicklableError`` when
            ``initializer`` or ``initargs`` cannot be pickled for a spawn or
            forkserver worker).

    Note:
        ``imap``/``imap_unordered`` read their input lazily, a bounded number of
        chunks ahead, and the results of a terminated pool fail with
        ``PoolTerminatedError`` instead of never coming; see docs/pool.md.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        max_memory_per_child: int | None = None,
        task_concurrency: int = 1,
        backend: Any = None,
    ) -> None:
        self._dispatcher: Dispatcher | None = None
        if backend is not None:
            if processes is not None:
                _check_workers(processes, None)  # before a client is made
            self._dispatcher = remote_dispatcher(
                backend,
                {
                    "initializer": initializer is not None,
                    "maxtasksperchild": maxtasksperchild is not None,
                    "max_memory_per_child": max_memory_per_child is not None,
                    "task_concurrency": task_concurrency != 1,
                    "context": context is not None,
                },
            )
            self._processes = self._dispatcher.processes if processes is None else processes
            self._concurrency = 1
            return
        processes = _check_workers(processes, initializer)
        _check_room_for_workers(processes)
        concurrency = _check_concurrency(task_concurrency)
        memory_limit = _check_memory_limit(max_memory_per_child)
        if maxtasksperchild is not None:
            maxtasksperchild = integral(maxtasksperchild)
            if isinstance(maxtasksperchild, bool) or not isinstance(maxtasksperchild, int):
                # A ValueError too: the stdlib raises ValueError here (and its
                # suite checks it: test_pool_maxtasksperchild_invalid).
                raise ArgumentTypeError(
                    "maxtasksperchild must be a positive int or None, not "
                    f"{type(maxtasksperchild).__name__} ({maxtasksperchild!r:.80})"
                )
            if maxtasksperchild < 1:
                raise ValueError(f"maxtasksperchild must be at least 1, not {maxtasksperchild}")
        process_class = _process_class(context, "context")
        self._dispatcher = Dispatcher(
            process_class,
            processes,
            initializer,
            tuple(initargs),
            maxtasksperchild,
            max_memory_per_child=memory_limit,
            concurrency=concurrency,
        )
        self._processes = processes
        self._concurrency = concurrency

    # -- one call --------------------------------------------------------------------

    def apply(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run ``func(*args, **kwds)`` in a worker and return its value (or raise its error).

        Args:
            timeout: seconds the task may run once a worker has it (waiting for a free
                worker does not count); then the worker is killed and
                ``proctor.TaskTimeoutError`` raised. ``None``: no limit.
        """
        return self.apply_async(func, args, kwds, timeout=timeout).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> ApplyResult:
        """Run ``func(*args, **kwds)`` in a worker; return an ``AsyncResult`` at once.

        ``callback`` gets the value, ``error_callback`` the exception, in the
        pool's dispatcher thread, before ``get()`` returns.

        Args:
            timeout: seconds the task may run once a worker has it (waiting for a free
                worker does not count); then its worker is killed (SIGKILL) and
                replaced, and the result fails with ``proctor.TaskTimeoutError``.
                ``None``: no limit. Not ``get(timeout)``, which leaves the task running.

        Raises:
            PicklingError: ``func`` or an argument cannot be pickled (nothing was sent).
            ValueError: the pool is closed or terminated, or ``timeout`` is not positive.
            TypeError: ``timeout`` is not a number.
        """
        # Called once per task: the checks' common outcomes are tested inline.
        dispatcher = self._dispatcher
        if dispatcher is None or dispatcher.state not in _TAKING_CALLS:
            dispatcher = self._check_running()  # raises
        if not callable(func):
            _check_callable(func, "func")  # raises
        seconds = None if timeout is None else self._check_timeout(timeout, "timeout")
        if args.__class__ is not tuple:
            args = _call_arguments(args)
        if kwds.__class__ is not dict:
            kwds = _call_keywords(kwds)
        kwds = NO_KEYWORDS if not kwds else dict(kwds)
        task_id = dispatcher.next_id()
        codec = dispatcher.codec
        func_bytes, name, coroutine = codec.dumps_function(func)
        payload, buffers = codec.dumps_payload((args, kwds), f"the arguments of {name}")
        kind = _worker.APPLY
        if coroutine:
            kind |= _worker.COROUTINE
        if buffers:
            kind |= _worker.BUFFERS_FOLLOW
        frame = codec.encode_task(task_id, kind, func_bytes, payload)
        describe = partial(call_inputs, args, kwds)
        result = ApplyResult(callback, error_callback, dispatcher.wake, describe, name)
        result._owner = self
        task = Task(task_id, frame, result, 0, name, describe, seconds, 1, buffers, coroutine)
        dispatcher.submit([task])
        return result

    # -- calls over an input --------------------------------------------------------------

    def map(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: Any = None,
    ) -> list[Any]:
        """``[func(x) for x in iterable]``, computed by the workers in chunks.

        Args:
            task_timeout: seconds each item may take: a chunk of n items may run
                n * ``task_timeout`` once a worker has it; then its worker is killed and
                replaced, and ``proctor.TaskTimeoutError`` raised. ``None``: no limit.
            progress: ``True`` shows a tqdm bar of the items done; a tqdm bar is
                updated (not closed); a callable is called as ``fn(done, total)``.
                See docs/pool.md, "Progress bars".

        Raises:
            ModuleNotFoundError: ``progress=True`` without tqdm installed.
            TypeError: ``progress`` of another type.
        """
        tracker = _progress.tracker(progress)
        result = self._map_async(
            func, iterable, _worker.MAP, chunksize, None, None, task_timeout, tracker
        )
        return _progress.get(result, tracker)

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
        progress: Any = None,
    ) -> MapResult:
        """Like ``map``; return an ``AsyncResult`` at once (``cancel()`` stops every chunk)."""
        return self._map_async(
            func,
            iterable,
            _worker.MAP,
            chunksize,
            callback,
            error_callback,
            task_timeout,
            _progress.tracker(progress),
        )

    def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: Any = None,
    ) -> list[Any]:
        """``[func(*args) for args in iterable]``, computed by the workers in chunks.

        ``task_timeout`` and ``progress`` as for ``map``.
        """
        tracker = _progress.tracker(progress)
        result = self._map_async(
            func, iterable, _worker.STARMAP, chunksize, None, None, task_timeout, tracker
        )
        return _progress.get(result, tracker)

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
        progress: Any = None,
    ) -> MapResult:
        """Like ``starmap``; return an ``AsyncResult`` at once."""
        return self._map_async(
            func,
            iterable,
            _worker.STARMAP,
            chunksize,
            callback,
            error_callback,
            task_timeout,
            _progress.tracker(progress),
        )

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        kind: int,
        chunksize: int | None,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        task_timeout: float | None,
        tracker: _progress.Tracker | None = None,
    ) -> MapResult:
        dispatcher = self._check_running()
        _check_callable(func, "func")
        seconds = self._check_timeout(task_timeout, "task_timeout")
        # A list, tuple or range is sliced as it is: a range's chunks pickle as small
        # ranges, and copying a list first costs as much as pickling it. (The
        # stdlib does not copy them either.) A starmap item may be any iterable of
        # arguments, as in the stdlib: the worker unpacks it.
        items: Sequence[Any] = (
            iterable  # type: ignore[assignment]  # one of the three, by the test
            if type(iterable) in (list, tuple, range)
            else list(iterable)
        )
        codec = dispatcher.codec
        func_bytes, name, coroutine = codec.dumps_function(func)
        kind = _worker.kind_for(kind, coroutine)
        if chunksize is None:
            # A worker runs task_concurrency coroutine chunks at once: as many workers.
            slots = self._processes * (self._concurrency if coroutine else 1)
            per_worker = dispatcher.chunks_per_worker_for(name, len(items), slots)
            sizes = guided_chunks(len(items), slots, per_worker)
        else:
            size = _check_chunksize(chunksize)
            sizes = [min(size, len(items) - start) for start in range(0, len(items), size)]
        if tracker is not None:  # the display stops when the result completes
            callback, error_callback = tracker.closing(callback, error_callback)
            kind |= _worker.REPORTS_PROGRESS
        result = MapResult(
            len(items),
            len(sizes),
            callback,
            error_callback,
            dispatcher.wake,
            lambda: f"{name} over {len(items)} input items",
        )
        result._owner = self
        tasks = []
        start = 0
        for size in sizes:
            chunk = items[start : start + size]
            what = f"{_items_text(start, size)} of {name}"
            payload, buffers = codec.dumps_payload(chunk, what)
            task_id = dispatcher.next_id()
            frame = codec.encode_task(
                task_id, _worker.with_buffers(kind, buffers), func_bytes, payload
            )
            describe = _positions(start, size)
            timeout = None if seconds is None else seconds * size
            # A MapResult takes a chunk's index as the position of its first item.
            tasks.append(
                Task(
                    task_id, frame, result, start, name, describe, timeout, size, buffers, coroutine
                )
            )
            start += size
        if tracker is not None:
            tracker.start(len(items), _short_name(func))
            for task in tasks:
                task.progress = tracker
        if tasks:
            try:
                dispatcher.submit(tasks)
            except BaseException:  # the pool ended meanwhile: nothing was sent
                if tracker is not None:
                    tracker.close()
                raise
        return result

    def imap(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: Any = None,
    ) -> IMapIterator:
        """An iterator over ``func(x)`` for each ``x``, in order; the input is read lazily.

        ``chunksize=None`` (the default; the stdlib's is 1) sizes chunks from how
        long the items measured so far took, aiming at a few milliseconds of work per
        chunk; an int is used as given. ``task_timeout`` as for ``map``: a chunk that
        runs too long raises ``proctor.TaskTimeoutError`` at its position, and
        iteration goes on. ``progress`` as for ``map`` (the total is the input's
        ``len()``, unknown for a generator); the display stops when iteration ends,
        raises, or the iterator is garbage-collected.
        """
        return self._imap(IMapIterator, func, iterable, chunksize, task_timeout, progress)

    def imap_unordered(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        progress: Any = None,
    ) -> IMapIterator:
        """Like ``imap``, yielding values in the order they complete."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize, task_timeout, progress)

    def _imap(
        self,
        cls: type[IMapIterator],
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        task_timeout: float | None,
        progress: Any = None,
    ) -> IMapIterator:
        dispatcher = self._check_running()
        _check_callable(func, "func")
        if chunksize is not None:
            chunksize = _check_chunksize(chunksize)
        seconds = self._check_timeout(task_timeout, "task_timeout")
        tracker = _progress.tracker(progress)
        func_bytes, name, coroutine = dispatcher.codec.dumps_function(func)
        submitter = _LazySubmitter(dispatcher, name, func_bytes, seconds, coroutine, tracker)
        total = None
        if tracker is not None:
            total = _length(iterable)
            cls = _progress.ITERATORS[cls]  # its next() stops the display
        slots = self._processes * (self._concurrency if coroutine else 1)
        iterator = cls(submitter, iter(iterable), chunksize, READ_AHEAD_PER_WORKER * slots)
        iterator._owner = self  # (as ApplyResult._owner)
        if tracker is not None:
            tracker.start(total, _short_name(func))
            iterator._progress = tracker  # type: ignore[attr-defined]  # an ITERATORS class
            # Abandoned (a loop left with break): the display stops when it is collected.
            weakref.finalize(iterator, tracker.close)
        dispatcher.add_lazy(iterator)
        iterator._feed()
        return iterator

    # -- life cycle --------------------------------------------------------------------

    def close(self) -> None:
        """Accept no new calls; the workers exit once every task is done (``join()``)."""
        if self._dispatcher is not None:
            self._dispatcher.close()

    def terminate(self) -> None:
        """Stop the workers now; unfinished results fail with ``PoolTerminatedError``."""
        if self._dispatcher is not None:
            self._dispatcher.terminate()

    def join(self, timeout: float | None = None) -> None:
        """Wait for every task, then for the workers to exit (after ``close()``).

        Raises:
            ValueError: the pool was neither closed nor terminated.
            proctor.TimeoutError: ``timeout`` seconds passed first.
        """
        if self._dispatcher is not None:
            self._dispatcher.join(timeout)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def __del__(self) -> None:
        dispatcher = getattr(self, "_dispatcher", None)
        if dispatcher is not None and dispatcher.state in ("running", "broken"):
            warnings.warn(
                f"unclosed pool {self!r}: terminating its workers; use the pool in a "
                "with block, or call close() and join()",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )
            dispatcher.terminate(wait_for_it=False)

    def __reduce__(self) -> Any:
        raise TypeError(
            "a Pool cannot be pickled or passed to another process; create the pool "
            "in the process that uses it"
        )

    def __repr__(self) -> str:
        state = "initial" if self._dispatcher is None else self._dispatcher.state
        return f"<proctor.pool.{type(self).__name__} state={state} pool_size={self._processes}>"

    def _check_timeout(self, timeout: object, what: str) -> float | None:
        return _check_task_timeout(timeout, what)

    def _check_running(self) -> Dispatcher:
        dispatcher = self._dispatcher
        # A broken pool takes calls: their results fail with its InitializerError.
        if dispatcher is None or dispatcher.state not in _TAKING_CALLS:
            if dispatcher is not None and dispatcher.state == _lifecycle.INHERITED:
                raise _lifecycle.inherited_pool_error(self)
            raise ValueError(f"Pool not running: {self!r} was closed or terminated")
        return dispatcher


def call_inputs(args: tuple[Any, ...], kwds: Mapping[str, Any]) -> str:
    """A call's arguments in words, for an error message.

    A task's ``describe`` is ``partial(call_inputs, args, kwds)``: made when the task
    is, called only for a message. A partial is one object made in C; a closure is a
    function and its cells, and an instance of a class with ``__init__`` runs a
    Python frame (once per ``apply_async``).
    """
    parts = [reprlib.repr(a) for a in args]
    parts += [f"{k}={reprlib.repr(v)}" for k, v in kwds.items()]
    return ", ".join(parts)


#: The keyword arguments of a call without any: shared, never changed (a call's
#: ``kwds`` is only pickled and described), so no dict is made per call.
NO_KEYWORDS: Mapping[str, Any] = {}


#: The dispatcher states in which a pool takes calls.
_TAKING_CALLS = ("running", "broken")


def _items_text(start: int, length: int) -> str:
    if length == 1:
        return f"input item {start}"
    return f"input items {start}..{start + length - 1}"


def _positions(start: int, length: int) -> Callable[[], str]:
    return lambda: _items_text(start, length)


def _short_name(func: Callable[..., Any]) -> str:
    """The function's own name, for a progress bar's label."""
    return function_name(func).rpartition(".")[2]


def _length(iterable: Iterable[Any]) -> int | None:
    """``len(iterable)``, or None when it has none (a generator): a bar's total."""
    try:
        return len(iterable)  # type: ignore[arg-type]  # a TypeError says it has none
    except TypeError:
        return None


class _LazySubmitter:
    """Turns an ``imap`` iterator's chunks into tasks (called in the consumer's thread)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        name: str,
        func_bytes: Any,
        task_timeout: float | None,
        coroutine: bool = False,
        progress: _progress.Tracker | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._name = name
        self._func_bytes = func_bytes
        self._task_timeout = task_timeout
        self._coroutine = coroutine
        self._kind = _worker.kind_for(_worker.MAP, coroutine)
        self._progress = progress

    def submit_lazy_chunk(
        self, result: IMapIterator, index: int, start: int, items: list[Any]
    ) -> None:
        try:
            payload, buffers = self._dispatcher.codec.dumps_payload(
                items, f"{_items_text(start, len(items))} of {self._name}"
            )
        except PicklingError as exc:
            result._deliver(index, False, exc)
            return
        task_id = self._dispatcher.next_id()
        kind = _worker.with_buffers(self._kind, buffers)
        if self._progress is not None:
            kind |= _worker.REPORTS_PROGRESS
        frame = self._dispatcher.codec.encode_task(task_id, kind, self._func_bytes, payload)
        timeout = None if self._task_timeout is None else self._task_timeout * len(items)
        describe = _positions(start, len(items))
        task = Task(
            task_id,
            frame,
            result._sink,  # (not the iterator: see ChunkSink)
            index,
            self._name,
            describe,
            timeout,
            len(items),
            buffers,
            self._coroutine,
        )
        task.progress = self._progress
        try:
            self._dispatcher.submit([task], lazy=True)
        except ValueError:
            result._deliver(
                index, False, PoolTerminatedError("the pool ended before this input was run")
            )

    def lazy_consumed(self, result: IMapIterator) -> None:
        self._dispatcher.lazy_consumed(result)

    def lazy_done(self, result: IMapIterator) -> None:
        self._dispatcher.lazy_done(result)
