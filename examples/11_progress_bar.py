"""Beyond the tutorial: a progress bar for a pool's map, counting items as they finish.

progress= on Pool.map, imap, imap_unordered and starmap (and ProcessPoolExecutor.map)
counts the input items done -- not chunks -- and moves while a chunk runs: its
worker reports every 0.1 s. With tqdm installed (pip install 'proctor[progress]'),
progress=True draws a live bar with rate and ETA, in a terminal or a notebook. Here a
function draws its own, so this runs without tqdm: it is called as fn(done, total),
first with 0, at most ten times a second, and last with the final count. An input
without len() (a generator) has no total: None.

Expected output:
first call: 0 of 40
[##############################] 40/40
the bar moved while the tasks ran: True
the count never went back: True
a generator has no total: 25 done of None
"""

import time

import proctor


def slow_square(n):
    time.sleep(0.01)
    return n * n


class TextBar:
    """Draws [####    ] done/total; keeps every count it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, done, total):
        self.calls.append((done, total))

    def draw(self, width=30):
        done, total = self.calls[-1]
        filled = width * done // total
        return "[" + "#" * filled + " " * (width - filled) + f"] {done}/{total}"


if __name__ == "__main__":
    with proctor.Pool(2) as pool:
        bar = TextBar()
        squares = pool.map(slow_square, range(40), progress=bar)
        assert squares == [n * n for n in range(40)]
        print("first call: %d of %d" % bar.calls[0])
        print(bar.draw())
        counts = [done for done, _ in bar.calls]
        print("the bar moved while the tasks ran:", any(0 < c < 40 for c in counts))
        print("the count never went back:", counts == sorted(counts))

        unknown = TextBar()
        for _ in pool.imap(slow_square, (n for n in range(25)), progress=unknown):
            pass
        print("a generator has no total: %d done of %s" % unknown.calls[-1])
