"""ctypes objects in shared memory: the counterpart of ``multiprocessing.sharedctypes``.

::

    from proctor.sharedctypes import Array, RawArray, RawValue, Value, copy, synchronized
"""

from ._sharedmem._sharedctypes import Array as Array
from ._sharedmem._sharedctypes import RawArray as RawArray
from ._sharedmem._sharedctypes import RawValue as RawValue
from ._sharedmem._sharedctypes import Synchronized as Synchronized
from ._sharedmem._sharedctypes import SynchronizedArray as SynchronizedArray
from ._sharedmem._sharedctypes import SynchronizedBase as SynchronizedBase
from ._sharedmem._sharedctypes import SynchronizedString as SynchronizedString
from ._sharedmem._sharedctypes import Value as Value
from ._sharedmem._sharedctypes import copy as copy
from ._sharedmem._sharedctypes import synchronized as synchronized

__all__ = ("Array", "RawArray", "RawValue", "Value", "copy", "synchronized")
