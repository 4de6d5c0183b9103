"""The child's side of a start (proctor._start._bootstrap), under every start method."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest

import proctor
import proctor._sync._accel
import proctor.shared_memory

FORKED = ("fork", "forkserver")  # children that are forks (of the parent or the server)


def native_ids():
    return threading.main_thread().native_id, threading.get_native_id(), os.getpid()


@pytest.mark.parametrize("method", FORKED)
def test_a_forked_childs_main_thread_has_its_own_native_id(method):
    p = proctor.get_context(method).Process(target=native_ids)
    p.start()
    p.join(30)
    main_id, own_id, pid = p.result
    assert main_id == own_id == pid  # Linux: the main thread's id is the pid
    assert main_id != threading.main_thread().native_id
    p.close()


def _run(
    code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_a_fork_child_of_a_parent_running_threads_imports_nothing_on_its_way(tmp_path):
    # Every module a fork child imports costs it milliseconds (the import machinery
    # writes to pages it shares with its parent). A child of a parent with a thread
    # (any thread: here a program's own, and logging's listener) imported
    # proctor._core._wakeup to record the parent's thread count: start+join 6.7 ms
    # against the stdlib's 3.0 (39th session). A fresh interpreter: this one has
    # loaded everything.
    result = _run(
        """
        import logging, os, sys, threading, warnings, proctor

        PARENT = os.getpid()

        def work(q, lock):
            with lock:
                q.put(1)
            logging.getLogger("child").warning("a record, forwarded")
            return {"done": True}

        if __name__ == "__main__":
            warnings.simplefilter("ignore", DeprecationWarning)  # (forking beside threads)
            logging.root.addHandler(logging.StreamHandler(open(os.devnull, "w")))
            stop = threading.Event()
            threading.Thread(target=stop.wait, daemon=True).start()
            ctx = proctor.get_context("fork")
            q, lock = ctx.Queue(), ctx.Lock()
            imports = open(sys.argv[1], "a")  # (O_APPEND: each child's line whole)

            def record_imports_in_children(event, args):
                if event == "import" and os.getpid() != PARENT:
                    os.write(imports.fileno(), f"{os.getpid()} {args[0]}\\n".encode())

            for first in (True, False):  # (the first start imports what the parent needs)
                if not first:
                    sys.addaudithook(record_imports_in_children)
                p = ctx.Process(target=work, args=(q, lock))
                p.start()
                p.join(60)
                assert p.exitcode == 0, p.exitcode
                assert p.result == {"done": True}
                assert q.get(timeout=60) == 1
            stop.set()
            print("ok")
        """,
        str(tmp_path / "imports"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok"]
    assert (tmp_path / "imports").read_text() == ""


def test_atexit_handlers_are_the_childs_own(start_method, tmp_path):
    # A child's own handlers run when it exits (forked children leave with os._exit,
    # so proctor runs them); the parent's never run in a child.
    result = _run(
        """
        import atexit, sys, proctor

        def child(path):
            atexit.register(lambda: open(path, "a").write("child\\n"))

        if __name__ == "__main__":
            path = sys.argv[2]
            atexit.register(lambda: open(path, "a").write("parent\\n"))
            p = proctor.get_context(sys.argv[1]).Process(target=child, args=(path,))
            p.start()
            p.join(60)
            assert p.exitcode == 0, p.exitcode
        """,
        start_method,
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_text().splitlines() == ["child", "parent"]


def logger_level():
    return proctor.get_logger().getEffectiveLevel()


def test_children_get_proctors_logger_level(start_method):
    logger = proctor.get_logger()
    original = logger.level
    logger.setLevel(32)
    try:
        p = proctor.get_context(start_method).Process(target=logger_level, forward_logs=False)
        p.start()
        p.join(30)
        assert p.result == 32
        p.close()
    finally:
        logger.setLevel(original)


def test_a_closed_stdout_does_not_stop_a_start(start_method):
    result = _run(
        """
        import io, sys, proctor
        if __name__ == "__main__":
            real = sys.stdout
            sys.stdout = io.StringIO()
            sys.stdout.close()
            p = proctor.get_context(sys.argv[1]).Process(target=int)
            p.start()
            p.join(60)
            sys.stdout = real
            print(p.exitcode)
        """,
        start_method,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_a_default_socket_timeout_does_not_reach_proctors_channels(start_method):
    # socket.setdefaulttimeout() made new socket pairs non-blocking in the kernel,
    # and a child could fail to receive its work with EAGAIN.
    result = _run(
        """
        import socket, sys, proctor
        if __name__ == "__main__":
            socket.setdefaulttimeout(0.000001)
            results = []
            for i in range(5):
                p = proctor.get_context(sys.argv[1]).Process(target=pow, args=(i, 2))
                p.start()
                p.join(60)
                results.append(p.result)
            print(results)
        """,
        start_method,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, 1, 4, 9, 16]"


def test_proctor_log_helpers_name_their_caller(tmp_path):
    result = _run(
        """
        import logging, proctor
        from proctor import util
        logger = proctor.log_to_stderr(util.DEBUG)
        logger.handlers[0].setFormatter(logging.Formatter("%(filename)s %(message)s"))
        util.info("hello")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "<string> hello"


# What a spawned child must not load to run a target that needs none of it: each
# of these costs milliseconds of every child's start (typing alone ~3.5 ms).
_NOT_FOR_ANY_CHILD = (
    "typing",
    "contextlib",
    "cloudpickle",
    "proctor._context",
    "proctor._core._pickler",
    "proctor._sync",
    "proctor._queues",
    "proctor._sharedmem",
    "proctor._connections._handshake",
    "proctor._reaper._client",
    "hmac",
    # The C modules _pickle, _socket and _thread do what a child needs;
    # the Python modules around them (with re, enum, selectors) and multiprocessing
    # (the base classes of proctor's errors) cost ~40 M instructions (issue 17).
    "proctor._core._errors",
    "multiprocessing",
    "pickle",
    "socket",
    "signal",
    "selectors",
    "enum",
    "re",
    "threading",  # proctor's locks are _thread's; threading comes with a target's threads
)

#: Whether children arm their parent-death signal with _start._native (built with the
#: locks' C module, all or nothing), rather than through _ctypes and libffi.
NATIVE_PDEATHSIG = (
    sys.platform.startswith("linux")
    and os.environ.get("PROCTOR_PURE_PYTHON", "") in ("", "0")
    and proctor._sync._accel.ACTIVE == "native"
)
if NATIVE_PDEATHSIG:
    # _ctypes and libffi: ~1 M instructions and ~0.6 ms of every spawned child.
    _NOT_FOR_ANY_CHILD += ("_ctypes", "proctor._core._accel", "zlib")

# A child whose start message is plain data (_start._plain: no target, a module's
# function, or a main-script function using plain globals and modules) reads it
# with marshal: no _pickle, with functools and collections (~13 M instructions),
# no struct, select or array (collections again), no types (issue 17).
_NOT_FOR_A_PLAIN_CHILD = (
    *_NOT_FOR_ANY_CHILD,
    "_pickle",
    "copyreg",
    "functools",
    "collections",
    "types",
    "array",
    "select",
    "_struct",
    "proctor._core._serialization",
    "proctor._core._reduction",
    "proctor._start._outcome",
    "_socket",  # a message without descriptors is read with os.read
)


def spawned_eval(source, *namespace, **process_options):
    """What ``source`` evaluates to in a spawned child (started with ``process_options``).

    ``eval``, a builtin, is the target: loading it imports nothing of the test's.
    ``namespace`` (a dict of globals, optional) travels with the start.
    """
    p = proctor.get_context("spawn").Process(
        target=eval, args=(source, *namespace), **process_options
    )
    p.start()
    p.join(60)
    try:
        assert p.exitcode == 0
        return p.result
    finally:
        p.close()


def probe_loaded(modules):
    """A probe for spawned_eval: which of ``modules`` the child has imported."""
    return f"[m for m in {list(modules)!r} if m in __import__('sys').modules]"


@pytest.mark.parametrize("forward_logs", [False, True])
def test_a_spawned_child_imports_only_what_its_start_needs(forward_logs):
    # The log channel is a descriptor in the start message: received with recvmsg.
    not_loaded = [m for m in _NOT_FOR_A_PLAIN_CHILD if not (forward_logs and m == "_socket")]
    assert spawned_eval(probe_loaded(not_loaded), forward_logs=forward_logs) == []
    if sys.platform.startswith("linux"):  # psutil is a dependency only without /proc
        assert spawned_eval("'psutil' in __import__('sys').modules") is False


# A spawned pool worker needs the connections (with socket.py) and _pickle; what only
# the parent uses is imported where it is used (issue 17: ~15 ms of each worker's start).
_NOT_FOR_A_POOL_WORKER = (
    "typing",
    "contextlib",
    "cloudpickle",
    "proctor._core._errors",
    "proctor._core._pickler",
    "proctor._pool._progress",
    "proctor._pool._results",
    "multiprocessing",
    "pickle",
    "re",
    "threading",
)


def test_a_spawned_pool_worker_imports_neither_pickle_py_nor_the_error_types():
    probe = probe_loaded(_NOT_FOR_A_POOL_WORKER)
    with proctor.get_context("spawn").Pool(1) as pool:
        assert pool.apply(eval, (probe,)) == []


# A spawned child given a lock, a queue, a pipe end or shared values loads what using
# them needs -- the C modules _socket, _signal, _pickle, _json -- not the Python
# modules around them, nor the reaper's server module or tempfile (issue 17: a
# child given a Lock or a Queue started in ~47 ms, ~32 ms with this).
_NOT_FOR_A_CHILD_GIVEN_OBJECTS = (
    "typing",
    "re",
    "enum",
    "socket",
    "selectors",
    "signal",
    "pickle",
    "json",
    "tempfile",
    "threading",
    "proctor._reaper._server",
)

_GIVEN = {
    "Lock": lambda ctx: (ctx.Lock(),),
    "RLock": lambda ctx: (ctx.RLock(),),
    "Semaphore": lambda ctx: (ctx.BoundedSemaphore(2),),
    "Event": lambda ctx: (ctx.Event(),),
    "Condition": lambda ctx: (ctx.Condition(),),
    "Queue": lambda ctx: (ctx.Queue(),),
    "JoinableQueue": lambda ctx: (ctx.JoinableQueue(),),
    "SimpleQueue": lambda ctx: (ctx.SimpleQueue(),),
    "Pipe": lambda ctx: ctx.Pipe(),
    "Value": lambda ctx: (ctx.Value("i", 1),),
    "Array": lambda ctx: (ctx.Array("d", 4),),
    "SharedMemory": lambda ctx: (proctor.shared_memory.SharedMemory(create=True, size=64),),
    "ShareableList": lambda ctx: (proctor.shared_memory.ShareableList([1, "two"]),),
}


@pytest.mark.parametrize("kind", sorted(_GIVEN))
def test_a_spawned_child_given_an_object_loads_only_the_c_modules_it_uses(kind):
    ctx = proctor.get_context("spawn")
    not_loaded = list(_NOT_FOR_A_CHILD_GIVEN_OBJECTS)
    if NATIVE_PDEATHSIG and kind not in ("Value", "Array"):  # (sharedctypes are ctypes)
        not_loaded.append("ctypes")
    # Each of _sync's names loads the module that defines it, not the package's all.
    if kind not in ("Semaphore", "Condition", "Event"):
        not_loaded += ["proctor._sync._condition", "proctor._sync._semaphore"]
    # A queue's locks and wake-ups are unnamed (_sync._memsem): no reaper to tell.
    if kind in ("Queue", "JoinableQueue", "SimpleQueue", "Pipe") and NATIVE_PDEATHSIG:
        not_loaded.append("proctor._reaper._client")
    given = _GIVEN[kind](ctx)
    try:
        # The objects travel in the probe's namespace.
        assert spawned_eval(probe_loaded(not_loaded), {"given": given}) == []
    finally:
        for obj in given:
            obj = getattr(obj, "shm", obj)  # a ShareableList's memory
            close = getattr(obj, "close", None)
            if close is not None:
                close()
            if isinstance(obj, proctor.shared_memory.SharedMemory):
                obj.unlink()


def test_a_child_whose_target_is_in_the_main_script_loads_no_pickler():
    # The tutorial's programs define their targets in the main script: a spawned
    # child rebuilds such a function (and a lambda there) from its value,
    # with _rebuilding alone; the sending side (_pickler, with pickle.py, re, enum,
    # socket and threading) would cost its start milliseconds.
    result = _run(
        f"""
        import sys, proctor

        NOT_LOADED = {_NOT_FOR_ANY_CHILD!r}
        SCALE = 10

        def probe(x, then):
            return [m for m in NOT_LOADED if m in sys.modules], then(x) * SCALE

        if __name__ == "__main__":
            p = proctor.get_context(sys.argv[1]).Process(
                target=probe, args=(4, lambda x: x + 1)
            )
            p.start()
            p.join(60)
            print(p.exitcode, p.result)
        """,
        "spawn",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(None, 1) == ["0", "([], 50)\n"]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_main_script_target_with_plain_arguments_reaches_the_child_without_pickle(method):
    # The common program: a function of the main script, a few numbers and strings.
    # The child rebuilds it from marshal's bytes, as the pickle would have: its
    # globals (a constant, a module), defaults, keyword defaults, docstring and
    # annotations (builtin types by name) -- and loads none of the modules above.
    result = _run(
        f"""
        import os, sys, proctor

        NOT_LOADED = {_NOT_FOR_A_PLAIN_CHILD!r}
        SCALE = 10

        def probe(x: int, word="a", *, flag: bool = True) -> list:
            "Doc."
            f = proctor.current_process()._target  # the function rebuilt here
            return (
                [m for m in NOT_LOADED if m in sys.modules],
                x * SCALE, word, flag, os.sep,
                f.__doc__, f.__annotations__ == {{"x": int, "flag": bool, "return": list}},
                f.__defaults__, f.__kwdefaults__, f.__qualname__, f.__module__,
            )

        if __name__ == "__main__":
            p = proctor.get_context(sys.argv[1]).Process(
                target=probe, args=(4,), kwargs={{"flag": False}}
            )
            p.start()
            p.join(60)
            print(p.exitcode, p.result)
        """,
        method,
    )
    assert result.returncode == 0, result.stderr
    exitcode, value = result.stdout.split(None, 1)
    assert exitcode == "0"
    found = eval(value)
    if method == "spawn":  # a fork server has imported what it needs itself
        assert found[0] == []
    assert found[1:] == (
        40,
        "a",
        False,
        os.sep,
        "Doc.",
        True,
        ("a",),
        {"flag": True},
        "probe",
        "__main__",
    )


def test_a_spawned_child_without_log_forwarding_loads_no_logging():
    # logging and the forwarding module cost a child milliseconds; only forwarding needs them.
    probe = probe_loaded(("logging", "proctor._logging._forwarding"))
    assert spawned_eval(probe, forward_logs=False) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_parent_death_signal_is_set_without_the_ctypes_package():
    # A spawned child arms PR_SET_PDEATHSIG through the _ctypes C module alone: the
    # ctypes package would cost every child 2-3 ms more to import.
    code = textwrap.dedent(
        """
        import signal, sys
        from proctor._start import _bootstrap
        assert _bootstrap._set_pdeathsig(signal.SIGTERM)
        loaded = "ctypes" in sys.modules
        import ctypes
        value = ctypes.c_int()
        ctypes.CDLL(None).prctl(2, ctypes.byref(value))  # PR_GET_PDEATHSIG
        print(value.value, loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == [str(int(signal.SIGTERM)), "False"]


_PDEATHSIG_PROBE = textwrap.dedent(
    """
    import signal, sys
    from proctor._start import _bootstrap
    assert _bootstrap._set_pdeathsig(signal.SIGTERM)
    loaded = sorted(m for m in ("_ctypes", "proctor._start._native") if m in sys.modules)
    import ctypes
    value = ctypes.c_int()
    ctypes.CDLL(None).prctl(2, ctypes.byref(value))  # PR_GET_PDEATHSIG
    print(value.value, loaded, _bootstrap.describe_parent_death())
    """
)


@pytest.mark.skipif(not NATIVE_PDEATHSIG, reason="the C accelerator is not active here")
def test_the_parent_death_signal_is_set_by_the_c_module_when_it_is_built():
    out = subprocess.run(
        [sys.executable, "-c", _PDEATHSIG_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    signum, loaded, how = out.stdout.split(None, 2)
    assert (signum, loaded) == (str(int(signal.SIGTERM)), "['proctor._start._native']")
    assert how.startswith("C accelerator (")
    # A spawn child takes the module its parent checked, and loads no _ctypes.
    from proctor._start import _bootstrap

    assert _bootstrap.native_parent_death()
    probe = (
        probe_loaded(("_ctypes", "zlib", "proctor._core._accel"))
        + ", 'proctor._start._native' in __import__('sys').modules"
    )
    assert spawned_eval(probe, forward_logs=False) == ([], True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_pure_python_sets_the_parent_death_signal_through_ctypes():
    env = {**os.environ, "PROCTOR_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _PDEATHSIG_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    signum, loaded, how = out.stdout.split(None, 2)
    assert (signum, loaded) == (str(int(signal.SIGTERM)), "['_ctypes']")
    assert how == "ctypes (PROCTOR_PURE_PYTHON=1 is set)\n"


def test_a_spawn_parent_without_the_c_module_loads_no_ctypes_for_its_children():
    # It asks only whether to tell its children that _start._native is checked.
    result = _run(
        """
        import sys, proctor

        if __name__ == "__main__":
            p = proctor.get_context("spawn").Process()
            p.start()
            p.join(60)
            print(p.exitcode, "_ctypes" in sys.modules)
        """,
        env={**os.environ, "PROCTOR_PURE_PYTHON": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "False"]


@pytest.mark.parametrize("size", [10, 200_000])
def test_a_child_that_read_its_start_with_os_read_sends_any_outcome(size):
    # No descriptor in the start message: the child reads it without _socket, and
    # makes a socket only to send its outcome -- a large one as a memfd (SCM_RIGHTS).
    p = proctor.get_context("spawn").Process(target=bytes, args=(size,), forward_logs=False)
    p.start()
    p.join(60)
    try:
        assert p.exitcode == 0
        assert p.result == bytes(size)
    finally:
        p.close()


def test_a_start_message_too_large_for_os_read_arrives_whole():
    # Over _wire.INLINE_MAX the message goes as a memfd: the child receives it with recvmsg.
    from proctor._core import _wire

    big = "x" * (2 * _wire.INLINE_MAX)
    p = proctor.get_context("spawn").Process(target=len, args=(big,), forward_logs=False)
    p.start()
    p.join(60)
    try:
        assert p.exitcode == 0
        assert p.result == len(big)
    finally:
        p.close()


def test_main_script_functions_that_call_each_other_arrive_as_one_namespace():
    # The target recurses and calls a helper of the main script: each arrives once,
    # sharing one namespace, as when they are pickled -- and still without pickle.
    result = _run(
        f"""
        import sys, proctor

        NOT_LOADED = {_NOT_FOR_A_PLAIN_CHILD!r}

        def helper(n):
            return n * 2

        def countdown(n):
            if n == 0:
                me = proctor.current_process()._target
                shared = me.__globals__ is helper.__globals__
                return [m for m in NOT_LOADED if m in sys.modules], shared, me is countdown
            return countdown(n - 1) + (helper(n),)

        if __name__ == "__main__":
            p = proctor.get_context("spawn").Process(target=countdown, args=(3,))
            p.start()
            p.join(60)
            print(p.exitcode, p.result)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(None, 1) == ["0", "([], True, True, 2, 4, 6)\n"]


def _young_objects_and_frozen() -> tuple[int, int]:
    return gc.get_count()[0], gc.get_freeze_count()


class _Cycle:
    pass


def _interpreter_starts_with_objects_frozen() -> bool:
    """Whether this Python has objects in gc's permanent generation before any code
    runs (CPython 3.12.1: 375 immortal tuples), which the aging leaves alone."""
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import gc; print(gc.get_freeze_count())"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout) != 0


# A parent with 3,000 young objects, and its fork child's count of young objects.
_YOUNG_IN_A_FORK_CHILD = textwrap.dedent(
    """
    import gc
    import proctor

    def young_and_frozen():
        return gc.get_count()[0], gc.get_freeze_count()

    if __name__ == "__main__":
        gc.disable()
        keep = [[] for _ in range(3000)]  # young and uncollected
        parent_young = gc.get_count()[0]
        p = proctor.get_context("fork").Process(target=young_and_frozen)
        p.start()
        p.join(30)
        gc.enable()
        print(parent_young, *p.result)
        p.close()
    """
)


def test_a_forked_child_counts_the_objects_it_inherited_as_old():
    # The parent's young objects are not the child's first collections' work: each
    # one scanned would be a page copied (~50 pages for a threshold's worth). In a
    # fresh interpreter: gc's count is the whole interpreter's, and another thread
    # freeing objects meanwhile moves it (pytest's had the parent's 3,000 read 2,969).
    if _interpreter_starts_with_objects_frozen():
        pytest.skip(
            "this interpreter freezes objects of its own at start-up: a child cannot tell "
            "them from a program's, so it ages nothing (docs/design.md)"
        )
    done = subprocess.run(
        [sys.executable, "-c", _YOUNG_IN_A_FORK_CHILD],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    parent_young, young, frozen = map(int, done.stdout.split())
    assert parent_young >= 3000
    assert young < 3000 // 2
    assert frozen == 0


def test_a_forked_child_still_collects_the_garbage_it_inherited():
    gc.disable()
    try:
        cycle = _Cycle()
        cycle.me = cycle  # type: ignore[attr-defined]
        ref = weakref.ref(cycle)
        del cycle  # garbage, young, not collected yet in this process

        def collected() -> bool:
            gc.collect()
            return ref() is None

        p = proctor.get_context("fork").Process(target=collected)
        p.start()
        p.join(30)
    finally:
        gc.enable()
    assert p.result is True
    p.close()


def test_a_forked_child_keeps_what_its_parent_froze_frozen():
    # A program that froze its objects for its forks keeps them out of every
    # collection there; proctor's child does not unfreeze them.
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        p = proctor.get_context("fork").Process(target=_young_objects_and_frozen)
        p.start()
        p.join(30)
    finally:
        gc.unfreeze()
    still_frozen = p.result[1]
    p.close()
    # (Fewer than here: the child freed some of them before it counted.)
    assert frozen // 2 < still_frozen <= frozen


def _lifeline_held_by_a_fork() -> tuple[bool, bool]:
    from proctor._start import _bootstrap

    lifeline = _bootstrap._own_lifeline[0]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the grandchild
        try:
            os.fstat(lifeline)
            held = b"1"
        except OSError:
            held = b"0"
        os.write(w, held)
        os._exit(0)
    os.close(w)
    held = os.read(r, 1)  # (b"" if the grandchild died first: its end closed)
    os.close(r)
    os.waitpid(pid, 0)
    return held == b"1", _bootstrap._closes_lifeline_at_fork


def test_a_fork_of_a_child_does_not_hold_the_childs_lifeline(monkeypatch):
    # Without pidfds the parent watches a lifeline pipe whose write end only the
    # child holds: a process the child forks must not keep it open.
    from proctor._start import _popen_fork

    # The record a fork start reads (pid, main thread, pidfds usable, what
    # forks), as on a system without pidfds.
    pid, main_ident, _pidfds, fork = _popen_fork._get_ready(os.getpid())
    monkeypatch.setattr(_popen_fork, "_ready", (pid, main_ident, False, fork))
    p = proctor.get_context("fork").Process(target=_lifeline_held_by_a_fork)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert p.result == (False, True)
    p.close()


def test_a_child_without_a_lifeline_registers_no_fork_hook_for_one():
    from proctor._start import _bootstrap

    def registered() -> bool:
        return _bootstrap._closes_lifeline_at_fork

    p = proctor.get_context("fork").Process(target=registered)
    p.start()
    p.join(30)
    assert p.result is False
    p.close()


def _leave_a_thread_running(go_fd: int, returning_fd: int, done_fd: int) -> None:
    def finish() -> None:
        os.read(go_fd, 1)
        os.write(done_fd, b"d")

    threading.Thread(target=finish).start()
    os.write(returning_fd, b"r")


def test_a_forked_child_waits_for_its_non_daemon_threads_before_it_exits():
    go_r, go_w = os.pipe()
    returning_r, returning_w = os.pipe()
    done_r, done_w = os.pipe()
    try:
        p = proctor.get_context("fork").Process(
            target=_leave_a_thread_running, args=(go_r, returning_w, done_w)
        )
        p.start()
        assert _readable(returning_r) and os.read(returning_r, 1) == b"r"
        # run() has returned (or is about to): the child must wait for its thread,
        # which waits for us. (Not a timing test: the child stays until we write.)
        p.join(0.5)
        assert p.is_alive()
        os.write(go_w, b"g")
        p.join(30)
        assert p.exitcode == 0
        assert _readable(done_r) and os.read(done_r, 1) == b"d"
        p.close()
    finally:
        for fd in (go_r, go_w, returning_r, returning_w, done_r, done_w):
            os.close(fd)


def _readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 30)[0])


@pytest.mark.parametrize("error", [OSError(105, "No buffer space available"), KeyboardInterrupt()])
def test_a_spawn_start_whose_message_did_not_go_fails_and_leaves_no_child(monkeypatch, error):
    """A spawned child waits for its start message as long as the parent holds the
    channel: when the send fails (anything but the child's own death) or is
    interrupted, start() ends the child and raises, instead of returning a process
    that never runs and that join() waits for for ever."""
    from proctor._core import _wire
    from proctor._start import _popen_spawn

    spawned = []
    real_spawn_child = _popen_spawn.spawn_child

    def failing_send(sock, data, fds=()):
        raise error

    def spawn_child(*args, **kwargs):
        started = real_spawn_child(*args, **kwargs)
        spawned.append(started[0])
        return started

    monkeypatch.setattr(_wire, "send_message", failing_send)
    monkeypatch.setattr(_popen_spawn, "spawn_child", spawn_child)
    p = proctor.get_context("spawn").Process(target=int)
    try:
        with pytest.raises(type(error)):
            p.start()
        assert len(spawned) == 1
        with pytest.raises(ChildProcessError):  # killed and reaped already
            os.waitpid(spawned[0], os.WNOHANG)
        assert p not in proctor.active_children()
    finally:
        for pid in spawned:  # (the old behaviour left it waiting for its message)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _close_every_descriptor_and_connect(address, count):
    # A target that daemonizes: it closes every descriptor it did not open, the
    # channel to its parent among them, and the numbers go to its own sockets, each
    # of which says "bye" at exit if it is still open then (a spawned child reports
    # before its atexit handlers run, a forked one after).
    import atexit
    import socket

    os.closerange(3, 1 << 16)
    own = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address)
        own.append(sock)
    atexit.register(lambda: [sock.sendall(b"bye") for sock in own])
    return "the return value"


def test_a_child_that_closed_its_channel_writes_nothing_into_the_files_that_took_its_number(
    start_method, tmp_path
):
    # Its outcome was written into the target's own socket and the socket closed
    # (spawn), or the send failed and was taken for a parent that had gone: the
    # parent read an exit code of 0 and a result of None. Now nothing is written
    # or closed, and the parent says the outcome was lost.
    import socket

    count = 8
    address = str(tmp_path / "listener")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(address)
        listener.listen(count)
        p = proctor.get_context(start_method).Process(
            target=_close_every_descriptor_and_connect, args=(address, count)
        )
        p.start()
        p.join(60)
        assert p.exitcode == 0
        listener.settimeout(30)
        received = []
        for _ in range(count):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(30)
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                received.append(data)
    assert received == [b"bye"] * count
    with pytest.raises(proctor.ResultError, match="closed its channel to the parent"):
        _ = p.result
    assert p.exception is None
    p.close()


def _leave_with_os_exit(code):
    os._exit(code)


def test_a_child_that_exits_0_without_reporting_has_no_result_and_one_that_fails_none():
    # An empty channel used to read as a target that returned None: a child that
    # exits 0 reports even that (an empty message), and one that did not report
    # at all lost its outcome; a child that exited with an error code has none.
    ctx = proctor.get_context("fork")
    returned = ctx.Process()  # (no target: run() returns None)
    lost = ctx.Process(target=_leave_with_os_exit, args=(0,))
    failed = ctx.Process(target=_leave_with_os_exit, args=(3,))
    for p in (returned, lost, failed):
        p.start()
        p.join(30)
    assert (returned.exitcode, lost.exitcode, failed.exitcode) == (0, 0, 3)
    assert returned.result is None
    with pytest.raises(proctor.ResultError, match=r"os\._exit"):
        _ = lost.result
    assert failed.result is None
    for p in (returned, lost, failed):
        p.close()
