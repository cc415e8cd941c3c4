#!/usr/bin/env python3
"""Python's ThreadPoolExecutor on the overhead workloads of bench/bench_pool_overhead.cpp:
posting trivial tasks, submit + result, and map over ints (100k rather than 1M: the per-item
cost is the same and the run is 10x shorter). Usage: thread_pool.py [--quick]
"""
import time
from concurrent.futures import ThreadPoolExecutor

from common import QUICK, check, cpu_count, emit


def empty():
    pass


def one():
    return 1


def twice(x):
    return 2 * x


def main():
    n = 20_000 if QUICK else 100_000
    workers = cpu_count()
    config = f"workers:{workers}"
    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        futures = [pool.submit(empty) for _ in range(n)]
        for f in futures:
            f.result()
        emit("pool_post", "python_threads", time.perf_counter() - start, n, config)

        start = time.perf_counter()
        futures = [pool.submit(one) for _ in range(n)]
        check(sum(f.result() for f in futures) == n, "submit_get")
        emit("pool_submit_get", "python_threads", time.perf_counter() - start, n, config)

        items = list(range(n))
        start = time.perf_counter()
        out = list(pool.map(twice, items))
        emit("pool_map", "python_threads", time.perf_counter() - start, n, config)
        check(out == [2 * x for x in items], "map")


if __name__ == "__main__":
    main()
