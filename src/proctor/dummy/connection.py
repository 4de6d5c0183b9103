"""Connections between threads: the counterpart of ``multiprocessing.dummy.connection``.

::

    from proctor.dummy.connection import Client, Listener, Pipe

``Pipe()`` ends and ``Listener``/``Client`` pairs pass objects between threads of
this process as they are (never pickled). A closed end's peer receives what was
sent, then ``EOFError``; ``recv(timeout=)``, ``poll(timeout)`` and
``accept(timeout=)`` never wait for ever unless told to. A ``Listener``'s address
is any hashable name (``None`` makes one).
"""

from .._dummy._connection import Client as Client
from .._dummy._connection import Connection as Connection
from .._dummy._connection import Listener as Listener
from .._dummy._connection import Pipe as Pipe
from .._dummy._connection import families as families

__all__ = ("Client", "Connection", "Listener", "Pipe", "families")
