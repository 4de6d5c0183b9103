"""numpy's integers are taken wherever an int is (``_core._integers.integral``), as the
stdlib's calls take them: sizes computed with numpy are ``numpy.int64``."""

from __future__ import annotations

import numpy as np
import pytest

import proctor
from proctor import shared_memory
from proctor.connection import Listener


def test_sizes_counts_and_indices_take_numpy_integers():
    segment = shared_memory.SharedMemory(create=True, size=np.prod((4, 4)) * 8)
    try:
        assert segment.size >= 128
    finally:
        segment.close()
        segment.unlink()
    assert len(proctor.Array("d", np.int64(3))) == 3
    array = shared_memory.shared_array((np.int64(2), np.int32(3)), np.float64)
    assert array.shape == (2, 3)
    del array
    shareable = shared_memory.ShareableList([1, 2, 3])
    try:
        assert shareable[np.int64(1)] == 2
    finally:
        shareable.shm.close()
        shareable.shm.unlink()


def test_queues_and_connections_take_numpy_integers():
    q = proctor.Queue(np.int64(2))
    q.put(1)
    q.put(2)
    assert q.full()
    assert q.get_many(np.int32(2), timeout=10) == [1, 2]
    q.close()
    reader, writer = proctor.Pipe()
    writer.send_bytes(b"abcdef", np.int64(1), np.int64(3))
    assert reader.recv_bytes(maxlength=np.int64(10)) == b"bcd"
    buffer = bytearray(10)
    writer.send_bytes(b"xy")
    assert reader.recv_bytes_into(buffer, np.int64(2)) == 2
    assert buffer[2:4] == b"xy"
    reader.close()
    writer.close()
    Listener(("127.0.0.1", 0), backlog=np.int64(2)).close()


def test_pools_and_executors_take_numpy_integers():
    with proctor.Pool(np.int64(2), maxtasksperchild=np.int64(5)) as pool:
        assert pool.map(abs, [-1, -2], chunksize=np.int64(1)) == [1, 2]
    with proctor.ProcessPoolExecutor(np.int64(1), max_tasks_per_child=np.int64(3)) as executor:
        assert list(executor.map(abs, [-3], chunksize=np.int64(1))) == [3]


def test_bools_and_floats_are_still_refused():
    with pytest.raises(TypeError, match="maxsize must be an int, not bool"):
        proctor.Queue(True)
    with pytest.raises(TypeError, match="size must be an int, not float"):
        shared_memory.SharedMemory(create=True, size=np.float64(8))
