"""Shared by the Python peers: command-line flags, timing, and the JSON rows the report reads.

Every peer prints one JSON object per line:
    {"workload": ..., "executor": ..., "ns_per_item": ..., "config": ..., "counters": {...}}
with workload names matching the C++ benchmarks' (see `bench_<name> --triad_registry`), so the
report sets Python's rows beside triad's. Only the standard library is used.
"""
import json
import os
import sys
import time

QUICK = "--quick" in sys.argv


def option(name, default=None):
    """The value of `--name=value` or `--name value` on the command line."""
    for i, arg in enumerate(sys.argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return default


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def best_of(repeats, fn):
    """The fastest of `repeats` runs of fn(), in seconds (noise only ever adds time)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def emit(workload, executor, seconds, items, config="", counters=None):
    row = {"workload": workload, "executor": executor,
           "ns_per_item": seconds / items * 1e9, "config": config}
    if counters:
        row["counters"] = counters
    print(json.dumps(row), flush=True)


def check(condition, what):
    if not condition:
        sys.exit(f"{sys.argv[0]}: wrong result: {what}")
