#pragma once

/// A timeline of what triad's executors ran: per task its executor, worker and time, written in
/// the Chrome trace event format (open the file in https://ui.perfetto.dev or chrome://tracing).

#include <cstddef>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <triad/detail/trace.hpp>

namespace triad::trace {

/** Options for `triad::trace::start`. */
struct options {
    /** Written into the file's `otherData` object, as strings (a workload's name, a run's id). */
    std::vector<std::pair<std::string, std::string>> metadata = {};
    /**
     * Events kept per thread (40 bytes each). Past it a thread's further events are
     * dropped and counted; `stop` returns the count and the file's `otherData` has it.
     */
    std::size_t max_events_per_thread = std::size_t{1} << 20;
};

/** What `triad::trace::stop` wrote. */
struct summary {
    std::size_t events = 0;  ///< tasks in the file
    std::size_t dropped = 0; ///< tasks past a thread's `max_events_per_thread`, not in it
};

/**
 * Starts recording every task that the process's thread pools, process pools and event loops
 * run, until `stop` writes them to `path`.
 *
 * Each thread pool worker is a lane: a task is a span (a task a waiting worker runs inside its
 * wait shows nested in the waiting one), and so is each range of items a `map` runner claims.
 * Each process pool worker is a lane of its own process: a task's span is timed by the worker
 * process itself (steady_clock is one clock for every process). Each event loop is a lane whose
 * spans are the loop's dispatches: one resumption and everything that runs inside it until it
 * returns to the loop (children a combinator starts there included). Setting the environment
 * variable `TRIAD_TRACE=path.json` does the same from the program's start to its normal exit
 * ("%p" in the path becomes the process id). Off, tracing costs a load and a branch per task;
 * on, two clock reads and a store into the thread's buffer, plus the page faults of the buffer's
 * growth in a thread's first session (bench_timeline measures it per executor).
 *
 * A child forked while tracing is on records nothing and does not write the file.
 *
 * @throws std::logic_error if tracing is already on; std::invalid_argument for an empty path or
 *         a zero limit; std::system_error if the file cannot be created (it is created here).
 * @par Thread Safety
 * Any thread; `start` and `stop` are serialised, and tasks running meanwhile are recorded or not.
 *
 *     triad::trace::start("primes.json");
 *     auto counts = pool.map(is_prime, numbers);
 *     triad::trace::stop(); // then open primes.json in Perfetto
 */
inline void start(const std::filesystem::path& path, options opts = {}) {
    detail::trace::registry::instance().start({.path = path,
                                               .metadata = std::move(opts.metadata),
                                               .max_events_per_thread = opts.max_events_per_thread},
                                              "triad::trace::start");
}

/**
 * Stops recording and writes the file that `start` (or `TRIAD_TRACE`) named.
 * @throws std::logic_error if tracing is not on; std::runtime_error if writing the file fails
 *         (tracing is off either way).
 */
inline summary stop() {
    const detail::trace::write_summary s =
        detail::trace::registry::instance().stop("triad::trace::stop");
    return {.events = s.events, .dropped = s.dropped};
}

/** Whether tracing is on in this process. */
inline bool is_on() {
    return detail::trace::registry::instance().active();
}

} // namespace triad::trace
