// Lesson: concurrent work interleaves. Coroutines on one event loop take turns only where they
// await, so their interleaving is fixed by the waits (the same on every run); threads are
// scheduled by the OS, so their prints interleave differently from run to run and only the
// counts are fixed. Mirrors the Python course's asyncio countdowns (asyncio.gather of
// countdown("Countdown A", 5) and countdown("Countdown B", 3)), its fetch_data with three URLs,
// and its threading basics (two threads running worker("A") and worker("B")).
//
// Usage: interleaving [tick_ms=1000] [steps=3]
//   tick_ms: the course's one-second sleep; steps: how many steps each worker thread prints.

#include <triad/async.hpp>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <pthread.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/arguments.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// --- asyncio ---------------------------------------------------------------------------------

// Every line the coroutines print, also kept to check the order afterwards. One loop, one
// thread: no lock needed.
std::vector<std::string> printed;

void say(std::string line) {
    fmt::print("{}\n", line);
    printed.push_back(std::move(line));
}

// The course's countdown: print, then give the loop away for a tick.
triad::task<void> countdown(std::string name, int n, std::chrono::milliseconds tick) {
    while (n > 0) {
        say(fmt::format("{}: {}", name, n));
        co_await triad::sleep(tick);
        --n;
    }
}

// The course's fetch_data: starts, waits for the "network", finishes.
triad::task<std::string> fetch_data(std::string url, std::chrono::milliseconds delay) {
    say(fmt::format("Start fetching {}", url));
    co_await triad::sleep(delay);
    say(fmt::format("Finished fetching {}", url));
    co_return fmt::format("Data from {}", url);
}

// --- threading -------------------------------------------------------------------------------

std::string thread_name() {
    char name[16] = {};
    ::pthread_getname_np(::pthread_self(), name, sizeof name);
    return name;
}

// The course's worker: starting, a simulated I/O wait, finished; here the wait is split into
// steps, so that two workers' lines can interleave in between.
void worker(const std::string& name, int steps, std::chrono::milliseconds tick,
            std::mutex& counts_lock, std::map<std::string, int>& lines_by_thread,
            std::atomic<int>& started, std::atomic<int>& finished, bool& overlapped) {
    ::pthread_setname_np(::pthread_self(), ("worker-" + name).c_str()); // like threading's name=
    const auto count_line = [&] {
        const std::lock_guard<std::mutex> lock(counts_lock);
        ++lines_by_thread[thread_name()];
    };
    fmt::print("Worker {} starting (thread {})\n", name, thread_name());
    count_line();
    started.fetch_add(1);
    for (int step = 1; step <= steps; ++step) {
        std::this_thread::sleep_for(tick); // simulate I/O
        fmt::print("Worker {}: step {} of {}\n", name, step, steps);
        count_line();
    }
    // Both started before either finished: the two ran at the same time.
    if (finished.fetch_add(1) == 0 && started.load() == 2) {
        const std::lock_guard<std::mutex> lock(counts_lock);
        overlapped = true;
    }
    fmt::print("Worker {} finished\n", name);
    count_line();
}

} // namespace

int main(int argc, char** argv) {
    const auto tick_arg = triad_examples::argument(argc, argv, 1, 1000, 1, 60'000);
    const auto steps_arg = triad_examples::argument(argc, argv, 2, 3, 1, 1000);
    if (!tick_arg || !steps_arg) {
        fmt::print(stderr, "usage: {} [tick_ms 1..60000] [steps 1..1000]\n", argv[0]);
        return 2;
    }
    const std::chrono::milliseconds tick(*tick_arg);
    const int steps = *steps_arg;
    bool ok = true;

    fmt::print("=== asyncio: two countdowns on one loop ===\n");
    auto start = clock_type::now();
    triad::run(triad::make_task([&]() -> triad::task<void> {
        co_await triad::gather(countdown("Countdown A", 5, tick),
                               countdown("Countdown B", 3, tick));
    }));
    fmt::print("took {:.2f}s: as long as the longer countdown (5 ticks), not both (8)\n",
               seconds_since(start));
    // Each coroutine runs until its sleep, then the other runs: A and B alternate while both
    // count, and A goes on alone. A sleep started first ends first, so this is every run's order.
    const std::vector<std::string> expected = {"Countdown A: 5", "Countdown B: 3", "Countdown A: 4",
                                               "Countdown B: 2", "Countdown A: 3", "Countdown B: 1",
                                               "Countdown A: 2", "Countdown A: 1"};
    const bool countdowns_interleaved = printed == expected;
    ok = ok && countdowns_interleaved;
    fmt::print("order: {}\n", countdowns_interleaved
                                  ? "interleaved A B A B A B A A, as on every run"
                                  : "UNEXPECTED");

    fmt::print("\n=== asyncio: fetch_data for three URLs, gathered ===\n");
    printed.clear();
    start = clock_type::now();
    const std::vector<std::string> results = triad::run(triad::make_task([&]()
                                                                             -> triad::task<
                                                                                 std::vector<
                                                                                     std::string>> {
        std::vector<triad::task<std::string>> tasks;
        for (const char* url : {"http://example.com", "http://example.org", "http://example.net"})
            tasks.push_back(fetch_data(url, 2 * tick));
        co_return co_await triad::gather(std::move(tasks));
    }));
    fmt::print("{}\n", results);
    fmt::print("took {:.2f}s for three fetches of {:.2f}s each\n", seconds_since(start),
               2 * tick.count() / 1000.0);
    const bool all_started_first = printed.size() == 6 && printed[2].starts_with("Start") &&
                                   printed[3].starts_with("Finished");
    ok = ok && all_started_first;
    fmt::print("order: {}\n",
               all_started_first ? "all three started before any finished" : "UNEXPECTED");

    fmt::print("\n=== threading: two named worker threads ===\n");
    std::mutex counts_lock;
    std::map<std::string, int> lines_by_thread;
    std::atomic<int> started{0};
    std::atomic<int> finished{0};
    bool overlapped = false;
    start = clock_type::now();
    std::thread thread1(worker, std::string("A"), steps, tick, std::ref(counts_lock),
                        std::ref(lines_by_thread), std::ref(started), std::ref(finished),
                        std::ref(overlapped));
    std::thread thread2(worker, std::string("B"), steps, tick, std::ref(counts_lock),
                        std::ref(lines_by_thread), std::ref(started), std::ref(finished),
                        std::ref(overlapped));
    thread1.join();
    thread2.join();
    fmt::print("All workers completed in {:.2f}s ({} steps of {:.2f}s each, side by side)\n",
               seconds_since(start), steps, tick.count() / 1000.0);
    // The order of the lines above is up to the OS scheduler; how many each printed is not.
    for (const auto& [name, lines] : lines_by_thread)
        fmt::print("thread {} printed {} lines\n", name, lines);
    const bool counts_right = lines_by_thread.size() == 2 &&
                              lines_by_thread["worker-A"] == steps + 2 &&
                              lines_by_thread["worker-B"] == steps + 2;
    ok = ok && counts_right;
    fmt::print("counts: {}; the two ran {}\n", counts_right ? "as expected" : "WRONG",
               overlapped ? "at the same time (both started before either finished)"
                          : "one after the other this time (a loaded machine)");
    return ok ? 0 : 1;
}
