#!/usr/bin/env python3
"""The Python course's simulated downloads (each waits L ms) on threading, multiprocessing and
asyncio, for the workloads of bench/bench_io_simulated.cpp, with the same N, L and pool sizes as
the C++ run: one thread per download up to 256, 2x cpu_count() processes, every download in
flight on the loop. Pools and the event loop are made before the first repetition and reused;
what starting and stopping a pool of 256 threads (and 1,000) costs is a row of its own,
pool_start_stop, as in C++.
Usage: io_simulated.py [--quick] [--repetitions=N]
"""
import asyncio
import multiprocessing as mp
import time
from concurrent.futures import ThreadPoolExecutor

from common import QUICK, Row, cpu_count, measure, pids_of, start_threads

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


def main():
    ctx = mp.get_context("fork")
    processes = 2 * cpu_count()
    loop = asyncio.new_event_loop()
    # The process pool first: forking a process that already runs a thread pool copies its locks.
    with ctx.Pool(processes) as process_pool:
        for n in SIZES:
            w = f"downloads_{n}"

            def row(executor, run, config="", parallelism=None, workers=lambda: ()):
                return Row(w, executor, n, lambda: sum(run()), lambda done: done == n, config,
                           parallelism, workers)

            # Threads block while they wait, so an I/O pool is sized by how many downloads
            # should be in flight (capped at 256, as in C++), not by cores.
            threads = min(n, 256)
            with ThreadPoolExecutor(threads) as thread_pool:
                start_threads(thread_pool, threads)
                rows = []
                if n <= 20:
                    rows.append(row("python_sequential",
                                    lambda: [download(LATENCY) for _ in range(n)]))
                if n <= 200:
                    rows.append(row("python_multiprocessing",
                                    lambda: process_pool.map(download, [LATENCY] * n, chunksize=1),
                                    f"workers:{processes}", processes,
                                    lambda: pids_of(process_pool)))
                rows.append(row("python_threads",
                                lambda: thread_pool.map(download, [LATENCY] * n),
                                f"workers:{threads}", threads))
                rows.append(row("python_asyncio", lambda: loop.run_until_complete(download_all(n)),
                                "", n))
                measure(rows)
    loop.close()

    def start_stop(workers):
        # A ThreadPoolExecutor starts its threads as work arrives; start them all, as a C++
        # pool's constructor does, then shut down and join.
        with ThreadPoolExecutor(workers) as pool:
            start_threads(pool, workers)
        return True

    measure([Row("pool_start_stop", "python_threads", 1, lambda w=workers: start_stop(w),
                 lambda ok: ok, f"workers:{workers}")
             for workers in ([256] if QUICK else [256, 1000])])


if __name__ == "__main__":
    main()
