"""Start-up hook of the compatibility harness's interpreters (on their PYTHONPATH only).

In the harness's proctor run of the multiprocessing suite, every interpreter -- the
harness itself, spawn children, fork servers, the suite's own helper scripts --
resolves ``multiprocessing`` to proctor from its first import (see ``mp_alias``).
In its run of the concurrent.futures suite, only the scripts its tests start in a
fresh interpreter do (and their children), with ``concurrent.futures``'
``ProcessPoolExecutor`` made proctor's.
"""

import os

if os.environ.get("PROCTOR_COMPAT_TARGET") == "proctor":
    import mp_alias

    if os.environ.get(mp_alias.SUITE_ENV, "multiprocessing") == "multiprocessing":
        mp_alias.install_trigger()
    elif os.environ.get(mp_alias.SCRIPT_ENV) == "1":
        mp_alias.install_futures_trigger()
