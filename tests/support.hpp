// Helpers shared by the tests: gates that block a task outright (and a pool's only worker),
// bounded waits that turn a hang into a failed check, and a busy loop that occupies a CPU without
// sleeping.
#pragma once

#include <atomic>
#include <chrono>
#include <ctime>
#include <memory>
#include <thread>
#include <utility>

namespace triad_test {

using namespace std::chrono_literals;

// A gate that tasks block on until the test opens it. It blocks the thread outright (no
// helping), so a gated task really occupies its worker.
class gate {
public:
    void open() {
        m_open = true;
        m_open.notify_all();
    }
    void wait() const { m_open.wait(false); }
    bool is_open() const { return m_open.load(); }

private:
    std::atomic<bool> m_open{false};
};

inline void busy_for(std::chrono::microseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) {
    }
}

inline double process_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

template <class Predicate>
bool eventually(Predicate predicate, std::chrono::milliseconds limit = 10s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!predicate()) {
        if (std::chrono::steady_clock::now() > until)
            return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

// Occupies the worker of a one-thread pool with a task that waits for `release`; true once that
// task runs, so what the test submits next stays queued until release.open().
template <class Pool>
[[nodiscard]] bool block_worker(Pool& pool, gate& release) {
    pool.post([&release] { release.wait(); });
    return eventually([&pool] { return pool.running() == 1; });
}

// Runs `body` on its own thread; true if it finished within `limit`. On failure the thread is
// left running, detached, so a hang fails the check instead of hanging the test run (the test
// process then ends with it still blocked, which is fine for a failed test).
template <class Body>
bool finishes_within(std::chrono::milliseconds limit, Body body) {
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread runner([done, body = std::move(body)]() mutable {
        body();
        done->store(true);
    });
    const bool finished = eventually([&] { return done->load(); }, limit);
    if (finished)
        runner.join();
    else
        runner.detach();
    return finished;
}

} // namespace triad_test
