"""Starting processes: the ``Process`` object and one strategy per start method.

    _process           ``Process``, ``current_process()``, exit handling
    _popen             what a parent holds for one child: pid, sentinel, channel, outcome
    _popen_fork        the fork start method
    _popen_spawn       the spawn start method (``posix_spawn`` of a new interpreter)
    _popen_forkserver  the forkserver start method
    _forkserver        the fork server process and its client
    _bootstrap         the child's side of a start: receive, prepare, run, report, exit
    _payload           pickling a process object for a child

Builds on ``_core``, ``_logging`` and ``_reaper``.
"""
