#!/usr/bin/env python3
"""The Python course's CPU-bound programs (prime checks by trial division, sums of squares) on
threading, multiprocessing and asyncio, for the workloads of bench/bench_cpu_bound.cpp.

Python checks a prime near 10^12 about 50x slower than C++, so it checks fewer of them: the
rows compare time per item. Usage: cpu_bound.py [--quick]
"""
import asyncio
import math
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from common import QUICK, best_of, check, cpu_count, emit


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
    """What the Python course's asyncio version does: coroutines that never await run one after another."""
    async def one(x):
        return fn(x)
    return await asyncio.gather(*(one(x) for x in items))


async def hybrid(fn, items, workers):
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        return await asyncio.gather(*(loop.run_in_executor(pool, fn, x) for x in items))


def measure(workload, fn, items, expected):
    workers = cpu_count()
    config = f"workers:{workers}"
    ctx = mp.get_context("fork")

    def run(executor, go, cfg=config):
        result = None

        def once():
            nonlocal result
            result = list(go())
        seconds = best_of(1, once)  # one run: Python rows are long enough to be stable
        check(result == expected, f"{workload} on {executor}")
        emit(workload, executor, seconds, len(items), cfg)

    run("python_sequential", lambda: map(fn, items), "")
    with ThreadPoolExecutor(workers) as pool:
        run("python_threads", lambda: pool.map(fn, items))
    with ctx.Pool(workers) as pool:
        run("python_multiprocessing", lambda: pool.map(fn, items, chunksize=1))
    run("python_asyncio", lambda: asyncio.run(on_loop(fn, items)), "")
    run("python_hybrid", lambda: asyncio.run(hybrid(fn, items, workers)))


def main():
    primes = primes_from(10**12, 6 if QUICK else 24)
    measure("primes", is_prime, primes, [True] * len(primes))
    inputs = [1_000_000, 2_000_000, 3_000_000, 4_000_000]
    measure("sum_of_squares", sum_of_squares, inputs, [(x - 1) * x * (2 * x - 1) // 6 for x in inputs])


if __name__ == "__main__":
    main()
