"""Processes: the counterpart of ``multiprocessing.process``.

::

    from proctor.process import BaseProcess, active_children, current_process, parent_process

``BaseProcess`` is the common base of ``proctor.Process`` and of the object
``current_process()`` returns in the main process: use it for type hints and
``isinstance`` checks. ``AuthenticationString`` is the type of ``authkey``: bytes
that refuse to be pickled except for the child being started.
"""

from ._start._process import AuthenticationString as AuthenticationString
from ._start._process import BaseProcess as BaseProcess
from ._start._process import active_children as active_children
from ._start._process import current_process as current_process
from ._start._process import parent_process as parent_process

__all__ = (
    "AuthenticationString",
    "BaseProcess",
    "active_children",
    "current_process",
    "parent_process",
)
