"""proctor.util: finalizers, after-fork hooks, fork-aware objects, the temp dir, fds."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import proctor
from helpers import open_fds
from proctor import util


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_finalize_runs_when_the_object_is_collected_once():
    calls = []

    class Thing:
        pass

    thing = Thing()
    finalizer = util.Finalize(thing, calls.append, args=("collected",))
    assert finalizer.still_active()
    del thing
    gc.collect()
    assert calls == ["collected"]
    assert not finalizer.still_active()
    assert finalizer() is None  # already ran: nothing more
    assert calls == ["collected"]


def test_finalize_called_directly_returns_the_callbacks_result_and_cancel_drops_it():
    class Thing:
        pass

    thing = Thing()
    assert util.Finalize(thing, lambda x: x * 2, args=(21,))() == 42
    calls = []
    cancelled = util.Finalize(thing, calls.append, args=(1,))
    cancelled.cancel()
    del thing
    gc.collect()
    assert calls == []
    assert "dead" in repr(cancelled)


def test_finalize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="exitpriority"):
        util.Finalize(None, print)
    with pytest.raises(TypeError, match="exitpriority"):
        util.Finalize(None, print, exitpriority="high")
    with pytest.raises(TypeError, match="callable"):
        util.Finalize(None, 3, exitpriority=1)


def test_exit_runs_finalizers_by_priority_around_joining_children():
    # multiprocessing's order: priority >= 0 (highest first), then the children are
    # joined, then the other finalizers with a priority.
    result = _run(
        """
        import sys, proctor
        from proctor import util

        def child():
            import time
            time.sleep(0.2)
            print("child done", flush=True)

        if __name__ == "__main__":
            util.Finalize(None, print, args=("priority 0",), exitpriority=0)
            util.Finalize(None, print, args=("priority 10",), exitpriority=10)
            util.Finalize(None, print, args=("priority -5",), exitpriority=-5)
            util.Finalize(None, print, args=("is_exiting", "?"), exitpriority=5)
            util.Finalize(None, lambda: print("exiting", util.is_exiting()), exitpriority=4)
            proctor.get_context("spawn").Process(target=child).start()
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "priority 10",
        "is_exiting ?",
        "exiting True",
        "priority 0",
        "child done",
        "priority -5",
    ]


def _parents_finalizer_seen_from_the_child(parent_finalizer, path):
    own = util.Finalize(None, _append_line, args=(path, "child's own"), exitpriority=1)
    return parent_finalizer.still_active(), own.still_active()


def _append_line(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


def test_a_forked_childs_finalizers_are_its_own(tmp_path):
    # The parent's finalizers are not the child's: not active there, never run at
    # its exit; the child's own run when it exits.
    path = str(tmp_path / "ran")
    parent_finalizer = util.Finalize(None, _append_line, args=(path, "parent's"), exitpriority=1)
    try:
        p = proctor.get_context("fork").Process(
            target=_parents_finalizer_seen_from_the_child, args=(parent_finalizer, path)
        )
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert p.result == (False, True)
        p.close()
        with open(path) as f:
            assert f.read().splitlines() == ["child's own"]
        assert parent_finalizer.still_active()
    finally:
        parent_finalizer.cancel()


def test_get_temp_dir_is_private_and_removed_at_exit():
    result = _run(
        """
        import os, stat
        from proctor import util
        path = util.get_temp_dir()
        assert util.get_temp_dir() == path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        print(path)
        """
    )
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(result.stdout.strip())


def _after_fork_report(conn, lock, local):
    # In the child: the hooks ran before the target.
    conn.send((REGISTERED_CALLS[:], lock.acquire(timeout=5), hasattr(local, "value")))
    conn.close()


REGISTERED_CALLS: list[str] = []


class _Tracked:
    pass


def test_register_after_fork_and_fork_aware_objects_in_a_forked_child():
    tracked = _Tracked()
    util.register_after_fork(tracked, lambda obj: REGISTERED_CALLS.append("first"))
    util.register_after_fork(tracked, lambda obj: REGISTERED_CALLS.append("second"))
    lock = util.ForkAwareThreadLock()
    local = util.ForkAwareLocal()
    local.value = 1
    parent_end, child_end = proctor.Pipe()
    p = proctor.get_context("fork").Process(
        target=_after_fork_report, args=(child_end, lock, local)
    )
    with lock:  # held by this process at the fork: the child's copy is fresh
        p.start()
        calls, child_got_lock, child_local_kept = parent_end.recv()
    p.join(30)
    assert p.exitcode == 0
    assert calls == ["first", "second"]
    assert child_got_lock is True
    assert child_local_kept is False
    assert REGISTERED_CALLS == []  # never in this process
    assert local.value == 1
    p.close()
    parent_end.close()
    child_end.close()


def test_register_after_fork_needs_a_callable():
    with pytest.raises(TypeError, match="callable"):
        util.register_after_fork(_Tracked(), "not callable")


def test_close_all_fds_except_keeps_only_those_named():
    result = _run(
        """
        import os
        from proctor import util
        keep_r, keep_w = os.pipe()
        gone_r, gone_w = os.pipe()
        util.close_all_fds_except([0, 1, 2, keep_r, keep_w])
        os.write(keep_w, b"ok")
        assert os.read(keep_r, 2) == b"ok"
        for fd in (gone_r, gone_w):
            try:
                os.fstat(fd)
            except OSError:
                continue
            raise SystemExit(f"descriptor {fd} was not closed")
        print("done")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


def test_close_all_fds_except_refuses_what_is_not_a_descriptor():
    before = open_fds()
    with pytest.raises(TypeError, match="descriptors are ints"):
        util.close_all_fds_except(["3"])
    assert open_fds() == before


def test_abstract_sockets_supported_says_what_this_system_does():
    assert util.abstract_sockets_supported is sys.platform.startswith("linux")


def test_fork_aware_thread_lock_is_a_lock():
    lock = util.ForkAwareThreadLock()
    assert lock.acquire(timeout=1)
    assert not lock.acquire(blocking=False)
    lock.release()
    results = []
    thread = threading.Thread(target=lambda: results.append(lock.acquire(timeout=5)))
    thread.start()
    thread.join(10)
    assert results == [True]
