"""Start a child that starts a grandchild, print every pid, then wait to be killed.

argv: start method, "main" or "thread" (which thread starts the child), a scratch file path.
"""

import os
import sys
import threading
import time

import proctor
from proctor._core import _runtime


def grandchild():
    time.sleep(600)


def child(report_path):
    g = proctor.Process(target=grandchild)
    g.start()
    with open(report_path + ".tmp", "w") as f:
        f.write(str(g.pid))
    os.rename(report_path + ".tmp", report_path)  # appears whole or not at all
    time.sleep(600)


if __name__ == "__main__":
    method, where, report_path = sys.argv[1:4]
    proctor.set_start_method(method)
    holder = {}

    def start():
        holder["p"] = proctor.Process(target=child, args=(report_path,))
        holder["p"].start()

    if where == "thread":
        t = threading.Thread(target=start)
        t.start()
        t.join()
    else:
        start()
    deadline = time.monotonic() + 60
    while not os.path.exists(report_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(report_path) as f:
        grandchild_pid = int(f.read())
    helpers = " ".join(str(pid) for pid in _runtime.helper_pids())
    print(holder["p"].pid, grandchild_pid, helpers, flush=True)
    time.sleep(600)
