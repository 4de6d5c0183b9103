"""SharedMemory and shared numpy arrays: sharing, in-place writes, lifetime, errors."""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from helpers import pid_exists, wait_until
from proctor._connections._pipe import Pipe
from proctor._reaper import _client as _reaper
from proctor.shared_memory import ShareableList, SharedMemory, shared_array
from reaper_helpers import sync_reaper

np = pytest.importorskip("numpy")

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")


@pytest.fixture(scope="module", autouse=True)
def _reaper_connection():
    # Open this process's reaper connection before the per-test fd leak check looks.
    _reaper.ensure_started()
    yield


def _exists(name: str) -> bool:
    return os.path.exists("/dev/shm/" + name.lstrip("/"))


@contextlib.contextmanager
def _segment(size: int):
    """A new segment, closed and then unlinked at the end of the block.

    Its creator (this test process) lives on, so nothing else would unlink it.
    """
    with SharedMemory(create=True, size=size) as shm:
        try:
            yield shm
        finally:
            shm.unlink()


# ─── one process ─────────────────────────────────────────────────────────────


def test_create_then_attach_by_name_shares_the_bytes():
    with SharedMemory(create=True, size=100) as created:
        assert created.name.startswith("proctor")
        assert created.size == 100
        created.buf[:5] = b"hello"
        with SharedMemory(created.name) as attached:
            assert attached.size >= 100
            assert bytes(attached.buf[:5]) == b"hello"
            attached.buf[5:7] = b"!!"
        assert bytes(created.buf[:7]) == b"hello!!"
        created.unlink()


def test_segment_is_readable_and_writable_by_its_owner_only():
    with _segment(10) as shm:
        mode = os.stat("/dev/shm/" + shm.name).st_mode & 0o777
        assert mode == 0o600


def test_a_segment_its_creator_closed_stays_until_it_unlinks_it():
    # The stdlib's documented order is close() then unlink(): the reaper must not
    # reclaim the segment in between (it did, now and then, before the creator's
    # hold: CPython's test_shared_memory_ShareableList_pickling failed in CI).
    shm = SharedMemory(create=True, size=10)
    name = shm.name
    shm.buf[:2] = b"ok"
    shm.close()
    shm.close()  # idempotent
    sync_reaper()  # everything the reaper would do about the close is done
    assert _exists(name), "reclaimed while its live creator had not unlinked it"
    with SharedMemory(name) as attached:  # attach by name after the creator closed
        assert bytes(attached.buf[:2]) == b"ok"
    sync_reaper()
    assert _exists(name)
    shm.unlink()
    assert not _exists(name)


def test_a_segment_its_creator_closed_is_reclaimed_when_the_creator_exits():
    creator = _script(
        """
        shm = SharedMemory(create=True, size=64)
        print(shm.name, flush=True)
        shm.close()
        """,
        independent=False,
    )
    name = creator.stdout.readline().strip()
    _finish(creator, kill=False)
    assert creator.returncode == 0
    wait_until(lambda: not _exists(name), timeout=5)


def test_unlink_removes_the_name_and_a_second_unlink_says_so():
    shm = SharedMemory(create=True, size=10)
    shm.unlink()
    assert not _exists(shm.name)
    shm.buf[0] = 1  # the mapping stays usable until closed
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        shm.unlink()
    shm.close()


def test_attaching_to_a_missing_name_names_it():
    with pytest.raises(FileNotFoundError, match="proctor-no-such-segment"):
        SharedMemory("proctor-no-such-segment")


def test_creating_an_existing_name_fails_and_leaves_it_alone():
    with _segment(10) as shm:
        shm.buf[0] = 42
        with pytest.raises(FileExistsError, match=shm.name):
            SharedMemory(shm.name, create=True, size=10)
        sync_reaper()
        assert _exists(shm.name)
        assert shm.buf[0] == 42


def test_a_name_with_or_without_leading_slash_is_the_same_segment():
    with _segment(10) as shm, SharedMemory("/" + shm.name) as other:
        assert other.name == shm.name


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"create": True}, ValueError, "positive"),
        ({"create": True, "size": -1}, ValueError, "negative"),
        ({"create": True, "size": 1.5}, TypeError, "int"),
        ({}, ValueError, "name is required"),
        ({"name": 42}, TypeError, "str"),
        ({"name": "a/b", "create": True, "size": 1}, ValueError, "'/'"),
        ({"name": "/", "create": True, "size": 1}, ValueError, "empty"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        SharedMemory(**kwargs)


def test_size_is_ignored_when_attaching_as_the_stdlib_documents():
    with _segment(10) as shm:
        shm.buf[:3] = b"abc"
        for size in (1 << 20, 5, 0):
            with SharedMemory(shm.name, size=size) as other:
                # The segment's own size (Linux: exactly; macOS rounds it to a page).
                assert shm.size <= other.size < 1 << 20 and len(other.buf) == other.size
                assert bytes(other.buf[:3]) == b"abc"
        with pytest.raises(ValueError, match="negative"):
            SharedMemory(shm.name, size=-1)


def test_buf_after_close_raises_and_repr_shows_state():
    shm = SharedMemory(create=True, size=10)
    assert "open" in repr(shm) and shm.name in repr(shm)
    shm.close()
    assert "closed" in repr(shm)
    with pytest.raises(ValueError, match="closed"):
        shm.buf  # noqa: B018
    shm.unlink()


def test_close_while_views_exist_raises_buffer_error_then_succeeds():
    shm = SharedMemory(create=True, size=16)
    view = np.frombuffer(shm.buf, dtype=np.uint8)
    with pytest.raises(BufferError, match="delete them"):
        shm.close()
    del view
    shm.close()
    assert shm.closed
    shm.unlink()


def test_untracked_segment_waits_for_an_explicit_unlink():
    shm = SharedMemory(create=True, size=10, track=False)
    try:
        shm.close()
        sync_reaper()
        assert _exists(shm.name)
    finally:
        shm.unlink()


def test_pickle_by_name_outside_a_start():
    with _segment(10) as shm:
        shm.buf[0] = 7
        with pickle.loads(pickle.dumps(shm)) as copy:
            assert copy.name == shm.name and copy.buf[0] == 7


# ─── children ────────────────────────────────────────────────────────────────


def _write_hello(shm, offset):
    shm.buf[offset : offset + 5] = b"hello"
    return bytes(shm.buf[:2])


def test_child_writes_in_place_and_parent_sees_it(ctx):
    with _segment(64) as shm:
        shm.buf[:2] = b"hi"
        p = ctx.Process(target=_write_hello, args=(shm, 10))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert p.result == b"hi"
        assert bytes(shm.buf[10:15]) == b"hello"
        p.close()


def _hold_until_told(shm, conn):
    conn.send(bytes(shm.buf[:3]))
    conn.recv(timeout=30)
    shm.buf[3] = 1


def test_segment_survives_its_creator_closing_while_a_child_uses_it(ctx):
    parent_end, child_end = Pipe()
    shm = SharedMemory(create=True, size=8)
    name = shm.name
    shm.buf[:3] = b"abc"
    p = ctx.Process(target=_hold_until_told, args=(shm, child_end))
    p.start()
    child_end.close()
    assert parent_end.recv(timeout=30) == b"abc"
    shm.close()
    sync_reaper()
    assert _exists(name), "unlinked while a child still uses it"
    parent_end.send("go")
    p.join(30)
    assert p.exitcode == 0
    p.close()
    parent_end.close()
    shm.unlink()
    assert not _exists(name)


def _create_and_park(conn):
    shm = SharedMemory(create=True, size=8)
    conn.send(shm.name)
    conn.recv(timeout=60)


def test_segment_is_unlinked_when_its_only_user_is_sigkilled(ctx):
    # The child creates it and is its only user: nobody unlinks it, nobody closes it.
    parent_end, child_end = Pipe()
    p = ctx.Process(target=_create_and_park, args=(child_end,))
    p.start()
    child_end.close()
    name = parent_end.recv(timeout=30)
    assert _exists(name)
    p.kill()
    p.join(30)
    p.close()
    parent_end.close()
    wait_until(lambda: not _exists(name), timeout=5)


def _create_and_send(queue, conn):
    for n, send in ((1, queue.put), (2, conn.send)):
        shm = SharedMemory(create=True, size=8)
        shm.buf[0] = n
        send(shm)
        shm.close()
    shm = SharedMemory(create=True, size=8)
    shm.buf[0] = 3
    return shm


def test_a_segment_a_child_sent_and_returned_outlives_the_child_until_read(ctx):
    # Sent by name (a queue item, a message, the result) by a child that then
    # exits: the reaper must not reclaim it before the parent has attached.
    from proctor import Queue

    queue = Queue()
    parent_end, child_end = Pipe()
    p = ctx.Process(target=_create_and_send, args=(queue, child_end))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    sync_reaper()  # the reaper has dealt with the child's end
    received = [queue.get(timeout=30), parent_end.recv(timeout=30), p.result]
    assert [shm.buf[0] for shm in received] == [1, 2, 3]
    for shm in received:
        shm.close()
        shm.unlink()
    p.close()
    queue.close()
    parent_end.close()
    child_end.close()


SCRIPT_PRELUDE = """
import os, sys
import proctor
from proctor.shared_memory import SharedMemory
"""


def _script(code: str, *args: str, independent: bool) -> subprocess.Popen:
    env = dict(os.environ)
    if independent:
        env.pop(_reaper.ENV_ADDRESS, None)
    else:
        env[_reaper.ENV_ADDRESS] = _reaper.address()
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT_PRELUDE + textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )


def _finish(proc: subprocess.Popen, *, kill: bool) -> None:
    if kill:
        proc.kill()
    proc.stdin.close()
    proc.wait(30)
    proc.stdout.close()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_every_user_sigkilled_leaves_nothing_in_dev_shm(method):
    creator = _script(
        """
        def park(shm):
            print(os.getpid(), flush=True)
            # Not stdin: a forkserver child's is /dev/null, and it would exit
            # before the test kills it. Parked until killed.
            import threading
            threading.Event().wait()

        if __name__ == "__main__":
            shm = SharedMemory(create=True, size=4096)
            print(shm.name, flush=True)
            p = proctor.get_context(sys.argv[1]).Process(target=park, args=(shm,))
            p.start()
            os.read(0, 1)
        """,
        method,
        independent=True,
    )
    name = creator.stdout.readline().strip()
    child_pid = int(creator.stdout.readline())
    assert _exists(name)
    os.kill(child_pid, 9)
    _finish(creator, kill=True)
    wait_until(lambda: not pid_exists(child_pid), timeout=5)
    wait_until(lambda: not _exists(name), timeout=5)


@pytest.mark.parametrize("creator_ends", ["killed", "exits"])
def test_unrelated_process_keeps_a_segment_attached_by_name(creator_ends):
    creator = _script(
        """
        shm = SharedMemory(create=True, size=64)
        shm.buf[:6] = b"shared"
        print(shm.name, flush=True)
        sys.stdin.readline()
        """,
        independent=False,
    )
    name = creator.stdout.readline().strip()
    attacher = _script(
        """
        shm = SharedMemory(sys.argv[1])
        print("attached", flush=True)
        sys.stdin.readline()
        print(bytes(shm.buf[:6]).decode(), flush=True)
        sys.stdin.readline()
        """,
        name,
        independent=True,
    )
    assert attacher.stdout.readline().strip() == "attached"
    _finish(creator, kill=creator_ends == "killed")
    sync_reaper()  # the creator's reaper (ours) has seen it go
    assert _exists(name), "unlinked while an unrelated process still uses it"
    attacher.stdin.write("\n")
    attacher.stdin.flush()
    assert attacher.stdout.readline().strip() == "shared"
    _finish(attacher, kill=False)
    wait_until(lambda: not _exists(name), timeout=5)


# ─── shared numpy arrays ─────────────────────────────────────────────────────


def _fill(array, value):
    array[...] = value


def test_child_fills_a_shared_array_in_place(ctx):
    a = shared_array((4, 5), np.float64)
    p = ctx.Process(target=_fill, args=(a, 2.5))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert (a == 2.5).all()
    p.close()


def test_child_writes_through_views_of_a_shared_array(ctx):
    a = shared_array(12, "i4")
    b = shared_array((3, 4), "i8", order="F")
    p = ctx.Process(target=_fill, args=(a[::3], -1))
    q = ctx.Process(target=_fill, args=(b.T[1], 9))
    p.start()
    q.start()
    p.join(30)
    q.join(30)
    assert p.exitcode == 0 and q.exitcode == 0
    assert a.tolist() == [-1, 0, 0] * 4
    assert b[:, 1].tolist() == [9, 9, 9] and int(b.sum()) == 27
    p.close()
    q.close()


def _checksum(array):
    return float(array.sum()), type(array).__name__


def test_results_of_computations_are_sent_by_value(ctx):
    a = shared_array(4, "f8")
    a[:] = 1
    computed = a * 3  # ordinary memory
    assert a.is_shared and not computed.is_shared
    p = ctx.Process(target=_checksum, args=(computed,))
    p.start()
    p.join(30)
    assert p.result[0] == 12.0
    p.close()


def test_shared_array_is_an_ndarray_with_zeros():
    a = shared_array((2, 3), np.int16)
    assert isinstance(a, np.ndarray)
    assert a.shape == (2, 3) and a.dtype == np.int16
    assert not a.any()
    assert shared_array(0).size == 0


def test_shared_array_cannot_go_into_a_plain_pickle():
    a = shared_array(3)
    with pytest.raises(RuntimeError, match="argument of Process"):
        pickle.dumps(a)


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (((2,), object), {}, TypeError),
        (((-1,),), {}, ValueError),
        (((2,),), {"order": "K"}, ValueError),
        (((2,), "not-a-dtype"), {}, TypeError),
    ],
)
def test_shared_array_bad_arguments(args, kwargs, error):
    with pytest.raises(error):
        shared_array(*args, **kwargs)


# ─── ShareableList ───────────────────────────────────────────────────────────


def test_shareable_list_round_trips_every_item_type():
    items = [1, -(2**63), 2.5, True, False, None, "héllo", b"\x00bytes"]
    sl = ShareableList(items)
    try:
        assert list(sl) == items and len(sl) == len(items)
        assert sl[-1] == b"\x00bytes"
        assert sl.index("héllo") == 6 and sl.count(None) == 1
        assert sl.shm.name.startswith("proctor") and "héllo" in repr(sl)
        other = ShareableList(name=sl.shm.name)
        sl[0] = "short"  # a number's slot takes up to 8 bytes of text
        sl[6] = None
        assert other[0] == "short" and other[6] is None
        other.shm.close()
    finally:
        sl.shm.close()
        sl.shm.unlink()


def test_shareable_list_errors_are_clear():
    sl = ShareableList(["abc", 1])
    try:
        with pytest.raises(ValueError, match="at most 8"):
            sl[0] = "x" * 9
        with pytest.raises(IndexError, match="out of range"):
            sl[2]
        with pytest.raises(TypeError, match="integers"):
            sl["0"]
        with pytest.raises(ValueError, match="64-bit"):
            sl[1] = 2**64
        assert sl[1] == 1  # a refused value leaves the item as it was
        with pytest.raises(ValueError, match="64-bit"):
            sl[0] = -(2**63) - 1
        assert sl[0] == "abc"
        with pytest.raises(ValueError, match="not in"):
            sl.index("zzz")
    finally:
        sl.shm.close()
        sl.shm.unlink()
    with pytest.raises(TypeError, match="object"):
        ShareableList([object()])
    with _segment(64) as plain:
        plain.buf[:8] = b"\xff" * 8  # a count of -1
        with pytest.raises(ValueError, match="does not hold a ShareableList"):
            ShareableList(name=plain.name)
        plain.buf[:8] = (1000).to_bytes(8, sys.byteorder)  # more items than fit
        with pytest.raises(ValueError, match="does not hold a ShareableList"):
            ShareableList(name=plain.name)


def test_shareable_list_format_and_slots_are_the_stdlibs():
    sl = ShareableList(["howdy", b"HoWdY", -273.154, 100, None, True, 42])
    empty = ShareableList()  # as in the stdlib: an empty list, not an error
    try:
        assert sl.format == "8s8sdqxxxxxx?xxxxxxxx?q"
        assert sl._get_packing_format(-1) == "q"
        sl[4] = "some"  # None's 8-byte slot takes up to 8 bytes of text
        assert sl.format == "8s8sdq8sxxxxxxx?q" and sl[4] == "some"
        sl[0] = "encodés"  # exactly 8 bytes of UTF-8: fits
        assert sl[0] == "encodés" and sl[1] == b"HoWdY"
        with pytest.raises(ValueError, match="exceeds available storage"):
            sl[0] = "encodées"  # 9 bytes
        assert sl[1] == b"HoWdY"
        # A copy sizes its slots as the stdlib does: 7 characters, 8 bytes -> 8.
        copy = ShareableList(sl)
        assert copy.format == sl.format and list(copy) == list(sl)
        copy.shm.close()
        copy.shm.unlink()
        # 7 characters but 14 bytes: the room it needs (the stdlib's would cut it).
        wide = ShareableList(["é" * 7])
        assert wide.format == "16s" and wide[0] == "é" * 7
        wide.shm.close()
        wide.shm.unlink()
        assert len(empty) == 0 and empty.format == "" and list(empty) == []
    finally:
        for made in (sl, empty):
            made.shm.close()
            made.shm.unlink()


def test_shareable_list_keeps_trailing_nul_bytes():
    sl = ShareableList([b"ab", "xy"])
    try:
        sl[0] = b"ab\x00"
        sl[1] = "x\x00"
        assert sl[0] == b"ab\x00" and sl[1] == "x\x00"
        assert sl.format == "3s5x2s6x"  # exact length, then padding
        sl[0] = b"\x00" * 8  # a full slot
        assert sl[0] == b"\x00" * 8 and sl._get_packing_format(0) == "8s0x"
        sl[0] = b"ab"
        assert sl[0] == b"ab" and sl._get_packing_format(0) == "8s"
    finally:
        sl.shm.close()
        sl.shm.unlink()


# A stdlib ShareableList that misreads a header allocates what it claims (a list of
# 10**18 items, say): cap the script's memory so that a failure stays a failure.
_MEMORY_CAP = "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))\n"


def _stdlib(script: str, *args: str) -> list[str]:
    """Run ``script`` with the standard library's multiprocessing; return its output lines."""
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_CAP + textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=30,  # (within the test's own timeout, so that it is never orphaned)
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_stdlib_program_attaches_to_a_proctor_shareable_list():
    sl = ShareableList(["howdy", b"HoWdY", -273.154, 100, None, True, 42, b"nul\x00"])
    try:
        seen = _stdlib(
            """
            import sys
            from multiprocessing import resource_tracker, shared_memory

            sl = shared_memory.ShareableList(name=sys.argv[1])
            # Its tracker would unlink the segment at exit (bpo-38119).
            resource_tracker.unregister(sl.shm._name, "shared_memory")
            print(list(sl))
            print(sl.format)
            sl[0] = "stdlib"
            sl[3] = 2.5
            sl[4] = 7
            sl.shm.close()
            """,
            sl.shm.name,
        )
        # The stdlib strips the NUL at the end of the last item (gh-106939).
        assert seen == [
            "['howdy', b'HoWdY', -273.154, 100, None, True, 42, b'nul']",
            "8s8sdqxxxxxx?xxxxxxxx?q4s4x",
        ]
        assert list(sl) == ["stdlib", b"HoWdY", -273.154, 2.5, 7, True, 42, b"nul\x00"]
    finally:
        sl.shm.close()
        sl.shm.unlink()


def test_proctor_attaches_to_a_shareable_list_a_stdlib_program_made():
    name, made_format = _stdlib(
        """
        from multiprocessing import resource_tracker, shared_memory

        sl = shared_memory.ShareableList(["howdy", b"HoWdY", -273.154, 100, None, True, 42])
        resource_tracker.unregister(sl.shm._name, "shared_memory")  # outlive this program
        print(sl.shm.name)
        print(sl.format)
        sl.shm.close()
        """
    )
    sl = ShareableList(name=name)
    try:
        assert list(sl) == ["howdy", b"HoWdY", -273.154, 100, None, True, 42]
        assert sl.format == made_format == "8s8sdqxxxxxx?xxxxxxxx?q"
        sl[4] = "some"
        sl[1] = b"HI"
        assert list(sl)[:5] == ["howdy", b"HI", -273.154, 100, "some"]
        assert sl.format == "8s8sdq8sxxxxxxx?q"
    finally:
        sl.shm.close()
        sl.shm.unlink()


def _bump(sl):
    sl[0] += 1
    sl[1] = "child"


def test_child_updates_a_shareable_list(ctx):
    sl = ShareableList([41, "parent"])
    p = ctx.Process(target=_bump, args=(sl,))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert list(sl) == [42, "child"]
    p.close()
    sl.shm.close()
    sl.shm.unlink()


def test_anonymous_memory_without_memfd_uses_an_unlinked_segment(monkeypatch):
    # The path taken on macOS and the BSDs, which have no memfd_create.
    from proctor._core import _anonmem

    monkeypatch.delattr(os, "memfd_create")
    before = set(os.listdir("/dev/shm"))
    with _anonmem.AnonymousMemory(4096) as memory:
        memory[:3] = b"abc"
        assert bytes(memory[:3]) == b"abc"
        assert set(os.listdir("/dev/shm")) == before  # no name left behind


def test_anonymous_memory_closes_its_descriptor_when_collected_and_once_when_closed():
    # Its descriptor is closed by a small closer called from __del__ (not a
    # weakref.finalize): dropping the memory releases it, and close() then
    # collection close it exactly once (a second close would hit a reused number).
    import gc

    from proctor._core import _anonmem

    memory = _anonmem.AnonymousMemory(4096)
    fd = memory.fd
    os.fstat(fd)  # open
    del memory
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)

    memory = _anonmem.AnonymousMemory(4096)
    memory.close()
    replacement = os.open(os.devnull, os.O_RDONLY)  # likely reuses the number
    try:
        memory.close()
        del memory
        gc.collect()
        os.fstat(replacement)  # still open: nothing closed it a second time
    finally:
        os.close(replacement)


def test_anonymous_memory_is_known_by_its_file_until_it_dies():
    # A process keeps one mapping per memory (a memory received where it is
    # mapped already is the same object): its record goes with the memory, and a
    # dead memory's record never takes a newer one's with it (an inode number is
    # reused once its file is gone).
    import gc

    from proctor._core import _anonmem

    memory = _anonmem.AnonymousMemory(4096)
    key = _anonmem._file_key(memory.fd)
    assert _anonmem._by_file[key]() is memory
    older = _anonmem.AnonymousMemory(4096)
    older_key = _anonmem._file_key(older.fd)
    older_ref = _anonmem._by_file[older_key]  # alive: its callback will run
    _anonmem._remember(memory, older_key)  # a newer memory with the older's key
    del older
    gc.collect()
    assert older_ref() is None
    assert _anonmem._by_file[older_key]() is memory
    del _anonmem._by_file[older_key], older_ref
    memory.close()
    del memory
    gc.collect()
    assert key not in _anonmem._by_file
