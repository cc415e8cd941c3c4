// Helpers for tests of processes: what this process has open, its children and descendants as
// /proc shows them (any depth, so a forgotten grandchild or a zombie anywhere is found), signal
// dispositions set for a scope, and a parent killed under the processes it started.
#pragma once

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace triad_test {

inline std::size_t open_descriptors() {
    std::size_t count = 0;
    DIR* dir = ::opendir("/proc/self/fd");
    while (dirent* entry = ::readdir(dir))
        if (entry->d_name[0] != '.')
            ++count;
    ::closedir(dir);
    return count - 1; // the directory stream's own descriptor
}

struct process_info {
    pid_t pid = 0;
    pid_t parent = 0;
    char state = '?';
};

inline std::vector<process_info> all_processes() {
    std::vector<process_info> found;
    DIR* dir = ::opendir("/proc");
    while (dirent* entry = ::readdir(dir)) {
        const pid_t pid = std::atoi(entry->d_name);
        if (pid <= 0)
            continue;
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string line;
        std::getline(stat, line);
        const auto close_paren = line.rfind(')');
        if (close_paren == std::string::npos)
            continue;
        std::istringstream rest(line.substr(close_paren + 2));
        process_info info;
        info.pid = pid;
        rest >> info.state >> info.parent;
        found.push_back(info);
    }
    ::closedir(dir);
    return found;
}

// The children of `parent` (default: this process), zombies included; not their descendants.
inline std::vector<process_info> children(pid_t parent = ::getpid()) {
    std::vector<process_info> found;
    for (const auto& p : all_processes())
        if (p.parent == parent)
            found.push_back(p);
    return found;
}

// Every descendant of `root` (default: this process), at any depth.
inline std::vector<process_info> descendants(pid_t root = ::getpid()) {
    const auto processes = all_processes();
    std::multimap<pid_t, process_info> by_parent;
    for (const auto& p : processes)
        by_parent.emplace(p.parent, p);
    std::vector<process_info> found;
    std::vector<pid_t> frontier{root};
    while (!frontier.empty()) {
        const pid_t parent = frontier.back();
        frontier.pop_back();
        auto [first, last] = by_parent.equal_range(parent);
        for (auto it = first; it != last; ++it) {
            found.push_back(it->second);
            frontier.push_back(it->second.pid);
        }
    }
    return found;
}

// The state of `pid`'s main thread as /proc shows it ('R' running, 'S' asleep, 'T' stopped,
// 'Z' a zombie...), or 0 if there is no such process.
inline char process_state(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line))
        return 0;
    const auto close_paren = line.rfind(')');
    return close_paren != std::string::npos && line.size() > close_paren + 2 ? line[close_paren + 2]
                                                                             : '?';
}

// Gone, or a zombie waiting for its parent.
inline bool process_gone(pid_t pid) {
    const char state = process_state(pid);
    return state == 0 || state == 'Z';
}

inline bool process_alive(pid_t pid) {
    return !process_gone(pid);
}

// For a test that kills a child while it is blocked in a call: the child says (through a pipe)
// that it is about to make the call, then wait_blocked() waits until the child's thread is asleep
// for three looks in a row, i.e. blocked in that call. A fixed sleep instead was not always long
// enough: under a sanitizer on a loaded machine a child can take more than 200 ms to start, and
// it was then killed before it made the call, so the test checked nothing.
class about_to_block {
public:
    about_to_block() {
        if (::pipe(m_fds) != 0)
            throw std::runtime_error("about_to_block: pipe failed");
    }
    ~about_to_block() {
        ::close(m_fds[0]);
        ::close(m_fds[1]);
    }
    about_to_block(const about_to_block&) = delete;
    about_to_block& operator=(const about_to_block&) = delete;

    // In the child, just before the call.
    void say() const {
        const char byte = 1;
        [[maybe_unused]] const ssize_t n = ::write(m_fds[1], &byte, 1);
    }
    // In the parent: true once `pid` said so and is asleep; false if not within `limit`.
    bool wait_blocked(pid_t pid, std::chrono::milliseconds limit = std::chrono::seconds(60)) const {
        const auto give_up = std::chrono::steady_clock::now() + limit;
        pollfd said{m_fds[0], POLLIN, 0};
        if (::poll(&said, 1, static_cast<int>(limit.count())) != 1)
            return false;
        int asleep_looks = 0;
        while (asleep_looks < 3 && std::chrono::steady_clock::now() < give_up) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            asleep_looks = process_state(pid) == 'S' ? asleep_looks + 1 : 0;
        }
        return asleep_looks == 3;
    }

private:
    int m_fds[2];
};

// Sets a signal's disposition for the scope (SIGCHLD ignored, as a server may have it) and
// restores the one before.
class signal_scope {
public:
    signal_scope(int sig, void (*handler)(int), int flags = 0) : m_sig(sig) {
        struct sigaction action {};
        action.sa_handler = handler;
        action.sa_flags = flags;
        sigemptyset(&action.sa_mask);
        if (::sigaction(sig, &action, &m_saved) != 0)
            throw std::runtime_error("signal_scope: sigaction failed");
    }
    ~signal_scope() { ::sigaction(m_sig, &m_saved, nullptr); }
    signal_scope(const signal_scope&) = delete;
    signal_scope& operator=(const signal_scope&) = delete;

private:
    int m_sig;
    struct sigaction m_saved {};
};

namespace detail {

// All `size` bytes through `transfer` (::read or ::write), retrying EINTR; false on end of file
// or an error.
template <class Transfer, class Byte>
bool transfer_exactly(Transfer transfer, int fd, Byte* data, std::size_t size) {
    while (size > 0) {
        const ssize_t n = transfer(fd, data, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

} // namespace detail

// Forks a child that calls `start(report)`: `start` builds what the test is about (a pool, a
// process) and passes the pids that must not outlive the child to `report`, which sends them here
// and never returns, so nothing is torn down by the child itself. The child is then killed with
// SIGKILL and reaped, and its pids are returned: the test checks that they end too. Throws if
// the child ends without reporting.
template <class Start>
std::vector<pid_t> orphans_of_killed_parent(Start start) {
    int pipe_ends[2];
    if (::pipe(pipe_ends) != 0)
        throw std::runtime_error("orphans_of_killed_parent: pipe failed");
    const pid_t parent = ::fork();
    if (parent < 0)
        throw std::runtime_error("orphans_of_killed_parent: fork failed");
    if (parent == 0) {
        ::close(pipe_ends[0]);
        const auto report = [fd = pipe_ends[1]](const std::vector<pid_t>& pids) {
            const int count = static_cast<int>(pids.size());
            if (!detail::transfer_exactly(::write, fd, reinterpret_cast<const char*>(&count),
                                          sizeof count) ||
                !detail::transfer_exactly(::write, fd, reinterpret_cast<const char*>(pids.data()),
                                          sizeof(pid_t) * pids.size()))
                ::_exit(1);
            for (;;)
                ::pause(); // until the kill
        };
        try {
            start(report);
        } catch (...) {
        }
        ::_exit(1); // `start` did not report: the read below sees end of file
    }
    ::close(pipe_ends[1]);
    int count = -1;
    std::vector<pid_t> pids;
    bool reported = detail::transfer_exactly(::read, pipe_ends[0], reinterpret_cast<char*>(&count),
                                             sizeof count) &&
                    count >= 0;
    if (reported) {
        pids.resize(static_cast<std::size_t>(count));
        reported =
            detail::transfer_exactly(::read, pipe_ends[0], reinterpret_cast<char*>(pids.data()),
                                     sizeof(pid_t) * pids.size());
    }
    ::close(pipe_ends[0]);
    ::kill(parent, SIGKILL);
    int status = 0;
    while (::waitpid(parent, &status, 0) < 0 && errno == EINTR) {
    }
    if (!reported)
        throw std::runtime_error("orphans_of_killed_parent: the child ended before it reported");
    return pids;
}

} // namespace triad_test
