"""Pools of workers: ``Pool`` (processes) and ``ThreadPool`` (issue 13; the executor to come).

    _pool        ``Pool``: the ``multiprocessing.Pool`` API, pickling calls into tasks
    _dispatcher  the workers and the thread that hands them tasks and notices deaths
    _worker      the worker's loop; the task and result frames (both sides)
    _results     ``AsyncResult``, ``MapResult``, the ``imap`` iterators and lazy input
    _threads     ``ThreadPool``: the same dispatcher and worker loop, threads for workers

Builds on ``_start`` (workers are ``Process``es), ``_connections`` (one ``Pipe()`` per
worker, ``wait()``) and ``_core``; ``_context`` offers it as ``ctx.Pool``.
"""
