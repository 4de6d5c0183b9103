"""The tutorial's Queue program: a child puts the even numbers, the parent drains the queue.

``while q:`` ends once the queue is empty: a proctor queue is true only while it
holds items (multiprocessing's is always true, so there the loop never ends).

Expected output:
0
2
4
6
8
"""

import proctor as multiprocessing


def evenno(numbers, q):
    for n in numbers:
        if n % 2 == 0:
            q.put(n)


if __name__ == "__main__":
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=evenno, args=(range(10), q))
    p.start()
    p.join()
    while q:
        print(q.get())
