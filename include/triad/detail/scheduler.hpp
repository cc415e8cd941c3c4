#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <pthread.h>

#include <triad/detail/exception_info.hpp>
#include <triad/detail/parker.hpp>
#include <triad/detail/task_queue.hpp>
#include <triad/detail/text.hpp>
#include <triad/detail/wait_slot.hpp>
#include <triad/errors.hpp>

namespace triad::detail {

class scheduler;

// One pool thread. Its counters are written only by the thread itself (plain load + store, no
// read-modify-write) and summed by whoever asks, so counting costs no shared cache line per task.
struct alignas(cache_line) worker {
    explicit worker(std::size_t index) : m_index(index) {}
    ~worker() { parker_pool::release(m_parker); }
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    static void bump(std::atomic<std::uint64_t>& counter, std::memory_order order) noexcept {
        counter.store(counter.load(std::memory_order_relaxed) + 1, order);
    }

    // xorshift: cheap random victims spread thieves over the deques.
    std::uint32_t next_random() noexcept {
        m_random ^= m_random << 13;
        m_random ^= m_random >> 17;
        m_random ^= m_random << 5;
        return m_random;
    }

    work_stealing_deque m_deque;
    parker* m_parker = parker_pool::acquire();
    std::size_t m_index;
    std::uint32_t m_random = 0;
    worker* m_victim_hint = nullptr; // a deque seen non-empty before sleeping; owner-only
    int m_help_depth = 0;
    alignas(cache_line) std::atomic<bool> m_sleeping{false};
    alignas(cache_line) std::atomic<std::uint64_t> m_started{0};
    std::atomic<std::uint64_t> m_done{0}; // ran or cancelled
    std::atomic<std::uint64_t> m_cancelled{0};
    std::thread m_thread;
};

struct scheduler_config {
    std::size_t threads = 1;
    std::string name_prefix = "triad";
    std::function<void(std::size_t)> initializer;
    std::function<void(std::exception_ptr)> on_error;
    std::chrono::nanoseconds idle_spin = std::chrono::microseconds(5);
};

inline thread_local worker* tls_worker = nullptr;
inline thread_local scheduler* tls_scheduler = nullptr;

// The engine under triad::thread_pool: per-worker Chase-Lev deques, an injection stack for
// submissions from other threads, work stealing, sleeping with a short spin, work-helping waits,
// counters, and the drain/cancel shutdown protocol.
//
// Submission is counted before the pool's closed flag is read, and shutdown sets the flag before
// it waits for done == submitted, so a racing submit is either refused or waited for, never lost.
class scheduler final : public wait_helper {
public:
    explicit scheduler(scheduler_config config);
    ~scheduler();
    scheduler(const scheduler&) = delete;
    scheduler& operator=(const scheduler&) = delete;

    std::size_t size() const noexcept { return m_workers.size(); }

    // Counts `count` submissions or throws pool_closed. Must be followed by push() of exactly
    // `count` tasks, or by refuse(count) if making them failed.
    void admit(std::size_t count);
    void refuse(std::size_t count) noexcept;
    // Queues admitted tasks, linked through m_next from newest to oldest, and wakes workers.
    void push(task_node* newest, task_node* oldest, std::size_t count) noexcept;

    void wait_idle();
    void shutdown(bool cancel);
    bool is_own_thread() const noexcept { return tls_scheduler == this; }
    bool is_closed() const noexcept { return m_closed.load(std::memory_order_acquire); }

    std::uint64_t queued() const noexcept;
    std::uint64_t running() const noexcept;
    std::uint64_t completed() const noexcept;
    std::uint64_t cancelled() const noexcept;

    // For tasks whose exception has no future to go to.
    static void report_task_error(std::exception_ptr error) noexcept;

    bool help_until(wait_slot& slot, const steady_time* deadline) override;

private:
    // Beyond this many nested helping waits on one thread, a wait blocks instead of helping, so
    // a chain of tasks that wait on each other cannot overflow the stack.
    static constexpr int max_help_depth = 256;

    void run_worker(worker& self);
    void execute(worker& self, task_node* task) noexcept;
    task_node* find_task(worker& self) noexcept;
    task_node* steal(worker& self) noexcept;
    task_node* spin_for_task(worker& self, const wait_slot* slot) noexcept;
    // Whether any task is queued; if one is in a deque and `self` is given, remembers that
    // deque as self's next victim.
    bool has_visible_work(worker* self = nullptr) const noexcept;
    void announce_sleep(worker& self) noexcept;
    void retract_sleep(worker& self) noexcept;
    void wake_one() noexcept;
    void wake_for(std::size_t count) noexcept;
    bool is_idle() const noexcept;
    void notify_idle_waiters() noexcept;
    void wait_until_idle();
    void stop_and_join() noexcept;
    void name_thread(std::size_t index) const noexcept;
    void report_error(std::exception_ptr error) noexcept;
    std::uint64_t sum(std::atomic<std::uint64_t> worker::*counter) const noexcept;

    scheduler_config m_config;
    std::vector<std::unique_ptr<worker>> m_workers;
    injection_stack m_injection;
    alignas(cache_line) std::atomic<std::uint64_t> m_submitted{0};
    std::atomic<std::uint64_t> m_refused{0};
    alignas(cache_line) std::atomic<std::size_t> m_sleepers{0};
    std::atomic<std::size_t> m_wake_cursor{0};
    alignas(cache_line) std::atomic<bool> m_closed{false};
    std::atomic<bool> m_cancelling{false};
    std::atomic<bool> m_stop{false};
    std::atomic<std::size_t> m_idle_waiter_count{0};
    std::mutex m_idle_mutex;
    std::vector<parker*> m_idle_waiters;
    std::mutex m_shutdown_mutex;
    bool m_joined = false;
};

// ---------------------------------------------------------------------------------------------
// Definitions

inline scheduler::scheduler(scheduler_config config) : m_config(std::move(config)) {
    if (m_config.threads == 0)
        throw std::invalid_argument("triad::thread_pool: the thread count must be at least 1");
    m_workers.reserve(m_config.threads);
    for (std::size_t i = 0; i < m_config.threads; ++i) {
        m_workers.push_back(std::make_unique<worker>(i));
        m_workers.back()->m_random = static_cast<std::uint32_t>(i * 2654435761u) | 1u;
    }

    // The constructor waits for every initializer so that a failing one is reported here, and
    // so that no task can ever run on a thread whose initializer has not finished.
    std::atomic<std::size_t> started{0};
    std::mutex init_mutex;
    std::exception_ptr init_error;
    std::size_t init_error_index = 0;
    parker* constructor = &this_thread_parker();
    const bool has_initializer = static_cast<bool>(m_config.initializer);

    std::size_t launched = 0;
    try {
        for (; launched < m_workers.size(); ++launched) {
            worker& w = *m_workers[launched];
            w.m_thread = std::thread([this, &w, &started, &init_mutex, &init_error,
                                      &init_error_index, &constructor, has_initializer] {
                tls_parker_override = w.m_parker;
                tls_worker = &w;
                tls_scheduler = this;
                name_thread(w.m_index);
                if (has_initializer) {
                    try {
                        m_config.initializer(w.m_index);
                    } catch (...) {
                        std::lock_guard lock(init_mutex);
                        if (!init_error) {
                            init_error = std::current_exception();
                            init_error_index = w.m_index;
                        }
                    }
                    if (started.fetch_add(1, std::memory_order_acq_rel) + 1 == m_config.threads)
                        constructor->unpark();
                }
                run_worker(w);
            });
        }
    } catch (...) {
        // Could not start every thread: stop the ones that did start and report the failure.
        // Workers without a thread stay in m_workers (running threads may be scanning it); their
        // deques are empty and they never sleep, so nobody steals from or wakes them.
        if (has_initializer) {
            started.fetch_add(m_config.threads - launched, std::memory_order_acq_rel);
            while (started.load(std::memory_order_acquire) < m_config.threads)
                constructor->park();
        }
        stop_and_join();
        throw;
    }

    if (has_initializer) {
        while (started.load(std::memory_order_acquire) < m_config.threads)
            constructor->park();
        if (init_error) {
            stop_and_join();
            const std::string message =
                concat("triad::thread_pool: the initializer threw on worker ", init_error_index,
                       ": ", describe_exception(init_error));
            try {
                std::rethrow_exception(init_error);
            } catch (...) {
                std::throw_with_nested(initializer_error(message));
            }
        }
    }
}

inline scheduler::~scheduler() {
    if (is_own_thread()) {
        std::fputs("triad::thread_pool: destroyed from one of its own tasks; the pool cannot "
                   "join the thread it is running on. Destroy the pool from outside it.\n",
                   stderr);
        std::abort();
    }
    shutdown(false);
}

inline void scheduler::admit(std::size_t count) {
    m_submitted.fetch_add(count, std::memory_order_seq_cst);
    if (m_closed.load(std::memory_order_seq_cst) && !is_own_thread()) {
        refuse(count);
        throw pool_closed("triad::thread_pool: cannot submit work after shutdown()");
    }
}

inline void scheduler::refuse(std::size_t count) noexcept {
    m_refused.fetch_add(count, std::memory_order_release);
    notify_idle_waiters();
}

inline void scheduler::push(task_node* newest, task_node* oldest, std::size_t count) noexcept {
    if (worker* self = tls_worker; self != nullptr && tls_scheduler == this) {
        // Oldest ends up at the bottom of our deque, so we run the chain in order.
        for (task_node* node = newest;;) {
            task_node* next = node->m_next;
            try {
                self->m_deque.push(node);
            } catch (...) {
                // Out of memory growing the deque: the injection stack needs no allocation.
                m_injection.push_chain(node, oldest);
                break;
            }
            if (node == oldest)
                break;
            node = next;
        }
    } else {
        m_injection.push_chain(newest, oldest);
    }
    if (m_sleepers.load(std::memory_order_seq_cst) != 0)
        wake_for(count);
}

inline void scheduler::execute(worker& self, task_node* task) noexcept {
    worker::bump(self.m_started, std::memory_order_relaxed);
    const bool cancel = m_cancelling.load(std::memory_order_relaxed);
    task->execute(cancel);
    if (cancel)
        worker::bump(self.m_cancelled, std::memory_order_relaxed);
    worker::bump(self.m_done, std::memory_order_release);
}

inline void scheduler::run_worker(worker& self) {
    tls_wait_helper = this;
    for (;;) {
        task_node* task = find_task(self);
        if (task == nullptr) {
            notify_idle_waiters();
            task = spin_for_task(self, nullptr);
        }
        if (task != nullptr) {
            execute(self, task);
            continue;
        }
        if (m_stop.load(std::memory_order_acquire))
            break;
        announce_sleep(self);
        if (has_visible_work(&self) || m_stop.load(std::memory_order_seq_cst)) {
            retract_sleep(self);
            continue;
        }
        self.m_parker->park();
        retract_sleep(self);
    }
    tls_wait_helper = nullptr;
    tls_scheduler = nullptr;
    tls_worker = nullptr;
    tls_parker_override = nullptr;
}

inline task_node* scheduler::find_task(worker& self) noexcept {
    if (task_node* task = self.m_deque.pop())
        return task;
    if (task_node* newest = m_injection.take_all()) {
        // Keep the oldest to run now; the rest go to our deque, where thieves can take them.
        bool moved = false;
        while (newest->m_next != nullptr) {
            task_node* next = newest->m_next;
            try {
                self.m_deque.push(newest);
            } catch (...) {
                m_injection.push_chain(newest, newest); // out of memory: hand it back
            }
            newest = next;
            moved = true;
        }
        if (moved && m_sleepers.load(std::memory_order_seq_cst) != 0)
            wake_for(2);
        return newest;
    }
    return steal(self);
}

inline task_node* scheduler::steal(worker& self) noexcept {
    const std::size_t n = m_workers.size();
    if (n < 2)
        return nullptr;
    const auto try_victim = [&](worker& victim) -> task_node* {
        for (int attempt = 0; attempt < 4 && !victim.m_deque.empty(); ++attempt) {
            if (task_node* task = victim.m_deque.steal()) {
                // Wake two: woken thieves wake more, so a large batch spreads over sleeping
                // workers in a doubling tree rather than a chain of single wake-ups.
                if (!victim.m_deque.empty() && m_sleepers.load(std::memory_order_seq_cst) != 0)
                    wake_for(2);
                return task;
            }
        }
        return nullptr;
    };
    if (worker* hint = std::exchange(self.m_victim_hint, nullptr); hint != nullptr && hint != &self)
        if (task_node* task = try_victim(*hint))
            return task;
    // Small pools look at every deque. Large ones (I/O pools of thousands of threads) probe a
    // bounded number at random: scanning thousands of empty deques on every idle turn made
    // a pool's cost quadratic in its size. A worker still scans all of them once before it
    // sleeps (has_visible_work), and steals from what that scan found.
    constexpr std::size_t full_scan_limit = 64;
    if (n <= full_scan_limit) {
        const std::size_t start = self.next_random() % n;
        for (std::size_t i = 0; i < n; ++i) {
            worker& victim = *m_workers[(start + i) % n];
            if (&victim != &self)
                if (task_node* task = try_victim(victim))
                    return task;
        }
        return nullptr;
    }
    for (std::size_t probe = 0; probe < full_scan_limit; ++probe) {
        worker& victim = *m_workers[self.next_random() % n];
        if (&victim != &self)
            if (task_node* task = try_victim(victim))
                return task;
    }
    return nullptr;
}

inline task_node* scheduler::spin_for_task(worker& self, const wait_slot* slot) noexcept {
    const auto until = std::chrono::steady_clock::now() + m_config.idle_spin;
    for (int round = 0;; ++round) {
        for (int i = 0; i < 16; ++i)
            cpu_relax();
        if (slot != nullptr && slot->is_ready())
            return nullptr;
        if (task_node* task = find_task(self))
            return task;
        if (m_stop.load(std::memory_order_relaxed))
            return nullptr;
        if ((round & 7) == 7) {
            if (std::chrono::steady_clock::now() >= until)
                return nullptr;
            // On an oversubscribed machine the producer we wait for may need this core.
            std::this_thread::yield();
        }
    }
}

inline bool scheduler::has_visible_work(worker* self) const noexcept {
    if (!m_injection.empty())
        return true;
    for (const auto& w : m_workers)
        if (!w->m_deque.empty()) {
            if (self != nullptr)
                self->m_victim_hint = w.get();
            return true;
        }
    return false;
}

inline void scheduler::announce_sleep(worker& self) noexcept {
    self.m_sleeping.store(true, std::memory_order_relaxed);
    m_sleepers.fetch_add(1, std::memory_order_seq_cst);
}

inline void scheduler::retract_sleep(worker& self) noexcept {
    if (self.m_sleeping.exchange(false, std::memory_order_acq_rel))
        m_sleepers.fetch_sub(1, std::memory_order_relaxed);
}

inline void scheduler::wake_one() noexcept {
    const std::size_t n = m_workers.size();
    const std::size_t start = m_wake_cursor.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t i = 0; i < n; ++i) {
        worker& w = *m_workers[(start + i) % n];
        if (w.m_sleeping.load(std::memory_order_relaxed) &&
            w.m_sleeping.exchange(false, std::memory_order_acq_rel)) {
            m_sleepers.fetch_sub(1, std::memory_order_relaxed);
            w.m_parker->unpark();
            return;
        }
    }
}

inline void scheduler::wake_for(std::size_t count) noexcept {
    for (std::size_t i = 0; i < count && m_sleepers.load(std::memory_order_seq_cst) != 0; ++i)
        wake_one();
}

inline bool scheduler::is_idle() const noexcept {
    // Done counts are read before the submitted count: both only grow and a task is counted as
    // submitted before it can be done, so equality means the pool was idle at some instant.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const std::uint64_t done = m_refused.load(std::memory_order_acquire) + sum(&worker::m_done);
    return done == m_submitted.load(std::memory_order_seq_cst);
}

inline void scheduler::notify_idle_waiters() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (m_idle_waiter_count.load(std::memory_order_relaxed) == 0 || !is_idle())
        return;
    std::lock_guard lock(m_idle_mutex);
    for (parker* waiter : m_idle_waiters)
        waiter->unpark();
}

inline void scheduler::wait_until_idle() {
    parker& self = this_thread_parker();
    {
        std::lock_guard lock(m_idle_mutex);
        m_idle_waiters.push_back(&self);
        m_idle_waiter_count.fetch_add(1, std::memory_order_seq_cst);
    }
    while (!is_idle())
        self.park();
    std::lock_guard lock(m_idle_mutex);
    m_idle_waiters.erase(std::find(m_idle_waiters.begin(), m_idle_waiters.end(), &self));
    m_idle_waiter_count.fetch_sub(1, std::memory_order_relaxed);
}

inline void scheduler::wait_idle() {
    if (is_own_thread())
        throw std::logic_error("triad::thread_pool::wait_idle: called from one of the pool's own "
                               "tasks, it would wait for itself; wait on futures instead");
    wait_until_idle();
}

inline void scheduler::shutdown(bool cancel) {
    if (is_own_thread())
        throw std::logic_error("triad::thread_pool::shutdown: called from one of the pool's own "
                               "tasks, it would wait for itself; call it from outside the pool");
    if (cancel)
        m_cancelling.store(true, std::memory_order_relaxed); // also turns a drain in progress
    std::lock_guard lock(m_shutdown_mutex);
    if (m_joined)
        return;
    m_closed.store(true, std::memory_order_seq_cst);
    wait_until_idle();
    stop_and_join();
}

inline void scheduler::stop_and_join() noexcept {
    m_closed.store(true, std::memory_order_seq_cst);
    m_stop.store(true, std::memory_order_seq_cst);
    for (auto& w : m_workers)
        w->m_parker->unpark();
    for (auto& w : m_workers)
        if (w->m_thread.joinable())
            w->m_thread.join();
    m_joined = true;
}

inline bool scheduler::help_until(wait_slot& slot, const steady_time* deadline) {
    worker* self = tls_worker;
    if (self == nullptr || self->m_help_depth >= max_help_depth)
        return slot.block_until(deadline);
    struct depth_guard {
        worker& w;
        explicit depth_guard(worker& target) : w(target) { ++w.m_help_depth; }
        ~depth_guard() { --w.m_help_depth; }
        depth_guard(const depth_guard&) = delete;
        depth_guard& operator=(const depth_guard&) = delete;
    } guard(*self);

    const auto past_deadline = [deadline] {
        return deadline != nullptr && std::chrono::steady_clock::now() >= *deadline;
    };
    for (;;) {
        if (slot.is_ready())
            return true;
        if (past_deadline())
            return false;
        task_node* task = find_task(*self);
        if (task == nullptr && !past_deadline())
            task = spin_for_task(*self, &slot);
        if (task != nullptr) {
            execute(*self, task);
            continue;
        }
        if (slot.is_ready())
            return true;
        if (past_deadline())
            return false;
        // Sleep until the slot is set or new work arrives, whichever comes first.
        if (!slot.try_register_waiter(*self->m_parker))
            return true;
        announce_sleep(*self);
        if (!has_visible_work(self)) {
            if (deadline != nullptr)
                self->m_parker->park_until(*deadline);
            else
                self->m_parker->park();
        }
        retract_sleep(*self);
        if (!slot.deregister_waiter())
            return true;
    }
}

inline void scheduler::name_thread(std::size_t index) const noexcept {
    // Linux limits thread names to 15 characters; keep the index and shorten the prefix.
    const std::string suffix = concat("-", index);
    std::string name = m_config.name_prefix;
    if (name.size() + suffix.size() > 15)
        name.resize(15 > suffix.size() ? 15 - suffix.size() : 0);
    name += suffix;
    if (name.size() > 15)
        name.resize(15);
    ::pthread_setname_np(::pthread_self(), name.c_str());
}

inline void scheduler::report_error(std::exception_ptr error) noexcept {
    if (m_config.on_error) {
        try {
            m_config.on_error(error);
            return;
        } catch (...) {
            report_to_stderr("triad::thread_pool: the on_error handler threw",
                             std::current_exception());
        }
    }
    report_to_stderr("triad::thread_pool: a posted task threw", error);
}

inline void scheduler::report_task_error(std::exception_ptr error) noexcept {
    if (scheduler* owner = tls_scheduler)
        owner->report_error(std::move(error));
    else
        report_to_stderr("triad: a task threw", error);
}

inline std::uint64_t scheduler::sum(std::atomic<std::uint64_t> worker::*counter) const noexcept {
    std::uint64_t total = 0;
    for (const auto& w : m_workers)
        total += ((*w).*counter).load(std::memory_order_acquire);
    return total;
}

// Each snapshot reads the counter that trails first, so a difference never goes negative.
inline std::uint64_t scheduler::queued() const noexcept {
    const std::uint64_t started = sum(&worker::m_started);
    const std::uint64_t refused = m_refused.load(std::memory_order_acquire);
    const std::uint64_t submitted = m_submitted.load(std::memory_order_acquire);
    return submitted > started + refused ? submitted - started - refused : 0;
}

inline std::uint64_t scheduler::running() const noexcept {
    const std::uint64_t done = sum(&worker::m_done);
    const std::uint64_t started = sum(&worker::m_started);
    return started > done ? started - done : 0;
}

inline std::uint64_t scheduler::completed() const noexcept {
    const std::uint64_t cancelled_count = sum(&worker::m_cancelled);
    const std::uint64_t done = sum(&worker::m_done);
    return done > cancelled_count ? done - cancelled_count : 0;
}

inline std::uint64_t scheduler::cancelled() const noexcept {
    return sum(&worker::m_cancelled);
}

} // namespace triad::detail
