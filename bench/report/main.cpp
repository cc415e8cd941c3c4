// bench_report: runs every benchmark binary and the Python peers, then writes
// bench/results/<date>-<host>/ (<date>-<host>-quick/ for --quick, so a rough run never replaces
// a full one) with the raw Google Benchmark JSON, REPORT.md and SVG charts; a timeline chart per
// trace the tracer left in raw/traces/ (none without that directory).
//
//   bench_report [--quick] [--out DIR] [--only cpu_bound,io_http] [--no-python]
//   bench_report --from DIR      re-renders DIR's report from DIR/raw without running anything
//   bench_report --update-readme README.md [--report DIR]
//                                regenerates the README's benchmark sections from a report (by
//                                default the latest full one under bench/results/)
//   bench_report --check-readme README.md [--report DIR]
//                                fails, naming the section, when the README and the report differ
//                                (README.md may be -, stdin, with links relative to here)
//
// The runs happen one after another (two cores are shared by everything measured), with a
// progress line on stderr: which binary, how many benchmarks are done out of how many, elapsed.

#include "readme.hpp"
#include "report.hpp"

#include <boost/json/src.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace fs = std::filesystem;

namespace {

// The binaries, in the order they run; set by CMake from the benchmark list.
const std::vector<std::string> all_binaries = [] {
    std::vector<std::string> names;
    std::istringstream in(TRIAD_REPORT_BINARIES);
    std::string name;
    while (std::getline(in, name, ','))
        names.push_back(name);
    return names;
}();

struct options {
    bool quick = false;
    bool python = true;
    fs::path out;
    fs::path from;
    std::vector<std::string> only;
    fs::path update_readme; // README sections, from the report in `report`
    fs::path check_readme;
    fs::path report;
};

[[noreturn]] void usage_error(const std::string& message) {
    std::fprintf(stderr,
                 "bench_report: %s\nusage: bench_report [--quick] [--out DIR] [--only a,b] "
                 "[--no-python]\n       bench_report --from DIR\n"
                 "       bench_report --update-readme|--check-readme README.md [--report DIR]\n",
                 message.c_str());
    std::exit(2);
}

options parse_options(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc)
                usage_error(arg + " needs a value");
            return argv[++i];
        };
        if (arg == "--quick") {
            o.quick = true;
        } else if (arg == "--no-python") {
            o.python = false;
        } else if (arg == "--out") {
            o.out = value();
        } else if (arg == "--from") {
            o.from = value();
        } else if (arg == "--update-readme") {
            o.update_readme = value();
        } else if (arg == "--check-readme") {
            o.check_readme = value();
        } else if (arg == "--report") {
            o.report = value();
        } else if (arg == "--only") {
            std::istringstream in(value());
            std::string name;
            while (std::getline(in, name, ','))
                if (std::find(all_binaries.begin(), all_binaries.end(), name) == all_binaries.end())
                    usage_error("--only: no benchmark named '" + name + "'");
                else
                    o.only.push_back(name);
        } else {
            usage_error("unknown argument '" + arg + "'");
        }
    }
    return o;
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw std::runtime_error("cannot read " + path.string());
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

void write_file(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out << text;
    if (!out.flush())
        throw std::runtime_error("cannot write " + path.string());
}

// A child process with its stdout (and optionally stdin) on pipes.
class child {
public:
    child(const std::vector<std::string>& argv, bool pipe_stdin) {
        int out[2];
        int in[2] = {-1, -1};
        if (::pipe2(out, O_CLOEXEC) != 0 || (pipe_stdin && ::pipe2(in, O_CLOEXEC) != 0))
            throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
        if (pipe_stdin)
            posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
        std::vector<char*> args;
        for (const std::string& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        const int error = ::posix_spawnp(&m_pid, args[0], &actions, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        ::close(out[1]);
        if (pipe_stdin)
            ::close(in[0]);
        m_stdout = ::fdopen(out[0], "r");
        m_stdin = in[1];
        if (error != 0) {
            close_stdin();
            std::fclose(m_stdout);
            throw std::runtime_error("cannot run " + argv[0] + ": " + std::strerror(error));
        }
    }
    child(const child&) = delete;
    child& operator=(const child&) = delete;
    ~child() {
        close_stdin();
        if (m_stdout != nullptr)
            std::fclose(m_stdout);
        if (m_pid > 0)
            wait();
    }

    // One line of the child's output without its newline; false at end of output.
    bool read_line(std::string& line) {
        line.clear();
        for (int c; (c = std::fgetc(m_stdout)) != EOF;) {
            if (c == '\n')
                return true;
            line += static_cast<char>(c);
        }
        return !line.empty();
    }

    void close_stdin() {
        if (m_stdin >= 0)
            ::close(m_stdin);
        m_stdin = -1;
    }

    // The exit status; a death by signal counts as 128 + the signal, as in the shell.
    int wait() {
        int status = 0;
        while (::waitpid(m_pid, &status, 0) < 0 && errno == EINTR) {
        }
        m_pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

private:
    pid_t m_pid = -1;
    FILE* m_stdout = nullptr;
    int m_stdin = -1;
};

// Runs argv to completion; every line of its output goes to on_line.
int run(const std::vector<std::string>& argv,
        const std::function<void(const std::string&)>& on_line) {
    child c(argv, false);
    for (std::string line; c.read_line(line);)
        on_line(line);
    return c.wait();
}

std::string capture(const std::vector<std::string>& argv, int* status = nullptr) {
    std::string out;
    const int code = run(argv, [&](const std::string& line) { out += line + "\n"; });
    if (status != nullptr)
        *status = code;
    else if (code != 0)
        throw std::runtime_error(argv[0] + " " + (argv.size() > 1 ? argv[1] : "") +
                                 " failed with status " + std::to_string(code));
    return out;
}

class progress {
public:
    explicit progress(std::size_t total) : m_total(total), m_tty(::isatty(STDERR_FILENO) != 0) {}

    void update(const std::string& what, const std::string& last) {
        const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::steady_clock::now() - m_start)
                                 .count();
        char line[512];
        std::snprintf(line, sizeof line, "[%zu/%zu benchmarks, %zu left] %lldm%02llds  %s%s%s",
                      m_done, m_total, m_total > m_done ? m_total - m_done : 0,
                      static_cast<long long>(seconds / 60), static_cast<long long>(seconds % 60),
                      what.c_str(), last.empty() ? "" : ": ", last.c_str());
        if (m_tty)
            std::fprintf(stderr, "\r%s\033[K", line);
        else
            std::fprintf(stderr, "%s\n", line);
        std::fflush(stderr);
    }
    void finished_one() { m_done = std::min(m_done + 1, m_total); }
    void end() {
        if (m_tty)
            std::fprintf(stderr, "\n");
    }
    double elapsed_seconds() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - m_start).count();
    }

private:
    std::size_t m_total;
    std::size_t m_done = 0;
    bool m_tty;
    std::chrono::steady_clock::time_point m_start = std::chrono::steady_clock::now();
};

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A console line of Google Benchmark that marks one benchmark done: its single run, or the
// median of its repetitions.
std::string finished_benchmark(const std::string& line) {
    if (line.rfind("BM_", 0) != 0)
        return {};
    const std::string name = line.substr(0, line.find(' '));
    if (ends_with(name, "_mean") || ends_with(name, "_stddev") || ends_with(name, "_cv"))
        return {};
    return ends_with(name, "_median") ? name.substr(0, name.size() - 7) : name;
}

std::string today() {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%d", &tm);
    return text;
}

std::string host_name() {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    std::string out = name;
    for (char& c : out)
        if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '-' && c != '.')
            c = '_';
    return out.empty() ? "host" : out;
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("model name", 0) == 0)
            return line.substr(line.find(':') + 2);
    return "unknown CPU";
}

bool have_python() {
    int status = 0;
    try {
        capture({"python3", "-c", "pass"}, &status);
    } catch (const std::exception&) {
        return false;
    }
    return status == 0;
}

// The MPI job that runs bench_mpi or mpi_pool.py: 3 ranks (rank 0 drives, 2 worker ranks, as
// process_pool(2) has 2 workers) on this machine, which may have fewer cores; as root, mpirun
// also needs the two OMPI_ALLOW_RUN_AS_ROOT variables (set by run_all). Other binaries run as
// they are.
std::vector<std::string> mpi_job(const std::string& name, std::vector<std::string> command) {
    const std::string mpiexec = TRIAD_REPORT_MPIEXEC;
    if (name != "mpi" || mpiexec.empty())
        return command;
    std::vector<std::string> argv = {mpiexec, "--oversubscribe", "--bind-to", "none", "-np", "3"};
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
}

// A Python that imports mpi4py.futures, or "" if none: python3 first, then Debian's own, where
// python3-mpi4py installs it (python3 may be another, such as a pyenv one, ahead in PATH).
std::string mpi4py_python() {
    if (std::string(TRIAD_REPORT_MPIEXEC).empty())
        return {};
    for (const char* python : {"python3", "/usr/bin/python3"}) {
        int status = 0;
        try {
            capture({python, "-c",
                     "import importlib.util, sys; "
                     "sys.exit(importlib.util.find_spec('mpi4py') is None)"},
                    &status);
        } catch (const std::exception&) {
            continue;
        }
        if (status == 0)
            return python;
    }
    return {};
}

// How busy the machine was around one binary or Python script: the load averages just before it,
// and the share of all CPUs' time that went to other processes while it ran (busy time in
// /proc/stat minus the CPU time of our own children, which includes the benchmark's workers).
struct machine_load {
    std::string what; // "bench_cpu_bound", "python io_http.py"
    std::vector<std::string> workloads;
    double load1 = 0;
    double load5 = 0;
    double others_share = -1; // -1: not measured
};

// Other processes using more than this share of all CPUs while a binary ran make its tables
// suspect: on 2 CPUs, half a CPU taken from whatever the benchmark runs in parallel.
constexpr double busy_share = 0.25;

struct cpu_clock {
    double busy = 0;     // seconds of all CPUs, from /proc/stat
    double total = 0;    // busy and idle
    double children = 0; // CPU seconds of our waited-for children
    double load1 = 0;
    double load5 = 0;

    static cpu_clock now() {
        cpu_clock c;
        std::ifstream stat("/proc/stat");
        std::string cpu;
        double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
               steal = 0;
        if (stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) {
            const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
            // Steal is time the hypervisor gave to other machines: as busy as any process.
            c.busy = (user + nice + system + irq + softirq + steal) / hz;
            c.total = c.busy + (idle + iowait) / hz;
        }
        rusage usage{};
        if (::getrusage(RUSAGE_CHILDREN, &usage) == 0)
            c.children = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
        std::ifstream loadavg("/proc/loadavg");
        loadavg >> c.load1 >> c.load5;
        return c;
    }
};

// The load record of a run that started at `before` and has just ended.
machine_load measure_load(const std::string& what, const cpu_clock& before) {
    const cpu_clock after = cpu_clock::now();
    machine_load l;
    l.what = what;
    l.load1 = before.load1;
    l.load5 = before.load5;
    const double total = after.total - before.total;
    if (total > 0)
        l.others_share = std::clamp(
            (after.busy - before.busy - (after.children - before.children)) / total, 0.0, 1.0);
    return l;
}

struct run_meta {
    std::string date;
    std::string host;
    std::string mode;
    double seconds = 0;
    std::string python;
    std::string cpu = cpu_model();
    std::string compiler = TRIAD_REPORT_COMPILER;
    std::vector<std::string> failures;
    int repetitions = 0; // per configuration; 0 in reports from before they were recorded
    std::vector<machine_load> load;
};

// Runs everything and fills DIR/raw, and meta with what the preamble reports.
void run_all(const options& o, const fs::path& dir, const fs::path& bin_dir, run_meta& meta) {
    const fs::path raw = dir / "raw";
    fs::create_directories(raw);
    if (o.quick)
        ::setenv("TRIAD_BENCH_QUICK", "1", 1);
    else
        ::unsetenv("TRIAD_BENCH_QUICK");
    const std::vector<std::string>& binaries = o.only.empty() ? all_binaries : o.only;
    if (std::string(TRIAD_REPORT_MPIEXEC).empty())
        std::fprintf(stderr, "bench_report: skipping bench_mpi and python mpi_pool.py: CMake found "
                             "no MPI (Debian: apt-get install libopenmpi-dev openmpi-bin)\n");
    else if (::geteuid() == 0) { // mpirun refuses root without both
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    }
    meta.mode = o.quick ? "quick" : "full";
    // 5 against 5 is the smallest design in which the Mann-Whitney test can reach p < 0.05 with
    // room to spare (0.008); --quick's 3 cannot (0.1), and its report says so.
    meta.repetitions = o.quick ? 3 : 5;

    std::size_t total = 0;
    for (const std::string& name : binaries) {
        const std::string exe = (bin_dir / ("bench_" + name)).string();
        write_file(raw / (name + ".registry.jsonl"), capture({exe, "--triad_registry"}));
        const std::string list = capture({exe, "--benchmark_list_tests"});
        total += static_cast<std::size_t>(std::count(list.begin(), list.end(), '\n'));
    }
    const bool python = o.python && have_python();
    std::string mpi_python;
    std::vector<std::string> scripts = {"thread_pool",  "process_pool", "async", "cpu_bound",
                                        "io_simulated", "io_http",      "hybrid"};
    // mpi4py's peer runs with bench_mpi, in an MPI job of its own.
    if (python && std::find(binaries.begin(), binaries.end(), "mpi") != binaries.end()) {
        if (!(mpi_python = mpi4py_python()).empty())
            scripts.push_back("mpi_pool");
        else
            std::fprintf(stderr, "bench_report: skipping python mpi_pool.py: python3 cannot import "
                                 "mpi4py.futures (Debian: apt-get install python3-mpi4py)\n");
    }
    // With --only, the Python peers of the chosen benchmarks only.
    if (!o.only.empty())
        std::erase_if(scripts, [&](const std::string& script) {
            return std::find(binaries.begin(), binaries.end(), script) == binaries.end() &&
                   script != "mpi_pool";
        });
    if (python)
        total += scripts.size();

    progress bar(total);
    for (const std::string& name : binaries) {
        const std::string exe = (bin_dir / ("bench_" + name)).string();
        std::vector<std::string> argv = mpi_job(name, {exe});
        for (std::string arg :
             {"--benchmark_out=" + (raw / (name + ".json")).string(),
              std::string("--benchmark_out_format=json"), std::string("--benchmark_color=false")})
            argv.push_back(std::move(arg));
        // Every repetition stays in the JSON (the report's statistics need them); the console
        // shows the aggregates only.
        argv.push_back("--benchmark_repetitions=" + std::to_string(meta.repetitions));
        argv.push_back("--benchmark_enable_random_interleaving=true");
        argv.push_back("--benchmark_display_aggregates_only=true");
        if (o.quick)
            argv.push_back("--benchmark_min_time=0.02"); // 3 repetitions in the time of 1 at 0.05
        std::ofstream console(raw / (name + ".console.txt"));
        bar.update("bench_" + name, "");
        const cpu_clock before = cpu_clock::now();
        const int status = run(argv, [&](const std::string& line) {
            console << line << "\n";
            if (const std::string done = finished_benchmark(line); !done.empty()) {
                bar.finished_one();
                bar.update("bench_" + name, done);
            }
        });
        if (status != 0)
            meta.failures.push_back("bench_" + name + " exited with status " +
                                    std::to_string(status));
        machine_load load = measure_load("bench_" + name, before);
        for (const auto& [workload, info] :
             triad_report::parse_registry(read_file(raw / (name + ".registry.jsonl"))).workloads)
            load.workloads.push_back(workload);
        meta.load.push_back(std::move(load));
    }
    // One traced run per workload and executor, for the report's timelines.
    if (std::find(binaries.begin(), binaries.end(), "timeline") != binaries.end()) {
        bar.update("bench_timeline --triad_timelines", "");
        int status = 0;
        const std::string out = capture({(bin_dir / "bench_timeline").string(),
                                         "--triad_timelines=" + (raw / "traces").string()},
                                        &status);
        write_file(raw / "timeline.console.txt", out);
        if (status != 0)
            meta.failures.push_back("bench_timeline --triad_timelines exited with status " +
                                    std::to_string(status));
    }

    if (python) {
        meta.python = capture({"python3", "--version"});
        while (!meta.python.empty() && meta.python.back() == '\n')
            meta.python.pop_back();
        std::string rows;
        for (const std::string& script : scripts) {
            const std::string path =
                (fs::path(TRIAD_REPORT_PYTHON_DIR) / (script + ".py")).string();
            std::vector<std::string> argv =
                script == "mpi_pool" ? mpi_job("mpi", {mpi_python, "-m", "mpi4py.futures", path})
                                     : std::vector<std::string>{"python3", path};
            argv.push_back("--repetitions=" + std::to_string(meta.repetitions));
            if (o.quick)
                argv.push_back("--quick");
            bar.update("python " + script + ".py", "");
            std::unique_ptr<child> server;
            if (script == "io_http") { // the C++ server, so Python downloads what C++ downloads
                server = std::make_unique<child>(
                    std::vector<std::string>{(bin_dir / "bench_io_http").string(), "--triad_serve"},
                    true);
                std::string port;
                if (!server->read_line(port) || port.empty())
                    throw std::runtime_error("bench_io_http --triad_serve printed no port");
                argv.push_back("--port=" + port);
            }
            int status = 0;
            const cpu_clock before = cpu_clock::now();
            const std::string script_rows = capture(argv, &status);
            rows += script_rows;
            if (server) {
                server->close_stdin();
                server->wait();
            }
            machine_load load = measure_load("python " + script + ".py", before);
            try {
                std::set<std::string> seen;
                for (const auto& m : triad_report::parse_python_rows(script_rows))
                    if (seen.insert(m.workload).second)
                        load.workloads.push_back(m.workload);
            } catch (const std::exception&) { // the report says so when it reads the rows
            }
            meta.load.push_back(std::move(load));
            if (status != 0)
                meta.failures.push_back(script + ".py exited with status " +
                                        std::to_string(status));
            bar.finished_one();
        }
        write_file(raw / "python.jsonl", rows);
    }
    bar.update("done", "");
    bar.end();
    meta.seconds = bar.elapsed_seconds();
}

std::string format_load(double v) {
    char text[16];
    std::snprintf(text, sizeof text, "%.2f", v);
    return text;
}

// Per workload, why its numbers may be disturbed, by the rule in busy_warnings' comment.
struct busy_report {
    std::map<std::string, std::string> workloads;
    std::vector<std::string> runs; // one line per busy run, for the top of the report
};

// A run is busy when other processes took more than busy_share of all CPUs' time while it ran.
// The load average alone cannot tell: the benchmark before it raised it too. Runs recorded
// before that share was measured fall back on the load average Google Benchmark recorded at the
// binary's start: above the CPU count, more was runnable than the previous binary could account
// for.
busy_report busy_warnings(
    const run_meta& meta, int cpus,
    const std::map<std::string, std::pair<double, std::vector<std::string>>>& start_load) {
    busy_report out;
    std::set<std::string> recorded;
    for (const machine_load& l : meta.load) {
        recorded.insert(l.what);
        if (l.others_share <= busy_share)
            continue;
        const std::string why =
            "other processes used " + std::to_string(static_cast<int>(l.others_share * 100 + 0.5)) +
            "% of all CPUs' time while " + l.what + " ran (1-minute load average " +
            format_load(l.load1) + " before it" +
            (cpus > 0 ? ", on " + std::to_string(cpus) + " CPUs" : "") + ").";
        out.runs.push_back(why);
        for (const std::string& w : l.workloads)
            out.workloads[w] = why;
    }
    for (const auto& [what, load] : start_load) {
        if (recorded.contains(what) || cpus <= 0 || load.first <= cpus)
            continue;
        const std::string why = "the 1-minute load average was " + format_load(load.first) +
                                " on " + std::to_string(cpus) + " CPUs when " + what +
                                " started (this run kept no record of the load while it ran).";
        out.runs.push_back(why);
        for (const std::string& w : load.second)
            out.workloads[w] = why;
    }
    return out;
}

std::string preamble(const run_meta& meta, int cpus, const std::string& start_load,
                     const busy_report& busy) {
    std::ostringstream out;
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.0f s", meta.seconds);
    out << "Run on " << meta.date << " on `" << meta.host << "` (" << meta.cpu << ", "
        << (cpus > 0 ? std::to_string(cpus) : std::string("?")) << " CPUs"
        << (start_load.empty() ? "" : ", load average " + start_load + " at the start") << "); "
        << meta.mode << " run" << (meta.mode == "quick" ? " with smaller sizes" : "") << " in "
        << seconds << "; C++ built by " << meta.compiler << " in release mode; "
        << (meta.python.empty() ? "Python peers not run (--no-python, or no python3)"
                                : meta.python + " for the Python peers")
        << ".\n\n";
    if (meta.repetitions > 0)
        out << "Every configuration ran " << meta.repetitions
            << " times, the repetitions of all configurations of a binary interleaved in random "
               "order (Google Benchmark's random interleaving), and every run started from a "
               "trimmed glibc heap (`malloc_trim(0)` before it, for every contender alike)"
            << (meta.python.empty()
                    ? std::string()
                    : "; each Python script ran its rows " + std::to_string(meta.repetitions) +
                          " times, shuffled each round (a Python repetition is "
                          "one run of the workload, a C++ one Google "
                          "Benchmark's mean over the iterations that fill it, "
                          "so Python's spread is wider; both rows show the "
                          "median of their repetitions)")
            << ". A row's CPU time counts every thread and worker process of the run; its "
               "peak RSS is the process's peak during that run plus its worker processes', and "
               "includes what earlier rows of the same binary left resident (triad's node "
               "cache, oneTBB's and glibc's caches): compare it within a table.";
    else
        out << (meta.mode == "quick"
                    ? "Every configuration ran once: one sample per row."
                    : "Every configuration ran 3 times but only the median was kept: one sample "
                      "per row.");
    out << "\n\nAbsolute times on a shared machine say little; read the ratios between rows of "
           "one table, which come from the same run. Raw Google Benchmark JSON is under `raw/`, "
           "with every repetition; `raw/meta.json` has the load average before each binary and "
           "script and the share of the CPUs other processes used while it ran.\n";
    if (!busy.runs.empty()) {
        out << "\n**Busy machine:** other processes took more than "
            << static_cast<int>(busy_share * 100)
            << "% of the CPUs during some runs; their tables say so and their verdicts deserve "
               "less trust:\n\n";
        for (const std::string& r : busy.runs)
            out << "- " << r << "\n";
    }
    if (!meta.failures.empty()) {
        out << "\n**Some runs failed; their rows are missing:**\n\n";
        for (const std::string& f : meta.failures)
            out << "- " << f << "\n";
    }
    return out.str();
}

void write_meta(const fs::path& raw, const run_meta& meta) {
    boost::json::object o;
    o["date"] = meta.date;
    o["host"] = meta.host;
    o["mode"] = meta.mode;
    o["seconds"] = meta.seconds;
    o["python"] = meta.python;
    o["cpu"] = meta.cpu;
    o["compiler"] = meta.compiler;
    o["repetitions"] = meta.repetitions;
    boost::json::array failures;
    for (const std::string& f : meta.failures)
        failures.emplace_back(f);
    o["failures"] = std::move(failures);
    boost::json::array load;
    for (const machine_load& l : meta.load) {
        boost::json::array workloads;
        for (const std::string& w : l.workloads)
            workloads.emplace_back(w);
        load.push_back(boost::json::object{{"what", l.what},
                                           {"workloads", std::move(workloads)},
                                           {"load1", l.load1},
                                           {"load5", l.load5},
                                           {"others_share", l.others_share}});
    }
    o["load"] = std::move(load);
    write_file(raw / "meta.json", boost::json::serialize(o) + "\n");
}

run_meta read_meta(const fs::path& raw) {
    run_meta meta;
    if (!fs::exists(raw / "meta.json"))
        return meta;
    const auto o = boost::json::parse(read_file(raw / "meta.json")).as_object();
    meta.date = triad_report::str(o.at("date"));
    meta.host = triad_report::str(o.at("host"));
    meta.mode = triad_report::str(o.at("mode"));
    meta.seconds = triad_report::num(o.at("seconds"));
    meta.python = triad_report::str(o.at("python"));
    if (o.contains("cpu"))
        meta.cpu = triad_report::str(o.at("cpu"));
    if (o.contains("compiler"))
        meta.compiler = triad_report::str(o.at("compiler"));
    if (o.contains("repetitions"))
        meta.repetitions = static_cast<int>(triad_report::num(o.at("repetitions")));
    for (const auto& f : o.at("failures").as_array())
        meta.failures.push_back(triad_report::str(f));
    if (const auto* load = o.if_contains("load"); load && load->is_array())
        for (const auto& entry : load->as_array()) {
            const auto& e = entry.as_object();
            machine_load l;
            l.what = triad_report::str(e.at("what"));
            for (const auto& w : e.at("workloads").as_array())
                l.workloads.push_back(triad_report::str(w));
            l.load1 = triad_report::num(e.at("load1"));
            l.load5 = triad_report::num(e.at("load5"));
            l.others_share = triad_report::num(e.at("others_share"));
            meta.load.push_back(std::move(l));
        }
    return meta;
}

// Google Benchmark writes its JSON as benchmarks finish and closes it at the end: a binary that
// died leaves it cut short. The benchmarks it finished are complete objects; keep them.
std::string close_cut_json(const std::string& json) {
    const auto last = json.rfind("\n    }");
    if (last == std::string::npos || json.find("\"benchmarks\"") == std::string::npos)
        return {};
    return json.substr(0, last + 6) + "\n  ]\n}\n";
}

struct results {
    std::map<std::string, triad_report::workload_info> workloads;
    std::vector<triad_report::measurement> all;
    int cpus = 0;
    std::string start_load; // the first binary's load averages, as Google Benchmark saw them
    // Per binary, the 1-minute load average at its start and its workloads.
    std::map<std::string, std::pair<double, std::vector<std::string>>> binary_load;
};

// Reads DIR/raw. A binary whose results cannot be read costs its own rows only, and meta's
// failures say so.
results load(const fs::path& dir, run_meta& meta) {
    const fs::path raw = dir / "raw";
    std::map<std::string, triad_report::workload_info> workloads;
    std::vector<triad_report::measurement> all;
    int cpus = 0;
    std::string start_load; // the first binary's load averages, as Google Benchmark saw them
    // Per binary, the 1-minute load average at its start and its workloads.
    std::map<std::string, std::pair<double, std::vector<std::string>>> binary_load;
    for (const std::string& name : all_binaries) {
        const fs::path registry_file = raw / (name + ".registry.jsonl");
        const fs::path results_file = raw / (name + ".json");
        if (!fs::exists(registry_file) || !fs::exists(results_file))
            continue;
        try {
            const auto reg = triad_report::parse_registry(read_file(registry_file));
            std::string json = read_file(results_file);
            if (json.find_first_not_of(" \n\t") == std::string::npos)
                continue; // the binary died before writing anything; its status says so
            std::vector<triad_report::measurement> rows;
            try {
                rows = triad_report::parse_results(json, reg);
            } catch (const std::runtime_error&) {
                json = close_cut_json(json);
                if (json.empty())
                    throw;
                rows = triad_report::parse_results(json, reg);
                meta.failures.push_back("raw/" + name +
                                        ".json was cut short (the binary died?); kept what was "
                                        "written before the cut: " +
                                        std::to_string(rows.size()) + " configuration(s)");
            }
            std::vector<std::string> names;
            for (const auto& [w, info] : reg.workloads) {
                workloads[w] = info;
                names.push_back(w);
            }
            const boost::json::value parsed =
                boost::json::parse(triad_report::without_non_numbers(json));
            if (const auto* c = parsed.as_object().if_contains("context"); c && c->is_object()) {
                const auto& fields = c->as_object();
                if (const auto* n = fields.if_contains("num_cpus"); n && cpus == 0)
                    cpus = static_cast<int>(triad_report::num(*n));
                if (const auto* l = fields.if_contains("load_avg");
                    l && l->is_array() && !l->as_array().empty()) {
                    binary_load["bench_" + name] = {triad_report::num(l->as_array()[0]), names};
                    if (start_load.empty())
                        for (const auto& v : l->as_array())
                            start_load +=
                                (start_load.empty() ? "" : " ") + format_load(triad_report::num(v));
                }
            }
            for (auto& m : rows)
                if (reg.workloads.contains(m.workload)) // undescribed: the binary's own checks
                    all.push_back(std::move(m));
        } catch (const std::exception& e) {
            meta.failures.push_back("bench_" + name + "'s results were left out: " + e.what());
        }
    }
    if (fs::exists(raw / "python.jsonl")) {
        try {
            for (auto& m : triad_report::parse_python_rows(read_file(raw / "python.jsonl")))
                if (workloads.contains(m.workload))
                    all.push_back(std::move(m));
        } catch (const std::exception& e) {
            meta.failures.push_back(std::string("the Python rows were left out: ") + e.what());
        }
    }
    if (all.empty())
        throw std::runtime_error("no benchmark results under " + raw.string());
    return {std::move(workloads), std::move(all), cpus, std::move(start_load),
            std::move(binary_load)};
}

// Reads DIR/raw and writes REPORT.md and the charts (with a timeline per trace in raw/traces).
void render(const fs::path& dir, run_meta meta) {
    const results r = load(dir, meta);
    fs::remove_all(dir / "charts");
    const busy_report busy = busy_warnings(meta, r.cpus, r.binary_load);
    triad_report::report_context context;
    context.cpus = r.cpus;
    context.busy = busy.workloads;
    context.traces = triad_report::read_traces(dir / "raw" / "traces");
    for (const auto& [path, text] : triad_report::render_report(
             r.workloads, r.all, preamble(meta, r.cpus, r.start_load, busy), context))
        write_file(dir / path, text);
}

// The newest full report under `results_dir`: report directories are named <date>-<host>, so
// the newest sorts last; quick runs (-quick) and directories without raw/ do not count.
fs::path latest_full_report(const fs::path& results_dir) {
    fs::path latest;
    if (fs::is_directory(results_dir))
        for (const auto& entry : fs::directory_iterator(results_dir)) {
            const std::string name = entry.path().filename().string();
            if (entry.is_directory() && !ends_with(name, "-quick") &&
                name.find("-only-") == std::string::npos &&
                fs::is_directory(entry.path() / "raw") &&
                (latest.empty() || name > latest.filename().string()))
                latest = entry.path();
        }
    if (latest.empty())
        throw std::runtime_error("no full report (a directory with raw/) under " +
                                 results_dir.string());
    return latest;
}

// The newest report, full or partial (not quick), that measured the MPI pool: its section of the
// README may come from a run of bench_mpi alone (bench/run --only mpi).
fs::path latest_mpi_report(const fs::path& results_dir) {
    fs::path latest;
    if (fs::is_directory(results_dir))
        for (const auto& entry : fs::directory_iterator(results_dir)) {
            const std::string name = entry.path().filename().string();
            if (entry.is_directory() && name.find("-quick") == std::string::npos &&
                fs::exists(entry.path() / "raw" / "mpi.json") &&
                (latest.empty() || name.substr(0, 10) > latest.filename().string().substr(0, 10) ||
                 (name.substr(0, 10) == latest.filename().string().substr(0, 10) &&
                  name.find("-only-") == std::string::npos)))
                latest = entry.path();
        }
    return latest;
}

// --update-readme and --check-readme: the README's generated sections against the report.
int readme(const options& o) {
    const fs::path readme_path = o.update_readme.empty() ? o.check_readme : o.update_readme;
    const fs::path dir = o.report.empty() ? latest_full_report(TRIAD_REPORT_RESULTS_DIR) : o.report;
    run_meta meta = read_meta(dir / "raw");
    const results r = load(dir, meta);
    triad_report::report_source source;
    source.link = fs::relative(fs::absolute(dir) / "REPORT.md",
                               readme_path == "-" ? fs::current_path()
                                                  : fs::absolute(readme_path).parent_path())
                      .generic_string();
    source.date = meta.date;
    source.host = meta.host;
    source.cpu = meta.cpu;
    source.cpus = static_cast<unsigned>(std::max(r.cpus, 0));
    source.python = meta.python;
    triad_report::report_context context;
    context.cpus = r.cpus;
    context.busy = busy_warnings(meta, r.cpus, r.binary_load).workloads;
    auto sections = triad_report::readme_sections(r.workloads, r.all, source, context);
    // The MPI section: from this report if it measured the MPI pool, else from the newest that
    // did (a partial run of bench_mpi), which it names.
    if (o.report.empty() && !fs::exists(dir / "raw" / "mpi.json")) {
        const fs::path mpi_dir = latest_mpi_report(TRIAD_REPORT_RESULTS_DIR);
        if (!mpi_dir.empty()) {
            run_meta mpi_meta = read_meta(mpi_dir / "raw");
            const results mpi = load(mpi_dir, mpi_meta);
            const std::string link =
                fs::relative(fs::absolute(mpi_dir) / "REPORT.md",
                             readme_path == "-" ? fs::current_path()
                                                : fs::absolute(readme_path).parent_path())
                    .generic_string();
            sections["mpi"] = "From [" + link + "](" + link + "), a run of `bench_mpi` (" +
                              mpi_meta.mode + ", " + std::to_string(mpi_meta.repetitions) +
                              " repetitions) on " + mpi_meta.date + " on `" + mpi_meta.host +
                              "`:\n\n" + triad_report::readme_mpi(mpi.all);
        }
    }
    std::string text;
    if (readme_path == "-") { // the README on stdin, its links relative to this directory
        if (!o.update_readme.empty())
            usage_error("--update-readme needs a file, not -");
        std::ostringstream in;
        in << std::cin.rdbuf();
        text = in.str();
    } else {
        text = read_file(readme_path);
    }
    if (!o.update_readme.empty()) {
        const std::string updated = triad_report::update_readme(text, sections);
        if (updated != text)
            write_file(fs::absolute(readme_path), updated);
        std::printf("%s: %zu sections %s from %s\n", readme_path.c_str(), sections.size(),
                    updated != text ? "regenerated" : "already match the report",
                    (dir / "REPORT.md").c_str());
        return 0;
    }
    const auto differences = triad_report::readme_differences(text, sections);
    for (const std::string& d : differences)
        std::fprintf(stderr, "%s: %s\n", readme_path.c_str(), d.c_str());
    if (!differences.empty())
        std::fprintf(stderr,
                     "%s disagrees with %s; run bench_report --update-readme %s [--report DIR]\n",
                     readme_path.c_str(), (dir / "REPORT.md").c_str(),
                     readme_path == "-" ? "README.md" : readme_path.c_str());
    return differences.empty() ? 0 : 1;
}

fs::path self_directory() {
    return fs::read_symlink("/proc/self/exe").parent_path();
}

} // namespace

int main(int argc, char** argv) {
    try {
        const options o = parse_options(argc, argv);
        if (!o.update_readme.empty() || !o.check_readme.empty())
            return readme(o);
        if (!o.from.empty()) {
            render(o.from, read_meta(o.from / "raw"));
            std::printf("%s\n", (o.from / "REPORT.md").c_str());
            return 0;
        }
#if TRIAD_REPORT_SMOKE_ONLY
        // A report measured from -O1 binaries would look like any other and mislead.
        std::fprintf(stderr, "bench_report: the benchmarks next to this binary were built at -O1, "
                             "only to smoke-run them (TRIAD_BENCH_SMOKE_ONLY, the release "
                             "preset); measure with bench/run, which builds the bench preset\n");
        return 2;
#endif
        run_meta meta;
        meta.date = today();
        meta.host = host_name();
        // A run of some benchmarks only is a partial report, <date>-<host>-only-<names>: the
        // README's sections read the latest full one, and only the MPI section a partial one.
        std::string suffix = o.quick ? "-quick" : "";
        if (!o.only.empty()) {
            suffix += "-only";
            for (const std::string& name : o.only)
                suffix += "-" + name;
        }
        const fs::path dir = !o.out.empty() ? o.out
                                            : fs::path(TRIAD_REPORT_RESULTS_DIR) /
                                                  (meta.date + "-" + meta.host + suffix);
        fs::remove_all(dir / "raw");
        run_all(o, dir, self_directory(), meta);
        write_meta(dir / "raw", meta);
        render(dir, meta);
        std::printf("%s\n", (dir / "REPORT.md").c_str());
        return meta.failures.empty() ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_report: %s\n", e.what());
        return 1;
    }
}
