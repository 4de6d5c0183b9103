"""The tutorial's logging program: proctor's logger, sent to stderr.

Expected output:
[WARNING/MainProcess] Error has occurred
"""

import logging

import proctor as multiprocessing

logger = multiprocessing.log_to_stderr()
logger.setLevel(logging.INFO)
logger.warning("Error has occurred")
