// Does a thread pool speed up CPU-bound work in C++? (In Python the GIL says no.) The seeds'
// prime checks by trial division, scaled to about a second sequentially, and their sums of
// squares, on triad's pool and the peers, with 1 to 2x the CPU count workers.
// Target: triad at least 1.85x faster than sequential on 2 cores.

#include <triad/thread_pool.hpp>

#include "bench_common.hpp"
#include "workloads.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>

#include <future>
#include <thread>
#include <vector>

namespace {

using triad_bench::uint128;

struct prime_checks {
    static const std::vector<std::uint64_t>& inputs() { return triad_bench::prime_workload(); }
    static bool run(std::uint64_t n) { return triad_bench::is_prime(n); }
};

struct sums_of_squares {
    static const std::vector<std::uint64_t>& inputs() { return triad_bench::squares_workload(); }
    static uint128 run(std::uint64_t n) { return triad_bench::sum_of_squares(n); }
};

template <class Workload>
using result_t = decltype(Workload::run(0));

template <class Workload>
void check(benchmark::State& state, const std::vector<result_t<Workload>>& results) {
    static const std::vector<result_t<Workload>> expected = [] {
        std::vector<result_t<Workload>> out;
        for (std::uint64_t n : Workload::inputs())
            out.push_back(Workload::run(n));
        return out;
    }();
    if (results != expected)
        state.SkipWithError("wrong results");
}

template <class Workload>
void sequential(benchmark::State& state) {
    std::vector<result_t<Workload>> results;
    for (auto _ : state) {
        results.clear();
        for (std::uint64_t n : Workload::inputs())
            results.push_back(Workload::run(n));
        benchmark::DoNotOptimize(results);
    }
    check<Workload>(state, results);
    triad_bench::set_items(state, static_cast<double>(Workload::inputs().size()));
}

template <class Workload>
void triad_map(benchmark::State& state) {
    triad::thread_pool pool(static_cast<std::size_t>(state.range(0)));
    std::vector<result_t<Workload>> results;
    for (auto _ : state) {
        results = pool.map(Workload::run, Workload::inputs());
        benchmark::DoNotOptimize(results);
    }
    check<Workload>(state, results);
    triad_bench::set_items(state, static_cast<double>(Workload::inputs().size()));
}

template <class Workload>
void asio_pool(benchmark::State& state) {
    boost::asio::thread_pool pool(static_cast<std::size_t>(state.range(0)));
    std::vector<result_t<Workload>> results;
    for (auto _ : state) {
        std::vector<std::future<result_t<Workload>>> futures;
        for (std::uint64_t n : Workload::inputs())
            futures.push_back(
                boost::asio::post(pool, boost::asio::use_future([n] { return Workload::run(n); })));
        results.clear();
        for (auto& f : futures)
            results.push_back(f.get());
        benchmark::DoNotOptimize(results);
    }
    pool.join();
    check<Workload>(state, results);
    triad_bench::set_items(state, static_cast<double>(Workload::inputs().size()));
}

template <class Workload>
void std_async(benchmark::State& state) {
    std::vector<result_t<Workload>> results;
    for (auto _ : state) {
        std::vector<std::future<result_t<Workload>>> futures;
        for (std::uint64_t n : Workload::inputs())
            futures.push_back(std::async(std::launch::async, Workload::run, n));
        results.clear();
        for (auto& f : futures)
            results.push_back(f.get());
        benchmark::DoNotOptimize(results);
    }
    check<Workload>(state, results);
    triad_bench::set_items(state, static_cast<double>(Workload::inputs().size()));
}

template <class Workload>
void thread_per_task(benchmark::State& state) {
    std::vector<result_t<Workload>> results;
    for (auto _ : state) {
        results.assign(Workload::inputs().size(), result_t<Workload>{});
        std::vector<std::thread> threads;
        for (std::size_t i = 0; i < Workload::inputs().size(); ++i)
            threads.emplace_back(
                [&results, i] { results[i] = Workload::run(Workload::inputs()[i]); });
        for (auto& t : threads)
            t.join();
        benchmark::DoNotOptimize(results);
    }
    check<Workload>(state, results);
    triad_bench::set_items(state, static_cast<double>(Workload::inputs().size()));
}

template <class Workload>
void register_workload(const std::string& name) {
    const auto workers = [](benchmark::internal::Benchmark* b) {
        b->ArgName("workers")->UseRealTime()->Unit(benchmark::kMillisecond);
        for (std::size_t w = 1; w <= 2 * triad::cpu_count(); ++w)
            b->Arg(static_cast<int64_t>(w));
    };
    triad_bench::add("sequential", name, sequential<Workload>)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    workers(triad_bench::add("triad", name, triad_map<Workload>));
    workers(triad_bench::add("asio_thread_pool", name, asio_pool<Workload>));
    triad_bench::add("std_async", name, std_async<Workload>)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    triad_bench::add("thread_per_task", name, thread_per_task<Workload>)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
}

const bool registered = [] {
    register_workload<prime_checks>("primes");
    register_workload<sums_of_squares>("sum_of_squares");
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    return triad_bench::run_benchmarks(argc, argv);
}
