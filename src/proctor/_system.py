"""Facts about the machine."""

from __future__ import annotations

import os

__all__ = ("cpu_count",)


def cpu_count() -> int:
    """Return the number of CPUs in the system (not just those this process may use).

    Raises:
        NotImplementedError: when the OS does not say, as ``multiprocessing`` does.
    """
    count = os.cpu_count()
    if count is None:
        raise NotImplementedError("cannot determine the number of CPUs")
    return count
