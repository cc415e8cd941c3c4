// What does the pool itself cost per task? One million empty tasks through post + wait_idle,
// submit + get, and map, against the peers a C++ user would otherwise pick, in the same run:
// boost::asio::thread_pool, std::async, a std::thread per task, and a plain loop.
// Targets (2 cores): post < 100 ns/task, submit + get < 300 ns/task, map within 2x of a loop,
// and ahead of boost::asio::thread_pool on every row.

#include <triad/thread_pool.hpp>

#include "bench_common.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>

#include <algorithm>
#include <atomic>
#include <future>
#include <numeric>
#include <thread>
#include <vector>

namespace {

constexpr int many_tasks = 1'000'000;
// Thread creation costs tens of microseconds, so the per-thread peers get fewer tasks; the
// table compares time per task.
constexpr int thread_tasks = 10'000;

std::size_t workers() {
    return triad::cpu_count();
}

void empty_task() {
    benchmark::ClobberMemory();
}

// --- post: fire and forget, then wait for all -------------------------------------------------

void triad_post(benchmark::State& state) {
    triad::thread_pool pool(workers());
    for (auto _ : state) {
        for (int i = 0; i < many_tasks; ++i)
            pool.post(empty_task);
        pool.wait_idle();
    }
    triad_bench::set_items(state, many_tasks);
}

void asio_post(benchmark::State& state) {
    for (auto _ : state) {
        boost::asio::thread_pool pool(workers());
        for (int i = 0; i < many_tasks; ++i)
            boost::asio::post(pool, empty_task);
        pool.join(); // asio's way to wait for all posted work
    }
    triad_bench::set_items(state, many_tasks);
}

void thread_per_task_post(benchmark::State& state) {
    for (auto _ : state) {
        std::vector<std::thread> threads;
        threads.reserve(thread_tasks);
        for (int i = 0; i < thread_tasks; ++i)
            threads.emplace_back(empty_task);
        for (auto& t : threads)
            t.join();
    }
    triad_bench::set_items(state, thread_tasks);
}

void sequential_post(benchmark::State& state) {
    for (auto _ : state)
        for (int i = 0; i < many_tasks; ++i)
            empty_task();
    triad_bench::set_items(state, many_tasks);
}

// --- submit + get: a future per task ----------------------------------------------------------

int one() {
    return 1;
}

template <class Futures>
void get_all(Futures& futures) {
    long sum = 0;
    for (auto& f : futures)
        sum += f.get();
    benchmark::DoNotOptimize(sum);
    futures.clear();
}

void triad_submit(benchmark::State& state) {
    triad::thread_pool pool(workers());
    std::vector<triad::future<int>> futures;
    futures.reserve(many_tasks);
    for (auto _ : state) {
        for (int i = 0; i < many_tasks; ++i)
            futures.push_back(pool.submit(one));
        get_all(futures);
    }
    triad_bench::set_items(state, many_tasks);
}

void asio_submit(benchmark::State& state) {
    boost::asio::thread_pool pool(workers());
    std::vector<std::future<int>> futures;
    futures.reserve(many_tasks);
    for (auto _ : state) {
        for (int i = 0; i < many_tasks; ++i)
            futures.push_back(boost::asio::post(pool, boost::asio::use_future(one)));
        get_all(futures);
    }
    pool.join();
    triad_bench::set_items(state, many_tasks);
}

void std_async_submit(benchmark::State& state) {
    std::vector<std::future<int>> futures;
    futures.reserve(thread_tasks);
    for (auto _ : state) {
        for (int i = 0; i < thread_tasks; ++i)
            futures.push_back(std::async(std::launch::async, one));
        get_all(futures);
    }
    triad_bench::set_items(state, thread_tasks);
}

void sequential_submit(benchmark::State& state) {
    for (auto _ : state) {
        long sum = 0;
        for (int i = 0; i < many_tasks; ++i) {
            sum += one();
            benchmark::ClobberMemory();
        }
        benchmark::DoNotOptimize(sum);
    }
    triad_bench::set_items(state, many_tasks);
}

// --- map: a trivial body over a million ints ---------------------------------------------------

const std::vector<int>& map_input() {
    static const std::vector<int> input = [] {
        std::vector<int> v(many_tasks);
        std::iota(v.begin(), v.end(), 0);
        return v;
    }();
    return input;
}

// A lambda, not a function: a lambda's call inlines into the chunk loop, a function pointer's
// cannot, and that is what a user of map on tiny items should write.
constexpr auto twice = [](int x) { return x * 2; };

void triad_map(benchmark::State& state) {
    triad::thread_pool pool(workers());
    const auto& input = map_input();
    for (auto _ : state) {
        std::vector<int> out = pool.map(twice, input);
        benchmark::DoNotOptimize(out.data());
    }
    triad_bench::set_items(state, many_tasks);
}

// What a user writes for map on asio: one posted chunk per worker, futures to collect.
void asio_map(benchmark::State& state) {
    boost::asio::thread_pool pool(workers());
    const auto& input = map_input();
    const std::size_t chunks = workers() * 4;
    for (auto _ : state) {
        std::vector<int> out(input.size());
        std::vector<std::future<void>> done;
        const std::size_t step = (input.size() + chunks - 1) / chunks;
        for (std::size_t begin = 0; begin < input.size(); begin += step) {
            const std::size_t end = std::min(input.size(), begin + step);
            done.push_back(boost::asio::post(pool, boost::asio::use_future([&, begin, end] {
                                                 for (std::size_t i = begin; i < end; ++i)
                                                     out[i] = twice(input[i]);
                                             })));
        }
        for (auto& f : done)
            f.get();
        benchmark::DoNotOptimize(out.data());
    }
    pool.join();
    triad_bench::set_items(state, many_tasks);
}

void std_async_map(benchmark::State& state) {
    const auto& input = map_input();
    const std::size_t chunks = workers();
    for (auto _ : state) {
        std::vector<int> out(input.size());
        std::vector<std::future<void>> done;
        const std::size_t step = (input.size() + chunks - 1) / chunks;
        for (std::size_t begin = 0; begin < input.size(); begin += step) {
            const std::size_t end = std::min(input.size(), begin + step);
            done.push_back(std::async(std::launch::async, [&, begin, end] {
                for (std::size_t i = begin; i < end; ++i)
                    out[i] = twice(input[i]);
            }));
        }
        for (auto& f : done)
            f.get();
        benchmark::DoNotOptimize(out.data());
    }
    triad_bench::set_items(state, many_tasks);
}

// The fastest plain loop (the compiler vectorises it), not push_back, which is twice as slow.
void sequential_map(benchmark::State& state) {
    const auto& input = map_input();
    for (auto _ : state) {
        std::vector<int> out(input.size());
        std::transform(input.begin(), input.end(), out.begin(), twice);
        benchmark::DoNotOptimize(out.data());
    }
    triad_bench::set_items(state, many_tasks);
}

const bool registered = [] {
    const auto ms = [](benchmark::internal::Benchmark* b) {
        b->UseRealTime()->Unit(benchmark::kMillisecond);
    };
    triad_bench::describe("pool_post",
                          {"Post a trivial task to a thread pool", "overhead", "task", ""});
    triad_bench::describe("pool_submit_get",
                          {"Submit a trivial task and get its result", "overhead", "task", ""});
    triad_bench::describe("pool_map",
                          {"Map a trivial function over 1M ints", "overhead", "item", ""});
    ms(triad_bench::add("triad_threads", "pool_post", triad_post));
    ms(triad_bench::add("asio_thread_pool", "pool_post", asio_post));
    ms(triad_bench::add("thread_per_task", "pool_post", thread_per_task_post));
    ms(triad_bench::add("sequential", "pool_post", sequential_post));
    ms(triad_bench::add("triad_threads", "pool_submit_get", triad_submit));
    ms(triad_bench::add("asio_thread_pool", "pool_submit_get", asio_submit));
    ms(triad_bench::add("std_async", "pool_submit_get", std_async_submit));
    ms(triad_bench::add("sequential", "pool_submit_get", sequential_submit));
    ms(triad_bench::add("triad_threads", "pool_map", triad_map));
    ms(triad_bench::add("asio_thread_pool", "pool_map", asio_map));
    ms(triad_bench::add("std_async", "pool_map", std_async_map));
    ms(triad_bench::add("sequential", "pool_map", sequential_map));
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    return triad_bench::run_benchmarks(argc, argv);
}
