"""Start-up hook of the compatibility harness's interpreters (on their PYTHONPATH only).

In the harness's proctor run, every interpreter -- the harness itself, spawn
children, fork servers, the suite's own helper scripts -- resolves ``multiprocessing``
to proctor from its first import (see ``mp_alias``).
"""

import os

if os.environ.get("PROCTOR_COMPAT_TARGET") == "proctor":
    import mp_alias

    mp_alias.install_trigger()
