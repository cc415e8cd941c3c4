#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <triad/detail/parker.hpp>
#include <triad/detail/posix.hpp>
#include <triad/detail/text.hpp>
#include <triad/detail/wait_slot.hpp>
#include <triad/errors.hpp>
#include <triad/serialize.hpp>

namespace triad {

/**
 * A FIFO queue that producer and consumer *processes* share (Python's `multiprocessing.Queue`):
 * create it, then start `triad::process` children, which inherit it. Values travel through a
 * pipe in triad's codec; process-shared robust mutexes keep messages whole with several
 * producers and several consumers.
 *
 * `close()` ends the stream: `put` then throws `triad::pool_closed`, and each consumer receives
 * what is left and then an empty optional — no sentinel values needed. A process that dies
 * holding the queue's lock leaves its messages in doubt; the next user gets
 * `triad::protocol_error` instead of a corrupt value. A `put` blocks while the pipe is full
 * (about 1 MiB), which keeps fast producers from running away.
 *
 * @par Thread Safety
 * Any number of threads and processes may put and get concurrently.
 *
 * @code
 * triad::process_queue<std::string> lines;
 * triad::process consumer([&] { while (auto line = lines.get()) std::puts(line->c_str()); });
 * lines.put("hello");
 * lines.close();
 * @endcode
 */
/** What a non-blocking or timed queue operation did. */
enum class queue_status {
    success, ///< the value was put or taken
    full,    ///< `try_put`: the queue holds `max_size` values
    empty,   ///< `try_get`: nothing to take now
    timeout, ///< `put_for` / `get_for`: the time ran out
    closed,  ///< the queue is closed (a put), or closed and drained (a get)
};

template <class T>
class process_queue {
public:
    /**
     * An unbounded queue (`put` waits only while the pipe is full, about 1 MiB), or one that
     * holds at most `max_size` values (Python's `Queue(maxsize)`): `put` then waits for room.
     */
    explicit process_queue(std::size_t max_size = 0);
    ~process_queue();
    process_queue(const process_queue&) = delete;
    process_queue& operator=(const process_queue&) = delete;

    /**
     * Appends a value, waiting for room in a bounded queue. Throws `triad::pool_closed` after
     * `close()`, also when closing ends the wait.
     */
    void put(const T& value);
    /** Appends a value if there is room now (Python's `put_nowait`). */
    queue_status try_put(const T& value);
    /** Appends a value, waiting at most `timeout` for room (Python's `put(block, timeout)`). */
    template <class Rep, class Period>
    queue_status put_for(const T& value, std::chrono::duration<Rep, Period> timeout);

    /** The next value, blocking until there is one; empty once the queue is closed and drained. */
    std::optional<T> get();
    /** Takes the next value into `out` if one is there now (Python's `get_nowait`). */
    queue_status try_get(T& out);
    /** Takes the next value into `out`, waiting at most `timeout` (Python's `get(timeout=)`). */
    template <class Rep, class Period>
    queue_status get_for(T& out, std::chrono::duration<Rep, Period> timeout);

    /**
     * How many values are in the queue (Python's `qsize()`): a snapshot, as other processes
     * put and take concurrently.
     */
    std::size_t size() const noexcept {
        return static_cast<std::size_t>(m_shared->count.load(std::memory_order_acquire));
    }
    /** The bound given at construction; 0: unbounded. */
    std::size_t max_size() const noexcept { return m_max_size; }

    /** No more values: consumers drain what is queued, then get an empty optional. Idempotent. */
    void close();

    /** True once some process called `close()`. */
    bool closed() const noexcept { return m_shared->closed.load(std::memory_order_acquire) != 0; }

private:
    static constexpr std::uint64_t close_mark = ~std::uint64_t{0};

    struct shared_block {
        pthread_mutex_t write_lock;
        pthread_mutex_t read_lock;
        // Bumped when a bounded queue gets room (a value taken) or closes; a futex word that
        // producers waiting for room sleep on. Nothing is reserved while waiting, so a producer
        // killed then takes nothing with it.
        std::atomic<std::int32_t> room_changed{0};
        std::atomic<std::uint32_t> room_waiters{0};
        std::atomic<std::uint64_t> count{0};
        std::atomic<std::uint32_t> closed{0};
        std::atomic<std::uint32_t> broken{0};
        // Set while a holder of the lock is halfway through a message.
        std::atomic<std::uint32_t> writing{0};
        std::atomic<std::uint32_t> reading{0};
    };

    class lock {
    public:
        // Without a deadline it waits as long as it takes; with one, owns() says if it got it.
        lock(pthread_mutex_t& mutex, std::atomic<std::uint32_t>& midway, shared_block& shared,
             const timespec* deadline = nullptr)
            : m_mutex(mutex) {
            const int rc = deadline == nullptr ? ::pthread_mutex_lock(&m_mutex)
                                               : timed_lock(m_mutex, *deadline);
            if (rc == ETIMEDOUT) {
                m_owned = false;
                return;
            }
            if (rc == EOWNERDEAD) {
                // Its last owner died. Only if it died halfway through a message is the stream
                // cut somewhere unknown; a consumer killed while waiting breaks nothing.
                if (midway.load(std::memory_order_acquire) != 0)
                    shared.broken.store(1, std::memory_order_release);
                ::pthread_mutex_consistent(&m_mutex);
            } else if (rc != 0) {
                detail::throw_errno("triad::process_queue: pthread_mutex_lock", rc);
            }
            if (shared.broken.load(std::memory_order_acquire) != 0) {
                ::pthread_mutex_unlock(&m_mutex);
                throw protocol_error("triad::process_queue: a process died while using the "
                                     "queue, so its contents can no longer be trusted");
            }
        }
        ~lock() {
            if (m_owned)
                ::pthread_mutex_unlock(&m_mutex);
        }
        lock(const lock&) = delete;
        lock& operator=(const lock&) = delete;
        bool owns() const noexcept { return m_owned; }

        static int timed_lock(pthread_mutex_t& mutex, const timespec& deadline) {
            if constexpr (!detail::thread_sanitizer_build)
                return ::pthread_mutex_timedlock(&mutex, &deadline);
            // ThreadSanitizer's pthread_mutex_timedlock does not understand EOWNERDEAD (a
            // robust mutex whose owner died) and then reports its unlock; its trylock does.
            for (auto pause = std::chrono::microseconds(50);;
                 pause = std::min(pause * 2, std::chrono::microseconds(1000))) {
                const int rc = ::pthread_mutex_trylock(&mutex);
                if (rc != EBUSY)
                    return rc;
                timespec now{};
                ::clock_gettime(CLOCK_REALTIME, &now);
                if (now.tv_sec > deadline.tv_sec ||
                    (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec))
                    return ETIMEDOUT;
                std::this_thread::sleep_for(pause);
            }
        }

    private:
        pthread_mutex_t& m_mutex;
        bool m_owned = true;
    };

    using clock = std::chrono::steady_clock;
    static constexpr auto forever = clock::time_point::max();

    // The wall-clock moment `when` falls on, for the waits that take CLOCK_REALTIME deadlines
    // (pthread_mutex_timedlock: what ThreadSanitizer understands; pthread_mutex_clocklock it
    // does not).
    static timespec realtime(clock::time_point when) noexcept {
        const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::max(when - clock::now(), clock::duration::zero()));
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count() +
                        std::min<std::int64_t>(left.count(), std::int64_t{1} << 50);
        return timespec{static_cast<time_t>(ns / 1'000'000'000),
                        static_cast<long>(ns % 1'000'000'000)};
    }

    std::vector<char> encode_frame(const T& value) const {
        std::vector<char> frame(sizeof(std::uint64_t));
        encode_to(frame, value);
        const std::uint64_t size = frame.size() - sizeof(std::uint64_t);
        std::memcpy(frame.data(), &size, sizeof size);
        return frame;
    }
    // Waits until a bounded queue's room changed from `seen` (false: `deadline` came first);
    // looks at closed() every 50 ms too.
    bool wait_for_room(std::int32_t seen, clock::time_point deadline);
    void room_made() noexcept;
    queue_status put_until(const T& value, clock::time_point deadline);
    class midway;
    // With the write lock held: writes the frame if the pipe has room for it by `deadline`
    // (false if not, and nothing was written); `writing` is set once the first bytes go.
    bool write_frame_by(const std::vector<char>& frame, clock::time_point deadline,
                        std::optional<midway>& writing, bool& counted);
    static bool wait_writable(int fd, clock::time_point deadline);
    static std::size_t pipe_page() noexcept;
    std::size_t bytes_in_pipe() const {
        int queued = 0;
        if (::ioctl(m_pipe.read.get(), FIONREAD, &queued) != 0)
            detail::throw_errno("triad::process_queue: ioctl(FIONREAD)");
        return static_cast<std::size_t>(std::max(queued, 0));
    }
    static std::size_t pipe_capacity(int fd);
    // How long a timed operation waits for the queue's lock: its own deadline, but at least as
    // long as another process's read or write of one message takes, so that a try_put or
    // try_get does not report `full` or `empty` merely because someone else was at work.
    // (Ten times longer under ThreadSanitizer, which runs that much slower and whose lock is
    // polled: see timed_lock.)
    static clock::time_point lock_deadline(clock::time_point deadline) noexcept {
        constexpr auto grace = std::chrono::milliseconds(detail::thread_sanitizer_build ? 200 : 20);
        return deadline == forever ? forever : std::max(deadline, clock::now() + grace);
    }
    queue_status get_until(T& out, clock::time_point deadline);
    // With the read lock held: waits for a frame by `deadline`, reads it into `out`.
    queue_status read_frame(T& out, clock::time_point deadline);
    // Reads `size` bytes of a message (false: end of file before the first, if allowed). While
    // bytes are missing it checks, ten times a second, that a writer is still at work: one that
    // died halfway through the message breaks the queue (protocol_error) instead of hanging
    // this reader.
    bool read_whole(void* data, std::size_t size, bool end_allowed);
    void check_writer_alive();

    // Set while this process is halfway through a message; if it leaves by an exception there,
    // the stream is cut somewhere unknown and the queue is broken for everyone.
    class midway {
    public:
        midway(std::atomic<std::uint32_t>& flag, shared_block& shared) noexcept
            : m_flag(flag), m_shared(shared) {
            m_flag.store(1, std::memory_order_release);
        }
        ~midway() {
            if (!m_done)
                m_shared.broken.store(1, std::memory_order_release);
            m_flag.store(0, std::memory_order_release);
        }
        midway(const midway&) = delete;
        midway& operator=(const midway&) = delete;
        void done() noexcept { m_done = true; }

    private:
        std::atomic<std::uint32_t>& m_flag;
        shared_block& m_shared;
        bool m_done = false;
    };

    void write_frame(const void* data, std::size_t size) {
        if (const int error = detail::write_all(m_pipe.write.get(), data, size); error != 0)
            detail::throw_errno("triad::process_queue: write", error);
    }

    shared_block* m_shared = nullptr;
    detail::pipe_pair m_pipe;
    detail::unique_fd m_nonblocking_write; // the pipe's write end again, for timed puts
    std::size_t m_max_size = 0;
};

template <class T>
process_queue<T>::process_queue(std::size_t max_size) : m_max_size(max_size) {
    // An unsendable T is refused here, where the queue is declared, rather than by a constraint
    // on the class: a failed constraint says nothing about what can be sent, and GCC then
    // reports every later use of the queue as well.
    if constexpr (!serializable<T>)
        detail::refuse_unserializable<std::remove_cv_t<T>>();
    void* memory = ::mmap(nullptr, sizeof(shared_block), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        detail::throw_errno("triad::process_queue: mmap");
    m_shared = ::new (memory) shared_block();
    pthread_mutexattr_t attributes;
    ::pthread_mutexattr_init(&attributes);
    ::pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
    ::pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    ::pthread_mutex_init(&m_shared->write_lock, &attributes);
    ::pthread_mutex_init(&m_shared->read_lock, &attributes);
    ::pthread_mutexattr_destroy(&attributes);
    try {
        // Children started with triad::process inherit it through fork; O_CLOEXEC keeps it out
        // of programs anyone execs.
        m_pipe = detail::make_pipe(O_CLOEXEC);
        // Process pools built later keep it open in their servers and workers.
        detail::shared_descriptors::add(m_pipe.read.get());
        detail::shared_descriptors::add(m_pipe.write.get());
        // A second open file of the same pipe (through /proc), so that it alone is
        // non-blocking, for timed puts of small values. Without /proc they fall back on
        // estimating the room in the pipe, as larger values do.
        const std::string self = detail::concat("/proc/self/fd/", m_pipe.write.get());
        m_nonblocking_write =
            detail::unique_fd(::open(self.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
        if (m_nonblocking_write)
            detail::shared_descriptors::add(m_nonblocking_write.get());
    } catch (...) {
        detail::shared_descriptors::remove(m_pipe.read.get());
        detail::shared_descriptors::remove(m_pipe.write.get());
        ::munmap(memory, sizeof(shared_block));
        throw;
    }
    detail::grow_pipe(m_pipe.write.get(), 1 << 20);
}

template <class T>
process_queue<T>::~process_queue() {
    detail::shared_descriptors::remove(m_pipe.read.get());
    detail::shared_descriptors::remove(m_pipe.write.get());
    detail::shared_descriptors::remove(m_nonblocking_write.get());
    m_nonblocking_write.reset();
    m_pipe.read.reset();
    m_pipe.write.reset();
    // Every process unmaps its own view; the mutexes live as long as any view does.
    ::munmap(m_shared, sizeof(shared_block));
}

template <class T>
bool process_queue<T>::wait_for_room(std::int32_t seen, clock::time_point deadline) {
    // Dekker with room_made(): this counts itself a waiter before it looks at the word; a
    // consumer changes the word before it looks at the waiters.
    m_shared->room_waiters.fetch_add(1, std::memory_order_seq_cst);
    bool in_time = true;
    while (m_shared->room_changed.load(std::memory_order_seq_cst) == seen && !closed()) {
        const auto now = clock::now();
        if (now >= deadline) {
            in_time = false;
            break;
        }
        // And look again after 50 ms, whatever happens.
        const auto slice = std::min(deadline, now + std::chrono::milliseconds(50));
        detail::futex_wait(m_shared->room_changed, seen, &slice,
                           detail::futex_scope::process_shared);
    }
    m_shared->room_waiters.fetch_sub(1, std::memory_order_relaxed);
    return in_time;
}

template <class T>
void process_queue<T>::room_made() noexcept {
    m_shared->room_changed.fetch_add(1, std::memory_order_seq_cst);
    if (m_shared->room_waiters.load(std::memory_order_seq_cst) != 0)
        detail::futex_wake(m_shared->room_changed, INT_MAX, detail::futex_scope::process_shared);
}

template <class T>
queue_status process_queue<T>::put_until(const T& value, clock::time_point deadline) {
    const std::vector<char> frame = encode_frame(value);
    for (;;) {
        if (closed())
            return queue_status::closed;
        std::int32_t room_seen = 0;
        {
            // A put with a deadline waits for room in the pipe only until then, and for the
            // lock no longer than another producer's write takes: one blocked on a full pipe
            // makes it give up, one merely at work does not make a try_put say `full`.
            std::optional<lock> guard;
            const auto started = clock::now();
            for (;;) {
                const timespec until = realtime(lock_deadline(deadline));
                guard.emplace(m_shared->write_lock, m_shared->writing, *m_shared,
                              deadline == forever ? nullptr : &until);
                if (guard->owns())
                    break;
                // Still held. With room in the pipe that is a write at work, only slow (a
                // loaded machine, a preempted holder): wait on, up to a second. A full pipe
                // (the holder blocked on it) or a stall that long means `full`.
                const bool pipe_full = bytes_in_pipe() + frame.size() + pipe_page() >
                                       pipe_capacity(m_pipe.write.get());
                if (pipe_full ||
                    clock::now() >= std::max(deadline, started + std::chrono::seconds(1)))
                    return queue_status::timeout;
            }
            if (closed())
                return queue_status::closed;
            // A bounded queue's room is counted under the write lock, so no other producer
            // takes it meanwhile (consumers only make more).
            room_seen = m_shared->room_changed.load(std::memory_order_seq_cst);
            if (m_max_size == 0 || m_shared->count.load(std::memory_order_acquire) < m_max_size) {
                std::optional<midway> writing;
                bool counted = false;
                bool timed_out = false;
                try {
                    if (deadline == forever) {
                        // Counted first: a fast consumer's decrement must never come before it.
                        m_shared->count.fetch_add(1, std::memory_order_acq_rel);
                        counted = true;
                        writing.emplace(m_shared->writing, *m_shared);
                        write_frame(frame.data(), frame.size());
                    } else {
                        timed_out = !write_frame_by(frame, deadline, writing, counted);
                    }
                } catch (...) {
                    if (counted)
                        m_shared->count.fetch_sub(1, std::memory_order_acq_rel);
                    throw;
                }
                if (writing)
                    writing->done();
                return timed_out ? queue_status::timeout : queue_status::success;
            }
        }
        if (!wait_for_room(room_seen, deadline))
            return queue_status::timeout;
    }
}

template <class T>
bool process_queue<T>::write_frame_by(const std::vector<char>& frame, clock::time_point deadline,
                                      std::optional<midway>& writing, bool& counted) {
    const std::size_t bytes = frame.size();
    // Counted just before its bytes can be seen (a fast consumer's decrement must never come
    // first), and not while waiting for room: a producer killed while it waits leaves the
    // count right.
    const auto count_it = [&] {
        m_shared->count.fetch_add(1, std::memory_order_acq_rel);
        counted = true;
    };
    const auto uncount_it = [&] {
        m_shared->count.fetch_sub(1, std::memory_order_acq_rel);
        counted = false;
    };
    if (bytes <= PIPE_BUF && m_nonblocking_write) {
        // Through a second, non-blocking descriptor of the same pipe (the queue's own must stay
        // blocking for put(), and O_NONBLOCK belongs to the open file, which children share).
        // A small message is written whole or not at all (POSIX), so the pipe itself says
        // whether there is room.
        for (;;) {
            count_it();
            const ssize_t n = ::write(m_nonblocking_write.get(), frame.data(), bytes);
            if (n == static_cast<ssize_t>(bytes))
                return true;
            const int error = errno;
            uncount_it();
            if (n >= 0)
                throw protocol_error("triad::process_queue: a short write of a small message");
            if (error == EINTR)
                continue;
            if (error != EAGAIN)
                detail::throw_errno("triad::process_queue: write", error);
            if (!wait_writable(m_nonblocking_write.get(), deadline))
                return false;
        }
    }
    // A larger message is written in pieces, and once begun it must be finished: start only
    // when the pipe certainly has room for all of it. A pipe keeps its bytes in page-sized
    // buffers, and each message may leave one partly filled, so count a page for each value
    // queued, one for a partly read head and one for this message's start.
    const int fd = m_pipe.write.get();
    const std::size_t page = pipe_page();
    const std::size_t pages_needed = (bytes + page - 1) / page + 2;
    std::size_t pipe_pages = pipe_capacity(fd) / page;
    if (pages_needed > pipe_pages) {
        detail::grow_pipe(fd,
                          static_cast<int>(std::min<std::size_t>(pages_needed * page, 1 << 30)));
        pipe_pages = pipe_capacity(fd) / page;
    }
    if (pages_needed > pipe_pages)
        throw std::length_error(detail::concat(
            "triad::process_queue: a value of ", bytes, " bytes does not fit the queue's pipe (",
            pipe_pages * page,
            " bytes), so try_put and put_for cannot put it without waiting for a consumer to "
            "take part of it; use put(), which waits"));
    for (;;) {
        int queued = 0;
        if (::ioctl(fd, FIONREAD, &queued) != 0)
            detail::throw_errno("triad::process_queue: ioctl(FIONREAD)");
        const auto used = static_cast<std::size_t>(std::max(queued, 0));
        const std::size_t worst =
            (used + page - 1) / page +
            static_cast<std::size_t>(m_shared->count.load(std::memory_order_acquire)) +
            pages_needed;
        if (used == 0 || worst <= pipe_pages)
            break;
        const auto now = clock::now();
        if (now >= deadline)
            return false;
        // Consumers make room without telling a writer that needs more than one page.
        std::this_thread::sleep_for(
            std::min<clock::duration>(deadline - now, std::chrono::milliseconds(1)));
    }
    count_it();
    writing.emplace(m_shared->writing, *m_shared);
    write_frame(frame.data(), bytes); // room for all of it: does not block
    return true;
}

template <class T>
std::size_t process_queue<T>::pipe_page() noexcept {
    const long size = ::sysconf(_SC_PAGESIZE);
    return size > 0 ? static_cast<std::size_t>(size) : 4096;
}

template <class T>
std::size_t process_queue<T>::pipe_capacity(int fd) {
    const int capacity = ::fcntl(fd, F_GETPIPE_SZ);
    if (capacity <= 0)
        detail::throw_errno("triad::process_queue: fcntl(F_GETPIPE_SZ)");
    return static_cast<std::size_t>(capacity);
}

template <class T>
bool process_queue<T>::wait_writable(int fd, clock::time_point deadline) {
    for (;;) {
        int wait_ms = -1;
        if (deadline != forever)
            wait_ms = static_cast<int>(std::clamp<long long>(
                std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count(), 0,
                1'000'000));
        pollfd writable{fd, POLLOUT, 0};
        const int ready = ::poll(&writable, 1, wait_ms);
        if (ready > 0)
            return true;
        if (ready < 0 && errno != EINTR)
            detail::throw_errno("triad::process_queue: poll");
        if (ready == 0 && deadline != forever && clock::now() >= deadline)
            return false;
    }
}

template <class T>
void process_queue<T>::put(const T& value) {
    if (put_until(value, forever) == queue_status::closed)
        throw pool_closed("triad::process_queue: put after close()");
}

template <class T>
queue_status process_queue<T>::try_put(const T& value) {
    const queue_status status = put_until(value, clock::now());
    return status == queue_status::timeout ? queue_status::full : status;
}

template <class T>
template <class Rep, class Period>
queue_status process_queue<T>::put_for(const T& value, std::chrono::duration<Rep, Period> timeout) {
    return put_until(value, detail::deadline_after(timeout));
}

template <class T>
void process_queue<T>::check_writer_alive() {
    const int rc = ::pthread_mutex_trylock(&m_shared->write_lock);
    if (rc == EBUSY)
        return; // a writer is at work: its bytes are coming
    if (rc == EOWNERDEAD) {
        m_shared->broken.store(1, std::memory_order_release);
        ::pthread_mutex_consistent(&m_shared->write_lock);
    }
    // The lock is ours: no writer is halfway through a message. Missing bytes can then only
    // mean one died (or bytes arrived just now).
    pollfd readable{m_pipe.read.get(), POLLIN, 0};
    const bool arrived = ::poll(&readable, 1, 0) > 0;
    if (!arrived)
        m_shared->broken.store(1, std::memory_order_release);
    ::pthread_mutex_unlock(&m_shared->write_lock);
    if (m_shared->broken.load(std::memory_order_acquire) != 0)
        throw protocol_error("triad::process_queue: a process died while writing to the queue, "
                             "so its contents can no longer be trusted");
}

template <class T>
bool process_queue<T>::read_whole(void* data, std::size_t size, bool end_allowed) {
    auto* p = static_cast<char*>(data);
    std::size_t done = 0;
    while (done < size) {
        pollfd readable{m_pipe.read.get(), POLLIN, 0};
        const int ready = ::poll(&readable, 1, 100);
        if (ready == 0) {
            check_writer_alive();
            continue;
        }
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            detail::throw_errno("triad::process_queue: poll");
        }
        const ssize_t n = ::read(m_pipe.read.get(), p + done, size - done);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            detail::throw_errno("triad::process_queue: read");
        }
        if (n == 0) {
            if (done == 0 && end_allowed)
                return false;
            throw protocol_error("triad::process_queue: end of file in the middle of a message");
        }
        done += static_cast<std::size_t>(n);
    }
    return true;
}

template <class T>
queue_status process_queue<T>::read_frame(T& out, clock::time_point deadline) {
    // Wait for the first byte before counting as midway: a consumer killed while it waits
    // breaks nothing; one killed after it took bytes does.
    // Every 100 ms it also looks whether the queue was closed with nothing left in it: the
    // close mark may be missing (the pipe was full, or the process closing it died).
    for (;;) {
        int wait_ms = 100;
        if (deadline != forever)
            wait_ms = static_cast<int>(std::clamp<long long>(
                std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count(), 0,
                100));
        pollfd readable{m_pipe.read.get(), POLLIN, 0};
        const int ready = ::poll(&readable, 1, wait_ms);
        if (ready > 0)
            break;
        if (ready < 0 && errno != EINTR)
            detail::throw_errno("triad::process_queue: poll");
        if (ready == 0 && closed() && bytes_in_pipe() == 0)
            return queue_status::closed;
        if (ready == 0 && deadline != forever && clock::now() >= deadline)
            return queue_status::timeout;
    }
    midway reading(m_shared->reading, *m_shared);
    std::uint64_t size = 0;
    if (!read_whole(&size, sizeof size, true)) {
        reading.done();
        return queue_status::closed;
    }
    if (size == close_mark) {
        // Put the mark back for the next consumer: nothing can follow it.
        write_frame(&size, sizeof size);
        reading.done();
        return queue_status::closed;
    }
    if (size > (std::uint64_t{1} << 40))
        throw protocol_error(
            detail::concat("triad::process_queue: corrupt frame of ", size, " bytes"));
    std::vector<char> payload;
    // Grow as bytes arrive rather than trusting the size up front.
    for (std::uint64_t done = 0; done < size;) {
        const std::size_t step =
            static_cast<std::size_t>(std::min<std::uint64_t>(size - done, 1 << 20));
        payload.resize(static_cast<std::size_t>(done) + step);
        read_whole(payload.data() + done, step, false);
        done += step;
    }
    m_shared->count.fetch_sub(1, std::memory_order_acq_rel);
    reading.done();
    if (m_max_size != 0)
        room_made();
    out = from_bytes<T>(payload);
    return queue_status::success;
}

template <class T>
queue_status process_queue<T>::get_until(T& out, clock::time_point deadline) {
    std::optional<lock> guard;
    const auto started = clock::now();
    for (;;) {
        const timespec until = realtime(lock_deadline(deadline));
        guard.emplace(m_shared->read_lock, m_shared->reading, *m_shared,
                      deadline == forever ? nullptr : &until);
        if (guard->owns())
            break;
        // Still held. With bytes in the pipe that is a read at work, only slow: wait on, up to
        // a second. An empty pipe (the holder waits for it) or a stall that long means `empty`.
        if (bytes_in_pipe() == 0 ||
            clock::now() >= std::max(deadline, started + std::chrono::seconds(1)))
            return queue_status::timeout;
    }
    return read_frame(out, deadline);
}

template <class T>
std::optional<T> process_queue<T>::get() {
    T value{};
    if (get_until(value, forever) != queue_status::success)
        return std::nullopt;
    return value;
}

template <class T>
queue_status process_queue<T>::try_get(T& out) {
    const queue_status status = get_until(out, clock::now());
    return status == queue_status::timeout ? queue_status::empty : status;
}

template <class T>
template <class Rep, class Period>
queue_status process_queue<T>::get_for(T& out, std::chrono::duration<Rep, Period> timeout) {
    return get_until(out, detail::deadline_after(timeout));
}

template <class T>
void process_queue<T>::close() {
    lock guard(m_shared->write_lock, m_shared->writing, *m_shared);
    if (m_shared->closed.exchange(1, std::memory_order_acq_rel) != 0)
        return;
    // The mark wakes consumers waiting for the pipe at once. Written only if there is room now
    // (a pipe that is not full has room for 8 bytes, and only consumers touch it while this
    // process holds the write lock): consumers also notice the flag by themselves, so close()
    // never blocks on a full pipe, and a close() killed here leaves no consumer hanging.
    pollfd writable{m_pipe.write.get(), POLLOUT, 0};
    if (::poll(&writable, 1, 0) == 1 && (writable.revents & POLLOUT) != 0)
        write_frame(&close_mark, sizeof close_mark);
    room_made(); // producers waiting for room see the close at once
}

} // namespace triad
