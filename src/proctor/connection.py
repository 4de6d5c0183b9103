"""Connections between processes: ``Pipe()``, ``Listener``/``Client``, and ``wait()``.

The counterpart of ``multiprocessing.connection``::

    from proctor.connection import Client, Listener, Pipe, wait
"""

from __future__ import annotations

from ._connection import Connection as Connection
from ._connection import Pipe as Pipe
from ._connection import ProtocolError as ProtocolError
from ._connection import wait as wait
from ._errors import AuthenticationError as AuthenticationError
from ._errors import BufferTooShort as BufferTooShort
from ._listener import Client as Client
from ._listener import Listener as Listener

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
