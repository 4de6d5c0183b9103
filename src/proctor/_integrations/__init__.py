"""proctor under other libraries' parallel APIs; each module imports its library itself.

    _joblib    ``ProctorBackend``: ``joblib.Parallel`` (and scikit-learn's ``n_jobs``) on
               a proctor ``Pool``; imported only by ``proctor.joblib``

Sits above ``_context`` (a backend picks its workers' start method by name) and below
the public modules. Nothing here is imported by ``import proctor``: a library that is
not installed costs nothing until its integration module is imported.
"""
