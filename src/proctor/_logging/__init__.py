"""proctor's logger, and children's log records forwarded to the parent.

    _logger      ``get_logger()``, ``log_to_stderr()``, life-cycle messages
    _policy      whether a child started now forwards (``set_log_forwarding``)
    _forwarding  the child's forwarding handler and the parent's listener thread

Builds on ``_core`` only.
"""
