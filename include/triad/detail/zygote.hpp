#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <triad/detail/fork_server.hpp>
#include <triad/detail/posix.hpp>
#include <triad/detail/text.hpp>
#include <triad/serialize.hpp>

// The process-wide fork server (a "zygote", as Chromium calls it; Python's forkserver with
// preload). Forked first thing in main, while the process has one thread, it is a snapshot in
// which no lock can be held by a thread that does not exist. Every pool built later asks it
// for its own fork server, forked from that clean snapshot instead of from the (by then
// multi-threaded) parent.
//
// What crosses: the pool's settings, encoded with triad's codec; its control socket and the
// memfd of its shared memory, as SCM_RIGHTS. What cannot cross is state made after the
// snapshot: an initializer must be a function (or a lambda without captures), whose address is
// the same in the snapshot.
namespace triad::detail {

// A pool's settings as the zygote receives them.
struct zygote_request {
    std::uint64_t slot_count = 0;
    std::uint64_t max_tasks_per_child = 0;
    std::uint64_t max_message_size = 0;
    std::uint64_t max_nesting = 0;
    std::uint64_t shared_bytes = 0;
    std::uint64_t initializer = 0; // address of a void(std::size_t) function, 0: none
    std::string name_prefix;
    std::vector<std::uint8_t> signal_mask; // the sigset_t's bytes
    template <class Archive>
    void serialize(Archive& ar) {
        ar(slot_count, max_tasks_per_child, max_message_size, max_nesting, shared_bytes,
           initializer, name_prefix, signal_mask);
    }
};

struct zygote_reply {
    std::int32_t error = 0; // errno of a failed fork, 0 on success
    std::int32_t pid = 0;   // the pool's fork server
};

inline constexpr std::size_t zygote_message_limit = 64 * 1024;

// Threads of this process, not counting ThreadSanitizer's own background thread.
inline std::size_t thread_count() noexcept {
    std::size_t count = 0;
    if (DIR* dir = ::opendir("/proc/self/task")) {
        while (dirent* entry = ::readdir(dir))
            if (entry->d_name[0] != '.')
                ++count;
        ::closedir(dir);
    }
#if defined(__SANITIZE_THREAD__)
    count = count > 1 ? count - 1 : count;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
    count = count > 1 ? count - 1 : count;
#endif
#endif
    return count;
}

// The zygote process: serves pool requests until its socket closes or its parent is gone.
class zygote_process {
public:
    explicit zygote_process(int socket) noexcept : m_socket(socket) {}

    [[noreturn]] void run(pid_t parent) noexcept {
        ::setpgid(0, 0);
        const int keep[] = {m_socket};
        close_descriptors_from(3, keep, 1, true);
        pool_descriptors::forget_all();
        ::prctl(PR_SET_NAME, "triad-zygote", 0, 0, 0);
        ignore_signals_from_outside();
        const int parent_fd = open_pidfd(parent);
        if (::getppid() != parent)
            ::_exit(0);
        sigset_t child_signals;
        sigemptyset(&child_signals);
        sigaddset(&child_signals, SIGCHLD);
        ::sigprocmask(SIG_BLOCK, &child_signals, nullptr);
        const int children = ::signalfd(-1, &child_signals, SFD_CLOEXEC | SFD_NONBLOCK);
        pollfd fds[3] = {{m_socket, POLLIN, 0}, {children, POLLIN, 0}, {parent_fd, POLLIN, 0}};
        const nfds_t watched = parent_fd >= 0 ? 3 : 2;
        std::vector<char> buffer(zygote_message_limit);
        m_parent = parent;
        for (;;) {
            // Without a pidfd (before Linux 5.3), the parent is checked twice a second.
            if (retry_eintr([&] { return ::poll(fds, watched, parent_fd >= 0 ? -1 : 500); }) < 0)
                ::_exit(11);
            if (parent_fd < 0 && ::getppid() != parent)
                ::_exit(0);
            if (fds[1].revents != 0) {
                signalfd_siginfo info;
                while (::read(children, &info, sizeof info) == sizeof info) {
                }
                int status = 0;
                while (::waitpid(-1, &status, WNOHANG) > 0) {
                }
            }
            // The parent gone: pools' servers watch it themselves and end; so does this.
            if (watched == 3 && fds[2].revents != 0)
                ::_exit(0);
            if (fds[0].revents == 0)
                continue;
            int received[2];
            const ssize_t n = receive_packet(m_socket, buffer.data(), buffer.size(), received);
            if (n <= 1)
                ::_exit(0); // the guard was destroyed (a one-byte stop), or the parent died
            serve(buffer.data(), static_cast<std::size_t>(n), received, parent_fd, children);
            for (int fd : received)
                if (fd >= 0)
                    ::close(fd);
        }
    }

private:
    // Forks the pool's fork server and replies with its pid and a pidfd of it.
    void serve(const char* data, std::size_t size, const int* fds, int parent_fd,
               int children_fd) noexcept {
        zygote_reply reply;
        zygote_request request;
        try {
            request = from_bytes<zygote_request>(std::span<const char>(data, size));
        } catch (...) {
            reply.error = EPROTO;
        }
        if (reply.error == 0 &&
            (fds[0] < 0 || fds[1] < 0 || request.signal_mask.size() != sizeof(sigset_t)))
            reply.error = EPROTO;
        pid_t pid = -1;
        if (reply.error == 0) {
            pid = ::fork();
            if (pid == 0)
                become_server(request, fds[0], fds[1], parent_fd, children_fd);
            if (pid < 0)
                reply.error = errno;
        }
        reply.pid = pid;
        int handle = pid > 0 ? open_pidfd(pid) : -1;
        const int error = handle >= 0 ? send_packet(m_socket, &reply, sizeof reply, &handle, 1)
                                      : send_packet(m_socket, &reply, sizeof reply, nullptr, 0);
        if (handle >= 0)
            ::close(handle);
        if (error != 0)
            ::_exit(0);
    }

    [[noreturn]] void become_server(const zygote_request& request, int control, int memory,
                                    int parent_fd, int children_fd) noexcept {
        ::close(m_socket);
        ::close(children_fd);
        // Back to the signal state a server starts from: SIGCHLD unblocked; the server blocks it
        // for its own signalfd.
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        if (request.shared_bytes != shared_bytes_for(request.slot_count))
            ::_exit(12);
        void* shared =
            ::mmap(nullptr, request.shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memory, 0);
        ::close(memory);
        if (shared == MAP_FAILED)
            ::_exit(12);
        // This process is the zygote's single-threaded child: allocating here is safe. Neither
        // object outlives this frame: run() never returns.
        pool_config config;
        config.max_tasks_per_child = request.max_tasks_per_child;
        config.max_message_size = request.max_message_size;
        config.max_nesting = request.max_nesting;
        config.name_prefix = request.name_prefix;
        lay_out_shared(config, shared, request.slot_count);
        std::memcpy(&config.original_signal_mask, request.signal_mask.data(), sizeof(sigset_t));
        config.parent = m_parent;
        config.parent_is_child = false; // the server is the zygote's child, not the pool's
        config.parent_pidfd = parent_fd;
        if (request.initializer != 0)
            config.initializer = reinterpret_cast<void (*)(std::size_t)>(request.initializer);
        fork_server server(config, control);
        server.run();
    }

    int m_socket;
    pid_t m_parent = 0;
};

// The parent's end: one per process, made by triad::fork_server_guard.
class zygote_connection {
public:
    static std::shared_ptr<zygote_connection> start() {
        if (const std::size_t threads = thread_count(); threads > 1)
            throw std::logic_error(concat(
                "triad::fork_server_guard: ", threads,
                " threads are running; start the fork server first thing in main, before "
                "any thread (or thread pool, or event loop) exists, so no lock can be held in "
                "its snapshot"));
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
            throw_errno("triad::fork_server_guard: socketpair");
        unique_fd mine(pair[0]);
        unique_fd theirs(pair[1]);
        zygote_process zygote(theirs.get());
        const pid_t parent = ::getpid();
        const pid_t pid = fork_with_stdio_locked();
        if (pid < 0)
            throw_errno("triad::fork_server_guard: fork");
        if (pid == 0) {
            (void)mine.release(); // closed by the zygote's descriptor sweep
            zygote.run(parent);
        }
        auto connection = std::shared_ptr<zygote_connection>(new zygote_connection());
        connection->m_socket = pool_fd(std::move(mine));
        connection->m_pid = pid;
        connection->m_pidfd = pool_fd(open_pidfd(pid));
        connection->m_owner = parent;
        return connection;
    }

    ~zygote_connection() {
        // A stop message, then end-of-file: the message ends the zygote even while a plain
        // fork() child of this process holds a copy of the socket.
        if (m_socket && ::getpid() == m_owner) {
            const char stop = 0;
            (void)send_packet(m_socket.get(), &stop, 1, nullptr, 0);
        }
        m_socket.reset();
        // In a fork of the process that started it, the zygote is not ours to wait for or kill:
        // closing our copy of the socket was all.
        if (m_pid > 0 && ::getpid() == m_owner) {
            if (m_pidfd) {
                pollfd gone{m_pidfd.get(), POLLIN, 0};
                if (retry_eintr([&] { return ::poll(&gone, 1, 5000); }) == 0)
                    signal_process(m_pidfd.get(), 0, SIGKILL);
            }
            int status = 0;
            wait_for_child(m_pidfd.get(), m_pid, status, false);
        }
    }
    zygote_connection(const zygote_connection&) = delete;
    zygote_connection& operator=(const zygote_connection&) = delete;

    // The process that started it: a fork of that process must not use it.
    pid_t owner() const noexcept { return m_owner; }

    // Asks for a pool's fork server; returns its pid and a pidfd of it (or -1).
    std::pair<pid_t, int> request(const zygote_request& request, int control, int memory) {
        const std::vector<char> bytes = to_bytes(request);
        if (bytes.size() > zygote_message_limit)
            throw std::invalid_argument("triad::process_pool: settings too large for the fork "
                                        "server (a very long name_prefix?)");
        std::lock_guard lock(m_mutex);
        if (m_unanswered)
            throw std::system_error(ETIMEDOUT, std::generic_category(),
                                    "triad::process_pool: the fork server (fork_server_guard) "
                                    "stopped answering");
        const int fds[2] = {control, memory};
        if (const int error = send_packet(m_socket.get(), bytes.data(), bytes.size(), fds, 2))
            throw_errno("triad::process_pool: the fork server (fork_server_guard) is gone", error);
        // A zygote that does not answer in 10 s (stopped, or stuck) is an error, not a hang.
        pollfd answer{m_socket.get(), POLLIN, 0};
        if (retry_eintr([&] { return ::poll(&answer, 1, 10'000); }) == 0) {
            m_unanswered = true; // a late answer would be taken for the next request's
            throw std::system_error(ETIMEDOUT, std::generic_category(),
                                    "triad::process_pool: the fork server (fork_server_guard) did "
                                    "not answer within 10 s");
        }
        zygote_reply reply;
        int received[2];
        const ssize_t n = receive_packet(m_socket.get(), &reply, sizeof reply, received);
        if (received[1] >= 0)
            ::close(received[1]);
        if (n != static_cast<ssize_t>(sizeof reply)) {
            if (received[0] >= 0)
                ::close(received[0]);
            throw_errno("triad::process_pool: the fork server (fork_server_guard) did not answer",
                        n < 0 ? errno : EPIPE);
        }
        if (reply.error != 0) {
            if (received[0] >= 0)
                ::close(received[0]);
            throw_errno("triad::process_pool: the fork server could not fork", reply.error);
        }
        return {reply.pid, received[0]};
    }

    // The connection pools use, if this process started one.
    static std::shared_ptr<zygote_connection> current() {
        std::lock_guard lock(registry_mutex());
        auto& active = registry();
        if (active && active->owner() != ::getpid())
            return nullptr; // inherited by a fork: it belongs to the parent
        return active;
    }
    static void install(std::shared_ptr<zygote_connection> connection) {
        std::lock_guard lock(registry_mutex());
        registry() = std::move(connection);
    }

private:
    zygote_connection() = default;
    static std::mutex& registry_mutex() {
        static std::mutex mutex;
        return mutex;
    }
    static std::shared_ptr<zygote_connection>& registry() {
        static std::shared_ptr<zygote_connection> active;
        return active;
    }

    std::mutex m_mutex;
    bool m_unanswered = false;
    pool_fd m_socket;
    pool_fd m_pidfd;
    pid_t m_pid = -1;
    pid_t m_owner = 0;
};

} // namespace triad::detail
