"""Fixtures every test gets: start methods, and a leak check around each test.

The leak check fails a test that leaves behind a child process, a thread, an open
file descriptor or a proctor ``/dev/shm`` entry. Helper processes that proctor
keeps for the life of the interpreter (the fork server) are started once before
the first test so that they are not mistaken for leaks.
"""

from __future__ import annotations

import gc
import threading

import psutil
import pytest

import proctor
from helpers import START_METHODS, open_fds, shm_entries, wait_until
from proctor._core import _runtime


@pytest.fixture(params=START_METHODS)
def start_method(request) -> str:
    """Run the test once under each start method; yields the method's name."""
    return request.param


@pytest.fixture
def ctx(start_method):
    """A proctor context for the parametrised start method."""
    return proctor.get_context(start_method)


@pytest.fixture(scope="session", autouse=True)
def _warm_helpers():
    """Start the long-lived helpers before the first leak check sees them.

    That is the resource reaper (and this process's connection to it), the fork
    server, and the /dev/null descriptor that fork parents open once for their
    children's stdin.
    """
    from proctor._reaper import _client as _reaper

    _reaper.ensure_started()
    for method in ("forkserver", "fork"):
        p = proctor.get_context(method).Process(target=int)
        p.start()
        p.join(30)
        p.close()
    yield


def _helper_pids() -> set[int]:
    return set(_runtime.helper_pids())


def _children() -> set[int]:
    me = psutil.Process()
    return {c.pid for c in me.children(recursive=True)} - _helper_pids()


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fail the test if it leaves processes, threads, fds or shm entries behind."""
    if request.node.get_closest_marker("leaks_ok"):
        yield
        return
    threads_before = set(threading.enumerate())
    fds_before = open_fds()
    shm_before = shm_entries()
    yield
    # Objects caught in reference cycles (an exception's traceback holding the
    # frame that holds a queue, say) release their descriptors when collected.
    gc.collect()
    try:
        wait_until(lambda: not _children(), timeout=5)
    except AssertionError:
        leftover = _children()
        for pid in leftover:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        pytest.fail(f"test left child processes behind: {sorted(leftover)}")
    try:
        wait_until(lambda: not (set(threading.enumerate()) - threads_before), timeout=5)
    except AssertionError:
        pytest.fail(f"test left threads behind: {set(threading.enumerate()) - threads_before}")
    try:
        wait_until(lambda: not (open_fds() - fds_before), timeout=5)
    except AssertionError:
        pytest.fail(f"test left file descriptors open: {sorted(open_fds() - fds_before)}")
    try:
        wait_until(lambda: not (shm_entries() - shm_before), timeout=5)
    except AssertionError:
        pytest.fail(f"test left /dev/shm entries: {sorted(shm_entries() - shm_before)}")


def pytest_configure(config):
    config.addinivalue_line("markers", "leaks_ok: skip the leak check (explain why in the test)")
