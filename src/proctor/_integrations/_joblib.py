"""``ProctorBackend``: a joblib parallel backend whose workers are a proctor ``Pool``.

::

    joblib.Parallel (caller's thread)      proctor Pool                      workers
    ─────────────────────────────────      ────────────                      ───────
    configure(): Pool(n_jobs, ...)    ─▶   workers start, run _start_worker
    submit(batch, callback):               (thread limits, user initializer)
      apply_async(run_batch, (batch,),     dispatcher thread: pending ─▶     run_batch:
        timeout=task_timeout * len)          worker's pipe                    batch() runs
    retrieve_result_callback(out)     ◀──  callback / error_callback    ◀──  the calls
      value, or raises the error             (_Outcome), in the dispatcher    nested
      (WorkerLostError, TaskTimeoutError,    thread: joblib dispatches the      Parallel:
      the task's own, traceback attached)    next batch from there              threads
    abort_everything(): terminate() the
      pool, start a fresh one if asked
    terminate(): close() and join()

Workers are kept between ``Parallel`` calls, as joblib's ``loky`` backend keeps its
executor: ``terminate`` hands the pool back to ``_REUSABLE``, and the next call with the
same settings (workers, start method, initializer, limits) takes it instead of starting
new workers, unless another call still holds it. A pool left idle for
``IDLE_WORKER_TIMEOUT`` is closed, and ``shutdown_workers()`` closes it at once. A
batch (joblib's ``BatchedCalls``) is the *argument* of a task, not its function, so
numpy arrays in the calls travel out of band (memfds), as every pool task's do, and the
task's function (``run_batch``) is pickled once per pool.

Supports joblib ``MIN_JOBLIB`` and later: 1.3 brought ``parallel_config``,
``return_as="generator"`` and results retrieved in a callback, which this backend uses;
joblib before 1.5 calls ``apply_async`` where later ones call ``submit``.
"""

from __future__ import annotations

import os
import queue
import reprlib
import sys
import threading
import warnings

from .. import _context
from .._pool._pool import Pool, _check_task_timeout
from .._start._process import current_process

try:
    import joblib
    from joblib._parallel_backends import (
        AutoBatchingMixin,
        FallbackToBackend,
        ParallelBackendBase,
        SequentialBackend,
    )
except ImportError as exc:  # joblib missing, or one without these names
    raise ImportError(
        f"proctor.joblib needs joblib ({exc}); install it with: pip install 'proctor[joblib]'"
    ) from exc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = (
    "IDLE_WORKER_TIMEOUT",
    "MIN_JOBLIB",
    "ProctorBackend",
    "register",
    "run_batch",
    "shutdown_workers",
)

# parallel_config, return_as="generator" and retrieve_result_callback came in 1.3.
MIN_JOBLIB = (1, 3)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


if _version(joblib.__version__) < MIN_JOBLIB:
    raise ImportError(
        f"proctor.joblib needs joblib {'.'.join(map(str, MIN_JOBLIB))} or later; this is "
        f"joblib {joblib.__version__} (at {os.path.dirname(joblib.__file__)}). Upgrade it "
        "with: pip install -U 'proctor[joblib]'"
    )

# What ``Parallel`` passes to ``configure`` for joblib's own backends (memmapping of
# large arrays, its multiprocessing context, hints). proctor sends large arrays as
# memfds instead of memmapped files, and takes its start method from
# ``start_method=``/``context=``, so these are accepted and not used.
_JOBLIB_OPTIONS = frozenset(
    {"max_nbytes", "temp_folder", "mmap_mode", "prefer", "require", "verbose", "context"}
)
# The backend's own options: in ``parallel_config(backend="proctor", ...)`` (the
# backend's constructor) and, from joblib 1.5, in ``Parallel(backend="proctor", ...)``
# (``configure``, which then wins).
_OPTIONS = (
    "task_timeout",
    "start_method",
    "context",
    "max_tasks_per_child",
    "max_memory_per_child",
    "initializer",
    "initargs",
)


class _Outcome:
    """What the pool's callbacks hand to joblib's: a batch's value or its error."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any, error: BaseException | None) -> None:
        self.value = value
        self.error = error


class _Batch:
    """A joblib ``BatchedCalls`` as a task argument, with a readable ``repr`` for errors.

    ``WorkerLostError`` and ``TaskTimeoutError`` name a task's inputs by their
    ``repr``; joblib's batch has none worth reading.
    """

    __slots__ = ("calls",)

    def __init__(self, calls: Any) -> None:
        self.calls = calls

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Batch, (self.calls,))

    def __repr__(self) -> str:
        items = getattr(self.calls, "items", None)
        if not isinstance(items, list):
            return repr(self.calls)
        shown = []
        for func, args, kwargs in items[:3]:
            name = getattr(func, "__name__", None) or type(func).__name__
            parts = [reprlib.repr(a) for a in args]
            parts += [f"{k}={reprlib.repr(v)}" for k, v in kwargs.items()]
            shown.append(f"{name}({', '.join(parts)})")
        more = f", ... ({len(items)} calls)" if len(items) > 3 else ""
        return f"[{', '.join(shown)}{more}]"


def run_batch(batch: _Batch) -> Any:
    """Run one joblib batch in a worker: a task's function (by reference, pickled once)."""
    return batch.calls()


# The per-worker limit set with threadpoolctl, kept so it is not collected.
_thread_limits: Any = None


def _start_worker(
    env: dict[str, str],
    threads: int | None,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> None:
    """A worker's initializer: cap native thread pools, then run the user's initializer.

    joblib's process backends give each worker ``cpu_count() // n_jobs`` threads for
    OpenMP/BLAS (unless the variables are set already), so ``n_jobs`` workers do not
    each start a thread per core. The variables reach libraries loaded from now on;
    under ``fork`` (or a spawned main module that imported numpy) they are loaded
    already, so where threadpoolctl is imported (scikit-learn imports it), its limits
    are set as well (``threads``; None where the user set the variables).
    """
    global _thread_limits
    os.environ.update(env)
    threadpoolctl = sys.modules.get("threadpoolctl")
    if threadpoolctl is not None and threads is not None:
        _thread_limits = threadpoolctl.threadpool_limits(limits=threads)
    if initializer is not None:
        initializer(*initargs)


#: Seconds a pool kept between ``Parallel`` calls may stay idle before it is closed (as
#: loky's ``idle_worker_timeout``): workers that wait for the next call cost memory.
IDLE_WORKER_TIMEOUT = 300.0


class _ReusablePool:
    """The one pool kept between ``Parallel`` calls, with the settings it was made for.

    A call takes it if its settings are the same (``key``) and no other call holds it
    (calls from two threads at once get a pool each: ``abort_everything`` in one must
    not kill the other's batches). A call that needs other settings closes the kept
    pool and keeps its own. The idle timer runs only while nobody holds the pool.
    """

    def __init__(self) -> None:
        self._inherited: list[Pool] = []
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pool: Pool | None = None
        self._key: tuple[Any, ...] = ()
        self._held = False
        self._timer: threading.Timer | None = None

    def reset_in_child(self) -> None:
        """In a forked child (a worker of joblib's own ``multiprocessing`` backend, say):
        the parent's kept pool is the parent's -- its workers and dispatcher thread are
        not here -- so it is never handed out, and never closed or collected here (its
        finalizer would try to stop the parent's workers)."""
        if self._pool is not None:
            self._inherited.append(self._pool)
        self._reset()

    def take(self, key: tuple[Any, ...], make: Callable[[], Pool]) -> Pool:
        """The kept pool if it suits ``key`` and is free, else a new one from ``make``."""
        retired = None
        with self._lock:
            self._cancel_timer()
            kept = self._pool
            if kept is not None and not self._held and _same_key(self._key, key) and _running(kept):
                self._held = True
                return kept
            if not self._held:
                # Settings changed (or the kept pool stopped): the new pool is kept instead.
                retired, self._pool, self._key = self._pool, None, ()
        _close(retired)
        pool = make()
        with self._lock:
            if self._pool is None and not self._held:
                self._pool, self._key, self._held = pool, key, True
        return pool

    def give_back(self, pool: Pool) -> bool:
        """``pool``'s call is over: keep it (True) if it is the kept one, still running."""
        with self._lock:
            if pool is not self._pool:
                return False
            self._held = False
            if not _running(pool):
                self._pool, self._key = None, ()
                return False
            self._timer = threading.Timer(IDLE_WORKER_TIMEOUT, self._close_if_idle, (pool,))
            self._timer.daemon = True
            self._timer.name = "proctor-joblib-idle-workers"
            self._timer.start()
            return True

    def forget(self, pool: Pool) -> None:
        """``pool`` was terminated (``abort_everything``): never hand it out again."""
        with self._lock:
            if pool is self._pool:
                self._pool, self._key, self._held = None, (), False

    def shutdown(self) -> None:
        """Close the kept pool now if no call holds it, and wait for its workers."""
        with self._lock:
            self._cancel_timer()
            if self._held:
                return
            pool, self._pool, self._key = self._pool, None, ()
        _close(pool)

    def _close_if_idle(self, pool: Pool) -> None:
        with self._lock:
            if pool is not self._pool or self._held:
                return
            self._pool, self._key, self._timer = None, (), None
        _close(pool)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _same_key(kept: tuple[Any, ...], wanted: tuple[Any, ...]) -> bool:
    # Objects (the initializer and each of its arguments) by identity: an argument may
    # be an array, whose == is not a truth value. Numbers, names and the environment
    # dictionary by value.
    return len(kept) == len(wanted) and all(
        a is b or (type(a) is type(b) and type(a) in (int, float, str, dict) and a == b)
        for a, b in zip(kept, wanted, strict=True)
    )


def _running(pool: Pool) -> bool:
    dispatcher = pool._dispatcher
    return dispatcher is not None and dispatcher.state == "running"


def _close(pool: Pool | None) -> None:
    if pool is not None:
        pool.close()
        pool.join()


_REUSABLE = _ReusablePool()
os.register_at_fork(after_in_child=_REUSABLE.reset_in_child)


def shutdown_workers() -> None:
    """Close the worker pool kept between ``Parallel`` calls, and wait for its workers.

    Workers otherwise stay for the next call (closed after ``IDLE_WORKER_TIMEOUT``
    seconds of idleness, or at interpreter exit). A pool that a running ``Parallel``
    call holds is left to it.
    """
    _REUSABLE.shutdown()


class ProctorBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's ``Parallel`` on a proctor ``Pool`` (``backend="proctor"``).

    A worker that dies mid-batch fails that batch with ``proctor.WorkerLostError``,
    which ``Parallel`` raises (the pool is then replaced, so the backend goes on); a
    batch that runs past ``task_timeout`` per call is killed with its worker and fails
    with ``proctor.TaskTimeoutError``; the workers' log records reach this process's
    handlers. See docs/joblib.md.

    Args:
        nesting_level: joblib's, set by ``Parallel``.
        inner_max_num_threads: threads each worker's OpenMP/BLAS pools may use; default
            ``cpu_count() // n_jobs`` (as joblib's process backends).
        task_timeout: seconds each call may run once a worker has its batch (a batch
            of n calls may run n * ``task_timeout``); then the worker is killed and
            replaced and ``Parallel`` raises ``proctor.TaskTimeoutError``. ``None``: no
            limit. joblib runs ``n_jobs=1`` in the calling process, where nothing can
            be stopped: then it has no effect (a warning says so).
        start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"``; default proctor's.
        context: a proctor context (``proctor.get_context("spawn")``), instead of
            ``start_method``.
        max_tasks_per_child: batches a worker runs before it is replaced.
        max_memory_per_child: bytes of resident memory after which a worker is
            replaced (as ``proctor.Pool``'s).
        initializer: called as ``initializer(*initargs)`` in each worker at its start.
        initargs: the arguments of ``initializer``.

    Raises:
        TypeError: an option of the wrong type, or an unknown option.
        ValueError: an option of the wrong value (a ``task_timeout`` that is not
            positive, an unknown start method).
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True
    uses_threads = False
    supports_sharedmem = False
    default_n_jobs = 1

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **options: Any,
    ) -> None:
        # Not passed up: joblib before 1.5 hands extra keywords to object.__init__.
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self._options = _check_options(options, allow_joblib=False)
        self._configured: dict[str, Any] = {}
        self._pool: Pool | None = None
        self._task_timeout: float | None = None
        self._warned_sequential = False
        self.parallel: Any = None

    # -- joblib's backend API -----------------------------------------------------------

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """The number of workers ``n_jobs`` means here (-1: every CPU, None: 1).

        Inside a proctor pool worker (a daemonic process), or in a thread of a nested
        call, it is 1, with a warning when more was asked: nested process pools
        multiply the processes, as joblib's own process backends refuse too.

        Raises:
            ValueError: ``n_jobs`` is 0.
        """
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if current_process().daemon:
            if n_jobs != 1:
                warnings.warn(
                    "proctor-backed parallel loops cannot run inside a pool worker (a "
                    "daemonic process): setting n_jobs=1. Nested Parallel calls run on "
                    "threads or sequentially in the worker (joblib's nested backend).",
                    stacklevel=3,
                )
            return 1
        if not (self.in_main_thread() or self.nesting_level == 0):
            if n_jobs != 1:
                warnings.warn(
                    "proctor-backed parallel loops cannot be nested below threads: "
                    "setting n_jobs=1",
                    stacklevel=3,
                )
            return 1
        if n_jobs < 0:
            return max(joblib.cpu_count() + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **options: Any,
    ) -> int:
        """Start the pool for a ``Parallel`` call; return its number of workers.

        Raises:
            FallbackToBackend: ``n_jobs`` is 1: joblib then runs the calls in this
                process, as for its own backends (so ``task_timeout`` cannot apply; a
                warning says so, once per backend).
        """
        self._configured = dict(options)
        settings = {**self._options, **_check_options(options, allow_joblib=True)}
        task_timeout = settings.get("task_timeout")
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            if task_timeout is not None and not self._warned_sequential:
                self._warned_sequential = True
                warnings.warn(
                    "task_timeout has no effect with n_jobs=1: joblib runs the calls in "
                    "this process, where they cannot be stopped; pass n_jobs=2 or more",
                    stacklevel=3,
                )
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        context = settings.get("context")
        if context is None:
            # None: the default start method, as it is now (it may change between calls).
            context = _context.get_context(settings.get("start_method"))
        threads = self.inner_max_num_threads
        if threads is None and not any(name in os.environ for name in self.MAX_NUM_THREADS_VARS):
            threads = max(joblib.cpu_count() // n_jobs, 1)  # else the user's variables rule
        env = self._prepare_worker_env(n_jobs)
        initializer = settings.get("initializer")
        initargs = tuple(settings.get("initargs", ()))
        max_tasks = settings.get("max_tasks_per_child")
        max_memory = settings.get("max_memory_per_child")

        def make() -> Pool:
            pool = Pool(
                n_jobs,
                _start_worker,
                (env, threads, initializer, initargs),
                max_tasks,
                context,
                max_memory_per_child=max_memory,
            )
            # joblib meters what is in flight itself (pre_dispatch) and sizes its
            # batches to run long enough (auto batching); a batch queued in a busy
            # worker would wait behind a slow one while another worker is idle, as
            # loky's shared call queue never lets it. So a worker holds one batch at
            # a time.
            dispatcher = pool._dispatcher
            if dispatcher is not None:
                dispatcher.max_held = 1
            return pool

        key = (
            n_jobs,
            context.get_start_method(),
            max_tasks,
            max_memory,
            threads,
            env,
            initializer,
            len(initargs),
            *initargs,
        )
        self._pool = _REUSABLE.take(key, make)
        self._task_timeout = task_timeout
        self.parallel = parallel
        return n_jobs

    def submit(self, func: Any, callback: Callable[[Any], object] | None = None) -> Any:
        """Run one joblib batch in a worker; ``callback`` gets its ``_Outcome``.

        Raises:
            RuntimeError: the backend has no pool (not configured, or terminated).
        """
        pool = self._pool
        if pool is None:
            raise RuntimeError(
                "the proctor joblib backend has no pool: it was terminated, or used "
                "without configure() (Parallel calls it)"
            )
        timeout = None
        if self._task_timeout is not None:
            timeout = self._task_timeout * max(_length(func), 1)
        on_value = on_error = None
        if callback is not None:

            def on_value(value: Any) -> None:
                callback(_Outcome(value, None))

            def on_error(error: BaseException) -> None:
                callback(_Outcome(None, error))

        return pool.apply_async(
            run_batch, (_Batch(func),), callback=on_value, error_callback=on_error, timeout=timeout
        )

    # joblib before 1.5 calls apply_async.
    apply_async = submit

    def retrieve_result_callback(self, out: _Outcome) -> Any:
        """The batch's results, or raise its error (the worker's traceback as ``__cause__``)."""
        if out.error is not None:
            raise out.error
        return out.value

    def terminate(self) -> None:
        """The ``Parallel`` call is over (every batch is done): its pool's workers are
        kept for the next call, or, if the pool is not the one kept, closed and joined."""
        pool, self._pool = self._pool, None
        if pool is not None and not _REUSABLE.give_back(pool):
            _close(pool)
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Stop every batch (their workers are killed); start a new pool if ``ensure_ready``."""
        pool, self._pool = self._pool, None
        if pool is not None:
            _REUSABLE.forget(pool)
            pool.terminate()  # joins the dispatcher: no callback of the call runs after
        if self.parallel is not None:
            _drop_undispatched_batches(self.parallel)
        self.reset_batch_stats()
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel, **self._configured)

    def __repr__(self) -> str:
        state = "running" if self._pool is not None else "idle"
        return f"<proctor.joblib.ProctorBackend {state} options={self._options!r}>"


def _drop_undispatched_batches(parallel: Any) -> None:
    """Empty the aborted call's batches that joblib cut from its input but never sent.

    ``Parallel.dispatch_one_batch`` cuts ``n_jobs`` batches from the input at a time
    and keeps those it has not sent yet in ``Parallel._ready_batches``; joblib (up to
    1.6 at least) does not empty that queue when a call is aborted, and takes from it
    first at the next call. A ``Parallel`` reused after an error -- ``with
    Parallel(...) as parallel:`` -- then ran the old call's leftovers first and
    returned their results at the head of the new call's (seen: ``[5, 0, 1, 4, 9,
    16]`` for five squares, in about one run in ten). Nothing else reads the queue
    once the pool's dispatcher has stopped.
    """
    ready = getattr(parallel, "_ready_batches", None)
    if not isinstance(ready, queue.Queue):
        return  # a joblib without it has nothing to leave behind
    while True:
        try:
            ready.get_nowait()
        except queue.Empty:
            return


def _length(func: Any) -> int:
    try:
        return len(func)
    except TypeError:
        return 1


def _check_options(options: dict[str, Any], allow_joblib: bool) -> dict[str, Any]:
    """The backend's options from ``options``, checked (joblib's own dropped if allowed).

    Raises:
        TypeError: an unknown option, or one of the wrong type.
        ValueError: one of the wrong value.
    """
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if name == "context" and allow_joblib and not isinstance(value, _context.BaseContext):
            continue  # joblib's multiprocessing context, passed to every backend
        if name not in _OPTIONS:
            if allow_joblib and name in _JOBLIB_OPTIONS:
                continue
            raise TypeError(
                f"the proctor joblib backend got an unknown option {name!r}; it takes "
                f"{', '.join(_OPTIONS)} (and inner_max_num_threads)"
            )
        checked[name] = value
    if "task_timeout" in checked:
        checked["task_timeout"] = _check_task_timeout(checked["task_timeout"], "task_timeout")
    if checked.get("start_method") is not None:
        _context.get_context(checked["start_method"])  # ValueError/TypeError if unknown
    context = checked.get("context")
    if context is not None and not isinstance(context, _context.BaseContext):
        raise TypeError(
            "context must be a proctor context (proctor.get_context('spawn')) or None, "
            f"not {type(context).__name__}; or pass start_method='spawn'"
        )
    if context is not None and checked.get("start_method") is not None:
        raise ValueError("pass start_method or context, not both")
    initializer = checked.get("initializer")
    if initializer is not None and not callable(initializer):
        raise TypeError(f"initializer must be callable or None, not {type(initializer).__name__}")
    return checked


def register(name: str = "proctor") -> None:
    """Register ``ProctorBackend`` with joblib under ``name`` (``import proctor.joblib`` does)."""
    joblib.register_parallel_backend(name, ProctorBackend)
