"""What a start does for log forwarding: the decision, and no walk over every logger.

Most of these run a small program in a fresh interpreter: under pytest the root
logger always has pytest's own handlers, so "no handler configured" cannot be
arranged in this process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import proctor
from helpers import wait_until
from proctor._logging import _forwarding as _log_forwarding
from proctor._start import _popen_fork


def run_script(prelude: str, body: str) -> str:
    """Run ``prelude``, then ``body`` under a main guard, in a fresh interpreter; its stdout."""
    code = prelude + "if __name__ == '__main__':\n" + textwrap.indent(textwrap.dedent(body), "    ")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_program(body: str) -> str:
    """Run ``body`` (indented under a main guard) in a fresh interpreter; its stdout."""
    prelude = (
        "import logging, os, sys, proctor\n"
        "from proctor._logging import _forwarding\n"
        "class Collect(logging.Handler):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.messages = []\n"
        "    def emit(self, record):\n"
        "        self.messages.append(record.getMessage())\n"
        "def log(name, message):\n"
        "    logging.getLogger(name).warning(message)\n"
        "def start_join(target=None, args=(), method='fork'):\n"
        "    p = proctor.get_context(method).Process(target=target, args=args)\n"
        "    p.start(); p.join(30); p.close()\n"
    )
    return run_script(prelude, body)


def test_no_handler_anywhere_means_no_forwarding_even_with_many_loggers():
    out = run_program(
        """
        for i in range(300):
            logging.getLogger(f"app.m{i}").setLevel(logging.INFO)
        print(_forwarding.forwarding_enabled(None))
        """
    )
    assert out.split() == ["False"]  # logging's own last resort is no handler of ours


def test_a_handler_on_any_logger_turns_forwarding_on_and_its_removal_off():
    out = run_program(
        """
        for i in range(300):
            logging.getLogger(f"app.m{i}")
        leaf = logging.getLogger("app.m150")
        handler = Collect()
        leaf.addHandler(handler)
        print(_forwarding.forwarding_enabled(None))
        leaf.removeHandler(handler)
        del handler  # collected: logging forgets it
        print(_forwarding.forwarding_enabled(None))
        """
    )
    assert out.split() == ["True", "False"]


def test_null_handlers_alone_leave_forwarding_off_and_the_childs_records_where_they_were():
    # A library's NullHandler (logging's HOWTO) and even one on root configure
    # nothing: the child's records meet them, or logging's last resort, in the
    # child exactly as they would in the parent. A NullHandler subclass may handle
    # records, so it counts.
    out = run_program(
        """
        logging.getLogger("library").addHandler(logging.NullHandler())
        logging.root.addHandler(logging.NullHandler())
        print(_forwarding.forwarding_enabled(None))
        reader, writer = os.pipe()
        def report():
            kinds = sorted(type(h).__name__ for h in logging.root.handlers)
            os.write(writer, " ".join(kinds).encode())
        start_join(report)
        print(os.read(reader, 256).decode())
        class Counting(logging.NullHandler):
            pass
        logging.getLogger("library.part").addHandler(Counting())
        print(_forwarding.forwarding_enabled(None))
        """
    )
    assert out.split() == ["False", "NullHandler", "True"]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_handler_added_after_a_start_without_one_gets_the_next_childs_records(method):
    out = run_program(
        f"""
        start_join(log, ("app.worker", "unheard"), {method!r})
        handler = Collect()
        logging.getLogger("app").addHandler(handler)  # not root: only this logger
        start_join(log, ("app.worker", "heard"), {method!r})
        print(handler.messages)
        """
    )
    assert out.strip() == "['heard']"


def test_a_fork_child_follows_levels_and_propagation_changed_between_starts():
    out = run_program(
        """
        root, own = Collect(), Collect()
        logging.root.addHandler(root)
        start_join(log, ("app.quiet", "first"))
        # Between two starts: app.quiet stops propagating, with a handler of its
        # own; app.loud drops warnings.
        quiet = logging.getLogger("app.quiet")
        quiet.propagate = False
        quiet.addHandler(own)
        logging.getLogger("app.loud").setLevel(logging.ERROR)
        start_join(log, ("app.quiet", "second"))
        start_join(log, ("app.loud", "dropped in the child"))
        print(root.messages, own.messages)
        """
    )
    assert out.strip() == "['first'] ['second']"


def test_a_fork_parent_builds_the_forwarding_handler_class_its_children_use():
    out = run_program(
        """
        logging.root.addHandler(Collect())
        reader, writer = os.pipe()
        def report():
            os.write(writer, str(id(type(_forwarding._child_handler))).encode())
        start_join(report)
        built = _forwarding._handler_cls
        print(built is not None and os.read(reader, 64).decode() == str(id(built)))
        """
    )
    assert out.split() == ["True"]


class ListHandler(logging.Handler):
    """Collects the messages of the records it handles."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


class CountingLogger(logging.Logger):
    """Counts reads of the attributes a walk over the loggers would look at."""

    reads = 0

    def __getattribute__(self, name):
        if name in ("handlers", "propagate", "level"):
            CountingLogger.reads += 1
        return super().__getattribute__(name)


@pytest.fixture
def counting_loggers():
    """200 loggers that count reads of their handlers, propagate and level."""
    manager = logging.root.manager
    previous = manager.loggerClass
    manager.setLoggerClass(CountingLogger)
    try:
        for i in range(200):
            logging.getLogger(f"counted.m{i}")
    finally:
        manager.loggerClass = previous
    yield
    for name in [name for name in manager.loggerDict if name.split(".")[0] == "counted"]:
        del manager.loggerDict[name]


def report_logger_reads(writer):
    os.write(writer, str(CountingLogger.reads).encode())


def test_a_fork_start_that_forwards_looks_at_no_logger(counting_loggers):
    # Neither the parent (its decision, its fork hooks) nor the child (which finds
    # the handlers it inherits in logging's list of them) looks at a logger: each
    # one looked at is a page written (~25 pages with 200 loggers), which the
    # child copies, or the parent while the child lives. (But for the first start
    # after logging's list of handlers changed: the parent then looks for handlers
    # that are on loggers and not on the list, below.)
    handler = ListHandler()
    logging.getLogger("app").addHandler(handler)
    reader, writer = os.pipe()
    try:
        first = proctor.get_context("fork").Process()
        first.start()
        first.join(30)
        first.close()
        p = proctor.get_context("fork").Process(target=report_logger_reads, args=(writer,))
        before = CountingLogger.reads
        assert _log_forwarding.forwarding_enabled(None)
        assert CountingLogger.reads == before  # the decision looks at none
        p.start()
        at_fork = CountingLogger.reads
        p.join(30)
        assert p.exitcode == 0
        in_child = int(os.read(reader, 64))
        p.close()
    finally:
        logging.getLogger("app").removeHandler(handler)
        os.close(reader)
        os.close(writer)
    assert at_fork == before
    assert in_child == before


def log_and_count_handlers(name, writer):
    logging.getLogger(name).warning("from %s", proctor.current_process().name)
    os.write(writer, str(len(logging.getLogger(name).handlers)).encode())


def test_a_handler_added_between_two_fork_starts_forwards_in_the_second_child():
    # The second child finds the new handler among those it inherits (nothing is
    # kept from one start to the next): the handler stays on its logger, and what
    # reaches it is handled here, once.
    handler = ListHandler()
    reader, writer = os.pipe()
    ctx = proctor.get_context("fork")
    try:
        first = ctx.Process(target=log_and_count_handlers, args=("late.logger", writer))
        first.start()
        first.join(30)
        logging.getLogger("late.logger").addHandler(handler)
        second = ctx.Process(target=log_and_count_handlers, args=("late.logger", writer))
        second.start()
        second.join(30)
        counts = [os.read(reader, 1), os.read(reader, 1)]
    finally:
        logging.getLogger("late.logger").removeHandler(handler)
        os.close(reader)
        os.close(writer)
    assert counts == [b"0", b"1"]
    assert handler.messages == [f"from {second.name}"]
    assert logging.getLogger("late.logger").handlers == []
    first.close()
    second.close()


def take_and_let_go_of_loggings_lock(taken):
    got = logging._lock.acquire(timeout=5)
    if got:
        logging._lock.release()
    taken.append(got)


def test_an_os_fork_in_a_forwarding_parent_leaves_loggings_lock_free():
    # The fork hooks hold logging's lock through a fork start that forwards, and
    # let it go after it, in the parent (the child's is new); an os.fork() there
    # is none of theirs: its child keeps the parent's handlers, as it would anywhere.
    gate_r, gate_w = os.pipe()
    p = proctor.get_context("fork").Process(target=os.read, args=(gate_r, 1))
    p.start()  # the listener exists while the child runs
    handlers = list(logging.root.handlers)
    try:
        pid = os.fork()
        if pid == 0:
            kept = logging.root.handlers == handlers
            os._exit(0 if logging._lock.acquire(timeout=5) and kept else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        taken = []
        other = threading.Thread(target=take_and_let_go_of_loggings_lock, args=(taken,))
        other.start()
        other.join(30)
        assert taken == [True]
    finally:
        os.write(gate_w, b"x")
        p.join(30)
        p.close()
        os.close(gate_r)
        os.close(gate_w)


def log_and_report_handlers(writer):
    logging.getLogger("app.worker").info("from a child that set itself up")
    own = [type(h).__name__ for h in logging.root.handlers + logging.getLogger("app").handlers]
    os.write(writer, " ".join(own).encode())


class Messages(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_fork_child_walks_its_loggers_where_logging_lists_no_handlers(monkeypatch):
    # Where logging keeps no list of its handlers (_handlerList: CPython's has one),
    # the child finds the inherited ones on its loggers, takes them off, and
    # forwards through a handler on its root logger instead.
    inherited = Messages()
    app = logging.getLogger("app")
    app.addHandler(inherited)
    monkeypatch.setattr(app, "level", logging.INFO)
    monkeypatch.setattr(_log_forwarding, "_forward_through_inherited", lambda request: False)
    reader, writer = os.pipe()
    try:
        p = proctor.get_context("fork").Process(target=log_and_report_handlers, args=(writer,))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        reported = os.read(reader, 4096).decode()
        p.close()
    finally:
        monkeypatch.undo()
        app.removeHandler(inherited)
        os.close(reader)
        os.close(writer)
    assert reported == "_ForwardingHandler"
    assert inherited.messages == ["from a child that set itself up"]  # once, forwarded


def test_the_decision_looks_at_no_logger_when_root_has_no_handler(counting_loggers, monkeypatch):
    # pytest's handlers are on the root logger during a test: without them, the
    # decision must still not walk the loggers (the handler is found among
    # logging's handlers).
    monkeypatch.setattr(logging.root, "handlers", [])
    handler = ListHandler()
    last = logging.getLogger("counted.last")  # made after the counted ones
    last.addHandler(handler)
    try:
        before = CountingLogger.reads  # (pytest's own logging reads them between phases)
        assert _log_forwarding.forwarding_enabled(None)
        looked = CountingLogger.reads - before
    finally:
        last.removeHandler(handler)
    assert looked == 0


# --- the listener: one thread for a loop of starts, streams registered without a wake --


def log_one(message):
    logging.getLogger("app.worker").info(message)


@pytest.fixture
def lingering_listener(monkeypatch):
    """A listener thread that outlives its streams until the test ends."""
    monkeypatch.setattr(_log_forwarding, "LISTENER_LINGER", 30.0)
    yield _log_forwarding.listener()
    monkeypatch.setattr(_log_forwarding, "LISTENER_LINGER", 0.0)
    thread = _log_forwarding.listener()._thread
    _log_forwarding.listener()._wake()
    if thread is not None:
        thread.join(30)


def listener_is_idle(listener):
    """Whether the listener has read every wake-up byte sent to it."""
    import select

    return not select.select([listener._wake_r], [], [], 0)[0]


def test_the_listener_thread_serves_the_next_start_after_its_streams_end(ctx, lingering_listener):
    handler = ListHandler()
    logging.getLogger("app").addHandler(handler)
    logging.getLogger("app").setLevel(logging.INFO)
    try:
        first = ctx.Process(target=log_one, args=("first",))
        first.start()
        first.join(30)
        first.close()
        thread = lingering_listener._thread
        assert thread is not None
        # Two wake-ups, each read: the second is read after the thread has seen
        # that it has no stream left (and stayed).
        for _ in range(2):
            lingering_listener._wake()
            wait_until(lambda: listener_is_idle(lingering_listener), timeout=10)
        assert thread.is_alive() and lingering_listener._thread is thread
        # The next stream is registered while the thread waits: nothing wakes it.
        second = ctx.Process(target=log_one, args=("second",))
        second.start()
        second.join(30)
        second.close()
        assert lingering_listener._thread is thread
        assert handler.messages == ["first", "second"]
    finally:
        logging.getLogger("app").removeHandler(handler)
        logging.getLogger("app").setLevel(logging.NOTSET)


def test_a_fork_that_fails_leaves_no_stream_or_descriptor(monkeypatch):
    handler = ListHandler()
    logging.getLogger("app").addHandler(handler)

    def failing_fork(*args):
        raise OSError("no fork today")

    try:
        p = proctor.get_context("fork").Process()
        # Whichever forks: os.fork(), or _start._native.fork_start (Python 3.12+).
        monkeypatch.setattr(os, "fork", failing_fork)
        pid, main_ident, pidfds, fork = _popen_fork._get_ready(os.getpid())
        if fork is not None:
            monkeypatch.setattr(_popen_fork, "_ready", (pid, main_ident, pidfds, failing_fork))
        token = _log_forwarding.listener()._next_token
        with pytest.raises(OSError, match="no fork today") as failure:
            p.start()
        monkeypatch.undo()
        # Attached before the fork: the listener sees the stream end and lets it go,
        # although the traceback kept (the start's frame with it) holds the channel.
        wait_until(lambda: not _log_forwarding.listener()._streams, timeout=10)
        del failure
        # Its token (the listener's next when it started) is expected no more.
        assert token not in _log_forwarding.listener()._expected
    finally:
        logging.getLogger("app").removeHandler(handler)


# --- a fork child's records reach each inherited handler once ------------------------


def test_a_fork_childs_records_reach_each_inherited_handler_once(tmp_path):
    path = tmp_path / "app.log"
    out = run_program(
        f"""
        shared = logging.FileHandler({str(path)!r})
        for i in range(50):
            logging.getLogger(f"app.m{{i}}")
        logging.getLogger("app").addHandler(shared)
        solo = logging.getLogger("solo")  # does not propagate: its records stop there
        solo.propagate = False
        solo.addHandler(shared)
        def child():
            own = Collect()  # the child's own handler, on a logger with an inherited one
            logging.getLogger("app").addHandler(own)
            log("app.m1", "child")
            log("solo", "child, solo")
            log("app.m1", "child again")
            start_join(log, ("app.m2", "grandchild"))
            start_join(log, ("solo", "grandchild, solo"))
            print(own.messages, flush=True)
        start_join(child)
        shared.close()
        """
    )
    assert out.strip() == "['child', 'child again', 'grandchild']"
    assert path.read_text().splitlines() == [
        "child",
        "child, solo",
        "child again",
        "grandchild",
        "grandchild, solo",
    ]


def test_a_record_logged_while_a_fork_child_handles_another_reaches_the_parent_once():
    # The child's own handler, between two inherited ones of the record's chain,
    # logs a record of its own: the first record must still not be sent again at
    # the second inherited handler (each thread remembers its last few records).
    out = run_program(
        """
        collected = Collect()
        logging.root.addHandler(collected)
        logging.getLogger("app").addHandler(collected)
        class LogsWhileHandling(logging.Handler):
            def emit(self, record):
                if record.getMessage() == "outer":
                    for i in range(6):  # (more than a few: none is forgotten)
                        logging.getLogger("other").warning("inner %d", i)
        def child():
            # After the inherited handler of "app", before root's.
            logging.getLogger("app").addHandler(LogsWhileHandling())
            log("app.m", "outer")
        start_join(child)
        print(sorted(collected.messages))
        """
    )
    # "outer" reaches the app and root handlers here, each "inner" the root one.
    assert out.strip() == str(sorted([f"inner {i}" for i in range(6)] + ["outer", "outer"]))


def test_records_of_a_fork_childs_threads_each_reach_the_parent_once():
    out = run_program(
        """
        collected = Collect()
        logging.root.addHandler(collected)
        logging.root.addHandler(logging.NullHandler())
        logging.root.addHandler(Collect())  # a second inherited handler on the chain
        import threading
        def child():
            def burst(n):
                for i in range(300):
                    log("app", f"{n} {i}")
            threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        start_join(child)
        expected = sorted(f"{n} {i}" for n in range(4) for i in range(300))
        print(sorted(collected.messages) == expected)
        """
    )
    assert out.split() == ["True"]


def test_a_handler_that_dictconfig_left_on_a_logger_handles_a_fork_childs_records_once():
    # dictConfig empties logging's list of handlers, and the handler it does not
    # replace stays on its logger, working: the child must find it anyway.
    out = run_program(
        """
        import logging.config
        kept = Collect()
        logging.getLogger("app").addHandler(kept)
        logging.config.dictConfig({
            "version": 1, "disable_existing_loggers": False,
            "handlers": {"null": {"class": "logging.NullHandler"}},
            "root": {"handlers": ["null"], "level": "INFO"},
        })
        root_collect = Collect()  # (a handler made after: on the list)
        logging.root.addHandler(root_collect)
        start_join(log, ("app.m", "from the child"))
        print(kept.messages, root_collect.messages)
        """
    )
    assert out.strip() == "['from the child'] ['from the child']"


def test_a_fork_grandchild_of_a_spawn_child_forwards_through_it():
    # The spawn child's forwarding handler is on its root logger; its fork child
    # inherits it, with a channel that is not the grandchild's.
    out = run_program(
        """
        collected = Collect()
        logging.root.addHandler(collected)
        def middle():
            log("m", "from the spawn child")
            start_join(log, ("g", "from the grandchild"))
        start_join(middle, method="spawn")
        print(sorted(collected.messages))
        """
    )
    assert out.strip() == "['from the grandchild', 'from the spawn child']"


def test_a_fork_grandchild_forwards_through_handlers_its_parent_set_after_a_dictconfig():
    # The child's dictConfig empties its list of handlers: the inherited ones its
    # parent set up stay on its loggers, and forward through the grandchild's own.
    out = run_program(
        """
        import logging.config
        collected = Collect()
        logging.getLogger("app").addHandler(collected)
        def middle():
            logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
            start_join(log, ("app.g", "from the grandchild"))
        start_join(middle)
        print(collected.messages)
        """
    )
    assert out.strip() == "['from the grandchild']"


def test_what_meets_no_handler_in_a_fork_child_goes_to_its_last_resort():
    # As in a stdlib fork child: logging's last resort writes it to the child's
    # stderr; the parent's handlers never see it.
    out = run_program(
        """
        collected = Collect()
        logging.getLogger("app").addHandler(collected)
        def child():
            sys.stderr = sys.stdout  # (what the last resort writes, printed here)
            quiet = logging.getLogger("quiet")
            quiet.propagate = False
            quiet.warning("to the last resort")
        start_join(child)
        print(collected.messages)
        """
    )
    assert out.split("\n")[:2] == ["to the last resort", "[]"]


# --- children of a parent without logging: nothing to do at their start --------------


def run_without_logging(body: str) -> str:
    """Run ``body`` under a main guard in a fresh interpreter that has not imported
    logging (proctor alone does not); its stdout."""
    prelude = (
        "import os, sys, proctor\n"
        "def start_join(target=None, args=(), method='fork', name=None):\n"
        "    p = proctor.get_context(method).Process(target=target, args=args, name=name)\n"
        "    p.start(); p.join(30); assert p.exitcode == 0, p.exitcode; p.close()\n"
        "def log_own_name(path):\n"
        "    import logging\n"
        "    logging.basicConfig(filename=path, format='%(processName)s %(message)s')\n"
        "    logging.getLogger('own').warning('hello')\n"
        "    logging.shutdown()\n"
        "def read(path):\n"
        "    with open(path) as f:\n"
        "        return f.read().strip()\n"
    )
    return run_script(prelude, "assert 'logging' not in sys.modules\n" + textwrap.dedent(body))


def test_a_fork_child_adds_no_finder_to_sys_meta_path_at_its_start():
    # Each child used to make and insert a finder waiting for logging (up to 11
    # pages copied in a no-op child); the parent's, inherited, does that job now.
    out = run_without_logging(
        """
        reader, writer = os.pipe()
        def report():
            os.write(writer, repr([id(finder) for finder in sys.meta_path]).encode())
        start_join(report)
        print(os.read(reader, 4096).decode() == repr([id(f) for f in sys.meta_path]))
        """
    )
    assert out.split() == ["True"]


def test_a_program_without_logging_starts_fork_children_without_loading_log_forwarding():
    # Nothing forwards there, and the module (with pickle) grew the memory each fork
    # copies. The child of a parent that forwards, which has not imported logging,
    # still forwards what its own children log (the tests below and above).
    out = run_without_logging(
        """
        start_join()
        start_join()
        print("proctor._logging._forwarding" in sys.modules, "pickle" in sys.modules)
        """
    )
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("setup", ["null_handler", "per_process_off", "switched_off"])
def test_a_program_whose_children_do_not_forward_never_loads_log_forwarding(setup):
    # Logging imported but not configured (a library's NullHandler), or forwarding
    # turned off for the child or for every child: nothing forwards, and the module
    # (with pickle, and fork hooks that run at every fork) is not loaded for it.
    configure = {
        "null_handler": "logging.getLogger('library').addHandler(logging.NullHandler())",
        "per_process_off": "logging.root.addHandler(logging.StreamHandler(sys.stdout))",
        "switched_off": (
            "logging.root.addHandler(logging.StreamHandler(sys.stdout)); "
            "proctor.set_log_forwarding(False)"
        ),
    }[setup]
    forward_logs = "False" if setup == "per_process_off" else "None"
    out = run_without_logging(
        f"""
        import logging
        {configure}
        for _ in range(2):
            p = proctor.get_context("fork").Process(forward_logs={forward_logs})
            p.start(); p.join(30); assert p.exitcode == 0, p.exitcode; p.close()
        print("proctor._logging._forwarding" in sys.modules, "pickle" in sys.modules)
        """
    )
    assert out.split() == ["False", "False"]


def test_a_program_that_forwards_loads_neither_socket_py_nor_pickle_py_for_it():
    # The listener takes the C module's sockets, and pickle is loaded only for a
    # record marshal cannot carry: socket.py (with selectors, math, array) and
    # pickle.py were ~700 KiB and 15 mappings more in every process that forwards,
    # copied by each fork start. A record that needs pickle still arrives.
    out = run_program(
        """
        collect = Collect()
        logging.root.addHandler(collect)
        start_join(log, ("app", "plain"))
        loaded = [name in sys.modules for name in ("socket", "pickle", "fcntl")]
        def log_unmarshalable():
            logging.getLogger("app").warning("odd", extra={"odd": {1, frozenset({2})}.__class__})
        start_join(log_unmarshalable)
        print(loaded, collect.messages)
        """
    )
    assert out.split("\n")[0] == "[False, False, False] ['plain', 'odd']"


def test_a_fork_child_without_logging_starts_its_own_children_without_importing_it():
    out = run_without_logging(
        """
        reader, writer = os.pipe()
        def middle():
            start_join()
            os.write(writer, repr('logging' in sys.modules).encode())
        start_join(middle)
        print(os.read(reader, 64).decode())
        """
    )
    assert out.split() == ["False"]


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_children_of_a_parent_without_logging_name_their_records_when_they_import_it(
    method, tmp_path
):
    out = run_without_logging(
        f"""
        def middle(path):
            start_join(log_own_name, (path,), {method!r}, "grandchild")
            log_own_name(path + ".middle")
        path = {str(tmp_path / "log")!r}
        start_join(log_own_name, (path + ".child",), {method!r}, "child")
        start_join(middle, (path,), {method!r}, "middle")
        print(read(path + ".child"), "|", read(path + ".middle"), "|", read(path))
        """
    )
    assert out.strip() == "child hello | middle hello | grandchild hello"


def test_the_parent_and_multiprocessings_children_keep_their_own_record_names(tmp_path):
    # The finder the parent stands by for proctor's fork children does nothing in
    # the parent, nor in a child that the stdlib forked from it.
    out = run_without_logging(
        f"""
        import multiprocessing
        path = {str(tmp_path / "log")!r}
        start_join()  # a fork start: the parent now stands a finder by
        stdlib = multiprocessing.get_context("fork").Process(
            target=log_own_name, args=(path + ".stdlib",), name="stdlib-child"
        )
        stdlib.start(); stdlib.join(30)
        def middle():  # a child of proctor's, without logging, and its stdlib child
            grandchild = multiprocessing.get_context("fork").Process(
                target=log_own_name, args=(path + ".stdlib2",), name="stdlib-grandchild"
            )
            grandchild.start(); grandchild.join(30)
        start_join(middle, name="middle")
        log_own_name(path + ".parent")
        sys.modules["logging"].root.handlers.clear()  # (else the child would forward)
        start_join(log_own_name, (path + ".child",), name="child")  # logging loaded now
        print(read(path + ".stdlib"), "|", read(path + ".stdlib2"), "|", read(path + ".parent"),
              "|", read(path + ".child"))
        from proctor._logging import _logger
        print(any(isinstance(f, _logger._AfterLoggingImport) for f in sys.meta_path))
        """
    )
    assert out.split("\n")[:2] == [
        "stdlib-child hello | stdlib-grandchild hello | MainProcess hello | child hello",
        "False",
    ]


# --- a fork child leaves its parent's handlers alone ----------------------------------


def child_setup(prepared: bool) -> str:
    """A program's first line: each fork child keeps the handlers it inherits, each
    forwarding (``_forward_through_inherited``), or, as where logging keeps no list
    of its handlers, walks its loggers to take them off (``install_in_child``)."""
    return "" if prepared else "_forwarding._forward_through_inherited = lambda request: False\n"


both_child_setups = pytest.mark.parametrize(
    "prepared", [True, False], ids=["inherited-forward", "child-walks"]
)


@both_child_setups
def test_a_fork_child_neither_closes_nor_flushes_the_handlers_it_inherits(tmp_path, prepared):
    # The handlers are the parent's, held by its loggers alone: the child took them
    # off its loggers and, freeing them, closed their streams, which wrote what the
    # parent had buffered a second time (and cost each fork start ~55 copied pages).
    path = tmp_path / "app.log"
    out = run_program(
        f"""
        {child_setup(prepared)}
        # Held by the handlers alone (no name in this module refers to it).
        logging.root.addHandler(logging.StreamHandler(open({str(path)!r}, "w", buffering=1 << 16)))
        logging.getLogger("app").addHandler(logging.StreamHandler(logging.root.handlers[0].stream))
        logging.root.handlers[0].stream.write("buffered in the parent\\n")  # flush() empties it
        start_join(log, ("app.m1", "from the child"))
        for logger in (logging.root, logging.getLogger("app")):
            for handler in logger.handlers:
                handler.flush()
        print(sorted(type(h).__name__ for h in logging.root.handlers))
        """
    )
    assert out.split() == ["['StreamHandler']"]
    # Once, as the parent wrote it; then the child's record, handled here by both handlers.
    assert path.read_text().splitlines() == [
        "buffered in the parent",
        "from the child",
        "from the child",
    ]


@both_child_setups
def test_a_fork_child_that_reconfigures_logging_leaves_the_parents_handlers_alone(
    tmp_path, prepared
):
    # dictConfig (a worker initializer's idiom) and logging.shutdown() flush and close
    # every handler logging knows of: the parent's, inherited, wrote their buffers again.
    path = tmp_path / "app.log"
    out = run_program(
        f"""
        {child_setup(prepared)}
        import logging.config, logging.handlers
        target = logging.StreamHandler(open({str(path)!r}, "w"))
        # Records held until 100 or a flush (the parent's own, before the start).
        logging.root.addHandler(logging.handlers.MemoryHandler(100, target=target))
        log("app", "held in the parent's buffer")
        def reconfigure():
            logging.config.dictConfig({{"version": 1, "root": {{"level": "INFO"}}}})
            logging.shutdown()
        start_join(reconfigure)
        logging.root.handlers[0].flush()
        target.flush()
        print("done")
        """
    )
    assert out.split() == ["done"]
    assert path.read_text().splitlines() == ["held in the parent's buffer"]
