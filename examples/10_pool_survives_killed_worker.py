"""Beyond the tutorial: a pool survives a worker killed in the middle of a task.

The task for 3 kills its own worker with SIGKILL, as the kernel's out-of-memory
killer would. Only that task fails, with proctor.WorkerLostError; the pool starts a
new worker, the other tasks' results arrive in order, and the pool goes on
working. (multiprocessing.Pool would wait for the lost result for ever.) Each
number is its own task (chunksize=1): left to choose, imap may put 3 and 4 in one
chunk, and a chunk fails as a whole.

Expected output:
1 squared is 1
2 squared is 4
3 failed: WorkerLostError, its worker was killed by SIGKILL while running __main__.square
4 squared is 16
5 squared is 25
6 squared is 36
the pool still works: [49, 64, 81]
"""

import os
import signal

import proctor


def square(n):
    if n == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return n * n


if __name__ == "__main__":
    with proctor.Pool(2) as pool:
        results = pool.imap(square, [1, 2, 3, 4, 5, 6], chunksize=1)
        for n in [1, 2, 3, 4, 5, 6]:
            try:
                print(n, "squared is", next(results))
            except proctor.WorkerLostError as exc:
                killer = signal.Signals(-exc.exitcode).name
                print(
                    f"{n} failed: {type(exc).__name__}, its worker was killed by {killer}"
                    f" while running {exc.function}"
                )
        print("the pool still works:", pool.map(square, [7, 8, 9]))
