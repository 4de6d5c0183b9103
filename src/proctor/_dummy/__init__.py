"""``proctor.dummy``: the ``multiprocessing`` API on threads of this process (issue 15).

    _process     ``DummyProcess``: a thread with ``Process``'s API; ``current_process()``,
                 ``active_children()``
    _sync        ``Lock``, ``RLock``, ``Semaphore``, ``BoundedSemaphore``, ``Condition``,
                 ``Event``, ``Barrier``: ``threading``'s, with ``multiprocessing``'s signatures
    _queue       ``Queue``, ``JoinableQueue``: ``queue.Queue`` with the ``multiprocessing`` API
    _values      ``Value``, ``Array`` (ctypes objects in this process, with a lock), ``Namespace``
    _connection  ``Pipe``, ``Connection``, ``Listener``, ``Client``: channels between threads
    _manager     ``Manager()``, ``Pool()``: plain objects and a ``ThreadPool``

Built on ``threading`` and ``queue``; uses ``_pool`` (``ThreadPool``), ``_sharedmem``
(ctypes typecodes and the synchronized wrappers), ``_sync`` (``LockNotOwnedError``),
``_connections`` (authkey checks) and ``_core`` (timeouts, errors). Nothing here
starts a process, opens a descriptor or imports at ``import proctor``.
"""
