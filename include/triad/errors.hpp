#pragma once

#include <stdexcept>
#include <string>

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
 * A future or promise was used the wrong way: `get()` on an invalid future, a value set twice,
 * two threads waiting on one future, a second continuation.
 */
class future_error : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

} // namespace triad
