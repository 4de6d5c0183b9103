"""Pools of workers: ``Pool`` and ``ThreadPool`` (the ``multiprocessing.pool`` API) and
``ProcessPoolExecutor`` (the ``concurrent.futures`` API), all on one dispatcher (issue 13).

    _pool        ``Pool``: the ``multiprocessing.Pool`` API, pickling calls into tasks
    _executor    ``ProcessPoolExecutor``: the ``concurrent.futures`` API, on the same dispatcher
    _dispatcher  the workers and the thread that hands them tasks and notices deaths
    _task        a task of a call, and what the dispatcher knows of a worker (what it holds)
    _lifecycle   a pool's states; live pools joined or terminated at the interpreter's exit
    _worker      the worker's loop; the task and result frames (both sides)
    _results     ``AsyncResult``, ``MapResult``, the ``imap`` iterators and lazy input
    _threads     ``ThreadPool``: the same dispatcher and worker loop, threads for workers
    _remote      ``RemoteDispatcher``: the pools' tasks on a cluster (``backend=``), through
                 an engine adapter that ``_integrations`` provides

Builds on ``_start`` (workers are ``Process``es), ``_connections`` (one ``Pipe()`` per
worker, ``wait()``) and ``_core``; ``_context`` offers it as ``ctx.Pool``.
"""
