"""Tasks and an initializer shared by the pool and executor tests.

Module level, so that workers under every start method import them by name, and in
a module that imports nothing heavy: a worker that gets a test module's function
imports that module (pytest and all) inside the task, which under load can take
longer than a test's short task_timeout. The initializer gives each worker the
test's queue and event: a task reports on ``started`` from inside a worker, and
blocks until the test sets ``release``.
"""

from __future__ import annotations

import os

TIMEOUT = 60

# What the initializer installs in each worker.
_worker_state: dict[str, object] = {}


def _install(started, release):
    _worker_state["started"] = started
    _worker_state["release"] = release


def _report_and_block(value=None):
    """Tell the test this worker's pid, then wait for the release event."""
    _worker_state["started"].put(os.getpid())
    _worker_state["release"].wait(TIMEOUT)
    return value


def _report(value):
    _worker_state["started"].put(value)
    return value


def _block(value=None):
    """A task that "runs for ever": the test never sets the release event."""
    _worker_state["release"].wait(TIMEOUT)
    return value


def _block_at(x, victim=3):
    if x == victim:
        _block()
    return x


def _square(x):
    return x * x


def _fail_at(x, victim=50):
    """``x``, except at ``victim``, which raises ``ValueError(victim)``."""
    if x == victim:
        raise ValueError(x)
    return x


async def _async_fail_at(x, victim=50):
    return _fail_at(x, victim)


def _star_fail_at(x, victim):
    return _fail_at(x, victim)


def _pid(_=None):
    return os.getpid()


def log_tagged(tag, n=3):
    """Log ``n`` records "<tag> <i>" on ``app.worker`` (INFO); return ``tag``."""
    import logging

    log = logging.getLogger("app.worker")
    for i in range(n):
        log.info("%s %d", tag, i)
    return tag


def log_then_fail(tag):
    log_tagged(tag)
    raise ValueError(tag)


def log_then_die(tag):
    log_tagged(tag)
    os._exit(3)
