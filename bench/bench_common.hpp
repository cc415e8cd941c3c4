#pragma once

// Shared by every benchmark binary: benchmarks are registered with the executor they measure and
// the workload they run, and after the run a table sets each executor beside its peers from the
// same run, as ratios (absolute times on a shared 2-core VM mean little; ratios do).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

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

// Registers BM_<executor>_<workload>. The benchmark must set state.counters["items"] to the
// number of tasks or items one iteration processes, so the table can show time per item.
template <class Fn>
benchmark::internal::Benchmark* add(const std::string& executor, const std::string& workload,
                                    Fn&& fn) {
    const std::string name = "BM_" + executor + "_" + workload;
    registry()[name] = benchmark_entry{workload, executor};
    return benchmark::RegisterBenchmark(name.c_str(), std::forward<Fn>(fn));
}

inline void set_items(benchmark::State& state, double items) {
    state.counters["items"] = benchmark::Counter(items);
    state.SetItemsProcessed(static_cast<int64_t>(items) * state.iterations());
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
