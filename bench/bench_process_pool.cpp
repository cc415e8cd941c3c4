// What does a process cost? The raw floor (a pipe ping-pong between this process and a forked
// child, one message at a time and 256 in flight), then triad::process_pool: one task's round
// trip, map of 100,000 trivial items with chunk size 1 and automatic chunking, start-up plus
// shutdown of 2 workers, and the CPU-bound prime checks against sequential and the thread pool.
// Python's multiprocessing.Pool on the same workloads: bench/python/process_pool.py.
// Targets: round trip within 1.5x the raw ping-pong; map with automatic chunking at least 4x
// faster per item than Python's Pool.map default (0.19 us); chunk size 1 under 5 us per item;
// start-up plus shutdown at least 4x faster than Python's Pool(2) (5.6 ms); primes at least
// 1.85x sequential on 2 cores.

#include <triad/process_pool.hpp>
#include <triad/thread_pool.hpp>

#include "bench_common.hpp"
#include "workloads.hpp"

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <numeric>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace {

long twice(long x) {
    return 2 * x;
}
long identity(long x) {
    return x;
}

// A child that echoes fixed-size messages until end of file.
struct echo_child {
    int to_child[2];
    int from_child[2];
    pid_t pid;

    echo_child() {
        if (::pipe(to_child) != 0 || ::pipe(from_child) != 0)
            std::abort();
        pid = ::fork();
        if (pid == 0) {
            ::close(to_child[1]);
            ::close(from_child[0]);
            char buffer[16 * 256];
            for (;;) {
                const ssize_t n = ::read(to_child[0], buffer, sizeof buffer);
                if (n <= 0)
                    ::_exit(0);
                if (triad::detail::write_all(from_child[1], buffer, static_cast<std::size_t>(n)) !=
                    0)
                    ::_exit(0);
            }
        }
        ::close(to_child[0]);
        ::close(from_child[1]);
    }
    ~echo_child() {
        ::close(to_child[1]);
        ::close(from_child[0]);
        int status = 0;
        ::waitpid(pid, &status, 0);
    }
    void exchange(std::size_t messages) {
        char buffer[16 * 256] = {};
        const std::size_t bytes = 16 * messages;
        triad::detail::write_all(to_child[1], buffer, bytes);
        triad::detail::read_exact(from_child[0], buffer, bytes, "bench read");
    }
};

void raw_ping_pong(benchmark::State& state) {
    echo_child child;
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        child.exchange(1);
    triad_bench::set_items(state, 1);
}

void raw_pipelined(benchmark::State& state) {
    echo_child child;
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        child.exchange(256);
    triad_bench::set_items(state, 256);
}

void triad_round_trip(benchmark::State& state) {
    triad::process_pool pool(1);
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        benchmark::DoNotOptimize(pool.submit(identity, 1L).get());
    triad_bench::set_items(state, 1);
}

const std::vector<long>& map_items() {
    static const std::vector<long> items = [] {
        std::vector<long> v(100'000);
        std::iota(v.begin(), v.end(), 0);
        return v;
    }();
    return items;
}

void triad_map_auto(benchmark::State& state) {
    triad::process_pool pool(2);
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        benchmark::DoNotOptimize(pool.map(twice, map_items()).data());
    triad_bench::set_items(state, static_cast<double>(map_items().size()));
}

void triad_map_chunk1(benchmark::State& state) {
    triad::process_pool pool(2);
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        benchmark::DoNotOptimize(pool.map(twice, map_items(), {.chunk_size = 1}).data());
    triad_bench::set_items(state, static_cast<double>(map_items().size()));
}

void triad_start_stop(benchmark::State& state) {
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        triad::process_pool pool(2);
        pool.shutdown();
    }
    triad_bench::set_items(state, 1);
}

// The prime checks of bench_cpu_bound; --quick takes its first 200, as bench_cpu_bound does.
const std::vector<std::uint64_t>& prime_list() {
    static const std::vector<std::uint64_t> quick_list(triad_bench::prime_workload().begin(),
                                                       triad_bench::prime_workload().begin() + 200);
    return triad_bench::quick() ? quick_list : triad_bench::prime_workload();
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

void process_pool_primes(benchmark::State& state) {
    const auto& primes = prime_list();
    triad::process_pool pool(static_cast<std::size_t>(state.range(0)));
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        const std::vector<bool> results = pool.map(triad_bench::is_prime, primes);
        if (std::count(results.begin(), results.end(), true) != static_cast<long>(primes.size()))
            state.SkipWithError("wrong results");
    }
    triad_bench::set_items(state, static_cast<double>(primes.size()));
}

void thread_pool_primes(benchmark::State& state) {
    const auto& primes = prime_list();
    triad::thread_pool pool(static_cast<std::size_t>(state.range(0)));
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        const std::vector<bool> results =
            pool.map([](std::uint64_t p) { return triad_bench::is_prime(p); }, primes);
        benchmark::DoNotOptimize(results);
    }
    triad_bench::set_items(state, static_cast<double>(primes.size()));
}

const bool registered = [] {
    const auto real_time = [](benchmark::internal::Benchmark* b) {
        return b->UseRealTime()->Unit(benchmark::kMicrosecond);
    };
    // fork() copies page tables, so start-up time grows with the parent's resident memory: with
    // random interleaving this row may follow rows that grew it; its peak RSS counter says how
    // large the parent was.
    triad_bench::describe("process_start_stop", {"Start and shut down a process pool of 2 workers",
                                                 "overhead", "pool", ""});
    triad_bench::describe("process_round_trip",
                          {"Submit to a process and get the result", "overhead", "round trip", ""});
    triad_bench::describe("process_pipelined", {"Messages pipelined through a pipe, 256 in flight",
                                                "overhead", "message", ""});
    triad_bench::describe(
        "process_map_auto_chunks",
        {"Process-pool map over 100k ints, automatic chunks", "overhead", "item", ""});
    triad_bench::describe(
        "process_map_chunk_1",
        {"Process-pool map over 100k ints, one item per message", "overhead", "item", ""});
    real_time(triad_bench::add("triad_processes", "process_start_stop", triad_start_stop));
    real_time(triad_bench::add("raw_pipe", "process_round_trip", raw_ping_pong));
    real_time(triad_bench::add("triad_processes", "process_round_trip", triad_round_trip));
    real_time(triad_bench::add("raw_pipe", "process_pipelined", raw_pipelined));
    real_time(triad_bench::add("triad_processes", "process_map_auto_chunks", triad_map_auto));
    real_time(triad_bench::add("triad_processes", "process_map_chunk_1", triad_map_chunk1));
    // Kept from the process-pool issue as a quick check; bench_cpu_bound is the full comparison.
    real_time(triad_bench::add("sequential", "primes_2_workers", sequential_primes))
        ->Unit(benchmark::kMillisecond);
    for (int workers : {1, 2})
        real_time(triad_bench::add("process_pool", "primes_2_workers", process_pool_primes))
            ->Arg(workers)
            ->ArgName("workers")
            ->Unit(benchmark::kMillisecond);
    real_time(triad_bench::add("thread_pool", "primes_2_workers", thread_pool_primes))
        ->Arg(2)
        ->ArgName("workers")
        ->Unit(benchmark::kMillisecond);
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    // The echo children exit on end of file, but a broken pipe must not end the benchmark.
    std::signal(SIGPIPE, SIG_IGN);
    return triad_bench::run_benchmarks(argc, argv);
}
