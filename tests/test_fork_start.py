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

import pytest

from proctor._start import _bootstrap, _popen_fork

_bootstrap.load_prctl()
FORK_START = _popen_fork._fork_function()

needs_fork_start = pytest.mark.skipif(
    FORK_START is None,
    reason="no _start._native.fork_start here (Linux, Python 3.12+, the C accelerator)",
)

PRELUDE = """
import logging, os, sys, threading, warnings, proctor
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
        logging.root.addHandler(logging.NullHandler())  # children forward: a listener runs
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
def test_a_fork_start_beside_another_thread_warns_as_os_fork_does():
    out = run(
        """
        logging.root.addHandler(logging.NullHandler())
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
@pytest.mark.parametrize(("arg", "error"), [(-1, ValueError), ("1", TypeError), (None, TypeError)])
def test_fork_start_refuses_a_bad_thread_count_before_forking(arg, error):
    with pytest.raises(error):
        FORK_START(arg)
