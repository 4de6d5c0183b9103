"""proctor under other libraries' parallel APIs; each module imports its library itself.

    _joblib    ``ProctorBackend``: ``joblib.Parallel`` (and scikit-learn's ``n_jobs``) on
               a proctor ``Pool``; imported only by ``proctor.joblib``
    _backends  what ``Pool(backend=...)`` names: picks the engine adapter below; imported
               by the modules that export ``Pool``, it imports no engine itself
    _dask      ``DaskEngine``: a pool's tasks on a Dask cluster (``distributed.Client``)
    _ray       ``RayEngine``: a pool's tasks on a Ray cluster

Sits above ``_context`` (a backend picks its workers' start method by name) and below
the public modules. Nothing here is imported by ``import proctor`` (``_backends``
comes with the first use of a pool): a library that is not installed costs nothing
until its integration module is imported.
"""
