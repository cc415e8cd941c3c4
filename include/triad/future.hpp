#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <ranges>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <triad/detail/exception_info.hpp>
#include <triad/detail/shared_state.hpp>
#include <triad/detail/text.hpp>
#include <triad/detail/wait_slot.hpp>
#include <triad/errors.hpp>

namespace triad {

template <class T>
class future;
template <class T>
class shared_future;
template <class T>
class promise;

namespace detail {
struct future_access {
    template <class T>
    static future<T> make(shared_state<T>* state) noexcept {
        return future<T>(state);
    }
    template <class T>
    static shared_state<T>* state(const future<T>& f) noexcept {
        return f.m_state;
    }
};

// An executor that `then(executor, fn)` can hand a continuation to: a `triad::thread_pool`, an
// `event_loop`, or anything with `post(callable)`.
template <class Executor>
concept posts_work = requires(Executor& executor, void (*fn)()) {
    executor.post(fn);
};

// What a continuation keeps of its executor: a handle the executor offers (a thread pool's,
// which outlives the pool object while its drain runs), else a pointer.
template <class Executor>
struct executor_ref {
    explicit executor_ref(Executor& executor) noexcept : m_executor(&executor) {}
    Executor* operator->() const noexcept { return m_executor; }
    Executor* m_executor;
};
template <class Executor>
requires requires(const Executor& executor) {
    executor.make_continuation_handle();
}
struct executor_ref<Executor> {
    using handle = decltype(std::declval<const Executor&>().make_continuation_handle());
    explicit executor_ref(Executor& executor) : m_handle(executor.make_continuation_handle()) {}
    handle* operator->() noexcept { return &m_handle; }
    handle m_handle;
};

struct empty_slot {};
} // namespace detail

/**
 * The result of work handed to any triad executor: a value of type `T` (or an exception) that
 * becomes available later.
 *
 * Much lighter than `std::future`: the result lives in the same allocation as the task, and
 * neither setting nor reading it takes a mutex. A future has exactly one consumer; it is
 * move-only, and `get()` consumes it (`share()` gives a copyable `triad::shared_future` for many
 * readers). Destroying an unready future does not block: the work goes on and its result is
 * dropped. Waiting on a future from inside a `triad::thread_pool` task runs other queued tasks
 * meanwhile, so nested submit-and-wait cannot deadlock.
 *
 * @par Thread Safety
 * Distinct futures: safe. One future: one thread at a time (a second concurrent waiter gets
 * `triad::future_error`).
 *
 * @code
 * triad::future<int> f = pool.submit([] { return 6 * 7; });
 * int answer = f.get(); // 42, or rethrows what the task threw
 * @endcode
 */
template <class T>
class [[nodiscard]] future {
    static_assert(!std::is_rvalue_reference_v<T>,
                  "triad::future<T&&> is not supported: return a value (T) instead");
    static_assert(!std::is_array_v<T> && !std::is_function_v<T>,
                  "triad::future<T>: T must be an object type, a reference or void");

public:
    using value_type = T;

    /** An invalid future (`valid() == false`). */
    future() noexcept = default;
    future(future&& other) noexcept
        : m_state(std::exchange(other.m_state, nullptr)),
          m_kept(std::exchange(other.m_kept, kept_type{})) {}
    future& operator=(future&& other) noexcept {
        if (this != &other) {
            reset();
            m_state = std::exchange(other.m_state, nullptr);
            m_kept = std::exchange(other.m_kept, kept_type{});
        }
        return *this;
    }
    future(const future&) = delete;
    future& operator=(const future&) = delete;
    ~future() { reset(); }

    /** True if this future refers to a result (it was not default-built, moved from or consumed).
     */
    bool valid() const noexcept { return m_state != nullptr; }

    /** True if the result is available: `get()` would not block. False for an invalid future. */
    bool ready() const noexcept { return m_state != nullptr && m_state->is_ready(); }

    /**
     * Waits for the result and returns it, or rethrows the exception the work threw. Consumes
     * the future. Throws `triad::future_error` if the future is not valid. For a reference
     * result, the future keeps what produced it (the task and its arguments) alive until the
     * future is destroyed, so the reference stays valid while the future exists.
     */
    T get() {
        require_valid("get");
        detail::wait_on(*m_state, nullptr);
        if constexpr (std::is_reference_v<T>) {
            if (m_kept != nullptr)
                m_kept->release();
            m_kept = std::exchange(m_state, nullptr);
            return m_kept->take();
        } else {
            std::unique_ptr<detail::shared_state<T>, releaser> state(
                std::exchange(m_state, nullptr));
            return state->take();
        }
    }

    /**
     * Cancels the task behind this future if it has not started (Python's `Future.cancel()`):
     * true if it will never run, and the future is then ready and `get()` throws
     * `triad::task_cancelled` (true again for a task cancelled before, by `cancel()` or by a
     * cancelling shutdown); false if it is running or finished, or if what produces the result
     * cannot be cancelled this way (a promise, a continuation, a coroutine). Tasks from
     * `thread_pool::submit` and `process_pool::submit` can be cancelled until a worker takes
     * them (on the process pool: until they are sent to a worker process, which pipelines a few
     * tasks ahead for short ones). A thread-pool task's callable and arguments are destroyed
     * here, before this returns, as they would be before a result is seen; the pool drops the
     * rest of the task when it reaches it, and counts it in `cancelled()`. The future stays
     * valid. Throws `triad::future_error` if not valid.
     */
    bool cancel() {
        require_valid("cancel");
        const std::exception_ptr& error = detail::cancelled_error(); // may allocate: first
        if (!m_state->try_cancel())
            return m_state->is_ready() && m_state->never_ran(); // cancelled before: still true
        m_state->release_cancelled();
        m_state->set_error(error);
        m_state->publish();
        return true;
    }

    /** Blocks until the result is available. Throws `triad::future_error` if not valid. */
    void wait() const {
        require_valid("wait");
        detail::wait_on(*m_state, nullptr);
    }

    /** Waits at most `timeout`; `std::future_status::ready` or `timeout`. */
    template <class Rep, class Period>
    std::future_status wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
        require_valid("wait_for");
        if (m_state->is_ready())
            return std::future_status::ready;
        const detail::steady_time deadline = detail::deadline_after(timeout);
        return detail::wait_on(*m_state, &deadline) ? std::future_status::ready
                                                    : std::future_status::timeout;
    }

    /** Waits until `time` at the latest; `std::future_status::ready` or `timeout`. */
    template <class Clock, class Duration>
    std::future_status wait_until(const std::chrono::time_point<Clock, Duration>& time) const {
        require_valid("wait_until");
        if (m_state->is_ready())
            return std::future_status::ready;
        const detail::steady_time deadline = detail::to_steady_deadline(time);
        return detail::wait_on(*m_state, &deadline) ? std::future_status::ready
                                                    : std::future_status::timeout;
    }

    /**
     * Calls `callback()` once the result is available, without blocking anyone: on the thread
     * that sets the result, or right here if it is already set (then an exception from the
     * callback propagates to this call). The future stays valid; read it with `get()`. One
     * continuation per future (`on_ready`, `then`, `as_completed`, `share` and `co_await` each
     * use it); a second throws `triad::future_error`. An exception escaping a callback that runs
     * on a pool's thread goes to that pool's `on_error`, elsewhere to stderr; never lost
     * silently. Continuations nest inline up to 64 deep on one thread; deeper ones run when the
     * outermost returns (or when the thread blocks in a triad wait), so a chain of any length
     * needs bounded stack.
     */
    template <class Callback>
    void on_ready(Callback&& callback);

    /**
     * Chains work: returns a future of `fn(std::move(*this))`, run as soon as this future is
     * ready, on the thread that makes it ready. Consumes this future; if it throws (a second
     * continuation, out of memory) this future is left as it was.
     */
    template <class Fn>
    auto then(Fn&& fn) && -> future<std::invoke_result_t<std::decay_t<Fn>, future<T>>>;

    /**
     * Like `then(fn)`, but `fn` runs on `executor` (a `triad::thread_pool`, a `triad::event_loop`
     * or anything with `post(callable)`), never inline on the completing thread. If the executor
     * refuses the work (it was shut down), the returned future holds that exception; if it drops
     * it (a cancelling shutdown, a loop that stopped), `triad::task_cancelled`. The executor must
     * outlive the continuation.
     */
    template <class Executor, class Fn>
    requires detail::posts_work<Executor>
    auto then(Executor& executor,
              Fn&& fn) && -> future<std::invoke_result_t<std::decay_t<Fn>, future<T>>>;

    /**
     * A `triad::shared_future` for the same result, readable by any number of threads and
     * continuations. Consumes this future (and its continuation slot); throws
     * `triad::future_error` if it is invalid or already has a continuation.
     */
    shared_future<T> share() &&;

private:
    friend struct detail::future_access;
    explicit future(detail::shared_state<T>* state) noexcept : m_state(state) {}

    struct releaser {
        void operator()(detail::shared_state<T>* state) const noexcept { state->release(); }
    };

    void reset() noexcept {
        if (m_state != nullptr)
            std::exchange(m_state, nullptr)->release();
        if constexpr (std::is_reference_v<T>)
            if (m_kept != nullptr)
                std::exchange(m_kept, nullptr)->release();
    }

    void require_valid(const char* what) const {
        if (m_state == nullptr)
            throw future_error(detail::concat("triad::future::", what,
                                              ": the future has no state (default-constructed, "
                                              "moved from, or already consumed by get())"));
    }

    using kept_type =
        std::conditional_t<std::is_reference_v<T>, detail::shared_state<T>*, detail::empty_slot>;

    detail::shared_state<T>* m_state = nullptr;
    // A consumed reference result's state, kept so the reference stays valid.
    [[no_unique_address]] kept_type m_kept{};
};

/**
 * The producing side of a `triad::future<T>` for code that completes work itself (an I/O
 * callback, another executor). Destroying a promise that was never satisfied makes its future
 * throw `triad::broken_promise`.
 *
 * @par Thread Safety
 * A promise is used by one thread at a time; its future may be on another.
 *
 * @code
 * triad::promise<int> p;
 * triad::future<int> f = p.get_future();
 * std::thread([p = std::move(p)]() mutable { p.set_value(42); }).detach();
 * @endcode
 */
template <class T>
class promise {
public:
    promise() : m_state(make_state()) {}
    promise(promise&& other) noexcept
        : m_state(std::exchange(other.m_state, nullptr)), m_future_taken(other.m_future_taken),
          m_satisfied(other.m_satisfied) {}
    promise& operator=(promise&& other) noexcept {
        if (this != &other) {
            abandon();
            m_state = std::exchange(other.m_state, nullptr);
            m_future_taken = other.m_future_taken;
            m_satisfied = other.m_satisfied;
        }
        return *this;
    }
    promise(const promise&) = delete;
    promise& operator=(const promise&) = delete;
    ~promise() { abandon(); }

    /** The future; callable once (a second call throws `triad::future_error`). */
    future<T> get_future() {
        require_state("get_future");
        if (m_future_taken)
            throw future_error("triad::promise::get_future: the future was already retrieved");
        m_future_taken = true;
        return detail::future_access::make(m_state);
    }

    /** Sets the value and wakes the consumer. A second set throws `triad::future_error`. */
    template <class... Args>
    void set_value(Args&&... args) {
        require_unsatisfied("set_value");
        m_state->set_value(std::forward<Args>(args)...);
        satisfy();
    }

    /** Sets an exception for the consumer to rethrow. A second set throws `future_error`. */
    void set_exception(std::exception_ptr error) {
        require_unsatisfied("set_exception");
        if (!error)
            throw future_error("triad::promise::set_exception: the exception_ptr is null");
        m_state->set_error(std::move(error));
        satisfy();
    }

private:
    static detail::shared_state<T>* make_state() {
        // Made now, where failing can still be reported, so the destructor never allocates.
        (void)detail::broken_promise_error();
        return std::make_unique<detail::shared_state<T>>(2).release();
    }
    void require_state(const char* what) const {
        if (m_state == nullptr)
            throw future_error(
                detail::concat("triad::promise::", what, ": the promise was moved from"));
    }
    void require_unsatisfied(const char* what) const {
        require_state(what);
        if (m_satisfied)
            throw future_error(detail::concat(
                "triad::promise::", what, ": the promise already holds a value or an exception"));
    }
    void satisfy() noexcept {
        m_satisfied = true;
        m_state->publish();
    }
    void abandon() noexcept {
        if (m_state == nullptr)
            return;
        if (!m_satisfied) {
            m_state->set_error(detail::broken_promise_error());
            satisfy();
        }
        if (!m_future_taken)
            m_state->release();
        std::exchange(m_state, nullptr)->release();
    }

    detail::shared_state<T>* m_state;
    bool m_future_taken = false;
    bool m_satisfied = false;
};

/** A future that is ready already, holding `value`. */
template <class T>
future<std::decay_t<T>> make_ready_future(T&& value) {
    promise<std::decay_t<T>> p;
    p.set_value(std::forward<T>(value));
    return p.get_future();
}

/** A ready `future<void>`. */
inline future<void> make_ready_future() {
    promise<void> p;
    p.set_value();
    return p.get_future();
}

/** A future that is ready already and rethrows `error` from `get()`. */
template <class T>
future<T> make_exceptional_future(std::exception_ptr error) {
    promise<T> p;
    p.set_exception(std::move(error));
    return p.get_future();
}

namespace detail {

template <class Callback>
struct callback_box {
    Callback callback;

    static void fire(void* context) noexcept {
        std::unique_ptr<callback_box> self(static_cast<callback_box*>(context));
        std::exception_ptr error;
        try {
            self->callback();
        } catch (...) {
            error = std::current_exception();
        }
        if (error) // after the catch ended (see shared_state::set_error)
            report_unhandled("triad::future::on_ready: the callback threw", error);
    }
};

template <class Fn, class T, class U>
class then_state final : public shared_state<U> {
public:
    // The source is taken by reference and moved last, so a callable whose copy throws leaves
    // the caller's future as it was.
    then_state(Fn fn, future<T>&& source)
        : shared_state<U>(2), m_fn(std::move(fn)), m_source(std::move(source)) {}

    static void fire(void* context) noexcept {
        auto* self = static_cast<then_state*>(context);
        self->set_from([self]() -> decltype(auto) {
            return std::invoke(std::move(self->m_fn), std::move(self->m_source));
        });
        self->publish();
        self->release();
    }

    future<T>& source() noexcept { return m_source; }

private:
    Fn m_fn;
    future<T> m_source;
};

// then(executor, fn): the continuation only hands the work to the executor.
template <class Executor, class Fn, class T, class U>
class then_on_state final : public shared_state<U> {
public:
    then_on_state(Executor& executor, Fn fn, future<T>&& source)
        : shared_state<U>(2), m_executor(executor), m_fn(std::move(fn)),
          m_source(std::move(source)) {
        (void)cancelled_error();
    }

    // Once post() has the job, the state may be gone (run and released already, by an executor
    // that runs work inline or on another thread): nothing here touches it after that, unless
    // the job came back unrun. What the job's destructor saw during post() is kept per thread.
    static void fire(void* context) noexcept {
        auto* self = static_cast<then_on_state*>(context);
        job work(self);
        posting attempt(self);
        std::exception_ptr refused;
        try {
            self->m_executor->post(std::move(work));
        } catch (...) {
            refused = std::current_exception();
        }
        if (refused) {
            // Refused before the executor took the job (a closed pool), or taken and dropped on
            // the way out (out of memory): the future holds the reason, published after the
            // catch ended (see shared_state::set_error).
            const bool still_ours = work.take() != nullptr;
            if (still_ours || attempt.dropped())
                fail(self, std::move(refused));
            return;
        }
        // Taken and dropped unrun without an exception: as if the executor cancelled it.
        if (attempt.dropped())
            fail(self, cancelled_error());
    }

    future<T>& source() noexcept { return m_source; }

private:
    static void fail(then_on_state* self, std::exception_ptr error) noexcept {
        self->set_error(std::move(error));
        self->publish();
        self->release();
    }

    // The state whose job this thread is posting, and whether the job died inside the post.
    struct posting_record {
        const void* state = nullptr;
        bool dropped = false;
    };
    static posting_record& current_posting() noexcept {
        static thread_local posting_record record;
        return record;
    }
    class posting {
    public:
        explicit posting(const then_on_state* self) noexcept
            : m_outer(std::exchange(current_posting(), posting_record{self, false})) {}
        ~posting() { current_posting() = m_outer; }
        posting(const posting&) = delete;
        posting& operator=(const posting&) = delete;
        bool dropped() const noexcept { return current_posting().dropped; }

    private:
        posting_record m_outer;
    };

    // Owns the producer's reference; whoever ends up with it runs the work or, dropping it
    // unrun, completes the future with task_cancelled (inside a post() of this thread, it leaves
    // that to fire(), which knows why).
    class job {
    public:
        explicit job(then_on_state* self) noexcept : m_self(self) {}
        job(job&& other) noexcept : m_self(std::exchange(other.m_self, nullptr)) {}
        job& operator=(job&&) = delete;
        ~job() {
            if (m_self == nullptr)
                return;
            then_on_state* self = std::exchange(m_self, nullptr);
            posting_record& record = current_posting();
            if (record.state == self)
                record.dropped = true; // fire() is on this thread's stack and reports it
            else
                fail(self, cancelled_error());
        }
        // Gives up the reference (to fire(), which reports why the post failed).
        then_on_state* take() noexcept { return std::exchange(m_self, nullptr); }
        // The future this job completes, for a pool deciding during a drain whether somebody
        // waits for it.
        const wait_slot* result_slot() const noexcept { return m_self; }
        void operator()() noexcept {
            then_on_state* self = std::exchange(m_self, nullptr);
            self->set_from([self]() -> decltype(auto) {
                return std::invoke(std::move(self->m_fn), std::move(self->m_source));
            });
            self->publish();
            self->release();
        }

    private:
        then_on_state* m_self;
    };

    executor_ref<Executor> m_executor;
    Fn m_fn;
    future<T> m_source;
};

} // namespace detail

template <class T>
template <class Callback>
void future<T>::on_ready(Callback&& callback) {
    require_valid("on_ready");
    using box = detail::callback_box<std::decay_t<Callback>>;
    static_assert(std::is_invocable_v<std::decay_t<Callback>&>,
                  "triad::future::on_ready: the callback must be callable with no arguments");
    auto owned = std::make_unique<box>(box{std::forward<Callback>(callback)});
    if (m_state->try_set_continuation(&box::fire, owned.get())) {
        owned.release(); // box::fire owns it from now on
        return;
    }
    owned->callback();
}

template <class T>
template <class Fn>
auto future<T>::then(Fn&& fn) && -> future<std::invoke_result_t<std::decay_t<Fn>, future<T>>> {
    static_assert(std::is_invocable_v<std::decay_t<Fn>, future<T>>,
                  "triad::future<T>::then: the function must take a triad::future<T> by value");
    using U = std::invoke_result_t<std::decay_t<Fn>, future<T>>;
    require_valid("then");
    using state_type = detail::then_state<std::decay_t<Fn>, T, U>;
    detail::shared_state<T>* source = m_state;
    auto owned = std::make_unique<state_type>(std::forward<Fn>(fn), std::move(*this));
    bool registered = false;
    try {
        registered = source->try_set_continuation(&state_type::fire, owned.get());
    } catch (...) {
        *this = std::move(owned->source());
        throw;
    }
    state_type* chained = owned.release();
    future<U> result = detail::future_access::make<U>(chained);
    if (!registered)
        state_type::fire(chained);
    return result;
}

template <class T>
template <class Executor, class Fn>
requires detail::posts_work<Executor>
auto future<T>::then(Executor& executor,
                     Fn&& fn) && -> future<std::invoke_result_t<std::decay_t<Fn>, future<T>>> {
    static_assert(std::is_invocable_v<std::decay_t<Fn>, future<T>>,
                  "triad::future<T>::then: the function must take a triad::future<T> by value");
    using U = std::invoke_result_t<std::decay_t<Fn>, future<T>>;
    require_valid("then");
    using state_type = detail::then_on_state<Executor, std::decay_t<Fn>, T, U>;
    detail::shared_state<T>* source = m_state;
    auto owned = std::make_unique<state_type>(executor, std::forward<Fn>(fn), std::move(*this));
    bool registered = false;
    try {
        registered = source->try_set_continuation(&state_type::fire, owned.get());
    } catch (...) {
        *this = std::move(owned->source());
        throw;
    }
    state_type* chained = owned.release();
    future<U> result = detail::future_access::make<U>(chained);
    if (!registered)
        state_type::fire(chained);
    return result;
}

/** Blocks until every future in `futures` is ready. Throws `future_error` on an invalid one. */
template <std::ranges::input_range Futures>
void wait_all(Futures&& futures) {
    for (auto& f : futures)
        f.wait();
}

// --- shared_future ---------------------------------------------------------------------------

namespace detail {

// A continuation registered on a shared future; any number of them, kept in a list.
struct hub_link {
    state_base::continuation_fn fn = nullptr;
    void* context = nullptr;
    hub_link* next = nullptr;
    hub_link* prev = nullptr;
};

// What the copies of one shared_future share: the original future's state (read in place by
// every reader), the threads waiting and the continuations registered. The state's single
// continuation slot feeds it.
class shared_hub_base : public pooled_node {
public:
    shared_hub_base(const shared_hub_base&) = delete;
    shared_hub_base& operator=(const shared_hub_base&) = delete;

    void add_ref() noexcept { m_refs.fetch_add(1, std::memory_order_relaxed); }
    void release() noexcept {
        if (m_refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
            delete this;
    }

    bool is_ready() const noexcept { return m_ready.load(std::memory_order_acquire); }

    // Returns false on timeout. Helps, on a pool worker, like any triad wait.
    bool wait(const steady_time* deadline) {
        if (is_ready())
            return true;
        // An untimed wait here is one on the source too, for a pool deciding during a drain
        // whether somebody waits for the task.
        const bool counted = deadline == nullptr && tls_wait_helper != nullptr;
        if (counted)
            m_source_slot->begin_untimed_wait();
        struct untimed_guard {
            wait_slot* slot;
            ~untimed_guard() {
                if (slot != nullptr)
                    slot->end_untimed_wait();
            }
        } guard{counted ? m_source_slot : nullptr};
        waiter self;
        {
            std::lock_guard lock(m_mutex);
            if (is_ready())
                return true;
            link(m_waiters, self);
        }
        // The firer sets every waiter's slot while holding the mutex, so once this thread holds
        // it, the firer is done with `self` and it may go: on return, and when the wait throws
        // (a blocking wait refused on an event loop's thread, a stand-in that cannot start).
        struct leave {
            shared_hub_base* hub;
            waiter* self;
            ~leave() {
                std::lock_guard lock(hub->m_mutex);
                if (!hub->is_ready())
                    unlink(hub->m_waiters, *self);
            }
        };
        bool woken = false;
        {
            const leave guard{this, &self};
            woken = wait_on(self.slot, deadline);
        }
        return woken || is_ready();
    }

    // False if the result is there already (the caller runs the continuation itself).
    bool add_continuation(hub_link& l) {
        std::lock_guard lock(m_mutex);
        if (is_ready())
            return false;
        link(m_continuations, l);
        return true;
    }

    // True if `l` will never run; false if it has run or is running.
    bool remove_continuation(hub_link& l) noexcept {
        std::lock_guard lock(m_mutex);
        if (is_ready())
            return false;
        unlink(m_continuations, l);
        return true;
    }

protected:
    shared_hub_base(std::uint32_t refs, wait_slot* source) noexcept
        : m_refs(refs), m_source_slot(source) {}
    virtual ~shared_hub_base() = default;

    // The source state's continuation; owns one reference to the hub.
    static void fire(void* context) noexcept {
        auto* self = static_cast<shared_hub_base*>(context);
        hub_link* continuations = nullptr;
        {
            std::lock_guard lock(self->m_mutex);
            self->m_ready.store(true, std::memory_order_release);
            for (waiter* w = self->m_waiters.head; w != nullptr;) {
                waiter* next = w->next;
                w->slot.set_ready();
                w = next;
            }
            self->m_waiters.head = nullptr;
            continuations = std::exchange(self->m_continuations.head, nullptr);
        }
        while (continuations != nullptr) {
            hub_link* next = continuations->next; // the continuation may free its link
            continuations->fn(continuations->context);
            continuations = next;
        }
        self->release();
    }

private:
    struct waiter {
        wait_slot slot;
        waiter* next = nullptr;
        waiter* prev = nullptr;
    };
    template <class Node>
    struct list {
        Node* head = nullptr;
    };
    template <class Node>
    static void link(list<Node>& l, Node& n) noexcept {
        n.prev = nullptr;
        n.next = l.head;
        if (l.head != nullptr)
            l.head->prev = &n;
        l.head = &n;
    }
    template <class Node>
    static void unlink(list<Node>& l, Node& n) noexcept {
        if (n.prev != nullptr)
            n.prev->next = n.next;
        else
            l.head = n.next;
        if (n.next != nullptr)
            n.next->prev = n.prev;
    }

    std::atomic<std::uint32_t> m_refs;
    wait_slot* m_source_slot;
    std::atomic<bool> m_ready{false};
    std::mutex m_mutex;
    list<waiter> m_waiters;
    list<hub_link> m_continuations;
};

template <class T>
class shared_hub final : public shared_hub_base {
public:
    // Takes the future's reference to its state; its continuation slot feeds this hub.
    explicit shared_hub(shared_state<T>* source) noexcept
        : shared_hub_base(2, source), m_source(source) {} // refs: the first shared_future, fire
    ~shared_hub() override {
        if (m_source != nullptr)
            m_source->release();
    }

    // Takes the source's continuation slot. If that throws (the slot is in use), the hub gives
    // the source back untouched and may be deleted.
    static void connect(shared_hub* hub) {
        bool registered = false;
        try {
            registered = hub->m_source->try_set_continuation(&shared_hub_base::fire, hub);
        } catch (...) {
            hub->m_source = nullptr;
            throw;
        }
        if (!registered)
            shared_hub_base::fire(hub);
    }

    typename shared_state<T>::peek_type get() const { return m_source->peek(); }

private:
    shared_state<T>* m_source;
};

template <class Callback>
struct hub_callback_box {
    hub_link link;
    Callback callback;

    static void fire(void* context) noexcept {
        std::unique_ptr<hub_callback_box> self(static_cast<hub_callback_box*>(context));
        std::exception_ptr error;
        try {
            self->callback();
        } catch (...) {
            error = std::current_exception();
        }
        if (error) // after the catch ended (see shared_state::set_error)
            report_unhandled("triad::shared_future::on_ready: the callback threw", error);
    }
};

struct shared_future_access {
    template <class T>
    static shared_hub<T>* hub(const shared_future<T>& f) noexcept {
        return f.m_hub;
    }
};

} // namespace detail

/**
 * A result that any number of threads may read: `future<T>::share()` makes one, and copies share
 * it (Python's futures are all of this kind). `get()` returns a reference to the one stored
 * value (`const T&`; `T&` for `shared_future<T&>`), valid while any copy exists, or rethrows the
 * exception. Any number of waiters and of `on_ready`/`then` continuations; works with `co_await`
 * and `as_completed` like a `future`.
 *
 * @par Thread Safety
 * Distinct copies: safe from any threads, concurrently. One copy: as for a `const` object (many
 * readers; assignment needs exclusive access).
 *
 * @code
 * triad::shared_future<config> cfg = pool.submit(load_config).share();
 * for (int i = 0; i < 4; ++i)
 *     pool.post([cfg] { use(cfg.get()); }); // every task reads the same config
 * @endcode
 */
template <class T>
class [[nodiscard]] shared_future {
public:
    using value_type = T;

    shared_future() noexcept = default;
    shared_future(const shared_future& other) noexcept : m_hub(other.m_hub) {
        if (m_hub != nullptr)
            m_hub->add_ref();
    }
    shared_future(shared_future&& other) noexcept : m_hub(std::exchange(other.m_hub, nullptr)) {}
    shared_future& operator=(shared_future other) noexcept {
        std::swap(m_hub, other.m_hub);
        return *this;
    }
    ~shared_future() {
        if (m_hub != nullptr)
            m_hub->release();
    }

    bool valid() const noexcept { return m_hub != nullptr; }
    bool ready() const noexcept { return m_hub != nullptr && m_hub->is_ready(); }

    /** Waits, then returns the value (a reference into the shared result) or rethrows. */
    typename detail::shared_state<T>::peek_type get() const {
        require_valid("get");
        m_hub->wait(nullptr);
        return m_hub->get();
    }

    void wait() const {
        require_valid("wait");
        m_hub->wait(nullptr);
    }

    template <class Rep, class Period>
    std::future_status wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
        require_valid("wait_for");
        if (m_hub->is_ready())
            return std::future_status::ready;
        const detail::steady_time deadline = detail::deadline_after(timeout);
        return m_hub->wait(&deadline) ? std::future_status::ready : std::future_status::timeout;
    }

    template <class Clock, class Duration>
    std::future_status wait_until(const std::chrono::time_point<Clock, Duration>& time) const {
        require_valid("wait_until");
        if (m_hub->is_ready())
            return std::future_status::ready;
        const detail::steady_time deadline = detail::to_steady_deadline(time);
        return m_hub->wait(&deadline) ? std::future_status::ready : std::future_status::timeout;
    }

    /** Calls `callback()` once ready, as `future::on_ready` does; any number of callbacks. */
    template <class Callback>
    void on_ready(Callback&& callback) const {
        require_valid("on_ready");
        static_assert(std::is_invocable_v<std::decay_t<Callback>&>,
                      "triad::shared_future::on_ready: the callback must be callable with no "
                      "arguments");
        using box = detail::hub_callback_box<std::decay_t<Callback>>;
        auto owned = std::make_unique<box>(box{{}, std::forward<Callback>(callback)});
        owned->link.fn = &box::fire;
        owned->link.context = owned.get();
        if (m_hub->add_continuation(owned->link)) {
            owned.release();
            return;
        }
        owned->callback();
    }

    /** A future of `fn(copy of *this)`, run once ready on the completing thread. */
    template <class Fn>
    auto then(Fn&& fn) const -> future<std::invoke_result_t<std::decay_t<Fn>, shared_future<T>>> {
        static_assert(std::is_invocable_v<std::decay_t<Fn>, shared_future<T>>,
                      "triad::shared_future<T>::then: the function must take a "
                      "triad::shared_future<T>");
        using U = std::invoke_result_t<std::decay_t<Fn>, shared_future<T>>;
        promise<U> p;
        future<U> result = p.get_future();
        on_ready([p = std::move(p), fn = std::forward<Fn>(fn), self = *this]() mutable {
            std::exception_ptr error;
            try {
                if constexpr (std::is_void_v<U>) {
                    std::invoke(std::move(fn), std::move(self));
                    p.set_value();
                } else {
                    p.set_value(std::invoke(std::move(fn), std::move(self)));
                }
            } catch (...) {
                error = std::current_exception();
            }
            if (error) // after the catch ended: see shared_state::set_error
                p.set_exception(std::move(error));
        });
        return result;
    }

private:
    friend class future<T>;
    friend struct detail::shared_future_access;
    explicit shared_future(detail::shared_hub<T>* hub) noexcept : m_hub(hub) {}

    void require_valid(const char* what) const {
        if (m_hub == nullptr)
            throw future_error(detail::concat("triad::shared_future::", what,
                                              ": the shared_future has no state "
                                              "(default-constructed or moved from)"));
    }

    detail::shared_hub<T>* m_hub = nullptr;
};

template <class T>
shared_future<T> future<T>::share() && {
    require_valid("share");
    auto hub = std::make_unique<detail::shared_hub<T>>(m_state);
    detail::shared_hub<T>::connect(hub.get()); // throws, taking nothing, if the slot is in use
    m_state = nullptr;                         // the hub owns the state's reference now
    return shared_future<T>(hub.release());
}

// --- as_completed ----------------------------------------------------------------------------

namespace detail {

// Futures report into this as they complete; the as_completed range reads their indices back in
// that order. Shared by the range and every registered future, so either may go first. When
// the range is left early, it takes back the continuation slots of the futures still pending.
class completion_queue {
public:
    static completion_queue* create(std::size_t count) {
        return std::make_unique<completion_queue>(count).release();
    }

    explicit completion_queue(std::size_t count)
        : m_nodes(count), m_order(std::make_unique<std::atomic<std::uint32_t>[]>(count)),
          m_refs(1) {
        for (std::size_t i = 0; i < count; ++i) {
            m_nodes[i].queue = this;
            m_nodes[i].index = static_cast<std::uint32_t>(i);
        }
    }

    void watch(state_base& state, std::size_t index) {
        node& n = m_nodes[index];
        m_refs.fetch_add(1, std::memory_order_relaxed); // the continuation's
        bool registered = false;
        try {
            registered = state.try_set_continuation(&completion_queue::on_done, &n);
        } catch (...) {
            m_refs.fetch_sub(1, std::memory_order_relaxed);
            throw;
        }
        state.add_ref();
        n.state = &state;
        if (!registered)
            on_done(&n);
    }

    void watch(shared_hub_base& hub, std::size_t index) {
        node& n = m_nodes[index];
        n.link.fn = &completion_queue::on_done;
        n.link.context = &n;
        m_refs.fetch_add(1, std::memory_order_relaxed);
        hub.add_ref();
        n.hub = &hub;
        if (!hub.add_continuation(n.link))
            on_done(&n);
    }

    // Blocks until the position-th completion is known; returns its index.
    std::size_t next(std::size_t position) {
        for (;;) {
            std::uint32_t v = m_order[position].load(std::memory_order_acquire);
            if (v != 0)
                return v - 1;
            m_signal.reset();
            v = m_order[position].load(std::memory_order_acquire);
            if (v != 0)
                return v - 1;
            wait_on(m_signal, nullptr);
        }
    }

    // The consumer is done: every continuation that has not run yet is taken back (the futures
    // can take another one), and the references to the futures' states are dropped.
    void release_slots() noexcept {
        for (node& n : m_nodes) {
            if (n.state != nullptr) {
                if (n.state->try_clear_continuation())
                    m_refs.fetch_sub(1, std::memory_order_relaxed);
                std::exchange(n.state, nullptr)->release();
            } else if (n.hub != nullptr) {
                if (n.hub->remove_continuation(n.link))
                    m_refs.fetch_sub(1, std::memory_order_relaxed);
                std::exchange(n.hub, nullptr)->release();
            }
        }
    }

    void release() noexcept {
        if (m_refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
            std::unique_ptr<completion_queue>{this}.reset();
    }

private:
    struct node {
        completion_queue* queue = nullptr;
        std::uint32_t index = 0;
        state_base* state = nullptr;    // a future's state, referenced
        shared_hub_base* hub = nullptr; // or a shared future's hub, referenced
        hub_link link;
    };

    static void on_done(void* context) noexcept {
        const node* n = static_cast<const node*>(context);
        completion_queue* self = n->queue;
        const std::uint32_t position = self->m_tail.fetch_add(1, std::memory_order_relaxed);
        self->m_order[position].store(n->index + 1, std::memory_order_release);
        self->m_signal.set_ready();
        self->release();
    }

    std::vector<node> m_nodes;
    std::unique_ptr<std::atomic<std::uint32_t>[]> m_order; // index + 1, in completion order
    std::atomic<std::uint32_t> m_tail{0};
    std::atomic<std::uint32_t> m_refs;
    wait_slot m_signal;
};

template <class T>
struct is_future : std::false_type {};
template <class T>
struct is_future<future<T>> : std::true_type {};
template <class T>
struct is_future<shared_future<T>> : std::true_type {};

template <class T>
void watch_future(completion_queue& queue, const future<T>& f, std::size_t index) {
    queue.watch(*future_access::state(f), index);
}
template <class T>
void watch_future(completion_queue& queue, const shared_future<T>& f, std::size_t index) {
    queue.watch(*shared_future_access::hub(f), index);
}

} // namespace detail

/**
 * The range returned by `triad::as_completed`: yields references to the futures of the
 * underlying container in the order they become ready. Leaving the loop early (or destroying
 * the range) gives every future that was not yielded its continuation slot back.
 */
template <class Futures>
class as_completed_range {
public:
    using future_type = std::ranges::range_value_t<Futures>;

    class iterator {
    public:
        using value_type = future_type;
        using difference_type = std::ptrdiff_t;
        using reference = future_type&;

        iterator() = default;
        reference operator*() const { return m_range->m_futures[m_index]; }
        future_type* operator->() const { return &m_range->m_futures[m_index]; }
        /** The position of the current future in the container passed to as_completed. */
        std::size_t index() const noexcept { return m_index; }
        iterator& operator++() {
            advance();
            return *this;
        }
        void operator++(int) { advance(); }
        friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept {
            return it.m_position > it.m_range->size();
        }

    private:
        friend class as_completed_range;
        explicit iterator(as_completed_range* range) : m_range(range) { advance(); }
        void advance() {
            if (m_position < m_range->size())
                m_index = m_range->m_queue->next(m_position);
            ++m_position;
        }
        as_completed_range* m_range = nullptr;
        std::size_t m_position = 0; // one past the completion the iterator is on
        std::size_t m_index = 0;
    };

    explicit as_completed_range(Futures& futures)
        : m_futures(checked(futures)), m_queue(detail::completion_queue::create(size())) {
        try {
            for (std::size_t i = 0; i < size(); ++i)
                detail::watch_future(*m_queue, m_futures[i], i);
        } catch (...) {
            m_queue->release_slots();
            m_queue->release();
            throw;
        }
    }
    as_completed_range(const as_completed_range&) = delete;
    as_completed_range& operator=(const as_completed_range&) = delete;
    ~as_completed_range() {
        m_queue->release_slots();
        m_queue->release();
    }

    /** Blocks until the first future is ready. Call once. */
    iterator begin() { return iterator(this); }
    std::default_sentinel_t end() const noexcept { return {}; }
    std::size_t size() const noexcept { return m_futures.size(); }

private:
    class indexable {
    public:
        indexable() = default;
        explicit indexable(std::vector<future_type*> items) : m_items(std::move(items)) {}
        future_type& operator[](std::size_t i) const { return *m_items[i]; }
        std::size_t size() const noexcept { return m_items.size(); }

    private:
        std::vector<future_type*> m_items;
    };

    static indexable checked(Futures& futures) {
        std::vector<future_type*> items;
        if constexpr (std::ranges::sized_range<Futures>)
            items.reserve(std::ranges::size(futures));
        for (auto& f : futures) {
            if (!f.valid())
                throw future_error(detail::concat("triad::as_completed: future #", items.size(),
                                                  " is not valid (default-constructed, moved "
                                                  "from or consumed)"));
            items.push_back(&f);
        }
        if (items.size() >= std::numeric_limits<std::uint32_t>::max())
            throw std::length_error("triad::as_completed: too many futures (at most 2^32 - 2)");
        return indexable(std::move(items));
    }

    indexable m_futures;
    detail::completion_queue* m_queue;
};

/**
 * Yields the futures of `futures` as they complete, fastest first (Python's
 * `concurrent.futures.as_completed`). The futures stay in your container; the range yields
 * references to them, and `it.index()` tells which one it is. Works on `future`s (using each
 * one's continuation slot until it is yielded or the range is left) and on `shared_future`s.
 * Throws `triad::future_error` if a future is invalid or already has a continuation.
 *
 * @code
 * for (triad::future<int>& f : triad::as_completed(futures))
 *     std::cout << f.get() << '\n';
 * @endcode
 */
template <std::ranges::input_range Futures>
as_completed_range<std::remove_reference_t<Futures>> as_completed(Futures&& futures) {
    static_assert(std::is_lvalue_reference_v<Futures>,
                  "triad::as_completed: pass the futures as an lvalue (a named container); the "
                  "range yields references into it, so it must outlive the loop");
    static_assert(detail::is_future<std::ranges::range_value_t<Futures>>::value,
                  "triad::as_completed: the range must hold triad::future<T> or "
                  "triad::shared_future<T> objects");
    return as_completed_range<std::remove_reference_t<Futures>>(futures);
}

} // namespace triad
