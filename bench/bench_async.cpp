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
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/co_spawn.hpp>
#include <boost/asio/experimental/coro.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <string>
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
    triad_bench::measure_cost_from_here();
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
    triad_bench::measure_cost_from_here();
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

// Asio's gather: its ranged parallel group over deferred co_spawns, which collects every result
// (and every exception) as triad::gather does. The asio_co_spawn row of the same workload is
// co_spawn of each with a handler that counts: no gather, the floor of what Asio can do.
void asio_gather(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        asio::io_context io(1);
        asio::co_spawn(
            io,
            [&io, n]() -> asio::awaitable<void> {
                using spawn_op = decltype(asio::co_spawn(io, trivial_asio(), asio::deferred));
                std::vector<spawn_op> ops;
                ops.reserve(n);
                for (std::size_t i = 0; i < n; ++i)
                    ops.push_back(asio::co_spawn(io, trivial_asio(), asio::deferred));
                auto [order, errors, results] =
                    co_await asio::experimental::make_parallel_group(std::move(ops))
                        .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
                benchmark::DoNotOptimize(results.data());
            },
            asio::detached);
        io.run();
    }
    triad_bench::set_items(state, static_cast<double>(n));
}

void triad_gather(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    triad_bench::measure_cost_from_here();
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
    triad_bench::measure_cost_from_here();
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
    triad_bench::measure_cost_from_here();
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
    triad_bench::measure_cost_from_here();
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
    triad_bench::measure_cost_from_here();
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
// Every task counts itself asleep just before it suspends in its sleep; the loop has one thread
// and nothing suspends in between, so once another task sees the count at `sleepers`, every
// sleeper is suspended with its timer armed. The heap is read then, for triad and Asio alike,
// and the nap is long enough that none has woken yet (a task that has is an error, not a
// smaller number: reading 1 ms after spawning, when many of Asio's had finished, gave it 418 B
// per task in the committed report and 34 B on a busy machine, against 1.18 KB when all sleep).
// The heap is glibc's count (mallinfo2): frames that triad's frame cache or Asio's recycling
// allocator kept from an earlier round count as in use before, so both read a little low;
// peak_rss_bytes counts everything resident.

std::size_t sleepers() {
    return triad_bench::quick() ? 10'000 : 100'000;
}

// Spawning 100,000 takes up to 2 s on a loaded 2-core VM (Asio); the first must still be asleep
// then.
std::chrono::milliseconds nap() {
    return triad_bench::quick() ? 500ms : 3000ms;
}

struct sleep_census {
    std::size_t asleep = 0;
    std::size_t awake = 0;
};

triad::task<void> nap_task(sleep_census& census) {
    ++census.asleep;
    co_await triad::sleep(nap());
    ++census.awake;
}

// The time of a round beyond the sleep itself (spawning, arming, waking, finishing): the row's
// time, so that the length of the nap, chosen for the heap reading, does not dilute it.
void set_overhead_time(benchmark::State& state, std::chrono::steady_clock::time_point start) {
    const auto beyond = std::chrono::steady_clock::now() - start - nap();
    state.SetIterationTime(std::chrono::duration<double>(beyond).count());
}

// Heap bytes per task when every task is asleep; an error if any has woken already.
void record_heap(benchmark::State& state, const sleep_census& census, std::size_t before,
                 double& bytes_per_task) {
    if (census.awake != 0)
        state.SkipWithError("a sleeper woke before all were asleep: the nap is too short for "
                            "this machine, so the heap reading would be an undercount");
    bytes_per_task = static_cast<double>(heap_in_use() - before) / static_cast<double>(sleepers());
}

void triad_sleeps(benchmark::State& state) {
    const std::size_t n = sleepers();
    double bytes_per_task = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        const auto start = std::chrono::steady_clock::now();
        const std::size_t before = heap_in_use();
        sleep_census census;
        triad::run(triad::make_task([&]() -> triad::task<void> {
            std::vector<triad::task_handle<void>> handles;
            handles.reserve(n);
            for (std::size_t i = 0; i < n; ++i)
                handles.push_back(triad::spawn(nap_task(census)));
            while (census.asleep < n)
                co_await triad::sleep(1ms);
            record_heap(state, census, before, bytes_per_task);
            for (auto& h : handles)
                co_await h;
        }));
        set_overhead_time(state, start);
    }
    triad_bench::set_items(state, static_cast<double>(n));
    state.counters["bytes_per_task"] = bytes_per_task;
}

void asio_sleeps(benchmark::State& state) {
    const std::size_t n = sleepers();
    double bytes_per_task = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        const auto start = std::chrono::steady_clock::now();
        const std::size_t before = heap_in_use();
        sleep_census census;
        asio::io_context io(1);
        for (std::size_t i = 0; i < n; ++i)
            asio::co_spawn(
                io,
                [&census]() -> asio::awaitable<void> {
                    asio::steady_timer timer(co_await asio::this_coro::executor, nap());
                    ++census.asleep;
                    co_await timer.async_wait(asio::use_awaitable);
                    ++census.awake;
                },
                asio::detached);
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                asio::steady_timer poll(co_await asio::this_coro::executor);
                while (census.asleep < n) {
                    poll.expires_after(1ms);
                    co_await poll.async_wait(asio::use_awaitable);
                }
                record_heap(state, census, before, bytes_per_task);
            },
            asio::detached);
        io.run();
        set_overhead_time(state, start);
    }
    triad_bench::set_items(state, static_cast<double>(n));
    state.counters["bytes_per_task"] = bytes_per_task;
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
    triad_bench::measure_cost_from_here();
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
    triad_bench::measure_cost_from_here();
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
    triad_bench::measure_cost_from_here();
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
    // --quick (TRIAD_BENCH_QUICK) takes a tenth, for every contender alike; the workload keeps its
    // name, its title says how many.
    const long many = triad_bench::quick() ? 100'000 : 1'000'000;
    const std::string many_text = triad_bench::quick() ? "100k" : "1M";
    triad_bench::describe(
        "loop_spawn_1M_pending",
        {"Spawn with " + many_text + " coroutines pending", "overhead", "task", ""});
    // Asio's parallel group costs microseconds a task: the gather rows take a tenth as many.
    const long gathered = many / 10;
    triad_bench::describe("loop_gather",
                          {"Gather " + std::string(triad_bench::quick() ? "10k" : "100k") +
                               " trivial coroutines (Asio: its ranged parallel_group; and "
                               "co_spawn of each with a counting handler, no gather)",
                           "overhead", "task", ""});
    triad_bench::describe("loop_nested_await", {"co_await a trivial coroutine from a coroutine",
                                                "overhead", "await", ""});
    triad_bench::describe("loop_timeout",
                          {"co_await a trivial coroutine under a 1 s timeout (never reached; "
                           "triad 1M awaits a run, Asio 100k: its operator|| cancels a timer "
                           "each time)",
                           "overhead", "await", ""});
    const std::string sleeping = std::to_string(sleepers() / 1000) + "k";
    triad_bench::describe("loop_sleeps",
                          {sleeping + " coroutines asleep at once (time beyond their " +
                               std::to_string(nap().count()) + " ms sleep / " + sleeping + ")",
                           "overhead", "task", ""});
    real(triad_bench::add("triad_loop", "loop_spawn", triad_spawn))->Arg(10'000);
    real(triad_bench::add("asio_co_spawn", "loop_spawn", asio_spawn))->Arg(10'000);
    real(triad_bench::add("triad_loop", "loop_spawn_1M_pending", triad_spawn))->Arg(many);
    real(triad_bench::add("asio_co_spawn", "loop_spawn_1M_pending", asio_spawn))->Arg(many);
    real(triad_bench::add("triad_loop", "loop_gather", triad_gather))->Arg(gathered);
    real(triad_bench::add("asio_parallel_group", "loop_gather", asio_gather))->Arg(gathered);
    real(triad_bench::add("asio_co_spawn", "loop_gather", asio_spawn))->Arg(gathered);
    real(triad_bench::add("triad_loop", "loop_nested_await", triad_nested));
    real(triad_bench::add("asio_awaitable", "loop_nested_await", asio_nested));
    real(triad_bench::add("triad_loop", "loop_timeout", triad_timeout));
    real(triad_bench::add("asio_awaitable", "loop_timeout", asio_timeout));
    triad_bench::describe("loop_stream", {"Stream 1M items from a coroutine to its consumer",
                                          "overhead", "item", ""});
    real(triad_bench::add("triad_generator", "loop_stream", triad_generator_stream));
    real(triad_bench::add("triad_channel", "loop_stream", triad_channel_stream))->Arg(1)->Arg(64);
    real(triad_bench::add("asio_coro", "loop_stream", asio_coro_stream));
    // One round per repetition: a round is the 3 s nap plus the spawning.
    const auto beyond_nap = [](benchmark::internal::Benchmark* b) {
        b->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);
    };
    beyond_nap(triad_bench::add("triad_loop", "loop_sleeps", triad_sleeps));
    beyond_nap(triad_bench::add("asio_co_spawn", "loop_sleeps", asio_sleeps));
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    return triad_bench::run_benchmarks(argc, argv);
}
