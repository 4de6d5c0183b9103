"""A ``MemorySemaphore``'s ``sem_t`` driven through ``ctypes``, for a pure-Python process.

A process running the pure-Python implementation (``PROCTOR_PURE_PYTHON=1``, or
no C accelerator built) that receives an object whose semaphores live in shared
memory (``_memsem``) -- a spawned child of a parent with the accelerator --
calls libc's ``sem_*`` on the same block. Imported only then: ``ctypes`` takes
a few milliseconds to import.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import time
from typing import Any

from .._core._anonmem import AnonymousMemory

__all__ = ("CtypesSemaphore",)


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


_libc: Any = None


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux"):
            raise RuntimeError(
                "a semaphore in shared memory reached a system without unnamed "
                "process-shared semaphores; only Linux makes them"
            )
        libc = ctypes.CDLL(None, use_errno=True)
        for fn in ("sem_trywait", "sem_wait", "sem_post"):
            getattr(libc, fn).argtypes = (ctypes.c_void_p,)
        libc.sem_timedwait.argtypes = (ctypes.c_void_p, ctypes.POINTER(_Timespec))
        libc.sem_getvalue.argtypes = (ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))
        _libc = libc
    return _libc


class CtypesSemaphore:
    """A ``MemorySemaphore``'s ``sem`` in a process without the C accelerator.

    Behaves as the C ``MemSemaphore``: ``ctypes`` lets go of the GIL while
    ``sem_wait``/``sem_timedwait`` sleep, and a signal's handler runs when the
    call returns ``EINTR`` (then the wait goes on to the same deadline).
    """

    __slots__ = ("_block", "handle", "maxvalue")

    def __init__(self, memory: AnonymousMemory, offset: int, maxvalue: int, size: int) -> None:
        # size: the bytes of the block (_memsem.SIZE, passed in: _memsem imports this module)
        _load_libc()
        # The ctypes object holds a buffer export: the mapping stays while it lives.
        self._block = (ctypes.c_char * size).from_buffer(memory, offset)
        self.handle = ctypes.addressof(self._block)
        self.maxvalue = maxvalue

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        libc, handle = _libc, self.handle
        if libc.sem_trywait(handle) == 0:
            return True
        if not block or (timeout is not None and timeout <= 0):
            return False
        until = None
        if timeout is not None:
            at = time.time() + min(timeout, 1e9)
            until = ctypes.byref(_Timespec(int(at), int(at % 1 * 1e9)))
        while True:
            done = libc.sem_wait(handle) if until is None else libc.sem_timedwait(handle, until)
            if done == 0:
                return True
            err = ctypes.get_errno()
            if err == errno.ETIMEDOUT:
                return False
            if err != errno.EINTR:
                raise OSError(err, os.strerror(err))
            # EINTR: back in Python, a pending signal handler runs (and may raise).

    def release(self) -> None:
        if self._get_value() >= self.maxvalue:
            raise ValueError("semaphore or lock released too many times")
        if _libc.sem_post(self.handle) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def _get_value(self) -> int:
        value = ctypes.c_int()
        if _libc.sem_getvalue(self.handle, ctypes.byref(value)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return max(value.value, 0)

    def _is_zero(self) -> bool:
        return self._get_value() == 0

    # What PyLock's repr asks a SemLock (its per-process counters): unknown here.
    def _is_mine(self) -> bool:
        return False

    def _count(self) -> int:
        return 0
