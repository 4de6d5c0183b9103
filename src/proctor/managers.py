"""Managers and proxies: the counterpart of ``multiprocessing.managers``.

::

    from proctor.managers import BaseManager, SyncManager, SharedMemoryManager

A manager runs a server process holding shared objects; proxies call their
methods from any process, or from another machine over TCP with an authkey.
Unlike the stdlib's, a proxy whose manager died raises ``ManagerLostError``
(saying which manager and how it ended) instead of hanging or a bare
``EOFError``; a client that dies has its references dropped; an exception in a
managed method arrives with the manager's traceback as ``__cause__``. See
docs/managers.md.
"""

from ._core._errors import ManagerLostError as ManagerLostError
from ._core._errors import RemoteError as RemoteError
from ._managers import AcquirerProxy as AcquirerProxy
from ._managers import Array as Array
from ._managers import ArrayProxy as ArrayProxy
from ._managers import AutoProxy as AutoProxy
from ._managers import BarrierProxy as BarrierProxy
from ._managers import BaseListProxy as BaseListProxy
from ._managers import BaseManager as BaseManager
from ._managers import BasePoolProxy as BasePoolProxy
from ._managers import BaseProxy as BaseProxy
from ._managers import ConditionProxy as ConditionProxy
from ._managers import DictProxy as DictProxy
from ._managers import EventProxy as EventProxy
from ._managers import IteratorProxy as IteratorProxy
from ._managers import ListProxy as ListProxy
from ._managers import MakeProxyType as MakeProxyType
from ._managers import Namespace as Namespace
from ._managers import NamespaceProxy as NamespaceProxy
from ._managers import PoolProxy as PoolProxy
from ._managers import QueueProxy as QueueProxy
from ._managers import RebuildProxy as RebuildProxy
from ._managers import Server as Server
from ._managers import SharedMemoryManager as SharedMemoryManager
from ._managers import SharedMemoryServer as SharedMemoryServer
from ._managers import State as State
from ._managers import SyncManager as SyncManager
from ._managers import Token as Token
from ._managers import Value as Value
from ._managers import ValueProxy as ValueProxy
from ._managers import dispatch as dispatch
from ._managers import public_methods as public_methods

__all__ = (
    "AcquirerProxy",
    "Array",
    "ArrayProxy",
    "AutoProxy",
    "BarrierProxy",
    "BaseListProxy",
    "BaseManager",
    "BasePoolProxy",
    "BaseProxy",
    "ConditionProxy",
    "DictProxy",
    "EventProxy",
    "IteratorProxy",
    "ListProxy",
    "MakeProxyType",
    "ManagerLostError",
    "Namespace",
    "NamespaceProxy",
    "PoolProxy",
    "QueueProxy",
    "RebuildProxy",
    "RemoteError",
    "Server",
    "SharedMemoryManager",
    "SharedMemoryServer",
    "State",
    "SyncManager",
    "Token",
    "Value",
    "ValueProxy",
    "dispatch",
    "public_methods",
)
