"""Contexts and start methods: the counterpart of ``multiprocessing.context``.

A context is a namespace of factories (``ctx.Process``, ``ctx.Queue``, ``ctx.Lock``...)
bound to one start method::

    from proctor.context import BaseContext, SpawnContext

Obtain contexts with ``proctor.get_context()``; these classes are exported for
``isinstance`` checks and type hints.
"""

from ._context import BaseContext as BaseContext
from ._context import DefaultContext as DefaultContext
from ._context import ForkContext as ForkContext
from ._context import ForkProcess as ForkProcess
from ._context import ForkServerContext as ForkServerContext
from ._context import ForkServerProcess as ForkServerProcess
from ._context import SpawnContext as SpawnContext
from ._context import SpawnProcess as SpawnProcess
from ._core._errors import AuthenticationError as AuthenticationError
from ._core._errors import BufferTooShort as BufferTooShort
from ._core._errors import ProcessError as ProcessError
from ._core._errors import ProcessTimeoutError as TimeoutError  # noqa: F401  (the stdlib's name)
from ._start._process import Process as Process

__all__ = ()  # as in multiprocessing.context: nothing for ``import *``
