#pragma once

// Shared by every benchmark binary: benchmarks are registered with the executor they measure and
// the workload they run, and after the run a table sets each executor beside its peers from the
// same run, as ratios (absolute times on a shared 2-core VM mean little; ratios do).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace triad_bench {

struct benchmark_entry {
    std::string workload;
    std::string executor;
};

inline std::map<std::string, benchmark_entry>& registry() {
    static std::map<std::string, benchmark_entry> entries;
    return entries;
}

// What a workload is, for the report: its title, whether it is CPU-bound, I/O-bound or an
// overhead measurement, what one item is, and which argument (workers, concurrency) its
// scaling chart follows.
struct workload_info {
    std::string title;
    std::string kind; // cpu, io, mixed, overhead
    std::string item;
    std::string axis; // an argument name, or empty
};

inline std::map<std::string, workload_info>& workloads() {
    static std::map<std::string, workload_info> entries;
    return entries;
}

inline void describe(const std::string& workload, workload_info info) {
    workloads()[workload] = std::move(info);
}

// TRIAD_BENCH_QUICK=1 (bench/run --quick) asks for smaller sizes: the whole suite in minutes.
inline bool quick() {
    const char* value = std::getenv("TRIAD_BENCH_QUICK");
    return value != nullptr && *value != '\0' && std::string(value) != "0";
}

inline std::string json_string(const std::string& text) {
    std::string out = "\"";
    for (char c : text) {
        if (c == '"' || c == '\\')
            out += '\\';
        out += c;
    }
    return out + "\"";
}

// --triad_registry: one JSON object per line describing every benchmark family and workload,
// read by the report tool.
inline void print_registry() {
    for (const auto& [family, entry] : registry())
        std::printf("{\"family\": %s, \"executor\": %s, \"workload\": %s}\n",
                    json_string(family).c_str(), json_string(entry.executor).c_str(),
                    json_string(entry.workload).c_str());
    for (const auto& [name, info] : workloads())
        std::printf("{\"workload\": %s, \"title\": %s, \"kind\": %s, \"item\": %s, "
                    "\"axis\": %s}\n",
                    json_string(name).c_str(), json_string(info.title).c_str(),
                    json_string(info.kind).c_str(), json_string(info.item).c_str(),
                    json_string(info.axis).c_str());
}

// --- what a run costs: CPU time and peak memory, worker processes included ------------------
//
// Every benchmark registered with add() runs inside a wrapper that sets two counters on each run
// (one call of the benchmark function):
//   cpu_ns_per_item  CPU time (user + system) of this process, all of its threads, plus that of
//                    every descendant process (a pool's fork server and workers, a child run of
//                    this binary), divided by items x iterations. Living descendants are found
//                    through /proc/<pid>/task/*/children, recursively, and read with their CPU
//                    clock (ns) plus the children they reaped (/proc/<pid>/stat, clock ticks);
//                    descendants reaped by this process come from getrusage(RUSAGE_CHILDREN).
//   peak_rss_bytes   the peak resident set of this process during the run (its VmHWM, reset at
//                    the start through /proc/self/clear_refs) plus the largest sum of the VmHWM
//                    of the living descendants, sampled every 20 ms. The two peaks need not
//                    coincide, and a forked worker's RSS counts the pages it still shares
//                    copy-on-write with its parent, so this is an upper bound. It also holds
//                    whatever earlier runs in this process left resident that malloc_trim
//                    cannot return: triad's node-cache slabs (never unmapped) and oneTBB's
//                    caches, about 21 and 27 MB after a million posts. A row that follows one of
//                    those in the interleaved order carries it: its minimum over repetitions
//                    comes nearer its own figure; running it alone (--benchmark_filter) gives
//                    it exactly.
// The window opens when the benchmark function is called, so its set-up (building a pool, a
// warm-up round) is inside it unless the function calls measure_cost_from_here() just before
// its timed loop; it closes at set_items() (or when the function returns), so tear-down
// (joining threads, reaping workers) is outside it and worker processes are still alive to be
// read. Google Benchmark calls the function several times in the first repetition while it
// estimates the iteration count and reports the last call: each call sets its own counters, so
// the reported ones are those of the reported run. Before each call the glibc heap is trimmed
// (malloc_trim(0)), so every contender starts from the same glibc heap state (triad's node
// cache and oneTBB's allocator keep their own memory warm: their design, whose price shows in
// peak_rss_bytes). The sampler is one more thread of this process, waking every 20 ms; it walks
// /proc only while a child process exists, and its CPU time is left out. A counter that could
// not be read (no /proc, no CONFIG_PROC_CHILDREN) is left out rather than reported wrong.
// Runs with several benchmark threads (->Threads(n)) get neither counter: a process-wide figure
// cannot be split between them.

namespace detail {

// Whole small file (/proc), or nothing if it cannot be read.
inline std::optional<std::string> read_proc_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return std::nullopt;
    std::string text;
    char buffer[4096];
    for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ::close(fd);
            return std::nullopt;
        }
        if (n == 0)
            break;
        text.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return text;
}

// Appends the children of every thread of a process (a child belongs to the thread that forked
// it). False if the process's task list cannot be read.
inline bool add_children(const std::string& process_dir, std::vector<pid_t>& out) {
    const std::string task_dir = process_dir + "/task";
    DIR* dir = ::opendir(task_dir.c_str());
    if (dir == nullptr)
        return false;
    while (const dirent* entry = ::readdir(dir)) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9')
            continue;
        const auto text = read_proc_file(task_dir + "/" + entry->d_name + "/children");
        if (!text)
            continue; // the thread ended meanwhile
        const char* at = text->c_str();
        for (char* end = nullptr;; at = end) {
            const long pid = std::strtol(at, &end, 10);
            if (end == at)
                break;
            out.push_back(static_cast<pid_t>(pid));
        }
    }
    ::closedir(dir);
    return true;
}

// Every living descendant of this process, or nothing if /proc cannot tell.
inline std::optional<std::vector<pid_t>> living_descendants() {
    static const bool readable =
        read_proc_file("/proc/self/task/" + std::to_string(::getpid()) + "/children").has_value();
    std::vector<pid_t> found;
    if (!readable || !add_children("/proc/self", found))
        return std::nullopt;
    // A descendant that exits meanwhile has no task list left: it simply adds no children.
    for (std::size_t i = 0; i < found.size() && found.size() < 100'000; ++i)
        add_children("/proc/" + std::to_string(found[i]), found);
    return found;
}

// A cheap test before the /proc walk: waitid fails with ECHILD when there is no child at all
// (WNOWAIT: nothing is reaped, the pool's own waitpid still sees its children).
inline bool has_children() {
    siginfo_t info{};
    return ::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) == 0 || errno != ECHILD;
}

inline double timespec_ns(const timespec& t) {
    return static_cast<double>(t.tv_sec) * 1e9 + static_cast<double>(t.tv_nsec);
}

inline double timeval_ns(const timeval& t) {
    return static_cast<double>(t.tv_sec) * 1e9 + static_cast<double>(t.tv_usec) * 1e3;
}

// CPU time of a living descendant, all its threads, plus the children it reaped.
inline std::optional<double> descendant_cpu_ns(pid_t pid) {
    const auto stat = read_proc_file("/proc/" + std::to_string(pid) + "/stat");
    if (!stat)
        return std::nullopt;
    // After the command name (which may hold spaces and parentheses): state is field 3, utime,
    // stime, cutime and cstime are fields 14 to 17, in clock ticks.
    const auto name_end = stat->rfind(')');
    if (name_end == std::string::npos)
        return std::nullopt;
    const char* at = stat->c_str() + name_end + 1;
    long long field[15] = {};
    for (int i = 0; i < 15; ++i) {
        while (*at == ' ')
            ++at;
        if (i == 0) { // the state, a letter
            while (*at != ' ' && *at != '\0')
                ++at;
            continue;
        }
        char* end = nullptr;
        field[i] = std::strtoll(at, &end, 10);
        if (end == at)
            return std::nullopt;
        at = end;
    }
    static const double tick_ns = 1e9 / static_cast<double>(::sysconf(_SC_CLK_TCK));
    // Its own time from its CPU clock (nanoseconds, not 10 ms ticks) where the kernel gives it.
    double own = static_cast<double>(field[11] + field[12]) * tick_ns;
    clockid_t clock{};
    timespec now{};
    if (::clock_getcpuclockid(pid, &clock) == 0 && ::clock_gettime(clock, &now) == 0)
        own = timespec_ns(now);
    return own + static_cast<double>(field[13] + field[14]) * tick_ns;
}

// CPU time so far of this process and every descendant, living or reaped. A descendant reaped
// between the two reads below is missed once (a rare race: pools reap at tear-down, outside
// the window).
inline std::optional<double> total_cpu_ns() {
    timespec self{};
    rusage reaped{};
    if (::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &self) != 0 ||
        ::getrusage(RUSAGE_CHILDREN, &reaped) != 0)
        return std::nullopt;
    double total = timespec_ns(self) + timeval_ns(reaped.ru_utime) + timeval_ns(reaped.ru_stime);
    if (has_children()) {
        const auto living = living_descendants();
        if (!living)
            return std::nullopt;
        for (pid_t pid : *living)
            if (const auto ns = descendant_cpu_ns(pid)) // else it ended meanwhile
                total += *ns;
    }
    return total;
}

// VmHWM (the peak resident set so far) from a /proc/<pid>/status, in bytes.
inline std::optional<double> peak_rss(const std::string& status_path) {
    const auto status = read_proc_file(status_path);
    if (!status)
        return std::nullopt;
    const auto line = status->find("\nVmHWM:");
    if (line == std::string::npos)
        return std::nullopt; // a zombie has no memory left
    return std::strtod(status->c_str() + line + 7, nullptr) * 1024.0;
}

// The sum of the peaks of the living descendants (0 without any), or nothing if unreadable.
inline std::optional<double> descendants_peak_rss() {
    if (!has_children())
        return 0.0;
    const auto living = living_descendants();
    if (!living)
        return std::nullopt;
    double sum = 0;
    for (pid_t pid : *living)
        sum += peak_rss("/proc/" + std::to_string(pid) + "/status").value_or(0.0);
    return sum;
}

// Writing 5 to clear_refs resets this process's VmHWM to its current resident set.
inline bool reset_peak_rss() {
    const int fd = ::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    const bool done = ::write(fd, "5", 1) == 1;
    ::close(fd);
    return done;
}

// The cost of one run of a benchmark function: begin(), end(), then counters().
class run_cost {
public:
    run_cost() = default;
    run_cost(const run_cost&) = delete;
    run_cost& operator=(const run_cost&) = delete;
    ~run_cost() { stop_sampler(); }

    // Opens (or reopens) the window.
    void begin() {
        stop_sampler();
        m_ended = false;
        m_descendants_peak = 0;
        m_descendants_readable = true;
        m_self_peak.reset();
        m_cpu_at_end.reset();
        m_peak_reset = reset_peak_rss();
        sample_descendants();
        m_cpu_at_begin = total_cpu_ns();
        m_stop = false;
        // Worker processes that live only inside one iteration are seen by sampling; VmHWM
        // only grows, so a sample late in a worker's life sees (nearly) its peak.
        m_sampler = std::thread([this] {
            std::unique_lock lock(m_mutex);
            while (!m_wake.wait_for(lock, sample_period, [this] { return m_stop; })) {
                lock.unlock();
                sample_descendants();
                lock.lock();
            }
        });
    }

    // Closes the window (the first call counts).
    void end() {
        if (m_ended)
            return;
        m_ended = true;
        // The sampler is the harness, not the benchmark: its CPU time (about 1% of a core while
        // children exist, on the development VM) is taken out.
        double sampler_ns = 0;
        clockid_t clock{};
        timespec used{};
        if (m_sampler.joinable() &&
            ::pthread_getcpuclockid(m_sampler.native_handle(), &clock) == 0 &&
            ::clock_gettime(clock, &used) == 0)
            sampler_ns = timespec_ns(used);
        m_cpu_at_end = total_cpu_ns();
        if (m_cpu_at_end)
            *m_cpu_at_end -= sampler_ns;
        sample_descendants(); // the workers of a pool that outlives the loop, still alive here
        stop_sampler();
        m_self_peak = peak_rss("/proc/self/status");
    }

    void set_counters(benchmark::State& state) const {
        const auto iterations = static_cast<double>(state.iterations());
        if (state.error_occurred() || iterations <= 0)
            return;
        const auto items = state.counters.find("items");
        const double per_iteration = items == state.counters.end() ? 1.0 : items->second.value;
        if (m_cpu_at_begin && m_cpu_at_end && *m_cpu_at_end >= *m_cpu_at_begin && per_iteration > 0)
            state.counters["cpu_ns_per_item"] =
                (*m_cpu_at_end - *m_cpu_at_begin) / (per_iteration * iterations);
        std::lock_guard lock(m_mutex);
        if (m_peak_reset && m_self_peak && m_descendants_readable)
            state.counters["peak_rss_bytes"] = *m_self_peak + m_descendants_peak;
    }

private:
    static constexpr auto sample_period = std::chrono::milliseconds(20);

    void sample_descendants() {
        const auto sum = descendants_peak_rss();
        std::lock_guard lock(m_mutex);
        if (sum)
            m_descendants_peak = std::max(m_descendants_peak, *sum);
        else
            m_descendants_readable = false;
    }

    void stop_sampler() {
        if (!m_sampler.joinable())
            return;
        {
            std::lock_guard lock(m_mutex);
            m_stop = true;
        }
        m_wake.notify_one();
        m_sampler.join();
    }

    mutable std::mutex m_mutex;
    std::condition_variable m_wake;
    bool m_stop = false;                // guarded by m_mutex
    double m_descendants_peak = 0;      // guarded by m_mutex
    bool m_descendants_readable = true; // guarded by m_mutex
    std::thread m_sampler;
    bool m_ended = false;
    bool m_peak_reset = false;
    std::optional<double> m_self_peak;
    std::optional<double> m_cpu_at_begin;
    std::optional<double> m_cpu_at_end;
};

// The run being measured on this thread, for measure_cost_from_here() and set_items().
inline run_cost*& current_run_cost() {
    thread_local run_cost* current = nullptr;
    return current;
}

template <class Fn>
void run_measured(benchmark::State& state, Fn& fn) {
    if (state.threads() != 1) {
        fn(state);
        return;
    }
    ::malloc_trim(0);
    run_cost cost;
    struct current_guard {
        explicit current_guard(run_cost* cost) { current_run_cost() = cost; }
        ~current_guard() { current_run_cost() = nullptr; }
        current_guard(const current_guard&) = delete;
        current_guard& operator=(const current_guard&) = delete;
    } guard(&cost);
    cost.begin();
    fn(state);
    cost.end();
    cost.set_counters(state);
}

} // namespace detail

// Registers BM_<executor>_<workload>, measured as described above. The benchmark must call
// set_items() after its timed loop with the number of tasks or items one iteration processes,
// so the table can show time per item (and the cost counters, cost per item).
template <class Fn>
benchmark::internal::Benchmark* add(const std::string& executor, const std::string& workload,
                                    Fn&& fn) {
    const std::string name = "BM_" + executor + "_" + workload;
    registry()[name] = benchmark_entry{workload, executor};
    return benchmark::RegisterBenchmark(
        name.c_str(), [fn = std::forward<Fn>(fn)](benchmark::State& state) mutable {
            detail::run_measured(state, fn);
        });
}

// Called just before the timed loop by a benchmark whose set-up is not negligible next to the
// loop (a warm-up round, a big input): the cost counters then leave the set-up out (the peak
// resident set starts from what the set-up left resident).
inline void measure_cost_from_here() {
    if (detail::run_cost* cost = detail::current_run_cost())
        cost->begin();
}

// Called after the timed loop: the number of items one iteration processes. It also closes the
// cost window, before the benchmark's tear-down.
inline void set_items(benchmark::State& state, double items) {
    state.counters["items"] = benchmark::Counter(items);
    state.SetItemsProcessed(static_cast<int64_t>(items) * state.iterations());
    if (detail::run_cost* cost = detail::current_run_cost();
        cost != nullptr && state.iterations() > 0)
        cost->end();
}

class ratio_reporter : public benchmark::ConsoleReporter {
public:
    using ConsoleReporter::ConsoleReporter;

    void ReportRuns(const std::vector<Run>& runs) override {
        ConsoleReporter::ReportRuns(runs);
        for (const Run& run : runs) {
            if (run.error_occurred) {
                ++m_errors;
                continue;
            }
            const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
            if (run.run_type == Run::RT_Aggregate && !median)
                continue;
            const auto found = registry().find(run.run_name.function_name);
            if (found == registry().end())
                continue;
            const auto items = run.counters.find("items");
            const double per_iteration_ns = run.GetAdjustedRealTime() * unit_to_ns(run.time_unit);
            const double count = items == run.counters.end() ? 1.0 : items->second.value;
            // Arguments such as the worker count label the row; the workload is the group.
            const std::string& group = found->second.workload;
            std::string executor = found->second.executor;
            if (!run.run_name.args.empty())
                executor += "/" + run.run_name.args;
            auto& row = m_groups[group][executor];
            // With repetitions, the median replaces the individual runs.
            if (median || !row.from_median)
                row = cell{per_iteration_ns / count, median};
            if (std::find(m_order.begin(), m_order.end(), group) == m_order.end())
                m_order.push_back(group);
        }
    }

    void Finalize() override {
        ConsoleReporter::Finalize();
        auto& out = GetOutputStream();
        out << "\nSame-run comparison (time per item; ratio > 1 means the row is slower than "
               "the reference)\n";
        for (const std::string& group : m_order) {
            const auto& rows = m_groups[group];
            const auto sequential = rows.find("sequential");
            auto reference = rows.find("triad");
            if (reference == rows.end())
                reference = std::find_if(rows.begin(), rows.end(), [](const auto& row) {
                    return row.first.rfind("triad", 0) == 0;
                });
            if (reference == rows.end())
                reference = rows.begin();
            char line[256];
            std::snprintf(line, sizeof line, "\n[%s]  reference: %s\n", group.c_str(),
                          reference->first.c_str());
            out << line;
            std::snprintf(line, sizeof line, "  %-28s %14s %12s %14s\n", "executor", "ns/item",
                          "vs ref", "speedup/seq");
            out << line;
            for (const auto& [executor, c] : rows) {
                const double ratio = c.ns_per_item / reference->second.ns_per_item;
                std::string speedup = "-";
                if (sequential != rows.end()) {
                    char buffer[32];
                    std::snprintf(buffer, sizeof buffer, "%.2fx",
                                  sequential->second.ns_per_item / c.ns_per_item);
                    speedup = buffer;
                }
                std::snprintf(line, sizeof line,
                              c.ns_per_item < 10 ? "  %-28s %14.3f %11.2fx %14s\n"
                                                 : "  %-28s %14.1f %11.2fx %14s\n",
                              executor.c_str(), c.ns_per_item, ratio, speedup.c_str());
                out << line;
            }
        }
        out.flush();
    }

    // Runs that reported an error (a wrong result, lost work): the binary then exits with 1, so
    // the smoke tests and bench_report see it.
    int errors() const noexcept { return m_errors; }

private:
    struct cell {
        double ns_per_item = 0;
        bool from_median = false;
    };

    static double unit_to_ns(benchmark::TimeUnit unit) {
        switch (unit) {
        case benchmark::kNanosecond:
            return 1;
        case benchmark::kMicrosecond:
            return 1e3;
        case benchmark::kMillisecond:
            return 1e6;
        case benchmark::kSecond:
            return 1e9;
        }
        return 1;
    }

    std::map<std::string, std::map<std::string, cell>> m_groups;
    std::vector<std::string> m_order;
    int m_errors = 0;
};

inline int run_benchmarks(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == "--triad_registry") {
            print_registry();
            return 0;
        }
    // Our reporter replaces the default one, so honour --benchmark_color ourselves.
    bool color = ::isatty(STDOUT_FILENO) != 0;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--benchmark_color=false" || arg == "--benchmark_color=no")
            color = false;
        else if (arg == "--benchmark_color=true" || arg == "--benchmark_color=yes")
            color = true;
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    ratio_reporter reporter(color ? benchmark::ConsoleReporter::OO_ColorTabular
                                  : benchmark::ConsoleReporter::OO_Tabular);
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();
    if (reporter.errors() != 0) {
        std::fprintf(stderr, "%d benchmark run(s) reported an error; see ERROR OCCURRED above\n",
                     reporter.errors());
        return 1;
    }
    return 0;
}

} // namespace triad_bench
