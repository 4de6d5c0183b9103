"""proctor's core: what every other layer builds on, and which imports none of them.

    _errors         every exception and warning, one hierarchy
    _lazy_errors    those error types imported on first use (for what a fork server loads)
    _timeout        the one timeout check, deadline and wait-for-readable
    _wakeup         waits on descriptors that another thread's close() of their owner ends
    _loopwait       the event-loop twin of ``_wait``: one watcher thread per semaphore
    _wire           one framed message plus descriptors over a Unix socket; memfds
    _serialization  pickling messages (out-of-band buffers, by-value functions)
    _by_value       functions from ``__main__`` and closures as code plus globals
    _reduction      how objects owning descriptors or OS names reach a child
    _anonmem        anonymous shared memory (memfd) and arenas of small blocks
    _sharedwords    small blocks of that memory seen as 64-bit words
    _closing        the one finalizer for objects that hold OS handles; close_all(fds)
    _system         facts about this machine and its processes (cpu count, liveness)
    _runtime        pids of proctor's own helper processes

Modules here import only the standard library and each other; see the package map in
docs/design.md.
"""
