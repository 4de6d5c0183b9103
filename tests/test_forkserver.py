"""The fork server: what it loads for itself, and its spare (forked ahead of a start).

Each test runs its own fork server (a private client), so it can look at, kill or
stop the server without disturbing the session's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import proctor
from helpers import finish, pid_exists, wait_until
from proctor._core import _runtime
from proctor._start import _forkserver

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no forkserver on Windows")


@pytest.fixture(scope="module")
def shared_server():
    """A fork server for this module's tests that leave it running (one boot for all)."""
    own = _forkserver.ForkServerClient()
    saved, _forkserver._client = _forkserver._client, own
    try:
        run(int)  # boots it (and its spare) before any test's leak check begins
    finally:
        _forkserver._client = saved
    yield own
    own.stop()


@pytest.fixture
def client(shared_server, monkeypatch):
    """The module's fork server, used by every forkserver start in the test."""
    monkeypatch.setattr(_forkserver, "_client", shared_server)
    return shared_server


@pytest.fixture
def own_client(monkeypatch):
    """A fork server of the test's own, for tests that kill or stop it."""
    own = _forkserver.ForkServerClient()
    monkeypatch.setattr(_forkserver, "_client", own)
    yield own
    own.stop()


def run(target, *args):
    p = proctor.get_context("forkserver").Process(target=target, args=args)
    p.start()
    p.join(30)
    assert p.exitcode == 0, p.exception
    result = p.result, p.pid
    p.close()
    return result


def identity():
    return os.getpid(), os.getppid(), signal.getsignal(signal.SIGINT) is signal.default_int_handler


def write_to_stdout(text):
    os.write(1, text.encode())


def gone_or_zombie(pid):
    return not pid_exists(pid)


def _in_a_fresh_interpreter(script: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a new interpreter (whose fork server starts from its imports alone)."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_start_hands_its_work_to_the_spare_whose_pid_it_reports(client):
    run(int)
    spare = client.spare_pid()
    assert spare and spare in _runtime.helper_pids()  # a helper, not a leaked child
    assert spare not in [p.pid for p in proctor.active_children()]
    (pid, ppid, sigint_default), reported = run(identity)
    assert pid == reported == spare
    assert ppid == client.pid
    # Ignored while the spare waited (as in the server), the child's own once it runs.
    assert sigint_default
    assert client.spare_pid() not in (0, spare)
    assert spare not in _runtime.helper_pids()


def test_start_does_not_wait_for_the_next_spare_yet_it_is_a_helper_once_listed(client):
    run(int)
    # start() returned on the reply; the next spare's pid came after it.
    assert client._announcement_due
    helpers = _runtime.helper_pids()  # reads the announcement first
    assert not client._announcement_due
    assert client._spare in helpers
    assert client._spare in [c.pid for c in psutil.Process(client.pid).children()]


def test_the_spare_writes_where_the_parent_writes_at_start_time(client, tmp_path):
    run(int)  # the spare now exists, forked while our stdout was elsewhere
    out = tmp_path / "out"
    saved = os.dup(1)
    try:
        with open(out, "wb") as f:
            os.dup2(f.fileno(), 1)
        run(write_to_stdout, "to the new stdout")
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert out.read_text() == "to the new stdout"


def test_a_spare_ignores_a_ctrl_c_while_it_waits(client):
    run(int)
    spare = client.spare_pid()
    os.kill(spare, signal.SIGINT)
    (pid, _ppid, _sigint_default), _ = run(identity)
    assert pid == spare


def test_a_spare_killed_while_it_waits_is_replaced(client):
    run(int)
    spare = client.spare_pid()
    os.kill(spare, signal.SIGKILL)
    wait_until(lambda: gone_or_zombie(spare), timeout=10)
    (pid, _ppid, _sigint_default), reported = run(identity)
    assert pid == reported != spare


def test_a_spare_does_not_outlive_its_server(own_client):
    run(int)
    spare = own_client.spare_pid()
    os.kill(own_client.pid, signal.SIGKILL)
    wait_until(lambda: gone_or_zombie(spare), timeout=10)
    own_client.stop()  # reaps the killed server
    assert spare not in _runtime.helper_pids()


def test_the_server_reaps_its_spare_when_it_stops(own_client):
    run(int)
    spare = own_client.spare_pid()
    own_client.stop()  # returns once the server has exited, which it does after reaping it
    assert not psutil.pid_exists(spare)


def loaded(name):
    return os.getpid(), name in sys.modules


def test_a_spare_forked_before_the_server_imported_a_module_is_not_used(client, monkeypatch):
    # A child forked at start time would find a module the parent began to use
    # loaded by the server; the spare, forked before, would not: it is discarded.
    import fractions  # noqa: F401  (stands for a followed module the server lacks)

    run(int)
    spare = client.spare_pid()
    monkeypatch.setattr(
        _forkserver, "_FOLLOWED_MODULES", (*_forkserver._FOLLOWED_MODULES, "fractions")
    )
    (pid, seen), _ = run(loaded, "fractions")
    assert seen
    assert pid != spare
    assert not psutil.pid_exists(spare)  # discarded and reaped before the reply


def test_a_start_interrupted_while_it_waits_for_the_reply_leaves_the_next_starts_right(
    own_client, monkeypatch
):
    # A Ctrl-C, or a signal handler's exception (CPython's suite times its tests out
    # that way), while start() waits for the server's reply: the reply still comes,
    # and the next start took it for its own -- the previous child's pid -- and
    # every start after that was one reply behind.
    from proctor._core import _wire

    run(int)  # the server is up
    real = _wire.recv_exactly

    def interrupted(sock, size):
        monkeypatch.setattr(_wire, "recv_exactly", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(_wire, "recv_exactly", interrupted)
    p = proctor.get_context("forkserver").Process(target=int)
    with pytest.raises(KeyboardInterrupt):
        p.start()
    for _ in range(2):
        (pid, _ppid, _sigint), reported = run(identity)
        assert pid == reported


# What a fork server loads for itself is in every child it forks: each module's
# pages are copied into the child as it touches them, and threading's after-fork
# hook rewrites its state in every child (issue 17).
_SERVER_MUST_NOT_LOAD = (
    "threading",
    "multiprocessing",
    "pickle",
    "re",
    "socket",
    "signal",
    "selectors",
    "enum",
    "proctor._core._errors",
)
_LOADED_IN_CHILD = f"""
import proctor
ctx = proctor.get_context("forkserver")
# A builtin as the target: the child imports nothing to find it, so what it has
# loaded when the target runs is what the server had, and the child's bootstrap.
p = ctx.Process(target=eval, args=(
    "[m for m in {_SERVER_MUST_NOT_LOAD!r} if m in __import__('sys').modules]",))
p.start()
p.join(30)
print(p.exitcode, p.result)
"""


def test_a_server_for_a_program_that_imported_only_proctor_loads_none_of_the_heavy_modules():
    # A fresh interpreter: pytest's own imports (logging among them) would make the
    # session's server import the modules it follows (_FOLLOWED_MODULES).
    done = _in_a_fresh_interpreter(_LOADED_IN_CHILD)
    assert done.stdout.split(None, 1) == ["0", "[]\n"], (done.stdout, done.stderr)


# The modules a server follows for a parent that uses connections, queues, shared
# memory, the reaper or the locks (_FOLLOWED_MODULES): they reach proctor's error types
# only when they raise one (_core._lazy_errors), take _thread's locks, and make
# BrokenBarrierError and queue.Full's import at their first use, so the server (and
# every child it forks) goes without multiprocessing and threading (issue 17).
_LEAN_FOLLOWED = (
    "proctor._connections._connection",
    "proctor._queues._queue",
    "proctor._reaper._client",
    "proctor._sync",
    "proctor._sharedmem._sharedctypes",
    "proctor.shared_memory",
)
_FOLLOWED_IN_CHILD = f"""
import importlib
import proctor
for name in {_LEAN_FOLLOWED!r}:
    importlib.import_module(name)
ctx = proctor.get_context("forkserver")
watched = {{"threading", "multiprocessing", *{_LEAN_FOLLOWED!r}}}
p = ctx.Process(target=eval, args=(
    f"sorted(m for m in __import__('sys').modules if m in {{watched!r}})",))
p.start()
p.join(30)
print(p.exitcode, p.result)
"""


def test_a_server_following_the_connections_queues_and_locks_loads_no_threading():
    done = _in_a_fresh_interpreter(_FOLLOWED_IN_CHILD)
    assert done.stdout == f"0 {sorted(_LEAN_FOLLOWED)}\n", (done.stdout, done.stderr)


def test_a_server_does_not_follow_psutil_where_proc_stands_in_for_it():
    # proctor's children use psutil only where there is no /proc; a parent that
    # imported it (a test runner, a monitoring library) must not make the server load it.
    script = _FOLLOWED_IN_CHILD.replace("import proctor\n", "import proctor, psutil\n", 1)
    script = script.replace('"multiprocessing",', '"multiprocessing", "psutil",', 1)
    done = _in_a_fresh_interpreter(script)
    if os.path.isdir("/proc/self"):
        assert done.stdout == f"0 {sorted(_LEAN_FOLLOWED)}\n", (done.stdout, done.stderr)
    else:
        assert done.stdout == f"0 {sorted({*_LEAN_FOLLOWED, 'psutil'})}\n", done.stderr


_AFTER_A_FAILURE = """
import time
import proctor
ctx = proctor.get_context("forkserver")
check = "'proctor._core._errors' in __import__('sys').modules"
loaded = []
def run(target, *args, terminate=False):
    p = ctx.Process(target=target, args=args)
    p.start()
    if terminate:
        p.terminate()
    p.join(30)
    loaded.append((p.exitcode, p.result))
run(eval, check)
run(exec, "raise SystemExit(3)")  # an exit code, no error to report
run(time.sleep, 60, terminate=True)  # killed by a signal
run(eval, check)
run(eval, check)
run(exec, "raise ValueError('a failure')")  # reported with the error types
run(eval, check)  # the spare forked before the server imported them
run(eval, check)
print(loaded)
"""


def test_a_server_loads_the_error_types_once_one_of_its_children_has_failed():
    # Only a target that raised (exit code 1) makes the server import them: a child
    # that exited with another code or was killed imported nothing for it. The child
    # right after the failure is the spare forked before the server imported them
    # (it imports them itself if it fails); the next has them loaded.
    done = _in_a_fresh_interpreter(_AFTER_A_FAILURE)
    expected = [
        (0, False),
        (3, None),
        (-signal.SIGTERM, None),
        (0, False),
        (0, False),
        (1, None),
        (0, False),
        (0, True),
    ]
    assert done.stdout == f"{expected}\n", done.stderr


_FORWARDING_FOLLOWED = """
import logging
import proctor
ctx = proctor.get_context("forkserver")
check = "'proctor._logging._forwarding' in __import__('sys').modules"
def start(**options):
    p = ctx.Process(target=eval, args=(check,), **options)
    p.start()
    p.join(30)
    result = (p.exitcode, p.result)
    p.close()
    return result
loaded = [start()]  # logging imported here, not configured: nothing to forward
records = []
handler = logging.Handler()
handler.emit = records.append
logging.getLogger().addHandler(handler)  # configured after the server started
loaded.append(start())  # forwards its records (and imports the module for that)
loaded.append(start(forward_logs=False))  # finds it loaded by the server
p = ctx.Process(target=logging.warning, args=("from the child",))
p.start()
p.join(30)
print(loaded, p.exitcode, [r.getMessage() for r in records])
"""


def test_a_server_loads_the_forwarding_module_once_a_child_forwards_its_logs():
    # Importing it cost each forwarding child ~4 ms of CPU (issue 17); a parent that
    # imported logging without configuring it forwards nothing, and its server
    # goes without the module. A fresh interpreter: pytest configures logging.
    done = _in_a_fresh_interpreter(_FORWARDING_FOLLOWED)
    expected = "[(0, False), (0, True), (0, True)] 0 ['from the child']\n"
    assert done.stdout == expected, done.stderr


_LOGGING_SETTLED = """
import logging, sys
from proctor._logging import _forwarding
from proctor._start import _forkserver
_forkserver._settle_logging()
print(getattr(logging.getLogRecordFactory(), "_names_proctor_processes", False),
      _forwarding._handler_cls is not None)
"""


def test_a_server_with_logging_prepares_once_what_each_child_would():
    # The record factory that stamps a child's own name, and the forwarding
    # handler's class: made in the server, found in place by every child.
    done = _in_a_fresh_interpreter(_LOGGING_SETTLED)
    assert done.stdout == "True True\n", done.stderr


def frozen_objects():
    import gc

    return gc.get_freeze_count()


def test_a_servers_children_find_the_objects_it_imported_frozen(client):
    # A child's first young collection (any target making ~700 objects) would
    # otherwise scan, and so copy the pages of, what the server imported.
    frozen, _ = run(frozen_objects)
    assert frozen > 1000, f"only {frozen} objects frozen: the server did not freeze its imports"


_LOGGING_IMPORTED_ONLY = """
import logging  # imported (asyncio and concurrent.futures do), no handler anywhere
import proctor
p = proctor.get_context("forkserver").Process(
    target=eval, args=("'logging' in __import__('sys').modules",))
p.start()
p.join(30)
print(p.exitcode, p.result)
"""


def test_a_server_follows_logging_once_its_parent_imported_it_configured_or_not():
    # Measured both ways (docs/design.md, "forkserver"): a child that imports logging
    # after its fork pays ~16 ms of CPU more, a child that never does ~0.6 ms less.
    done = _in_a_fresh_interpreter(_LOGGING_IMPORTED_ONLY)
    assert done.stdout == "0 True\n", done.stderr


# --- the server's request in C (_start._native.take_request) ---------------------------


def _take_request():
    from proctor._start import _bootstrap

    _bootstrap.load_prctl()
    take = getattr(_bootstrap._native, "take_request", None)
    if take is None:
        pytest.skip("no _start._native.take_request here (Linux, the C accelerator)")
    return take


@pytest.fixture
def request_wiring():
    """(parent's control end, server's control end, server's spare end, spare's end)."""
    import socket

    parent, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    to_spare, spare = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for sock in (parent, server, to_spare, spare):
        sock.settimeout(10)
    yield parent, server, to_spare, spare
    for sock in (parent, server, to_spare, spare):
        sock.close()


def _request_fds():
    """Four descriptors as a start sends them (channel, status, stdout, stderr): pipes'."""
    pipes = [os.pipe() for _ in range(2)]
    return [fd for pair in pipes for fd in pair]


def _check_same_files_and_close(got_fds, originals):
    """Each received descriptor is a copy of its original; all received are closed."""
    try:
        assert len(got_fds) == len(originals)
        for got, original in zip(got_fds, originals, strict=True):
            assert os.path.sameopenfile(got, original)
    finally:
        for fd in got_fds:
            os.close(fd)


def test_take_request_hands_a_plain_start_to_the_spare_and_replies(request_wiring):
    from proctor._core import _wire

    take = _take_request()
    parent, server, to_spare, spare = request_wiring
    sent = _request_fds()
    try:
        _wire.send_message(parent, b"", sent)
        reply = _forkserver._REPLY.pack(4242, _forkserver._ANNOUNCEMENT_FOLLOWS)
        status = take(server.fileno(), to_spare.fileno(), reply)
        assert isinstance(status, int)
        # The status descriptor: kept by the server, to write the exit code.
        _check_same_files_and_close([status], [sent[1]])
        data, handed = _wire.recv_message(spare)
        _check_same_files_and_close(handed, [sent[0], sent[2], sent[3]])
        assert data == b""
        assert _wire.recv_exactly(parent, len(reply)) == reply
        # The server's copies of the three it handed over are closed: nothing leaks
        # (the leak check), and the status one was the caller's to close.
    finally:
        for fd in sent:
            os.close(fd)


@pytest.mark.parametrize(
    "what", ["modules to import", "no spare", "three descriptors", "a spilled message"]
)
def test_take_request_gives_back_what_it_does_not_hand_over(request_wiring, what):
    from proctor._core import _wire

    take = _take_request()
    parent, server, to_spare, spare = request_wiring
    sent = _request_fds()
    data = {
        "modules to import": b"logging,proctor._sync",
        "a spilled message": b"x" * (_wire.INLINE_MAX + 1),
    }.get(what, b"")
    request_fds = sent[:3] if what == "three descriptors" else sent
    try:
        _wire.send_message(parent, data, request_fds)
        spare_fd = -1 if what == "no spare" else to_spare.fileno()
        got_data, got_fds, spare_failed = take(server.fileno(), spare_fd, b"reply")
        _check_same_files_and_close(got_fds, request_fds)
        assert bytes(got_data) == data and not spare_failed
        # Nothing went to the spare, and no reply to the parent: the caller's to do.
        spare.setblocking(False)
        parent.setblocking(False)
        with pytest.raises(BlockingIOError):
            spare.recv(1)
        with pytest.raises(BlockingIOError):
            parent.recv(1)
    finally:
        for fd in sent:
            os.close(fd)


def test_take_request_says_when_the_spare_is_gone_and_keeps_the_descriptors(request_wiring):
    from proctor._core import _wire

    take = _take_request()
    parent, server, to_spare, spare = request_wiring
    spare.close()  # the spare died before it was reaped
    sent = _request_fds()
    try:
        _wire.send_message(parent, b"", sent)
        got_data, got_fds, spare_failed = take(server.fileno(), to_spare.fileno(), b"reply")
        _check_same_files_and_close(got_fds, sent)
        assert spare_failed and got_data == b""
    finally:
        for fd in sent:
            os.close(fd)


def test_take_request_raises_eoferror_when_the_parent_is_gone_or_sends_garbage(request_wiring):
    take = _take_request()
    parent, server, to_spare, _spare = request_wiring
    parent.sendall(b"\xff" * 9)  # a length no message has
    with pytest.raises(EOFError, match="corrupt"):
        take(server.fileno(), to_spare.fileno(), b"reply")
    parent.close()
    with pytest.raises(EOFError, match="closed"):
        take(server.fileno(), to_spare.fileno(), b"reply")


def test_take_request_closes_the_status_descriptor_when_the_reply_cannot_go(request_wiring):
    from proctor._core import _wire

    take = _take_request()
    parent, server, to_spare, spare = request_wiring
    sent = _request_fds()
    try:
        _wire.send_message(parent, b"", sent)
        parent.close()  # the parent died after its request: the reply fails (EPIPE)
        with pytest.raises(OSError):
            take(server.fileno(), to_spare.fileno(), b"reply")
        # The spare got its work all the same (it is the server's child to reap);
        # the server's copies, the status one included, are closed: the leak check.
        _data, handed = _wire.recv_message(spare)
        _check_same_files_and_close(handed, [sent[0], sent[2], sent[3]])
    finally:
        for fd in sent:
            os.close(fd)


def test_take_request_refuses_arguments_of_the_wrong_type():
    take = _take_request()
    with pytest.raises(TypeError):
        take(0, -1)
    with pytest.raises(TypeError):
        take(object(), -1, b"")
    with pytest.raises(TypeError):
        take(0, "spare", b"")
    with pytest.raises(TypeError):
        take(0, -1, "not bytes")


def test_report_exits_writes_each_childs_exit_code_and_reaps_the_others():
    # In a fresh interpreter: report_exits reaps *every* ended child of its process,
    # which in this one would take the exit codes of proctor's helpers.
    _take_request()  # (skips where the module is not built)
    script = textwrap.dedent(
        """
        import os, signal, struct
        from proctor._start import _bootstrap
        _bootstrap.load_prctl()
        report_exits = _bootstrap._native.report_exits

        assert report_exits({}) == []  # no child at all
        children = {}
        for how in ("exit 3", "killed", "not listed"):
            pid = os.fork()
            if pid == 0:
                if how == "killed":
                    os.kill(os.getpid(), signal.SIGKILL)
                os._exit(3 if how == "exit 3" else 0)
            children[how] = pid
        for pid in children.values():  # ended, not reaped
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        pipes = {how: os.pipe() for how in ("exit 3", "killed")}
        status_fds = {children[how]: w for how, (r, w) in pipes.items()}
        closed_r, closed_w = os.pipe()
        os.close(closed_r)  # a parent that closed its process object already
        reaped = dict(report_exits(status_fds))
        assert reaped == {
            children["exit 3"]: 3, children["killed"]: -signal.SIGKILL, children["not listed"]: 0
        }, reaped
        assert status_fds == {children[how]: w for how, (r, w) in pipes.items()}  # untouched
        for how, code in (("exit 3", 3), ("killed", -signal.SIGKILL)):
            r, w = pipes[how]
            assert struct.unpack("<i", os.read(r, 8)) == (code,)
        assert report_exits({}) == []
        pid = os.fork()
        if pid == 0:
            os._exit(5)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        assert report_exits({pid: closed_w}) == [(pid, 5)]  # the failed write is ignored
        try:
            report_exits([])
        except TypeError:
            pass
        else:
            raise AssertionError("a list was taken for the dict")
        print("reported")
        """
    )
    done = _in_a_fresh_interpreter(script)
    assert done.stdout.strip() == "reported", done.stderr


def test_a_server_without_its_c_functions_serves_the_same_requests():
    # PROCTOR_PURE_PYTHON: the server reads and hands over each request in Python:
    # plain starts, a start that has it import a module, a start after its spare died.
    script = textwrap.dedent(
        """
        import os, signal, time
        import psutil
        import proctor
        from proctor._start import _forkserver

        def ident():
            return os.getpid()

        def run():
            p = proctor.get_context("forkserver").Process(target=ident)
            p.start()
            p.join(30)
            assert p.exitcode == 0, p.exception
            try:
                return p.result, p.pid
            finally:
                p.close()

        if __name__ == "__main__":
            from proctor._start import _bootstrap
            assert _bootstrap._native is None
            got, pid = run()
            assert got == pid
            spare = _forkserver.client().spare_pid()
            got, pid = run()
            assert got == pid == spare  # the spare took it
            import logging  # the next request asks the server to import it
            got, pid = run()
            assert got == pid
            spare = _forkserver.client().spare_pid()
            os.kill(spare, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # dead (reaped by the server or not)
                try:
                    if psutil.Process(spare).status() == psutil.STATUS_ZOMBIE:
                        break
                except psutil.NoSuchProcess:
                    break
            got, pid = run()
            assert got == pid != spare
            print("served")
        """
    )
    env = dict(os.environ, PROCTOR_PURE_PYTHON="1")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "served"


_PRINTS_AT_IMPORT = """
import sys
sys.stdout.write("printed at import\\n")  # (stdout is a pipe: block-buffered)
"""


def test_what_a_preloaded_module_prints_is_written_once_not_by_every_child(tmp_path):
    # The server's stdout buffer held the line when it forked each child, and each
    # child's start flushed its copy.
    (tmp_path / "prints_at_import.py").write_text(_PRINTS_AT_IMPORT)
    script = textwrap.dedent(
        """
        import proctor
        ctx = proctor.get_context("forkserver")
        ctx.set_forkserver_preload(["prints_at_import"])
        for _ in range(3):
            p = ctx.Process(target=print, args=("child",))
            p.start()
            p.join(30)
            assert p.exitcode == 0
        """
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("PYTHONUNBUFFERED", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines().count("printed at import") == 1, done.stdout
    assert done.stdout.splitlines().count("child") == 3


def _inheritable_descriptors():
    """This process's inheritable descriptors other than stdin, stdout and stderr."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if int(name) > 2 and os.get_inheritable(int(name)):
                found.append(int(name))
        except OSError:
            pass  # (the listing's own descriptor, closed by now)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_child_holds_no_descriptor_that_a_program_it_runs_would_inherit(method):
    # A fork-server child's channel to its parent was inheritable (received without
    # close-on-exec): a program it ran with close_fds=False held it.
    p = proctor.get_context(method).Process(target=_inheritable_descriptors)
    p.start()
    assert finish(p) == (0, [])


# -- warm spares: the server's first child learns the pages children write, and
# every later spare copies them while it waits (_start._native) -------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")
_LEARN_NONE, _LEARN_BUSY, _LEARN_DONE = 0, 1, 2


@pytest.fixture
def warming():
    """``_start._native`` with the warm-spare functions, or skip."""
    from proctor._start import _bootstrap

    _bootstrap.load_prctl()
    native = _bootstrap._native
    if native is None or not hasattr(native, "warm_up"):
        pytest.skip("no _start._native warm spares here (Linux, the C accelerator)")
    return native


def _shared_region(size=4096):
    """A region as the server makes it: shared with every child, zeroed."""
    import mmap

    return memoryview(mmap.mmap(-1, size))


def _exclusive(pid, address, pages):
    """For each page from ``address``: whether process ``pid`` alone maps it (pagemap)."""
    import struct

    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(address // _PAGE * 8)
        entries = f.read(pages * 8)
    return [
        bool(entry >> 63 & 1 and entry >> 56 & 1) for (entry,) in struct.iter_unpack("<Q", entries)
    ]


class _PrivatePages:
    """``count`` private anonymous pages, all present, and their address."""

    def __init__(self, count):
        import ctypes
        import mmap

        self.map = mmap.mmap(-1, count * _PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.map.write(b"x" * count * _PAGE)  # present in this process
        anchor = ctypes.c_char.from_buffer(self.map)
        self.address = ctypes.addressof(anchor)
        del anchor  # (the map could not be closed while it is exported)
        self.count = count

    def close(self):
        self.map.close()


def _in_a_fork(body):
    """Run ``body()`` in a forked child; return what it returned (a small int), or fail."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = body()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), pid


def test_claim_learning_makes_one_child_the_learner(warming):
    region = _shared_region()
    assert warming.claim_learning(region) is True
    assert warming.claim_learning(region) is False  # one learner at a time
    assert region.cast("Q")[0] == _LEARN_BUSY


def test_a_learner_records_the_pages_it_copied_and_no_other(warming):
    # Room for every range a fork of this (large) test process copies on its way.
    region, pages = _shared_region(1 << 20), _PrivatePages(8)
    try:

        def learner():
            pages.map[2 * _PAGE : 5 * _PAGE] = b"y" * 3 * _PAGE  # copies pages 2, 3 and 4
            return 0 if warming.learn_pages(region) > 0 else 1

        code, pid = _in_a_fork(learner)
        assert code == 0
        words = region.cast("Q")
        assert words[0] == _LEARN_DONE and words[2] == pid
        assert words[1] < (len(words) - 3) // 2  # (not full: every range was recorded)
        learned = set()
        for i in range(words[1]):
            start, count = words[3 + 2 * i], words[4 + 2 * i]
            learned.update(range(start, start + count * _PAGE, _PAGE))
        ours = [pages.address + i * _PAGE for i in range(pages.count)]
        assert [page in learned for page in ours] == [False, False, True, True, True] + [False] * 3
    finally:
        pages.close()


def _learned(region, pages):
    """Fill ``region`` as a learner would have: the whole of ``pages`` in one range."""
    words = region.cast("Q")
    words[1], words[2], words[3], words[4] = 1, os.getpid(), pages.address, pages.count
    words[0] = _LEARN_DONE


def test_a_spare_copies_the_learned_pages_while_nothing_asks_it_to_stop(warming):
    region, pages = _shared_region(), _PrivatePages(40)
    stop_r, stop_w = os.pipe()
    try:
        _learned(region, pages)

        def spare():
            before = _exclusive(os.getpid(), pages.address, pages.count)
            warmed = warming.warm_up(region, stop_r)
            after = _exclusive(os.getpid(), pages.address, pages.count)
            return 0 if (not any(before) and warmed == pages.count and all(after)) else 1

        assert _in_a_fork(spare)[0] == 0
        os.write(stop_w, b"r")  # the request came before it began: nothing is copied

        def interrupted_spare():
            warmed = warming.warm_up(region, stop_r)
            after = _exclusive(os.getpid(), pages.address, pages.count)
            return 0 if (warmed == 0 and not any(after)) else 1

        assert _in_a_fork(interrupted_spare)[0] == 0
    finally:
        os.close(stop_r)
        os.close(stop_w)
        pages.close()


def test_warm_up_copies_nothing_until_a_learner_finished(warming):
    region, pages = _shared_region(), _PrivatePages(2)
    stop_r, stop_w = os.pipe()
    try:
        _learned(region, pages)
        words = region.cast("Q")
        for state in (_LEARN_NONE, _LEARN_BUSY):
            words[0] = state
            assert warming.warm_up(region, stop_r) == 0
    finally:
        os.close(stop_r)
        os.close(stop_w)
        pages.close()


def test_the_warm_spare_functions_refuse_what_is_not_a_region(warming):
    stop_r, stop_w = os.pipe()
    try:
        with pytest.raises((TypeError, BufferError)):
            warming.warm_up(bytes(4096), stop_r)  # read-only
        with pytest.raises(ValueError, match="at least 40 bytes"):
            warming.learn_pages(bytearray(16))
        with pytest.raises(ValueError, match="word-aligned"):
            warming.claim_learning(memoryview(bytearray(4096))[1:])
        with pytest.raises(TypeError):
            warming.warm_up(_shared_region(), "not a descriptor")
        with pytest.raises(TypeError, match="2 arguments"):
            warming.warm_up(_shared_region())
    finally:
        os.close(stop_r)
        os.close(stop_w)


def learning_seen():
    """(state, ranges, learner's pid, this child's pid, pages it copied ahead) in a
    child of the fork server: what its server's region says."""
    server = _forkserver._serving
    words = server.pages.cast("Q")
    return words[0], words[1], words[2], os.getpid(), server.warmed


def learned_pages():
    """The learned pages, as (start, count) ranges, from a child of the fork server."""
    words = _forkserver._serving.pages.cast("Q")
    return [(words[3 + 2 * i], words[4 + 2 * i]) for i in range(words[1])]


def test_the_servers_first_child_learns_before_its_target_runs(own_client, warming):
    (state, ranges, learner, me, _warmed), _ = run(learning_seen)
    assert (state, learner) == (_LEARN_DONE, me)
    assert ranges > 0


def test_a_spare_forked_once_learned_copies_those_pages_before_its_request(own_client, warming):
    run(int)  # the learner; the spare forked meanwhile may have found nothing learned
    run(int)
    learned, _ = run(learned_pages)
    spare = own_client.spare_pid()  # forked after the learner had finished

    def all_copied():
        for start, count in learned:
            flags = _exclusive(spare, start, count)
            if not all(flags):
                return False
        return True

    wait_until(all_copied, timeout=20)
    (state, _ranges, _learner, me, warmed), _ = run(learning_seen)
    assert me == spare and state == _LEARN_DONE
    assert warmed == sum(count for _start, count in learned)


def fails_to_load():
    raise RuntimeError("cannot be unpickled in the child")


class _Unloadable:
    def __reduce__(self):
        return fails_to_load, ()


def test_a_learner_that_never_reached_its_target_leaves_learning_to_a_later_child(
    own_client, warming
):
    # The server's first child is the learner; this one fails to load its work.
    p = proctor.get_context("forkserver").Process(target=print, args=(_Unloadable(),))
    p.start()
    p.join(30)
    assert p.exitcode == 1
    p.close()
    # The spare forked while it ran is no learner; the one forked after it was reaped is.
    (_state, _ranges, learner, me, _warmed), _ = run(learning_seen)
    assert learner != me
    (state, _ranges, learner, me, _warmed), _ = run(learning_seen)
    assert (state, learner) == (_LEARN_DONE, me)


def test_a_server_that_loads_a_module_has_its_next_child_learn_again(client, monkeypatch, warming):
    import colorsys  # noqa: F401  (stands for a followed module the server lacks)

    (_pid, seen), _ = run(loaded, "colorsys")
    assert not seen  # (no other test has the server load it)
    monkeypatch.setattr(
        _forkserver, "_FOLLOWED_MODULES", (*_forkserver._FOLLOWED_MODULES, "colorsys")
    )
    # Forked after the import (the spare is discarded): it learns what children
    # write now.
    (state, _ranges, learner, me, _warmed), _ = run(learning_seen)
    assert (state, learner) == (_LEARN_DONE, me)
