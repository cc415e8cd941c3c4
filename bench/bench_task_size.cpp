// Where does each model's overhead stop mattering? The same total of CPU work (about 100 ms run
// sequentially) cut into tasks of 1 µs, 10 µs, 100 µs and 1 ms, on 2 workers everywhere: triad's
// thread pool (map, and a submit per task), its process pool (map with automatic chunks, and one
// task per chunk), its event loop awaiting a thread pool's futures, boost::asio::thread_pool
// (post and a latch), std::async per task (only where the thread count stays sane) and, when
// libtbb-dev is installed, oneTBB's parallel_for and task_group in an arena of 2.
//
// A task is `spin` (bench/workloads.hpp), calibrated at start-up so that one task costs the
// size it is named for; `item_ns` is what one task measured at start-up, `efficiency` is the
// sequential time of the work (tasks x item_ns) over the executor's time x its workers: 1 is
// perfect, 0.5 on 2 workers is no gain over sequential. The sequential row's efficiency (one
// worker) is the share of a core the run got: well below 1, the machine was busy.
//
// Each size is its own workload (task_1us ... task_1000us), so the report gives each a table
// and a verdict. One workload with the size as an argument would not do: the report keeps each
// executor's best configuration (which would always be the smallest task) and divides every
// point of a CPU scaling chart by one sequential time.

#include <triad/async.hpp>
#include <triad/process_pool.hpp>
#include <triad/thread_pool.hpp>

#include "bench_common.hpp"
#include "workloads.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <future>
#include <latch>
#include <string>
#include <utility>
#include <vector>

#ifdef TRIAD_BENCH_HAVE_TBB
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>
#endif

namespace {

using clock_type = std::chrono::steady_clock;

constexpr std::size_t workers = 2;

// A task: the seed that makes its result distinct, and the number of spin steps that make it
// cost its size. Both travel with the task, so a worker process needs nothing else.
using task_item = std::pair<std::uint64_t, std::uint64_t>;

std::uint64_t run_task(task_item item) {
    return triad_bench::spin(item.first, item.second);
}

double elapsed_ns(clock_type::time_point since) {
    return std::chrono::duration<double, std::nano>(clock_type::now() - since).count();
}

// The work of every size, run sequentially: about 100 ms (10 ms in quick mode), so that a run of
// every row with 5 repetitions takes about a minute on 2 cores.
double total_work_ns() {
    return triad_bench::quick() ? 10e6 : 100e6;
}

// Nanoseconds one spin step takes here: the fastest of several timed runs, the one least
// disturbed by the other processes on the machine.
double ns_per_step() {
    constexpr std::uint64_t steps = 1'000'000;
    double best = 1e300;
    for (std::uint64_t trial = 0; trial < 20; ++trial) {
        const auto start = clock_type::now();
        benchmark::DoNotOptimize(triad_bench::spin(trial, steps));
        best = std::min(best, elapsed_ns(start) / steps);
    }
    return best;
}

struct task_size {
    int micros; // the size asked for
    std::vector<task_item> items;
    std::vector<std::uint64_t> expected; // the results of a sequential run
    double item_ns = 0;                  // what one task measured, sequentially, at start-up
};

std::vector<task_size>& task_sizes() {
    static std::vector<task_size> sizes = {
        {1, {}, {}, 0}, {10, {}, {}, 0}, {100, {}, {}, 0}, {1000, {}, {}, 0}};
    return sizes;
}

std::size_t task_count(int micros) {
    return static_cast<std::size_t>(total_work_ns() / (micros * 1e3));
}

// Calibrates the tasks of every size and computes their results. The results are computed in
// batches of about 1 ms, each timed; the fastest batch (the least disturbed by other processes)
// gives the cost of one task.
void prepare_task_sizes() {
    const double step_ns = ns_per_step();
    for (task_size& size : task_sizes()) {
        const auto steps = static_cast<std::uint64_t>(size.micros * 1e3 / step_ns + 0.5);
        const std::size_t count = task_count(size.micros);
        size.items.clear();
        for (std::size_t i = 0; i < count; ++i)
            size.items.emplace_back(i, std::max<std::uint64_t>(steps, 1));
        size.expected.assign(count, 0);
        const std::size_t batch =
            std::clamp<std::size_t>(static_cast<std::size_t>(1e6 / (size.micros * 1e3)), 1, count);
        double best = 1e300;
        for (std::size_t first = 0; first < count; first += batch) {
            const std::size_t last = std::min(count, first + batch);
            const auto start = clock_type::now();
            for (std::size_t i = first; i < last; ++i)
                size.expected[i] = run_task(size.items[i]);
            best = std::min(best, elapsed_ns(start) / static_cast<double>(last - first));
        }
        size.item_ns = best;
    }
}

// Times the loop, checks the last iteration's results against the sequential ones and sets
// the counters. `run_once(results)` runs every task of the size once and leaves the results in
// `results`, in task order.
template <class RunOnce>
void measure(benchmark::State& state, const task_size& size, std::size_t threads,
             RunOnce run_once) {
    std::vector<std::uint64_t> results;
    triad_bench::measure_cost_from_here(); // the pool built by the caller is not the tasks' cost
    const auto start = clock_type::now();
    for (auto _ : state) {
        run_once(results);
        benchmark::DoNotOptimize(results.data());
        benchmark::ClobberMemory();
    }
    const double elapsed = elapsed_ns(start);
    if (results != size.expected) {
        state.SkipWithError("wrong results: the tasks' results differ from a sequential run's");
        return;
    }
    const auto count = static_cast<double>(size.items.size());
    triad_bench::set_items(state, count);
    state.counters["item_ns"] = size.item_ns;
    state.counters["efficiency"] = count * static_cast<double>(state.iterations()) * size.item_ns /
                                   (elapsed * static_cast<double>(threads));
}

// Executors that write each result in place start from zeros, so a task that did not run shows.
void clear(std::vector<std::uint64_t>& results, std::size_t count) {
    results.assign(count, 0);
}

void sequential(benchmark::State& state, const task_size& size) {
    measure(state, size, 1, [&](std::vector<std::uint64_t>& results) {
        clear(results, size.items.size());
        for (std::size_t i = 0; i < size.items.size(); ++i)
            results[i] = run_task(size.items[i]);
    });
}

void triad_threads_map(benchmark::State& state, const task_size& size) {
    triad::thread_pool pool(workers);
    measure(state, size, workers,
            [&](std::vector<std::uint64_t>& results) { results = pool.map(run_task, size.items); });
}

void triad_threads_submit(benchmark::State& state, const task_size& size) {
    triad::thread_pool pool(workers);
    measure(state, size, workers, [&](std::vector<std::uint64_t>& results) {
        std::vector<triad::future<std::uint64_t>> futures;
        futures.reserve(size.items.size());
        for (const task_item& item : size.items)
            futures.push_back(pool.submit(run_task, item));
        results.clear();
        for (auto& f : futures)
            results.push_back(f.get());
    });
}

void triad_processes_map(benchmark::State& state, const task_size& size, std::size_t chunk_size) {
    triad::process_pool pool(workers);
    measure(state, size, workers, [&](std::vector<std::uint64_t>& results) {
        results = pool.map(run_task, size.items, {.chunk_size = chunk_size});
    });
}

// The loop's way to run CPU work: hand each task to a thread pool and await its future, as
// asyncio's run_in_executor does (triad::to_thread would use the default pool of cpu_count() + 4
// threads; this one has 2, like every other row).
void triad_loop_threads(benchmark::State& state, const task_size& size) {
    triad::thread_pool pool(workers);
    measure(state, size, workers, [&](std::vector<std::uint64_t>& results) {
        results = triad::run(triad::make_task([&]() -> triad::task<std::vector<std::uint64_t>> {
            std::vector<triad::future<std::uint64_t>> futures;
            futures.reserve(size.items.size());
            for (const task_item& item : size.items)
                futures.push_back(pool.submit(run_task, item));
            std::vector<std::uint64_t> out;
            out.reserve(futures.size());
            for (auto& f : futures)
                out.push_back(co_await f);
            co_return out;
        }));
    });
}

void asio_thread_pool(benchmark::State& state, const task_size& size) {
    boost::asio::thread_pool pool(workers);
    measure(state, size, workers, [&](std::vector<std::uint64_t>& results) {
        clear(results, size.items.size());
        std::latch done(static_cast<std::ptrdiff_t>(size.items.size()));
        for (std::size_t i = 0; i < size.items.size(); ++i)
            boost::asio::post(pool, [&, i] {
                results[i] = run_task(size.items[i]);
                done.count_down();
            });
        done.wait();
    });
    pool.join();
}

// A thread per task, the machine's 2 cores shared by whichever threads exist at the moment.
void std_async(benchmark::State& state, const task_size& size) {
    measure(state, size, workers, [&](std::vector<std::uint64_t>& results) {
        std::vector<std::future<std::uint64_t>> futures;
        futures.reserve(size.items.size());
        for (const task_item& item : size.items)
            futures.push_back(std::async(std::launch::async, run_task, item));
        results.clear();
        for (auto& f : futures)
            results.push_back(f.get());
    });
}

#ifdef TRIAD_BENCH_HAVE_TBB
// An arena of 2: the calling thread and one TBB worker.
void tbb_parallel_for(benchmark::State& state, const task_size& size) {
    tbb::task_arena arena(static_cast<int>(workers));
    measure(state, size, workers, [&](std::vector<std::uint64_t>& results) {
        clear(results, size.items.size());
        arena.execute([&] {
            tbb::parallel_for(tbb::blocked_range<std::size_t>(0, size.items.size()),
                              [&](const tbb::blocked_range<std::size_t>& range) {
                                  for (std::size_t i = range.begin(); i != range.end(); ++i)
                                      results[i] = run_task(size.items[i]);
                              });
        });
    });
}

void tbb_task_group(benchmark::State& state, const task_size& size) {
    tbb::task_arena arena(static_cast<int>(workers));
    measure(state, size, workers, [&](std::vector<std::uint64_t>& results) {
        clear(results, size.items.size());
        arena.execute([&] {
            tbb::task_group group;
            for (std::size_t i = 0; i < size.items.size(); ++i)
                group.run([&, i] { results[i] = run_task(size.items[i]); });
            group.wait();
        });
    });
}
#endif

// std::async starts a thread per task (tens of microseconds each): below this size its row
// would measure thread creation alone, 20,000 to 200,000 of them, for seconds per run.
constexpr int std_async_min_micros = 100;

const bool registered = [] {
    for (std::size_t index = 0; index < task_sizes().size(); ++index) {
        const int micros = task_sizes()[index].micros;
        const std::string workload = "task_" + std::to_string(micros) + "us";
        const std::size_t count = task_count(micros);
        triad_bench::describe(
            workload,
            {"Tasks of " + (micros < 1000 ? std::to_string(micros) + " µs" : std::string("1 ms")) +
                 " (" + std::to_string(count) + " of them, 2 workers)",
             "cpu", "task", ""});
        const auto add = [&](const std::string& executor, auto fn) {
            triad_bench::add(
                executor, workload,
                [index, fn](benchmark::State& state) { fn(state, task_sizes()[index]); })
                ->UseRealTime()
                ->Iterations(1)
                ->Unit(benchmark::kMillisecond);
        };
        add("sequential", sequential);
        add("triad_threads", triad_threads_map);
        add("triad_threads_submit", triad_threads_submit);
        add("triad_processes", [](benchmark::State& state, const task_size& size) {
            triad_processes_map(state, size, 0);
        });
        add("triad_processes_chunk1", [](benchmark::State& state, const task_size& size) {
            triad_processes_map(state, size, 1);
        });
        add("triad_loop_threads", triad_loop_threads);
        add("asio_thread_pool", asio_thread_pool);
        if (micros >= std_async_min_micros)
            add("std_async", std_async);
#ifdef TRIAD_BENCH_HAVE_TBB
        add("tbb_parallel_for", tbb_parallel_for);
        add("tbb_task_group", tbb_task_group);
#endif
    }
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    // Calibrating takes about a second; listing the benchmarks needs none of it.
    bool listing = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        listing = listing || arg == "--triad_registry" || arg == "--benchmark_list_tests" ||
                  arg == "--benchmark_list_tests=true";
    }
    if (!listing)
        prepare_task_sizes();
    return triad_bench::run_benchmarks(argc, argv);
}
