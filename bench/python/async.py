#!/usr/bin/env python3
"""Python's asyncio on the overhead workloads of bench/bench_async.cpp: spawning tasks,
gathering them, awaiting a coroutine, 100k tasks asleep at once (with their memory), and a
stream of items from an async generator.
Usage: async.py [--quick]
"""
import asyncio
import time
import tracemalloc

from common import QUICK, check, emit


async def trivial():
    return 1


async def spawn_and_complete(n):
    tasks = [asyncio.create_task(trivial()) for _ in range(n)]
    total = 0
    for t in tasks:
        total += await t
    return total


async def gather_all(n):
    return sum(await asyncio.gather(*(trivial() for _ in range(n))))


async def nested(n):
    total = 0
    for _ in range(n):
        total += await trivial()
    return total


async def under_timeout(n):
    # asyncio.timeout (3.11) where there is one; wait_for otherwise, which wraps each await in
    # a task of its own.
    total = 0
    if hasattr(asyncio, "timeout"):
        for _ in range(n):
            async with asyncio.timeout(1):
                total += await trivial()
    else:
        for _ in range(n):
            total += await asyncio.wait_for(trivial(), 1)
    return total


async def stream(n):
    async def counting():
        for i in range(n):
            yield i

    count = 0
    async for _ in counting():
        count += 1
    return count


async def sleeps(n, nap, measure):
    async def sleeper():
        await asyncio.sleep(nap)
        return 1

    tasks = [asyncio.create_task(sleeper()) for _ in range(n)]
    await asyncio.sleep(0.001)  # every task is asleep now
    measure()
    return sum(await asyncio.gather(*tasks))


def per_task(workload, fn, n, config=""):
    start = time.perf_counter()
    check(asyncio.run(fn(n)) == n, workload)
    emit(workload, "python_asyncio", time.perf_counter() - start, n, config)


def main():
    scale = 10 if QUICK else 1
    per_task("loop_spawn", spawn_and_complete, 10_000)
    # asyncio needs about 1 GiB for a million gathered tasks; 100k gives the same per-task cost.
    per_task("loop_gather", gather_all, 100_000 // scale, f"tasks:{100_000 // scale}")
    per_task("loop_nested_await", nested, 1_000_000 // scale)
    per_task("loop_timeout", under_timeout, 100_000 // scale)
    per_task("loop_stream", stream, 1_000_000 // scale)

    n = 100_000 // scale
    nap = 0.010
    used = {}
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    asyncio.run(sleeps(n, nap, lambda: used.update(bytes=tracemalloc.get_traced_memory()[0] - before)))
    tracemalloc.stop()
    # tracemalloc slows allocation; the time comes from a second run without it.
    start = time.perf_counter()
    check(asyncio.run(sleeps(n, nap, lambda: None)) == n, "sleeps")
    emit("loop_sleeps", "python_asyncio", time.perf_counter() - start, n, f"tasks:{n}",
         {"bytes_per_task": used["bytes"] / n})


if __name__ == "__main__":
    main()
