# Types of the optional C module built from _native.c (see _bootstrap.arm_parent_death).

from collections.abc import Callable

SOURCE_DIGEST: str

def set_parent_death_signal(signum: int, /) -> None: ...  # Linux only
def watch_parent(parent_pid: int, /) -> None: ...  # every POSIX system
def fork_start(own_threads: Callable[[], tuple[int, ...]], /) -> int: ...  # Linux, Python 3.12+
def take_request(
    sock: int, spare: int, reply: bytes, /
) -> int | tuple[bytes, list[int], bool]: ...  # Linux only
def report_exits(status_fds: dict[int, int], /) -> list[tuple[int, int]]: ...  # Linux only
def claim_learning(region: memoryview | bytearray, /) -> bool: ...  # Linux only
def learn_pages(region: memoryview | bytearray, /) -> int: ...  # Linux only
def warm_up(region: memoryview | bytearray, stop_fd: int, /) -> int: ...  # Linux only
