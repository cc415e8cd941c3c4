#!/usr/bin/env python3
"""The Python course's simulated downloads (each waits L ms) on threading, multiprocessing and asyncio,
for the workloads of bench/bench_io_simulated.cpp (same N and L as the C++ run).
Usage: io_simulated.py [--quick]
"""
import asyncio
import multiprocessing as mp
import time
from concurrent.futures import ThreadPoolExecutor

from common import QUICK, check, cpu_count, emit

LATENCY = 0.020 if QUICK else 0.050
SIZES = [4, 20, 200] if QUICK else [4, 20, 200, 2000, 10000]


def download(latency):
    time.sleep(latency)
    return 1


async def download_async(latency):
    await asyncio.sleep(latency)
    return 1


async def download_all(n):
    return await asyncio.gather(*(download_async(LATENCY) for _ in range(n)))


def timed(workload, executor, n, go, config=""):
    start = time.perf_counter()
    done = sum(go())
    seconds = time.perf_counter() - start
    check(done == n, f"{workload} on {executor}: {done} of {n} downloads")
    emit(workload, executor, seconds, n, config)


def main():
    ctx = mp.get_context("fork")
    for n in SIZES:
        w = f"downloads_{n}"
        if n <= 20:
            timed(w, "python_sequential", n, lambda: [download(LATENCY) for _ in range(n)])
        if n <= 200:
            workers = 2 * cpu_count()
            with ctx.Pool(workers) as pool:
                timed(w, "python_multiprocessing", n,
                      lambda: pool.map(download, [LATENCY] * n, chunksize=1), f"workers:{workers}")
        # A ThreadPoolExecutor sized like the C++ I/O pools: one thread per download, up to 256.
        threads = min(n, 256)
        with ThreadPoolExecutor(threads) as pool:
            timed(w, "python_threads", n, lambda: pool.map(download, [LATENCY] * n),
                  f"workers:{threads}")
        timed(w, "python_asyncio", n, lambda: asyncio.run(download_all(n)))


if __name__ == "__main__":
    main()
