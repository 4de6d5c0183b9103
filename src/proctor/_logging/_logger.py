"""proctor's logger: ``get_logger()``, ``log_to_stderr()`` and its life-cycle messages.

The logger is named ``proctor``, does not propagate to the root logger (as
``multiprocessing``'s does not), and knows two extra levels, ``SUBDEBUG`` (5) and
``SUBWARNING`` (25). proctor logs what happens to processes on it: a process
being started, a child calling ``run()``, a child exiting with its code, the
parent shutting down. Until someone asks for the logger those calls cost one
``None`` check: nothing imports :mod:`logging` on proctor's behalf.

A new child does what its parent's logging asks (this logger's level, log
forwarding) when something in it imports :mod:`logging`
(:func:`when_logging_imported`), not before: a child that never logs does not pay
for importing it (about 8 ms of CPU, a quarter of a spawned child's start).
"""

from __future__ import annotations

import _thread
import os
import sys

from .._core import _runtime

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from typing import Any

__all__ = (
    "DEBUG",
    "DEFAULT_LOGGING_FORMAT",
    "INFO",
    "LOGGER_NAME",
    "NOTSET",
    "SUBDEBUG",
    "SUBWARNING",
    "debug",
    "effective_level",
    "get_logger",
    "info",
    "inherit_level",
    "log_to_stderr",
    "name_records_after_this_process",
    "prepare_record_namer",
    "settle_pending",
    "stand_by",
    "sub_debug",
    "sub_warning",
    "when_logging_imported",
)

LOGGER_NAME = "proctor"
# logging's levels, and the two that multiprocessing adds, without importing logging.
NOTSET = 0
SUBDEBUG = 5
DEBUG = 10
INFO = 20
SUBWARNING = 25
DEFAULT_LOGGING_FORMAT = "[%(levelname)s/%(processName)s] %(message)s"

_logger: logging.Logger | None = None
_stderr_handler: logging.Handler | None = None
_lock = _thread.allocate_lock()
# The level a child's parent gave this logger, until logging is imported here.
_inherited_level: int | None = None


def get_logger() -> logging.Logger:
    """Return proctor's logger (named ``proctor``), creating it on first use."""
    global _logger
    # Imported outside the lock: the first import of logging in a child runs the
    # when_logging_imported callbacks, which may ask for this logger.
    import logging

    with _lock:
        if _logger is None:
            logging.addLevelName(SUBDEBUG, "SUBDEBUG")
            logging.addLevelName(SUBWARNING, "SUBWARNING")
            logger = logging.getLogger(LOGGER_NAME)
            logger.propagate = False
            _logger = logger
        return _logger


def log_to_stderr(level: int | str | None = None) -> logging.Logger:
    """Send proctor's logger to stderr as ``[LEVEL/ProcessName] message``; return it.

    Calling it again does not add a second handler.

    Args:
        level: if given, set the logger's level (a number or a name such as ``"INFO"``).

    Raises:
        TypeError: for a level that is neither a number nor a string.
        ValueError: for an unknown level name.
    """
    global _stderr_handler
    import logging

    logger = get_logger()
    with _lock:
        if _stderr_handler is None:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(DEFAULT_LOGGING_FORMAT))
            logger.addHandler(handler)
            _stderr_handler = handler
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, (int, str)):
            raise TypeError(f"level must be a logging level number or name, not {level!r}")
        logger.setLevel(level)
    return logger


def effective_level() -> int | None:
    """The level of proctor's logger, or ``None`` while nobody has asked for it.

    A new child applies it to its own logger, as ``multiprocessing`` children do.
    """
    return _inherited_level if _logger is None else _logger.getEffectiveLevel()


def inherit_level(level: int) -> None:
    """Give this logger ``level`` (a new child's, from its parent) once logging is imported."""
    global _inherited_level
    _inherited_level = level
    when_logging_imported(lambda: get_logger().setLevel(level))


def name_records_after_this_process() -> None:
    """Have :mod:`logging` stamp each record's ``processName`` with this process's name.

    logging asks ``multiprocessing.current_process()`` for it, which in a proctor
    child is the stdlib's main process (or not imported at all): every record would
    say "MainProcess", where a stdlib child's says its own name. A new child calls
    this once logging is imported, whether its records are forwarded or not.
    Wrapping the factory costs a record about 2,200 instructions (of ~60,000).
    Idempotent: a forked grandchild inherits the wrapper and keeps it as it is.
    """
    import logging

    previous = logging.getLogRecordFactory()
    if getattr(previous, "_names_proctor_processes", False):
        return
    prepared = _prepared_namer
    if prepared is not None and prepared[0] is previous:
        factory = prepared[1]  # made by the fork parent (prepare_record_namer)
    else:
        factory = _record_namer(previous)
    logging.setLogRecordFactory(factory)


def prepare_record_namer() -> None:
    """In a fork parent: make the factory its next children install, for them.

    Made in each child, it was pages written there (~10 of a fork start's,
    issue 17); made here, it is made again only when logging's factory changes.
    """
    global _prepared_namer
    # (logging is loaded: a fork start forwards only then. Found in sys.modules,
    # and its factory read directly: an import statement and a call are objects
    # written, pages copied after the fork, issue 17.)
    previous = sys.modules["logging"]._logRecordFactory
    prepared = _prepared_namer
    if prepared is None or prepared[0] is not previous:
        if getattr(previous, "_names_proctor_processes", False):
            return  # this process is a child that names its records already
        _prepared_namer = (previous, _record_namer(previous))


# (logging's record factory then, the factory that wraps it) or None.
_prepared_namer: tuple[Callable[..., Any], Callable[..., Any]] | None = None


def _record_namer(previous: Callable[..., Any]) -> Callable[..., Any]:
    """A record factory that calls ``previous`` and names the record after this process."""

    def record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.processName = _runtime.process_name()
        return record

    record_factory._names_proctor_processes = True  # type: ignore[attr-defined]
    return record_factory


def when_logging_imported(callback: Callable[[], object]) -> None:
    """Call ``callback`` now if :mod:`logging` is imported, else right after it is.

    Callbacks run in the order given, in the thread that imports logging, as soon
    as logging's module has run and before the import returns, so no record can be
    made before they ran. One that raises is reported on stderr; the import goes on.
    """
    global _waiting_for_logging
    if "logging" in sys.modules:
        callback()
        return
    # Only a process that has inserted a finder (or forked from one that had) can
    # have one to join; every finder looked at is a page a fork child copies. A
    # standing finder (stand_by) is not joined: it does not run in its owner.
    if _waiting_for_logging:
        for finder in sys.meta_path:
            if isinstance(finder, _AfterLoggingImport) and not finder.owner:
                finder.callbacks.append(callback)
                return
    _waiting_for_logging = True
    sys.meta_path.insert(0, _AfterLoggingImport([callback]))


# Whether an _AfterLoggingImport may be waiting in sys.meta_path: settle_pending(),
# called at every start, then skips looking through the finders (each one it
# looks at is an object whose page a fork parent copies again at each start).
_waiting_for_logging = False
#: Whether this process has a standing finder (stand_by) waiting for logging: a
#: child forked from it names its records without doing anything at its start.
finder_standing = False


def stand_by(in_child: Callable[[], bool] | None = None) -> None:
    """Make the children this process forks name their records once they import logging.

    A process about to fork children (a fork parent at its first fork start, the
    fork server at boot) that has not imported :mod:`logging` puts, once, a finder
    in ``sys.meta_path`` that every child inherits: in a child that imports
    logging it calls :func:`name_records_after_this_process`, as
    :func:`when_logging_imported` would, without each child making and inserting
    a finder of its own at its start (the largest part of a no-op fork child's
    own work: up to 11 pages copied). In this process it does nothing: when this
    process imports logging, the finder leaves ``sys.meta_path`` and the children
    forked from then on name their records at their start.

    Args:
        in_child: says whether this process is one of the children the finder is
            for (a fork of this process that proctor started, not one that
            ``os.fork()`` or ``multiprocessing`` made); ``None``: every process
            but this one.
    """
    global finder_standing
    if finder_standing or "logging" in sys.modules:
        return
    finder_standing = True
    finder = _AfterLoggingImport([name_records_after_this_process], os.getpid(), in_child)
    sys.meta_path.insert(0, finder)


def settle_pending() -> None:
    """Import logging now if settings from this child's parent wait for it.

    A child about to start a child of its own calls this, so its start is decided
    as if those settings had applied from the beginning (log forwarding above all).
    """
    if (
        _waiting_for_logging
        and "logging" not in sys.modules
        and any(
            isinstance(finder, _AfterLoggingImport) and not finder.owner for finder in sys.meta_path
        )
    ):
        import logging  # noqa: F401  (runs the callbacks)


class _AfterLoggingImport:
    """A meta path finder that lets the others find :mod:`logging`, then wraps its loader.

    ``owner``: 0 for a finder whose callbacks run in this process; the pid of
    the process that stood it by (:func:`stand_by`) for one whose callbacks run
    only in the children forked from that process.
    """

    def __init__(
        self,
        callbacks: list[Callable[[], object]],
        owner: int = 0,
        in_child: Callable[[], bool] | None = None,
    ) -> None:
        self.callbacks = callbacks
        self.owner = owner
        self.in_child = in_child

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "logging":
            return None
        sys.meta_path.remove(self)  # once: later imports find logging in sys.modules
        if self.owner:
            global finder_standing
            finder_standing = False
            if os.getpid() == self.owner or (self.in_child is not None and not self.in_child()):
                return None
        # (A copy: a standing finder further on removes itself when asked.)
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                break
        else:
            return None
        # Every loader has exec_module since Python 3.4 (load_module is deprecated).
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RunAfter(spec.loader, self.callbacks)
        return spec


class _RunAfter:
    """A loader that runs the real one, then the callbacks."""

    def __init__(self, loader: Any, callbacks: list[Callable[[], object]]) -> None:
        self._loader = loader
        self._callbacks = callbacks

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        # The module names its real loader, as if this one had never been there.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        for callback in self._callbacks:
            try:
                callback()
            except Exception as exc:
                sys.stderr.write(
                    f"proctor: could not apply the parent's logging settings in this "
                    f"child ({type(exc).__name__}: {exc}); its records may not reach "
                    "the parent\n"
                )


def _log(level: int, message: str, *args: object) -> None:
    logger = _logger
    if logger is None and _inherited_level is not None and level >= _inherited_level:
        logger = get_logger()  # a child's first record that its level lets through
    if logger is not None and logger.isEnabledFor(level):
        # The record names the caller of debug()/info()..., not this module.
        logger.log(level, message, *args, stacklevel=3)


def sub_debug(message: str, *args: object) -> None:
    _log(SUBDEBUG, message, *args)


def debug(message: str, *args: object) -> None:
    # Process.start() logs with this: without a logger (the usual case) the call
    # ends here, short of _log's pages that a fork parent copies at every start.
    if _logger is not None or _inherited_level is not None:
        _log(DEBUG, message, *args)


def info(message: str, *args: object) -> None:
    _log(INFO, message, *args)


def sub_warning(message: str, *args: object) -> None:
    _log(SUBWARNING, message, *args)
