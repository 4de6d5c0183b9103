"""Managers: shared objects in a server process, used through proxies, locally or over TCP.

    _protocol      requests and replies, ``Token``, serializers, ``dispatch``
    _server        ``Server``: the objects, their references, a thread per connection
    _session       a process's connections and references to one manager
    _proxy         ``BaseProxy``, ``AutoProxy``, ``MakeProxyType`` and SyncManager's proxies
    _manager       ``BaseManager``, ``SyncManager`` and their server-side types
    _sharedmemory  ``SharedMemoryManager``

Builds on ``_core``, ``_connections``, ``_start``, ``_sharedmem`` and ``_pool``.
"""

from ._manager import Array as Array
from ._manager import BaseManager as BaseManager
from ._manager import Namespace as Namespace
from ._manager import State as State
from ._manager import SyncManager as SyncManager
from ._manager import Value as Value
from ._protocol import Token as Token
from ._protocol import dispatch as dispatch
from ._protocol import public_methods as public_methods
from ._proxy import AcquirerProxy as AcquirerProxy
from ._proxy import ArrayProxy as ArrayProxy
from ._proxy import AutoProxy as AutoProxy
from ._proxy import BarrierProxy as BarrierProxy
from ._proxy import BaseListProxy as BaseListProxy
from ._proxy import BasePoolProxy as BasePoolProxy
from ._proxy import BaseProxy as BaseProxy
from ._proxy import ConditionProxy as ConditionProxy
from ._proxy import DictProxy as DictProxy
from ._proxy import EventProxy as EventProxy
from ._proxy import IteratorProxy as IteratorProxy
from ._proxy import ListProxy as ListProxy
from ._proxy import MakeProxyType as MakeProxyType
from ._proxy import NamespaceProxy as NamespaceProxy
from ._proxy import PoolProxy as PoolProxy
from ._proxy import QueueProxy as QueueProxy
from ._proxy import RebuildProxy as RebuildProxy
from ._proxy import ValueProxy as ValueProxy
from ._server import Server as Server
from ._sharedmemory import SharedMemoryManager as SharedMemoryManager
from ._sharedmemory import SharedMemoryServer as SharedMemoryServer

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
    "Namespace",
    "NamespaceProxy",
    "PoolProxy",
    "QueueProxy",
    "RebuildProxy",
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
