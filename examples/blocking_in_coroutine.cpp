// Lesson: a blocking call inside a coroutine blocks the whole event loop, so N coroutines that
// each block for t take N x t, as if run one after another; hand the call to a thread
// (co_await triad::to_thread) or use the non-blocking wait (triad::sleep) and they take about t.
// And processes are the wrong tool for waiting: starting them and talking to them costs more
// than the wait saves. Mirrors the Python course's requests.get inside async def ("works
// sequentially ... because requests is not asyncio compatible", 5.4 s against 0.39 s with
// loop.run_in_executor) and its multiprocessing sleep test (pool.map(sleep_test_mp, [1, 2, 3,
// 4]) with one process per core, slower than threads or asyncio).
//
// The blocking call stands for requests.get: std::this_thread::sleep_for, which holds its
// thread exactly as a synchronous HTTP client does while it waits for the server.
//
// Usage: blocking_in_coroutine [coroutines=10] [wait_ms=200]

#include <triad/async.hpp>
#include <triad/fork_server.hpp>
#include <triad/process_pool.hpp>
#include <triad/thread_pool.hpp>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "support/arguments.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// The blocking call: the course's requests.get (or time.sleep). Returns the caller's index.
int blocking_download(int index, int wait_ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    return index;
}

// The course's download_single_page_async_v2: async in name, blocking inside.
triad::task<int> download_blocking(int index, int wait_ms) {
    co_return blocking_download(index, wait_ms); // holds the loop's only thread
}

// The course's fix: RunBlockingFunction, loop.run_in_executor on a thread pool.
triad::task<int> download_to_thread(int index, int wait_ms) {
    co_return co_await triad::to_thread(blocking_download, index, wait_ms);
}

// The other fix: an awaitable wait (asyncio.sleep, aiohttp), which frees the loop meanwhile.
triad::task<int> download_async(int index, int wait_ms) {
    co_await triad::sleep(std::chrono::milliseconds(wait_ms));
    co_return index;
}

// The course's sleep_test_mp: waits, then returns twice its argument.
int sleep_test(int x, int wait_ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    return 2 * x;
}

// Runs N copies of one coroutine on a fresh loop with gather; returns the seconds it took.
template <class Coroutine>
double time_on_loop(Coroutine coroutine, int count, int wait_ms) {
    const auto start = clock_type::now();
    const std::vector<int> results =
        triad::run(triad::make_task([&]() -> triad::task<std::vector<int>> {
            std::vector<triad::task<int>> tasks;
            for (int i = 0; i < count; ++i)
                tasks.push_back(coroutine(i, wait_ms));
            co_return co_await triad::gather(std::move(tasks));
        }));
    const double took = seconds_since(start);
    for (int i = 0; i < count; ++i)
        if (results[static_cast<std::size_t>(i)] != i)
            throw std::runtime_error("a coroutine returned the wrong index");
    return took;
}

} // namespace

int main(int argc, char** argv) {
    // The last part starts one process and one thread per coroutine, so their number is
    // bounded; a wait under 10 ms is lost in the loop's and the pool's own overhead, and the
    // blocking version would no longer look sequential.
    const auto count_arg = triad_examples::argument<int>(argc, argv, 1, 10, 1, 256);
    const auto wait_arg = triad_examples::argument<int>(argc, argv, 2, 200, 10, 60'000);
    if (!count_arg || !wait_arg) {
        fmt::print(stderr, "usage: {} [coroutines 1..256] [wait_ms 10..60000]\n", argv[0]);
        return 2;
    }
    const int count = *count_arg;
    const int wait_ms = *wait_arg;
    // Started while this process has one thread, so the process pool built (and timed) below
    // forks its workers from a clean snapshot though the loop's thread pool runs by then.
    triad::fork_server_guard fork_server;
    const double t = wait_ms / 1000.0;
    // to_thread runs on triad::default_thread_pool(): min(32, cpu_count() + 4) threads, so
    // more coroutines than that wait in rounds.
    const std::size_t io_threads = triad::default_thread_pool().size();
    const double rounds =
        static_cast<double>((static_cast<std::size_t>(count) + io_threads - 1) / io_threads);
    fmt::print("{} coroutines, each waiting {:.3f}s for a download\n\n", count, t);

    fmt::print("=== A blocking call inside async code ===\n");
    const double blocking = time_on_loop(download_blocking, count, wait_ms);
    fmt::print("Time Taken: {:.3f}s ({} x {:.3f}s = {:.3f}s: sequential)\n", blocking, count, t,
               count * t);

    fmt::print("\n=== The same call through co_await triad::to_thread ({} threads) ===\n",
               io_threads);
    const double threaded = time_on_loop(download_to_thread, count, wait_ms);
    fmt::print("Time Taken: {:.3f}s (about {:.0f} x {:.3f}s)\n", threaded, rounds, t);

    fmt::print("\n=== A non-blocking wait: co_await triad::sleep ===\n");
    const double awaited = time_on_loop(download_async, count, wait_ms);
    fmt::print("Time Taken: {:.3f}s (about {:.3f}s)\n", awaited, t);

    const double ratio = blocking / threaded;
    // The blocking version cannot take less than N x t; the fixed one takes about `rounds` x t.
    // Half the ideal ratio is a loose bound that a loaded machine still meets.
    const double ideal = count / rounds;
    const bool sequential = blocking >= 0.95 * count * t && ratio >= 0.5 * ideal;
    fmt::print("\nblocking / to_thread: {:.1f}x slower (ideal {:.1f}x): the blocking version ran "
               "{}\n",
               ratio, ideal,
               sequential ? fmt::format("sequentially, {} waits one after another", count)
                          : "NOT sequentially (unexpected)");

    // The course's 003 lesson: processes for waiting. One process per core, as there
    // (mp.Pool(processes=mp.cpu_count())): the waits queue behind the cores. Then one process
    // per wait: no queueing, but each process is a fork, and their start-up is part of the price.
    fmt::print("\n=== Processes used for I/O: process_pool.starmap(sleep_test) ===\n");
    std::vector<std::tuple<int, int>> inputs; // (x, wait_ms)
    for (int i = 1; i <= count; ++i)
        inputs.emplace_back(i, wait_ms);
    std::vector<int> doubled;
    double with_processes = 0;
    for (const std::size_t processes : {triad::cpu_count(), static_cast<std::size_t>(count)}) {
        const auto start = clock_type::now();
        double start_up = 0;
        double waits = 0;
        {
            triad::process_pool pool(processes);
            start_up = seconds_since(start);
            const auto mapped = clock_type::now();
            doubled = pool.starmap(sleep_test, inputs, {.chunk_size = 1});
            waits = seconds_since(mapped);
        }
        const double took = seconds_since(start);
        with_processes = with_processes == 0 ? took : std::min(with_processes, took);
        fmt::print("{} processes: {:.3f}s (start {:.3f}s, {:.3f}s for the waits, {} at a time, "
                   "then shutdown) -> {}\n",
                   processes, took, start_up, waits, processes, doubled);
    }

    const auto start = clock_type::now();
    std::vector<int> doubled_by_threads;
    {
        triad::thread_pool pool(static_cast<std::size_t>(count));
        doubled_by_threads =
            pool.map([](const std::tuple<int, int>& args) { return std::apply(sleep_test, args); },
                     inputs, {.chunk_size = 1});
    }
    const double with_threads = seconds_since(start);
    fmt::print("{} threads: {:.3f}s\n", count, with_threads);
    fmt::print("coroutines (triad::sleep above): {:.3f}s\n", awaited);
    fmt::print("processes (the better of the two) / threads: {:.1f}x slower for the same waits\n",
               with_processes / with_threads);

    if (!sequential || doubled != doubled_by_threads) {
        fmt::print(stderr, "unexpected: {}\n",
                   !sequential ? "the blocking version was not sequential"
                               : "processes and threads disagree");
        return 1;
    }
    return 0;
}
