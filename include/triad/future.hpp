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
} // namespace detail

/**
 * The result of work handed to any triad executor: a value of type `T` (or an exception) that
 * becomes available later.
 *
 * Much lighter than `std::future`: the result lives in the same allocation as the task, and
 * neither setting nor reading it takes a mutex. A future has exactly one consumer; it is
 * move-only, and `get()` consumes it. Destroying an unready future does not block: the work goes
 * on and its result is dropped. Waiting on a future from inside a `triad::thread_pool` task runs
 * other queued tasks meanwhile, so nested submit-and-wait cannot deadlock.
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
    future(future&& other) noexcept : m_state(std::exchange(other.m_state, nullptr)) {}
    future& operator=(future&& other) noexcept {
        if (this != &other) {
            reset();
            m_state = std::exchange(other.m_state, nullptr);
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
     * the future. Throws `triad::future_error` if the future is not valid.
     */
    T get() {
        require_valid("get");
        detail::wait_on(*m_state, nullptr);
        std::unique_ptr<detail::shared_state<T>, releaser> state(std::exchange(m_state, nullptr));
        return state->take();
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
     * continuation per future (`on_ready`, `then`, `as_completed` and `co_await` each use it);
     * a second throws `triad::future_error`. An exception escaping a callback that runs on the
     * producer's thread is reported on stderr, never lost silently.
     */
    template <class Callback>
    void on_ready(Callback&& callback);

    /**
     * Chains work: returns a future of `fn(std::move(*this))`, run as soon as this future is
     * ready, on the thread that makes it ready. Consumes this future.
     */
    template <class Fn>
    auto then(Fn&& fn) && -> future<std::invoke_result_t<std::decay_t<Fn>, future<T>>>;

private:
    friend struct detail::future_access;
    explicit future(detail::shared_state<T>* state) noexcept : m_state(state) {}

    struct releaser {
        void operator()(detail::shared_state<T>* state) const noexcept { state->release(); }
    };

    void reset() noexcept {
        if (m_state != nullptr)
            std::exchange(m_state, nullptr)->release();
    }

    void require_valid(const char* what) const {
        if (m_state == nullptr)
            throw future_error(detail::concat("triad::future::", what,
                                              ": the future has no state (default-constructed, "
                                              "moved from, or already consumed by get())"));
    }

    detail::shared_state<T>* m_state = nullptr;
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
    promise() : m_state(std::make_unique<detail::shared_state<T>>(2).release()) {}
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
            m_state->set_error(std::make_exception_ptr(broken_promise()));
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
        try {
            self->callback();
        } catch (...) {
            report_to_stderr("triad::future::on_ready: the callback threw",
                             std::current_exception());
        }
    }
};

template <class Fn, class T, class U>
class then_state final : public shared_state<U> {
public:
    then_state(Fn fn, future<T> source)
        : shared_state<U>(2), m_fn(std::move(fn)), m_source(std::move(source)) {}

    static void fire(void* context) noexcept {
        auto* self = static_cast<then_state*>(context);
        self->set_from(
            [self] { return std::invoke(std::move(self->m_fn), std::move(self->m_source)); });
        self->publish();
        self->release();
    }

    future<T>& source() noexcept { return m_source; }

private:
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
    state_type* chained = owned.release();
    future<U> result = detail::future_access::make<U>(chained);
    if (!source->try_set_continuation(&state_type::fire, chained))
        state_type::fire(chained);
    return result;
}

/** Blocks until every future in `futures` is ready. Throws `future_error` on an invalid one. */
template <std::ranges::input_range Futures>
void wait_all(Futures&& futures) {
    for (auto& f : futures)
        f.wait();
}

namespace detail {

// Futures report into this as they complete; the as_completed range reads their indices back in
// that order. Shared by the range and every registered future, so either may go first.
class completion_queue {
public:
    static completion_queue* create(std::size_t count) {
        return std::make_unique<completion_queue>(count).release();
    }

    explicit completion_queue(std::size_t count)
        : m_nodes(count), m_order(std::make_unique<std::atomic<std::uint32_t>[]>(count)),
          m_refs(1) {
        for (std::size_t i = 0; i < count; ++i)
            m_nodes[i] = node{this, static_cast<std::uint32_t>(i)};
    }

    void watch(state_base& state, std::size_t index) {
        m_refs.fetch_add(1, std::memory_order_relaxed);
        if (!state.try_set_continuation(&completion_queue::on_done, &m_nodes[index]))
            on_done(&m_nodes[index]);
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

    void release() noexcept {
        if (m_refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
            std::unique_ptr<completion_queue>{this}.reset();
    }

private:
    struct node {
        completion_queue* queue;
        std::uint32_t index;
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

} // namespace detail

/**
 * The range returned by `triad::as_completed`: yields references to the futures of the
 * underlying container in the order they become ready.
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
                m_queue->watch(*detail::future_access::state(m_futures[i]), i);
        } catch (...) {
            m_queue->release(); // futures registered so far hold their own references
            throw;
        }
    }
    as_completed_range(const as_completed_range&) = delete;
    as_completed_range& operator=(const as_completed_range&) = delete;
    ~as_completed_range() { m_queue->release(); }

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
 * references to them, and `it.index()` tells which one it is. Uses each future's continuation
 * slot. Throws `triad::future_error` if a future is invalid or already has a continuation.
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
                  "triad::as_completed: the range must hold triad::future<T> objects");
    return as_completed_range<std::remove_reference_t<Futures>>(futures);
}

} // namespace triad
