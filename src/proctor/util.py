"""Utilities: the counterpart of ``multiprocessing.util``.

::

    from proctor import util

    util.log_to_stderr(util.SUBDEBUG)
    util.Finalize(obj, cleanup, args=(path,), exitpriority=10)
    util.register_after_fork(obj, reinit)

The logger is named ``proctor`` and, like ``multiprocessing``'s, does not propagate
to the root logger. ``register_after_fork`` functions run in every child proctor
starts, after it was forked (or, under spawn and forkserver, once its work is
unpickled); ``Finalize`` callbacks with an ``exitpriority`` run at exit around the
joining of children, in ``multiprocessing``'s order.
"""

from ._core._afterfork import ForkAwareLocal as ForkAwareLocal
from ._core._afterfork import ForkAwareThreadLock as ForkAwareThreadLock
from ._core._afterfork import register_after_fork as register_after_fork
from ._core._finalize import Finalize as Finalize
from ._core._finalize import get_temp_dir as get_temp_dir
from ._core._finalize import is_exiting as is_exiting
from ._core._system import abstract_sockets_supported as abstract_sockets_supported
from ._core._system import close_all_fds_except as close_all_fds_except
from ._logging._logger import DEBUG as DEBUG
from ._logging._logger import DEFAULT_LOGGING_FORMAT as DEFAULT_LOGGING_FORMAT
from ._logging._logger import INFO as INFO
from ._logging._logger import LOGGER_NAME as LOGGER_NAME
from ._logging._logger import NOTSET as NOTSET
from ._logging._logger import SUBDEBUG as SUBDEBUG
from ._logging._logger import SUBWARNING as SUBWARNING
from ._logging._logger import debug as debug
from ._logging._logger import get_logger as get_logger
from ._logging._logger import info as info
from ._logging._logger import log_to_stderr as log_to_stderr
from ._logging._logger import sub_debug as sub_debug
from ._logging._logger import sub_warning as sub_warning

__all__ = (
    "DEBUG",
    "DEFAULT_LOGGING_FORMAT",
    "INFO",
    "LOGGER_NAME",
    "NOTSET",
    "SUBDEBUG",
    "SUBWARNING",
    "Finalize",
    "ForkAwareLocal",
    "ForkAwareThreadLock",
    "abstract_sockets_supported",
    "close_all_fds_except",
    "debug",
    "get_logger",
    "get_temp_dir",
    "info",
    "is_exiting",
    "log_to_stderr",
    "register_after_fork",
    "sub_debug",
    "sub_warning",
)
