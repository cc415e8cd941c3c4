#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <triad/detail/exception_info.hpp>
#include <triad/detail/text.hpp>
#include <triad/detail/trace.hpp>
#include <triad/detail/wait_slot.hpp>
#include <triad/errors.hpp>

namespace triad::detail {

// --- resumption --------------------------------------------------------------------------------
// Awaiting a task hands control over by symmetric transfer (await_suspend returns the next
// coroutine), which is meant to be a tail call, so chains of any depth run in constant stack.
// Compilers do not always make it one: GCC only with -foptimize-sibling-calls (on from -O2, off
// at -O0, -O1 and -Og; GCC bug 100897), and nothing tells a header which it is. So every
// resumption goes through resume(), which notes where the stack stood; a transfer made more
// than transfer_stack_limit below that point is not made there but handed back to resume(),
// which makes it from the top again. Where the transfer is a tail call the stack never grows
// and this costs a thread-local load, a subtraction and a compare, with no store (a counter
// would chain every transfer to the last through memory). Clang makes every symmetric transfer
// a tail call, at every level (and under the sanitizers): there the check is left out.
#if defined(__clang__)
inline constexpr bool transfers_may_nest = false;
#else
inline constexpr bool transfers_may_nest = true;
#endif
inline constexpr std::intptr_t transfer_stack_limit = 64 * 1024;

inline thread_local std::coroutine_handle<> tls_next_transfer;
// Where the innermost resume() found the stack, or 0 outside one: the stack lies far above 0,
// so no transfer there seems deep.
inline thread_local std::intptr_t tls_resume_stack = 0;
// True while a resume() runs on this thread: it makes the transfers handed back to it, and
// starts what a start list (below) holds. Without one (a coroutine of another kind resumed by
// plain handle.resume()) a combinator starts its children itself.
inline thread_local bool tls_resuming = false;

// Where the stack stands: read from the register, as __builtin_frame_address would make GCC
// keep a frame pointer in every coroutine that transfers.
[[gnu::always_inline]] inline std::intptr_t stack_position() noexcept {
#if defined(__x86_64__)
    std::intptr_t sp;
    __asm__("mov %%rsp, %0" : "=r"(sp));
    return sp;
#elif defined(__aarch64__)
    std::intptr_t sp;
    __asm__("mov %0, sp" : "=r"(sp));
    return sp;
#else
    return reinterpret_cast<std::intptr_t>(__builtin_frame_address(0));
#endif
}

[[gnu::cold, gnu::noinline]] inline std::coroutine_handle<>
transfer_from_deep(std::coroutine_handle<> next) noexcept {
    // Only one transfer can wait for resume(): a second one, which only a coroutine resumed by
    // other code than resume() can make, is made here.
    if (tls_next_transfer)
        return next;
    tls_next_transfer = next;
    return std::noop_coroutine();
}

// What an await_suspend (or a final suspension) returns to hand control to `next`.
inline std::coroutine_handle<> transfer(std::coroutine_handle<> next) noexcept {
    if constexpr (transfers_may_nest) {
        // (The stack grows down.)
        if (tls_resume_stack - stack_position() > transfer_stack_limit) [[unlikely]]
            return transfer_from_deep(next);
    }
    return next;
}

// --- children started one after the other -----------------------------------------------------
// A combinator that starts several children (gather, when_any) must not start them with nested
// resume() calls: a recursion through it would then nest native frames at every level, however
// the transfers are made. It hands the first child over by symmetric transfer and leaves the
// rest on this thread's stack of start lists; each time the chain resume() runs has suspended,
// resume() takes the next child from the top list and starts it from its own frame. So the
// children start in order, each to its first suspension, before anything else runs (as nested
// calls would have it), and a recursion through them of any depth runs in constant stack.
struct start_list {
    // The next coroutine to run: a child, or the combinator's awaiting coroutine once every
    // child has finished, or null. Pops the list (tls_starts = below) when no child is left.
    std::coroutine_handle<> (*next)(start_list* self) noexcept = nullptr;
    void* owner = nullptr;
    start_list* below = nullptr;
};

inline thread_local start_list* tls_starts = nullptr;

// What a start list above `base` has to run next, or null.
inline std::coroutine_handle<> next_start(const start_list* base) noexcept {
    std::coroutine_handle<> h;
    while (!h && tls_starts != base)
        h = tls_starts->next(tls_starts);
    return h;
}

// A coroutine of another kind whose unhandled_exception() rethrows lets the exception out of
// resume(). Whatever awaits it (a task, suspended in that await) can then never be resumed, nor
// cancelled, nor destroyed by run(), which would wait for it for ever: the program ends here,
// with the reason and (from the terminate handler) the exception.
[[noreturn, gnu::cold, gnu::noinline]] inline void exception_out_of_resume() noexcept {
    std::fputs("triad: an exception escaped from a coroutine's resume() (a coroutine of another "
               "kind whose unhandled_exception() rethrows?). What awaits that coroutine can never "
               "be resumed, so the program ends here. Catch the exception in the coroutine, or "
               "store it and rethrow it from await_resume().\n",
               stderr);
    std::fflush(stderr);
    std::terminate();
}

// Resumes `h` (if any) and everything it transfers to, and starts what the start lists pushed
// above `base` hold. Lists below `base` belong to a resume() further out, whose chain is still
// running (this one is nested in it): their children start when that chain has suspended.
// What a resume() sets up for the chains it runs, and puts back when it ends.
class resume_scope {
public:
    resume_scope() noexcept : m_resuming(std::exchange(tls_resuming, true)) {
        if constexpr (transfers_may_nest) {
            m_next = std::exchange(tls_next_transfer, nullptr);
            m_top = std::exchange(tls_resume_stack, stack_position());
        }
    }
    resume_scope(const resume_scope&) = delete;
    resume_scope& operator=(const resume_scope&) = delete;
    ~resume_scope() {
        if constexpr (transfers_may_nest) {
            tls_resume_stack = m_top;
            tls_next_transfer = m_next;
        }
        tls_resuming = m_resuming;
    }

    // Runs `h` (if any) and everything it transfers to, then what the start lists above `base`
    // hold.
    static void run_chain(std::coroutine_handle<> h, const start_list* base) noexcept {
        try {
            if (!h)
                h = next_start(base);
            while (h) {
                h.resume();
                if constexpr (transfers_may_nest)
                    h = std::exchange(tls_next_transfer, nullptr);
                else
                    h = nullptr;
                if (!h)
                    h = next_start(base);
            }
        } catch (...) {
            exception_out_of_resume();
        }
    }

private:
    bool m_resuming;
    std::coroutine_handle<> m_next;
    std::intptr_t m_top = 0;
};

inline void resume_above(std::coroutine_handle<> h, const start_list* base) {
    // One span per resumption from outside a resume (an I/O completion, a timer); a resume
    // nested in one is part of its span.
    const std::int64_t traced_since = tls_resuming ? 0 : trace::span_start();
    {
        const resume_scope scope;
        resume_scope::run_chain(h, base);
    }
    if (traced_since != 0)
        trace::record("resume",
                      trace::tls_lane.role != nullptr ? trace::tls_lane.role : "coroutine",
                      traced_since, trace::now_ns());
}

// Resumes `h` and everything it transfers to. Every resumption in triad goes through here.
inline void resume(std::coroutine_handle<> h) {
    resume_above(h, tls_starts);
}

// --- cancellation ------------------------------------------------------------------------------
[[noreturn, gnu::cold, gnu::noinline]] inline void throw_cancelled() {
    throw task_cancelled();
}

// Every running chain of tasks has one cancel_state (a task awaited by another shares its
// parent's). The suspension point a chain is waiting at registers a callback; cancelling runs
// it, which ends the wait and makes that suspension point throw task_cancelled. A request that
// arrives while the chain runs is delivered at its next suspension point. Delivery consumes the
// request, as in asyncio: code that catches task_cancelled may await again (to clean up).

class cancellable_wait;

// The request bit and the armed wait share one word: a promise carries one of these, and every
// sleeping task pays for it.
class cancel_state {
public:
    bool requested() const noexcept { return (m_bits & requested_bit) != 0; }
    bool take_request() noexcept {
        const bool was = requested();
        m_bits &= ~requested_bit;
        return was;
    }

    // Defined after cancellable_wait.
    void request() noexcept;

    void arm(cancellable_wait* wait) noexcept {
        m_bits = reinterpret_cast<std::uintptr_t>(wait) | (m_bits & requested_bit);
    }
    // The suspension point the chain waits at, if it is a cancellable one.
    cancellable_wait* armed() const noexcept {
        return reinterpret_cast<cancellable_wait*>(m_bits & ~requested_bit);
    }
    void disarm(const cancellable_wait* wait) noexcept {
        if (armed() == wait)
            m_bits &= requested_bit;
    }

private:
    static constexpr std::uintptr_t requested_bit = 1; // a wait is aligned: its low bit is free
    std::uintptr_t m_bits = 0;
};

// --- timers ------------------------------------------------------------------------------------
// Sleeping coroutines sit in one binary heap per loop, behind a single Asio timer armed for the
// earliest deadline: a sleeping task costs a heap slot, not an Asio timer and its allocations.

// An awaiter that sleeps derives from timer_node, and `fire` casts the node back to it.
struct timer_node {
    static constexpr std::size_t not_queued = static_cast<std::size_t>(-1);
    // The top bit of slot says the node is in the FIFO (a sequence number never gets there).
    static constexpr std::size_t fifo_bit = ~(not_queued >> 1);
    std::chrono::steady_clock::time_point deadline{};
    std::size_t slot = not_queued; // in the heap, or the sequence number in the FIFO
    void (*fire)(timer_node* self) noexcept = nullptr;
    bool queued() const noexcept { return slot != not_queued; }
    bool in_fifo() const noexcept { return queued() && (slot & fifo_bit) != 0; }
    std::size_t index() const noexcept { return slot & ~fifo_bit; }
};

class timer_heap {
public:
    bool empty() const noexcept { return m_nodes.empty(); }
    timer_node* top() const noexcept { return m_nodes.front(); }

    void push(timer_node* node) {
        node->slot = m_nodes.size();
        m_nodes.push_back(node);
        sift_up(node->slot);
    }

    void remove(timer_node* node) noexcept {
        const std::size_t i = node->slot;
        if (i == timer_node::not_queued)
            return;
        node->slot = timer_node::not_queued;
        timer_node* last = m_nodes.back();
        m_nodes.pop_back();
        if (last == node)
            return;
        m_nodes[i] = last;
        last->slot = i;
        sift_down(i);
        sift_up(last->slot);
    }

private:
    bool earlier(std::size_t a, std::size_t b) const noexcept {
        return m_nodes[a]->deadline < m_nodes[b]->deadline;
    }
    void swap_nodes(std::size_t a, std::size_t b) noexcept {
        std::swap(m_nodes[a], m_nodes[b]);
        m_nodes[a]->slot = a;
        m_nodes[b]->slot = b;
    }
    void sift_up(std::size_t i) noexcept {
        while (i > 0 && earlier(i, (i - 1) / 2)) {
            swap_nodes(i, (i - 1) / 2);
            i = (i - 1) / 2;
        }
    }
    void sift_down(std::size_t i) noexcept {
        for (;;) {
            std::size_t best = i;
            const std::size_t left = 2 * i + 1;
            const std::size_t right = left + 1;
            if (left < m_nodes.size() && earlier(left, best))
                best = left;
            if (right < m_nodes.size() && earlier(right, best))
                best = right;
            if (best == i)
                return;
            swap_nodes(i, best);
            i = best;
        }
    }

    std::vector<timer_node*> m_nodes;
};

// Timers that arrive in deadline order (every sleep of the same length does) go to a FIFO,
// where adding, firing and cancelling are O(1) and touch no other timer; the rest go to the
// heap. The earliest timer is the earlier of the two fronts.
class timer_queue {
public:
    bool empty() noexcept {
        trim();
        return m_fifo.empty() && m_heap.empty();
    }

    // Only when !empty().
    timer_node* top() noexcept {
        trim();
        if (m_fifo.empty())
            return m_heap.top();
        if (m_heap.empty() || m_fifo.front()->deadline <= m_heap.top()->deadline)
            return m_fifo.front();
        return m_heap.top();
    }

    void push(timer_node* node) {
        if (m_fifo.empty() || node->deadline >= m_fifo_last) {
            node->slot = (m_fifo_base + m_fifo.size()) | timer_node::fifo_bit;
            m_fifo.push_back(node);
            m_fifo_last = node->deadline;
        } else {
            m_heap.push(node);
        }
    }

    void remove(timer_node* node) noexcept {
        if (!node->queued())
            return;
        if (node->in_fifo()) {
            m_fifo[node->index() - m_fifo_base] = nullptr; // a tombstone, dropped at the front
            node->slot = timer_node::not_queued;
            // Cancelled timers behind a long one would otherwise stay until it fires: memory
            // would grow with the rate of timeouts times the longest wait. Once most of the
            // FIFO is tombstones, squeeze them out (amortized O(1) per removal).
            if (++m_tombstones > 64 && m_tombstones * 2 > m_fifo.size())
                compact();
        } else {
            m_heap.remove(node);
        }
    }

private:
    void trim() noexcept {
        while (!m_fifo.empty() && m_fifo.front() == nullptr) {
            m_fifo.pop_front();
            ++m_fifo_base;
            --m_tombstones;
        }
    }

    void compact() noexcept {
        std::size_t kept = 0;
        for (timer_node* node : m_fifo)
            if (node != nullptr) {
                node->slot = (m_fifo_base + kept) | timer_node::fifo_bit;
                m_fifo[kept++] = node;
            }
        m_fifo.resize(kept);
        m_tombstones = 0;
    }

    std::deque<timer_node*> m_fifo;
    std::size_t m_tombstones = 0; // nulls in m_fifo
    std::size_t m_fifo_base = 0;  // sequence number of m_fifo.front()
    std::chrono::steady_clock::time_point m_fifo_last{};
    timer_heap m_heap;
};

// --- coroutine frames ---------------------------------------------------------------------------
// Frames are allocated and freed at a high rate (a task per download, a million per gather);
// each thread keeps freed frames by size class for reuse. Under AddressSanitizer frames come
// straight from the heap, so it still sees every use after free (unless TRIAD_FRAME_CACHE is
// defined to 1, to test the cache itself).
#ifndef TRIAD_FRAME_CACHE
#if defined(__SANITIZE_ADDRESS__)
#define TRIAD_FRAME_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TRIAD_FRAME_CACHE 0
#endif
#endif
#endif
#ifndef TRIAD_FRAME_CACHE
#define TRIAD_FRAME_CACHE 1
#endif

class frame_cache;
// This thread's cache once it exists, and null again once it is destroyed at thread (or program)
// exit: a frame freed after that (a static loop's tasks, destroyed after main's thread_locals)
// goes straight to the heap. Trivially destructible, so it stays readable until the thread is
// gone; and one load tells the fast path everything.
inline thread_local frame_cache* tls_frame_cache = nullptr;
inline thread_local bool frame_cache_gone = false;

class frame_cache {
public:
    // Fine classes, each a whole malloc chunk: glibc's chunks are 16n bytes with an 8-byte
    // header, so class c holds frames of up to 16c - 8 bytes (a frame of 200 bytes takes a
    // 208-byte chunk; rounded up to 208 itself, it would take 224).
    static constexpr std::size_t granule = 16;
    static constexpr std::size_t header = sizeof(void*);
    static constexpr std::size_t classes = 64;      // frames up to 1 KiB are cached
    static constexpr std::size_t max_cached = 4096; // per class

    static std::size_t class_of(std::size_t size) noexcept {
        return (size + header + granule - 1) / granule;
    }

    static void* allocate(std::size_t size) {
        if constexpr (TRIAD_FRAME_CACHE) {
            const std::size_t c = class_of(size);
            if (c < classes) {
                frame_cache* cache = tls_frame_cache;
                if (cache == nullptr && !frame_cache_gone) [[unlikely]]
                    cache = &local();
                if (cache != nullptr) {
                    auto& list = cache->m_free[c];
                    if (!list.empty()) {
                        void* p = list.back();
                        list.pop_back();
                        return p;
                    }
                    return ::operator new(c* granule - header);
                }
            }
        }
        return ::operator new(size);
    }

    // A thread that has not allocated a frame yet has no cache, and frees to the heap.
    static void deallocate(void* p, std::size_t size) noexcept {
        if constexpr (TRIAD_FRAME_CACHE) {
            const std::size_t c = class_of(size);
            frame_cache* cache = tls_frame_cache;
            if (c < classes && cache != nullptr) {
                auto& list = cache->m_free[c];
                if (list.size() < max_cached) {
                    try {
                        list.push_back(p);
                        return;
                    } catch (...) {
                    }
                }
            }
        }
        ::operator delete(p);
    }

private:
    [[gnu::noinline]] static frame_cache& local() {
        thread_local frame_cache cache;
        return cache;
    }
    frame_cache() noexcept { tls_frame_cache = this; }
    ~frame_cache() {
        tls_frame_cache = nullptr;
        frame_cache_gone = true;
        for (auto& list : m_free)
            for (void* p : list)
                ::operator delete(p);
    }

    std::vector<void*> m_free[classes];
};

class promise_base;

// --- the loop ----------------------------------------------------------------------------------

// How another thread hands work to a loop: a post to its io_context for as long as the loop
// lives. The loop closes it first thing when it is destroyed, under the same lock a post holds,
// so a thread is never inside post() while the io_context goes, and never extends the loop's
// life (its destructor would then run on that thread).
class loop_gate {
public:
    explicit loop_gate(boost::asio::io_context& io) noexcept : m_io(&io) {}
    loop_gate(const loop_gate&) = delete;
    loop_gate& operator=(const loop_gate&) = delete;

    // False: the loop is gone, and `work` was not posted.
    template <class Work>
    bool post(Work&& work) {
        const std::lock_guard lock(m_mutex);
        if (m_io == nullptr)
            return false;
        boost::asio::post(*m_io, std::forward<Work>(work));
        return true;
    }
    // For a posted handler that a user's io_context may run after the loop is gone.
    bool open() const noexcept { return m_open.load(std::memory_order_acquire); }
    // Runs `fn` with the loop kept alive, if it still is.
    template <class Fn>
    bool if_open(Fn&& fn) {
        const std::lock_guard lock(m_mutex);
        if (m_io == nullptr)
            return false;
        std::forward<Fn>(fn)();
        return true;
    }
    void close() noexcept {
        const std::lock_guard lock(m_mutex);
        m_io = nullptr;
        m_open.store(false, std::memory_order_release);
    }

private:
    std::mutex m_mutex;
    boost::asio::io_context* m_io; // under m_mutex
    std::atomic<bool> m_open{true};
};

// The engine under triad::event_loop: Asio's io_context for I/O and cross-thread posts, plus a
// ready queue of coroutines and the timer heap, run on one thread.
class loop_core final : public wait_helper, public std::enable_shared_from_this<loop_core> {
public:
    // Called on the loop's thread when nothing at all could wake a task for `stall_timeout`
    // (see run_until); it only reports, the loop goes on waiting.
    using stall_fn = std::function<void(std::chrono::steady_clock::duration idle)>;

    // `io`: a user's io_context to run on, or null for one of its own.
    loop_core(boost::asio::io_context* io, std::function<void(std::exception_ptr)> on_unhandled)
        : m_own_io(io == nullptr ? std::make_unique<boost::asio::io_context>(1) : nullptr),
          m_io(io == nullptr ? *m_own_io : *io), m_gate(std::make_shared<loop_gate>(m_io)),
          m_timer(m_io), m_on_unhandled(std::move(on_unhandled)) {}
    loop_core(const loop_core&) = delete;
    loop_core& operator=(const loop_core&) = delete;

    boost::asio::io_context& io() noexcept { return m_io; }
    // What other threads post through (see loop_gate).
    const std::shared_ptr<loop_gate>& gate() const noexcept { return m_gate; }
    bool owns_io() const noexcept { return m_own_io != nullptr; }

    void set_stall_report(std::chrono::steady_clock::duration after, stall_fn report) {
        m_stall_after = after;
        m_on_stall = std::move(report);
    }

    // Loop thread only.
    void schedule(std::coroutine_handle<> h) { m_ready.push_back(h); }
    // For the list of tasks only: what waits to run, and the batch being run now (cleared once
    // it has all run, so it also holds frames that ran earlier in the batch).
    const std::vector<std::coroutine_handle<>>& ready() const noexcept { return m_ready; }
    const std::vector<std::coroutine_handle<>>& running() const noexcept { return m_running; }

    // If the Asio wait cannot be armed (std::bad_alloc), the timer is not added, and the wait
    // is armed again for the timers already there (the failed attempt cancelled it).
    void add_timer(timer_node* node) {
        m_timers.push(node);
        if (m_timers.top() != node)
            return;
        try {
            arm_timer();
        } catch (...) {
            m_timers.remove(node);
            m_timer_armed = false;
            if (!m_timers.empty()) {
                try {
                    arm_timer();
                } catch (...) { // armed by the next timer added, or reported as a stall
                    m_timer_armed = false;
                }
            }
            throw;
        }
    }
    // The Asio wait stays armed: the next timer (a timeout around each of many operations)
    // then usually needs no new one. It is cancelled once the loop goes idle (disarm_if_idle).
    void remove_timer(timer_node* node) noexcept { m_timers.remove(node); }
    // Before the loop blocks and when run ends: with nothing left to fire, a wait left armed
    // would keep the loop, the stall check and a user's io.run() waiting for a deadline nobody
    // needs.
    void disarm_if_idle() noexcept {
        if (m_timers.empty() && m_timer_armed) {
            m_timer_armed = false;
            try {
                m_timer.cancel();
            } catch (...) {
            }
        }
    }

    // A wait that another thread will end (a future of a pool): keeps the loop alive, since
    // Asio alone does not know about it.
    void begin_foreign_wait() {
        if (m_foreign_waits++ == 0)
            m_work.emplace(m_io.get_executor());
    }
    void end_foreign_wait() noexcept {
        if (--m_foreign_waits == 0)
            m_work.reset();
    }

    // Runs until `done()` is true. When nothing is ready and no timer, I/O operation or
    // registered wait could wake a task, it still waits, since a thread may post to the loop at
    // any time; after `stall_timeout` of that it reports (once per stall, then at doubling
    // intervals) and waits on. A report never changes what the loop does.
    template <class Done>
    void run_until(Done done);

    // Work that reached the loop's io_context while the loop was not running it (a user's
    // io_context run by the user between two runs), kept for the next run. Any thread.
    struct deferred_work {
        virtual ~deferred_work() = default;
        virtual void run() = 0;
    };
    void defer(std::unique_ptr<deferred_work> work) {
        const std::lock_guard lock(m_deferred_mutex);
        m_deferred.push_back(std::move(work));
    }
    // Loop thread, as run starts.
    void run_deferred() {
        std::vector<std::unique_ptr<deferred_work>> due;
        {
            const std::lock_guard lock(m_deferred_mutex);
            due.swap(m_deferred);
        }
        for (auto& work : due)
            work->run();
    }

    // Names given at spawn, kept aside for the few named tasks so that no frame pays for them.
    void set_name(promise_base* p, std::string name);
    const std::string* name_of(const promise_base* p) const noexcept {
        const auto it = m_names.find(p);
        return it == m_names.end() ? nullptr : &it->second;
    }

    void report_unhandled(std::exception_ptr error,
                          const char* what = "triad: exception in a spawned task that nobody "
                                             "awaited") noexcept {
        if (m_on_unhandled) {
            try {
                m_on_unhandled(error);
                return;
            } catch (...) {
                report_to_stderr("triad::event_loop: the unhandled-exception handler threw",
                                 std::current_exception());
            }
        }
        report_to_stderr(what, error);
    }

    // Spawned tasks still running, so the loop can cancel them when the main task is done.
    void track(promise_base* p);
    void untrack(promise_base* p) noexcept;
    // Spawned tasks that failed and are still held by a handle: if the last handle goes after
    // the loop, the failure is still reported (to stderr once the loop is gone).
    void hold(promise_base* p);
    void unhold(promise_base* p) noexcept;
    ~loop_core();
    const std::vector<promise_base*>& spawned() const noexcept { return m_spawned; }
    // While run() cancels what is left, a task spawned meanwhile is cancelled at once.
    void cancel_all_spawned(bool on) noexcept;
    bool cancelling_all() const noexcept { return m_cancelling_all; }

    // Blocking on a future in a coroutine would stall every task of the loop.
    bool help_until(wait_slot&, const steady_time*) override {
        throw std::logic_error("triad: a blocking wait (future::get or wait) on the event loop's "
                               "thread would stall every task; co_await the future instead");
    }

private:
    void arm_timer() {
        const auto deadline = m_timers.top()->deadline;
        if (m_timer_armed && m_armed_for <= deadline)
            return;
        m_timer_armed = true;
        m_armed_for = deadline;
        m_timer.expires_at(deadline); // cancels a later wait, whose handler then does nothing
        if (m_own_io) {
            m_timer.async_wait([this, deadline](const boost::system::error_code& error) {
                if (error || deadline != m_armed_for)
                    return;
                m_timer_armed = false;
                fire_timers();
            });
        } else {
            // A user's io_context outlives this loop, and may run the cancelled wait's handler
            // after it.
            m_timer.async_wait(
                [weak = weak_from_this(), deadline](const boost::system::error_code& error) {
                    const std::shared_ptr<loop_core> self = weak.lock();
                    if (error || !self || deadline != self->m_armed_for)
                        return;
                    self->m_timer_armed = false;
                    self->fire_timers();
                });
        }
    }

    // Nothing could wake a task but a post from another thread: wait for one, reporting the
    // stall meanwhile.
    void wait_for_outside() {
        const auto work = boost::asio::make_work_guard(m_io);
        auto step =
            std::min<std::chrono::steady_clock::duration>(m_stall_after, std::chrono::hours(24));
        const auto since = std::chrono::steady_clock::now();
        for (;;) {
            const bool report = m_on_stall && step > std::chrono::steady_clock::duration::zero();
            const std::size_t ran = report ? m_io.run_one_for(step) : m_io.run_one();
            if (ran != 0)
                return;
            if (m_io.stopped()) { // someone stopped the io_context: it runs again for us
                m_io.restart();
                continue;
            }
            if (report) {
                try {
                    m_on_stall(std::chrono::steady_clock::now() - since);
                } catch (...) { // a report never changes what the loop does
                    report_to_stderr("triad::event_loop: on_stall threw (the loop waits on)",
                                     std::current_exception());
                }
                if (!m_ready.empty())
                    return; // the report woke a task itself
                step =
                    std::min<std::chrono::steady_clock::duration>(2 * step, std::chrono::hours(24));
            }
        }
    }

    void fire_timers() {
        const auto now = std::chrono::steady_clock::now();
        while (!m_timers.empty() && m_timers.top()->deadline <= now) {
            timer_node* node = m_timers.top();
            m_timers.remove(node);
            node->fire(node);
        }
        if (!m_timers.empty())
            arm_timer();
    }

    std::unique_ptr<boost::asio::io_context> m_own_io;
    boost::asio::io_context& m_io;
    std::shared_ptr<loop_gate> m_gate;
    boost::asio::steady_timer m_timer;
    bool m_timer_armed = false;
    std::chrono::steady_clock::time_point m_armed_for{};
    timer_queue m_timers;
    std::vector<std::coroutine_handle<>> m_ready;
    std::vector<std::coroutine_handle<>> m_running;
    std::size_t m_foreign_waits = 0;
    std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> m_work;
    std::vector<promise_base*> m_spawned;
    std::vector<promise_base*> m_held;
    bool m_cancelling_all = false;
    std::function<void(std::exception_ptr)> m_on_unhandled;
    const std::uint64_t m_trace_serial = trace::next_serial(); // its lane's name
    std::unordered_map<const promise_base*, std::string> m_names;
    std::chrono::steady_clock::duration m_stall_after{};
    stall_fn m_on_stall;
    std::mutex m_deferred_mutex;
    std::vector<std::unique_ptr<deferred_work>> m_deferred; // under m_deferred_mutex
};

inline thread_local loop_core* tls_loop = nullptr;

inline loop_core& current_loop(const char* who) {
    if (tls_loop == nullptr)
        throw std::logic_error(concat(who, ": no triad event loop runs on this thread (start one "
                                           "with triad::run, or call this from inside a task)"));
    return *tls_loop;
}

template <class Done>
void loop_core::run_until(Done done) {
    const trace::lane_scope lane({.role = "event_loop", .serial = m_trace_serial});
    while (!done()) {
        if (!m_ready.empty()) {
            m_running.swap(m_ready);
            {
                // As resume() for each, with one set-up for the batch.
                const resume_scope scope;
                const start_list* const base = tls_starts;
                for (std::coroutine_handle<> h : m_running) {
                    const std::int64_t traced_since = trace::span_start();
                    resume_scope::run_chain(h, base);
                    trace::record_since("resume", "event_loop", traced_since);
                }
            }
            m_running.clear();
            // Let I/O that became ready take its turn, without blocking; a bounded turn, or
            // a thread that posts without pause would keep the ready tasks waiting for ever.
            for (int turn = 0; turn < 256; ++turn)
                if (m_io.poll_one() == 0)
                    break;
            if (m_io.stopped())
                m_io.restart();
            continue;
        }
        disarm_if_idle();
        if (m_io.run_one() == 0) {
            m_io.restart();
            if (m_ready.empty() && !done())
                wait_for_outside();
        }
    }
}

// --- promises ----------------------------------------------------------------------------------

class promise_base {
public:
    // What a finished coroutine with no awaiting parent reports to (a spawn handle, a group);
    // it returns the coroutine to continue with, or a noop one.
    using done_fn = std::coroutine_handle<> (*)(promise_base& self) noexcept;

    struct final_awaiter {
        bool await_ready() const noexcept { return false; }
        template <class Promise>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept {
            promise_base& p = h.promise();
            p.m_finished = true;
            if (p.m_continuation)
                return transfer(p.m_continuation);
            if (p.m_on_done != nullptr)
                return transfer(p.m_on_done(p)); // may destroy the frame: nothing may follow
            return std::noop_coroutine();
        }
        void await_resume() const noexcept {}
    };

    static void* operator new(std::size_t size) { return frame_cache::allocate(size); }
    static void operator delete(void* p, std::size_t size) noexcept {
        frame_cache::deallocate(p, size);
    }

    // A task starts suspended. A root task (spawned, or run's main) whose cancellation was
    // requested before its first step never runs its body, as asyncio never runs a task
    // cancelled before it started. (A task awaited by another shares that one's cancellation,
    // which the awaiting suspension point delivers.)
    struct initial_awaiter {
        promise_base& self;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<>) const noexcept {}
        // Inlined into every task's body: a root task pays a compare, an awaited one a load.
        [[gnu::always_inline]] void await_resume() const {
            if (self.m_cancel == &self.m_own_cancel && self.m_own_cancel.take_request())
                [[unlikely]]
                throw_cancelled();
        }
    };
    initial_awaiter initial_suspend() noexcept { return {*this}; }
    final_awaiter final_suspend() const noexcept { return {}; }
    void unhandled_exception() noexcept { m_error = std::current_exception(); }

    cancel_state& cancellation() noexcept { return *m_cancel; }
    bool finished() const noexcept { return m_finished; }
    bool failed() const noexcept { return static_cast<bool>(m_error); }
    std::exception_ptr& error() noexcept { return m_error; }

    // Every task. A task is either awaited (by a task or a combinator) or spawned, never both:
    // the fields below that serve both say what each use keeps in them.
    std::coroutine_handle<> m_continuation;
    cancel_state* m_cancel = &m_own_cancel;
    cancel_state m_own_cancel;
    done_fn m_on_done = nullptr;
    // A combinator's bookkeeping for a child it awaits; for a spawned task, its group (a
    // spawn_group), or null.
    void* m_owner = nullptr;
    std::coroutine_handle<> m_self; // type-erased handle of the frame, for owners

    // Spawned tasks only: references (the running task, each handle, a group), whether the
    // result was taken, who awaits the handle.
    struct joiner {
        std::coroutine_handle<> waiter;
        joiner* next = nullptr;
        // Called instead of resuming `waiter`, for a watcher that is not a suspended coroutine.
        void (*notify)(joiner* self) noexcept = nullptr;
    };
    union {
        joiner* m_joiners = nullptr; // until it finishes (spawned_done wakes them)
        loop_core* m_loop;           // from then on: the loop it ran on (cleared when that ends)
    };
    // 32 bits each, which is more tasks than fit in memory (see max_tasks).
    std::uint32_t m_owner_index = 0; // its place among a combinator's children or in its group
    std::uint32_t m_track_index = 0; // place in the loop's list of running spawned tasks
    std::uint32_t m_refs = 0;
    // Bits, so that they share one byte with room to spare: none is on a hot path.
    bool m_result_taken : 1 = false;
    bool m_failure_observed : 1 = false; // its failure went elsewhere (a group rethrows it)
    bool m_held : 1 = false;             // in its loop's list of failed tasks held by a handle
    bool m_named : 1 = false;            // has a name in its loop's list of names

protected:
    bool m_finished = false;
    std::exception_ptr m_error;
};

// A promise keeps its place in a list of tasks in 32 bits: 4 billion frames of at least 64
// bytes would take 256 GiB. Past that, spawn and the combinators throw rather than wrap.
inline constexpr std::size_t max_tasks = 0xffffffffu;
inline void check_task_count(std::size_t count, const char* who) {
    if (count >= max_tasks)
        throw std::length_error(concat(who, ": more than 4294967294 tasks at once"));
}

// What a spawned task in a group reports to when it finishes (task_group derives from it).
struct spawn_group {
    void (*child_done)(spawn_group* self, promise_base& child) noexcept = nullptr;
};

template <class T>
class task_promise : public promise_base {
public:
    template <class U>
    void return_value(U&& value) {
        m_value.emplace(std::forward<U>(value));
    }
    // For `co_return {a, b};`: a braced list has no type to deduce U from.
    void return_value(T&& value) { m_value.emplace(std::move(value)); }
    // Moves the value out, or rethrows.
    T take() {
        if (m_error)
            std::rethrow_exception(std::exchange(m_error, nullptr));
        return std::move(*m_value);
    }

private:
    std::optional<T> m_value;
};

template <>
class task_promise<void> : public promise_base {
public:
    void return_void() noexcept {}
    void take() {
        if (m_error)
            std::rethrow_exception(std::exchange(m_error, nullptr));
    }
};

// Is a coroutine with this promise one of ours (a task or a generator's body)?
//
// A coroutine of another kind that awaits one of ours was resumed by its own code, which gets
// control back when the awaiter suspends, and may destroy it if the await looks pending (an
// eager coroutine's owner does). So an await that can finish without waiting must finish
// before its await_suspend returns, and nothing under it may be handed back to a resume()
// further out: an awaiter runs what it awaits for such a coroutine in a resume() of its own
// (detail::resume, which costs a native frame per level of a recursion through coroutines of
// the other kind), and returns false, not the awaiting coroutine's handle, when that finished:
// GCC below -O2 would resume a returned handle by a nested call, so a loop of such awaits
// would grow the stack.
template <class Promise>
inline constexpr bool is_task_promise = std::is_base_of_v<promise_base, Promise>;

// Gets the cancel state of whichever coroutine is awaiting, if it is one of ours.
template <class Promise>
cancel_state* cancellation_of(std::coroutine_handle<Promise> h) noexcept {
    if constexpr (is_task_promise<Promise>)
        return &h.promise().cancellation();
    else
        return nullptr;
}

// `co_await current_cancellation{}` gives the cancel state of the awaiting coroutine without
// suspending it, so that a combinator can request a cancellation it consumed again.
struct current_cancellation {
    cancel_state* state = nullptr;
    bool await_ready() const noexcept { return false; }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
        state = cancellation_of(h);
        return false;
    }
    cancel_state* await_resume() const noexcept { return state; }
};

// What a kind of suspension point does when cancelled, and what it is, for the loop's list
// of tasks (a string literal, or null). One static instance per kind: a waiting task holds a
// pointer to it.
struct wait_kind {
    void (*on_cancel)(void* context) noexcept = nullptr;
    const char* what = nullptr;
};

// The common part of every cancellable suspension point: arm itself on the chain's cancel
// state while suspended, and report whether the wait ended because of cancellation.
class cancellable_wait {
public:
    // Call in await_suspend. False: a cancellation is already pending; do not suspend.
    // `kind` has static storage duration.
    template <class Promise>
    bool begin(std::coroutine_handle<Promise> h, const wait_kind& kind, void* context) {
        m_waiter = h;
        m_context = context;
        m_kind = &kind;
        cancel_state* const state = cancellation_of(h);
        m_cancel = reinterpret_cast<std::uintptr_t>(state);
        if (state != nullptr && state->take_request()) {
            m_cancel |= cancelled_bit;
            return false;
        }
        if (state != nullptr)
            state->arm(this);
        return true;
    }
    // Call when the wait ends normally, before resuming.
    void end() noexcept {
        if (cancel_state* state = cancellation())
            state->disarm(this);
    }
    bool cancelled() const noexcept { return (m_cancel & cancelled_bit) != 0; }
    // After end(): the cancellation this wait consumed is requested again, for the task's next
    // suspension point (the wait delivered a result that came first).
    void request_again() noexcept {
        if (cancel_state* state = cancellation())
            state->request();
    }
    void throw_if_cancelled() const {
        if (cancelled())
            throw task_cancelled();
    }
    std::coroutine_handle<> waiter() const noexcept { return m_waiter; }
    const char* what() const noexcept { return m_kind != nullptr ? m_kind->what : nullptr; }

private:
    friend class cancel_state;
    // The cancel state has disarmed this wait and consumed the request.
    void cancel() noexcept {
        m_cancel |= cancelled_bit;
        m_kind->on_cancel(m_context);
    }
    cancel_state* cancellation() const noexcept {
        return reinterpret_cast<cancel_state*>(m_cancel & ~cancelled_bit);
    }

    // The awaiting chain's cancel state (or null) and, in its low bit, whether the wait ended
    // by cancellation: a sleeping task holds one of these.
    static constexpr std::uintptr_t cancelled_bit = 1;
    std::coroutine_handle<> m_waiter;
    std::uintptr_t m_cancel = 0;
    const wait_kind* m_kind = nullptr;
    void* m_context = nullptr;
};

inline void cancel_state::request() noexcept {
    if (cancellable_wait* wait = armed()) {
        m_bits = 0; // disarmed, and the wait consumes the request
        wait->cancel();
    } else {
        m_bits = requested_bit;
    }
}

inline void loop_core::cancel_all_spawned(bool on) noexcept {
    m_cancelling_all = on;
    if (on)
        for (promise_base* p : m_spawned)
            p->m_own_cancel.request();
}

inline void loop_core::track(promise_base* p) {
    check_task_count(m_spawned.size(), "triad::spawn");
    p->m_track_index = static_cast<std::uint32_t>(m_spawned.size());
    m_spawned.push_back(p);
    if (m_cancelling_all)
        p->m_own_cancel.request(); // spawned while run() winds everything down
}

inline void loop_core::hold(promise_base* p) {
    check_task_count(m_held.size(), "triad::spawn");
    p->m_track_index = static_cast<std::uint32_t>(m_held.size()); // free: no longer tracked
    m_held.push_back(p);
    p->m_held = true;
}

inline void loop_core::unhold(promise_base* p) noexcept {
    const std::size_t i = p->m_track_index;
    p->m_held = false;
    if (i >= m_held.size() || m_held[i] != p)
        return;
    m_held[i] = m_held.back();
    m_held[i]->m_track_index = static_cast<std::uint32_t>(i);
    m_held.pop_back();
}

inline loop_core::~loop_core() {
    // Other threads post no more from here on; what they posted before finds the gate closed
    // when it runs, here or in a user's io_context.
    m_gate->close();
    for (promise_base* p : m_held) {
        p->m_loop = nullptr;
        p->m_held = false;
    }
    // An Asio operation on another io_context whose handler's executor is this loop's holds
    // work on this io_context until its thread lets go of it, just after handing the completion
    // over: this io_context must not be destroyed in between (a use after free in that thread).
    // Let what is left run out, for a bounded time (what it runs finds the gate closed): an
    // operation that never completes (its io_context stopped for good) is given up on.
    try {
        m_timer.cancel();
        m_work.reset();
        if (!m_own_io)
            return; // a user's io_context is theirs to run and to destroy
        m_io.restart();
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        while (!m_io.stopped() && std::chrono::steady_clock::now() < until)
            if (m_io.run_for(std::chrono::milliseconds(10)) == 0 && m_io.stopped())
                break;
    } catch (...) {
    }
}

inline void loop_core::set_name(promise_base* p, std::string name) {
    m_names[p] = std::move(name);
    p->m_named = true;
}

inline void loop_core::untrack(promise_base* p) noexcept {
    if (p->m_named) {
        m_names.erase(p);
        p->m_named = false;
    }
    const std::size_t i = p->m_track_index;
    if (i >= m_spawned.size() || m_spawned[i] != p)
        return;
    m_spawned[i] = m_spawned.back();
    m_spawned[i]->m_track_index = static_cast<std::uint32_t>(i);
    m_spawned.pop_back();
}

} // namespace triad::detail
