"""Beyond the tutorial: a pool inside an asyncio program.

The event loop awaits the pool's results without blocking, and no thread waits for
them: `await pool.apply_async(...)`, `await pool.map_async(...)`, `async for` over
`pool.imap(...)`. While it waits, other coroutines run (here a ticker). Coroutine
functions are tasks too: each worker runs them on its own event loop, and with
task_concurrency=3 it runs three at once, as an asyncio program would.

Expected output:
apply_async: 49
map_async: [0, 1, 4, 9, 16]
async for: 0 1 4 9 16
the loop ran meanwhile: True
fetched: ['page 0', 'page 1', 'page 2', 'page 3', 'page 4', 'page 5']
"""

import asyncio

import proctor


def square(n):
    return n * n


async def fetch(n):
    await asyncio.sleep(0.1)  # stands for network I/O
    return f"page {n}"


async def main(pool):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.ensure_future(ticker())
    print("apply_async:", await pool.apply_async(square, (7,)))
    print("map_async:", await pool.map_async(square, range(5)))
    print("async for:", *[n async for n in pool.imap(square, range(5))])
    ticking.cancel()
    print("the loop ran meanwhile:", ticks > 0)
    print("fetched:", await pool.map_async(fetch, range(6)))


if __name__ == "__main__":
    with proctor.Pool(2, task_concurrency=3) as pool:
        asyncio.run(main(pool))
