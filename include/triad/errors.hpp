#pragma once

#include <stdexcept>
#include <string>
#include <utility>

/// Every exception type triad throws. Each message names what failed and, where it helps, the fix.
namespace triad {

/** A task was dropped before it ran: its executor was shut down with cancellation. */
class task_cancelled : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
    task_cancelled() : std::runtime_error("triad: the task was cancelled before it ran") {}
};

/** Work was submitted to an executor after `shutdown()`. */
class pool_closed : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/** The producer of a future went away without setting a value or an exception. */
class broken_promise : public std::runtime_error {
public:
    broken_promise()
        : std::runtime_error(
              "triad::promise was destroyed without a value or an exception (broken promise)") {}
};

/** A worker's initializer threw; the pool could not start. The original is the nested exception. */
class initializer_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/**
 * A message between processes was truncated, oversized or corrupt. The decoder throws this
 * instead of reading past the end or allocating what the message does not deliver.
 */
class protocol_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/**
 * An MPI call failed, or the ranks of an MPI job cannot form a `triad::mpi_pool` (too few, or
 * not all running the same executable). The message names the call or the rank.
 */
class mpi_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/**
 * A task in a worker process threw. `type_name()` is the original exception's type (demangled)
 * and `message()` its `what()`; `what()` combines both.
 */
class remote_error : public std::runtime_error {
public:
    remote_error(std::string type_name, std::string message)
        : std::runtime_error(type_name + ": " + message), m_type_name(std::move(type_name)),
          m_message(std::move(message)) {}
    const std::string& type_name() const noexcept { return m_type_name; }
    const std::string& message() const noexcept { return m_message; }

private:
    std::string m_type_name;
    std::string m_message;
};

/** The worker process running the task died (a crash, `abort()`, `_exit`, SIGKILL). */
class worker_died : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/** The task ran longer than its pool's timeout; its worker was killed and replaced. */
class task_timeout : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/** `triad::timeout` gave up: the operation took too long and was cancelled. */
class timeout_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/** A `triad::channel` was closed: `send` throws this; `receive` returns empty instead. */
class channel_closed : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/**
 * A `triad::blocking_queue` or `triad::priority_queue` was closed: every push throws this, also
 * one that was waiting for room; pops return what is left, then an empty optional instead.
 */
class queue_closed : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/**
 * A future or promise was used the wrong way: `get()` on an invalid future, a value set twice,
 * two threads waiting on one future, a second continuation.
 */
class future_error : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

} // namespace triad
