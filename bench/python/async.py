#!/usr/bin/env python3
"""Python's asyncio on the workloads of bench/bench_async.cpp.

Prints "python  <row>  <value>": ns per task for time rows, bytes per task for memory.
Only the standard library is used. Usage: async.py [--quick]
"""
import asyncio
import sys
import time
import tracemalloc


async def trivial():
    return 1


async def spawn_and_complete(n):
    tasks = [asyncio.create_task(trivial()) for _ in range(n)]
    total = 0
    for t in tasks:
        total += await t
    return total


async def gather_all(n):
    return await asyncio.gather(*(trivial() for _ in range(n)))


async def nested(n):
    total = 0
    for _ in range(n):
        total += await trivial()
    return total


async def sleeps(n, nap, measure):
    async def sleeper():
        await asyncio.sleep(nap)

    tasks = [asyncio.create_task(sleeper()) for _ in range(n)]
    await asyncio.sleep(0.001)  # every task is asleep now
    measure()
    await asyncio.gather(*tasks)


def per_task_ns(fn, n):
    start = time.perf_counter()
    asyncio.run(fn(n))
    return (time.perf_counter() - start) / n * 1e9


def main():
    quick = "--quick" in sys.argv
    scale = 10 if quick else 1
    rows = [
        ("spawn_and_complete", per_task_ns(spawn_and_complete, 10_000)),
        ("gather (100k trivial tasks)", per_task_ns(gather_all, 100_000 // scale)),
        ("nested_co_await", per_task_ns(nested, 1_000_000 // scale)),
    ]

    n = 100_000 // scale
    nap = 0.010
    used = {}
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    asyncio.run(sleeps(n, nap, lambda: used.update(bytes=tracemalloc.get_traced_memory()[0] - before)))
    wall = time.perf_counter() - start
    tracemalloc.stop()
    # tracemalloc slows allocation; time a second run without it for the overhead row.
    start = time.perf_counter()
    asyncio.run(sleeps(n, nap, lambda: None))
    wall = min(wall, time.perf_counter() - start)
    rows.append(("100k_sleeps overhead per task", (wall - nap) / n * 1e9))
    rows.append(("100k_sleeps bytes per task", used["bytes"] / n))

    for name, value in rows:
        print(f"python  {name:40s} {value:12.1f}")


if __name__ == "__main__":
    main()
