#pragma once

#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <triad/detail/wait_slot.hpp>
#include <triad/errors.hpp>

/// Queues between threads: `triad::blocking_queue<T>` (FIFO) and `triad::priority_queue<T>`.
namespace triad {

/** The tag for a queue without a bound: `triad::blocking_queue<int> q(triad::unbounded);`. */
struct unbounded_t {
    explicit unbounded_t() = default;
};
/** Pass to a queue's constructor instead of a capacity: `push` then never waits for room. */
inline constexpr unbounded_t unbounded{};

namespace detail {

// The FIFO order of triad::blocking_queue. std::deque inserts at its ends with the strong
// guarantee, so a push whose move constructor throws leaves the queue as it was.
template <class T>
class fifo_store {
public:
    using value_type = T;
    static constexpr const char* name = "triad::blocking_queue";

    bool empty() const noexcept { return m_items.empty(); }
    std::size_t size() const noexcept { return m_items.size(); }
    template <class U>
    void push(U&& value) {
        m_items.push_back(std::forward<U>(value));
    }
    T& front() noexcept { return m_items.front(); }
    void pop_front() noexcept { m_items.pop_front(); }

private:
    std::deque<T> m_items;
};

// The order of triad::priority_queue: the greatest by Compare first, equals in the order they were
// pushed (each item carries a sequence number). A node-based set rather than a heap in a vector:
// an item is constructed once in its node and never moved again, so a throwing move constructor,
// move assignment or comparison cannot leave the queue half-sorted or lose an item (a heap moves
// items on every push and pop, and a vector moves them all when it grows).
template <class T, class Compare>
class priority_store {
    struct entry {
        template <class U>
        entry(U&& v, std::uint64_t s) : value(std::forward<U>(v)), sequence(s) {}
        // The set orders by value, but pop moves the value out right before erasing the node,
        // and nothing compares in between.
        mutable T value;
        std::uint64_t sequence;
    };
    struct order {
        Compare compare;
        bool operator()(const entry& a, const entry& b) const {
            if (compare(b.value, a.value))
                return true; // a is greater: it comes first
            if (compare(a.value, b.value))
                return false;
            return a.sequence < b.sequence;
        }
    };

public:
    using value_type = T;
    static constexpr const char* name = "triad::priority_queue";

    explicit priority_store(Compare compare) : m_items(order{std::move(compare)}) {}

    bool empty() const noexcept { return m_items.empty(); }
    std::size_t size() const noexcept { return m_items.size(); }
    template <class U>
    void push(U&& value) {
        // A single-element emplace has the strong guarantee; the number is used only on success.
        m_items.emplace(std::forward<U>(value), m_next_sequence);
        ++m_next_sequence;
    }
    T& front() noexcept { return m_items.begin()->value; }
    void pop_front() noexcept { m_items.erase(m_items.begin()); }

private:
    std::set<entry, order> m_items;
    std::uint64_t m_next_sequence = 0;
};

/**
 * What `triad::blocking_queue` and `triad::priority_queue` share: a bounded queue between threads
 * behind one mutex, with one condition variable for pushers waiting for room and one for poppers
 * waiting for an item. Only the order of the items (the `Store`) differs.
 *
 * Throws: every push after `close()` throws `triad::queue_closed`, also a push that was waiting
 * when the queue was closed. An exception from the item's copy or move constructor (or from
 * `Compare`) reaches the caller and leaves the queue as it was: a push that throws adds nothing,
 * a pop whose move throws leaves the item in the queue.
 *
 * @par Thread Safety
 * Every member may be called from any thread, concurrently. The queue must outlive the threads
 * that use it: destroying it while a thread waits in `push` or `pop` is undefined (close it,
 * then join them).
 */
template <class Store>
class basic_blocking_queue {
public:
    using value_type = typename Store::value_type;

    basic_blocking_queue(const basic_blocking_queue&) = delete;
    basic_blocking_queue& operator=(const basic_blocking_queue&) = delete;

    /**
     * Appends an item, waiting while the queue is full (Python's `put`). An rvalue is moved from
     * only into the queue: if the push is refused (full, timed out, closed) or its own move
     * throws, the caller still has it (unless `Compare` threw, after the move into the queue).
     */
    void push(value_type&& value) { push_with(std::move(value), "push", wait_forever{}); }
    /** Appends a copy, waiting while the queue is full. */
    void push(const value_type& value) requires std::copy_constructible<value_type> {
        push_with(value, "push", wait_forever{});
    }
    /**
     * Appends an item if there is room now (Python's `put_nowait`); false if the queue is full,
     * and then `value` is left as it was.
     */
    [[nodiscard]] bool try_push(value_type&& value) {
        return push_with(std::move(value), "try_push", no_wait{});
    }
    [[nodiscard]] bool
    try_push(const value_type& value) requires std::copy_constructible<value_type> {
        return push_with(value, "try_push", no_wait{});
    }
    /**
     * Appends an item, waiting at most `timeout` for room (Python's `put(item, timeout=)`); false
     * if the time ran out, and then `value` is left as it was.
     */
    template <class Rep, class Period>
    [[nodiscard]] bool push_for(value_type&& value, std::chrono::duration<Rep, Period> timeout) {
        return push_with(std::move(value), "push_for", wait_until{deadline_after(timeout)});
    }
    template <class Rep, class Period>
    [[nodiscard]] bool push_for(
        const value_type& value,
        std::chrono::duration<Rep, Period> timeout) requires std::copy_constructible<value_type> {
        return push_with(value, "push_for", wait_until{deadline_after(timeout)});
    }
    /**
     * Appends an item, waiting for room until `deadline` on any clock; false if it passed. The
     * deadline is converted to `steady_clock` once, on entry: a `system_clock` deadline does not
     * follow later changes of the wall clock.
     */
    template <class Clock, class Duration>
    [[nodiscard]] bool push_until(value_type&& value,
                                  std::chrono::time_point<Clock, Duration> deadline) {
        return push_with(std::move(value), "push_until", wait_until{to_steady_deadline(deadline)});
    }
    template <class Clock, class Duration>
    [[nodiscard]] bool push_until(const value_type& value,
                                  std::chrono::time_point<Clock, Duration> deadline) requires
        std::copy_constructible<value_type> {
        return push_with(value, "push_until", wait_until{to_steady_deadline(deadline)});
    }

    /**
     * The next item, waiting while the queue is empty (Python's `get`); empty only once the queue
     * is closed and drained, so `while (auto item = q.pop())` consumes everything.
     */
    [[nodiscard]] std::optional<value_type> pop() { return pop_with(wait_forever{}); }
    /** The next item if there is one now (Python's `get_nowait`). */
    [[nodiscard]] std::optional<value_type> try_pop() { return pop_with(no_wait{}); }
    /**
     * The next item, waiting at most `timeout` (Python's `get(timeout=)`); empty if the time ran
     * out or the queue is closed and drained (`closed() && size() == 0` tells which: once true it
     * stays true).
     */
    template <class Rep, class Period>
    [[nodiscard]] std::optional<value_type> pop_for(std::chrono::duration<Rep, Period> timeout) {
        return pop_until(deadline_after(timeout));
    }
    /**
     * The next item, waiting until `deadline` on any clock (converted once, as for
     * `push_until`); empty as for `pop_for`.
     */
    template <class Clock, class Duration>
    [[nodiscard]] std::optional<value_type>
    pop_until(std::chrono::time_point<Clock, Duration> deadline) {
        return pop_with(wait_until{to_steady_deadline(deadline)});
    }

    /**
     * No more items: every push from now on throws `triad::queue_closed`, waiting pushers are
     * woken and throw, poppers get what is left and then an empty optional (the sentinel or stop
     * event of the Python version). Idempotent.
     */
    void close() {
        // Notified under the lock: a woken thread may destroy the queue as soon as it returns.
        std::lock_guard lock(m_mutex);
        m_closed = true;
        m_not_full.notify_all();
        m_not_empty.notify_all();
    }

    /** How many items are queued (Python's `qsize()`): a snapshot while other threads work. */
    std::size_t size() const {
        std::lock_guard lock(m_mutex);
        return m_store.size();
    }
    /** The bound given at construction; `std::numeric_limits<std::size_t>::max()` if unbounded. */
    std::size_t capacity() const noexcept { return m_capacity; }
    /** True once `close()` was called. */
    bool closed() const {
        std::lock_guard lock(m_mutex);
        return m_closed;
    }

protected:
    basic_blocking_queue(std::size_t capacity, Store store)
        : m_capacity(capacity), m_store(std::move(store)) {
        if (capacity == 0)
            throw std::invalid_argument(std::string(Store::name) +
                                        ": the capacity must be at least 1 (triad::unbounded for "
                                        "no limit)");
    }
    ~basic_blocking_queue() = default;

private:
    using lock_type = std::unique_lock<std::mutex>;

    // How a push or pop waits for its condition; each returns the condition's final value.
    struct no_wait {
        template <class Ready>
        bool operator()(std::condition_variable&, lock_type&, Ready ready) const {
            return ready();
        }
    };
    struct wait_forever {
        template <class Ready>
        bool operator()(std::condition_variable& cv, lock_type& lock, Ready ready) const {
            cv.wait(lock, ready);
            return true;
        }
    };
    // Any clock's deadline, as triad's futures take it: converted once to steady_clock,
    // saturating (a `time_point::max()` waits forever rather than overflowing).
    struct wait_until {
        steady_time deadline;
        template <class Ready>
        bool operator()(std::condition_variable& cv, lock_type& lock, Ready ready) const {
            return cv.wait_until(lock, deadline, ready);
        }
    };

    template <class U, class Wait>
    bool push_with(U&& value, const char* operation, Wait wait);
    template <class Wait>
    std::optional<value_type> pop_with(Wait wait);

    mutable std::mutex m_mutex;
    std::condition_variable m_not_full;
    std::condition_variable m_not_empty;
    const std::size_t m_capacity;
    Store m_store;
    bool m_closed = false;
};

template <class Store>
template <class U, class Wait>
bool basic_blocking_queue<Store>::push_with(U&& value, const char* operation, Wait wait) {
    lock_type lock(m_mutex);
    if (!wait(m_not_full, lock, [this] { return m_closed || m_store.size() < m_capacity; }))
        return false;
    if (m_closed)
        throw queue_closed(std::string(Store::name) + "::" + operation +
                           ": the queue is closed (nothing can be pushed after close())");
    try {
        m_store.push(std::forward<U>(value));
    } catch (...) {
        // This push may have taken the wake-up meant for the room it did not use: pass it on.
        m_not_full.notify_one();
        throw;
    }
    m_not_empty.notify_one();
    return true;
}

template <class Store>
template <class Wait>
auto basic_blocking_queue<Store>::pop_with(Wait wait) -> std::optional<value_type> {
    lock_type lock(m_mutex);
    if (!wait(m_not_empty, lock, [this] { return m_closed || !m_store.empty(); }) ||
        m_store.empty())
        return std::nullopt;
    // The item leaves the queue only once it is in the caller's optional: the optional is built
    // in place in the return slot (no further move that could throw after the removal), and this
    // guard removes the item afterwards, or, if the item's move threw, leaves it and passes the
    // wake-up on to another popper.
    struct finish_pop {
        basic_blocking_queue& queue;
        int exceptions = std::uncaught_exceptions();
        ~finish_pop() {
            if (std::uncaught_exceptions() > exceptions) {
                queue.m_not_empty.notify_one();
                return;
            }
            queue.m_store.pop_front();
            queue.m_not_full.notify_one();
        }
    } finish{*this};
    return std::optional<value_type>(std::in_place, std::move(m_store.front()));
}

} // namespace detail

/**
 * A bounded FIFO queue between threads, Python's `queue.Queue(maxsize)` with `close()` in place of
 * a sentinel: `push` waits while it is full, `pop` while it is empty; after `close()` pushes
 * throw `triad::queue_closed` and `pop` drains what is left, then returns an empty optional.
 * Timed (`push_for`, `push_until`, `pop_for`, `pop_until`) and non-blocking (`try_push`,
 * `try_pop`) forms; move-only items work. The thread counterpart of the coroutines'
 * `triad::channel`.
 *
 * Throws: the constructor throws `std::invalid_argument` for capacity 0 (`triad::unbounded` means
 * no bound); pushes after `close()` throw `triad::queue_closed`. An item whose move or copy throws
 * leaves the queue as it was and the exception reaches the caller.
 *
 * @par Thread Safety
 * Every member may be called from any thread, concurrently. The queue must outlive the threads
 * that use it (close it, then join them).
 *
 * @code
 * triad::blocking_queue<std::string> lines(64);   // producers wait while 64 are queued
 * std::jthread reader([&] { while (auto line = lines.pop()) handle(*line); });
 * lines.push("hello"); lines.close();             // the reader drains, then stops
 * @endcode
 */
template <class T>
class blocking_queue : public detail::basic_blocking_queue<detail::fifo_store<T>> {
    static_assert(std::is_move_constructible_v<T> && std::is_destructible_v<T>,
                  "triad::blocking_queue<T>: T must be movable or copyable");

public:
    /** Holds at most `capacity` items (at least 1; 0 throws `std::invalid_argument`). */
    explicit blocking_queue(std::size_t capacity)
        : detail::basic_blocking_queue<detail::fifo_store<T>>(capacity, {}) {}
    /** Without a bound: `push` never waits (Python's `queue.Queue()`). */
    explicit blocking_queue(unbounded_t)
        : blocking_queue(std::numeric_limits<std::size_t>::max()) {}
};

/**
 * A bounded priority queue between threads, with the interface of `triad::blocking_queue`: `pop`
 * returns the greatest item by `Compare` first (as `std::priority_queue` does; Python's
 * `queue.PriorityQueue` serves the smallest: pass `std::greater<T>` for that order), and items
 * that compare equal in the order they were pushed (each carries a sequence number), so
 * same-priority work stays first come, first served. Push and pop are O(log n); each item is one
 * node, never moved once queued.
 *
 * Throws: as `triad::blocking_queue`; an exception from `Compare` also leaves the queue as it was.
 *
 * @par Thread Safety
 * Every member may be called from any thread, concurrently. The queue must outlive the threads
 * that use it (close it, then join them).
 *
 * @code
 * triad::priority_queue<std::pair<int, std::string>> jobs(100);   // highest .first first
 * jobs.push({9, "urgent"}); jobs.push({1, "later"});
 * auto next = jobs.pop();                                         // {9, "urgent"}
 * @endcode
 */
template <class T, class Compare = std::less<T>>
class priority_queue : public detail::basic_blocking_queue<detail::priority_store<T, Compare>> {
    static_assert(std::is_move_constructible_v<T> && std::is_destructible_v<T>,
                  "triad::priority_queue<T>: T must be movable or copyable");
    static_assert(std::is_invocable_r_v<bool, const Compare&, const T&, const T&>,
                  "triad::priority_queue<T, Compare>: Compare must be callable as "
                  "compare(const T&, const T&) -> bool, a strict weak order like std::less<T>");
    using base = detail::basic_blocking_queue<detail::priority_store<T, Compare>>;

public:
    /** Holds at most `capacity` items (at least 1; 0 throws `std::invalid_argument`). */
    explicit priority_queue(std::size_t capacity, Compare compare = Compare())
        : base(capacity, detail::priority_store<T, Compare>(std::move(compare))) {}
    /** Without a bound: `push` never waits (Python's `queue.PriorityQueue()`). */
    explicit priority_queue(unbounded_t, Compare compare = Compare())
        : priority_queue(std::numeric_limits<std::size_t>::max(), std::move(compare)) {}
};

} // namespace triad
