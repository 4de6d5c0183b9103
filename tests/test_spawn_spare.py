"""The opt-in idle interpreter for spawn starts (``PROCTOR_SPAWN_SPARE=1``).

Each test turns it on for itself and discards the spare at the end, so the leak
check sees no process or descriptor of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

import proctor
from helpers import pid_exists, wait_until
from proctor._core import _runtime
from proctor._start import _spawn_spare

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")


@pytest.fixture
def spare_on(monkeypatch):
    monkeypatch.setenv(_spawn_spare.ENV_VAR, "1")
    yield
    _spawn_spare.discard()


def run(target, *args):
    p = proctor.get_context("spawn").Process(target=target, args=args)
    p.start()
    p.join(60)
    assert p.exitcode == 0, p.exception
    result = p.result, p.pid
    p.close()
    return result


def seen():
    return os.getpid(), os.getcwd(), os.environ.get("PROCTOR_TEST_MARK"), sys.argv[1:]


def test_a_spawn_start_uses_the_spare_with_the_parents_state_at_start_time(
    spare_on, tmp_path, monkeypatch
):
    run(int)
    spare = _spawn_spare._spare
    assert spare is not None and spare.pid in _runtime.helper_pids()
    assert spare.pid not in [p.pid for p in proctor.active_children()]
    # What travels in the start message is taken at start time.
    monkeypatch.setattr(sys, "argv", [*sys.argv[:1], "now"])
    (pid, cwd, mark, argv), reported = run(seen)
    assert pid == reported == spare.pid
    assert (cwd, mark, argv) == (os.getcwd(), None, ["now"])
    assert spare.pid not in _runtime.helper_pids()
    # What the interpreter took when it started is checked: a changed
    # environment or directory discards the spare, and the child sees the change.
    older = _spawn_spare._spare
    monkeypatch.setenv("PROCTOR_TEST_MARK", "set after the spare started")
    monkeypatch.chdir(tmp_path)
    (pid, cwd, mark, _argv), _ = run(seen)
    assert (cwd, mark) == (str(tmp_path), "set after the spare started")
    assert pid != older.pid and not psutil.pid_exists(older.pid)  # killed and reaped


def test_start_conditions_see_what_a_spare_cannot_take_from_its_start_message():
    now = _spawn_spare.start_conditions
    before = now(sys.executable)
    assert now(sys.executable + "-other") != before  # set_executable()
    old = os.umask(0o077)
    try:
        assert now(sys.executable) != before
    finally:
        os.umask(old)
    with open(os.devnull, "wb") as f:
        saved = os.dup(1)
        os.dup2(f.fileno(), 1)
        try:
            assert now(sys.executable) != before  # stdout redirected
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        assert now(sys.executable) != before  # an ignored signal stays ignored in a spawn
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert now(sys.executable) == before


def test_a_spare_that_died_while_idle_is_not_used(spare_on):
    run(int)
    spare = _spawn_spare._spare.pid
    os.kill(spare, signal.SIGKILL)
    wait_until(lambda: not pid_exists(spare), timeout=10)  # a zombie: its pidfd is readable
    (pid, *_), reported = run(seen)
    assert pid == reported != spare


def test_the_spare_is_off_by_default_and_only_from_the_main_thread(monkeypatch):
    monkeypatch.delenv(_spawn_spare.ENV_VAR, raising=False)
    assert not _spawn_spare.enabled()
    monkeypatch.setenv(_spawn_spare.ENV_VAR, "1")
    assert _spawn_spare.enabled()
    import threading

    got = []
    t = threading.Thread(target=lambda: got.append(_spawn_spare.enabled()))
    t.start()
    t.join(10)
    assert got == [False]


SCRIPT = """
import os, sys, proctor
from proctor._start import _spawn_spare
if __name__ == "__main__":
    p = proctor.get_context("spawn").Process(target=int)
    p.start(); p.join(60)
    print(_spawn_spare._spare.pid, flush=True)
    if sys.argv[1] == "killed":
        os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize("how", ["exits", "killed"])
def test_a_spare_ends_with_its_parent_silently(how, tmp_path):
    script = tmp_path / "spare_parent.py"
    script.write_text(SCRIPT)
    env = {**os.environ, _spawn_spare.ENV_VAR: "1"}
    done = subprocess.run(
        [sys.executable, str(script), how], env=env, capture_output=True, text=True, timeout=120
    )
    spare = int(done.stdout.split()[0])
    if how == "exits":
        assert done.returncode == 0
        assert not psutil.pid_exists(spare)  # killed and reaped at exit
    else:
        assert done.returncode == -signal.SIGKILL
        wait_until(lambda: not psutil.pid_exists(spare), timeout=10)  # PDEATHSIG
    assert done.stderr == ""
