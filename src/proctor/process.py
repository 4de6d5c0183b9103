"""Processes: the counterpart of ``multiprocessing.process``.

::

    from proctor.process import active_children, current_process, parent_process
"""

from ._start._process import active_children as active_children
from ._start._process import current_process as current_process
from ._start._process import parent_process as parent_process

__all__ = ("active_children", "current_process", "parent_process")
