"""Value, Array, RawValue, RawArray: the multiprocessing.sharedctypes behaviour."""

from __future__ import annotations

import ctypes
import os
import pickle
import threading

import pytest

import proctor
from helpers import open_fds, run_program
from proctor._reaper import _client as _reaper
from proctor._sharedmem._sharedctypes import Array, RawArray, RawValue, Value, copy, synchronized


@pytest.fixture(scope="module", autouse=True)
def _reaper_connection():
    # proctor's locks register named semaphores with the reaper: open this process's
    # connection before the per-test fd leak check takes its baseline.
    _reaper.ensure_started()
    yield


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]


# ─── one process ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("typecode", "value"),
    [("b", -3), ("B", 250), ("h", -300), ("i", 7), ("I", 7), ("l", -1 << 40), ("q", 1 << 62),
     ("Q", 1 << 63), ("f", 1.5), ("d", 2.25), ("c", b"x"), ("u", "é")],
)  # fmt: skip
def test_raw_value_of_each_typecode_round_trips(typecode, value):
    v = RawValue(typecode, value)
    assert v.value == value
    assert RawValue(typecode).value in (0, 0.0, b"\x00", "\x00")


def test_raw_value_repr_matches_ctypes():
    assert repr(RawValue("i", 5)) == "c_int(5)"
    assert isinstance(RawValue(ctypes.c_double), ctypes.c_double)


def test_raw_array_from_size_and_from_initializer():
    a = RawArray("i", 4)
    assert a[:] == [0, 0, 0, 0] and len(a) == 4
    b = RawArray(ctypes.c_double, [1.0, 2.0, 3.0])
    b[1:3] = [5.0, 6.0]
    assert b[:] == [1.0, 5.0, 6.0]
    assert type(b[0]) is float
    assert RawArray("i", 0)[:] == []


def test_char_array_has_value_and_raw():
    s = Array("c", b"hello")
    assert s.value == b"hello"
    s.value = b"hi"
    assert s.value == b"hi" and s.raw[:3] == b"hi\x00"
    assert len(s) == 5
    assert s[0:2] == b"hi"


def test_structure_value_has_locked_fields():
    p = Value(Point, 1, 2.5, lock=threading.RLock())
    assert (p.x, p.y) == (1, 2.5)
    p.x = 10
    assert p.get_obj().x == 10
    assert isinstance(p.get_obj(), Point)


def test_value_with_lock_false_is_the_raw_object():
    v = Value("i", 3, lock=False)
    assert isinstance(v, ctypes.c_int) and v.value == 3
    a = Array("d", 2, lock=False)
    assert isinstance(a, ctypes.Array)


def test_value_uses_the_given_lock():
    lock = threading.Lock()
    v = Value("i", 1, lock=lock)
    assert v.get_lock() is lock
    with v:
        assert lock.locked()
    assert not lock.locked()
    v.value += 1
    assert v.value == 2
    assert "Synchronized wrapper for c_int(2)" in repr(v)


def test_array_wrapper_indexes_slices_and_iterates_under_its_lock():
    a = Array("i", range(5), lock=threading.RLock())
    a[0] = 10
    a[1:3] = [20, 30]
    assert a[:] == [10, 20, 30, 3, 4]
    assert list(a) == [10, 20, 30, 3, 4]
    assert len(a) == 5
    assert a.get_obj()[4] == 4


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("x",), TypeError, "unknown typecode 'x'"),
        ((3,), TypeError, "typecode"),
        ((int,), TypeError, "ctypes type"),
    ],
)
def test_bad_typecodes_raise_clear_errors(args, error, match):
    with pytest.raises(error, match=match):
        RawValue(*args)
    with pytest.raises(error, match=match):
        Array(*args, 3, lock=False)


def test_unknown_typecode_is_the_stdlib_type_error_listing_every_valid_code():
    import multiprocessing.sharedctypes

    with pytest.raises(TypeError) as info:
        Array("x", 5)
    for code in multiprocessing.sharedctypes.typecode_to_type:
        assert repr(code) in str(info.value)
        RawArray(code, 1)  # every code the message offers works
    with pytest.raises(TypeError):
        multiprocessing.sharedctypes.RawArray("x", 5)  # what proctor matches


def test_copy_makes_an_independent_shared_object():
    original = RawArray("i", [1, 2, 3])
    duplicate = copy(original)
    duplicate[0] = 9
    assert original[:] == [1, 2, 3] and duplicate[:] == [9, 2, 3]
    assert copy(RawValue("d", 2.5)).value == 2.5


def test_bad_sizes_and_locks_raise_clear_errors():
    with pytest.raises(ValueError, match="negative"):
        RawArray("i", -1)
    with pytest.raises(TypeError, match="int or a sequence"):
        RawArray("i", 2.5)
    with pytest.raises(TypeError, match="acquire"):
        Value("i", lock="not a lock")
    with pytest.raises(TypeError, match="acquire"):
        synchronized(RawValue("i"), lock=object())


@pytest.mark.parametrize(
    "make",
    [
        lambda: Value("i", 5, lock="navalue"),
        lambda: Array("i", 3, lock="notalock"),
        lambda: synchronized(RawValue("i"), lock=object()),
        lambda: proctor.get_context().Value("i", lock=3),
    ],
    ids=["Value", "Array", "synchronized", "ctx.Value"],
)
def test_a_lock_without_acquire_is_both_the_stdlibs_attribute_error_and_a_type_error(make):
    # multiprocessing raises AttributeError (it reads lock.acquire); code written
    # for it, and CPython's own tests, catch that.
    with pytest.raises(AttributeError, match=r"lock must be a lock .*acquire\(\) and release\(\)"):
        make()
    with pytest.raises(TypeError, match="for a new RLock"):
        make()


@pytest.mark.parametrize("lock", [None, False])
def test_synchronized_without_a_lock_gets_a_new_rlock_as_in_the_stdlib(lock):
    wrapped = synchronized(RawValue("i", 1), lock=lock)
    assert wrapped.acquire() and wrapped.acquire()  # reentrant
    wrapped.release()
    wrapped.release()
    assert wrapped.value == 1


def test_shared_objects_cannot_go_into_a_plain_pickle():
    with pytest.raises(RuntimeError, match="argument of Process"):
        pickle.dumps(RawValue("i"))
    with pytest.raises(RuntimeError, match="argument of Process"):
        pickle.dumps(Array("i", 3, lock=threading.Lock()).get_obj())


def test_many_values_share_a_few_descriptors():
    before = len(open_fds())
    values = [RawValue("q", i) for i in range(1000)]
    assert len(open_fds()) - before <= 2
    assert [v.value for v in values[:3]] == [0, 1, 2]
    del values


# ─── children ────────────────────────────────────────────────────────────────


def _write_all(value, array, raw_value, raw_array, text, point):
    value.value = 42
    array[1:3] = [7, 8]
    raw_value.value = 1.5
    raw_array[0] = -1
    text.value = b"child"
    point.x = 99


def test_child_writes_in_place_are_seen_by_the_parent(ctx):
    value = Value("i", 1)
    array = Array("i", 4)
    raw_value = RawValue("d")
    raw_array = RawArray("q", [5, 5])
    text = Array("c", 10)
    point = Value(Point)
    p = ctx.Process(target=_write_all, args=(value, array, raw_value, raw_array, text, point))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert value.value == 42
    assert array[:] == [0, 7, 8, 0]
    assert raw_value.value == 1.5
    assert raw_array[:] == [-1, 5]
    assert text.value == b"child"
    assert point.x == 99
    p.close()


def _increment(counter, times):
    for _ in range(times):
        with counter.get_lock():
            counter.value += 1


def test_locked_counter_incremented_by_several_processes_is_exact(ctx):
    counter = Value("i", 0)
    procs = [ctx.Process(target=_increment, args=(counter, 300)) for _ in range(3)]
    for p in procs:
        p.start()
    _increment(counter, 300)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
        p.close()
    assert counter.value == 1200


def _fork_value_child(v):
    v.value = os.getpid()


def test_value_created_in_a_forked_child_does_not_collide_with_the_parent(ctx):
    # After fork both processes allocate; their blocks must not share bytes.
    v = RawValue("i")
    p = ctx.Process(target=_fork_value_child, args=(v,))
    p.start()
    w = RawValue("i", -5)
    p.join(30)
    assert v.value == p.pid
    assert w.value == -5
    p.close()


_MAIN_SCRIPT_STRUCTURES = """
import sys
from ctypes import Structure, Union, c_char, c_double, c_int
import proctor

class Base(Structure):
    _fields_ = [("a", c_int)]

class Either(Union):
    _fields_ = [("i", c_int), ("d", c_double)]

class Point(Base):
    _pack_ = 1
    _anonymous_ = ["either"]
    _fields_ = [("b", c_char), ("either", Either), ("pair", Base * 2)]

def fill(one, many):
    one.a, one.b, one.i, one.pair[1].a = 1, b"z", 7, 9
    many[2].b = b"q"
    return [c.__name__ for c in type(many[0]).__mro__[:3]]

if __name__ == "__main__":
    ctx = proctor.get_context(sys.argv[1])
    one, many = ctx.Value(Point, lock=False), ctx.Array(Point, 3, lock=False)
    p = ctx.Process(target=fill, args=(one, many))
    p.start()
    p.join(60)
    print(p.exitcode, p.result, one.a, one.b, one.i, one.pair[1].a, many[2].b)
"""


def test_values_of_main_script_structures_reach_every_kind_of_child(start_method):
    # The stdlib's spawn child imports the main script again, so its classes go by
    # name; proctor's does not, and a ctypes class cannot be pickled by value.
    stdout = run_program(_MAIN_SCRIPT_STRUCTURES, start_method)
    assert stdout.split("\n")[0] == "0 ['Point', 'Base', 'Structure'] 1 b'z' 7 9 b'q'"
