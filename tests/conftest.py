"""Fixtures every test gets: start methods, and a leak check around each test.

The leak check fails a test that leaves behind a child process, a thread, an open
file descriptor or a proctor ``/dev/shm`` entry. Helper processes that proctor
keeps for the life of the interpreter (the fork server) are started once before
the first test so that they are not mistaken for leaks. The CPython suites run in
the background from the session's start (``compat/background.py``, their tests
last): their processes are no test's children.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable

import psutil
import pytest

import proctor
from helpers import (
    START_METHODS,
    child_processes,
    describe_shm_leftovers,
    open_fds,
    shm_entries,
    shm_names,
    wait_until,
)


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


@pytest.fixture(scope="session", autouse=True)
def background_suites(request, tmp_path_factory):
    """The CPython suites whose tests are selected, started before the first test
    and run beside the others (``compat.background``): suite -> its ``Driver``."""
    from compat import background

    selected: dict[str, set[str]] = {}
    for item in request.session.items:
        marker = item.get_closest_marker("background_suite")
        if marker is not None:
            selected.setdefault(marker.args[0], set()).add(item.callspec.params["method"])
    drivers = {
        suite: background.start(suite, sorted(methods), tmp_path_factory.mktemp(suite))
        for suite, methods in selected.items()
    }
    yield drivers
    for driver in drivers.values():
        driver.stop()


def pytest_collection_modifyitems(config, items):
    # The background suites' tests wait for their runs: last, when those are done.
    items.sort(key=lambda item: item.get_closest_marker("background_suite") is not None)


#: Seconds that what a test leaves may take to go by itself before the leak check
#: collects garbage: the reaper's batching of released names (50 ms) and a helper
#: thread's exit take under 0.2 s on a loaded 2-core machine.
SETTLING = 0.3


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

    # What a test leaves is mostly on its way out: a helper thread ending, a closed
    # lock's name that the reaper unlinks once it has batched it (~50 ms). Objects
    # caught in reference cycles (an exception's traceback holding the frame that
    # holds a queue, say) release theirs only when collected; a full collection of
    # this long-lived process (every test module, every report) takes 0.1-0.2 s, a
    # third of the suite's time when it ran after every test. So: the young
    # generations (the test's own recent cycles, in well under a millisecond), a
    # short wait for what goes by itself, and only then a full collection and the
    # long waits. (A cycle that holds nothing new is collected later, with
    # whatever test runs then.)
    def settled() -> bool:
        return not _anything_left(threads_before, fds_before, shm_before)

    if settled():
        return
    gc.collect(1)
    if _within(SETTLING, settled):
        return
    gc.collect()
    try:
        wait_until(lambda: not child_processes(), timeout=5)
    except AssertionError:
        leftover = child_processes()
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


def _within(seconds: float, predicate: Callable[[], bool]) -> bool:
    """Whether ``predicate`` holds within ``seconds`` (polled, as ``wait_until``)."""
    try:
        wait_until(predicate, timeout=seconds)
    except AssertionError:
        return False
    return True


def _anything_left(threads_before: set, fds_before: set[int], shm_before: set[str]) -> bool:
    """Whether a thread, descriptor, /dev/shm entry or child is there now that was
    not before the test (a look, without waiting; the cheapest questions first)."""
    if set(threading.enumerate()) - threads_before or open_fds() - fds_before:
        return True
    if not shm_names() <= shm_before and shm_entries() - shm_before:
        return True
    return bool(child_processes())


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
    config.addinivalue_line(
        "markers",
        "background_suite(name): checks the results of the named CPython suite, run in "
        "the background from the session's start (compat.background); runs last",
    )
