"""Fixtures every test gets: start methods, and a leak check around each test.

The leak check fails a test that leaves behind a child process, a thread, an open
file descriptor or a proctor ``/dev/shm`` entry. Helper processes that proctor
keeps for the life of the interpreter (the fork server) are started once before
the first test so that they are not mistaken for leaks.
"""

from __future__ import annotations

import gc
import os
import threading

import psutil
import pytest

import proctor
from helpers import START_METHODS, describe_shm_leftovers, open_fds, shm_entries, wait_until
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
    server, the /dev/null descriptor that fork parents open once for their
    children's stdin, and the main thread's wake-up (the descriptor its blocking
    calls wait on while other threads run, kept while the thread lives:
    _core._wakeup).
    """
    from proctor._core import _wakeup
    from proctor._reaper import _client as _reaper

    _reaper.ensure_started()
    _wakeup._wakeup()
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
    reaper_before = _reaper_connection()
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
        left = sorted(open_fds() - fds_before)
        pytest.fail(f"test left file descriptors open: {[(fd, _fd_target(fd)) for fd in left]}")
    reaper_after = _reaper_connection()
    # The same descriptor number, another file (or none): something closed the
    # connection's descriptor behind the client's back, so the releases sent since
    # went elsewhere (names left in /dev/shm follow).
    same_number = reaper_before and reaper_after and reaper_before[0] == reaper_after[0]
    if same_number and reaper_before != reaper_after:
        pytest.fail(
            f"descriptor {reaper_before[0]}, this process's connection to its resource "
            f"reaper, was closed during the test ({reaper_before} -> {reaper_after}: "
            "number, device, inode; -1 for a closed number)"
        )
    try:
        wait_until(lambda: not (shm_entries() - shm_before), timeout=5)
    except AssertionError:
        # The reaper unlinks a name a scan of /proc after its last user went, on its
        # own time: a machine that stalls for seconds (seen on shared CI VMs) can hold
        # it past the wait. A sync makes it handle every death and release that has
        # happened now, so what survives one is a leak, not a late reaper.
        _sync_reaper_if_connected()
        leftovers = shm_entries() - shm_before
        if leftovers:
            pytest.fail(
                f"test left /dev/shm entries: {sorted(leftovers)}\n"
                + describe_shm_leftovers(leftovers)
            )


def _sync_reaper_if_connected() -> None:
    from proctor._reaper import _client as _reaper
    from reaper_helpers import sync_reaper

    if _reaper.client().fd is not None:  # (asking must not start or connect a reaper)
        sync_reaper(timeout=30)


def _fd_target(fd: int) -> str:
    """What descriptor ``fd`` is, for a leak's message ("pipe:[123]", a path...)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _reaper_connection() -> tuple[int, int, int] | None:
    """(descriptor, device, inode) of this process's connection to its reaper, if any."""
    from proctor._reaper import _client as _reaper

    fd = _reaper.client().fd
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        return (fd, -1, -1)
    return (fd, st.st_dev, st.st_ino)


def pytest_configure(config):
    config.addinivalue_line("markers", "leaks_ok: skip the leak check (explain why in the test)")
