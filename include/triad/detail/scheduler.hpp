#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <pthread.h>
#include <unistd.h>

#include <triad/detail/exception_info.hpp>
#include <triad/detail/node_cache.hpp>
#include <triad/detail/parker.hpp>
#include <triad/detail/shared_state.hpp>
#include <triad/detail/task_queue.hpp>
#include <triad/detail/text.hpp>
#include <triad/detail/trace.hpp>
#include <triad/detail/unique_function.hpp>
#include <triad/detail/wait_slot.hpp>
#include <triad/errors.hpp>

namespace triad::detail {

class scheduler;

// Test-only: called at a few points of a pool's life (a worker that finished starting), so a
// test can widen a race window. Null outside tests; only cold paths consult it.
inline std::atomic<void (*)(const char* point)> test_point_hook{nullptr};
inline void test_point(const char* point) noexcept {
    if (auto hook = test_point_hook.load(std::memory_order_acquire))
        hook(point);
}

// The pre-shutdown task that work submitted from inside the pool during a drain descends from.
// Such work starts only while that task is still running (see scheduler::execute).
// One execution that submitted work during a drain: alive while it runs. `root` is the
// execution whose liveness its work follows: the pre-shutdown task it descends from (itself, if
// it is one), or a task started because a pool task waited for it.
struct alignas(8) drain_scope {
    std::atomic<bool> alive{true};
    std::atomic<std::uint32_t> refs{1};
    drain_scope* root = this; // referenced, unless it is this

    void add_ref() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
    void release() noexcept {
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            if (root != this)
                root->release();
            delete this;
        }
    }
};

// One task running on a worker; nested when the worker helps while it waits.
struct execution {
    drain_scope* root = nullptr; // null: this execution is a root
    drain_scope* own = nullptr;  // made at its first submission during a drain
};

// One pool thread: a base worker, or a stand-in that runs tasks while a worker is blocked. Its
// counters are written only by the thread itself (plain load + store, no read-modify-write) and
// summed by whoever asks, so counting costs no shared cache line per task.
struct alignas(cache_line) worker {
    worker(std::size_t index, bool stand_in) : m_index(index), m_stand_in(stand_in) {
        m_random = static_cast<std::uint32_t>(index * 2654435761u) | 1u;
    }
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

    enum class stand_in_state { active, spare };

    work_stealing_deque m_deque;
    parker* m_parker = parker_pool::acquire();
    std::size_t m_index;
    const bool m_stand_in;
    std::uint32_t m_random = 0;
    worker* m_victim_hint = nullptr; // a deque seen non-empty before sleeping; owner-only
    execution* m_current = nullptr;  // owner-only
    // A wait that finds the frame pointer below this blocks instead of helping: what is left is
    // kept for the task that runs on top (owner-only).
    std::uintptr_t m_stack_limit = 0;
    // Stand-ins only, guarded by scheduler::m_stand_in_mutex.
    stand_in_state m_state = stand_in_state::active;
    worker* m_next_spare = nullptr;
    // Stand-ins only: true between tasks, when a stand-in can notice it is no longer needed.
    std::atomic<bool> m_between_tasks{false};
    alignas(cache_line) std::atomic<bool> m_sleeping{false};
    alignas(cache_line) std::atomic<std::uint64_t> m_started{0};
    std::atomic<std::uint64_t> m_done[2] = {}; // ran or cancelled, per wait_idle generation
    // Tasks this thread submitted to its own pool (a task forking subtasks), per generation.
    // Submissions from other threads go to the scheduler's shared counters; a shared counter
    // here would bounce its cache line between the workers on every fork.
    std::atomic<std::uint64_t> m_submitted[2] = {};
    std::atomic<std::uint64_t> m_cancelled{0};
    std::thread m_thread;
};

// The pool's threads, base workers first. It only grows (stand-ins are appended under the pool's
// stand-in mutex, the only writer) and a slot never moves, so readers index it without a lock.
class worker_table {
public:
    explicit worker_table(std::size_t base) : m_base(base) {
        m_first = std::make_unique<std::unique_ptr<worker>[]>(base);
        for (std::size_t i = 0; i < base; ++i)
            m_first[i] = std::make_unique<worker>(i, false);
        m_size.store(base, std::memory_order_release);
    }

    std::size_t size() const noexcept { return m_size.load(std::memory_order_acquire); }
    std::size_t base() const noexcept { return m_base; }

    worker& operator[](std::size_t i) const noexcept {
        if (i < m_base)
            return *m_first[i];
        const std::size_t j = i - m_base + first_extra;
        const auto segment = static_cast<std::size_t>(std::bit_width(j)) - first_bits;
        return *m_extra[segment][j - (first_extra << segment)];
    }

    // The single writer only.
    worker& append() {
        const std::size_t i = m_size.load(std::memory_order_relaxed);
        const std::size_t j = i - m_base + first_extra;
        const auto segment = static_cast<std::size_t>(std::bit_width(j)) - first_bits;
        if (segment >= max_segments)
            throw std::length_error("triad::thread_pool: too many stand-in threads");
        if (!m_extra[segment])
            m_extra[segment] = std::make_unique<std::unique_ptr<worker>[]>(first_extra << segment);
        auto& slot = m_extra[segment][j - (first_extra << segment)];
        slot = std::make_unique<worker>(i, true);
        m_size.store(i + 1, std::memory_order_release);
        return *slot;
    }

private:
    static constexpr std::size_t first_extra = 16; // the first stand-in segment's capacity
    static constexpr std::size_t first_bits = 5;   // std::bit_width(first_extra)
    static constexpr std::size_t max_segments = 40;

    std::size_t m_base;
    std::unique_ptr<std::unique_ptr<worker>[]> m_first;
    std::unique_ptr<std::unique_ptr<worker>[]> m_extra[max_segments];
    std::atomic<std::size_t> m_size{0};
};

struct scheduler_config {
    std::size_t threads = 1;
    std::string name_prefix = "triad";
    unique_function<void(std::size_t)> initializer;
    unique_function<void(std::exception_ptr)> on_error;
    std::chrono::nanoseconds idle_spin = std::chrono::microseconds(5);
};

// What admit() hands to push(): the wait_idle generation and, during a drain, the scope.
struct admission {
    std::uint8_t epoch = 0;
    bool external = false; // counted in scheduler::m_submitted, not by a worker
    drain_scope* scope = nullptr;
};

inline thread_local worker* tls_worker = nullptr;
inline thread_local scheduler* tls_scheduler = nullptr;

// The engine under triad::thread_pool: per-worker Chase-Lev deques, an injection stack for
// submissions from other threads, work stealing, sleeping with a short spin, work-helping waits
// with stand-in threads for waits that must block, counters, and the drain/cancel protocol.
//
// Submission is counted before the pool's closed flag is read, and shutdown sets the flag before
// it waits for done == submitted, so a racing submit is either refused or waited for, never lost.
class scheduler final : public wait_helper, public error_sink {
public:
    explicit scheduler(scheduler_config config);
    ~scheduler();
    scheduler(const scheduler&) = delete;
    scheduler& operator=(const scheduler&) = delete;

    std::size_t size() const noexcept { return m_workers.base(); }

    // Counts `count` submissions or throws pool_closed. Must be followed by push() of exactly
    // `count` tasks with the admission it returns, or by refuse() if making them failed.
    admission admit(std::size_t count);
    void refuse(std::size_t count, const admission& a) noexcept;
    // Queues admitted tasks, linked through m_next from newest to oldest, and wakes workers.
    void push(task_node* newest, task_node* oldest, std::size_t count, const admission& a) noexcept;

    // Returns false if the deadline (if any) passed first.
    bool wait_idle_until(const steady_time* deadline);
    void shutdown(bool cancel);
    bool is_own_thread() const noexcept { return tls_scheduler == this; }
    // Made by another process, which forked this one: its threads are that process's.
    bool is_inherited() const noexcept { return ::getpid() != m_owner_pid; }
    bool is_closed() const noexcept { return m_closed.load(std::memory_order_acquire); }

    std::uint64_t queued() const noexcept;
    std::uint64_t running() const noexcept;
    std::uint64_t completed() const noexcept;
    std::uint64_t cancelled() const noexcept;
    std::size_t stand_ins() const noexcept {
        return m_active_stand_ins.load(std::memory_order_relaxed);
    }

    // For tasks whose exception has no future to go to.
    static void report_task_error(std::exception_ptr error) noexcept;
    void report(std::exception_ptr error) noexcept override { report_error(std::move(error)); }

    bool help_until(wait_slot& slot, const steady_time* deadline) override;
    bool run_if_next(wait_slot& slot) noexcept override;

private:
    // A wait that must block starts a stand-in only if it is still blocked after this long: most
    // waits end sooner, and a thread costs tens of microseconds to start.
    static constexpr auto stand_in_delay = std::chrono::microseconds(100);
    // Stand-ins for timed waits, which cannot deadlock, stop here (a timed wait past it just
    // blocks); untimed waits that ran out of stack always get theirs.
    std::size_t optional_stand_in_limit() const noexcept {
        return std::max<std::size_t>(256, 4 * m_workers.base());
    }

    struct idle_waiter {
        parker* waiter;
        idle_waiter* next = nullptr;
        idle_waiter* prev = nullptr;
    };

    void start_thread(worker& w);
    void thread_main(worker& w);
    void run_worker(worker& self);
    void execute(worker& self, task_node* task) noexcept;
    task_node* find_task(worker& self) noexcept;
    task_node* steal(worker& self) noexcept;
    task_node* spin_for_task(worker& self, const wait_slot* slot) noexcept;
    // Whether any task is queued; if one is in a deque and `self` is given, remembers that
    // deque as self's next victim.
    bool has_visible_work(worker* self = nullptr) const noexcept;
    void announce_sleep(worker& self) noexcept;
    // False if a waker took the announcement (and so meant its wake-up for this thread).
    bool retract_sleep(worker& self) noexcept;
    void pass_on_wake() noexcept;
    void wake_one() noexcept;
    void wake_for(std::size_t count) noexcept;

    bool block_with_stand_in(wait_slot& slot, const steady_time* deadline);
    void call_stand_in(bool required);
    void end_block() noexcept;
    bool is_surplus_stand_in() const noexcept {
        return m_active_stand_ins.load(std::memory_order_seq_cst) >
               m_blocked.load(std::memory_order_seq_cst);
    }
    // True if the thread should exit (the pool is stopping).
    bool retire_stand_in(worker& self);

    bool is_idle() const noexcept;
    bool is_drained(unsigned epoch) const noexcept;
    void wake_idle_waiters() noexcept;
    template <class Condition>
    bool wait_until(Condition condition, const steady_time* deadline);
    void stop_and_join() noexcept;
    void name_thread(std::size_t index) const noexcept;
    void report_error(std::exception_ptr error) noexcept;
    std::uint64_t sum(std::atomic<std::uint64_t> worker::*counter) const noexcept;
    std::uint64_t sum_done(unsigned epoch) const noexcept;
    // Submissions of both kinds (from outside and from the pool's own threads), per generation.
    std::uint64_t sum_submitted(unsigned epoch) const noexcept;

    scheduler_config m_config;
    const pid_t m_owner_pid = ::getpid();                      // the process its threads run in
    const std::uint64_t m_trace_serial = trace::next_serial(); // its lanes' names
    worker_table m_workers;
    injection_stack m_injection;
    // Submissions from threads outside the pool; the workers count their own (worker::m_submitted).
    alignas(cache_line) std::atomic<std::uint64_t> m_submitted[2] = {};
    // Of those, how many were pushed or refused: the submitting thread's last touch of the
    // pool. A task may drop the pool's last owner before its submitter's push() returns (the
    // pool's owner moved into the task); the engine is freed only once this catches up.
    std::atomic<std::uint64_t> m_external_left{0};
    std::atomic<std::uint64_t> m_refused[2] = {};
    std::atomic<std::uint64_t> m_epoch{0};
    alignas(cache_line) std::atomic<std::size_t> m_sleepers{0};
    std::atomic<std::size_t> m_wake_cursor{0};
    alignas(cache_line) std::atomic<bool> m_closed{false};
    std::atomic<bool> m_cancelling{false};
    std::atomic<bool> m_stop{false};
    // wait_idle and the drain
    std::atomic<std::size_t> m_idle_waiter_count{0};
    std::mutex m_idle_mutex;
    idle_waiter* m_idle_waiters = nullptr;
    // One wait_idle at a time runs the generation protocol (not a std::timed_mutex: its timed
    // lock is invisible to ThreadSanitizer, which then reports every unlock).
    std::atomic<bool> m_epoch_busy{false};
    // Stand-ins. m_blocked counts workers blocked in a wait (from its first moment, so that a
    // thread that keeps blocking briefly still counts as unavailable); m_active_stand_ins, which
    // changes under m_stand_in_mutex, the stand-ins not parked as spares. Stand-ins read both
    // without the mutex to decide whether they are still needed.
    std::mutex m_stand_in_mutex;
    std::atomic<std::size_t> m_blocked{0};
    std::atomic<std::size_t> m_active_stand_ins{0};
    worker* m_spares = nullptr;
    // Start-up: the constructor waits here for every initializer.
    std::mutex m_start_mutex;
    std::condition_variable m_start_cv;
    std::size_t m_initialized = 0;
    std::exception_ptr m_init_error;
    std::size_t m_init_error_index = 0;
    std::mutex m_shutdown_mutex;
    bool m_joined = false;
};

// ---------------------------------------------------------------------------------------------
// Definitions

inline scheduler::scheduler(scheduler_config config)
    : m_config(std::move(config)),
      m_workers((m_config.threads == 0
                     ? throw std::invalid_argument(
                           "triad::thread_pool: the thread count must be at least 1")
                     : m_config.threads)) {
    (void)cancelled_error(); // made now, so that cancelling never allocates
    const bool has_initializer = static_cast<bool>(m_config.initializer);
    std::size_t launched = 0;
    try {
        for (; launched < m_workers.base(); ++launched)
            start_thread(m_workers[launched]);
    } catch (...) {
        // Could not start every thread: stop the ones that did start and report the failure.
        // Workers without a thread stay in the table (running threads may be scanning it); their
        // deques are empty and they never sleep, so nobody steals from or wakes them.
        if (has_initializer) {
            std::unique_lock lock(m_start_mutex);
            m_start_cv.wait(lock, [&] { return m_initialized == launched; });
        }
        stop_and_join();
        throw;
    }

    // The constructor waits for every initializer so that a failing one is reported here, and
    // so that no task can ever run on a thread whose initializer has not finished.
    if (has_initializer) {
        std::unique_lock lock(m_start_mutex);
        m_start_cv.wait(lock, [&] { return m_initialized == m_workers.base(); });
        if (m_init_error) {
            const std::exception_ptr error = m_init_error;
            const std::string message =
                concat("triad::thread_pool: the initializer threw on worker ", m_init_error_index,
                       ": ", describe_exception(error));
            lock.unlock();
            stop_and_join();
            try {
                std::rethrow_exception(error);
            } catch (...) {
                std::throw_with_nested(initializer_error(message));
            }
        }
    }
}

inline scheduler::~scheduler() {
    if (is_own_thread()) {
        std::fputs("triad::thread_pool: the pool's engine was destroyed on one of its own "
                   "threads; it cannot join the thread it is running on.\n",
                   stderr);
        std::abort();
    }
    shutdown(false);
    // Every task has run, so every submission was counted; wait out submitters still between
    // publishing their task and their last touch (nanoseconds, unless one is preempted).
    while (m_external_left.load(std::memory_order_acquire) !=
           m_submitted[0].load(std::memory_order_relaxed) +
               m_submitted[1].load(std::memory_order_relaxed))
        std::this_thread::yield();
}

inline void scheduler::start_thread(worker& w) {
    // The thread refers only to the pool and its slot, which outlive it (both are destroyed
    // after the thread is joined), never to the caller's stack.
    w.m_thread = std::thread([this, &w] { thread_main(w); });
}

inline std::uintptr_t stack_limit_of_this_thread() noexcept {
    pthread_attr_t attr;
    if (::pthread_getattr_np(::pthread_self(), &attr) != 0)
        return 0;
    void* low = nullptr;
    std::size_t size = 0;
    const int rc = ::pthread_attr_getstack(&attr, &low, &size);
    ::pthread_attr_destroy(&attr);
    if (rc != 0)
        return 0;
    // Keep a quarter of the stack (at least 128 KiB) for the task a helping wait runs on top.
    const std::size_t reserve = std::max<std::size_t>(std::size_t{128} << 10, size / 4);
    return reinterpret_cast<std::uintptr_t>(low) + std::min(reserve, size);
}

inline void scheduler::thread_main(worker& w) {
    tls_parker_override = w.m_parker;
    tls_worker = &w;
    tls_scheduler = this;
    tls_error_sink = this;
    w.m_stack_limit = stack_limit_of_this_thread();
    name_thread(w.m_index);
    trace::tls_lane = {.role = "thread_pool",
                       .serial = m_trace_serial,
                       .index = w.m_index,
                       .stand_in = w.m_stand_in};
    if (m_config.initializer) {
        std::exception_ptr error;
        try {
            m_config.initializer(w.m_index);
        } catch (...) {
            error = std::current_exception();
        }
        if (w.m_stand_in) {
            // Nobody waits for a stand-in's start; its failure goes where task errors go.
            if (error)
                report_error(error);
        } else {
            std::lock_guard lock(m_start_mutex);
            if (error && !m_init_error) {
                m_init_error = error;
                m_init_error_index = w.m_index;
            }
            ++m_initialized;
            m_start_cv.notify_all();
        }
    }
    test_point("worker_started");
    run_worker(w);
    flush_node_cache();
    tls_error_sink = nullptr;
    tls_scheduler = nullptr;
    tls_worker = nullptr;
    tls_parker_override = nullptr;
}

inline admission scheduler::admit(std::size_t count) {
    admission a;
    a.epoch = static_cast<std::uint8_t>(m_epoch.load(std::memory_order_relaxed) & 1);
    worker* const self = is_own_thread() ? tls_worker : nullptr;
    if (self != nullptr) {
        // A task forking: counted by its thread, no read-modify-write. Release, so that whoever
        // sees the task done (or its submitter done: the submitter finishes after this) sees it
        // submitted too. A worker that misses a concurrent shutdown's m_closed here submits as
        // before the shutdown: the task runs, and the drain waits for it (its submitter runs).
        self->m_submitted[a.epoch].store(
            self->m_submitted[a.epoch].load(std::memory_order_relaxed) + count,
            std::memory_order_release);
    } else {
        m_submitted[a.epoch].fetch_add(count, std::memory_order_seq_cst);
        a.external = true;
    }
    if (m_closed.load(std::memory_order_seq_cst)) {
        if (!is_own_thread()) {
            refuse(count, a);
            throw pool_closed("triad::thread_pool: cannot submit work after shutdown()");
        }
        // A task submitting during the drain: its subtasks are tied to it, and through it to
        // the root it descends from.
        if (execution* e = tls_worker->m_current) {
            if (e->own == nullptr) {
                e->own = new (std::nothrow) drain_scope();
                if (e->own == nullptr) {
                    refuse(count, a);
                    throw std::bad_alloc();
                }
                if (e->root != nullptr) {
                    e->root->add_ref();
                    e->own->root = e->root;
                }
            }
            a.scope = e->own;
        }
    }
    return a;
}

inline void scheduler::refuse(std::size_t count, const admission& a) noexcept {
    m_refused[a.epoch].fetch_add(count, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (m_idle_waiter_count.load(std::memory_order_relaxed) != 0)
        wake_idle_waiters();
    if (a.external)
        m_external_left.fetch_add(count, std::memory_order_release); // the last touch
}

inline void scheduler::push(task_node* newest, task_node* oldest, std::size_t count,
                            const admission& a) noexcept {
    for (task_node* node = newest;; node = node->m_next) {
        if (a.scope != nullptr)
            a.scope->add_ref();
        node->set_scope_and_epoch(a.scope, a.epoch);
        if (node == oldest)
            break;
    }
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
    if (a.external)
        m_external_left.fetch_add(count, std::memory_order_release); // the last touch
}

inline void scheduler::execute(worker& self, task_node* task) noexcept {
    const unsigned epoch = task->epoch();
    drain_scope* const scope = task->scope();
    // The drain rule, for work submitted from inside the pool during a drain: it starts while
    // the root it descends from (the pre-shutdown task) still runs, or while a task of the pool
    // is blocked in an untimed wait for its result (that task cannot finish before it; started
    // so, it is the root of what it submits). While the task that submitted it still runs, it
    // waits (requeued) for either. Otherwise no running task waits for it, so it is cancelled:
    // a task that re-posts itself forever cannot keep a drain (or the destructor) from ending,
    // and work can outlive the pre-shutdown tasks only by nesting untimed waits in running
    // tasks, that is, by not ending.
    bool cancel = m_cancelling.load(std::memory_order_relaxed);
    execution current{};
    if (scope != nullptr && !cancel) {
        if (scope->root->alive.load(std::memory_order_acquire)) {
            current.root = scope->root;
        } else if (!(task->m_result != nullptr && task->m_result->is_awaited())) {
            if (scope->alive.load(std::memory_order_acquire)) {
                // Its submitter may still wait for it: back in the queue, uncounted, and a
                // pause so that a worker with nothing else does not spin on it.
                m_injection.push(task);
                std::this_thread::sleep_for(std::chrono::microseconds(50));
                return;
            }
            cancel = true;
        }
    }
    worker::bump(self.m_started, std::memory_order_relaxed);
    execution* const outer = std::exchange(self.m_current, &current);
    bool ran = false;
    const std::int64_t traced_since = trace::span_start();
    {
        const trampoline_scope own_trampoline;
        ran = task->execute(cancel);
    }
    trace::record_since(ran ? "task" : "cancelled", "thread_pool", traced_since);
    self.m_current = outer;
    if (current.own != nullptr) {
        current.own->alive.store(false, std::memory_order_release);
        current.own->release();
    }
    if (scope != nullptr)
        scope->release();
    if (!ran)
        worker::bump(self.m_cancelled, std::memory_order_relaxed);
    worker::bump(self.m_done[epoch], std::memory_order_release);
    // A wait_idle in progress waits for the older generation; the last of it wakes the waiter.
    // (Without a fence here the waiter can miss this, so it also re-checks every millisecond.)
    if (m_idle_waiter_count.load(std::memory_order_relaxed) != 0 &&
        epoch != (m_epoch.load(std::memory_order_relaxed) & 1) && is_drained(epoch))
        wake_idle_waiters();
}

inline void scheduler::run_worker(worker& self) {
    tls_wait_helper = this;
    for (;;) {
        if (self.m_stand_in) {
            self.m_between_tasks.store(true, std::memory_order_seq_cst);
            if (is_surplus_stand_in() && self.m_deque.empty()) {
                if (retire_stand_in(self))
                    break;
                continue;
            }
        }
        task_node* task = find_task(self);
        if (task == nullptr) {
            std::atomic_thread_fence(std::memory_order_seq_cst);
            if (m_idle_waiter_count.load(std::memory_order_relaxed) != 0 && is_idle())
                wake_idle_waiters();
            task = spin_for_task(self, nullptr);
        }
        if (task != nullptr) {
            if (self.m_stand_in)
                self.m_between_tasks.store(false, std::memory_order_relaxed);
            execute(self, task);
            continue;
        }
        if (m_stop.load(std::memory_order_acquire))
            break;
        flush_node_cache();
        announce_sleep(self);
        if (has_visible_work(&self) || m_stop.load(std::memory_order_seq_cst)) {
            retract_sleep(self);
            continue;
        }
        self.m_parker->park();
        retract_sleep(self);
    }
    tls_wait_helper = nullptr;
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
            worker& victim = m_workers[(start + i) % n];
            if (&victim != &self)
                if (task_node* task = try_victim(victim))
                    return task;
        }
        return nullptr;
    }
    for (std::size_t probe = 0; probe < full_scan_limit; ++probe) {
        worker& victim = m_workers[self.next_random() % n];
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
    const std::size_t n = m_workers.size();
    for (std::size_t i = 0; i < n; ++i) {
        worker& w = m_workers[i];
        if (!w.m_deque.empty()) {
            if (self != nullptr)
                self->m_victim_hint = &w;
            return true;
        }
    }
    return false;
}

inline void scheduler::announce_sleep(worker& self) noexcept {
    self.m_sleeping.store(true, std::memory_order_relaxed);
    m_sleepers.fetch_add(1, std::memory_order_seq_cst);
}

inline bool scheduler::retract_sleep(worker& self) noexcept {
    if (self.m_sleeping.exchange(false, std::memory_order_acq_rel)) {
        m_sleepers.fetch_sub(1, std::memory_order_relaxed);
        return true;
    }
    return false;
}

// A thread that was woken for new work but goes back to something else hands the wake-up on, so
// the work does not wait while another worker sleeps.
inline void scheduler::pass_on_wake() noexcept {
    if (m_sleepers.load(std::memory_order_seq_cst) != 0 && has_visible_work())
        wake_one();
}

inline void scheduler::wake_one() noexcept {
    const std::size_t n = m_workers.size();
    const std::size_t start = m_wake_cursor.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t i = 0; i < n; ++i) {
        worker& w = m_workers[(start + i) % n];
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

inline bool scheduler::help_until(wait_slot& slot, const steady_time* deadline) {
    worker* self = tls_worker;
    if (self == nullptr || tls_scheduler != this)
        return slot.block_until(deadline);
    // A timed wait never runs other tasks: it could not stop one at its deadline. It cannot
    // deadlock either, so it blocks, and a stand-in keeps the pool's parallelism meanwhile.
    if (deadline != nullptr)
        return block_with_stand_in(slot, deadline);
    // A wake-up meant for new work that this thread took but did not use goes on to another
    // sleeper, on every way out, so the work does not wait while another worker sleeps.
    struct owed_wake {
        scheduler* pool;
        bool owed = false;
        ~owed_wake() {
            if (owed)
                pool->pass_on_wake();
        }
    } wake{this};
    for (;;) {
        if (slot.is_ready())
            return true;
        // Helping nests tasks on this stack. When what is left is the reserve, block instead;
        // a stand-in thread takes this one's place, so the wait still cannot deadlock.
        if (reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0)) < self->m_stack_limit)
            return block_with_stand_in(slot, nullptr);
        task_node* task = find_task(*self);
        if (task == nullptr)
            task = spin_for_task(*self, &slot);
        if (task != nullptr) {
            wake.owed = false; // the wake-up, if any, found its work
            execute(*self, task);
            continue;
        }
        if (slot.is_ready())
            return true;
        // Sleep until the slot is set or new work arrives, whichever comes first.
        if (!slot.try_register_waiter(*self->m_parker))
            return true;
        flush_node_cache();
        announce_sleep(*self);
        if (!has_visible_work(self))
            self->m_parker->park();
        if (!retract_sleep(*self))
            wake.owed = true;
        if (!slot.deregister_waiter())
            return true;
    }
}

// What help_until's first turn would do, without counting the wait: pop the newest task of this
// worker's deque and, if it is the one that completes `slot`, run it. Only a task outside the
// drain rule (no scope): execute() asks whether somebody waits for a task only when it has one,
// and then the wait must have been counted. Any other task goes back where it was (the bottom:
// nothing moved), and the wait takes the usual way.
inline bool scheduler::run_if_next(wait_slot& slot) noexcept {
    worker* self = tls_worker;
    if (self == nullptr || tls_scheduler != this)
        return false;
    if (reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0)) < self->m_stack_limit)
        return false; // help_until blocks instead, with a stand-in
    task_node* task = self->m_deque.pop();
    if (task == nullptr)
        return false;
    if (task->m_result != &slot || task->scope() != nullptr) {
        try {
            self->m_deque.push(task); // cannot grow: its place was just freed
        } catch (...) {
            m_injection.push(task);
        }
        // Out of the deque for a moment: a worker that looked then and went to sleep is woken.
        if (m_sleepers.load(std::memory_order_seq_cst) != 0)
            wake_for(1);
        return false;
    }
    execute(*self, task);
    return true;
}

inline bool scheduler::block_with_stand_in(wait_slot& slot, const steady_time* deadline) {
    flush_node_cache();
    // Counted as blocked from now: a thread that blocks again and again, briefly, is not free to
    // run tasks either.
    m_blocked.fetch_add(1, std::memory_order_seq_cst);
    struct unblock {
        scheduler* pool;
        ~unblock() { pool->end_block(); }
    } guard{this};
    const bool covered = m_active_stand_ins.load(std::memory_order_seq_cst) >=
                         m_blocked.load(std::memory_order_seq_cst);
    if (!covered) {
        steady_time first = std::chrono::steady_clock::now() + stand_in_delay;
        if (deadline != nullptr && *deadline < first)
            first = *deadline;
        if (slot.block_until(&first))
            return true;
        if (deadline != nullptr && std::chrono::steady_clock::now() >= *deadline)
            return false;
        // An untimed wait must have its stand-in (or it might wait for itself); a timed one
        // only benefits from it.
        call_stand_in(deadline == nullptr);
    }
    return slot.block_until(deadline);
}

// Makes sure there are as many active stand-ins as blocked workers: a spare is woken, or a thread
// started. With `required`, failing to start one throws (the wait might otherwise deadlock);
// otherwise the wait just blocks.
inline void scheduler::call_stand_in(bool required) {
    if (m_active_stand_ins.load(std::memory_order_seq_cst) >=
        m_blocked.load(std::memory_order_seq_cst))
        return; // covered already (checked again under the mutex before acting)
    std::lock_guard lock(m_stand_in_mutex);
    if (m_stop.load(std::memory_order_relaxed))
        return;
    const std::size_t active = m_active_stand_ins.load(std::memory_order_relaxed);
    if (active >= m_blocked.load(std::memory_order_seq_cst))
        return; // a stand-in already covers this block
    if (worker* spare = m_spares) {
        m_spares = spare->m_next_spare;
        spare->m_state = worker::stand_in_state::active;
        m_active_stand_ins.fetch_add(1, std::memory_order_relaxed);
        spare->m_parker->unpark();
        return;
    }
    if (!required && active >= optional_stand_in_limit())
        return;
    try {
        worker& slot = m_workers.append();
        slot.m_state = worker::stand_in_state::active;
        m_active_stand_ins.fetch_add(1, std::memory_order_relaxed);
        try {
            start_thread(slot);
        } catch (...) {
            // The slot stays, a spare without a thread, which nobody wakes.
            m_active_stand_ins.fetch_sub(1, std::memory_order_relaxed);
            slot.m_state = worker::stand_in_state::spare;
            throw;
        }
    } catch (...) {
        if (required)
            throw;
    }
}

inline void scheduler::end_block() noexcept {
    m_blocked.fetch_sub(1, std::memory_order_seq_cst);
    // A surplus stand-in retires at its next turn between tasks. One that is between tasks now
    // (asleep, or about to be) gets a token so it notices: it wakes, or its next park returns.
    // Stand-ins inside tasks (blocked themselves, say) are left alone; they look on their own.
    if (m_active_stand_ins.load(std::memory_order_relaxed) <=
        m_blocked.load(std::memory_order_relaxed))
        return;
    const std::size_t n = m_workers.size();
    for (std::size_t i = m_workers.base(); i < n; ++i) {
        worker& w = m_workers[i];
        if (w.m_between_tasks.load(std::memory_order_seq_cst))
            w.m_parker->unpark();
    }
}

// Stand-ins are not retired for good: a spare parks until it is needed again or the pool stops
// (so no thread is ever joined while the pool runs, and a blocked wait never waits for a thread
// to exit). At most optional_stand_in_limit() of them serve timed waits.
inline bool scheduler::retire_stand_in(worker& self) {
    {
        std::lock_guard lock(m_stand_in_mutex);
        if (m_active_stand_ins.load(std::memory_order_relaxed) <=
            m_blocked.load(std::memory_order_seq_cst))
            return false; // needed again meanwhile
        m_active_stand_ins.fetch_sub(1, std::memory_order_relaxed);
        self.m_state = worker::stand_in_state::spare;
        self.m_next_spare = m_spares;
        m_spares = &self;
        self.m_between_tasks.store(false, std::memory_order_relaxed); // end_block leaves spares be
    }
    // If a wake-up for work brought this thread here, another sleeper gets it.
    pass_on_wake();
    flush_node_cache();
    for (;;) {
        {
            std::lock_guard lock(m_stand_in_mutex);
            if (self.m_state == worker::stand_in_state::active)
                return false; // woken by call_stand_in
            if (m_stop.load(std::memory_order_relaxed))
                return true;
        }
        self.m_parker->park();
    }
}

inline std::uint64_t scheduler::sum(std::atomic<std::uint64_t> worker::*counter) const noexcept {
    std::uint64_t total = 0;
    const std::size_t n = m_workers.size();
    for (std::size_t i = 0; i < n; ++i)
        total += (m_workers[i].*counter).load(std::memory_order_acquire);
    return total;
}

inline std::uint64_t scheduler::sum_done(unsigned epoch) const noexcept {
    std::uint64_t total = 0;
    const std::size_t n = m_workers.size();
    for (std::size_t i = 0; i < n; ++i)
        total += m_workers[i].m_done[epoch].load(std::memory_order_acquire);
    return total;
}

inline std::uint64_t scheduler::sum_submitted(unsigned epoch) const noexcept {
    std::uint64_t total = m_submitted[epoch].load(std::memory_order_seq_cst);
    const std::size_t n = m_workers.size();
    for (std::size_t i = 0; i < n; ++i)
        total += m_workers[i].m_submitted[epoch].load(std::memory_order_acquire);
    return total;
}

// Done counts are read before submitted counts: both only grow and a task is counted as
// submitted before it can be done, so equality means there was an instant with none left.
// A task submitted by a worker is counted by that worker, and its submitter finishes after the
// count (release): a live task's submission is visible unless its submitter is live too and
// seen as not done, and so on up to a task submitted from outside, which the shared counter
// shows; so a live task always leaves submitted above done.
inline bool scheduler::is_drained(unsigned epoch) const noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const std::uint64_t done = m_refused[epoch].load(std::memory_order_acquire) + sum_done(epoch);
    return done == sum_submitted(epoch);
}

inline bool scheduler::is_idle() const noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const std::uint64_t done = m_refused[0].load(std::memory_order_acquire) +
                               m_refused[1].load(std::memory_order_acquire) + sum_done(0) +
                               sum_done(1);
    return done == sum_submitted(0) + sum_submitted(1);
}

inline void scheduler::wake_idle_waiters() noexcept {
    std::lock_guard lock(m_idle_mutex);
    for (idle_waiter* w = m_idle_waiters; w != nullptr; w = w->next)
        w->waiter->unpark();
}

template <class Condition>
bool scheduler::wait_until(Condition condition, const steady_time* deadline) {
    // A continuation deferred on this thread may be what the pool is waiting for.
    run_deferred_continuations();
    // A parker of its own on the stack, not the thread's: nothing to allocate, so shutdown (and
    // the destructor) cannot fail for lack of memory. Wakers reach it only through the list,
    // under the mutex, and it leaves the list before it goes.
    parker own;
    idle_waiter self{&own};
    {
        std::lock_guard lock(m_idle_mutex);
        self.next = m_idle_waiters;
        if (m_idle_waiters != nullptr)
            m_idle_waiters->prev = &self;
        m_idle_waiters = &self;
        m_idle_waiter_count.fetch_add(1, std::memory_order_seq_cst);
    }
    struct unregister {
        scheduler* pool;
        idle_waiter* self;
        ~unregister() {
            std::lock_guard lock(pool->m_idle_mutex);
            if (self->prev != nullptr)
                self->prev->next = self->next;
            else
                pool->m_idle_waiters = self->next;
            if (self->next != nullptr)
                self->next->prev = self->prev;
            pool->m_idle_waiter_count.fetch_sub(1, std::memory_order_relaxed);
        }
    } guard{this, &self};
    for (;;) {
        if (condition())
            return true;
        const steady_time now = std::chrono::steady_clock::now();
        if (deadline != nullptr && now >= *deadline)
            return false;
        // Workers wake waiters when the pool goes idle (with a fence) and when the last task of
        // a generation ends (without one, to keep it off every task's path): the timed park
        // covers the rare wake-up that the second can miss.
        steady_time until = now + std::chrono::milliseconds(1);
        if (deadline != nullptr && *deadline < until)
            until = *deadline;
        self.waiter->park_until(until);
    }
}

// wait_idle means "every task submitted before the call has finished", also under a producer
// that never stops. Tasks carry one of two generation bits: new submissions go to the current
// one. The waiter lets the other (older) generation drain, flips, so that new submissions go to
// that drained one, then lets the generation of its own call drain: neither receives new work
// while it is waited for, so the wait ends.
inline bool scheduler::wait_idle_until(const steady_time* deadline) {
    if (is_own_thread())
        throw std::logic_error("triad::thread_pool::wait_idle: called from one of the pool's own "
                               "tasks, it would wait for itself; wait on futures instead");
    const bool locked = wait_until(
        [this] {
            bool expected = false;
            return m_epoch_busy.compare_exchange_strong(expected, true, std::memory_order_acquire);
        },
        deadline);
    if (!locked)
        return false;
    struct unlock {
        scheduler* pool;
        ~unlock() {
            pool->m_epoch_busy.store(false, std::memory_order_release);
            pool->wake_idle_waiters();
        }
    } guard{this};
    const std::uint64_t epoch = m_epoch.load(std::memory_order_relaxed);
    const auto current = static_cast<unsigned>(epoch & 1);
    if (!wait_until([&] { return is_drained(current ^ 1); }, deadline))
        return false;
    m_epoch.store(epoch + 1, std::memory_order_seq_cst);
    return wait_until([&] { return is_drained(current); }, deadline);
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
    wait_until([this] { return is_idle(); }, nullptr);
    stop_and_join();
}

inline void scheduler::stop_and_join() noexcept {
    m_closed.store(true, std::memory_order_seq_cst);
    {
        std::lock_guard lock(m_stand_in_mutex);
        m_stop.store(true, std::memory_order_seq_cst);
    }
    // Stand-ins can only be added under the mutex, which sees m_stop now: the table is final.
    const std::size_t n = m_workers.size();
    for (std::size_t i = 0; i < n; ++i)
        m_workers[i].m_parker->unpark();
    for (std::size_t i = 0; i < n; ++i)
        if (m_workers[i].m_thread.joinable())
            m_workers[i].m_thread.join();
    // Stand-ins that left on the stop signal, not through retirement, are gone too.
    m_active_stand_ins.store(0, std::memory_order_relaxed);
    m_joined = true;
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
            // Moved in: the handler may hand it to another thread, and a copy this worker
            // dropped afterwards would free the exception there (see shared_state::set_error).
            m_config.on_error(std::move(error));
            return;
        } catch (...) {
            report_to_stderr("triad::thread_pool: the on_error handler threw",
                             std::current_exception());
        }
    }
    report_to_stderr("triad::thread_pool: a task threw and nobody could receive it", error);
}

inline void scheduler::report_task_error(std::exception_ptr error) noexcept {
    if (scheduler* owner = tls_scheduler)
        owner->report_error(std::move(error));
    else
        report_to_stderr("triad: a task threw", error);
}

// Each snapshot reads the counter that trails first, so a difference never goes negative.
inline std::uint64_t scheduler::queued() const noexcept {
    const std::uint64_t started = sum(&worker::m_started);
    const std::uint64_t refused =
        m_refused[0].load(std::memory_order_acquire) + m_refused[1].load(std::memory_order_acquire);
    const std::uint64_t submitted = sum_submitted(0) + sum_submitted(1);
    return submitted > started + refused ? submitted - started - refused : 0;
}

inline std::uint64_t scheduler::running() const noexcept {
    const std::uint64_t done = sum_done(0) + sum_done(1);
    const std::uint64_t started = sum(&worker::m_started);
    return started > done ? started - done : 0;
}

inline std::uint64_t scheduler::completed() const noexcept {
    const std::uint64_t cancelled_count = sum(&worker::m_cancelled);
    const std::uint64_t done = sum_done(0) + sum_done(1);
    return done > cancelled_count ? done - cancelled_count : 0;
}

inline std::uint64_t scheduler::cancelled() const noexcept {
    return sum(&worker::m_cancelled);
}

} // namespace triad::detail
