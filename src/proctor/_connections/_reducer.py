"""The names of ``proctor.reduction``, in a module that the contexts may hand out.

``multiprocessing``'s contexts have a ``reducer`` attribute: the reduction module.
``_context`` sits below the public modules and may not import ``proctor.reduction``,
so both take their names from here (``ctx.reducer`` is this module; its names are
the same objects as ``proctor.reduction``'s). The documentation is the public
module's.
"""

from __future__ import annotations

from .._core._reduction import DupFd as DupFd
from .._core._reduction import ForkingPickler as ForkingPickler
from .._core._reduction import dump as dump
from .._core._reduction import register as register
from ._handles import HAVE_SEND_HANDLE as HAVE_SEND_HANDLE
from ._handles import recv_handle as recv_handle
from ._handles import recvfds as recvfds
from ._handles import send_handle as send_handle
from ._handles import sendfds as sendfds

__all__ = (
    "HAVE_SEND_HANDLE",
    "DupFd",
    "ForkingPickler",
    "dump",
    "recv_handle",
    "recvfds",
    "register",
    "send_handle",
    "sendfds",
)
