"""Connections between processes: ``Pipe()``, ``Listener``/``Client``, and ``wait()``.

The counterpart of ``multiprocessing.connection``::

    from proctor.connection import Client, Listener, Pipe, wait
"""

from __future__ import annotations

from ._connections._connection import Connection as Connection
from ._connections._listener import Client as Client
from ._connections._listener import Listener as Listener
from ._connections._pipe import Pipe as Pipe
from ._connections._wait import wait as wait
from ._core._errors import AuthenticationError as AuthenticationError
from ._core._errors import BufferTooShort as BufferTooShort
from ._core._errors import ProtocolError as ProtocolError

__all__ = (
    "AuthenticationError",
    "BufferTooShort",
    "Client",
    "Connection",
    "Listener",
    "Pipe",
    "ProtocolError",
    "wait",
)
