"""Put every process pool through every fault, and record what happens.

    python benchmarks/fault_matrix.py [--json FILE] [--only POOL ...] [--fault FAULT ...]
                                      [--start-method {fork,spawn,forkserver}]

The pools: ``multiprocessing.Pool``, ``concurrent.futures.ProcessPoolExecutor``,
loky's ``get_reusable_executor()``, pebble's ``ProcessPool``, ``proctor.Pool`` and
``proctor.ProcessPoolExecutor`` (the ones not installed are skipped). Each (pool,
fault) case runs in a fresh interpreter of its own session, with deadlines inside
(a result not in within ``COLLECT_TIMEOUT`` is recorded as "no result") and a hard
timeout outside (``CASE_TIMEOUT``: the case is recorded as hung and its process group
killed). docs/pool-faults.md is written from its output.

A case, seen from the parent (the case process)::

    warm-up task -> the faulty task + FILLERS ordinary ones (2 workers, so some
    are running and some pending when the fault strikes) -> the outcome of each ->
    one more task ("is the pool usable afterwards?") -> the pool's exit, as a
    ``with`` block would do it (terminate() for Pool, shutdown(wait=True) for the
    executors, close(); join() for pebble)

"parent SIGKILLed" and "shutdown(wait=False), then the program exits" watch a
third interpreter (``--program``) from the case process instead. Install loky and
pebble next to proctor to compare them (``pip install loky pebble``); the whole run
takes about ten minutes, most of it waiting for what hangs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import itertools
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# Workers per pool: two, so that one can fail while the other runs a task.
WORKERS = 2
# Ordinary tasks submitted after the faulty one; each sleeps FILLER_SECONDS.
FILLERS = 5
FILLER_SECONDS = 0.3
# How long the faulty task runs before its fault strikes (the fillers start meanwhile).
FAULT_DELAY = 0.3
# A batch of results not in by then is recorded as "no result" (the pool would hang).
COLLECT_TIMEOUT = 10.0
# Each later step (one more task, the pool's exit) gets this long.
STEP_TIMEOUT = 10.0
# The per-task timeout given to the pools that offer one, in the "runs forever" case.
TASK_TIMEOUT = 1.0
# The endless generator stops itself after this many items, to bound the memory of
# the pools that read it eagerly.
ENDLESS_LIMIT = 50_000
# Outer bound on one case, in its own interpreter.
CASE_TIMEOUT = 90.0
# After the parent is SIGKILLed, how long its children get to notice and exit.
# (Long enough for loky's idle workers, which exit after 10 s idle by default.)
ORPHAN_GRACE = 60.0
# Tasks submitted before shutdown(wait=False) and the program's exit.
LEAVE_TASKS = 6

RESULT_TAG = "FAULT-MATRIX-RESULT "


# -- tasks (module level, so that every start method finds them) -------------------


def identity(x: Any) -> Any:
    return x


def filler(i: int) -> int:
    time.sleep(FILLER_SECONDS)
    return i


def kill_self() -> None:
    time.sleep(FAULT_DELAY)
    os.kill(os.getpid(), signal.SIGKILL)


def exit_hard() -> None:
    time.sleep(FAULT_DELAY)
    os._exit(3)


def segfault() -> None:
    time.sleep(FAULT_DELAY)
    ctypes.string_at(0)


def run_forever() -> None:
    time.sleep(FAULT_DELAY)
    while True:
        time.sleep(3600)


def return_lock() -> Any:
    time.sleep(FAULT_DELAY)
    return threading.Lock()


def raise_system_exit() -> None:
    time.sleep(FAULT_DELAY)
    raise SystemExit(3)


def raise_keyboard_interrupt() -> None:
    time.sleep(FAULT_DELAY)
    raise KeyboardInterrupt


def _rebuild_outside_parent() -> str:
    # The case process sets FAULT_MATRIX_PARENT before it makes a pool: only there
    # does rebuilding fail, as when a class exists in the worker but not the parent.
    if str(os.getpid()) == os.environ.get("FAULT_MATRIX_PARENT"):
        raise ImportError("this class cannot be rebuilt in the parent")
    return "rebuilt"


class Unrebuildable:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_outside_parent, ())


def return_unrebuildable() -> Unrebuildable:
    time.sleep(FAULT_DELAY)
    return Unrebuildable()


class TwoArgumentError(Exception):
    """Pickles, but unpickling calls TwoArgumentError(message), which fails."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def raise_unrebuildable_exception() -> None:
    time.sleep(FAULT_DELAY)
    raise TwoArgumentError("two arguments", 2)


def failing_initializer() -> None:
    raise ValueError("initializer failed")


def exiting_initializer() -> None:
    os._exit(4)


def sleep_with_marker(marker: str, seconds: float) -> int:
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def log_a_record() -> int:
    logging.getLogger("fault_matrix.worker").warning("record from worker %d", os.getpid())
    return os.getpid()


def touch_after(directory: str, i: int) -> None:
    time.sleep(FILLER_SECONDS)
    with open(os.path.join(directory, str(i)), "w"):
        pass


# -- one adapter per pool: the same verbs over each API ------------------------------


class Adapter:
    """Make a pool, submit to it, wait, cancel, map lazily, exit it -- one API each."""

    name = ""
    timeout_how: str | None = None  # how the pool bounds a task's run time, if it can

    def make(self, initializer: Callable[[], None] | None = None, timeout: bool = False) -> Any:
        raise NotImplementedError

    def submit(self, pool: Any, fn: Callable[..., Any], *args: Any, timeout: bool = False) -> Any:
        raise NotImplementedError

    def done(self, handle: Any, timeout: float) -> bool:
        return bool(concurrent.futures.wait([handle], timeout).done)

    def get(self, handle: Any) -> Any:
        return handle.result(0)

    def cancel(self, handle: Any) -> Any:
        return handle.cancel()

    def lazy_map(self, pool: Any, fn: Callable[..., Any], items: Iterable[Any]) -> Iterator[Any]:
        return iter(pool.map(fn, items))

    def exit(self, pool: Any) -> None:
        pool.shutdown(wait=True)

    def leave(self, pool: Any) -> None:
        pool.shutdown(wait=False)


class StdlibPool(Adapter):
    name = "mp.Pool"

    def make(self, initializer=None, timeout=False):
        return multiprocessing.Pool(WORKERS, initializer=initializer)

    def submit(self, pool, fn, *args, timeout=False):
        return pool.apply_async(fn, args)

    def done(self, handle, timeout):
        handle.wait(timeout)
        return handle.ready()

    def get(self, handle):
        return handle.get(0)

    def cancel(self, handle):
        raise AttributeError("AsyncResult has no cancel()")

    def lazy_map(self, pool, fn, items):
        return pool.imap(fn, items)

    def exit(self, pool):
        pool.terminate()

    def leave(self, pool):
        pool.close()


class StdlibExecutor(Adapter):
    name = "mp.PPE"

    def make(self, initializer=None, timeout=False):
        return concurrent.futures.ProcessPoolExecutor(WORKERS, initializer=initializer)

    def submit(self, pool, fn, *args, timeout=False):
        return pool.submit(fn, *args)


class Loky(Adapter):
    name = "loky"

    def make(self, initializer=None, timeout=False):
        import loky

        return loky.get_reusable_executor(WORKERS, initializer=initializer)

    def submit(self, pool, fn, *args, timeout=False):
        return pool.submit(fn, *args)


class Pebble(Adapter):
    name = "pebble"
    timeout_how = "schedule(timeout=)"

    def make(self, initializer=None, timeout=False):
        import pebble

        return pebble.ProcessPool(WORKERS, initializer=initializer)

    def submit(self, pool, fn, *args, timeout=False):
        return pool.schedule(fn, args, timeout=TASK_TIMEOUT if timeout else None)

    def lazy_map(self, pool, fn, items):
        return iter(pool.map(fn, items).result())

    def exit(self, pool):
        pool.close()
        pool.join()

    def leave(self, pool):
        pool.close()


class ProctorPool(StdlibPool):
    name = "proctor.Pool"
    timeout_how = "apply_async(timeout=)"

    def make(self, initializer=None, timeout=False):
        import proctor

        return proctor.Pool(WORKERS, initializer=initializer)

    def submit(self, pool, fn, *args, timeout=False):
        return pool.apply_async(fn, args, timeout=TASK_TIMEOUT if timeout else None)

    def cancel(self, handle):
        return handle.cancel()


class ProctorExecutor(Adapter):
    name = "proctor.PPE"
    timeout_how = "ProcessPoolExecutor(task_timeout=)"

    def make(self, initializer=None, timeout=False):
        import proctor

        return proctor.ProcessPoolExecutor(
            WORKERS, initializer=initializer, task_timeout=TASK_TIMEOUT if timeout else None
        )

    def submit(self, pool, fn, *args, timeout=False):
        return pool.submit(fn, *args)

    def lazy_map(self, pool, fn, items):
        return pool.map(fn, items, buffersize=2 * WORKERS)


ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (
        StdlibPool(),
        StdlibExecutor(),
        Loky(),
        Pebble(),
        ProctorPool(),
        ProctorExecutor(),
    )
}
PACKAGES = {"loky": "loky", "pebble": "pebble", "proctor.Pool": "proctor", "proctor.PPE": "proctor"}


# -- helpers for the case process ----------------------------------------------------


def describe(exc: BaseException) -> str:
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    text = str(exc).strip().splitlines()
    return f"{name}: {text[0][:160]}" if text else name


def within(seconds: float, fn: Callable[[], Any]) -> tuple[str, Any]:
    """Run fn in a daemon thread: ("ok", value), ("raised", description) or ("hung", None)."""
    box: list[tuple[str, Any]] = []

    def run() -> None:
        try:
            box.append(("ok", fn()))
        except BaseException as exc:  # recording every outcome is the point
            box.append(("raised", describe(exc)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return box[0] if box else ("hung", None)


class Case:
    """The record of one case, and the steps every case shares."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.record: dict[str, Any] = {"pool": adapter.name}
        self.hung = False

    def note(self, key: str, status: str, value: Any = None) -> Any:
        if status == "hung":
            self.hung = True
        self.record[key] = value if status == "ok" else f"{status}: {value}" if value else status
        return value if status == "ok" else None

    def make(self, **kwargs: Any) -> Any:
        status, value = within(STEP_TIMEOUT, lambda: self.adapter.make(**kwargs))
        if status == "ok":
            return value
        self.note("making the pool", status, value)
        return None

    def submit(self, pool: Any, fn: Callable[..., Any], *args: Any, timeout: bool = False):
        status, value = within(
            STEP_TIMEOUT, lambda: self.adapter.submit(pool, fn, *args, timeout=timeout)
        )
        if status == "ok":
            return value
        if status == "hung":
            self.hung = True
        return f"submit {status}: {value}" if value else f"submit {status}"

    def outcomes(self, handles: list[Any], deadline: float) -> list[str]:
        found = []
        for handle in handles:
            if isinstance(handle, str):  # submit() itself failed
                found.append(handle)
                continue
            if not self.adapter.done(handle, max(0.0, deadline - time.monotonic())):
                self.hung = True
                found.append("no result")
                continue
            status, value = within(STEP_TIMEOUT, lambda h=handle: self.adapter.get(h))
            found.append(repr(value) if status == "ok" else str(value))
        return found

    def batch(
        self, pool: Any, fault: Callable[..., Any], *args: Any, timeout: bool = False
    ) -> None:
        """The faulty task, then FILLERS ordinary ones; record each outcome."""
        handles = [self.submit(pool, fault, *args, timeout=timeout)]
        handles += [self.submit(pool, filler, i) for i in range(1, FILLERS + 1)]
        started = time.monotonic()
        found = self.outcomes(handles, started + COLLECT_TIMEOUT)
        self.record["faulty task"] = found[0]
        self.record["other tasks"] = summarize(found[1:], [repr(i) for i in range(1, FILLERS + 1)])

    def after(self, pool: Any) -> None:
        handle = self.submit(pool, identity, 99)
        self.record["next task"] = self.outcomes([handle], time.monotonic() + STEP_TIMEOUT)[0]

    def exit(self, pool: Any) -> None:
        started = time.monotonic()
        status, value = within(STEP_TIMEOUT, lambda: self.adapter.exit(pool))
        if status == "ok":
            value = f"{time.monotonic() - started:.1f} s"
        self.note("exit", "ok" if status == "ok" else status, value)

    def warm_up(self, pool: Any) -> bool:
        handle = self.submit(pool, identity, 0)
        first = self.outcomes([handle], time.monotonic() + STEP_TIMEOUT)[0]
        if first != "0":
            self.record["warm-up"] = first
        return first == "0"


def summarize(found: list[str], expected: list[str]) -> str:
    if found == expected:
        return "all completed"
    distinct = sorted(set(found))
    if len(distinct) == 1:
        return f"all {len(found)}: {distinct[0]}"
    return "; ".join(f"{found.count(d)}x {d}" for d in distinct)


# -- the faults ----------------------------------------------------------------------


def crash_case(fault: Callable[[], Any], timeout: bool = False) -> Callable[[Adapter], Case]:
    def run(adapter: Adapter) -> Case:
        case = Case(adapter)
        pool = case.make(timeout=timeout)
        if pool is not None and case.warm_up(pool):
            if timeout:
                case.record["timeout offered"] = adapter.timeout_how or "none"
            case.batch(pool, fault, timeout=timeout)
            case.after(pool)
            case.exit(pool)
        return case

    return run


def unpicklable_argument(adapter: Adapter) -> Case:
    case = Case(adapter)
    pool = case.make()
    if pool is not None and case.warm_up(pool):
        case.batch(pool, identity, threading.Lock())
        case.after(pool)
        case.exit(pool)
    return case


def initializer_case(initializer: Callable[[], None]) -> Callable[[Adapter], Case]:
    def run(adapter: Adapter) -> Case:
        case = Case(adapter)
        pool = case.make(initializer=initializer)
        if pool is not None:
            handles = [case.submit(pool, identity, i) for i in range(3)]
            found = case.outcomes(handles, time.monotonic() + COLLECT_TIMEOUT)
            case.record["tasks"] = summarize(found, ["0", "1", "2"])
            case.after(pool)
            case.exit(pool)
        return case

    return run


def endless_input(adapter: Adapter) -> Case:
    case = Case(adapter)
    pool = case.make()
    if pool is None or not case.warm_up(pool):
        return case
    read = [0]

    def endless() -> Iterator[int]:
        for i in itertools.count():
            if i >= ENDLESS_LIMIT:
                raise RuntimeError(f"the test's generator stopped at {ENDLESS_LIMIT} items")
            read[0] = i + 1
            yield i

    def first_five() -> list[Any]:
        iterator = adapter.lazy_map(pool, identity, endless())
        return list(itertools.islice(iterator, 5))

    status, value = within(COLLECT_TIMEOUT, first_five)
    case.note("first 5 results", status, value)
    case.record["items read by then"] = read[0]
    time.sleep(2.0)  # does the pool go on reading the input, nobody asking?
    case.record["items read 2 s later"] = read[0]
    case.exit(pool)
    return case


def cancel_running(adapter: Adapter) -> Case:
    case = Case(adapter)
    pool = case.make()
    if pool is None or not case.warm_up(pool):
        return case
    with tempfile.TemporaryDirectory() as tmp:
        marker = os.path.join(tmp, "running")
        handle = case.submit(pool, sleep_with_marker, marker, 5.0)
        pid = 0
        deadline = time.monotonic() + STEP_TIMEOUT
        while not pid and time.monotonic() < deadline:
            time.sleep(0.02)
            if os.path.exists(marker):
                with open(marker) as f:
                    pid = int(f.read() or 0)
    status, value = within(STEP_TIMEOUT, lambda: adapter.cancel(handle))
    case.record["cancel() returns"] = repr(value) if status == "ok" else value
    found = case.outcomes([handle], time.monotonic() + 2.0)[0]
    case.hung = False  # a task still running after cancel() is an outcome, not a hang
    case.record["outcome within 2 s"] = "still running" if found == "no result" else found
    deadline = time.monotonic() + 2.0  # a pool may kill the worker just after cancel()
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    case.record["task's worker"] = "alive (task goes on)" if alive(pid) else "killed"
    case.after(pool)
    case.exit(pool)
    return case


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def worker_log(adapter: Adapter) -> Case:
    handler = ListHandler()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    case = Case(adapter)
    pool = case.make()
    if pool is None or not case.warm_up(pool):
        return case
    handle = case.submit(pool, log_a_record)
    case.record["task"] = case.outcomes([handle], time.monotonic() + STEP_TIMEOUT)[0]
    deadline = time.monotonic() + 3.0
    while not handler.records and time.monotonic() < deadline:
        time.sleep(0.05)
    case.record["parent's handler got"] = [r.getMessage() for r in handler.records] or "nothing"
    case.exit(pool)
    return case


def parent_killed(adapter: Adapter) -> Case:
    """Start a parent that runs a pool; SIGKILL it; see whether its children exit."""
    case = Case(adapter)
    with tempfile.TemporaryDirectory() as tmp:
        parent = subprocess.Popen(
            [sys.executable, __file__, "--program", "parent", adapter.name, tmp],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert parent.stdout is not None
        said = parent.stdout.readline().split()  # "ready PID": PID runs a long task
        if not said or said[0] != "ready":
            parent.kill()
            parent.wait()
            case.record["parent"] = f"did not get ready: {said}"
            return case
        busy = int(said[1])
        children = descendants(parent.pid)
        names = {pid: role(cmdline(pid)) for pid in children}
        parent.kill()
        parent.wait()
    started = time.monotonic()
    exited: dict[int, float] = {}
    while time.monotonic() - started < ORPHAN_GRACE and len(exited) < len(children):
        for pid in children:
            if pid not in exited and not alive(pid):
                exited[pid] = time.monotonic() - started
        time.sleep(0.1)

    def fate(pids: list[int]) -> str:
        return "; ".join(
            f"{names[p]} exited after {exited[p]:.1f} s"
            if p in exited
            else f"{names[p]} alive after {ORPHAN_GRACE:.0f} s"
            for p in pids
        )

    case.record["busy worker"] = fate([busy])
    case.record["its other children"] = fate([p for p in children if p != busy])
    for pid in children:
        if pid not in exited:
            os.kill(pid, signal.SIGKILL)
    return case


def exit_after_shutdown(adapter: Adapter) -> Case:
    """A program submits tasks, shuts its pool down without waiting, and exits."""
    case = Case(adapter)
    with tempfile.TemporaryDirectory() as tmp:
        program = subprocess.Popen(
            [sys.executable, __file__, "--program", "leave", adapter.name, tmp],
            stdout=subprocess.DEVNULL,
        )
        started = time.monotonic()
        try:
            program.wait(COLLECT_TIMEOUT)
        except subprocess.TimeoutExpired:
            case.record["program"] = f"did not exit within {COLLECT_TIMEOUT:.0f} s"
        else:
            took = time.monotonic() - started
            case.record["program"] = f"exit code {program.returncode} after {took:.1f} s"
        time.sleep(LEAVE_TASKS * FILLER_SECONDS)  # tasks orphaned by the exit may still finish
        ran = len(os.listdir(tmp))
        case.record["tasks run"] = f"{ran} of {LEAVE_TASKS}"
    return case


def program(kind: str, adapter: Adapter, directory: str) -> None:
    """The programs that parent_killed and exit_after_shutdown watch from outside."""
    pool = adapter.make()
    if kind == "parent":
        marker = os.path.join(directory, "busy")
        adapter.submit(pool, sleep_with_marker, marker, 600.0)
        while not os.path.exists(marker) or not os.path.getsize(marker):
            time.sleep(0.02)
        with open(marker) as f:
            print("ready", f.read(), flush=True)
        time.sleep(600)
    else:
        for i in range(LEAVE_TASKS):
            adapter.submit(pool, touch_after, directory, i)
        adapter.leave(pool)


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except FileNotFoundError:
                continue
            found += kids
            todo += kids
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def role(command: str) -> str:
    for helper in ("resource_tracker", "forkserver", "semaphore_tracker"):
        if helper in command:
            return helper.replace("_", " ")
    return "worker"


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:100]
    except FileNotFoundError:
        return "?"


FAULTS: dict[str, Callable[[Adapter], Case]] = {
    "worker SIGKILLed mid-task": crash_case(kill_self),
    "task calls os._exit()": crash_case(exit_hard),
    "task segfaults": crash_case(segfault),
    "task runs forever": crash_case(run_forever, timeout=True),
    "unpicklable argument": unpicklable_argument,
    "unpicklable result": crash_case(return_lock),
    "result cannot be rebuilt in the parent": crash_case(return_unrebuildable),
    "exception cannot be rebuilt in the parent": crash_case(raise_unrebuildable_exception),
    "task raises SystemExit": crash_case(raise_system_exit),
    "task raises KeyboardInterrupt": crash_case(raise_keyboard_interrupt),
    "endless generator to imap/map": endless_input,
    "initializer raises": initializer_case(failing_initializer),
    "initializer calls os._exit()": initializer_case(exiting_initializer),
    "cancel a running task": cancel_running,
    "worker logs a record": worker_log,
    "parent SIGKILLed": parent_killed,
    "shutdown(wait=False), then the program exits": exit_after_shutdown,
}


# -- the orchestrator ----------------------------------------------------------------


def set_start_method() -> None:
    """Apply --start-method (passed down in the environment) to multiprocessing and proctor."""
    method = os.environ.get("FAULT_MATRIX_START_METHOD")
    if method:
        multiprocessing.set_start_method(method)  # pebble's pools use this context
        if "proctor" in versions():
            import proctor

            proctor.set_start_method(method)


def run_case(pool: str, fault: str) -> None:
    os.environ["FAULT_MATRIX_PARENT"] = str(os.getpid())
    set_start_method()
    case = FAULTS[fault](ADAPTERS[pool])
    print(RESULT_TAG + json.dumps(case.record), flush=True)
    if case.hung:
        os._exit(0)  # a hung pool may hang the interpreter's exit too; that was recorded


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": sys.version.split()[0]}
    for package in ("loky", "pebble", "proctor"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the records to this file")
    parser.add_argument("--only", nargs="+", choices=list(ADAPTERS), help="these pools only")
    parser.add_argument("--fault", nargs="+", choices=list(FAULTS), help="these faults only")
    parser.add_argument(
        "--start-method",
        choices=["fork", "spawn", "forkserver"],
        help="for multiprocessing, pebble and proctor (loky always uses its own)",
    )
    parser.add_argument("--case", nargs=2, metavar=("POOL", "FAULT"), help=argparse.SUPPRESS)
    parser.add_argument("--program", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        run_case(*args.case)
        return 0
    if args.program:
        kind, pool, directory = args.program
        set_start_method()
        program(kind, ADAPTERS[pool], directory)
        return 0
    found = versions()
    if args.start_method:
        os.environ["FAULT_MATRIX_START_METHOD"] = args.start_method
    pools = [p for p in args.only or ADAPTERS if p not in PACKAGES or PACKAGES[p] in found]
    method = args.start_method or multiprocessing.get_start_method()
    print(f"versions: {found}; start method: {method}")
    records = []
    for fault in args.fault or FAULTS:
        for pool in pools:
            record = run_isolated(pool, fault)
            records.append(record)
            shown = {k: v for k, v in record.items() if k not in ("pool", "fault")}
            print(f"{fault} | {pool} | {json.dumps(shown)}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"versions": found, "start method": method, "records": records}, f, indent=1)
    return 0


def run_isolated(pool: str, fault: str) -> dict[str, Any]:
    """Run one case in its own interpreter and session; kill what it leaves behind."""
    started = time.monotonic()
    record: dict[str, Any] = {"pool": pool, "fault": fault}
    # Files, not pipes: workers left behind would hold a pipe open after the case exits.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(
            [sys.executable, __file__, "--case", pool, fault],
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        try:
            child.wait(timeout=CASE_TIMEOUT)
        except subprocess.TimeoutExpired:
            record["case"] = f"hung: killed after {CASE_TIMEOUT:.0f} s"
        try:
            os.killpg(child.pid, signal.SIGKILL)  # the case, if hung, and what it left
        except ProcessLookupError:
            pass
        child.wait()
        out.seek(0)
        err.seek(0)
        output, errors = out.read(), err.read()
    for line in output.splitlines():
        if line.startswith(RESULT_TAG):
            record.update(json.loads(line[len(RESULT_TAG) :]))
    if child.returncode != 0 and "case" not in record:
        record["case"] = f"exit code {child.returncode}"
    record["seconds"] = round(time.monotonic() - started, 1)
    if errors.strip():
        record["stderr"] = errors.strip().splitlines()[-1][:200]
    return record


if __name__ == "__main__":
    sys.exit(main())
