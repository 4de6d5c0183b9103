"""Sending descriptors and objects that own them (``multiprocessing.reduction``).

::

    from proctor.reduction import recv_handle, send_handle

    send_handle(conn, fd, pid)        # in one process
    fd = recv_handle(conn)            # in the other: a duplicate, owned

proctor sends descriptors one way: beside a message on a Unix socket
(``SCM_RIGHTS``). ``Connection.send()`` on a ``Pipe()`` end or an ``AF_UNIX``
``Listener``/``Client`` connection sends a ``Connection``, a socket or a
:class:`DupFd` with its descriptors, and ``recv()`` rebuilds it with the
receiver's own; ``send_handle``/``recv_handle`` are that with a bare descriptor.
Over TCP no descriptor can go, and ``send()`` says so (``PicklingError``).

:class:`ForkingPickler` and :func:`register` are the stdlib's pickling hooks: a
reducer registered for a class is used by every proctor send (connections,
queues, the arguments of a spawn or forkserver child).

Note:
    Unlike ``multiprocessing``, there is no background "resource sharer"
    thread: a descriptor can only travel with a message on a Unix socket (or to
    a child at its start), never inside a pickle written to a queue, a file or
    a TCP connection. ``AbstractReducer`` (to replace the pickler of a
    context) is not provided.
"""

from __future__ import annotations

from ._connections._reducer import HAVE_SEND_HANDLE as HAVE_SEND_HANDLE
from ._connections._reducer import DupFd as DupFd
from ._connections._reducer import ForkingPickler as ForkingPickler
from ._connections._reducer import __all__ as __all__
from ._connections._reducer import dump as dump
from ._connections._reducer import recv_handle as recv_handle
from ._connections._reducer import recvfds as recvfds
from ._connections._reducer import register as register
from ._connections._reducer import send_handle as send_handle
from ._connections._reducer import sendfds as sendfds
