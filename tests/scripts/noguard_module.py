"""A module that starts a process at import time: the missing main guard."""

import proctor


def work():
    return "worked"


p = proctor.Process(target=work)
p.start()
p.join(60)
print("exitcode", p.exitcode, type(p.exception).__name__, flush=True)
