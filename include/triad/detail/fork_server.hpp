#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <triad/detail/exception_info.hpp>
#include <triad/detail/posix.hpp>
#include <triad/detail/remote.hpp>

// The child side of a process pool. The pool forks one *fork server* when it is built; the
// server is single-threaded, holds no lock and only ever makes syscalls, so forking workers
// from it stays safe however many threads the parent starts later (the thread pool, an event
// loop), and respawning a crashed worker never forks the parent again.
//
// Descriptors: the server closes everything it inherited except stdin/stdout/stderr and its
// control socket, so the parent's files and sockets never stay open in pool processes. Each
// worker gets a task pipe and a result pipe, created by the parent and handed over with
// SCM_RIGHTS.
//
// Lifetime: when the parent dies, even by SIGKILL, the server reads end-of-file on its control
// socket and kills its workers; workers also have PR_SET_PDEATHSIG on the server (whose only
// thread is the one that forked them, so the signal fires exactly when the server is gone).
// The server itself cannot use PR_SET_PDEATHSIG: it fires when the parent *thread* that forked
// it ends, and a pool may be built on a thread that ends long before the process does.
namespace triad::detail {

// Shared (MAP_SHARED) between the parent and every worker: one cache line per worker.
struct alignas(64) worker_slot {
    std::atomic<std::uint64_t> running_task{0}; // the task a worker is running, 0 between tasks
};

struct alignas(64) shared_state_block {
    std::atomic<std::uint32_t> cancelling{0}; // set by shutdown(cancel): queued tasks never start
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "process-shared atomics must be lock-free");

// What the parent and a worker know about the pool before the server is forked; workers read
// it from the server's copy of the parent's memory.
struct pool_config {
    std::function<void(std::size_t)> initializer;
    std::size_t max_tasks_per_child = 0;
    std::uint64_t max_message_size = 0;
    std::size_t max_nesting = default_max_nesting;
    std::string name_prefix;
    shared_state_block* shared = nullptr;
    worker_slot* slots = nullptr;
    std::size_t slot_count = 0;
    sigset_t original_signal_mask{};
};

// Messages on the control socket (SOCK_SEQPACKET: one message per read).
enum class control_type : std::uint32_t {
    spawn = 1,        // parent -> server: fork worker `slot`, with two descriptors attached
    spawned = 2,      // server -> parent: `slot` is running as `pid`
    exited = 3,       // server -> parent: `pid` ended with wait status `status`
    spawn_failed = 4, // server -> parent: fork failed with errno `status`
};

struct control_message {
    std::uint32_t type;
    std::uint32_t slot;
    std::int32_t pid;
    std::int32_t status;
};

// Sends a control message, with descriptors when given. Returns 0 or an errno.
inline int send_control(int socket, const control_message& message, const int* fds = nullptr,
                        std::size_t fd_count = 0) noexcept {
    iovec io{const_cast<control_message*>(&message), sizeof message};
    msghdr header{};
    header.msg_iov = &io;
    header.msg_iovlen = 1;
    alignas(cmsghdr) char space[CMSG_SPACE(sizeof(int) * 2)] = {};
    if (fd_count != 0) {
        header.msg_control = space;
        header.msg_controllen = CMSG_SPACE(sizeof(int) * fd_count);
        cmsghdr* cm = CMSG_FIRSTHDR(&header);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * fd_count);
        std::memcpy(CMSG_DATA(cm), fds, sizeof(int) * fd_count);
    }
    for (;;) {
        const ssize_t n = retry_eintr([&] { return ::sendmsg(socket, &header, MSG_NOSIGNAL); });
        if (n == static_cast<ssize_t>(sizeof message))
            return 0;
        if (n >= 0)
            return EPROTO;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return errno;
        // A non-blocking socket whose peer is slow to read: wait for room, briefly.
        pollfd room{socket, POLLOUT, 0};
        if (retry_eintr([&] { return ::poll(&room, 1, 5000); }) <= 0)
            return ETIMEDOUT;
    }
}

// Receives one control message and up to two descriptors (set to -1 when absent). Returns the
// bytes read: 0 at end of file, -1 on error.
inline ssize_t receive_control(int socket, control_message& message, int* fds) noexcept {
    iovec io{&message, sizeof message};
    msghdr header{};
    header.msg_iov = &io;
    header.msg_iovlen = 1;
    alignas(cmsghdr) char space[CMSG_SPACE(sizeof(int) * 2)] = {};
    header.msg_control = space;
    header.msg_controllen = sizeof space;
    fds[0] = fds[1] = -1;
    const ssize_t n = retry_eintr([&] { return ::recvmsg(socket, &header, MSG_CMSG_CLOEXEC); });
    for (cmsghdr* cm = CMSG_FIRSTHDR(&header); n > 0 && cm != nullptr;
         cm = CMSG_NXTHDR(&header, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            const std::size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            std::memcpy(fds, CMSG_DATA(cm), sizeof(int) * (count < 2 ? count : 2));
        }
    }
    if (n > 0 && n != static_cast<ssize_t>(sizeof message)) {
        errno = EPROTO;
        return -1;
    }
    return n;
}

// "<prefix>-<index>", the prefix shortened so the index survives Linux's 15-character limit.
inline void set_process_name(const std::string& prefix, std::size_t index) noexcept {
    char suffix[24];
    const int suffix_length = std::snprintf(suffix, sizeof suffix, "-%zu", index);
    char name[64];
    const int room = 15 - suffix_length;
    std::snprintf(name, sizeof name, "%.*s%s", room > 0 ? room : 0, prefix.c_str(), suffix);
    name[15] = '\0';
    ::prctl(PR_SET_NAME, name, 0, 0, 0);
}

// --- the worker --------------------------------------------------------------------------------

class worker_process {
public:
    worker_process(const pool_config& config, std::size_t slot, int task_fd, int result_fd)
        : m_config(config), m_slot(slot), m_task_fd(task_fd), m_result_fd(result_fd),
          m_parser(config.max_message_size, config.max_nesting) {}

    [[noreturn]] void run() noexcept {
        try {
            if (!initialize())
                finish(0);
            serve();
        } catch (...) {
            // A broken stream or an encoding failure: nothing sensible can be sent back any more.
            report_to_stderr("triad: a process_pool worker stopped", std::current_exception());
            finish(3);
        }
        finish(0);
    }

private:
    bool initialize() {
        code_ranges::instance().load();
        if (m_config.initializer) {
            try {
                m_config.initializer(m_slot);
            } catch (...) {
                const remote_failure failure = capture_failure(std::current_exception());
                const std::size_t start = m_out.size();
                begin_frame(m_out, frame_kind::init_failed, 0);
                encode_to(m_out, failure);
                end_frame(m_out, start);
                flush();
                return false;
            }
        }
        const std::size_t start = m_out.size();
        begin_frame(m_out, frame_kind::ready, 0);
        end_frame(m_out, start);
        flush();
        return true;
    }

    void serve() {
        worker_slot& slot = m_config.slots[m_slot];
        for (;;) {
            const long n = read_into(m_task_fd, m_parser);
            if (n == 0)
                return; // the parent closed the pipe: shutdown, or the parent is gone
            if (n < 0)
                throw_errno("triad worker: read");
            bool retire = false;
            m_parser.parse([&](const frame_header& header, byte_reader& payload, bool more) {
                if (retire)
                    return; // past max_tasks_per_child: the parent re-sends the rest
                run_task(header, payload, slot);
                ++m_tasks_done;
                retire = m_config.max_tasks_per_child != 0 &&
                         m_tasks_done >= m_config.max_tasks_per_child;
                // Send results as soon as there is nothing queued behind them, so the parent
                // sees each task finish; batch them while a burst of small tasks is queued.
                if (!more || retire || m_out.size() > 256 * 1024 ||
                    std::chrono::steady_clock::now() - m_first_unsent >
                        std::chrono::microseconds(200))
                    flush();
            });
            if (retire) {
                const std::size_t start = m_out.size();
                begin_frame(m_out, frame_kind::retiring, 0);
                end_frame(m_out, start);
                flush();
                return;
            }
        }
    }

    void run_task(const frame_header& header, byte_reader& payload, worker_slot& slot) {
        if (static_cast<frame_kind>(header.kind) != frame_kind::task)
            throw protocol_error("triad worker: expected a task frame");
        if (m_out.empty())
            m_first_unsent = std::chrono::steady_clock::now();
        const std::size_t start = m_out.size();
        if (m_config.shared->cancelling.load(std::memory_order_acquire) != 0) {
            begin_frame(m_out, frame_kind::cancelled, header.task_id);
            end_frame(m_out, start);
            return;
        }
        slot.running_task.store(header.task_id, std::memory_order_release);
        begin_frame(m_out, frame_kind::result, header.task_id);
        try {
            const auto invoker_index = payload.read_scalar<std::uint32_t>();
            const auto function = payload.read_scalar<std::uint64_t>();
            invoker_registry::find(invoker_index)(static_cast<std::uintptr_t>(function), payload,
                                                  m_out);
        } catch (...) {
            // Replace the partial result by the failure.
            m_out.resize(start);
            begin_frame(m_out, frame_kind::failure, header.task_id);
            encode_to(m_out, capture_failure(std::current_exception()));
        }
        end_frame(m_out, start);
        slot.running_task.store(0, std::memory_order_release);
    }

    void flush() {
        if (m_out.empty())
            return;
        const int error = write_all(m_result_fd, m_out.data(), m_out.size());
        if (error != 0)
            finish(0); // the parent is gone (EPIPE): nobody wants the result
        m_out.clear();
        if (m_out.capacity() > 4 * 1024 * 1024)
            std::vector<char>().swap(m_out);
    }

    [[noreturn]] void finish(int status) noexcept {
        // _exit, not exit: the parent's atexit handlers and static destructors belong to the
        // parent. Flush what the task printed first.
        flush_standard_streams();
        ::_exit(status);
    }

    const pool_config& m_config;
    std::size_t m_slot;
    int m_task_fd;
    int m_result_fd;
    frame_parser m_parser;
    std::vector<char> m_out;
    std::size_t m_tasks_done = 0;
    std::chrono::steady_clock::time_point m_first_unsent{};
};

// --- the fork server ---------------------------------------------------------------------------

class fork_server {
public:
    fork_server(const pool_config& config, int control_fd)
        : m_config(config), m_control(control_fd), m_workers(config.slot_count, 0) {}

    // Runs in a fork of a parent that may have other threads, which may have held any lock at
    // the moment of the fork: until it forks a worker, the server only makes syscalls (no
    // stdio, no allocation). The parent flushed stdio before forking.
    [[noreturn]] void run() noexcept {
        ::setpgid(0, 0); // terminal signals (Ctrl-C) go to the parent, which decides
        const int keep[] = {m_control};
        close_descriptors_from(3, keep, 1);
        ::prctl(PR_SET_NAME, "triad-forksrv", 0, 0, 0);

        sigset_t child_signals;
        sigemptyset(&child_signals);
        sigaddset(&child_signals, SIGCHLD);
        ::sigprocmask(SIG_BLOCK, &child_signals, nullptr);
        const int children = ::signalfd(-1, &child_signals, SFD_CLOEXEC | SFD_NONBLOCK);
        if (children < 0)
            ::_exit(10);

        pollfd fds[2] = {{m_control, POLLIN, 0}, {children, POLLIN, 0}};
        for (;;) {
            if (retry_eintr([&] { return ::poll(fds, 2, -1); }) < 0)
                stop(11);
            if ((fds[1].revents & POLLIN) != 0) {
                signalfd_siginfo info;
                while (::read(children, &info, sizeof info) == sizeof info) {
                }
                reap();
            }
            if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                control_message message{};
                int received[2];
                const ssize_t n = receive_control(m_control, message, received);
                if (n <= 0)
                    stop(0); // the parent closed its end, or died
                if (static_cast<control_type>(message.type) == control_type::spawn)
                    spawn(message.slot, received[0], received[1], children);
                else
                    for (int fd : received)
                        if (fd >= 0)
                            ::close(fd);
            }
        }
    }

private:
    void spawn(std::uint32_t slot, int task_fd, int result_fd, int children_fd) {
        if (slot >= m_config.slot_count || task_fd < 0 || result_fd < 0) {
            ::close(task_fd);
            ::close(result_fd);
            return;
        }
        const pid_t server = ::getpid();
        const pid_t pid = ::fork();
        if (pid == 0) {
            // The worker: it must die with the server, and keep nothing of the server's.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            if (::getppid() != server)
                ::_exit(1); // the server died before prctl took effect
            ::close(m_control);
            ::close(children_fd);
            // A worker starts with default signal handling: the parent's handlers (a test
            // runner's, a crash reporter's) are the parent's business, and a crash must end
            // the worker in the way the pool reports. The initializer may install its own.
            for (int sig = 1; sig < NSIG; ++sig)
                if (sig != SIGKILL && sig != SIGSTOP)
                    ::signal(sig, SIG_DFL);
            ::signal(SIGPIPE, SIG_IGN); // a vanished parent shows up as EPIPE, not a signal
            ::sigprocmask(SIG_SETMASK, &m_config.original_signal_mask, nullptr);
            set_process_name(m_config.name_prefix, slot);
            worker_process(m_config, slot, task_fd, result_fd).run();
        }
        ::close(task_fd);
        ::close(result_fd);
        control_message reply{};
        reply.slot = slot;
        if (pid < 0) {
            reply.type = static_cast<std::uint32_t>(control_type::spawn_failed);
            reply.status = errno;
        } else {
            reply.type = static_cast<std::uint32_t>(control_type::spawned);
            reply.pid = pid;
            m_workers[slot] = pid;
        }
        if (send_control(m_control, reply) != 0)
            stop(0);
    }

    void reap() {
        int status = 0;
        pid_t pid;
        while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
            for (pid_t& w : m_workers)
                if (w == pid)
                    w = 0;
            control_message message{static_cast<std::uint32_t>(control_type::exited), 0, pid,
                                    status};
            if (send_control(m_control, message) != 0)
                stop(0);
        }
    }

    [[noreturn]] void stop(int status) noexcept {
        for (pid_t w : m_workers)
            if (w > 0)
                ::kill(w, SIGKILL);
        int ignored = 0;
        while (retry_eintr([&] { return ::waitpid(-1, &ignored, 0); }) > 0) {
        }
        ::_exit(status);
    }

    const pool_config& m_config;
    int m_control;
    std::vector<pid_t> m_workers; // allocated in the parent, before the fork
};

} // namespace triad::detail
