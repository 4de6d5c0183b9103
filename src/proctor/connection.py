"""Connections between processes: ``Pipe()``, ``Listener``/``Client``, and ``wait()``.

The counterpart of ``multiprocessing.connection``::

    from proctor.connection import Client, Listener, Pipe, wait

Also the stdlib's ``deliver_challenge``/``answer_challenge`` (authenticate a
connection with a shared key), ``families``, ``default_family`` and
``address_type()``. The handshake is proctor's own (``CHALLENGE``, ``WELCOME`` and
``FAILURE`` are its bytes): a proctor peer and a ``multiprocessing`` one cannot
talk to each other.
"""

from __future__ import annotations

from ._connections._connection import Connection as Connection
from ._connections._handshake import CHALLENGE as CHALLENGE
from ._connections._handshake import FAILURE as FAILURE
from ._connections._handshake import WELCOME as WELCOME
from ._connections._handshake import answer_challenge as answer_challenge
from ._connections._handshake import deliver_challenge as deliver_challenge
from ._connections._listener import Client as Client
from ._connections._listener import Listener as Listener
from ._connections._listener import address_type as address_type
from ._connections._listener import default_family as default_family
from ._connections._listener import families as families
from ._connections._pipe import Pipe as Pipe
from ._connections._wait import wait as wait
from ._core._errors import AuthenticationError as AuthenticationError
from ._core._errors import BufferTooShort as BufferTooShort
from ._core._errors import ProtocolError as ProtocolError

__all__ = (
    "CHALLENGE",
    "FAILURE",
    "WELCOME",
    "AuthenticationError",
    "BufferTooShort",
    "Client",
    "Connection",
    "Listener",
    "Pipe",
    "ProtocolError",
    "address_type",
    "answer_challenge",
    "default_family",
    "deliver_challenge",
    "families",
    "wait",
)

# Python 3.12 renamed the stdlib's handshake bytes with a leading underscore; code
# (CPython's own tests among it) written for either spelling finds them.
_CHALLENGE = CHALLENGE
_WELCOME = WELCOME
_FAILURE = FAILURE
