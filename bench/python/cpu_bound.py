#!/usr/bin/env python3
"""The Python course's CPU-bound programs (prime checks by trial division, sums of squares) on
threading, multiprocessing and asyncio, for the workloads of bench/bench_cpu_bound.cpp, on
cpu_count() workers (C++ sweeps 1 to 2x that). Pools and the event loop are made before the
first repetition and reused by all, as the C++ pools are.

Python runs the trial division about 50x slower than C++, so it does less of each workload
and the rows compare time per item, and speedups: 16 primes near 10^12 (C++: 1,000; --quick
4, C++ 200), each the same work as in C++; and 8 of the 64 inputs of C++'s sums of squares (the
Python course's 1e6, 2e6, 3e6, 4e6, twice over, against sixteen times over), so an item is the
same work as in C++ and 2 workers still share the inputs evenly (--quick: a tenth of the size,
which the rows' config says).
Usage: cpu_bound.py [--quick] [--repetitions=N]
"""
import asyncio
import math
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from common import (QUICK, Row, cpu_count, measure, pids_of, start_processes, start_threads)


def is_prime(n):
    """The Python course's trial division."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    for d in range(3, math.isqrt(n) + 1, 2):
        if n % d == 0:
            return False
    return True


def is_prime_fast(n):
    """Deterministic Miller-Rabin for 64-bit n: builds the list; the work is is_prime."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in bases:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def primes_from(start, count):
    out, n = [], start | 1
    while len(out) < count:
        if is_prime_fast(n):
            out.append(n)
        n += 2
    return out


def sum_of_squares(x):
    """The Python course's sum(i * i for i in range(x))."""
    return sum(i * i for i in range(x))


async def on_loop(fn, items):
    """What the Python course's asyncio version does: coroutines that never await run one after
    another."""
    async def one(x):
        return fn(x)
    return await asyncio.gather(*(one(x) for x in items))


async def hybrid(pool, fn, items):
    """The loop hands every item to a process pool and awaits the futures (triad_hybrid)."""
    loop = asyncio.get_running_loop()
    return await asyncio.gather(*(loop.run_in_executor(pool, fn, x) for x in items))


def rows_for(workload, fn, items, expected, shape, pools):
    workers, threads, processes, loop, loop_processes = pools
    n = len(items)
    config = f"workers:{workers}/{shape}"

    def row(executor, run, config, parallelism, processes=lambda: ()):
        return Row(workload, executor, n, lambda: list(run()), lambda out: out == expected,
                   config, parallelism, processes)

    return [
        row("python_sequential", lambda: map(fn, items), shape, None),
        row("python_threads", lambda: threads.map(fn, items), config, workers),
        row("python_multiprocessing", lambda: processes.map(fn, items, chunksize=1), config,
            workers, lambda: pids_of(processes)),
        row("python_asyncio", lambda: loop.run_until_complete(on_loop(fn, items)), shape, 1),
        row("python_hybrid", lambda: loop.run_until_complete(hybrid(loop_processes, fn, items)),
            config, workers, lambda: pids_of(loop_processes)),
    ]


def main():
    primes = primes_from(10**12, 4 if QUICK else 16)
    scale = 10 if QUICK else 1
    inputs = [x // scale for x in (1_000_000, 2_000_000, 3_000_000, 4_000_000)] * 2
    sizes = f"sizes:{inputs[0]:.0e}-{max(inputs):.0e}".replace("e+0", "e")
    workers = cpu_count()
    ctx = mp.get_context("fork")
    loop = asyncio.new_event_loop()
    # Process pools first: forking a process that already runs a thread pool copies its locks.
    with ctx.Pool(workers) as processes, \
            ProcessPoolExecutor(workers, mp_context=ctx) as loop_processes, \
            ThreadPoolExecutor(workers) as threads:
        start_processes(loop_processes)
        start_threads(threads, workers)
        pools = (workers, threads, processes, loop, loop_processes)
        measure(rows_for("primes", is_prime, primes, [True] * len(primes),
                         f"primes:{len(primes)}", pools))
        measure(rows_for("sum_of_squares", sum_of_squares, inputs,
                         [(x - 1) * x * (2 * x - 1) // 6 for x in inputs],
                         f"inputs:{len(inputs)}/{sizes}", pools))
    loop.close()


if __name__ == "__main__":
    main()
