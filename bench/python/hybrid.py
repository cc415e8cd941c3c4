#!/usr/bin/env python3
"""The Python course's hybrid: fetch datasets (a sleep stands for the download), then analyse each
(sum of sqrt(n) * log(n + 1)) — on asyncio + a ProcessPoolExecutor, against each tool alone
and against the loop handing the analysis to threads.

The shapes of bench/bench_hybrid.cpp: as many datasets and the same fetch time; the same
numbers (C++'s xorshift, so both languages analyse the same data), generated once before any
timing and before any pool forks, and a fetch is a wait and then a copy of its dataset, made by
whichever thread or process fetched it; every pool has one worker per dataset, so every fetch
is in flight at once. Pools and the event loop are made before the first repetition and reused.
A dataset has as many numbers as in C++ (2,000,000; --quick 500,000), so a row's time per
dataset compares with C++'s directly; Python analyses a number about 20x slower, which is what
the comparison shows.
Usage: hybrid.py [--quick] [--repetitions=N]
"""
import array
import asyncio
import math
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from common import QUICK, Row, measure, pids_of, start_processes, start_threads

DATASETS, FETCH, NUMBERS = (4, 0.030, 500_000) if QUICK else (8, 0.100, 2_000_000)


def make_dataset(dataset_id):
    """bench_hybrid.cpp's make_dataset: xorshift64 seeded by the id, each value in 1..1000."""
    mask = (1 << 64) - 1
    state = (0x9E3779B97F4A7C15 * (dataset_id + 1)) & mask
    numbers = array.array("I", bytes(4 * NUMBERS))
    for i in range(NUMBERS):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        numbers[i] = state % 1000 + 1
    return numbers


DATA = [make_dataset(i) for i in range(DATASETS)]


def cpu_intensive_analysis(data):
    """The Python course's analysis."""
    return sum(math.sqrt(n) * math.log(n + 1) for n in data)


def fetch_blocking(dataset_id):
    time.sleep(FETCH)
    return DATA[dataset_id][:]  # a new array (a memory copy), as C++ returns a new vector


def fetch_and_analyse(dataset_id):
    return cpu_intensive_analysis(fetch_blocking(dataset_id))


async def fetch_dataset(dataset_id):
    await asyncio.sleep(FETCH)
    return DATA[dataset_id][:]


async def loop_alone():
    async def one(i):
        return cpu_intensive_analysis(await fetch_dataset(i))
    return await asyncio.gather(*(one(i) for i in range(DATASETS)))


async def loop_with_pool(pool):
    """Each dataset goes to the analysis pool (processes, or threads) as soon as it has arrived."""
    loop = asyncio.get_running_loop()

    async def one(i):
        data = await fetch_dataset(i)
        return await loop.run_in_executor(pool, cpu_intensive_analysis, data)
    return await asyncio.gather(*(one(i) for i in range(DATASETS)))


def main():
    w = "fetch_then_analyse"
    ids = list(range(DATASETS))
    expected = [cpu_intensive_analysis(data) for data in DATA]
    shape = f"numbers:{NUMBERS}"
    # As in bench_hybrid.cpp, one worker per dataset in every pool.
    workers = DATASETS
    config = f"workers:{workers}/{shape}"

    def verify(results):
        results = list(results)
        return len(results) == DATASETS and all(map(math.isclose, results, expected))

    def row(executor, run, config=shape, parallelism=None, workers=lambda: ()):
        return Row(w, executor, DATASETS, lambda: list(run()), verify, config, parallelism, workers)

    ctx = mp.get_context("fork")
    loop = asyncio.new_event_loop()
    # Process pools first: forking a process that already runs a thread pool copies its locks.
    with ctx.Pool(workers) as process_pool, \
            ProcessPoolExecutor(workers, mp_context=ctx) as analysis_processes, \
            ThreadPoolExecutor(workers) as thread_pool, \
            ThreadPoolExecutor(workers) as analysis_threads:
        start_processes(analysis_processes)
        start_threads(thread_pool, workers)
        start_threads(analysis_threads, workers)
        measure([
            row("python_sequential", lambda: [fetch_and_analyse(i) for i in ids]),
            row("python_threads", lambda: thread_pool.map(fetch_and_analyse, ids), config,
                workers),
            row("python_multiprocessing",
                lambda: process_pool.map(fetch_and_analyse, ids, chunksize=1), config, workers,
                lambda: pids_of(process_pool)),
            row("python_asyncio", lambda: loop.run_until_complete(loop_alone()), shape, DATASETS),
            row("python_hybrid",
                lambda: loop.run_until_complete(loop_with_pool(analysis_processes)), config,
                workers, lambda: pids_of(analysis_processes)),
            row("python_hybrid_threads",
                lambda: loop.run_until_complete(loop_with_pool(analysis_threads)), config,
                workers),
        ])
    loop.close()


if __name__ == "__main__":
    main()
