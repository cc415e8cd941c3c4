#pragma once

#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <triad/detail/exception_info.hpp>
#include <triad/detail/posix.hpp>
#include <triad/detail/wait_slot.hpp>

namespace triad {

/**
 * Runs one function in a child process (Python's `multiprocessing.Process`): the child is a
 * fork of this process, so the function may capture anything. Its exit code is what it returns
 * (if it returns an int), 0 otherwise, or 1 if it throws (the exception is printed on stderr).
 * The child ends if this process dies, even by SIGKILL. The destructor joins.
 *
 * Fork a `triad::process` early or from a single-threaded program: a lock another thread held
 * at the moment of the fork stays held in the child (the process pools avoid this with a fork
 * server).
 *
 * @par Thread Safety
 * One `process` object is used by one thread at a time.
 *
 * @code
 * triad::process producer([&queue] { for (int i = 0; i < 10; ++i) queue.put(i); queue.close(); });
 * int code = producer.join(); // 0
 * @endcode
 */
class process {
public:
    /** Forks and runs `fn(args...)` in the child. Throws `std::system_error` if fork fails. */
    template <class Fn, class... Args>
    explicit process(Fn&& fn, Args&&... args);

    process(process&& other) noexcept
        : m_pid(std::exchange(other.m_pid, -1)), m_exit_code(other.m_exit_code),
          m_parent_link(std::move(other.m_parent_link)), m_status(std::move(other.m_status)),
          m_pidfd(std::move(other.m_pidfd)) {}
    process& operator=(process&& other) noexcept {
        if (this != &other) {
            finish();
            m_pid = std::exchange(other.m_pid, -1);
            m_exit_code = other.m_exit_code;
            m_parent_link = std::move(other.m_parent_link);
            m_status = std::move(other.m_status);
            m_pidfd = std::move(other.m_pidfd);
        }
        return *this;
    }
    process(const process&) = delete;
    process& operator=(const process&) = delete;
    /** Waits for the child, so none is ever left a zombie. */
    ~process() { finish(); }

    /** The child's process id. */
    pid_t pid() const noexcept { return m_pid; }

    /**
     * Waits for the child and returns its exit code: what the function returned, 1 if it
     * threw, or minus the signal number that killed it (as Python's `exitcode`).
     *
     * Where this process ignores SIGCHLD (or a handler reaps children), the system discards the
     * child's status; the code the function returned still arrives (the child sends it), but if
     * the child was killed by a signal there is nothing to report and `std::system_error`
     * (ECHILD) says so.
     */
    int join() {
        while (!m_exit_code) {
            int status = 0;
            const pid_t r = detail::wait_for_child(m_pidfd.get(), m_pid, status, false);
            if (r == m_pid)
                record(status);
            else if (r < 0 && errno == ECHILD)
                status_collected_elsewhere();
            else
                detail::throw_errno("triad::process::join: waitpid");
        }
        return *m_exit_code;
    }

    /** Waits at most `timeout`; the exit code, or nothing if the child still runs. */
    template <class Rep, class Period>
    std::optional<int> join_for(std::chrono::duration<Rep, Period> timeout) {
        const auto deadline = detail::deadline_after(timeout);
        for (auto pause = std::chrono::microseconds(50);;
             pause = std::min(pause * 2, std::chrono::microseconds(20'000))) {
            if (const auto code = exit_code())
                return code;
            const auto now = std::chrono::steady_clock::now();
            if (now >= deadline)
                return std::nullopt;
            std::this_thread::sleep_for(
                std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
        }
    }

    /** The exit code if the child has ended (without blocking), nothing while it runs. */
    std::optional<int> exit_code() {
        if (!m_exit_code) {
            int status = 0;
            const pid_t r = detail::wait_for_child(m_pidfd.get(), m_pid, status, true);
            if (r == m_pid)
                record(status);
            else if (r < 0 && errno == ECHILD)
                status_collected_elsewhere();
        }
        return m_exit_code;
    }

    /** True while the child runs. */
    bool running() { return !exit_code().has_value(); }

    /** Asks the child to stop (SIGTERM). */
    void terminate() noexcept { signal(SIGTERM); }
    /** Stops the child at once (SIGKILL). */
    void kill() noexcept { signal(SIGKILL); }

private:
    void signal(int sig) noexcept {
        if (m_pid > 0 && !m_exit_code)
            ::kill(m_pid, sig);
    }
    void record(int status) noexcept {
        m_exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    }
    // The child is gone and its wait status with it: the code it sent before exiting, if any.
    void status_collected_elsewhere() {
        int code = 0;
        const ssize_t n =
            detail::retry_eintr([&] { return ::read(m_status.get(), &code, sizeof code); });
        if (n == static_cast<ssize_t>(sizeof code)) {
            m_exit_code = code;
            return;
        }
        m_exit_code = -1; // never reported as success, even if the caller ignores the exception
        throw std::system_error(ECHILD, std::generic_category(),
                                "triad::process: the child ended without returning (killed by a "
                                "signal) and its status was collected elsewhere (this process "
                                "ignores SIGCHLD, or a SIGCHLD handler reaped it)");
    }
    void finish() noexcept {
        if (m_pid > 0) {
            try {
                join();
            } catch (...) {
            }
        }
    }

    // In the child: a thread that ends the process when the parent's end of the link closes,
    // which happens when the parent *process* dies (PR_SET_PDEATHSIG would fire when the
    // parent *thread* that forked ends).
    static void watch_parent(int link, pid_t parent) {
        // The link's end-of-file, or the parent's pidfd: the first alone can be held off by
        // any other process that inherited the parent's end of the link.
        const int parent_fd = detail::open_pidfd(parent);
        if (::getppid() != parent)
            ::_exit(128 + SIGHUP);
        std::thread([link, parent_fd] {
            pollfd watched[2] = {{link, POLLIN, 0}, {parent_fd, POLLIN, 0}};
            while (::poll(watched, parent_fd >= 0 ? 2 : 1, -1) < 0 && errno == EINTR) {
            }
            ::_exit(128 + SIGHUP);
        }).detach();
    }

    template <class Fn, class... Args>
    [[noreturn]] static void run_child(int link, pid_t parent, int status, Fn& fn,
                                       Args&... args) noexcept {
        int code = 0;
        // A child that calls exit() itself reports its code from there (glibc's on_exit).
        static int status_fd = -1;
        status_fd = status;
        ::on_exit(
            [](int exit_code, void*) {
                const int reported = exit_code & 0xff;
                [[maybe_unused]] const int ignored =
                    detail::write_all(status_fd, &reported, sizeof reported);
            },
            nullptr);
        try {
            watch_parent(link, parent);
            if constexpr (std::is_convertible_v<std::invoke_result_t<Fn&, Args&...>, int>)
                code = static_cast<int>(std::invoke(fn, args...));
            else
                std::invoke(fn, args...);
        } catch (...) {
            detail::report_to_stderr("triad::process: the function threw",
                                     std::current_exception());
            code = 1;
        }
        detail::flush_standard_streams();
        // The code also travels through a pipe, for a parent whose wait status is discarded.
        const int reported = code & 0xff; // what the wait status would have said
        [[maybe_unused]] const int ignored = detail::write_all(status, &reported, sizeof reported);
        ::_exit(code); // not exit(): the parent's atexit handlers and destructors are the parent's
    }

    pid_t m_pid = -1;
    std::optional<int> m_exit_code;
    detail::unique_fd m_parent_link; // our end; closing it (by dying) tells the child
    detail::unique_fd m_status;      // the child's exit code, written as it exits
    detail::unique_fd m_pidfd;       // the child, for waits no reused pid can fool
};

template <class Fn, class... Args>
process::process(Fn&& fn, Args&&... args) {
    static_assert(std::is_invocable_v<std::decay_t<Fn>&, std::decay_t<Args>&...>,
                  "triad::process: the function cannot be called with these arguments");
    // Only a call that can be made is compiled, so the assertion is the only error.
    if constexpr (std::is_invocable_v<std::decay_t<Fn>&, std::decay_t<Args>&...>) {
        auto callable = std::decay_t<Fn>(std::forward<Fn>(fn));
        std::tuple<std::decay_t<Args>...> arguments(std::forward<Args>(args)...);
        detail::pipe_pair link = detail::make_pipe(O_CLOEXEC);
        detail::pipe_pair status = detail::make_pipe(O_CLOEXEC | O_NONBLOCK);
        const pid_t parent = ::getpid();
        const pid_t pid = detail::fork_with_stdio_locked();
        if (pid < 0)
            detail::throw_errno("triad::process: fork");
        if (pid == 0) {
            // The parent's process pools' pipes and sockets are not the child's: holding them would
            // keep those pools' workers and servers waiting for it.
            detail::pool_descriptors::close_all_in_child();
            link.write.reset();
            status.read.reset();
            std::apply(
                [&](auto&... a) {
                    run_child(link.read.get(), parent, status.write.get(), callable, a...);
                },
                arguments);
        }
        m_pid = pid;
        m_pidfd.reset(detail::open_pidfd(pid)); // not reaped yet: it is our child
        m_parent_link = std::move(link.write);
        m_status = std::move(status.read);
    }
}

} // namespace triad
