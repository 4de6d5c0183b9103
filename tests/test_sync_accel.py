"""The C accelerator of the lock primitives: built where it can be, switchable, and
interchangeable with the pure-Python implementation.

test_sync.py runs every lock and semaphore test under both implementations; this
module checks what only the accelerator has: that it is there, that
PROCTOR_PURE_PYTHON turns it off, that unusual calls reach the Python methods and
their errors, that it keeps nothing open after close(), and that a forked child
records its own identity through it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading

import pytest

import proctor
from helpers import finish, wait_until
from proctor._core import _sharedwords
from proctor._core._sharedwords import pid_of
from proctor._sync import IMPLEMENTATIONS, LockNotOwnedError, _accel, _lock, _semaphore

pytestmark = pytest.mark.filterwarnings("error::proctor.OwnerDiedWarning")

NATIVE = IMPLEMENTATIONS["native"]
needs_native = pytest.mark.skipif(
    NATIVE is None, reason=f"the C accelerator is not active here: {_accel.REASON}"
)


def _compiler_available() -> bool:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or ""
    words = shlex.split(cc)
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    return bool(words) and shutil.which(words[0]) is not None and os.path.exists(headers)


def test_the_accelerator_is_active_wherever_it_could_be_built():
    """With a C compiler and Python's headers, installing proctor builds the accelerator."""
    if os.environ.get(_accel.ENV_VAR, "") not in ("", "0"):
        assert _accel.ACTIVE == "python"
        pytest.skip(f"{_accel.ENV_VAR} is set: the pure-Python implementation runs on purpose")
    if not _compiler_available():
        assert _accel.ACTIVE == "python"
        pytest.skip("no C compiler (or no Python headers) here: the pure-Python build is right")
    assert _accel.ACTIVE == "native", f"a C compiler is here, yet {_accel.REASON}"
    assert proctor.Lock is NATIVE["Lock"] and proctor.Semaphore is NATIVE["Semaphore"]
    assert "C accelerator" in _accel.describe()


def test_pure_python_can_be_forced_with_an_environment_variable():
    code = (
        "import sys, proctor\n"
        "from proctor.__main__ import main\n"
        "from proctor._sync import _lock, _semaphore\n"
        "assert proctor.Lock is _lock.PyLock and proctor.RLock is _lock.PyRLock\n"
        "assert proctor.BoundedSemaphore is _semaphore.PyBoundedSemaphore\n"
        "assert 'proctor._sync._native' not in sys.modules\n"
        "with proctor.Lock() as held:\n"
        "    assert held\n"
        "main(['info'])\n"
    )
    env = {**os.environ, _accel.ENV_VAR: "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"fast paths: pure Python ({_accel.ENV_VAR}=1 is set)" in done.stdout


def test_info_names_the_active_implementation(capsys):
    from proctor.__main__ import main

    assert main(["info"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    expected = "C accelerator (" if _accel.ACTIVE == "native" else "pure Python ("
    assert line.startswith(f"lock and semaphore fast paths: {expected}")


@needs_native
def test_both_implementations_work_on_one_lock():
    """The two run one protocol on one semaphore and owner word: each sees the other hold it."""
    native = NATIVE["Lock"]()
    pure = _lock._rebuild_lock(_lock.PyLock, native._named, native._shared)
    for holder, other in ((native, pure), (pure, native)):
        assert holder.acquire()
        assert pure._w[0] == float(_sharedwords.ident())
        assert not other.acquire(False)
        assert not other.acquire(timeout=0.01)
        token = other._w[0]
        holder.release()
        assert other._w[0] < 0 and other._w[0] != token  # a fresh release token
        with other:
            assert not holder.acquire(False)
    native.close()


@needs_native
@pytest.mark.parametrize("name", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_unusual_calls_reach_the_python_methods_and_their_errors(name):
    obj = NATIVE[name]()
    with pytest.raises(TypeError):
        obj.acquire(True, None, 3)
    with pytest.raises(TypeError, match="blok"):
        obj.acquire(blok=True)
    with pytest.raises(TypeError):
        obj.acquire(True, block=True)
    with pytest.raises(TypeError, match="timeout"):
        obj.acquire(timeout="1")
    # Every accepted spelling takes it, and release gives it back.
    for args, kwargs in [
        ((), {}),
        ((1,), {}),
        ((True, 5), {}),
        ((), {"block": 0}),
        ((), {"timeout": 5}),
        ((), {"block": True, "timeout": 2.5}),
        ((False, None), {}),
    ]:
        assert obj.acquire(*args, **kwargs) is True, (args, kwargs)
        obj.release()
    with obj as entered:
        assert entered is True
    assert obj.acquire(False) is True  # the with block gave it back
    obj.release()
    obj.close()


@needs_native
@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_a_taken_semaphore_refuses_every_non_blocking_call_and_a_closed_one_raises(kind):
    # acquire(False) is answered in C (no holder to look at); the other forms go
    # through the Python method, which checks a timeout first: all agree.
    sem = NATIVE[kind](1)
    assert sem.acquire(False) is True
    for args, kwargs in [((False,), {}), ((0,), {}), ((None,), {}), ((), {"block": False})]:
        assert sem.acquire(*args, **kwargs) is False, (args, kwargs)
    assert sem.acquire(False, 0.01) is False
    with pytest.raises(ValueError):
        sem.acquire(False, float("nan"))  # (checked although the call does not block)
    sem.release()
    assert sem.acquire(False) is True
    sem.close()
    with pytest.raises(ValueError, match="closed"):
        sem.acquire(False)


@needs_native
def test_a_lock_taken_elsewhere_is_refused_without_blocking_and_waits_with_a_timeout():
    lock = NATIVE["Lock"]()
    other = _lock._rebuild_lock(NATIVE["Lock"], lock._named, lock._shared)
    assert lock.acquire(False)
    assert other.acquire(False) is False
    assert other.acquire(block=False, timeout=None) is False
    assert other.acquire(timeout=0.05) is False
    lock.release()
    assert other.acquire(timeout=0.05) is True
    other.release()
    lock.close()


@needs_native
@pytest.mark.parametrize("name", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_after_close_every_fast_path_raises_and_nothing_stays_open(name):
    obj = NATIVE[name]()
    sem = obj._named.sem
    obj.close()
    # Only `sem` and getrefcount's argument are left: the C object let go of it,
    # so the OS semaphore closes (and its name can be reclaimed) with them.
    assert sys.getrefcount(sem) == 2
    del sem
    for call in (obj.acquire, obj.release, obj.__enter__, lambda: obj.acquire(False, 1.0)):
        # (An RLock's release says that this thread does not hold it: it is closed.)
        with pytest.raises((ValueError, LockNotOwnedError), match="closed"):
            call()


@needs_native
def test_a_bounded_semaphore_past_its_bound_raises_from_release_and_from_exit():
    sem = NATIVE["BoundedSemaphore"](1)
    with pytest.raises(ValueError, match=r"released too many times.*bound 1"):
        sem.release()
    with pytest.raises(ValueError, match="released too many times"):
        sem.__exit__(None, None, None)
    assert sem.get_value() == 1
    sem.close()


@needs_native
def test_the_rlock_keeps_its_thread_and_depth_in_the_c_object():
    rlock = NATIVE["RLock"]()
    assert rlock._tid is None and rlock._depth == 0
    with rlock, rlock:
        assert rlock._tid == threading.get_ident()
        assert rlock._depth == 2
    assert rlock._tid is None and rlock._depth == 0
    rlock.close()


def take_and_report(lock, peeked_token):
    """In a forked child: the identity and token the lock records through the C path."""
    with lock:
        owner = lock._w[0]
    token = lock._w[0]
    return (
        owner == float(_sharedwords.ident()),
        pid_of(owner) == os.getpid(),
        token != peeked_token - 1.0,
    )


@needs_native
def test_a_forked_child_records_its_own_identity_and_tokens():
    lock = NATIVE["Lock"]()
    with lock:  # the parent's identity is recorded first
        assert pid_of(lock._w[0]) == os.getpid()
    peeked = _lock._next_token()  # the parent's sequence goes on from here
    p = proctor.get_context("fork").Process(target=take_and_report, args=(lock, peeked))
    p.start()
    assert finish(p) == (0, (True, True, True))
    lock.close()


def hold_and_report(lock, sem, held, go):
    """In a child that runs pure Python: the objects arrive as the pure classes."""
    with lock:
        held.set()
        go.wait(30)
    sem.release()
    return type(lock).__qualname__, type(sem).__qualname__


@needs_native
def test_a_process_running_pure_python_shares_native_objects(monkeypatch):
    lock, sem = NATIVE["Lock"](), NATIVE["BoundedSemaphore"](1)
    held, go = proctor.Event(), proctor.Event()
    assert sem.acquire(timeout=5)
    monkeypatch.setenv(_accel.ENV_VAR, "1")  # for the spawned child only
    p = proctor.get_context("spawn").Process(target=hold_and_report, args=(lock, sem, held, go))
    p.start()
    try:
        assert held.wait(30)
        assert lock.acquire(False) is False  # the child holds it through the pure path
        go.set()
        assert lock.acquire(timeout=30) is True
        lock.release()
        assert sem.acquire(timeout=30) is True  # the child's pure release reached us
    finally:
        go.set()
        assert finish(p) == (0, ("PyLock", "PyBoundedSemaphore"))
    for obj in (lock, sem, held, go):
        obj.close()


# Conditions sleep in the C slice only where the accelerator has it (not macOS,
# which has no sem_timedwait).
needs_c_slice = pytest.mark.skipif(
    NATIVE is not None and not hasattr(_accel.native, "wait_slice"),
    reason="no C slice here (macOS has no sem_timedwait): conditions sleep in Python",
)


class _Interrupted(Exception):
    pass


@needs_native
@needs_c_slice
@pytest.mark.parametrize("lock_kind", ["Lock", "RLock"])
def test_a_condition_wait_in_the_c_slice_is_interruptible_and_leaves_no_ticket(lock_kind):
    """A signal handler that raises during the C slice's sleep ends the wait: the
    waiter lets go of its ticket, holds the lock again, and a later waiter is the
    one the next notify() reaches."""
    from proctor._sync import _condition

    assert (_condition._SLICE_EMPTY, _condition._SLICE_NOTIFIED, _condition._SLICE_OTHER) == (
        _accel.native.SLICE_EMPTY,
        _accel.native.SLICE_NOTIFIED,
        _accel.native.SLICE_OTHER,
    )
    cond = proctor.Condition(NATIVE[lock_kind]())
    assert cond._lock._wait_slice is _accel.native.wait_slice

    def interrupt(signum, frame):
        raise _Interrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with cond:
            with pytest.raises(_Interrupted):
                cond.wait(30)
            assert cond._lock._is_owned()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert cond._queue._own() == set()  # the ticket's byte is let go
    results = []

    def waiter():
        with cond:
            results.append(cond.wait(30))

    t = threading.Thread(target=waiter)
    t.start()
    try:
        wait_until(lambda: cond._queue._own(), timeout=10)
        with cond:
            cond.notify(1)
    finally:
        t.join(30)
    assert results == [True]
    cond.close()


def _slice_args(cond, ticket):
    """wait_slice's arguments for ``ticket`` of ``cond``, as _WaitQueue._sleep_in_c passes them."""
    import fcntl

    from proctor._core._anonmem import own_description_locks
    from proctor._sync import _condition

    queue = cond._queue
    slot = ticket % _condition._SPAN
    cmd = fcntl.F_OFD_SETLK if own_description_locks() else fcntl.F_SETLK
    return (
        cond._named.sem,
        cond._w,
        _condition._NOTIFIED,
        ticket,
        1.0,
        queue.shared.fd,
        cmd,
        queue._base + slot,
        slot,
        queue._own(),
    )


@needs_native
@needs_c_slice
@pytest.mark.parametrize("lock_kind", ["Lock", "RLock"])
def test_the_c_slice_retakes_a_free_lock_after_its_own_wake_up_and_leaves_a_busy_one(lock_kind):
    """After the waiter's own wake-up, the C slice lets go of the ticket's byte and
    takes the condition's lock back if it is free (an RLock at the saved depth);
    a lock held by another thread is left alone for the Python acquire."""
    from proctor._sync import _condition

    assert _condition._SLICE_RETAKEN == _accel.native.SLICE_RETAKEN
    lock = NATIVE[lock_kind]()
    cond = proctor.Condition(lock)
    wait_slice = _accel.native.wait_slice
    assert lock.acquire(timeout=30)
    ticket = cond._queue.enter()
    cond._w[_condition._NOTIFIED] = ticket + 1  # as notify() marks it
    saved = lock._release_save()
    cond._named.sem.release()  # ...and as its release posts it
    assert wait_slice(*_slice_args(cond, ticket), lock, saved) == _accel.native.SLICE_RETAKEN
    assert lock._is_owned() and cond._queue._own() == set()
    if lock_kind == "RLock":
        assert lock._depth == saved == 1
    lock.release()
    assert not lock._is_owned()

    # The same wake-up while another thread holds the lock: the byte goes, the lock stays.
    held, done = threading.Event(), threading.Event()
    holder_tid = []

    def holder():
        with lock:
            holder_tid.append(threading.get_ident())
            held.set()
            done.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(30)
        ticket = cond._queue.enter()
        cond._w[_condition._NOTIFIED] = ticket + 1
        cond._named.sem.release()
        found = wait_slice(*_slice_args(cond, ticket), lock, saved)
        assert found == _accel.native.SLICE_NOTIFIED
        assert cond._queue._own() == set()
        tid = lock._tid if lock_kind == "RLock" else lock._holder_tid
        assert tid == holder_tid[0]  # (still the other thread's)
    finally:
        done.set()
        t.join(30)
    cond.close()
    lock.close()


def _let_go_in_child(lock, cond, ticket, base):
    from proctor._sync import _condition

    lock._let_go_kept()  # (what its release would run)
    slot = ticket % _condition._SPAN
    if not cond._queue.shared.held_elsewhere(base + slot):
        sys.exit(1)  # the parent's byte was let go
    if cond._w[_condition._KEPT] != ticket + 1:
        sys.exit(2)


@needs_native
@needs_c_slice
@pytest.mark.parametrize("lock_kind", ["Lock", "RLock"])
def test_a_woken_waiter_keeps_its_byte_until_its_release_and_a_stray_wake_up_is_dropped(
    lock_kind,
):
    """The C slice that retook the lock keeps the ticket's byte (claiming KEPT) until
    the lock's release lets it go; meanwhile a stray wake-up taken by another waiter
    is dropped, not passed round the waiters (which the held byte alone would ask);
    a second woken waiter, KEPT being taken, lets its byte go at once."""
    from proctor._sync import _condition

    lock = NATIVE[lock_kind]()
    cond = proctor.Condition(lock)
    queue, sem, w = cond._queue, cond._named.sem, cond._w
    wait_slice = _accel.native.wait_slice
    assert lock.acquire(timeout=30)
    ticket = queue.enter()
    w[_condition._NOTIFIED] = ticket + 1
    saved = lock._release_save()
    sem.release()
    found = wait_slice(*_slice_args(cond, ticket), lock, saved, True)
    assert found == _accel.native.SLICE_RETAKEN and lock._is_owned()
    assert w[_condition._KEPT] == ticket + 1
    assert ticket % _condition._SPAN in queue._own()  # (still held: probes skip it)

    # A forked child's copy of the holding leaves the byte and KEPT to the parent.
    p = proctor.get_context("fork").Process(
        target=_let_go_in_child, args=(lock, cond, ticket, queue._base)
    )
    p.start()
    assert finish(p)[0] == 0
    assert w[_condition._KEPT] == ticket + 1

    sem.release()  # a stray wake-up (a waiter that died after being marked)
    assert sem.acquire(False)  # ...taken by another waiter, which passes it on or not
    assert queue._pass_on(sem, False) is False
    assert not sem.acquire(False)  # dropped

    # A second waiter woken meanwhile (KEPT is taken) lets its byte go in the slice.
    other = queue.enter()
    w[_condition._NOTIFIED] = other + 1
    sem.release()
    assert wait_slice(*_slice_args(cond, other), None, None, True) == (_accel.native.SLICE_NOTIFIED)
    assert queue._own() == {ticket % _condition._SPAN}
    assert w[_condition._KEPT] == ticket + 1

    lock.release()  # the release lets the kept byte go and frees KEPT
    assert queue._own() == set() and w[_condition._KEPT] == 0
    assert not lock._is_owned()

    # Closed while the byte is kept: close() lets it go, while the words are there.
    assert lock.acquire(timeout=30)
    ticket = queue.enter()
    w[_condition._NOTIFIED] = ticket + 1
    saved = lock._release_save()
    sem.release()
    assert wait_slice(*_slice_args(cond, ticket), lock, saved, True) == (
        _accel.native.SLICE_RETAKEN
    )
    assert w[_condition._KEPT] == ticket + 1
    cond.close()
    assert queue._own() == set()
    lock.release()
    lock.close()


def _keep_and_stop(cond, flag, woken):
    with cond:
        cond.wait_for(lambda: flag.value, 30)
        woken.set()
        threading.Event().wait(60)  # killed here, holding the lock and its kept byte


@needs_native
@needs_c_slice
def test_a_keeper_killed_in_its_critical_section_frees_kept_for_the_next_waiters():
    """A waiter killed while it keeps its byte leaves KEPT claimed; the next enter()
    (under the lock, taken over with OwnerDiedWarning) sees the byte free and frees
    KEPT, so the next woken waiter keeps its byte again."""
    from proctor._sync import _condition

    ctx = proctor.get_context("fork")
    lock = NATIVE["Lock"]()
    cond = proctor.Condition(lock)
    flag, woken = ctx.Value("i", 0, lock=False), ctx.Event()
    p = ctx.Process(target=_keep_and_stop, args=(cond, flag, woken))
    p.start()
    wait_until(lambda: cond._queue.count() == 1, timeout=30)
    with cond:
        flag.value = 1
        cond.notify()
    assert woken.wait(30)
    assert cond._w[_condition._KEPT] != 0
    p.kill()
    assert finish(p)[0] == -signal.SIGKILL
    with pytest.warns(proctor.OwnerDiedWarning):
        assert lock.acquire(timeout=30)
    assert cond.wait(timeout=0) is False  # its enter() looks at KEPT
    assert cond._w[_condition._KEPT] == 0
    lock.release()
    cond.close()
    lock.close()


@needs_native
def test_the_c_event_set_and_notify_read_the_condition_words_python_names():
    """_native.event_set and cond_notify index the same header words as _condition.py."""
    from proctor._sync import _condition as c

    assert _accel.native.CONDITION_WORDS == (
        c._TICKET,
        c._FLAG,
        c._SETS,
        c._NOTIFIED,
        c._UNMARKED,
        c._KEPT,
        c._HEADER,
    )


def _event_words(event):
    return list(event._w[:8])


@needs_native
def test_c_event_set_leaves_a_busy_lock_or_a_stand_in_semaphore_to_python():
    """event_set answers NotImplemented, changing nothing, whenever Python must act:
    the event's lock is held (Python waits for it, or takes it from a dead holder),
    or its semaphore is closed or not a SemLock (Python calls its methods)."""
    from proctor._sync import _condition as c

    event = proctor.Event()
    cond = event._cond
    assert type(cond._lock) is NATIVE["Lock"]
    with cond._lock:
        ticket = cond._queue.enter()
    fast = _accel.native.event_set
    before = _event_words(event)
    with cond._lock:  # busy: even this process's holder is not waited for in C
        assert fast(cond._lock, cond._named.sem, event._w) is NotImplemented
    assert fast(cond._lock, object(), event._w) is NotImplemented
    pure_lock = IMPLEMENTATIONS["python"]["Lock"]()
    assert fast(pure_lock, cond._named.sem, event._w) is NotImplemented
    assert _event_words(event) == before and not event.is_set()
    assert cond._lock.acquire(False)  # nothing left taken
    cond._lock.release()
    assert fast(cond._lock, cond._named.sem, event._w) is None
    assert event.is_set() and event._w[c._SETS] == 1 and event._w[c._NOTIFIED] == ticket + 1
    assert cond._named.sem.acquire(False) and not cond._named.sem.acquire(False)  # one post
    assert cond._lock.acquire(False)  # released again
    cond._lock.release()
    pure_lock.close()
    event.close()


@needs_native
@pytest.mark.parametrize("lock_kind", ["Lock", "RLock"])
def test_c_notify_marks_all_or_leaves_the_call_to_python(lock_kind):
    """cond_notify handles notify(n) only when n covers every waiter not yet notified
    and the caller holds the lock; otherwise it answers NotImplemented having changed
    nothing (Python probes who still waits, or raises for a non-owner)."""
    from proctor._sync import _condition as c

    cond = proctor.Condition(NATIVE[lock_kind]())
    post = cond._named.sem.release
    fast = _accel.native.cond_notify
    with cond:
        cond._queue.enter()
        cond._queue.enter()
        before = list(cond._w[:8])
        assert fast(cond._lock, post, cond._w, 1) is NotImplemented  # 1 of 2: probes
        assert fast(cond._lock, post, cond._w, 2.0) is NotImplemented  # not an int
        assert fast(object(), post, cond._w, 2) is NotImplemented
        assert list(cond._w[:8]) == before and not cond._lock._deferred
    assert fast(cond._lock, post, cond._w, 2) is NotImplemented  # not held
    assert list(cond._w[:8]) == before
    with cond:
        assert fast(cond._lock, post, cond._w, 2) is None
        assert cond._w[c._NOTIFIED] == cond._w[c._TICKET] and cond._w[c._UNMARKED] == 0
        assert cond._lock._deferred == [post, post]
        assert not cond._named.sem.acquire(False)  # nothing posted under the lock
    assert cond._lock._deferred is None
    assert cond._named.sem.acquire(False) and cond._named.sem.acquire(False)  # at the release
    for ticket in range(2):
        cond._queue.let_go(ticket)
    cond.close()
    cond._lock.close()


@pytest.mark.parametrize("n", [1, 3])
def test_event_set_and_notify_leave_the_same_words_in_both_implementations(n):
    """The C set()/notify() and the pure-Python ones write the same shared state."""
    states = {}
    for name, classes in IMPLEMENTATIONS.items():
        if classes is None:
            continue
        event = proctor.Event()
        event._setup(type(event._cond)(classes["Lock"]()))
        cond = proctor.Condition(classes["RLock"]())
        with event._cond._lock:
            for _ in range(n):
                event._cond._queue.enter()
        with cond:
            for _ in range(n):
                cond._queue.enter()
            cond.notify(n)
        event.set()
        states[name] = (list(event._w[:8]), list(cond._w[:8]))
        drained = [event._cond._named.sem.acquire(False) for _ in range(n + 1)]
        drained += [cond._named.sem.acquire(False) for _ in range(n + 1)]
        assert drained == ([True] * n + [False]) * 2
        for ticket in range(n):
            cond._queue.let_go(ticket)
        for obj in (event, cond):
            obj.close()
        cond._lock.close()
    if len(states) == 2:
        assert states["native"] == states["python"]


# --- a Lock held by another process: the first slice of the wait sleeps in C ---


def hold_until_told(lock, held_w, gate_r):
    with lock:
        os.write(held_w, b"h")
        os.read(gate_r, 1)


@contextlib.contextmanager
def _held_by_a_child(lock):
    """``lock`` held by a forked child until the block ends."""
    held_r, held_w = os.pipe()
    gate_r, gate_w = os.pipe()
    child = proctor.get_context("fork").Process(target=hold_until_told, args=(lock, held_w, gate_r))
    child.start()
    try:
        assert os.read(held_r, 1) == b"h"
        yield lambda: os.write(gate_w, b"g")
    finally:
        os.write(gate_w, b"g")
        child.join(30)
        assert child.exitcode == 0
        child.close()
        for fd in (held_r, held_w, gate_r, gate_w):
            os.close(fd)


def _thread_state(thread):
    with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def _spy_on(monkeypatch, python_class, method):
    """Record every call of a lock's Python fallback (attach the lock afterwards)."""
    calls = []
    cls = python_class()
    python_path = getattr(cls, method)

    def spy(self, *args, **kwargs):
        calls.append(args)
        return python_path(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, spy)
    return calls


# (kind, how to make one, the class whose Python method the C path falls back to,
# that method's name): a Lock, an RLock and a Semaphore used as a lock.
WAITED_IN_C = [
    ("Lock", lambda: NATIVE["Lock"](), lambda: _lock._LockMethods, "_acquire_after_c"),
    ("RLock", lambda: NATIVE["RLock"](), lambda: _lock._RLockMethods, "acquire"),
    (
        "Semaphore",
        lambda: NATIVE["Semaphore"](1),
        lambda: _semaphore._SemaphoreMethods,
        "acquire",
    ),
]


@needs_native
@needs_c_slice
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc (Linux)")
@pytest.mark.parametrize(
    ("kind", "make", "python_class", "method"), WAITED_IN_C, ids=[w[0] for w in WAITED_IN_C]
)
@pytest.mark.parametrize("how", ["acquire", "with"])
def test_a_lock_another_process_holds_is_waited_for_in_c(
    monkeypatch, kind, make, python_class, method, how
):
    # The hand-over between two processes takes microseconds; the Python wait
    # (the Python method and its slices) cost more than the wait itself. The
    # acquire that sleeps in C when the child lets go never calls it.
    calls = _spy_on(monkeypatch, python_class, method)
    lock = make()  # (attached to the spy)
    with _held_by_a_child(lock) as let_go:
        entered = threading.Event()
        results = []

        def take():
            entered.set()
            if how == "with":
                with lock:
                    results.append(True)
            else:
                results.append(lock.acquire())
                lock.release()

        taker = threading.Thread(target=take)
        taker.start()
        entered.wait(30)
        wait_until(lambda: _thread_state(taker) == "S", timeout=10)  # asleep in the wait
        let_go()
        taker.join(30)
    assert results == [True]
    assert calls == []
    lock.close()


@needs_native
@needs_c_slice
@pytest.mark.parametrize(
    ("kind", "make", "python_class", "method"), WAITED_IN_C, ids=[w[0] for w in WAITED_IN_C]
)
def test_a_signal_ends_the_c_sleep_of_a_lock_wait(kind, make, python_class, method):
    # The handler's exception comes out of acquire() (the Python wait, which
    # takes over when the C sleep is interrupted, runs it), and the lock stays
    # the child's.
    lock = make()

    def interrupt(signum, frame):
        raise _Interrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with _held_by_a_child(lock):
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(_Interrupted):
                lock.acquire()
            assert not lock.acquire(False)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert lock.acquire(timeout=30)
    lock.release()
    lock.close()


# --- acquire(False) of a lock another process holds: the holder's life asked in C ---

# (kind, the class whose Python method the C path falls back to, that method's name)
TRIED_IN_C = [
    ("Lock", lambda: _lock._LockMethods, "_acquire_after_c"),
    ("RLock", lambda: _lock._RLockMethods, "acquire"),
]
needs_c_probe = pytest.mark.skipif(
    not _sharedwords.own_description_locks(),
    reason="the C probe asks with F_OFD_GETLK (Linux): elsewhere Python asks",
)


def hold_signal_and_sleep(lock, held_w):
    lock.acquire()
    os.write(held_w, b"h")
    while True:
        signal.pause()  # until killed


def try_twice_and_count(lock, calls):
    """In a forked child: acquire(False) twice, and how many calls reached Python."""
    del calls[:]
    answers = (lock.acquire(False), lock.acquire(False))
    return answers, len(calls)


@needs_native
@needs_c_probe
@pytest.mark.parametrize(("kind", "python_class", "method"), TRIED_IN_C, ids=["Lock", "RLock"])
def test_acquire_false_asks_in_c_whether_the_holder_lives(monkeypatch, kind, python_class, method):
    # A failed try-lock cost ~2.4 us through the Python probe (stdlib: 60 ns, and
    # no liveness): the C path asks the kernel about the holder's identity byte
    # itself, and leaves only a dead (or unrecorded) holder to Python.
    calls = _spy_on(monkeypatch, python_class, method)
    lock = NATIVE[kind]()  # (attached to the spy)
    with _held_by_a_child(lock) as let_go:
        assert lock.acquire(False) is False
        assert lock.acquire(block=False, timeout=None) is False
        assert lock.acquire(False, 5) is False
        # A timeout of zero or less waits no more (no spin: ~44 us -> ~0.45 us).
        for timeout in (0, 0.0, -1, -2.5, -(10**30)):
            assert lock.acquire(timeout=timeout) is False
            assert lock.acquire(True, timeout) is False
        assert calls == []
        # ...but an int past a C long is a long wait, not a refusal.
        results = []

        def take():
            results.append(lock.acquire(timeout=10**30))
            lock.release()

        taker = threading.Thread(target=take)
        taker.start()
        wait_until(lambda: _thread_state(taker) == "S", timeout=10)  # asleep in the wait
        let_go()
        taker.join(30)
        assert results == [True]  # (through Python: a wait with a timeout)
        del calls[:]
    assert lock.acquire(timeout=0) is True  # let go by the child
    # A forked child's probe is armed by its first Python call: it is its parent's
    # description until then, which would not see the parent's own byte as held.
    p = proctor.get_context("fork").Process(target=try_twice_and_count, args=(lock, calls))
    p.start()
    assert finish(p) == (0, ((False, False), 1))
    lock.release()
    # A killed holder's lock is Python's to recover, and it says so.
    held_r, held_w = os.pipe()
    p = proctor.get_context("fork").Process(target=hold_signal_and_sleep, args=(lock, held_w))
    p.start()
    try:
        assert os.read(held_r, 1) == b"h"
        assert lock.acquire(False) is False
        p.kill()
        p.join(30)
        with pytest.warns(proctor.OwnerDiedWarning, match=f"process {p.pid} died"):
            assert lock.acquire(False) is True
        assert len(calls) == 1
    finally:
        finish(p)
        os.close(held_r)
        os.close(held_w)
    lock.release()
    lock.close()
