#pragma once

// The tracer's recording side: what the executors call around each task. Off, a record costs
// one relaxed load and a branch; on, two clock reads and a store into this thread's buffer.

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <triad/detail/text.hpp>

namespace triad::detail::trace {

inline std::atomic<bool> g_enabled{false};

[[gnu::always_inline]] inline bool enabled() noexcept {
    return g_enabled.load(std::memory_order_relaxed);
}

inline std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// steady_clock is CLOCK_MONOTONIC, one clock for every process of the machine: a worker
// process's lane and its parent's share the time axis.
struct event {
    std::int64_t start_ns;
    std::int64_t end_ns;
    const char* name;     // static strings only
    const char* category; // the executor: "thread_pool", "event_loop", "process_pool"
    std::int32_t pid;
    std::int32_t tid;
};

// What this thread is, set by the executor that owns it, for its lane's name. Plain data: a
// thread is named without allocating, whether or not tracing is on.
struct lane_info {
    const char* role = nullptr; // "thread_pool", "event_loop"; null: a thread triad did not start
    std::uint64_t serial = 0;   // which pool or loop of the process (1, 2, ...)
    std::uint64_t index = 0;    // the worker's index
    bool stand_in = false;
};
inline thread_local lane_info tls_lane;

// A serial per pool and loop, so two pools' lanes have different names.
inline std::uint64_t next_serial() noexcept {
    static std::atomic<std::uint64_t> serial{0};
    return serial.fetch_add(1, std::memory_order_relaxed) + 1;
}

// Sets this thread's lane for a scope and puts the previous one back (a loop run inside a
// pool's task, for one).
class lane_scope {
public:
    explicit lane_scope(lane_info lane) noexcept : m_previous(std::exchange(tls_lane, lane)) {}
    lane_scope(const lane_scope&) = delete;
    lane_scope& operator=(const lane_scope&) = delete;
    ~lane_scope() { tls_lane = m_previous; }

private:
    lane_info m_previous;
};

// Events are appended by their thread alone; the reader (stop(), under the registry's mutex)
// sees a chunk's events up to its published count, so appending takes no lock.
struct chunk {
    static constexpr std::size_t capacity = 4096;
    std::array<event, capacity> events;
    std::atomic<std::size_t> count{0};
    std::atomic<chunk*> next{nullptr};
};

struct thread_buffer {
    thread_buffer() = default;
    thread_buffer(const thread_buffer&) = delete;
    thread_buffer& operator=(const thread_buffer&) = delete;
    ~thread_buffer() { free_after(nullptr); }

    // Frees the chunks after `keep` (all of them when null). Registry mutex held, by the owner.
    void free_after(chunk* keep) noexcept {
        chunk* c = keep == nullptr ? std::exchange(m_head, nullptr)
                                   : keep->next.exchange(nullptr, std::memory_order_relaxed);
        while (c != nullptr)
            delete std::exchange(c, c->next.load(std::memory_order_relaxed));
    }

    chunk* m_head = nullptr;
    chunk* m_tail = nullptr;     // owner only
    std::size_t m_recorded = 0;  // owner only
    std::uint64_t m_session = 0; // registry mutex
    bool m_in_use = false;       // a live thread owns it (registry mutex)
    std::int32_t m_pid = 0;      // registry mutex
    std::int32_t m_tid = 0;      // registry mutex
    std::string m_lane;          // registry mutex
    std::atomic<std::uint64_t> m_dropped{0};
};

struct session_config {
    std::filesystem::path path = {};
    std::vector<std::pair<std::string, std::string>> metadata = {};
    std::size_t max_events_per_thread = std::size_t{1} << 20;
};

struct write_summary {
    std::size_t events = 0;
    std::size_t dropped = 0;
};

// Which session a thread's buffer belongs to; 0 before the first. Read on every record, so
// it is a plain global rather than a member behind the registry's static guard.
inline std::atomic<std::uint64_t> g_session{0};

struct thread_hold;

// The buffers of every thread that recorded, and the current session. Never destroyed: pool
// threads (of a static pool, say) may still record while the statics are destroyed at exit.
class registry {
public:
    static registry& instance() {
        static registry* const r = new registry();
        return *r;
    }

    void start(session_config config, const char* who);
    write_summary stop(const char* who);
    bool active();

    // Gives this thread a buffer for the current session; false if it cannot have one.
    bool attach(thread_hold& hold) noexcept;
    void release(thread_buffer* buffer) noexcept;
    void name_remote_lane(std::int32_t pid, std::int32_t tid, std::string name) noexcept;
    std::size_t max_events() const noexcept { return m_max_events.load(std::memory_order_relaxed); }

    // The TRIAD_TRACE file, written when the program exits normally.
    static void write_at_exit() noexcept;

private:
    registry() = default;
    void install_handlers();
    write_summary finish(const char* who);

    std::mutex m_mutex;
    bool m_active = false;
    pid_t m_owner = 0;
    int m_fd = -1;
    session_config m_config;
    std::int64_t m_start_ns = 0;
    std::atomic<std::size_t> m_max_events{0};
    bool m_handlers_installed = false;
    std::vector<std::unique_ptr<thread_buffer>> m_buffers;
    std::map<std::pair<std::int32_t, std::int32_t>, std::string> m_remote_lanes;
};

// This thread's hold on its buffer; the buffer goes back to the registry when the thread
// ends, its events kept for the session's file.
struct thread_hold {
    thread_buffer* buffer = nullptr;
    std::uint64_t session = 0;
    // Destroyed: a thread_local destroyed after this one that still records (an event loop's,
    // resuming coroutines) must not append to a buffer that is no longer this thread's.
    bool ended = false;
    thread_hold() = default;
    thread_hold(const thread_hold&) = delete;
    thread_hold& operator=(const thread_hold&) = delete;
    ~thread_hold() {
        ended = true;
        if (buffer != nullptr)
            registry::instance().release(std::exchange(buffer, nullptr));
    }
};
inline thread_local thread_hold tls_hold;

inline long this_thread_id() noexcept {
    return ::syscall(SYS_gettid);
}

inline std::string lane_name(const lane_info& lane, long tid) {
    if (lane.role == nullptr)
        return tid == ::getpid() ? std::string("main thread") : concat("thread ", tid);
    std::string name = concat(lane.role, " ", lane.serial);
    if (std::string_view(lane.role) == "thread_pool")
        append_text(name, concat(lane.stand_in ? " stand-in " : " worker ", lane.index));
    return name;
}

// Appends to this thread's buffer; the caller holds it for the current session.
inline void append(thread_buffer& b, const event& e, std::size_t max_events) noexcept {
    chunk* tail = b.m_tail;
    std::size_t n = tail->count.load(std::memory_order_relaxed);
    if (b.m_recorded >= max_events) {
        b.m_dropped.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    if (n == chunk::capacity) {
        // An earlier session's chunk first (emptied by attach): its pages are already touched.
        // A fresh chunk's pages fault on first touch, one per ~100 events, at 10-30 us a fault
        // on a paravirtualised VM: 100-250 ns a traced task, more than the clock reads.
        chunk* fresh = tail->next.load(std::memory_order_relaxed);
        if (fresh == nullptr) {
            // A chunk holds the events' storage and the list's links: owned by the buffer,
            // freed only under the registry's mutex (see free_after), never by the appender.
            fresh = new (std::nothrow) chunk;
            if (fresh == nullptr) {
                b.m_dropped.fetch_add(1, std::memory_order_relaxed);
                return;
            }
            tail->next.store(fresh, std::memory_order_release);
        }
        b.m_tail = tail = fresh;
        n = 0;
    }
    tail->events[n] = e;
    tail->count.store(n + 1, std::memory_order_release);
    ++b.m_recorded;
}

// Records an event on this thread's lane (`pid`/`tid` 0) or on another lane (a worker process,
// seen from the thread that talks to it).
inline void record(const char* name, const char* category, std::int64_t start_ns,
                   std::int64_t end_ns, std::int32_t pid = 0, std::int32_t tid = 0) noexcept {
    thread_hold& hold = tls_hold;
    if (hold.session != g_session.load(std::memory_order_acquire) || hold.buffer == nullptr) {
        if (!registry::instance().attach(hold))
            return;
    }
    thread_buffer& b = *hold.buffer;
    append(b,
           {start_ns, end_ns, name, category, pid != 0 ? pid : b.m_pid, tid != 0 ? tid : b.m_tid},
           registry::instance().max_events());
}

// Records a task that began at `start_ns` (0: tracing was off when it began) and ends now.
inline void record_since(const char* name, const char* category, std::int64_t start_ns) noexcept {
    if (start_ns != 0)
        record(name, category, start_ns, now_ns());
}

// The start of a span: the time if tracing is on, else 0. The off path is the flag's branch.
[[gnu::always_inline]] inline std::int64_t span_start() noexcept {
    return enabled() ? now_ns() : 0;
}

// --- the registry ------------------------------------------------------------------------------

inline void registry::install_handlers() {
    if (m_handlers_installed)
        return;
    // A forked child neither records nor writes its parent's file: the flag goes off in it,
    // and the mutex (held across fork() by the prepare handler) is consistent there.
    const int rc =
        ::pthread_atfork([] { instance().m_mutex.lock(); }, [] { instance().m_mutex.unlock(); },
                         [] {
                             registry& r = instance();
                             g_enabled.store(false, std::memory_order_relaxed);
                             if (r.m_fd >= 0)
                                 ::close(std::exchange(r.m_fd, -1));
                             r.m_active = false;
                             r.m_mutex.unlock();
                         });
    if (rc != 0)
        throw std::system_error(rc, std::generic_category(), "triad::trace: pthread_atfork failed");
    if (std::atexit(&registry::write_at_exit) != 0)
        throw std::runtime_error("triad::trace: std::atexit failed");
    m_handlers_installed = true;
}

inline void registry::start(session_config config, const char* who) {
    std::lock_guard lock(m_mutex);
    if (m_active)
        throw std::logic_error(concat(who, ": tracing is already on (writing ",
                                      m_config.path.string(), "); stop it first"));
    if (config.path.empty())
        throw std::invalid_argument(concat(who, ": the trace file's path is empty"));
    if (config.max_events_per_thread == 0)
        throw std::invalid_argument(concat(who, ": max_events_per_thread is 0"));
    install_handlers();
    // Opened now, so that a path that cannot be written fails here rather than at the end.
    const int fd = ::open(config.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        throw std::system_error(
            errno, std::generic_category(),
            concat(who, ": cannot create the trace file ", config.path.string()));
    m_fd = fd;
    m_max_events.store(config.max_events_per_thread, std::memory_order_relaxed);
    m_config = std::move(config);
    m_remote_lanes.clear();
    m_owner = ::getpid();
    m_start_ns = now_ns();
    m_active = true;
    g_session.store(g_session.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    g_enabled.store(true, std::memory_order_seq_cst);
}

inline write_summary registry::stop(const char* who) {
    std::lock_guard lock(m_mutex);
    if (!m_active)
        throw std::logic_error(concat(who, ": tracing is not on"));
    return finish(who);
}

inline bool registry::active() {
    std::lock_guard lock(m_mutex);
    return m_active;
}

inline bool registry::attach(thread_hold& hold) noexcept {
    std::lock_guard lock(m_mutex);
    if (!m_active || hold.ended)
        return false;
    const std::uint64_t session = g_session.load(std::memory_order_relaxed);
    try {
        if (hold.buffer == nullptr) {
            // A buffer a finished thread left, once the session its events were for is over.
            for (auto& b : m_buffers)
                if (!b->m_in_use && b->m_session != session) {
                    hold.buffer = b.get();
                    break;
                }
            if (hold.buffer == nullptr) {
                m_buffers.push_back(std::make_unique<thread_buffer>());
                hold.buffer = m_buffers.back().get();
            }
            hold.buffer->m_in_use = true;
        }
        thread_buffer& b = *hold.buffer;
        if (b.m_session != session) {
            // The owner empties its own buffer, under the mutex the reader holds.
            // Its chunks are kept and emptied for append to refill (see there): a buffer keeps
            // the most one session of its thread recorded, at most that session's limit.
            if (b.m_head == nullptr)
                b.m_head = new chunk;
            for (chunk* c = b.m_head; c != nullptr; c = c->next.load(std::memory_order_relaxed))
                c->count.store(0, std::memory_order_relaxed);
            b.m_tail = b.m_head;
            b.m_recorded = 0;
            b.m_dropped.store(0, std::memory_order_relaxed);
            b.m_pid = static_cast<std::int32_t>(::getpid());
            b.m_tid = static_cast<std::int32_t>(this_thread_id());
            b.m_lane = lane_name(tls_lane, b.m_tid);
            b.m_session = session;
        }
        hold.session = session;
        return true;
    } catch (...) {
        return false; // out of memory: this thread's events are not recorded
    }
}

inline void registry::release(thread_buffer* buffer) noexcept {
    std::lock_guard lock(m_mutex);
    buffer->m_in_use = false;
    // Its events are for no file (the session it recorded in is over): its memory goes now.
    if (!m_active || buffer->m_session != g_session.load(std::memory_order_relaxed))
        buffer->free_after(nullptr);
}

inline void registry::name_remote_lane(std::int32_t pid, std::int32_t tid,
                                       std::string name) noexcept {
    std::lock_guard lock(m_mutex);
    if (!m_active)
        return;
    try {
        m_remote_lanes[{pid, tid}] = std::move(name);
    } catch (...) {
        // unnamed lane: the file names it by its pid
    }
}

// The length of the well-formed UTF-8 sequence at the start of `text`, or 0.
inline std::size_t utf8_sequence(std::string_view text) noexcept {
    const auto at = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    const unsigned char lead = at(0);
    std::size_t length = 0;
    unsigned char low = 0x80;  // the second byte's range, narrowed against overlong forms
    unsigned char high = 0xbf; // and surrogates or code points past U+10FFFF
    if (lead >= 0xc2 && lead <= 0xdf) {
        length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
        length = 3;
        low = lead == 0xe0 ? 0xa0 : 0x80;
        high = lead == 0xed ? 0x9f : 0xbf;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        length = 4;
        low = lead == 0xf0 ? 0x90 : 0x80;
        high = lead == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (text.size() < length || at(1) < low || at(1) > high)
        return 0;
    for (std::size_t i = 2; i < length; ++i)
        if (at(i) < 0x80 || at(i) > 0xbf)
            return 0;
    return length;
}

// JSON text is UTF-8: a byte that is not part of well-formed UTF-8 (a Latin-1 program name or
// metadata value) becomes U+FFFD, or no reader would open the file.
inline void append_json_string(std::string& out, std::string_view text) {
    out += '"';
    for (std::size_t i = 0; i < text.size();) {
        const char c = text[i];
        const auto u = static_cast<unsigned char>(c);
        if (u >= 0x80) {
            const std::size_t length = utf8_sequence(text.substr(i));
            if (length == 0) {
                out += "\\ufffd";
                ++i;
            } else {
                out.append(text.substr(i, length));
                i += length;
            }
            continue;
        }
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\u%04x", u);
            out += escaped;
        } else {
            out += c;
        }
        ++i;
    }
    out += '"';
}

inline void append_metadata(std::string& out, const char* kind, std::int32_t pid, std::int32_t tid,
                            std::string_view name) {
    out += concat("{\"name\":\"", kind, "\",\"ph\":\"M\",\"pid\":", pid, ",\"tid\":", tid,
                  ",\"args\":{\"name\":");
    append_json_string(out, name);
    out += "}},\n";
}

inline write_summary registry::finish(const char* who) {
    g_enabled.store(false, std::memory_order_seq_cst);
    m_active = false;
    const int fd = std::exchange(m_fd, -1);
    const std::uint64_t session = g_session.load(std::memory_order_relaxed);
    write_summary summary;
    std::string out;
    std::string error;
    const auto flush = [&] {
        std::size_t done = 0;
        while (done < out.size() && error.empty()) {
            const ssize_t n = ::write(fd, out.data() + done, out.size() - done);
            if (n > 0)
                done += static_cast<std::size_t>(n);
            else if (n < 0 && errno != EINTR)
                error = std::strerror(errno);
        }
        out.clear();
    };
    try {
        out = "{\"traceEvents\":[\n";
        // Lanes with events, named after them: the thread that talks to worker processes
        // records on their lanes and has none of its own.
        std::set<std::pair<std::int32_t, std::int32_t>> lanes;
        char line[256];
        for (const auto& b : m_buffers) {
            if (b->m_session != session)
                continue;
            summary.dropped += b->m_dropped.load(std::memory_order_relaxed);
            for (const chunk* c = b->m_head; c != nullptr;
                 c = c->next.load(std::memory_order_acquire)) {
                const std::size_t count = c->count.load(std::memory_order_acquire);
                for (std::size_t i = 0; i < count; ++i) {
                    const event& e = c->events[i];
                    // A record that began before this session (a thread held up across a
                    // stop and a start) is not part of it.
                    if (e.start_ns < m_start_ns || e.end_ns < e.start_ns)
                        continue;
                    const int n = std::snprintf(
                        line, sizeof line,
                        "{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,"
                        "\"dur\":%.3f,\"pid\":%d,\"tid\":%d},\n",
                        e.name, e.category, static_cast<double>(e.start_ns - m_start_ns) / 1e3,
                        static_cast<double>(e.end_ns - e.start_ns) / 1e3, e.pid, e.tid);
                    out.append(line, static_cast<std::size_t>(n));
                    lanes.insert({e.pid, e.tid});
                    ++summary.events;
                    if (out.size() > (std::size_t{1} << 20))
                        flush();
                }
            }
        }
        std::set<std::int32_t> named_processes;
        for (const auto& [lane, name] : m_remote_lanes)
            if (lanes.count(lane) != 0) {
                append_metadata(out, "process_name", lane.first, 0, name);
                append_metadata(out, "thread_name", lane.first, lane.second, name);
                named_processes.insert(lane.first);
            }
        for (const auto& b : m_buffers) {
            if (b->m_session != session || lanes.count({b->m_pid, b->m_tid}) == 0)
                continue;
            if (named_processes.insert(b->m_pid).second)
                append_metadata(out, "process_name", b->m_pid, 0,
                                concat(program_invocation_short_name, " (pid ", b->m_pid, ")"));
            append_metadata(out, "thread_name", b->m_pid, b->m_tid, b->m_lane);
        }
        if (out.size() >= 2 && out.compare(out.size() - 2, 2, ",\n") == 0)
            out.resize(out.size() - 2);
        out += "\n],\n\"displayTimeUnit\":\"ns\",\n\"otherData\":{";
        out += concat("\"dropped_events\":", summary.dropped);
        for (const auto& [key, value] : m_config.metadata) {
            out += ',';
            append_json_string(out, key);
            out += ':';
            append_json_string(out, value);
        }
        out += "}}\n";
        flush();
    } catch (const std::exception& e) {
        if (error.empty())
            error = e.what();
    }
    // The chunks of threads that ended are read for the last time: freed, so that a session's
    // memory does not outlive it (up to max_events_per_thread events for each thread that
    // recorded). A live thread's are emptied when it records in the next session: it may be
    // appending now, without the mutex.
    for (const auto& b : m_buffers)
        if (!b->m_in_use)
            b->free_after(nullptr);
    if (::close(fd) != 0 && error.empty() && errno != EINTR)
        error = std::strerror(errno);
    if (!error.empty())
        throw std::runtime_error(
            concat(who, ": writing the trace file ", m_config.path.string(), " failed: ", error));
    return summary;
}

inline void registry::write_at_exit() noexcept {
    registry& r = instance();
    // Printed once the mutex is released: a thread forking meanwhile (fork_with_stdio_locked)
    // holds stderr's lock and then, in the prepare handler, waits for this mutex.
    std::string message;
    {
        std::lock_guard lock(r.m_mutex);
        if (!r.m_active || r.m_owner != ::getpid())
            return;
        try {
            const write_summary s = r.finish("triad::trace at exit");
            if (s.dropped != 0)
                message = concat("triad: the trace ", r.m_config.path.string(), " dropped ",
                                 s.dropped, " events (a thread's limit)");
        } catch (const std::exception& e) {
            try {
                message = concat("triad: ", e.what());
            } catch (...) {
                message.clear(); // out of memory: no message
            }
        }
    }
    if (!message.empty())
        std::fprintf(stderr, "%s\n", message.c_str());
}

// TRIAD_TRACE=path starts tracing when the program starts and writes the file when it exits;
// "%p" in the path becomes the process id, so that programs started by a traced one (which
// inherit the variable) do not write over its file.
inline bool start_from_environment() noexcept {
    const char* value = std::getenv("TRIAD_TRACE");
    if (value == nullptr || *value == '\0')
        return false;
    try {
        std::string path = value;
        for (std::size_t at = path.find("%p"); at != std::string::npos; at = path.find("%p", at))
            path.replace(at, 2, concat(::getpid()));
        registry::instance().start({.path = path}, "TRIAD_TRACE");
        return true;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "triad: %s (tracing stays off)\n", e.what());
        return false;
    }
}

inline const bool g_started_from_environment = start_from_environment();

} // namespace triad::detail::trace
