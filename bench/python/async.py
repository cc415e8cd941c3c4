#!/usr/bin/env python3
"""Python's asyncio on the overhead workloads of bench/bench_async.cpp: spawning tasks,
gathering them, awaiting a coroutine, awaiting under a timeout, a stream of items from an
async generator, and 100k tasks asleep at once (with their memory). One event loop, made
before the first repetition, runs every repetition.

Sizes as in C++ (10,000 spawns, a million awaits and stream items, 100,000 sleepers) except
where Python's cost per task would make five repetitions take minutes: gather and timeout
run 20,000 tasks (C++: a million; asio's timeout 100,000), which the rows' config says; the
cost per task is the same. --quick divides the sizes by 10 (gather and timeout by 4).
Usage: async.py [--quick] [--repetitions=N]
"""
import asyncio
import tracemalloc

from common import QUICK, Row, check, measure


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


async def sleeps(n, nap, measure_memory):
    async def sleeper():
        await asyncio.sleep(nap)
        return 1

    tasks = [asyncio.create_task(sleeper()) for _ in range(n)]
    # The loop runs every new task's first step (each starts its sleep) before this 1 ms timer
    # fires, however long spawning took: every task is asleep now.
    await asyncio.sleep(0.001)
    measure_memory()
    return sum(await asyncio.gather(*tasks))


def main():
    scale = 10 if QUICK else 1
    spawns, awaits, stream_items = 10_000, 1_000_000 // scale, 1_000_000 // scale
    gathered = timeouts = 5_000 if QUICK else 20_000
    # As bench_async.cpp: every task still asleep when the heap is read, whatever spawning took.
    sleepers, nap = 100_000 // scale, (0.5 if QUICK else 3.0)

    loop = asyncio.new_event_loop()
    try:
        # Heap bytes per sleeping task, read by tracemalloc in a run of its own: it slows
        # allocation, so the timed repetitions run without it.
        used = {}
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        check(loop.run_until_complete(sleeps(sleepers, nap, lambda: used.update(
            bytes=tracemalloc.get_traced_memory()[0] - before))) == sleepers, "sleeps")
        tracemalloc.stop()

        def on_loop(workload, fn, n, config=""):
            return Row(workload, "python_asyncio", n, lambda: loop.run_until_complete(fn(n)),
                       lambda total: total == n, config)

        measure([
            on_loop("loop_spawn", spawn_and_complete, spawns),
            on_loop("loop_gather", gather_all, gathered, f"tasks:{gathered}"),
            on_loop("loop_nested_await", nested, awaits, f"awaits:{awaits}"),
            on_loop("loop_timeout", under_timeout, timeouts, f"awaits:{timeouts}"),
            on_loop("loop_stream", stream, stream_items, f"items:{stream_items}"),
        ], warm_up=True)
        # The run that measured memory warmed the loop up for this one.
        measure([
            Row("loop_sleeps", "python_asyncio", sleepers,
                lambda: loop.run_until_complete(sleeps(sleepers, nap, lambda: None)),
                lambda total: total == sleepers, f"tasks:{sleepers}/nap:{nap:g}s",
                counters={"bytes_per_task": used["bytes"] / sleepers},
                # As the C++ rows: the wall time beyond the sleep itself, per task.
                excluded_seconds=nap),
        ])
    finally:
        loop.close()


if __name__ == "__main__":
    main()
