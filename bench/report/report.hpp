#pragma once

// The benchmark report: reads Google Benchmark's JSON (plus the benchmarks' own registry of
// executors and workloads, and the Python peers' rows), derives per-workload tables with the
// winner, and draws SVG charts with no plotting package. Header-only; one translation unit of
// the program must include <boost/json/src.hpp>.

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace triad_report {

struct workload_info {
    std::string title;
    std::string kind; // cpu, io, mixed, overhead
    std::string item;
    std::string axis; // the argument the scaling chart follows, or empty
};

struct registry {
    std::map<std::string, std::pair<std::string, std::string>> families; // -> executor, workload
    std::map<std::string, workload_info> workloads;
};

// One measured configuration: an executor on a workload, with its arguments.
struct measurement {
    std::string workload;
    std::string executor;
    std::string config;                 // "workers:2", "" when it has none
    std::map<std::string, double> args; // parsed from config
    double ns_per_item = 0;
    double ns_low = 0;  // the spread of ns_per_item (a 95% interval of the median); 0 when
    double ns_high = 0; // there is none (a single run)
    std::map<std::string, double> counters; // user counters other than items
};

inline std::string str(const boost::json::value& v) {
    return v.is_string() ? std::string(v.as_string()) : std::string();
}

inline double num(const boost::json::value& v) {
    if (v.is_double())
        return v.as_double();
    if (v.is_int64())
        return static_cast<double>(v.as_int64());
    if (v.is_uint64())
        return static_cast<double>(v.as_uint64());
    return 0;
}

[[noreturn]] inline void bad_input(const std::string& where, const std::string& what) {
    throw std::runtime_error(where + ": " + what);
}

inline boost::json::value parse_json(std::string_view text, const std::string& where) {
    boost::system::error_code error;
    boost::json::value v = boost::json::parse(text, error);
    if (error)
        bad_input(where, "not valid JSON (" + error.message() + ")");
    return v;
}

inline const boost::json::object& as_object(const boost::json::value& v, const std::string& where) {
    if (!v.is_object())
        bad_input(where, "expected a JSON object");
    return v.as_object();
}

// A field that must be there with the given type.
inline std::string text_field(const boost::json::object& o, const char* key,
                              const std::string& where) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || !v->is_string())
        bad_input(where, std::string("missing string field '") + key + "'");
    return std::string(v->as_string());
}

inline double number_field(const boost::json::object& o, const char* key,
                           const std::string& where) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || !v->is_number())
        bad_input(where, std::string("missing number field '") + key + "'");
    return num(*v);
}

// `--triad_registry` output: one JSON object per line.
inline registry parse_registry(std::string_view lines) {
    registry r;
    std::istringstream in{std::string(lines)};
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
        if (line.empty() || line[0] != '{')
            continue;
        const std::string where = "registry line " + std::to_string(number);
        const boost::json::value v = parse_json(line, where);
        const boost::json::object& o = as_object(v, where);
        if (o.contains("family")) {
            const std::string family = text_field(o, "family", where);
            r.families[family] = {text_field(o, "executor", where),
                                  text_field(o, "workload", where)};
        } else {
            const std::string workload = text_field(o, "workload", where);
            r.workloads[workload] = {text_field(o, "title", where), text_field(o, "kind", where),
                                     text_field(o, "item", where), text_field(o, "axis", where)};
        }
    }
    return r;
}

inline double to_ns(double value, const std::string& unit) {
    if (unit == "us")
        return value * 1e3;
    if (unit == "ms")
        return value * 1e6;
    if (unit == "s")
        return value * 1e9;
    return value;
}

// Run names and configurations are '/'-separated parts: "workers:2/real_time".
inline std::vector<std::string> split_parts(const std::string& text) {
    std::vector<std::string> parts;
    std::istringstream in(text);
    for (std::string part; std::getline(in, part, '/');)
        parts.push_back(part);
    return parts;
}

// The parts `keep` accepts, joined with '/' again.
template <class Keep>
std::string join_parts(const std::vector<std::string>& parts, Keep keep) {
    std::string out;
    for (const std::string& part : parts)
        if (keep(part))
            out += (out.empty() ? "" : "/") + part;
    return out;
}

inline std::map<std::string, double> parse_args(const std::string& config) {
    std::map<std::string, double> args;
    for (const std::string& part : split_parts(config)) {
        const auto colon = part.find(':');
        if (colon == std::string::npos)
            continue;
        const std::string value = part.substr(colon + 1);
        char* end = nullptr;
        const double number = std::strtod(value.c_str(), &end);
        if (!value.empty() && end == value.c_str() + value.size()) // only numeric arguments
            args[part.substr(0, colon)] = number;
    }
    return args;
}

// "BM_x/workers:2/iterations:3/real_time" -> family "BM_x", config "workers:2".
inline std::pair<std::string, std::string> split_run_name(const std::string& run_name) {
    const auto slash = run_name.find('/');
    if (slash == std::string::npos)
        return {run_name, ""};
    // Google Benchmark's own settings are not the benchmark's configuration.
    const auto is_argument = [](const std::string& part) {
        return part != "real_time" && part.rfind("iterations:", 0) != 0 &&
               part.rfind("repeats:", 0) != 0 && part.rfind("min_time:", 0) != 0;
    };
    return {run_name.substr(0, slash),
            join_parts(split_parts(run_name.substr(slash + 1)), is_argument)};
}

// Google Benchmark JSON: medians when there are repetitions, the mean of the iteration runs
// otherwise. Runs that reported an error, and families not in the registry, are skipped.
inline std::vector<measurement> parse_results(std::string_view json, const registry& reg) {
    const boost::json::value parsed = parse_json(json, "benchmark results");
    const boost::json::object& root = as_object(parsed, "benchmark results");
    const auto* benchmarks = root.if_contains("benchmarks");
    if (benchmarks == nullptr || !benchmarks->is_array())
        bad_input("benchmark results", "no 'benchmarks' array (is this Google Benchmark JSON?)");
    struct accumulated {
        double ns_sum = 0;
        int runs = 0;
        bool median = false;
        std::map<std::string, double> counters;
    };
    std::map<std::string, accumulated> by_run;
    std::vector<std::string> order;
    for (const auto& entry : benchmarks->as_array()) {
        const boost::json::object& b = as_object(entry, "benchmark results");
        if (b.contains("error_occurred") && b.at("error_occurred").as_bool())
            continue;
        const std::string run_name = b.contains("run_name")
                                         ? str(b.at("run_name"))
                                         : text_field(b, "name", "benchmark results");
        const std::string run_type = b.contains("run_type") ? str(b.at("run_type")) : "iteration";
        const std::string aggregate =
            b.contains("aggregate_name") ? str(b.at("aggregate_name")) : "";
        if (run_type == "aggregate" && aggregate != "median")
            continue;
        const double items = b.contains("items") ? num(b.at("items")) : 1.0;
        const std::string where = "benchmark " + run_name;
        const double ns =
            to_ns(number_field(b, "real_time", where), text_field(b, "time_unit", where)) /
            (items > 0 ? items : 1);
        accumulated& a = by_run[run_name];
        if (a.runs == 0 && !a.median)
            order.push_back(run_name);
        std::map<std::string, double> counters;
        static const std::set<std::string> standard{"name",
                                                    "run_name",
                                                    "run_type",
                                                    "family_index",
                                                    "per_family_instance_index",
                                                    "repetitions",
                                                    "repetition_index",
                                                    "threads",
                                                    "iterations",
                                                    "real_time",
                                                    "cpu_time",
                                                    "time_unit",
                                                    "items",
                                                    "items_per_second",
                                                    "bytes_per_second",
                                                    "aggregate_name",
                                                    "aggregate_unit",
                                                    "label",
                                                    "error_occurred",
                                                    "error_message"};
        for (const auto& [key, value] : b)
            if (!standard.contains(std::string(key)) && (value.is_number()))
                counters[std::string(key)] = num(value);
        if (run_type == "aggregate") { // a median replaces the individual runs
            a.ns_sum = ns;
            a.runs = 1;
            a.median = true;
            a.counters = counters;
        } else if (!a.median) {
            a.ns_sum += ns;
            ++a.runs;
            a.counters = counters;
        }
    }
    std::vector<measurement> out;
    for (const std::string& run_name : order) {
        const auto [family, config] = split_run_name(run_name);
        const auto found = reg.families.find(family);
        if (found == reg.families.end())
            continue;
        const accumulated& a = by_run[run_name];
        measurement m;
        m.executor = found->second.first;
        m.workload = found->second.second;
        m.config = config;
        m.args = parse_args(config);
        m.ns_per_item = a.ns_sum / a.runs;
        m.counters = a.counters;
        out.push_back(std::move(m));
    }
    return out;
}

// The Python peers' rows: {"workload", "executor", "ns_per_item", "config"?}, one per line.
inline std::vector<measurement> parse_python_rows(std::string_view lines) {
    std::vector<measurement> out;
    std::istringstream in{std::string(lines)};
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
        if (line.empty() || line[0] != '{')
            continue;
        const std::string where = "Python row " + std::to_string(number);
        const boost::json::value v = parse_json(line, where);
        const boost::json::object& o = as_object(v, where);
        measurement m;
        m.workload = text_field(o, "workload", where);
        m.executor = text_field(o, "executor", where);
        m.ns_per_item = number_field(o, "ns_per_item", where);
        if (o.contains("config"))
            m.config = str(o.at("config"));
        if (o.contains("counters"))
            for (const auto& [key, value] : o.at("counters").as_object())
                m.counters[std::string(key)] = num(value);
        m.args = parse_args(m.config);
        out.push_back(std::move(m));
    }
    return out;
}

inline bool is_python(const std::string& executor) {
    return executor.rfind("python", 0) == 0;
}

struct row {
    std::string executor;
    std::string config; // the best configuration of this executor
    double ns_per_item = 0;
    std::optional<double> speedup;    // over sequential (the same language's sequential)
    double ns_low = ns_per_item;      // the spread shown as error bars: a 95% interval of the
    double ns_high = ns_per_item;     // median; equal to ns_per_item when there is none
    std::vector<double> samples = {}; // ns per item of each repetition
};

struct table {
    std::string workload;
    workload_info info;
    std::vector<row> rows; // fastest first
    std::string winner;    // the fastest C++ executor
    std::string runner_up; // the second fastest C++ executor, if any
    double margin = 1;     // runner-up time / winner time (C++ rows)
    std::optional<double> winner_speedup;
    std::string best_python;  // the fastest Python executor, if Python ran
    double python_behind = 0; // its time / the winner's time
};

// Arguments every C++ configuration of a workload shares (the workload's shape, such as
// "requests:20") say nothing about the row; only those that vary (workers, concurrency) are shown.
inline std::string varying_config(const std::string& config, const std::set<std::string>& shared) {
    return join_parts(split_parts(config),
                      [&](const std::string& part) { return !shared.contains(part); });
}

// The configuration parts ("requests:20") every C++ measurement of a workload has.
inline std::set<std::string> shared_config_parts(const std::string& workload,
                                                 const std::vector<measurement>& all) {
    std::optional<std::set<std::string>> shared;
    for (const measurement& m : all) {
        if (m.workload != workload || is_python(m.executor))
            continue;
        const std::vector<std::string> list = split_parts(m.config);
        std::set<std::string> parts(list.begin(), list.end());
        if (!shared) {
            shared = parts;
        } else {
            std::set<std::string> both;
            std::set_intersection(shared->begin(), shared->end(), parts.begin(), parts.end(),
                                  std::inserter(both, both.begin()));
            shared = std::move(both);
        }
    }
    return shared.value_or(std::set<std::string>{});
}

// One row per executor, at its best configuration; speedups against the sequential row of the
// same language; the winner among the C++ executors.
inline table make_table(const std::string& workload, const workload_info& info,
                        const std::vector<measurement>& all) {
    table t;
    t.workload = workload;
    t.info = info;
    const std::set<std::string> shared = shared_config_parts(workload, all);
    std::map<std::string, row> best;
    for (const measurement& m : all) {
        if (m.workload != workload)
            continue;
        auto it = best.find(m.executor);
        if (it == best.end() || m.ns_per_item < it->second.ns_per_item)
            best[m.executor] = row{m.executor,
                                   varying_config(m.config, shared),
                                   m.ns_per_item,
                                   std::nullopt,
                                   m.ns_low > 0 ? m.ns_low : m.ns_per_item,
                                   m.ns_high > 0 ? m.ns_high : m.ns_per_item,
                                   {}};
    }
    std::optional<double> cpp_sequential;
    std::optional<double> python_sequential;
    if (auto s = best.find("sequential"); s != best.end())
        cpp_sequential = s->second.ns_per_item;
    if (auto s = best.find("python_sequential"); s != best.end())
        python_sequential = s->second.ns_per_item;
    for (auto& [executor, r] : best) {
        const auto& base = is_python(executor) ? python_sequential : cpp_sequential;
        if (base)
            r.speedup = *base / r.ns_per_item;
        t.rows.push_back(r);
    }
    std::sort(t.rows.begin(), t.rows.end(), [](const row& a, const row& b) {
        return a.ns_per_item < b.ns_per_item ||
               (a.ns_per_item == b.ns_per_item && a.executor < b.executor);
    });
    const row* first = nullptr;
    const row* second = nullptr;
    const row* python = nullptr;
    for (const row& r : t.rows) {
        if (is_python(r.executor)) {
            if (python == nullptr)
                python = &r;
            continue;
        }
        if (first == nullptr)
            first = &r;
        else if (second == nullptr)
            second = &r;
    }
    if (first != nullptr) {
        t.winner = first->executor;
        t.winner_speedup = first->speedup;
        if (second != nullptr) {
            t.runner_up = second->executor;
            t.margin = second->ns_per_item / first->ns_per_item;
        }
        if (python != nullptr) {
            t.best_python = python->executor;
            t.python_behind = python->ns_per_item / first->ns_per_item;
        }
    }
    return t;
}

inline std::string format_time(double ns) {
    char text[32];
    if (ns >= 1e9)
        std::snprintf(text, sizeof text, "%.2f s", ns / 1e9);
    else if (ns >= 1e6)
        std::snprintf(text, sizeof text, "%.2f ms", ns / 1e6);
    else if (ns >= 1e3)
        std::snprintf(text, sizeof text, "%.2f µs", ns / 1e3);
    else
        std::snprintf(text, sizeof text, "%.1f ns", ns);
    return text;
}

inline std::string format_ratio(double r) {
    char text[32];
    std::snprintf(text, sizeof text, r >= 100 ? "%.0fx" : "%.2fx", r);
    return text;
}

inline std::string markdown_table(const table& t) {
    std::ostringstream out;
    out << "| executor | best configuration | time per " << t.info.item
        << " | speedup over sequential |\n|---|---|---:|---:|\n";
    for (const row& r : t.rows) {
        const bool win = r.executor == t.winner;
        out << "| " << (win ? "**" : "") << r.executor << (win ? "**" : "") << " | "
            << (r.config.empty() ? "-" : r.config) << " | " << format_time(r.ns_per_item) << " | "
            << (r.speedup ? format_ratio(*r.speedup) : "-") << " |\n";
    }
    return out.str();
}

inline std::string xml_escape(const std::string& text) {
    std::string out;
    for (char c : text) {
        switch (c) {
        case '&':
            out += "&amp;";
            break;
        case '<':
            out += "&lt;";
            break;
        case '>':
            out += "&gt;";
            break;
        case '"':
            out += "&quot;";
            break;
        default:
            out += c;
        }
    }
    return out;
}

} // namespace triad_report

#include "charts.hpp" // the SVG charts of the tables above

namespace triad_report {

inline std::string format_counter(double v) {
    char text[32];
    std::snprintf(text, sizeof text, v >= 100 ? "%.0f" : "%.3g", v);
    return text;
}

// "downloads_20" before "downloads_200": digits compare as numbers.
inline bool natural_less(const std::string& a, const std::string& b) {
    std::size_t i = 0;
    std::size_t j = 0;
    while (i < a.size() && j < b.size()) {
        const bool da = std::isdigit(static_cast<unsigned char>(a[i])) != 0;
        const bool db = std::isdigit(static_cast<unsigned char>(b[j])) != 0;
        if (da && db) {
            std::size_t ei = i;
            std::size_t ej = j;
            while (ei < a.size() && std::isdigit(static_cast<unsigned char>(a[ei])) != 0)
                ++ei;
            while (ej < b.size() && std::isdigit(static_cast<unsigned char>(b[ej])) != 0)
                ++ej;
            const std::string na = a.substr(i, ei - i);
            const std::string nb = b.substr(j, ej - j);
            if (na.size() != nb.size())
                return na.size() < nb.size();
            if (na != nb)
                return na < nb;
            i = ei;
            j = ej;
        } else {
            if (a[i] != b[j])
                return a[i] < b[j];
            ++i;
            ++j;
        }
    }
    return a.size() - i < b.size() - j;
}

// The order workloads appear in the report: CPU-bound, I/O-bound, mixed, overheads; names
// in natural order within a kind.
inline std::vector<std::string>
workload_order(const std::map<std::string, workload_info>& workloads) {
    const auto rank = [](const std::string& kind) {
        return kind == "cpu" ? 0 : kind == "io" ? 1 : kind == "mixed" ? 2 : 3;
    };
    std::vector<std::string> names;
    for (const auto& [name, info] : workloads)
        names.push_back(name);
    std::sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
        const int ra = rank(workloads.at(a).kind);
        const int rb = rank(workloads.at(b).kind);
        return ra != rb ? ra < rb : natural_less(a, b);
    });
    return names;
}

// The per-task cost of every executor and peer, from the overhead workloads, fastest first.
inline std::string overhead_table(const std::map<std::string, workload_info>& workloads,
                                  const std::vector<measurement>& all) {
    std::ostringstream out;
    out << "| operation | executor | configuration | per item | relative | other counters |\n"
        << "|---|---|---|---:|---:|---|\n";
    for (const std::string& workload : workload_order(workloads)) {
        const workload_info& info = workloads.at(workload);
        if (info.kind != "overhead")
            continue;
        std::vector<const measurement*> rows;
        for (const measurement& m : all)
            if (m.workload == workload)
                rows.push_back(&m);
        if (rows.empty())
            continue;
        std::stable_sort(rows.begin(), rows.end(),
                         [](auto* a, auto* b) { return a->ns_per_item < b->ns_per_item; });
        // "sequential" is the work alone, without any machinery: the reference is the fastest
        // row that does use some.
        const auto reference = std::find_if(rows.begin(), rows.end(),
                                            [](auto* m) { return m->executor != "sequential"; });
        const double base = (reference == rows.end() ? rows.front() : *reference)->ns_per_item;
        const std::set<std::string> shared = shared_config_parts(workload, all);
        for (const measurement* m : rows) {
            const std::string config = varying_config(m->config, shared);
            std::string counters;
            for (const auto& [key, value] : m->counters)
                counters += (counters.empty() ? "" : ", ") + key + " " + format_counter(value);
            out << "| " << info.title << " | " << m->executor << " | "
                << (config.empty() ? "-" : config) << " | " << format_time(m->ns_per_item) << " | "
                << (m->executor == "sequential" ? std::string("(the work alone)")
                                                : format_ratio(m->ns_per_item / base))
                << " | " << (counters.empty() ? "-" : counters) << " |\n";
        }
    }
    return out.str();
}

// The Python course's "choosing the right approach" table, from this run's numbers: per workload,
// the winner, by how much it beat the runner-up, and where Python's best stood.
inline std::string choosing_table(const std::vector<table>& tables) {
    std::ostringstream out;
    out << "| workload | kind | winner | runner-up (slower by) | winner's speedup over sequential "
           "| Python's best (slower than the winner by) |\n"
        << "|---|---|---|---|---:|---|\n";
    for (const table& t : tables) {
        if (t.winner.empty())
            continue;
        out << "| " << t.info.title << " | " << t.info.kind << " | **" << t.winner << "** | "
            << (t.runner_up.empty() ? "-"
                                    : t.runner_up + " (" + format_ratio(t.margin) +
                                          (t.margin < 1.05 ? ", a tie" : "") + ")")
            << " | " << (t.winner_speedup ? format_ratio(*t.winner_speedup) : "-") << " | "
            << (t.best_python.empty() ? "-"
                                      : t.best_python + " (" + format_ratio(t.python_behind) + ")")
            << " |\n";
    }
    return out.str();
}

// The headline: for each CPU, I/O and mixed workload, the time per item of triad's four
// executors, the best peer and Python's best, with the winner in bold.
inline std::string headline_table(const std::vector<table>& tables) {
    static const char* const columns[] = {"sequential", "triad_threads", "triad_processes",
                                          "triad_loop", "triad_hybrid"};
    std::ostringstream out;
    out << "| workload | sequential | triad threads | triad processes | triad loop | triad hybrid "
           "| best C++ peer | best Python |\n|---|---:|---:|---:|---:|---:|---|---|\n";
    for (const table& t : tables) {
        if (t.info.kind == "overhead" || t.winner.empty())
            continue;
        const auto cell = [&](const row& r) {
            const bool win = r.executor == t.winner;
            return (win ? "**" : "") + format_time(r.ns_per_item) + (win ? "**" : "");
        };
        out << "| " << t.info.title;
        for (const char* column : columns) {
            const auto found = std::find_if(t.rows.begin(), t.rows.end(),
                                            [&](const row& r) { return r.executor == column; });
            out << " | " << (found == t.rows.end() ? "-" : cell(*found));
        }
        const auto peer = std::find_if(t.rows.begin(), t.rows.end(), [](const row& r) {
            return !is_python(r.executor) && r.executor.rfind("triad", 0) != 0 &&
                   r.executor != "sequential";
        });
        const auto python = std::find_if(t.rows.begin(), t.rows.end(),
                                         [](const row& r) { return is_python(r.executor); });
        out << " | " << (peer == t.rows.end() ? "-" : peer->executor + " " + cell(*peer)) << " | "
            << (python == t.rows.end() ? "-" : python->executor + " " + cell(*python)) << " |\n";
    }
    return out.str();
}

// Every file of a report, by path relative to the report directory: REPORT.md and the charts.
inline std::map<std::string, std::string>
render_report(const std::map<std::string, workload_info>& workloads,
              const std::vector<measurement>& all, const std::string& preamble, unsigned cpus = 0) {
    std::map<std::string, std::string> files;
    std::vector<table> tables;
    for (const std::string& workload : workload_order(workloads))
        if (workloads.at(workload).kind != "overhead")
            tables.push_back(make_table(workload, workloads.at(workload), all));
    std::ostringstream md;
    md << "# triad benchmark report\n\n"
       << preamble << "\n## Headline\n\n"
       << "Time per item at each executor's best configuration; the fastest C++ executor in "
          "bold.\n\n"
       << headline_table(tables) << "\n";
    for (const table& t : tables) {
        if (t.rows.empty())
            continue;
        md << "## " << t.info.title << "\n\n`" << t.workload << "` (" << t.info.kind
           << "-bound)\n\n"
           << markdown_table(t) << "\n";
        const std::string bars = "charts/" + t.workload + ".svg";
        files[bars] = bar_chart_svg(t);
        md << "![" << xml_escape(t.info.title) << "](" << bars << ")\n\n";
        if (!t.info.axis.empty()) {
            const std::string scaling = "charts/" + t.workload + "_scaling.svg";
            files[scaling] = scaling_chart_svg(t.workload, t.info, all, cpus);
            md << "![" << xml_escape(t.info.title) << ", by " << t.info.axis << "](" << scaling
               << ")\n\n";
        }
    }
    md << "## Overheads\n\nThe cost of the machinery itself, per item, against the peers "
          "(relative: to the fastest executor on the same operation; `sequential` rows are the "
          "work alone).\n\n"
       << overhead_table(workloads, all)
       << "\n## Choosing the right approach\n\nThe Python course's table, filled in from this run: "
          "for each "
          "workload, the fastest C++ executor and by how much (under 5% is a tie: run-to-run noise "
          "on a "
          "shared machine is about that size).\n\n"
       << choosing_table(tables);
    files["REPORT.md"] = md.str();
    return files;
}

} // namespace triad_report
