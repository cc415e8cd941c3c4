#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <triad/detail/exception_info.hpp>
#include <triad/detail/fork_server.hpp>
#include <triad/detail/posix.hpp>
#include <triad/detail/remote.hpp>
#include <triad/detail/shared_state.hpp>
#include <triad/detail/text.hpp>
#include <triad/detail/trace.hpp>
#include <triad/detail/zygote.hpp>
#include <triad/errors.hpp>
#include <triad/serialize.hpp>

namespace triad::detail {

// A task on its way to a worker, as the parent sees it: the frame to send and what to do with
// the answer. It is finished exactly once, by succeed() or fail(), which also free it.
class remote_task {
public:
    explicit remote_task(std::uint64_t id) noexcept : m_id(id) {}
    remote_task(const remote_task&) = delete;
    remote_task& operator=(const remote_task&) = delete;

    std::uint64_t id() const noexcept { return m_id; }
    std::vector<char>& frame() noexcept { return m_frame; }

    // The payload of a result frame; decoding it is the task's business.
    virtual void succeed(byte_reader& result) noexcept = 0;
    // False if its future had cancelled it (future::cancel) before: then nothing changes.
    virtual bool fail(std::exception_ptr error) noexcept = 0;

    // Before a task is sent to a worker: false if its future cancelled it first, which
    // completed it; the task is then only dropped (discard). A task taken back from a worker
    // before it started is unclaimed, so it can be cancelled again while it waits.
    virtual bool claim() noexcept { return true; }
    virtual void unclaim() noexcept {}
    virtual void discard() noexcept = 0;

protected:
    virtual ~remote_task() = default;

private:
    std::uint64_t m_id;
    std::vector<char> m_frame;
};

// The remote task behind a future<R>: one allocation holds the frame and the result.
template <class R>
class remote_future_task final : public shared_state<R>, public remote_task {
public:
    explicit remote_future_task(std::uint64_t id) : shared_state<R>(2), remote_task(id) {
        this->allow_cancel();
    }

    bool claim() noexcept override { return this->try_claim(); }
    void unclaim() noexcept override { shared_state<R>::unclaim(); }
    void discard() noexcept override { this->release(); }

    void succeed(byte_reader& result) noexcept override {
        try {
            if constexpr (std::is_void_v<R>) {
                result.expect_end();
                this->set_value();
            } else {
                R value{};
                decode_value(result, value);
                result.expect_end();
                this->set_value(std::move(value));
            }
        } catch (...) {
            this->set_error(std::current_exception());
        }
        finish();
    }

    bool fail(std::exception_ptr error) noexcept override {
        if (!this->try_claim()) {
            discard();
            return false;
        }
        this->set_error(std::move(error));
        finish();
        return true;
    }

private:
    void finish() noexcept {
        std::vector<char>().swap(frame()); // the argument bytes are not needed any more
        this->publish();
        this->release();
    }
};

// The timeout a task frame carries (after its header, the invoker index and the function):
// > 0 for the whole task, < 0 for each item of a map chunk, 0 for none.
inline std::int64_t frame_timeout_ns(remote_task& task) noexcept {
    constexpr std::size_t at = sizeof(frame_header) + sizeof(std::uint32_t) + sizeof(std::uint64_t);
    std::int64_t timeout = 0;
    if (task.frame().size() >= at + sizeof timeout)
        std::memcpy(&timeout, task.frame().data() + at, sizeof timeout);
    return timeout;
}

struct process_manager_config {
    std::size_t processes = 1;
    std::function<void(std::size_t)> initializer;
    std::uintptr_t initializer_address = 0;    // where it is a plain function: sendable to a zygote
    std::shared_ptr<zygote_connection> zygote; // the process-wide fork server, if used
    std::size_t max_tasks_per_child = 0;
    std::optional<std::chrono::nanoseconds> task_timeout;
    std::uint64_t max_message_size = std::uint64_t{4} << 30;
    std::size_t max_nesting = default_max_nesting;
    std::string name_prefix = "triad-proc";
};

// The parent side of a process pool: a fork server, one I/O thread that pipelines frames to
// the workers over non-blocking pipes and reads their results, and the bookkeeping that turns
// crashes, timeouts and recycling into the right error on the right future while every other
// task goes on.
//
// A worker's end is learnt from the process (its pidfd, or the server's report that it was
// reaped), never from end-of-file on its pipe, which a grandchild the task forked may hold
// open. Each task a worker is sent carries a sequence number; the worker claims it in shared
// memory before starting it (see worker_slot), so at a worker's death the parent knows which
// tasks started (they fail) and which never did (they run elsewhere): no task ever runs twice.
class process_manager {
public:
    explicit process_manager(process_manager_config config);
    ~process_manager();
    process_manager(const process_manager&) = delete;
    process_manager& operator=(const process_manager&) = delete;

    std::size_t size() const noexcept { return m_workers.size(); }
    std::uint64_t next_task_id() noexcept {
        return m_next_id.fetch_add(1, std::memory_order_relaxed);
    }
    std::uint64_t max_message_size() const noexcept { return m_config.max_message_size; }
    static constexpr std::uint64_t max_message_limit = std::uint64_t{1} << 40;
    // The timeout a task frame carries when its caller did not choose one; 0: none.
    std::int64_t default_timeout_ns() const noexcept {
        return m_config.task_timeout ? m_config.task_timeout->count() : 0;
    }

    // Queues a task for the I/O thread. On refusal (shutdown, a broken pool) the task is failed
    // and pool_closed is thrown.
    void enqueue(remote_task* task);
    void wait_idle();
    void shutdown(bool cancel);
    void terminate();
    bool closed() const noexcept { return m_closed.load(std::memory_order_acquire); }

    std::uint64_t queued() const;
    std::uint64_t running() const noexcept;
    std::uint64_t completed() const noexcept { return m_completed.load(std::memory_order_relaxed); }
    std::uint64_t cancelled() const noexcept { return m_cancelled.load(std::memory_order_relaxed); }
    std::uint64_t workers_replaced() const noexcept {
        return m_replaced.load(std::memory_order_relaxed);
    }
    std::uint64_t workers_recycled() const noexcept {
        return m_recycled.load(std::memory_order_relaxed);
    }
    std::vector<pid_t> worker_pids() const;
    // Items of map chunk `task` finished so far, if a worker is running it now; else 0.
    std::uint64_t items_done(std::uint64_t task) const noexcept {
        for (std::size_t i = 0; i < m_pool.slot_count; ++i)
            if (m_pool.slots[i].running_task.load(std::memory_order_acquire) == task)
                return m_pool.slots[i].items_done.load(std::memory_order_relaxed);
        return 0;
    }
    pid_t server_pid() const noexcept { return m_server_pid; }

private:
    enum class worker_state { starting, ready, retiring, stopping, dead };

    struct in_flight {
        remote_task* task;
        std::uint32_t sequence;
    };

    struct worker {
        // A traced answer carries the task's times besides the result that max_payload bounds.
        worker(std::uint64_t max_payload, std::size_t max_nesting)
            : parser(max_payload + answer_times_bytes, max_nesting) {}
        worker_state state = worker_state::dead;
        pid_t pid = 0;
        pool_fd pidfd; // the worker process's handle, where the kernel has pidfds
        pool_fd task_fd;
        pool_fd result_fd;
        frame_parser parser;
        std::deque<in_flight> outstanding; // sent or being sent, oldest first
        std::size_t sent = 0;              // how many of `outstanding` are fully written
        std::size_t sent_bytes = 0;        // of outstanding[sent]
        std::uint32_t next_sequence = 1;
        bool writable_watch = false;
        bool initialized = false;  // its ready frame arrived
        bool ended = false;        // the process is gone
        bool status_known = false; // the server reported how it ended
        int exit_status = 0;
        std::chrono::steady_clock::time_point ended_at{};
        std::uint64_t poisoned_task = 0;
        std::exception_ptr poison;
        std::chrono::steady_clock::time_point head_since{};
        double task_ns = 0; // moving average of task time, for the dispatch window
        std::size_t window = 2;
        bool ring_closed = false;        // it sent garbage: nothing more is read from it
        std::uint64_t trace_session = 0; // the trace session its lane was named in
    };

    // epoll tags
    static constexpr std::uint64_t tag_wake = 1ull << 40;
    static constexpr std::uint64_t tag_control = 2ull << 40;
    static constexpr std::uint64_t tag_result = 3ull << 40;
    static constexpr std::uint64_t tag_task = 4ull << 40;
    static constexpr std::uint64_t tag_pidfd = 5ull << 40;
    static constexpr std::uint64_t tag_mask = 0xffull << 40;
    // Sequence numbers are 32 bits in the claim word: a worker that used this many is replaced
    // (after some four billion tasks) before they could wrap.
    static constexpr std::uint32_t sequence_limit = 0xffff'0000u;

    void run() noexcept;
    void loop();
    void take_inbox();
    void handle_control();
    void read_results(std::size_t slot);
    void drain_ring(std::size_t slot);
    bool arm_doorbells() noexcept;
    void disarm_doorbells() noexcept;
    void handle_frame(std::size_t slot, const frame_header& header, byte_reader& payload);
    void trace_task(std::size_t slot, std::int64_t began, std::int64_t ended) noexcept;
    void write_some(std::size_t slot);
    void dispatch();
    bool steal_for_idle_workers();
    std::size_t revoke_unstarted(std::size_t slot);
    void spawn(std::size_t slot);
    void spawn_failed(std::size_t slot, const std::string& why);
    void process_ended(std::size_t slot);
    void became_ready(std::size_t slot);
    void finalize_death(std::size_t slot);
    void check_deadlines();
    void finish_task(remote_task* task, std::exception_ptr error, bool cancelled);
    void break_pool(std::exception_ptr reason);
    void stop_workers();
    void send_stop(worker& w);
    void retire_exhausted_workers();
    bool all_workers_gone() const noexcept;
    int poll_timeout_ms() const noexcept;
    void watch(int fd, std::uint64_t tag, std::uint32_t events);
    void unwatch(int fd) noexcept;
    void task_done() noexcept;
    void wake() noexcept;
    void stop_server() noexcept;
    void join_io_thread();

    process_manager_config m_config;
    pool_config m_pool;
    void* m_shared_memory = nullptr;
    std::size_t m_shared_bytes = 0;
    pool_fd m_control;
    pool_fd m_epoll;
    pool_fd m_wake;
    pool_fd m_server_pidfd;
    pid_t m_server_pid = -1;
    bool m_server_is_child = true; // else the zygote's child: waited for through its pidfd only
    const std::uint64_t m_trace_serial = trace::next_serial(); // its lanes' names
    bool m_tracing_shown = false; // what the workers were told (I/O thread)
    std::vector<std::unique_ptr<worker>> m_workers;
    std::deque<remote_task*> m_pending; // I/O thread only

    std::mutex m_inbox_mutex;
    std::vector<remote_task*> m_inbox;
    std::atomic<std::uint64_t> m_next_id{1};

    mutable std::mutex m_state_mutex;
    std::condition_variable m_state_changed;
    std::uint64_t m_unfinished = 0; // enqueued and not finished
    std::size_t m_starting = 0;     // workers not ready yet, during construction
    std::exception_ptr m_broken;    // why the pool cannot run tasks any more
    bool m_drain = false;           // shutdown requested
    bool m_cancel = false;
    bool m_terminate = false; // terminate(): kill the workers, cancel everything
    bool m_loop_done = false;

    std::atomic<bool> m_closed{false};
    std::atomic<std::uint64_t> m_completed{0};
    std::atomic<std::uint64_t> m_cancelled{0};
    std::atomic<std::uint64_t> m_replaced{0};
    std::atomic<std::uint64_t> m_recycled{0};
    std::unique_ptr<std::atomic<pid_t>[]> m_ready_pids; // published for worker_pids()
    std::size_t m_start_failures = 0; // workers in a row that died or failed before ready
    std::exception_ptr m_start_error; // the last initializer failure in a replacement
    std::atomic<std::uint64_t> m_pending_count{0};
    std::size_t m_spawn_failures = 0; // in a row, since m_first_spawn_failure
    std::chrono::steady_clock::time_point m_first_spawn_failure{};
    std::chrono::steady_clock::time_point m_respawn_at{};
    bool m_stopping_workers = false;
    bool m_terminating = false; // I/O thread's copy of m_terminate, once acted on
    std::mutex m_join_mutex;
    std::thread::id m_thread_id; // set before any task can run on the I/O thread
    std::thread m_thread;
};

// ---------------------------------------------------------------------------------------------
// Definitions

inline process_manager::process_manager(process_manager_config config)
    : m_config(std::move(config)) {
    if (m_config.processes == 0)
        throw std::invalid_argument("triad::process_pool: the process count must be at least 1");
    if (m_config.max_message_size < 1024)
        throw std::invalid_argument("triad::process_pool: max_message_size below 1 KiB");
    if (m_config.max_message_size > max_message_limit)
        throw std::invalid_argument(concat("triad::process_pool: max_message_size above ",
                                           max_message_limit,
                                           " bytes (1 TiB): frame sizes must not overflow"));
    if (m_config.max_nesting == 0)
        throw std::invalid_argument("triad::process_pool: max_nesting must be at least 1");
    (void)cancelled_error(); // made now, so that cancelling never allocates
    const std::size_t n = m_config.processes;
    for (std::size_t i = 0; i < n; ++i)
        m_workers.push_back(
            std::make_unique<worker>(m_config.max_message_size, m_config.max_nesting));
    m_ready_pids = std::make_unique<std::atomic<pid_t>[]>(n);

    if (m_config.zygote && m_config.initializer && m_config.initializer_address == 0)
        throw std::invalid_argument(
            "triad::process_pool: with the process-wide fork server (triad::fork_server_guard) "
            "the initializer must be a function or a lambda without captures: workers are "
            "forked from the server's early snapshot, where objects made since do not exist. "
            "Pass what it needs through the task arguments, or build this pool with "
            "process_pool_options::use_fork_server_guard = false");

    // Shared with every worker: the cancel flag and one slot per worker. Through a memfd when a
    // zygote's server must map it too; inherited by fork otherwise.
    m_shared_bytes = shared_bytes_for(n);
    pool_fd memory;
    if (m_config.zygote) {
        memory.reset(::memfd_create("triad-pool", MFD_CLOEXEC));
        if (!memory || ::ftruncate(memory.get(), static_cast<off_t>(m_shared_bytes)) != 0)
            throw_errno("triad::process_pool: memfd_create");
    }
    m_shared_memory =
        ::mmap(nullptr, m_shared_bytes, PROT_READ | PROT_WRITE,
               memory ? MAP_SHARED : MAP_SHARED | MAP_ANONYMOUS, memory ? memory.get() : -1, 0);
    if (m_shared_memory == MAP_FAILED)
        throw_errno("triad::process_pool: mmap");
    lay_out_shared(m_pool, m_shared_memory, n);
    ::new (m_pool.shared) shared_state_block();
    for (std::size_t i = 0; i < n; ++i) {
        ::new (&m_pool.slots[i]) worker_slot();
        // Default-initialized, not value-initialized: the fresh mapping is zero already, and
        // zeroing the 128 KiB of data again would touch every page (a page fault each) at
        // every pool's start.
        ::new (&m_pool.rings[i]) result_ring;
    }
    m_pool.initializer = m_config.initializer;
    m_pool.max_tasks_per_child = m_config.max_tasks_per_child;
    m_pool.max_message_size = m_config.max_message_size;
    m_pool.max_nesting = m_config.max_nesting;
    m_pool.name_prefix = m_config.name_prefix;
    m_pool.parent = ::getpid();
    ::pthread_sigmask(SIG_SETMASK, nullptr, &m_pool.original_signal_mask);

    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
        ::munmap(m_shared_memory, m_shared_bytes);
        throw_errno("triad::process_pool: socketpair");
    }
    m_control.reset(pair[0]);
    pool_fd server_end(pair[1]);
    set_nonblocking(m_control.get(), true);

    if (m_config.zygote) {
        // The process-wide fork server forks this pool's server from its clean snapshot.
        zygote_request request;
        request.slot_count = n;
        request.max_tasks_per_child = m_config.max_tasks_per_child;
        request.max_message_size = m_config.max_message_size;
        request.max_nesting = m_config.max_nesting;
        request.shared_bytes = m_shared_bytes;
        request.initializer = m_config.initializer_address;
        request.name_prefix = m_config.name_prefix;
        const auto* mask = reinterpret_cast<const std::uint8_t*>(&m_pool.original_signal_mask);
        request.signal_mask.assign(mask, mask + sizeof(sigset_t));
        try {
            const auto [pid, handle] =
                m_config.zygote->request(request, server_end.get(), memory.get());
            m_server_pid = pid;
            m_server_pidfd.reset(handle);
            m_server_is_child = false;
        } catch (...) {
            ::munmap(m_shared_memory, m_shared_bytes);
            throw;
        }
    } else {
        // Everything the server needs is allocated here, before the fork.
        fork_server server(m_pool, server_end.get());
        const pid_t pid = fork_with_stdio_locked();
        if (pid < 0) {
            const int error = errno;
            ::munmap(m_shared_memory, m_shared_bytes);
            throw_errno("triad::process_pool: fork", error);
        }
        if (pid == 0) {
            (void)m_control.release(); // closed by the server's descriptor sweep
            server.run();
        }
        m_server_pid = pid;
        m_server_pidfd.reset(open_pidfd(pid)); // our child, not reaped yet: it is the server
    }
    memory.reset();
    server_end.reset();

    try {
        m_epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
        m_wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!m_epoll || !m_wake)
            throw_errno("triad::process_pool: epoll/eventfd");
        watch(m_wake.get(), tag_wake, EPOLLIN);
        watch(m_control.get(), tag_control, EPOLLIN);
        m_starting = n;
        m_thread = std::thread([this] { run(); });
        m_thread_id = m_thread.get_id();
    } catch (...) {
        stop_server();
        ::munmap(m_shared_memory, m_shared_bytes);
        throw;
    }

    // Wait until every worker ran its initializer, so a failing one is reported here.
    std::unique_lock lock(m_state_mutex);
    m_state_changed.wait(lock, [this] { return m_starting == 0 || m_broken || m_loop_done; });
    if (m_broken) {
        const std::exception_ptr reason = m_broken;
        lock.unlock();
        shutdown(true);
        ::munmap(m_shared_memory, m_shared_bytes);
        std::rethrow_exception(reason);
    }
}

inline process_manager::~process_manager() {
    if (m_thread_id == std::this_thread::get_id()) {
        // Its own I/O thread cannot wait for itself, and the loop still runs beneath this call.
        std::fputs("triad::process_pool: destroyed from one of its own continuations (on its I/O "
                   "thread); destroy it on another thread\n",
                   stderr);
        std::abort();
    }
    try {
        shutdown(false);
    } catch (...) {
        report_to_stderr("triad::process_pool: shutdown in the destructor failed",
                         std::current_exception());
    }
    join_io_thread();
    ::munmap(m_shared_memory, m_shared_bytes);
}

inline void process_manager::enqueue(remote_task* task) {
    std::exception_ptr refused;
    {
        std::lock_guard lock(m_state_mutex);
        if (m_broken) {
            try {
                std::rethrow_exception(m_broken);
            } catch (const std::exception& e) {
                refused = std::make_exception_ptr(
                    pool_closed(concat("triad::process_pool is broken: ", e.what())));
            } catch (...) {
                refused = std::make_exception_ptr(pool_closed("triad::process_pool is broken"));
            }
        } else if (m_closed.load(std::memory_order_relaxed)) {
            refused = std::make_exception_ptr(
                pool_closed("triad::process_pool: cannot submit work after shutdown()"));
        } else {
            ++m_unfinished;
        }
    }
    if (refused) {
        // Never queued: fail it (outside the lock, as failing runs continuations) so its
        // future is released, and tell the caller.
        task->fail(refused);
        std::rethrow_exception(refused);
    }
    m_pending_count.fetch_add(1, std::memory_order_relaxed);
    bool was_empty;
    {
        std::lock_guard lock(m_inbox_mutex);
        was_empty = m_inbox.empty();
        m_inbox.push_back(task);
    }
    if (was_empty)
        wake();
}

inline void process_manager::wait_idle() {
    if (std::this_thread::get_id() == m_thread_id)
        throw std::logic_error("triad::process_pool::wait_idle: called from a continuation on the "
                               "pool's I/O thread, it would wait for itself");
    std::unique_lock lock(m_state_mutex);
    m_state_changed.wait(lock, [this] { return m_unfinished == 0; });
}

inline void process_manager::shutdown(bool cancel) {
    {
        std::lock_guard lock(m_state_mutex);
        m_closed.store(true, std::memory_order_release);
        m_drain = true;
        if (cancel) {
            m_cancel = true;
            m_pool.shared->cancelling.store(1, std::memory_order_release);
        }
    }
    wake();
    join_io_thread();
}

inline void process_manager::terminate() {
    {
        std::lock_guard lock(m_state_mutex);
        m_closed.store(true, std::memory_order_release);
        m_drain = true;
        m_cancel = true;
        m_terminate = true;
        m_pool.shared->cancelling.store(1, std::memory_order_release);
    }
    wake();
    join_io_thread();
}

// Any number of threads may shut down at once: one joins, the others wait for it to finish.
// On the I/O thread itself (a continuation shutting the pool down) there is nothing to wait
// for: the loop sees the request when the continuation returns.
inline void process_manager::join_io_thread() {
    if (m_thread_id == std::this_thread::get_id())
        return;
    std::lock_guard lock(m_join_mutex);
    if (m_thread.joinable())
        m_thread.join();
}

inline std::uint64_t process_manager::queued() const {
    const std::uint64_t pending = m_pending_count.load(std::memory_order_relaxed);
    const std::uint64_t run = running();
    return pending > run ? pending - run : 0;
}

inline std::uint64_t process_manager::running() const noexcept {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < m_pool.slot_count; ++i)
        if (m_pool.slots[i].running_task.load(std::memory_order_relaxed) != 0)
            ++n;
    return n;
}

inline std::vector<pid_t> process_manager::worker_pids() const {
    std::vector<pid_t> pids;
    for (std::size_t i = 0; i < m_workers.size(); ++i)
        if (const pid_t pid = m_ready_pids[i].load(std::memory_order_acquire); pid > 0)
            pids.push_back(pid);
    return pids;
}

inline void process_manager::wake() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(m_wake.get(), &one, sizeof one);
}

inline void process_manager::watch(int fd, std::uint64_t tag, std::uint32_t events) {
    epoll_event event{};
    event.events = events;
    event.data.u64 = tag;
    if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, fd, &event) != 0 &&
        !(errno == EEXIST && ::epoll_ctl(m_epoll.get(), EPOLL_CTL_MOD, fd, &event) == 0))
        throw_errno("triad::process_pool: epoll_ctl");
}

inline void process_manager::unwatch(int fd) noexcept {
    if (fd >= 0)
        ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
}

inline void process_manager::run() noexcept {
    // Writes to a worker that just died must fail with EPIPE, not kill the program with SIGPIPE.
    sigset_t pipe_signal;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
    try {
        loop();
    } catch (...) {
        break_pool(std::current_exception());
        report_to_stderr("triad::process_pool: the I/O thread stopped", std::current_exception());
    }
    stop_server();
    // Consume a SIGPIPE left pending on this thread, so it never reaches anyone else.
    timespec zero{};
    while (::sigtimedwait(&pipe_signal, nullptr, &zero) > 0) {
    }
    std::lock_guard lock(m_state_mutex);
    m_loop_done = true;
    m_state_changed.notify_all();
}

inline void process_manager::loop() {
    for (std::size_t i = 0; i < m_workers.size(); ++i)
        spawn(i);
    epoll_event events[64];
    for (;;) {
        // Armed only while this thread may sleep: a worker publishing while it is awake need
        // not write a doorbell.
        const bool rings_have_more = arm_doorbells();
        if (rings_have_more)
            disarm_doorbells();
        const int timeout = rings_have_more ? 0 : poll_timeout_ms();
        const int n = retry_eintr([&] { return ::epoll_wait(m_epoll.get(), events, 64, timeout); });
        if (!rings_have_more)
            disarm_doorbells();
        if (n < 0)
            throw_errno("triad::process_pool: epoll_wait");
        for (int i = 0; i < n; ++i) {
            const std::uint64_t tag = events[i].data.u64 & tag_mask;
            const std::size_t slot = static_cast<std::size_t>(events[i].data.u64 & ~tag_mask);
            if (tag == tag_wake) {
                std::uint64_t ignored;
                [[maybe_unused]] const ssize_t r = ::read(m_wake.get(), &ignored, sizeof ignored);
            } else if (tag == tag_control) {
                handle_control();
            } else if (tag == tag_result) {
                read_results(slot);
            } else if (tag == tag_pidfd) {
                // Only if that pidfd is still this slot's and really says so: an event read in
                // the same batch may belong to the worker this slot had before a respawn.
                worker& w = *m_workers[slot];
                pollfd gone{w.pidfd.get(), POLLIN, 0};
                if (w.pidfd && ::poll(&gone, 1, 0) == 1)
                    process_ended(slot);
            } else if (tag == tag_task) {
                if ((events[i].events & (EPOLLERR | EPOLLHUP)) != 0) {
                    unwatch(m_workers[slot]->task_fd.get());
                    m_workers[slot]->writable_watch = false;
                } else {
                    write_some(slot);
                }
            }
        }
        for (std::size_t i = 0; i < m_workers.size(); ++i)
            drain_ring(i);
        take_inbox();

        bool drain;
        bool cancel;
        bool terminating;
        {
            std::lock_guard lock(m_state_mutex);
            drain = m_drain;
            cancel = m_cancel;
            terminating = m_terminate;
        }
        if (terminating && !m_terminating) { // also after shutdown() began stopping workers
            // terminate(): every worker killed now; what they ran fails as cancelled, what they
            // had not started is cancelled with the queue.
            m_stopping_workers = true;
            m_terminating = true;
            for (auto& w : m_workers) {
                if (w->state != worker_state::dead && !w->ended)
                    signal_process(w->pidfd.get(), w->pidfd ? 0 : w->pid, SIGKILL);
                send_stop(*w); // one still starting, whose pid is not known yet, stops too
                if (w->state != worker_state::dead)
                    w->state = worker_state::stopping;
            }
        }
        if (cancel) {
            while (!m_pending.empty()) {
                remote_task* task = m_pending.front();
                m_pending.pop_front();
                finish_task(task, cancelled_error(), true);
            }
        }
        const auto now = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < m_workers.size(); ++i) {
            worker& w = *m_workers[i];
            // Ended, but the server has not said how within 200 ms (it is gone): finish it
            // without the status.
            if (w.ended && w.state != worker_state::dead &&
                now - w.ended_at > std::chrono::milliseconds(200))
                finalize_death(i);
        }
        check_deadlines();
        if (now >= m_respawn_at && !m_stopping_workers && !m_broken)
            for (std::size_t i = 0; i < m_workers.size(); ++i)
                if (m_workers[i]->state == worker_state::dead)
                    spawn(i);
        dispatch();
        retire_exhausted_workers();

        if (drain) {
            bool idle;
            {
                std::lock_guard lock(m_state_mutex);
                idle = m_unfinished == 0 || m_broken;
            }
            if (idle && !m_stopping_workers)
                stop_workers();
            if (m_stopping_workers && all_workers_gone())
                return;
        }
    }
}

// Every worker is told to stop, by a stop frame and by end-of-file on its task pipe (either one
// suffices, so neither a full pipe nor a stray copy of the pipe's end in another process can
// keep a worker alive); its end is then seen through its pidfd or the server's report.
inline void process_manager::stop_workers() {
    m_stopping_workers = true;
    for (auto& w : m_workers) {
        send_stop(*w);
        if (w->state != worker_state::dead)
            w->state = worker_state::stopping;
    }
}

inline void process_manager::send_stop(worker& w) {
    bool told = false;
    if (w.task_fd && w.outstanding.empty() && w.sent_bytes == 0) {
        frame_header stop{0, static_cast<std::uint32_t>(frame_kind::stop), 0, 0};
        told = ::write(w.task_fd.get(), &stop, sizeof stop) == static_cast<ssize_t>(sizeof stop);
    }
    // A worker that cannot be told (tasks still in it, as when the pool broke, or a frame half
    // written, or a full pipe) is killed: end-of-file alone may never come while some other
    // process holds a copy of the pipe.
    if ((!told || w.state == worker_state::starting) && w.state != worker_state::dead && !w.ended &&
        w.pid > 0) // one still in its initializer reads nothing: killed too
        signal_process(w.pidfd.get(), w.pidfd ? 0 : w.pid, SIGKILL);
    unwatch(w.task_fd.get());
    w.task_fd.reset();
    w.writable_watch = false;
}

inline void process_manager::retire_exhausted_workers() {
    for (auto& w : m_workers)
        if (w->state == worker_state::ready && w->next_sequence >= sequence_limit &&
            w->outstanding.empty()) {
            send_stop(*w);
            w->state = worker_state::retiring; // replaced when it has gone, as if recycled
        }
}

inline void process_manager::take_inbox() {
    std::vector<remote_task*> arrived;
    {
        std::lock_guard lock(m_inbox_mutex);
        arrived.swap(m_inbox);
    }
    for (remote_task* task : arrived)
        m_pending.push_back(task);
}

inline int process_manager::poll_timeout_ms() const noexcept {
    int timeout = -1;
    const auto at_most = [&timeout](int ms) { timeout = timeout < 0 ? ms : std::min(timeout, ms); };
    for (const auto& w : m_workers) {
        if (w->ended && w->state != worker_state::dead)
            at_most(20); // waiting for the server's report of how it ended
        // Deadlines whose worker's own timer did not fire (a task that exec'd), and queues
        // behind long tasks to take back: checked often while anything runs.
        if (w->state != worker_state::dead && !w->outstanding.empty())
            at_most(50);
    }
    if (m_respawn_at > std::chrono::steady_clock::now())
        at_most(20);
    return timeout;
}

inline void process_manager::spawn(std::size_t slot) {
    worker& w = *m_workers[slot];
    try {
        // Listed as pool descriptors at once, so a triad::process forked meanwhile closes them.
        pipe_pair task_ends = make_pipe(O_CLOEXEC);
        pipe_pair result_ends = make_pipe(O_CLOEXEC);
        struct {
            pool_fd read, write;
        } task_pipe{pool_fd(std::move(task_ends.read)), pool_fd(std::move(task_ends.write))},
            result_pipe{pool_fd(std::move(result_ends.read)),
                        pool_fd(std::move(result_ends.write))};
        grow_pipe(task_pipe.write.get(), 1 << 20); // the result pipe only rings a doorbell
        set_nonblocking(task_pipe.write.get(), true);
        set_nonblocking(result_pipe.read.get(), true);
        const int give[2] = {task_pipe.read.get(), result_pipe.write.get()};
        // The slot's last worker is gone and its ring drained.
        m_pool.rings[slot].reset();
        const control_message message{static_cast<std::uint32_t>(control_type::spawn),
                                      static_cast<std::uint32_t>(slot), 0, 0};
        if (send_control(m_control.get(), message, give, 2) != 0) {
            break_pool(std::make_exception_ptr(
                worker_died("triad::process_pool: the fork server is gone; no worker can start")));
            return;
        }
        w = worker(m_config.max_message_size, m_config.max_nesting);
        w.state = worker_state::starting;
        w.task_fd = std::move(task_pipe.write);
        w.result_fd = std::move(result_pipe.read);
        w.head_since = std::chrono::steady_clock::now();
        worker_slot& shared = m_pool.slots[slot];
        shared.running_task.store(0, std::memory_order_relaxed);
        shared.claim.store(0, std::memory_order_relaxed);
        shared.deadline_ns.store(0, std::memory_order_relaxed);
        watch(w.result_fd.get(), tag_result | slot, EPOLLIN);
    } catch (const std::exception& e) {
        // Out of descriptors (EMFILE) or memory: try again shortly, as when fork fails.
        w.task_fd.reset();
        w.result_fd.reset();
        spawn_failed(slot, e.what());
    }
}

// A worker could not be started. Retried every 100 ms; after 5 s in which every start failed
// and no worker started, the pool breaks: its futures fail with the reason rather than wait for
// ever.
inline void process_manager::spawn_failed(std::size_t slot, const std::string& why) {
    worker& w = *m_workers[slot];
    unwatch(w.result_fd.get());
    w.state = worker_state::dead;
    w.task_fd.reset();
    w.result_fd.reset();
    const auto now = std::chrono::steady_clock::now();
    m_respawn_at = now + std::chrono::milliseconds(100);
    if (m_spawn_failures++ == 0)
        m_first_spawn_failure = now;
    if (now - m_first_spawn_failure >= std::chrono::seconds(5))
        break_pool(std::make_exception_ptr(
            worker_died(concat("triad::process_pool: cannot start workers: ", why))));
}

inline void process_manager::handle_control() {
    for (;;) {
        control_message message{};
        int fds[2];
        const ssize_t got = receive_control(m_control.get(), message, fds);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        const auto type = static_cast<control_type>(message.type);
        if (got > 0 && type == control_type::spawned && message.slot < m_workers.size() &&
            m_workers[message.slot]->state != worker_state::dead &&
            m_workers[message.slot]->pid == 0) {
            worker& w = *m_workers[message.slot];
            w.pid = message.pid;
            m_spawn_failures = 0;
            if (fds[0] >= 0) {
                w.pidfd.reset(fds[0]);
                fds[0] = -1;
                watch(w.pidfd.get(), tag_pidfd | message.slot, EPOLLIN);
            }
            if (m_terminating || w.state == worker_state::stopping) // it started too late
                signal_process(w.pidfd.get(), w.pidfd ? 0 : w.pid, SIGKILL);
        }
        for (int fd : fds)
            if (fd >= 0)
                ::close(fd);
        if (got <= 0) {
            // The server died: nothing can run any more. Its workers die with it
            // (PR_SET_PDEATHSIG); their pidfds, where there are any, say when.
            unwatch(m_control.get());
            std::string how = "ended";
            if (m_server_pid > 0) {
                int status = 0;
                if (m_server_is_child &&
                    wait_for_child(m_server_pidfd.get(), m_server_pid, status, false) > 0)
                    how = describe_wait_status(status);
                m_server_pid = -1;
                unwatch(m_server_pidfd.get());
                m_server_pidfd.reset();
            }
            break_pool(std::make_exception_ptr(
                worker_died(concat("triad::process_pool: the fork server ", how))));
            for (std::size_t i = 0; i < m_workers.size(); ++i) {
                worker& w = *m_workers[i];
                if (w.state != worker_state::dead && !w.pidfd) {
                    // Without a pidfd nobody will report its end: take it as ended now.
                    w.ended = true;
                    w.ended_at = std::chrono::steady_clock::now() - std::chrono::seconds(1);
                }
            }
            return;
        }
        if (type == control_type::spawned && message.slot < m_workers.size()) {
            became_ready(message.slot);
        } else if (type == control_type::spawn_failed && message.slot < m_workers.size()) {
            spawn_failed(message.slot, std::generic_category().message(message.status));
        } else if (type == control_type::exited) {
            for (std::size_t i = 0; i < m_workers.size(); ++i) {
                worker& w = *m_workers[i];
                if (w.pid == message.pid && w.state != worker_state::dead && !w.status_known) {
                    w.status_known = true;
                    w.exit_status = message.status;
                    process_ended(i);
                    break;
                }
            }
        }
    }
}

// The worker process is gone (its pidfd is readable, or the server reaped it). What it wrote
// before it died is still in its ring: read it all, then settle its tasks.
inline void process_manager::process_ended(std::size_t slot) {
    worker& w = *m_workers[slot];
    if (w.state == worker_state::dead)
        return;
    if (!w.ended) {
        w.ended = true;
        w.ended_at = std::chrono::steady_clock::now();
        unwatch(w.pidfd.get());
        read_results(slot); // the doorbells, then all of its ring
    }
    if (w.state != worker_state::dead && (w.status_known || !w.pidfd))
        finalize_death(slot);
    // else: the server's report of how it ended follows (or the 200 ms grace in loop()).
}

// A worker is ready once it ran its initializer (its ready frame) and the server said who it is
// (its pid and pidfd), whichever comes last.
inline void process_manager::became_ready(std::size_t slot) {
    worker& w = *m_workers[slot];
    if (w.state != worker_state::starting || !w.initialized || w.pid <= 0)
        return;
    w.state = worker_state::ready;
    m_start_failures = 0;
    m_start_error = nullptr;
    m_ready_pids[slot].store(w.pid, std::memory_order_release);
    std::lock_guard lock(m_state_mutex);
    if (m_starting > 0 && --m_starting == 0)
        m_state_changed.notify_all();
}

// The pipe carries doorbells, which only wake this thread, and end of file when the worker has
// gone; what the worker sends is in its ring.
inline void process_manager::read_results(std::size_t slot) {
    worker& w = *m_workers[slot];
    while (w.result_fd) {
        char bells[256];
        const ssize_t n =
            retry_eintr([&] { return ::read(w.result_fd.get(), bells, sizeof bells); });
        if (n == static_cast<ssize_t>(sizeof bells))
            continue;
        if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)))
            break;
        // End of file (or an error): the worker closed its end by exiting. Its death is
        // settled by the process, not by this: a grandchild may hold a copy of the pipe.
        unwatch(w.result_fd.get());
        w.result_fd.reset();
    }
    drain_ring(slot);
}

inline void process_manager::drain_ring(std::size_t slot) {
    worker& w = *m_workers[slot];
    result_ring& ring = m_pool.rings[slot];
    // About one ring's worth per turn of the loop, so a worker streaming a large result does not
    // keep the I/O thread from the other rings (a quick result there would wait); all of it once
    // the worker has ended, before its tasks are settled.
    std::size_t budget = result_ring::capacity;
    while (!w.ring_closed && w.state != worker_state::dead && (budget > 0 || w.ended)) {
        std::uint64_t head = ring.head.load(std::memory_order_relaxed);
        const std::uint64_t tail = ring.tail.load(std::memory_order_acquire);
        if (tail == head)
            return;
        receive_buffer& buffer = w.parser.buffer();
        buffer.ensure_room(
            std::clamp<std::size_t>(w.parser.missing(), 64 * 1024, 16 * 1024 * 1024));
        const auto n =
            static_cast<std::size_t>(std::min<std::uint64_t>(tail - head, buffer.room()));
        const auto at = static_cast<std::size_t>(head % result_ring::capacity);
        const std::size_t first = std::min(n, result_ring::capacity - at);
        std::memcpy(buffer.end(), ring.data + at, first);
        std::memcpy(buffer.end() + first, ring.data, n - first);
        buffer.grow(n);
        budget -= std::min(budget, n);
        head += n;
        ring.head.store(head, std::memory_order_release);
        // A worker waiting for room (a large result) is woken. (Dekker with wait_for_room: head
        // is stored before the flag is read; the worker sets the flag before it reads head.)
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (ring.writer_waiting.load(std::memory_order_relaxed) != 0) {
            ring.drained.fetch_add(1, std::memory_order_release);
            futex_wake(ring.drained, 1, futex_scope::process_shared);
        }
        try {
            w.parser.parse([&](const frame_header& header, byte_reader& payload, bool) {
                handle_frame(slot, header, payload);
            });
        } catch (const protocol_error&) {
            // A worker that sends what cannot be read (garbage, or a result over the size
            // limit) is killed and replaced; the task it answered fails with the reason, so
            // it is not run again and again.
            if (!w.outstanding.empty()) {
                w.poisoned_task = w.outstanding.front().task->id();
                w.poison = std::current_exception();
            }
            // Its end, seen through the pidfd or the server's report, settles its tasks.
            if (!w.ended)
                signal_process(w.pidfd.get(), w.pidfd ? 0 : w.pid, SIGKILL);
            w.ring_closed = true;
            unwatch(w.result_fd.get());
            w.result_fd.reset();
            return;
        }
    }
}

// Before the I/O thread sleeps: every live worker's doorbell is armed, then the rings are
// looked at once more; true if one has something, so the thread must not sleep.
inline bool process_manager::arm_doorbells() noexcept {
    for (std::size_t i = 0; i < m_workers.size(); ++i)
        if (m_workers[i]->state != worker_state::dead)
            m_pool.rings[i].doorbell_armed.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    for (std::size_t i = 0; i < m_workers.size(); ++i) {
        const worker& w = *m_workers[i];
        const result_ring& ring = m_pool.rings[i];
        if (w.state != worker_state::dead && !w.ring_closed &&
            ring.tail.load(std::memory_order_relaxed) != ring.head.load(std::memory_order_relaxed))
            return true;
    }
    return false;
}

inline void process_manager::disarm_doorbells() noexcept {
    for (std::size_t i = 0; i < m_workers.size(); ++i)
        m_pool.rings[i].doorbell_armed.store(0, std::memory_order_relaxed);
}

inline void process_manager::handle_frame(std::size_t slot, const frame_header& header,
                                          byte_reader& payload) {
    worker& w = *m_workers[slot];
    const auto kind = static_cast<frame_kind>(header.kind);
    if (kind == frame_kind::ready) {
        w.initialized = true;
        became_ready(slot);
        return;
    }
    if (kind == frame_kind::init_failed) {
        remote_failure failure;
        decode_value(payload, failure);
        std::exception_ptr error;
        try {
            try {
                throw remote_error(failure.type_name, failure.message);
            } catch (...) {
                std::throw_with_nested(initializer_error(
                    concat("triad::process_pool: the initializer threw in worker ", slot, ": ",
                           failure.type_name, ": ", failure.message)));
            }
        } catch (...) {
            error = std::current_exception();
        }
        bool constructing;
        {
            std::lock_guard lock(m_state_mutex);
            constructing = m_starting > 0;
        }
        // At construction the constructor throws it. In a replacement the worker (which exits
        // now) is started again; ten failures in a row break the pool with this error.
        if (constructing)
            break_pool(error);
        else
            m_start_error = error;
        return;
    }
    if (kind == frame_kind::retiring) {
        w.state = worker_state::retiring;
        return;
    }
    if (w.outstanding.empty() || w.outstanding.front().task->id() != header.task_id || w.sent == 0)
        throw protocol_error("triad: a worker answered a task it was not running");
    remote_task* task = w.outstanding.front().task;
    w.outstanding.pop_front();
    --w.sent;
    const auto now = std::chrono::steady_clock::now();
    if (header.sequence == answer_timed && kind != frame_kind::cancelled) {
        const auto began = payload.read_scalar<std::int64_t>();
        const auto ended = payload.read_scalar<std::int64_t>();
        trace_task(slot, began, ended);
    }
    const double took = std::chrono::duration<double, std::nano>(now - w.head_since).count();
    w.task_ns = w.task_ns == 0 ? took : 0.8 * w.task_ns + 0.2 * took;
    // Enough tasks in flight to cover ~200 us of work (a cross-core wake-up here costs tens of
    // microseconds), at least two so a worker rarely waits for its next task; one for tasks
    // over 2 ms, where that wait is under 2% and a second task would only wait behind the first.
    w.window = w.task_ns > 2e6 ? 1
                               : static_cast<std::size_t>(
                                     std::clamp(200'000.0 / std::max(w.task_ns, 1.0), 2.0, 1024.0));
    w.head_since = now;
    if (kind == frame_kind::result) {
        m_pending_count.fetch_sub(1, std::memory_order_relaxed);
        m_completed.fetch_add(1, std::memory_order_relaxed);
        task->succeed(payload);
        task_done();
    } else if (kind == frame_kind::failure) {
        remote_failure failure;
        std::exception_ptr error;
        try {
            decode_value(payload, failure);
            error = std::make_exception_ptr(remote_error(failure.type_name, failure.message));
        } catch (...) {
            error = std::current_exception();
        }
        m_completed.fetch_add(1, std::memory_order_relaxed);
        finish_task(task, std::move(error), false);
    } else if (kind == frame_kind::too_large) {
        std::string why;
        std::exception_ptr error;
        try {
            decode_value(payload, why);
            error = std::make_exception_ptr(protocol_error(why));
        } catch (...) {
            error = std::current_exception();
        }
        m_completed.fetch_add(1, std::memory_order_relaxed);
        finish_task(task, std::move(error), false);
    } else if (kind == frame_kind::cancelled) {
        finish_task(task, cancelled_error(), true); // never ran: future::cancel() says so too
    } else {
        throw protocol_error("triad: unexpected frame from a worker");
    }
}

// The worker's lane is a process of its own in the trace, named once per trace session; the
// worker timed the task itself (one clock for all processes).
inline void process_manager::trace_task(std::size_t slot, std::int64_t began,
                                        std::int64_t ended) noexcept {
    if (!trace::enabled())
        return;
    worker& w = *m_workers[slot];
    const auto pid = static_cast<std::int32_t>(w.pid);
    const std::uint64_t session = trace::g_session.load(std::memory_order_relaxed);
    if (w.trace_session != session) {
        w.trace_session = session;
        try {
            trace::registry::instance().name_remote_lane(
                pid, pid, concat("process_pool ", m_trace_serial, " worker ", slot));
        } catch (...) {
            // out of memory: the lane keeps its pid for a name
        }
    }
    trace::record("task", "process_pool", began, ended, pid, pid);
}

// Callers move their exception in: the I/O thread must not keep a reference to it, or the last
// reference may die here after the consumer read it, which ThreadSanitizer (blind to the
// reference count inside libstdc++) reports as a race.
inline void process_manager::finish_task(remote_task* task, std::exception_ptr error,
                                         bool cancelled) {
    m_pending_count.fetch_sub(1, std::memory_order_relaxed);
    if (!task->fail(std::move(error)))
        cancelled = true; // by its future, before
    if (cancelled)
        m_cancelled.fetch_add(1, std::memory_order_relaxed);
    task_done();
}

inline void process_manager::task_done() noexcept {
    std::lock_guard lock(m_state_mutex);
    if (--m_unfinished == 0)
        m_state_changed.notify_all();
}

inline void process_manager::dispatch() {
    if (m_broken) {
        // A submit that passed the check just before the pool broke puts its task in the inbox
        // after break_pool emptied it: it fails here, with the reason, on the next turn.
        while (!m_pending.empty()) {
            remote_task* task = m_pending.front();
            m_pending.pop_front();
            finish_task(task, m_broken, false);
        }
        return;
    }
    if (const bool tracing = trace::enabled(); tracing != m_tracing_shown) {
        m_tracing_shown = tracing;
        m_pool.shared->tracing.store(tracing ? 1 : 0, std::memory_order_relaxed);
    }
    for (int round = 0; round < 2; ++round) {
        // Each task goes to the least loaded ready worker with room in its window, so an idle
        // worker never waits while another has a queue.
        while (!m_pending.empty()) {
            worker* best = nullptr;
            for (auto& candidate : m_workers) {
                worker& w = *candidate;
                if (w.state != worker_state::ready || !w.task_fd ||
                    w.outstanding.size() >= w.window || w.next_sequence >= sequence_limit)
                    continue;
                // Ties go to the worker whose current task began last: one whose task has run
                // long (which is why its queue was taken back) does not get it again.
                if (best == nullptr || w.outstanding.size() < best->outstanding.size() ||
                    (w.outstanding.size() == best->outstanding.size() &&
                     w.head_since > best->head_since))
                    best = &w;
            }
            if (best == nullptr)
                break;
            // A large frame (over 64 KiB) only goes to a worker with nothing in flight: written
            // half-way into a busy worker's pipe it could not be taken back for an idle one.
            if (m_pending.front()->frame().size() > 64 * 1024 && !best->outstanding.empty())
                break;
            remote_task* task = m_pending.front();
            m_pending.pop_front();
            // Claimed only now that it goes: until then its future may still cancel it.
            if (!task->claim()) {
                m_pending_count.fetch_sub(1, std::memory_order_relaxed);
                m_cancelled.fetch_add(1, std::memory_order_relaxed);
                task->discard();
                task_done();
                continue;
            }
            if (best->outstanding.empty())
                best->head_since = std::chrono::steady_clock::now();
            const std::uint32_t sequence = best->next_sequence++;
            // The frame's sequence field is this worker's number for it (re-dispatched tasks
            // get a new one).
            std::memcpy(task->frame().data() + offsetof(frame_header, sequence), &sequence,
                        sizeof sequence);
            best->outstanding.push_back({task, sequence});
        }
        for (std::size_t i = 0; i < m_workers.size(); ++i)
            if (m_workers[i]->sent < m_workers[i]->outstanding.size() &&
                !m_workers[i]->writable_watch)
                write_some(i);
        if (!m_pending.empty() || !steal_for_idle_workers())
            return;
    }
}

// An idle worker and nothing pending: tasks queued behind a running one on another worker are
// taken back (those that have not started) and dispatched again, so no task waits behind a
// busy worker while another is idle. A queue behind a task is left alone while that task is
// young (under twice the worker's average task time, at least 50 us), which keeps streams of
// tiny tasks pipelined.
inline bool process_manager::steal_for_idle_workers() {
    bool idle = false;
    for (const auto& w : m_workers)
        if (w->state == worker_state::ready && w->task_fd && w->outstanding.empty())
            idle = true;
    if (!idle)
        return false;
    const auto now = std::chrono::steady_clock::now();
    std::size_t taken = 0;
    for (std::size_t i = 0; i < m_workers.size(); ++i) {
        worker& w = *m_workers[i];
        if (w.state != worker_state::ready || w.outstanding.size() < 2)
            continue;
        const double running_ns =
            std::chrono::duration<double, std::nano>(now - w.head_since).count();
        if (running_ns < std::max(50'000.0, 2 * w.task_ns))
            continue;
        taken += revoke_unstarted(i);
    }
    return taken != 0;
}

// Takes back every task of worker `slot` that has not started and puts them, in order, at the
// front of the queue; returns how many. Frames not written yet are simply kept; written ones
// are revoked in shared memory, in the compare-and-swap the worker's claim races with.
inline std::size_t process_manager::revoke_unstarted(std::size_t slot) {
    worker& w = *m_workers[slot];
    worker_slot& shared = m_pool.slots[slot];
    std::uint32_t started = 0;
    // The last fully written frame: everything up to it may be revoked.
    const std::uint32_t last_written = w.sent > 0 ? w.outstanding[w.sent - 1].sequence : 0;
    std::uint64_t word = shared.claim.load(std::memory_order_acquire);
    for (;;) {
        started = claim_started(word);
        if (last_written <= started)
            break; // every written frame started: nothing to revoke there
        if (shared.claim.compare_exchange_weak(word, make_claim(last_written, started),
                                               std::memory_order_acq_rel,
                                               std::memory_order_acquire))
            break;
    }
    // Written and not started: [first, sent). The frame being written (sent_bytes > 0) stays:
    // its bytes must be completed. Frames after it were never written.
    std::size_t first = 0;
    while (first < w.sent && w.outstanding[first].sequence <= started)
        ++first;
    std::vector<remote_task*> back;
    for (std::size_t i = first; i < w.sent; ++i)
        back.push_back(w.outstanding[i].task);
    const std::size_t keep_partial = w.sent_bytes > 0 ? 1 : 0;
    for (std::size_t i = w.sent + keep_partial; i < w.outstanding.size(); ++i)
        back.push_back(w.outstanding[i].task);
    if (back.empty())
        return 0;
    std::deque<in_flight> kept(w.outstanding.begin(),
                               w.outstanding.begin() + static_cast<std::ptrdiff_t>(first));
    if (keep_partial != 0)
        kept.push_back(w.outstanding[w.sent]);
    w.outstanding.swap(kept);
    w.sent = first;
    for (auto it = back.rbegin(); it != back.rend(); ++it) {
        (*it)->unclaim();
        m_pending.push_front(*it);
    }
    return back.size();
}

inline void process_manager::write_some(std::size_t slot) {
    worker& w = *m_workers[slot];
    while (w.task_fd && w.sent < w.outstanding.size()) {
        iovec io[64];
        std::size_t count = 0;
        for (std::size_t i = w.sent; i < w.outstanding.size() && count < 64; ++i, ++count) {
            std::vector<char>& frame = w.outstanding[i].task->frame();
            const std::size_t skip = i == w.sent ? w.sent_bytes : 0;
            io[count] = {frame.data() + skip, frame.size() - skip};
        }
        const ssize_t n = ::writev(w.task_fd.get(), io, static_cast<int>(count));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!w.writable_watch) {
                    watch(w.task_fd.get(), tag_task | slot, EPOLLOUT);
                    w.writable_watch = true;
                }
                return;
            }
            // EPIPE: the worker is gone; its pidfd (or the server) will say so.
            unwatch(w.task_fd.get());
            w.task_fd.reset();
            w.writable_watch = false;
            return;
        }
        std::size_t left = static_cast<std::size_t>(n);
        while (left > 0) {
            const std::size_t frame_left =
                w.outstanding[w.sent].task->frame().size() - w.sent_bytes;
            if (left >= frame_left) {
                left -= frame_left;
                ++w.sent;
                w.sent_bytes = 0;
            } else {
                w.sent_bytes += left;
                left = 0;
            }
        }
    }
    if (w.writable_watch && w.task_fd) {
        unwatch(w.task_fd.get());
        w.writable_watch = false;
    }
}

inline void process_manager::finalize_death(std::size_t slot) {
    worker& w = *m_workers[slot];
    const worker_state was = w.state;
    w.state = worker_state::dead;
    m_ready_pids[slot].store(0, std::memory_order_release);
    unwatch(w.pidfd.get());
    w.pidfd.reset();
    unwatch(w.result_fd.get());
    w.result_fd.reset();
    unwatch(w.task_fd.get());
    w.task_fd.reset();
    w.writable_watch = false;

    worker_slot& shared = m_pool.slots[slot];
    const std::uint32_t started = claim_started(shared.claim.load(std::memory_order_acquire));
    const std::int64_t deadline = shared.deadline_ns.load(std::memory_order_acquire);
    // Killed by SIGKILL past the deadline the worker armed its own timer for: a timeout.
    const bool timed_out = w.status_known && WIFSIGNALED(w.exit_status) &&
                           WTERMSIG(w.exit_status) == SIGKILL && deadline != 0 &&
                           steady_now_ns() >= deadline;
    const std::string who = concat("worker ", w.pid, " (slot ", slot, ") ");
    const std::string how =
        w.status_known ? describe_wait_status(w.exit_status) : std::string("ended");
    // Counted before the tasks it ran fail: whoever sees a task's worker_died ("the worker was
    // replaced") and then reads workers_replaced() sees this death counted.
    const bool replaced = !m_broken && !m_stopping_workers && was != worker_state::stopping &&
                          was != worker_state::retiring;
    if (replaced)
        m_replaced.fetch_add(1, std::memory_order_relaxed);
    std::vector<remote_task*> requeue;
    for (const in_flight& f : w.outstanding) {
        remote_task* task = f.task;
        if (w.poisoned_task != 0 && task->id() == w.poisoned_task) {
            finish_task(task, std::move(w.poison), false);
        } else if (f.sequence <= started && f.sequence != 0 && m_terminating) {
            finish_task(task,
                        std::make_exception_ptr(task_cancelled(
                            "triad::process_pool::terminate() killed the task's worker")),
                        true);
        } else if (f.sequence <= started && f.sequence != 0) {
            // It started: it may have done anything, so it never runs again.
            std::exception_ptr error;
            if (timed_out && f.sequence == started)
                error = std::make_exception_ptr(task_timeout(
                    frame_timeout_ns(*task) < 0
                        ? concat("triad::process_pool: item ",
                                 shared.items_done.load(std::memory_order_relaxed),
                                 " of a map chunk (counting from 0) ran longer than the per-item "
                                 "timeout; ",
                                 who, "was killed and replaced")
                        : concat("triad::process_pool: the task ran longer than its timeout; ", who,
                                 "was killed and replaced")));
            else
                error = std::make_exception_ptr(
                    worker_died(concat("triad::process_pool: ", who, how,
                                       " while running the task; the worker was replaced")));
            finish_task(task, std::move(error), false);
        } else {
            requeue.push_back(task);
        }
    }
    w.outstanding.clear();
    w.sent = w.sent_bytes = 0;
    shared.running_task.store(0, std::memory_order_relaxed);
    shared.deadline_ns.store(0, std::memory_order_relaxed);
    shared.items_done.store(0, std::memory_order_relaxed);
    if (m_broken) {
        for (remote_task* task : requeue)
            finish_task(task, m_broken, false);
        return;
    }
    // Tasks the worker never started go back to the front of the queue, in order.
    for (auto it = requeue.rbegin(); it != requeue.rend(); ++it) {
        (*it)->unclaim();
        m_pending.push_front(*it);
    }
    if (m_stopping_workers || was == worker_state::stopping)
        return;
    if (was == worker_state::retiring) {
        m_recycled.fetch_add(1, std::memory_order_relaxed);
    } else {
        // A worker that cannot even start (its initializer throws or crashes) is started again
        // after a pause, as the cause may pass; ten in a row break the pool with the reason.
        if (was == worker_state::starting && ++m_start_failures >= 10) {
            break_pool(m_start_error ? m_start_error
                                     : std::make_exception_ptr(worker_died(concat(
                                           "triad::process_pool: workers keep dying before they "
                                           "are ready; the last ",
                                           how))));
            return;
        }
    }
    if (was == worker_state::starting)
        m_respawn_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
    else
        spawn(slot);
}

// A worker's own timer ends a task at its deadline. Should that fail (the task deleted the
// timer, or exec'd), the parent kills it a second past the deadline, through the pidfd, so the
// kill cannot reach a reused pid; the deadline in shared memory decides the blame at death.
inline void process_manager::check_deadlines() {
    const std::int64_t now = steady_now_ns();
    for (std::size_t i = 0; i < m_workers.size(); ++i) {
        worker& w = *m_workers[i];
        if (w.state == worker_state::dead || w.ended)
            continue;
        const std::int64_t deadline = m_pool.slots[i].deadline_ns.load(std::memory_order_acquire);
        if (deadline != 0 && now - 1'000'000'000 > deadline)
            signal_process(w.pidfd.get(), w.pidfd ? 0 : w.pid, SIGKILL);
    }
}

inline void process_manager::break_pool(std::exception_ptr reason) {
    {
        std::lock_guard lock(m_state_mutex);
        if (!m_broken)
            m_broken = reason;
        m_closed.store(true, std::memory_order_release);
        m_state_changed.notify_all();
    }
    take_inbox();
    while (!m_pending.empty()) {
        remote_task* task = m_pending.front();
        m_pending.pop_front();
        finish_task(task, reason, false);
    }
}

inline bool process_manager::all_workers_gone() const noexcept {
    for (const auto& w : m_workers)
        if (w->state != worker_state::dead)
            return false;
    return true;
}

inline void process_manager::stop_server() noexcept {
    // Tasks still in a worker when the pool stops (a broken pool) fail rather than hang.
    for (auto& w : m_workers) {
        for (const in_flight& f : w->outstanding) {
            m_pending_count.fetch_sub(1, std::memory_order_relaxed);
            if (!f.task->fail(std::make_exception_ptr(
                    worker_died("triad::process_pool: the pool stopped before the task finished"))))
                m_cancelled.fetch_add(1, std::memory_order_relaxed);
            task_done();
        }
        w->outstanding.clear();
        w->task_fd.reset();
        w->result_fd.reset();
        w->pidfd.reset();
    }
    // A submit accepted while the loop was ending (counted, not yet in the inbox) is failed
    // too, never left pending: the pool is closed, so the count only falls, and it reaches zero
    // once each accepted submit has put its task in the inbox, a moment later.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
        take_inbox();
        for (remote_task* task : m_pending) {
            m_pending_count.fetch_sub(1, std::memory_order_relaxed);
            std::exception_ptr why =
                m_terminating ? std::make_exception_ptr(task_cancelled(
                                    "triad::process_pool::terminate() cancelled the task"))
                : m_broken    ? m_broken
                              : std::make_exception_ptr(worker_died(
                                    "triad::process_pool: the pool stopped before the task ran"));
            if (!task->fail(std::move(why)))
                m_cancelled.fetch_add(1, std::memory_order_relaxed); // by its future, before
            task_done();
        }
        m_pending.clear();
        {
            std::lock_guard lock(m_state_mutex);
            if (m_unfinished == 0)
                break;
        }
        if (std::chrono::steady_clock::now() > give_up) {
            std::fputs("triad::process_pool: tasks still counted as unfinished at shutdown; "
                       "giving up on them\n",
                       stderr);
            break;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    if (m_control) {
        const control_message stop{static_cast<std::uint32_t>(control_type::stop), 0, 0, 0};
        (void)send_control(m_control.get(), stop);
    }
    m_control.reset(); // end of file too, for a server that missed the message
    if (m_server_pid > 0) {
        // Wait for the server through its pidfd, with a bound: a server that does not end (it
        // is stopped, or stuck) is killed rather than waited for.
        if (m_server_pidfd) {
            pollfd gone{m_server_pidfd.get(), POLLIN, 0};
            if (retry_eintr([&] { return ::poll(&gone, 1, 5000); }) == 0)
                signal_process(m_server_pidfd.get(), 0, SIGKILL);
        }
        if (m_server_is_child) {
            int status = 0;
            wait_for_child(m_server_pidfd.get(), m_server_pid, status, false);
        }
        m_server_pid = -1;
    }
    m_server_pidfd.reset();
}

} // namespace triad::detail
