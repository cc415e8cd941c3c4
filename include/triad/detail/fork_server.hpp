#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <triad/detail/exception_info.hpp>
#include <triad/detail/parker.hpp>
#include <triad/detail/posix.hpp>
#include <triad/detail/remote.hpp>
#include <triad/detail/trace.hpp>

// The child side of a process pool. The pool forks one *fork server* when it is built; the
// server is single-threaded, holds no lock and only ever makes syscalls, so forking workers
// from it stays safe however many threads the parent starts later (the thread pool, an event
// loop), and respawning a crashed worker never forks the parent again.
//
// Descriptors: the server closes everything it inherited except stdin/stdout/stderr and its
// control socket, so the parent's files and sockets never stay open in pool processes. Each
// worker gets a task pipe and a result pipe, created by the parent and handed over with
// SCM_RIGHTS; the server hands back a pidfd of each worker, so the parent learns of a worker's
// end from the process itself, never from a pipe some grandchild may hold open.
//
// Signals: the server and its workers start with every disposition at its default, whatever
// the parent set: a parent that ignores SIGCHLD (or set SA_NOCLDWAIT) would otherwise make the
// kernel reap workers behind the server's back, and a parent's handler has no business running
// in a worker. The server ignores every signal from outside but faults: it is infrastructure
// that ends with the parent, so a SIGTERM (or SIGUSR1...) to the whole service leaves the parent
// to decide; workers keep the defaults and die of such signals like any process.
//
// Lifetime: the server watches the parent's pidfd and ends, killing its workers, when the
// parent process is gone (even by SIGKILL, and even while some other process holds the control
// socket open); end-of-file on the control socket and an explicit stop message end it too.
// Workers have PR_SET_PDEATHSIG on the server (whose only thread is the one that forked them,
// so the signal fires exactly when the server is gone). The server itself cannot use
// PR_SET_PDEATHSIG: it fires when the parent *thread* that forked it ends, and a pool may be
// built on a thread that ends long before the process does.
//
// Exactly once: every task frame carries a per-worker sequence number, and a worker *claims*
// a task in shared memory before it starts it (a compare-and-swap that fails once the parent
// revoked it). So when a worker dies, the parent knows which tasks started (they fail: nothing
// may run twice) and which never did (they run elsewhere); and it can take back tasks queued
// behind a long one and give them to an idle worker. Results are published as soon as each task
// ends, never held back behind the next: into a ring in shared memory (see result_ring), so a
// stream of tiny tasks costs no syscall per result, and a dead worker's results are not lost.
namespace triad::detail {

// Shared (MAP_SHARED) between the parent and every worker: one cache line per worker.
struct alignas(64) worker_slot {
    std::atomic<std::uint64_t> running_task{0}; // the task a worker is running, 0 between tasks
    // (revoked_through << 32) | started: the sequence number of the last task the worker
    // started, and the last one the parent took back. A worker starts task s only if
    // s > revoked_through, in the same compare-and-swap that records it as started.
    std::atomic<std::uint64_t> claim{0};
    // When the running task's time is up (steady clock, ns), 0 if it has no timeout.
    std::atomic<std::int64_t> deadline_ns{0};
    // Items of the running map chunk finished so far (progress bars; which item timed out).
    std::atomic<std::uint64_t> items_done{0};
};

inline constexpr std::uint32_t claim_started(std::uint64_t claim) noexcept {
    return static_cast<std::uint32_t>(claim);
}
inline constexpr std::uint32_t claim_revoked(std::uint64_t claim) noexcept {
    return static_cast<std::uint32_t>(claim >> 32);
}
inline constexpr std::uint64_t make_claim(std::uint32_t revoked, std::uint32_t started) noexcept {
    return (std::uint64_t{revoked} << 32) | started;
}

// What a worker sends its parent (results, and its ready, retiring and failure frames) goes
// through this byte ring in shared memory, one per slot: a single producer (the worker) and a
// single consumer (the parent's I/O thread). A result is in the ring the moment its task ends,
// and a write() costs a syscall, so the pipe beside it carries only a doorbell, rung when the
// I/O thread said it is going to sleep, and end of file. A worker's death loses nothing it
// published: the parent drains the ring before settling the worker's tasks.
struct result_ring {
    static constexpr std::size_t capacity = 128 * 1024; // a power of two

    alignas(64) std::atomic<std::uint64_t> tail{0}; // bytes ever published (worker)
    // Set by a worker waiting for room; the parent then bumps `drained` and wakes it (futex).
    std::atomic<std::uint32_t> writer_waiting{0};
    alignas(64) std::atomic<std::uint64_t> head{0}; // bytes ever consumed (parent)
    std::atomic<std::int32_t> drained{0};           // a futex word
    // Set by the parent before it sleeps; the first worker write after it rings the doorbell.
    std::atomic<std::uint32_t> doorbell_armed{0};
    alignas(64) char data[capacity];

    void reset() noexcept {
        tail.store(0, std::memory_order_relaxed);
        head.store(0, std::memory_order_relaxed);
        writer_waiting.store(0, std::memory_order_relaxed);
        doorbell_armed.store(0, std::memory_order_relaxed);
    }
};

struct alignas(64) shared_state_block {
    std::atomic<std::uint32_t> cancelling{0}; // set by shutdown(cancel): queued tasks never start
    // Set while the parent traces: answers then carry when the task ran (see answer_begin).
    std::atomic<std::uint32_t> tracing{0};
};

// An answer whose header's sequence field is this starts with the task's start and end
// (steady_clock nanoseconds, the parent's clock too) before its payload.
inline constexpr std::uint32_t answer_timed = 1;
// The bytes of those times: not part of the result, so not counted against max_message_size.
inline constexpr std::size_t answer_times_bytes = 2 * sizeof(std::int64_t);

static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
                  std::atomic<std::uint32_t>::is_always_lock_free &&
                  std::atomic<std::int32_t>::is_always_lock_free &&
                  std::atomic<std::int64_t>::is_always_lock_free,
              "process-shared atomics must be lock-free");

inline std::int64_t steady_now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// Now plus `ns`, saturating: a timeout of nanoseconds::max() means "never", not an overflow.
inline std::int64_t deadline_in(std::int64_t ns) noexcept {
    const std::int64_t now = steady_now_ns();
    return ns > INT64_MAX - now ? INT64_MAX : now + ns;
}

// What the parent and a worker know about the pool before the server is forked; workers read
// it from the server's copy of the parent's memory.
struct pool_config {
    std::function<void(std::size_t)> initializer;
    std::size_t max_tasks_per_child = 0;
    std::uint64_t max_message_size = 0;
    std::size_t max_nesting = default_max_nesting;
    std::string name_prefix;
    shared_state_block* shared = nullptr;
    worker_slot* slots = nullptr;
    result_ring* rings = nullptr;
    std::size_t slot_count = 0;
    sigset_t original_signal_mask{};
    pid_t parent = 0;            // the pool's process, which the server watches...
    int parent_pidfd = -1;       // ...or a pidfd of it, when the server is not its child (zygote)
    bool parent_is_child = true; // the server is a direct child of `parent`
};

// The memory every worker shares with the parent: the cancel flag, then a slot per worker,
// then a ring per worker. One layout, for the parent, the fork server and a zygote's server.
inline std::size_t shared_bytes_for(std::size_t slot_count) noexcept {
    return sizeof(shared_state_block) + slot_count * (sizeof(worker_slot) + sizeof(result_ring));
}
inline void lay_out_shared(pool_config& config, void* memory, std::size_t slot_count) noexcept {
    char* at = static_cast<char*>(memory);
    config.shared = reinterpret_cast<shared_state_block*>(at);
    config.slots = reinterpret_cast<worker_slot*>(at + sizeof(shared_state_block));
    config.rings = reinterpret_cast<result_ring*>(at + sizeof(shared_state_block) +
                                                  slot_count * sizeof(worker_slot));
    config.slot_count = slot_count;
}

// Messages on the control socket (SOCK_SEQPACKET: one message per read).
enum class control_type : std::uint32_t {
    spawn = 1,        // parent -> server: fork worker `slot`, with two descriptors attached
    spawned = 2,      // server -> parent: `slot` is running as `pid`, its pidfd attached
    exited = 3,       // server -> parent: `pid` ended with wait status `status`
    spawn_failed = 4, // server -> parent: fork failed with errno `status`
    stop = 5,         // parent -> server: kill what is left, reap it and exit
};

struct control_message {
    std::uint32_t type;
    std::uint32_t slot;
    std::int32_t pid;
    std::int32_t status;
};

// Sends one message with up to two descriptors on a SOCK_SEQPACKET socket (blocking).
inline int send_packet(int socket, const void* data, std::size_t size, const int* fds,
                       std::size_t fd_count) noexcept {
    iovec io{const_cast<void*>(data), size};
    msghdr header{};
    header.msg_iov = &io;
    header.msg_iovlen = 1;
    alignas(cmsghdr) char space[CMSG_SPACE(sizeof(int) * 2)] = {};
    if (fd_count != 0) {
        header.msg_control = space;
        header.msg_controllen = CMSG_SPACE(sizeof(int) * fd_count);
        cmsghdr* cm = CMSG_FIRSTHDR(&header);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * fd_count);
        std::memcpy(CMSG_DATA(cm), fds, sizeof(int) * fd_count);
    }
    const ssize_t n = retry_eintr([&] { return ::sendmsg(socket, &header, MSG_NOSIGNAL); });
    if (n == static_cast<ssize_t>(size))
        return 0;
    return n < 0 ? errno : EPROTO;
}

// Receives one message of at most `capacity` bytes and up to two descriptors (-1 when absent).
inline ssize_t receive_packet(int socket, void* data, std::size_t capacity, int* fds) noexcept {
    iovec io{data, capacity};
    msghdr header{};
    header.msg_iov = &io;
    header.msg_iovlen = 1;
    alignas(cmsghdr) char space[CMSG_SPACE(sizeof(int) * 2)] = {};
    header.msg_control = space;
    header.msg_controllen = sizeof space;
    fds[0] = fds[1] = -1;
    const ssize_t n = retry_eintr([&] { return ::recvmsg(socket, &header, MSG_CMSG_CLOEXEC); });
    for (cmsghdr* cm = CMSG_FIRSTHDR(&header); n >= 0 && cm != nullptr;
         cm = CMSG_NXTHDR(&header, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            const std::size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            std::memcpy(fds, CMSG_DATA(cm), sizeof(int) * (count < 2 ? count : 2));
        }
    }
    return n;
}

// Sends a control message, with descriptors when given. Returns 0 or an errno.
inline int send_control(int socket, const control_message& message, const int* fds = nullptr,
                        std::size_t fd_count = 0) noexcept {
    for (;;) {
        const int error = send_packet(socket, &message, sizeof message, fds, fd_count);
        if (error != EAGAIN && error != EWOULDBLOCK)
            return error;
        // A non-blocking socket whose peer is slow to read: wait for room, briefly.
        pollfd room{socket, POLLOUT, 0};
        if (retry_eintr([&] { return ::poll(&room, 1, 5000); }) <= 0)
            return ETIMEDOUT;
    }
}

// Receives one control message and up to two descriptors (set to -1 when absent). Returns the
// bytes read: 0 at end of file, -1 on error.
inline ssize_t receive_control(int socket, control_message& message, int* fds) noexcept {
    const ssize_t n = receive_packet(socket, &message, sizeof message, fds);
    if (n > 0 && n != static_cast<ssize_t>(sizeof message)) {
        errno = EPROTO;
        return -1;
    }
    return n;
}

// "<prefix>-<index>", the prefix shortened so the index survives Linux's 15-character limit.
inline void set_process_name(const std::string& prefix, std::size_t index) noexcept {
    char suffix[24];
    const int suffix_length = std::snprintf(suffix, sizeof suffix, "-%zu", index);
    char name[64];
    const int room = 15 - suffix_length;
    std::snprintf(name, sizeof name, "%.*s%s", room > 0 ? room : 0, prefix.c_str(), suffix);
    name[15] = '\0';
    ::prctl(PR_SET_NAME, name, 0, 0, 0);
}

// --- the worker --------------------------------------------------------------------------------

// Ends the worker when its running task's time is up: a POSIX timer that delivers SIGKILL to
// the worker itself, armed for each task that has a timeout. Killing from inside means the
// kill can only ever hit the task it was armed for; the parent tells a timeout from a crash by
// the deadline the worker published before arming it.
class task_timer {
public:
    task_timer() noexcept {
        sigevent event{};
        event.sigev_notify = SIGEV_SIGNAL;
        event.sigev_signo = SIGKILL;
        m_valid = ::timer_create(CLOCK_MONOTONIC, &event, &m_timer) == 0;
    }
    task_timer(const task_timer&) = delete;
    task_timer& operator=(const task_timer&) = delete;

    bool valid() const noexcept { return m_valid; }
    void arm(std::int64_t ns) noexcept {
        itimerspec spec{};
        spec.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
        spec.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
        if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0)
            spec.it_value.tv_nsec = 1;
        ::timer_settime(m_timer, 0, &spec, nullptr);
    }
    void disarm() noexcept {
        itimerspec spec{};
        ::timer_settime(m_timer, 0, &spec, nullptr);
    }

private:
    timer_t m_timer{};
    bool m_valid = false;
};

// A fresh deadline per item of a map chunk with a per-item timeout, set from deep in an invoker
// (progress needs no hook: see chunk_items). One per worker process (tasks run one at a time on
// its main thread).
struct item_hook {
    std::int64_t item_timeout_ns = 0;
    std::atomic<std::int64_t>* deadline = nullptr;
    task_timer* timer = nullptr;

    static item_hook& current() noexcept {
        static item_hook hook;
        return hook;
    }
    void begin_item() noexcept {
        if (item_timeout_ns > 0) {
            deadline->store(deadline_in(item_timeout_ns), std::memory_order_release);
            if (timer != nullptr)
                timer->arm(item_timeout_ns);
        }
    }
    void end_item() noexcept {
        // Disarmed between items: the time after the last one (encoding the chunk's results)
        // belongs to no item.
        if (item_timeout_ns > 0) {
            if (timer != nullptr)
                timer->disarm();
            deadline->store(0, std::memory_order_release);
        }
    }
    static void begin(void* hook) noexcept { static_cast<item_hook*>(hook)->begin_item(); }
    static void end(void* hook) noexcept { static_cast<item_hook*>(hook)->end_item(); }
};

class worker_process {
public:
    worker_process(const pool_config& config, std::size_t slot, int task_fd, int result_fd)
        : m_config(config), m_slot(slot), m_task_fd(task_fd), m_result_fd(result_fd),
          m_parser(config.max_message_size, config.max_nesting) {}

    [[noreturn]] void run() noexcept {
        // A triad::process a task starts closes these, so a helper cannot hold a worker's pipes.
        pool_descriptors::add(m_task_fd);
        pool_descriptors::add(m_result_fd);
        chunk_items& hooks = chunk_items::current();
        hooks.context = &item_hook::current();
        hooks.done = &m_config.slots[m_slot].items_done;
        try {
            if (!initialize())
                finish(0);
            serve();
        } catch (...) {
            // A broken stream or an encoding failure: nothing sensible can be sent back any more.
            report_to_stderr("triad: a process_pool worker stopped", std::current_exception());
            finish(3);
        }
        finish(0);
    }

private:
    bool initialize() {
        code_ranges::instance().load();
        if (m_config.initializer) {
            try {
                m_config.initializer(m_slot);
            } catch (...) {
                const remote_failure failure = capture_failure(std::current_exception());
                const std::size_t start = m_out.size();
                begin_frame(m_out, frame_kind::init_failed, 0);
                encode_to(m_out, failure);
                end_frame(m_out, start);
                flush();
                return false;
            }
        }
        const std::size_t start = m_out.size();
        begin_frame(m_out, frame_kind::ready, 0);
        end_frame(m_out, start);
        flush();
        return true;
    }

    void serve() {
        worker_slot& slot = m_config.slots[m_slot];
        for (;;) {
            const long n = read_into(m_task_fd, m_parser);
            if (n == 0)
                return; // the parent closed the pipe: shutdown, or the parent is gone
            if (n < 0)
                throw_errno("triad worker: read");
            bool stop = false;
            bool retire = false;
            m_parser.parse([&](const frame_header& header, byte_reader& payload, bool) {
                if (stop || retire)
                    return; // the parent re-sends what was never started
                const auto kind = static_cast<frame_kind>(header.kind);
                if (kind == frame_kind::stop) {
                    stop = true;
                    return;
                }
                if (kind != frame_kind::task)
                    throw protocol_error("triad worker: expected a task frame");
                if (!run_task(header, payload, slot))
                    return; // taken back by the parent before it started
                ++m_tasks_done;
                retire = m_config.max_tasks_per_child != 0 &&
                         m_tasks_done >= m_config.max_tasks_per_child;
            });
            if (stop)
                return;
            if (retire) {
                const std::size_t start = m_out.size();
                begin_frame(m_out, frame_kind::retiring, 0);
                end_frame(m_out, start);
                flush();
                return;
            }
        }
    }

    // Starts task `seq` unless the parent took it back; the same compare-and-swap records it
    // as started, so the parent, reading the word, never re-sends a task that began.
    static bool claim(worker_slot& slot, std::uint32_t seq) noexcept {
        std::uint64_t word = slot.claim.load(std::memory_order_acquire);
        for (;;) {
            if (seq <= claim_revoked(word))
                return false;
            if (slot.claim.compare_exchange_weak(word, make_claim(claim_revoked(word), seq),
                                                 std::memory_order_acq_rel,
                                                 std::memory_order_acquire))
                return true;
        }
    }

    bool run_task(const frame_header& header, byte_reader& payload, worker_slot& slot) {
        if (!claim(slot, header.sequence))
            return false;
        const std::size_t start = m_out.size();
        if (m_config.shared->cancelling.load(std::memory_order_acquire) != 0) {
            begin_frame(m_out, frame_kind::cancelled, header.task_id);
            end_frame(m_out, start);
            flush();
            return true;
        }
        slot.items_done.store(0, std::memory_order_relaxed);
        slot.running_task.store(header.task_id, std::memory_order_release);
        const std::int64_t began =
            m_config.shared->tracing.load(std::memory_order_relaxed) != 0 ? trace::now_ns() : 0;
        answer_begin(frame_kind::result, header.task_id, began);
        bool timed = false;
        item_hook& items = item_hook::current();
        try {
            const auto invoker_index = payload.read_scalar<std::uint32_t>();
            const auto function = payload.read_scalar<std::uint64_t>();
            // > 0: a limit for the whole task; < 0: a limit for each item of a map chunk.
            const auto timeout_ns = payload.read_scalar<std::int64_t>();
            // Without a timer (timer_create failed: RLIMIT_SIGPENDING), the deadline is still
            // published and the parent kills the worker a second past it.
            if (timeout_ns > 0) {
                slot.deadline_ns.store(deadline_in(timeout_ns), std::memory_order_release);
                if (m_timer.valid())
                    m_timer.arm(timeout_ns);
                timed = true;
            }
            items.item_timeout_ns = timeout_ns < 0 ? -timeout_ns : 0;
            items.deadline = &slot.deadline_ns;
            items.timer = m_timer.valid() ? &m_timer : nullptr;
            // Two indirect calls per item only for a map with a per-item timeout.
            chunk_items& hooks = chunk_items::current();
            hooks.begin_item = timeout_ns < 0 ? &item_hook::begin : nullptr;
            hooks.end_item = timeout_ns < 0 ? &item_hook::end : nullptr;
            timed = timed || timeout_ns < 0;
            invoker_registry::find(invoker_index)(static_cast<std::uintptr_t>(function), payload,
                                                  m_out);
        } catch (...) {
            // Replace the partial result by the failure.
            m_out.resize(start);
            answer_begin(frame_kind::failure, header.task_id, began);
            encode_to(m_out, capture_failure(std::current_exception()));
        }
        items.item_timeout_ns = 0;
        if (timed) {
            m_timer.disarm();
            slot.deadline_ns.store(0, std::memory_order_release);
        }
        const std::size_t times_bytes = began != 0 ? answer_times_bytes : 0;
        if (m_out.size() - start - sizeof(frame_header) - times_bytes > m_config.max_message_size) {
            // Over the limit the parent enforces: say so, rather than send what it must refuse.
            const std::size_t bytes = m_out.size() - start - sizeof(frame_header) - times_bytes;
            m_out.resize(start);
            answer_begin(frame_kind::too_large, header.task_id, began);
            encode_to(m_out,
                      concat("triad::process_pool: the result encodes to ", bytes,
                             " bytes, over max_message_size (", m_config.max_message_size, ")"));
        }
        if (began != 0) {
            const std::int64_t ended = trace::now_ns();
            std::memcpy(m_out.data() + start + sizeof(frame_header) + sizeof began, &ended,
                        sizeof ended);
        }
        end_frame(m_out, start);
        slot.running_task.store(0, std::memory_order_release);
        flush(); // at once: a quick result never waits behind the next task
        return true;
    }

    // Starts an answer at the end of m_out; traced (`began` != 0), with the task's times first.
    void answer_begin(frame_kind kind, std::uint64_t task_id, std::int64_t began) {
        const std::size_t start = m_out.size();
        begin_frame(m_out, kind, task_id);
        if (began == 0)
            return;
        std::memcpy(m_out.data() + start + offsetof(frame_header, sequence), &answer_timed,
                    sizeof answer_timed);
        const std::int64_t times[2] = {began, began};
        const auto* p = reinterpret_cast<const char*>(times);
        m_out.insert(m_out.end(), p, p + sizeof times);
    }

    void flush() {
        if (m_out.empty())
            return;
        result_ring& ring = m_config.rings[m_slot];
        const char* from = m_out.data();
        std::size_t left = m_out.size();
        std::uint64_t tail = ring.tail.load(std::memory_order_relaxed);
        while (left > 0) {
            const std::uint64_t head = ring.head.load(std::memory_order_acquire);
            const std::size_t room = result_ring::capacity - static_cast<std::size_t>(tail - head);
            if (room == 0) {
                wait_for_room(ring, tail);
                continue;
            }
            const std::size_t n = std::min(left, room);
            const std::size_t at = static_cast<std::size_t>(tail % result_ring::capacity);
            const std::size_t first = std::min(n, result_ring::capacity - at);
            std::memcpy(ring.data + at, from, first);
            std::memcpy(ring.data, from + first, n - first);
            tail += n;
            from += n;
            left -= n;
            ring.tail.store(tail, std::memory_order_release);
            ring_doorbell(ring);
        }
        m_out.clear();
        if (m_out.capacity() > 4 * 1024 * 1024)
            std::vector<char>().swap(m_out);
    }

    // The parent armed the doorbell before it went to sleep: wake it, once. (Dekker: the tail
    // is stored before the flag is read here; the parent stores the flag before it reads tails.)
    void ring_doorbell(result_ring& ring) {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (ring.doorbell_armed.load(std::memory_order_relaxed) == 0 ||
            ring.doorbell_armed.exchange(0, std::memory_order_acq_rel) == 0)
            return;
        const char byte = 1;
        if (write_all(m_result_fd, &byte, 1) != 0)
            finish(0); // the parent is gone (EPIPE): nobody wants the result
    }

    // A result larger than the free room (a big one, or a parent busy elsewhere): wait until
    // the parent has drained some. The server kills this worker if the parent dies.
    void wait_for_room(result_ring& ring, std::uint64_t tail) {
        const std::int32_t seen = ring.drained.load(std::memory_order_acquire);
        ring.writer_waiting.store(1, std::memory_order_seq_cst);
        if (result_ring::capacity - (tail - ring.head.load(std::memory_order_seq_cst)) == 0) {
            ring_doorbell(ring);
            // And look again after 50 ms, whatever happens.
            const auto limit = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
            futex_wait(ring.drained, seen, &limit, futex_scope::process_shared);
        }
        ring.writer_waiting.store(0, std::memory_order_relaxed);
    }

    [[noreturn]] void finish(int status) noexcept {
        // _exit, not exit: the parent's atexit handlers and static destructors belong to the
        // parent. Flush what the task printed first.
        flush_standard_streams();
        ::_exit(status);
    }

    const pool_config& m_config;
    std::size_t m_slot;
    int m_task_fd;
    int m_result_fd;
    frame_parser m_parser;
    std::vector<char> m_out;
    std::size_t m_tasks_done = 0;
    task_timer m_timer;
};

// --- the fork server ---------------------------------------------------------------------------

// Every disposition back to its default (a blocked-and-ignored SIGCHLD, or SA_NOCLDWAIT, would
// make the kernel reap children behind the server's back), then `ignored` ignored.
inline void reset_signal_dispositions(std::initializer_list<int> ignored) noexcept {
    struct sigaction action {};
    sigemptyset(&action.sa_mask);
    for (int sig = 1; sig < NSIG; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        action.sa_handler = SIG_DFL;
        for (int ignore : ignored)
            if (ignore == sig)
                action.sa_handler = SIG_IGN;
        ::sigaction(sig, &action, nullptr); // fails harmlessly for signals glibc reserves
    }
}

// For the fork server and the zygote: infrastructure that ends with its parent, so every signal
// sent from outside (a `systemctl kill -s USR1` reaches every process of the service) is
// ignored, except those a fault raises and SIGCHLD, which they need.
inline void ignore_signals_from_outside() noexcept {
    reset_signal_dispositions({});
    struct sigaction action {};
    sigemptyset(&action.sa_mask);
    action.sa_handler = SIG_IGN;
    for (int sig = 1; sig < NSIG; ++sig) {
        switch (sig) {
        case SIGKILL:
        case SIGSTOP:
        case SIGCHLD:
        case SIGSEGV:
        case SIGBUS:
        case SIGILL:
        case SIGFPE:
        case SIGABRT:
        case SIGTRAP:
        case SIGSYS:
            continue;
        default:
            ::sigaction(sig, &action, nullptr);
        }
    }
}

class fork_server {
public:
    fork_server(const pool_config& config, int control_fd)
        : m_config(config), m_control(control_fd), m_workers(config.slot_count, 0) {}

    // Runs in a fork of a parent that may have other threads, which may have held any lock at
    // the moment of the fork: until it forks a worker, the server only makes syscalls (no
    // stdio, no allocation). The parent flushed stdio before forking.
    [[noreturn]] void run() noexcept {
        ::setpgid(0, 0); // terminal signals (Ctrl-C) go to the parent, which decides
        // Kept: the control socket, the parent's pidfd, and descriptors meant for workers
        // (process queues made before the pool).
        const int keep[] = {m_control, m_config.parent_pidfd};
        close_descriptors_from(3, keep, m_config.parent_pidfd >= 0 ? 2 : 1, true);
        pool_descriptors::forget_all(); // what the parent's pools held is closed here
        ::prctl(PR_SET_NAME, "triad-forksrv", 0, 0, 0);
        ignore_signals_from_outside();

        // The parent, watched as a process: a pidfd is readable once it is gone.
        int parent = m_config.parent_pidfd;
        if (parent < 0) {
            parent = open_pidfd(m_config.parent);
            if (m_config.parent_is_child && ::getppid() != m_config.parent)
                ::_exit(0); // it died before we could watch it
        }

        sigset_t child_signals;
        sigemptyset(&child_signals);
        sigaddset(&child_signals, SIGCHLD);
        ::sigprocmask(SIG_BLOCK, &child_signals, nullptr);
        const int children = ::signalfd(-1, &child_signals, SFD_CLOEXEC | SFD_NONBLOCK);
        if (children < 0)
            ::_exit(10);

        pollfd fds[3] = {{m_control, POLLIN, 0}, {children, POLLIN, 0}, {parent, POLLIN, 0}};
        const nfds_t watched = parent >= 0 ? 3 : 2;
        for (;;) {
            // Without a pidfd (before Linux 5.3), the parent is checked twice a second.
            if (retry_eintr([&] { return ::poll(fds, watched, watched == 3 ? -1 : 500); }) < 0)
                stop(11);
            if (watched == 2 && !parent_alive())
                stop(0);
            if ((fds[1].revents & POLLIN) != 0) {
                signalfd_siginfo info;
                while (::read(children, &info, sizeof info) == sizeof info) {
                }
                reap();
            }
            if (watched == 3 && fds[2].revents != 0)
                stop(0); // the parent process is gone
            if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                control_message message{};
                int received[2];
                const ssize_t n = receive_control(m_control, message, received);
                if (n <= 0)
                    stop(0); // the parent closed its end, or died
                const auto type = static_cast<control_type>(message.type);
                if (type == control_type::spawn) {
                    spawn(message.slot, received[0], received[1], children, parent);
                } else {
                    for (int fd : received)
                        if (fd >= 0)
                            ::close(fd);
                    if (type == control_type::stop)
                        stop(0);
                }
            }
        }
    }

private:
    void spawn(std::uint32_t slot, int task_fd, int result_fd, int children_fd, int parent_fd) {
        if (slot >= m_config.slot_count || task_fd < 0 || result_fd < 0) {
            ::close(task_fd);
            ::close(result_fd);
            return;
        }
        const pid_t server = ::getpid();
        const pid_t pid = ::fork();
        if (pid == 0) {
            // The worker: it must die with the server, and keep nothing of the server's.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            if (::getppid() != server)
                ::_exit(1); // the server died before prctl took effect
            ::close(m_control);
            ::close(children_fd);
            if (parent_fd >= 0)
                ::close(parent_fd);
            // A worker starts with default signal handling: the parent's handlers (a test
            // runner's, a crash reporter's) are the parent's business, and a crash must end
            // the worker in the way the pool reports. The initializer may install its own.
            // SIGPIPE too: an ignored disposition would survive into programs a task execs. A
            // worker whose parent closed its result pipe is being ended anyway.
            reset_signal_dispositions({});
            ::sigprocmask(SIG_SETMASK, &m_config.original_signal_mask, nullptr);
            set_process_name(m_config.name_prefix, slot);
            worker_process(m_config, slot, task_fd, result_fd).run();
        }
        ::close(task_fd);
        ::close(result_fd);
        control_message reply{};
        reply.slot = slot;
        int handle = -1;
        if (pid < 0) {
            reply.type = static_cast<std::uint32_t>(control_type::spawn_failed);
            reply.status = errno;
        } else {
            reply.type = static_cast<std::uint32_t>(control_type::spawned);
            reply.pid = pid;
            m_workers[slot] = pid;
            handle = open_pidfd(pid); // not reaped yet (SIGCHLD is blocked), so it is that child
        }
        const int error = handle >= 0 ? send_control(m_control, reply, &handle, 1)
                                      : send_control(m_control, reply);
        if (handle >= 0)
            ::close(handle);
        if (error != 0)
            stop(0);
    }

    bool parent_alive() const noexcept {
        if (m_config.parent_is_child)
            return ::getppid() == m_config.parent;
        return ::kill(m_config.parent, 0) == 0 || errno != ESRCH;
    }

    void reap() {
        int status = 0;
        pid_t pid;
        while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
            for (pid_t& w : m_workers)
                if (w == pid)
                    w = 0;
            control_message message{static_cast<std::uint32_t>(control_type::exited), 0, pid,
                                    status};
            if (send_control(m_control, message) != 0)
                stop(0);
        }
    }

    [[noreturn]] void stop(int status) noexcept {
        for (pid_t w : m_workers)
            if (w > 0)
                ::kill(w, SIGKILL); // not reaped yet, so the pid is still that worker's
        int ignored = 0;
        while (retry_eintr([&] { return ::waitpid(-1, &ignored, 0); }) > 0) {
        }
        ::_exit(status);
    }

    const pool_config& m_config;
    int m_control;
    std::vector<pid_t> m_workers; // allocated in the parent, before the fork
};

} // namespace triad::detail
