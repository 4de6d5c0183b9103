"""Run the installed suite in this process, one JSON line per test, each under a timeout.

Usage (the harness, ``harness.py``, starts it with the environment it needs)::

    python worker.py RESULTS.jsonl [--suite multiprocessing|futures] [--timeout SECONDS]
                     [--only ID ...] [--skip-listed EXCLUDED.txt]

The suite is a module here that installs the test classes for the target and
start method of the environment: ``cpython_suite`` (multiprocessing) or
``futures_suite`` (concurrent.futures). It provides ``TEST_CLASSES``,
``deferred_reason(test_id)`` and, optionally, ``test_id(test)``.

Each test writes ``{"start": id}`` when it begins and ``{"id", "outcome", "message",
"seconds"}`` when it ends; tests that already have a result line in RESULTS.jsonl
are skipped, so a harness that had to kill a hung worker starts a new one that
carries on after the hung test.

A test still running after its timeout gets a ``TestTimeout`` raised in the main
thread (by SIGALRM): blocking calls that check for signals are interrupted and the
test is reported as an error; while the test still runs (``subTest`` records the
exception and goes on with the next subtest), another comes every ``REPEAT_ALARM``
seconds. If that does not end it within ``GRACE`` seconds, a watchdog thread dumps
every thread's stack and the state of every descendant process to stderr and exits
the process; the harness records the test as hung. (A few of the suite's tests use ``signal.alarm``
themselves, which cancels the SIGALRM timer for the rest of that test; the watchdog
still bounds it.)
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import unittest

#: Seconds between the SIGALRM and the watchdog giving up on the process.
GRACE = 15.0
#: Exit status of a worker that gave up on a hung test.
HUNG_EXIT = 75
#: Characters of a failure's message kept in the results.
MESSAGE_CHARS = 600
#: The module of each suite.
SUITES = {"multiprocessing": "cpython_suite", "futures": "futures_suite"}


class TestTimeout(BaseException):
    """Raised in the main thread when a test runs past its timeout.

    A BaseException, so that a test's ``except Exception`` does not swallow it.
    """


def _test_id(test: unittest.TestCase) -> str:
    return test.id().split(".", 1)[1]  # drop the module name (cpython_suite)


def _summary(err: tuple) -> str:
    exc_type, exc, tb = err
    text = "".join(traceback.format_exception_only(exc_type, exc)).strip()
    where = traceback.extract_tb(tb)
    if exc_type is TestTimeout:
        # Where the test was waiting when the alarm interrupted it: the innermost
        # frames, so that a timeout in CI can be diagnosed from the report alone.
        inner = [f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in where[-4:]]
        return f"{text}  [waiting at {' <- '.join(reversed(inner))}]"[:MESSAGE_CHARS]
    # The innermost frame outside unittest locates the failing line of the test.
    frames = [f for f in where if "/unittest/" not in f.filename]
    if frames:
        last = frames[-1]
        text += f"  [{os.path.basename(last.filename)}:{last.lineno} in {last.name}]"
    return text[:MESSAGE_CHARS]


class _Recorder(unittest.TestResult):
    """Writes each test's outcome as it ends and arms the per-test timeout."""

    _RANK = {"pass": 0, "skip": 1, "fail": 2, "error": 3}

    def __init__(self, out, timeout: float, fresh_pythons: list, test_id=_test_id) -> None:
        super().__init__()
        self.test_id = test_id
        self.out = out
        self.timeout = timeout
        self.fresh_pythons = fresh_pythons
        self.current: str | None = None
        self.outcome = "pass"
        self.message = ""
        self.started = 0.0
        self.deadline: float | None = None
        self.ids_by_class: dict[str, list[str]] = {}
        self.done: set[str] = set()

    def _write(self, record: dict) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def _set(self, outcome: str, message: str) -> None:
        if self._RANK[outcome] >= self._RANK[self.outcome]:
            self.outcome, self.message = outcome, message

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self.current = self.test_id(test)
        self.outcome, self.message = "pass", ""
        self.fresh_pythons.clear()
        self._write({"start": self.current})
        self.started = time.monotonic()
        self.deadline = self.started + self.timeout
        signal.setitimer(signal.ITIMER_REAL, self.timeout)

    def stopTest(self, test: unittest.TestCase) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.deadline = None
        if self.current is None:
            # Python 3.12.0 and 3.12.1 end each test of a class skipped by a decorator
            # without starting it (addSkip, then stopTest): name it from the test.
            self.current = self.test_id(test)
            self.started = time.monotonic()
        record = {
            "id": self.current,
            "outcome": self.outcome,
            "message": self.message,
            "seconds": round(time.monotonic() - self.started, 3),
        }
        if self.fresh_pythons:
            record["fresh_pythons"] = list(self.fresh_pythons)
        self._write(record)
        self.done.add(self.current)
        self.current = None
        # (What a test ended without a start, above, begins with.)
        self.outcome, self.message = "pass", ""
        super().stopTest(test)

    def addSuccess(self, test):
        pass

    def addFailure(self, test, err):
        self._set("fail", _summary(err))

    def addError(self, test, err):
        if isinstance(test, unittest.TestCase):
            self._set("error", _summary(err))
            return
        # A class or module fixture failed (unittest's _ErrorHolder): its tests
        # did not run; each gets that error, or the skip.
        description = str(test)
        outcome = "skip" if issubclass(err[0], unittest.SkipTest) else "error"
        message = f"{description}: {_summary(err)}"
        for class_name, ids in self.ids_by_class.items():
            if f".{class_name})" in description or "Module" in description:
                for one in ids:
                    if one not in self.done:
                        self._write({"id": one, "outcome": outcome, "message": message})
                        self.done.add(one)

    def addSkip(self, test, reason):
        self._set("skip", str(reason)[:MESSAGE_CHARS])

    def addExpectedFailure(self, test, err):
        pass  # the suite marks it as a known failure: counts as a pass

    def addUnexpectedSuccess(self, test):
        pass

    def addSubTest(self, test, subtest, err):
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            if issubclass(err[0], unittest.SkipTest):
                return
            self._set(kind, f"{subtest._subDescription()}: {_summary(err)}")


#: Seconds between two TestTimeouts of one test: a test whose subtests swallow the
#: first one (``subTest`` records any exception and goes on to the next subtest)
#: gets another while it still runs, instead of hanging until the watchdog.
REPEAT_ALARM = 1.0


def _on_alarm(signum, frame):
    signal.setitimer(signal.ITIMER_REAL, REPEAT_ALARM)  # (stopTest disarms it)
    raise TestTimeout("test ran past its timeout")


def _watchdog(recorder: _Recorder) -> None:
    while True:
        time.sleep(1.0)
        deadline = recorder.deadline
        if deadline is not None and time.monotonic() > deadline + GRACE:
            sys.stderr.write(f"\n*** {recorder.current} hung; stacks:\n")
            faulthandler.dump_traceback(all_threads=True)
            sys.stderr.write(_describe_descendants(os.getpid()))
            sys.stderr.flush()
            os._exit(HUNG_EXIT)


def _describe_descendants(root: int) -> str:
    """One line per live descendant of ``root``: pid, state, where it waits, command.

    Which child a hung test waits for, and whether it runs, sleeps in the kernel
    or is a zombie, from ``/proc`` (Linux; elsewhere an empty report).
    """
    parents: dict[int, int] = {}
    states: dict[int, str] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
                states[int(entry)] = fields[0]
            except (OSError, IndexError, ValueError):
                pass
    wanted = {root}
    while True:  # (pids wrap: a child's pid may be below its parent's)
        more = {pid for pid, parent in parents.items() if parent in wanted} - wanted
        if not more:
            break
        wanted |= more
    lines = []
    for pid in sorted(wanted - {root}):
        try:
            with open(f"/proc/{pid}/wchan") as wchan:
                channel = wchan.read() or "-"
            with open(f"/proc/{pid}/syscall") as syscall:
                call = syscall.read().split(" ", 1)[0].strip()  # number, "running"
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        lines.append(
            f"  pid {pid} (parent {parents[pid]}) {states[pid]} in {channel} (syscall {call}): "
            f"{command[:160]}\n"
        )
    if not lines:
        return "*** no live descendant processes\n"
    return "*** live descendant processes:\n" + "".join(lines)


def _watch_fresh_pythons(seen: list) -> None:
    """Record the tests that start a new interpreter without the proctor aliasing.

    Such an interpreter (``python -I``/``-E``, or without the harness's environment)
    imports the stdlib's multiprocessing, so what it checks says nothing about proctor.
    """
    original = subprocess.Popen.__init__

    def __init__(self, args, *a, **kw):
        argv = [args] if isinstance(args, (str, bytes)) else list(args)
        if argv and os.path.basename(str(argv[0])).startswith("python"):
            env = kw.get("env")
            env = os.environ if env is None else env
            flags = {"-I", "-E"} & {str(a) for a in argv}
            if flags or env.get("PROCTOR_COMPAT_TARGET") != os.environ.get("PROCTOR_COMPAT_TARGET"):
                seen.append(" ".join(str(a) for a in argv)[:200])
        original(self, args, *a, **kw)

    subprocess.Popen.__init__ = __init__


def _done_ids(path: str) -> set[str]:
    done = set()
    try:
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if "id" in record:
                    done.add(record["id"])
    except FileNotFoundError:
        pass
    return done


def _listed(path: str) -> dict[str, str]:
    """``<Class.test> <reason>`` lines of ``path`` (``#`` starts a comment)."""
    listed = {}
    with open(path) as lines:
        for raw in lines:
            test_id, _, reason = raw.split("#", 1)[0].strip().partition(" ")
            if test_id:
                listed[test_id] = reason.strip()
    return listed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results")
    parser.add_argument("--suite", choices=sorted(SUITES), default="multiprocessing")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--only", nargs="*", default=None, help="test ids (Class.method)")
    parser.add_argument(
        "--skip-listed",
        metavar="FILE",
        help="do not run the tests listed in FILE (lines '<Class.test> <reason>'), record "
        "them as 'excluded': the proctor run's tests of stdlib internals",
    )
    args = parser.parse_args(argv)
    listed = _listed(args.skip_listed) if args.skip_listed else {}

    faulthandler.enable()
    fresh_pythons: list[str] = []
    _watch_fresh_pythons(fresh_pythons)
    suite = importlib.import_module(SUITES[args.suite])
    test_id = getattr(suite, "test_id", _test_id)

    done = _done_ids(args.results)
    only = set(args.only) if args.only else None
    out = open(args.results, "a")  # noqa: SIM115  (open for the whole run)
    recorder = _Recorder(out, args.timeout, fresh_pythons, test_id)
    recorder.done = done
    loader = unittest.TestLoader()
    top = unittest.TestSuite()
    for cls in suite.TEST_CLASSES:
        selected = []
        for test in loader.loadTestsFromTestCase(cls):
            one = test_id(test)
            if one in done or (only is not None and one not in only):
                continue
            reason = suite.deferred_reason(one)
            if reason is not None:
                recorder._write({"id": one, "outcome": "deferred", "message": reason})
                done.add(one)
                continue
            if one in listed:
                recorder._write({"id": one, "outcome": "excluded", "message": listed[one]})
                done.add(one)
                continue
            selected.append(test)
        if selected:
            recorder.ids_by_class[cls.__name__] = [test_id(t) for t in selected]
            top.addTest(unittest.TestSuite(selected))
    signal.signal(signal.SIGALRM, _on_alarm)
    # Some tests send this process SIGINT and expect KeyboardInterrupt
    # (Condition.test_wait_result, SharedMemoryServer_ignores_sigint). A shell starts
    # background jobs with SIGINT ignored, and Python leaves an inherited SIG_IGN
    # alone: those tests then failed for the stdlib too (one waited out its timeout,
    # 30 s in every run), and said nothing about proctor.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=_watchdog, args=(recorder,), daemon=True).start()
    top.run(recorder)
    out.close()
    # The interpreter's exit finishes the work of pools and executors a test left
    # open (proctor's, as the stdlib's): a test that left a task blocked would hang
    # it for ever. The watchdog ends such an exit after one test's timeout.
    recorder.current = "the interpreter's exit (a pool or executor left with work)"
    recorder.deadline = time.monotonic() + args.timeout
    return 0


if __name__ == "__main__":
    sys.exit(main())
