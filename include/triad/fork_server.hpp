#pragma once

#include <memory>
#include <stdexcept>

#include <triad/detail/zygote.hpp>

namespace triad {

/**
 * Starts the process-wide fork server: a snapshot of this process, forked while it still has
 * one thread, from which every `triad::process_pool` built afterwards forks its workers (like
 * Python's `forkserver` start method with preloading, or Chromium's zygote).
 *
 * Why: a pool forks its workers from a server it forks when it is built. If another thread
 * holds a lock at that moment (a mutex of yours, a logger's, the allocator's), the lock stays
 * held in every worker for ever, and a task that takes it hangs. The snapshot made here holds
 * no lock, because no other thread existed yet.
 *
 * Which to use when:
 * - Create a guard first thing in `main`, before any thread, thread pool or event loop
 *   exists, whenever the program builds process pools after it has started threads. The
 *   constructor throws `std::logic_error` if other threads already run.
 * - Without a guard (or with `process_pool_options::use_fork_server_guard = false`), each
 *   pool's server is a fork of the process as it is when the pool is built: fine in a program
 *   that builds its pools before starting threads, and the way to give workers data built at
 *   run time (they see this process's memory as it was then).
 *
 * With the guard, workers are what this process was when the guard was made: its memory, and
 * also its user and group ids, working directory, environment, resource limits, umask and open
 * stdout/stderr. A privilege drop, `chdir`, `setenv` or redirection made later does not reach
 * them; do those before creating the guard, or in an initializer.
 *
 * With the guard, workers see memory as it was when the guard was made, so an initializer must
 * be a function or a lambda without captures (pass data through task arguments); a capturing
 * initializer is refused with `std::invalid_argument`. Pools already built are unaffected by
 * the guard's destruction; pools built after it use their own servers again. One guard at a
 * time; a second throws `std::logic_error`. A child forked from this process does not use its
 * parent's guard.
 *
 * @code
 * int main() {
 *     triad::fork_server_guard fork_server; // before anything starts a thread
 *     ...
 * }
 * @endcode
 */
class fork_server_guard {
public:
    fork_server_guard() {
        if (detail::zygote_connection::current())
            throw std::logic_error("triad::fork_server_guard: a fork server is already running");
        detail::zygote_connection::install(detail::zygote_connection::start());
    }
    ~fork_server_guard() { detail::zygote_connection::install(nullptr); }
    fork_server_guard(const fork_server_guard&) = delete;
    fork_server_guard& operator=(const fork_server_guard&) = delete;
};

} // namespace triad
