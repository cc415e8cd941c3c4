#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

// Only MPI's C interface: its deprecated C++ bindings do not compile warning-free.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <triad/detail/exception_info.hpp>
#include <triad/detail/parker.hpp>
#include <triad/detail/process_manager.hpp>
#include <triad/detail/remote.hpp>
#include <triad/detail/text.hpp>
#include <triad/detail/wait_slot.hpp>
#include <triad/errors.hpp>
#include <triad/serialize.hpp>

namespace triad::detail {

// Messages on the pool's own communicator (a duplicate of MPI_COMM_WORLD, so the user's
// messages never match ours). A task or result is one triad frame (remote.hpp) sent as bytes.
inline constexpr int mpi_tag_task = 1;   // rank 0 -> worker: a task frame
inline constexpr int mpi_tag_stop = 2;   // rank 0 -> worker: no more tasks; leave mpi_main
inline constexpr int mpi_tag_result = 3; // worker -> rank 0: a result, failure or too_large frame

// MPI counts are ints: no message may be larger.
inline constexpr std::uint64_t mpi_max_message = INT_MAX - sizeof(frame_header);

inline void mpi_check(int code, const char* call) {
    if (code == MPI_SUCCESS)
        return;
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw mpi_error(concat("triad::mpi_pool: ", call, " failed: ", std::string_view(text)));
}

// --- the executable: where its code is, and which build it is ---------------------------------

// Ranks are separate exec()s of one binary, each loaded at its own address (ASLR), so a
// function is named by its offset from the executable's load address, and the ranks check at
// start-up that they run the same build (a function's offset means nothing in another one).
class executable_image {
public:
    static const executable_image& get() {
        static const executable_image image;
        return image;
    }

    // The offset of a function of the executable; throws for code anywhere else (a shared
    // library is loaded at an address of its own on each rank).
    std::uint64_t offset_of(std::uintptr_t address) const {
        if (!is_code(address)) {
            Dl_info info{};
            const char* where =
                ::dladdr(reinterpret_cast<void*>(address), &info) != 0 && info.dli_fname != nullptr
                    ? info.dli_fname
                    : "no loaded object";
            throw std::invalid_argument(concat(
                "triad::mpi_pool: the function sent is not in the executable (it is in ",
                std::string_view(where),
                "), so other ranks cannot find it: send a function of your program that calls "
                "it"));
        }
        return address - m_bias;
    }

    // The function at `offset` in this rank's copy; throws unless that is code.
    std::uintptr_t address_at(std::uint64_t offset) const {
        const std::uintptr_t address = m_bias + static_cast<std::uintptr_t>(offset);
        if (address < m_bias || !is_code(address))
            throw protocol_error(concat("triad::mpi_pool: corrupt message: offset ", offset,
                                        " is not code in the executable"));
        return address;
    }

    // "build-id <hex>" from the ELF note the linker writes (GCC and Clang on Debian do by
    // default), else "fnv1a64 <hex> size <bytes>" of the executable's file.
    const std::string& identity() const noexcept { return m_identity; }

    // Tasks name their invoker by its number in invoker_registry, which the static
    // initialisation of the executable *and of its shared libraries* fills, so the same
    // executable with another build of a library (another host's install, another environment
    // module) numbers them differently and would run the wrong one. This fingerprints the table:
    // for each invoker in order, the object that holds it (its build id, else its path) and its
    // offset there.
    static std::string invoker_fingerprint() {
        struct segment {
            std::uintptr_t start, end, bias;
            std::string object;
        };
        std::vector<segment> segments;
        ::dl_iterate_phdr(
            [](dl_phdr_info* info, std::size_t, void* data) {
                auto& out = *static_cast<std::vector<segment>*>(data);
                std::string object;
                for (int i = 0; i < info->dlpi_phnum && object.empty(); ++i) {
                    const ElfW(Phdr)& header = info->dlpi_phdr[i];
                    if (header.p_type == PT_NOTE)
                        object = build_id(
                            reinterpret_cast<const char*>(info->dlpi_addr + header.p_vaddr),
                            header.p_memsz);
                }
                if (object.empty())
                    object = info->dlpi_name != nullptr ? info->dlpi_name : "";
                for (int i = 0; i < info->dlpi_phnum; ++i) {
                    const ElfW(Phdr)& header = info->dlpi_phdr[i];
                    if (header.p_type == PT_LOAD && (header.p_flags & PF_X) != 0)
                        out.push_back({info->dlpi_addr + header.p_vaddr,
                                       info->dlpi_addr + header.p_vaddr + header.p_memsz,
                                       info->dlpi_addr, object});
                }
                return 0;
            },
            &segments);
        const std::size_t count = invoker_registry::count();
        std::uint64_t hash = 1469598103934665603ull;
        const auto mix = [&hash](const void* data, std::size_t size) {
            for (std::size_t i = 0; i < size; ++i)
                hash = (hash ^ static_cast<const unsigned char*>(data)[i]) * 1099511628211ull;
        };
        for (std::size_t i = 0; i < count; ++i) {
            const auto address = reinterpret_cast<std::uintptr_t>(
                invoker_registry::find(static_cast<std::uint32_t>(i)));
            for (const segment& s : segments) {
                if (address >= s.start && address < s.end) {
                    const std::uint64_t offset = address - s.bias;
                    mix(s.object.data(), s.object.size() + 1);
                    mix(&offset, sizeof offset);
                    break;
                }
            }
        }
        return concat("invokers ", count, " fnv1a64 ",
                      hex(reinterpret_cast<const char*>(&hash), sizeof hash));
    }

private:
    executable_image() {
        ::dl_iterate_phdr(&executable_image::visit, this);
        if (m_identity.empty())
            m_identity = file_hash();
    }

    bool is_code(std::uintptr_t address) const noexcept {
        return std::any_of(m_code.begin(), m_code.end(), [address](const auto& range) {
            return address >= range.first && address < range.second;
        });
    }

    // The first object dl_iterate_phdr reports is the executable itself.
    static int visit(dl_phdr_info* info, std::size_t, void* data) {
        auto* self = static_cast<executable_image*>(data);
        self->m_bias = info->dlpi_addr;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
            const ElfW(Phdr)& header = info->dlpi_phdr[i];
            const std::uintptr_t start = info->dlpi_addr + header.p_vaddr;
            if (header.p_type == PT_LOAD && (header.p_flags & PF_X) != 0)
                self->m_code.emplace_back(start, start + header.p_memsz);
            if (header.p_type == PT_NOTE && self->m_identity.empty())
                self->m_identity = build_id(reinterpret_cast<const char*>(start), header.p_memsz);
        }
        return 1; // stop: only the executable
    }

    static std::string build_id(const char* notes, std::size_t size) {
        std::size_t at = 0;
        const auto align4 = [](std::size_t n) { return (n + 3) & ~std::size_t{3}; };
        while (at + sizeof(ElfW(Nhdr)) <= size) {
            ElfW(Nhdr) note;
            std::memcpy(&note, notes + at, sizeof note);
            const std::size_t name_at = at + sizeof note;
            const std::size_t desc_at = name_at + align4(note.n_namesz);
            if (desc_at + note.n_descsz > size)
                break;
            if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 &&
                std::memcmp(notes + name_at, "GNU", 4) == 0)
                return "build-id " + hex(notes + desc_at, note.n_descsz);
            at = desc_at + align4(note.n_descsz);
        }
        return {};
    }

    static std::string file_hash() {
        std::FILE* file = std::fopen("/proc/self/exe", "rb");
        if (file == nullptr)
            return "unknown";
        std::uint64_t hash = 1469598103934665603ull;
        std::uint64_t bytes = 0;
        char block[65536];
        for (std::size_t n; (n = std::fread(block, 1, sizeof block, file)) > 0; bytes += n)
            for (std::size_t i = 0; i < n; ++i)
                hash = (hash ^ static_cast<unsigned char>(block[i])) * 1099511628211ull;
        std::fclose(file);
        return "fnv1a64 " + hex(reinterpret_cast<const char*>(&hash), sizeof hash) + " size " +
               std::to_string(bytes);
    }

    static std::string hex(const char* data, std::size_t size) {
        static constexpr char digits[] = "0123456789abcdef";
        std::string out;
        for (std::size_t i = 0; i < size; ++i) {
            const auto byte = static_cast<unsigned char>(data[i]);
            out += digits[byte >> 4];
            out += digits[byte & 15];
        }
        return out;
    }

    std::uintptr_t m_bias = 0;
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> m_code;
    std::string m_identity;
};

// --- waiting for MPI without a descriptor to poll ---------------------------------------------

// MPI has nothing to block on but its own calls, which spin (Open MPI's blocking receive keeps
// a core busy). So: spin for 50 us after the last message, where the next one usually is
// (with the CPU's pause hint: a sched_yield there measured 27 us a round trip on 2 busy cores,
// as the core went to whatever else was runnable), yield for the next 50 us, then sleep in
// doubling steps up to 1 ms, which costs an idle rank nothing on a shared machine.
class mpi_backoff {
public:
    void reset() noexcept { m_idle_since = {}; }
    // The longest sleep: a twentieth of the task time the next message follows, so that
    // sleeping between long tasks costs them under 5% (1 ms at most, 20 us at least).
    void cap_after(std::chrono::nanoseconds task) noexcept {
        m_cap = std::clamp(std::chrono::duration_cast<std::chrono::microseconds>(task / 20),
                           std::chrono::microseconds(20), std::chrono::microseconds(1000));
    }
    // How long to sleep before polling again: negative while spinning, zero while yielding.
    std::chrono::microseconds next() noexcept {
        const auto now = std::chrono::steady_clock::now();
        if (m_idle_since == std::chrono::steady_clock::time_point{}) {
            m_idle_since = now;
            m_pause = std::chrono::microseconds(20);
        }
        if (now - m_idle_since < std::chrono::microseconds(50))
            return std::chrono::microseconds(-1);
        if (now - m_idle_since < std::chrono::microseconds(100))
            return std::chrono::microseconds(0);
        // The cap holds while the next message is due; an idle rank goes on to 1 ms sleeps.
        const auto cap = now - m_idle_since < std::chrono::milliseconds(5)
                             ? m_cap
                             : std::chrono::microseconds(1000);
        const auto pause = std::min(m_pause, cap);
        m_pause = std::min(m_pause * 2, cap);
        return pause;
    }
    void pause() { pause_for(next()); }
    // Spins, yields or sleeps, as next() said.
    static void pause_for(std::chrono::microseconds wait) {
        if (wait.count() < 0) {
            for (int i = 0; i < 16; ++i)
                cpu_relax();
        } else if (wait.count() == 0) {
            ::sched_yield();
        } else {
            std::this_thread::sleep_for(wait);
        }
    }

private:
    std::chrono::steady_clock::time_point m_idle_since{};
    std::chrono::microseconds m_pause{20};
    std::chrono::microseconds m_cap{1000};
};

// --- async-signal-safe last words -------------------------------------------------------------

inline char* append_unsigned(char* out, std::uint64_t value) noexcept {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = static_cast<char>('0' + value % 10);
        value /= 10;
    } while (value != 0);
    while (n > 0)
        *out++ = digits[--n];
    return out;
}

inline char* append_literal(char* out, const char* text) noexcept {
    while (*text != '\0')
        *out++ = *text++;
    return out;
}

inline void write_all(const char* data, std::size_t size) noexcept {
    while (size > 0) {
        const ssize_t n = ::write(STDERR_FILENO, data, size);
        if (n <= 0)
            return;
        data += n;
        size -= static_cast<std::size_t>(n);
    }
}

// --- a worker rank ----------------------------------------------------------------------------

// What a worker rank is running, for its last words if it dies (read in signal handlers).
struct mpi_worker_status {
    static mpi_worker_status& get() noexcept {
        static mpi_worker_status status;
        return status;
    }
    std::atomic<std::uint64_t> task{0}; // the task running now, 0 between tasks
    std::atomic<int> rank{-1};
    std::atomic<bool> serving{false};
    struct sigaction previous[32] = {};
};

inline constexpr int mpi_fatal_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

// Says which rank died in which task, then lets the signal do what it did before (a core
// dump, the sanitizer's report): Open MPI then ends the job, and rank 0 lists what it lost.
inline void mpi_worker_died(int signal, siginfo_t* info, void* context) {
    mpi_worker_status& status = mpi_worker_status::get();
    const int saved_errno = errno;
    char line[256];
    char* out = append_literal(line, "triad::mpi_pool: worker rank ");
    out = append_unsigned(out, static_cast<std::uint64_t>(status.rank.load()));
    out = append_literal(out, " (pid ");
    out = append_unsigned(out, static_cast<std::uint64_t>(::getpid()));
    out = append_literal(out, ") dies of signal ");
    out = append_unsigned(out, static_cast<std::uint64_t>(signal));
    const std::uint64_t task = status.task.load();
    if (task != 0) {
        out = append_literal(out, " while running task ");
        out = append_unsigned(out, task);
    }
    out = append_literal(out, "\n");
    write_all(line, static_cast<std::size_t>(out - line));
    const struct sigaction& before = status.previous[signal];
    ::sigaction(signal, &before, nullptr);
    errno = saved_errno;
    if ((before.sa_flags & SA_SIGINFO) != 0 && before.sa_sigaction != nullptr)
        before.sa_sigaction(signal, info, context);
    else if (before.sa_handler != SIG_DFL && before.sa_handler != SIG_IGN)
        before.sa_handler(signal);
    else if (signal == SIGABRT || info == nullptr || info->si_code <= 0)
        ::raise(signal); // sent, not a fault: returning would not repeat it
    // A fault: returning re-runs the instruction, which faults again with the old action.
}

inline void mpi_worker_exited() {
    mpi_worker_status& status = mpi_worker_status::get();
    if (!status.serving.load())
        return;
    char line[160];
    char* out = append_literal(line, "triad::mpi_pool: worker rank ");
    out = append_unsigned(out, static_cast<std::uint64_t>(status.rank.load()));
    out = append_literal(out, " exits (exit() called");
    const std::uint64_t task = status.task.load();
    if (task != 0) {
        out = append_literal(out, " by task ");
        out = append_unsigned(out, task);
    }
    out = append_literal(out, ") before the pool stopped\n");
    write_all(line, static_cast<std::size_t>(out - line));
}

// Runs tasks from rank 0 until it says stop. One thread: the task runs where MPI is called.
class mpi_worker {
public:
    mpi_worker(MPI_Comm comm, int rank, std::uint64_t max_message_size, std::size_t max_nesting)
        : m_comm(comm), m_rank(rank), m_max_message_size(max_message_size),
          m_max_nesting(max_nesting) {}

    void serve() {
        code_ranges::instance().load();
        mpi_worker_status& status = mpi_worker_status::get();
        status.rank.store(m_rank);
        install_last_words();
        status.serving.store(true);
        // Short sleeps while polling: the default 50 us of timer slack makes 20 us into 70.
        const long slack = ::prctl(PR_GET_TIMERSLACK);
        ::prctl(PR_SET_TIMERSLACK, 1000UL);
        mpi_backoff backoff;
        for (;;) {
            int found = 0;
            MPI_Status probe{};
            mpi_check(MPI_Iprobe(0, MPI_ANY_TAG, m_comm, &found, &probe), "MPI_Iprobe");
            if (found == 0) {
                backoff.pause();
                continue;
            }
            backoff.reset();
            int count = 0;
            mpi_check(MPI_Get_count(&probe, MPI_BYTE, &count), "MPI_Get_count");
            m_in.resize(static_cast<std::size_t>(count));
            mpi_check(
                MPI_Recv(m_in.data(), count, MPI_BYTE, 0, probe.MPI_TAG, m_comm, MPI_STATUS_IGNORE),
                "MPI_Recv");
            if (probe.MPI_TAG == mpi_tag_stop)
                break;
            const auto began = std::chrono::steady_clock::now();
            run_task();
            backoff.cap_after(std::chrono::steady_clock::now() - began);
            mpi_check(MPI_Send(m_out.data(), static_cast<int>(m_out.size()), MPI_BYTE, 0,
                               mpi_tag_result, m_comm),
                      "MPI_Send");
            // A large message's buffers are given back, not kept for the rest of the job.
            for (std::vector<char>* buffer : {&m_in, &m_out})
                if (buffer->capacity() > (std::size_t{1} << 20))
                    std::vector<char>().swap(*buffer);
        }
        status.serving.store(false);
        if (slack > 0)
            ::prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(slack));
        remove_last_words();
    }

private:
    void install_last_words() {
        mpi_worker_status& status = mpi_worker_status::get();
        struct sigaction action {};
        action.sa_sigaction = &mpi_worker_died;
        action.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&action.sa_mask);
        for (int signal : mpi_fatal_signals)
            ::sigaction(signal, &action, &status.previous[signal]);
        // SA_ONSTACK needs a stack to run on: without one, a task that overflows its stack
        // dies of a SIGSEGV the kernel cannot deliver, silently. Not replaced if there is one
        // (a sanitizer's).
        stack_t current{};
        if (::sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_DISABLE) != 0) {
            alignas(16) static char stack[64 * 1024];
            stack_t ours{};
            ours.ss_sp = stack;
            ours.ss_size = sizeof stack;
            m_own_stack = ::sigaltstack(&ours, nullptr) == 0;
        }
        static const bool registered = std::atexit(&mpi_worker_exited) == 0;
        (void)registered;
    }
    void remove_last_words() {
        mpi_worker_status& status = mpi_worker_status::get();
        for (int signal : mpi_fatal_signals)
            ::sigaction(signal, &status.previous[signal], nullptr);
        if (m_own_stack) {
            stack_t none{};
            none.ss_flags = SS_DISABLE;
            ::sigaltstack(&none, nullptr);
            m_own_stack = false;
        }
    }

    // One task frame in m_in -> one answer frame in m_out, as a forked worker answers.
    void run_task() {
        m_out.clear();
        if (m_in.size() < sizeof(frame_header))
            throw protocol_error("triad::mpi_pool: corrupt message: a task shorter than a header");
        frame_header header;
        std::memcpy(&header, m_in.data(), sizeof header);
        if (header.kind != static_cast<std::uint32_t>(frame_kind::task) ||
            header.payload_size != m_in.size() - sizeof header)
            throw protocol_error("triad::mpi_pool: corrupt message: not a task frame");
        byte_reader payload(m_in.data() + sizeof header, m_in.size() - sizeof header,
                            m_max_nesting);
        mpi_worker_status& status = mpi_worker_status::get();
        status.task.store(header.task_id);
        begin_frame(m_out, frame_kind::result, header.task_id);
        try {
            const auto invoker_index = payload.read_scalar<std::uint32_t>();
            const auto offset = payload.read_scalar<std::uint64_t>();
            (void)payload.read_scalar<std::int64_t>(); // a timeout: MPI pools have none
            const std::uintptr_t function =
                offset == 0 ? 0 : executable_image::get().address_at(offset);
            invoker_registry::find(invoker_index)(function, payload, m_out);
        } catch (...) {
            m_out.clear();
            begin_frame(m_out, frame_kind::failure, header.task_id);
            encode_to(m_out, capture_failure(std::current_exception()));
        }
        status.task.store(0);
        const std::size_t bytes = m_out.size() - sizeof(frame_header);
        if (bytes > m_max_message_size) {
            m_out.clear();
            begin_frame(m_out, frame_kind::too_large, header.task_id);
            encode_to(m_out, concat("triad::mpi_pool: the result encodes to ", bytes,
                                    " bytes, over max_message_size (", m_max_message_size, ")"));
        }
        end_frame(m_out, 0);
    }

    MPI_Comm m_comm;
    int m_rank;
    std::uint64_t m_max_message_size;
    std::size_t m_max_nesting;
    std::vector<char> m_in;
    std::vector<char> m_out;
    bool m_own_stack = false;
};

// --- rank 0 -----------------------------------------------------------------------------------

// What rank 0 has in flight on each worker rank, readable from a signal handler: when Open MPI
// ends the job (a rank died), rank 0 says what was lost where.
struct mpi_flight_log {
    static constexpr int max_ranks = 4096;
    struct entry {
        std::atomic<std::uint64_t> count{0};
        std::atomic<std::uint64_t> oldest{0};
    };
    static mpi_flight_log& get() noexcept {
        static mpi_flight_log log;
        return log;
    }
    std::atomic<int> ranks{0}; // 0: no pool is running
    entry entries[max_ranks];
    struct sigaction previous {};
};

inline void mpi_rank0_terminated(int signal, siginfo_t* info, void* context) {
    mpi_flight_log& log = mpi_flight_log::get();
    const int saved_errno = errno;
    const int ranks = std::min(log.ranks.load(), mpi_flight_log::max_ranks);
    char line[200];
    char* out = append_literal(line, "triad::mpi_pool: rank 0 got signal ");
    out = append_unsigned(out, static_cast<std::uint64_t>(signal));
    out = append_literal(out, " (the MPI job is ending); tasks in flight are lost:\n");
    write_all(line, static_cast<std::size_t>(out - line));
    bool any = false;
    for (int rank = 1; rank < ranks; ++rank) {
        const std::uint64_t count = log.entries[rank].count.load();
        if (count == 0)
            continue;
        any = true;
        out = append_literal(line, "triad::mpi_pool:   rank ");
        out = append_unsigned(out, static_cast<std::uint64_t>(rank));
        out = append_literal(out, ": ");
        out = append_unsigned(out, count);
        out = append_literal(out, " task(s), the one running is task ");
        out = append_unsigned(out, log.entries[rank].oldest.load());
        out = append_literal(out, "\n");
        write_all(line, static_cast<std::size_t>(out - line));
    }
    if (!any)
        write_all("triad::mpi_pool:   none\n", 24);
    // Then what the signal did before: the program's own handler, or the default (the end).
    const struct sigaction before = log.previous;
    ::sigaction(signal, &before, nullptr);
    errno = saved_errno;
    if ((before.sa_flags & SA_SIGINFO) != 0 && before.sa_sigaction != nullptr)
        before.sa_sigaction(signal, info, context);
    else if (before.sa_handler == SIG_DFL)
        ::raise(signal);
    else if (before.sa_handler != SIG_IGN)
        before.sa_handler(signal);
}

struct mpi_dispatcher_config {
    MPI_Comm comm = MPI_COMM_NULL;
    int ranks = 0; // including rank 0
    std::size_t max_in_flight_per_rank = 0;
    std::uint64_t max_message_size = std::uint64_t{1} << 30;
    std::size_t max_nesting = default_max_nesting;
};

// Rank 0's side. Its MPI work (send queued tasks to ranks with room, receive results) is a
// "step" that any thread of rank 0 may take while it holds the engine lock: the pool's I/O
// thread, which keeps things moving when nobody else does; the thread that submits, which sends
// its task at once; and rank 0's main thread while it waits on a pool's future (a wait_helper),
// which then receives its own result without waking anyone: a round trip costs about what MPI
// does, not two thread handoffs. Futures are completed after the engine is released, so a
// continuation may submit or wait. Results come back from each rank in the order its tasks
// were sent to it.
class mpi_dispatcher final : public wait_helper {
public:
    explicit mpi_dispatcher(mpi_dispatcher_config config)
        : m_config(config), m_ranks(static_cast<std::size_t>(config.ranks)) {
        (void)cancelled_error();
        mpi_flight_log& log = mpi_flight_log::get();
        if (m_config.ranks <= mpi_flight_log::max_ranks) {
            struct sigaction action {};
            action.sa_sigaction = &mpi_rank0_terminated;
            action.sa_flags = SA_SIGINFO;
            sigemptyset(&action.sa_mask);
            ::sigaction(SIGTERM, &action, &log.previous);
            log.ranks.store(m_config.ranks);
        }
        m_thread = std::thread([this] { run(); });
    }
    mpi_dispatcher(const mpi_dispatcher&) = delete;
    mpi_dispatcher& operator=(const mpi_dispatcher&) = delete;
    ~mpi_dispatcher() { shutdown(false); }

    std::uint64_t next_task_id() noexcept {
        return m_next_id.fetch_add(1, std::memory_order_relaxed);
    }
    std::uint64_t max_message_size() const noexcept { return m_config.max_message_size; }

    // Takes ownership; on refusal fails the task (its future throws too), then throws. Sends
    // it at once when the engine is free and its rank has room.
    void enqueue(remote_task* task) {
        bool accepted = false;
        {
            std::lock_guard lock(m_mutex);
            if (!m_closed) {
                m_inbox.push_back(task);
                ++m_outstanding;
                accepted = true;
                if (m_io_sleeping)
                    m_wake.notify_one();
            }
        }
        if (!accepted) {
            const pool_closed refusal(refusal_reason());
            task->fail(std::make_exception_ptr(refusal));
            throw refusal;
        }
        try_step(false);
    }

    // rank 0's main thread, while in mpi_main, waits on any future by helping: it takes steps
    // for a while (the result of a short task is usually there within microseconds), then
    // blocks as any thread does and leaves the steps to the I/O thread.
    bool help_until(wait_slot& slot, const steady_time* deadline) override {
        if (std::this_thread::get_id() == m_thread_id.load())
            return keep_going_until(slot, deadline);
        const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
        while (!slot.is_ready()) {
            const auto now = std::chrono::steady_clock::now();
            if (deadline != nullptr && now >= *deadline)
                return slot.is_ready();
            if (now >= spin_until)
                break;
            m_helping.fetch_add(1, std::memory_order_relaxed);
            try_step(true);
            m_helping.fetch_sub(1, std::memory_order_relaxed);
        }
        if (slot.is_ready())
            return true;
        wake_io_thread(); // it may be asleep, trusting this thread to step
        return slot.block_until(deadline);
    }

    // A continuation on the I/O thread waits on a future: nobody else may be taking steps, so
    // this thread goes on taking them until the future is ready.
    bool keep_going_until(wait_slot& slot, const steady_time* deadline) {
        mpi_backoff backoff;
        bool broken = false;
        while (!slot.is_ready()) {
            if (deadline != nullptr && std::chrono::steady_clock::now() >= *deadline)
                return slot.is_ready();
            std::exception_ptr failed;
            {
                std::lock_guard lock(m_mutex);
                failed = m_step_error;
            }
            if (failed && !broken) {
                break_pool(failed); // fails every task of the pool, which may be this one
                broken = true;
                continue;
            }
            if (try_step(true))
                backoff.reset();
            else
                backoff.pause();
        }
        return true;
    }

    void wait_idle() {
        refuse_on_io_thread("wait_idle()");
        std::unique_lock lock(m_mutex);
        m_idle.wait(lock, [this] { return m_outstanding == 0 || m_broken; });
        if (m_broken)
            std::rethrow_exception(m_broken);
    }

    void shutdown(bool cancel) {
        {
            std::lock_guard lock(m_mutex);
            m_closed = true;
            m_cancel = m_cancel || cancel;
            m_wake.notify_one();
        }
        // From a continuation on the I/O thread: the pool only closes, and whoever called
        // mpi_main waits for the rest.
        if (std::this_thread::get_id() == m_thread_id.load())
            return;
        std::lock_guard join(m_join_mutex); // a second caller waits for the first's join
        if (m_thread.joinable())
            m_thread.join();
    }

    bool closed() const {
        std::lock_guard lock(m_mutex);
        return m_closed;
    }
    std::uint64_t queued() const {
        std::lock_guard lock(m_mutex);
        return m_outstanding - m_running.load(std::memory_order_relaxed);
    }
    std::uint64_t running() const noexcept { return m_running.load(std::memory_order_relaxed); }
    std::uint64_t completed() const noexcept { return m_completed.load(std::memory_order_relaxed); }
    std::uint64_t cancelled() const noexcept { return m_cancelled.load(std::memory_order_relaxed); }

private:
    struct sent {
        remote_task* task;
        MPI_Request request;
    };
    struct rank_state {
        std::deque<sent> flying;
        double task_ns = 0;
        std::size_t window = 1; // until its first result says how long its tasks take
        std::chrono::steady_clock::time_point head_since{};
    };
    // A future to complete once the engine is released: with the answer frame in `bytes`, or
    // failed with `error`.
    struct completion {
        remote_task* task;
        std::exception_ptr error;
        std::vector<char> bytes;
    };

    // Why a submission is refused: shut down, or broken (and why), as process_pool says.
    std::string refusal_reason() const {
        std::exception_ptr broken;
        {
            std::lock_guard lock(m_mutex);
            broken = m_broken;
        }
        if (broken) {
            try {
                std::rethrow_exception(broken);
            } catch (const std::exception& e) {
                return concat("triad::mpi_pool is broken: ", std::string_view(e.what()));
            } catch (...) {
                return "triad::mpi_pool is broken";
            }
        }
        return "triad::mpi_pool: submit after shutdown()";
    }

    void refuse_on_io_thread(const char* what) const {
        if (std::this_thread::get_id() == m_thread_id.load())
            throw std::logic_error(concat("triad::mpi_pool: ", std::string_view(what),
                                          " was called from a continuation running on the "
                                          "pool's I/O thread, which it would wait for"));
    }

    void wake_io_thread() {
        std::lock_guard lock(m_mutex);
        if (m_io_sleeping)
            m_wake.notify_one();
    }

    void run() noexcept {
        m_thread_id.store(std::this_thread::get_id());
        ::prctl(PR_SET_TIMERSLACK, 1000UL); // its sleeps of 20 us are not 70 (the default slack)
        tls_wait_helper = this;             // a continuation here that waits keeps the pool going
        std::exception_ptr failure;
        try {
            loop();
        } catch (...) {
            failure = std::current_exception();
        }
        if (failure) {
            abort_if_stranded(failure);
            break_pool(failure);
        }
        stop_workers();
        mpi_flight_log& log = mpi_flight_log::get();
        if (log.ranks.exchange(0) != 0) {
            // Put back what was there, unless the program installed a handler of its own since.
            struct sigaction now {};
            if (::sigaction(SIGTERM, nullptr, &now) == 0 && (now.sa_flags & SA_SIGINFO) != 0 &&
                now.sa_sigaction == &mpi_rank0_terminated)
                ::sigaction(SIGTERM, &log.previous, nullptr);
        }
    }

    // A worker rank with tasks in flight may be blocked sending a result that will never be
    // received (a large message waits for its receive), so it would never see "stop" and the
    // job would hang in MPI_Finalize; and a task's MPI_Isend cannot be taken back safely (its
    // buffer would be freed under the transfer). No MPI call can release such a rank: the job
    // ends here, saying why and what was lost, as it does when a rank dies.
    void abort_if_stranded(const std::exception_ptr& failure) noexcept {
        std::lock_guard engine(m_engine);
        bool stranded = false;
        for (const rank_state& r : m_ranks)
            stranded = stranded || !r.flying.empty();
        if (!stranded)
            return;
        const char* why = "an unknown exception";
        try {
            std::rethrow_exception(failure);
        } catch (const std::exception& e) {
            why = e.what();
        } catch (...) {
        }
        std::fprintf(stderr,
                     "triad::mpi_pool: rank 0's I/O thread failed with tasks in flight (%s); "
                     "worker ranks cannot be released, so the MPI job is aborted. Lost:\n",
                     why);
        for (std::size_t rank = 1; rank < m_ranks.size(); ++rank)
            if (!m_ranks[rank].flying.empty())
                std::fprintf(
                    stderr, "triad::mpi_pool:   rank %zu: %zu task(s), the first is task %llu\n",
                    rank, m_ranks[rank].flying.size(),
                    static_cast<unsigned long long>(m_ranks[rank].flying.front().task->id()));
        std::fflush(stderr);
        MPI_Abort(m_config.comm, 1);
    }

    // Steps while there is anything to do; backs off (spin, then sleeps of up to 1 ms) while
    // tasks are out, a helper steps, or work came in the last few milliseconds (a submitter in
    // a loop then need not wake it); sleeps until woken when there has been nothing for longer.
    void loop() {
        mpi_backoff backoff;
        auto last_progress = std::chrono::steady_clock::now();
        for (;;) {
            {
                std::lock_guard lock(m_mutex);
                if (m_step_error)
                    std::rethrow_exception(m_step_error);
            }
            const step_result step = this->step();
            if (step.finished)
                return;
            const auto now = std::chrono::steady_clock::now();
            if (step.progressed) {
                backoff.reset();
                if (const auto hint = m_task_ns_hint.load(std::memory_order_relaxed); hint > 0)
                    backoff.cap_after(std::chrono::nanoseconds(hint));
                last_progress = now;
                continue;
            }
            std::unique_lock lock(m_mutex);
            if (!m_inbox.empty() || m_step_error || (m_closed && m_outstanding == 0))
                continue;
            if (m_outstanding == 0 && now - last_progress > std::chrono::milliseconds(5)) {
                m_io_sleeping = true;
                m_wake.wait(lock);
                m_io_sleeping = false;
            } else if (m_helping.load(std::memory_order_relaxed) != 0) {
                // A waiter is stepping: stay out of its way, but not for long.
                m_wake.wait_for(lock, std::chrono::microseconds(200));
            } else {
                const auto pause = backoff.next();
                if (pause.count() <= 0) {
                    lock.unlock();
                    mpi_backoff::pause_for(pause);
                    lock.lock();
                } else {
                    m_wake.wait_for(lock, pause);
                }
            }
        }
    }

    struct step_result {
        bool progressed = false;
        bool finished = false; // closed, and nothing queued or out: the I/O thread may end
    };

    // One step, waiting for the engine (the I/O thread).
    step_result step() {
        std::unique_lock engine(m_engine);
        return step(engine, true);
    }

    // One step if the engine is free: by a waiting helper, or (without receiving) by a
    // submitter. Errors go to the I/O thread, which breaks the pool: neither caller is the
    // one to report them.
    bool try_step(bool receive) {
        std::unique_lock engine(m_engine, std::try_to_lock);
        if (!engine)
            return false;
        try {
            return step(engine, receive).progressed;
        } catch (...) {
            std::lock_guard lock(m_mutex);
            if (!m_step_error)
                m_step_error = std::current_exception();
            m_wake.notify_one();
            return true;
        }
    }

    step_result step(std::unique_lock<std::mutex>& engine, bool receive = true) {
        step_result result;
        std::vector<completion> done;
        try {
            if (take_inbox())
                cancel_pending(done);
            result.progressed = dispatch(done);
            // One answer per hold of the engine, completed after it, so that other threads
            // get the engine in between and continuations run unlocked.
            while (receive) {
                const bool got = receive_one(done);
                result.progressed = result.progressed || got;
                engine.unlock();
                complete(done);
                if (!got)
                    break;
                engine.lock();
            }
        } catch (...) {
            if (engine.owns_lock())
                engine.unlock();
            complete(done); // what was taken off the queues is completed, never lost
            throw;
        }
        if (engine.owns_lock())
            engine.unlock();
        complete(done);
        std::lock_guard lock(m_mutex);
        result.finished = m_closed && m_outstanding == 0;
        return result;
    }

    // Moves submissions into the engine's queue; true if the pool is cancelling.
    bool take_inbox() {
        std::lock_guard lock(m_mutex);
        m_pending.insert(m_pending.end(), m_inbox.begin(), m_inbox.end());
        m_inbox.clear();
        return m_cancel;
    }

    void cancel_pending(std::vector<completion>& done) {
        while (!m_pending.empty()) {
            done.push_back({m_pending.front(), cancelled_error(), {}});
            m_pending.pop_front();
            m_cancelled.fetch_add(1, std::memory_order_relaxed);
        }
    }

    // Sends each rank tasks while it has room, one rank at a time round the ranks, so that
    // tasks spread over every rank that has room rather than fill the first.
    bool dispatch(std::vector<completion>& done) {
        bool sent_any = false;
        // Level by level: first every rank with nothing out, then those with one, and so on,
        // so that a task goes to a free rank before it queues behind another's.
        bool room = true;
        for (std::size_t level = 0; room && !m_pending.empty(); ++level) {
            room = false;
            for (int rank = 1; rank < m_config.ranks && !m_pending.empty(); ++rank) {
                rank_state& r = m_ranks[static_cast<std::size_t>(rank)];
                if (r.flying.size() > level)
                    room = true; // a fuller rank may still have room at a later level
                if (r.flying.size() != level || level >= window_of(r))
                    continue;
                room = true;
                remote_task* task = m_pending.front();
                m_pending.pop_front();
                if (!task->claim()) { // its future cancelled it, which completed it
                    task->discard();
                    m_cancelled.fetch_add(1, std::memory_order_relaxed);
                    task_done();
                    continue;
                }
                MPI_Request request = MPI_REQUEST_NULL;
                const int code =
                    MPI_Isend(task->frame().data(), static_cast<int>(task->frame().size()),
                              MPI_BYTE, rank, mpi_tag_task, m_config.comm, &request);
                if (code != MPI_SUCCESS) {
                    try {
                        mpi_check(code, "MPI_Isend");
                    } catch (...) {
                        done.push_back({task, std::current_exception(), {}});
                        throw;
                    }
                }
                if (r.flying.empty())
                    r.head_since = std::chrono::steady_clock::now();
                r.flying.push_back({task, request});
                m_running.fetch_add(1, std::memory_order_relaxed);
                log_flight(rank, r);
                sent_any = true;
            }
        }
        return sent_any;
    }

    std::size_t window_of(const rank_state& r) const noexcept {
        return m_config.max_in_flight_per_rank != 0 ? m_config.max_in_flight_per_rank : r.window;
    }

    void log_flight(int rank, const rank_state& r) noexcept {
        if (rank >= mpi_flight_log::max_ranks)
            return;
        auto& entry = mpi_flight_log::get().entries[rank];
        entry.oldest.store(r.flying.empty() ? 0 : r.flying.front().task->id());
        entry.count.store(r.flying.size());
    }

    // Receives one answer, if one is there, and takes its task off its rank's queue.
    bool receive_one(std::vector<completion>& done) {
        int found = 0;
        MPI_Status probe{};
        mpi_check(MPI_Iprobe(MPI_ANY_SOURCE, mpi_tag_result, m_config.comm, &found, &probe),
                  "MPI_Iprobe");
        if (found == 0)
            return false;
        int count = 0;
        mpi_check(MPI_Get_count(&probe, MPI_BYTE, &count), "MPI_Get_count");
        std::vector<char> bytes(static_cast<std::size_t>(count));
        mpi_check(MPI_Recv(bytes.data(), count, MPI_BYTE, probe.MPI_SOURCE, mpi_tag_result,
                           m_config.comm, MPI_STATUS_IGNORE),
                  "MPI_Recv");
        const int rank = probe.MPI_SOURCE;
        if (rank < 1 || rank >= m_config.ranks || bytes.size() < sizeof(frame_header))
            throw protocol_error(
                concat("triad::mpi_pool: corrupt message: a result from rank ", rank));
        rank_state& r = m_ranks[static_cast<std::size_t>(rank)];
        frame_header header;
        std::memcpy(&header, bytes.data(), sizeof header);
        if (r.flying.empty() || r.flying.front().task->id() != header.task_id ||
            header.payload_size != bytes.size() - sizeof header)
            throw protocol_error(concat("triad::mpi_pool: corrupt message: rank ", rank,
                                        " answered task ", header.task_id,
                                        ", which it was not running"));
        // Its send completed before the answer could come; this only frees the request. Before
        // the task leaves its rank's queue: if it fails, break_pool still finds the task.
        mpi_check(MPI_Wait(&r.flying.front().request, MPI_STATUS_IGNORE), "MPI_Wait");
        sent answered = r.flying.front();
        r.flying.pop_front();
        const auto now = std::chrono::steady_clock::now();
        const double took = std::chrono::duration<double, std::nano>(now - r.head_since).count();
        r.task_ns = r.task_ns == 0 ? took : 0.8 * r.task_ns + 0.2 * took;
        // Enough in flight to cover ~200 us of work (a round trip between ranks costs a few
        // to tens of microseconds), and at least two: one running, one ready, so a rank never
        // waits for rank 0 between tasks. Free ranks are served first (dispatch), so the one
        // queued ahead is a task no free rank could have taken then.
        r.window =
            static_cast<std::size_t>(std::clamp(200'000.0 / std::max(r.task_ns, 1.0), 2.0, 1024.0));
        r.head_since = now;
        m_task_ns_hint.store(static_cast<std::int64_t>(r.task_ns), std::memory_order_relaxed);
        m_running.fetch_sub(1, std::memory_order_relaxed);
        m_completed.fetch_add(1, std::memory_order_relaxed);
        log_flight(rank, r);
        done.push_back({answered.task, nullptr, std::move(bytes)});
        return true;
    }

    // Completes futures, outside the engine lock: their continuations run here.
    void complete(std::vector<completion>& done) {
        for (completion& c : done) {
            if (c.error)
                c.task->fail(std::move(c.error));
            else
                deliver(c.task, c.bytes);
            task_done();
        }
        done.clear();
    }

    void deliver(remote_task* task, const std::vector<char>& bytes) noexcept {
        frame_header header;
        std::memcpy(&header, bytes.data(), sizeof header);
        byte_reader payload(bytes.data() + sizeof header,
                            static_cast<std::size_t>(header.payload_size), m_config.max_nesting);
        const auto kind = static_cast<frame_kind>(header.kind);
        if (kind == frame_kind::result) {
            task->succeed(payload);
            return;
        }
        std::exception_ptr error;
        try {
            if (kind == frame_kind::failure) {
                remote_failure failure;
                decode_value(payload, failure);
                error = std::make_exception_ptr(remote_error(failure.type_name, failure.message));
            } else if (kind == frame_kind::too_large) {
                std::string why;
                decode_value(payload, why);
                error = std::make_exception_ptr(protocol_error(why));
            } else {
                error = std::make_exception_ptr(
                    protocol_error("triad::mpi_pool: corrupt message: unknown answer kind"));
            }
        } catch (...) {
            error = std::current_exception();
        }
        task->fail(std::move(error));
    }

    void task_done() {
        std::lock_guard lock(m_mutex);
        if (--m_outstanding == 0) {
            m_idle.notify_all();
            if (m_closed)
                m_wake.notify_one(); // the I/O thread may end
        }
    }

    // The engine failed (an MPI error, a corrupt message): every task still here fails with
    // that error, the pool closes, and waiters see the error.
    void break_pool(std::exception_ptr reason) noexcept {
        std::vector<remote_task*> inbox;
        std::vector<remote_task*> lost;
        const auto fail = [&](remote_task* task) {
            task->fail(reason);
            task_done();
        };
        {
            std::lock_guard engine(m_engine);
            {
                std::lock_guard lock(m_mutex);
                m_closed = true;
                m_broken = reason;
                inbox.swap(m_inbox); // no allocation: the pool often breaks for lack of memory
            }
            bool collected = true;
            try {
                for (const rank_state& r : m_ranks)
                    for (const sent& s : r.flying)
                        lost.push_back(s.task);
                lost.insert(lost.end(), m_pending.begin(), m_pending.end());
            } catch (...) {
                collected = false; // no memory to list them: failed here, under the engine
            }
            for (rank_state& r : m_ranks) {
                if (!collected)
                    for (const sent& s : r.flying)
                        fail(s.task);
                r.flying.clear();
            }
            if (!collected)
                for (remote_task* task : m_pending)
                    fail(task);
            m_pending.clear();
            m_running.store(0, std::memory_order_relaxed);
        }
        for (remote_task* task : lost)
            fail(task);
        for (remote_task* task : inbox)
            fail(task);
        std::lock_guard lock(m_mutex);
        m_idle.notify_all();
    }

    void stop_workers() noexcept {
        std::lock_guard engine(m_engine);
        for (int rank = 1; rank < m_config.ranks; ++rank)
            MPI_Send(nullptr, 0, MPI_BYTE, rank, mpi_tag_stop, m_config.comm);
    }

    mpi_dispatcher_config m_config;

    // The engine: held to make MPI calls and to touch what follows.
    std::mutex m_engine;
    std::vector<rank_state> m_ranks;    // by rank; [0] unused
    std::deque<remote_task*> m_pending; // queued on rank 0, in order

    mutable std::mutex m_mutex;
    std::condition_variable m_wake;
    std::condition_variable m_idle;
    std::vector<remote_task*> m_inbox;
    std::uint64_t m_outstanding = 0; // enqueued, not finished
    bool m_closed = false;
    bool m_cancel = false;
    bool m_io_sleeping = false;
    std::exception_ptr m_broken;
    std::exception_ptr m_step_error; // a helper's step failed: the I/O thread breaks the pool

    std::atomic<int> m_helping{0};
    std::atomic<std::int64_t> m_task_ns_hint{0}; // the latest rank's task time, for the backoff
    std::atomic<std::uint64_t> m_next_id{1};
    std::atomic<std::uint64_t> m_running{0};
    std::atomic<std::uint64_t> m_completed{0};
    std::atomic<std::uint64_t> m_cancelled{0};
    std::atomic<std::thread::id> m_thread_id{};
    std::mutex m_join_mutex;
    std::thread m_thread;
};

} // namespace triad::detail
