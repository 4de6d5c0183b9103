"""proctor's logger: ``get_logger()``, ``log_to_stderr()`` and its life-cycle messages.

The logger is named ``proctor``, does not propagate to the root logger (as
``multiprocessing``'s does not), and knows two extra levels, ``SUBDEBUG`` (5) and
``SUBWARNING`` (25). proctor logs what happens to processes on it: a process
being started, a child calling ``run()``, a child exiting with its code, the
parent shutting down. Until someone asks for the logger those calls cost one
``None`` check: nothing imports :mod:`logging` on proctor's behalf.
"""

from __future__ import annotations

import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

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
    "log_to_stderr",
    "sub_debug",
    "sub_warning",
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
_lock = threading.Lock()


def get_logger() -> logging.Logger:
    """Return proctor's logger (named ``proctor``), creating it on first use."""
    global _logger
    with _lock:
        if _logger is None:
            import logging

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
    return None if _logger is None else _logger.getEffectiveLevel()


def _log(level: int, message: str, *args: object) -> None:
    logger = _logger
    if logger is not None and logger.isEnabledFor(level):
        # The record names the caller of debug()/info()..., not this module.
        logger.log(level, message, *args, stacklevel=3)


def sub_debug(message: str, *args: object) -> None:
    _log(SUBDEBUG, message, *args)


def debug(message: str, *args: object) -> None:
    _log(DEBUG, message, *args)


def info(message: str, *args: object) -> None:
    _log(INFO, message, *args)


def sub_warning(message: str, *args: object) -> None:
    _log(SUBWARNING, message, *args)
