#!/usr/bin/env python3
"""Python's multiprocessing.Pool on the workloads of bench/bench_process_pool.cpp.

Prints one line per row, "name  time_per_item_us", so triad's numbers can be set beside them.
Only the standard library is used. Usage: process_pool.py [--quick]
"""
import math
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def twice(x):
    return 2 * x


def identity(x):
    return x


def is_prime(n):
    """The seeds' trial division."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    for d in range(3, math.isqrt(n) + 1, 2):
        if n % d == 0:
            return False
    return True


def best_of(repeats, fn):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    quick = "--quick" in sys.argv
    ctx = mp.get_context("fork")
    items = list(range(100_000))
    rows = []

    rows.append(("start_and_shutdown_2_workers",
                 best_of(5, lambda: ctx.Pool(2).__exit__(None, None, None)) * 1e6))

    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        ex.submit(identity, 1).result()
        n = 200 if quick else 2000
        start = time.perf_counter()
        for _ in range(n):
            ex.submit(identity, 1).result()
        rows.append(("round_trip (ProcessPoolExecutor)", (time.perf_counter() - start) / n * 1e6))

    with ctx.Pool(2) as pool:
        t = best_of(3, lambda: pool.map(twice, items))
        rows.append(("map_100k_auto_chunks", t / len(items) * 1e6))
        few = items[: 10_000] if quick else items
        t = best_of(1, lambda: pool.map(twice, few, chunksize=1))
        rows.append(("map_100k_chunk_1", t / len(few) * 1e6))

    # Primes: Python is ~100x slower per check, so a short list of the seeds' numbers scaled.
    primes = [104729, 104743, 104759, 104761, 104773, 104779, 104789, 104801] * (50 if quick else 500)
    seq = best_of(1, lambda: [is_prime(p) for p in primes])
    with ctx.Pool(2) as pool:
        par = best_of(1, lambda: pool.map(is_prime, primes))
    rows.append(("primes sequential", seq / len(primes) * 1e6))
    rows.append(("primes Pool(2)", par / len(primes) * 1e6))
    rows.append(("primes speedup", seq / par))

    for name, value in rows:
        print(f"python  {name:40s} {value:12.3f}")


if __name__ == "__main__":
    main()
