// What does one future cost? A task and its future made, run and read on one thread, no pool:
// std::packaged_task + std::future against triad's task state (the exact path a pool task takes)
// and triad::promise + triad::future. Target: triad under half of std::packaged_task.

#include <triad/future.hpp>
#include <triad/thread_pool.hpp>

#include "bench_common.hpp"

#include <future>

namespace {

int answer() {
    return 42;
}

void std_packaged_task(benchmark::State& state) {
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::packaged_task<int()> task(answer);
        std::future<int> f = task.get_future();
        task();
        benchmark::DoNotOptimize(f.get());
    }
    triad_bench::set_items(state, 1);
}

void std_promise(benchmark::State& state) {
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::promise<int> p;
        std::future<int> f = p.get_future();
        p.set_value(42);
        benchmark::DoNotOptimize(f.get());
    }
    triad_bench::set_items(state, 1);
}

void triad_task(benchmark::State& state) {
    auto body = [] { return answer(); };
    using task = triad::detail::submitted_task<decltype(body), int>;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        task* t = std::make_unique<task>(body).release();
        triad::future<int> f = triad::detail::future_access::make<int>(t);
        t->execute(false);
        benchmark::DoNotOptimize(f.get());
    }
    triad_bench::set_items(state, 1);
}

void triad_promise(benchmark::State& state) {
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        triad::promise<int> p;
        triad::future<int> f = p.get_future();
        p.set_value(42);
        benchmark::DoNotOptimize(f.get());
    }
    triad_bench::set_items(state, 1);
}

// Across threads: a producer thread sets, the benchmark thread waits. Dominated by the wake-up.
template <class Promise>
void cross_thread(benchmark::State& state) {
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        Promise p;
        auto f = p.get_future();
        std::thread producer([&p] { p.set_value(42); });
        benchmark::DoNotOptimize(f.get());
        producer.join();
    }
    triad_bench::set_items(state, 1);
}

const bool registered = [] {
    triad_bench::describe(
        "future_round_trip",
        {"Future round trip (make a task, run it, get its result)", "overhead", "round trip", ""});
    triad_bench::describe("promise_round_trip", {"Promise round trip (set a value, get it)",
                                                 "overhead", "round trip", ""});
    triad_bench::describe(
        "promise_cross_thread",
        {"Promise set on another thread (thread start included)", "overhead", "hand-off", ""});
    triad_bench::add("std_packaged_task", "future_round_trip", std_packaged_task);
    triad_bench::add("triad_future", "future_round_trip", triad_task);
    triad_bench::add("std_promise", "promise_round_trip", std_promise);
    triad_bench::add("triad_future", "promise_round_trip", triad_promise);
    triad_bench::add("std_promise", "promise_cross_thread", cross_thread<std::promise<int>>)
        ->UseRealTime();
    triad_bench::add("triad_future", "promise_cross_thread", cross_thread<triad::promise<int>>)
        ->UseRealTime();
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    return triad_bench::run_benchmarks(argc, argv);
}
