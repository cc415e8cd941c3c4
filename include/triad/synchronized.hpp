#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>

#include <triad/detail/posix.hpp>
#include <triad/detail/wait_slot.hpp>

namespace triad {

template <class T, class Mutex>
class synchronized;

namespace detail {

template <class M>
concept shared_lockable = requires(M& m) {
    m.lock_shared();
    m.unlock_shared();
};

// Only try_rlock_for needs this (to poll): rlock, with_rlock and copy share a lock without it.
template <class M>
concept try_shared_lockable = shared_lockable<M> && requires(M& m) {
    { m.try_lock_shared() } -> std::convertible_to<bool>;
};

template <class M>
concept timed_lockable = requires(M& m, std::chrono::nanoseconds d,
                                  std::chrono::system_clock::time_point t) {
    { m.try_lock_for(d) } -> std::convertible_to<bool>;
    { m.try_lock_until(t) } -> std::convertible_to<bool>;
};

template <class M>
concept timed_shared_lockable = requires(M& m, std::chrono::nanoseconds d,
                                         std::chrono::system_clock::time_point t) {
    { m.try_lock_shared_for(d) } -> std::convertible_to<bool>;
    { m.try_lock_shared_until(t) } -> std::convertible_to<bool>;
};

// Only synchronized and synchronize may make a guard that owns a lock.
struct guard_access {
    explicit guard_access() = default;
};

// A timed lock on any mutex: its own timed lock where it has one, otherwise try_lock polled
// with a backoff from 1 us to 1 ms (std::shared_mutex and std::mutex have no timed locking). The
// poll is not queued on the mutex: it sees only releases that last until its next try, so on a
// lock that is released and retaken at once (a busy writer) it can fail for the whole timeout
// while lock() would have got in; it never returns after the deadline plus one sleep. The deadline
// saturates (deadline_after), so hours::max() means "wait as long as it takes"; a NaN timeout
// throws std::invalid_argument. A native timed lock is asked for slices of at most a day: its own
// try_lock_for computes now() + d, which overflows for a huge d, and libstdc++'s timed mutexes then
// give up at once or, for std::shared_timed_mutex, report a lock they never took (pthread's EINVAL
// for the wrapped time counts as success). Under ThreadSanitizer a slice gets a system_clock
// deadline: libstdc++'s try_lock_for waits with pthread_*_clocklock, which Clang 14's
// ThreadSanitizer does not intercept, so it would report the later unlock as an unlock of an
// unlocked mutex; the system_clock wait (pthread_*_timedlock) it sees. A system clock that jumps
// back stretches that slice by the jump; one that jumps ahead only ends the slice early, and the
// next one is taken.
template <bool Shared, class Mutex, class Rep, class Period>
bool try_lock_within(Mutex& m, const std::chrono::duration<Rep, Period>& timeout) {
    using std::chrono::steady_clock;
    const steady_time deadline = deadline_after(timeout);
    if constexpr ((Shared && timed_shared_lockable<Mutex>) || (!Shared && timed_lockable<Mutex>)) {
        constexpr steady_clock::duration longest_slice = std::chrono::hours(24);
        for (;;) {
            const steady_clock::duration slice = std::clamp<steady_clock::duration>(
                deadline - steady_clock::now(), steady_clock::duration::zero(), longest_slice);
            bool locked = false;
            if constexpr (Shared) {
                if constexpr (thread_sanitizer_build)
                    locked = m.try_lock_shared_until(std::chrono::system_clock::now() + slice);
                else
                    locked = m.try_lock_shared_for(slice);
            } else {
                if constexpr (thread_sanitizer_build)
                    locked = m.try_lock_until(std::chrono::system_clock::now() + slice);
                else
                    locked = m.try_lock_for(slice);
            }
            if (locked)
                return true;
            if (steady_clock::now() >= deadline)
                return false;
        }
    } else {
        const auto try_once = [&m] {
            if constexpr (Shared)
                return static_cast<bool>(m.try_lock_shared());
            else
                return static_cast<bool>(m.try_lock());
        };
        std::chrono::microseconds backoff{1};
        for (;;) {
            if (try_once())
                return true;
            const auto now = steady_clock::now();
            if (now >= deadline)
                return false;
            std::this_thread::sleep_for(std::min<steady_clock::duration>(backoff, deadline - now));
            backoff = std::min(backoff * 2, std::chrono::microseconds(1000));
        }
    }
}

/**
 * What `synchronized::lock()` and `rlock()` return: the lock on one `triad::synchronized`
 * value, used like a pointer to the value (`->`, `*`), released by the destructor or `unlock()`.
 * Move-only. A moved-from (or unlocked) guard is empty: `operator bool` is false, and `->` or
 * `*` on it throws `std::logic_error` rather than touch the value without the lock.
 */
template <class T, class Mutex, bool Shared>
class locked_ptr {
public:
    using element_type = std::conditional_t<Shared, const T, T>;

    locked_ptr(guard_access, element_type& value, Mutex& mutex) noexcept
        : m_value(&value), m_mutex(&mutex) {}

    locked_ptr(locked_ptr&& other) noexcept
        : m_value(std::exchange(other.m_value, nullptr)),
          m_mutex(std::exchange(other.m_mutex, nullptr)) {}

    locked_ptr& operator=(locked_ptr&& other) noexcept {
        if (this != &other) {
            unlock();
            m_value = std::exchange(other.m_value, nullptr);
            m_mutex = std::exchange(other.m_mutex, nullptr);
        }
        return *this;
    }

    locked_ptr(const locked_ptr&) = delete;
    locked_ptr& operator=(const locked_ptr&) = delete;

    ~locked_ptr() { unlock(); }

    /** The value; throws `std::logic_error` if this guard is empty (moved from or unlocked). */
    element_type* operator->() const { return &get(); }
    /** The value; throws `std::logic_error` if this guard is empty (moved from or unlocked). */
    element_type& operator*() const { return get(); }

    /** True while this guard holds the lock. */
    explicit operator bool() const noexcept { return m_mutex != nullptr; }

    /** Releases the lock early; the guard is empty afterwards. Does nothing on an empty guard. */
    void unlock() noexcept {
        if (m_mutex == nullptr)
            return;
        if constexpr (Shared) {
            if constexpr (shared_lockable<Mutex>)
                m_mutex->unlock_shared();
        } else {
            m_mutex->unlock();
        }
        m_mutex = nullptr;
        m_value = nullptr;
    }

private:
    element_type& get() const {
        if (m_value == nullptr)
            throw std::logic_error(
                "triad::synchronized: a guard was used after it was moved from or unlocked; "
                "it no longer holds the lock, so take a new one with lock() or rlock()");
        return *m_value;
    }

    element_type* m_value;
    Mutex* m_mutex;
};

} // namespace detail

/**
 * A value and the mutex that guards it, so the value cannot be reached without the lock
 * (folly::Synchronized). `with_lock(f)` runs `f(T&)` under the exclusive lock; `with_rlock(f)`
 * runs `f(const T&)` under a shared lock, so readers run side by side; `lock()` and `rlock()`
 * return a guard that acts as a pointer to the value and unlocks when it goes; `try_lock_for(d)`
 * gives up after `d`. To lock several at once without deadlock, use `triad::synchronize`.
 *
 * `Mutex` may be any mutex with `lock`, `try_lock` and `unlock`; `rlock`, `with_rlock` and
 * `try_rlock_for` also need `lock_shared` and `unlock_shared` (std::shared_timed_mutex, the
 * default, or std::shared_mutex), and with an exclusive-only mutex such as std::mutex they do not
 * compile; `try_rlock_for` needs `try_lock_shared` (or `try_lock_shared_for`) besides. `copy()`
 * takes a shared lock where the mutex has one, the exclusive lock otherwise. Timed locking uses the
 * mutex's `try_lock_for` if it has one, as the default has; std::shared_mutex and std::mutex
 * have not, so there `try_lock` is polled with a backoff of at most 1 ms. A poll is not queued on
 * the mutex: against a lock that is retaken as soon as it is released it can time out although
 * `lock()` would get in. So the default is std::shared_timed_mutex, which waits in the mutex itself
 * (on libstdc++ it is the same pthread read-write lock as std::shared_mutex); with an
 * exclusive-only mutex, prefer std::timed_mutex to std::mutex for the same reason. Guards are
 * move-only; a moved-from (or unlocked) guard is empty and throws `std::logic_error` if
 * dereferenced. The object itself neither copies nor moves (its mutex cannot).
 *
 * @par Thread Safety
 * Every member may be called from any thread, concurrently. The locks are not recursive: a thread
 * that already holds a guard (or is inside `with_lock`) and locks the same object again
 * deadlocks, as with the mutex itself. A guard belongs to the thread that took it (the mutex must
 * be unlocked by the thread that locked it); do not hand a guard to another thread. A guard that
 * is not named lives to the end of its full expression: `for (auto x : *s.rlock())` runs its
 * body unlocked (C++20 destroys the guard before the loop starts), and a reference that `f`
 * returns from `with_lock` outlives the lock; name the guard, or do the work inside `f`.
 *
 * @code
 * triad::synchronized<std::vector<int>> values;
 * pool.parallel_for(0, 100, [&](int i) { values.with_lock([&](auto& v) { v.push_back(i); }); });
 * std::size_t n = values.rlock()->size();   // 100
 * @endcode
 */
template <class T, class Mutex = std::shared_timed_mutex>
class synchronized {
public:
    using value_type = T;
    using mutex_type = Mutex;
    /** What `lock()` returns: exclusive, acts as `T*`. */
    using locked_ptr = detail::locked_ptr<T, Mutex, false>;
    /** What `rlock()` returns: shared, acts as `const T*`. */
    using const_locked_ptr = detail::locked_ptr<T, Mutex, true>;

    /** A value-initialised `T`. */
    synchronized() requires std::default_initializable<T> : m_value() {}
    /** A copy of `value`. */
    explicit synchronized(const T& value) requires std::copy_constructible<T> : m_value(value) {}
    /** `value`, moved in. */
    explicit synchronized(T&& value) requires std::move_constructible<T>
        : m_value(std::move(value)) {}
    /** `T(args...)`, built in place (for types that cannot be moved, or to save a move). */
    template <class... Args>
    requires std::constructible_from<T, Args...>
    explicit synchronized(std::in_place_t, Args&&... args) : m_value(std::forward<Args>(args)...) {}

    // The mutex cannot move, and a copy would need the other's lock: use copy().
    synchronized(const synchronized&) = delete;
    synchronized& operator=(const synchronized&) = delete;

    /** Runs `f(T&)` under the exclusive lock and returns what `f` returns. */
    template <std::invocable<T&> F>
    std::invoke_result_t<F, T&> with_lock(F&& f) {
        std::lock_guard lock(m_mutex);
        return std::invoke(std::forward<F>(f), m_value);
    }

    /** Runs `f(const T&)` under a shared lock (other readers may hold it too). */
    template <std::invocable<const T&> F>
    std::invoke_result_t<F, const T&> with_rlock(F&& f) const {
        static_assert(
            detail::shared_lockable<Mutex>,
            "triad::synchronized<T, Mutex>::with_rlock needs a Mutex with lock_shared() "
            "and unlock_shared(), and this Mutex has none: use std::shared_timed_mutex (the "
            "default Mutex) or std::shared_mutex, or call with_lock");
        if constexpr (detail::shared_lockable<Mutex>) {
            std::shared_lock lock(m_mutex);
            return std::invoke(std::forward<F>(f), m_value);
        }
    }

    /** Takes the exclusive lock; the guard acts as `T*` and unlocks when destroyed. */
    [[nodiscard]] locked_ptr lock() {
        m_mutex.lock();
        return locked_ptr(detail::guard_access{}, m_value, m_mutex);
    }

    /** Takes a shared lock; the guard acts as `const T*` and unlocks when destroyed. */
    [[nodiscard]] const_locked_ptr rlock() const {
        static_assert(
            detail::shared_lockable<Mutex>,
            "triad::synchronized<T, Mutex>::rlock needs a Mutex with lock_shared() "
            "and unlock_shared(), and this Mutex has none: use std::shared_timed_mutex (the "
            "default Mutex) or std::shared_mutex, or call lock");
        if constexpr (detail::shared_lockable<Mutex>)
            m_mutex.lock_shared();
        return const_locked_ptr(detail::guard_access{}, m_value, m_mutex);
    }

    /**
     * The exclusive lock if it can be had within `timeout`, else `std::nullopt` (an optional
     * rather than an empty guard, so the caller must look before using the value). A timeout
     * too long to add to the clock (`hours::max()`) waits as long as it takes; zero or negative
     * tries once; a NaN one throws `std::invalid_argument`.
     */
    template <class Rep, class Period>
    [[nodiscard]] std::optional<locked_ptr>
    try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
        if (!detail::try_lock_within<false>(m_mutex, timeout))
            return std::nullopt;
        return locked_ptr(detail::guard_access{}, m_value, m_mutex);
    }

    /** A shared lock if it can be had within `timeout`, else `std::nullopt`. */
    template <class Rep, class Period>
    [[nodiscard]] std::optional<const_locked_ptr>
    try_rlock_for(const std::chrono::duration<Rep, Period>& timeout) const {
        static_assert(detail::shared_lockable<Mutex>,
                      "triad::synchronized<T, Mutex>::try_rlock_for needs a Mutex with "
                      "lock_shared() and unlock_shared(), and this Mutex has none: use "
                      "std::shared_timed_mutex (the default Mutex) or call try_lock_for");
        static_assert(!detail::shared_lockable<Mutex> || detail::try_shared_lockable<Mutex> ||
                          detail::timed_shared_lockable<Mutex>,
                      "triad::synchronized<T, Mutex>::try_rlock_for needs try_lock_shared() (or "
                      "try_lock_shared_for) on the Mutex, and this one has neither: use "
                      "std::shared_timed_mutex (the default Mutex) or std::shared_mutex, or call "
                      "rlock");
        if constexpr (detail::try_shared_lockable<Mutex> || detail::timed_shared_lockable<Mutex>) {
            if (detail::try_lock_within<true>(m_mutex, timeout))
                return const_locked_ptr(detail::guard_access{}, m_value, m_mutex);
        }
        return std::nullopt;
    }

    /** A copy of the value, taken under a shared lock (the exclusive one if `Mutex` has none). */
    [[nodiscard]] T copy() const requires std::copy_constructible<T> {
        if constexpr (detail::shared_lockable<Mutex>) {
            std::shared_lock lock(m_mutex);
            return m_value;
        } else {
            std::lock_guard lock(m_mutex);
            return m_value;
        }
    }

private:
    template <class... Syncs>
    friend auto synchronize(Syncs&... objects);

    T m_value;
    mutable Mutex m_mutex;
};

namespace detail {

template <class S>
struct is_synchronized : std::false_type {};
template <class T, class M>
struct is_synchronized<synchronized<T, M>> : std::true_type {};

} // namespace detail

/**
 * Locks every argument exclusively, all or none, without deadlock whatever order other threads
 * name them in (`std::lock`'s try-and-back-off), and returns a tuple of their guards, for
 * structured bindings. Throws `std::logic_error` if one object is passed twice: its mutex would
 * be locked twice by this thread, which deadlocks or is undefined.
 *
 * @par Thread Safety
 * As `synchronized::lock()` on each argument; the guards belong to the calling thread.
 *
 * @code
 * triad::synchronized<long> from{100}, to{0};
 * auto [a, b] = triad::synchronize(from, to);   // another thread may call synchronize(to, from)
 * *a -= 30; *b += 30;
 * @endcode
 */
template <class... Syncs>
[[nodiscard]] auto synchronize(Syncs&... objects) {
    static_assert(sizeof...(Syncs) > 0, "triad::synchronize needs at least one object to lock");
    static_assert((detail::is_synchronized<std::remove_const_t<Syncs>>::value && ...),
                  "triad::synchronize takes triad::synchronized objects");
    static_assert((!std::is_const_v<Syncs> && ...),
                  "triad::synchronize takes the exclusive lock of each object, so none may be "
                  "const: use rlock() for a read-only look at one object");
    // The mutexes, not the objects: a synchronized nested at the start of another's value has
    // the outer one's address, yet its own lock.
    const void* const addresses[] = {static_cast<const void*>(&objects.m_mutex)...};
    for (std::size_t i = 0; i < sizeof...(Syncs); ++i)
        for (std::size_t j = i + 1; j < sizeof...(Syncs); ++j)
            if (addresses[i] == addresses[j])
                throw std::logic_error("triad::synchronize: arguments " + std::to_string(i + 1) +
                                       " and " + std::to_string(j + 1) +
                                       " are the same triad::synchronized object; locking it "
                                       "twice from one thread would deadlock, so pass it once");
    if constexpr (sizeof...(Syncs) == 1)
        (objects.m_mutex.lock(), ...);
    else
        std::lock(objects.m_mutex...);
    // Nothing below throws: the guards adopt the locks just taken.
    return std::tuple<typename Syncs::locked_ptr...>(
        typename Syncs::locked_ptr(detail::guard_access{}, objects.m_value, objects.m_mutex)...);
}

} // namespace triad
