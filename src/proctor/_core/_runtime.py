"""Per-interpreter bookkeeping that several modules share.

Holds the pids of proctor's own long-lived helper processes (the fork server, the
resource reaper) so that leak checks and ``active_children()`` can tell them apart
from user children; and the name of this process (``MainProcess``, ``Process-1``...),
which lock reprs and forwarded log records show. Names belong to the process layer
(``_start``), above the layers that show them: it tells this module how to find the
name (:func:`set_process_name`), so nothing imports upwards.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

_lock = threading.Lock()
_helper_pids: set[int] = set()


def _main_process_name() -> str:
    return "MainProcess"


_process_name: Callable[[], str] = _main_process_name


def set_process_name(source: Callable[[], str]) -> None:
    """Make :func:`process_name` ask ``source`` (the process layer calls this)."""
    global _process_name
    _process_name = source


def process_name() -> str:
    """The name of this process, as ``current_process().name`` gives it."""
    return _process_name()


def register_helper(pid: int) -> None:
    """Record ``pid`` as one of proctor's own helper processes."""
    with _lock:
        _helper_pids.add(pid)


def unregister_helper(pid: int) -> None:
    """Forget a helper that has exited."""
    with _lock:
        _helper_pids.discard(pid)


def helper_pids() -> frozenset[int]:
    """The pids of proctor's live helper processes started by this process."""
    with _lock:
        return frozenset(_helper_pids)


def _reset_after_fork() -> None:
    # A forked child has no helpers of its own: those belong to its parent.
    global _lock
    _lock = threading.Lock()
    _helper_pids.clear()


os.register_at_fork(after_in_child=_reset_after_fork)
