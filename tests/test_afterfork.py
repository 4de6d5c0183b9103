"""proctor._core._afterfork: the fork generation, and state made again on first use.

A forked child must never use state its parent left "dirty" -- a lock a parent's thread
held at the fork, the parent's helpers, arena, reaper connection -- although the modules
no longer rebuild it at the fork: each test forks while the state is dirty, and checks
what the child sees at its first use.
"""

from __future__ import annotations

import os
import pickle
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from helpers import wait_until
from proctor._core import _afterfork, _anonmem, _rebuilding, _runtime
from proctor._logging import _forwarding
from proctor._reaper import _client
from proctor._start import _methods
from proctor._sync import _lock

LIMIT = 30.0


def _in_forked_child(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a child made by a bare ``os.fork()``; return what it returned."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            os.write(w, pickle.dumps(fn()))
        except BaseException as exc:
            os.write(w, pickle.dumps(("raised", repr(exc))))
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    try:
        data = b""
        deadline = time.monotonic() + LIMIT
        while True:
            ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "the forked child did not answer"
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
    wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, timeout=LIMIT)
    return pickle.loads(data)


@contextmanager
def _held_by_another_thread(*locks: Any) -> Iterator[None]:
    """Keep ``locks`` held by a thread of this process for the length of the block."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in locks:
            lock.acquire()
        taken.set()
        done.wait(LIMIT)
        for lock in reversed(locks):
            lock.release()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert taken.wait(LIMIT)
        yield
    finally:
        done.set()
        thread.join(LIMIT)


def _free_for_another_thread(lock: Any) -> bool:
    # (An RLock this thread holds is no test: it would take it again.)
    got: list[bool] = []

    def take() -> None:
        taken = lock.acquire(timeout=LIMIT)
        got.append(taken)
        if taken:
            lock.release()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join(LIMIT)
    return got == [True]


def test_a_per_process_value_is_made_again_once_on_first_use_in_a_forked_child():
    made: list[int] = []

    def make() -> list[int]:
        made.append(os.getpid())
        return [os.getpid()]

    value = _afterfork.PerProcess(make)
    assert value.get() is value.get()
    parent_value = value.get()

    def child() -> tuple:
        generation = _afterfork.generation
        before = list(made)  # nothing made at the fork
        # Threads racing to the first use all get the one new value.
        got: list[Any] = []
        threads = [threading.Thread(target=lambda: got.append(value.get())) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(LIMIT)
        return generation, before, made, len({id(v) for v in got}), got[0], parent_value

    generation, before, made_then, distinct, child_value, old = _in_forked_child(child)
    assert generation == _afterfork.generation + 1
    assert before == [os.getpid()]
    assert len(made_then) == 2 and made_then[0] == os.getpid() != made_then[1]
    assert distinct == 1
    assert child_value == [made_then[1]]
    assert old == [os.getpid()]  # the parent's is untouched
    assert value.get() is parent_value and made == [os.getpid()]


def test_a_lock_a_parent_thread_held_at_the_fork_is_free_in_the_child():
    lock = _afterfork.PerProcess(threading.Lock)
    with _held_by_another_thread(lock.get()):
        assert lock.get().locked()
        free = _in_forked_child(lambda: lock.get().acquire(timeout=LIMIT))
        assert lock.get().locked()  # still the thread's here
    assert free is True


def test_the_reaper_connection_is_closed_once_down_a_line_of_forks():
    # The child never uses the reaper, and puts a descriptor of its own at the number
    # its parent's connection had. Its own child must leave that one alone, and make
    # its client from the grandparent's record.
    _client.ensure_started()
    parent = _client.client()
    number = parent.fd

    def grandchild() -> tuple:
        own = _client.client()
        return os.readlink(f"/proc/self/fd/{number}"), own.address, own.refs is parent.refs

    def child() -> tuple:
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd != number:  # (it is, when the connection's was the lowest free number)
            os.dup2(fd, number)
            os.close(fd)
        return _in_forked_child(grandchild)

    target, address, took_over = _in_forked_child(child)
    assert target == os.devnull  # the grandchild did not close it again
    assert address == parent.address and took_over


def test_module_state_left_dirty_at_the_fork_is_fresh_at_first_use():
    # Locks held by a thread of the parent at the fork, a helper registered, an arena
    # being filled, a listener lock taken: the child has its own of each.
    _runtime.register_helper(1)
    arena, _offset = _anonmem.allocate(8)
    try:
        with _held_by_another_thread(
            _methods._lock.get(),
            _runtime._helpers.get().lock,
            _anonmem._rebuild_lock.get(),
            _anonmem._heap.get().lock,
            _forwarding._listener_lock.get(),
            rebuild_lock := _rebuilding._rebuild_lock.get(),
            renewing := _afterfork.renewing(),
            _lock._recovery_mutex.get(),
        ):

            def child() -> dict:
                new_arena, _new_offset = _anonmem.allocate(8)
                with _forwarding._listener_lock.get():
                    pass
                return {
                    "method": _methods.get_start_method(),
                    "helpers": sorted(_runtime.helper_pids()),
                    "same_arena": new_arena is arena,
                    "dispatching_free": _free_for_another_thread(_forwarding._dispatching),
                    # (RLocks: identity, as a thread of the child may share the
                    # holder's ident and take a held RLock again.)
                    "rebuild_lock_own": _rebuilding._rebuild_lock.get() is not rebuild_lock,
                    "renewing_own": _afterfork.renewing() is not renewing,
                    "recovery_free": _free_for_another_thread(_lock._recovery_mutex.get()),
                }

            got = _in_forked_child(child)
    finally:
        _runtime.unregister_helper(1)
    assert got == {
        "method": _methods.get_start_method(),
        "helpers": [],
        "same_arena": False,
        "dispatching_free": True,
        "rebuild_lock_own": True,
        "renewing_own": True,
        "recovery_free": True,
    }


def test_a_forked_child_has_a_reaper_client_of_its_own_and_not_the_parents_connection():
    _client.ensure_started()  # connected: the descriptor is the parent's
    parent = _client.client()
    assert parent.fd is not None

    def child() -> tuple:
        try:
            os.fstat(parent.fd)
            open_after_fork = True
        except OSError:
            open_after_fork = False
        own = _client.client()
        return open_after_fork, own is parent, own.pid == os.getpid(), own.fd, own.address

    open_after_fork, same, own_pid, fd, address = _in_forked_child(child)
    assert not open_after_fork  # closed at the fork, before any use
    assert not same and own_pid and fd is None
    assert address == parent.address
    assert _client.client() is parent and parent.fd is not None


def test_the_renewal_lock_is_made_once_per_process_and_only_when_needed():
    # The fork hook only counts the generation (a child that renews nothing allocates
    # no lock); the first renewal in the child makes the child's lock, later ones and
    # other threads get that same one.
    parent_lock = _afterfork.renewing()
    assert _afterfork.renewing() is parent_lock

    def child() -> tuple:
        before = _afterfork.generation in _afterfork._renewing
        lock = _afterfork.renewing()
        others: list[Any] = []
        thread = threading.Thread(target=lambda: others.append(_afterfork.renewing()))
        thread.start()
        thread.join(LIMIT)
        return before, lock is parent_lock, others == [lock], _afterfork.renewing() is lock

    assert _in_forked_child(child) == (False, False, True, True)


# --- the descriptors that fork children let go of (_system.let_go_in_forks) ---

_LET_GO_PROGRAM = r"""
import os, stat, sys
from proctor._core import _system

def same_file(fd, path):
    st, ref = os.fstat(fd), os.stat(path)
    return (st.st_dev, st.st_ino) == (ref.st_dev, ref.st_ino)

listed_r, listed_w = os.pipe()
kept_r, kept_w = os.pipe()
_system.let_go_in_forks(listed_r)
_system.let_go_in_forks(kept_r)
_system.keep_in_forks(kept_r)
assert listed_r in _system.fds_let_go_in_forks()
assert kept_r not in _system.fds_let_go_in_forks()
for bad, error in (("3", TypeError), (True, TypeError), (-1, ValueError)):
    try:
        _system.let_go_in_forks(bad)
    except error:
        pass
    else:
        sys.exit(f"let_go_in_forks({bad!r}) did not raise {error.__name__}")
pid = os.fork()
if pid == 0:
    ok = (
        same_file(listed_r, os.devnull)  # let go of: /dev/null, close-on-exec
        and not os.get_inheritable(listed_r)
        and stat.S_ISFIFO(os.fstat(kept_r).st_mode)  # taken off the list: still the pipe
        and _system.fds_let_go_in_forks() == ()  # the numbers were the parent's
    )
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert stat.S_ISFIFO(os.fstat(listed_r).st_mode)  # the parent's own is untouched
print(_system.describe_fork_list())
"""


@pytest.mark.parametrize("pure", [False, True])
def test_a_fork_child_points_the_listed_descriptors_at_devnull(pure):
    # Each implementation in a fresh interpreter: the list and its fork handler
    # (a pthread_atfork handler, or an os.register_at_fork hook) are per process.
    env = dict(os.environ, PROCTOR_PURE_PYTHON="1" if pure else "0")
    done = subprocess.run(
        [sys.executable, "-c", _LET_GO_PROGRAM],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if pure or not _native_built():
        assert done.stdout.startswith("pure Python")
    else:
        assert done.stdout.startswith("C accelerator")


def _native_built() -> bool:
    """Whether the C module is built and current (whatever PROCTOR_PURE_PYTHON says here)."""
    from proctor._core import _accel

    try:
        from proctor._core import _native
    except ImportError:
        return False
    return _accel._stale_build(_native) is None
