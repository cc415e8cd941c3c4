// Lesson: concurrent code is debugged by names and numbers: name the threads, processes and
// tasks so that every log line says who wrote it, list what the live tasks of a loop are
// waiting on, and time the same workload on each executor to see where the time goes. Mirrors
// the Python course's "Debugging and Profiling Concurrent Code": logging with
// format='%(threadName)s: %(message)s', asyncio tasks named for debugging
// (task.get_name(), asyncio.all_tasks()), and cProfile.run('cpu_bound_func()') with the same
// function also run in a multiprocessing.Pool.
//
// Usage: debugging [calls=16] [n=20000000] [sleep_ms=300]
//   calls of cpu_bound_func(n) = sum(i * i for i in range(n)) per executor; sleep_ms: how long
//   the named tasks sleep while the loop lists them.

#include <triad/async.hpp>
#include <triad/process_pool.hpp>
#include <triad/thread_pool.hpp>

#include <fmt/core.h>

#include <pthread.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
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

__extension__ typedef unsigned __int128 uint128;

const clock_type::time_point program_start = clock_type::now();

// The OS's name for the calling thread: what top -H, gdb's "info threads" and perf show.
std::string thread_name() {
    char name[16] = {};
    ::pthread_getname_np(::pthread_self(), name, sizeof name);
    return name;
}

// logging's '%(relativeCreated)d %(threadName)s: %(message)s', with the process id as well.
// One fmt::print is one write to stdout, so lines from different threads do not tear.
template <class... Args>
void log(fmt::format_string<Args...> format, Args&&... args) {
    fmt::print("{:7.1f} ms [{:>15} pid {}] {}\n", seconds_since(program_start) * 1000,
               thread_name(), ::getpid(), fmt::format(format, std::forward<Args>(args)...));
}

// --- named threads and processes ---------------------------------------------------------------

int resize(int image) {
    log("resizing image {}", image);
    return image * 2;
}

int slow_resize(int image, std::chrono::milliseconds blocked) {
    std::this_thread::sleep_for(blocked); // a blocking call, such as a synchronous download
    return resize(image);
}

// --- named tasks -------------------------------------------------------------------------------

// asyncio has current_task().get_name(); here the task is handed its name with the spawn.
triad::task<void> named_task(std::string name, std::chrono::milliseconds delay) {
    log("task {}: running, sleeping {} ms", name, delay.count());
    co_await triad::sleep(delay);
    log("task {}: done", name);
}

triad::task<void> waits_for(std::string name, triad::event& ready) {
    log("task {}: waiting for the event", name);
    co_await ready.wait();
    log("task {}: the event is set", name);
}

void list_tasks(const triad::event_loop& loop, const char* when) {
    const std::vector<triad::task_info> live = loop.tasks();
    log("{} live tasks {}:", live.size(), when);
    for (const triad::task_info& t : live)
        log("  {:<14} waiting on {}{}", t.name, t.waiting_on,
            t.name == "main" ? " (it is the task listing them)" : "");
}

// --- per-executor timings ----------------------------------------------------------------------

// What cProfile reports per function: how long the calls took where they ran.
struct call_profile {
    std::string value; // decimal: the sum needs more than 64 bits for n above about 3.8 million
    double seconds = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(value, seconds);
    }
};

std::string to_decimal(uint128 value) {
    std::string digits;
    do {
        digits.insert(digits.begin(), static_cast<char>('0' + static_cast<int>(value % 10)));
        value /= 10;
    } while (value != 0);
    return digits;
}

// The course's cpu_bound_func: sum(i * i for i in range(n)), exact in 128 bits. The empty asm
// keeps the compiler from replacing the loop by its closed form, so the loop really runs.
call_profile cpu_bound_func(std::uint64_t n) {
    const auto start = clock_type::now();
    uint128 sum = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
        asm volatile("" : "+r"(i));
        sum += static_cast<uint128>(i) * i;
    }
    return {to_decimal(sum), seconds_since(start)};
}

struct profile_row {
    std::string executor;
    std::size_t workers = 0;
    std::size_t calls = 0;
    double wall = 0;
    double in_function = 0; // the sum over calls of the time inside cpu_bound_func
    bool correct = false;
};

profile_row summarise(std::string executor, std::size_t workers, double wall,
                      const std::vector<call_profile>& calls, const std::string& expected) {
    profile_row row{std::move(executor), workers, calls.size(), wall, 0, true};
    for (const call_profile& c : calls) {
        row.in_function += c.seconds;
        row.correct = row.correct && c.value == expected;
    }
    return row;
}

} // namespace

int main(int argc, char** argv) {
    // sleep_ms from 6, so that the shortest derived sleep (sleep_ms / 3) is not zero.
    const auto calls_arg = triad_examples::argument(argc, argv, 1, 16, 1, 100'000);
    const auto n_arg = triad_examples::argument<std::uint64_t>(argc, argv, 2, 20'000'000, 1,
                                                               std::uint64_t{1} << 40);
    const auto sleep_arg = triad_examples::argument(argc, argv, 3, 300, 6, 60'000);
    if (!calls_arg || !n_arg || !sleep_arg) {
        fmt::print(stderr, "usage: {} [calls 1..100000] [n 1..2^40] [sleep_ms 6..60000]\n",
                   argv[0]);
        return 2;
    }
    const int calls = *calls_arg;
    const std::uint64_t n = *n_arg;
    const std::chrono::milliseconds sleep_for(*sleep_arg);
    // Line-buffered even into a pipe: the workers' lines and ours then appear in time order.
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    // The process pool first: its workers are forks of this process before any thread exists.
    // Its workers' names (prctl) are "<prefix>-<slot>"; the thread pool's "<prefix>-<index>".
    triad::process_pool processes(triad::process_pool_options{.name_prefix = "cruncher"});
    triad::thread_pool threads(triad::thread_pool_options{.name_prefix = "resizer"});

    fmt::print("=== Named threads and processes in log lines ===\n");
    log("main thread: submitting 4 images to the thread pool");
    std::vector<triad::future<int>> resized;
    for (int image = 1; image <= 4; ++image)
        resized.push_back(threads.submit(resize, image));
    for (auto& f : resized)
        (void)f.get();
    log("main thread: the same in the process pool");
    (void)processes.map(resize, std::vector<int>{1, 2, 3, 4}, {.chunk_size = 1});

    fmt::print("\n=== Named tasks, and the live tasks of a loop ===\n");
    triad::event_loop loop;
    loop.run(triad::make_task([&]() -> triad::task<void> {
        triad::event ready;
        auto fast = triad::spawn(named_task("fetch-users", sleep_for / 3), {.name = "fetch-users"});
        auto slow = triad::spawn(named_task("fetch-orders", sleep_for), {.name = "fetch-orders"});
        auto waiter = triad::spawn(waits_for("writer", ready), {.name = "writer"});
        auto unnamed = triad::spawn(named_task("unnamed", sleep_for));
        // A blocking call handed to a thread: logged from a triad-io thread, while its task
        // waits on the future.
        auto blocking =
            triad::spawn(triad::make_task([&]() -> triad::task<int> {
                             co_return co_await triad::to_thread(slow_resize, 5, sleep_for / 3);
                         }),
                         {.name = "to-thread"});
        // A yield, not a timed sleep: the spawned tasks run to their first wait, and the list
        // comes before any of them can finish. After a sleep shorter than theirs, a loop held up
        // for that long (a loaded machine) woke to finished tasks and listed fewer.
        co_await triad::sleep(std::chrono::milliseconds(0));
        list_tasks(loop, "while they sleep");
        co_await fast;
        co_await blocking;
        list_tasks(loop, "after fetch-users and to-thread finished");
        ready.set();
        co_await waiter;
        co_await slow;
        co_await unnamed;
        list_tasks(loop, "at the end");
    }));

    fmt::print("\n=== Per-executor timings: cpu_bound_func({}) x {} calls ===\n", n, calls);
    // The sum of i^2 for i < n in closed form, n(n-1)(2n-1)/6: what every call must return.
    const std::string expected =
        to_decimal(static_cast<uint128>(n) * (n - 1) * (2 * static_cast<uint128>(n) - 1) / 6);
    const std::vector<std::uint64_t> work(static_cast<std::size_t>(calls), n);
    std::vector<profile_row> rows;

    auto start = clock_type::now();
    std::vector<call_profile> results;
    for (std::uint64_t item : work)
        results.push_back(cpu_bound_func(item));
    rows.push_back(summarise("sequential", 1, seconds_since(start), results, expected));

    start = clock_type::now();
    results = threads.map(cpu_bound_func, work, {.chunk_size = 1});
    rows.push_back(
        summarise("thread_pool", threads.size(), seconds_since(start), results, expected));

    start = clock_type::now();
    results = processes.map(cpu_bound_func, work, {.chunk_size = 1});
    rows.push_back(
        summarise("process_pool", processes.size(), seconds_since(start), results, expected));

    start = clock_type::now();
    results = loop.run(triad::make_task([&]() -> triad::task<std::vector<call_profile>> {
        std::vector<triad::task<call_profile>> tasks;
        for (std::uint64_t item : work)
            tasks.push_back(triad::to_thread(cpu_bound_func, item));
        co_return co_await triad::gather(std::move(tasks));
    }));
    rows.push_back(summarise("to_thread", triad::default_thread_pool().size(), seconds_since(start),
                             results, expected));

    // wall: from the first call submitted to every result back; in func: the calls' own time
    // summed where they ran (cProfile's cumtime). In func above wall x workers is time the
    // workers spent queued for a core (more workers than cores, or a busy machine).
    fmt::print("{:<13} {:>7} {:>5} {:>9} {:>12} {:>13} {:>9} {}\n", "executor", "workers", "calls",
               "wall (s)", "in func (s)", "per call (ms)", "speedup", "result");
    bool all_correct = true;
    for (const profile_row& row : rows) {
        all_correct = all_correct && row.correct;
        fmt::print("{:<13} {:>7} {:>5} {:>9.3f} {:>12.3f} {:>13.2f} {:>8.2f}x {}\n", row.executor,
                   row.workers, row.calls, row.wall, row.in_function,
                   row.in_function / static_cast<double>(row.calls) * 1000, rows[0].wall / row.wall,
                   row.correct ? "correct" : "WRONG");
    }
    fmt::print("every call returned {}: {}\n", expected, all_correct ? "yes" : "NO");
    return all_correct ? 0 : 1;
}
