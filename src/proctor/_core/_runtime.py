"""Per-interpreter bookkeeping that several modules share.

Holds the pids of proctor's own long-lived helper processes (the fork server, the
resource reaper) so that leak checks and ``active_children()`` can tell them apart
from user children.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_helper_pids: set[int] = set()


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
