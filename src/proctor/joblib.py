"""proctor as a joblib parallel backend: ``joblib.Parallel`` and scikit-learn on proctor.

::

    import joblib
    import proctor.joblib  # registers the "proctor" backend

    with joblib.parallel_config(backend="proctor", n_jobs=4, task_timeout=60):
        results = joblib.Parallel()(joblib.delayed(f)(x) for x in items)

Every ``Parallel`` -- scikit-learn's ``n_jobs`` included -- then runs on a proctor
``Pool``: a worker that dies fails its batch with ``proctor.WorkerLostError`` and the
backend goes on, ``task_timeout`` stops a call that hangs (``proctor.TaskTimeoutError``),
and the workers' log records reach this process's handlers. joblib is not a dependency
of proctor: ``pip install 'proctor[joblib]'``. See docs/joblib.md.
"""

from ._integrations._joblib import ProctorBackend as ProctorBackend
from ._integrations._joblib import register as register

register()

__all__ = ("ProctorBackend", "register")
