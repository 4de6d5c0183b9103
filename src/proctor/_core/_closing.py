"""Closing OS handles: one finalizer for every object that holds them and has a
``close()``, and the closing of a list of descriptors."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


class ClosedWhenCollected:
    """Mixin: garbage collection calls ``close()``, quietly.

    Written without ``contextlib.suppress`` or any other module global: at
    interpreter exit a finalizer may run after its module's globals were
    cleared, and then only what the class itself holds is still there.
    """

    __slots__ = ()

    def close(self) -> None:  # provided by the class that uses the mixin
        raise NotImplementedError

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # nothing to tell anyone at garbage collection
            pass


def close_all(fds: Iterable[int]) -> None:
    """Close every descriptor of ``fds``; if some fail, raise the first error at the end.

    Each descriptor is closed even when one before it fails: a descriptor that cannot be
    closed (EBADF: closed twice, a bug) must not leak the others.
    """
    first_error: OSError | None = None
    for fd in fds:
        try:
            os.close(fd)
        except OSError as exc:
            if first_error is None:
                first_error = exc
    if first_error is not None:
        raise first_error


def close_all_quietly(fds: Iterable[int]) -> None:
    """Close every descriptor of ``fds``, ignoring errors: for cleanup on a path that is
    already raising, whose exception a failed ``close`` must not replace."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
