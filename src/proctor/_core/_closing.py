"""One finalizer for every object that holds OS handles and has a ``close()``."""

from __future__ import annotations


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
