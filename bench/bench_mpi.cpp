// triad::mpi_pool against its floor and its sibling, in one MPI job of 3 ranks on this machine
// (`mpirun --oversubscribe --bind-to none -np 3 bench_mpi`; rank 0 runs Google Benchmark, ranks
// 1 and 2 serve the pool): one task's round trip against a raw MPI_Send/MPI_Recv ping-pong
// between rank 0 and a worker rank of the same job, map of 100,000 trivial items with automatic
// chunks against triad::process_pool(2), and the prime checks of bench_process_pool against
// process_pool(2) and sequential. Python's mpi4py.futures.MPIPoolExecutor on the same workloads:
// bench/python/mpi_pool.py.
// Targets (issue 14): round trip within 1.5x the raw ping-pong; primes at parity with
// process_pool on one machine; at least 10x ahead of mpi4py per item.
//
// Round trips are microseconds on a shared 2-core VM, so each one is timed alone: the rows
// carry the median and the 10th percentile of single round trips (p50_us, p10_us) beside
// Google Benchmark's mean. The CPU counter of the MPI rows adds the worker ranks' CPU time,
// read from /proc (they are this machine's processes, but not this process's children).

#include <triad/mpi_pool.hpp>
#include <triad/process_pool.hpp>

#include "bench_common.hpp"
#include "workloads.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace {

// Our own duplicate of MPI_COMM_WORLD for the raw ping-pong, made on every rank before
// mpi_main: the pool's messages and ours never match each other.
MPI_Comm g_raw_comm = MPI_COMM_NULL;
triad::mpi_pool* g_pool = nullptr; // rank 0, inside mpi_main
std::vector<pid_t> g_worker_pids;  // ranks 1..N-1, for their CPU time

constexpr int tag_hello = 1; // echo server -> rank 0: its rank, once
constexpr int tag_ping = 2;  // either way
constexpr int tag_stop = 3;  // rank 0 -> echo server: return

long identity(long x) {
    return x;
}
long twice(long x) {
    return 2 * x;
}

// A pool task that turns its worker rank into the raw ping-pong's far end: it echoes one long
// per message on g_raw_comm until told to stop, and returns how many it echoed. MPI_Recv
// spins while it waits, as a raw MPI program's would.
long echo_server(long) {
    int rank = 0;
    MPI_Comm_rank(g_raw_comm, &rank);
    MPI_Send(&rank, 1, MPI_INT, 0, tag_hello, g_raw_comm);
    long echoed = 0;
    for (long value = 0;; ++echoed) {
        MPI_Status status{};
        MPI_Recv(&value, 1, MPI_LONG, 0, MPI_ANY_TAG, g_raw_comm, &status);
        if (status.MPI_TAG == tag_stop)
            return echoed;
        MPI_Send(&value, 1, MPI_LONG, 0, tag_ping, g_raw_comm);
    }
}

// CPU time of this process plus every worker rank, for the MPI rows (bench_common's counter
// sees only this process and its children).
std::optional<double> job_cpu_ns() {
    timespec self{};
    if (::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &self) != 0)
        return std::nullopt;
    double total = triad_bench::detail::timespec_ns(self);
    for (pid_t pid : g_worker_pids) {
        const auto ns = triad_bench::detail::descendant_cpu_ns(pid);
        if (!ns)
            return std::nullopt;
        total += *ns;
    }
    return total;
}

// Registers an MPI row: as triad_bench::add, but with the job's CPU time as its cost counter
// (no peak RSS: the ranks' peaks are not this process's).
template <class Fn>
benchmark::internal::Benchmark* add_mpi(const std::string& executor, const std::string& workload,
                                        Fn fn) {
    const std::string name = "BM_" + executor + "_" + workload;
    triad_bench::registry()[name] = triad_bench::benchmark_entry{workload, executor};
    return benchmark::RegisterBenchmark(name.c_str(), [fn](benchmark::State& state) {
        const auto before = job_cpu_ns();
        const double items = fn(state);
        const auto after = job_cpu_ns();
        triad_bench::set_items(state, items);
        if (before && after && state.iterations() > 0 && !state.error_occurred())
            state.counters["cpu_ns_per_item"] =
                (*after - *before) / (items * static_cast<double>(state.iterations()));
    });
}

// Times every round trip alone; sets p10_us and p50_us from them.
template <class Once>
void timed_round_trips(benchmark::State& state, Once&& once) {
    std::vector<double> samples;
    samples.reserve(1 << 16);
    for (auto _ : state) {
        const auto start = std::chrono::steady_clock::now();
        once();
        samples.push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                .count());
    }
    if (samples.empty())
        return;
    const auto at = [&](double q) {
        const auto k = static_cast<std::size_t>(q * static_cast<double>(samples.size() - 1));
        std::nth_element(samples.begin(), samples.begin() + static_cast<long>(k), samples.end());
        return samples[k];
    };
    state.counters["p10_us"] = at(0.10);
    state.counters["p50_us"] = at(0.50);
}

double raw_round_trip(benchmark::State& state) {
    // The far end is a pool task, so it runs on a worker rank of this very job.
    triad::future<long> server = g_pool->submit(echo_server, 0L);
    int peer = 0;
    MPI_Recv(&peer, 1, MPI_INT, MPI_ANY_SOURCE, tag_hello, g_raw_comm, MPI_STATUS_IGNORE);
    long value = 0;
    timed_round_trips(state, [&] {
        MPI_Send(&value, 1, MPI_LONG, peer, tag_ping, g_raw_comm);
        MPI_Recv(&value, 1, MPI_LONG, peer, tag_ping, g_raw_comm, MPI_STATUS_IGNORE);
        ++value;
    });
    MPI_Send(&value, 1, MPI_LONG, peer, tag_stop, g_raw_comm);
    if (server.get() != static_cast<long>(state.iterations()))
        state.SkipWithError("the echo server lost messages");
    return 1;
}

double mpi_round_trip(benchmark::State& state) {
    long value = 0;
    // Warm: the pool sizes a rank's window from its first results.
    for (int i = 0; i < 100; ++i)
        value = g_pool->submit(identity, value).get() + 1;
    timed_round_trips(state, [&] { value = g_pool->submit(identity, value).get() + 1; });
    benchmark::DoNotOptimize(value);
    return 1;
}

void process_round_trip(benchmark::State& state) {
    triad::process_pool pool(1);
    triad_bench::measure_cost_from_here();
    long value = 0;
    timed_round_trips(state, [&] { value = pool.submit(identity, value).get() + 1; });
    benchmark::DoNotOptimize(value);
    triad_bench::set_items(state, 1);
}

long sleep_ms(long ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}

std::size_t resident_bytes() {
    std::FILE* statm = std::fopen("/proc/self/statm", "re");
    if (statm == nullptr)
        return 0;
    unsigned long size = 0;
    unsigned long resident = 0;
    const int read = std::fscanf(statm, "%lu %lu", &size, &resident);
    std::fclose(statm);
    return read == 2 ? resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

// Rank 0's rate: 20,000 tiny tasks submitted at once, then all their results, so tasks are in
// flight on every rank and the time per task is what rank 0 spends on one (with 2 worker ranks
// on this machine's 2 cores, an upper bound). Also, once: rank 0's memory per outstanding task,
// from its resident size with 100,000 tasks submitted while both worker ranks sleep.
double mpi_submit_stream(benchmark::State& state) {
    constexpr long tasks = 20'000;
    std::vector<triad::future<long>> futures;
    futures.reserve(tasks);
    for (auto _ : state) {
        futures.clear();
        for (long i = 0; i < tasks; ++i)
            futures.push_back(g_pool->submit(identity, i));
        long wrong = 0;
        for (long i = 0; i < tasks; ++i)
            wrong += futures[static_cast<std::size_t>(i)].get() != i;
        if (wrong != 0)
            state.SkipWithError("wrong results");
    }
    futures.clear();
    futures.shrink_to_fit();
    static const double bytes_per_task = [] {
        constexpr long outstanding = 100'000;
        std::vector<triad::future<long>> held;
        held.reserve(outstanding);
        std::vector<triad::future<long>> sleepers;
        for (std::size_t r = 0; r < g_pool->size(); ++r)
            sleepers.push_back(g_pool->submit(sleep_ms, 300L));
        const std::size_t before = resident_bytes();
        for (long i = 0; i < outstanding; ++i)
            held.push_back(g_pool->submit(identity, i));
        const std::size_t after = resident_bytes();
        for (auto& f : held)
            f.get();
        for (auto& f : sleepers)
            f.get();
        // The futures themselves (a pointer each) are the caller's, not the pool's.
        return (static_cast<double>(after) - static_cast<double>(before)) / outstanding -
               static_cast<double>(sizeof(triad::future<long>));
    }();
    state.counters["rank0_bytes_per_task"] = bytes_per_task;
    return tasks;
}

const std::vector<long>& map_items() {
    static const std::vector<long> items = [] {
        std::vector<long> v(100'000);
        std::iota(v.begin(), v.end(), 0);
        return v;
    }();
    return items;
}

bool map_checks(const std::vector<long>& out) {
    const auto& in = map_items();
    return out.size() == in.size() && out.front() == 0 && out.back() == 2 * in.back();
}

double mpi_map_auto(benchmark::State& state) {
    for (auto _ : state)
        if (!map_checks(g_pool->map(twice, map_items())))
            state.SkipWithError("wrong results");
    return static_cast<double>(map_items().size());
}

void process_map_auto(benchmark::State& state) {
    triad::process_pool pool(2);
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        if (!map_checks(pool.map(twice, map_items())))
            state.SkipWithError("wrong results");
    triad_bench::set_items(state, static_cast<double>(map_items().size()));
}

// The prime checks of bench_process_pool; --quick takes the first 200, as it does.
const std::vector<std::uint64_t>& prime_list() {
    static const std::vector<std::uint64_t> quick_list(triad_bench::prime_workload().begin(),
                                                       triad_bench::prime_workload().begin() + 200);
    return triad_bench::quick() ? quick_list : triad_bench::prime_workload();
}

bool all_prime(const std::vector<bool>& results) {
    return results.size() == prime_list().size() &&
           std::all_of(results.begin(), results.end(), [](bool b) { return b; });
}

void sequential_primes(benchmark::State& state) {
    const auto& primes = prime_list();
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::size_t count = 0;
        for (std::uint64_t p : primes)
            count += triad_bench::is_prime(p) ? 1 : 0;
        benchmark::DoNotOptimize(count);
    }
    triad_bench::set_items(state, static_cast<double>(primes.size()));
}

double mpi_primes(benchmark::State& state) {
    const auto& primes = prime_list();
    for (auto _ : state)
        if (!all_prime(g_pool->map(triad_bench::is_prime, primes)))
            state.SkipWithError("wrong results");
    return static_cast<double>(primes.size());
}

void process_primes(benchmark::State& state) {
    const auto& primes = prime_list();
    triad::process_pool pool(2);
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        if (!all_prime(pool.map(triad_bench::is_prime, primes)))
            state.SkipWithError("wrong results");
    triad_bench::set_items(state, static_cast<double>(primes.size()));
}

const bool registered = [] {
    const auto real_time = [](benchmark::internal::Benchmark* b) {
        return b->UseRealTime()->Unit(benchmark::kMicrosecond);
    };
    triad_bench::describe("mpi_round_trip",
                          {"Submit to another MPI rank and get the result (3 ranks, 2 cores)",
                           "overhead", "round trip", ""});
    triad_bench::describe("mpi_submit_stream",
                          {"Rank 0's rate: 20,000 tiny tasks submitted at once, then gathered",
                           "overhead", "task", ""});
    triad_bench::describe("mpi_map_auto_chunks",
                          {"MPI pool map over 100k ints, automatic chunks, against the process "
                           "pool",
                           "overhead", "item", ""});
    triad_bench::describe("mpi_primes", {"Prime checks on 2 MPI worker ranks against 2 worker "
                                         "processes (the same 2 cores)",
                                         "cpu", "prime checked", ""});
    real_time(add_mpi("raw_mpi", "mpi_round_trip", raw_round_trip));
    real_time(add_mpi("triad_mpi", "mpi_round_trip", mpi_round_trip));
    real_time(triad_bench::add("triad_processes", "mpi_round_trip", process_round_trip));
    real_time(add_mpi("triad_mpi", "mpi_submit_stream", mpi_submit_stream));
    real_time(add_mpi("triad_mpi", "mpi_map_auto_chunks", mpi_map_auto));
    real_time(triad_bench::add("triad_processes", "mpi_map_auto_chunks", process_map_auto));
    real_time(triad_bench::add("sequential", "mpi_primes", sequential_primes))
        ->Unit(benchmark::kMillisecond);
    real_time(add_mpi("triad_mpi", "mpi_primes", mpi_primes))->Unit(benchmark::kMillisecond);
    real_time(triad_bench::add("triad_processes", "mpi_primes", process_primes))
        ->Unit(benchmark::kMillisecond);
    return true;
}();

bool lists_only(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--triad_registry" || arg == "--benchmark_list_tests" ||
            arg == "--benchmark_list_tests=true")
            return true;
    }
    return false;
}

} // namespace

int main(int argc, char** argv) {
    // Listing the benchmarks needs no MPI job: bench_report asks without mpirun.
    if (lists_only(argc, argv))
        return triad_bench::run_benchmarks(argc, argv);
    // MPI started here, not by mpi_main, so the raw ping-pong has a communicator of its own on
    // every rank; mpi_main then neither starts nor finishes MPI.
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS ||
        provided < MPI_THREAD_MULTIPLE) {
        std::fprintf(stderr, "bench_mpi: MPI_THREAD_MULTIPLE is not available\n");
        return 1;
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &g_raw_comm);
    int size = 0;
    MPI_Comm_size(g_raw_comm, &size);
    const int pid = static_cast<int>(::getpid());
    std::vector<int> pids(static_cast<std::size_t>(size));
    MPI_Gather(&pid, 1, MPI_INT, pids.data(), 1, MPI_INT, 0, g_raw_comm);
    g_worker_pids.assign(pids.begin() + (pids.empty() ? 0 : 1), pids.end());
    int code = 1;
    try {
        code = triad::mpi_main(argc, argv, [&](triad::mpi_pool& pool) {
            g_pool = &pool;
            const int status = triad_bench::run_benchmarks(argc, argv);
            g_pool = nullptr;
            return status;
        });
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_mpi: %s\n", e.what());
    }
    MPI_Comm_free(&g_raw_comm);
    MPI_Finalize();
    return code;
}
