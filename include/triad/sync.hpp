#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>

#include <boost/asio/post.hpp>

#include <triad/detail/async_core.hpp>
#include <triad/errors.hpp>

/// Coroutine synchronisation for the tasks of one event loop: semaphore, async_mutex, event and
/// channel. A waiting task never blocks the loop's thread; every wait is a cancellation point
/// that leaves the primitive consistent (a cancelled waiter holds nothing); waiters are served
/// first come, first served. Use them from the loop's thread only (except `event::set`, which
/// any thread may call).
namespace triad {

namespace detail {

class waiter_queue;

// A waiting coroutine, linked into a primitive's queue from its own frame.
struct waiter_node {
    waiter_node* prev = nullptr;
    waiter_node* next = nullptr;
    waiter_queue* queue = nullptr;
    cancellable_wait wait;
    loop_core* loop = nullptr;
    void* payload = nullptr; // what a channel hands over: the value to send, or where to put it
    bool granted = false;
};

class waiter_queue {
public:
    bool empty() const noexcept { return m_head == nullptr; }
    waiter_node* front() const noexcept { return m_head; }

    // Suspends `node` at the back of the queue. False: a cancellation was pending; the
    // awaiting coroutine goes on (and its await_resume throws).
    // `kind` is a static kind_of(who), `who` naming the suspension point.
    template <class Promise>
    bool wait(waiter_node& node, std::coroutine_handle<Promise> h, const wait_kind& kind) {
        node.loop = &current_loop(kind.what);
        if (!node.wait.begin(h, kind, &node))
            return false;
        node.queue = this;
        node.prev = m_tail;
        node.next = nullptr;
        (m_tail != nullptr ? m_tail->next : m_head) = &node;
        m_tail = &node;
        return true;
    }

    // Takes the first waiter off the queue and schedules it, granted.
    waiter_node* wake_front() noexcept {
        waiter_node* n = m_head;
        if (n == nullptr)
            return nullptr;
        unlink(*n);
        n->granted = true;
        n->wait.end();
        n->loop->schedule(n->wait.waiter());
        return n;
    }

    static constexpr wait_kind kind_of(const char* who) noexcept { return {&on_cancel, who}; }

    void wake_all() noexcept {
        while (wake_front() != nullptr) {
        }
    }

private:
    void unlink(waiter_node& n) noexcept {
        (n.prev != nullptr ? n.prev->next : m_head) = n.next;
        (n.next != nullptr ? n.next->prev : m_tail) = n.prev;
        n.prev = n.next = nullptr;
        n.queue = nullptr;
    }

    static void on_cancel(void* context) noexcept {
        auto* node = static_cast<waiter_node*>(context);
        if (node->queue == nullptr)
            return; // granted already; it resumes normally
        node->queue->unlink(*node);
        node->loop->schedule(node->wait.waiter());
    }

    waiter_node* m_head = nullptr;
    waiter_node* m_tail = nullptr;
};

} // namespace detail

/**
 * A counting semaphore for tasks (Python's `asyncio.Semaphore`): caps how many run a section
 * at once, such as API calls in flight.
 *
 * @code
 * triad::semaphore limit(50);
 * auto permit = co_await limit.acquire_guard(); // released when `permit` goes
 * @endcode
 */
class semaphore {
public:
    /** Starts with `permits` permits. */
    explicit semaphore(std::size_t permits) noexcept : m_permits(permits) {}
    semaphore(const semaphore&) = delete;
    semaphore& operator=(const semaphore&) = delete;

    /** Permits available now. */
    std::size_t available() const noexcept { return m_permits; }

    /** Takes a permit if one is free and nobody waits; never suspends. */
    bool try_acquire() noexcept {
        if (m_permits == 0 || !m_waiters.empty())
            return false;
        --m_permits;
        return true;
    }

    /** Returns a permit; the longest waiter gets it. */
    void release() noexcept {
        if (m_waiters.wake_front() == nullptr)
            ++m_permits;
    }

    class acquire_awaiter {
    public:
        explicit acquire_awaiter(semaphore& s) noexcept : m_semaphore(s) {}
        bool await_ready() noexcept { return m_semaphore.try_acquire(); }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> h) {
            static constexpr detail::wait_kind kind =
                detail::waiter_queue::kind_of("triad::semaphore::acquire");
            return m_semaphore.m_waiters.wait(m_node, h, kind);
        }
        void await_resume() { m_node.wait.throw_if_cancelled(); }

    private:
        semaphore& m_semaphore;
        detail::waiter_node m_node;
    };

    /** Takes a permit, waiting for one (a cancellation point). Pair with `release()`. */
    acquire_awaiter acquire() noexcept { return acquire_awaiter(*this); }

    /** A held permit, returned when it goes out of scope. */
    class guard {
    public:
        explicit guard(semaphore* s) noexcept : m_semaphore(s) {}
        guard(guard&& other) noexcept : m_semaphore(std::exchange(other.m_semaphore, nullptr)) {}
        guard& operator=(guard&& other) noexcept {
            if (this != &other) {
                reset();
                m_semaphore = std::exchange(other.m_semaphore, nullptr);
            }
            return *this;
        }
        guard(const guard&) = delete;
        guard& operator=(const guard&) = delete;
        ~guard() { reset(); }
        /** Returns the permit now. */
        void reset() noexcept {
            if (m_semaphore != nullptr)
                std::exchange(m_semaphore, nullptr)->release();
        }

    private:
        semaphore* m_semaphore;
    };

    class guard_awaiter : public acquire_awaiter {
    public:
        explicit guard_awaiter(semaphore& s) noexcept : acquire_awaiter(s), m_target(s) {}
        guard await_resume() {
            acquire_awaiter::await_resume();
            return guard(&m_target);
        }

    private:
        semaphore& m_target;
    };

    /** Takes a permit and returns a guard that gives it back. */
    guard_awaiter acquire_guard() noexcept { return guard_awaiter(*this); }

private:
    std::size_t m_permits;
    detail::waiter_queue m_waiters;
};

/**
 * A mutex for tasks (Python's `asyncio.Lock`): `co_await m.lock()` returns a guard that
 * unlocks when it goes. It is never held across threads, only across suspension points.
 */
class async_mutex {
public:
    async_mutex() noexcept = default;
    async_mutex(const async_mutex&) = delete;
    async_mutex& operator=(const async_mutex&) = delete;

    bool locked() const noexcept { return m_locked; }
    bool try_lock() noexcept {
        if (m_locked)
            return false;
        m_locked = true;
        return true;
    }
    /** Hands the lock to the longest waiter, or frees it. */
    void unlock() noexcept {
        if (m_waiters.wake_front() == nullptr)
            m_locked = false;
    }

    class guard {
    public:
        explicit guard(async_mutex* m) noexcept : m_mutex(m) {}
        guard(guard&& other) noexcept : m_mutex(std::exchange(other.m_mutex, nullptr)) {}
        guard& operator=(guard&& other) noexcept {
            if (this != &other) {
                unlock();
                m_mutex = std::exchange(other.m_mutex, nullptr);
            }
            return *this;
        }
        guard(const guard&) = delete;
        guard& operator=(const guard&) = delete;
        ~guard() { unlock(); }
        void unlock() noexcept {
            if (m_mutex != nullptr)
                std::exchange(m_mutex, nullptr)->unlock();
        }

    private:
        async_mutex* m_mutex;
    };

    class lock_awaiter {
    public:
        explicit lock_awaiter(async_mutex& m) noexcept : m_mutex(m) {}
        bool await_ready() noexcept { return m_mutex.try_lock(); }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> h) {
            static constexpr detail::wait_kind kind =
                detail::waiter_queue::kind_of("triad::async_mutex::lock");
            return m_mutex.m_waiters.wait(m_node, h, kind);
        }
        guard await_resume() {
            m_node.wait.throw_if_cancelled();
            return guard(&m_mutex);
        }

    private:
        async_mutex& m_mutex;
        detail::waiter_node m_node;
    };

    /** Locks, waiting if needed (a cancellation point), and returns the guard. */
    lock_awaiter lock() noexcept { return lock_awaiter(*this); }

private:
    bool m_locked = false;
    detail::waiter_queue m_waiters;
};

namespace detail {
// What a thread other than the loop's needs in order to set an event: the loop its waiters are
// on, and whether the event still exists when the loop gets round to waking them.
struct event_remote {
    std::mutex mutex;
    std::shared_ptr<loop_gate> gate; // the loop's, under mutex
    // The same gate, for a lock-free check on the loop's thread. A gate, not the loop: a later
    // loop may sit at a gone loop's address, never at the address of a gate still held here.
    std::atomic<loop_gate*> bound{nullptr};
    void* target = nullptr;                   // the event, null once destroyed; under mutex
    std::atomic<std::uint64_t> generation{0}; // sets from other threads so far
};
} // namespace detail

/**
 * A flag tasks can wait for (Python's `asyncio.Event`).
 *
 * @par Thread Safety
 * `set`, `clear` and `is_set` from any thread: a `set` from outside the loop's thread wakes the
 * waiters on the loop's thread (by a post to it). `wait` from the tasks of one loop. The event
 * may be destroyed on any thread once no task waits on it, also while a wake is on its way.
 */
class event {
public:
    event() : m_remote(std::make_shared<detail::event_remote>()) { m_remote->target = this; }
    event(const event&) = delete;
    event& operator=(const event&) = delete;
    ~event() {
        const std::lock_guard lock(m_remote->mutex);
        m_remote->target = nullptr; // a wake posted by another thread finds it gone
    }

    bool is_set() const noexcept { return m_set.load(std::memory_order_acquire); }

    /**
     * Sets the flag and wakes every waiter. From another thread, throws `std::bad_alloc` if the
     * wake cannot be posted to the loop (the flag is set regardless).
     */
    void set() {
        detail::loop_core* const here = detail::tls_loop;
        if (here != nullptr &&
            m_remote->bound.load(std::memory_order_acquire) == here->gate().get()) {
            m_set.store(true, std::memory_order_release);
            m_waiters.wake_all();
            return;
        }
        // Copied first: once the flag is visible a task may destroy this event.
        std::shared_ptr<detail::event_remote> remote = m_remote;
        std::shared_ptr<detail::loop_gate> gate;
        std::uint64_t generation = 0;
        {
            const std::lock_guard lock(remote->mutex);
            // The flag before the generation: a waiter that sees this generation sees the flag
            // (and does not wait), one that does not is woken by it.
            m_set.store(true, std::memory_order_seq_cst);
            generation = remote->generation.fetch_add(1, std::memory_order_seq_cst) + 1;
            gate = remote->gate;
        }
        if (!gate)
            return; // nobody has waited yet: a waiter sees the flag
        gate->post([remote = std::move(remote), gate, generation] {
            if (!gate->open())
                return; // run by a user's io_context after the loop went: no waiter is left
            // Held while waking: another thread may destroy the event meanwhile.
            const std::lock_guard lock(remote->mutex);
            auto* const self = static_cast<event*>(remote->target);
            // Every task that waited when set() ran is woken, even if the flag was cleared
            // since (as a set on the loop's thread would have); later waiters are not. Once the
            // event is bound to another loop, its waiters are that loop's, not this thread's.
            if (self != nullptr && remote->gate == gate)
                while (!self->m_waiters.empty() &&
                       reinterpret_cast<std::uintptr_t>(self->m_waiters.front()->payload) <
                           generation)
                    self->m_waiters.wake_front();
        });
    }
    void clear() noexcept { m_set.store(false, std::memory_order_release); }

    class wait_awaiter {
    public:
        explicit wait_awaiter(event& e) noexcept : m_event(e) {}
        bool await_ready() const noexcept { return m_event.is_set(); }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> h) {
            detail::loop_core& loop = detail::current_loop("triad::event::wait");
            if (m_event.m_remote->bound.load(std::memory_order_acquire) != loop.gate().get() &&
                !m_event.bind(loop))
                return false; // set meanwhile by another thread
            // The sets this waiter must not be woken by (they came before it).
            m_node.payload = reinterpret_cast<void*>(static_cast<std::uintptr_t>(
                m_event.m_remote->generation.load(std::memory_order_seq_cst)));
            if (m_event.m_set.load(std::memory_order_seq_cst))
                return false; // set by another thread since await_ready
            static constexpr detail::wait_kind kind =
                detail::waiter_queue::kind_of("triad::event::wait");
            return m_event.m_waiters.wait(m_node, h, kind);
        }
        void await_resume() { m_node.wait.throw_if_cancelled(); }

    private:
        event& m_event;
        detail::waiter_node m_node;
    };

    /** Waits until the flag is set (a cancellation point). */
    wait_awaiter wait() noexcept { return wait_awaiter(*this); }

private:
    // Makes `loop` the one whose thread another thread's set() posts to. False: already set.
    bool bind(detail::loop_core& loop) {
        const std::lock_guard lock(m_remote->mutex);
        if (is_set())
            return false;
        if (!m_waiters.empty())
            throw std::logic_error("triad::event::wait: tasks of another event loop already wait "
                                   "on this event; an event serves the tasks of one loop");
        m_remote->gate = loop.gate();
        m_remote->bound.store(loop.gate().get(), std::memory_order_release);
        return true;
    }

    std::atomic<bool> m_set{false};
    std::shared_ptr<detail::event_remote> m_remote;
    detail::waiter_queue m_waiters;
};

/**
 * A bounded FIFO between tasks, the producer/consumer queue of the async world: `send` waits
 * while it is full, `receive` while it is empty. `close()` ends it: `send` then throws
 * `triad::channel_closed`, and receivers get what is left, then an empty optional.
 *
 * @code
 * triad::channel<std::string> pages(16);
 * co_await pages.send(body);
 * while (auto page = co_await pages.receive()) analyse(*page);
 * @endcode
 */
template <class T>
class channel {
public:
    /** Holds up to `capacity` values (at least 1; 0 throws `std::invalid_argument`). */
    explicit channel(std::size_t capacity) : m_capacity(capacity) {
        if (capacity == 0)
            throw std::invalid_argument("triad::channel: the capacity must be at least 1");
    }
    channel(const channel&) = delete;
    channel& operator=(const channel&) = delete;

    std::size_t size() const noexcept { return m_buffer.size(); }
    std::size_t capacity() const noexcept { return m_capacity; }
    bool closed() const noexcept { return m_closed; }

    /** Ends the channel: waiting senders throw `channel_closed`, waiting receivers get empty. */
    void close() noexcept {
        m_closed = true;
        m_senders.wake_all();
        m_receivers.wake_all();
    }

    /** Sends without waiting if there is room; false if full. Throws if closed. */
    bool try_send(T value) { return try_send_from(value); }

    class send_awaiter {
    public:
        send_awaiter(channel& c, T value) : m_channel(c), m_value(std::move(value)) {}
        bool await_ready() {
            if (m_channel.m_closed)
                return true; // await_resume throws
            m_sent = m_channel.try_send_from(m_value);
            return m_sent;
        }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> h) {
            m_node.payload = &m_value;
            static constexpr detail::wait_kind kind =
                detail::waiter_queue::kind_of("triad::channel::send");
            return m_channel.m_senders.wait(m_node, h, kind);
        }
        void await_resume() {
            if (m_sent || (m_node.granted && m_node.payload == nullptr))
                return; // delivered (a receiver took the value while we waited)
            m_node.wait.throw_if_cancelled();
            throw channel_closed("triad::channel: send on a closed channel");
        }

    private:
        channel& m_channel;
        T m_value;
        detail::waiter_node m_node;
        bool m_sent = false;
    };

    /** Sends `value`, waiting while the channel is full (a cancellation point). */
    send_awaiter send(T value) { return send_awaiter(*this, std::move(value)); }

    class receive_awaiter {
    public:
        explicit receive_awaiter(channel& c) noexcept : m_channel(c) {}
        bool await_ready() {
            m_result = m_channel.try_receive();
            return m_result.has_value() || m_channel.m_closed;
        }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> h) {
            m_node.payload = &m_result;
            static constexpr detail::wait_kind kind =
                detail::waiter_queue::kind_of("triad::channel::receive");
            return m_channel.m_receivers.wait(m_node, h, kind);
        }
        std::optional<T> await_resume() {
            if (!m_result)
                m_node.wait.throw_if_cancelled();
            return std::move(m_result);
        }

    private:
        channel& m_channel;
        std::optional<T> m_result;
        detail::waiter_node m_node;
    };

    /**
     * The next value, waiting while the channel is empty (a cancellation point); empty once the
     * channel is closed and drained.
     */
    receive_awaiter receive() noexcept { return receive_awaiter(*this); }

    /** A value if one is ready, without waiting. */
    std::optional<T> try_receive() {
        if (m_buffer.empty())
            return std::nullopt;
        std::optional<T> value(std::move(m_buffer.front()));
        m_buffer.pop_front();
        // Room now: the longest-waiting sender's value moves in.
        if (detail::waiter_node* sender = m_senders.front()) {
            m_buffer.push_back(std::move(*static_cast<T*>(sender->payload)));
            sender->payload = nullptr; // delivered
            m_senders.wake_front();
        }
        return value;
    }

private:
    // Moves `value` out only when it is taken.
    bool try_send_from(T& value) {
        if (m_closed)
            throw channel_closed("triad::channel: send on a closed channel");
        if (deliver_to_receiver(value))
            return true;
        if (m_buffer.size() >= m_capacity)
            return false;
        m_buffer.push_back(std::move(value));
        return true;
    }

    // A waiting receiver takes the value directly.
    bool deliver_to_receiver(T& value) {
        detail::waiter_node* receiver = m_receivers.front();
        if (receiver == nullptr)
            return false;
        static_cast<std::optional<T>*>(receiver->payload)->emplace(std::move(value));
        m_receivers.wake_front();
        return true;
    }

    std::size_t m_capacity;
    std::deque<T> m_buffer;
    bool m_closed = false;
    detail::waiter_queue m_senders;
    detail::waiter_queue m_receivers;
};

} // namespace triad
