#pragma once

#if !defined(__linux__)
#error "triad needs Linux: its waits are built on futex(2) and its process pool on fork(2)"
#endif

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <vector>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace triad::detail {

static_assert(sizeof(std::atomic<std::int32_t>) == sizeof(std::int32_t),
              "futex words must be plain 32-bit integers");

// A word shared between processes (in MAP_SHARED memory) needs the slower shared futex; one in
// this process's memory only, the private one.
enum class futex_scope { process_private, process_shared };

constexpr int futex_op(int op, futex_scope scope) noexcept {
    return scope == futex_scope::process_private ? op | FUTEX_PRIVATE_FLAG : op;
}

// Returns false only when the absolute CLOCK_MONOTONIC deadline passed; spurious wake-ups and a
// changed word return true, so callers always re-check their condition.
inline bool futex_wait(std::atomic<std::int32_t>& word, std::int32_t expected,
                       const std::chrono::steady_clock::time_point* deadline,
                       futex_scope scope = futex_scope::process_private) noexcept {
    timespec ts{};
    const timespec* timeout = nullptr;
    if (deadline != nullptr) {
        const auto ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(deadline->time_since_epoch())
                .count();
        if (ns <= 0)
            return false;
        ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
        ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
        timeout = &ts;
    }
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time, which is steady_clock's clock in
    // libstdc++ and libc++ on Linux, so a deadline never drifts across EINTR restarts.
    const long rc = ::syscall(SYS_futex, reinterpret_cast<std::int32_t*>(&word),
                              futex_op(FUTEX_WAIT_BITSET, scope), expected, timeout, nullptr,
                              FUTEX_BITSET_MATCH_ANY);
    return !(rc == -1 && errno == ETIMEDOUT);
}

inline void futex_wake(std::atomic<std::int32_t>& word, int count,
                       futex_scope scope = futex_scope::process_private) noexcept {
    ::syscall(SYS_futex, reinterpret_cast<std::int32_t*>(&word), futex_op(FUTEX_WAKE, scope), count,
              nullptr, nullptr, 0);
}

// A one-token binary semaphore owned by one thread: the thread parks, anyone unparks. A token
// given while the thread is not parked makes its next park return at once; callers always wait in
// a loop on their real condition, so a stale token only costs one spurious wake-up.
class parker {
public:
    void park() noexcept {
        if (m_state.fetch_sub(1, std::memory_order_acquire) == notified)
            return;
        for (;;) {
            futex_wait(m_state, parked, nullptr);
            std::int32_t expected = notified;
            if (m_state.compare_exchange_strong(expected, empty, std::memory_order_acquire))
                return;
        }
    }

    // Returns true if a token arrived, false when the deadline passed first.
    bool park_until(std::chrono::steady_clock::time_point deadline) noexcept {
        if (m_state.fetch_sub(1, std::memory_order_acquire) == notified)
            return true;
        for (;;) {
            const bool in_time = futex_wait(m_state, parked, &deadline);
            std::int32_t expected = notified;
            if (m_state.compare_exchange_strong(expected, empty, std::memory_order_acquire))
                return true;
            if (!in_time || std::chrono::steady_clock::now() >= deadline)
                return m_state.exchange(empty, std::memory_order_acquire) == notified;
        }
    }

    void unpark() noexcept {
        if (m_state.exchange(notified, std::memory_order_release) == parked)
            futex_wake(m_state, 1);
    }

private:
    static constexpr std::int32_t empty = 0;
    static constexpr std::int32_t notified = 1;
    static constexpr std::int32_t parked = -1;
    std::atomic<std::int32_t> m_state{empty};
};

// Parkers are never freed, only recycled: a waker that read a parker's address just before its
// thread exited may still unpark it, and on recycled memory that is a harmless spurious wake-up
// rather than a use after free.
class parker_pool {
public:
    static parker* acquire() {
        auto& self = instance();
        std::lock_guard lock(self.m_mutex);
        if (!self.m_free.empty()) {
            parker* p = self.m_free.back();
            self.m_free.pop_back();
            return p;
        }
        self.m_all.push_back(std::make_unique<parker>());
        return self.m_all.back().get();
    }

    static void release(parker* p) noexcept {
        auto& self = instance();
        std::lock_guard lock(self.m_mutex);
        try {
            self.m_free.push_back(p);
        } catch (...) {
            // Out of memory while recycling: the parker stays owned by m_all, merely unused.
        }
    }

private:
    static parker_pool& instance() {
        // Leaked on purpose: threads may exit (and release their parker) after static destructors
        // have run.
        static parker_pool* pool = std::make_unique<parker_pool>().release();
        return *pool;
    }

    std::mutex m_mutex;
    std::vector<std::unique_ptr<parker>> m_all;
    std::vector<parker*> m_free;
};

class thread_parker_slot {
public:
    thread_parker_slot() : m_parker(parker_pool::acquire()) {}
    ~thread_parker_slot() { parker_pool::release(m_parker); }
    thread_parker_slot(const thread_parker_slot&) = delete;
    thread_parker_slot& operator=(const thread_parker_slot&) = delete;
    parker& get() noexcept { return *m_parker; }

private:
    parker* m_parker;
};

// Threads that others must be able to wake from outside (pool workers) set their own parker.
inline thread_local parker* tls_parker_override = nullptr;

/// The calling thread's parker, made on its first wait; null if there was no memory to make it
/// (a later call tries again).
inline parker* try_this_thread_parker() noexcept {
    if (parker* own = tls_parker_override)
        return own;
    try {
        thread_local thread_parker_slot slot;
        return &slot.get();
    } catch (...) {
        return nullptr;
    }
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

} // namespace triad::detail
