#!/usr/bin/env python3
"""Python's multiprocessing on the overhead workloads of bench/bench_process_pool.cpp: pool
start-up plus shutdown (its own row: the only one that makes its pool inside the timed region),
one round trip, and map over 100k ints with automatic chunks and one item per message. The
other pools are made before the first repetition and reused, as in the C++ benchmarks.
One item per message costs Python about 50 us, so that row maps 20,000 ints (5,000 with
--quick) rather than 100,000; the cost per item is the same. Usage: process_pool.py [--quick]
[--repetitions=N]
"""
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

from common import QUICK, Row, measure, pids_of, start_processes


def twice(x):
    return 2 * x


def identity(x):
    return x


def main():
    ctx = mp.get_context("fork")
    items = list(range(100_000))
    expected = [2 * x for x in items]
    few = items[:5_000 if QUICK else 20_000]
    round_trips = 200 if QUICK else 2000

    def start_stop():
        pool = ctx.Pool(2)
        pool.close()  # a graceful shutdown, as triad's process_pool::shutdown (not terminate)
        pool.join()
        return True

    with ProcessPoolExecutor(1, mp_context=ctx) as single, ctx.Pool(2) as pool:
        start_processes(single)

        def round_trip():
            return all(single.submit(identity, i).result() == i for i in range(round_trips))

        measure([
            Row("process_start_stop", "python_multiprocessing", 1, start_stop, lambda ok: ok,
                "Pool(2)"),
            Row("process_round_trip", "python_multiprocessing", round_trips, round_trip,
                lambda ok: ok, "ProcessPoolExecutor(1)", processes=lambda: pids_of(single)),
            Row("process_map_auto_chunks", "python_multiprocessing", len(items),
                lambda: pool.map(twice, items), lambda out: out == expected, "Pool(2)",
                processes=lambda: pids_of(pool)),
            Row("process_map_chunk_1", "python_multiprocessing", len(few),
                lambda: pool.map(twice, few, chunksize=1), lambda out: out == expected[:len(few)],
                f"Pool(2)/items:{len(few)}", processes=lambda: pids_of(pool)),
        ], warm_up=True)


if __name__ == "__main__":
    main()
