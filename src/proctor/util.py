"""Logging helpers: the counterpart of ``multiprocessing.util``.

::

    from proctor import util

    util.log_to_stderr(util.SUBDEBUG)
    util.get_logger().info("...")

The logger is named ``proctor`` and, like ``multiprocessing``'s, does not propagate
to the root logger.
"""

from ._logging._logger import DEFAULT_LOGGING_FORMAT as DEFAULT_LOGGING_FORMAT
from ._logging._logger import LOGGER_NAME as LOGGER_NAME
from ._logging._logger import SUBDEBUG as SUBDEBUG
from ._logging._logger import SUBWARNING as SUBWARNING
from ._logging._logger import debug as debug
from ._logging._logger import get_logger as get_logger
from ._logging._logger import info as info
from ._logging._logger import log_to_stderr as log_to_stderr
from ._logging._logger import sub_debug as sub_debug
from ._logging._logger import sub_warning as sub_warning

__all__ = (
    "SUBDEBUG",
    "SUBWARNING",
    "debug",
    "get_logger",
    "info",
    "log_to_stderr",
    "sub_debug",
    "sub_warning",
)
