"""Run CPython's multiprocessing (or concurrent.futures) tests against proctor and the stdlib.

The suite is the interpreter's own ``test._test_multiprocessing`` (the ``test``
package), loaded at run time and never copied here. For each start method, one
worker process runs it against the stdlib and another against proctor (with
``multiprocessing`` made to mean proctor, see ``mp_alias``); both at once.
The second suite, ``futures``, is ``test.test_concurrent_futures``' process-pool
groups with proctor's ``ProcessPoolExecutor`` (see ``futures_suite``), run the same
way; its results files start with ``futures-``::

    harness (this module)                      worker.py, one per (target, method)
    ─────────────────────                      ───────────────────────────────────
    run(target, method) ── env, PYTHONPATH ──▶ cpython_suite: alias, install classes
      RESULTS.jsonl ◀──── one line per test ── unittest, per-test timeout (SIGALRM)
      worker hung or died? record the test       watchdog: dump stacks, exit 75
      in progress, start a new worker that
      skips what is done
    compare(stdlib, proctor, excluded) ──▶ tests stdlib passes and proctor does not

The stdlib's outcome matters only for the tests proctor does not pass (``compare``
reports a test the stdlib passes and proctor does not), so the run can also be
``stdlib="needed"``: proctor's first, then the stdlib's on just those tests
(``stdlib_needed``; the whole suite where proctor's run ended early). The
differences are the same for about half the work; the stdlib's counts and times
are then not a reference for the whole suite. The tests (``test_cpython_suite.py``)
run that way, the command line runs both in full unless asked.

Command line (writes ``<target>-<method>.json`` files and prints the differences)::

    python tests/compat/harness.py --out /tmp/compat [--methods fork spawn] [--timeout 30]
                                   [--suite futures] [--stdlib needed]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXCLUDED_FILE = HERE / "excluded.txt"
TARGETS = ("stdlib", "proctor")
SUITE_MODULE = "test._test_multiprocessing"
METHODS = ("fork", "spawn", "forkserver")
#: The suites: each one's module in CPython's ``test`` package, and its exclusions.
SUITES = {
    "multiprocessing": (SUITE_MODULE, EXCLUDED_FILE),
    "futures": ("test.test_concurrent_futures", HERE / "futures_excluded.txt"),
}

#: Seconds one test may run before it is interrupted and reported as an error.
#: The stdlib passes every test here in under 6 s on a 2-core machine.
TEST_TIMEOUT = 30.0
#: Seconds a whole run (one target, one method) may take, restarts included.
RUN_TIMEOUT = 900.0
#: Exit status of a worker that gave up on a hung test (worker.HUNG_EXIT).
HUNG_EXIT = 75
#: Worker restarts allowed in one run (each follows a hung or crashed test).
MAX_RESTARTS = 10

#: Outcomes of one test. "unredirected": it passed, but what it checked ran in a
#: fresh interpreter that imports the stdlib's multiprocessing (``python -I``), so
#: it says nothing about proctor. "deferred": its group is not run yet.
OUTCOMES = ("pass", "fail", "error", "skip", "deferred", "excluded", "unredirected")

SUITE_MISSING = """\
CPython's test suite (module {module}, part of the interpreter's
`test` package) is not installed for {python}: {error}.
Some distributions ship it separately: on Debian and Ubuntu install
libpython{version}-testsuite (apt-get install libpython{version}-testsuite); on
Fedora, python3-test. Interpreters built by pyenv or installed from python.org
normally include it (some builds leave parts out). Set
PROCTOR_REQUIRE_CPYTHON_SUITE=1 to make its absence a failure."""


def suite_missing(python: str = sys.executable, module: str = SUITE_MODULE) -> str | None:
    """Return why ``python`` cannot run the suite (with how to fix it), or ``None``.

    Args:
        python: the interpreter to probe.
        module: the suite's module (``SUITES``; another name to test this message).
    """
    probe = subprocess.run(
        [python, "-c", f"import test.support, {module}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
    )
    if probe.returncode == 0:
        return None
    error = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    return SUITE_MISSING.format(module=module, python=python, error=error, version=version)


@dataclass
class Run:
    """The outcome of one (target, method) run."""

    target: str
    method: str
    python: str
    results: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    restarts: int = 0
    log: str = ""
    #: Why the run stopped early (the worker failed outside any test), if it did.
    error: str | None = None
    suite: str = "multiprocessing"
    #: Every test has its result (False: the run ended early, by its timeout, after
    #: MAX_RESTARTS, or with ``error``).
    complete: bool = False
    #: The tests this run was limited to because only their outcome was needed
    #: (``stdlib_needed``), or ``None`` for the whole suite.
    only_needed: list[str] | None = None

    @property
    def stem(self) -> str:
        """The name of its files: ``proctor-spawn``, ``futures-proctor-spawn``."""
        return stem(self.suite, self.target, self.method)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(OUTCOMES, 0)
        for record in self.results.values():
            counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
        return counts

    def to_json(self) -> dict:
        return {
            "suite": self.suite,
            "target": self.target,
            "method": self.method,
            "python": self.python,
            "seconds": round(self.seconds, 1),
            "restarts": self.restarts,
            "counts": self.counts(),
            "error": self.error,
            "only_needed": self.only_needed,
            "complete": self.complete,
            "log": self.log,
            "results": self.results,
        }

    @classmethod
    def from_json(cls, data: dict) -> Run:
        """The run ``to_json`` described (as the command line writes it)."""
        return cls(
            data["target"],
            data["method"],
            data["python"],
            results=data["results"],
            seconds=data["seconds"],
            restarts=data["restarts"],
            log=data["log"],
            error=data["error"],
            suite=data["suite"],
            complete=data["complete"],
            only_needed=data["only_needed"],
        )


def stem(suite: str, target: str, method: str) -> str:
    """The name of a run's files (results, worker output, working directory)."""
    prefix = "" if suite == "multiprocessing" else f"{suite}-"
    return f"{prefix}{target}-{method}"


def worker_env(target: str, method: str, suite: str = "multiprocessing") -> dict[str, str]:
    """The environment of a worker, inherited by every process it starts."""
    env = dict(os.environ)
    paths = [str(HERE / "_startup"), str(HERE)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PROCTOR_COMPAT_TARGET"] = target
    env["PROCTOR_COMPAT_METHOD"] = method
    env["PROCTOR_COMPAT_SUITE"] = suite
    # A child killed by a fault (SIGSEGV, SIGBUS, SIGABRT...) prints its Python
    # stacks into the worker's output instead of vanishing without a word: a test
    # that hangs waiting for such a child then says why.
    env["PYTHONFAULTHANDLER"] = "1"
    # The worker and its children must not join the caller's reaper or fork
    # server: each run is a tree of its own.
    env.pop("PROCTOR_REAPER_ADDRESS", None)
    return env


def _read_jsonl(path: Path) -> tuple[dict[str, dict], str | None]:
    """Results by id, and the id of a test that started but has no result."""
    results: dict[str, dict] = {}
    running = None
    if not path.exists():
        return results, None
    with path.open() as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed worker
            if "start" in record:
                running = record["start"]
            else:
                test_id = record.pop("id")
                results[test_id] = record
                if test_id == running:
                    running = None
    return results, running


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


#: The process groups of the workers running now (each leads its own): the command
#: line kills them when it is stopped (``_stop_on_sigterm``).
_running_groups: set[int] = set()
# Held from a worker's start to its record there, and by the SIGTERM handler: no
# worker starts unrecorded while the handler kills the recorded ones.
_groups_lock = threading.Lock()


def _kill_group(pgid: int) -> None:
    # The worker leads its own process group: whatever it left behind (a hung
    # child, a grandchild sleeping out a test) goes with it. proctor's reaper
    # runs in a session of its own and exits once its users are gone.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(
    target: str,
    method: str,
    workdir: Path,
    *,
    python: str = sys.executable,
    test_timeout: float = TEST_TIMEOUT,
    run_timeout: float = RUN_TIMEOUT,
    only: list[str] | None = None,
    suite: str = "multiprocessing",
) -> Run:
    """Run a suite for one target and start method; restart after a hung test.

    Args:
        target: ``"stdlib"`` or ``"proctor"``.
        method: ``"fork"``, ``"spawn"`` or ``"forkserver"``.
        workdir: where the results (``.jsonl``) and the worker's output (``.log``) go.
        python: the interpreter to run the suite with.
        test_timeout: seconds per test.
        run_timeout: seconds for the whole run; what has not run by then is
            reported as an error.
        only: run just these test ids (``Class.method``).
        suite: ``"multiprocessing"`` or ``"futures"`` (see ``SUITES``).
    """
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {tuple(SUITES)}, not {suite!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    name = stem(suite, target, method)
    results_path = workdir / f"{name}.jsonl"
    log_path = workdir / f"{name}.log"
    results_path.unlink(missing_ok=True)
    # The suite creates files in the working directory (sockets, scripts named
    # @test_*): one directory per run keeps them apart and out of the source tree.
    cwd = workdir / f"cwd-{name}"
    cwd.mkdir(exist_ok=True)
    outcome = Run(target, method, python, log=str(log_path), suite=suite)
    started = time.monotonic()
    deadline = started + run_timeout
    command = [python, str(HERE / "worker.py"), str(results_path), "--suite", suite]
    command += ["--timeout", str(test_timeout)]
    if only:
        command += ["--only", *only]
    if target == "proctor":
        # Tests of stdlib internals cannot pass against proctor and are left out of
        # the comparison: not running them saves minutes (several wait out their
        # timeout). The stdlib run still runs them.
        command += ["--skip-listed", str(SUITES[suite][1])]
    with log_path.open("w") as log:
        while True:
            with _groups_lock:
                worker = subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=worker_env(target, method, suite),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                _running_groups.add(worker.pid)
            try:
                returncode = worker.wait(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                _kill_group(worker.pid)
                worker.wait()
                returncode = None
            _kill_group(worker.pid)
            _running_groups.discard(worker.pid)
            _, running = _read_jsonl(results_path)
            if returncode == 0 and running is None:
                outcome.complete = True
                break
            if running is not None:
                if returncode is None:
                    why = f"still running when the run's {run_timeout:.0f} s were up"
                elif returncode == HUNG_EXIT:
                    why = (
                        f"hung: its {test_timeout:.0f} s timeout did not interrupt it "
                        "(stacks dumped in the worker output)"
                    )
                else:
                    why = f"the worker process died (exit status {returncode}) during it"
                with results_path.open("a") as f:
                    f.write(json.dumps({"id": running, "outcome": "error", "message": why}) + "\n")
            if returncode is None or outcome.restarts >= MAX_RESTARTS:
                break
            if running is None:
                # Died outside any test (at import, say): nothing to skip, no loop.
                outcome.error = (
                    f"the worker exited with status {returncode} outside any test; "
                    f"its output ends with:\n{_tail(log_path)}"
                )
                break
            outcome.restarts += 1
            log.write(f"\n*** harness: restarting the worker after {running}\n")
            log.flush()
    outcome.results, _ = _read_jsonl(results_path)
    for record in outcome.results.values():
        if record["outcome"] == "pass" and target == "proctor" and record.get("fresh_pythons"):
            record["outcome"] = "unredirected"
    outcome.seconds = time.monotonic() - started
    return outcome


def run_pair(method: str, workdir: Path, **options) -> tuple[Run, Run]:
    """Run the stdlib and proctor at once (two workers) for one start method."""
    return run_methods([method], workdir, **options)[method]


#: Proctor outcomes that ``compare`` never counts as a difference, whatever the stdlib did.
SETTLED = ("pass", "unredirected", "excluded")


def stdlib_needed(proctor: Run) -> list[str] | None:
    """The tests whose stdlib outcome ``compare`` needs, given proctor's run.

    ``compare`` reports a test only where the stdlib passes and proctor does not; a
    test proctor passed is settled whatever the stdlib does, and so is an excluded
    one (proctor's run records as "excluded" the tests of the exclusions file, which
    ``compare`` leaves out).
    So the stdlib has to run only the others -- or, where proctor's run ended early
    and some tests have no result, all of them (``None``).
    """
    if not proctor.complete:
        return None
    return sorted(t for t, r in proctor.results.items() if r["outcome"] not in SETTLED)


def run_methods(
    methods: list[str], workdir: Path, *, stdlib: str = "full", **options
) -> dict[str, tuple[Run, Run]]:
    """Run both targets under every method in ``methods``, all at once.

    The suite mostly waits (sleeps, timeouts, children starting), so its runs
    overlap well even on two cores: the whole costs about as much as its longest run.

    Args:
        stdlib: ``"full"``: the stdlib runs the whole suite beside proctor (its
            counts and times are a reference). ``"needed"``: for each method,
            proctor's run first, then the stdlib's on just the tests proctor did
            not pass (``stdlib_needed``): ``compare`` gives the same differences
            for about half the work, since the stdlib's outcome of a test proctor
            passed is never looked at.

    Returns:
        method -> (stdlib run, proctor run).
    """
    if stdlib not in ("full", "needed"):
        raise ValueError(f"stdlib must be 'full' or 'needed', not {stdlib!r}")
    runs: dict[tuple[str, str], Run] = {}
    errors: list[BaseException] = []

    def one(target: str, method: str) -> None:
        try:
            runs[target, method] = run(target, method, workdir, **options)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    def proctor_then_stdlib(method: str) -> None:
        one("proctor", method)
        if ("proctor", method) not in runs:
            return
        try:
            needed = stdlib_needed(runs["proctor", method])
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)
            return
        if needed is None:
            one("stdlib", method)
            return
        if needed:
            try:
                limited = {**options, "only": needed}
                runs["stdlib", method] = run("stdlib", method, workdir, **limited)
            except BaseException as exc:
                errors.append(exc)
                return
        else:  # proctor passed everything: nothing to look up
            runs["stdlib", method] = Run(
                "stdlib",
                method,
                options.get("python", sys.executable),
                log="(not run: proctor passed every test)",
                suite=options.get("suite", "multiprocessing"),
                complete=True,
            )
        runs["stdlib", method].only_needed = needed

    if stdlib == "needed":
        threads = [
            threading.Thread(target=proctor_then_stdlib, args=(method,), name=f"compat-{method}")
            for method in methods
        ]
    else:
        threads = [
            threading.Thread(target=one, args=(target, method), name=f"compat-{target}-{method}")
            for method in methods
            for target in TARGETS
        ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {method: (runs["stdlib", method], runs["proctor", method]) for method in methods}


def load_excluded(path: Path = EXCLUDED_FILE) -> dict[str, str]:
    """Test ids that cannot apply to proctor, each with its one-line reason.

    Lines are ``<Class.test> <reason>``; ``#`` starts a comment.

    Raises:
        ValueError: for a line without a reason, or an id listed twice.
    """
    excluded: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        test_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise ValueError(f"{path}:{number}: {test_id} has no reason")
        if test_id in excluded:
            raise ValueError(f"{path}:{number}: {test_id} is listed twice")
        excluded[test_id] = reason.strip()
    return excluded


@dataclass
class Difference:
    test_id: str
    stdlib: str
    proctor: str
    message: str


def compare(stdlib: Run, proctor: Run, excluded: dict[str, str]) -> list[Difference]:
    """Tests the stdlib passes and proctor does not (excluded ones left out).

    An "unredirected" proctor result is not counted as a difference: the test ran
    the stdlib in a fresh interpreter, and nothing here can point it at proctor.
    """
    differences = []
    for test_id, record in sorted(stdlib.results.items()):
        if record["outcome"] != "pass" or test_id in excluded:
            continue
        theirs = proctor.results.get(test_id, {"outcome": "missing", "message": "no result"})
        if theirs["outcome"] in ("pass", "unredirected"):
            continue
        differences.append(
            Difference(test_id, record["outcome"], theirs["outcome"], theirs.get("message", ""))
        )
    return differences


def suite_passes(stdlib: Run, proctor: Run) -> int:
    """How many tests passed here: the stdlib's passes, or where the stdlib only ran
    the tests proctor did not pass (``stdlib_needed``), proctor's passes and those."""
    passes = stdlib.counts()["pass"]
    if stdlib.only_needed is not None:
        passes += proctor.counts()["pass"]
    return passes


def report(method: str, stdlib: Run, proctor: Run, differences: list[Difference]) -> str:
    """A human-readable summary of one method's pair of runs."""
    scope = ""
    if stdlib.only_needed is not None:
        scope = f" (only the {len(stdlib.only_needed)} tests proctor did not pass)"
    lines = [
        f"start method {method}: stdlib{scope} {stdlib.counts()} in {stdlib.seconds:.0f} s; "
        f"proctor {proctor.counts()} in {proctor.seconds:.0f} s",
    ]
    for run in (stdlib, proctor):
        if run.error:
            lines.append(f"the {run.target} run stopped early: {run.error}")
    if differences:
        lines.append(f"{len(differences)} tests pass with the stdlib and not with proctor:")
        for d in differences:
            lines.append(f"  {d.test_id}: {d.proctor}: {d.message[:300]}")
    unredirected = sorted(t for t, r in proctor.results.items() if r["outcome"] == "unredirected")
    if unredirected:
        lines.append("not checked against proctor (run the stdlib in a fresh interpreter):")
        lines.extend(f"  {t}" for t in unredirected)
    lines.append(f"worker output: {stdlib.log}, {proctor.log}")
    return "\n".join(lines)


def _stop_on_sigterm() -> None:
    """Make SIGTERM end the command line with its workers and theirs (each worker
    leads a process group of its own, which a signal to this one does not reach)."""

    def stop(signum: int, frame: object) -> None:
        _groups_lock.acquire()  # (never released: this process ends here)
        for pgid in list(_running_groups):
            _kill_group(pgid)
        # At once: the run threads would take the killed workers for crashed ones
        # and start new workers.
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--timeout", type=float, default=TEST_TIMEOUT, help="seconds per test")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--only", nargs="*", default=None, help="test ids (Class.method)")
    parser.add_argument("--suite", choices=list(SUITES), default="multiprocessing")
    parser.add_argument(
        "--stdlib",
        choices=("full", "needed"),
        default="full",
        help="full: the stdlib runs the whole suite beside proctor (a reference); needed: "
        "only the tests proctor did not pass, after proctor's run (same differences)",
    )
    args = parser.parse_args(argv)
    _stop_on_sigterm()
    module, excluded_file = SUITES[args.suite]
    missing = suite_missing(args.python, module)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    excluded = load_excluded(excluded_file)
    status = 0
    results = run_methods(
        args.methods,
        args.out,
        python=args.python,
        test_timeout=args.timeout,
        only=args.only,
        suite=args.suite,
        stdlib=args.stdlib,
    )
    for method, (stdlib, proctor) in results.items():
        for one in (stdlib, proctor):
            path = args.out / f"{one.stem}.json"
            path.write_text(json.dumps(one.to_json(), indent=1, sort_keys=True) + "\n")
        differences = compare(stdlib, proctor, excluded)
        print(report(method, stdlib, proctor, differences), flush=True)
        status = status or (1 if differences else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
