// Which executor wins on I/O-bound work? N downloads that each wait L milliseconds (a blocking
// sleep on the pools and threads, a timer on the event loops), N from 4 to 10,000 — the Python
// course's 4 downloads, 20 and 200 URLs included — and, for the scaling chart, 1,000 downloads at
// concurrency 1 to 1,000. Peers: boost::asio::thread_pool, std::async, a std::thread per
// download, raw Asio co_spawn with timers. The sequential loop and the process pool run only
// where they finish in reasonable time (they scale as N x L and N x L / workers).
//
// Equal footing: every executor that can be reused (the pools, the event loops, the io_context)
// is built before the timed loop, as a program that downloads repeatedly keeps its pool; what
// building and stopping a pool costs is its own row (pool_start_stop). A pool's size is part of
// its configuration ("workers:N"); the concurrency sweep measures every executor at the same
// numbers in flight, and 10,000 in flight only on the executors that can hold that many.

#include <triad/async.hpp>
#include <triad/process_pool.hpp>
#include <triad/thread_pool.hpp>

#include "bench_common.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <latch>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;

namespace {

std::chrono::milliseconds latency() {
    return std::chrono::milliseconds(triad_bench::quick() ? 20 : 50);
}

// A download: the thread waits for the round trip, as a blocking HTTP client does.
int download_blocking(int latency_ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(latency_ms));
    return 1;
}

triad::task<int> download_async(std::chrono::milliseconds l) {
    co_await triad::sleep(l);
    co_return 1;
}

std::size_t count_of(const benchmark::State& state) {
    return static_cast<std::size_t>(state.range(0));
}

void finish(benchmark::State& state, int done, std::size_t n) {
    if (static_cast<std::size_t>(done) != n)
        state.SkipWithError("downloads lost");
    triad_bench::set_items(state, static_cast<double>(n));
}

void sequential(benchmark::State& state) {
    const std::size_t n = count_of(state);
    int done = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        done = 0;
        for (std::size_t i = 0; i < n; ++i)
            done += download_blocking(static_cast<int>(latency().count()));
    }
    finish(state, done, n);
}

// Threads block while they wait, so an I/O pool is sized by how many requests should be in
// flight (capped at 256 here, as a ThreadPoolExecutor's max_workers would be), not by cores.
std::size_t io_threads(std::size_t n) {
    return std::min<std::size_t>(n, 256);
}

// n blocking downloads on a triad pool (threads or processes), one per task.
template <class Pool>
int pool_downloads(Pool& pool, std::size_t n, std::chrono::milliseconds each) {
    const std::vector<int> r = pool.map(
        download_blocking, std::vector<int>(n, static_cast<int>(each.count())), {.chunk_size = 1});
    return static_cast<int>(std::count(r.begin(), r.end(), 1));
}

// The same on a boost::asio::thread_pool built before the timed loop: it cannot be joined and
// reused, so each round waits on a latch its tasks count down, as a program reusing it would.
int asio_pool_downloads(asio::thread_pool& pool, std::size_t n, std::chrono::milliseconds each) {
    std::atomic<int> count{0};
    std::latch done(static_cast<std::ptrdiff_t>(n));
    for (std::size_t i = 0; i < n; ++i)
        asio::post(pool, [&count, &done, each] {
            count += download_blocking(static_cast<int>(each.count()));
            done.count_down();
        });
    done.wait();
    return count;
}

std::size_t workers_of(const benchmark::State& state) {
    return static_cast<std::size_t>(state.range(1));
}

void triad_threads(benchmark::State& state) {
    const std::size_t n = count_of(state);
    triad::thread_pool pool(workers_of(state));
    int done = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        done = pool_downloads(pool, n, latency());
    finish(state, done, n);
}

void triad_processes(benchmark::State& state) {
    const std::size_t n = count_of(state);
    triad::process_pool pool(workers_of(state));
    int done = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        done = pool_downloads(pool, n, latency());
    finish(state, done, n);
}

triad::task<int> all_downloads(std::size_t n, std::size_t concurrency,
                               std::chrono::milliseconds each) {
    triad::semaphore limit(concurrency);
    std::vector<triad::task<int>> tasks;
    tasks.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
        tasks.push_back(triad::make_task([&limit, each]() -> triad::task<int> {
            auto permit = co_await limit.acquire_guard();
            co_return co_await download_async(each);
        }));
    const std::vector<int> r = co_await triad::gather(std::move(tasks));
    co_return static_cast<int>(std::count(r.begin(), r.end(), 1));
}

void triad_loop(benchmark::State& state) {
    const std::size_t n = count_of(state);
    triad::event_loop loop;
    int done = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        done = loop.run(all_downloads(n, n, latency()));
    finish(state, done, n);
}

void asio_pool(benchmark::State& state) {
    const std::size_t n = count_of(state);
    asio::thread_pool pool(workers_of(state));
    int done = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        done = asio_pool_downloads(pool, n, latency());
    pool.join();
    finish(state, done, n);
}

void std_async(benchmark::State& state) {
    const std::size_t n = count_of(state);
    int done = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::vector<std::future<int>> futures;
        futures.reserve(n);
        for (std::size_t i = 0; i < n; ++i)
            futures.push_back(std::async(std::launch::async, download_blocking,
                                         static_cast<int>(latency().count())));
        done = 0;
        for (auto& f : futures)
            done += f.get();
    }
    finish(state, done, n);
}

void thread_per_task(benchmark::State& state) {
    const std::size_t n = count_of(state);
    int done = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::atomic<int> count{0};
        std::vector<std::thread> threads;
        threads.reserve(n);
        for (std::size_t i = 0; i < n; ++i)
            threads.emplace_back(
                [&count] { count += download_blocking(static_cast<int>(latency().count())); });
        for (auto& t : threads)
            t.join();
        done = count;
    }
    finish(state, done, n);
}

void asio_coroutines(benchmark::State& state) {
    const std::size_t n = count_of(state);
    asio::io_context io(1);
    int done = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        io.restart();
        done = 0;
        for (std::size_t i = 0; i < n; ++i)
            asio::co_spawn(
                io,
                [&done]() -> asio::awaitable<void> {
                    asio::steady_timer timer(co_await asio::this_coro::executor, latency());
                    co_await timer.async_wait(asio::use_awaitable);
                    ++done;
                },
                asio::detached);
        io.run();
    }
    finish(state, done, n);
}

// --- concurrency scaling -----------------------------------------------------------------------

// Shorter waits here: at concurrency 1 every download runs after the previous one (100 of them:
// half a second per round). Above that many in flight, there are as many downloads as the
// concurrency (1,000 at 1,000): the row measures time per download when that many wait at once.
std::size_t scaling_downloads() {
    return triad_bench::quick() ? 50 : 100;
}
std::size_t scaling_downloads(std::int64_t concurrency) {
    return std::max(scaling_downloads(), static_cast<std::size_t>(concurrency));
}
std::size_t scaling_downloads(const benchmark::State& state) {
    return scaling_downloads(state.range(0));
}
constexpr std::chrono::milliseconds scaling_latency{5};

void triad_loop_concurrency(benchmark::State& state) {
    const std::size_t n = scaling_downloads(state);
    const auto c = static_cast<std::size_t>(state.range(0));
    triad::event_loop loop;
    int done = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        done = loop.run(all_downloads(n, c, scaling_latency));
    finish(state, done, n);
}

void triad_threads_concurrency(benchmark::State& state) {
    const std::size_t n = scaling_downloads(state);
    triad::thread_pool pool(static_cast<std::size_t>(state.range(0)));
    int done = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        done = pool_downloads(pool, n, scaling_latency);
    finish(state, done, n);
}

void asio_pool_concurrency(benchmark::State& state) {
    const std::size_t n = scaling_downloads(state);
    asio::thread_pool pool(static_cast<std::size_t>(state.range(0)));
    int done = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        done = asio_pool_downloads(pool, n, scaling_latency);
    pool.join();
    finish(state, done, n);
}

// --- pool start-up -----------------------------------------------------------------------------

// What the rows above leave out of the timed loop: building a pool of N threads and stopping it
// (the I/O pools are 256 threads here, and up to 1,000 in the sweep).
void triad_threads_start_stop(benchmark::State& state) {
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        triad::thread_pool pool(static_cast<std::size_t>(state.range(0)));
        pool.shutdown();
    }
    triad_bench::set_items(state, 1);
}

void asio_pool_start_stop(benchmark::State& state) {
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        asio::thread_pool pool(static_cast<std::size_t>(state.range(0)));
        pool.join();
    }
    triad_bench::set_items(state, 1);
}

// Fixed iterations: about half a second per repetition (a tenth in --quick) from the expected time
// of one round (waves x latency), so the long rows (a second or more per round) run once per
// repetition and the suite's time stays predictable under --benchmark_repetitions.
benchmark::IterationCount iterations_for(std::size_t waves, std::chrono::milliseconds each) {
    const auto round_ms = static_cast<std::int64_t>(waves) * each.count();
    const std::int64_t target_ms = triad_bench::quick() ? 100 : 500;
    return std::max<benchmark::IterationCount>(1, target_ms / std::max<std::int64_t>(round_ms, 1));
}

std::size_t waves(std::size_t n, std::size_t workers) {
    return (n + workers - 1) / workers;
}

const bool registered = [] {
    const auto timed = [](benchmark::internal::Benchmark* b) {
        return b->UseRealTime()->Unit(benchmark::kMillisecond);
    };
    const std::string ms = std::to_string(latency().count());
    const std::vector<int> sizes = triad_bench::quick() ? std::vector<int>{4, 20, 200}
                                                        : std::vector<int>{4, 20, 200, 2000, 10000};
    const auto processes = static_cast<std::int64_t>(2 * triad::cpu_count());
    for (int n : sizes) {
        const auto count = static_cast<std::size_t>(n);
        const std::string w = "downloads_" + std::to_string(n);
        std::string title = std::to_string(n) + " downloads of " + ms + " ms each";
        if (n > 256)
            title += "; a pool of 256 threads (workers:256) needs " +
                     std::to_string(waves(count, 256)) + " rounds of " + ms +
                     " ms, so its time per download is about " + ms + " ms / 256";
        triad_bench::describe(w, {title, "io", "download", ""});
        // A row per executor; the pools name their size ("workers:N").
        const auto one_wave = iterations_for(1, latency());
        const auto plain = [&](const char* executor, void (*fn)(benchmark::State&),
                               benchmark::IterationCount iterations) {
            timed(triad_bench::add(executor, w, fn))
                ->ArgName("downloads")
                ->Arg(n)
                ->Iterations(iterations);
        };
        const auto pooled = [&](const char* executor, void (*fn)(benchmark::State&),
                                std::int64_t workers) {
            timed(triad_bench::add(executor, w, fn))
                ->ArgNames({"downloads", "workers"})
                ->Args({n, workers})
                ->Iterations(
                    iterations_for(waves(count, static_cast<std::size_t>(workers)), latency()));
        };
        if (n <= 20)
            plain("sequential", sequential, iterations_for(count, latency()));
        if (n <= 200)
            pooled("triad_processes", triad_processes, processes);
        // Threads block while they wait, so an I/O pool is sized by how many requests should be
        // in flight, capped at 256 (as a ThreadPoolExecutor's max_workers would be); the title
        // says what the cap costs above it. Pools of 10,000 threads took seconds to build and
        // pushed the load average past 1,000 for the binaries after this one; the sweep below
        // compares pools and the loop at matched numbers in flight up to 1,000 instead.
        pooled("triad_threads", triad_threads, static_cast<std::int64_t>(io_threads(count)));
        pooled("asio_thread_pool", asio_pool, static_cast<std::int64_t>(io_threads(count)));
        plain("triad_loop", triad_loop, one_wave);
        plain("asio_co_spawn", asio_coroutines, one_wave);
        if (n <= 2000) {
            // A thread started per download: at 2,000 the starting, not the wait, sets the time.
            const auto per_thread = std::max<benchmark::IterationCount>(1, one_wave * 20 / n);
            plain("std_async", std_async, per_thread);
            plain("thread_per_task", thread_per_task, per_thread);
        }
    }

    const std::string scaling = "downloads_by_concurrency";
    triad_bench::describe(
        scaling, {"Downloads of " + std::to_string(scaling_latency.count()) + " ms (" +
                      std::to_string(scaling_downloads()) +
                      ", or as many as in flight), by how many are in flight (the pools with as "
                      "many threads; 10,000 only on the event loop)",
                  "io", "download", "concurrency"});
    // Every executor at the same numbers in flight; 10,000 threads per pool is beyond what the
    // pools are built for here (and 10,000 thread stacks), so that point is the loop's alone.
    const std::vector<int> levels =
        triad_bench::quick() ? std::vector<int>{1, 10, 100} : std::vector<int>{1, 10, 100, 1000};
    const std::vector<int> loop_only =
        triad_bench::quick() ? std::vector<int>{1000} : std::vector<int>{10000};
    for (auto [executor, fn] : {std::pair{"triad_loop", &triad_loop_concurrency},
                                std::pair{"triad_threads", &triad_threads_concurrency},
                                std::pair{"asio_thread_pool", &asio_pool_concurrency}}) {
        auto* b = triad_bench::add(executor, scaling, fn);
        b->UseRealTime()->Unit(benchmark::kMillisecond)->ArgName("concurrency");
        const bool loop = std::string(executor) == "triad_loop";
        for (int c : levels)
            b->Arg(c);
        if (loop)
            for (int c : loop_only)
                b->Arg(c);
    }

    const std::string start_stop = "pool_start_stop";
    triad_bench::describe(start_stop, {"Start and stop a pool of N threads (left out of the "
                                       "download rows, where each pool is built once)",
                                       "overhead", "pool", "workers"});
    for (auto [executor, fn] : {std::pair{"triad_threads", &triad_threads_start_stop},
                                std::pair{"asio_thread_pool", &asio_pool_start_stop}}) {
        auto* b = triad_bench::add(executor, start_stop, fn);
        b->UseRealTime()->Unit(benchmark::kMillisecond)->ArgName("workers")->Iterations(2);
        b->Arg(256);
        if (!triad_bench::quick())
            b->Arg(1000);
    }
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    return triad_bench::run_benchmarks(argc, argv);
}
