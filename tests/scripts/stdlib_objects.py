"""multiprocessing's own objects inherited by proctor fork children. argv: the scenario.

Prints one line of results (checked by tests/test_start_methods.py). Run in a fresh
interpreter: the stdlib's queues start its resource tracker, a process of their own.
"""

import multiprocessing
import os
import sys
import time

import proctor


def put_many(q, n):
    for i in range(n):
        q.put(("child", i))


def write_through_proxy(d, n):
    for i in range(n):
        d[(os.getpid(), i)] = i
    return len(d)


def queue_scenario():
    # The parent's feeder thread is running when the child is forked: a child that
    # took it for its own would leave its items in a buffer nobody flushes.
    q = multiprocessing.Queue()
    q.put("parent")
    p = proctor.get_context("fork").Process(target=put_many, args=(q, 1000))
    p.start()
    got = [q.get(timeout=30) for _ in range(1001)]
    p.join(30)
    q.close()
    q.join_thread()
    in_order = sorted(i for _, i in got[1:]) == list(range(1000))
    print(p.exitcode, len(got), got.count("parent"), in_order)


def proxy_scenario():
    with multiprocessing.Manager() as manager:
        d = manager.dict()
        d["parent"] = 0  # the parent's proxy has its connection open
        children = [
            proctor.get_context("fork").Process(target=write_through_proxy, args=(d, 100))
            for _ in range(3)
        ]
        for p in children:
            p.start()
        for p in children:
            p.join(30)
        print([p.exitcode for p in children], len(d), d["parent"])


def sleep_then_write(path):
    time.sleep(0.3)
    with open(path, "w") as f:
        f.write("done")


def start_stdlib_child(path):
    multiprocessing.get_context("fork").Process(target=sleep_then_write, args=(path,)).start()


def children_scenario(path):
    # The parent's own stdlib daemon child must survive a proctor child's exit, and
    # the stdlib child the proctor child started is joined before the child ends.
    ctx = multiprocessing.get_context("fork")
    event = ctx.Event()
    daemon = ctx.Process(target=event.wait, args=(60,), daemon=True)
    daemon.start()
    p = proctor.get_context("fork").Process(target=start_stdlib_child, args=(path,))
    p.start()
    p.join(30)
    written = os.path.exists(path)
    alive = daemon.is_alive()
    event.set()
    daemon.join(30)
    print(p.exitcode, written, alive)


if __name__ == "__main__":
    scenario = sys.argv[1]
    if scenario == "queue":
        queue_scenario()
    elif scenario == "proxy":
        proxy_scenario()
    else:
        children_scenario(sys.argv[2])
