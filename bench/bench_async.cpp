// What does the event loop cost? triad's tasks against raw Boost.Asio coroutines (co_spawn of
// an awaitable, timers in coroutines) in the same run: spawn + complete of a trivial task (and
// with a million pending), gather of a million trivial tasks, a nested co_await, 100,000
// concurrent sleeps (time beyond the sleep per task, and heap bytes per sleeping task), a nested
// co_await under a timeout (against Asio's awaitable operators racing it with a timer), and a
// stream of a million items from a generator (against a triad::channel between two tasks and
// Asio's experimental::coro).
// Python's asyncio on the same workloads: bench/python/async.py.
// Targets: spawn + complete at least 3x cheaper than co_spawn; gather under 100 ns per task;
// under 512 B per sleeping task; under 0.5 us of overhead per task for 100,000 sleeps.

#include <triad/async.hpp>

#include "bench_common.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/co_spawn.hpp>
#include <boost/asio/experimental/coro.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <variant>
#include <vector>

#include <malloc.h>

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

std::size_t heap_in_use() {
    return mallinfo2().uordblks;
}

triad::task<int> trivial() {
    co_return 1;
}
asio::awaitable<int> trivial_asio() {
    co_return 1;
}

// --- spawn + complete --------------------------------------------------------------------------

void triad_spawn(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    for (auto _ : state) {
        triad::run(triad::make_task([n]() -> triad::task<void> {
            std::vector<triad::task_handle<int>> handles;
            handles.reserve(n);
            for (std::size_t i = 0; i < n; ++i)
                handles.push_back(triad::spawn(trivial()));
            int sum = 0;
            for (auto& h : handles)
                sum += co_await h;
            benchmark::DoNotOptimize(sum);
        }));
    }
    triad_bench::set_items(state, static_cast<double>(n));
}

void asio_spawn(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    for (auto _ : state) {
        asio::io_context io(1);
        int sum = 0;
        for (std::size_t i = 0; i < n; ++i)
            asio::co_spawn(io, trivial_asio(), [&sum](std::exception_ptr, int v) { sum += v; });
        io.run();
        benchmark::DoNotOptimize(sum);
    }
    triad_bench::set_items(state, static_cast<double>(n));
}

// --- gather ------------------------------------------------------------------------------------

void triad_gather(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    for (auto _ : state) {
        triad::run(triad::make_task([n]() -> triad::task<void> {
            std::vector<triad::task<int>> tasks;
            tasks.reserve(n);
            for (std::size_t i = 0; i < n; ++i)
                tasks.push_back(trivial());
            const std::vector<int> results = co_await triad::gather(std::move(tasks));
            benchmark::DoNotOptimize(results.data());
        }));
    }
    triad_bench::set_items(state, static_cast<double>(n));
}

// --- nested co_await ---------------------------------------------------------------------------

void triad_nested(benchmark::State& state) {
    constexpr int awaits = 1'000'000;
    for (auto _ : state) {
        triad::run(triad::make_task([]() -> triad::task<void> {
            int sum = 0;
            for (int i = 0; i < awaits; ++i)
                sum += co_await trivial();
            benchmark::DoNotOptimize(sum);
        }));
    }
    triad_bench::set_items(state, awaits);
}

void asio_nested(benchmark::State& state) {
    constexpr int awaits = 1'000'000;
    for (auto _ : state) {
        asio::io_context io(1);
        asio::co_spawn(
            io,
            []() -> asio::awaitable<void> {
                int sum = 0;
                for (int i = 0; i < awaits; ++i)
                    sum += co_await trivial_asio();
                benchmark::DoNotOptimize(sum);
            },
            asio::detached);
        io.run();
    }
    triad_bench::set_items(state, awaits);
}

// --- a nested co_await under a timeout
// ------------------------------------------------------------ The deadline is never reached: what
// is measured is arming and disarming it around each await.

void triad_timeout(benchmark::State& state) {
    constexpr int awaits = 1'000'000;
    for (auto _ : state) {
        triad::run(triad::make_task([]() -> triad::task<void> {
            int sum = 0;
            for (int i = 0; i < awaits; ++i)
                sum += co_await triad::timeout(1s, trivial());
            benchmark::DoNotOptimize(sum);
        }));
    }
    triad_bench::set_items(state, awaits);
}

void asio_timeout(benchmark::State& state) {
    using namespace asio::experimental::awaitable_operators;
    constexpr int awaits = 100'000; // about 8 us each: the timer's wait is cancelled every time
    for (auto _ : state) {
        asio::io_context io(1);
        asio::co_spawn(
            io,
            []() -> asio::awaitable<void> {
                asio::steady_timer deadline(co_await asio::this_coro::executor);
                int sum = 0;
                for (int i = 0; i < awaits; ++i) {
                    deadline.expires_after(1s);
                    const auto first =
                        co_await (trivial_asio() || deadline.async_wait(asio::use_awaitable));
                    sum += std::get<0>(first);
                }
                benchmark::DoNotOptimize(sum);
            },
            asio::detached);
        io.run();
    }
    triad_bench::set_items(state, awaits);
}

// --- 100,000 concurrent sleeps -----------------------------------------------------------------

constexpr std::size_t sleepers = 100'000;
constexpr auto nap = 10ms;

triad::task<void> nap_task() {
    co_await triad::sleep(nap);
}

// Wall time beyond the sleep itself, per task.
double overhead_ns(std::chrono::steady_clock::time_point start) {
    const auto wall = std::chrono::steady_clock::now() - start - nap;
    return std::chrono::duration<double, std::nano>(wall).count() / sleepers;
}

void triad_sleeps(benchmark::State& state) {
    double bytes_per_task = 0;
    double overhead = 0;
    for (auto _ : state) {
        const auto start = std::chrono::steady_clock::now();
        const std::size_t before = heap_in_use();
        triad::run(triad::make_task([&]() -> triad::task<void> {
            std::vector<triad::task_handle<void>> handles;
            handles.reserve(sleepers);
            for (std::size_t i = 0; i < sleepers; ++i)
                handles.push_back(triad::spawn(nap_task()));
            co_await triad::sleep(1ms); // every task is asleep now
            bytes_per_task = static_cast<double>(heap_in_use() - before) / sleepers;
            for (auto& h : handles)
                co_await h;
        }));
        overhead = overhead_ns(start);
    }
    triad_bench::set_items(state, sleepers);
    state.counters["bytes_per_task"] = bytes_per_task;
    state.counters["overhead_ns_per_task"] = overhead;
}

void asio_sleeps(benchmark::State& state) {
    double bytes_per_task = 0;
    double overhead = 0;
    for (auto _ : state) {
        const auto start = std::chrono::steady_clock::now();
        const std::size_t before = heap_in_use();
        asio::io_context io(1);
        for (std::size_t i = 0; i < sleepers; ++i)
            asio::co_spawn(
                io,
                []() -> asio::awaitable<void> {
                    asio::steady_timer timer(co_await asio::this_coro::executor, nap);
                    co_await timer.async_wait(asio::use_awaitable);
                },
                asio::detached);
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                asio::steady_timer timer(co_await asio::this_coro::executor, 1ms);
                co_await timer.async_wait(asio::use_awaitable);
                bytes_per_task = static_cast<double>(heap_in_use() - before) / sleepers;
            },
            asio::detached);
        io.run();
        overhead = overhead_ns(start);
    }
    triad_bench::set_items(state, sleepers);
    state.counters["bytes_per_task"] = bytes_per_task;
    state.counters["overhead_ns_per_task"] = overhead;
}

// --- a stream of items -------------------------------------------------------------------------
// A million items from a producer coroutine to its consumer, one at a time, the producer never
// waiting for anything else: the cost of one hand-over each way.

constexpr long stream_items = 1'000'000;

triad::generator<long> counting(long n) {
    for (long i = 0; i < n; ++i)
        co_yield i;
}

void triad_generator_stream(benchmark::State& state) {
    for (auto _ : state) {
        const long total = triad::run([]() -> triad::task<long> {
            auto gen = counting(stream_items);
            long sum = 0;
            while (auto v = co_await gen.next())
                sum += *v;
            co_return sum;
        }());
        benchmark::DoNotOptimize(total);
    }
    triad_bench::set_items(state, stream_items);
}

// The same stream through a channel between two tasks (what one writes without a generator).
void triad_channel_stream(benchmark::State& state) {
    const auto capacity = static_cast<std::size_t>(state.range(0));
    for (auto _ : state) {
        const long total = triad::run(triad::make_task([capacity]() -> triad::task<long> {
            triad::channel<long> items(capacity);
            auto producer = triad::spawn(triad::make_task([&items]() -> triad::task<void> {
                for (long i = 0; i < stream_items; ++i)
                    co_await items.send(i);
                items.close();
            }));
            long sum = 0;
            while (auto v = co_await items.receive())
                sum += *v;
            co_await producer;
            co_return sum;
        }));
        benchmark::DoNotOptimize(total);
    }
    triad_bench::set_items(state, stream_items);
}

asio::experimental::coro<long> counting_asio(asio::any_io_executor, long n) {
    for (long i = 0; i < n; ++i)
        co_yield i;
}

// Asio's generator, consumed by another experimental::coro (its fastest consumer: an awaitable
// that uses async_resume goes through a completion handler per item, ~15x slower).
asio::experimental::coro<void, long> consume_asio(asio::any_io_executor executor) {
    auto gen = counting_asio(executor, stream_items);
    long sum = 0;
    while (auto v = co_await gen)
        sum += *v;
    co_return sum;
}

void asio_coro_stream(benchmark::State& state) {
    for (auto _ : state) {
        asio::io_context io(1);
        long total = 0;
        asio::experimental::co_spawn(consume_asio(io.get_executor()),
                                     [&total](std::exception_ptr, long sum) { total = sum; });
        io.run();
        benchmark::DoNotOptimize(total);
    }
    triad_bench::set_items(state, stream_items);
}

const bool registered = [] {
    const auto real = [](benchmark::internal::Benchmark* b) {
        return b->UseRealTime()->Unit(benchmark::kMillisecond);
    };
    triad_bench::describe("loop_spawn", {"Spawn a coroutine and let it finish (10k at a time)",
                                         "overhead", "task", ""});
    triad_bench::describe("loop_spawn_1M_pending",
                          {"Spawn with 1M coroutines pending", "overhead", "task", ""});
    triad_bench::describe("loop_gather", {"Gather 1M trivial coroutines", "overhead", "task", ""});
    triad_bench::describe("loop_nested_await", {"co_await a trivial coroutine from a coroutine",
                                                "overhead", "await", ""});
    triad_bench::describe("loop_timeout",
                          {"co_await a trivial coroutine under a 1 s timeout (never reached)",
                           "overhead", "await", ""});
    triad_bench::describe(
        "loop_sleeps",
        {"100k coroutines sleeping 10 ms at once (wall time / 100k)", "overhead", "task", ""});
    real(triad_bench::add("triad_loop", "loop_spawn", triad_spawn))->Arg(10'000);
    real(triad_bench::add("asio_co_spawn", "loop_spawn", asio_spawn))->Arg(10'000);
    real(triad_bench::add("triad_loop", "loop_spawn_1M_pending", triad_spawn))->Arg(1'000'000);
    real(triad_bench::add("asio_co_spawn", "loop_spawn_1M_pending", asio_spawn))->Arg(1'000'000);
    real(triad_bench::add("triad_loop", "loop_gather", triad_gather))->Arg(1'000'000);
    real(triad_bench::add("asio_co_spawn", "loop_gather", asio_spawn))->Arg(1'000'000);
    real(triad_bench::add("triad_loop", "loop_nested_await", triad_nested));
    real(triad_bench::add("asio_awaitable", "loop_nested_await", asio_nested));
    real(triad_bench::add("triad_loop", "loop_timeout", triad_timeout));
    real(triad_bench::add("asio_awaitable", "loop_timeout", asio_timeout));
    triad_bench::describe("loop_stream", {"Stream 1M items from a coroutine to its consumer",
                                          "overhead", "item", ""});
    real(triad_bench::add("triad_generator", "loop_stream", triad_generator_stream));
    real(triad_bench::add("triad_channel", "loop_stream", triad_channel_stream))->Arg(1)->Arg(64);
    real(triad_bench::add("asio_coro", "loop_stream", asio_coro_stream));
    real(triad_bench::add("triad_loop", "loop_sleeps", triad_sleeps))->Iterations(3);
    real(triad_bench::add("asio_co_spawn", "loop_sleeps", asio_sleeps))->Iterations(3);
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    return triad_bench::run_benchmarks(argc, argv);
}
