"""proctor.pool.ThreadPool: the stdlib ThreadPool's API on the process pool's dispatcher.

Tasks run in threads of this process and are passed as they are (never pickled).
Every wait has a timeout; blocking tasks wait on events the test sets.
"""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

import proctor
from helpers import wait_until
from proctor._pool._pool import READ_AHEAD_PER_WORKER
from proctor.pool import ThreadPool

TIMEOUT = 30


def _square(x):
    return x * x


def _fail(message):
    raise ValueError(message)


def _fail_at_five(x):
    if x == 5:
        raise ValueError(x)
    return x


def test_imap_yields_the_values_of_a_failed_chunk_before_its_error():
    with ThreadPool(2) as pool:
        iterator = pool.imap(_fail_at_five, range(10), chunksize=4)
        # The chunk of 4-7 fails at 5: 4 comes first, 6 and 7 did not run.
        assert [iterator.next(TIMEOUT) for _ in range(5)] == [0, 1, 2, 3, 4]
        with pytest.raises(ValueError, match="5"):
            iterator.next(TIMEOUT)
        assert list(iterator) == [8, 9]


def test_the_stdlib_api_gives_the_stdlib_results():
    with ThreadPool(3) as pool:
        assert pool.apply(_square, (5,)) == 25
        assert pool.apply(_square, (), {"x": 3}) == 9
        assert pool.map(_square, range(10)) == [x * x for x in range(10)]
        assert pool.map(_square, range(100), chunksize=7) == [x * x for x in range(100)]
        assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert pool.map_async(_square, range(5)).get(TIMEOUT) == [0, 1, 4, 9, 16]
        assert pool.starmap_async(pow, [(2, 5)]).get(TIMEOUT) == [32]
        assert list(pool.imap(_square, range(10), chunksize=3)) == [x * x for x in range(10)]
        assert sorted(pool.imap_unordered(_square, range(10))) == [x * x for x in range(10)]
        assert pool.map(_square, []) == []
        result = pool.apply_async(_square, (4,))
        result.wait(TIMEOUT)
        assert result.ready() and result.successful() and result.get(0) == 16


def test_objects_are_passed_as_they_are_not_pickled():
    lock = threading.Lock()  # cannot be pickled
    items: list[int] = []
    with ThreadPool(2) as pool:
        assert pool.apply(lambda x: x, (lock,)) is lock
        pool.map(items.append, range(5))
    assert sorted(items) == [0, 1, 2, 3, 4]  # the caller's list, mutated by the workers


def test_a_task_exception_comes_back_as_itself():
    with ThreadPool(2) as pool:
        result = pool.apply_async(_fail, ("bad input",))
        with pytest.raises(ValueError, match="bad input") as info:
            result.get(TIMEOUT)
        assert not result.successful()
        assert info.value.__cause__ is None  # no RemoteTraceback: the stdlib's does not wrap
        with pytest.raises(ValueError, match="bad input"):
            pool.map(_fail, ["bad input"])
        assert pool.apply(_square, (2,)) == 4


def test_callbacks_run_before_get_returns():
    values: list[object] = []
    errors: list[BaseException] = []
    with ThreadPool(2) as pool:
        pool.apply_async(_square, (3,), callback=values.append).get(TIMEOUT)
        pool.map_async(int, ["a"], error_callback=errors.append).wait(TIMEOUT)
    assert values == [9]
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_imap_reads_its_input_lazily():
    read: list[int] = []

    def endless():
        n = 0
        while True:
            read.append(n)
            yield n
            n += 1

    with ThreadPool(2) as pool:
        iterator = pool.imap(_square, endless(), chunksize=1)
        assert [iterator.next(TIMEOUT) for _ in range(5)] == [0, 1, 4, 9, 16]
        # What was consumed, plus at most the read-ahead: not the endless rest.
        assert len(read) <= 5 + READ_AHEAD_PER_WORKER * 2


def test_a_thread_pool_left_after_an_imap_loop_with_break_is_collected_and_its_threads_end():
    # Its dispatcher held the iterator, which held the pool: its threads lived on.
    def leave_a_loop():
        pool = ThreadPool(2)
        for _value in pool.imap(_square, range(1000), chunksize=1):
            break
        return pool._dispatcher

    with pytest.warns(ResourceWarning, match="unclosed pool"):
        dispatcher = leave_a_loop()
        gc.collect()
    dispatcher._thread.join(TIMEOUT)
    assert not dispatcher._thread.is_alive()


def test_close_and_join_run_every_task_then_the_threads_end():
    pool = ThreadPool(2)
    mapped = pool.map_async(_square, range(50))
    iterator = pool.imap(_square, range(40))
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(_square, (1,))
    pool.join(TIMEOUT)
    assert mapped.get(0) == [x * x for x in range(50)]
    assert list(iterator) == [x * x for x in range(40)]
    assert not [t for t in threading.enumerate() if t.name.startswith("PoolWorker")]


def test_worker_threads_are_named_as_pool_workers():
    with ThreadPool(2) as pool:
        names = pool.map(lambda _: threading.current_thread().name, range(4), chunksize=1)
    assert all(name.startswith("PoolWorker-") for name in names), names


def test_terminate_fails_unfinished_results_and_abandons_a_running_task():
    release = threading.Event()
    started = threading.Event()

    def block():
        started.set()
        release.wait(TIMEOUT)
        return "done late"

    with ThreadPool(1) as pool:
        running = pool.apply_async(block)
        waiting = pool.apply_async(_square, (3,))
        assert started.wait(TIMEOUT)
    # The with block terminated the pool: nothing waits for ever.
    for result in (running, waiting):
        with pytest.raises(proctor.PoolTerminatedError):
            result.get(TIMEOUT)
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(_square, (1,))
    release.set()  # the abandoned thread finishes its task and ends
    pool.join(TIMEOUT)
    workers = [t for t in threading.enumerate() if t.name.startswith("PoolWorker")]
    for thread in workers:
        thread.join(TIMEOUT)
    assert not any(t.is_alive() for t in workers)


def test_the_initializer_runs_in_each_worker_and_a_failing_one_breaks_the_pool():
    seen: list[str] = []
    lock = threading.Lock()

    def init(tag):
        with lock:
            seen.append(tag)

    pool = ThreadPool(3, initializer=init, initargs=("ready",))
    assert pool.map(_square, range(6), chunksize=1) == [x * x for x in range(6)]
    pool.close()
    pool.join(TIMEOUT)
    assert seen == ["ready"] * 3

    with ThreadPool(1, initializer=_fail, initargs=("no init",)) as broken:
        with pytest.raises(proctor.InitializerError) as info:
            broken.apply(_square, (2,))
        assert isinstance(info.value.__cause__, ValueError)


def test_bad_arguments_and_timeouts_raise():
    with pytest.raises(ValueError, match="at least 1"):
        ThreadPool(0)
    with pytest.raises(TypeError, match="initializer"):
        ThreadPool(1, initializer=3)  # type: ignore[arg-type]
    with ThreadPool(1) as pool:
        with pytest.raises(ValueError, match="cannot stop a running thread"):
            pool.apply(_square, (2,), timeout=1)
        with pytest.raises(ValueError, match="cannot stop a running thread"):
            pool.map(_square, [1], task_timeout=1)
        assert "ThreadPool state=running" in repr(pool)
        with pytest.raises(TypeError, match="cannot be pickled"):
            import pickle

            pickle.dumps(pool)


def test_threadpool_is_in_proctor_pool_with_the_stdlib_signature():
    import inspect
    import multiprocessing.pool

    assert proctor.pool.ThreadPool is ThreadPool
    ours = list(inspect.signature(ThreadPool).parameters)
    theirs = list(inspect.signature(multiprocessing.pool.ThreadPool).parameters)
    assert ours == theirs


class _Counted:
    pass


def _identity(x):
    return x


def test_finished_tasks_arguments_and_results_are_not_kept():
    # bpo-29861 (the suite's test_release_task_refs): an idle worker thread held its
    # last result, and with it the task's objects.
    with ThreadPool(4) as pool:
        objs = [_Counted() for _ in range(10)]
        refs = [weakref.ref(o) for o in objs]
        assert pool.map(_identity, objs, chunksize=1) == objs
        del objs

        def all_gone():
            gc.collect()
            return all(r() is None for r in refs)

        wait_until(all_gone, timeout=TIMEOUT)
    pool.join()


def _exit_at_three(x):
    if x == 3:
        raise SystemExit(7)
    return x


def test_a_task_raising_systemexit_fails_with_what_ended_its_thread(monkeypatch):
    # The thread dies of it (in a thread it belongs to the program); the task's error
    # said a process died ("exit code 0", "SIGKILL often means the OOM killer"), the
    # parent's pid for its pid, and lost the SystemExit.
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # (no report on stderr)
    with ThreadPool(2) as pool:
        result = pool.map_async(_exit_at_three, range(6), chunksize=1)
        with pytest.raises(proctor.WorkerLostError) as info:
            result.get(TIMEOUT)
        message = str(info.value)
        assert "pool worker thread" in message and "SystemExit(7)" in message
        assert "input item 3" in message
        assert "SIGKILL" not in message and "exit code" not in message
        assert isinstance(info.value.__cause__, SystemExit)
        assert info.value.__cause__.code == 7
        assert pool.map(_square, range(5)) == [0, 1, 4, 9, 16]  # replaced: the pool goes on
