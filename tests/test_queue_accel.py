"""The C fast paths of a queue's ring: built where they can be, switchable, and
byte-for-byte the same as the pure-Python ring, so that the two share a queue.

test_queue.py runs the queue tests of the paths the C code takes under both
implementations; this module checks the accelerator itself: that it is there,
that PROCTOR_PURE_PYTHON turns it off, that it writes exactly what the pure ring
writes (wrapping included), that a pure-Python process and a C one share a
queue both ways, that odd calls fail cleanly, and that close() lets go of the
memory.
"""

from __future__ import annotations

import mmap
import os
import pickle
import random
import shlex
import shutil
import subprocess
import sys
import sysconfig

import pytest

import proctor
from proctor._queues import _accel
from proctor._queues._ring import HEADER_SIZE, Ring

NATIVE = _accel.native
needs_native = pytest.mark.skipif(
    NATIVE is None, reason=f"the queue accelerator is not active here: {_accel.REASON}"
)


def _compiler_available() -> bool:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or ""
    words = shlex.split(cc)
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    return bool(words) and shutil.which(words[0]) is not None and os.path.exists(headers)


def _rings(capacity: int, monkeypatch) -> tuple[Ring, Ring, mmap.mmap, mmap.mmap]:
    """A C ring and a pure one, each on its own fresh memory of ``capacity`` bytes."""
    c_memory = mmap.mmap(-1, HEADER_SIZE + capacity)
    pure_memory = mmap.mmap(-1, HEADER_SIZE + capacity)
    c_ring = Ring(c_memory)
    with monkeypatch.context() as patch:
        patch.setattr(_accel, "native", None)
        pure_ring = Ring(pure_memory)
    assert (c_ring.impl, pure_ring.impl) == ("native", "python")
    return c_ring, pure_ring, c_memory, pure_memory


def _release(*things) -> None:
    for thing in things:
        if isinstance(thing, Ring):
            thing.release()
        else:
            thing.close()


def test_the_accelerator_is_active_wherever_it_could_be_built():
    if os.environ.get(_accel.ENV_VAR, "") not in ("", "0"):
        assert _accel.ACTIVE == "python"
        pytest.skip(f"{_accel.ENV_VAR} is set: the pure-Python ring runs on purpose")
    if not _compiler_available():
        assert _accel.ACTIVE == "python"
        pytest.skip("no C compiler (or no Python headers) here: the pure-Python build is right")
    assert _accel.ACTIVE == "native", f"a C compiler is here, yet {_accel.REASON}"
    with proctor.Queue() as q:
        assert q._ring.impl == "native"


def test_pure_python_can_be_forced_and_info_says_which_runs():
    code = (
        "import proctor\n"
        "from proctor._queues import _accel\n"
        "from proctor.__main__ import main\n"
        "q = proctor.Queue(); q.put(1); assert q.get(timeout=5) == 1\n"
        "print(_accel.ACTIVE, q._ring.impl); q.close()\n"
        "main(['info'])\n"
    )
    env = {**os.environ, _accel.ENV_VAR: "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "python python"
    assert f"queue fast paths: pure Python ({_accel.ENV_VAR}=1 is set)" in lines


@needs_native
@needs_native
@pytest.mark.parametrize("package", ["proctor._sync", "proctor._queues", "proctor._start"])
def test_a_module_built_from_other_source_is_refused_and_info_says_rebuild(
    package, tmp_path, monkeypatch
):
    # An editable install keeps the module it compiled; after a pull changes the C
    # source, that module no longer matches the Python calling it. A copy of the built
    # module beside its own source loads; beside an edited source it is refused.
    import importlib

    from proctor._core._accel import load_native

    built = importlib.import_module(package + "._native")
    name = "stale_check_" + package.rsplit("._", 1)[1]
    for cached in (name, name + "._native"):
        monkeypatch.delitem(sys.modules, cached, raising=False)  # undone after the test
    fake = tmp_path / name
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    shutil.copy(built.__file__, fake / os.path.basename(built.__file__))
    # The source it was built from: beside it in an editable install, in the
    # repository's src/ when the tests run against an installed wheel (no C inside).
    source = os.path.join(os.path.dirname(built.__file__), "_native.c")
    if not os.path.exists(source):
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        source = os.path.join(repo, "src", *package.split("."), "_native.c")
    if not os.path.exists(source):
        pytest.skip(f"the C source of {package}._native is not here")
    shutil.copy(source, fake / "_native.c")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(_accel.ENV_VAR, raising=False)
    module, reason = load_native(name)
    assert module is not None and reason == "built and loaded"
    assert module.SOURCE_DIGEST == built.SOURCE_DIGEST != ""

    (fake / "_native.c").write_text("/* edited */\n" + (fake / "_native.c").read_text())
    del sys.modules[name + "._native"]
    module, reason = load_native(name)
    assert module is None
    assert "built from another version of" in reason and "pip install -e ." in reason

    os.remove(fake / "_native.c")  # an installed wheel: no source, nothing to compare
    del sys.modules[name + "._native"]
    module, reason = load_native(name)
    assert module is not None


@needs_native
def test_c_and_pure_rings_write_the_same_bytes_and_read_each_others(monkeypatch):
    """The same random puts and gets on a C ring and a pure one, wrapping round a
    small ring many times: the memories stay byte-for-byte equal, and each
    implementation reads the frames the other wrote."""
    c_ring, pure_ring, c_memory, pure_memory = _rings(4096, monkeypatch)
    rng = random.Random(17)
    expected: list[bytes] = []
    sizes = [0, 1, 15, 16, 17, 100, 999, 1000, 1024]
    for step in range(3000):
        if rng.random() < 0.55:
            payload = rng.randbytes(rng.choice(sizes))
            limit = rng.choice([1 << 20, 5])
            put = c_ring.try_put_one(payload, limit)
            assert pure_ring.try_put_one(payload, limit) is put
            if put:
                expected.append(payload)
        else:
            got = c_ring.try_get_one()
            assert pure_ring.try_get_one() == got
            if got is not None:
                assert got == expected.pop(0)
            elif expected:
                # A frame the fast path leaves to the general path (its header or
                # payload wraps): both implementations take it the long way.
                length, flags, items, taken, _mail_id, _key = c_ring.head_frame()
                assert pure_ring.head_frame()[:4] == (length, flags, items, taken)
                assert c_ring.head_payload(length) == expected.pop(0)
                c_ring.consume(1, length, 1, 0)
                pure_ring.consume(1, length, 1, 0)
        assert c_memory[:] == pure_memory[:], f"the rings differ after step {step}"
        assert c_ring.count == pure_ring.count == len(expected)
    # Cross over: each reads what the other's twin wrote (same bytes, so the C
    # ring on the pure memory and the pure ring on the C memory).
    c_on_pure = NATIVE.RingCore(pure_memory)
    while expected:
        payload = c_on_pure.get_one()
        if payload is None:
            break
        assert payload == expected.pop(0)
    c_on_pure.release()
    _release(c_ring, pure_ring, c_memory, pure_memory)


def _impls(q):
    """The ring's implementation, and the class its semaphores' handles have here."""
    return q._ring.impl, type(q._shared.items.sem).__name__


def put_pickles(q, n):
    assert q._ring.impl == os.environ["EXPECTED_RING"]
    for i in range(n):
        q.put(b"x" * (i % 700) + str(i).encode())
    return _impls(q)


def get_pickles(q, n):
    assert q._ring.impl == os.environ["EXPECTED_RING"]
    for i in range(n):
        assert q.get(timeout=30) == b"x" * (i % 700) + str(i).encode()
    return _impls(q)


@needs_native
@pytest.mark.parametrize("start_method", ["spawn"])
def test_a_pure_python_child_and_a_c_parent_share_a_queue_both_ways(ctx, monkeypatch):
    """A spawned child that runs the pure ring (PROCTOR_PURE_PYTHON=1) puts into,
    then gets from, a small queue the parent works through its C ring at the same
    time: every item arrives once, in order, across many wraps and full rings.
    Where the parent's queue keeps its semaphores in shared memory, the pure
    child sleeps and posts on the same ones through ctypes."""
    monkeypatch.setenv(_accel.ENV_VAR, "1")
    monkeypatch.setenv("EXPECTED_RING", "python")
    n = 1500
    q = ctx.Queue(capacity=4096)
    assert q._ring.impl == "native"
    producer = ctx.Process(target=put_pickles, args=(q, n))
    producer.start()
    for i in range(n):
        assert q.get(timeout=30) == b"x" * (i % 700) + str(i).encode()
    producer.join(60)
    # (in shared memory: driven through ctypes; named: the stdlib's SemLock)
    child_sems = (
        "CtypesSemaphore" if q._shared.items.sem.__class__.__name__ == "MemSemaphore" else "SemLock"
    )
    assert producer.result == ("python", child_sems)
    consumer = ctx.Process(target=get_pickles, args=(q, n))
    consumer.start()
    for i in range(n):
        q.put(b"x" * (i % 700) + str(i).encode(), timeout=30)
    consumer.join(60)
    assert consumer.result == ("python", child_sems)
    assert q.qsize() == 0
    producer.close()
    consumer.close()
    q.close()


@needs_native
def test_odd_calls_fail_cleanly_and_change_nothing():
    memory = mmap.mmap(-1, HEADER_SIZE + 4096)
    core = NATIVE.RingCore(memory)
    with pytest.raises(TypeError):
        core.put_one("text, not bytes", 10)
    with pytest.raises(TypeError):
        core.put_one(b"x")
    with pytest.raises(TypeError):
        core.put_one(b"x", "10")
    with pytest.raises(OverflowError):
        core.put_one(b"x", 1 << 70)
    assert core.put_one(b"x", 0) is False  # no item may go in
    assert core.get_one() is None  # empty
    assert memory[:HEADER_SIZE] == bytes(HEADER_SIZE)  # nothing was stored
    assert core.put_one(bytearray(b"abc"), 10) is True  # any bytes-like payload
    assert core.put_one(memoryview(b"defg"), 10) is True
    assert core.get_one() == b"abc" and core.get_one() == b"defg"
    assert core.put_one(b"y" * 5000, 10) is False  # larger than the ring: no room
    assert core.putters() == 0
    with pytest.raises(ValueError):
        NATIVE.RingCore(mmap.mmap(-1, 100))  # too small for a ring
    with pytest.raises(BufferError):
        NATIVE.RingCore(b"\0" * 4096)  # read-only
    with pytest.raises(BufferError):
        memory.close()  # the core holds the memory
    core.release()
    core.release()  # idempotent
    for call in (lambda: core.put_one(b"x", 1), core.get_one, core.putters):
        with pytest.raises(ValueError, match="released"):
            call()
    memory.close()  # let go of


@needs_native
def test_a_corrupt_head_frame_is_reported_not_read_past_the_tail():
    q = proctor.Queue(capacity=4096)
    q.put("one")
    # Scribble the head frame's length: larger than what the ring holds.
    memory = q._shared.memory
    memory[HEADER_SIZE : HEADER_SIZE + 4] = (3000).to_bytes(4, "little")
    with pytest.raises(RuntimeError, match="corrupt"):
        q.get(timeout=5)
    q.close()


@needs_native
def test_close_lets_go_of_the_memory_and_later_calls_say_closed():
    q = proctor.Queue()
    q.put(pickle.dumps(1))
    core = q._ring._core
    q.close()
    assert q._shared.memory.closed  # the C core's export did not keep it mapped
    with pytest.raises(ValueError, match="released"):
        core.get_one()
    with pytest.raises(proctor.QueueClosedError):
        q.put(1)
