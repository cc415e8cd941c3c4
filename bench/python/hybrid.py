#!/usr/bin/env python3
"""The Python course's hybrid: fetch datasets (asyncio.sleep stands for the download), then analyse each
(sum of sqrt(n) * log(n + 1)) — on asyncio + a ProcessPoolExecutor, against each tool alone.
Same sizes as bench/bench_hybrid.cpp. Usage: hybrid.py [--quick]
"""
import asyncio
import math
import multiprocessing as mp
import random
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from common import QUICK, check, cpu_count, emit

DATASETS, FETCH, NUMBERS = (4, 0.030, 500_000) if QUICK else (8, 0.100, 2_000_000)


def make_dataset(dataset_id):
    return random.Random(dataset_id).choices(range(1, 1001), k=NUMBERS)


def cpu_intensive_analysis(data):
    """The Python course's analysis."""
    return sum(math.sqrt(n) * math.log(n + 1) for n in data)


def fetch_blocking(dataset_id):
    time.sleep(FETCH)
    return make_dataset(dataset_id)


def fetch_and_analyse(dataset_id):
    return cpu_intensive_analysis(fetch_blocking(dataset_id))


async def fetch_dataset(dataset_id):
    await asyncio.sleep(FETCH)
    return make_dataset(dataset_id)


async def loop_alone():
    async def one(i):
        return cpu_intensive_analysis(await fetch_dataset(i))
    return await asyncio.gather(*(one(i) for i in range(DATASETS)))


async def loop_with_processes():
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(cpu_count(), mp_context=mp.get_context("fork")) as pool:
        async def one(i):
            data = await fetch_dataset(i)
            return await loop.run_in_executor(pool, cpu_intensive_analysis, data)
        return await asyncio.gather(*(one(i) for i in range(DATASETS)))


def main():
    w = "fetch_then_analyse"
    ids = list(range(DATASETS))
    expected = [cpu_intensive_analysis(make_dataset(i)) for i in ids]
    workers = 2 * cpu_count()

    def timed(executor, go, config=""):
        start = time.perf_counter()
        results = list(go())
        seconds = time.perf_counter() - start
        check(all(math.isclose(a, b) for a, b in zip(results, expected)) and len(results) == DATASETS,
              f"{w} on {executor}")
        emit(w, executor, seconds, DATASETS, config)

    timed("python_sequential", lambda: [fetch_and_analyse(i) for i in ids])
    with ThreadPoolExecutor(workers) as pool:
        timed("python_threads", lambda: pool.map(fetch_and_analyse, ids), f"workers:{workers}")
    with mp.get_context("fork").Pool(workers) as pool:
        timed("python_multiprocessing", lambda: pool.map(fetch_and_analyse, ids, chunksize=1),
              f"workers:{workers}")
    timed("python_asyncio", lambda: asyncio.run(loop_alone()))
    timed("python_hybrid", lambda: asyncio.run(loop_with_processes()), f"workers:{cpu_count()}")


if __name__ == "__main__":
    main()
