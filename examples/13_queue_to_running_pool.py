"""Beyond the tutorial: a Queue and a Lock handed to pool workers that are already running.

multiprocessing refuses this ("RuntimeError: Queue objects should only be shared
between processes through inheritance") and sends users to a Manager, whose queue
and lock live in another process and cost a round trip per call. With proctor the
queue and the lock are ordinary task arguments: each worker gets the same queue (its
items come back to the parent) and the same lock (the workers' updates of a shared
counter under it lose nothing), under every start method.

Expected output:
got 4 reports from the workers
the counter is 4000 (4 tasks x 1000 increments)
"""

import proctor


def count(n, reports, lock, counter):
    for _ in range(n):
        with lock:
            counter.value += 1
    reports.put(f"task of {n} done")


if __name__ == "__main__":
    with proctor.Pool(2) as pool:
        pool.apply(int)  # the workers are up and running before the queue exists
        reports = proctor.Queue()
        lock = proctor.Lock()
        counter = proctor.RawValue("i", 0)  # no lock of its own: the passed Lock guards it
        results = [pool.apply_async(count, (1000, reports, lock, counter)) for _ in range(4)]
        for result in results:
            result.get(timeout=60)
        got = [reports.get(timeout=60) for _ in range(4)]
        print(f"got {len(got)} reports from the workers")
        print(f"the counter is {counter.value} (4 tasks x 1000 increments)")
