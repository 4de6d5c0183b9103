# Types of the optional C module built from _native.c (see _accel.py).
from collections.abc import Callable
from typing import Any

SPIN_PAUSES: int
SPIN_BACKOFF_MAX: int

def set_process(ident: float, token: float, /) -> None: ...
def next_token() -> float: ...

SLICE_EMPTY: int
SLICE_NOTIFIED: int
SLICE_OTHER: int
SLICE_RETAKEN: int

def wait_slice(
    semlock: Any,
    words: Any,
    notified: int,
    ticket: int,
    timeout: float,
    fd: int,
    cmd: int,
    byte: int,
    slot: int,
    mine: set[int],
    lock: Any = None,
    depth: Any = None,
    keep: bool = False,
    /,
) -> int: ...

CONDITION_WORDS: tuple[int, int, int, int, int, int, int]

def event_set(lock: Any, semlock: Any, words: Any, /) -> Any: ...
def cond_notify(lock: Any, post: Callable[[], Any], words: Any, n: int, /) -> Any: ...

class _Core:
    def _attach(
        self,
        semlock: Any,
        arena: Any,
        offset: int,
        py_acquire: Callable[..., bool],
        py_release: Callable[..., None],
        /,
    ) -> None: ...
    def _detach(self) -> None: ...
    def _arm_probe(self, fd: int, base: int, /) -> None: ...
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *exc_info: object) -> None: ...

class _OwnedCore(_Core):
    # what the release that ends a holding calls after its post (Condition.notify)
    _deferred: list[Callable[[], Any]] | None
    # let go now of a condition waiter's ticket byte kept through this holding
    def _let_go_kept(self) -> None: ...

class LockCore(_OwnedCore):
    @property
    def _holder_tid(self) -> int | None: ...
    def _became_owner(self) -> None: ...

class RLockCore(_OwnedCore):
    def __enter__(self, block: bool = True, timeout: float | None = None) -> bool: ...
    _tid: int | None
    _depth: int
    def _became_owner(self) -> None: ...
    def _forget_ownership(self) -> None: ...

class SemaphoreCore(_Core): ...

# Linux only (absent elsewhere): a semaphore at ``offset`` of shared memory (_memsem.py).
MEM_SEMAPHORE_SIZE: int

class MemSemaphore:
    def __init__(self, memory: Any, offset: int, maxvalue: int, value: int = -1) -> None: ...
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...
    def release(self) -> None: ...
    def _get_value(self) -> int: ...
    def _is_zero(self) -> bool: ...
    @property
    def handle(self) -> int: ...
    @property
    def maxvalue(self) -> int: ...
