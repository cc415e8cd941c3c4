#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <triad/detail/posix.hpp>
#include <triad/detail/text.hpp>
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
template <serializable T>
class process_queue {
public:
    process_queue();
    ~process_queue();
    process_queue(const process_queue&) = delete;
    process_queue& operator=(const process_queue&) = delete;

    /** Appends a value. Throws `triad::pool_closed` after `close()`. */
    void put(const T& value);

    /** The next value, blocking until there is one; empty once the queue is closed and drained. */
    std::optional<T> get();

    /** No more values: consumers drain what is queued, then get an empty optional. Idempotent. */
    void close();

    /** True once some process called `close()`. */
    bool closed() const noexcept { return m_shared->closed.load(std::memory_order_acquire) != 0; }

private:
    static constexpr std::uint64_t close_mark = ~std::uint64_t{0};

    struct shared_block {
        pthread_mutex_t write_lock;
        pthread_mutex_t read_lock;
        std::atomic<std::uint32_t> closed{0};
        std::atomic<std::uint32_t> broken{0};
        // Set while a holder of the lock is halfway through a message.
        std::atomic<std::uint32_t> writing{0};
        std::atomic<std::uint32_t> reading{0};
    };

    class lock {
    public:
        lock(pthread_mutex_t& mutex, std::atomic<std::uint32_t>& midway, shared_block& shared)
            : m_mutex(mutex) {
            const int rc = ::pthread_mutex_lock(&m_mutex);
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
        ~lock() { ::pthread_mutex_unlock(&m_mutex); }
        lock(const lock&) = delete;
        lock& operator=(const lock&) = delete;

    private:
        pthread_mutex_t& m_mutex;
    };

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
};

template <serializable T>
process_queue<T>::process_queue() {
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
    } catch (...) {
        ::munmap(memory, sizeof(shared_block));
        throw;
    }
    detail::grow_pipe(m_pipe.write.get(), 1 << 20);
}

template <serializable T>
process_queue<T>::~process_queue() {
    m_pipe.read.reset();
    m_pipe.write.reset();
    // Every process unmaps its own view; the mutexes live as long as any view does.
    ::munmap(m_shared, sizeof(shared_block));
}

template <serializable T>
void process_queue<T>::put(const T& value) {
    std::vector<char> frame(sizeof(std::uint64_t));
    encode_to(frame, value);
    const std::uint64_t size = frame.size() - sizeof(std::uint64_t);
    std::memcpy(frame.data(), &size, sizeof size);
    lock guard(m_shared->write_lock, m_shared->writing, *m_shared);
    if (closed())
        throw pool_closed("triad::process_queue: put after close()");
    midway writing(m_shared->writing, *m_shared);
    write_frame(frame.data(), frame.size());
    writing.done();
}

template <serializable T>
std::optional<T> process_queue<T>::get() {
    lock guard(m_shared->read_lock, m_shared->reading, *m_shared);
    std::uint64_t size = 0;
    if (!detail::read_exact(m_pipe.read.get(), &size, sizeof size, "triad::process_queue: read"))
        return std::nullopt;
    midway reading(m_shared->reading, *m_shared);
    if (size == close_mark) {
        // Put the mark back for the next consumer: nothing can follow it.
        write_frame(&size, sizeof size);
        reading.done();
        return std::nullopt;
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
        detail::read_exact(m_pipe.read.get(), payload.data() + done, step,
                           "triad::process_queue: read");
        done += step;
    }
    reading.done();
    return from_bytes<T>(payload);
}

template <serializable T>
void process_queue<T>::close() {
    lock guard(m_shared->write_lock, m_shared->writing, *m_shared);
    if (m_shared->closed.exchange(1, std::memory_order_acq_rel) != 0)
        return;
    write_frame(&close_mark, sizeof close_mark);
}

} // namespace triad
