#!/usr/bin/env python3
"""Python's multiprocessing on the overhead workloads of bench/bench_process_pool.cpp: pool
start-up, one round trip, and map over 100k ints with automatic chunks and one item per message.
Usage: process_pool.py [--quick]
"""
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor

from common import QUICK, best_of, check, emit


def twice(x):
    return 2 * x


def identity(x):
    return x


def main():
    ctx = mp.get_context("fork")
    items = list(range(100_000))

    def start_stop():
        with ctx.Pool(2):
            pass
    emit("process_start_stop", "python_multiprocessing", best_of(5, start_stop), 1, "Pool(2)")

    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        ex.submit(identity, 1).result()
        n = 200 if QUICK else 2000
        start = time.perf_counter()
        for i in range(n):
            check(ex.submit(identity, i).result() == i, "round trip")
        emit("process_round_trip", "python_multiprocessing", time.perf_counter() - start, n,
             "ProcessPoolExecutor(1)")

    with ctx.Pool(2) as pool:
        expected = [2 * x for x in items]
        check(pool.map(twice, items) == expected, "map")
        emit("process_map_auto_chunks", "python_multiprocessing",
             best_of(3, lambda: pool.map(twice, items)), len(items), "Pool(2)")
        few = items[:10_000] if QUICK else items
        emit("process_map_chunk_1", "python_multiprocessing",
             best_of(1, lambda: pool.map(twice, few, chunksize=1)), len(few), "Pool(2)")


if __name__ == "__main__":
    main()
