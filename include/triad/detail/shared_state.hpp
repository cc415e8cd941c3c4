#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include <triad/detail/node_cache.hpp>
#include <triad/detail/wait_slot.hpp>
#include <triad/errors.hpp>

namespace triad::detail {

// The exceptions that code which must not fail hands out (a cancelled task, a broken promise):
// made once, ahead of time, where an allocation failure can still be reported, then only copied
// (an exception_ptr copy never allocates). Pools and promises call these in their constructors.
inline const std::exception_ptr& cancelled_error() {
    static const std::exception_ptr error = std::make_exception_ptr(task_cancelled());
    return error;
}
inline const std::exception_ptr& broken_promise_error() {
    static const std::exception_ptr error = std::make_exception_ptr(broken_promise());
    return error;
}

class state_base;

// Continuations run inline, on the thread that completes the future, nested up to a depth of
// max_inline_depth; deeper ones wait here until the outermost returns, so a chain of a million
// `then`s runs in a loop rather than a million frames deep, while a callback that completes a
// future a few levels down still sees its continuation run at once.
struct continuation_trampoline {
    static constexpr unsigned max_inline_depth = 64;
    state_base* head = nullptr;
    state_base* tail = nullptr;
    unsigned depth = 0;
};
inline thread_local continuation_trampoline tls_trampoline;

// Runs the continuations deferred on this thread; a thread about to block calls it first, so
// that nothing it waits for is stuck behind its own wait.
inline void run_deferred_continuations() noexcept;

// The result half of a task: a ready flag (wait_slot), a reference count, one continuation slot
// and, in the derived shared_state<T>, the value or the exception. Executors derive their task
// objects from shared_state<T> so that a task and its result share one allocation.
class state_base : public wait_slot, public pooled_node {
public:
    using continuation_fn = void (*)(void* context) noexcept;

    state_base(const state_base&) = delete;
    state_base& operator=(const state_base&) = delete;

    void add_ref() noexcept { m_refs.fetch_add(1, std::memory_order_relaxed); }

    void release() noexcept {
        if (m_refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
            delete this; // the only delete of a state: intrusive reference counting
    }

    // Registers `fn(context)` to run once the result is set, on the thread that sets it. Returns
    // false without registering if the result is already set: the caller then runs it itself.
    bool try_set_continuation(continuation_fn fn, void* context) {
        std::uint32_t flags = m_flags.load(std::memory_order_acquire);
        if ((flags & ready_bit) != 0)
            return false;
        if ((flags & continuation_bit) != 0)
            throw future_error("triad::future: a continuation is already registered on this future "
                               "(on_ready, then, co_await and as_completed each need their own)");
        m_continuation = fn;
        m_continuation_context = context;
        for (;;) {
            if (m_flags.compare_exchange_weak(flags, flags | continuation_bit,
                                              std::memory_order_release, std::memory_order_acquire))
                return true;
            if ((flags & ready_bit) != 0)
                return false;
        }
    }

    // Takes back a continuation registered with try_set_continuation. True if it will never
    // run; false if the result was set first, so it has run or is running.
    bool try_clear_continuation() noexcept {
        std::uint32_t flags = m_flags.load(std::memory_order_acquire);
        for (;;) {
            if ((flags & ready_bit) != 0 || (flags & continuation_bit) == 0)
                return false;
            if (m_flags.compare_exchange_weak(flags, flags & ~continuation_bit,
                                              std::memory_order_acq_rel, std::memory_order_acquire))
                return true;
        }
    }

    // Cancelling a task that has not started (future::cancel). An executor whose tasks can be
    // cancelled marks their states at submit; before it runs a task (or fails it), it claims the
    // state, and only one of the claim and the cancel wins. The executor may claim more than
    // once, and may give a claim back (a task taken back from a process and queued again).
    // Only in the state's constructor, before any other thread can see it: a plain store, not a
    // read-modify-write (a locked instruction on every submit).
    void allow_cancel() noexcept {
        m_flags.store(m_flags.load(std::memory_order_relaxed) | cancellable_bit,
                      std::memory_order_relaxed);
    }

    // True if the executor now owns the result; false if the future cancelled the task first,
    // and has completed it (the executor then only drops its reference).
    bool try_claim() noexcept {
        const std::uint32_t before = m_flags.fetch_or(claimed_bit, std::memory_order_acq_rel);
        return (before & cancelled_bit) == 0;
    }

    void unclaim() noexcept { m_flags.fetch_and(~claimed_bit, std::memory_order_acq_rel); }

    bool cancelled_by_future() const noexcept {
        return (m_flags.load(std::memory_order_acquire) & cancelled_bit) != 0;
    }

    // After try_cancel() won: the executor's part of the task (its callable) may go now.
    virtual void release_cancelled() noexcept {}

    // True if the task will never run: the caller then completes the state as cancelled.
    bool try_cancel() noexcept {
        std::uint32_t flags = m_flags.load(std::memory_order_acquire);
        for (;;) {
            if ((flags & cancellable_bit) == 0 || (flags & (claimed_bit | ready_bit)) != 0)
                return false;
            if (m_flags.compare_exchange_weak(flags, flags | claimed_bit | cancelled_bit,
                                              std::memory_order_acq_rel, std::memory_order_acquire))
                return true;
        }
    }

    // Called once by the producer after storing the result; the producer still holds its
    // reference, so waking the waiter and running the continuation never touch freed memory.
    void publish() noexcept {
        const std::uint32_t before = set_ready();
        if ((before & continuation_bit) != 0)
            run_continuation();
    }

protected:
    explicit state_base(std::uint32_t refs) noexcept : m_refs(refs) {}
    virtual ~state_base() = default;

private:
    friend void run_deferred_continuations() noexcept;

    void run_continuation() noexcept {
        continuation_trampoline& t = tls_trampoline;
        if (t.depth >= continuation_trampoline::max_inline_depth) {
            // Deep inside continuations on this thread: run later, from the outermost one.
            add_ref();
            m_deferred_next = nullptr;
            if (t.tail == nullptr)
                t.head = this;
            else
                t.tail->m_deferred_next = this;
            t.tail = this;
            return;
        }
        ++t.depth;
        m_continuation(m_continuation_context);
        --t.depth;
        if (t.depth == 0 && t.head != nullptr)
            run_deferred_continuations();
    }

    std::atomic<std::uint32_t> m_refs;
    continuation_fn m_continuation = nullptr;
    void* m_continuation_context = nullptr;
    state_base* m_deferred_next = nullptr;
};

inline void run_deferred_continuations() noexcept {
    continuation_trampoline& t = tls_trampoline;
    while (state_base* next = t.head) {
        t.head = next->m_deferred_next;
        if (t.head == nullptr)
            t.tail = nullptr;
        ++t.depth;
        next->m_continuation(next->m_continuation_context);
        --t.depth;
        next->release();
    }
}

// Every blocking wait in triad: a pool worker helps (runs queued tasks) or blocks with a stand-in
// thread in its place; any other thread blocks. Continuations this thread deferred run first.
inline bool wait_on(wait_slot& slot, const steady_time* deadline) {
    if (slot.is_ready())
        return true;
    if (tls_trampoline.head != nullptr) {
        run_deferred_continuations();
        if (slot.is_ready())
            return true;
    }
    if (deadline == nullptr && tls_wait_helper != nullptr && tls_wait_helper->run_if_next(slot) &&
        slot.is_ready())
        return true;
    // A pool task blocked for good on this result: during a drain, the task that produces it
    // still runs (see scheduler::execute). Waits outside the pools do not count, so they cannot
    // keep a drain going.
    const bool counted = deadline == nullptr && tls_wait_helper != nullptr;
    if (counted)
        slot.begin_untimed_wait();
    struct untimed_guard {
        wait_slot* slot;
        ~untimed_guard() {
            if (slot != nullptr)
                slot->end_untimed_wait();
        }
    } guard{counted ? &slot : nullptr};
    if (wait_helper* helper = tls_wait_helper)
        return helper->help_until(slot, deadline);
    return slot.block_until(deadline);
}

// A task running on a pool thread starts with a trampoline of its own: what it publishes runs
// within it, however deep the thread is nested in helping waits, instead of waiting for an outer
// continuation that is itself waiting for the task (a deadlock).
class trampoline_scope {
public:
    trampoline_scope() noexcept
        : m_outer(std::exchange(tls_trampoline, continuation_trampoline{})) {}
    ~trampoline_scope() { tls_trampoline = m_outer; }
    trampoline_scope(const trampoline_scope&) = delete;
    trampoline_scope& operator=(const trampoline_scope&) = delete;

private:
    continuation_trampoline m_outer;
};

struct unit {};

// What a shared_state<T> physically stores: references as pointers, void as nothing.
template <class T>
using stored_t = std::conditional_t<
    std::is_void_v<T>, unit,
    std::conditional_t<std::is_reference_v<T>, std::add_pointer_t<std::remove_reference_t<T>>, T>>;

template <class T>
class shared_state : public state_base {
public:
    explicit shared_state(std::uint32_t refs = 2) noexcept : state_base(refs) {}

    ~shared_state() override {
        if (m_kind == kind::value)
            m_value.~stored_type();
        else if (m_kind == kind::error)
            m_error.~exception_ptr();
    }

    // set_value / set_error happen at most once, before publish().
    template <class... Args>
    void set_value(Args&&... args) {
        if constexpr (std::is_void_v<T>) {
            static_assert(sizeof...(Args) == 0, "a future<void> takes no value");
        } else if constexpr (std::is_reference_v<T>) {
            static_assert(sizeof...(Args) == 1, "a future<T&> takes exactly one reference");
            T ref = (std::forward<Args>(args), ...);
            ::new (static_cast<void*>(std::addressof(m_value))) stored_type(std::addressof(ref));
        } else {
            ::new (static_cast<void*>(std::addressof(m_value)))
                stored_type(std::forward<Args>(args)...);
        }
        m_kind = kind::value;
    }

    // Whoever publishes an error does it after the catch that caught it has ended. An open
    // catch holds the exception too, and ending it last would free the exception while the
    // consumer's thread reads it; libstdc++ orders the two through a count in its own code,
    // which ThreadSanitizer does not see, so it reports a race.
    void set_error(std::exception_ptr error) noexcept {
        ::new (static_cast<void*>(std::addressof(m_error))) std::exception_ptr(std::move(error));
        m_kind = kind::error;
    }

    // Runs `fn()` and stores what it returns or throws.
    template <class Fn>
    void set_from(Fn&& fn) noexcept {
        try {
            if constexpr (std::is_void_v<T>) {
                std::forward<Fn>(fn)();
                set_value();
            } else {
                set_value(std::forward<Fn>(fn)());
            }
        } catch (...) {
            set_error(std::current_exception());
        }
    }

    // Only after the state is ready, and only once; moves the value out or rethrows. The
    // exception leaves the state too, so its last reference always dies on the consumer's
    // thread: the exception's reference count lives in uninstrumented libstdc++, and freeing
    // it on the producer's thread makes ThreadSanitizer report a race that is not there.
    T take() {
        if (m_kind == kind::error) {
            std::exception_ptr error = std::move(m_error);
            std::rethrow_exception(std::move(error));
        }
        if constexpr (std::is_void_v<T>)
            return;
        else if constexpr (std::is_reference_v<T>)
            return static_cast<T>(*m_value);
        else
            return std::move(m_value);
    }

    // For shared futures: the value stays in place and every reader sees it, or rethrows a copy
    // of the exception. Only after the state is ready.
    using peek_type = std::conditional_t<
        std::is_void_v<T>, void,
        std::conditional_t<std::is_reference_v<T>, T, std::add_lvalue_reference_t<const T>>>;
    peek_type peek() const {
        if (m_kind == kind::error)
            std::rethrow_exception(m_error);
        if constexpr (std::is_void_v<T>)
            return;
        else if constexpr (std::is_reference_v<T>)
            return static_cast<T>(*m_value);
        else
            return m_value;
    }

    bool has_error() const noexcept { return m_kind == kind::error; }

    // Only after the state is ready: completed as cancelled, the task never having run (by
    // future::cancel, or dropped by its pool with the shared cancelled_error()).
    bool never_ran() const noexcept {
        return this->cancelled_by_future() ||
               (m_kind == kind::error && m_error == cancelled_error());
    }

private:
    using stored_type = stored_t<T>;
    enum class kind : unsigned char { empty, value, error };
    kind m_kind = kind::empty;
    union {
        stored_type m_value;
        std::exception_ptr m_error;
    };
};

} // namespace triad::detail
