"""What ``backend=`` names: picks the engine adapter, importing only that engine.

``_pool`` (below this layer) defines the engine protocol and calls the resolver
registered here; the public modules that export ``Pool`` and ``ProcessPoolExecutor``
import this module, which imports no engine until a pool is given one.
"""

from __future__ import annotations

import types

from .._pool import _remote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("resolve",)

#: Address schemes of a Dask scheduler (``distributed.comm``'s).
DASK_SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")


def resolve(backend: Any) -> Any:
    """The engine adapter for ``backend``, or None when it names no engine."""
    package = type(backend).__module__.partition(".")[0]
    if package in ("distributed", "dask") or (
        isinstance(backend, str) and (backend == "dask" or backend.startswith(DASK_SCHEMES))
    ):
        from . import _dask

        return _dask.engine(backend)
    if (
        package == "ray"
        or (isinstance(backend, types.ModuleType) and backend.__name__ == "ray")
        or (isinstance(backend, str) and (backend == "ray" or backend.startswith("ray://")))
    ):
        from . import _ray

        return _ray.engine(backend)
    return None


_remote.register_resolver(resolve)
