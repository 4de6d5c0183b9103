"""The resource reaper unlinks names whose users all died, and never earlier.

The users here are plain subprocesses running small scripts, so that a test can
SIGKILL them at a chosen point. "Same tree" users inherit this process's reaper
through the environment; "independent" users start their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid

import psutil
import pytest

from helpers import pid_exists, wait_until
from proctor._reaper import _client as _reaper
from reaper_helpers import spawned_reaper_pid, sync_reaper

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")

TESTS = os.path.dirname(os.path.abspath(__file__))

PRELUDE = f"""
import mmap, os, sys, _posixshmem, _multiprocessing
sys.path.insert(0, {TESTS!r})
from proctor._reaper import _client as _reaper
from reaper_helpers import spawned_reaper_pid, sync_reaper
name = sys.argv[1]

def create(size=4096):
    fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, size)
    m = mmap.mmap(fd, size)
    os.close(fd)
    return m

def attach(size=4096):
    fd = _posixshmem.shm_open(name, os.O_RDWR, 0o600)
    m = mmap.mmap(fd, size)
    os.close(fd)
    return m

def ready(*values):
    print("ready", *values, flush=True)
    sys.stdin.readline()  # park until killed or told to go on
"""


@pytest.fixture(scope="module", autouse=True)
def _reaper_connection():
    # Open this process's reaper connection before the per-test fd leak check looks.
    _reaper.ensure_started()
    yield


def _name() -> str:
    return f"/proctor-test-{uuid.uuid4().hex[:12]}"


def _exists(name: str) -> bool:
    return os.path.exists("/dev/shm/" + name.lstrip("/"))


class User:
    """A subprocess running ``code`` after PRELUDE; ``code`` ends by calling ready()."""

    def __init__(self, code: str, name: str, *, independent: bool = False) -> None:
        env = dict(os.environ)
        if independent:
            env.pop(_reaper.ENV_ADDRESS, None)
        else:
            env[_reaper.ENV_ADDRESS] = _reaper.address()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + textwrap.dedent(code), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["ready"], f"user failed to start: {line!r}"
        self.values = line[1:]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.proc.stdin.close()
        self.proc.stdout.close()

    def finish(self) -> int:
        self.proc.stdin.close()
        code = self.proc.wait(10)
        self.proc.stdout.close()
        return code


def test_segment_of_sigkilled_user_is_unlinked():
    name = _name()
    user = User('_reaper.register(name, "shm"); m = create(); ready()', name)
    assert _exists(name)
    user.kill()
    wait_until(lambda: not _exists(name), timeout=5)


def test_independent_reaper_unlinks_and_then_exits():
    name = _name()
    user = User(
        '_reaper.register(name, "shm"); m = create(); ready(spawned_reaper_pid())',
        name,
        independent=True,
    )
    reaper_pid = int(user.values[0])
    assert reaper_pid != spawned_reaper_pid()
    assert user.finish() == 0  # exits without unlinking: the reaper must do it
    wait_until(lambda: not _exists(name), timeout=5)
    wait_until(lambda: not pid_exists(reaper_pid), timeout=10)


def test_semaphore_of_sigkilled_user_is_unlinked():
    name = _name()
    user = User(
        """
        _reaper.register(name, "semaphore")
        sem = _multiprocessing.SemLock(1, 1, 1, name, False)
        ready()
        """,
        name,
    )
    path = "/dev/shm/sem." + name.lstrip("/")
    assert os.path.exists(path)
    user.kill()
    wait_until(lambda: not os.path.exists(path), timeout=5)


def test_segment_kept_while_an_unregistered_process_maps_it():
    # The mapper does not use proctor at all: only /proc tells the reaper about it.
    name = _name()
    creator = User('_reaper.register(name, "shm"); m = create(); ready()', name)
    mapper = User("m = attach(); ready()", name, independent=True)
    creator.kill()
    sync_reaper()
    assert _exists(name), "unlinked while another live process still maps it"
    mapper.kill()
    wait_until(lambda: not _exists(name), timeout=5)


def test_semaphore_kept_while_an_unregistered_process_has_it_open():
    # glibc maps a named semaphore under a temporary name: found by inode, not path.
    name = _name()
    creator = User(
        """
        _reaper.register(name, "semaphore")
        sem = _multiprocessing.SemLock(1, 1, 1, name, False)
        ready()
        """,
        name,
    )
    opener = User("sem = _multiprocessing.SemLock._rebuild(0, 1, 1, name); ready()", name,
                  independent=True)  # fmt: skip
    path = "/dev/shm/sem." + name.lstrip("/")
    creator.kill()
    sync_reaper()
    assert os.path.exists(path), "unlinked while another live process has it open"
    opener.kill()
    wait_until(lambda: not os.path.exists(path), timeout=5)


def test_add_user_keeps_segment_for_a_child_that_has_not_attached():
    name = _name()
    _reaper.register(name, "shm")
    fd = os.open("/dev/shm/" + name.lstrip("/"), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)
    child = User("ready()", name)
    _reaper.add_user(name, "shm", child.proc.pid)
    _reaper.unregister(name, "shm")
    sync_reaper()
    assert _exists(name), "unlinked while a registered child is alive"
    child.kill()
    wait_until(lambda: not _exists(name), timeout=5)


def test_register_nests_until_the_last_unregister():
    name = _name()
    fd = os.open("/dev/shm/" + name.lstrip("/"), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)
    _reaper.register(name, "shm")
    _reaper.register(name, "shm")
    _reaper.unregister(name, "shm")
    sync_reaper()
    assert _exists(name)
    _reaper.unregister(name, "shm")
    wait_until(lambda: not _exists(name), timeout=5)


def test_forget_stops_tracking():
    name = _name()
    path = "/dev/shm/" + name.lstrip("/")
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    _reaper.register(name, "shm")
    os.unlink(path)
    _reaper.forget(name, "shm")
    # A new object under the same name is not the forgotten one: it must survive.
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    try:
        _reaper.unregister(name, "shm")  # no-op: nothing registered any more
        sync_reaper()
        assert _exists(name)
    finally:
        os.unlink(path)


def test_a_reused_pid_is_not_a_live_user():
    # The reaper identifies a user by (pid, start time): our pid with a wrong start
    # time is some earlier process that had the same pid, dead by now.
    name = _name()
    path = "/dev/shm/" + name.lstrip("/")
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    with _reaper.client().lock:
        _reaper.client().send(["R", "shm", name, os.getpid(), 12345.0])
    sync_reaper()
    assert not _exists(name)


def test_forked_child_keeps_the_segment_after_its_parent_is_killed():
    name = _name()
    parent = User(
        """
        _reaper.register(name, "shm")
        m = create()
        pid = os.fork()
        if pid == 0:
            import signal
            signal.pause()  # until the test kills it
            os._exit(0)
        ready(pid)
        """,
        name,
    )
    child_pid = int(parent.values[0])
    try:
        parent.kill()
        sync_reaper()
        assert _exists(name), "unlinked while the forked child still maps it"
    finally:
        os.kill(child_pid, signal.SIGKILL)
    wait_until(lambda: not pid_exists(child_pid), timeout=5)
    wait_until(lambda: not _exists(name), timeout=5)


def test_a_new_reaper_replaces_a_killed_one_and_learns_the_names():
    name = _name()
    user = User(
        """
        _reaper.register(name, "shm")
        m = create()
        first = spawned_reaper_pid()
        os.kill(first, 9)
        os.waitpid(first, 0)
        old_address = _reaper.address()
        _reaper.register(name + "-other", "shm")  # reconnects: starts a new reaper
        ready(first, spawned_reaper_pid(), old_address)
        """,
        name,
        independent=True,
    )
    first, second, old_address = user.values
    first, second = int(first), int(second)
    assert first != second
    assert not os.path.exists(os.path.dirname(old_address)), "the dead reaper's files remain"
    user.kill()
    wait_until(lambda: not _exists(name), timeout=5)
    wait_until(lambda: not pid_exists(second), timeout=10)


def test_a_name_released_while_the_reaper_was_dead_is_reclaimed_by_the_new_one():
    # The release goes to the reaper started by the reconnect, which never heard of
    # the name (the replay carries only names still in use): it must still reclaim it,
    # now, while its creator lives, and not leave it in /dev/shm for good.
    name = _name()
    user = User(
        """
        _reaper.register(name, "shm")
        m = create()
        first = spawned_reaper_pid()
        os.kill(first, 9)
        os.waitpid(first, 0)
        m.close()
        _reaper.unregister(name, "shm")  # reconnects: starts a new reaper
        ready(first, spawned_reaper_pid())
        """,
        name,
        independent=True,
    )
    first, second = (int(v) for v in user.values)
    assert first != second
    wait_until(lambda: not _exists(name), timeout=5)
    assert user.finish() == 0
    wait_until(lambda: not pid_exists(second), timeout=10)


def test_a_connection_closed_behind_the_clients_back_is_not_written_into_another_file():
    # Code that closes descriptors it does not own (os.closerange when a child
    # daemonizes) can give the reaper connection's number to a file of its own:
    # the next registration must reconnect, not write into that file.
    name = _name()
    user = User(
        """
        _reaper.register(name, "shm")
        m = create()
        number = _reaper.client().fd
        r, w = os.pipe()
        os.close(number)
        os.dup2(w, number)
        os.set_blocking(r, False)
        _reaper.register(name + "-other", "shm")  # must reconnect
        try:
            written = len(os.read(r, 4096))
        except BlockingIOError:
            written = 0
        ready(written, _reaper.client().fd != number)
        """,
        name,
    )
    assert user.values == ["0", "True"]
    user.kill()
    wait_until(lambda: not _exists(name), timeout=5)  # the new connection knows it


def test_reaper_ignores_ctrl_c_aimed_at_its_users():
    name = _name()
    user = User(
        '_reaper.register(name, "shm"); m = create(); ready(spawned_reaper_pid())',
        name,
        independent=True,
    )
    reaper_pid = int(user.values[0])
    assert os.getsid(reaper_pid) != os.getsid(user.proc.pid)
    os.kill(reaper_pid, signal.SIGINT)
    user.kill()
    wait_until(lambda: not _exists(name), timeout=5)
    wait_until(lambda: not pid_exists(reaper_pid), timeout=10)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((b"/x", "shm"), TypeError),
        (("", "shm"), ValueError),
        (("/x", "file"), ValueError),
    ],
)
def test_bad_names_and_kinds_are_rejected(args, error):
    with pytest.raises(error):
        _reaper.register(*args)
    with pytest.raises(error):
        _reaper.unregister(*args)
    with pytest.raises(error):
        _reaper.forget(*args)


@pytest.mark.parametrize("pid", [0, -1, "12", True])
def test_add_user_rejects_bad_pids(pid):
    with pytest.raises(ValueError, match="pid"):
        _reaper.add_user("/proctor-x", "shm", pid)


def test_polling_reaper_notices_a_death_without_pidfds(tmp_path):
    # The path taken where os.pidfd_open does not exist (macOS) or is refused.
    import socket

    from proctor._reaper._server import _Reaper, create_time

    name = _name()
    path = "/dev/shm/" + name.lstrip("/")
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "sock"))
    reaper = _Reaper(listener, str(tmp_path / "sock"))
    reaper.use_pidfd = False
    user = User("ready()", name)
    try:
        reaper.add(("shm", name), (user.proc.pid, create_time(user.proc.pid)))
        assert reaper.polled and not reaper.pidfds
        reaper.sync()
        assert _exists(name)
        user.kill()
        reaper.sync()
        assert not _exists(name)
        assert reaper.idle()
    finally:
        reaper.close()
        if _exists(name):
            os.unlink(path)


def test_a_name_found_mapped_is_looked_at_again_soon_then_less_often(tmp_path):
    # The mapping a reclaim finds is most often a last reference about to go (a
    # thread still asleep on a closed queue's semaphore): the first re-scan comes
    # RESCAN_FIRST after the adoption, each next one twice as late, up to
    # RESCAN_INTERVAL; once nobody maps the name, the re-scan unlinks it.
    import socket
    import time

    from proctor._reaper import _server

    name = _name()
    key = ("shm", name)
    os.close(os.open("/dev/shm/" + name.lstrip("/"), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    os.truncate("/dev/shm/" + name.lstrip("/"), 4096)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "sock"))
    reaper = _server._Reaper(listener, str(tmp_path / "sock"))
    mapper = User("m = attach(); ready()", name, independent=True)
    try:
        reaper.pending.add(key)  # its last registered user just left
        expected = [_server.RESCAN_FIRST * 2**i for i in range(5)] + [_server.RESCAN_INTERVAL]
        assert expected[-2] < _server.RESCAN_INTERVAL < 2 * expected[-2]
        for wait in expected:
            before = time.monotonic()
            reaper.start_reclaim()
            reaper.finish_scan()
            after = time.monotonic()
            assert _exists(name) and reaper.users[key], "the live mapper was not adopted"
            when, next_wait = reaper.adopted[key]
            assert before + wait <= when <= after + wait
            assert next_wait == min(2 * wait, _server.RESCAN_INTERVAL)
            reaper.rescan_due(when - 0.001)
            assert key not in reaper.pending, "re-scanned before its time"
            reaper.rescan_due(when)
            assert key in reaper.pending and not reaper.users.get(key)
        mapper.kill()
        reaper.start_reclaim()
        reaper.finish_scan()
        assert not _exists(name) and key not in reaper.adopted and reaper.idle()
    finally:
        reaper.close()
        if _exists(name):
            os.unlink("/dev/shm/" + name.lstrip("/"))
        if mapper.proc.returncode is None:
            mapper.kill()


def test_the_leak_check_counts_this_trees_leftovers_and_not_another_programs():
    # helpers.shm_entries, which the no_leaks fixture compares before and after each
    # test: another program's entry whose creator died is not this run's to judge
    # (other test runs share the machine); a name of this tree that outlives its
    # creator -- here kept by a mapping this process forgot to close -- is a leak.
    import _posixshmem
    import mmap
    import uuid

    from helpers import shm_entries

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    foreign = f"proctor-{int(gone.stdout)}.1.1-{uuid.uuid4().hex[:8]}"  # its creator is dead
    os.close(os.open("/dev/shm/" + foreign, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    try:
        assert foreign not in shm_entries()
    finally:
        os.unlink("/dev/shm/" + foreign)
    # An entry with this process's pid made before it started: the pid was reused, the
    # entry is a leftover of another run (seen in CI: a killed run's untracked segment).
    reused = f"proctor-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.close(os.open("/dev/shm/" + reused, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    try:
        assert reused in shm_entries()  # made now: this process's
        long_ago = psutil.Process().create_time() - 3600
        os.utime("/dev/shm/" + reused, (long_ago, long_ago))
        assert reused not in shm_entries()
    finally:
        os.unlink("/dev/shm/" + reused)
    user = User(
        """
        name = _reaper.new_name(4)
        _reaper.register(name, "shm")
        m = create()
        ready(name)
        """,
        "unused",
    )
    name = user.values[0]
    fd = _posixshmem.shm_open(name, os.O_RDWR, 0o600)
    leaked = mmap.mmap(fd, 4096)
    os.close(fd)
    user.kill()
    sync_reaper()
    assert name.lstrip("/") in shm_entries(), "a dead user's name still mapped here was missed"
    leaked.close()
    wait_until(lambda: name.lstrip("/") not in shm_entries(), timeout=10)
    assert not _exists(name)


def test_a_client_closed_earlier_in_the_same_turn_does_not_stop_the_reaper(tmp_path):
    # select() lists a client as readable; before the loop reaches it, a sync() or a
    # scan's drain of every client reads its EOF and closes it. Reading it then
    # unregistered a closed socket: ValueError, and the reaper died (its log showed
    # it in CI runs, where a dead user's semaphore then stayed behind).
    with _reaper_with_one_client(tmp_path) as (reaper, client, sock):
        client.close()  # the client exits
        reaper.drain_clients()  # as sync() and a scan do: its EOF closes it
        assert sock not in reaper.clients and sock.fileno() == -1
        assert reaper.read(sock) is False  # the stale readable entry of this turn


def test_a_client_drained_earlier_in_the_same_turn_does_not_block_the_reaper(tmp_path):
    # select() lists a client as readable; before the loop reaches it, a sync() or a
    # scan's drain of every client reads what it sent (it stays connected). A
    # blocking read of it then waited for its next message -- for ever, for an idle
    # client -- and no new client was greeted: spawn children that register a name
    # waited CONNECT_TIMEOUT each (CPython's test_args_argument hung under spawn).
    import threading

    with _reaper_with_one_client(tmp_path) as (reaper, client, sock):
        line = json.dumps(["R", "shm", _name(), os.getpid(), _start_time(os.getpid())])
        client.sendall(line.encode() + b"\n")
        wait_until(lambda: select.select([sock], [], [], 0)[0], timeout=10)
        reaper.drain_clients()  # as sync() and a scan do: the line is read
        assert sock in reaper.clients and len(reaper.users) == 1
        answers = []
        reading = threading.Thread(target=lambda: answers.append(reaper.read(sock)))
        reading.start()  # the stale readable entry of this turn
        reading.join(timeout=10)
        blocked = reading.is_alive()
        client.close()  # (ends a blocked read: EOF)
        reading.join(timeout=10)
        assert not blocked, "the reaper waited for an idle client's next message"
        assert answers == [False]


@contextlib.contextmanager
def _reaper_with_one_client(tmp_path):
    """A reaper's state (no loop running) with one client connected and accepted:
    ``(reaper, the client's socket, the reaper's socket for it)``."""
    import socket

    from proctor._reaper import _server

    path = str(tmp_path / "sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    reaper = _server._Reaper(listener, path)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
        reaper.accept()
        (sock,) = list(reaper.clients)
        yield reaper, client, sock
    finally:
        client.close()
        reaper.close()


def test_the_reaper_greets_and_reads_clients_while_a_scan_runs(tmp_path, monkeypatch):
    # A /proc scan takes from milliseconds to seconds (every process's maps and fds);
    # a client waits CONNECT_TIMEOUT for its greeting and then takes the reaper for
    # dead. Scans therefore run on a thread: here one is held until the test lets it
    # go, and meanwhile a new client is greeted and its registration is read.
    import contextlib
    import json
    import socket
    import threading

    from proctor._reaper import _server

    scanning, let_go = threading.Event(), threading.Event()
    real_find_users = _server._find_users

    def held_scan(keys):
        scanning.set()
        assert let_go.wait(timeout=30)
        return real_find_users(keys)

    monkeypatch.setattr(_server, "_find_users", held_scan)
    freed, kept = _name(), _name()
    for name in (freed, kept):
        os.close(os.open("/dev/shm/" + name.lstrip("/"), os.O_CREAT | os.O_EXCL, 0o600))
    path = str(tmp_path / "sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    reaper = _server._Reaper(listener, path)
    reaper.swept = True  # no sweep of the machine's /dev/shm here
    reaper.pending = {("shm", freed), ("shm", kept)}  # both names just lost their users
    loop = threading.Thread(target=reaper.run, daemon=True)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    try:
        loop.start()
        assert scanning.wait(timeout=10), "the reclaim scan did not start"
        client.connect(path)
        assert client.recv(1) == _server.READY  # greeted while the scan is held
        line = json.dumps(["R", "shm", kept, os.getpid(), _start_time(os.getpid())])
        client.sendall(line.encode() + b"\n")
        wait_until(lambda: reaper.users.get(("shm", kept)), timeout=10)  # read meanwhile
        let_go.set()
        # The scan found no mapper for either; the one registered meanwhile stays.
        wait_until(lambda: not _exists(freed), timeout=10)
        assert _exists(kept)
    finally:
        let_go.set()
        # Stop the loop: it exits once idle (no users, no clients, no scan).
        with contextlib.suppress(OSError):
            client.sendall(json.dumps(["F", "shm", kept]).encode() + b"\n")
        client.close()
        loop.join(timeout=10)
        assert not loop.is_alive(), "the reaper's loop did not end once idle"
        reaper.close()
        for name in (freed, kept):
            if _exists(name):
                os.unlink("/dev/shm/" + name.lstrip("/"))


def test_a_reaper_that_cannot_start_is_a_clear_error_with_its_log():
    user = User(
        """
        import re
        _reaper._BOOTSTRAP = "import sys; sys.stderr.write('boom'); sys.exit(3)"
        try:
            _reaper.register(name, "shm")
            ready("registered")
        except OSError as exc:
            log = re.search(r"error output is in (\\S+)\\.$", str(exc)).group(1)
            ready("did not start" in str(exc), open(log).read(), log)
        """,
        _name(),
        independent=True,
    )
    started, output, log = user.values
    try:
        assert (started, output) == ("True", "boom")
    finally:
        user.finish()
        shutil.rmtree(os.path.dirname(log))


# --- the reaper's address stays out of os.environ ----------------------------------------


def report_reaper_address():
    return _reaper.address(), os.environ.get(_reaper.ENV_ADDRESS)


def test_the_reaper_address_reaches_proctor_children_but_not_os_environ(ctx):
    import proctor

    lock = proctor.Lock()  # a named object: this process uses its reaper
    address = _reaper.address()
    assert address is not None
    assert _reaper.ENV_ADDRESS not in os.environ
    unrelated = subprocess.run(
        [sys.executable, "-c", f"import os; print(os.environ.get({_reaper.ENV_ADDRESS!r}))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert unrelated.stdout.strip() == "None"
    p = ctx.Process(target=report_reaper_address, args=())
    p.start()
    p.join(60)
    assert p.exitcode == 0
    # The child shares its parent's reaper, and does not leak the address either.
    assert p.result == (address, None)
    p.close()
    del lock


# --- leftovers of a tree killed whole ------------------------------------------------------


def _start_time(pid: int) -> int:
    from proctor._reaper._server import create_time

    start = create_time(pid)
    assert start is not None
    return int(start)


def _owned(pid: int, start: int, namespace: int | None = None) -> str:
    """A name in the form the reaper can sweep, for creator (pid, start)."""
    from proctor._reaper._ident import base36 as _base36
    from proctor._reaper._ident import pid_namespace as _pid_namespace

    if namespace is None:
        namespace = _pid_namespace()
    assert namespace is not None
    return f"proctor-{pid}.{_base36(start)}.{_base36(namespace)}-{uuid.uuid4().hex[:8]}"


def _dead_process() -> tuple[int, int]:
    """The pid and start time of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    start = _start_time(proc.pid)
    proc.stdin.close()
    proc.wait(30)
    return proc.pid, start


needs_proc = pytest.mark.skipif(
    not os.path.exists("/proc/self/ns/pid"), reason="sweeping needs Linux's /proc"
)


@needs_proc
def test_the_sweep_takes_only_names_of_dead_creators_that_nobody_maps():
    from proctor._reaper._server import _pid_namespace, find_orphans

    dead_pid, dead_start = _dead_process()
    me, my_start = os.getpid(), _start_time(os.getpid())
    names = {
        "orphan segment": _owned(dead_pid, dead_start),
        "orphan semaphore": "sem." + _owned(dead_pid, dead_start),
        "live creator": _owned(me, my_start),
        "reused pid": _owned(me, my_start - 1),  # our pid, another start: the creator is dead
        "other namespace": _owned(dead_pid, dead_start, _pid_namespace() + 1),
        "no owner tag": f"proctor-{dead_pid}-{uuid.uuid4().hex[:8]}",
        "mapped": _owned(dead_pid, dead_start),
    }
    for name in names.values():
        fd = os.open("/dev/shm/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.ftruncate(fd, 4096)
        os.close(fd)
    mapper = User("m = attach(); ready()", "/" + names["mapped"], independent=True)
    try:
        found = set(find_orphans())
        expected = {
            ("shm", "/" + names["orphan segment"]),
            ("semaphore", "/" + names["orphan semaphore"][len("sem.") :]),
            ("shm", "/" + names["reused pid"]),
        }
        ours = {key for key in found if key[1].lstrip("/") in names.values()
                or "sem." + key[1].lstrip("/") in names.values()}  # fmt: skip
        assert ours == expected
    finally:
        mapper.kill()
        for name in names.values():
            os.unlink("/dev/shm/" + name)


TREE = """
import json, os, sys
import proctor
from proctor._reaper import _client as _reaper

def hold(q, lock):
    q.put(os.getpid())
    import threading
    threading.Event().wait()  # until the parent ends it (or the test kills the tree)

if __name__ == "__main__":
    ctx = proctor.get_context(sys.argv[1])
    # Named semaphores, as the pure implementation makes them (with the C
    # accelerator on Linux a queue keeps its semaphores in shared memory).
    from proctor._queues import _queue
    _queue.MEMORY_SEMAPHORES = False
    q = ctx.Queue()
    lock = ctx.Lock()
    child = ctx.Process(target=hold, args=(q, lock), daemon=True)
    child.start()
    child_pid = q.get(timeout=60)
    # (not the queue's room hint: nobody waited for room, so it was never made)
    names = sorted(
        name for (kind, name), n in _reaper.client().refs.items()
        if n > 0 and name != q._shared.room.name
    )
    print(json.dumps([names, child_pid, _reaper.client().spawned_pid]), flush=True)
    sys.stdin.readline()
"""


def _sem_paths(names: list[str]) -> list[str]:
    return ["/dev/shm/sem." + name.lstrip("/") for name in names]


def _start_tree(method: str) -> tuple[subprocess.Popen, list[str], int, int]:
    env = dict(os.environ)
    env.pop(_reaper.ENV_ADDRESS, None)  # a program of its own, with its own reaper
    proc = subprocess.Popen(
        [sys.executable, "-c", TREE, method],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        start_new_session=True,  # its own process group: killed as a whole
    )
    import json

    names, child_pid, reaper_pid = json.loads(proc.stdout.readline())
    assert len(names) == 4, names  # a Queue's three semaphores made and a Lock's
    return proc, _sem_paths(names), child_pid, reaper_pid


@needs_proc
def test_a_tree_killed_whole_is_reclaimed_by_the_next_program_and_a_live_one_is_not(
    start_method,
):
    live, live_paths, _, live_reaper = _start_tree(start_method)
    killed, killed_paths, killed_child, killed_reaper = _start_tree(start_method)
    try:
        assert all(map(os.path.exists, live_paths + killed_paths))
        # A container stop: everything at once, the reaper first so that it
        # cannot clean up after the others.
        os.kill(killed_reaper, signal.SIGKILL)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(30)
        wait_until(lambda: not pid_exists(killed_reaper) and not pid_exists(killed_child), 30)
        assert all(map(os.path.exists, killed_paths)), "nobody was left to reclaim them"
        # The next program: its new reaper sweeps once it has greeted it.
        nxt = User("sync_reaper(); ready(spawned_reaper_pid())", _name(), independent=True)
        assert int(nxt.values[0]) not in (live_reaper, killed_reaper)
        assert nxt.finish() == 0
        assert not any(map(os.path.exists, killed_paths))
        assert all(map(os.path.exists, live_paths)), "a live program's objects were taken"
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait(30)
        killed.stdin.close()
        killed.stdout.close()
        live.stdin.close()  # it exits normally; its own reaper reclaims its names
        live.wait(60)
        live.stdout.close()
    wait_until(lambda: not any(map(os.path.exists, live_paths)), timeout=60)
    wait_until(lambda: not pid_exists(live_reaper), timeout=60)


@pytest.mark.skipif(sys.platform != "linux", reason="psutil is a dependency off Linux")
def test_proctor_needs_no_psutil_on_linux(tmp_path):
    # A psutil that cannot be imported, for the program and its reaper alike.
    (tmp_path / "psutil.py").write_text("raise ImportError('psutil is blocked by this test')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop(_reaper.ENV_ADDRESS, None)  # its own reaper, which must start without psutil
    program = textwrap.dedent(
        """
        import sys
        import proctor
        from proctor.shared_memory import SharedMemory

        def work(q, lock, shm):
            with lock:
                q.put(bytes(shm.buf[:2]))

        if __name__ == "__main__":
            q, lock = proctor.Queue(), proctor.Lock()
            shm = SharedMemory(create=True, size=2)
            shm.buf[:2] = b"ok"
            p = proctor.Process(target=work, args=(q, lock, shm))
            p.start()
            print(q.get(timeout=60).decode(), "psutil" in sys.modules, shm.name)
            p.join(60)
            shm.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    got, imported, segment = done.stdout.split()
    assert (got, imported) == ("ok", "False")
    # Its reaper, which runs without psutil too, reclaims the segment.
    wait_until(lambda: not _exists(segment), timeout=60)


# --- proctor.resource_tracker: the stdlib's register/unregister -------------------------

TRACKER = "from proctor import resource_tracker\n"


def _plain_segment(name: str) -> None:
    """A segment no proctor object made (as a stdlib or C program would)."""
    os.close(os.open("/dev/shm/" + name.lstrip("/"), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))


@pytest.mark.parametrize("kind", ["shared_memory", "shm"])
def test_resource_tracker_unregister_keeps_a_segment_its_creator_made(kind):
    """The stdlib workaround: unregister(shm._name, "shared_memory"); nobody unlinks it then."""
    user = User(
        TRACKER
        + "from proctor.shared_memory import SharedMemory\n"
        + "shm = SharedMemory(create=True, size=64); shm.buf[:2] = b'hi'\n"
        + f"resource_tracker.unregister(shm._name, {kind!r})\n"
        + "sync_reaper()  # the reaper has read it before this process dies\n"
        + "ready(shm.name)",
        _name(),
    )
    name = user.values[0]
    assert user.finish() == 0
    sync_reaper()  # the death is processed: the segment would be unlinked now
    try:
        assert _exists(name)
        with open("/dev/shm/" + name, "rb") as f:
            assert f.read(2) == b"hi"
    finally:
        os.unlink("/dev/shm/" + name)


def test_resource_tracker_register_of_a_foreign_segment_has_it_reclaimed_after_its_user():
    # A stdlib-made name, given without its leading slash (shm.name) or with it (shm._name).
    for spelling in ("psm_{}", "/psm_{}"):
        name = "/" + spelling.format(uuid.uuid4().hex[:8]).lstrip("/")
        _plain_segment(name)
        try:
            user = User(
                TRACKER
                + f"resource_tracker.register({spelling.format(name[5:])!r}, 'shared_memory')\n"
                "ready()",
                name,
            )
            assert user.finish() == 0
            wait_until(lambda name=name: not _exists(name), timeout=5)
        finally:
            if _exists(name):
                os.unlink("/dev/shm/" + name.lstrip("/"))


def test_resource_tracker_register_then_unregister_of_a_foreign_segment_leaves_it():
    name = "/psm_" + uuid.uuid4().hex[:8]
    _plain_segment(name)
    try:
        user = User(
            TRACKER + "resource_tracker.register(name, 'shared_memory')\n"
            "resource_tracker.unregister(name[1:], 'shared_memory')\n"
            "sync_reaper()\n"
            "ready()",
            name,
        )
        assert user.finish() == 0
        sync_reaper()
        assert _exists(name)
    finally:
        os.unlink("/dev/shm/" + name.lstrip("/"))


def test_resource_tracker_checks_names_and_kinds_as_the_stdlib_does():
    from proctor import resource_tracker

    resource_tracker.unregister("/proctor-never-registered", "shared_memory")  # no-op
    with pytest.raises(ValueError, match="longer than"):
        resource_tracker.register("a" * 499, "shared_memory")  # gh-96819's test name
    with pytest.raises(ValueError, match="'shared_memory'"):
        resource_tracker.register("/x", "file")
    with pytest.raises(TypeError, match="str"):
        resource_tracker.unregister(b"/x", "shared_memory")


def test_a_finalizer_run_by_gc_inside_the_client_lock_does_not_deadlock():
    # A garbage collection may run inside any of the client's locked sections (a
    # fork child replaying its records to the reaper hung so): a lock collected
    # there unregisters its semaphore from the same thread.
    import gc
    import threading

    import proctor

    class Cycle:
        pass

    gc.disable()
    try:
        garbage = Cycle()
        garbage.self = garbage
        garbage.lock = proctor.Lock()
        before = dict(_reaper.client().refs)
        assert before, "a Lock registers its named semaphore"
        del garbage
        done = threading.Event()

        def collect_inside_the_lock():
            with _reaper.client().locked():
                gc.collect()  # runs Lock's finalizer -> unregister -> deferred
            done.set()

        worker = threading.Thread(target=collect_inside_the_lock, daemon=True)
        worker.start()
        worker.join(30)
        assert done.is_set(), "the finalizer waited for the lock its own thread held"
    finally:
        gc.enable()
    # The deferred release was made when the section ended.
    assert not _reaper.client().deferred
    released = {key for key in before if key not in _reaper.client().refs}
    assert released, "the collected lock's semaphore was not released"


def test_names_registered_ahead_in_one_message_are_reclaimed_when_their_user_is_killed():
    user = User(
        """
        names = _reaper.register_new("semaphore", 3, 5)
        sems = [_multiprocessing.SemLock(1, 1, 1, n, False) for n in names[:2]]
        ready(*names)
        """,
        _name(),
    )
    paths = ["/dev/shm/sem." + n.lstrip("/") for n in user.values]
    assert len(paths) == 3 and len(set(paths)) == 3
    assert all(os.path.exists(p) for p in paths[:2])
    user.kill()
    wait_until(lambda: not any(os.path.exists(p) for p in paths), timeout=5)


def test_batched_semaphore_names_are_registered_and_the_unused_ones_withdrawn():
    from proctor._reaper._semlock import NamedSemaphore, batched_names

    before = dict(_reaper.client().refs)
    with batched_names(3):
        sem = NamedSemaphore(0, 1)
    key = ("semaphore", sem.name)
    # The created one is registered once; the two names left over are withdrawn.
    assert {k: v for k, v in _reaper.client().refs.items() if k not in before} == {key: 1}
    path = "/dev/shm/sem." + sem.name.lstrip("/")
    assert os.path.exists(path)
    sem.close()
    wait_until(lambda: not os.path.exists(path), timeout=5)


def test_a_start_keeps_every_name_for_the_child_with_one_hook_and_one_message():
    from proctor._core import _reduction
    from proctor._reaper._semlock import NamedSemaphore

    sems = [NamedSemaphore(0, 1) for _ in range(3)]
    child = User("ready()", _name())
    try:
        handoff = _reduction.ChildHandoff("spawn")
        with _reduction.handing_off(handoff):
            for sem in sems + sems[:1]:
                sem.__reduce__()
        assert len(handoff.after_start) == 1
        for hook in handoff.after_start:
            hook(child.proc.pid)
        names = [("semaphore", s.name) for s in sems]
        assert all(
            (child.proc.pid, _reaper._create_time(child.proc.pid)) in _reaper.client().others[k]
            for k in names
        )
        paths = ["/dev/shm/sem." + s.name.lstrip("/") for s in sems]
        for sem in sems:
            sem.close()
        sync_reaper()
        assert all(os.path.exists(p) for p in paths), "unlinked while the child is alive"
    finally:
        child.kill()
    wait_until(lambda: not any(os.path.exists(p) for p in paths), timeout=5)


def test_corked_registrations_reach_the_reaper_in_one_write_when_the_block_ends():
    name = _name()
    with _reaper.corked():
        _reaper.register(name, "shm")
        held = [m[:3] for m in _reaper.client().corked]
    assert held == [["R", "shm", name]]
    assert _reaper.client().corked == [] and _reaper.client().corked_by is None
    path = "/dev/shm/" + name.lstrip("/")
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    try:
        _reaper.unregister(name, "shm")  # unlinked only if the reaper heard the register
        wait_until(lambda: not _exists(name), timeout=5)
    finally:
        if _exists(name):
            os.unlink(path)


def test_a_deferred_semaphore_never_opened_leaves_nothing_when_its_creator_is_killed():
    # A queue's room semaphore is made on first use: its creator SIGKILLed
    # before any use leaves neither it nor the queue's other names behind.
    user = User(
        """
        import proctor
        from proctor._queues import _queue
        _queue.MEMORY_SEMAPHORES = False  # (named semaphores, as pure Python makes them)
        q = proctor.Queue()
        s = q._shared
        ready(s.put_lock._named.name, s.get_lock._named.name, s.items.name, s.room.name)
        """,
        _name(),
    )
    paths = ["/dev/shm/sem." + n.lstrip("/") for n in user.values]
    assert len(set(paths)) == len(paths)
    assert [os.path.exists(p) for p in paths] == [True] * (len(paths) - 1) + [False]
    user.kill()
    wait_until(lambda: not any(os.path.exists(p) for p in paths), timeout=5)


def _reaper_reads_every_client() -> None:
    """Have the reaper read what every client sent so far, not only this process.

    A name freed here makes it reclaim, and it reads every connection before it
    reclaims; ``sync_reaper`` alone is answered in the order of this one socket.
    """
    dummy = _name()
    _reaper.register(dummy, "shm")
    _reaper.unregister(dummy, "shm")
    sync_reaper()


def test_a_fork_child_that_makes_a_deferred_semaphore_after_its_creator_died_has_it_reclaimed():
    # The creator dies before anyone opened the semaphore, so the reaper knows
    # no live user of the name and nothing in /dev/shm to unlink. A fork child
    # that then makes it must be known to the reaper first: its own death must
    # still unlink it.
    user = User(
        """
        from proctor._reaper._semlock import NamedSemaphore
        hint = NamedSemaphore.deferred(1)
        pid = os.fork()
        if pid == 0:
            sys.stdin.readline()  # the creator is dead now
            hint.sem.release()
            print("made", flush=True)
            sys.stdin.readline()  # park until killed
            os._exit(0)
        ready(pid, hint.name)
        """,
        _name(),
    )
    child_pid, name = int(user.values[0]), user.values[1]
    path = "/dev/shm/sem." + name.lstrip("/")
    try:
        user.proc.kill()  # the creator: the child keeps the stdin and stdout pipes
        user.proc.wait(10)
        sync_reaper()
        assert not os.path.exists(path)
        user.proc.stdin.write("go\n")
        user.proc.stdin.flush()
        assert user.proc.stdout.readline().split() == ["made"]
        _reaper_reads_every_client()  # the child's registrations, if it sent any
        assert os.path.exists(path), "unlinked while the child that made it is alive"
    finally:
        os.kill(child_pid, signal.SIGKILL)
        user.proc.stdin.close()
        user.proc.stdout.close()
    wait_until(lambda: not pid_exists(child_pid), timeout=5)
    # Asked at once: a reaper started later by another program would sweep the
    # name anyway (its creator is dead), so only this reaper's answer tells.
    sync_reaper()
    assert not os.path.exists(path), "the child that made it died, and nobody unlinked it"
