#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <triad/detail/text.hpp>

namespace triad::detail {

// Whether this is a ThreadSanitizer build (GCC says so by a macro, Clang by a feature), for the
// few places where its interceptors need another path.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool thread_sanitizer_build = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool thread_sanitizer_build = true;
#else
inline constexpr bool thread_sanitizer_build = false;
#endif
#else
inline constexpr bool thread_sanitizer_build = false;
#endif

[[noreturn]] inline void throw_errno(const char* what, int error = errno) {
    throw std::system_error(error, std::generic_category(), what);
}

// Retries a syscall wrapper while it fails with EINTR.
template <class Call>
auto retry_eintr(Call call) {
    for (;;) {
        auto rc = call();
        if (!(rc == -1 && errno == EINTR))
            return rc;
    }
}

/// An owned file descriptor, closed on destruction.
class unique_fd {
public:
    unique_fd() noexcept = default;
    explicit unique_fd(int fd) noexcept : m_fd(fd) {}
    unique_fd(unique_fd&& other) noexcept : m_fd(std::exchange(other.m_fd, -1)) {}
    unique_fd& operator=(unique_fd&& other) noexcept {
        if (this != &other)
            reset(std::exchange(other.m_fd, -1));
        return *this;
    }
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    ~unique_fd() { reset(); }

    int get() const noexcept { return m_fd; }
    explicit operator bool() const noexcept { return m_fd >= 0; }
    int release() noexcept { return std::exchange(m_fd, -1); }
    void reset(int fd = -1) noexcept {
        // close() is not retried on EINTR: on Linux the descriptor is gone either way.
        if (m_fd >= 0)
            ::close(m_fd);
        m_fd = fd;
    }

private:
    int m_fd = -1;
};

// Process-wide sets of descriptors, as bitmaps a freshly forked child can walk without a lock
// (the child of a multi-threaded fork must not take a lock another thread may have held).
// Descriptors past 65,535 are not tracked.
template <class Tag>
class descriptor_set {
public:
    static void add(int fd) noexcept {
        if (fd >= 0 && fd < limit)
            word(fd).fetch_or(bit(fd), std::memory_order_relaxed);
    }
    static void remove(int fd) noexcept {
        if (fd >= 0 && fd < limit)
            word(fd).fetch_and(~bit(fd), std::memory_order_relaxed);
    }
    static bool contains(int fd) noexcept {
        return fd >= 0 && fd < limit && (word(fd).load(std::memory_order_relaxed) & bit(fd)) != 0;
    }
    // In a process that closed them all (a fork server): none is open any more.
    static void forget_all() noexcept {
        for (int w = 0; w < limit / 64; ++w)
            words()[w].store(0, std::memory_order_relaxed);
    }
    // Calls f(fd) for each descriptor in the set, without allocating.
    template <class F>
    static void for_each(F f) noexcept {
        for (int w = 0; w < limit / 64; ++w) {
            std::uint64_t bits = words()[w].load(std::memory_order_relaxed);
            while (bits != 0) {
                const int b = __builtin_ctzll(bits);
                bits &= bits - 1;
                f(w * 64 + b);
            }
        }
    }
    // The smallest descriptor in the set that is >= fd, or -1.
    static int next_at_or_after(int fd) noexcept {
        if (fd < 0)
            fd = 0;
        for (int w = fd / 64; w < limit / 64; ++w) {
            std::uint64_t bits = words()[w].load(std::memory_order_relaxed);
            if (w == fd / 64)
                bits &= ~std::uint64_t{0} << (fd % 64);
            if (bits != 0)
                return w * 64 + __builtin_ctzll(bits);
        }
        return -1;
    }
    // In a freshly forked child: closes every descriptor in the set, and forgets them (the
    // numbers are free for the child's own files, which a later child must not close).
    static void close_all_in_child() noexcept {
        for_each([](int fd) { ::close(fd); });
        forget_all();
    }

private:
    static constexpr int limit = 65536;
    static std::atomic<std::uint64_t>* words() noexcept {
        static std::atomic<std::uint64_t> bitmap[limit / 64] = {};
        return bitmap;
    }
    static std::atomic<std::uint64_t>& word(int fd) noexcept { return words()[fd / 64]; }
    static std::uint64_t bit(int fd) noexcept { return std::uint64_t{1} << (fd % 64); }
};

// The descriptors process pools hold (sockets, pipes, pidfds): a `triad::process` child closes
// them, so a pool's workers and fork server never wait for a child that merely inherited a
// pipe or socket end. Stop frames and pidfds still end a pool whatever a child holds.
using pool_descriptors = descriptor_set<struct pool_descriptors_tag>;

// Descriptors meant to be shared with pool processes (a `triad::process_queue`'s pipe): fork
// servers, which close everything else they inherit, keep these, so workers can use a queue
// made before their pool.
using shared_descriptors = descriptor_set<struct shared_descriptors_tag>;

/// A descriptor a pool owns: a unique_fd that is also listed in pool_descriptors.
class pool_fd {
public:
    pool_fd() noexcept = default;
    explicit pool_fd(int fd) noexcept : m_fd(fd) { pool_descriptors::add(fd); }
    explicit pool_fd(unique_fd&& fd) noexcept : pool_fd(fd.release()) {}
    pool_fd(pool_fd&& other) noexcept : m_fd(std::exchange(other.m_fd, -1)) {}
    pool_fd& operator=(pool_fd&& other) noexcept {
        if (this != &other) {
            reset();
            m_fd = std::exchange(other.m_fd, -1);
        }
        return *this;
    }
    pool_fd(const pool_fd&) = delete;
    pool_fd& operator=(const pool_fd&) = delete;
    ~pool_fd() { reset(); }

    int get() const noexcept { return m_fd; }
    explicit operator bool() const noexcept { return m_fd >= 0; }
    int release() noexcept {
        pool_descriptors::remove(m_fd);
        return std::exchange(m_fd, -1);
    }
    void reset(int fd = -1) noexcept {
        if (m_fd >= 0) {
            // Unlisted first: once closed, the number may be reused for a descriptor of the user's.
            pool_descriptors::remove(m_fd);
            ::close(m_fd);
        }
        m_fd = fd;
        pool_descriptors::add(fd);
    }

private:
    int m_fd = -1;
};

// pidfds (Linux 5.3): a process handle that cannot be fooled by pid reuse or by who reaps.
// -1 with errno set where the kernel has none (ENOSYS), and callers fall back to pids.
inline int open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

// Sends `sig` through the pidfd when there is one, else by pid.
inline int signal_process(int pidfd, pid_t pid, int sig) noexcept {
#ifdef SYS_pidfd_send_signal
    if (pidfd >= 0)
        return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
#endif
    return pid > 0 ? ::kill(pid, sig) : -1;
}

// Waits for a child to end, by its pidfd where there is one (so a pid reused after someone
// else reaped the child can never be mistaken for it), else by pid. Returns the pid with the
// wait status in `status`, 0 if `no_hang` and it still runs, or -1 with errno (ECHILD: reaped
// elsewhere).
inline pid_t wait_for_child(int pidfd, pid_t pid, int& status, bool no_hang) noexcept {
    if (pidfd >= 0) {
        siginfo_t info{};
        const int options = WEXITED | (no_hang ? WNOHANG : 0);
        const int rc = retry_eintr([&] {
            return ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info,
                            options);
        });
        if (rc != 0) {
            if (errno != EINVAL)
                return -1;
            // EINVAL: a kernel without P_PIDFD (before 5.4); by pid, then.
        } else if (info.si_pid == 0) {
            return 0; // WNOHANG, still running
        } else {
            status =
                info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8 : (info.si_status & 0x7f);
            return info.si_pid;
        }
    }
    return retry_eintr([&] { return ::waitpid(pid, &status, no_hang ? WNOHANG : 0); });
}

struct pipe_pair {
    unique_fd read;
    unique_fd write;
};

inline pipe_pair make_pipe(int flags = O_CLOEXEC) {
    int fds[2];
    if (::pipe2(fds, flags) != 0)
        throw_errno("triad: pipe2");
    return {unique_fd(fds[0]), unique_fd(fds[1])};
}

inline void set_nonblocking(int fd, bool on) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags == -1 || ::fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) == -1)
        throw_errno("triad: fcntl(O_NONBLOCK)");
}

// Big pipe buffers let large payloads stream with fewer wake-ups; best effort, as the system
// limit (/proc/sys/fs/pipe-max-size) may refuse.
inline void grow_pipe(int fd, int bytes) noexcept {
    ::fcntl(fd, F_SETPIPE_SZ, bytes);
}

// Writes everything or returns the errno that stopped it (EPIPE when the reader is gone).
inline int write_all(int fd, const void* data, std::size_t size) noexcept {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd, p, size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
    return 0;
}

// Reads exactly `size` bytes; returns false at end of file before the first byte.
// Throws on errors and on end of file in the middle.
inline bool read_exact(int fd, void* data, std::size_t size, const char* what) {
    auto* p = static_cast<char*>(data);
    std::size_t done = 0;
    while (done < size) {
        const ssize_t n = ::read(fd, p + done, size - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw_errno(what);
        }
        if (n == 0) {
            if (done == 0)
                return false;
            throw std::system_error(EPIPE, std::generic_category(),
                                    concat(what, ": end of file in the middle of a message"));
        }
        done += static_cast<std::size_t>(n);
    }
    return true;
}

// Closes every descriptor from `first` up, except those listed and, with `keep_shared`, those
// in shared_descriptors (however many): for a freshly forked helper process that must not
// keep its parent's files, sockets or pipes open. Allocates nothing.
inline void close_descriptors_from(int first, const int* keep, std::size_t keep_count,
                                   bool keep_shared = false) noexcept {
    int from = first;
    // Ranges between kept descriptors, in ascending order.
    for (;;) {
        int next_keep = keep_shared ? shared_descriptors::next_at_or_after(from) : -1;
        for (std::size_t i = 0; i < keep_count; ++i)
            if (keep[i] >= from && (next_keep == -1 || keep[i] < next_keep))
                next_keep = keep[i];
        const unsigned int last = next_keep == -1 ? ~0u : static_cast<unsigned int>(next_keep - 1);
        if (next_keep == -1 || next_keep > from) {
#ifdef SYS_close_range
            if (::syscall(SYS_close_range, static_cast<unsigned int>(from), last, 0u) != 0)
#endif
            {
                const long max_fd = ::sysconf(_SC_OPEN_MAX);
                const long end = next_keep == -1 ? max_fd : next_keep;
                for (long fd = from; fd < end; ++fd)
                    ::close(static_cast<int>(fd));
            }
        }
        if (next_keep == -1)
            return;
        from = next_keep + 1;
    }
}

// fork() copies only the calling thread: a lock another thread holds at that moment stays
// held in the child for ever. The standard output streams are the ones a child touches
// (printing from a task), so their locks are taken around the fork and released on both sides
// (glibc also resets every stream lock in the child; other C libraries need not). Only stdout
// and stderr are flushed and locked: fflush(nullptr) or flockfile(stdin) would wait for any
// thread blocked reading stdin, which holds its stream's lock for the whole read. Other streams'
// buffered output stays in the parent; children end with flush_standard_streams() and _exit, so
// they never write it a second time.
inline pid_t fork_with_stdio_locked() noexcept {
    std::fflush(stdout);
    std::fflush(stderr);
    ::flockfile(stdout);
    ::flockfile(stderr);
    const pid_t pid = ::fork();
    ::funlockfile(stderr);
    ::funlockfile(stdout);
    return pid;
}

// What a forked child flushes before _exit: what it printed itself. Not fflush(nullptr), which
// would also write the parent's unflushed buffers of other streams, copied by fork, a second
// time.
inline void flush_standard_streams() noexcept {
    std::fflush(stdout);
    std::fflush(stderr);
}

inline std::string describe_wait_status(int status) {
    if (WIFEXITED(status))
        return concat("exited with status ", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        const char* name = ::sigabbrev_np(sig);
        std::string text = concat("was killed by signal ", sig);
        if (name != nullptr)
            text += concat(" (SIG", name, ")");
        return text;
    }
    return concat("ended with wait status ", status);
}

} // namespace triad::detail
