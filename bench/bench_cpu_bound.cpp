// Which executor wins on CPU-bound work? The Python course's prime checks by trial division (scaled
// so a sequential run takes about a second) and their sums of squares (exact, 128-bit), on triad's
// thread pool and process pool with 1 to 2x the CPU count workers, on the event loop alone
// (one thread: no speedup, by design) and on the hybrid (the loop awaiting a process pool),
// against boost::asio::thread_pool, std::async, a std::thread per item and oneTBB's task_group
// (in an arena of as many threads as the pools' workers at the CPU count). Target: at least
// 1.85x over sequential on 2 cores.

#include <triad/async.hpp>
#include <triad/process_pool.hpp>
#include <triad/thread_pool.hpp>

#include "bench_common.hpp"
#include "workloads.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>

#include <array>
#include <future>
#include <thread>
#include <vector>

#include <tbb/task_arena.h>
#include <tbb/task_group.h>

namespace {

using triad_bench::uint128;

struct prime_checks {
    static constexpr const char* name = "primes";
    static const std::vector<std::uint64_t>& inputs() {
        static const std::vector<std::uint64_t> quick_list(
            triad_bench::prime_workload().begin(), triad_bench::prime_workload().begin() + 200);
        return triad_bench::quick() ? quick_list : triad_bench::prime_workload();
    }
    static bool run(std::uint64_t n) { return triad_bench::is_prime(n); }
};

// The 128-bit sum travels between processes as two 64-bit halves.
std::array<std::uint64_t, 2> sum_of_squares_halves(std::uint64_t x) {
    const uint128 s = triad_bench::sum_of_squares(x);
    return {static_cast<std::uint64_t>(s >> 64), static_cast<std::uint64_t>(s)};
}

struct sums_of_squares {
    static constexpr const char* name = "sum_of_squares";
    static const std::vector<std::uint64_t>& inputs() { return triad_bench::squares_workload(); }
    static std::array<std::uint64_t, 2> run(std::uint64_t n) { return sum_of_squares_halves(n); }
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

// set_items first: it closes the cost window, and the first check computes the expected results
// (a sequential run of the whole workload) which no executor's cost should include.
template <class Workload>
void finish(benchmark::State& state, const std::vector<result_t<Workload>>& results) {
    triad_bench::set_items(state, static_cast<double>(Workload::inputs().size()));
    check<Workload>(state, results);
}

std::size_t workers_of(const benchmark::State& state) {
    return static_cast<std::size_t>(state.range(0));
}

template <class Workload>
void sequential(benchmark::State& state) {
    std::vector<result_t<Workload>> results;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        results.clear();
        for (std::uint64_t n : Workload::inputs())
            results.push_back(Workload::run(n));
        benchmark::DoNotOptimize(results);
    }
    finish<Workload>(state, results);
}

template <class Workload>
void triad_threads(benchmark::State& state) {
    triad::thread_pool pool(workers_of(state));
    std::vector<result_t<Workload>> results;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        results = pool.map([](std::uint64_t n) { return Workload::run(n); }, Workload::inputs());
        benchmark::DoNotOptimize(results);
    }
    finish<Workload>(state, results);
}

template <class Workload>
void triad_processes(benchmark::State& state) {
    triad::process_pool pool(workers_of(state));
    std::vector<result_t<Workload>> results;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        results = pool.map(&Workload::run, Workload::inputs());
        benchmark::DoNotOptimize(results);
    }
    finish<Workload>(state, results);
}

// The event loop alone: every item a task, all on the loop's one thread.
template <class Workload>
triad::task<result_t<Workload>> compute_task(std::uint64_t n) {
    co_return Workload::run(n);
}

template <class Workload>
void triad_loop(benchmark::State& state) {
    std::vector<result_t<Workload>> results;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        results = triad::run(triad::make_task([]() -> triad::task<std::vector<result_t<Workload>>> {
            std::vector<triad::task<result_t<Workload>>> tasks;
            for (std::uint64_t n : Workload::inputs())
                tasks.push_back(compute_task<Workload>(n));
            co_return co_await triad::gather(std::move(tasks));
        }));
        benchmark::DoNotOptimize(results);
    }
    finish<Workload>(state, results);
}

// The hybrid: the loop hands every item to a process pool and awaits the futures.
template <class Workload>
void triad_hybrid(benchmark::State& state) {
    triad::process_pool pool(workers_of(state));
    std::vector<result_t<Workload>> results;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        results =
            triad::run(triad::make_task([&]() -> triad::task<std::vector<result_t<Workload>>> {
                std::vector<triad::future<result_t<Workload>>> futures;
                for (std::uint64_t n : Workload::inputs())
                    futures.push_back(pool.submit(&Workload::run, n));
                std::vector<result_t<Workload>> out;
                for (auto& f : futures)
                    out.push_back(co_await f);
                co_return out;
            }));
        benchmark::DoNotOptimize(results);
    }
    finish<Workload>(state, results);
}

template <class Workload>
void asio_pool(benchmark::State& state) {
    boost::asio::thread_pool pool(workers_of(state));
    std::vector<result_t<Workload>> results;
    triad_bench::measure_cost_from_here();
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
    finish<Workload>(state, results);
}

template <class Workload>
void std_async(benchmark::State& state) {
    std::vector<result_t<Workload>> results;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::vector<std::future<result_t<Workload>>> futures;
        for (std::uint64_t n : Workload::inputs())
            futures.push_back(std::async(std::launch::async, Workload::run, n));
        results.clear();
        for (auto& f : futures)
            results.push_back(f.get());
        benchmark::DoNotOptimize(results);
    }
    finish<Workload>(state, results);
}

template <class Workload>
void thread_per_task(benchmark::State& state) {
    std::vector<result_t<Workload>> results;
    triad_bench::measure_cost_from_here();
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
    finish<Workload>(state, results);
}

// A task per item in a task_group, in an arena of `workers` threads: this thread (it runs tasks
// while it waits) and workers - 1 of TBB's.
template <class Workload>
void tbb_group(benchmark::State& state) {
    tbb::task_arena arena(static_cast<int>(workers_of(state)));
    std::vector<result_t<Workload>> results;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        results.assign(Workload::inputs().size(), result_t<Workload>{});
        arena.execute([&results] {
            tbb::task_group group;
            for (std::size_t i = 0; i < Workload::inputs().size(); ++i)
                group.run([&results, i] { results[i] = Workload::run(Workload::inputs()[i]); });
            group.wait();
        });
        benchmark::DoNotOptimize(results);
    }
    finish<Workload>(state, results);
}

template <class Workload>
void register_workload(const std::string& title, const std::string& item) {
    const std::string name = Workload::name;
    triad_bench::describe(name, {title, "cpu", item, "workers"});
    const auto timed = [](benchmark::internal::Benchmark* b) {
        return b->UseRealTime()->Unit(benchmark::kMillisecond);
    };
    const auto workers = [&](benchmark::internal::Benchmark* b) {
        timed(b)->ArgName("workers");
        for (std::size_t w = 1; w <= 2 * triad::cpu_count(); ++w)
            b->Arg(static_cast<int64_t>(w));
    };
    const auto all_cores = [&](benchmark::internal::Benchmark* b) {
        timed(b)->ArgName("workers")->Arg(static_cast<int64_t>(triad::cpu_count()));
    };
    timed(triad_bench::add("sequential", name, sequential<Workload>));
    workers(triad_bench::add("triad_threads", name, triad_threads<Workload>));
    workers(triad_bench::add("triad_processes", name, triad_processes<Workload>));
    timed(triad_bench::add("triad_loop", name, triad_loop<Workload>));
    all_cores(triad_bench::add("triad_hybrid", name, triad_hybrid<Workload>));
    workers(triad_bench::add("asio_thread_pool", name, asio_pool<Workload>));
    timed(triad_bench::add("std_async", name, std_async<Workload>));
    timed(triad_bench::add("thread_per_task", name, thread_per_task<Workload>));
    all_cores(triad_bench::add("tbb_task_group", name, tbb_group<Workload>));
}

const bool registered = [] {
    register_workload<prime_checks>("Prime checks (trial division of primes near 10^12)",
                                    "prime check");
    register_workload<sums_of_squares>("Sums of squares (the Python course's 1e6..4e6, 128-bit)",
                                       "sum of squares");
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    return triad_bench::run_benchmarks(argc, argv);
}
