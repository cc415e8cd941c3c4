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
    virtual void fail(std::exception_ptr error) noexcept = 0;

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
    explicit remote_future_task(std::uint64_t id) : shared_state<R>(2), remote_task(id) {}

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

    void fail(std::exception_ptr error) noexcept override {
        this->set_error(std::move(error));
        finish();
    }

private:
    void finish() noexcept {
        std::vector<char>().swap(frame()); // the argument bytes are not needed any more
        this->publish();
        this->release();
    }
};

struct process_manager_config {
    std::size_t processes = 1;
    std::function<void(std::size_t)> initializer;
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

    // Queues a task for the I/O thread. On refusal (shutdown, a broken pool) the task is failed
    // and pool_closed is thrown.
    void enqueue(remote_task* task);
    void wait_idle();
    void shutdown(bool cancel);
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
    pid_t server_pid() const noexcept { return m_server_pid; }

private:
    enum class worker_state { starting, ready, retiring, dead };

    struct worker {
        worker(std::uint64_t max_payload, std::size_t max_nesting)
            : parser(max_payload, max_nesting) {}
        worker_state state = worker_state::dead;
        pid_t pid = 0;
        unique_fd task_fd;
        unique_fd result_fd;
        frame_parser parser;
        std::deque<remote_task*> outstanding; // sent or being sent, oldest first
        std::size_t sent = 0;                 // how many of `outstanding` are fully written
        std::size_t sent_bytes = 0;           // of outstanding[sent]
        bool writable_watch = false;
        bool eof = false;
        bool exited = false;
        int exit_status = 0;
        std::uint64_t timed_out_task = 0;
        std::uint64_t poisoned_task = 0;
        std::exception_ptr poison;
        std::uint64_t observed_task = 0; // what the shared slot said at the last check
        std::chrono::steady_clock::time_point observed_since{};
        std::chrono::steady_clock::time_point head_since{};
        double task_ns = 0; // moving average of task time, for the dispatch window
        std::size_t window = 2;
    };

    // epoll tags
    static constexpr std::uint64_t tag_wake = 1ull << 40;
    static constexpr std::uint64_t tag_control = 2ull << 40;
    static constexpr std::uint64_t tag_result = 3ull << 40;
    static constexpr std::uint64_t tag_task = 4ull << 40;
    static constexpr std::uint64_t tag_mask = 0xffull << 40;

    void run() noexcept;
    void loop();
    void take_inbox();
    void handle_control();
    void handle_result(std::size_t slot);
    void handle_frame(std::size_t slot, const frame_header& header, byte_reader& payload);
    void write_some(std::size_t slot);
    void dispatch();
    void spawn(std::size_t slot);
    void worker_gone(std::size_t slot);
    void finalize_death(std::size_t slot);
    void check_timeouts();
    void finish_task(remote_task* task, std::exception_ptr error, bool cancelled);
    void break_pool(std::exception_ptr reason);
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
    unique_fd m_control;
    unique_fd m_epoll;
    unique_fd m_wake;
    pid_t m_server_pid = -1;
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
    bool m_loop_done = false;

    std::atomic<bool> m_closed{false};
    std::atomic<std::uint64_t> m_completed{0};
    std::atomic<std::uint64_t> m_cancelled{0};
    std::atomic<std::uint64_t> m_replaced{0};
    std::atomic<std::uint64_t> m_recycled{0};
    std::unique_ptr<std::atomic<pid_t>[]> m_ready_pids; // published for worker_pids()
    std::size_t m_start_crashes = 0;
    std::atomic<std::uint64_t> m_pending_count{0};
    std::size_t m_spawn_failures = 0;
    std::chrono::steady_clock::time_point m_respawn_at{};
    bool m_stopping_workers = false;
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
        throw std::invalid_argument(
            concat("triad::process_pool: max_message_size above ", max_message_limit,
                   " bytes (1 TiB): frame sizes must not overflow"));
    if (m_config.max_nesting == 0)
        throw std::invalid_argument("triad::process_pool: max_nesting must be at least 1");
    const std::size_t n = m_config.processes;
    for (std::size_t i = 0; i < n; ++i)
        m_workers.push_back(std::make_unique<worker>(m_config.max_message_size, m_config.max_nesting));
    m_ready_pids = std::make_unique<std::atomic<pid_t>[]>(n);

    // Shared with every worker: the cancel flag and one slot per worker.
    m_shared_bytes = sizeof(shared_state_block) + n * sizeof(worker_slot);
    m_shared_memory =
        ::mmap(nullptr, m_shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m_shared_memory == MAP_FAILED)
        throw_errno("triad::process_pool: mmap");
    m_pool.shared = ::new (m_shared_memory) shared_state_block();
    m_pool.slots = reinterpret_cast<worker_slot*>(static_cast<char*>(m_shared_memory) +
                                                  sizeof(shared_state_block));
    for (std::size_t i = 0; i < n; ++i)
        ::new (&m_pool.slots[i]) worker_slot();
    m_pool.slot_count = n;
    m_pool.initializer = m_config.initializer;
    m_pool.max_tasks_per_child = m_config.max_tasks_per_child;
    m_pool.max_message_size = m_config.max_message_size;
    m_pool.max_nesting = m_config.max_nesting;
    m_pool.name_prefix = m_config.name_prefix;
    ::pthread_sigmask(SIG_SETMASK, nullptr, &m_pool.original_signal_mask);

    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
        ::munmap(m_shared_memory, m_shared_bytes);
        throw_errno("triad::process_pool: socketpair");
    }
    m_control.reset(pair[0]);
    unique_fd server_end(pair[1]);
    set_nonblocking(m_control.get(), true);

    // Everything the server needs is allocated here, before the fork.
    fork_server server(m_pool, server_end.get());
    const pid_t pid = fork_with_stdio_locked();
    if (pid < 0) {
        const int error = errno;
        ::munmap(m_shared_memory, m_shared_bytes);
        throw_errno("triad::process_pool: fork", error);
    }
    if (pid == 0) {
        m_control.release(); // closed by the server's descriptor sweep
        server.run();
    }
    m_server_pid = pid;
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
        const int n =
            retry_eintr([&] { return ::epoll_wait(m_epoll.get(), events, 64, poll_timeout_ms()); });
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
                handle_result(slot);
            } else if (tag == tag_task) {
                if ((events[i].events & (EPOLLERR | EPOLLHUP)) != 0)
                    unwatch(m_workers[slot]->task_fd.get());
                else
                    write_some(slot);
            }
        }
        take_inbox();

        bool drain;
        bool cancel;
        {
            std::lock_guard lock(m_state_mutex);
            drain = m_drain;
            cancel = m_cancel;
        }
        if (cancel) {
            while (!m_pending.empty()) {
                remote_task* task = m_pending.front();
                m_pending.pop_front();
                finish_task(task, std::make_exception_ptr(task_cancelled()), true);
            }
        }
        if (m_config.task_timeout)
            check_timeouts();
        if (std::chrono::steady_clock::now() >= m_respawn_at)
            for (std::size_t i = 0; i < m_workers.size(); ++i)
                if (m_workers[i]->state == worker_state::dead && !m_stopping_workers &&
                    m_workers[i]->exited && m_workers[i]->eof && !m_broken)
                    spawn(i);
        dispatch();

        if (drain) {
            bool idle;
            {
                std::lock_guard lock(m_state_mutex);
                idle = m_unfinished == 0 || m_broken;
            }
            if (idle && !m_stopping_workers) {
                // Closing the task pipes ends every worker; the server reports each exit.
                m_stopping_workers = true;
                for (auto& w : m_workers) {
                    unwatch(w->task_fd.get());
                    w->task_fd.reset();
                }
            }
            if (m_stopping_workers && all_workers_gone())
                return;
        }
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
    if (m_config.task_timeout) {
        for (const auto& w : m_workers)
            if (w->state != worker_state::dead && !w->outstanding.empty()) {
                const auto step = std::chrono::duration_cast<std::chrono::milliseconds>(
                    *m_config.task_timeout / 20);
                timeout = static_cast<int>(std::clamp<long long>(step.count(), 1, 50));
                break;
            }
    }
    for (const auto& w : m_workers)
        if (w->eof != w->exited) // half-dead: waiting for the other half of the news
            timeout = timeout < 0 ? 50 : std::min(timeout, 50);
    if (m_respawn_at > std::chrono::steady_clock::now())
        timeout = timeout < 0 ? 20 : std::min(timeout, 20);
    return timeout;
}

inline void process_manager::spawn(std::size_t slot) {
    worker& w = *m_workers[slot];
    pipe_pair task_pipe = make_pipe(O_CLOEXEC);
    pipe_pair result_pipe = make_pipe(O_CLOEXEC);
    grow_pipe(task_pipe.write.get(), 1 << 20);
    grow_pipe(result_pipe.write.get(), 1 << 20);
    set_nonblocking(task_pipe.write.get(), true);
    set_nonblocking(result_pipe.read.get(), true);
    const int give[2] = {task_pipe.read.get(), result_pipe.write.get()};
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
    w.head_since = w.observed_since = std::chrono::steady_clock::now();
    m_pool.slots[slot].running_task.store(0, std::memory_order_relaxed);
    watch(w.result_fd.get(), tag_result | slot, EPOLLIN);
}

inline void process_manager::handle_control() {
    for (;;) {
        control_message message{};
        int fds[2];
        const ssize_t got = receive_control(m_control.get(), message, fds);
        for (int fd : fds)
            if (fd >= 0)
                ::close(fd);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (got <= 0) {
            // The server died: nothing can run any more.
            unwatch(m_control.get());
            int status = 0;
            std::string how = "ended";
            if (retry_eintr([&] { return ::waitpid(m_server_pid, &status, 0); }) == m_server_pid) {
                how = describe_wait_status(status);
                m_server_pid = -1;
            }
            break_pool(std::make_exception_ptr(
                worker_died(concat("triad::process_pool: the fork server ", how))));
            for (auto& w : m_workers)
                if (w->state != worker_state::dead || !w->exited) {
                    w->exited = true;
                    w->exit_status = 0;
                    if (w->eof)
                        finalize_death(static_cast<std::size_t>(&w - &m_workers[0]));
                }
            return;
        }
        const auto type = static_cast<control_type>(message.type);
        if (type == control_type::spawned && message.slot < m_workers.size()) {
            worker& w = *m_workers[message.slot];
            w.pid = message.pid;
            m_spawn_failures = 0;
            if (w.state == worker_state::ready) // its ready frame came first
                m_ready_pids[message.slot].store(w.pid, std::memory_order_release);
        } else if (type == control_type::spawn_failed && message.slot < m_workers.size()) {
            worker& w = *m_workers[message.slot];
            unwatch(w.result_fd.get());
            w.state = worker_state::dead;
            w.exited = w.eof = true;
            w.task_fd.reset();
            w.result_fd.reset();
            m_respawn_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
            if (++m_spawn_failures >= 50)
                break_pool(std::make_exception_ptr(
                    worker_died(concat("triad::process_pool: cannot fork workers: ",
                                       std::generic_category().message(message.status)))));
        } else if (type == control_type::exited) {
            for (std::size_t i = 0; i < m_workers.size(); ++i) {
                worker& w = *m_workers[i];
                if (w.pid == message.pid && !w.exited) {
                    w.exited = true;
                    w.exit_status = message.status;
                    if (w.eof)
                        finalize_death(i);
                    break;
                }
            }
        }
    }
}

inline void process_manager::handle_result(std::size_t slot) {
    worker& w = *m_workers[slot];
    for (;;) {
        const long n = read_into(w.result_fd.get(), w.parser);
        if (n > 0) {
            try {
                w.parser.parse([&](const frame_header& header, byte_reader& payload, bool) {
                    handle_frame(slot, header, payload);
                });
            } catch (const protocol_error&) {
                // A worker that sends what cannot be read (garbage, or a result over the size
                // limit) is killed and replaced; the task it answered fails with the reason, so
                // it is not run again and again.
                if (!w.outstanding.empty()) {
                    w.poisoned_task = w.outstanding.front()->id();
                    w.poison = std::current_exception();
                }
                if (w.pid > 0)
                    ::kill(w.pid, SIGKILL);
                worker_gone(slot);
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        worker_gone(slot); // end of file: the worker exited
        return;
    }
}

inline void process_manager::handle_frame(std::size_t slot, const frame_header& header,
                                          byte_reader& payload) {
    worker& w = *m_workers[slot];
    const auto kind = static_cast<frame_kind>(header.kind);
    if (kind == frame_kind::ready) {
        w.state = worker_state::ready;
        m_start_crashes = 0;
        if (w.pid > 0)
            m_ready_pids[slot].store(w.pid, std::memory_order_release);
        std::lock_guard lock(m_state_mutex);
        if (m_starting > 0 && --m_starting == 0)
            m_state_changed.notify_all();
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
        break_pool(error);
        return;
    }
    if (kind == frame_kind::retiring) {
        w.state = worker_state::retiring;
        return;
    }
    if (w.outstanding.empty() || w.outstanding.front()->id() != header.task_id || w.sent == 0)
        throw protocol_error("triad: a worker answered a task it was not running");
    remote_task* task = w.outstanding.front();
    w.outstanding.pop_front();
    --w.sent;
    const auto now = std::chrono::steady_clock::now();
    const double took = std::chrono::duration<double, std::nano>(now - w.head_since).count();
    w.task_ns = w.task_ns == 0 ? took : 0.8 * w.task_ns + 0.2 * took;
    // Enough tasks in flight to cover ~200 us of work (a cross-core wake-up here costs tens of
    // microseconds), at least two so a worker never waits for its next task.
    w.window =
        static_cast<std::size_t>(std::clamp(200'000.0 / std::max(w.task_ns, 1.0), 2.0, 1024.0));
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
    } else if (kind == frame_kind::cancelled) {
        finish_task(task, std::make_exception_ptr(task_cancelled()), true);
    } else {
        throw protocol_error("triad: unexpected frame from a worker");
    }
}

// Callers move their exception in: the I/O thread must not keep a reference to it, or the last
// reference may die here after the consumer read it, which ThreadSanitizer (blind to the
// reference count inside libstdc++) reports as a race.
inline void process_manager::finish_task(remote_task* task, std::exception_ptr error,
                                         bool cancelled) {
    m_pending_count.fetch_sub(1, std::memory_order_relaxed);
    if (cancelled)
        m_cancelled.fetch_add(1, std::memory_order_relaxed);
    task->fail(std::move(error));
    task_done();
}

inline void process_manager::task_done() noexcept {
    std::lock_guard lock(m_state_mutex);
    if (--m_unfinished == 0)
        m_state_changed.notify_all();
}

inline void process_manager::dispatch() {
    if (m_pending.empty() || m_broken)
        return;
    // Each task goes to the least loaded ready worker with room in its window, so an idle
    // worker never waits while another has a queue.
    while (!m_pending.empty()) {
        worker* best = nullptr;
        for (auto& candidate : m_workers) {
            worker& w = *candidate;
            if (w.state != worker_state::ready || !w.task_fd || w.outstanding.size() >= w.window)
                continue;
            if (best == nullptr || w.outstanding.size() < best->outstanding.size())
                best = &w;
        }
        if (best == nullptr)
            break;
        if (best->outstanding.empty())
            best->head_since = std::chrono::steady_clock::now();
        best->outstanding.push_back(m_pending.front());
        m_pending.pop_front();
    }
    for (std::size_t i = 0; i < m_workers.size(); ++i)
        if (m_workers[i]->sent < m_workers[i]->outstanding.size() && !m_workers[i]->writable_watch)
            write_some(i);
}

inline void process_manager::write_some(std::size_t slot) {
    worker& w = *m_workers[slot];
    while (w.task_fd && w.sent < w.outstanding.size()) {
        iovec io[64];
        std::size_t count = 0;
        for (std::size_t i = w.sent; i < w.outstanding.size() && count < 64; ++i, ++count) {
            std::vector<char>& frame = w.outstanding[i]->frame();
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
            // EPIPE: the worker is gone; its end of file on the result pipe will follow.
            unwatch(w.task_fd.get());
            w.task_fd.reset();
            w.writable_watch = false;
            return;
        }
        std::size_t left = static_cast<std::size_t>(n);
        while (left > 0) {
            const std::size_t frame_left = w.outstanding[w.sent]->frame().size() - w.sent_bytes;
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

inline void process_manager::worker_gone(std::size_t slot) {
    worker& w = *m_workers[slot];
    if (w.eof)
        return;
    w.eof = true;
    unwatch(w.result_fd.get());
    if (w.task_fd) {
        unwatch(w.task_fd.get());
        w.task_fd.reset();
        w.writable_watch = false;
    }
    w.result_fd.reset();
    if (w.exited)
        finalize_death(slot); // else when the server reports how it ended
}

inline void process_manager::finalize_death(std::size_t slot) {
    worker& w = *m_workers[slot];
    const worker_state was = w.state;
    w.state = worker_state::dead;
    m_ready_pids[slot].store(0, std::memory_order_release);
    const std::uint64_t running_id = m_pool.slots[slot].running_task.exchange(0);
    const std::string who = concat("worker ", w.pid, " (slot ", slot, ") ");
    std::vector<remote_task*> requeue;
    for (remote_task* task : w.outstanding) {
        if (w.poisoned_task != 0 && task->id() == w.poisoned_task) {
            finish_task(task, std::move(w.poison), false);
        } else if (running_id != 0 && task->id() == running_id) {
            std::exception_ptr error;
            if (w.timed_out_task == running_id)
                error = std::make_exception_ptr(task_timeout(concat(
                    "triad::process_pool: the task ran longer than the pool's task_timeout; ", who,
                    "was killed and replaced")));
            else
                error = std::make_exception_ptr(worker_died(
                    concat("triad::process_pool: ", who, describe_wait_status(w.exit_status),
                           " while running the task; the worker was replaced")));
            finish_task(task, std::move(error), false);
        } else {
            requeue.push_back(task);
        }
    }
    w.outstanding.clear();
    w.sent = w.sent_bytes = 0;
    if (m_broken) {
        for (remote_task* task : requeue)
            finish_task(task, m_broken, false);
        return;
    }
    // Tasks the worker never started go back to the front of the queue, in order.
    for (auto it = requeue.rbegin(); it != requeue.rend(); ++it)
        m_pending.push_front(*it);
    if (m_stopping_workers)
        return;
    if (was == worker_state::retiring && running_id == 0) {
        m_recycled.fetch_add(1, std::memory_order_relaxed);
    } else {
        m_replaced.fetch_add(1, std::memory_order_relaxed);
        // A worker that cannot even start (its initializer crashes) must not respawn forever.
        if (was == worker_state::starting && ++m_start_crashes >= 10) {
            break_pool(std::make_exception_ptr(worker_died(
                concat("triad::process_pool: workers keep dying before they are ready; the last ",
                       describe_wait_status(w.exit_status)))));
            return;
        }
    }
    spawn(slot);
}

inline void process_manager::check_timeouts() {
    const auto now = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < m_workers.size(); ++i) {
        worker& w = *m_workers[i];
        if (w.state == worker_state::dead || w.eof || w.pid <= 0 || w.timed_out_task != 0)
            continue;
        const std::uint64_t running = m_pool.slots[i].running_task.load(std::memory_order_acquire);
        if (running != w.observed_task) {
            w.observed_task = running;
            w.observed_since = now;
        } else if (running != 0 && now - w.observed_since > *m_config.task_timeout) {
            w.timed_out_task = running;
            ::kill(w.pid, SIGKILL);
        }
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
        if (w->state != worker_state::dead || !w->exited || !w->eof)
            return false;
    return true;
}

inline void process_manager::stop_server() noexcept {
    // Tasks still in a worker when the pool stops (a broken pool) fail rather than hang.
    for (auto& w : m_workers) {
        for (remote_task* task : w->outstanding) {
            m_pending_count.fetch_sub(1, std::memory_order_relaxed);
            task->fail(std::make_exception_ptr(
                worker_died("triad::process_pool: the pool stopped before the task finished")));
            task_done();
        }
        w->outstanding.clear();
        w->task_fd.reset();
        w->result_fd.reset();
    }
    for (remote_task* task : m_pending) {
        m_pending_count.fetch_sub(1, std::memory_order_relaxed);
        task->fail(std::make_exception_ptr(
            worker_died("triad::process_pool: the pool stopped before the task ran")));
        task_done();
    }
    m_pending.clear();
    m_control.reset(); // the server sees end of file, kills what is left and exits
    if (m_server_pid > 0) {
        int status = 0;
        retry_eintr([&] { return ::waitpid(m_server_pid, &status, 0); });
        m_server_pid = -1;
    }
}

} // namespace triad::detail
