"""Whether a child started now forwards its log records (``set_log_forwarding``).

Apart from ``_forwarding`` so that a fork start can decide without loading that
module (with ``pickle``, ``select`` and its fork hooks): a process whose logging
is not configured -- a library imported it and added only a ``NullHandler``, or
the user turned forwarding off -- never loads it. Each module a process loads is
memory every fork start copies the page tables of, and each fork hook is Python
code every fork runs, in the parent and in the child (issue 17).
"""

from __future__ import annotations

import sys

from . import _logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("forwarding_enabled", "set_log_forwarding")

_enabled = True

# A forwarding handler made in a fork parent, lent to each fork child it starts
# (``_forwarding.ready_fork_child``): the child gives it its request (the
# listener's request socket and its token) and uses it as its own. The parent
# never uses it. Not a handler of the parent's: _handlers_exist does not count it.
spare_handler: Any = None


def set_log_forwarding(enabled: bool) -> None:
    """Switch log forwarding on or off for children started from now on (default on).

    A single process can opt out with ``Process(..., forward_logs=False)``.
    """
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, not {enabled!r}")
    _enabled = enabled


def forwarding_enabled(per_process: bool | None) -> bool:
    """Whether a child started now forwards its logs.

    Only when this process has configured logging: some logging handler exists
    here (:func:`_handlers_exist`). Otherwise a record would meet logging's
    last-resort handler here exactly as it does in the child, so forwarding would
    change nothing but cost. (Importing logging is not enough: cloudpickle imports
    it, for one.)

    A ``logging.NullHandler`` does not count: it is how a library keeps logging
    unconfigured (logging's HOWTO), and a record it takes is dropped in the child
    just as it would be in the parent, so forwarding it would cost the pipe, the
    listener and each record's trip for nothing. (Its exact type: a subclass may
    handle records.)
    """
    wanted = _enabled if per_process is None else per_process
    if not wanted:
        return False
    # A child whose parent forwards its logs, and which has not imported logging yet:
    # install the forwarding first, so its children forward through it. (Its flag
    # tested here: the call alone is pages a fork parent copies at each start.)
    if _logger._waiting_for_logging:
        _logger.settle_pending()
    logging = sys.modules.get("logging")
    if logging is None:
        return False
    null = logging.NullHandler
    for handler in logging.root.handlers:
        if type(handler) is not null:
            return True
    return _handlers_exist(logging)


def _handlers_exist(logging: Any) -> bool:
    """Whether this process has a logging handler besides logging's last resort.

    Read from logging's list of weak references to every ``Handler`` made
    (``Handler.__init__`` adds one; a handler's collection removes it), not by
    looking at every logger: a start in a process with hundreds of loggers looked
    at each (~22 us with 550, and each logger's pages written, which a fork parent
    copies at every start: issue 17); the list holds a few handlers. A handler
    that exists but is on no logger turns forwarding on too: that costs the pipe
    and the listener, and changes nothing a handler would see, as the parent's
    loggers then hand the child's records to the same last resort the child's would.
    A ``NullHandler`` does not count (:func:`forwarding_enabled`).
    """
    refs = getattr(logging, "_handlerList", None)
    if refs is None:  # not CPython's logging: look at every logger
        return any(
            type(handler) is not logging.NullHandler
            for logger in list(logging.root.manager.loggerDict.values())
            for handler in getattr(logger, "handlers", ())
        )
    # logging made its own last resort, a Handler, at import.
    last_resort = getattr(logging, "_defaultLastResort", None)
    null = logging.NullHandler
    for ref in refs[:]:  # a copy: another thread's handler may be collected meanwhile
        handler = ref()
        if (
            handler is not None
            and type(handler) is not null
            and handler is not last_resort
            and handler is not logging.lastResort
            and handler is not spare_handler  # proctor's own, for fork children
        ):
            return True
    return False
