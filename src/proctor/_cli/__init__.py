"""The command line: ``python -m proctor tour | bench | info``.

    _tour   runs the tutorial's programs and checks their output
    _bench  runs ``benchmarks/`` side by side with ``multiprocessing``
    _plot   draws a run's ratios (``bench --plot``; matplotlib, an optional extra)

Imports the front door; nothing imports it.
"""
