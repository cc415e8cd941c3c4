#pragma once

// The benchmark report: reads Google Benchmark's JSON (plus the benchmarks' own registry of
// executors and workloads, and the Python peers' rows), derives per-workload tables with the
// winner, and draws SVG charts with no plotting package. Header-only; one translation unit of
// the program must include <boost/json/src.hpp>.

#include <boost/json.hpp>
#include <boost/math/distributions/binomial.hpp>
#include <boost/math/distributions/normal.hpp>
#include <boost/math/statistics/univariate_statistics.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
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
    double ns_per_item = 0;             // the median of the samples
    double ns_low = 0;                  // interval of the median (stats::median_interval)
    double ns_high = 0;
    std::vector<double> samples;            // ns per item of each repetition
    double items = 0;                       // items per iteration, 0 when not reported
    std::map<std::string, double> counters; // user counters other than items (their medians)
};

// The statistics behind the verdicts: medians, an order-statistic interval of the median, and the
// Mann-Whitney U test. Medians and the binomial and normal distributions come from Boost.Math.
namespace stats {

inline double median(std::vector<double> values) {
    if (values.empty())
        return 0;
    return boost::math::statistics::median(values);
}

// The distribution-free confidence interval of the median from order statistics: with the n
// samples sorted, [x(k), x(n+1-k)] covers the true median with probability 1 - 2 P(B <= k-1) for
// B ~ Binomial(n, 1/2), whatever the distribution. The narrowest such interval with at least 95%
// coverage; below 6 samples none reaches 95%, and the widest (the range of the samples) is used,
// with what it covers (5 samples: 93.75%). A bootstrap of 5 samples gives the same range and
// claims 95% for it.
inline double median_interval_coverage(std::size_t n, std::size_t k) {
    if (n == 0 || k == 0)
        return 0;
    const boost::math::binomial_distribution<double> half(static_cast<double>(n), 0.5);
    return 1 - 2 * boost::math::cdf(half, static_cast<double>(k - 1));
}

// k of the interval above for n samples (1: the whole range), 0 for no samples.
inline std::size_t median_interval_rank(std::size_t n) {
    std::size_t k = n == 0 ? 0 : 1;
    for (std::size_t candidate = 2; 2 * candidate <= n; ++candidate)
        if (median_interval_coverage(n, candidate) >= 0.95)
            k = candidate;
    return k;
}

inline std::pair<double, double> median_interval(std::vector<double> samples) {
    if (samples.empty())
        return {0, 0};
    std::sort(samples.begin(), samples.end());
    const std::size_t k = median_interval_rank(samples.size());
    return {samples[k - 1], samples[samples.size() - k]};
}

// Two-sided p-value of the Mann-Whitney U test that `a` and `b` come from the same distribution.
// Small samples get the exact permutation distribution of U given the observed ties (5 against 5:
// 252 splits; completely separated samples give 2/252 = 0.0079, the smallest there is; 3 against
// 3 cannot go below 0.1); large ones the normal approximation with the tie correction.
inline double mann_whitney_p(const std::vector<double>& a, const std::vector<double>& b) {
    const std::size_t n1 = a.size();
    const std::size_t n2 = b.size();
    if (n1 == 0 || n2 == 0)
        return 1;
    // Twice the midranks of the pooled sample, so that ties stay integers.
    std::vector<std::pair<double, std::size_t>> pooled;
    for (std::size_t i = 0; i < n1; ++i)
        pooled.push_back({a[i], i});
    for (std::size_t i = 0; i < n2; ++i)
        pooled.push_back({b[i], n1 + i});
    std::sort(pooled.begin(), pooled.end());
    const std::size_t n = n1 + n2;
    std::vector<long long> twice_rank(n);
    double tie_term = 0; // sum of t^3 - t over groups of ties
    for (std::size_t i = 0; i < n;) {
        std::size_t j = i;
        while (j < n && pooled[j].first == pooled[i].first)
            ++j;
        const auto t = static_cast<double>(j - i);
        tie_term += t * t * t - t;
        for (std::size_t k = i; k < j; ++k)
            twice_rank[pooled[k].second] = static_cast<long long>(i + 1 + j); // 2 * midrank
        i = j;
    }
    long long observed = 0; // twice the rank sum of a
    for (std::size_t i = 0; i < n1; ++i)
        observed += twice_rank[i];
    // Twice the expected rank sum of a: n1 (n + 1).
    const long long centre = static_cast<long long>(n1 * (n + 1));
    const long long observed_distance = std::llabs(observed - centre);

    double splits = 1; // n choose n1
    for (std::size_t i = 1; i <= n1; ++i)
        splits = splits * static_cast<double>(n2 + i) / static_cast<double>(i);
    if (splits <= 200000) {
        long long as_extreme = 0;
        long long total = 0;
        std::function<void(std::size_t, std::size_t, long long)> choose =
            [&](std::size_t next, std::size_t left, long long sum) {
                if (left == 0) {
                    ++total;
                    if (std::llabs(sum - centre) >= observed_distance)
                        ++as_extreme;
                    return;
                }
                for (std::size_t i = next; i + left <= n; ++i)
                    choose(i + 1, left - 1, sum + twice_rank[i]);
            };
        choose(0, n1, 0);
        return static_cast<double>(as_extreme) / static_cast<double>(total);
    }
    const double m1 = static_cast<double>(n1);
    const double m2 = static_cast<double>(n2);
    const double nn = static_cast<double>(n);
    const double variance = m1 * m2 / 12 * ((nn + 1) - tie_term / (nn * (nn - 1)));
    if (variance <= 0)
        return 1;
    // Continuity correction: rank sums move in steps of 1 (2 in twice_rank units).
    const double z =
        std::max(0.0, static_cast<double>(observed_distance) / 2 - 0.5) / std::sqrt(variance);
    const boost::math::normal standard;
    return std::min(1.0, 2 * boost::math::cdf(boost::math::complement(standard, z)));
}

// The level at which a difference is called significant.
inline constexpr double significance = 0.05;

// Whether `faster` is significantly faster than `slower`: lower median and p < 5%.
inline bool significantly_faster(const std::vector<double>& faster,
                                 const std::vector<double>& slower) {
    return faster.size() >= 2 && slower.size() >= 2 && median(faster) < median(slower) &&
           mann_whitney_p(faster, slower) < significance;
}

} // namespace stats

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

// Google Benchmark writes a statistic it cannot compute (the coefficient of variation of a counter
// that is 0 in every repetition) as a bare NaN or inf, which is not JSON: such values become null.
inline std::string without_non_numbers(std::string_view text) {
    static const char* const tokens[] = {"-Infinity", "Infinity", "-NaN", "NaN",
                                         "-nan",      "nan",      "-inf", "inf"};
    std::string out;
    out.reserve(text.size());
    bool in_string = false;
    for (std::size_t i = 0; i < text.size();) {
        const char c = text[i];
        if (in_string) {
            out += c;
            if (c == '\\' && i + 1 < text.size())
                out += text[++i];
            else if (c == '"')
                in_string = false;
            ++i;
            continue;
        }
        if (c == '"') {
            in_string = true;
            out += c;
            ++i;
            continue;
        }
        bool replaced = false;
        for (const char* token : tokens) {
            const std::string_view t(token);
            if (text.substr(i, t.size()) == t) {
                out += "null";
                i += t.size();
                replaced = true;
                break;
            }
        }
        if (!replaced)
            out += text[i++];
    }
    return out;
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

// Fills a measurement's median, interval and counters from its samples.
inline void summarise(measurement& m, const std::vector<std::map<std::string, double>>& counters) {
    m.ns_per_item = stats::median(m.samples);
    std::tie(m.ns_low, m.ns_high) = stats::median_interval(m.samples);
    std::map<std::string, std::vector<double>> by_name;
    for (const auto& one : counters)
        for (const auto& [key, value] : one)
            by_name[key].push_back(value);
    for (auto& [key, values] : by_name)
        m.counters[key] = stats::median(std::move(values));
}

// Google Benchmark JSON: every repetition's time per item is a sample (its iteration runs, with
// `repetition_index`); when not every repetition is there (JSON written with
// report_aggregates_only, like reports before 2026-12), the median aggregate stands alone as one
// sample, and without either the iteration runs there are. Runs that reported an error, and
// families not in the registry, are skipped.
inline std::vector<measurement> parse_results(std::string_view json, const registry& reg) {
    const boost::json::value parsed = parse_json(without_non_numbers(json), "benchmark results");
    const boost::json::object& root = as_object(parsed, "benchmark results");
    const auto* benchmarks = root.if_contains("benchmarks");
    if (benchmarks == nullptr || !benchmarks->is_array())
        bad_input("benchmark results", "no 'benchmarks' array (is this Google Benchmark JSON?)");
    struct accumulated {
        std::vector<double> runs; // ns per item of each iteration run
        std::vector<std::map<std::string, double>> run_counters;
        double repetitions = 1; // how many the JSON says were made
        std::optional<double> median;
        std::map<std::string, double> median_counters;
        double items = 0;
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
        if (!by_run.contains(run_name))
            order.push_back(run_name);
        accumulated& a = by_run[run_name];
        if (b.contains("items"))
            a.items = std::max(a.items, items);
        if (b.contains("repetitions"))
            a.repetitions = std::max(a.repetitions, num(b.at("repetitions")));
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
        if (run_type == "aggregate") {
            a.median = ns;
            a.median_counters = std::move(counters);
        } else {
            a.runs.push_back(ns);
            a.run_counters.push_back(std::move(counters));
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
        m.items = a.items;
        // The runs themselves when at least two succeeded (Google Benchmark drops the failed ones
        // from its median too); the median alone from JSON written with aggregates only.
        if (a.median && a.runs.size() < 2) {
            m.samples = {*a.median};
            summarise(m, {a.median_counters});
        } else {
            m.samples = a.runs;
            summarise(m, a.run_counters);
        }
        out.push_back(std::move(m));
    }
    return out;
}

// The Python peers' rows: {"workload", "executor", "ns_per_item", "config"?, "samples"?,
// "counters"?}, one per line; without samples, ns_per_item is the only one.
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
        const double reported = number_field(o, "ns_per_item", where);
        if (o.contains("config"))
            m.config = str(o.at("config"));
        std::map<std::string, double> counters;
        if (o.contains("counters"))
            for (const auto& [key, value] : o.at("counters").as_object())
                counters[std::string(key)] = num(value);
        if (const auto* samples = o.if_contains("samples"); samples && samples->is_array())
            for (const auto& value : samples->as_array())
                if (value.is_number())
                    m.samples.push_back(num(value));
        if (m.samples.empty())
            m.samples = {reported};
        summarise(m, {counters});
        m.args = parse_args(m.config);
        out.push_back(std::move(m));
    }
    return out;
}

inline bool is_python(const std::string& executor) {
    return executor.rfind("python", 0) == 0;
}

struct row {
    std::string executor{};
    std::string config{};   // the configuration shown and compared (see table::matched_config)
    double ns_per_item = 0; // median
    std::optional<double> speedup{}; // over sequential (the same language's sequential)
    double ns_low = 0;               // interval of the median (stats::median_interval)
    double ns_high = 0;
    std::vector<double> samples{};
    std::map<std::string, double> counters{};
    // Set when the speedup is above what the work allows, even at the edges of the intervals:
    // the bound and what sets it ("20 items"). Such a row is left out of the verdict.
    std::optional<double> speedup_bound{};
    std::string bound_reason{};
    // Set when the median speedup is above that bound but the edges of the intervals are not:
    // the runs of the row or of its baseline are spread. The row stays in the verdict.
    std::optional<double> suspect_bound{};
    std::string best_config{}; // the executor's fastest configuration, when it is not `config`
    double best_ns = 0;
};

// What the runner knows about the run that the tables need.
struct report_context {
    int cpus = 0; // 0: unknown, no CPU bound on speedups
    // Per workload, a warning that the machine was busy while it was measured.
    std::map<std::string, std::string> busy;
    // The tracer's files, raw/traces/<workload>.<executor>.json: file name -> text (none in
    // reports from before it).
    std::map<std::string, std::string> traces;
};

struct table {
    std::string workload;
    workload_info info;
    std::vector<row> rows; // fastest first
    // Where the workload has a scaling axis: the value every C++ executor with the axis was
    // measured at ("workers:2", the largest such), at which the rows are compared.
    std::string matched_config;
    std::string fastest; // the C++ executor with the lowest median among those in the verdict
    std::string winner;  // the fastest, when significantly faster than every other; else empty
    std::vector<std::string> ties; // the C++ executors the fastest is not significantly faster than
    std::size_t contenders = 0;    // C++ rows in the verdict
    std::vector<std::string> excluded;    // C++ rows left out of it: their speedup is impossible
    std::string runner_up;                // the second fastest C++ executor in the verdict, if any
    double margin = 1;                    // runner-up time / fastest time
    std::optional<double> winner_speedup; // the fastest's speedup over sequential
    bool winner_speedup_suspect = false;  // above what the work allows at the medians
    std::string best_python;              // the fastest Python executor, if Python ran
    double python_behind = 0;             // its time / the fastest C++ time
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

inline std::string format_number(double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", v);
    return text;
}

// The largest speedup the work allows a row: no more than its items run at once, no more than its
// workers or tasks in flight, and for CPU-bound work (fork-join too) no more than the CPUs. Empty
// when unknown.
inline std::optional<std::pair<double, std::string>>
speedup_limit(const measurement& m, const workload_info& info, double items, int cpus) {
    std::optional<std::pair<double, std::string>> limit;
    const auto lower = [&](double value, const std::string& why) {
        if (value > 0 && (!limit || value < limit->first))
            limit = {value, why};
    };
    if (items > 0)
        lower(items, format_number(items) + " items");
    for (const char* key : {"workers", "concurrency"})
        if (auto a = m.args.find(key); a != m.args.end())
            lower(a->second, format_number(a->second) + " " + key);
    if ((info.kind == "cpu" || info.kind == "forkjoin") && cpus > 0)
        lower(cpus, std::to_string(cpus) + " CPUs");
    return limit;
}

// One row per executor; the verdict among the C++ executors. Where the workload has a scaling
// axis, every executor is shown at the matched configuration (the largest axis value every C++
// executor with the axis has), with its fastest configuration alongside when that differs;
// otherwise an executor measured at several configurations is shown at its fastest, labelled.
inline table make_table(const std::string& workload, const workload_info& info,
                        const std::vector<measurement>& all, const report_context& context = {}) {
    table t;
    t.workload = workload;
    t.info = info;
    const std::set<std::string> shared = shared_config_parts(workload, all);
    std::map<std::string, std::vector<const measurement*>> by_executor;
    double items = 0;
    for (const measurement& m : all) {
        if (m.workload != workload)
            continue;
        by_executor[m.executor].push_back(&m);
        if (!is_python(m.executor))
            items = std::max(items, m.items);
    }
    std::optional<double> matched;
    if (!info.axis.empty()) {
        std::optional<std::set<double>> common;
        for (const auto& [executor, list] : by_executor) {
            if (is_python(executor))
                continue;
            std::set<double> values;
            for (const measurement* m : list)
                if (auto a = m->args.find(info.axis); a != m->args.end())
                    values.insert(a->second);
            if (values.empty())
                continue;
            if (!common) {
                common = values;
            } else {
                std::set<double> both;
                std::set_intersection(common->begin(), common->end(), values.begin(), values.end(),
                                      std::inserter(both, both.begin()));
                common = std::move(both);
            }
        }
        if (common && !common->empty()) {
            matched = *common->rbegin();
            t.matched_config = info.axis + ":" + format_number(*matched);
        }
    }
    std::map<std::string, const measurement*> chosen;
    for (const auto& [executor, list] : by_executor) {
        const measurement* best = *std::min_element(list.begin(), list.end(), [](auto* a, auto* b) {
            return a->ns_per_item < b->ns_per_item;
        });
        const measurement* pick = best;
        if (matched)
            for (const measurement* m : list)
                if (auto a = m->args.find(info.axis); a != m->args.end() && a->second == *matched)
                    pick = m;
        chosen[executor] = pick;
        row r;
        r.executor = executor;
        r.config = varying_config(pick->config, shared);
        r.ns_per_item = pick->ns_per_item;
        r.ns_low = pick->ns_low;
        r.ns_high = pick->ns_high;
        r.samples = pick->samples;
        r.counters = pick->counters;
        if (best != pick) {
            r.best_config = varying_config(best->config, shared);
            r.best_ns = best->ns_per_item;
        }
        t.rows.push_back(std::move(r));
    }
    const auto find_row = [&](const std::string& executor) -> const row* {
        for (const row& r : t.rows)
            if (r.executor == executor)
                return &r;
        return nullptr;
    };
    const row* cpp_sequential = find_row("sequential");
    const row* python_sequential = find_row("python_sequential");
    std::vector<std::pair<std::string, double>> bounds; // executor -> bound, for impossible rows
    for (row& r : t.rows) {
        const row* base = is_python(r.executor) ? python_sequential : cpp_sequential;
        if (base == nullptr || r.ns_per_item <= 0)
            continue;
        r.speedup = base->ns_per_item / r.ns_per_item;
        if (&r == base)
            continue;
        const auto limit = speedup_limit(*chosen.at(r.executor), info, items, context.cpus);
        // Impossible even at the edges of both intervals (the slowest this row could be, the
        // fastest the baseline could be).
        if (limit && r.ns_high > 0 && base->ns_low / r.ns_high > limit->first) {
            r.speedup_bound = limit->first;
            r.bound_reason = limit->second;
        } else if (limit && *r.speedup > limit->first * 1.05) { // 5%: noise, not a flag
            r.suspect_bound = limit->first;
            r.bound_reason = limit->second;
        }
    }
    std::sort(t.rows.begin(), t.rows.end(), [](const row& a, const row& b) {
        return a.ns_per_item < b.ns_per_item ||
               (a.ns_per_item == b.ns_per_item && a.executor < b.executor);
    });
    std::vector<const row*> contenders;
    const row* python = nullptr;
    for (const row& r : t.rows) {
        if (r.speedup_bound) {
            if (!is_python(r.executor))
                t.excluded.push_back(r.executor);
            continue;
        }
        if (is_python(r.executor)) {
            if (python == nullptr)
                python = &r;
        } else {
            contenders.push_back(&r);
        }
    }
    t.contenders = contenders.size();
    if (contenders.empty())
        return t;
    const row& first = *contenders.front();
    t.fastest = first.executor;
    t.winner_speedup = first.speedup;
    t.winner_speedup_suspect = first.suspect_bound.has_value();
    for (std::size_t i = 1; i < contenders.size(); ++i)
        if (!stats::significantly_faster(first.samples, contenders[i]->samples))
            t.ties.push_back(contenders[i]->executor);
    if (contenders.size() >= 2) {
        t.runner_up = contenders[1]->executor;
        t.margin = contenders[1]->ns_per_item / first.ns_per_item;
        if (t.ties.empty())
            t.winner = first.executor;
    }
    if (python != nullptr) {
        t.best_python = python->executor;
        t.python_behind = python->ns_per_item / first.ns_per_item;
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

inline std::string format_bytes(double bytes) {
    char text[32];
    if (bytes >= 1024.0 * 1024 * 1024)
        std::snprintf(text, sizeof text, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
    else if (bytes >= 1024.0 * 1024)
        std::snprintf(text, sizeof text, "%.1f MiB", bytes / (1024.0 * 1024));
    else if (bytes >= 1024)
        std::snprintf(text, sizeof text, "%.1f KiB", bytes / 1024);
    else
        std::snprintf(text, sizeof text, "%.0f B", bytes);
    return text;
}

// "a", "a and b", "a, b and c".
inline std::string name_list(const std::vector<std::string>& names) {
    std::string out;
    for (std::size_t i = 0; i < names.size(); ++i)
        out += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
    return out;
}

// The interval of a row: "480.00 µs – 520.00 µs", or "one run" when there is nothing to spread.
inline std::string format_interval(const row& r) {
    if (r.samples.size() < 2)
        return "one run";
    return format_time(r.ns_low) + " – " + format_time(r.ns_high);
}

// The marker of an impossible speedup; its footnote follows the table.
inline const char* const impossible_mark = "‡";
// The marker of a median speedup above the bound that the intervals still allow.
inline const char* const suspect_mark = "†";

// The verdict under a workload's table, in words.
inline std::string verdict_line(const table& t) {
    std::ostringstream out;
    out << "Verdict";
    if (!t.matched_config.empty())
        out << " (at " << t.matched_config << ", the largest `" << t.info.axis
            << "` that every C++ executor with it was measured at)";
    out << ": ";
    if (t.fastest.empty()) {
        out << "none: no C++ row can be compared.";
    } else if (t.contenders < 2) {
        out << t.fastest << " is the only C++ executor in the comparison.";
    } else if (!t.winner.empty()) {
        out << "**" << t.winner << "** wins: significantly faster than each of the "
            << t.contenders - 1 << " other C++ executor" << (t.contenders > 2 ? "s" : "")
            << " (Mann–Whitney U, p < 0.05 against each).";
    } else {
        std::vector<std::string> tied{t.fastest};
        tied.insert(tied.end(), t.ties.begin(), t.ties.end());
        out << "tie between " << name_list(tied) << ": the fastest median, " << t.fastest
            << "'s, is not significantly faster than " << name_list(t.ties)
            << " (Mann–Whitney U at 5%).";
    }
    if (!t.excluded.empty())
        out << " Left out: " << name_list(t.excluded) << " (impossible speedup, " << impossible_mark
            << ").";
    return out.str();
}

inline std::string markdown_table(const table& t) {
    bool cpu = false;
    bool rss = false;
    bool best = false;
    bool impossible = false;
    for (const row& r : t.rows) {
        cpu = cpu || r.counters.contains("cpu_ns_per_item");
        rss = rss || r.counters.contains("peak_rss_bytes");
        best = best || !r.best_config.empty();
        impossible = impossible || r.speedup_bound.has_value() || r.suspect_bound.has_value();
    }
    std::ostringstream out;
    out << "| executor | configuration | time per " << t.info.item
        << " (median) | interval of the median | runs | speedup over sequential"
        << (cpu ? " | CPU per item" : "") << (rss ? " | peak RSS" : "")
        << (best ? " | fastest configuration" : "")
        << " |\n|---|---|---:|---|---:|---:" << (cpu ? "|---:" : "") << (rss ? "|---:" : "")
        << (best ? "|---" : "") << "|\n";
    for (const row& r : t.rows) {
        const bool win = r.executor == t.winner;
        out << "| " << (win ? "**" : "") << r.executor << (win ? "**" : "") << " | "
            << (r.config.empty() ? "-" : r.config) << " | " << format_time(r.ns_per_item) << " | "
            << format_interval(r) << " | " << r.samples.size() << " | "
            << (r.speedup ? format_ratio(*r.speedup) : "-")
            << (r.speedup_bound ? std::string(" ") + impossible_mark : "")
            << (r.suspect_bound ? std::string(" ") + suspect_mark : "");
        if (cpu) {
            const auto c = r.counters.find("cpu_ns_per_item");
            out << " | " << (c == r.counters.end() ? "-" : format_time(c->second));
        }
        if (rss) {
            const auto c = r.counters.find("peak_rss_bytes");
            out << " | " << (c == r.counters.end() ? "-" : format_bytes(c->second));
        }
        if (best)
            out << " | "
                << (r.best_config.empty() ? "-" : r.best_config + ": " + format_time(r.best_ns));
        out << " |\n";
    }
    if (impossible) {
        out << "\n";
        for (const row& r : t.rows)
            if (r.speedup_bound)
                out << impossible_mark << " " << r.executor << ": a speedup of "
                    << format_ratio(*r.speedup) << " is impossible here (at most "
                    << format_number(*r.speedup_bound) << "x: " << r.bound_reason
                    << "), even between the edges of the intervals of the medians; this row or its "
                       "sequential baseline was disturbed, so it is left out of the verdict.\n";
            else if (r.suspect_bound)
                out << suspect_mark << " " << r.executor << ": a median speedup of "
                    << format_ratio(*r.speedup) << " is above what the work allows (at most "
                    << format_number(*r.suspect_bound) << "x: " << r.bound_reason
                    << "), though not between the edges of the intervals: the runs of this row "
                       "or of its sequential baseline are spread (see their intervals), so read "
                       "its speedup as at most that bound.\n";
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
        return kind == "cpu"        ? 0
               : kind == "forkjoin" ? 1
               : kind == "io"       ? 2
               : kind == "mixed"    ? 3
                                    : 4;
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
    out << "| operation | executor | configuration | per item (median) | interval of the median | "
           "relative | "
           "other counters |\n"
        << "|---|---|---|---:|---|---:|---|\n";
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
            row r;
            r.ns_low = m->ns_low;
            r.ns_high = m->ns_high;
            r.samples = m->samples;
            out << "| " << info.title << " | " << m->executor << " | "
                << (config.empty() ? "-" : config) << " | " << format_time(m->ns_per_item) << " | "
                << format_interval(r) << " | "
                << (m->executor == "sequential" ? std::string("(the work alone)")
                                                : format_ratio(m->ns_per_item / base))
                << " | " << (counters.empty() ? "-" : counters) << " |\n";
        }
    }
    return out.str();
}

// The verdict in a table cell: the winner in bold, or the tie and who is in it.
inline std::string verdict_cell(const table& t) {
    if (!t.winner.empty())
        return "**" + t.winner + "**";
    if (t.ties.empty())
        return t.fastest.empty() ? "-" : t.fastest;
    std::vector<std::string> tied{t.fastest};
    tied.insert(tied.end(), t.ties.begin(), t.ties.end());
    // A cell names the three fastest of a long tie; the verdict under the table names them all.
    if (tied.size() > 4) {
        const std::size_t others = tied.size() - 3;
        tied.resize(3);
        return "tie of " + std::to_string(others + 3) + ": " + tied[0] + ", " + tied[1] + ", " +
               tied[2] + " and " + std::to_string(others) + " more";
    }
    return "tie: " + name_list(tied);
}

// The Python course's "choosing the right approach" table, from this run's numbers: per workload,
// the verdict, the fastest median's lead over the runner-up, and where Python's best stood.
inline std::string choosing_table(const std::vector<table>& tables) {
    std::ostringstream out;
    out << "| workload | kind | verdict | runner-up (slower by) | fastest's speedup over "
           "sequential | Python's best (slower than the fastest by) |\n"
        << "|---|---|---|---|---:|---|\n";
    for (const table& t : tables) {
        if (t.fastest.empty())
            continue;
        out << "| " << t.info.title << " | " << t.info.kind << " | " << verdict_cell(t) << " | "
            << (t.runner_up.empty() ? "-" : t.runner_up + " (" + format_ratio(t.margin) + ")")
            << " | "
            << (t.winner_speedup ? format_ratio(*t.winner_speedup) +
                                       (t.winner_speedup_suspect ? std::string(" ") + suspect_mark
                                                                 : std::string())
                                 : "-")
            << " | "
            << (t.best_python.empty() ? "-"
                                      : t.best_python + " (" + format_ratio(t.python_behind) + ")")
            << " |\n";
    }
    return out.str();
}

// The headline: for each CPU, I/O and mixed workload, the median time per item of triad's four
// executors, the best peer and Python's best, with a significant winner in bold.
inline std::string headline_table(const std::vector<table>& tables,
                                  const report_context& context = {}) {
    static const char* const columns[] = {"sequential", "triad_threads", "triad_processes",
                                          "triad_loop", "triad_hybrid"};
    std::ostringstream out;
    out << "| workload | sequential | triad threads | triad processes | triad loop | triad hybrid "
           "| best C++ peer | best Python | verdict |\n"
           "|---|---:|---:|---:|---:|---:|---|---|---|\n";
    for (const table& t : tables) {
        if (t.info.kind == "overhead" || t.fastest.empty())
            continue;
        const auto cell = [&](const row& r) {
            const bool win = r.executor == t.winner;
            return (win ? "**" : "") + format_time(r.ns_per_item) + (win ? "**" : "") +
                   (r.speedup_bound ? std::string(" ") + impossible_mark : "");
        };
        out << "| " << t.info.title << (context.busy.contains(t.workload) ? " (busy machine)" : "");
        if (!t.matched_config.empty())
            out << ", at " << t.matched_config;
        for (const char* column : columns) {
            const auto found = std::find_if(t.rows.begin(), t.rows.end(),
                                            [&](const row& r) { return r.executor == column; });
            out << " | " << (found == t.rows.end() ? "-" : cell(*found));
        }
        // The fastest peer and the fastest Python row that count: an impossible row only when
        // there is no other.
        const auto first_of = [&](auto&& wanted) {
            const auto counted = std::find_if(t.rows.begin(), t.rows.end(), [&](const row& r) {
                return wanted(r) && !r.speedup_bound;
            });
            return counted != t.rows.end() ? counted
                                           : std::find_if(t.rows.begin(), t.rows.end(), wanted);
        };
        const auto peer = first_of([](const row& r) {
            return !is_python(r.executor) && r.executor.rfind("triad", 0) != 0 &&
                   r.executor != "sequential";
        });
        const auto python = first_of([](const row& r) { return is_python(r.executor); });
        out << " | " << (peer == t.rows.end() ? "-" : peer->executor + " " + cell(*peer)) << " | "
            << (python == t.rows.end() ? "-" : python->executor + " " + cell(*python)) << " | "
            << verdict_cell(t) << " |\n";
    }
    return out.str();
}

// The smallest two-sided p-value the exact Mann-Whitney test can give for n runs against n.
inline double smallest_p(std::size_t n) {
    double splits = 1;
    for (std::size_t i = 1; i <= n; ++i)
        splits = splits * static_cast<double>(n + i) / static_cast<double>(i);
    return std::min(1.0, 2 / splits);
}

// How the tables are to be read: the statistics and the rules behind every verdict.
inline std::string method_text(const std::vector<measurement>& all) {
    std::size_t most = 0;
    for (const measurement& m : all)
        if (!is_python(m.executor))
            most = std::max(most, m.samples.size());
    std::ostringstream out;
    out << "Every row shows the median time per item over its runs and a confidence interval of "
           "that median from the runs' order statistics (distribution-free, Boost.Math's "
           "binomial): the narrowest with at least 95% coverage, which takes 6 runs or more; with "
           "5 runs it is their range, which covers the median with 93.75% confidence, with 3 "
           "runs 75%. A winner is "
           "called only when its runs are significantly faster than those of every other C++ "
           "executor in the table: a two-sided Mann–Whitney U test at p < 0.05 against each "
           "(exact for small samples, normal approximation with tie correction for large). "
           "Otherwise the verdict is a tie between the fastest median and every executor it does "
           "not beat significantly, and nothing is bold. Requiring every comparison to pass keeps "
           "the chance of naming a wrong winner under 5% without a multiple-comparison "
           "correction. Python rows are compared with C++ by their medians only.\n\n"
           "Workloads with a scaling axis compare executors at a matched configuration, the "
           "largest value of the axis that every C++ executor having the axis was measured at "
           "(the same number of workers, or of tasks in flight); an executor's fastest "
           "configuration, where it differs, is shown labelled in the `fastest configuration` "
           "column and takes no part in the verdict.\n\n"
           "A speedup over sequential above what the work allows, min(items, workers or tasks in "
           "flight, CPUs for CPU-bound work), even between the edges of the two intervals, is "
           "impossible: it is marked "
        << impossible_mark
        << ", explained under its table, and the row is left out of the verdict. A median "
           "speedup more than 5% above that bound which the intervals still allow is marked "
        << suspect_mark
        << ": the runs of the row or of its baseline are spread (a baseline whose runs fall in "
           "two groups, for one); the row stays in the verdict, and its speedup reads as at "
           "most the bound.\n";
    char p[32];
    std::snprintf(p, sizeof p, "%.3g", smallest_p(most));
    if (most <= 1)
        out << "\n**This run has one run per row: no difference can be significant, so every "
               "verdict is a tie.**\n";
    else if (smallest_p(most) >= stats::significance)
        out << "\n**This run has at most " << most << " runs per row: with " << most << " against "
            << most << " the Mann–Whitney test cannot go below p = " << p
            << ", so no difference can be significant and every verdict is a tie. Run the full "
               "benchmark for verdicts.**\n";
    return out.str();
}

// How a workload's kind reads in its table's caption.
inline std::string kind_label(const std::string& kind) {
    if (kind == "cpu")
        return "CPU-bound";
    if (kind == "io")
        return "I/O-bound";
    if (kind == "mixed")
        return "CPU- and I/O-bound";
    if (kind == "forkjoin")
        return "fine-grained fork-join";
    if (kind == "latency")
        return "latency under load";
    return kind;
}

// The MPI pool's section (bench_mpi and mpi_pool.py): issue 14's three targets as ratios of
// medians from this run: the pool's round trip over the raw MPI_Send/MPI_Recv ping-pong of the
// same job (at most 1.5x), the pool against the process pool on the same cores (map and primes:
// parity expected on one machine), and how far triad is ahead of mpi4py.futures per item (at
// least 10x). Round trips also give the medians and 10th percentiles of single round trips
// (p50_us, p10_us). Empty when there are no MPI rows.
inline std::string mpi_section(const std::vector<measurement>& all) {
    const auto find = [&](const std::string& workload,
                          const std::string& executor) -> const measurement* {
        for (const measurement& m : all)
            if (m.workload == workload && m.executor == executor)
                return &m;
        return nullptr;
    };
    const auto counter = [](const measurement* m, const std::string& name) -> std::string {
        if (m == nullptr)
            return "-";
        const auto found = m->counters.find(name);
        return found == m->counters.end() ? "-" : format_time(found->second * 1e3);
    };
    const auto ratio = [](const measurement* a, const measurement* b) -> std::string {
        return a == nullptr || b == nullptr || b->ns_per_item <= 0
                   ? "-"
                   : format_ratio(a->ns_per_item / b->ns_per_item);
    };
    const measurement* pool = find("mpi_round_trip", "triad_mpi");
    if (pool == nullptr && find("mpi_round_trip", "python_mpi4py") == nullptr)
        return {};
    std::ostringstream out;
    out << "## MPI pool\n\n`triad::mpi_pool` in an MPI job of 3 ranks on this machine (rank 0 "
           "drives, ranks 1 and 2 work; `mpirun --oversubscribe`), against a raw "
           "`MPI_Send`/`MPI_Recv` ping-pong in the same job, `triad::process_pool(2)` and "
           "Python's `mpi4py.futures.MPIPoolExecutor`. Ratios are of medians; a round trip's "
           "p50 and p10 are those of single round trips.\n\n"
        << "| operation | executor | per item (median) | p50 single | p10 single |\n"
        << "|---|---|---:|---:|---:|\n";
    for (const char* workload : {"mpi_round_trip", "mpi_map_auto_chunks", "mpi_primes"})
        for (const char* executor :
             {"raw_mpi", "triad_mpi", "triad_processes", "sequential", "python_mpi4py"})
            if (const measurement* m = find(workload, executor))
                out << "| `" << workload << "` | " << executor << " | "
                    << format_time(m->ns_per_item) << " | " << counter(m, "p50_us") << " | "
                    << counter(m, "p10_us") << " |\n";
    const measurement* raw = find("mpi_round_trip", "raw_mpi");
    out << "\n| target | ratio |\n|---|---:|\n"
        << "| round trip: triad_mpi / raw_mpi (at most 1.5x) | " << ratio(pool, raw) << " |\n"
        << "| map of 100k: triad_mpi / triad_processes | "
        << ratio(find("mpi_map_auto_chunks", "triad_mpi"),
                 find("mpi_map_auto_chunks", "triad_processes"))
        << " |\n"
        << "| primes: triad_mpi / triad_processes (parity) | "
        << ratio(find("mpi_primes", "triad_mpi"), find("mpi_primes", "triad_processes")) << " |\n";
    for (const char* workload : {"mpi_round_trip", "mpi_map_auto_chunks", "mpi_primes"})
        out << "| `" << workload << "`: python_mpi4py / triad_mpi (at least 10x) | "
            << ratio(find(workload, "python_mpi4py"), find(workload, "triad_mpi")) << " |\n";
    return out.str() + "\n";
}

} // namespace triad_report

#include "latency.hpp"
#include "timeline.hpp"

namespace triad_report {

// Every file of a report, by path relative to the report directory: REPORT.md and the charts.
inline std::map<std::string, std::string>
render_report(const std::map<std::string, workload_info>& workloads,
              const std::vector<measurement>& all, const std::string& preamble,
              const report_context& context = {}) {
    std::map<std::string, std::string> files;
    std::vector<table> tables;
    for (const std::string& workload : workload_order(workloads))
        if (workloads.at(workload).kind != "overhead" && workloads.at(workload).kind != "latency")
            tables.push_back(make_table(workload, workloads.at(workload), all, context));
    std::ostringstream md;
    md << "# triad benchmark report\n\n"
       << preamble << "\n## How to read the verdicts\n\n"
       << method_text(all) << "\n## Headline\n\n"
       << "Median time per item of each executor at the configuration its table compares; a "
          "winner in bold only when significant; the verdict names the tie otherwise.\n\n"
       << headline_table(tables, context) << "\n";
    for (const table& t : tables) {
        if (t.rows.empty())
            continue;
        md << "## " << t.info.title << "\n\n`" << t.workload << "` (" << kind_label(t.info.kind)
           << ")\n\n";
        if (const auto busy = context.busy.find(t.workload); busy != context.busy.end())
            md << "**Busy machine:** " << busy->second << "\n\n";
        md << markdown_table(t) << "\n" << verdict_line(t) << "\n\n";
        const std::string bars = "charts/" + t.workload + ".svg";
        files[bars] = bar_chart_svg(t);
        md << "![" << xml_escape(t.info.title) << "](" << bars << ")\n\n";
        if (!t.info.axis.empty()) {
            const std::string scaling = "charts/" + t.workload + "_scaling.svg";
            files[scaling] = scaling_chart_svg(t.workload, t.info, all,
                                               static_cast<unsigned>(std::max(context.cpus, 0)));
            md << "![" << xml_escape(t.info.title) << ", by " << t.info.axis << "](" << scaling
               << ")\n\n";
        }
    }
    if (std::string chart = efficiency_chart_svg(tables); !chart.empty()) {
        files["charts/task_size_efficiency.svg"] = std::move(chart);
        md << "## Efficiency by task size\n\nThe `task_*` tables above in one chart: each "
              "executor's efficiency (the work's own time over the time taken times the workers, "
              "medians) by the work in one task. Where a line reaches the top, the executor's "
              "per-task cost has stopped mattering.\n\n"
           << "![Efficiency by task size](charts/task_size_efficiency.svg)\n\n";
    }
    for (const std::string& workload : workload_order(workloads)) {
        const workload_info& info = workloads.at(workload);
        if (info.kind != "latency")
            continue;
        const std::vector<latency_point> points = latency_points(workload, all);
        if (points.empty())
            continue;
        double service_us = 0;
        for (const measurement& m : all)
            if (m.workload == workload)
                if (const auto s = m.counters.find("service_us"); s != m.counters.end())
                    service_us = s->second;
        md << "## " << info.title << "\n\n`" << workload << "` (" << kind_label(info.kind)
           << ": requests sent at a fixed rate whatever the answers do, each timed from when it "
              "was due, so a client that falls behind shows it as latency)\n\n";
        if (const auto busy = context.busy.find(workload); busy != context.busy.end())
            md << "**Busy machine:** " << busy->second << "\n\n";
        md << latency_table(points) << "\n";
        const std::string chart = "charts/" + workload + ".svg";
        files[chart] = latency_chart_svg(info.title, points, service_us);
        md << "![" << xml_escape(info.title) << "](" << chart << ")\n\n";
    }
    md << timeline_section(context.traces, files);
    md << mpi_section(all);
    md << "## Overheads\n\nThe cost of the machinery itself, per item, against the peers "
          "(relative: to the fastest executor on the same operation; `sequential` rows are the "
          "work alone).\n\n"
       << overhead_table(workloads, all)
       << "\n## Choosing the right approach\n\nThe Python course's table, filled in from this "
          "run: for each workload the verdict (a winner only when significant, by the rule "
          "above), the runner-up by median and how much slower it was, and Python's best.\n\n"
       << choosing_table(tables);
    files["REPORT.md"] = md.str();
    return files;
}

} // namespace triad_report
