"""Shared by the Python peers: command-line flags, the measurement of rows, and the JSON rows the
report reads.

Every peer prints one JSON object per line:
    {"workload": ..., "executor": ..., "ns_per_item": ..., "config": ..., "samples": [...],
     "counters": {"cpu_ns_per_item": ..., "peak_rss_bytes": ..., ...}}
with workload names matching the C++ benchmarks' (see `bench_<name> --triad_registry`), so the
report sets Python's rows beside triad's. `samples` holds the time per item of each of the
`--repetitions=N` repetitions (default 5, the same N the runner gives Google Benchmark) and
`ns_per_item` is their median, the statistic of the C++ rows. Only the standard library is used.

Set-up is placed as in the C++ benchmarks: pools and the event loop are made before the first
repetition and reused by every one, so a row measures the work, not the start-up (start-up has
rows of its own, such as process_start_stop).
"""
import ctypes
import ctypes.util
import gc
import json
import os
import random
import resource
import statistics
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


REPETITIONS = max(1, int(option("repetitions", "5")))


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def check(condition, what):
    if not condition:
        sys.exit(f"{sys.argv[0]}: wrong result: {what}")


# --- cost: CPU time and peak resident memory of the process and its worker processes ------------

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _cpu_seconds_of(pid):
    """User + system CPU time of a live (or not yet reaped) process: the sum over its threads of
    /proc/<pid>/task/<tid>/schedstat (nanoseconds), or /proc/<pid>/stat (clock ticks of 10 ms,
    coarse beside a repetition of 50 ms) where the kernel has no schedstat."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it start with the state.
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND  # utime, stime


def _peak_rss_of(pid):
    """VmHWM, the peak resident set since start or the last reset, in bytes (0 when unknown)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak_rss(pid):
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+), where allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rusage_cpu(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def pids_of(pool):
    """The worker processes of a multiprocessing.Pool or a ProcessPoolExecutor (private
    attributes, stable from Python 3.8 to 3.13; none for anything else)."""
    if hasattr(pool, "_pool"):  # multiprocessing.Pool
        return [p.pid for p in pool._pool if p.pid is not None]
    if getattr(pool, "_processes", None):  # ProcessPoolExecutor, once started
        return list(pool._processes)
    return []


try:
    _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
except (AttributeError, OSError):  # not glibc
    _malloc_trim = None


def _same_heap_state():
    """Every repetition starts from a collected, trimmed heap, as the C++ rows start from
    malloc_trim(0): memory freed by an earlier row then neither inflates this row's resident
    set nor spares it the page faults of growing the heap."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


class _Cost:
    """CPU time and peak RSS over one repetition. RUSAGE_CHILDREN counts only children reaped
    during the repetition (a pool started and stopped inside it); a pool's workers that stay alive
    are read from /proc before and after."""

    def __init__(self, worker_pids):
        self.workers = {pid: _cpu_seconds_of(pid) for pid in worker_pids}
        self.workers = {pid: cpu for pid, cpu in self.workers.items() if cpu is not None}
        for pid in ["self", *self.workers]:
            _reset_peak_rss(pid)
        self.reaped = _rusage_cpu(resource.RUSAGE_CHILDREN)
        self.own = _rusage_cpu(resource.RUSAGE_SELF)

    def stop(self):
        """(CPU seconds, peak RSS bytes) of the process and its workers since __init__."""
        own = _rusage_cpu(resource.RUSAGE_SELF) - self.own
        reaped = _rusage_cpu(resource.RUSAGE_CHILDREN) - self.reaped
        cpu, peak = own + reaped, _peak_rss_of("self")
        for pid, before in self.workers.items():
            after = _cpu_seconds_of(pid)
            if after is None:  # reaped during the repetition: its whole life is in `reaped`
                cpu -= before
            else:
                cpu += after - before
                peak += _peak_rss_of(pid)
        return cpu, peak


# --- rows ---------------------------------------------------------------------------------------


class Row:
    """One executor on one workload.

    run() does the measured work once and returns its result, which verify(result) must accept
    (checked after every repetition, outside the timed region). processes() lists the pool's
    worker processes whose CPU and memory count for this row. parallelism is how many items
    can progress at once (workers, or requests in flight), which caps the speedup over the
    sequential row of the same workload at min(items, parallelism). counters adds counters of
    the row's own: a dict, or a function of the median time per item that returns one.
    excluded_seconds is taken off every repetition's time: a wait that is the workload's shape,
    not its cost (as the C++ rows that time manually leave it out)."""

    def __init__(self, workload, executor, items, run, verify, config="", parallelism=None,
                 processes=lambda: (), counters=None, excluded_seconds=0.0):
        self.excluded_seconds = excluded_seconds
        self.workload, self.executor, self.items = workload, executor, items
        self.run, self.verify, self.config = run, verify, config
        self.parallelism, self.processes = parallelism, processes
        self.extra_counters = counters or {}
        self.samples, self.cpu, self.peaks = [], [], []

    def measure_once(self):
        _same_heap_state()
        cost = _Cost(self.processes())
        start = time.perf_counter()
        result = self.run()
        seconds = time.perf_counter() - start
        cpu, peak = cost.stop()
        check(self.verify(result), f"{self.workload} on {self.executor}")
        self.samples.append((seconds - self.excluded_seconds) / self.items * 1e9)
        self.cpu.append(cpu / self.items * 1e9)
        self.peaks.append(peak)

    def json(self):
        counters = {"cpu_ns_per_item": statistics.median(self.cpu),
                    "peak_rss_bytes": statistics.median(self.peaks)}
        median = statistics.median(self.samples)
        extra = self.extra_counters
        counters.update(extra(median) if callable(extra) else extra)
        return {"workload": self.workload, "executor": self.executor,
                "ns_per_item": median, "config": self.config,
                "samples": self.samples, "counters": counters}


def measure(rows, warm_up=False):
    """Measures every row REPETITIONS times and prints them. Repetitions are interleaved, in a
    new shuffled order each round (as Google Benchmark's random interleaving does for the C++
    rows), so a burst of load on the shared machine falls on one repetition of several rows,
    not on every repetition of one. warm_up runs each row once, untimed, first: for rows whose
    first call pays one-time costs (imports, lazy thread start) that set-up cannot pay ahead."""
    if warm_up:
        for row in rows:
            check(row.verify(row.run()), f"{row.workload} on {row.executor} (warm-up)")
    order = list(rows)
    shuffle = random.Random(12)
    for _ in range(REPETITIONS):
        shuffle.shuffle(order)
        for row in order:
            row.measure_once()
    for row in rows:
        print(json.dumps(row.json()), flush=True)
    _flag_impossible_speedups(rows)


def _flag_impossible_speedups(rows):
    """A speedup over sequential above min(items, parallelism) is a harness bug (a one-off
    baseline, as once gave Python threads 23x on 20 requests): flagged when even the row's
    slowest repetition beats the sequential row's fastest by more than that, so noise between
    two equal rows is not."""
    sequential = {r.workload: r.samples for r in rows if r.executor == "python_sequential"}
    for r in rows:
        if r.workload not in sequential or r.parallelism is None:
            continue
        speedup = min(sequential[r.workload]) / max(r.samples)
        cap = min(r.items, r.parallelism)
        if speedup > cap:
            print(f"{sys.argv[0]}: impossible result: {r.executor} on {r.workload} is at "
                  f"least {speedup:.2f}x sequential, above min(items, parallelism) = {cap}",
                  file=sys.stderr)


# --- set-up done before the timed region ---------------------------------------------------------


def start_threads(pool, workers):
    """A ThreadPoolExecutor starts a thread per submit until it has max_workers; start them all
    now, as a C++ pool's constructor does, so no repetition pays for thread creation."""
    import threading
    everyone = threading.Barrier(workers)
    for f in [pool.submit(everyone.wait) for _ in range(workers)]:
        f.result()


def start_processes(pool):
    """A ProcessPoolExecutor forks its workers at the first submit; fork them now."""
    pool.submit(int).result()
