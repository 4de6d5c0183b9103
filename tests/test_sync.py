"""Locks, semaphores, conditions, events and barriers: across processes and dead holders.

Lock, RLock, Semaphore and BoundedSemaphore have two implementations (the C
accelerator and pure Python, see proctor/_sync/_accel.py): the tests of those
primitives take the ``impl`` fixture and run under each, in this one run.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest

import proctor
from helpers import START_METHODS, call_in_thread, finish, pid_exists, shm_entries, wait_until
from proctor import OwnerDiedWarning, _sync
from proctor._core import _wait
from proctor._core._anonmem import AnonymousMemory
from proctor._core._sharedwords import PID_MASK
from proctor._reaper import _client as _reaper
from proctor._sync import (
    Barrier,
    BoundedSemaphore,
    BrokenBarrierError,
    Condition,
    Event,
    Lock,
    LockNotOwnedError,
    RLock,
    Semaphore,
    _condition,
)

# An unexpected OwnerDiedWarning (a live holder taken for dead) fails the test;
# the tests that expect one catch it with pytest.warns.
pytestmark = pytest.mark.filterwarnings("error::proctor.OwnerDiedWarning")

# Generous upper bound for "returns promptly" checks: a behaviour check, not speed.
SLACK = 5.0


@pytest.fixture(scope="module", autouse=True)
def _reaper_connected():
    """Open this process's reaper connection before leak checks take a baseline."""
    _reaper.ensure_started()
    yield


# -- the two implementations ---------------------------------------------------------

IMPLS = tuple(_sync.IMPLEMENTATIONS)  # ("native", "python")
ACTIVE = _sync.ACTIVE
OTHER = next(name for name in IMPLS if name != ACTIVE)


@pytest.fixture
def impl(request, monkeypatch):
    """Run the test with ``request.param``'s Lock, RLock, Semaphore, BoundedSemaphore.

    The test module's names, and the default locks of Condition, Event and
    Barrier, are that implementation's for the test (and in forked children);
    objects sent to a spawned child keep their class there.
    """
    classes = _sync.IMPLEMENTATIONS[request.param]
    if classes is None:
        pytest.skip(
            "the C accelerator is not built or is turned off here "
            "(test_sync_accel.py checks where it must be built)"
        )
    for name, cls in classes.items():
        monkeypatch.setitem(globals(), name, cls)
        if name in ("Lock", "RLock"):
            monkeypatch.setattr(_condition, name, cls)
    return request.param


#: Every test of a lock primitive runs under both implementations.
both = pytest.mark.parametrize("impl", IMPLS, indirect=True)
#: With a start method too: the active implementation under each method, the
#: other one under fork (what a start method changes is shared by both: the
#: pickled object names its class, rebuilt the same way).
methods_and_both = pytest.mark.parametrize(
    ("start_method", "impl"),
    [(method, ACTIVE) for method in START_METHODS] + [("fork", OTHER)],
    indirect=["impl"],
)
#: The central guarantees: each implementation under every start method.
every_method_and_both = pytest.mark.parametrize(
    ("start_method", "impl"),
    [(method, name) for name in IMPLS for method in START_METHODS],
    indirect=["impl"],
)


def _process(ctx, target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


def _kill_unfinished(*procs):
    """Clean up after a failed test: kill what _finish did not collect."""
    for p in procs:
        try:
            if p.exitcode is None:
                p.kill()
                p.join(30)
            p.close()
        except ValueError:
            pass  # already closed by _finish


def _words(mem):
    return memoryview(mem).cast("q")


# --- child targets --------------------------------------------------------------


def count_under_lock(lock, mem, n):
    words = _words(mem)
    for _ in range(n):
        with lock:
            words[0] += 1
    return "done"


def hold_and_hang(lock, ready):
    lock.acquire()
    if type(lock).__name__ == "RLock":  # (either implementation; spawned children too)
        lock.acquire()  # die two levels deep
    ready.set()
    while True:
        time.sleep(1)


def take_without_recording_and_hang(lock, ready):
    """Take the OS semaphore but die before recording ownership (the limbo window)."""
    lock._try(False)
    ready.set()
    while True:
        time.sleep(1)


def hold_until(lock, ready, go):
    with lock:
        ready.set()
        go.wait(30)


def acquire_and_report(lock, timeout):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = lock.acquire(timeout=timeout)
    messages = [str(w.message) for w in caught if issubclass(w.category, OwnerDiedWarning)]
    if got:
        lock.release()
    return got, messages


def wait_on_condition(cond, mem, timeout):
    words = _words(mem)
    with cond:
        words[1] += 1  # tells the parent this waiter is inside wait()
        notified = cond.wait(timeout)
        words[0] += 1
    return notified


def use_everything(lock, rlock, sem, bsem, cond, event, barrier, mem):
    """Exercise every primitive from a child; return what it saw."""
    words = _words(mem)
    seen = {}
    with lock:
        words[0] += 1
    with rlock, rlock:
        words[0] += 1
    sem.release()
    seen["bsem"] = bsem.acquire(timeout=10)
    with cond:
        words[1] = 1
        cond.notify_all()
    seen["event"] = event.wait(10)
    seen["barrier"] = barrier.wait(10)
    return seen


def wait_at_barrier(barrier, timeout):
    try:
        return barrier.wait(timeout)
    except BrokenBarrierError as exc:
        return f"broken: {exc}"


def set_event_later(event, go):
    go.wait(10)
    event.set()


class _DieOnPost:
    """Stands in for a condition's wake-up semaphore: SIGKILL at the first post.

    Installed in a notifier process only, it kills that process exactly between
    marking waiters notified and posting their wake-ups -- no timing involved.
    """

    def __init__(self, sem):
        self._sem = sem

    def acquire(self, *args):
        return self._sem.acquire(*args)

    def release(self):
        os.kill(os.getpid(), signal.SIGKILL)


class _Interrupted(Exception):
    """Raised by the signal handler of :func:`_interrupt_main_thread_once`."""


@contextlib.contextmanager
def _interrupt_main_thread_once(ready):
    """Within the block, a signal handler raises ``_Interrupted`` in the main thread
    as soon as ``ready()`` is true (a thread waits for that, then signals the main
    thread itself, so a blocking call there is interrupted, not merely followed)."""
    main = threading.get_ident()

    def interrupt(signum, frame):
        raise _Interrupted

    def signal_when_ready():
        wait_until(ready, timeout=30)
        signal.pthread_kill(main, signal.SIGUSR1)

    old = signal.signal(signal.SIGUSR1, interrupt)
    sender, outcome = call_in_thread(signal_when_ready)
    try:
        yield
    finally:
        sender.join(30)
        signal.signal(signal.SIGUSR1, old)
    assert outcome == [None], outcome


def notify_and_die_before_posting(cond):
    cond._named.sem = _DieOnPost(cond._named.sem)
    with cond:
        cond.notify()  # (the post comes with the release: the lock is free by then)


def notify_and_die_holding_the_lock(cond):
    cond.acquire()
    cond.notify()
    os.kill(os.getpid(), signal.SIGKILL)  # marked, not posted, lock held


def set_and_die_before_posting(event):
    event._cond._named.sem = _DieOnPost(event._cond._named.sem)
    event.set()


def wait_on_condition_without_timeout(cond, mem):
    words = _words(mem)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cond:
            words[1] += 1
            notified = cond.wait()
    return notified, [str(w.message) for w in caught if issubclass(w.category, OwnerDiedWarning)]


def wait_for_event_without_timeout(event):
    return event.wait()


def wait_in_threads(obj, n, mem):
    """Wait on an Event or a Condition in ``n`` threads; return what each wait returned."""
    words = _words(mem)
    results = []

    def one():
        if isinstance(obj, Event):
            results.append(obj.wait(60))
            return
        with obj:
            words[0] += 1  # under the lock: the parent sees every waiter inside wait()
            results.append(obj.wait(60))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return results


class _Recorder:
    """Records every call of a semaphore's ``acquire(block, timeout)``."""

    def __init__(self, acquire):
        self._acquire = acquire
        self.calls = []

    def __call__(self, block=True, timeout=None):
        self.calls.append((block, timeout))
        return self._acquire(block, timeout)

    def sleeps(self):
        return [timeout for block, timeout in self.calls if block]


class _RecordingSem:
    def __init__(self, sem):
        self.sem = sem
        self.acquire = _Recorder(sem.acquire)
        self.release = sem.release


def _record_slices(monkeypatch, lock_class):
    """Have ``lock_class``'s C wait slice (a native lock's) record its sleeps.

    A Condition on a native lock sleeps through ``_native.wait_slice``, not its
    semaphore's ``acquire``: a _RecordingSem's recorder then gets its slices.
    """
    real = lock_class._wait_slice
    if real is None:
        return

    def wait_slice(sem, *args):
        if isinstance(sem, _RecordingSem):
            sem.acquire.calls.append((True, args[3]))
            sem = sem.sem
        return real(sem, *args)

    monkeypatch.setattr(lock_class, "_wait_slice", staticmethod(wait_slice))


# --- Lock -------------------------------------------------------------------------


def _probe_from_a_child(words, held, free, parent):
    return (words.held_elsewhere(held), words.held_elsewhere(free), words.process_alive(parent))


def test_a_liveness_probe_sees_another_processs_hold_and_takes_nothing():
    # The probe behind every dead-holder check (_sharedwords._probe): a byte another
    # process holds reads "held", a free one "free"; probing neither takes nor drops
    # a lock, so the holder still holds its byte afterwards.
    from proctor._core._anonmem import own_description_locks
    from proctor._core._sharedwords import SharedWords, ident

    words = SharedWords(1)
    held, free = words.ticket_byte(7), words.ticket_byte(8)
    assert words.try_hold(held)
    try:
        fork = proctor.get_context("fork")
        for _ in range(2):  # the second child sees the hold the first one probed
            p = fork.Process(target=_probe_from_a_child, args=(words, held, free, ident()))
            p.start()
            assert finish(p) == (0, (True, False, True))
        if own_description_locks():
            # Where the kernel answers who holds a byte (F_OFD_GETLK), this
            # process's own hold is not "elsewhere", and asking leaves it held.
            assert not words.held_elsewhere(held)
            p = fork.Process(target=_probe_from_a_child, args=(words, held, free, ident()))
            p.start()
            assert finish(p) == (0, (True, False, True))
    finally:
        words.let_go(held)
    p = proctor.get_context("fork").Process(
        target=_probe_from_a_child, args=(words, held, free, ident())
    )
    p.start()
    assert finish(p) == (0, (False, False, True))
    words.close()


@both
def test_lock_acquire_release_and_repr_show_state(impl):
    lock = Lock()
    assert repr(lock) == "<Lock(owner=None)>"
    assert lock.acquire() is True
    assert repr(lock) == "<Lock(owner=MainProcess)>"
    assert f"locked by pid {os.getpid()}" in lock._owner_text()
    assert lock.acquire(False) is False
    assert lock.acquire(timeout=0) is False
    lock.release()
    with lock:
        assert not lock.acquire(block=False)
    assert repr(lock) == "<Lock(owner=None)>"
    lock.close()
    assert repr(lock) == "<Lock(closed)>"


def _repr_from_thread(obj, name="Thread-x"):
    seen = []
    t = threading.Thread(target=lambda: seen.append(repr(obj)), name=name)
    t.start()
    t.join(10)
    return seen[0]


@both
def test_lock_and_rlock_reprs_name_the_holder_as_multiprocessing_does(impl):
    lock, rlock = Lock(), RLock()
    lock.acquire()
    rlock.acquire()
    rlock.acquire()
    assert _repr_from_thread(lock) == "<Lock(owner=SomeOtherThread)>"
    assert repr(rlock) == "<RLock(MainProcess, 2)>"
    assert _repr_from_thread(rlock) == "<RLock(SomeOtherThread, nonzero)>"
    lock.release()
    rlock.release()
    rlock.release()
    assert repr(rlock) == "<RLock(None, 0)>"

    def hold_and_look(obj):
        with obj:
            seen.append(repr(obj))

    seen: list[str] = []
    for obj in (lock, rlock):
        t = threading.Thread(target=hold_and_look, args=(obj,), name="Worker")
        t.start()
        t.join(10)
    assert seen == ["<Lock(owner=MainProcess|Worker)>", "<RLock(MainProcess|Worker, 1)>"]
    lock.close()
    rlock.close()
    assert repr(rlock) == "<RLock(closed)>"


def repr_while_holding(lock):
    with lock:
        return repr(lock)


@methods_and_both
def test_a_lock_held_in_a_child_shows_the_childs_name_there_and_another_process_here(ctx, impl):
    for cls, held_here in (
        (Lock, "<Lock(owner=SomeOtherProcess)>"),
        (RLock, "<RLock(SomeOtherProcess, nonzero)>"),
    ):
        lock, ready = cls(), Event()
        p = _process(ctx, hold_and_hang, lock, ready)
        try:
            assert ready.wait(30)
            assert repr(lock) == held_here
        finally:
            p.kill()
            finish(p)
        with pytest.warns(OwnerDiedWarning):
            assert lock.acquire(timeout=SLACK)
        lock.release()
        p = _process(ctx, repr_while_holding, lock)
        name = p.name
        exitcode, result = finish(p)
        assert exitcode == 0
        if cls is Lock:
            assert result == f"<Lock(owner={name})>"
        else:
            assert result == f"<RLock({name}, 1)>"
        lock.close()
        ready.close()


@both
def test_lock_release_when_unlocked_raises_value_error(impl):
    lock = Lock()
    with pytest.raises(ValueError, match="unlocked Lock"):
        lock.release()
    lock.close()


@both
def test_lock_can_be_released_by_another_thread_like_multiprocessing(impl):
    lock = Lock()
    lock.acquire()
    t = threading.Thread(target=lock.release)
    t.start()
    t.join(10)
    assert lock.acquire(timeout=5)
    lock.release()
    lock.close()


@both
def test_lock_timeout_is_honoured(impl):
    lock = Lock()
    lock.acquire()
    start = time.monotonic()
    assert lock.acquire(timeout=0.3) is False
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 0.3 + SLACK
    lock.release()
    lock.close()


@both
@pytest.mark.parametrize("timeout", ["1", [1], object()])
def test_non_numeric_timeouts_are_type_errors(timeout, impl):
    lock, rlock, sem, cond, event = Lock(), RLock(), Semaphore(0), Condition(), Event()
    for call in (lock.acquire, rlock.acquire, sem.acquire, event.wait):
        with pytest.raises(TypeError, match=r"timeout|real number"):
            call(timeout=timeout)
    with cond, pytest.raises(TypeError, match="timeout"):
        cond.wait(timeout)
    with pytest.raises(TypeError, match="timeout"):
        Barrier(2).wait(timeout)
    for obj in (lock, rlock, sem, cond, event):
        obj.close()


@both
def test_nan_timeouts_are_value_errors_when_a_wait_is_needed(impl):
    lock, sem, event = Lock(), Semaphore(0), Event()
    lock.acquire()
    for call in (lock.acquire, sem.acquire, event.wait):
        with pytest.raises(ValueError, match="NaN"):
            call(timeout=float("nan"))
    lock.release()
    for obj in (lock, sem, event):
        obj.close()


@both
def test_use_after_close_raises_value_error(impl):
    lock = Lock()
    lock.close()
    lock.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        lock.acquire()
    sem = Semaphore()
    sem.close()
    with pytest.raises(ValueError, match="closed"):
        sem.acquire()


# --- arguments and closing, judged the same in every state ----------------------------


class _BadBool:
    """A ``block`` whose truth cannot be taken."""

    def __bool__(self):
        raise ZeroDivisionError("no truth here")


def _taken(kind, holds):
    """A ``kind`` lock or semaphore that a call from this thread finds free or taken."""
    obj = Semaphore(1) if kind == "Semaphore" else BoundedSemaphore(1)
    if kind in ("Lock", "RLock"):
        obj = Lock() if kind == "Lock" else RLock()
    if holds and kind == "RLock":  # (taken by another thread: ours would re-enter)
        held, done = threading.Event(), threading.Event()

        def hold():
            obj.acquire()
            held.set()
            done.wait(30)
            obj.release()

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(30)
        return obj, lambda: (done.set(), holder.join(30))
    if holds:
        obj.acquire()
    return obj, lambda: None


def _verdict(call, *args, **kwargs):
    """What ``call(*args, **kwargs)`` returned, or the type and text of what it raised."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:
        return type(exc), str(exc)


LOCKS_AND_SEMAPHORES = ["Lock", "RLock", "Semaphore", "BoundedSemaphore"]


@both
@pytest.mark.parametrize("kind", LOCKS_AND_SEMAPHORES)
def test_acquire_judges_its_arguments_the_same_whether_free_or_taken(kind, impl):
    from decimal import Decimal
    from fractions import Fraction

    # (args, kwargs, what a free object answers; a taken one answers False where
    # this is True, and raises the same error where this is one)
    calls = [
        ((), {"timeout": True}, True),  # bool is an int, as everywhere in the stdlib
        ((), {"timeout": False}, True),
        ((), {"timeout": Decimal("0.01")}, True),  # as multiprocessing's SemLock takes it
        ((), {"timeout": Fraction(1, 100)}, True),
        ((True, 0.01), {}, True),
        ((), {"timeout": float("nan")}, (ValueError, "NaN")),
        ((False, float("nan")), {}, (ValueError, "NaN")),
        ((), {"timeout": "0.01"}, (TypeError, "timeout must be a number")),
        ((_BadBool(),), {}, (ZeroDivisionError, "no truth here")),
        ((True, 0.01, 3), {}, (TypeError, "acquire()")),
        ((), {"blocking": True}, (TypeError, "acquire() got an unexpected keyword argument")),
        ((True,), {"block": True}, (TypeError, "acquire() got multiple values")),
    ]
    for args, kwargs, free_answer in calls:
        answers = []
        for holds in (False, True):
            obj, let_go = _taken(kind, holds)
            try:
                answers.append(_verdict(obj.acquire, *args, **kwargs))
            finally:
                let_go()
                obj.close()
        free, taken = answers
        if free_answer is True:
            assert (free, taken) == (True, False), (args, kwargs)
        else:
            error, words = free_answer
            assert free[0] is error and words in free[1], (args, kwargs, free)
            assert taken == free, (args, kwargs)


@both
@pytest.mark.parametrize("kind", LOCKS_AND_SEMAPHORES)
def test_a_wrong_call_to_acquire_names_acquire_not_an_internal_method(kind, impl):
    obj, let_go = _taken(kind, holds=True)
    try:
        for call in (lambda: obj.acquire(True, 1, 2), lambda: obj.acquire(blocking=True)):
            with pytest.raises(TypeError) as caught:
                call()
            message = str(caught.value)
            assert message.startswith("acquire()"), message
            assert "_Methods" not in message and "_after_c" not in message, message
    finally:
        let_go()
        obj.close()


def test_timeouts_follow_one_rule_everywhere():
    from decimal import Decimal

    # Event.wait, Condition.wait/wait_for, Queue.get/put: the locks' rule
    # (_core._timeout.check_timeout): bool and Decimal are numbers of seconds,
    # a string is a TypeError, NaN a ValueError -- whether or not a wait is needed.
    event, cond, q = Event(), Condition(), proctor.Queue(1)
    try:
        for timeout in (False, Decimal("0"), 0):
            assert event.wait(timeout) is False
            with cond:
                assert cond.wait(timeout) is False
                assert cond.wait_for(lambda: False, timeout) is False
            q.put("x", timeout=timeout)
            with pytest.raises(Exception, match="full"):
                q.put("y", timeout=timeout)
            assert q.get(timeout=timeout) == "x"
        event.set()
        q.put("x")
        for bad, error in (("1", TypeError), (float("nan"), ValueError)):
            with pytest.raises(error, match="timeout must be a number"):
                event.wait(bad)  # (set: no wait needed)
            with cond, pytest.raises(error, match="timeout must be a number"):
                cond.wait_for(lambda: True, bad)
            with pytest.raises(error, match="timeout must be a number"):
                q.get(timeout=bad)  # (an item is there)
    finally:
        event.close()
        cond.close()
        q.close()


def _waiting_in_slices(thread):
    """Whether ``thread`` sleeps in a wait's slices (past any first slice in C)."""
    # (each wait's slice loop counts what it has slept: wait_for_post's, the
    # condition's C slices', Event.wait's inline one)
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if "slept" in frame.f_code.co_varnames and "slept" in frame.f_locals:
            return True
        frame = frame.f_back
    return False


@both
@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
@pytest.mark.parametrize("args", [(), (True, 30)])
def test_closing_a_semaphore_ends_a_wait_in_another_thread(kind, args, impl):
    sem = Semaphore(0) if kind == "Semaphore" else BoundedSemaphore(1)
    if kind == "BoundedSemaphore":
        sem.acquire()
    waiter, outcome = call_in_thread(lambda: sem.acquire(*args))
    wait_until(lambda: _waiting_in_slices(waiter))
    sem.close()
    waiter.join(SLACK)
    assert not waiter.is_alive(), "the waiter was not woken by close()"
    assert isinstance(outcome[0], ValueError)
    assert str(outcome[0]) == "this semaphore is closed in this process; it cannot be used any more"
    with pytest.raises(ValueError, match="this semaphore is closed"):
        sem.acquire()


def _wait_on(cond):
    with cond:
        return cond.wait(30)


@both
@pytest.mark.parametrize("what", ["condition", "event", "barrier"])
def test_closing_ends_a_wait_in_another_thread_with_the_closed_error(what, impl):
    obj = {"condition": Condition, "event": Event, "barrier": lambda: Barrier(2)}[what]()
    call = {"condition": lambda: _wait_on(obj), "event": lambda: obj.wait(30)}.get(
        what, lambda: obj.wait(30)
    )
    waiter, outcome = call_in_thread(call)
    wait_until(lambda: _waiting_in_slices(waiter))
    obj.close()
    waiter.join(SLACK)
    assert not waiter.is_alive()
    assert type(outcome[0]) is ValueError, repr(outcome[0])
    assert str(outcome[0]) == f"this {what} is closed in this process; it cannot be used any more"
    assert outcome[0].__context__ is None or outcome[0].__suppress_context__


@both
def test_a_condition_closed_under_a_waiter_leaves_its_lock_free(impl):
    lock = Lock()
    cond = Condition(lock)
    waiter, outcome = call_in_thread(lambda: _wait_on(cond))
    wait_until(lambda: _waiting_in_slices(waiter))
    cond.close()
    waiter.join(SLACK)
    assert isinstance(outcome[0], ValueError) and "condition is closed" in str(outcome[0])
    assert lock.acquire(timeout=SLACK)  # (the waiter did not take it back to keep it)
    lock.release()
    lock.close()


@both
def test_every_use_of_a_closed_primitive_says_it_is_closed(impl):
    message = "this {} is closed in this process; it cannot be used any more"
    cond, event, barrier = Condition(), Event(), Barrier(2)
    for obj in (cond, event, barrier):
        obj.close()
        obj.close()  # idempotent
    cond_calls = [
        cond.acquire,
        cond.release,
        cond.__enter__,
        lambda: cond.__exit__(None, None, None),
        lambda: cond.wait(0),
        lambda: cond.wait_for(lambda: True),
        cond.notify,
        cond.notify_all,
    ]
    event_calls = [event.is_set, event.set, event.clear, lambda: event.wait(0)]
    barrier_calls = [
        lambda: barrier.wait(0),
        barrier.reset,
        barrier.abort,
        lambda: barrier.n_waiting,
        lambda: barrier.broken,
    ]
    for what, calls in (
        ("condition", cond_calls),
        ("event", event_calls),
        ("barrier", barrier_calls),
    ):
        for call in calls:
            with pytest.raises(ValueError) as caught:
                call()
            assert str(caught.value) == message.format(what)
    # (as a closed Lock's: the same words)
    lock = Lock()
    lock.close()
    for call in (lock.acquire, lock.release, lock.__enter__):
        with pytest.raises(ValueError) as caught:
            call()
        assert str(caught.value) == message.format("lock")


# --- RLock ------------------------------------------------------------------------


@both
def test_rlock_is_recursive_and_shows_depth(impl):
    rlock = RLock()
    assert rlock.acquire() and rlock.acquire()
    assert repr(rlock) == "<RLock(MainProcess, 2)>"
    rlock.release()
    assert repr(rlock) == "<RLock(MainProcess, 1)>"
    rlock.release()
    assert repr(rlock) == "<RLock(None, 0)>"
    rlock.close()


@both
def test_rlock_release_by_non_owner_raises_assertion_error(impl):
    rlock = RLock()
    with pytest.raises(AssertionError, match="does not hold"):
        rlock.release()
    rlock.acquire()
    errors = []

    def release_from_other_thread():
        try:
            rlock.release()
        except AssertionError as exc:
            errors.append(exc)

    t = threading.Thread(target=release_from_other_thread)
    t.start()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)  # threading's type too
    # Another thread cannot take it either while we hold it.
    results = []
    t = threading.Thread(target=lambda: results.append(rlock.acquire(timeout=0.2)))
    t.start()
    t.join(10)
    assert results == [False]
    rlock.release()
    rlock.close()


# --- Semaphore --------------------------------------------------------------------


@both
def test_semaphore_counts_and_reports_value(impl):
    sem = Semaphore(2)
    assert sem.get_value() == 2
    assert sem.acquire() and sem.acquire()
    assert sem.acquire(timeout=0.05) is False
    sem.release()
    sem.release()
    sem.release()  # unbounded
    assert sem.get_value() == 3
    assert repr(sem) == "<Semaphore(value=3)>"
    sem.close()
    assert repr(sem) == "<Semaphore(closed)>"


@both
def test_bounded_semaphore_refuses_release_past_its_bound(impl):
    sem = BoundedSemaphore(1)
    with pytest.raises(ValueError, match=r"released too many times.*bound 1"):
        sem.release()
    sem.acquire()
    assert repr(sem) == "<BoundedSemaphore(value=0, maxvalue=1)>"
    sem.release()
    assert repr(sem) == "<BoundedSemaphore(value=1, maxvalue=1)>"
    sem.close()


@both
@pytest.mark.parametrize("name", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_bad_values(name, impl):
    cls = globals()[name]
    with pytest.raises(ValueError, match="must be >= 0, not -1"):
        cls(-1)
    with pytest.raises(TypeError, match="must be an int"):
        cls(1.5)
    with pytest.raises(TypeError, match="must be an int"):
        cls("1")


# --- sharing ----------------------------------------------------------------------


@both
def test_pickling_outside_a_start_is_refused_with_a_clear_error(impl):
    objects = [Lock(), RLock(), Semaphore(), BoundedSemaphore(), Condition(), Event(), Barrier(2)]
    for obj in objects:
        with pytest.raises(RuntimeError, match="through inheritance"):
            pickle.dumps(obj)
    for obj in objects:
        obj.close()


@every_method_and_both
def test_every_primitive_works_in_a_child(ctx, impl):
    """All primitives travel as Process args under each start method and work there."""
    mem = AnonymousMemory(4096)
    words = _words(mem)
    lock, rlock = Lock(), RLock()
    sem, bsem = Semaphore(0), BoundedSemaphore(1)
    cond, event, barrier = Condition(), Event(), Barrier(2)
    p = _process(ctx, use_everything, lock, rlock, sem, bsem, cond, event, barrier, mem)
    assert sem.acquire(timeout=30)  # the child released it
    with cond:
        assert cond.wait_for(lambda: words[1] == 1, timeout=30)
    event.set()
    index = barrier.wait(30)
    exitcode, seen = finish(p)
    assert exitcode == 0
    assert seen == {"bsem": True, "event": True, "barrier": 1 - index}
    assert words[0] == 2
    words.release()
    for obj in (lock, rlock, sem, bsem, cond, event, barrier):
        obj.close()
    mem.close()


@methods_and_both
def test_counter_under_lock_is_exact_with_two_processes(ctx, impl):
    mem = AnonymousMemory(4096)
    lock = Lock()
    n = 2000
    p = _process(ctx, count_under_lock, lock, mem, n)
    count_under_lock(lock, mem, n)
    assert finish(p) == (0, "done")
    assert _words(mem)[0] == 2 * n
    lock.close()
    mem.close()


@methods_and_both
def test_named_semaphores_are_reclaimed_after_use(ctx, impl):
    """The OS names exist while used and are gone once every user has exited."""
    before = shm_entries()
    lock = Lock()
    name = "sem." + lock._named.name.lstrip("/")
    assert name in shm_entries()
    mem = AnonymousMemory(4096)
    p = _process(ctx, count_under_lock, lock, mem, 10)
    assert finish(p) == (0, "done")
    assert name in shm_entries()  # the parent still uses it
    lock.close()
    del lock
    mem.close()
    wait_until(lambda: shm_entries() <= before, timeout=10)


# --- dead holders -----------------------------------------------------------------


@every_method_and_both
@pytest.mark.parametrize("name", ["Lock", "RLock"])
def test_lock_held_by_a_killed_process_is_taken_over_with_a_warning(ctx, name, impl):
    cls = globals()[name]
    lock, ready = cls(), Event()
    p = _process(ctx, hold_and_hang, lock, ready)
    assert ready.wait(30)
    pid = p.pid
    assert f"locked by pid {pid}" in lock._owner_text()
    p.kill()
    with pytest.warns(OwnerDiedWarning, match=f"process {pid} died while holding"):
        assert lock.acquire(timeout=SLACK) is True
    assert f"locked by pid {os.getpid()}" in lock._owner_text()
    # Taken over, not through the semaphore: still shown as this process's.
    assert repr(lock).startswith(f"<{cls.__name__}(") and "MainProcess" in repr(lock)
    lock.release()
    assert lock.acquire(timeout=1)  # an ordinary lock again: no second warning
    lock.release()
    assert finish(p)[0] == -signal.SIGKILL
    lock.close()
    ready.close()


@both
def test_a_waiter_in_another_process_takes_over_from_a_killed_holder(impl):
    ctx = proctor.get_context("fork")
    lock, ready = Lock(), Event()
    holder = _process(ctx, hold_and_hang, lock, ready)
    assert ready.wait(30)
    waiter = _process(ctx, acquire_and_report, lock, 30)
    wait_until(lambda: pid_exists(waiter.pid), timeout=10)
    holder.kill()
    exitcode, (got, messages) = finish(waiter)
    assert exitcode == 0 and got is True
    assert len(messages) == 1 and f"process {holder.pid} died" in messages[0]
    finish(holder)
    assert lock.acquire(timeout=5)
    lock.release()
    lock.close()
    ready.close()


@both
def test_a_live_holder_is_never_taken_over(impl):
    ctx = proctor.get_context("fork")
    lock, ready, go = Lock(), Event(), Event()
    p = _process(ctx, hold_until, lock, ready, go)
    assert ready.wait(30)
    # Several liveness checks happen while waiting; none may steal the lock.
    assert lock.acquire(timeout=3 * _sync.CHECK_INTERVAL) is False
    go.set()
    assert lock.acquire(timeout=30) is True
    lock.release()
    assert finish(p)[0] == 0
    for obj in (lock, ready, go):
        obj.close()


@both
def test_a_process_killed_before_recording_itself_does_not_wedge_the_lock(impl):
    ctx = proctor.get_context("fork")
    lock, ready = Lock(), Event()
    p = _process(ctx, take_without_recording_and_hang, lock, ready)
    assert ready.wait(30)
    assert "owner not recorded" in lock._owner_text()
    assert repr(lock) == "<Lock(owner=SomeOtherProcess)>"
    p.kill()
    finish(p)
    start = time.monotonic()
    with pytest.warns(OwnerDiedWarning, match="died before recording itself"):
        assert lock.acquire(timeout=_sync.LIMBO_GRACE + SLACK) is True
    assert time.monotonic() - start >= _sync.LIMBO_GRACE
    lock.release()
    lock.close()
    ready.close()


@both
def test_limbo_is_recognised_across_calls_with_short_timeouts(impl):
    # Each acquire() alone waits less than LIMBO_GRACE; together they see the
    # same dead non-owner for longer, and the lock is taken over.
    ctx = proctor.get_context("fork")
    lock, ready = Lock(), Event()
    p = _process(ctx, take_without_recording_and_hang, lock, ready)
    assert ready.wait(30)
    p.kill()
    finish(p)
    short = _sync.LIMBO_GRACE / 4
    began = time.monotonic()
    with pytest.warns(OwnerDiedWarning, match="died before recording itself"):
        while not lock.acquire(timeout=short):
            assert time.monotonic() - began < 10 * _sync.LIMBO_GRACE + SLACK
    lock.release()
    lock.close()
    ready.close()


@both
def test_owner_died_warning_can_be_made_an_error(impl):
    ctx = proctor.get_context("fork")
    lock, ready = Lock(), Event()
    p = _process(ctx, hold_and_hang, lock, ready)
    assert ready.wait(30)
    pid = p.pid
    p.kill()
    finish(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OwnerDiedWarning)
        with pytest.raises(OwnerDiedWarning, match=f"process {pid}") as info:
            lock.acquire(timeout=SLACK)
        # The lock stays with the dead holder: every acquirer hears of it (and the
        # error says so, not that the lock was taken over).
        assert "stays with the dead holder" in str(info.value)
        assert "taken it over" not in str(info.value)
        with pytest.raises(OwnerDiedWarning):
            lock.acquire(False)
    with pytest.warns(OwnerDiedWarning):
        assert lock.acquire(timeout=SLACK)
    lock.release()
    lock.close()
    ready.close()


@methods_and_both
def test_condition_whose_lock_holder_was_killed_recovers(ctx, impl):
    cond, ready = Condition(Lock()), Event()
    p = _process(ctx, hold_and_hang, cond, ready)
    assert ready.wait(30)
    p.kill()
    with pytest.warns(OwnerDiedWarning, match=f"process {p.pid}"), cond:
        cond.notify_all()
        assert cond.wait(0.05) is False
    finish(p)
    cond.close()
    ready.close()


@methods_and_both
def test_killed_condition_waiter_does_not_block_notify_or_other_waiters(ctx, impl):
    cond = Condition(Lock())
    mem = AnonymousMemory(4096)
    words = _words(mem)
    victim = _process(ctx, wait_on_condition, cond, mem, 60)
    survivor = _process(ctx, wait_on_condition, cond, mem, 60)
    wait_until(lambda: words[1] == 2, timeout=30)
    with cond:
        pass  # both are inside wait() now (they left the lock)
    victim.kill()
    assert finish(victim)[0] == -signal.SIGKILL
    with cond:
        cond.notify(1)  # must reach the survivor, not the dead waiter
    assert finish(survivor) == (0, True)
    assert words[0] == 1
    words.release()
    cond.close()
    mem.close()


@methods_and_both
def test_a_dead_holder_is_recognised_even_when_its_pid_now_names_a_live_process(ctx, impl):
    """Holder liveness is exact: a recycled pid does not make a dead holder look alive.

    The kernel may hand a dead holder's pid to a new, unrelated process. That is
    simulated by writing the pid of a live process (a sleeping subprocess) over
    the pid the dead holder recorded.
    """
    lock, ready = Lock(), Event()
    p = _process(ctx, hold_and_hang, lock, ready)
    assert ready.wait(30)
    p.kill()
    assert finish(p)[0] == -signal.SIGKILL
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        owner = int(lock._w[0])
        lock._w[0] = owner - (owner & PID_MASK) + sleeper.pid
        assert f"locked by pid {sleeper.pid}" in lock._owner_text()
        with pytest.warns(OwnerDiedWarning, match=f"process {sleeper.pid} died while holding"):
            assert lock.acquire(timeout=SLACK) is True
        lock.release()
    finally:
        sleeper.kill()
        sleeper.wait(30)
    lock.close()
    ready.close()


def test_condition_waiter_wakes_though_its_notifier_died_between_marking_and_posting(ctx):
    cond = Condition(Lock())
    mem = AnonymousMemory(4096)
    words = _words(mem)
    waiter = _process(ctx, wait_on_condition_without_timeout, cond, mem)
    try:
        wait_until(lambda: words[1] == 1, timeout=30)
        with cond:
            pass  # the waiter has left the lock: it is inside wait()
        notifier = _process(ctx, notify_and_die_before_posting, cond)
        assert finish(notifier)[0] == -signal.SIGKILL
        exitcode, (notified, waiter_warnings) = finish(waiter)
    finally:
        _kill_unfinished(waiter)
    # Woken by its own look at the mark (nobody else notifies), and the notifier
    # had released the lock before it died: no takeover.
    assert exitcode == 0 and notified is True and waiter_warnings == []
    words.release()
    cond.close()
    mem.close()


@both
def test_condition_waiter_wakes_though_its_notifier_died_holding_the_lock(impl):
    """notify() marked the waiter, its wake-up was left to the release: the waiter
    takes the lock over from the dead notifier and returns notified."""
    ctx = proctor.get_context("fork")  # (what differs by start method: the test above)
    cond = Condition(Lock())
    mem = AnonymousMemory(4096)
    words = _words(mem)
    waiter = _process(ctx, wait_on_condition_without_timeout, cond, mem)
    try:
        wait_until(lambda: words[1] == 1, timeout=30)
        with cond:
            pass  # the waiter has left the lock: it is inside wait()
        notifier = _process(ctx, notify_and_die_holding_the_lock, cond)
        notifier_pid = notifier.pid
        assert finish(notifier)[0] == -signal.SIGKILL
        exitcode, (notified, waiter_warnings) = finish(waiter)
    finally:
        _kill_unfinished(waiter)
    assert exitcode == 0 and notified is True
    assert len(waiter_warnings) == 1 and f"process {notifier_pid} died" in waiter_warnings[0]
    words.release()
    cond.close()
    mem.close()


def test_event_waiter_returns_though_its_setter_died_between_marking_and_posting(ctx):
    event = Event()
    waiter = _process(ctx, wait_for_event_without_timeout, event)
    try:
        wait_until(lambda: event._cond._queue.count() == 1, timeout=30)
        setter = _process(ctx, set_and_die_before_posting, event)
        assert finish(setter)[0] == -signal.SIGKILL
        assert event.is_set()
        result = finish(waiter)
    finally:
        _kill_unfinished(waiter)
    assert result == (0, True)
    # set() posts after releasing the event's lock: the setter died without it, so
    # using the event again takes nothing over from a dead holder.
    with warnings.catch_warnings():
        warnings.simplefilter("error", OwnerDiedWarning)
        event.clear()
    event.close()


@both
def test_an_event_waiter_killed_inside_wait_neither_stops_set_nor_wakes_a_later_wait(impl):
    """set() wakes the live waiters; the wake-up posted for the dead one, left on
    the semaphore, is passed on once by the next waiter and dropped, not taken
    for its own: that wait still times out, and nothing is left posted."""
    ctx = proctor.get_context("fork")
    event = Event()
    doomed = _process(ctx, wait_for_event_without_timeout, event)
    survivor = None
    try:
        wait_until(lambda: event._cond._queue.count() == 1, timeout=30)
        with event._cond._lock:
            pass  # the waiter has let go of the event's lock: it is asleep, or nearly
        doomed.kill()
        assert finish(doomed)[0] == -signal.SIGKILL
        survivor = _process(ctx, wait_for_event_without_timeout, event)
        wait_until(lambda: event._cond._queue.count() == 2, timeout=30)
        event.set()
        assert finish(survivor) == (0, True)
    finally:
        _kill_unfinished(doomed, *([survivor] if survivor else []))
    event.clear()
    assert event.wait(0.15) is False
    assert event._cond._named.sem.acquire(False) is False
    event.close()


@pytest.mark.parametrize("kind", ["Event", "Condition"])
def test_two_hundred_waiters_are_all_woken_by_one_call(kind):
    """No ceiling on waiters: 4 processes x 50 threads wait, one set()/notify_all() wakes all."""
    ctx = proctor.get_context("fork")
    obj = Event() if kind == "Event" else Condition(Lock())
    mem = AnonymousMemory(4096)
    words = _words(mem)
    procs = [_process(ctx, wait_in_threads, obj, 50, mem) for _ in range(4)]
    try:
        if kind == "Event":
            wait_until(lambda: obj._cond._queue.count() == 200, timeout=60)
            obj.set()
        else:
            wait_until(lambda: words[0] == 200, timeout=60)
            with obj:  # every waiter has released the lock inside wait()
                obj.notify_all()
        results = [finish(p, timeout=60) for p in procs]
    finally:
        _kill_unfinished(*procs)
    assert results == [(0, [True] * 50)] * 4
    words.release()
    obj.close()
    mem.close()


# --- Condition --------------------------------------------------------------------


def test_condition_needs_the_lock_held():
    cond = Condition()
    with pytest.raises(AssertionError, match="without holding"):
        cond.wait(0)
    with pytest.raises(RuntimeError, match="without holding"):
        cond.notify()
    with pytest.raises(TypeError, match=r"proctor\.Lock or proctor\.RLock"):
        Condition(threading.Lock())
    cond.close()


@both
def test_condition_notify_n_wakes_that_many_threads_oldest_first(impl):
    cond = Condition(Lock())
    woken = []
    inside = Semaphore(0)

    def waiter(i):
        with cond:
            inside.release()
            if cond.wait(10):
                woken.append(i)

    threads = []
    for i in range(3):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        assert inside.acquire(timeout=10)
        threads.append(t)
    with cond:
        assert repr(cond) == "<Condition(<Lock(owner=MainProcess)>, 3)>"
        cond.notify(2)
    wait_until(lambda: len(woken) == 2, timeout=10)
    assert sorted(woken) == [0, 1]
    with cond:
        cond.notify_all()
    for t in threads:
        t.join(10)
    assert sorted(woken) == [0, 1, 2]
    cond.close()
    inside.close()


@both
@pytest.mark.parametrize("lock_kind", ["Lock", "RLock"])
def test_notify_posts_its_wake_ups_when_the_lock_is_released(impl, lock_kind):
    """A woken waiter must find the lock free: notify() marks, the release posts --
    however the lock is released (the condition, the lock itself, wait())."""
    lock = Lock() if lock_kind == "Lock" else RLock()
    cond = Condition(lock)
    sem = cond._named.sem
    inside, results = Semaphore(0), []

    def waiter():
        with cond:
            inside.release()
            results.append(cond.wait(30))

    for release in ("condition", "lock", "wait", "nested"):
        t = threading.Thread(target=waiter)
        t.start()
        assert inside.acquire(timeout=10)
        with cond:  # the waiter is inside wait()
            if release == "nested":
                with cond if lock_kind == "RLock" else contextlib.nullcontext():
                    cond.notify()
                    assert sem._get_value() == 0
            else:
                cond.notify()
            assert sem._get_value() == 0  # marked, not posted: the lock is held
            if release == "lock":
                lock.release()
                lock.acquire()
            elif release == "wait":
                assert cond.wait(0.01) is False  # (notify() marked the other thread)
        t.join(30)
        assert not t.is_alive()
    assert results == [True] * 4
    assert lock._deferred is None
    cond.close()
    lock.close()
    inside.close()


@both
def test_notify_skips_waiters_that_timed_out_and_reaches_one_still_waiting(impl):
    cond = Condition(Lock())
    inside, results = Semaphore(0), []

    def waiter(timeout):
        with cond:
            inside.release()
            results.append((timeout, cond.wait(timeout)))

    early = threading.Thread(target=waiter, args=(0.01,))
    early.start()
    early.join(10)  # it took the older ticket, then gave up
    late = threading.Thread(target=waiter, args=(30,))
    late.start()
    assert inside.acquire(timeout=10) and inside.acquire(timeout=10)
    with cond:
        assert repr(cond) == "<Condition(<Lock(owner=MainProcess)>, 1)>"
        cond.notify(1)  # not wasted on the ticket whose waiter left
    late.join(30)
    assert results == [(0.01, False), (30, True)]
    cond.close()
    inside.close()


@both
def test_condition_wait_timeout_and_wait_for(impl):
    cond = Condition()
    with cond:
        start = time.monotonic()
        assert cond.wait(0.2) is False
        assert cond.wait_for(lambda: 0, timeout=0.2) == 0
        assert time.monotonic() - start >= 0.4
        assert cond.wait_for(lambda: "yes", timeout=0) == "yes"
    cond.close()


@both
def test_a_stray_wake_up_skips_the_kept_ticket_and_a_dead_keepers_kept_is_freed(impl):
    """Both implementations honour KEPT (which only the C slice claims): a wake-up
    taken by a waiter it was not meant for is not passed to the ticket that kept
    its byte (it has had its wake-up), but is passed to a notified waiter still
    asleep; enter() frees a KEPT whose ticket's byte nobody holds."""
    from proctor._sync import _condition

    cond = Condition()
    queue, sem, w = cond._queue, cond._named.sem, cond._w
    with cond:
        ticket = queue.enter()  # a notified waiter (this thread), byte held
        w[_condition._NOTIFIED] = ticket + 1
    w[_condition._KEPT] = ticket + 1  # ...that took its wake-up and kept its byte
    sem.release()  # a stray
    assert sem.acquire(False)
    assert queue._pass_on(sem, False) is False
    assert not sem.acquire(False)  # dropped
    with cond:
        other = queue.enter()  # a second notified waiter, still asleep
        w[_condition._NOTIFIED] = other + 1
    sem.release()
    assert sem.acquire(False)
    assert queue._pass_on(sem, False) is True
    assert sem.acquire(False)  # passed on, for it
    queue.let_go(ticket)
    queue.let_go(other)

    w[_condition._KEPT] = ticket + 1  # as a keeper that died leaves it
    with cond:
        assert cond.wait(timeout=0) is False  # (its enter() looks at KEPT)
    assert w[_condition._KEPT] == 0
    cond.close()


@both
def test_condition_on_rlock_restores_depth_after_wait(impl):
    rlock = RLock()
    cond = Condition(rlock)
    with cond, cond:
        assert cond.wait(0.01) is False
        assert repr(rlock) == "<RLock(MainProcess, 2)>"
    assert repr(cond) == "<Condition(<RLock(None, 0)>, 0)>"
    cond.close()
    assert repr(cond) == "<Condition(closed)>"
    rlock.close()


@both
def test_an_interrupted_condition_wait_no_longer_counts_as_a_waiter(impl):
    """A wait ended by an exception (a signal handler raising) leaves the count of
    waiters (the repr's), not only at the next notify; a real waiter that comes
    after is the one notify(1) wakes."""
    cond = Condition(Lock())

    def asleep():  # (the waiter is counted, and has let go of the lock)
        if cond._queue.count() != 1 or not cond.acquire(False):
            return False
        cond.release()
        return True

    with _interrupt_main_thread_once(asleep), cond, pytest.raises(_Interrupted):
        cond.wait(30)
    assert repr(cond) == "<Condition(<Lock(owner=None)>, 0)>"
    waiter, outcome = call_in_thread(lambda: _wait_once(cond))
    try:
        wait_until(lambda: cond._queue.count() == 1, timeout=10)
        with cond:
            cond.notify(1)
    finally:
        waiter.join(30)
    assert outcome == [True]
    assert repr(cond) == "<Condition(<Lock(owner=None)>, 0)>"
    cond.close()


def _wait_once(cond):
    with cond:
        return cond.wait(30)


def _enter_n_times(stack, cm, n):
    for _ in range(n):
        stack.enter_context(cm)


@both
@pytest.mark.parametrize(("kind", "depth"), [("Lock", 1), ("RLock", 2)])
def test_a_wait_that_cannot_take_the_lock_over_as_an_error_leaves_it_with_the_dead_holder(
    impl, kind, depth
):
    """With OwnerDiedWarning an error, wait() raises it when its notifier died holding
    the lock; ``with cond:`` then releases nothing (the lock is not this thread's), so
    the warning comes out alone, and every later acquire() raises it too."""
    ctx = proctor.get_context("fork")
    lock = Lock() if kind == "Lock" else RLock()
    cond = Condition(lock)
    notifier = None
    with warnings.catch_warnings():
        warnings.simplefilter("error", OwnerDiedWarning)
        try:
            with pytest.raises(OwnerDiedWarning) as caught, contextlib.ExitStack() as stack:
                _enter_n_times(stack, cond, depth)
                # It takes the lock once wait() lets go of it, notifies, and is killed.
                notifier = _process(ctx, notify_and_die_holding_the_lock, cond)
                pid = notifier.pid
                cond.wait(30)
        finally:
            exitcode = finish(notifier)[0] if notifier is not None else None
        assert exitcode == -signal.SIGKILL
        assert f"process {pid} died" in str(caught.value)
        assert caught.value.__context__ is None  # (not behind a LockNotOwnedError)
        assert "SomeOtherProcess" in repr(lock)
        for block in (True, False):
            with pytest.raises(OwnerDiedWarning, match=f"process {pid} died"):
                lock.acquire(block, SLACK if block else None)
    with pytest.warns(OwnerDiedWarning, match=f"process {pid} died"):
        assert lock.acquire(timeout=SLACK)
    lock.release()
    with cond:  # (nothing left to skip: its release is a release)
        pass
    assert lock.acquire(False)
    lock.release()
    cond.close()
    lock.close()


# --- Event ------------------------------------------------------------------------


@both
def test_event_set_clear_wait_and_repr(impl):
    event = Event()
    assert not event.is_set() and repr(event) == f"<Event at {id(event):#x} unset>"
    start = time.monotonic()
    assert event.wait(0.2) is False
    assert 0.2 <= time.monotonic() - start < 0.2 + SLACK
    event.set()
    assert event.is_set() and event.wait() and event.wait(0)
    assert repr(event) == f"<Event at {id(event):#x} set>"
    event.clear()
    assert not event.is_set()
    event.close()
    assert repr(event) == f"<Event at {id(event):#x} closed>"


@methods_and_both
def test_event_set_in_another_process_wakes_the_waiter(ctx, impl):
    event, go = Event(), Event()
    p = _process(ctx, set_event_later, event, go)
    go.set()
    assert event.wait(30) is True
    assert finish(p)[0] == 0
    event.close()
    go.close()


@both
def test_event_wakes_all_waiting_threads(impl):
    event = Event()
    results = []
    threads = [threading.Thread(target=lambda: results.append(event.wait(10))) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: event._cond._queue.count() == 4, timeout=10)
    event.set()
    for t in threads:
        t.join(10)
    assert results == [True] * 4
    event.close()


# --- Barrier ----------------------------------------------------------------------


def test_barrier_bad_input():
    with pytest.raises(ValueError, match="at least 1 party, not 0"):
        Barrier(0)
    with pytest.raises(TypeError, match="must be an int"):
        Barrier("2")
    with pytest.raises(TypeError, match="callable"):
        Barrier(2, action=3)


def test_barrier_in_threads_action_reset_abort_and_properties():
    calls = []
    barrier = Barrier(3, action=lambda: calls.append(1))
    assert barrier.parties == 3 and barrier.n_waiting == 0 and not barrier.broken
    results = []
    threads = [threading.Thread(target=lambda: results.append(barrier.wait(10))) for _ in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: barrier.n_waiting == 2, timeout=10)
    assert repr(barrier) == f"<proctor.synchronize.Barrier at {id(barrier):#x}: waiters=2/3>"
    results.append(barrier.wait(10))
    for t in threads:
        t.join(10)
    assert sorted(results) == [0, 1, 2] and calls == [1]
    # A waiter of a barrier that is reset gets BrokenBarrierError.
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(wait_at_barrier(barrier, 10)))
    t.start()
    wait_until(lambda: barrier.n_waiting == 1, timeout=10)
    barrier.reset()
    t.join(10)
    assert outcome[0].startswith("broken") and "reset" in outcome[0]
    assert not barrier.broken
    barrier.abort()
    assert barrier.broken and barrier.n_waiting == 0
    assert repr(barrier) == f"<proctor.synchronize.Barrier at {id(barrier):#x}: broken>"
    with pytest.raises(BrokenBarrierError):
        barrier.wait(1)
    with pytest.raises(threading.BrokenBarrierError):  # the stdlib type catches it
        barrier.wait(1)
    barrier.reset()
    assert not barrier.broken
    barrier.close()


def test_a_reset_in_the_first_round_breaks_it_for_its_waiters(ctx):
    # (A first round that had not tripped looked tripped: its waiters passed.)
    barrier = Barrier(3)
    party = _process(ctx, wait_at_barrier, barrier, 30)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(wait_at_barrier(barrier, 30)))
    thread.start()
    wait_until(lambda: barrier.n_waiting == 2, timeout=30)
    barrier.reset()
    thread.join(30)
    result = finish(party)[1]
    for got in (outcome[0], result):
        assert isinstance(got, str) and got.startswith("broken") and "reset" in got, got
    assert not barrier.broken and barrier.n_waiting == 0
    barrier.close()


def test_a_party_that_wakes_only_after_later_rounds_still_passes(ctx):
    # More threads or processes than parties: rounds go on while a party of an earlier
    # one has not woken yet. It passed, and must not be told of a reset.
    barrier = Barrier(2)
    late = _process(ctx, wait_at_barrier, barrier, 60)
    wait_until(lambda: barrier.n_waiting == 1, timeout=30)
    with barrier._cond:
        pass  # it has let go of the barrier's lock: asleep (as above)
    os.kill(late.pid, signal.SIGSTOP)
    try:
        assert barrier.wait(10) in (0, 1)  # round 0 trips, the stopped party in it
        other = _process(ctx, wait_at_barrier, barrier, 60)
        assert barrier.wait(10) in (0, 1)  # round 1
        assert finish(other)[1] in (0, 1)
    finally:
        os.kill(late.pid, signal.SIGCONT)
    assert finish(late)[1] in (0, 1)
    barrier.close()


def test_barrier_timeout_breaks_it():
    barrier = Barrier(2, timeout=0.2)
    start = time.monotonic()
    with pytest.raises(BrokenBarrierError, match=r"timed out after 0\.2 s"):
        barrier.wait()
    assert 0.2 <= time.monotonic() - start < 0.2 + SLACK
    assert barrier.broken
    barrier.close()


def test_barrier_failing_action_breaks_it():
    barrier = Barrier(1, action=lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        barrier.wait(1)
    assert barrier.broken
    barrier.close()


def test_barrier_across_processes_and_a_party_that_dies(ctx):
    barrier = Barrier(3)
    first = _process(ctx, wait_at_barrier, barrier, 30)
    second = _process(ctx, wait_at_barrier, barrier, 30)
    wait_until(lambda: barrier.n_waiting == 2, timeout=30)
    assert barrier.wait(10) in (0, 1, 2)
    results = {finish(first)[1], finish(second)[1]}
    assert len(results) == 2 and results <= {0, 1, 2}
    # Round two: a waiting party is killed; the others are not left waiting.
    victim = _process(ctx, wait_at_barrier, barrier, 60)
    wait_until(lambda: barrier.n_waiting == 1, timeout=30)
    # The victim counts itself under the barrier's lock and lets go of it as it
    # starts to sleep; killed before that, it would die holding the lock (a
    # takeover with OwnerDiedWarning, another fault, tested with the locks).
    with barrier._cond:
        pass  # the victim has let go of the barrier's lock: it is asleep, or nearly
    victim.kill()
    with pytest.raises(BrokenBarrierError, match=f"{victim.pid} died"):
        barrier.wait(30)
    assert finish(victim)[0] == -signal.SIGKILL
    barrier.close()


def test_the_last_party_does_not_trip_a_barrier_a_waiting_party_died_at(ctx):
    # Arriving before the others have noticed the death (nobody else waits here:
    # nobody would), the last party breaks the barrier instead of passing with it.
    barrier = Barrier(2)
    victim = _process(ctx, wait_at_barrier, barrier, 60)
    wait_until(lambda: barrier.n_waiting == 1, timeout=30)
    with barrier._cond:
        pass  # the victim has let go of the barrier's lock (as above)
    pid = victim.pid
    victim.kill()
    assert finish(victim)[0] == -signal.SIGKILL
    with pytest.raises(BrokenBarrierError, match=f"{pid} died while waiting"):
        barrier.wait(30)
    assert barrier.broken and barrier.n_waiting == 0
    barrier.close()


@both
def test_an_interrupted_barrier_wait_breaks_the_barrier(impl):
    """A party whose wait() ends with an exception (a signal handler raising) breaks
    the barrier, as a timeout does: it no longer counts as waiting, and no two
    parties of a Barrier(3) pass without a third."""
    barrier = Barrier(3)
    other, outcome = call_in_thread(lambda: wait_at_barrier(barrier, 30))
    try:
        wait_until(lambda: barrier.n_waiting == 1, timeout=10)

        def asleep():  # (both counted, and the lock let go of)
            if barrier.n_waiting != 2 or not barrier._cond.acquire(False):
                return False
            barrier._cond.release()
            return True

        with _interrupt_main_thread_once(asleep), pytest.raises(_Interrupted):
            barrier.wait(30)
        assert barrier.broken and barrier.n_waiting == 0
        other.join(30)
        assert outcome[0].startswith("broken") and "broken by another party" in outcome[0]
        with pytest.raises(BrokenBarrierError, match="is broken"):
            barrier.wait(30)
    finally:
        barrier.abort()  # (without the fix: lets the other party go)
        other.join(30)
    barrier.close()


_BROKEN_BEFORE_THREADING = """
import pickle, sys
from proctor.synchronize import Barrier
print("threading" in sys.modules, end=" ")
barrier = Barrier(2)
barrier.abort()
try:
    barrier.wait(10)
except Exception as exc:
    caught = exc
import threading
import proctor
print(isinstance(caught, threading.BrokenBarrierError),
      type(caught) is proctor.BrokenBarrierError,
      type(pickle.loads(pickle.dumps(caught))) is proctor.BrokenBarrierError)
barrier.close()
"""


def test_the_barrier_error_is_made_with_threading_at_its_first_use_and_stays_one_class():
    # Importing the primitives brings no threading (a fork server loads them for
    # a parent that uses them, and every child it forks would run threading's
    # after-fork hook; issue 17); the first broken barrier makes the class, a
    # subclass of threading's, and every later use finds the same one.
    done = subprocess.run(
        [sys.executable, "-c", _BROKEN_BEFORE_THREADING], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "False True True True\n"), done.stderr


ALL_CLASSES = [
    (Lock, ()),
    (RLock, ()),
    (Semaphore, (2,)),
    (BoundedSemaphore, (2,)),
    (Condition, (None,)),
    (Event, ()),
    (Barrier, (2, None, None)),
]


@pytest.mark.parametrize(("cls", "args"), ALL_CLASSES, ids=[cls.__name__ for cls, _ in ALL_CLASSES])
def test_every_primitive_takes_the_stdlib_ctx_keyword(cls, args):
    """multiprocessing.synchronize.X(..., ctx=get_context()) works once ported to proctor."""
    import proctor.synchronize

    assert getattr(proctor.synchronize, cls.__name__) is cls
    contexts = [None, proctor.get_context()] + [proctor.get_context(m) for m in START_METHODS]
    for ctx in contexts:
        obj = cls(*args, ctx=ctx)
        obj.close()


@pytest.mark.parametrize(("cls", "args"), ALL_CLASSES, ids=[cls.__name__ for cls, _ in ALL_CLASSES])
def test_ctx_must_be_a_proctor_context(cls, args):
    import multiprocessing

    with pytest.raises(TypeError, match=r"got multiprocessing's \w+Context.*proctor\.get_context"):
        cls(*args, ctx=multiprocessing.get_context())
    with pytest.raises(TypeError, match=r"must be a proctor context .* or None, not str"):
        cls(*args, ctx="fork")


def test_stdlib_names_exist_on_the_module():
    assert issubclass(BrokenBarrierError, threading.BrokenBarrierError)
    assert issubclass(LockNotOwnedError, AssertionError)
    assert issubclass(OwnerDiedWarning, RuntimeWarning)


# --- every wait looks again ---------------------------------------------------------


def _blocked_waits():
    """(name, object, start a blocking wait with no timeout, end it, the recorder)."""
    lock = Lock()
    lock.acquire()
    lock_recorder = lock._try = _Recorder(lock._try)

    event = Event()
    event._cond._named.sem = _RecordingSem(event._cond._named.sem)

    cond = Condition(Lock())
    cond._named.sem = _RecordingSem(cond._named.sem)

    def wait_on_cond():
        with cond:
            cond.wait()

    def notify_cond():
        with cond:
            cond.notify_all()

    barrier = Barrier(2)
    barrier._cond._named.sem = _RecordingSem(barrier._cond._named.sem)
    return [
        (
            "Lock.acquire",
            lock,
            lambda: (lock.acquire(), lock.release()),
            lock.release,
            lock_recorder,
        ),
        ("Event.wait", event, event.wait, event.set, event._cond._named.sem.acquire),
        ("Condition.wait", cond, wait_on_cond, notify_cond, cond._named.sem.acquire),
        (
            "Barrier.wait",
            barrier,
            barrier.wait,
            lambda: barrier.wait(30),
            barrier._cond._named.sem.acquire,
        ),
    ]


@both
def test_every_blocking_wait_looks_again_on_the_back_off_schedule(impl, monkeypatch):
    """No wait sleeps unboundedly: a wake-up that never comes is made up for by looking.

    Each primitive's wait, with no timeout, sleeps on its semaphore in slices that
    start at CHECK_INTERVAL and grow with the time already slept, up to
    LONGEST_SLICE; between slices it re-checks its condition and its peers. (The
    schedule is shrunk here so that it reaches its longest slice at once.)
    """
    monkeypatch.setattr(_wait, "CHECK_INTERVAL", 0.01)
    monkeypatch.setattr(_wait, "LONGEST_SLICE", 0.04)
    _record_slices(monkeypatch, Lock)
    for name, obj, wait, end, recorder in _blocked_waits():
        t = threading.Thread(target=wait)
        t.start()
        wait_until(lambda recorder=recorder: len(recorder.sleeps()) >= 6, timeout=10)
        end()
        t.join(10)
        assert not t.is_alive(), name
        sleeps = recorder.sleeps()
        slept = 0.0
        for s in sleeps[:6]:  # 0.01, 0.01, 0.02, 0.04 (the longest), 0.04, 0.04
            assert s == pytest.approx(min(0.04, max(0.01, slept))), (name, sleeps)
            slept += s
        assert all(s is not None and 0 < s <= 0.04 for s in sleeps), (name, sleeps)
        obj.close()


# --- a wait backed off all the way still notices -------------------------------------


class _TellsTheLongestSlice:
    """Stands in for a semaphore's ``acquire(block, timeout)`` in a waiting process:
    writes a byte to ``fd`` when the wait first asks for a slice of LONGEST_SLICE
    (it has backed off all the way), then sleeps it as asked."""

    def __init__(self, acquire, fd):
        self._acquire = acquire
        self._fd = fd

    def tell(self, timeout):
        if self._fd is not None and timeout is not None and timeout >= _wait.LONGEST_SLICE:
            os.write(self._fd, b"!")
            self._fd = None

    def __call__(self, block=True, timeout=None):
        if block:
            self.tell(timeout)
        return self._acquire(block, timeout)


class _SemTellingTheLongestSlice:
    """A condition's wake-up semaphore whose waits tell of their longest slice."""

    def __init__(self, sem, fd):
        self.sem = sem
        self.acquire = _TellsTheLongestSlice(sem.acquire, fd)
        self.release = sem.release


def _back_off_quickly(lock_class):
    """In a waiting child: reach LONGEST_SLICE after ~0.6 s (CHECK_INTERVAL 0.02 s),
    and have a native lock's C wait slice tell of it too."""
    _wait.CHECK_INTERVAL = 0.02
    real = lock_class._wait_slice
    if real is not None:

        def wait_slice(sem, *args):
            if isinstance(sem, _SemTellingTheLongestSlice):
                sem.acquire.tell(args[3])
                sem = sem.sem
            return real(sem, *args)

        lock_class._wait_slice = staticmethod(wait_slice)


def acquire_at_the_longest_slice(lock, fd):
    _back_off_quickly(type(lock))
    lock._try = _TellsTheLongestSlice(lock._try, fd)
    return acquire_and_report(lock, 60)


def wait_for_event_at_the_longest_slice(event, fd):
    _back_off_quickly(type(event._cond._lock))
    event._cond._named.sem = _SemTellingTheLongestSlice(event._cond._named.sem, fd)
    return event.wait(60)


def wait_on_condition_at_the_longest_slice(cond, fd):
    _back_off_quickly(type(cond._lock))
    cond._named.sem = _SemTellingTheLongestSlice(cond._named.sem, fd)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cond:
            notified = cond.wait(60)
    return notified, [str(w.message) for w in caught if issubclass(w.category, OwnerDiedWarning)]


def wait_at_barrier_at_the_longest_slice(barrier, fd):
    _back_off_quickly(type(barrier._cond._lock))
    barrier._cond._named.sem = _SemTellingTheLongestSlice(barrier._cond._named.sem, fd)
    return wait_at_barrier(barrier, 60)


def _until_the_longest_slice(fd, waiter):
    """Wait (30 s at most) for ``waiter`` to tell that it sleeps its longest slice."""
    import select

    ready, _, _ = select.select([fd], [], [], 30)
    assert ready and os.read(fd, 1) == b"!", f"{waiter!r} never backed off to LONGEST_SLICE"


@both
def test_a_wait_backed_off_to_its_longest_slice_still_notices_a_dead_peer(impl):
    """Each fault a wait looks for between slices, struck when the wait already
    sleeps LONGEST_SLICE at a time: a killed lock holder, a notifier and a setter
    killed between marking and posting, a killed barrier party. Each wait ends as
    documented (the bound is the test's timeout, not a clock)."""
    ctx = proctor.get_context("fork")
    read_fd, write_fd = os.pipe()
    try:
        # Lock: the holder is killed; the waiter takes the lock over, with a warning.
        lock, ready = Lock(), Event()
        holder = _process(ctx, hold_and_hang, lock, ready)
        assert ready.wait(30)
        waiter = _process(ctx, acquire_at_the_longest_slice, lock, write_fd)
        try:
            _until_the_longest_slice(read_fd, waiter)
            holder.kill()
            exitcode, (got, messages) = finish(waiter)
            assert exitcode == 0 and got is True
            assert len(messages) == 1 and f"process {holder.pid} died" in messages[0]
            assert finish(holder)[0] == -signal.SIGKILL
        finally:
            _kill_unfinished(waiter, holder)
        lock.close()
        ready.close()

        # Event: the setter dies between setting the flag and posting.
        event = Event()
        waiter = _process(ctx, wait_for_event_at_the_longest_slice, event, write_fd)
        try:
            _until_the_longest_slice(read_fd, waiter)
            assert finish(_process(ctx, set_and_die_before_posting, event))[0] == -signal.SIGKILL
            assert finish(waiter) == (0, True)
        finally:
            _kill_unfinished(waiter)
        event.close()

        # Condition: the notifier dies between marking the waiter and posting.
        cond = Condition(Lock())
        waiter = _process(ctx, wait_on_condition_at_the_longest_slice, cond, write_fd)
        try:
            _until_the_longest_slice(read_fd, waiter)
            notifier = _process(ctx, notify_and_die_before_posting, cond)
            assert finish(notifier)[0] == -signal.SIGKILL
            assert finish(waiter) == (0, (True, []))
        finally:
            _kill_unfinished(waiter)
        cond.close()

        # Barrier: the party before this one is killed; the barrier breaks.
        barrier = Barrier(3)
        victim = _process(ctx, wait_at_barrier, barrier, 60)
        wait_until(lambda: barrier.n_waiting == 1, timeout=30)
        waiter = _process(ctx, wait_at_barrier_at_the_longest_slice, barrier, write_fd)
        try:
            _until_the_longest_slice(read_fd, waiter)
            victim.kill()
            exitcode, message = finish(waiter)
            assert exitcode == 0 and f"broken: process(es) {victim.pid} died" in message
            assert finish(victim)[0] == -signal.SIGKILL
        finally:
            _kill_unfinished(waiter, victim)
        barrier.close()
    finally:
        os.close(read_fd)
        os.close(write_fd)
