// Helpers shared by the tests: gates that block a task outright (and a pool's only worker),
// bounded waits that turn a hang into a failed check, a busy loop that occupies a CPU without
// sleeping, and a child process for code that must end the program.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include <sys/wait.h>
#include <unistd.h>

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

// Runs `body` in a child process; gives its wait status and what it wrote to stderr.
template <class Body>
std::pair<int, std::string> status_and_stderr_of_child(Body body) {
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0)
        throw std::runtime_error("status_and_stderr_of_child: pipe failed");
    const pid_t child = ::fork();
    if (child < 0)
        throw std::runtime_error("status_and_stderr_of_child: fork failed");
    if (child == 0) {
        std::signal(SIGABRT, SIG_DFL); // not Catch2's handler, which reports on stdout
        ::dup2(pipe_fds[1], STDERR_FILENO);
        ::close(pipe_fds[0]);
        ::close(pipe_fds[1]);
        body();
        ::_exit(0);
    }
    ::close(pipe_fds[1]);
    std::string err;
    char buffer[4096];
    for (;;) {
        const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
        if (n > 0)
            err.append(buffer, static_cast<std::size_t>(n));
        else if (n == 0 || errno != EINTR)
            break;
    }
    ::close(pipe_fds[0]);
    int status = 0;
    while (::waitpid(child, &status, 0) != child)
        if (errno != EINTR)
            throw std::runtime_error("status_and_stderr_of_child: waitpid failed");
    return {status, err};
}

// Waits at most `limit` for a forked child and puts its wait status in `status`; false if it
// was still running then (it is killed and reaped, so a hung child fails the check, not the run).
inline bool wait_child_for(pid_t child, std::chrono::milliseconds limit, int& status) {
    const auto give_up = std::chrono::steady_clock::now() + limit;
    for (;;) {
        const pid_t done = ::waitpid(child, &status, WNOHANG);
        if (done == child)
            return true;
        if (done < 0 && errno != EINTR)
            throw std::runtime_error("wait_child_for: waitpid failed");
        if (std::chrono::steady_clock::now() >= give_up)
            break;
        std::this_thread::sleep_for(10ms);
    }
    ::kill(child, SIGKILL);
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    return false;
}

} // namespace triad_test
