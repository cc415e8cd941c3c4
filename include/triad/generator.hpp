#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include <triad/detail/async_core.hpp>
#include <triad/errors.hpp>

namespace triad {

namespace detail {
struct invalid_generator_item {};
} // namespace detail

/**
 * An asynchronous generator (Python's async generator): a coroutine that `co_yield`s a stream
 * of `T` and may `co_await` anything a task can (sleep, futures, `use_task` operations, the
 * primitives of <triad/sync.hpp>, other tasks and generators) between its items. The consumer
 * pulls each item with `co_await gen.next()`, which gives a `std::optional<T>`: the next item,
 * or empty once the body has returned.
 *
 * - Lazy: the body starts at the first `next()` and runs only while a `next()` waits for it.
 * - `co_yield` of an lvalue copies it into the consumer's optional; of an rvalue, moves it (so
 *   a move-only `T` works, with `co_yield std::move(x)`); of another type, converts it.
 * - An exception that leaves the body is rethrown by the `next()` that was waiting; from then
 *   on, as after the end, `next()` returns empty (as Python's `StopAsyncIteration`).
 * - Cancellation: while a `next()` waits, the body runs under the consumer's cancellation, as
 *   an awaited task does: cancelling the consumer makes the body's current suspension point
 *   throw `triad::task_cancelled`, which (unless the body catches it) `next()` then rethrows.
 *   `next()` is itself a cancellation point: a cancellation already pending when it is awaited
 *   throws `task_cancelled` there, without resuming the body (which stays at its `co_yield`).
 * - Destroying the generator while its body waits at a `co_yield` (or has not started)
 *   destroys the body's frame, running the destructors of its locals (Python's `aclose()`).
 *   Destroying it while a `next()` is still waiting for the body lets that `next()` finish
 *   normally; the frame is freed when it has delivered its item.
 * - Each hand-over between consumer and body is a symmetric transfer, so a stream of any
 *   length runs in constant stack, at every optimisation level.
 *
 * Throws `triad::future_error` for misuse: `next()` on an empty (moved-from) generator, or
 * while another `next()` of the same generator is still waiting (one consumer at a time).
 *
 * @par Thread Safety
 * Like a task: used by one thread at a time, the thread of the loop its body awaits on.
 *
 * @code
 * triad::generator<int> ticks(int n) {
 *     for (int i = 0; i < n; ++i) {
 *         co_await triad::sleep(1ms);
 *         co_yield i;
 *     }
 * }
 * auto gen = ticks(10);
 * while (auto tick = co_await gen.next()) use(*tick);
 * @endcode
 */
template <class T>
class [[nodiscard]] generator {
    static_assert(!std::is_reference_v<T>,
                  "triad::generator<T&> is not supported: yield values, pointers or "
                  "std::reference_wrapper");
    static_assert(std::is_reference_v<T> || (std::is_object_v<T> && !std::is_array_v<T>),
                  "triad::generator<T>: T must be an object type (not void, a function or an "
                  "array)");
    static_assert(std::is_reference_v<T> || (!std::is_const_v<T> && !std::is_volatile_v<T>),
                  "triad::generator<const T> is not supported: use triad::generator<T>, whose "
                  "items are moved out to the consumer");

    // What the internals hold: T itself when it is valid, and otherwise a valid stand-in, so
    // that a wrong T gives the static_assert's advice alone, not errors from in here too.
    using item = std::conditional_t<std::is_object_v<std::remove_cvref_t<T>> &&
                                        !std::is_array_v<std::remove_cvref_t<T>>,
                                    std::remove_cvref_t<T>, detail::invalid_generator_item>;

    class yield_awaiter;
    class yield_converted;

public:
    class promise_type;
    class next_awaiter;
    using value_type = T;

    /** An empty generator (`valid() == false`), as left by a move. */
    generator() noexcept = default;
    generator(generator&& other) noexcept : m_handle(std::exchange(other.m_handle, nullptr)) {}
    generator& operator=(generator&& other) noexcept {
        if (this != &other) {
            reset();
            m_handle = std::exchange(other.m_handle, nullptr);
        }
        return *this;
    }
    generator(const generator&) = delete;
    generator& operator=(const generator&) = delete;
    ~generator() { reset(); }

    /** False once moved from. */
    bool valid() const noexcept { return static_cast<bool>(m_handle); }

    /** True once the body has ended: returned, thrown, or ended by a cancellation. */
    bool done() const noexcept { return m_handle && m_handle.promise().finished(); }

    /**
     * `co_await gen.next()`: resumes the body until its next `co_yield` (the item) or its end
     * (empty), and rethrows what the body throws. Await it at once. Throws `future_error` if
     * the generator is empty, or (when awaited) if another `next()` is still waiting.
     */
    next_awaiter next() {
        if (!m_handle)
            throw future_error("triad::generator::next: the generator is empty (moved from)");
        return next_awaiter(m_handle);
    }

private:
    using handle_type = std::coroutine_handle<promise_type>;

    explicit generator(handle_type h) noexcept : m_handle(h) {}

    void reset() noexcept {
        if (!m_handle)
            return;
        const handle_type h = std::exchange(m_handle, nullptr);
        promise_type& p = h.promise();
        // The body runs (or waits inside a co_await) for a next() that is still waiting: its
        // frame must live on until that next() has its item, and then goes with it.
        if (p.m_continuation) {
            p.m_orphaned = true;
            return;
        }
        h.destroy(); // at a co_yield, before the start or after the end: nothing is armed
    }

    handle_type m_handle;
};

// A promise_base, for what every triad suspension point needs of the coroutine that awaits:
// cancellation_of() finds the cancellation the body runs under, and frames come from the frame
// cache. (The rest of promise_base, a spawned task's bookkeeping, goes unused.)
template <class T>
class generator<T>::promise_type : public detail::promise_base {
public:
    generator get_return_object() noexcept {
        const handle_type h = handle_type::from_promise(*this);
        m_self = h;
        return generator(h);
    }

    std::suspend_always initial_suspend() const noexcept { return {}; }

    struct final_awaiter {
        bool await_ready() const noexcept { return false; }
        std::coroutine_handle<> await_suspend(handle_type h) noexcept {
            promise_type& p = h.promise();
            p.m_finished = true;
            return p.hand_back();
        }
        void await_resume() const noexcept {}
    };
    final_awaiter final_suspend() const noexcept { return {}; }

    void return_void() const noexcept {}

    // `co_yield value` of a T: handed over in place; the consumer moves it out of the body.
    yield_awaiter yield_value(item&& value) noexcept {
        m_item = std::addressof(value);
        m_move_item = true;
        return {};
    }
    // `co_yield value` of an lvalue: the consumer gets a copy, the body keeps its value.
    yield_awaiter yield_value(const item& value) noexcept {
        static_assert(std::is_copy_constructible_v<item>,
                      "triad::generator: `co_yield x` of an lvalue copies x, and this T cannot "
                      "be copied: write `co_yield std::move(x)`");
        m_item = std::addressof(value);
        m_move_item = false;
        return {};
    }
    // `co_yield` of another type that converts implicitly: the T it makes lives in the
    // suspended co_yield.
    template <class U>
    requires(!std::is_same_v<std::remove_cvref_t<U>, item> &&
             std::is_convertible_v<U, item>) yield_converted yield_value(U&& value) {
        return yield_converted(item(std::forward<U>(value)));
    }

private:
    friend class generator;

    // Back to the consumer that awaits next() (there always is one while the body runs).
    std::coroutine_handle<> hand_back() noexcept {
        const std::coroutine_handle<> consumer = std::exchange(m_continuation, nullptr);
        return consumer ? detail::transfer(consumer) : std::noop_coroutine();
    }

    const item* m_item = nullptr; // the yielded value, in the suspended body's frame
    bool m_move_item = false;     // it was an rvalue (or a conversion): move it out
    bool m_orphaned = false;      // the generator is gone; the waiting next() frees the frame
};

template <class T>
class generator<T>::yield_awaiter {
public:
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(handle_type h) noexcept {
        return h.promise().hand_back();
    }
    void await_resume() const noexcept {}
};

template <class T>
class generator<T>::yield_converted {
public:
    explicit yield_converted(item value) noexcept(std::is_nothrow_move_constructible_v<item>)
        : m_value(std::move(value)) {}
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(handle_type h) noexcept {
        promise_type& p = h.promise();
        p.m_item = std::addressof(m_value); // this awaiter stays put while the body is suspended
        p.m_move_item = true;
        return p.hand_back();
    }
    void await_resume() const noexcept {}

private:
    item m_value;
};

/** What `generator<T>::next()` returns: await it for a `std::optional<T>`. */
template <class T>
class generator<T>::next_awaiter {
public:
    explicit next_awaiter(handle_type h) noexcept : m_handle(h) {}

    bool await_ready() const {
        promise_type& p = m_handle.promise();
        if (p.m_continuation)
            throw future_error("triad::generator::next: another next() of this generator is "
                               "still waiting; a generator has one consumer at a time");
        return p.finished(); // empty at once
    }

    // A coroutine_handle for one of ours, a bool for a coroutine of another kind.
    template <class Promise>
    auto await_suspend(std::coroutine_handle<Promise> consumer) noexcept {
        promise_type& p = m_handle.promise();
        if constexpr (detail::is_task_promise<Promise>) {
            // The body runs under the consumer's cancellation, as an awaited task does.
            detail::cancel_state& cancel = consumer.promise().cancellation();
            if (cancel.take_request()) {
                m_cancelled = true;
                return detail::transfer(consumer); // the body stays where it is
            }
            p.m_cancel = &cancel;
            p.m_continuation = consumer;
            return detail::transfer(m_handle);
        } else {
            // A consumer of another kind (see detail::is_task_promise), under the generator's
            // own cancellation, never requested: the body runs to its next item or its end
            // here, and the consumer goes on at once, without suspending, if it got there.
            p.m_cancel = &p.m_own_cancel;
            p.m_continuation = std::noop_coroutine();
            detail::resume(m_handle);
            if (!p.m_continuation) // handed back: an item, or the end
                return false;
            p.m_continuation = consumer;
            return true;
        }
    }

    std::optional<item> await_resume() {
        if (m_cancelled)
            throw task_cancelled();
        promise_type& p = m_handle.promise();
        // A generator destroyed while this next() waited left the frame to it.
        struct release {
            handle_type h;
            ~release() {
                promise_type& p = h.promise();
                p.m_item = nullptr;
                if (p.m_orphaned)
                    h.destroy();
            }
        } done{m_handle};
        if (p.m_item != nullptr) {
            if constexpr (std::is_copy_constructible_v<item>) {
                if (!p.m_move_item)
                    return std::optional<item>(*p.m_item);
            }
            return std::optional<item>(std::move(*const_cast<item*>(p.m_item)));
        }
        if (p.failed())
            std::rethrow_exception(std::exchange(p.error(), nullptr));
        return std::nullopt;
    }

private:
    handle_type m_handle;
    bool m_cancelled = false;
};

} // namespace triad
