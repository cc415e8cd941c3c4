// Lesson: a crash in a worker process takes down only its own task. Threads share one address
// space, so a segfault in one kills them all; processes do not. Python's multiprocessing.Pool
// hangs forever when a worker dies, and ProcessPoolExecutor fails every pending future; a
// triad::process_pool fails the one task, replaces the worker, and carries on.
//
// Usage: crash_isolation [tasks=12]

#include <triad/process_pool.hpp>

#include <fmt/core.h>

#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

// A parser that crashes on one poisoned input, as a buggy native library might.
int parse_record(int id) {
    if (id == 5) {
        std::signal(SIGSEGV, SIG_DFL);
        std::raise(SIGSEGV);
    }
    return id * 10;
}

} // namespace

int main(int argc, char** argv) {
    const int tasks = argc > 1 ? std::atoi(argv[1]) : 12;
    triad::process_pool pool(2);
    std::vector<triad::future<int>> results;
    for (int id = 0; id < tasks; ++id)
        results.push_back(pool.submit(parse_record, id));

    int ok = 0;
    for (int id = 0; id < tasks; ++id) {
        try {
            fmt::print("record {:2}: {}\n", id, results[static_cast<std::size_t>(id)].get());
            ++ok;
        } catch (const triad::worker_died& e) {
            fmt::print("record {:2}: FAILED - {}\n", id, e.what());
        }
    }
    fmt::print("\n{} of {} records parsed; workers replaced: {}; the program is still running.\n",
               ok, tasks, pool.workers_replaced());
    return ok == (tasks > 5 ? tasks - 1 : tasks) ? 0 : 1;
}
