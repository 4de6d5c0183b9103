"""Process: life cycle, results, exceptions and bad input, under every start method."""

from __future__ import annotations

import gc
import os
import pickle
import select
import shutil
import signal
import socket
import sys
import threading
import time

import pytest

import proctor
from helpers import MAIN_GLOBALS_PREAMBLE, finish, open_fds, pid_exists, run_program, wait_until
from proctor import RemoteError, ResultError, UnpicklableError

# --- targets (importable, so they also work by reference) ---------------------


def double(x):
    return x * 2


def add(a, b=0, *, c=0):
    return a + b + c


def raise_value_error(message):
    raise ValueError(message)


def exit_with(code):
    sys.exit(code)


def sleep_forever():
    while True:
        time.sleep(1)


def return_unpicklable():
    return threading.Lock()


def who_am_i():
    me = proctor.current_process()
    parent = proctor.parent_process()
    key = me.authkey
    # (The key itself refuses to be pickled, as the stdlib's: a copy is sent.)
    return me.name, me.pid, os.getpid(), parent.pid, parent.name, type(key).__name__, bytes(key)


def start_method_in_child():
    return proctor.get_start_method()


def write_to_fd_holder(holder, text):
    os.write(holder.fd, text.encode())
    return "written"


class Unpicklable:
    def __reduce__(self):
        raise TypeError("this object refuses to be pickled")


class UnpicklableError_(Exception):
    """An exception carrying something that cannot be pickled."""

    def __init__(self):
        super().__init__("has a lock")
        self.lock = threading.Lock()


def raise_unpicklable_exception():
    raise UnpicklableError_()


def _refuse_to_be_rebuilt(text):
    raise TypeError(f"{text!r} cannot be rebuilt here")


class RefusesToBeRebuilt:
    """Pickles fine; unpickling it raises, whatever reduces the exception holding it.

    (An exception whose ``__init__`` takes two arguments used to serve, but importing
    Dask or Ray installs tblib's exception reducers, which rebuild such an exception.)
    """

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text

    def __reduce__(self):
        return (_refuse_to_be_rebuilt, (self.text,))


class CannotBeUnpickled(Exception):
    pass


def raise_one_that_cannot_be_unpickled():
    raise CannotBeUnpickled(RefusesToBeRebuilt("1-2"))


class Squarer(proctor.Process):
    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def run(self):
        return self.n * self.n


class FdHolder:
    """Owns a descriptor and travels to children through proctor's fd handoff."""

    def __init__(self, fd):
        self.fd = fd

    def __reduce__(self):
        from proctor._core._reduction import fd_token

        return (_rebuild_fd_holder, (fd_token(self.fd, "FdHolder"),))


def _rebuild_fd_holder(token):
    from proctor._core._reduction import take_fd

    return FdHolder(take_fd(token))


# --- basics ----------------------------------------------------------------------


def test_start_join_returns_result_and_exit_code(ctx):
    p = ctx.Process(target=double, args=(21,))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert p.result == 42
    assert p.exception is None
    assert not p.is_alive()
    p.close()


def test_args_and_kwargs_reach_the_target(ctx):
    p = ctx.Process(target=add, args=(1,), kwargs={"b": 2, "c": 3})
    p.start()
    p.join(30)
    assert p.result == 6
    p.close()


def test_lambdas_closures_and_nested_functions_are_targets(ctx):
    offset = 100

    def nested(x):
        return x + offset

    for target, expected in ((lambda: "lambda", "lambda"), (nested, 105)):
        p = ctx.Process(target=target, args=() if expected == "lambda" else (5,))
        p.start()
        p.join(30)
        assert p.exitcode == 0, p.exception
        assert p.result == expected
        p.close()


_GLOBALS_PER_START_PROGRAM = (
    MAIN_GLOBALS_PREAMBLE
    + """
def call(reader):
    return reader()
if __name__ == "__main__":
    ctx = proctor.get_context(sys.argv[1])
    q = ctx.Queue()
    for value in ROUNDS:
        change_config(value)
        q.put(read)  # a message first: what a start sends must not come from it
        assert q.get(timeout=60) is read
        seen = [value]
        for target, args in ((read, ()), (call, (read,)), (call, (Model().read,))):
            p = ctx.Process(target=target, args=args)
            p.start()
            p.join(60)
            assert p.exitcode == 0, p.exception
            seen.append(p.result)
            p.close()
        print(*seen)
"""
)


def test_each_start_sees_a_main_functions_globals_as_they_are_now(start_method):
    # A spawn or forkserver child gets a function of __main__ (target, argument,
    # a method of a class of __main__) by value, with the globals its code uses as
    # they are at its start -- rebound or mutated in place -- as a fork child does.
    out = run_program(_GLOBALS_PER_START_PROGRAM, start_method)
    rows = [line.split() for line in out.splitlines()]
    assert rows == [[str(value)] * 4 for value in (2, 3, 4, 5)], out


def test_subclass_run_is_used_and_its_return_value_kept(ctx):
    p = Squarer(7)
    p._start_method = ctx.get_start_method()
    p.start()
    p.join(30)
    assert p.result == 49
    p.close()


def forks_and_returns_in_both():
    pid = os.fork()
    if pid == 0:  # (a library that forks and forgets os._exit)
        raise ValueError("the forked copy's error")
    os.waitpid(pid, 0)  # the copy has ended (and reported, before the fix)
    return "the child's value"


def test_a_process_the_target_forks_does_not_report_in_the_childs_place(ctx):
    p = ctx.Process(target=forks_and_returns_in_both)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert p.result == "the child's value"
    assert p.exception is None
    p.close()


def test_child_knows_its_name_pid_parent_and_authkey(ctx):
    p = ctx.Process(target=who_am_i, name="worker")
    p.start()
    p.join(30)
    name, reported_pid, real_pid, parent_pid, parent_name, key_type, authkey = p.result
    assert name == "worker"
    assert reported_pid == real_pid == p.pid
    assert parent_pid == os.getpid()
    assert parent_name == proctor.current_process().name
    assert authkey == proctor.current_process().authkey
    assert key_type == "AuthenticationString"
    p.close()


def test_an_authkey_refuses_to_be_pickled_outside_a_start():
    key = proctor.current_process().authkey
    assert isinstance(key, proctor.process.AuthenticationString) and isinstance(key, bytes)
    with pytest.raises(TypeError, match="authkey"):
        pickle.dumps(key)
    a, b = proctor.Pipe()
    with a, b, pytest.raises(Exception, match="authkey"):
        a.send(key)
    assert pickle.loads(pickle.dumps(bytes(key))) == key
    p = proctor.Process()
    p.authkey = b"another key"
    assert type(p.authkey) is proctor.process.AuthenticationString
    assert p.authkey == b"another key"


def test_child_inherits_the_start_method(ctx):
    p = ctx.Process(target=start_method_in_child)
    p.start()
    p.join(30)
    assert p.result == ctx.get_start_method()
    p.close()


def test_large_arguments_and_results_travel_without_blocking(ctx):
    big = b"x" * (3 * 1024 * 1024)  # larger than any socket buffer
    p = ctx.Process(target=bytes.upper, args=(big,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert p.result == big.upper()
    p.close()


def test_descriptors_reach_the_child_through_the_handoff(ctx):
    r, w = os.pipe()
    try:
        p = ctx.Process(target=write_to_fd_holder, args=(FdHolder(w), "through the handoff"))
        p.start()
        p.join(30)
        assert p.result == "written"
        assert os.read(r, 100) == b"through the handoff"
        p.close()
    finally:
        os.close(r)
        os.close(w)


def test_pickling_a_descriptor_outside_a_start_is_refused():
    r, w = os.pipe()
    try:
        with pytest.raises(RuntimeError, match="only be sent to a child process"):
            pickle.dumps(FdHolder(w))
    finally:
        os.close(r)
        os.close(w)


# --- outcomes ------------------------------------------------------------------------


def test_exception_reaches_parent_with_child_traceback(ctx, capfd):
    p = ctx.Process(target=raise_value_error, args=("bad thing",))
    p.start()
    p.join(30)
    assert p.exitcode == 1
    assert p.result is None
    exc = p.exception
    assert type(exc) is ValueError and str(exc) == "bad thing"
    assert isinstance(exc.__cause__, proctor.RemoteTraceback)
    assert "raise_value_error" in exc.__cause__.tb_text
    assert "ValueError: bad thing" in exc.__cause__.tb_text
    p.close()
    err = capfd.readouterr().err
    assert f"Process {p.name}:" in err and "ValueError: bad thing" in err


def test_unpicklable_exception_becomes_remote_error(ctx, capfd):
    p = ctx.Process(target=raise_unpicklable_exception)
    p.start()
    p.join(30)
    exc = p.exception
    assert isinstance(exc, RemoteError)
    assert exc.type_name.endswith("UnpicklableError_")
    assert exc.message == "has a lock"
    assert "raise_unpicklable_exception" in exc.traceback_text
    assert isinstance(exc.__cause__, proctor.RemoteTraceback)
    p.close()
    capfd.readouterr()


def test_exception_that_cannot_be_unpickled_becomes_remote_error(ctx, capfd):
    p = ctx.Process(target=raise_one_that_cannot_be_unpickled)
    p.start()
    p.join(30)
    assert isinstance(p.exception, RemoteError)
    assert p.exception.message == "1-2"
    p.close()
    capfd.readouterr()


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (None, 0), (3, 3), ("bye", 1)])
def test_system_exit_sets_the_exit_code(ctx, code, expected, capfd):
    p = ctx.Process(target=exit_with, args=(code,))
    p.start()
    p.join(30)
    assert p.exitcode == expected
    assert p.exception is None
    p.close()
    if code == "bye":
        assert "bye" in capfd.readouterr().err


def test_threads_reading_the_result_at_once_all_get_it(ctx):
    # The outcome is read from the child's channel once; a second reader used to
    # find the channel empty and could replace the result with None for good
    # (15-20 of 100 pairs).
    for i in range(30):
        p = ctx.Process(target=int, args=(str(i),))
        p.start()
        p.join(30)
        start = threading.Barrier(2)
        seen = []

        def read(p=p, start=start, seen=seen):
            start.wait(30)
            seen.append(p.result)

        readers = [threading.Thread(target=read) for _ in range(2)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(30)
        assert seen == [i, i] and p.result == i
        p.close()


def test_unsendable_return_value_is_reported_not_fatal(ctx):
    p = ctx.Process(target=return_unpicklable)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    with pytest.raises(ResultError, match="could not be sent"):
        _ = p.result
    p.close()


def test_result_before_the_end_is_a_state_error(ctx):
    p = ctx.Process(target=sleep_forever)
    with pytest.raises(ValueError, match="once the process has ended"):
        _ = p.result
    p.start()
    with pytest.raises(ValueError, match="once the process has ended"):
        _ = p.exception
    p.kill()
    p.join(30)
    assert p.result is None and p.exception is None
    p.close()


# --- signals, timeouts, state --------------------------------------------------------------


def test_terminate_and_kill_give_negative_exit_codes(ctx):
    for stop, sig in (("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)):
        p = ctx.Process(target=sleep_forever)
        p.start()
        assert p.is_alive()
        getattr(p, stop)()
        p.join(30)
        assert p.exitcode == -sig
        assert f"exitcode=-{sig.name}" in repr(p)
        p.close()


def test_join_timeout_returns_while_running(ctx):
    p = ctx.Process(target=sleep_forever)
    p.start()
    began = time.monotonic()
    p.join(0.2)
    assert time.monotonic() - began >= 0.2
    assert p.exitcode is None and p.is_alive()
    p.kill()
    p.join(30)
    p.close()


def test_sentinel_becomes_readable_when_the_child_ends(ctx):
    import select

    p = ctx.Process(target=sleep_forever)
    p.start()
    assert select.select([p.sentinel], [], [], 0)[0] == []
    p.kill()
    assert select.select([p.sentinel], [], [], 30)[0] == [p.sentinel]
    p.join(30)
    p.close()


_READ_STDIN_PROGRAM = """
import sys, proctor
def child(q):
    q.put((sys.stdin.read(), sys.stdin.fileno()))
if __name__ == "__main__":
    ctx = proctor.get_context(sys.argv[1])
    first = sys.stdin.readline()  # reads a whole chunk ahead into sys.stdin
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    in_child = q.get(timeout=60)
    p.join(60)
    print(repr((first, in_child, sys.stdin.read())))
"""


def test_a_child_reads_nothing_of_what_its_parent_read_ahead_from_stdin(start_method):
    # stdin is /dev/null in a child; a forked sys.stdin also held the lines the
    # parent had read ahead, which the child then read as well as the parent.
    import ast

    stdout = run_program(
        _READ_STDIN_PROGRAM, start_method, stdin="".join(f"{n}\n" for n in range(1, 1001))
    )
    first, in_child, rest = ast.literal_eval(stdout)
    assert (first, in_child) == ("1\n", ("", 0))  # read from descriptor 0, as the stdlib's
    assert rest.splitlines() == [str(n) for n in range(2, 1001)]


_DAEMON_IGNORING_SIGTERM_PROGRAM = """
import os, signal, sys, time, proctor
import proctor._start._state
def child(ready):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(600)
if __name__ == "__main__":
    proctor._start._state.DAEMON_TERMINATE_GRACE = 0.5  # (5 s by default)
    ctx = proctor.get_context(sys.argv[1])
    ready = ctx.Event()
    p = ctx.Process(target=child, args=(ready,), daemon=True)
    p.start()
    assert ready.wait(60)
    print(p.pid, flush=True)
"""


def test_the_exit_kills_a_daemonic_child_that_ignores_sigterm(start_method):
    # multiprocessing's exit terminates daemonic children, then waits for ever.
    assert not pid_exists(int(run_program(_DAEMON_IGNORING_SIGTERM_PROGRAM, start_method)))


_GIL_HOLDING_CHILD_PROGRAM = """
import os, re, sys, threading, proctor
def hold_the_gil():
    # Code that closes descriptors by number, and gives the numbers to new files,
    # must not blind the watch (a pidfd of the parent in this process's table would
    # now be a pipe's number, never readable).
    os.closerange(3, 1 << 16)
    pipes = [os.pipe() for _ in range(8)]
    print(os.getpid(), flush=True)
    re.match(r"(a+)+$", "a" * 40 + "b")  # ~2**40 steps in C, with the GIL held throughout
if __name__ == "__main__":
    ctx = proctor.get_context(sys.argv[1])
    def start():
        ctx.Process(target=hold_the_gil).start()
    if sys.argv[2] == "main":
        start()
    else:
        starter = threading.Thread(target=start)
        starter.start()
        starter.join()
    sys.stdin.read()  # until the test kills this process
"""


def _child_gets_no_gil_for_its_parent_watch(start_method: str, started_from: str) -> bool:
    """Whether a pure-Python parent watch (a Python thread) is all that would kill the child."""
    from proctor._start import _bootstrap

    return (
        started_from == "a thread"
        and start_method != "forkserver"  # (its children: PDEATHSIG towards the server)
        and _bootstrap.native_parent_watch() is None
    )


@pytest.mark.parametrize("started_from", ["main", "a thread"])
def test_a_child_holding_the_gil_dies_with_its_killed_parent(start_method, started_from):
    # A child started from a thread of its parent cannot use PR_SET_PDEATHSIG (it
    # follows the creating thread): something in the child watches the parent. A
    # Python thread needs the GIL to act, and a target in a long C call (here a
    # regex with catastrophic backtracking) never gives it up: the child outlived
    # its SIGKILLed parent, at 100% CPU, for ever. The C module's watch is a
    # native thread that needs no GIL.
    import subprocess

    import psutil

    if _child_gets_no_gil_for_its_parent_watch(start_method, started_from):
        pytest.skip("pure Python: the parent watch is a Python thread, which needs the GIL")
    parent = subprocess.Popen(
        [sys.executable, "-c", _GIL_HOLDING_CHILD_PROGRAM, start_method, started_from],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = None
    try:
        ready, _, _ = select.select([parent.stdout], [], [], 60)
        assert ready, "the child did not start"
        child = psutil.Process(int(parent.stdout.readline()))
        # Its start is done (it printed its pid) once it has run 0.2 s of user
        # time more: it is in the regex by then, holding the GIL.
        user_time = child.cpu_times().user
        wait_until(lambda: child.cpu_times().user > user_time + 0.2, timeout=60)
        parent.kill()
        parent.wait(30)
        wait_until(lambda: not pid_exists(child.pid), timeout=15)
    finally:
        parent.kill()
        parent.wait(30)
        parent.stdin.close()
        parent.stdout.close()
        if child is not None and pid_exists(child.pid):
            child.kill()


def test_repr_shows_name_pid_state_and_exit_code(ctx):
    p = ctx.Process(target=double, args=(1,), name="R")
    assert "name='R'" in repr(p) and "initial" in repr(p)
    p.start()
    p.join(30)
    text = repr(p)
    assert f"pid={p.pid}" in text and "stopped" in text and "exitcode=0" in text
    p.close()
    assert "closed" in repr(p)


def test_default_names_count_up():
    a, b = proctor.Process(), proctor.Process()
    (na,), (nb,) = (a.name.split("-")[1:], b.name.split("-")[1:])
    assert int(nb) == int(na) + 1
    # An empty name is no name, as in multiprocessing (`name or default`).
    (nc,) = proctor.Process(name="").name.split("-")[1:]
    assert int(nc) == int(nb) + 1


def test_active_children_lists_running_ones(ctx):
    p = ctx.Process(target=sleep_forever)
    p.start()
    assert p in proctor.active_children()
    p.kill()
    p.join(30)
    assert p not in proctor.active_children()
    p.close()


def test_process_started_from_a_thread_survives_the_thread(ctx):
    # PR_SET_PDEATHSIG follows the thread that created the child; proctor must
    # not arm it for a child started from a thread that then exits.
    holder = {}
    release = ctx.Event()

    def starter():
        holder["p"] = ctx.Process(target=release.wait, args=(60,))
        holder["p"].start()

    t = threading.Thread(target=starter)
    t.start()
    t.join(30)
    assert not t.is_alive()  # the thread that started the child is gone...
    release.set()  # ...and only then may the child finish
    p = holder["p"]
    p.join(30)
    assert p.exitcode == 0 and p.result is True
    p.close()
    release.close()


def test_current_and_parent_process_in_main():
    assert proctor.current_process().name == "MainProcess"
    assert proctor.parent_process() is None
    assert proctor.cpu_count() >= 1


# --- bad input and misuse ---------------------------------------------------------------


def test_non_callable_target_is_a_type_error():
    with pytest.raises(TypeError, match="target must be callable"):
        proctor.Process(target=42)


def test_bad_args_and_kwargs_are_type_errors():
    with pytest.raises(TypeError, match="args=\\(x,\\)"):
        proctor.Process(target=print, args="abc")
    with pytest.raises(TypeError, match="kwargs must be a mapping"):
        proctor.Process(target=print, kwargs=[1])
    with pytest.raises(ValueError, match="group must be None"):
        proctor.Process(group="g")


def test_lifecycle_misuse_names_the_state(ctx):
    p = ctx.Process(target=double, args=(1,))
    with pytest.raises(ValueError, match="never started"):
        p.join(1)
    with pytest.raises(ValueError, match="has not been started"):
        p.terminate()
    p.start()
    with pytest.raises(ValueError, match="cannot start a process twice"):
        p.start()
    with pytest.raises(ValueError, match="cannot set daemon"):
        p.daemon = True
    p.join(30)
    p.close()
    p.close()  # idempotent
    for use in (p.start, p.is_alive, lambda: p.join(1), lambda: p.exitcode):
        with pytest.raises(ValueError, match="is closed"):
            use()


def test_close_while_running_is_refused(ctx):
    p = ctx.Process(target=sleep_forever)
    p.start()
    with pytest.raises(ValueError, match="still running"):
        p.close()
    p.kill()
    p.join(30)
    p.close()


@pytest.mark.parametrize("timeout", ["1", [1], float("nan")])
def test_bad_join_timeout_is_rejected(timeout):
    p = proctor.get_context("fork").Process(target=int)
    p.start()
    with pytest.raises((TypeError, ValueError), match="timeout"):
        p.join(timeout)
    p.join(30)
    p.close()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unpicklable_argument_fails_start_naming_it(method):
    before = set(proctor.active_children())
    p = proctor.get_context(method).Process(target=print, args=(1, Unpicklable()))
    with pytest.raises(UnpicklableError) as info:
        p.start()
    message = str(info.value)
    assert "argument 1" in message and "Unpicklable" in message
    assert repr(method) in message and "fork" in message
    assert isinstance(info.value, TypeError)
    assert set(proctor.active_children()) == before
    assert p.pid is None


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unpicklable_target_fails_start_naming_it(method):
    lock = threading.Lock()
    p = proctor.get_context(method).Process(target=lock.acquire)
    with pytest.raises(UnpicklableError, match="the target"):
        p.start()


def test_unpicklable_argument_is_fine_under_fork():
    p = proctor.get_context("fork").Process(
        target=lambda lock: lock.locked(), args=(threading.Lock(),)
    )
    p.start()
    p.join(30)
    assert p.result is False
    p.close()


def test_unknown_start_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown start method 'thread'.*'fork'"):
        proctor.get_context("thread")
    with pytest.raises(TypeError):
        proctor.get_context(3)


def test_set_start_method_twice_needs_force():
    original = proctor.get_start_method()
    with pytest.raises(RuntimeError, match="already set"):
        proctor.set_start_method("spawn")
    proctor.set_start_method("spawn", force=True)
    try:
        assert proctor.get_start_method() == "spawn"
        # As in multiprocessing: the context of the method in use, the same object.
        assert proctor.get_context() is proctor.get_context("spawn")
        assert proctor.get_context().Process.__name__ == "SpawnProcess"
    finally:
        proctor.set_start_method(original, force=True)


def test_default_start_method_is_the_stdlib_default():
    import multiprocessing

    # issue 12: proctor defaulted to forkserver where multiprocessing forks.
    expected = multiprocessing.get_all_start_methods()[0]  # the default, by its docs
    if sys.platform == "darwin":
        assert expected == "spawn"
    else:
        assert expected == ("forkserver" if sys.version_info >= (3, 14) else "fork")
    assert proctor.get_all_start_methods() == multiprocessing.get_all_start_methods()
    assert proctor.get_context() is proctor.get_context(expected)


def get_start_method_in_child():
    return proctor.get_start_method()


def test_a_fork_while_another_thread_holds_the_start_method_lock_does_not_hang_the_child():
    from proctor._start import _methods

    holding, release = threading.Event(), threading.Event()

    def hold():
        with _methods._lock.get():
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    p = proctor.get_context("fork").Process(target=get_start_method_in_child)
    try:
        assert holding.wait(30)
        p.start()
        p.join(30)
        assert p.exitcode == 0, "the child hung on a lock held by its parent's thread"
        assert p.result == "fork"
    finally:
        release.set()
        holder.join(30)
        if p.pid is not None and p.exitcode is None:
            p.kill()
            p.join(30)
        p.close()


def test_child_that_cannot_load_its_target_reports_why(ctx, capfd, tmp_path, monkeypatch):
    if ctx.get_start_method() == "fork":
        pytest.skip("fork does not pickle, so there is nothing to load")
    module = tmp_path / "vanishing_module.py"
    module.write_text("def work():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanishing_module

    p = ctx.Process(target=vanishing_module.work)
    module.unlink()  # the child cannot import it any more
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    try:
        p.start()  # pickles work by reference: the module is still imported here
    finally:
        sys.modules.pop("vanishing_module")
    p.join(30)
    assert p.exitcode == 1
    assert isinstance(p.exception, ModuleNotFoundError)
    assert "could not load its target" in capfd.readouterr().err
    p.close()


def _start_and_join_without_close(ctx, count):
    for _ in range(count):
        p = ctx.Process(target=int)
        p.start()
        p.join(30)
        assert p.exitcode == 0


def test_processes_joined_but_never_closed_release_their_descriptors(ctx):
    # issue 12: without close(), each fork and spawn child left its pidfd sentinel open.
    _start_and_join_without_close(ctx, 1)  # one-time descriptors (fork server, /dev/null)
    gc.collect()
    before = open_fds()
    _start_and_join_without_close(ctx, 20)
    gc.collect()
    # The log listener may take a moment to close its own sockets after the last
    # child's records: wait for that, not for a leak (which never goes away).
    wait_until(lambda: not (open_fds() - before), timeout=10)


def test_a_dropped_process_object_closes_quietly(ctx, recwarn):
    # Collected without close(): its sockets are closed, not reported as unclosed.
    import warnings

    warnings.simplefilter("always", ResourceWarning)
    _start_and_join_without_close(ctx, 3)
    gc.collect()
    assert [str(w.message) for w in recwarn if w.category is ResourceWarning] == []


def thread_names():
    """The names of this process's Python threads, and of the native ones (Linux)."""
    names = [t.name for t in threading.enumerate()]
    python_ids = {t.native_id for t in threading.enumerate()}
    for task in os.listdir("/proc/self/task"):
        if int(task) not in python_ids:
            with open(f"/proc/self/task/{task}/comm") as comm:
                names.append(comm.read().strip())
    return sorted(names)


def start_a_child_and_report_threads():
    grandchild = proctor.get_context("fork").Process(target=thread_names)
    grandchild.start()
    grandchild.join(30)
    names = grandchild.result
    grandchild.close()
    return thread_names(), names


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal")
def test_a_child_forked_from_a_thread_arms_the_parent_death_signal_of_its_own_children():
    # A fork parent remembers its main thread's ident, keyed by its pid: a child
    # forked from another thread has that thread as its main thread, and must not
    # go by its parent's record (it would watch its children with a thread each).
    from proctor._start import _bootstrap

    if not _bootstrap.load_prctl():
        pytest.skip("no way to set the parent-death signal here")
    ctx = proctor.get_context("fork")
    first = ctx.Process(target=int)  # this process's record of its main thread is made
    first.start()
    first.join(30)
    first.close()
    holder = {}

    def starter():
        p = ctx.Process(target=start_a_child_and_report_threads)
        p.start()
        p.join(60)
        holder["exitcode"], holder["result"] = p.exitcode, p.result
        p.close()

    t = threading.Thread(target=starter)
    t.start()
    t.join(90)
    assert holder["exitcode"] == 0
    child_threads, grandchild_threads = holder["result"]
    # Started from a thread: watched (a native thread with the C module, whose watch
    # needs no GIL, else a Python one); the grandchild, from its main thread, is not.
    watch = "proctor-watch" if _bootstrap.native_parent_watch() else "proctor-parent-watch"
    assert watch in child_threads
    assert not {"proctor-watch", "proctor-parent-watch"} & set(grandchild_threads)


def test_start_looks_only_at_children_that_ended(ctx, monkeypatch):
    # issue 12: start() polled every living child, so the n-th start cost O(n).
    from proctor._start import _popen

    release = ctx.Event()
    living = [ctx.Process(target=release.wait, args=(60,)) for _ in range(10)]
    ended = ctx.Process(target=int)
    last = ctx.Process(target=int)
    polled = []
    original_poll = _popen.Popen.poll

    def counting_poll(self):
        polled.append(self.pid)
        return original_poll(self)

    try:
        for p in living:
            p.start()
        ended.start()
        wait_until(lambda: select.select([ended.sentinel], [], [], 0)[0], timeout=30)
        monkeypatch.setattr(_popen.Popen, "poll", counting_poll)
        last.start()
        monkeypatch.undo()
        # The ended child was reaped without a join, as multiprocessing reaps it;
        # none of the living ones was looked at.
        assert polled == [ended.pid]
        assert ended not in proctor.active_children()
        assert set(living) <= set(proctor.active_children())
    finally:
        monkeypatch.undo()
        release.set()
        for p in [*living, ended, last]:
            if p.pid is not None:
                p.join(30)
            p.close()
        release.close()


def test_a_start_costs_the_same_however_many_children_share_an_object(monkeypatch):
    # issue 12: once 64 living children used one lock, every further start had the
    # reaper client check the start time of each of them: the n-th start cost O(n).
    from proctor._reaper import _client as _reaper

    ctx = proctor.get_context("forkserver")  # objects reach the child in the handoff
    release = ctx.Event()
    living = [ctx.Process(target=release.wait, args=(60,)) for _ in range(70)]
    last = ctx.Process(target=release.wait, args=(60,))
    looked_up = []
    original = _reaper._create_time

    def counting_create_time(pid):
        looked_up.append(pid)
        return original(pid)

    try:
        for p in living:
            p.start()
        monkeypatch.setattr(_reaper, "_create_time", counting_create_time)
        last.start()
        monkeypatch.undo()
        # One look-up per name the event uses, for the new child only.
        assert looked_up and set(looked_up) == {last.pid}
    finally:
        monkeypatch.undo()
        release.set()
        for p in [*living, last]:
            if p.pid is not None:
                p.join(30)
            p.close()
        release.close()


def start_and_join_one():
    child = proctor.get_context("fork").Process(target=int)
    child.start()
    child.join(30)
    return child.exitcode, len(proctor.active_children())


def test_a_forked_child_does_not_disturb_its_parents_record_of_children():
    # The parent's selector over its children's sentinels (epoll) is shared with a
    # forked child: had the child unregistered anything, the parent would never
    # see that sibling end.
    ctx = proctor.get_context("fork")
    sibling = ctx.Process(target=sleep_forever)
    sibling.start()
    p = ctx.Process(target=start_and_join_one)
    p.start()
    p.join(30)
    assert p.result == (0, 0)  # the child saw only its own child, never its siblings
    assert sibling in proctor.active_children()
    sibling.kill()
    wait_until(lambda: sibling not in proctor.active_children(), timeout=30)
    assert sibling.exitcode == -signal.SIGKILL
    sibling.close()
    p.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])  # the parent's own children
def test_join_without_timeout_returns_for_a_child_someone_else_reaped(method):
    # join() with no timeout asks the kernel for the child's end (waitid) rather than
    # polling its sentinel: a child reaped behind proctor's back (a SIGCHLD handler,
    # os.wait()) must not make it raise or wait forever. Its status is lost: 255.
    p = proctor.get_context(method).Process(target=int)
    p.start()
    os.waitpid(p.pid, 0)
    raised: list[BaseException] = []

    def join() -> None:
        try:
            p.join()
        except BaseException as exc:
            raised.append(exc)

    joiner = threading.Thread(target=join)
    joiner.start()
    joiner.join(30)
    assert not joiner.is_alive()
    assert raised == []
    assert p.exitcode == 255
    p.close()


def test_zombie_free_after_join(ctx):
    p = ctx.Process(target=double, args=(2,))
    p.start()
    pid = p.pid
    p.join(30)
    p.close()
    assert not pid_exists(pid)


def test_wait_until_helper_fails_loudly():
    with pytest.raises(AssertionError, match="not met"):
        wait_until(lambda: False, timeout=0.05)


def module_loaded(name):
    return name in sys.modules


def test_fork_server_follows_the_modules_the_parent_uses():
    # Once the parent uses queues, the fork server imports proctor's queue
    # module, so a child handed a queue does not import it again.
    q = proctor.Queue()
    p = proctor.get_context("forkserver").Process(
        target=module_loaded, args=("proctor._queues._queue",)
    )
    p.start()
    p.join(30)
    assert p.result is True
    p.close()
    q.close()


def test_fork_server_preloads_what_every_child_of_a_lock_user_imports():
    # issue 12: each forkserver child handed a lock or a queue imported the reaper
    # client itself (~30 ms of CPU each with psutil): the main cost of starting many.
    lock = proctor.Lock()
    p = proctor.get_context("forkserver").Process(
        target=modules_loaded, args=(["proctor._reaper._client", "proctor._core._by_value"],)
    )
    p.start()
    p.join(30)
    assert p.result == [True, True]
    p.close()
    lock.close()


def modules_loaded(names):
    return [name in sys.modules for name in names]


def test_multiprocessing_compatibility_names():
    proctor.freeze_support()  # a no-op, so that programs calling it run unchanged
    proctor.allow_connection_pickling()
    assert issubclass(proctor.TimeoutError, TimeoutError)
    assert issubclass(proctor.TimeoutError, proctor.ProcessError)
    with pytest.raises(TypeError):
        proctor.set_executable(3)
    with pytest.raises(TypeError):
        proctor.set_forkserver_preload("json")


def test_set_executable_chooses_the_spawn_interpreter(monkeypatch):
    from proctor._start import _popen_spawn

    monkeypatch.setattr(_popen_spawn, "executable", _popen_spawn.executable)
    proctor.set_executable(sys.executable)
    p = proctor.get_context("spawn").Process(target=double, args=(4,))
    p.start()
    p.join(60)
    assert p.result == 8
    p.close()


def test_a_spawn_that_cannot_start_leaves_nothing_open(monkeypatch):
    from proctor._start import _popen_spawn

    monkeypatch.setattr(_popen_spawn, "executable", "/nonexistent/python3")
    p = proctor.get_context("spawn").Process(target=int)
    with pytest.raises(FileNotFoundError):
        p.start()
    assert p.pid is None  # and the leak check finds no descriptor left open


def _another_python_version() -> str | None:
    """An interpreter of a Python version other than this one's, if the machine has one
    (on PATH as ``python3.N``, or built by pyenv)."""
    import glob
    import subprocess

    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which(f"python3.{minor}") for minor in range(6, 16)]
    candidates += sorted(glob.glob(os.path.join(pyenv, "versions", "*", "bin", "python")))
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in filter(None, candidates):
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = done.stdout.strip()
        # (A Python 3, as the check below reads; a Python 2.7 gets the same message.)
        if done.returncode == 0 and version.startswith("3.") and version != mine:
            return candidate
    return None


def test_a_spawn_child_of_another_python_version_says_why_it_cannot_run(monkeypatch, capfd):
    from proctor._start import _popen_spawn

    other = _another_python_version()
    if other is None:
        pytest.skip("no interpreter of another Python version here")
    monkeypatch.setattr(_popen_spawn, "executable", other)
    p = proctor.get_context("spawn").Process(target=double, args=(4,))
    p.start()
    p.join(60)
    assert p.exitcode == 1
    p.close()
    err = capfd.readouterr().err
    assert "proctor: " in err and " is Python 3." in err, err  # (a pyenv shim names another path)
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"a child must run its parent's Python version, {mine}" in err


def test_a_fork_server_of_another_python_version_fails_the_start_and_says_why(monkeypatch, capfd):
    from proctor._start import _forkserver, _popen_spawn

    other = _another_python_version()
    if other is None:
        pytest.skip("no interpreter of another Python version here")
    monkeypatch.setattr(_popen_spawn, "executable", other)
    client = _forkserver.ForkServerClient()
    channel, channel_child = socket.socketpair()
    status, status_child = socket.socketpair()
    try:
        with pytest.raises(proctor.StartError, match="ended before it answered"):
            client.start_child(channel_child.fileno(), status_child.fileno())
    finally:
        for sock in (channel, channel_child, status, status_child):
            sock.close()
        client.stop()
    assert "a child must run its parent's Python version" in capfd.readouterr().err


def test_a_stuck_fork_server_makes_start_fail_instead_of_hang(monkeypatch):
    import socket

    from proctor._start import _forkserver

    client = _forkserver.ForkServerClient()
    channel, channel_child = socket.socketpair()
    status, status_child = socket.socketpair()
    try:
        # Booted with the usual timeout (a loaded machine may take more than a
        # second to start an interpreter); only the stuck request gets 1 s.
        client.start_child(channel_child.fileno(), status_child.fileno())
        monkeypatch.setattr(_forkserver, "REPLY_TIMEOUT", 1.0)
        client._ctl.settimeout(1.0)
        server = client.pid
        os.kill(server, signal.SIGSTOP)
        with pytest.raises(proctor.StartError, match="did not answer"):
            client.start_child(channel_child.fileno(), status_child.fileno())
        assert client.pid == 0 and not pid_exists(server)
    finally:
        for sock in (channel, channel_child, status, status_child):
            sock.close()
        client.stop()


def what_a_forked_child_sees_of(sibling):
    """In a fork child: what its copies of ``sibling``'s descriptors name, then close it."""
    popen = sibling._popen
    fds = (popen.channel.fileno(), popen.sentinel)
    named = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds]
    # (Closed once the sibling has ended, which its sentinel tells here: a copy
    # refuses to close a running process as the parent's object does.)
    assert proctor.connection.wait([sibling.sentinel], timeout=30)
    sibling.close()  # a copy: closes only /dev/null, and does not wait for its logs
    still_open = [fd for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")]
    return named, still_open


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
def test_a_forked_child_holds_none_of_its_siblings_descriptors_but_their_sentinels():
    # The child lets go of them without touching the siblings' objects: the numbers
    # point at /dev/null until a sibling's copy is closed there, so a number the
    # child reuses is never closed behind its back. The sentinel stays: a sibling
    # may wait on it, as with the stdlib (it holds nothing open for anyone).
    ctx = proctor.get_context("fork")
    sibling = ctx.Process(target=sleep_forever)
    sibling.start()
    try:
        p = ctx.Process(target=what_a_forked_child_sees_of, args=(sibling,))
        p.start()
        sibling.kill()
        p.join(30)
        assert p.exitcode == 0, p.exception
        named, still_open = p.result
        assert named[0] == os.devnull
        assert named[1] == os.readlink(f"/proc/self/fd/{sibling.sentinel}") != os.devnull
        assert still_open == []
        p.close()
        # The parent's record and descriptors are untouched.
        assert os.path.exists(f"/proc/self/fd/{sibling.sentinel}")
        sibling.join(30)
        assert sibling.exitcode == -signal.SIGKILL
    finally:
        sibling.kill()
        sibling.join(30)
        sibling.close()


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_a_target_returning_none_sends_only_an_empty_message(method):
    from proctor._core import _wire

    p = proctor.get_context(method).Process(target=int, args=("0",))  # returns 0, not None
    q = proctor.get_context(method).Process(target=print, args=("",))  # returns None
    for child in (p, q):
        child.start()
        child.join(30)
        assert child.exitcode == 0
    # Nothing was pickled for None: the channel holds a message with no data, then
    # EOF, and that reads as None. (A channel that ends with no message at all
    # reads as an outcome lost: test_bootstrap.)
    assert q._popen.channel.recv(64, socket.MSG_DONTWAIT | socket.MSG_PEEK) == _wire.EMPTY_MESSAGE
    assert (q.result, q.exception) == (None, None)
    assert (p.result, p.exception) == (0, None)
    p.close()
    q.close()


class ModulesSeen:
    def loaded(self, name):
        return name in sys.modules


def test_a_method_target_does_not_make_the_child_import_cloudpickle():
    # A bound method travels as getattr(instance, name), as plain pickle sends it;
    # cloudpickle's reduction names MethodType through its own module, which every
    # such child then imported (~25 ms of CPU).
    ctx = proctor.get_context("forkserver")
    p = ctx.Process(target=ModulesSeen().loaded, args=("cloudpickle",))
    p.start()
    p.join(30)
    assert p.exitcode == 0, p.exception
    assert p.result is False
    p.close()


def test_a_channel_pair_blocks_whatever_the_default_socket_timeout():
    # A fork start's channel comes from _wire.plain_socketpair, which reads the
    # default timeout off the new socket: a pair made non-blocking by
    # socket.setdefaulttimeout() would make the child's reads fail with EAGAIN.
    from proctor._core import _wire

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.5)
    try:
        a, b = _wire.plain_socketpair()
    finally:
        socket.setdefaulttimeout(previous)
    try:
        assert a.gettimeout() is None and b.gettimeout() is None
        assert a.getblocking() and b.getblocking()
    finally:
        a.close()
        b.close()


def test_a_process_joining_itself_is_told_so():
    with pytest.raises(RuntimeError, match="cannot join itself"):
        proctor.current_process().join(1)


def _wait_for_the_sentinel(sentinel, looked):
    from proctor.connection import wait

    alive_at_first = wait([sentinel], timeout=0) == []
    looked.set()
    return alive_at_first, bool(wait([sentinel], timeout=60))


def test_a_fork_child_can_wait_on_a_siblings_sentinel(start_method):
    # As with the stdlib: the number passed is the parent's sentinel, inherited; it
    # read as ended at once while fork children let go of it.
    ctx = proctor.get_context(start_method)
    first = ctx.Process(target=sleep_forever)
    first.start()
    looked = proctor.Event()
    try:
        watcher = proctor.get_context("fork").Process(
            target=_wait_for_the_sentinel, args=(first.sentinel, looked)
        )
        watcher.start()
        assert looked.wait(60)
        first.kill()
        watcher.join(60)
        assert watcher.exitcode == 0, watcher.exception
        assert watcher.result == (True, True)
        watcher.close()
    finally:
        first.kill()
        first.join(30)
        first.close()


# --- parent_process(): the stdlib's _ParentProcess ----------------------------------------


def describe_parent():
    from proctor.connection import wait
    from proctor.process import BaseProcess

    parent = proctor.parent_process()
    facts = {
        "base": isinstance(parent, BaseProcess),
        "name": parent.name,
        "pid": parent.pid,
        "ident": parent.ident,
        "exitcode": parent.exitcode,
        "daemon": parent.daemon,
        "authkey": parent.authkey == proctor.current_process().authkey,
        "identity": parent._identity == proctor.current_process()._identity[:-1],
        "alive": parent.is_alive(),
        "sentinel_ready": wait([parent.sentinel], timeout=0) != [],
    }
    parent.join(timeout=0.05)  # returns: the parent runs
    facts["alive_after_join"] = parent.is_alive()
    for misuse, error in [
        (lambda: setattr(parent, "name", 5), TypeError),
        (parent.start, ValueError),
        (parent.terminate, ValueError),
        (lambda: pickle.dumps(parent), TypeError),
    ]:
        try:
            misuse()
            facts.setdefault("not_refused", []).append(misuse)
        except error:
            pass
    return facts


def describe_parent_of_a_grandchild(method):
    child = proctor.get_context(method).Process(target=describe_parent)
    child.start()
    child.join(30)
    if child.exception is not None:
        raise child.exception
    return os.getpid(), proctor.current_process().name, child.result


def _check_parent_facts(facts, pid, name):
    assert facts.pop("not_refused", []) == []
    assert facts == {
        "base": True,
        "name": name,
        "pid": pid,
        "ident": pid,
        "exitcode": None,
        "daemon": False,
        "authkey": True,
        "identity": True,
        "alive": True,
        "sentinel_ready": False,
        "alive_after_join": True,
    }


def test_parent_process_has_the_stdlib_surface_in_a_child_and_a_grandchild(ctx):
    # As multiprocessing.process._ParentProcess: a BaseProcess with a sentinel for
    # connection.wait(); is_alive() and join(timeout) wait on it.
    p = ctx.Process(target=describe_parent)
    p.start()
    p.join(30)
    assert p.exitcode == 0, p.exception
    _check_parent_facts(p.result, os.getpid(), proctor.current_process().name)
    p.close()
    p = ctx.Process(target=describe_parent_of_a_grandchild, args=(ctx.get_start_method(),))
    p.start()
    p.join(60)
    assert p.exitcode == 0, p.exception
    child_pid, child_name, facts = p.result
    assert child_pid == p.pid
    _check_parent_facts(facts, child_pid, child_name)
    p.close()


def _describe_the_parent_at_exit(path):
    from proctor.connection import wait

    parent = proctor.parent_process()
    ready = wait([parent.sentinel], timeout=0)
    with open(path, "w") as file:
        file.write(f"{parent.is_alive()} {ready}")


def ask_for_the_parents_sentinel_at_exit(path):
    import atexit

    atexit.register(_describe_the_parent_at_exit, path)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="a sentinel after run() needs a pidfd")
def test_the_parents_sentinel_still_works_in_a_childs_atexit_handlers(ctx, tmp_path):
    # A spawned child closes its channel (which is the sentinel) once run() has
    # returned: an atexit handler asking for it got a ValueError.
    path = tmp_path / "parent"
    p = ctx.Process(target=ask_for_the_parents_sentinel_at_exit, args=(str(path),))
    p.start()
    assert finish(p)[0] == 0
    assert path.read_text() == "True []"


def report_the_parent_ending(conn):
    # Children never outlive their parent: this one unsets its parent-death signal
    # (PR_SET_PDEATHSIG, armed for a child started from the main thread; under
    # forkserver it follows the fork server, which ends with the parent) to live
    # long enough to see its parent end, as the stdlib's test_parent_process does.
    import ctypes

    from proctor.connection import wait

    assert ctypes.CDLL(None, use_errno=True).prctl(1, 0, 0, 0, 0) == 0  # PR_SET_PDEATHSIG
    parent = proctor.parent_process()
    conn.send(("running", parent.pid, parent.is_alive()))
    parent.join(timeout=60)
    conn.send(("ended", parent.is_alive(), wait([parent.sentinel], timeout=0) != []))


def start_a_grandchild_and_wait(conn, method):
    child = proctor.get_context(method).Process(target=report_the_parent_ending, args=(conn,))
    child.start()
    time.sleep(120)  # until the test kills this process


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_parent_process_sentinel_becomes_ready_when_the_parent_dies(ctx):
    reader, writer = proctor.Pipe(duplex=False)
    middle = ctx.Process(target=start_a_grandchild_and_wait, args=(writer, ctx.get_start_method()))
    middle.start()
    writer.close()
    try:
        assert reader.poll(60)
        assert reader.recv() == ("running", middle.pid, True)
        middle.kill()
        middle.join(30)
        assert reader.poll(60)
        assert reader.recv() == ("ended", False, True)
    finally:
        middle.kill()
        middle.join(30)
        middle.close()
        reader.close()


# --- a Process object in a process that did not start it ------------------------------


def watch_a_sibling(sibling):
    from proctor.connection import wait

    seen = {"exitcode": sibling.exitcode, "repr": repr(sibling)}
    for name, use, error in [
        ("is_alive", sibling.is_alive, RuntimeError),
        ("join", lambda: sibling.join(1), RuntimeError),
        ("close", sibling.close, ValueError),
        ("result", lambda: sibling.result, RuntimeError),
    ]:
        try:
            use()
            seen[name] = "not refused"
        except error as exc:
            seen[name] = str(exc)
    sibling.terminate()
    seen["ended"] = wait([sibling.sentinel], timeout=30) != []
    seen["exitcode_after"] = sibling.exitcode
    sibling.terminate()  # ended: nothing to signal, no error
    sibling.close()  # ended: a copy may be closed
    return seen


def test_a_process_handed_to_a_fork_child_can_be_signalled_there_not_joined(start_method):
    # The watchdog pattern. As with multiprocessing: the exit code cannot be collected
    # outside the process that started the child, so it reads None (it read 255, and
    # terminate() did nothing); is_alive() and join() refuse (is_alive() said False).
    first = proctor.get_context(start_method).Process(target=sleep_forever)
    first.start()
    try:
        watchdog = proctor.get_context("fork").Process(target=watch_a_sibling, args=(first,))
        watchdog.start()
        watchdog.join(60)
        assert watchdog.exitcode == 0, watchdog.exception
        seen = watchdog.result
        watchdog.close()
        assert seen["exitcode"] is None
        assert "unknown" in seen["repr"]
        assert seen["is_alive"].startswith("can only test a child process")
        assert seen["join"].startswith("can only join a child process")
        assert "still running" in seen["close"]
        assert "only in the process that started" in seen["result"]
        assert seen["ended"] is True
        # The fork server tells its exit code to whoever holds the status socket
        # (peeked: the starter still reads it); waitpid() tells only the starter.
        expected = -signal.SIGTERM if start_method == "forkserver" else None
        assert seen["exitcode_after"] == expected
        first.join(30)
        assert first.exitcode == -signal.SIGTERM
    finally:
        first.kill()
        first.join(30)
        first.close()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_process_cannot_be_sent_to_another_child(method):
    # As multiprocessing refuses: a copy could not be joined or tested there (it
    # arrived looking never started). Only the process being started is pickled.
    ctx = proctor.get_context(method)
    first = ctx.Process(target=sleep_forever)
    first.start()
    try:
        other = ctx.Process(target=double, args=(first,))
        with pytest.raises(TypeError, match="cannot be sent to another process"):
            other.start()
        other = ctx.Process(target=double, args=(proctor.current_process(),))
        with pytest.raises(TypeError, match="main process"):
            other.start()
    finally:
        first.kill()
        first.join(30)
        first.close()
