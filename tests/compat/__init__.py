"""The compatibility harness: CPython's multiprocessing test suite run against proctor.

``harness.py`` drives it; ``tests/test_cpython_suite.py`` runs it under pytest.
"""
