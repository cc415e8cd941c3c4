#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <thread>
#include <type_traits>

#include <triad/detail/parker.hpp>
#include <triad/errors.hpp>

namespace triad::detail {

using steady_time = std::chrono::steady_clock::time_point;

// A ready flag that at most one thread at a time may sleep on. It is the one waiting primitive in
// triad: futures, bulk jobs and as_completed all block through it, so a thread-pool worker can
// help (run queued tasks) while it waits on any of them, and be woken both by the slot and by new
// work.
class wait_slot {
public:
    static constexpr std::uint32_t ready_bit = 1;
    static constexpr std::uint32_t waiter_bit = 2;
    // Used by state_base; reserved here so the bits live in one word.
    static constexpr std::uint32_t continuation_bit = 4;
    static constexpr std::uint32_t claimed_bit = 8;
    static constexpr std::uint32_t cancelled_bit = 16;
    static constexpr std::uint32_t cancellable_bit = 32;

    bool is_ready() const noexcept {
        return (m_flags.load(std::memory_order_acquire) & ready_bit) != 0;
    }

    // Returns false, registering nothing, if the slot is ready already.
    bool try_register_waiter(parker& p) {
        std::uint32_t flags = m_flags.load(std::memory_order_acquire);
        for (;;) {
            if ((flags & ready_bit) != 0)
                return false;
            if ((flags & waiter_bit) != 0)
                throw future_error("triad: two threads are waiting on the same future at once; a "
                                   "triad::future has one consumer (hand the result on instead)");
            m_waiter.store(&p, std::memory_order_relaxed);
            if (m_flags.compare_exchange_weak(flags, flags | waiter_bit, std::memory_order_release,
                                              std::memory_order_acquire))
                return true;
        }
    }

    // Returns false if the slot became ready first: then its setter may still unpark the waiter,
    // which leaves at most a stale token behind.
    // Acquire: a caller that learns "ready" here goes on to read the result.
    bool deregister_waiter() noexcept {
        std::uint32_t flags = m_flags.load(std::memory_order_acquire);
        for (;;) {
            if ((flags & ready_bit) != 0)
                return false;
            if (m_flags.compare_exchange_weak(flags, flags & ~waiter_bit,
                                              std::memory_order_acquire))
                return true;
        }
    }

    // Returns the flags as they were before.
    std::uint32_t set_ready() noexcept {
        const std::uint32_t before = m_flags.fetch_or(ready_bit, std::memory_order_acq_rel);
        if ((before & waiter_bit) != 0)
            m_waiter.load(std::memory_order_relaxed)->unpark();
        return before;
    }

    // Threads blocked in an untimed wait on this slot. During a pool's drain, a task whose result
    // somebody waits for that way still runs (see scheduler::execute).
    void begin_untimed_wait() noexcept {
        m_untimed_waiters.fetch_add(1, std::memory_order_seq_cst);
    }
    void end_untimed_wait() noexcept { m_untimed_waiters.fetch_sub(1, std::memory_order_release); }
    bool is_awaited() const noexcept {
        return m_untimed_waiters.load(std::memory_order_seq_cst) != 0;
    }

    // For slots used as an auto-reset event by their only waiter.
    void reset() noexcept {
        m_flags.fetch_and(~(ready_bit | waiter_bit), std::memory_order_acq_rel);
    }

    // Blocks the calling thread without helping anyone. Returns false on timeout.
    bool block_until(const steady_time* deadline) {
        parker* self = try_this_thread_parker();
        // A wait never fails for lack of memory: without a parker to be woken through, it polls.
        if (self == nullptr)
            return poll_until(deadline);
        if (!try_register_waiter(*self))
            return true;
        for (;;) {
            bool woken = true;
            if (deadline != nullptr)
                woken = self->park_until(*deadline);
            else
                self->park();
            if (is_ready())
                return true;
            if (!woken)
                return !deregister_waiter();
        }
    }

protected:
    std::atomic<std::uint32_t> m_flags{0};

private:
    bool poll_until(const steady_time* deadline) const {
        auto pause = std::chrono::microseconds(20);
        for (;;) {
            if (is_ready())
                return true;
            auto next = std::chrono::steady_clock::now() + pause;
            if (deadline != nullptr) {
                if (std::chrono::steady_clock::now() >= *deadline)
                    return is_ready();
                next = std::min(next, *deadline);
            }
            std::this_thread::sleep_until(next);
            pause = std::min(pause * 2, std::chrono::microseconds(2000));
        }
    }

    std::atomic<std::uint32_t> m_untimed_waiters{0}; // fills the padding before m_waiter
    std::atomic<parker*> m_waiter{nullptr};
};

// A thread that can do useful work while it waits, such as a thread-pool worker, installs one of
// these for the lifetime of the thread.
class wait_helper {
public:
    // Returns false on timeout.
    virtual bool help_until(wait_slot& slot, const steady_time* deadline) = 0;
    // The first step of an untimed wait, before it counts as one: if the task that completes
    // `slot` is the one this thread would run next anyway, runs it and returns true (the slot is
    // then ready, unless that task only passes the result on). The common fork-join case: a task
    // joins the child it forked last, which nobody stole.
    virtual bool run_if_next(wait_slot&) noexcept { return false; }

protected:
    ~wait_helper() = default;
};

inline thread_local wait_helper* tls_wait_helper = nullptr;

template <class Rep, class Period>
steady_time deadline_after(const std::chrono::duration<Rep, Period>& d) {
    const auto now = std::chrono::steady_clock::now();
    // Compare in floating point so that duration::max() of any type saturates.
    const std::chrono::duration<long double, std::nano> wanted = d;
    if (wanted.count() != wanted.count()) // NaN: neither before nor after anything
        throw std::invalid_argument("triad: a timeout that is not a number (NaN)");
    if (wanted <= wanted.zero())
        return now;
    const std::chrono::duration<long double, std::nano> room = steady_time::max() - now;
    if (wanted >= room)
        return steady_time::max();
    return now + std::chrono::ceil<steady_time::duration>(wanted);
}

// Turns any clock's time point into a steady_clock deadline, saturating instead of overflowing.
// A steady_clock time point is taken as it is: converted through "now" on both clocks it would
// move by the time between the two readings, and two deadlines computed in one order could
// fire in the other (a sleep_until(at) after a timeout(d) whose deadline came later).
template <class Clock, class Duration>
steady_time to_steady_deadline(const std::chrono::time_point<Clock, Duration>& t) {
    using long_ns = std::chrono::duration<long double, std::nano>;
    if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
        const long_ns since = t.time_since_epoch();
        if (since.count() != since.count())
            throw std::invalid_argument("triad: a time point that is not a number (NaN)");
        if (since >= long_ns(steady_time::max().time_since_epoch()))
            return steady_time::max();
        // Long past: the clock's epoch keeps `deadline - now` in range.
        if (since <= long_ns::zero())
            return steady_time{};
        // Rounded from the value just checked: rounding in the time point's own
        // representation (a float's) could land past the clock's range.
        const long double up = std::ceil(since.count());
        if (up >= static_cast<long double>(std::numeric_limits<steady_time::rep>::max()))
            return steady_time::max();
        return steady_time(steady_time::duration(static_cast<steady_time::rep>(up)));
    } else {
        const long_ns remaining =
            long_ns(t.time_since_epoch()) - long_ns(Clock::now().time_since_epoch());
        return deadline_after(remaining);
    }
}

} // namespace triad::detail
