"""Queues reuse large buffers' pages: never while a got array (or a view of it) lives."""

from __future__ import annotations

import numpy as np

import proctor
from proctor._queues._spares import SPARE_BYTES, SPARE_MIN, SPARE_SLOTS

N = SPARE_MIN // 8 * 2  # float64 items: a 2 MiB buffer, reused


def filled(value: float, n: int = N) -> np.ndarray:
    return np.full(n, value, dtype=np.float64)


def put_filled(q, values, n, acks):
    for index, value in enumerate(values):
        if index:
            assert acks.get(timeout=30) == "next"  # the consumer dropped what it drops
        q.put(filled(value, n), timeout=30)


def hold_then_check(q, held, go, result):
    # A forked child sharing the parent's got array: it must keep its values
    # after the parent dropped it and got more through the same queue.
    assert go.get(timeout=30) == "go"
    result.put(bool((held == 1.0).all()), timeout=30)


def test_a_dropped_array_pages_are_reused_and_a_live_one_is_never_written():
    with proctor.Queue() as q:
        q.put(filled(1.0), timeout=5)
        kept = q.get(timeout=5)
        q.put(filled(2.0), timeout=5)
        second = q.get(timeout=5)
        address = second.ctypes.data
        del second  # its memfd goes back to the queue's spares
        q.put(filled(3.0), timeout=5)
        third = q.get(timeout=5)
        assert (third == 3.0).all()
        assert third.ctypes.data == address  # the same pages, still mapped
        assert third.flags.writeable
        view = third[::2]  # a view keeps the pages as the array does
        del third
        q.put(filled(4.0), timeout=5)
        fourth = q.get(timeout=5)
        assert (fourth == 4.0).all() and (view == 3.0).all()
        assert fourth.ctypes.data not in (address, kept.ctypes.data)
        assert (kept == 1.0).all()


def test_spares_cross_processes_and_every_array_arrives_intact():
    ctx = proctor.get_context("fork")
    values = [float(i) for i in range(1, 9)]
    with ctx.Queue(maxsize=1) as q, ctx.Queue() as acks:
        p = ctx.Process(target=put_filled, args=(q, values, N, acks))
        p.start()
        kept = []
        addresses = set()
        for value in values:
            a = q.get(timeout=30)
            assert (a == value).all()
            addresses.add(a.ctypes.data)
            if value % 3 == 0:
                kept.append((value, a))  # held while the producer goes on
            del a
            acks.put("next", timeout=5)
        p.join(timeout=30)
        assert p.exitcode == 0
        assert all((a == value).all() for value, a in kept)
        assert len(addresses) < len(values)  # some pages came back and were reused


def test_an_array_shared_with_a_forked_child_is_never_reused():
    ctx = proctor.get_context("fork")
    with ctx.Queue() as q, ctx.Queue() as go, ctx.Queue() as result:
        q.put(filled(1.0), timeout=5)
        held = q.get(timeout=5)
        p = ctx.Process(target=hold_then_check, args=(q, held, go, result))
        p.start()
        del held  # the child still maps these pages: they must not come back
        for value in (2.0, 3.0):
            q.put(filled(value), timeout=5)
            got = q.get(timeout=5)
            assert (got == value).all()
            del got
        go.put("go", timeout=5)
        assert result.get(timeout=30) is True
        p.join(timeout=30)
        assert p.exitcode == 0


def test_a_closed_handle_leaves_live_arrays_readable():
    q = proctor.Queue()
    q.put(filled(5.0), timeout=5)
    a = q.get(timeout=5)
    q.close()
    assert (a == 5.0).all()
    a[:] = 6.0  # still writable, still mapped
    assert (a == 6.0).all()
    del a  # its slot and memfd close now (the no_leaks fixture checks)


def test_a_spare_of_another_size_is_dropped_and_sizes_change_freely():
    with proctor.Queue() as q:
        for n, value in ((N, 1.0), (N + 512, 2.0), (N, 3.0), (N + 512, 4.0), (N, 5.0)):
            q.put(filled(value, n), timeout=5)
            got = q.get(timeout=5)
            assert got.shape == (n,) and (got == value).all()
            del got
        slots = list(q._spares._slots.values())
        assert len(slots) <= SPARE_SLOTS and sum(s.size for s in slots) <= SPARE_BYTES


def test_small_and_huge_buffers_are_not_kept():
    with proctor.Queue() as q:
        q.put(np.ones(100_000), timeout=5)  # out of band, under SPARE_MIN
        got = q.get(timeout=5)
        del got
        assert not q._spares._slots
