"""proctor.joblib: joblib.Parallel and scikit-learn on proctor's pool.

joblib and scikit-learn are in the ``test`` extra, so CI runs these; without them the
module is skipped with the reason. The functions the workers run are module-level,
so spawn and forkserver workers import them by name.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import warnings

import pytest

import proctor
from helpers import wait_until

joblib = pytest.importorskip("joblib", reason="joblib is not installed (pip install '.[test]')")
proctor_joblib = pytest.importorskip("proctor.joblib")
from joblib import Parallel, delayed, parallel_backend, parallel_config  # noqa: E402
from joblib import parallel as joblib_parallel  # noqa: E402

from proctor._integrations import _joblib as backend_module  # noqa: E402

TIMEOUT = 60
JOBLIB_VERSION = tuple(int(p) for p in joblib.__version__.split(".")[:2])

# What the initializer installs in each worker (see _install).
_worker_state: dict[str, object] = {}


def _install(release):
    _worker_state["release"] = release


def square(x):
    return x * x


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


def kill_self_on(x, bad):
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def block_on(x, bad):
    """Wait for the test's release event (which never comes) when ``x == bad``."""
    if x == bad:
        _worker_state["release"].wait(TIMEOUT)
    return x


def wait_for_release(x):
    """Return 0 at once; any other input only once the test sets the release event."""
    if x != 0:
        assert _worker_state["release"].wait(TIMEOUT), "the test never released the task"
    return x


def where(x):
    return os.getpid(), proctor.get_start_method(), os.environ.get("OMP_NUM_THREADS")


def native_threads(x):
    import threadpoolctl

    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info()]


def log_from_worker(x):
    logging.getLogger("proctor.test_joblib").warning("record %d from pid %d", x, os.getpid())
    return x


def nested(n):
    backend = joblib.parallel.get_active_backend()[0]
    values = Parallel(n_jobs=2, timeout=TIMEOUT)(delayed(abs)(-i) for i in range(n))
    return type(backend).__name__, values


def nested_proctor(n):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = Parallel(n_jobs=2, backend="proctor", timeout=TIMEOUT)(
            delayed(abs)(-i) for i in range(n)
        )
        with parallel_config(backend="proctor"):
            jobs = joblib.effective_n_jobs(2)
    return values, jobs, [str(w.message) for w in caught]


@pytest.fixture(autouse=True)
def _no_kept_workers():
    """The workers kept between Parallel calls are closed after each test (before the
    leak check, which would see them as left behind)."""
    yield
    proctor_joblib.shutdown_workers()


# -- importing ----------------------------------------------------------------------------


def _run_python(code):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )


def test_importing_proctor_does_not_import_joblib():
    done = _run_python(
        "import sys, proctor, proctor.pool\n"
        "assert 'joblib' not in sys.modules, 'joblib imported'\n"
        "import proctor.joblib\n"
        "assert 'joblib' in sys.modules\n"
        "import joblib.parallel\n"
        "assert joblib.parallel.BACKENDS['proctor'] is proctor.joblib.ProctorBackend\n"
    )
    assert done.returncode == 0, done.stderr


def test_without_joblib_the_import_error_says_how_to_install_it():
    done = _run_python(
        "import sys\n"
        "sys.modules['joblib'] = None  # as if not installed\n"
        "try:\n"
        "    import proctor.joblib\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'proctor[joblib]'" in done.stdout


# -- results, errors, options -------------------------------------------------------------


def test_parallel_returns_results_in_order(start_method):
    with parallel_config(backend="proctor", n_jobs=2, start_method=start_method):
        assert Parallel(timeout=TIMEOUT)(delayed(square)(i) for i in range(50)) == [
            i * i for i in range(50)
        ]
        places = Parallel(batch_size=1, timeout=TIMEOUT)(delayed(where)(i) for i in range(4))
    assert {method for _, method, _ in places} == {start_method}
    assert os.getpid() not in {pid for pid, _, _ in places}


def _run_on_kept_pool(**config):
    """Run a few calls; return (the pool kept afterwards, the workers' pids)."""
    with parallel_config(backend="proctor", n_jobs=2, **config):
        places = Parallel(batch_size=1, timeout=TIMEOUT)(delayed(where)(i) for i in range(6))
    return backend_module._REUSABLE._pool, {pid for pid, _, _ in places}


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_are_kept_for_the_next_call_with_the_same_settings():
    kept, pids = _run_on_kept_pool()
    assert kept is not None
    assert all(_alive(pid) for pid in pids)  # between the calls
    again, _ = _run_on_kept_pool()
    assert again is kept  # no new workers started
    # Other settings: the kept workers are closed (joined), the new ones kept instead.
    other, other_pids = _run_on_kept_pool(start_method="spawn")
    assert other is not kept
    assert not any(_alive(pid) for pid in pids)
    proctor_joblib.shutdown_workers()
    assert backend_module._REUSABLE._pool is None
    assert not any(_alive(pid) for pid in other_pids)


def test_an_initializer_argument_is_compared_by_identity(ctx):
    release, other = ctx.Event(), ctx.Event()
    first, _ = _run_on_kept_pool(context=ctx, initializer=_install, initargs=(release,))
    same, _ = _run_on_kept_pool(context=ctx, initializer=_install, initargs=(release,))
    changed, _ = _run_on_kept_pool(context=ctx, initializer=_install, initargs=(other,))
    assert same is first
    assert changed is not first


def test_two_calls_at_once_get_a_pool_each_and_only_one_is_kept():
    with Parallel(n_jobs=2, backend="proctor", timeout=TIMEOUT) as outer:
        held = outer._backend._pool
        assert outer(delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]
        with Parallel(n_jobs=2, backend="proctor", timeout=TIMEOUT) as inner:
            separate = inner._backend._pool
            assert separate is not held  # the kept one is in use
            assert inner(delayed(square)(i) for i in range(3)) == [0, 1, 4]
        assert separate._dispatcher.state != "running"  # closed and joined, not kept
    assert backend_module._REUSABLE._pool is held


def test_a_killed_worker_leaves_the_kept_pool_usable():
    kept, _ = _run_on_kept_pool()
    with pytest.raises(proctor.WorkerLostError):
        Parallel(n_jobs=2, backend="proctor", timeout=TIMEOUT, batch_size=1)(
            delayed(kill_self_on)(i, 2) for i in range(6)
        )
    # joblib aborted that call: its pool was terminated and forgotten, never reused.
    assert kept._dispatcher.state != "running"
    fresh, pids = _run_on_kept_pool()
    assert fresh is not kept and all(_alive(pid) for pid in pids)


def _report_workers(queue):
    _, pids = _run_on_kept_pool()
    proctor_joblib.shutdown_workers()
    queue.put(pids)


def test_a_forked_child_starts_its_own_workers_not_the_kept_ones():
    kept, parent_workers = _run_on_kept_pool()
    ctx = proctor.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_report_workers, args=(queue,))
    child.start()
    child_workers = queue.get(timeout=TIMEOUT)
    child.join(TIMEOUT)
    assert child.exitcode == 0
    assert child_workers and not child_workers & parent_workers
    assert backend_module._REUSABLE._pool is kept  # the parent's, untouched
    assert all(_alive(pid) for pid in parent_workers)
    queue.close()


def test_kept_workers_are_closed_after_the_idle_timeout(monkeypatch):
    monkeypatch.setattr(backend_module, "IDLE_WORKER_TIMEOUT", 0.2)
    kept, pids = _run_on_kept_pool()
    assert kept is not None
    wait_until(lambda: backend_module._REUSABLE._pool is None, timeout=TIMEOUT)
    wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=TIMEOUT)


def test_the_older_parallel_backend_works_too():
    with parallel_backend("proctor", n_jobs=2):
        pids = Parallel(timeout=TIMEOUT)(delayed(where)(i) for i in range(3))
    assert os.getpid() not in {pid for pid, _, _ in pids}


def test_effective_n_jobs():
    with parallel_config(backend="proctor"):
        assert joblib.effective_n_jobs(-1) == joblib.cpu_count()
        assert joblib.effective_n_jobs(-2) == max(joblib.cpu_count() - 1, 1)
        assert joblib.effective_n_jobs(None) == 1
        assert joblib.effective_n_jobs(3) == 3
        with pytest.raises(ValueError, match="n_jobs == 0"):
            joblib.effective_n_jobs(0)


def test_n_jobs_1_runs_here_and_warns_that_task_timeout_cannot_apply():
    with parallel_config(backend="proctor", n_jobs=1):
        assert Parallel()(delayed(where)(i) for i in range(2))[0][0] == os.getpid()  # here: no wait
    with (
        parallel_config(backend="proctor", n_jobs=1, task_timeout=TIMEOUT),
        pytest.warns(UserWarning, match="task_timeout has no effect with n_jobs=1"),
    ):
        assert Parallel()(delayed(where)(i) for i in range(2))[0][0] == os.getpid()  # here: no wait


def test_a_task_exception_comes_back_with_the_worker_traceback():
    with pytest.raises(ValueError, match="bad input 3") as info:
        Parallel(n_jobs=2, backend="proctor", timeout=TIMEOUT)(
            delayed(fail_on)(i, 3) for i in range(8)
        )
    assert isinstance(info.value.__cause__, proctor.pool.RemoteTraceback)
    assert "fail_on" in str(info.value.__cause__)


def test_a_killed_worker_raises_worker_lost_and_the_backend_goes_on():
    with Parallel(n_jobs=2, backend="proctor", timeout=TIMEOUT, batch_size=1) as parallel:
        with pytest.raises(proctor.WorkerLostError, match="SIGKILL") as info:
            parallel(delayed(kill_self_on)(i, 2) for i in range(6))
        assert info.value.exitcode == -signal.SIGKILL
        assert "kill_self_on(2" in str(info.value)
        # The same (managed) backend runs the next call on a fresh pool.
        assert parallel(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
    assert Parallel(n_jobs=2, backend="proctor", timeout=TIMEOUT)(
        delayed(square)(i) for i in range(3)
    ) == [0, 1, 4]


def test_an_aborted_call_leaves_no_batch_for_the_next_call_of_the_same_parallel():
    # joblib cuts n_jobs batches from the input at a time and queues those it has not
    # sent; when a worker's death aborts the call between the cut and the send, the
    # leftover used to run first in the next call and its result led the output
    # (test_a_killed_worker_raises_worker_lost_and_the_backend_goes_on, about one
    # run in ten). Here the leftover is put there directly.
    with Parallel(n_jobs=2, backend="proctor", timeout=TIMEOUT, batch_size=1) as parallel:
        leftover = joblib_parallel.BatchedCalls(
            [(square, (7,), {})], parallel._backend.get_nested_backend()
        )
        parallel._ready_batches.put(leftover)
        parallel._backend.abort_everything(ensure_ready=True)
        assert parallel._ready_batches.empty()
        assert parallel(delayed(square)(i) for i in range(3)) == [0, 1, 4]


def test_task_timeout_stops_a_hung_call(ctx):
    release = ctx.Event()
    config = {"task_timeout": 0.5, "context": ctx, "initializer": _install, "initargs": (release,)}
    with (
        parallel_config(backend="proctor", n_jobs=2, **config),
        pytest.raises(proctor.TaskTimeoutError) as info,
    ):
        Parallel(batch_size=1, timeout=TIMEOUT)(delayed(block_on)(i, 1) for i in range(4))
    assert "block_on(1" in str(info.value)
    assert info.value.timeout == 0.5


@pytest.mark.skipif(JOBLIB_VERSION < (1, 5), reason="Parallel(**backend_kwargs) is joblib 1.5+")
def test_options_passed_to_parallel_itself():
    release = proctor.Event()
    parallel = Parallel(
        n_jobs=2,
        backend="proctor",
        timeout=TIMEOUT,
        batch_size=1,
        task_timeout=0.5,
        initializer=_install,
        initargs=(release,),
    )
    with pytest.raises(proctor.TaskTimeoutError):
        parallel(delayed(block_on)(i, 0) for i in range(2))


def test_wrong_options_raise():
    with pytest.raises(TypeError, match="unknown option 'timeout_s'"):
        parallel_config(backend="proctor", timeout_s=3)
    with pytest.raises(ValueError, match="task_timeout must be a positive"):
        parallel_config(backend="proctor", task_timeout=0)
    with pytest.raises(ValueError, match="start method"):
        parallel_config(backend="proctor", start_method="vfork")
    with pytest.raises(TypeError, match="must be a proctor context"):
        import multiprocessing

        parallel_config(backend="proctor", context=multiprocessing.get_context("spawn"))


def test_workers_get_a_share_of_the_cpus_for_native_threads():
    with parallel_config(backend="proctor", n_jobs=2, inner_max_num_threads=1):
        _, _, threads = Parallel(timeout=TIMEOUT)(delayed(where)(i) for i in range(2))[0]
    assert threads == "1"


def test_forked_workers_have_their_loaded_blas_limited_through_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    pytest.importorskip("numpy")  # loads its BLAS here, before the fork
    if not threadpoolctl.threadpool_info():
        pytest.skip("no native thread pool loaded here")
    config = {"start_method": "fork", "inner_max_num_threads": 1}
    with parallel_config(backend="proctor", n_jobs=2, **config):
        counts = Parallel(timeout=TIMEOUT)(delayed(native_threads)(i) for i in range(2))
    assert counts[0] and set(counts[0]) == {1}


# -- streaming, nesting, logs ------------------------------------------------------------


@pytest.mark.skipif(JOBLIB_VERSION < (1, 3), reason="return_as is joblib 1.3+")
def test_return_as_generator_streams_results(ctx):
    release = ctx.Event()
    config = {"context": ctx, "initializer": _install, "initargs": (release,)}
    with parallel_config(backend="proctor", n_jobs=2, **config):
        results = Parallel(return_as="generator", batch_size=1, timeout=TIMEOUT)(
            delayed(wait_for_release)(i) for i in range(4)
        )
        # The first result arrives while the others are still held in the workers.
        assert next(results) == 0
        release.set()
        assert list(results) == [1, 2, 3]


@pytest.mark.skipif(JOBLIB_VERSION < (1, 4), reason="generator_unordered is joblib 1.4+")
def test_generator_unordered_returns_what_is_done_while_a_call_is_stuck():
    release = proctor.Event()
    config = {"initializer": _install, "initargs": (release,)}
    with parallel_config(backend="proctor", n_jobs=2, **config):
        results = Parallel(return_as="generator_unordered", batch_size=1, timeout=TIMEOUT)(
            delayed(block_on)(i, 1) for i in range(10)
        )
        # No call waits behind the stuck one in its worker: the other worker runs them.
        assert sorted(next(results) for _ in range(9)) == [0, 2, 3, 4, 5, 6, 7, 8, 9]
        release.set()
        assert list(results) == [1]


def test_nested_parallel_runs_on_threads_in_the_worker():
    outer = Parallel(n_jobs=2, backend="proctor", timeout=TIMEOUT)(
        delayed(nested)(n) for n in (2, 3)
    )
    assert outer == [("ThreadingBackend", [0, 1]), ("ThreadingBackend", [0, 1, 2])]


def test_an_explicit_nested_proctor_parallel_runs_sequentially_in_the_worker():
    [(values, jobs, caught)] = Parallel(n_jobs=2, backend="proctor", timeout=TIMEOUT)(
        delayed(nested_proctor)(n) for n in (3,)
    )
    assert values == [0, 1, 2]
    assert jobs == 1
    assert any("cannot run inside a pool worker" in text for text in caught)


def test_worker_log_records_reach_the_parents_handlers(start_method):
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("proctor.test_joblib")
    handler = Keep()
    logger.addHandler(handler)
    try:
        with parallel_config(backend="proctor", n_jobs=2, start_method=start_method):
            # Every record is handled before its task's result is delivered: each
            # call's record is there when its value comes out of the generator, the
            # workers running on for the next call.
            arrived = [
                f"record {value}" in {r.getMessage().rsplit(" from pid ", 1)[0] for r in records}
                for value in Parallel(timeout=TIMEOUT, return_as="generator")(
                    delayed(log_from_worker)(i) for i in range(3)
                )
            ]
            texts = sorted(r.getMessage().rsplit(" from pid ", 1)[0] for r in records)
    finally:
        logger.removeHandler(handler)
    assert arrived == [True, True, True]
    assert texts == ["record 0", "record 1", "record 2"]
    assert os.getpid() not in {r.process for r in records}


# -- scikit-learn -------------------------------------------------------------------------


def test_grid_search_gives_the_same_result_as_n_jobs_1(start_method):
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install '.[test]')")
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.1, 1, 10], "gamma": ["scale", 0.1]}
    alone = GridSearchCV(SVC(), grid, cv=3, n_jobs=1).fit(X, y)
    with parallel_config(backend="proctor", start_method=start_method):
        spread = GridSearchCV(SVC(), grid, cv=3, n_jobs=2).fit(X, y)
    assert spread.best_params_ == alone.best_params_
    assert list(spread.cv_results_["mean_test_score"]) == list(alone.cv_results_["mean_test_score"])
