"""Logging: proctor's logger, and children's records handled by the parent's handlers."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import proctor
from helpers import wait_until
from pool_tasks import log_tagged, log_then_die, log_then_fail
from proctor._core._system import fds_let_go_in_forks
from proctor._logging import _forwarding as _log_forwarding


class ListHandler(logging.Handler):
    """Collects records; optionally blocks on an event before taking each one."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.gate = gate

    def emit(self, record):
        if self.gate is not None:
            self.gate.wait(30)
        self.records.append(record)

    def messages(self):
        return [r.getMessage() for r in self.records]


@pytest.fixture
def app_logs():
    """A ListHandler on the 'app' logger at INFO; removed afterwards."""
    logger = logging.getLogger("app")
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def run_fresh(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (no pytest handlers on its loggers); must exit 0."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )


# --- targets ----------------------------------------------------------------------


def log_some(n, name="app.worker"):
    log = logging.getLogger(name)
    for i in range(n):
        log.info("record %d", i)
    log.debug("below the parent's level")


def log_unpicklable_and_exception():
    log = logging.getLogger("app.worker")
    log.warning("holding %s", threading.Lock())
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("it failed")


def log_then_wait(n, gate_fd):
    os.read(gate_fd, 1)
    log_some(n)


def log_and_wait(n, gate_fd):
    log_some(n)
    os.read(gate_fd, 1)


def log_then_hang(n):
    log_some(n)
    time.sleep(600)


def log_then_exit_at_once(n):
    log_some(n)
    os._exit(0)  # no atexit, no flush: what was logged must have been sent already


def log_then_signal_and_hang(n, logged_fd):
    log_some(n)
    os.write(logged_fd, b"x")
    time.sleep(600)


def log_with_extras():
    log = logging.getLogger("app.worker")
    log.info("with extras", extra={"user": "ann", "lock": threading.Lock()})
    log.info("with a stack", stack_info=True)


def grandparent_of_logs():
    child = proctor.Process(target=log_some, args=(2, "app.grandchild"), name="grandchild")
    child.start()
    child.join(30)
    logging.getLogger("app.worker").info("child done")


def log_own_process_name(path):
    # The child's own logging, as a stdlib child would set it up.
    logging.basicConfig(filename=path, format="%(processName)s %(message)s", force=True)
    logging.getLogger("own").warning("hello")
    logging.shutdown()


def log_huge_between(size):
    log = logging.getLogger("app.worker")
    log.info("before")
    log.info("%s", "h" * size)
    log.info("after")


def log_through_a_logger_filter():
    # A fork child's records pass its own loggers' filters before they travel.
    log = logging.getLogger("app.worker")
    log.addFilter(lambda record: "keep" in record.getMessage())
    for message in ("keep 1", "drop 2", "keep 3"):
        log.info(message)


def flood(n):
    log = logging.getLogger("app.flood")
    for i in range(n):
        log.info("flood %d %s", i, "x" * 200)


def flood_then_more(n, flooded_fd, resume_fd):
    flood(n)
    os.write(flooded_fd, b"x")
    os.read(resume_fd, 2)
    logging.getLogger("app.flood").info("after the stall")


# --- proctor's own logger -------------------------------------------------------------


def test_log_to_stderr_prints_the_tutorial_format():
    code = (
        "import proctor, logging; logger = proctor.log_to_stderr(); "
        "logger.setLevel(logging.INFO); logger.warning('Error has occurred')"
    )
    done = run_fresh(code)
    assert done.stderr == "[WARNING/MainProcess] Error has occurred\n"


def test_get_logger_is_the_proctor_logger_and_handler_added_once():
    logger = proctor.get_logger()
    assert logger is proctor.get_logger() is logging.getLogger("proctor")
    assert logger.propagate is False
    assert logging.getLevelName(proctor.SUBDEBUG) == "SUBDEBUG"
    assert logging.getLevelName(proctor.SUBWARNING) == "SUBWARNING"
    before = list(logger.handlers)
    proctor.log_to_stderr()
    proctor.log_to_stderr()
    added = [h for h in logger.handlers if h not in before]
    assert len(added) <= 1
    with pytest.raises(TypeError):
        proctor.log_to_stderr(level=1.5)
    with pytest.raises(ValueError):
        proctor.log_to_stderr(level="NOT-A-LEVEL")


def test_lifecycle_events_are_logged(ctx):
    logger = proctor.get_logger()
    handler = ListHandler()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        p = ctx.Process(target=int, name="life")
        p.start()
        p.join(30)
        p.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    messages = handler.messages()
    assert any(m.startswith("starting life") for m in messages)
    child = [r for r in handler.records if r.processName == "life"]
    assert [r.getMessage() for r in child] == [
        "child process calling self.run()",
        "process exiting with exitcode 0",
    ]


# --- forwarding ----------------------------------------------------------------------


def test_child_records_reach_parent_handlers_by_join(ctx, app_logs):
    p = ctx.Process(target=log_some, args=(3,), name="logger-child")
    p.start()
    p.join(30)
    # No waiting after join(): everything is already handled.
    assert app_logs.messages() == ["record 0", "record 1", "record 2"]
    for record in app_logs.records:
        assert record.processName == "logger-child"
        assert record.process == p.pid
        assert record.name == "app.worker"
    p.close()


def test_records_arrive_with_what_the_parents_record_factory_adds(ctx, app_logs):
    # A parent's formatter may name what its factory adds (%(hostname)s); a spawned
    # child does not run the parent's setLogRecordFactory, a forked one does.
    plain = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = plain(*args, **kwargs)
        record.hostname = "from-the-factory"
        return record

    logging.setLogRecordFactory(factory)
    try:
        p = ctx.Process(target=log_some, args=(3,))
        p.start()
        p.join(30)
    finally:
        logging.setLogRecordFactory(plain)
    assert app_logs.messages() == ["record 0", "record 1", "record 2"]
    formatter = logging.Formatter("%(hostname)s %(processName)s %(message)s")
    assert [formatter.format(r) for r in app_logs.records] == [
        f"from-the-factory {p.name} record {i}" for i in range(3)
    ]
    p.close()


def configures_with_basic_config(path):
    logging.basicConfig(level=logging.INFO)  # a script's module-level call, run again
    plain = len(logging.root.handlers)
    logging.basicConfig(filename=path, level=logging.DEBUG, format="%(name)s %(message)s")
    logging.getLogger("app.worker").debug("to the file and the parent")
    return plain, logging.root.level


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_basic_config_in_a_spawned_child_configures_it_beside_forwarding(
    method, app_logs, tmp_path
):
    # A stdlib child of these methods starts without handlers, so its basicConfig()
    # configures it; proctor's has the forwarding handler on its root logger.
    logging.getLogger("app").setLevel(logging.NOTSET)  # (the child sets DEBUG itself)
    path = tmp_path / "child.log"
    p = proctor.get_context(method).Process(target=configures_with_basic_config, args=(path,))
    p.start()
    p.join(30)
    assert p.exitcode == 0, p.exception
    # A stream to stderr was not added (the parent's handlers print its records), the
    # level was set; the file got its handler, and forwarding went on.
    assert p.result == (1, logging.DEBUG)
    assert path.read_text() == "app.worker to the file and the parent\n"
    assert app_logs.messages() == ["to the file and the parent"]
    p.close()


def test_each_childs_records_arrive_in_order(ctx, app_logs):
    children = [ctx.Process(target=log_some, args=(300,), name=f"c{i}") for i in range(2)]
    for c in children:
        c.start()
    for c in children:
        c.join(60)
    for c in children:
        mine = [r.getMessage() for r in app_logs.records if r.processName == c.name]
        assert mine == [f"record {i}" for i in range(300)]
        c.close()


def test_parent_levels_filter_in_the_child(ctx, app_logs):
    logging.getLogger("app").setLevel(logging.WARNING)
    p = ctx.Process(target=log_some, args=(5,))
    p.start()
    p.join(30)
    assert app_logs.records == []  # INFO and DEBUG were dropped before being sent
    p.close()


@pytest.mark.parametrize("switch", ["per_process", "global"])
def test_forwarding_can_be_switched_off(ctx, app_logs, switch):
    if switch == "global":
        proctor.set_log_forwarding(False)
        p = ctx.Process(target=log_some, args=(3,))
    else:
        p = ctx.Process(target=log_some, args=(3,), forward_logs=False)
    try:
        p.start()
        p.join(30)
    finally:
        proctor.set_log_forwarding(True)
    assert p.exitcode == 0
    assert app_logs.records == []
    p.close()
    with pytest.raises(TypeError):
        proctor.set_log_forwarding("no")
    with pytest.raises(TypeError):
        proctor.Process(target=int, forward_logs="no")


def test_unpicklable_arguments_and_exceptions_are_preformatted(ctx, app_logs):
    p = ctx.Process(target=log_unpicklable_and_exception)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    lock_record, exc_record = app_logs.records
    assert lock_record.getMessage().startswith("holding <unlocked _thread.lock")
    assert exc_record.getMessage() == "it failed"
    assert "KeyError: 'missing'" in exc_record.exc_text
    p.close()


def test_killed_child_never_hangs_the_listener(ctx, app_logs):
    p = ctx.Process(target=log_then_hang, args=(5,))
    p.start()
    wait_until(lambda: len(app_logs.records) >= 5, timeout=30)
    p.kill()
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    assert app_logs.messages() == [f"record {i}" for i in range(5)]
    p.close()
    # The listener keeps serving other children.
    q = ctx.Process(target=log_some, args=(1,))
    q.start()
    q.join(30)
    assert app_logs.messages()[-1] == "record 0"
    q.close()


def test_a_record_bigger_than_the_channel_arrives_whole_and_in_order(ctx, app_logs):
    # 3 MiB: many times the pipe, so it is written in pieces as the listener reads.
    size = 3 << 20
    p = ctx.Process(target=log_huge_between, args=(size,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    before, huge, after = app_logs.messages()
    assert (before, after) == ("before", "after")
    assert huge == "h" * size
    p.close()


def test_a_filter_a_fork_child_adds_to_its_logger_applies(app_logs):
    p = proctor.get_context("fork").Process(target=log_through_a_logger_filter)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert app_logs.messages() == ["keep 1", "keep 3"]
    p.close()


def _channel_kind(stream):
    import stat

    mode = os.fstat(stream.fd).st_mode
    return "pipe" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "?"


def _refuse_to_resize(write_fd):
    raise OSError("pipes cannot be resized here")


@pytest.mark.parametrize("setup", ["resizable", "refused", "no_fcntl"])
def test_records_travel_in_a_pipe_or_else_a_socket_pair(app_logs, monkeypatch, setup):
    # A pipe where it can be resized; else a socket pair: where F_SETPIPE_SZ is
    # missing or refused, or where fcntl cannot be loaded (the child loads it at its
    # first record; the parent's listener never needs it). No record or descriptor
    # is lost either way.
    if setup == "refused":
        monkeypatch.setattr(_log_forwarding, "_resize_pipe", _refuse_to_resize)
    elif setup == "no_fcntl":
        monkeypatch.setitem(sys.modules, "fcntl", None)  # (inherited: the import fails)
    gate = os.pipe()
    try:
        p = proctor.get_context("fork").Process(target=log_and_wait, args=(3, gate[0]))
        p.start()
        # (A fork child makes its channel at its first record, and sends it.)
        stream = fork_stream(p)
        assert _channel_kind(stream) == ("pipe" if setup == "resizable" else "socket")
        os.write(gate[1], b"x")
        p.join(30)
    finally:
        for fd in gate:
            os.close(fd)
    assert p.exitcode == 0
    assert app_logs.messages() == ["record 0", "record 1", "record 2"]
    p.close()


def test_records_logged_before_os_exit_all_arrive(app_logs):
    # Each record is in the pipe when its logging call returns: os._exit
    # right after logging (no atexit, no flush) loses none of them. (100 records
    # fit in the pipe: the test does not depend on how fast the parent reads.)
    p = proctor.get_context("fork").Process(target=log_then_exit_at_once, args=(100,))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert app_logs.messages() == [f"record {i}" for i in range(100)]
    p.close()


def test_records_sent_before_sigkill_arrive_even_if_unread(app_logs):
    # The promise for a SIGKILLed child: every record whose logging call had
    # returned arrives, even if the parent had not read it yet when the child died.
    gate = threading.Event()
    slow = ListHandler(gate)  # keeps the listener from reading ahead
    logging.getLogger("app").addHandler(slow)
    logged_r, logged_w = os.pipe()
    p = proctor.get_context("fork").Process(target=log_then_signal_and_hang, args=(20, logged_w))
    try:
        p.start()
        import select

        assert select.select([logged_r], [], [], 30)[0], "the child did not log"
        p.kill()  # the listener is held inside the first record's handler
        gate.set()
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
    finally:
        gate.set()
        logging.getLogger("app").removeHandler(slow)
        os.close(logged_r)
        os.close(logged_w)
    assert app_logs.messages() == [f"record {i}" for i in range(20)]
    p.close()


def test_extra_attributes_and_stack_info_arrive(app_logs):
    p = proctor.get_context("fork").Process(target=log_with_extras)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    extras, stack = app_logs.records
    assert extras.getMessage() == "with extras"
    assert extras.user == "ann"
    assert extras.lock.startswith("<unlocked _thread.lock")  # not picklable: its repr
    assert stack.getMessage() == "with a stack"
    assert "in log_with_extras" in stack.stack_info
    p.close()


def test_grandchildren_forward_through_their_parent(ctx, app_logs):
    p = ctx.Process(target=grandparent_of_logs, name="middle")
    p.start()
    p.join(60)
    assert p.exitcode == 0, p.exception
    by_process = [(r.processName, r.getMessage()) for r in app_logs.records]
    assert by_process == [
        ("grandchild", "record 0"),
        ("grandchild", "record 1"),
        ("middle", "child done"),
    ]
    p.close()


# Targets as eval() expressions: a builtin target makes the child import no test
# module, and so no logging, before the expression runs.
LOG_LATE = (
    "('logging' in __import__('sys').modules,"
    " __import__('logging').getLogger('app.late').info('imported late'))"
)
START_A_LOGGING_CHILD = (
    "('logging' in __import__('sys').modules,"
    " (lambda p: (p.start(), p.join(60), p.exitcode)[2])("
    "__import__('proctor').get_context('spawn').Process(target=eval, name='grandchild', "
    "args=(\"__import__('logging').getLogger('app.grandchild').info('from below')\",))))"
)


def test_a_child_that_imports_logging_late_forwards_from_its_first_record(
    start_method, ctx, app_logs
):
    # A spawn child sets up forwarding only when something in it imports logging
    # (importing it costs every child ~8 ms); the first record already goes up.
    p = ctx.Process(target=eval, args=(LOG_LATE,))
    p.start()
    p.join(60)
    assert p.exitcode == 0, p.exception
    loaded_before, _ = p.result
    if start_method == "spawn":
        assert loaded_before is False
    assert app_logs.messages() == ["imported late"]
    p.close()


def test_a_child_without_logging_still_forwards_its_childrens_records(app_logs):
    # The middle child never imports logging itself; starting a child makes it set up
    # forwarding first, so the grandchild's records travel through it as usual.
    p = proctor.get_context("spawn").Process(target=eval, args=(START_A_LOGGING_CHILD,))
    p.start()
    p.join(90)
    assert p.exitcode == 0, p.exception
    assert p.result == (False, 0)
    assert [(r.processName, r.getMessage()) for r in app_logs.records] == [
        ("grandchild", "from below")
    ]
    p.close()


def test_a_spawned_child_gets_proctors_logger_level_when_it_imports_logging():
    logger = proctor.get_logger()
    original = logger.level
    logger.setLevel(32)
    probe = "('logging' in __import__('sys').modules, __import__('proctor').get_logger().level)"
    try:
        p = proctor.get_context("spawn").Process(target=eval, args=(probe,), forward_logs=False)
        p.start()
        p.join(60)
        assert p.result == (False, 32)
        p.close()
    finally:
        logger.setLevel(original)


def test_when_logging_imported_runs_callbacks_after_the_import_in_order():
    code = (
        "import sys\n"
        "from proctor._logging import _logger\n"
        "calls = []\n"
        "_logger.when_logging_imported(lambda: calls.append(1))\n"
        "_logger.when_logging_imported(lambda: 1 / 0)\n"
        "_logger.when_logging_imported(lambda: calls.append(sys.modules['logging'].INFO))\n"
        "assert calls == [], calls\n"
        "import logging\n"
        "print(calls, type(logging.__loader__).__name__ == type(logging.__spec__.loader).__name__"
        " == 'SourceFileLoader')\n"
        "_logger.when_logging_imported(lambda: calls.append('now'))\n"
        "print(calls)\n"
    )
    done = run_fresh(code)
    assert done.stdout.splitlines() == ["[1, 20] True", "[1, 20, 'now']"]
    assert "ZeroDivisionError" in done.stderr  # reported; the import went on


def test_a_stalled_parent_handler_does_not_stall_the_child(app_logs, monkeypatch):
    # fork, so that the shortened wait and the pipes reach the child as they are.
    monkeypatch.setattr(_log_forwarding, "FULL_WAIT", 0.05)
    gate = threading.Event()
    stalled = ListHandler(gate)
    flood_logger = logging.getLogger("app.flood")
    flood_logger.addHandler(stalled)
    flooded_r, flooded_w = os.pipe()
    resume_r, resume_w = os.pipe()
    try:
        p = proctor.get_context("fork").Process(
            target=flood_then_more, args=(20_000, flooded_w, resume_r)
        )
        p.start()
        # The parent's handler is stuck, yet the child gets through its 20,000
        # records (~5 MB, far beyond the 128 KiB pipe) without waiting for it.
        import select

        finished = select.select([flooded_r], [], [], 30)[0]
        gate.set()
        assert finished, "the child was blocked by the stalled parent handler"
        os.write(resume_w, b"go")
        p.join(60)
        assert p.exitcode == 0
    finally:
        gate.set()
        flood_logger.removeHandler(stalled)
        for fd in (flooded_r, flooded_w, resume_r, resume_w):
            os.close(fd)
    messages = stalled.messages()
    floods = [m for m in messages if m.startswith("flood")]
    assert floods and len(floods) < 20_000
    numbers = [int(m.split()[1]) for m in floods]
    assert numbers == sorted(numbers)  # what arrived is in order
    # Nothing vanished silently: every record either arrived or was counted in
    # a "dropped" warning (sent when there was room again, or at exit).
    notices = [m for m in messages if m.startswith("proctor dropped ")]
    assert notices
    dropped = sum(int(m.split()[2]) for m in notices)
    arrived = len(floods) + messages.count("after the stall")
    assert arrived + dropped == 20_001
    p.close()


def test_forwarding_needs_no_logging_in_a_parent_that_never_used_it():
    code = (
        "import sys, proctor\n"
        "def work():\n"
        "    import logging; logging.getLogger('x').warning('child warning')\n"
        "if __name__ == '__main__':\n"
        "    assert 'logging' not in sys.modules\n"
        "    p = proctor.Process(target=work); p.start(); p.join(30)\n"
        "    print('exit', p.exitcode)\n"
    )
    done = run_fresh(code)
    assert "exit 0" in done.stdout
    assert "child warning" in done.stderr  # logging's own last-resort handler in the child


def test_no_listener_thread_left_after_children_end(ctx, app_logs):
    p = ctx.Process(target=log_some, args=(1,))
    p.start()
    p.join(30)
    p.close()
    wait_until(
        lambda: not any(t.name == "proctor-log-listener" for t in threading.enumerate()),
        timeout=10,
    )


_handler_lock = threading.Lock()


class LockHoldingHandler(logging.Handler):
    """Holds a lock of its own while handling, like a stream handler holds stdout's."""

    def __init__(self, inside: threading.Event, gate: threading.Event) -> None:
        super().__init__()
        self.inside, self.gate = inside, gate

    def emit(self, record):
        with _handler_lock:
            self.inside.set()
            self.gate.wait(30)


def take_handler_lock():
    acquired = _handler_lock.acquire(timeout=5)
    if acquired:
        _handler_lock.release()
    return acquired


@contextlib.contextmanager
def listener_inside_a_handler(name):
    """Start a fork child whose one record keeps the log listener inside a handler.

    Yields the gate that lets the handler return; cleans everything up after.
    """
    inside, gate = threading.Event(), threading.Event()
    logger = logging.getLogger(name)
    handler = LockHoldingHandler(inside, gate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    first = proctor.get_context("fork").Process(target=log_some, args=(1, name))
    try:
        first.start()
        assert inside.wait(30)
        yield gate
    finally:
        gate.set()
        first.join(30)
        first.close()
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_a_fork_waits_for_the_listener_to_leave_a_handler():
    # A child forked while the log listener is inside a handler must not inherit
    # the handler's locks held (sys.stdout's buffer lock, in real life).
    with listener_inside_a_handler("app.held") as gate:
        threading.Timer(0.2, gate.set).start()
        second = proctor.get_context("fork").Process(target=take_handler_lock)
        second.start()  # waits until the listener has left the handler
        second.join(30)
        assert second.result is True
    second.close()


def test_a_stuck_handler_delays_a_fork_only_briefly(monkeypatch):
    monkeypatch.setattr(_log_forwarding, "FORK_WAIT", 0.2)
    with listener_inside_a_handler("app.stuck") as gate:
        second = proctor.get_context("fork").Process(target=int)
        second.start()
        # The handler cannot return before the gate opens, so start() went
        # ahead without it: a stuck handler delays a fork, never blocks it.
        assert not gate.is_set()
        gate.set()
        second.join(30)
        assert second.exitcode == 0
    second.close()


# --- the records' wire format -----------------------------------------------------------


class RecordStream:
    """Both ends of one forwarded stream's frames, without a pipe: the child's
    handler state (the fixed values it sent last) and the listener's memory."""

    def __init__(self):
        self.sent_fixed = None
        self.remembered = {}

    def carry(self, record):
        frame, fixed = _log_forwarding.encode_record(record, self.sent_fixed)
        if fixed is not None:
            self.sent_fixed = fixed  # as the handler does once the frame is sent whole
        length, kind = _log_forwarding._FRAME.unpack_from(frame)
        assert length == len(frame) - _log_forwarding._FRAME.size + 1
        payload = frame[_log_forwarding._FRAME.size :]
        return kind, len(frame), _log_forwarding.decode_record(kind, payload, self.remembered)


def _frame_round_trip(record):
    kind, _size, copy = RecordStream().carry(record)
    return kind, copy


def _record(name="app.x", line=7, msg="n=%d", args=(1,), **attributes):
    record = logging.getLogger(name).makeRecord(
        name, logging.INFO, "/src/mod.py", line, msg, args, None, func="f"
    )
    record.__dict__.update(attributes)
    return record


def _as_sent(record):
    return dict(record.__dict__, msg=record.getMessage(), args=None)


def test_a_record_like_the_last_travels_as_a_repeat_with_every_attribute():
    stream = RecordStream()
    first, second, third = _record(), _record(line=9, args=(2,)), _record(args=(3,))
    kind, size, copy = stream.carry(first)
    assert kind == _log_forwarding._PLAIN and copy.__dict__ == _as_sent(first)
    kind, repeat_size, copy = stream.carry(second)  # another line: still a repeat
    assert kind == _log_forwarding._REPEAT and copy.__dict__ == _as_sent(second)
    assert repeat_size < size / 2
    kind, _size, copy = stream.carry(third)
    assert kind == _log_forwarding._REPEAT and copy.__dict__ == _as_sent(third)
    # Each record is its own: a handler that adds attributes to one (a Formatter
    # adds message and asctime) leaves the next alone.
    copy.message = "added"
    kind, _size, copy = stream.carry(_record(args=(4,)))
    assert "message" not in copy.__dict__ and copy.getMessage() == "n=4"


def test_a_repeat_carries_any_message_exactly():
    stream = RecordStream()
    stream.carry(_record())
    for message in ("ünïcødé ✓ %d", "a lone surrogate \udc80 %d", "%d"):
        record = _record(msg=message, args=(8,))
        kind, _size, copy = stream.carry(record)
        assert kind == _log_forwarding._REPEAT and copy.__dict__ == _as_sent(record)


def test_a_repeat_whose_numbers_have_other_types_travels_plain_with_them():
    # The repeat frame packs the time as floats and the line as an int; values of
    # other types (a filter may set them) keep their type by travelling plain.
    stream = RecordStream()
    stream.carry(_record())
    for unusual in (_record(created=5), _record(lineno=None), _record(msecs=True)):
        kind, _size, copy = stream.carry(unusual)
        assert kind == _log_forwarding._PLAIN and copy.__dict__ == _as_sent(unusual)
        for name in ("created", "msecs", "lineno"):
            assert type(getattr(copy, name)) is type(getattr(unusual, name))
    huge_line = _record(lineno=1 << 70)  # beyond the frame's 64 bits
    kind, _size, copy = stream.carry(huge_line)
    assert kind == _log_forwarding._PLAIN and copy.lineno == 1 << 70


def test_a_torn_repeat_is_refused_as_unreadable():
    stream = RecordStream()
    stream.carry(_record())
    frame, _fixed = _log_forwarding.encode_record(_record(), stream.sent_fixed)
    payload = frame[_log_forwarding._FRAME.size :]
    with pytest.raises(ValueError):
        _log_forwarding.decode_record(_log_forwarding._REPEAT, payload[:20], stream.remembered)


def test_a_record_that_differs_in_a_fixed_value_travels_whole_again():
    stream = RecordStream()
    stream.carry(_record())
    for changed in (_record(name="app.other"), _record(levelname="LOUD"), _record(thread=1)):
        kind, _size, copy = stream.carry(changed)
        assert kind == _log_forwarding._PLAIN and copy.__dict__ == _as_sent(changed)
    again = _record(thread=1, args=(5,))
    kind, _size, copy = stream.carry(again)
    assert kind == _log_forwarding._REPEAT and copy.__dict__ == _as_sent(again)


def test_repeats_of_processes_sharing_a_stream_take_their_own_process_values():
    # A child's os.fork() without exec: both processes write frames to the one
    # pipe, interleaved; each repeat names its process.
    child, grandchild = RecordStream(), RecordStream()
    grandchild.remembered = child.remembered  # one listener's memory of the stream
    child.carry(_record(process=100, processName="child"))
    grandchild.carry(_record(process=101, processName="grandchild"))
    kind, _size, copy = child.carry(_record(process=100, processName="child", args=(6,)))
    assert kind == _log_forwarding._REPEAT
    assert (copy.process, copy.processName, copy.getMessage()) == (100, "child", "n=6")
    kind, _size, copy = grandchild.carry(_record(process=101, processName="grandchild"))
    assert kind == _log_forwarding._REPEAT and copy.processName == "grandchild"


def test_without_process_ids_every_plain_record_travels_whole():
    stream = RecordStream()
    for _ in range(2):
        kind, _size, copy = stream.carry(_record(process=None))
        assert kind == _log_forwarding._PLAIN and copy.process is None
    assert stream.sent_fixed is None and stream.remembered == {}


def test_a_repeat_the_stream_cannot_resolve_is_refused():
    frame, _fixed = _log_forwarding.encode_record(
        _record(), _log_forwarding.encode_record(_record())[1]
    )
    payload = frame[_log_forwarding._FRAME.size :]
    with pytest.raises(ValueError, match="without its first"):
        _log_forwarding.decode_record(_log_forwarding._REPEAT, payload, {})


def test_a_plain_record_travels_with_every_attribute():
    record = logging.getLogger("app.x").makeRecord(
        "app.x", logging.INFO, "/src/mod.py", 7, "n=%d s=%s", (3, "z"), None, func="f"
    )
    kind, copy = _frame_round_trip(record)
    assert kind == _log_forwarding._PLAIN
    expected = dict(record.__dict__, msg="n=3 s=z", args=None)
    assert copy.__dict__ == expected
    assert copy.getMessage() == "n=3 s=z"


class Name(str):
    """A str subclass: marshal refuses it, pickle carries it."""


def test_records_marshal_cannot_carry_travel_pickled():
    def record_with(**attributes):
        record = logging.LogRecord("app.x", logging.WARNING, "p.py", 1, "m %s", ("a",), None)
        record.__dict__.update(attributes)
        return record

    # A value of a type marshal refuses, an extra attribute, and a missing one.
    for record in (record_with(threadName=Name("t")), record_with(user="ann")):
        kind, copy = _frame_round_trip(record)
        assert kind == _log_forwarding._GENERAL
        assert copy.getMessage() == "m a"
        assert copy.threadName == record.threadName
        assert getattr(copy, "user", None) == getattr(record, "user", None)
    missing = record_with(user="ann")
    del missing.__dict__["funcName"]  # as many attributes as a plain record, not the same
    kind, copy = _frame_round_trip(missing)
    assert kind == _log_forwarding._GENERAL
    assert copy.user == "ann"


def test_a_record_with_an_exception_travels_with_its_traceback_text():
    try:
        raise KeyError("gone")
    except KeyError:
        record = logging.getLogger("app.x").makeRecord(
            "app.x", logging.ERROR, "p.py", 1, "failed", (), sys.exc_info()
        )
    kind, copy = _frame_round_trip(record)
    assert kind == _log_forwarding._PLAIN
    assert copy.exc_info is None
    assert "KeyError: 'gone'" in copy.exc_text


def test_an_unreadable_record_is_skipped_and_said(capsys):
    _log_forwarding._dispatch(_log_forwarding._PLAIN, bytearray(b"\xff\x00"), {})
    _log_forwarding._dispatch(7, bytearray(b""), {})
    frame, _fixed = _log_forwarding.encode_record(
        _record(), _log_forwarding.encode_record(_record())[1]
    )
    _log_forwarding._dispatch(_log_forwarding._REPEAT, bytearray(frame[5:]), {})
    err = capsys.readouterr().err
    assert err.count("skipped a child's log record that could not be read") == 3


# --- records before results: a pool task's records are handled before its result -----


def _tags(handler):
    return [m.split()[0] for m in handler.messages()]


def test_pool_results_come_after_their_tasks_records(ctx, app_logs):
    # Without the wait, most of these checks fail: a record travels on the worker's
    # log pipe and the listener handles it up to a batch window (2 ms) later.
    with ctx.Pool(2) as pool:
        assert pool.apply_async(log_tagged, ("apply",)).get(30) == "apply"
        assert _tags(app_logs).count("apply") == 3
        with pytest.raises(ValueError):
            pool.apply_async(log_then_fail, ("failed",)).get(30)
        assert _tags(app_logs).count("failed") == 3
        tags = [f"map{i}" for i in range(6)]
        assert pool.map(log_tagged, tags, chunksize=1) == tags
        assert all(_tags(app_logs).count(tag) == 3 for tag in tags)
        for tag in pool.imap(log_tagged, [f"imap{i}" for i in range(6)]):
            assert _tags(app_logs).count(tag) == 3, tag
        for tag in pool.imap_unordered(log_tagged, [f"unord{i}" for i in range(4)]):
            assert _tags(app_logs).count(tag) == 3, tag
    with proctor.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        for i in range(4):
            assert executor.submit(log_tagged, f"submit{i}").result(30) == f"submit{i}"
            assert _tags(app_logs).count(f"submit{i}") == 3
        for tag in executor.map(log_tagged, [f"emap{i}" for i in range(4)], timeout=30):
            assert _tags(app_logs).count(tag) == 3, tag


def test_a_result_is_not_ready_while_its_records_are_being_handled(app_logs):
    entered = threading.Event()
    gate = threading.Event()

    class Slow(logging.Handler):
        def emit(self, record):
            entered.set()
            gate.wait(30)

    slow = Slow()
    logger = logging.getLogger("app.worker")
    logger.addHandler(slow)
    try:
        with proctor.get_context("fork").Pool(1) as pool:
            result = pool.apply_async(log_tagged, ("slow",))
            assert entered.wait(30)
            # The result has come, and waits for the rest of the task's records.
            streams = list(_log_forwarding.listener()._streams.values())
            wait_until(lambda: any(stream.wanted for stream in streams), timeout=30)
            assert not result.ready()
            gate.set()
            assert result.get(30) == "slow"
            assert _tags(app_logs).count("slow") == 3
    finally:
        gate.set()
        logger.removeHandler(slow)


def test_a_stuck_handler_delays_results_only_briefly(app_logs, monkeypatch):
    monkeypatch.setattr(_log_forwarding, "RECORDS_WAIT", 0.2)
    gate = threading.Event()
    stuck = ListHandler(gate)
    logger = logging.getLogger("app.worker")
    logger.addHandler(stuck)
    try:
        with proctor.get_context("fork").Pool(1) as pool:
            # Each get() would wait for ever for records the stuck handler never takes.
            assert pool.apply_async(log_tagged, ("first",)).get(30) == "first"
            assert pool.apply_async(log_tagged, ("second",)).get(30) == "second"
            assert len(stuck.records) == 0
            gate.set()
            wait_until(lambda: _tags(app_logs).count("second") == 3, timeout=30)
    finally:
        gate.set()
        logger.removeHandler(stuck)


def test_a_worker_that_dies_after_logging_has_its_records_handled_first(app_logs):
    with proctor.get_context("fork").Pool(1) as pool:
        with pytest.raises(proctor.WorkerLostError):
            pool.apply_async(log_then_die, ("dying",)).get(30)
        assert _tags(app_logs).count("dying") == 3
        # Its replacement forwards on a new stream, counted from 0.
        assert pool.apply_async(log_tagged, ("after",)).get(30) == "after"
        assert _tags(app_logs).count("after") == 3


def test_a_child_that_logs_for_itself_stamps_records_with_its_own_name(ctx, tmp_path):
    # logging asks the stdlib's multiprocessing for processName, which in a proctor
    # child is the stdlib's "MainProcess"; a stdlib child writes its own name.
    for forward in (False, True):
        path = tmp_path / f"forward-{forward}.log"
        p = ctx.Process(
            target=log_own_process_name,
            args=(str(path),),
            name=f"own-{forward}",
            forward_logs=forward,
        )
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert path.read_text() == f"own-{forward} hello\n"
        p.close()


# --- the parent holds the child's end of the channel until join() (LogStream.keeper) ---


def _wait_for_exit(process):
    """Wait until the child has exited, without join() (which would end its stream)."""
    import select

    assert select.select([process.sentinel], [], [], 30)[0], "the child did not exit"


def fork_stream(p, timeout=30):
    """The log stream of the fork child ``p`` once its first record has brought its
    channel (the listener makes it then: LogListener.expect)."""
    listener = _log_forwarding.listener()
    token = p._popen.log_token
    assert token is not None
    found = []
    wait_until(lambda: found.append(listener.stream_for(token)) or found[-1], timeout=timeout)
    return found[-1]


def _exited_child(records, ctx):
    """A spawn or forkserver child that logged ``records`` records and exited, not
    joined; and its log stream (whose end the parent keeps until then: a fork
    child's stream may be ended at EOF, by the listener's thread, before this could
    look at it)."""
    assert ctx.get_start_method() != "fork"
    p = ctx.Process(target=log_some, args=(records,))
    p.start()
    _wait_for_exit(p)
    return p, p._popen.log_stream


def test_a_childs_stream_ends_at_join_not_at_its_exit(ctx, app_logs):
    # The child's exit does not end the stream (no EOF wakes the listener's
    # thread): join() reads what is left and ends it, in the joining thread.
    # (A spawn or forkserver child's channel, made by the parent; a fork child
    # makes its own, below.)
    if ctx.get_start_method() == "fork":
        pytest.skip("a fork child makes its channel itself: the tests below")
    p, stream = _exited_child(3, ctx)
    assert stream.keeper is not None
    assert not stream.ended
    p.join(30)
    assert stream.ended and stream.keeper is None and stream.fd not in fds_let_go_in_forks()
    assert app_logs.messages() == ["record 0", "record 1", "record 2"]
    p.close()


# --- a fork child makes its channel at its first record (LogListener.expect) ---


def wait_at(gate_fd):
    os.read(gate_fd, 1)


@contextlib.contextmanager
def gated_fork_child(target=wait_at, *args):
    """A fork child running ``target(*args, gate_r)``, started; yields (the process,
    the gate's write end). The gate is closed after. (The process is not kept here:
    a test may drop it.)"""
    gate_r, gate_w = os.pipe()
    try:
        started = [proctor.get_context("fork").Process(target=target, args=(*args, gate_r))]
        started[0].start()
        yield started.pop(), gate_w
    finally:
        os.close(gate_r)
        os.close(gate_w)


def test_a_fork_child_that_never_logs_makes_no_channel_and_no_stream(app_logs):
    with gated_fork_child() as (p, gate_w):
        token = p._popen.log_token
        listener = _log_forwarding.listener()
        assert p._popen.log_stream is None and token in listener._expected
        held = _listener_fds(listener)
        os.write(gate_w, b"x")
        p.join(30)
    assert p.exitcode == 0
    assert p._popen.log_stream is None and p._popen.log_token is None
    assert token not in listener._expected and token not in listener._by_token
    # No stream was registered for it: the listener held its own descriptors only.
    assert len(held) == len(_listener_fds(listener)) or not listener._streams
    p.close()


def test_a_fork_start_whose_log_stream_cannot_be_made_fails_and_leaks_nothing(
    app_logs, monkeypatch
):
    import errno

    def out_of_descriptors(self, name):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(_log_forwarding.LogListener, "expect", out_of_descriptors)
    before = sorted(os.listdir("/dev/fd"))
    p = proctor.get_context("fork").Process()
    with pytest.raises(OSError, match="Too many open files"):
        p.start()
    assert sorted(os.listdir("/dev/fd")) == before


def test_a_fork_childs_first_record_brings_its_channel(app_logs):
    with gated_fork_child(log_and_wait, 2) as (p, gate_w):
        wait_until(lambda: app_logs.messages() == ["record 0", "record 1"], timeout=30)
        stream = fork_stream(p)
        assert stream.fd >= 0 and stream.token == p._popen.log_token
        assert stream.fd in fds_let_go_in_forks()
        os.write(gate_w, b"x")
        p.join(30)
    # (join() ended it, or the listener did at EOF, the child gone, before join() asked.)
    assert p.exitcode == 0 and stream.ended and p._popen.log_stream in (stream, None)
    assert stream.fd not in fds_let_go_in_forks()
    p.close()


def test_join_takes_a_channel_the_listener_has_not_seen_yet(app_logs, monkeypatch):
    # The listener's thread does not take requests here: join() takes the
    # channel itself, then every record.
    listener = _log_forwarding.listener()
    collect = listener._collect_requests

    def not_in_the_listeners_thread():
        if threading.current_thread() is not listener._thread:
            collect()

    monkeypatch.setattr(listener, "_collect_requests", not_in_the_listeners_thread)
    p = proctor.get_context("fork").Process(target=log_some, args=(3,))
    p.start()
    _wait_for_exit(p)
    assert p._popen.log_token not in listener._by_token
    p.join(30)
    assert p.exitcode == 0 and p._popen.log_stream.ended
    assert app_logs.messages() == ["record 0", "record 1", "record 2"]
    p.close()


def fill_request_socket(listener):
    """Send junk down the listener's request socket until it has no room (the
    caller holds the listener's lock, so that its thread takes none of it)."""
    import socket

    filler = socket.socket(fileno=os.dup(listener._request_w))
    try:
        while True:
            filler.send(b"not a request")
    except BlockingIOError:
        pass
    finally:
        filler.close()


def test_a_fork_child_whose_channel_finds_no_room_drops_its_records_without_hanging(
    app_logs, monkeypatch
):
    # The listener's thread cannot take requests (its lock held) and the request
    # socket is full: the child waits FULL_WAIT for room at each record, drops it,
    # and exits; join() then ends its stream, which never had a channel.
    monkeypatch.setattr(_log_forwarding, "FULL_WAIT", 0.05)  # (inherited by the child)
    with gated_fork_child(log_then_wait, 2) as (p, gate_w):
        listener = _log_forwarding.listener()
        with listener._lock:
            fill_request_socket(listener)
            os.write(gate_w, b"x")
            _wait_for_exit(p)
        p.join(30)
    assert p.exitcode == 0 and p._popen.log_stream is None
    assert app_logs.messages() == []
    p.close()


class SlowList(ListHandler):
    """A ListHandler that takes ``delay`` seconds over each record whose message
    starts with ``slow_prefix``: the listener lags behind the child."""

    def __init__(self, delay, slow_prefix=""):
        super().__init__()
        self.delay = delay
        self.slow_prefix = slow_prefix

    def emit(self, record):
        if record.getMessage().startswith(self.slow_prefix):
            time.sleep(self.delay)  # (a slow handler, the case under test)
        super().emit(record)


@contextlib.contextmanager
def handler_on_app(handler):
    logger = logging.getLogger("app")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_close_without_join_handles_every_record_of_a_fork_child_a_slow_handler_lags(ctx):
    # close() ends the stream as join() does: what the channel holds is handled
    # first. (The first version of the child's own channel let the listener close
    # it unread: 151 of 400 records handled.)
    with handler_on_app(SlowList(0.001)) as slow:
        p = ctx.Process(target=log_some, args=(200,))
        p.start()
        _wait_for_exit(p)
        assert not p.is_alive()
        p.close()
        assert slow.messages() == [f"record {i}" for i in range(200)]


def test_close_after_a_join_that_timed_out_handles_every_record(ctx):
    # The first join() ends the stream and its wait for the records runs out;
    # close() must wait for the rest, not drop the stream unread (it did: 20 of 300
    # handled with a slow handler).
    with handler_on_app(SlowList(0.002)) as slow:
        p = ctx.Process(target=log_some, args=(200,))
        p.start()
        _wait_for_exit(p)
        p.join(0.01)  # (200 records at 2 ms each: not handled yet)
        p.close()
        assert slow.messages() == [f"record {i}" for i in range(200)]


def fork_a_grandchild_that_logs_first(ready_w, gate_r):
    log = logging.getLogger("app.worker")
    ready_r, ready_w2 = os.pipe()
    if os.fork() == 0:  # before this child's first record: it makes a channel of its own
        log.info("from the grandchild")
        os.write(ready_w2, b"x")
        os.read(gate_r, 1)
        os._exit(0)
    os.read(ready_r, 1)  # its record is in its channel (and its request sent) first
    log.info("slow from the child")


def test_join_waits_for_the_childs_records_not_an_os_fork_grandchilds(app_logs):
    # The grandchild's request comes first, with the child's token it inherited:
    # it must not take the child's stream, or join() would wait for the
    # grandchild's records and not the child's. (Seen: join() returned before
    # the child's record was handled.)
    gate_r, gate_w = os.pipe()
    try:
        with handler_on_app(SlowList(0.3, slow_prefix="slow")) as slow:
            p = proctor.get_context("fork").Process(
                target=fork_a_grandchild_that_logs_first, args=(None, gate_r)
            )
            p.start()
            p.join(30)
            assert p.exitcode == 0
            assert "slow from the child" in slow.messages()
            os.write(gate_w, b"x")
            wait_until(lambda: "from the grandchild" in slow.messages(), timeout=30)
    finally:
        os.close(gate_r)
        os.close(gate_w)
    p.close()


def log_with_a_default_socket_timeout(gate_r, said_w):
    import socket

    socket.setdefaulttimeout(5.0)
    os.read(gate_r, 1)
    logging.getLogger("app.worker").info("a")  # the request socket is full: dropped
    os.write(said_w, b"x")
    os.read(gate_r, 1)
    logging.getLogger("app.worker").info("b")  # room again: it arrives, after a notice


def test_a_full_request_socket_drops_a_record_counted_even_with_a_default_socket_timeout(
    app_logs, monkeypatch
):
    # socket.setdefaulttimeout() in the child must not make the request wait its
    # timeout, nor be taken for the parent gone (which stopped forwarding for good).
    monkeypatch.setattr(_log_forwarding, "FULL_WAIT", 0.05)  # (inherited by the child)
    gate_r, gate_w = os.pipe()
    said_r, said_w = os.pipe()
    try:
        p = proctor.get_context("fork").Process(
            target=log_with_a_default_socket_timeout, args=(gate_r, said_w)
        )
        p.start()
        listener = _log_forwarding.listener()
        with listener._lock:  # (the listener's thread takes no request meanwhile)
            fill_request_socket(listener)
            os.write(gate_w, b"x")
            import select

            assert select.select([said_r], [], [], 30)[0], "the child did not log 'a'"
            os.read(said_r, 1)  # "a" was dropped
        os.write(gate_w, b"x")
        p.join(30)
    finally:
        for fd in (gate_r, gate_w, said_r, said_w):
            os.close(fd)
    assert p.exitcode == 0
    notice, last = app_logs.messages()
    assert notice.startswith("proctor dropped 1 log record(s)") and last == "b"
    p.close()


def test_a_fork_child_dropped_unjoined_lets_the_listener_end(app_logs):
    # Its token stays expected while the child runs; once the child has exited
    # without a channel (and is reaped: active_children(), or the next start, lets
    # go of the process object), it is forgotten and the listener's thread, with
    # nothing left, ends (it would otherwise wait for ever).
    import gc

    with gated_fork_child() as (p, gate_w):
        token = p._popen.log_token
        listener = _log_forwarding.listener()
        thread = listener._thread
        del p
        gc.collect()
        assert token in listener._expected  # the child runs: it may log yet
        os.write(gate_w, b"x")
        wait_until(
            lambda: not proctor.active_children() and token not in listener._expected,
            timeout=30,
        )
        thread.join(10)
        assert not thread.is_alive()


def test_a_fork_child_that_logged_and_is_never_joined_lets_the_listener_end(app_logs):
    # Its stream, read to EOF once the child exited, lets go of its token: the
    # thread, with nothing left, ends although the process object lives on
    # unjoined (it ran for ever).
    p = proctor.get_context("fork").Process(target=log_some, args=(2,))
    p.start()
    token = p._popen.log_token
    listener = _log_forwarding.listener()
    thread = listener._thread
    _wait_for_exit(p)
    wait_until(lambda: token not in listener._expected, timeout=30)
    thread.join(10)
    assert not thread.is_alive()
    assert app_logs.messages() == ["record 0", "record 1"]
    p.join(30)
    assert p.exitcode == 0
    p.close()


def test_a_fork_child_dropped_unjoined_still_has_its_records_handled(app_logs):
    import gc

    with gated_fork_child(log_then_wait, 2) as (p, gate_w):
        token = p._popen.log_token
        listener = _log_forwarding.listener()
        del p
        gc.collect()
        os.write(gate_w, b"x")
        wait_until(
            lambda: (
                not proctor.active_children()
                and token not in listener._expected
                and app_logs.messages() == ["record 0", "record 1"]
            ),
            timeout=30,
        )


def test_close_without_join_handles_the_records_left(app_logs):
    p = proctor.get_context("fork").Process(target=log_some, args=(2,))
    p.start()
    _wait_for_exit(p)
    assert not p.is_alive()
    p.close()
    assert app_logs.messages() == ["record 0", "record 1"]


def fork_a_grandchild_that_logs_later(gate_fd, gate_w=None):
    if gate_w is not None:
        os.close(gate_w)  # (so that the parent's close() opens the gate too)
    logging.getLogger("app.worker").info("from the child")
    if os.fork() == 0:  # shares the child's channel, and outlives the child
        os.read(gate_fd, 1)
        logging.getLogger("app.worker").info("from its os.fork() child")
        os._exit(0)


def test_join_does_not_wait_for_an_os_fork_grandchild_that_holds_the_channel(app_logs, monkeypatch):
    # join() waits for the records the child wrote, not for the channel's end,
    # which its os.fork() child holds for as long as it lives (join() used to wait
    # for it, up to DRAIN_TIMEOUT: made longer than this test waits for join()).
    monkeypatch.setattr(_log_forwarding, "DRAIN_TIMEOUT", 120.0)
    gate_r, gate_w = os.pipe()
    try:
        p = proctor.get_context("fork").Process(
            target=fork_a_grandchild_that_logs_later, args=(gate_r, gate_w)
        )
        p.start()
        _wait_for_exit(p)
        joiner = threading.Thread(target=p.join)
        joiner.start()
        joiner.join(30)
        assert not joiner.is_alive(), "join() waited for the grandchild"
        stream = p._popen.log_stream
        assert p.exitcode == 0
        assert app_logs.messages() == ["from the child"]
        assert not stream.ended  # the grandchild, waiting at the gate, holds it
        os.write(gate_w, b"x")
        # The listener's thread handles what the grandchild writes later, and
        # ends the stream when the grandchild closes the channel (its exit).
        wait_until(lambda: stream.ended, timeout=30)
    finally:
        os.close(gate_r)
        os.close(gate_w)
    assert app_logs.messages() == ["from the child", "from its os.fork() child"]
    p.close()


def test_the_listener_ends_after_close_of_a_child_whose_channel_is_still_held(app_logs):
    # close() after join() takes away a stream still open (the os.fork() child of
    # the child holds the channel): the listener's thread closes it, then, having
    # no stream left, lingers and ends. It used to wait on with no time limit.
    gate_r, gate_w = os.pipe()
    try:
        p = proctor.get_context("fork").Process(
            target=fork_a_grandchild_that_logs_later, args=(gate_r, gate_w)
        )
        p.start()
        thread = _log_forwarding.listener()._thread
        p.join(30)
        stream = p._popen.log_stream
        assert p.exitcode == 0 and not stream.ended
        p.close()
        assert stream.ended
        thread.join(10)
        assert not thread.is_alive()
        assert app_logs.messages() == ["from the child"]
    finally:
        os.close(gate_r)
        os.close(gate_w)  # the grandchild's record now goes nowhere; it exits


def test_a_fork_sibling_does_not_hold_a_childs_stream_open(app_logs):
    # The second child inherits the listener's end of the first's channel (the first
    # made it) and lets go of it by number, so the first's stream ends at its join()
    # while the second still runs. (A spawn child's channel end that the parent keeps
    # is let go of alike: Popen.held_fds.)
    gate_r, gate_w = os.pipe()
    try:
        first = proctor.get_context("fork").Process(target=log_some, args=(1,))
        first.start()
        second = proctor.get_context("fork").Process(target=os.read, args=(gate_r, 1))
        second.start()
        first.join(30)
        # (Ended by join(), or by the listener at EOF before join() asked for it.)
        assert first._popen.log_stream is None or first._popen.log_stream.ended
        assert first._popen.log_token is None
        assert second.is_alive()
        assert app_logs.messages() == ["record 0"]
        os.write(gate_w, b"x")
        second.join(30)
    finally:
        os.close(gate_r)
        os.close(gate_w)
    first.close()
    second.close()


def test_a_process_dropped_without_join_lets_its_stream_end(app_logs):
    # (A spawn child's channel, whose end the parent keeps: let go when collected. A
    # fork child's stream ends at EOF whether or not its process object lives.)
    import gc

    p, stream = _exited_child(2, proctor.get_context("spawn"))
    assert not p.is_alive()  # reaped, and no longer tracked
    del p
    gc.collect()  # its Popen lets the channel's end go: the listener sees EOF
    assert stream.wait_drained(30)
    assert app_logs.messages() == ["record 0", "record 1"]


def test_a_release_while_the_listener_is_locked_is_done_later(app_logs):
    # A garbage collection may run in a thread that holds the listener's lock:
    # release() must not wait for it, and the keeper is let go later. (A kept end:
    # a spawn child's channel, which the parent made.)
    p, stream = _exited_child(1, proctor.get_context("spawn"))
    listener = stream.listener
    with listener._lock:
        listener.release(stream, p.pid)
        assert stream.keeper is not None
    p.join(30)  # lets the deferred keeper go first, then waits for the EOF
    assert stream.ended and stream.keeper is None
    assert app_logs.messages() == ["record 0"]
    p.close()


def test_a_release_of_a_fork_childs_stream_while_the_listener_is_locked_is_done_later(
    app_logs,
):
    p = proctor.get_context("fork").Process()
    p.start()
    token = p._popen.log_token
    _wait_for_exit(p)
    listener = _log_forwarding.listener()
    with listener._lock:
        listener.release_token(token, p.pid)
        assert (token, p.pid) in listener._to_release
    # The thread, woken, finds the child exited without a channel and forgets it.
    wait_until(lambda: token not in listener._expected, timeout=30)
    p.join(30)
    p.close()


def check_points_at_devnull(fds):
    null = os.stat(os.devnull)
    for fd in fds:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (null.st_dev, null.st_ino):
            os._exit(3)


def _listener_fds(listener):
    """The descriptors ``listener`` holds: its streams', its wake pair's, its epoll's."""
    with listener._lock:
        fds = [stream.fd for stream in listener._streams.values()]
        fds += [listener._wake_r.fileno(), listener._wake_w.fileno()]
        fds.append(listener._request_r.fileno())
        poller_fd = _log_forwarding._listed_fd(listener._poller)
    return [*fds, poller_fd] if poller_fd >= 0 else fds


def test_a_fork_child_lets_go_of_the_log_listeners_descriptors(app_logs):
    # By number (pointed at /dev/null), without touching the listener's objects;
    # all but the request socket's sending end, which fork children use.
    gate_r, gate_w = os.pipe()
    try:
        first = proctor.get_context("fork").Process(target=log_and_wait, args=(1, gate_r))
        first.start()
        stream = fork_stream(first)
        held = _listener_fds(stream.listener)
        assert stream.fd in held and len(held) >= 4  # + the wake pair, the request socket
        assert set(held) <= set(fds_let_go_in_forks())
        assert stream.listener._request_w not in fds_let_go_in_forks()
        second = proctor.get_context("fork").Process(target=check_points_at_devnull, args=(held,))
        second.start()
        second.join(30)
        assert second.exitcode == 0
        os.write(gate_w, b"x")
        first.join(30)
    finally:
        os.close(gate_r)
        os.close(gate_w)
    first.close()
    second.close()


@pytest.mark.parametrize("poller", ["default", "poll"])
def test_the_listener_lets_go_of_every_descriptor_when_it_ends(app_logs, monkeypatch, poller):
    # With epoll where there is one (listed: a fork child inherits it), and with
    # poll, as where epoll is missing (nothing to list).
    import select

    wait_until(
        lambda: not any(t.name == "proctor-log-listener" for t in threading.enumerate()),
        timeout=10,
    )
    if poller == "poll":
        monkeypatch.setattr(_log_forwarding, "_EPOLL", None)
    expected = type(select.poll() if poller == "poll" else _log_forwarding._make_poller())
    # What the listener takes off the list, seen as it does so: once a number is
    # closed, something else in this process (a pool's replacement worker, a spawn
    # spare: started from threads of earlier tests) may reuse and list it again.
    taken_off = []
    keep_in_forks = _log_forwarding.keep_in_forks

    def recording_keep_in_forks(fd):
        taken_off.append((fd, fd in fds_let_go_in_forks()))
        keep_in_forks(fd)
        taken_off.append((fd, fd in fds_let_go_in_forks()))

    monkeypatch.setattr(_log_forwarding, "keep_in_forks", recording_keep_in_forks)
    ctx = proctor.get_context("fork")
    children = [ctx.Process(target=log_some, args=(2, f"app.w{i}")) for i in range(3)]
    for p in children:
        p.start()
    listener = _log_forwarding.listener()
    assert type(listener._poller) is expected
    # The thread whose wake pair and poller these are: the children's streams keep it.
    thread = listener._thread
    held = _listener_fds(listener)
    assert set(held) <= set(fds_let_go_in_forks())
    for p in children:
        p.join(30)
        p.close()
    assert sorted(app_logs.messages()) == sorted(["record 0", "record 1"] * 3)
    # Until the thread has returned: it clears listener._thread first and lets go of
    # its wake pair and poller after, so a test that waited for `_thread is None`
    # could look in between (it failed so twice in full suites, never alone).
    thread.join(10)
    assert not thread.is_alive()
    # Each held number was listed until the listener let go of it, and not after.
    for fd in held:
        assert (fd, True) in taken_off and (fd, False) in taken_off, (fd, held, taken_off)


# --- what a fork parent makes for its children: the forwarding handler, the record namer ---


def check_took_the_parents_spare():
    from proctor._logging import _logger

    handler = _log_forwarding._child_handler
    prepared = _logger._prepared_namer
    inherited = [ref() for ref in logging._handlerList]
    ok = (
        # Lent by the parent: its own fork children get a new one (ready_fork_child).
        _log_forwarding._policy.spare_handler is handler
        # (Its channel is made at its first record, the one below.)
        and handler.channel is None
        and _log_forwarding._child_channel is None
        and handler.request is not None
        and prepared is not None
        and logging.getLogRecordFactory() is prepared[1]
        # The parent's handlers stay on its loggers, each passing records on to it
        # (but logging's last resort, which writes what meets no handler here).
        and all(
            vars(h).get("handle") is _log_forwarding._forward_inherited
            for h in inherited
            if h is not None
            and h is not handler
            and type(h) is not logging.NullHandler
            and h is not logging._defaultLastResort
        )
        and logging.getLogger("app").handlers == [APP_HANDLER[0]]
    )
    logging.getLogger("app.worker").info("took" if ok else "made its own")


APP_HANDLER = []  # (the parent's app_logs handler, seen by the fork child)


def test_a_fork_child_takes_the_handler_and_namer_its_parent_made(app_logs):
    APP_HANDLER[:] = [app_logs]
    root_handlers = logging.root.handlers
    listed = list(root_handlers)
    factory = logging.getLogRecordFactory()
    try:
        p = proctor.get_context("fork").Process(target=check_took_the_parents_spare)
        p.start()
        # Nothing of the parent's changed for the child.
        assert logging.root.handlers is root_handlers and root_handlers == listed
        assert logging.getLogRecordFactory() is factory
        assert "handle" not in vars(app_logs)
        assert _log_forwarding._child_handler is None and _log_forwarding._child_channel is None
        p.join(30)
    finally:
        APP_HANDLER.clear()
    assert app_logs.messages() == ["took"]
    assert app_logs.records[0].processName == p.name
    # The parent's spare (lent to each child) is not a handler of the parent's.
    spare = _log_forwarding._policy.spare_handler
    assert spare is not None
    assert spare not in logging.root.handlers
    p.close()


def test_the_spare_handler_does_not_count_as_a_parents_handler():
    # Forwarding is on only where the parent has a handler of its own. (In a fresh
    # interpreter: pytest keeps handlers of its own on the root logger.)
    code = (
        "import gc, logging, proctor\n"
        "from proctor._logging import _forwarding\n"
        "if __name__ == '__main__':\n"
        "    handler = logging.StreamHandler()\n"
        "    logging.root.addHandler(handler)\n"
        "    p = proctor.get_context('fork').Process(); p.start(); p.join(30)\n"
        "    assert _forwarding._policy.spare_handler is not None\n"
        "    print('with a handler', _forwarding.forwarding_enabled(None))\n"
        "    logging.root.removeHandler(handler); del handler; gc.collect()\n"
        "    print('without', _forwarding.forwarding_enabled(None))\n"
    )
    done = run_fresh(code)
    assert done.stdout.splitlines() == ["with a handler True", "without False"]


def test_a_child_names_records_made_by_a_factory_set_after_an_earlier_start(app_logs):
    previous = logging.getLogRecordFactory()

    def tagging_factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        record.tag = "set later"
        return record

    ctx = proctor.get_context("fork")
    first = ctx.Process(target=log_some, args=(1,))
    first.start()
    first.join(30)
    logging.setLogRecordFactory(tagging_factory)
    try:
        second = ctx.Process(target=log_some, args=(1,), name="second")
        second.start()
        second.join(30)
    finally:
        logging.setLogRecordFactory(previous)
    last = app_logs.records[-1]
    assert (last.getMessage(), last.tag, last.processName) == ("record 0", "set later", "second")
    first.close()
    second.close()


class ThreadNoting(logging.Handler):
    """Notes which thread handled each record."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def emit(self, record):
        self.threads.append(threading.current_thread().name)


def test_records_are_handled_only_by_the_listeners_thread(app_logs):
    # Never by the thread in join(), which may hold a lock a handler takes: a
    # record still unread when the child exits goes to the listener's thread.
    noting = ThreadNoting()
    logging.getLogger("app").addHandler(noting)
    try:
        for _ in range(5):
            p = proctor.get_context("fork").Process(target=log_then_exit_at_once, args=(50,))
            p.start()
            p.join(30)
            p.close()
    finally:
        logging.getLogger("app").removeHandler(noting)
    assert len(noting.threads) == 250
    assert set(noting.threads) == {"proctor-log-listener"}


_held_by_the_test = threading.Lock()


class LockTaking(logging.Handler):
    def emit(self, record):
        with _held_by_the_test:
            pass


def test_a_join_holding_a_lock_that_a_handler_takes_does_not_deadlock(app_logs):
    taking = LockTaking()
    logging.getLogger("app").addHandler(taking)
    try:
        p = proctor.get_context("fork").Process(target=log_then_exit_at_once, args=(3,))
        with _held_by_the_test:
            p.start()
            _wait_for_exit(p)
            p.join(timeout=0.5)  # the records wait for the lock: join gives up in time
        p.join(30)
        assert p._popen is not None and p.exitcode == 0
    finally:
        logging.getLogger("app").removeHandler(taking)
    assert app_logs.messages() == ["record 0", "record 1", "record 2"]
    p.close()


def test_end_does_not_give_back_a_stream_the_thread_has_just_ended(app_logs):
    # join() finds the listener's thread at work on the stream (its lock taken),
    # and the thread reaches EOF and ends the stream before join() would give it
    # back: join() must not register the closed channel again.
    p, stream = _exited_child(1, proctor.get_context("spawn"))
    listener = stream.listener
    wait_until(lambda: stream.handled == 1, timeout=30)  # the thread is done with it

    class BusyThenEnded:
        """The stream's lock as join() finds it while the thread ends the stream."""

        def __init__(self):
            self.real = threading.Lock()

        def acquire(self, blocking=True):
            listener._close_stream(stream)  # what the thread does meanwhile, at EOF
            return False

        def __enter__(self):
            return self.real.__enter__()

        def __exit__(self, *exc):
            return self.real.__exit__(*exc)

    stream.reading = BusyThenEnded()
    assert listener.end(stream, 5)
    assert stream.ended and stream.fd not in fds_let_go_in_forks()
    assert listener._streams.get(stream.fd) is not stream
    p.join(30)
    assert p.exitcode == 0 and app_logs.messages() == ["record 0"]
    p.close()
