"""proctor as a joblib parallel backend: ``joblib.Parallel`` and scikit-learn on proctor.

::

    import joblib
    import proctor.joblib  # registers the "proctor" backend

    with joblib.parallel_config(backend="proctor", n_jobs=4, task_timeout=60):
        results = joblib.Parallel()(joblib.delayed(f)(x) for x in items)

Every ``Parallel`` -- scikit-learn's ``n_jobs`` included -- then runs on a proctor
``Pool``: a worker that dies fails its batch with ``proctor.WorkerLostError`` and the
backend goes on, ``task_timeout`` stops a call that hangs (``proctor.TaskTimeoutError``),
and the workers' log records reach this process's handlers. As with joblib's ``loky``,
the workers are kept for the next ``Parallel`` call with the same settings (closed after
``IDLE_WORKER_TIMEOUT`` seconds idle, or by ``shutdown_workers()``). joblib is not a
dependency of proctor: ``pip install 'proctor[joblib]'``. See docs/joblib.md.
"""

from ._integrations._joblib import IDLE_WORKER_TIMEOUT as IDLE_WORKER_TIMEOUT
from ._integrations._joblib import ProctorBackend as ProctorBackend
from ._integrations._joblib import register as register
from ._integrations._joblib import shutdown_workers as shutdown_workers

register()

__all__ = ("IDLE_WORKER_TIMEOUT", "ProctorBackend", "register", "shutdown_workers")
