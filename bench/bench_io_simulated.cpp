// Which executor wins on I/O-bound work? N downloads that each wait L milliseconds (a blocking
// sleep on the pools and threads, a timer on the event loops), N from 4 to 10,000 — the Python course's
// 4 downloads, 20 and 200 URLs included — and, for the scaling chart, 1,000 downloads at
// concurrency 1 to 1,000. Peers: boost::asio::thread_pool, std::async, a std::thread per
// download, raw Asio co_spawn with timers. The sequential loop and the process pool run only
// where they finish in reasonable time (they scale as N x L and N x L / workers).

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
#include <future>
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

// The same on a boost::asio::thread_pool, which cannot be reused after join: it is built in
// the timed region, as a user of it would.
int asio_pool_downloads(std::size_t threads, std::size_t n, std::chrono::milliseconds each) {
    asio::thread_pool pool(threads);
    std::atomic<int> count{0};
    for (std::size_t i = 0; i < n; ++i)
        asio::post(pool,
                   [&count, each] { count += download_blocking(static_cast<int>(each.count())); });
    pool.join();
    return count;
}

void triad_threads(benchmark::State& state) {
    const std::size_t n = count_of(state);
    triad::thread_pool pool(io_threads(n));
    int done = 0;
    for (auto _ : state)
        done = pool_downloads(pool, n, latency());
    finish(state, done, n);
}

void triad_processes(benchmark::State& state) {
    const std::size_t n = count_of(state);
    triad::process_pool pool(2 * triad::cpu_count());
    int done = 0;
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
    int done = 0;
    for (auto _ : state)
        done = triad::run(all_downloads(n, n, latency()));
    finish(state, done, n);
}

void asio_pool(benchmark::State& state) {
    const std::size_t n = count_of(state);
    int done = 0;
    for (auto _ : state)
        done = asio_pool_downloads(io_threads(n), n, latency());
    finish(state, done, n);
}

void std_async(benchmark::State& state) {
    const std::size_t n = count_of(state);
    int done = 0;
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
    int done = 0;
    for (auto _ : state) {
        asio::io_context io(1);
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

// Shorter waits here: at concurrency 1 every download runs after the previous one. Above that
// many in flight, there are as many downloads as the concurrency (10,000 at 10,000): the row
// measures time per download when that many wait at once.
std::size_t scaling_downloads() {
    return triad_bench::quick() ? 200 : 1000;
}
std::size_t scaling_downloads(const benchmark::State& state) {
    return std::max(scaling_downloads(), static_cast<std::size_t>(state.range(0)));
}
constexpr std::chrono::milliseconds scaling_latency{5};

void triad_loop_concurrency(benchmark::State& state) {
    const std::size_t n = scaling_downloads(state);
    const auto c = static_cast<std::size_t>(state.range(0));
    int done = 0;
    for (auto _ : state)
        done = triad::run(all_downloads(n, c, scaling_latency));
    finish(state, done, n);
}

void triad_threads_concurrency(benchmark::State& state) {
    const std::size_t n = scaling_downloads(state);
    triad::thread_pool pool(static_cast<std::size_t>(state.range(0)));
    int done = 0;
    for (auto _ : state)
        done = pool_downloads(pool, n, scaling_latency);
    finish(state, done, n);
}

void asio_pool_concurrency(benchmark::State& state) {
    const std::size_t n = scaling_downloads(state);
    int done = 0;
    for (auto _ : state)
        done = asio_pool_downloads(static_cast<std::size_t>(state.range(0)), n, scaling_latency);
    finish(state, done, n);
}

const bool registered = [] {
    const auto timed = [](benchmark::internal::Benchmark* b) {
        return b->UseRealTime()->Unit(benchmark::kMillisecond)->ArgName("downloads");
    };
    const std::string ms = std::to_string(latency().count());
    const std::vector<int> sizes = triad_bench::quick() ? std::vector<int>{4, 20, 200}
                                                        : std::vector<int>{4, 20, 200, 2000, 10000};
    for (int n : sizes) {
        const std::string w = "downloads_" + std::to_string(n);
        triad_bench::describe(
            w, {std::to_string(n) + " downloads of " + ms + " ms each", "io", "download", ""});
        // Long-running rows are measured once; the short ones get the usual repetitions.
        const auto once = [](benchmark::internal::Benchmark* b) { return b->Repetitions(1); };
        if (n <= 20)
            once(timed(triad_bench::add("sequential", w, sequential))->Arg(n));
        if (n <= 200)
            once(timed(triad_bench::add("triad_processes", w, triad_processes))->Arg(n));
        timed(triad_bench::add("triad_threads", w, triad_threads))->Arg(n);
        timed(triad_bench::add("triad_loop", w, triad_loop))->Arg(n);
        timed(triad_bench::add("asio_thread_pool", w, asio_pool))->Arg(n);
        timed(triad_bench::add("asio_co_spawn", w, asio_coroutines))->Arg(n);
        if (n <= 2000) {
            timed(triad_bench::add("std_async", w, std_async))->Arg(n);
            timed(triad_bench::add("thread_per_task", w, thread_per_task))->Arg(n);
        }
    }
    const std::string scaling = "downloads_by_concurrency";
    triad_bench::describe(scaling, {"Downloads of " + std::to_string(scaling_latency.count()) +
                                        " ms (" + std::to_string(scaling_downloads()) +
                                        ", or as many as in flight), by how many are in flight",
                                    "io", "download", "concurrency"});
    // 10,000 threads is what the pool needs to keep 10,000 blocking downloads in flight.
    const std::vector<int> levels = triad_bench::quick()
                                        ? std::vector<int>{10, 50, 200}
                                        : std::vector<int>{1, 10, 100, 1000, 10000};
    for (auto [executor, fn] : {std::pair{"triad_loop", &triad_loop_concurrency},
                                std::pair{"triad_threads", &triad_threads_concurrency},
                                std::pair{"asio_thread_pool", &asio_pool_concurrency}}) {
        auto* b = triad_bench::add(executor, scaling, fn);
        b->UseRealTime()->Unit(benchmark::kMillisecond)->ArgName("concurrency")->Repetitions(1);
        for (int c : levels)
            b->Arg(c);
    }
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    return triad_bench::run_benchmarks(argc, argv);
}
