"""A fork start's own fork (``_start._native.fork_start``, Linux, Python 3.12+).

It is ``os.fork()`` -- the audit event, the at-fork hooks -- except that Python
3.12+'s warning about forking a process that runs threads leaves out the log
listener's thread, which proctor's fork hooks make safe to fork with. Each test
runs in a fresh interpreter: pytest's own threads would count here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from proctor._logging import _forwarding as _log_forwarding
from proctor._start import _bootstrap, _popen_fork

_bootstrap.load_prctl()
FORK_START = _popen_fork._fork_function()

needs_fork_start = pytest.mark.skipif(
    FORK_START is None,
    reason="no _start._native.fork_start here (Linux, Python 3.12+, the C accelerator)",
)

PRELUDE = """
import logging, os, sys, threading, time, warnings, proctor
def noop():
    pass
def starts(n):
    ctx = proctor.get_context("fork")
    for _ in range(n):
        p = ctx.Process(target=noop)
        p.start(); p.join(30); assert p.exitcode == 0; p.close()
"""


def run(body: str) -> list[str]:
    code = PRELUDE + "if __name__ == '__main__':\n" + textwrap.indent(textwrap.dedent(body), "    ")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@needs_fork_start
def test_a_fork_start_beside_the_log_listener_gives_no_thread_warning():
    out = run(
        """
        # (Children forward: a listener runs. Not a NullHandler, which configures nothing.)
        logging.root.addHandler(logging.StreamHandler(open(os.devnull, "w")))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            starts(3)
            listening = [t.name for t in threading.enumerate() if t.name == "proctor-log-listener"]
        print(listening)
        print([str(w.message) for w in caught])
        """
    )
    assert out == ["['proctor-log-listener']", "[]"]


@needs_fork_start
def test_a_fork_start_beside_the_native_parent_watch_gives_no_thread_warning():
    # A child started from a thread watches its parent from a native thread of
    # _start._native, which holds no lock and needs no copy in a fork child (which
    # arms its own watch): the child's own fork starts do not warn about it.
    out = run(
        """
        def child():
            comms = [open(f"/proc/self/task/{task}/comm").read().strip()
                     for task in os.listdir("/proc/self/task")]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                starts(2)
            return comms.count("proctor-watch"), [str(w.message) for w in caught]
        got = []
        def starter():
            p = proctor.get_context("fork").Process(target=child)
            p.start(); p.join(60); got.append(p.result); p.close()
        thread = threading.Thread(target=starter)
        thread.start(); thread.join()
        print(got)
        """
    )
    assert out == ["[(1, [])]"]


@needs_fork_start
def test_a_fork_start_beside_another_thread_warns_as_os_fork_does():
    out = run(
        """
        logging.root.addHandler(logging.StreamHandler(open(os.devnull, "w")))
        gate = threading.Event()
        other = threading.Thread(target=gate.wait)
        other.start()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            starts(2)
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        gate.set(); other.join()
        for w in caught:
            print(w.category.__name__, w.message)
        """
    )
    assert len(out) == 3
    assert len(set(out)) == 1  # each start's warning is os.fork()'s, word for word
    assert out[0].startswith("DeprecationWarning This process (pid=")
    assert out[0].endswith("is multi-threaded, use of fork() may lead to deadlocks in the child.")


@needs_fork_start
def test_a_thread_warning_made_an_error_does_not_undo_the_start():
    # As with os.fork(): the warning is given in the parent after the fork, and an
    # error it raises (-W error) is dropped, never leaving a child unaccounted for.
    out = run(
        """
        gate = threading.Event()
        other = threading.Thread(target=gate.wait)
        other.start()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            starts(2)
        gate.set(); other.join()
        print("started")
        """
    )
    assert out == ["started"]


@needs_fork_start
def test_a_fork_start_raises_the_os_fork_audit_event():
    out = run(
        """
        events = []
        sys.addaudithook(lambda event, args: events.append(event) if event == "os.fork" else None)
        starts(3)
        print(len(events))
        """
    )
    assert out == ["3"]


@needs_fork_start
def test_fork_start_refuses_bad_input_without_forking():
    # In a fresh interpreter: a check that failed would fork the test runner.
    out = run(
        """
        from proctor._start import _bootstrap
        _bootstrap.load_prctl()
        fork_start = _bootstrap._native.fork_start
        def failing():
            raise LookupError("no count")
        for own in (
            1, None, "1", lambda: 1, lambda: (-1,), lambda: ("1",), lambda: (1,) * 17, failing
        ):
            try:
                fork_start(own)
            except Exception as exc:
                print(type(exc).__name__)
            else:
                print("forked")
                os._exit(0)
        # own_threads() is asked before the before-fork hooks: none ran, nothing
        # they take is left held (logging's lock: another thread can take it), and
        # a start works.
        other = threading.Thread(target=logging.getLogger, args=("other",), daemon=True)
        other.start()
        other.join(10)
        print("lock held" if other.is_alive() else "lock free")
        starts(1)
        """
    )
    assert out == ["TypeError"] * 4 + ["ValueError", "TypeError", "ValueError", "LookupError"] + [
        "lock free"
    ]


@needs_fork_start
def test_a_thread_own_threads_names_is_left_out_of_the_count_only_while_it_runs():
    # own_threads() is asked before the fork hooks, which may let the GIL go: a
    # thread it named that ended meanwhile (the listener, lingering no more) must
    # not hide another thread from the count. fork_start checks each named thread
    # again after the count.
    out = run(
        """
        _ = proctor.get_context("fork")  # (loads the C module)
        from proctor._start import _bootstrap
        _bootstrap.load_prctl()
        fork_start = _bootstrap._native.fork_start
        gate = threading.Event()
        other = threading.Thread(target=gate.wait)
        other.start()
        ended = threading.Thread(target=int)
        ended.start(); ended.join()
        # (join() may return just before the thread leaves the kernel's list.)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/self/task/{ended.native_id}") and time.monotonic() < deadline:
            time.sleep(0.01)
        for case, own in (("running", other.native_id), ("ended", ended.native_id)):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pid = fork_start(lambda: (own,))
                if pid == 0:
                    os._exit(0)
                os.waitpid(pid, 0)
            print(case, [w.category.__name__ for w in caught])
        gate.set(); other.join()
        """
    )
    assert out == ["running []", "ended ['DeprecationWarning']"]


@needs_fork_start
def test_a_fork_start_runs_no_python_code_once_the_fork_hooks_have_run():
    # Python 3.13's PyOS_BeforeFork() returns holding the runtime's lock on its list
    # of interpreters, which starting a thread takes without letting the GIL go.
    # fork_start called own_threads() after it: the eval breaker handed the GIL to
    # a thread starting a thread, and both waited for ever (on 3.13, every run of
    # this hung within 400 starts). The listener runs (own_threads() then asks
    # is_alive()), and a tiny switch interval hands the GIL over at every chance.
    out = run(
        """
        sys.setswitchinterval(1e-6)
        logging.root.addHandler(logging.StreamHandler(open(os.devnull, "w")))
        def churn():
            while True:
                thread = threading.Thread(target=int)
                thread.start(); thread.join()
        for _ in range(3):
            threading.Thread(target=churn, daemon=True).start()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # (the churning threads)
            starts(1000)
        print("started")
        """
    )
    assert out == ["started"]


class _Listener:
    def __init__(self, thread):
        self._thread = thread


def test_only_a_living_listener_thread_other_than_this_one_is_fork_safe(monkeypatch):
    gate = threading.Event()
    running = threading.Thread(target=gate.wait)
    ended = threading.Thread(target=lambda: None)
    running.start()
    ended.start()
    ended.join(10)
    seen_from_the_listener = []
    try:
        cases = {
            "none": None,
            "no thread": _Listener(None),
            "not started": _Listener(threading.Thread(target=gate.wait)),
            "ended": _Listener(ended),  # (a listener whose thread died of an error)
            "running": _Listener(running),
            "this one": _Listener(threading.current_thread()),
        }
        counts = {}
        for case, listener in cases.items():
            monkeypatch.setattr(_log_forwarding, "_listener", listener)
            counts[case] = _log_forwarding.fork_safe_threads()
        # A handler starting a process forks from the listener's own thread.
        asking = threading.Thread(
            target=lambda: seen_from_the_listener.append(_log_forwarding.fork_safe_threads())
        )
        monkeypatch.setattr(_log_forwarding, "_listener", _Listener(asking))
        asking.start()
        asking.join(10)
    finally:
        gate.set()
        running.join(10)
    assert counts == {
        "none": (),
        "no thread": (),
        "not started": (),
        "ended": (),
        "running": (running.native_id,),
        "this one": (),
    }
    assert seen_from_the_listener == [()]
