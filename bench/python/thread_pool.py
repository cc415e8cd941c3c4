#!/usr/bin/env python3
"""Python's ThreadPoolExecutor on the overhead workloads of bench/bench_pool_overhead.cpp:
posting trivial tasks, submit + result, and map over ints, on cpu_count() workers as there.
C++ runs a million tasks; Python runs 20,000 (5,000 with --quick), which costs the same per
task and keeps five repetitions of every row within seconds. The pool is started before the
first repetition and warmed by an untimed round, as the C++ pools are.
Usage: thread_pool.py [--quick] [--repetitions=N]
"""
from concurrent.futures import ThreadPoolExecutor

from common import QUICK, Row, cpu_count, measure, start_threads


def empty():
    pass


def one():
    return 1


def twice(x):
    return 2 * x


def main():
    n = 5_000 if QUICK else 20_000
    workers = cpu_count()
    config = f"workers:{workers}/tasks:{n}"
    items = list(range(n))
    expected = [2 * x for x in items]
    with ThreadPoolExecutor(workers) as pool:
        start_threads(pool, workers)

        def post():
            for f in [pool.submit(empty) for _ in range(n)]:
                f.result()
            return True

        def submit_get():
            return sum(f.result() for f in [pool.submit(one) for _ in range(n)])

        measure([
            Row("pool_post", "python_threads", n, post, lambda ok: ok, config),
            Row("pool_submit_get", "python_threads", n, submit_get, lambda s: s == n, config),
            Row("pool_map", "python_threads", n, lambda: list(pool.map(twice, items)),
                lambda out: out == expected, config),
        ], warm_up=True)


if __name__ == "__main__":
    main()
