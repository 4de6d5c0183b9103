"""ctypes objects in shared memory: the counterpart of ``multiprocessing.sharedctypes``.

::

    from proctor.sharedctypes import Array, RawArray, RawValue, Value, copy, synchronized
"""

from ._sharedctypes import Array as Array
from ._sharedctypes import RawArray as RawArray
from ._sharedctypes import RawValue as RawValue
from ._sharedctypes import Synchronized as Synchronized
from ._sharedctypes import SynchronizedArray as SynchronizedArray
from ._sharedctypes import SynchronizedBase as SynchronizedBase
from ._sharedctypes import SynchronizedString as SynchronizedString
from ._sharedctypes import Value as Value
from ._sharedctypes import copy as copy
from ._sharedctypes import synchronized as synchronized

__all__ = ("Array", "RawArray", "RawValue", "Value", "copy", "synchronized")
