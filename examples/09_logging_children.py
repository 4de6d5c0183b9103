"""Beyond the tutorial: records logged in children are handled by the parent's handlers.

Each child logs on its own logger; the parent configured logging once, and its
handler writes every child's records -- whole lines, each child's in order,
all of them handled by the time join() returns.

Expected output (any order, "all children joined" last):
Process-1 app.worker: starting task 1
Process-1 app.worker: finished task 1
Process-2 app.worker: starting task 2
Process-2 app.worker: finished task 2
Process-3 app.worker: starting task 3
Process-3 app.worker: finished task 3
all children joined
"""

import logging
import sys

from proctor import Process


def task(n):
    log = logging.getLogger("app.worker")
    log.info("starting task %d", n)
    log.debug("this is below the parent's level, so the child drops it")
    log.info("finished task %d", n)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(processName)s %(name)s: %(message)s"
    )
    workers = [Process(target=task, args=(n,)) for n in (1, 2, 3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print("all children joined")
