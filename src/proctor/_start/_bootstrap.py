"""The child's side of a start: receive, prepare, run, report, exit.

::

    fork        parent os.fork() ─▶ run_forked(process, channel)
    spawn       fresh interpreter ─▶ spawn_main(channel_fd=3, lifeline_fd)
    forkserver  server os.fork()  ─▶ run_from_channel(channel)
                                        │
              spawn / forkserver:       ▼
                 recv [prep | payload] + fds from channel
                 apply prep (sys.path, argv, cwd, start method; logging
                   settings once something imports logging)
                 unpickle the process object, resolving fds
                                        │
              every method:             ▼
                 arm the parent-death watch
                 process._bootstrap(): run target, report outcome
                 send outcome up the channel, exit with the code

Children never outlive their parent: on Linux the kernel sends SIGKILL on the
parent's death (``PR_SET_PDEATHSIG``) when the child was started from the
parent's main thread -- the signal follows the *thread* that created the child,
so a child started from a worker thread would die with that thread. Otherwise
(and on macOS) a thread in the child watches its parent and kills the child when
it goes: a native thread of ``_start._native`` (``watch_parent``), which needs no
GIL, or without the C module a daemon Python thread -- which cannot act while the
target holds the GIL in one long C call.
"""

from __future__ import annotations

import _thread
import atexit
import os
import sys

from .._core import _afterfork, _finalize, _runtime, _wire
from .._core._system import _devnull, devnull_fd, fd_identity, fd_is_open, still_holds
from .._logging import _logger
from . import _methods
from ._state import exit_children, flush_std_streams, state

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    import _socket
    from collections.abc import Callable
    from typing import Any

__all__ = (
    "become_server_child",
    "build_prep",
    "run_forked",
    "run_from_channel",
    "run_process",
    "spawn_main",
)

# How often the portable parent watch looks (seconds): well inside the
# one-second promise, cheap enough to be invisible.
PARENT_POLL_INTERVAL = 0.2

# The start message: [prep's length: 8 bytes, little-endian | prep | payload]. Each
# part is a pickle, or marshal's bytes after _plain.MARK: a child whose message is
# all marshal never imports _pickle (with functools and collections: ~13 M
# instructions of its start, issue 17).
_LENGTH_SIZE = 8
#: _plain.MARK, known here without importing _plain for a pickled message.
_PLAIN_MARK = b"\x00"
_PR_SET_PDEATHSIG = 1
_LINUX = sys.platform.startswith("linux")
# signal.SIGKILL, whose number POSIX fixes: the signal module (with enum) would cost
# every spawned child ~10 M instructions for this one constant.
_SIGKILL = 9


def build_prep(process: Any, start_method: str) -> dict[str, Any]:
    """What a spawn/forkserver child needs before it can unpickle its target."""
    return {
        "sys_path": list(sys.path),
        "sys_argv": list(sys.argv),
        "cwd": os.getcwd(),
        "start_method": start_method,
        "parent_pid": os.getpid(),
        "pdeathsig": _on_main_thread(),
        "log": None,
        # proctor's logger level, as multiprocessing children get theirs.
        "log_level": _logger.effective_level(),
        "line_buffering": _line_buffering(),
        # Children share their parent's resource reaper (see _reaper), even when
        # they were not handed any named object at start.
        "reaper_address": _reaper_address(),
    }


def _on_main_thread() -> bool:
    # threading is imported here, in the parent, rather than at the top: a spawned
    # child that starts no thread does without it (~5 M instructions).
    import threading

    return threading.current_thread() is threading.main_thread()


def _reaper_address() -> str | None:
    reaper = sys.modules.get("proctor._reaper._client")
    return reaper.address() if reaper is not None else None


def _line_buffering() -> tuple[bool, bool]:
    return (_is_line_buffered(sys.stdout), _is_line_buffered(sys.stderr))


def _is_line_buffered(stream: Any) -> bool:
    try:
        return bool(getattr(stream, "line_buffering", False))
    except (ValueError, OSError):  # a closed stream (a closed StringIO raises)
        return False


def add_log_channel(prep: dict[str, Any], handoff: Any, process: Any) -> Any:
    """Open the child's log channel (if forwarding is on) and describe it in ``prep``.

    Returns the (parent end, child end) pair, or ``None``.
    """
    from .._logging._policy import forwarding_enabled

    if not forwarding_enabled(process._forward_logs):
        return None
    from .._logging._forwarding import capture_config, open_channel

    channel = open_channel()
    prep["log"] = {"config": capture_config(), "fd_token": handoff.add_fd(channel[1].fileno())}
    return channel


def encode_start_message(prep: dict[str, Any], payload: bytes) -> bytes:
    from ._plain import dump_plain

    prep_bytes = dump_plain(prep)
    if prep_bytes is None:
        from .._core import _serialization

        prep_bytes = _serialization.dumps(prep)
    return len(prep_bytes).to_bytes(_LENGTH_SIZE, "little") + prep_bytes + payload


def _load_part(data: memoryview, what: str) -> Any:
    """One part of the start message: marshal's (``_plain``) or a pickle."""
    if data[:1] == _PLAIN_MARK:
        from . import _plain

        return _plain.load_process(data) if what == "payload" else _plain.load_plain(data)
    from .._core import _serialization

    return _serialization.loads(data)


def _apply_prep(prep: dict[str, Any]) -> None:
    sys.path[:] = prep["sys_path"]
    sys.argv[:] = prep["sys_argv"]
    try:
        os.chdir(prep["cwd"])
    except OSError:
        pass  # the parent's directory vanished; keep ours
    # A child's output behaves like its parent's: line-buffered stays line-buffered.
    for stream, line_buffered in zip((sys.stdout, sys.stderr), prep["line_buffering"], strict=True):
        if line_buffered and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(line_buffering=True)
            except (ValueError, OSError):
                pass
    _methods.inherit_start_method(prep["start_method"])
    if prep["log_level"] is not None:
        _logger.inherit_level(prep["log_level"])
    if prep["reaper_address"]:
        reaper = sys.modules.get("proctor._reaper._client")  # a fork server preloads it
        if reaper is not None:
            reaper.adopt_address(prep["reaper_address"])
        else:
            _runtime.inherited_reaper_address = prep["reaper_address"]


# -- running ------------------------------------------------------------------


def run_forked(
    process: Any,
    channel: _socket.socket,
    parent_pid: int,
    started_on_main_thread: bool,
    log: Any,
    adopt_stdlib: bool = False,
) -> None:
    """In a forked child: run ``process`` and exit; never returns.

    Args:
        parent_pid: the parent's pid, read *before* the fork: ``getppid()`` in
            the child would already name init if the parent died in between.
        log: when log forwarding is on, the (request socket, token) with which
            the child's first record sends the parent its log channel
            (``LogListener.expect``; the child's logging is a copy of the
            parent's: no configuration travels), else ``None``.
        adopt_stdlib: :func:`stdlib_state_to_adopt`, asked by the parent before
            the fork (there its look writes no page a child must copy).
    """
    exitcode = 1
    try:
        _become_forked_child(adopt_stdlib)
        arm_parent_death(parent_pid, started_on_main_thread)
        if log is not None:
            # (Loaded: the parent made the request with it. Found in sys.modules: an
            # import statement writes the import system's objects, ~30 pages this
            # child would copy.)
            sys.modules["proctor._logging._forwarding"].install_in_child(None, log)
        elif not _logger.finder_standing:
            # (With a finder standing by, inherited from the parent, there is
            # nothing to do here: see _logger.stand_by.)
            _logger.when_logging_imported(_logger.name_records_after_this_process)
        exitcode = _run_and_report(process, channel, fd_identity(channel.fileno()), forked=True)
    finally:
        os._exit(exitcode)


def become_server_child(server_pid: int) -> None:
    """First things in a child of the fork server, before it reads its start message."""
    # (A spare asks for itself: it does this ahead of its work, off the critical path.)
    # The server froze everything it loaded (_forkserver._freeze_loaded_objects):
    # there is nothing young to age, and asking would walk every frozen object.
    _become_forked_child(stdlib_state_to_adopt(), objects_frozen=True)
    # Forked by the fork server, whose single thread is the one that forked us,
    # so PR_SET_PDEATHSIG is always safe; the server dies with our parent.
    arm_parent_death(server_pid, True)


def run_from_channel(
    channel: _socket.socket | int,
    *,
    exec_mode: bool,
    spare: bool = False,
    take_message: Callable[[int, int, bytes], tuple[bytes, list[int], bool]] | None = None,
) -> int:
    """Receive a process object from ``channel``, run it, report; return the exit code.

    Args:
        channel: the socket, or its bare descriptor when the start message
            carries no descriptors (``_wire.read_plain_message``).
        exec_mode: a fresh interpreter (spawn), rather than a fork of the fork
            server (which has called :func:`become_server_child` already).
        spare: a spawned spare (``_spawn_spare``), whose parent-death watch is
            armed already and which may be discarded before it has any work.
        take_message: ``_start._native.take_request`` (a fork server's child, where
            it is built), which reads the start message from a socket in C. A fork of
            the server copies each page it writes, and ``_wire.recv_message``'s
            Python objects and calls wrote ~20 (~80 us of the start; issue 17).
    """
    # What the channel is, for the outcome's send: code run in this child (loading
    # the payload imports the user's modules) may close its number and reuse it.
    identity = fd_identity(channel if isinstance(channel, int) else channel.fileno())
    fds: list[int] = []
    data: bytes | bytearray
    try:
        if isinstance(channel, int):
            data = _wire.read_plain_message(channel)
        elif take_message is not None:
            # (A spare of -1: only read. Its errors are OSError and EOFError too.)
            data, fds, _ = take_message(channel.fileno(), -1, b"")
        else:
            data, fds = _wire.recv_message(channel)
    except (OSError, EOFError) as exc:
        if spare:
            return 0  # discarded unused, or its parent exited: nothing was lost
        sys.stderr.write(f"proctor: the parent went away before sending the child's work ({exc})\n")
        return 1
    view = memoryview(data)
    prep_end = _LENGTH_SIZE + int.from_bytes(view[:_LENGTH_SIZE], "little")
    prep = _load_part(view[_LENGTH_SIZE:prep_end], "prep")
    payload = view[prep_end:]
    if exec_mode and not spare:
        arm_parent_death(prep["parent_pid"], prep["pdeathsig"])
    try:
        with _receiving(fds, plain=payload[:1] == _PLAIN_MARK) as received:
            _apply_prep(prep)
            if prep["log"] is not None:
                log_fd = received.take_fd(prep["log"]["fd_token"])
                _forward_logs_once_imported(prep["log"]["config"], log_fd)
            elif not _logger.finder_standing:  # (a fork server's child has one: stand_by)
                _logger.when_logging_imported(_logger.name_records_after_this_process)
            state.unpickling_payload = True
            # A fork server has the reaper's client loaded: the names rebuilt here
            # (a queue's four semaphores) reach the reaper in one message.
            reaper = sys.modules.get("proctor._reaper._client")
            cork = reaper.corked() if reaper is not None else None
            if cork is not None:
                cork.__enter__()
            try:
                process = _load_part(payload, "payload")
            finally:
                state.unpickling_payload = False
                if cork is not None:
                    cork.__exit__(None, None, None)
    except BaseException as exc:
        # The child could not even load its work: report it like a failure of
        # the target, so the parent sees it in ``exception``.
        import traceback

        sys.stderr.write("proctor: the child process could not load its target:\n")
        traceback.print_exc()
        from . import _outcome

        _send_outcome(channel, identity, _outcome.encode(_outcome.error_message(exc)))
        flush_std_streams()
        return 1
    del data, view, payload
    return _run_and_report(process, channel, identity, forked=not exec_mode)


class _PrepFds:
    """The descriptors of a start message whose payload is marshal's (``_plain``):
    only prep's (the log channel) can be among them. ``with``: those not taken
    are closed on exit, as ``_reduction.receiving`` does."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds
        self.taken: set[int] = set()

    def __enter__(self) -> _PrepFds:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # _closing.close_all_quietly's loop, written here: a plain spawn child does
        # not import _closing otherwise, and every module costs its start.
        for token, fd in enumerate(self.fds):
            if token not in self.taken:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def take_fd(self, token: int) -> int:
        self.taken.add(token)
        return self.fds[token]


class _PickleFds:
    """``_reduction.receiving(fds)``, the descriptors of a pickled payload."""

    def __init__(self, fds: list[int]) -> None:
        from .._core import _reduction

        self._reduction = _reduction
        self._receiving = _reduction.receiving(fds)

    def __enter__(self) -> _PickleFds:
        self._receiving.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._receiving.__exit__(*exc_info)

    def take_fd(self, token: int) -> int:
        return self._reduction.take_fd(token)


def _receiving(fds: list[int], *, plain: bool) -> _PrepFds | _PickleFds:
    """Where prep's and the payload's descriptor tokens resolve while they are loaded.

    A marshal payload (``_plain``) has none, so a child whose message is all plain
    data does without ``_reduction`` (and the ``_pickle`` it imports).
    """
    return _PrepFds(fds) if plain else _PickleFds(fds)


def _forward_logs_once_imported(config: dict[str, Any], log_fd: int) -> None:
    # Records exist only once something imports logging; a child that never does
    # skips importing it and the forwarding module (~8 ms of CPU): the descriptor
    # stays open, a bare int, until then, or until the child exits (the parent
    # then reads EOF).
    def install() -> None:
        from .._logging._forwarding import install_in_child

        install_in_child(config, log_fd)

    _logger.when_logging_imported(install)


def _become_forked_child(adopt_stdlib: bool, *, objects_frozen: bool = False) -> None:
    """First things in a child that is a fork (of its parent or of the fork server).

    ``objects_frozen``: the forking process froze what it made (the fork server):
    no inherited object is left to age (:func:`_age_inherited_objects`).
    """
    # The thread that forked is this process's main thread now; its native id
    # is the one the kernel gave this process (threading does not update it).
    # A process that never imported threading has no thread object to correct:
    # imported later, threading reads the id of the thread importing it.
    threading = sys.modules.get("threading")
    if threading is not None:
        main = threading.main_thread()
        if hasattr(main, "_set_native_id"):
            main._set_native_id()
    # The atexit handlers registered by the forking process are not this child's
    # (as in multiprocessing from Python 3.13 on, gh-83856, on every version here);
    # the child's own run when it exits (see _run_and_report).
    clear = getattr(atexit, "_clear", None)
    if clear is not None:
        clear()
        _finalize.start_child()
    if adopt_stdlib:
        _adopt_stdlib_multiprocessing()
    if not objects_frozen:
        _age_inherited_objects()
    # _thread._count() goes on counting the forking process's threads here, where
    # none of them is: receives that ask whether other threads run (a look before
    # a sleep, a wait another thread's close() ends) must count this child's only.
    _afterfork.forked_with(_thread._count())


def _stdlib_modules() -> tuple[Any, Any]:
    """``multiprocessing``'s ``util`` and ``process`` modules if loaded, else ``(None, None)``.

    Only the stdlib's own: a program (CPython's test suite run against proctor,
    tests/compat) may have put other modules, proctor's, under those names.
    """
    util = sys.modules.get("multiprocessing.util")
    if util is None or getattr(util, "__name__", None) != "multiprocessing.util":
        return None, None
    process = sys.modules.get("multiprocessing.process")
    if process is None or getattr(process, "__name__", None) != "multiprocessing.process":
        return None, None
    return util, process


def stdlib_state_to_adopt() -> bool:
    """Whether a fork of this process has ``multiprocessing`` state to adopt.

    True when the program has loaded ``multiprocessing.util`` and there is
    something for :func:`_adopt_stdlib_multiprocessing` to do: finalizers to
    drop, children to forget, or after-fork callbacks that change something (see
    :func:`_only_idle_stdlib_locks`). Asked in the forking process, so that a
    child of a program that merely imported the stdlib's modules touches none of
    their objects: every object a fork child looks at is a page it copies (the
    look cost ~15 pages a child, ~30 us).
    """
    util, mp_process = _stdlib_modules()
    if util is None:
        return False
    # (Each object looked at is a page written in this process after every fork:
    # the weak dictionary's own dict is read, not its Python-level __len__.)
    if util._finalizer_registry or mp_process._children:
        return True
    forkers = util._afterfork_registry
    return bool(forkers.data) and not _only_idle_stdlib_locks(util, forkers)


def _adopt_stdlib_multiprocessing() -> None:
    """Do for ``multiprocessing``'s objects what its own fork children do at their start.

    A program may hand a fork child objects of the stdlib's ``multiprocessing``
    (a ``multiprocessing.Queue``, a manager's proxy). Its fork children drop the
    parent's finalizers, run the ``util.register_after_fork`` callbacks (a queue
    forgets the parent's feeder thread, a proxy opens a connection of its own
    instead of sharing the parent's socket) and forget the parent's children;
    without that, a proctor child's puts stayed in a feeder that never ran and
    its proxy calls corrupted the parent's connection. Called only where
    :func:`stdlib_state_to_adopt` said so. See :func:`_finish_stdlib_multiprocessing`.
    """
    util, mp_process = _stdlib_modules()
    if util is None:
        return
    if mp_process._children:
        # (the parent's children, which this process cannot wait for)
        mp_process._children = set()
    if util._finalizer_registry:
        util._finalizer_registry.clear()
    if util._afterfork_registry.data:
        util._run_after_forkers()


def _only_idle_stdlib_locks(util: Any, forkers: Any) -> bool:
    """Whether every stdlib after-fork callback would re-initialise an unlocked lock.

    Such a callback changes nothing (an unlocked lock is what re-initialising
    makes), and importing ``multiprocessing.managers`` registers one for good
    (``BaseProxy._mutex``, a ``ForkAwareThreadLock``): without this test, every
    fork child of a program that had merely imported it would adopt the stdlib's
    state, pages copied for nothing. The walk reads the weak dictionary's own
    dict (its Python-level methods would write more pages).
    """
    lock_class = getattr(util, "ForkAwareThreadLock", None)
    reinit = getattr(lock_class, "_at_fork_reinit", None)
    for key, ref in forkers.data.items():
        obj = ref()
        if obj is None:
            continue
        if type(obj) is not lock_class or key[2] is not reinit or obj._lock.locked():
            return False
    return True


def _finish_stdlib_multiprocessing() -> None:
    """Before a fork child exits: ``multiprocessing.util._exit_function()``, if it has work.

    Its finalizers flush each ``multiprocessing.Queue``'s feeder thread (what the
    child put is in the pipe before it exits) and it joins the stdlib children
    the child started, as ``multiprocessing``'s own children do on their way out.
    The parent registered it with ``atexit``, which a fork child clears; one the
    child imported itself is registered again and runs once (it guards itself).
    """
    util, mp_process = _stdlib_modules()
    if util is None:
        return
    if util._finalizer_registry or mp_process._children:
        try:
            util._exit_function()
        except Exception:  # as multiprocessing's children do: say so, and exit all the same
            import traceback

            sys.stderr.write("proctor: multiprocessing's exit function failed in this child:\n")
            traceback.print_exc()


def _age_inherited_objects() -> None:
    """Count the objects a fork inherited as old ones: the child's collections skip them.

    A young generation's collection writes to each of its objects, and the parent's
    young objects (up to a threshold's worth, ~700) are the parent's pages: a child
    whose first collection scans them copies ~50 pages (~150 us). ``gc.freeze()``
    then ``gc.unfreeze()`` moves them, in a few writes, to the oldest generation,
    whose full collections still find any garbage among them; the child's young
    generation starts empty. (CPython's ``gc.freeze`` documentation gives the same
    advice for forked children.) Not where the program froze objects itself: unfreezing
    would undo that. (Asking whether it did walks every frozen object:
    ``gc.get_freeze_count()`` counts them one by one, ~75 us for the fork server's
    ~9,000 and more in a child, whose caches are cold: the fork server's children,
    whose objects are all frozen, do not ask.)
    """
    # A fork parent has loaded gc (_popen_fork imports it); importing it here would
    # cost more pages than it saves, so a fork of a process without it goes without.
    gc = sys.modules.get("gc")
    if gc is not None and gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def _run_and_report(
    process: Any, channel: _socket.socket | int, identity: tuple[int, int] | None, *, forked: bool
) -> int:
    """Run ``process`` (:func:`run_process`), send its outcome; return the exit code.

    ``identity`` is the channel's :func:`fd_identity`, taken before any code of the
    user's ran. A forked child (``forked``) leaves with ``os._exit`` right after: its
    channel is closed by that exit, not here (one object fewer written in every fork
    child).
    """
    pid = os.getpid()
    channel_fd = channel if isinstance(channel, int) else channel.fileno()
    exitcode, outcome = run_process(process, channel_fd)
    # A process the target forked (os.fork(), and it returned rather than calling
    # os._exit) came back here: the outcome is the child's to send, not its.
    reports = os.getpid() == pid
    if forked:
        _finish_stdlib_multiprocessing()
    if forked and (_atexit_count is None or _atexit_count()):
        # os._exit skips atexit: run the child's own handlers here, before its logs
        # are flushed and its outcome reported. (_become_forked_child cleared the
        # parent's, so a child that registered none has nothing to run or flush.)
        run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
        if run_exitfuncs is not None:
            run_exitfuncs()
            flush_std_streams()
    if "proctor._logging._forwarding" in sys.modules:
        sys.modules["proctor._logging._forwarding"].flush_child()
    if reports:
        # Nothing to report (the target returned None) is sent too, as an empty
        # message: the parent reads a channel that ends with no message at all
        # as an outcome lost (see _popen.Popen.outcome), not as None.
        _send_outcome(channel, identity, _wire.EMPTY_MESSAGE if outcome is None else outcome)
    if not forked:
        # The parent's sentinel (parent_process()) is this channel: it must not be
        # waited on once closed, its number free for another file (in the spawned
        # child's atexit handlers).
        if state.parent is not None:
            state.parent._release_sentinel()
        if still_holds(channel_fd, identity):
            if isinstance(channel, int):
                os.close(channel)
            else:
                channel.close()
        elif not isinstance(channel, int):
            channel.detach()  # (the number is another file's now: not closed)
    return exitcode


#: How many atexit handlers are registered: CPython's private name (a C call),
#: looked up once; None without it (then the handlers are run, there or not).
_atexit_count = getattr(atexit, "_ncallbacks", None)


#: Called once, just before the target runs, then forgotten: a fork server's
#: learner records there the pages it wrote (_forkserver's warm spares).
before_target: Callable[[], object] | None = None


def _before_target() -> None:
    global before_target
    call, before_target = before_target, None
    if call is not None:
        call()


def run_process(process: Any, channel_fd: int) -> tuple[int, bytes | None]:
    """Make ``process`` this process's identity, run it; return (exit code, outcome).

    The outcome is ``None`` for a target that returned ``None`` (or exited without
    an error): the child sends nothing, and the parent reads the empty channel as
    that same outcome; ``_outcome`` (with ``_pickle``) is imported only when there
    is something to send.

    ``process`` is the ``Process`` object the parent started (a copy of it: forked,
    or unpickled); ``channel_fd``, this child's end of its channel to the parent,
    is the parent's sentinel (``ParentProcess``), which reads end of file when the
    parent ends. Its ``run()`` is called with stdin on /dev/null; children it
    started are joined afterwards, and so are non-daemonic threads.
    """
    _methods.inherit_start_method(process._started_with)
    state.become_child(process, process._parent_seen_from_child(channel_fd))
    process._popen = None
    # util.register_after_fork: what the parent registered (inherited by a fork)
    # or what unpickling this child's work registered. Registering imports the
    # module, so a child in which it is not loaded has nothing to run.
    afterfork = sys.modules.get("proctor._core._afterfork")
    if afterfork is not None:
        afterfork.run_after_forkers()
    exitcode = 1
    message: tuple[Any, ...] | None = None
    try:
        try:
            close_stdin()
            _logger.info("child process calling self.run()")
            if before_target is not None:
                _before_target()
            value = process.run()
            exitcode = 0
            if value is not None:
                from . import _outcome

                message = _outcome.value_message(value)
        finally:
            exit_children()
    except SystemExit as exc:
        message = None
        if exc.code is None:
            exitcode = 0
        elif isinstance(exc.code, int):
            exitcode = exc.code
        else:
            sys.stderr.write(str(exc.code) + "\n")
            exitcode = 1
    except BaseException as exc:
        import traceback

        exitcode = 1
        sys.stderr.write(f"Process {process.name}:\n")
        traceback.print_exc()
        from . import _outcome

        message = _outcome.error_message(exc)
    finally:
        shutdown_threads()
        _logger.info("process exiting with exitcode %d", exitcode)
        flush_std_streams()
    if message is None:
        return exitcode, None
    from . import _outcome

    return exitcode, _outcome.encode(message)


def _send_outcome(
    channel: _socket.socket | int, identity: tuple[int, int] | None, outcome: bytes
) -> None:
    """Send ``outcome`` (a message's data, or ``_wire.EMPTY_MESSAGE``) to the parent,
    if ``channel`` is still the file ``identity`` names.

    Code in the child that closes descriptors it does not own (``os.closerange``
    in a target that daemonizes) may have closed the channel and given its number
    to a file of its own: nothing is written into that file. The parent then
    finds no message at all, and says the outcome was lost.
    """
    channel_fd = channel if isinstance(channel, int) else channel.fileno()
    if not still_holds(channel_fd, identity):
        return
    sock = None
    try:
        if outcome is _wire.EMPTY_MESSAGE:
            # (Whole, with no framing: a bare descriptor needs no socket object.)
            if isinstance(channel, int):
                os.write(channel, outcome)
            else:
                channel.send(outcome)
            return
        import _socket

        # A bare descriptor (see spawn_main) gets a socket object for this send only
        # (a large outcome goes as a memfd, with SCM_RIGHTS); the descriptor stays ours.
        sock = _socket.socket(fileno=channel) if isinstance(channel, int) else channel
        _wire.send_message(sock, outcome)
    except OSError:
        pass  # the parent is gone; nobody is left to tell
    finally:
        if sock is not None and sock is not channel:
            sock.detach()


def spawn_main(
    channel_fd: int,
    lifeline_fd: int = -1,
    spare_of: int = 0,
    *,
    bare: bool = False,
    native: bool | None = None,
) -> None:
    """Entry point of a spawned interpreter (``python -c ...``); never returns normally.

    Args:
        bare: the parent knows the start message carries no descriptors
            (``_wire.needs_socket``): it is read with ``os.read``, and the child
            loads ``_socket`` only if it has an outcome to send.
        spare_of: the parent's pid when this interpreter is a spare (``_spawn_spare``),
            started from the parent's main thread before it had any work: it
            watches its parent from the start, as it would once it had work.
        native: True when the parent loaded ``_start._native`` from the same
            directory and checked its build (``native_parent_death``): import it
            without the check, which would cost this child ``_core._accel``,
            ``zlib`` and the reading of the C source (~1 M instructions, as much
            as ctypes'). False when the parent found it missing, refused or
            switched off: go to ctypes without looking (~0.5 M).
    """
    if native is not None:
        _take_parents_word(native)
    os.set_inheritable(channel_fd, False)
    if lifeline_fd >= 0:
        os.set_inheritable(lifeline_fd, False)
        keep_lifeline(lifeline_fd)
    if spare_of:
        arm_parent_death(spare_of, True)
    # The C module's socket: what the channel is used for (recvmsg, sendmsg, close)
    # is all there, without socket.py's import.
    channel: _socket.socket | int = channel_fd
    if not bare:
        import _socket

        channel = _socket.socket(fileno=channel_fd)
    exitcode = run_from_channel(channel, exec_mode=True, spare=bool(spare_of))
    # sys.exit, not os._exit: a spawned child is a whole interpreter, and its
    # atexit handlers and non-daemon threads deserve a normal shutdown.
    sys.exit(exitcode)


# -- parent death ---------------------------------------------------------------

_own_lifeline: list[int] = []
_closes_lifeline_at_fork = False


def keep_lifeline(fd: int) -> None:
    """Hold ``fd``, this child's end of its lifeline (where the parent has no pidfd).

    A process forked from this one closes it at the fork (its hook is registered
    here, on first use: a process without a lifeline, as every child is where
    pidfds work, runs no hook for one in its forked children).
    """
    global _closes_lifeline_at_fork
    _own_lifeline.append(fd)
    if not _closes_lifeline_at_fork:
        _closes_lifeline_at_fork = True
        os.register_at_fork(after_in_child=_close_inherited_lifeline)


def arm_parent_death(parent_pid: int, use_pdeathsig: bool) -> None:
    """Make sure this process dies within a second of ``parent_pid``'s death."""
    if use_pdeathsig and _LINUX:
        # A fork parent has looked it up (load_prctl): one call, no more, in the child.
        arm = _prctl_fn if _prctl_fn is not None else load_prctl()
        if arm and arm(_SIGKILL):
            if os.getppid() != parent_pid:  # it died before the prctl took effect
                os.kill(os.getpid(), _SIGKILL)
            return
    watch = native_parent_watch()
    if watch is not None:
        try:
            watch(parent_pid)  # (kills this process at once if the parent is gone)
        except OSError:
            pass  # no thread to be had: the Python thread's start will say so
        else:
            return
    # Without the C module: a Python thread, which needs the GIL to act (a target
    # that holds it in one long C call keeps it from killing the child).
    import threading

    watcher = threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="proctor-parent-watch", daemon=True
    )
    watcher.start()


#: What sets the parent-death signal (a function of the signal's number, True when
#: set), False when nothing can, None until load_prctl has looked.
_prctl_fn: Any = None
#: proctor._start._native when it sets the signal, else None and why not (for `info`).
_native: Any = None
_native_reason = "not loaded yet"
#: _prctl_fn's value through _native, False when it cannot be, None until looked for.
_native_fn: Any = None


def load_prctl() -> Any:
    """Find once what sets the parent-death signal (Linux). Fork parents call this
    before forking, so each forked child only calls it.

    proctor's C module first (``_native.c``: one ``prctl`` call, nothing else
    loaded); without it (a pure-Python install, ``PROCTOR_PURE_PYTHON``, a stale
    build), libc's ``prctl`` through ctypes, which costs a spawned child
    ``_ctypes`` and ``libffi`` (~1 M instructions, ~0.6 ms).
    """
    global _prctl_fn
    if _prctl_fn is None:
        _prctl_fn = False
        if sys.platform.startswith("linux"):
            _prctl_fn = (
                _prctl_from_native() or _prctl_from_ctypes_core() or _prctl_from_ctypes() or False
            )
        else:
            _prctl_from_native()  # (no signal here, but the module's watch_parent)
    return _prctl_fn


def _prctl_from_native() -> Any:
    """The C module's setter, loaded and checked once (``_core._accel``), or False."""
    global _native_fn, _native_reason
    if _native_fn is None:
        from .._core._accel import load_native

        module, _native_reason = load_native(__package__ or "proctor._start")
        _native_fn = _arm_with(module) or False
    return _native_fn


def _take_parents_word(native: bool) -> None:
    """Use ``_start._native`` as the parent found it (see spawn_main's ``native``)."""
    global _native_fn, _native_reason
    if not native:
        _native_fn, _native_reason = False, "the parent has none"
        return
    try:
        from . import _native as module
    except ImportError:
        return  # load_prctl will say why
    _native_reason = "checked by the parent"
    _native_fn = _arm_with(module)


def _arm_with(module: Any) -> Any:
    global _native
    if module is None:
        return None
    _native = module
    set_signal = getattr(module, "set_parent_death_signal", None)  # (Linux only)
    if set_signal is None:
        return None

    def arm(sig: int) -> bool:
        try:
            set_signal(sig)
        except OSError:
            return False
        return True

    return arm


def native_parent_death() -> bool:
    """Whether children arm their parent-death signal or watch with ``_start._native``,
    which this process has loaded and checked (a spawn parent tells its children so).
    Without it, nothing more is loaded here: ``_ctypes`` only where it is called."""
    _prctl_from_native()
    return _native is not None


def native_parent_watch() -> Any:
    """``_start._native.watch_parent``, or None without the C module (loaded once).

    A fork parent has loaded the module before forking (``load_prctl``); a spawned
    child loads it as its parent said (``spawn_main``'s ``native``).
    """
    if _native is None:
        if _native_fn is not None:
            return None  # looked for already, or the parent said there is none
        _prctl_from_native()
    return getattr(_native, "watch_parent", None)


def describe_parent_death() -> str:
    """One line for ``python -m proctor info``: what arms a child's parent-death signal."""
    if not sys.platform.startswith("linux"):
        watch = native_parent_watch()
        how = "C accelerator's watch thread" if watch else "a watching Python thread"
        return f"{how} (no PR_SET_PDEATHSIG on this platform)"
    load_prctl()
    if _native is not None:
        return f"C accelerator ({_native.__file__})"
    how = "ctypes" if _prctl_fn else "a watching thread (no prctl found)"
    return f"{how} ({_native_reason})"


def _prctl_from_ctypes_core() -> Any:
    # The C module alone: importing it costs ~0.5 ms, while the ctypes package and a
    # CDLL (which builds classes) cost 2-3 ms more in every spawned child. dlopen,
    # dlsym and call_function are what the ctypes package itself calls; if a Python
    # lacks them, the package does the same work.
    try:
        import _ctypes

        # dlopen(None): the running program and the libc it links.
        address = _ctypes.dlsym(_ctypes.dlopen(None), "prctl")  # type: ignore[arg-type]
        call = _ctypes.call_function
    except (ImportError, OSError, AttributeError):
        return None
    return lambda sig: call(address, (_PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0


def _prctl_from_ctypes() -> Any:
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda sig: prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def _set_pdeathsig(sig: int) -> bool:
    arm = load_prctl()
    return bool(arm) and arm(int(sig))


def _watch_parent(parent_pid: int) -> None:
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(parent_pid)
        except OSError:
            pidfd = -1
        if pidfd >= 0:
            import select

            select.select([pidfd], [], [])  # readable when the parent has ended
            os.kill(os.getpid(), _SIGKILL)
    import time

    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_INTERVAL)
    os.kill(os.getpid(), _SIGKILL)


# -- small pieces of process hygiene ------------------------------------------------


def close_stdin() -> None:
    """Give the child an empty stdin, as multiprocessing does (two readers of one tty lose).

    Pointing descriptor 0 at /dev/null costs one ``dup2`` (the /dev/null
    descriptor is opened once). A forked ``sys.stdin`` would still hold what the
    parent had read ahead from its stdin (a ``readline()`` reads a whole chunk),
    and the child would read again what the parent reads: a forked child takes
    instead the stdin object its parent made for its children (``ready_blank_stdin``),
    which reads descriptor 0 and was never read in the parent. (multiprocessing
    opens a new one in each child: ~85 pages; reading the old one empty, ~20.)
    """
    try:
        os.dup2(_devnull[0] if _devnull else devnull_fd(), 0)
    except OSError:
        return
    blank = _blank_stdin
    if blank is not None and sys.stdin is not None and sys.stdin is not blank:
        sys.stdin = blank


# The stdin object a fork parent's children take (close_stdin): made once, before
# the first fork start, on descriptor 0 (/dev/null in the child), never read here.
_blank_stdin: Any = None


def ready_blank_stdin() -> None:
    """Before a fork start: make the stdin object the child takes, if not made yet."""
    global _blank_stdin
    if _blank_stdin is not None:
        return
    stdin = sys.stdin
    encoding = getattr(stdin, "encoding", None)
    errors = getattr(stdin, "errors", None)
    try:
        # (On descriptor 0 when this process has one, as the stdlib's child's is.)
        fd = 0 if fd_is_open(0) else devnull_fd()
        _blank_stdin = open(  # noqa: SIM115 (kept for good: every child takes it)
            fd,
            closefd=False,
            encoding=encoding if isinstance(encoding, str) else None,
            errors=errors if isinstance(errors, str) else None,
        )
    except (OSError, LookupError, ValueError):
        pass  # (the child keeps the stdin it inherits, on /dev/null)


#: The number of threads _thread started that still run (threading's, and any other
#: Python thread): a C call. CPython's private name, looked up once; None without it.
_thread_count = getattr(_thread, "_count", None)


def shutdown_threads() -> None:
    """Wait for the child's non-daemon threads, as the interpreter does at exit."""
    if _thread_count is not None and _thread_count() == 0:
        # The common case: no thread but this one runs, and a child skips even
        # threading's count (a Python call whose pages a fork child would copy).
        # (A forked child may count threads of its parent's that are not here: it
        # then asks threading, below.)
        return
    threading = sys.modules.get("threading")
    if threading is None or threading.active_count() == 1:
        # Nothing to wait for. A process that never imported threading has no
        # threads of threading's to wait for (the interpreter's exit would not either).
        return
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()


def _close_inherited_lifeline() -> None:
    # A process forked from a child must not hold that child's lifeline, or the
    # child's parent would not see it end until the grandchild ends too.
    while _own_lifeline:
        try:
            os.close(_own_lifeline.pop())
        except OSError:
            pass
