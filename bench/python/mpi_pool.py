#!/usr/bin/env python3
"""mpi4py.futures.MPIPoolExecutor on the workloads of bench/bench_mpi.cpp, in an MPI job of 3
ranks (rank 0 drives, ranks 1 and 2 serve): one trivial task's round trip, map over 100,000
ints with the chunk size triad's automatic chunking picks (about four chunks per worker rank),
and the prime checks (16 primes near 10^12, --quick 4: the items of cpu_bound.py, each the same
work as one of C++'s 1,000) against sequential Python. The executor is made before the first
repetition and reused, as bench_mpi's pool is. Round trips also carry the median and 10th
percentile of single round trips (p50_us, p10_us), as bench_mpi's rows do. mpi4py's defaults
are kept: its idle ranks poll with a 1 ms back-off (MPI4PY_FUTURES_BACKOFF).
Run as the MPI job mpi4py.futures expects, with ranks already started:
    mpirun --oversubscribe --bind-to none -np 3 python3 -m mpi4py.futures bench/python/mpi_pool.py
Usage: mpi_pool.py [--quick] [--repetitions=N]
"""
import math
import os
import statistics
import time

from mpi4py.futures import MPIPoolExecutor

from common import QUICK, Row, check, measure
from cpu_bound import is_prime, primes_from


def identity(x):
    return x


def twice(x):
    return 2 * x


def pid_after(seconds):
    time.sleep(seconds)
    return os.getpid()


def auto_chunk(items, workers):
    """triad's automatic chunk size: about four chunks per worker rank."""
    return max(1, math.ceil(items / (4 * workers)))


def main():
    items = list(range(100_000))
    expected = [2 * x for x in items]
    primes = primes_from(10**12, 4 if QUICK else 16)
    round_trips = 200 if QUICK else 2000

    with MPIPoolExecutor() as pool:
        # Both worker ranks busy at once, so each says who it is: their CPU time counts.
        worker_pids = sorted(set(pool.map(pid_after, [0.2] * 4, chunksize=1)))
        workers = len(worker_pids)
        check(workers >= 1, "no worker rank answered")
        single_trips = []

        def round_trip():
            ok = True
            for i in range(round_trips):
                start = time.perf_counter()
                ok = pool.submit(identity, i).result() == i and ok
                single_trips.append((time.perf_counter() - start) * 1e6)
            return ok

        def trip_percentiles(_median):
            ordered = sorted(single_trips)
            return {"p10_us": ordered[int(0.10 * (len(ordered) - 1))],
                    "p50_us": statistics.median(ordered)}

        map_chunk = auto_chunk(len(items), workers)
        prime_chunk = auto_chunk(len(primes), workers)
        ranks = lambda: worker_pids
        measure([
            Row("mpi_round_trip", "python_mpi4py", round_trips, round_trip, lambda ok: ok,
                f"MPIPoolExecutor({workers} ranks)", processes=ranks, counters=trip_percentiles),
            Row("mpi_map_auto_chunks", "python_mpi4py", len(items),
                lambda: list(pool.map(twice, items, chunksize=map_chunk)),
                lambda out: out == expected,
                f"MPIPoolExecutor({workers} ranks)/chunksize:{map_chunk}", processes=ranks),
            Row("mpi_primes", "python_sequential", len(primes),
                lambda: [is_prime(p) for p in primes], all, f"primes:{len(primes)}",
                parallelism=1),
            Row("mpi_primes", "python_mpi4py", len(primes),
                lambda: list(pool.map(is_prime, primes, chunksize=prime_chunk)), all,
                f"MPIPoolExecutor({workers} ranks)/primes:{len(primes)}", parallelism=workers,
                processes=ranks),
        ], warm_up=True)


if __name__ == "__main__":
    main()
