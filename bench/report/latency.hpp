#pragma once

// Latency workloads (kind "latency", bench_latency): each measurement is one offered rate
// (config "rate:R") of one executor, with the counters p50_us, p99_us, p999_us, achieved_rate
// and saturated. A throughput table would rank them by time per request, which here is only
// 1 / rate; what a reader needs instead is the percentiles at each rate and the rate at which
// each executor stops keeping up. Self-contained apart from `measurement` and `xml_escape`.

#include "report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace triad_report {

// One executor at one offered rate, summarised over its repetitions.
struct latency_point {
    std::string executor;
    double rate = 0;   // offered, requests per second
    double p50_us = 0; // medians over the repetitions
    double p99_us = 0;
    double p999_us = 0;
    double achieved_rate = 0; // completed requests per second
    bool saturated = false;   // the median achieved rate is below 95% of the offered rate
    int repetitions = 0;
};

namespace latency_detail {

inline double median(std::vector<double> values) {
    if (values.empty())
        return 0;
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

inline double counter(const measurement& m, const char* name) {
    const auto found = m.counters.find(name);
    return found == m.counters.end() ? 0 : found->second;
}

// "1,000/s"-style numbers for rates.
inline std::string grouped(double value) {
    // Built forwards: GCC 12 at -O3 warns (-Wrestrict) on string::insert in a loop.
    const std::string digits = std::to_string(static_cast<long long>(std::llround(value)));
    std::string out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && digits[i - 1] != '-' && (digits.size() - i) % 3 == 0)
            out += ',';
        out += digits[i];
    }
    return out;
}

// Latencies in the report's own format.
inline std::string format_us(double us) {
    return format_time(us * 1e3);
}

inline std::string decade_label(int exponent_us) {
    static const char* const names[] = {"1 µs",   "10 µs", "100 µs", "1 ms", "10 ms",
                                        "100 ms", "1 s",   "10 s",   "100 s"};
    return exponent_us >= 0 && exponent_us <= 8 ? names[exponent_us]
                                                : "1e" + std::to_string(exponent_us) + " µs";
}

// Executors in a stable order: triad's first, coroutines before pools, as the binary lists them
// where it can.
inline std::vector<std::string> executors_of(const std::vector<latency_point>& points) {
    std::vector<std::string> out;
    for (const latency_point& p : points)
        if (std::find(out.begin(), out.end(), p.executor) == out.end())
            out.push_back(p.executor);
    std::stable_sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
        return (a.rfind("triad", 0) == 0) > (b.rfind("triad", 0) == 0);
    });
    return out;
}

inline std::vector<double> rates_of(const std::vector<latency_point>& points) {
    std::set<double> rates;
    for (const latency_point& p : points)
        rates.insert(p.rate);
    return {rates.begin(), rates.end()};
}

// Distinct colours within each family: triad's greens, the peers' blues; pools are dashed.
inline std::string line_color(const std::string& executor, int index_in_family) {
    static const char* const triad[] = {"#1b5e20", "#66bb6a", "#2e7d32", "#a5d6a7"};
    static const char* const peers[] = {"#283593", "#7986cb", "#00838f", "#4dd0e1"};
    // Plain branches: GCC 12 with ASan at -O0 reported an index through a selected array as
    // maybe uninitialised.
    const auto slot = static_cast<std::size_t>(index_in_family < 0 ? 0 : index_in_family) % 4;
    if (executor.rfind("triad", 0) == 0)
        return triad[slot];
    return peers[slot];
}

inline bool is_pool(const std::string& executor) {
    return executor.find("thread") != std::string::npos ||
           executor.find("pool") != std::string::npos;
}

} // namespace latency_detail

// The points of one latency workload: measurements with the same executor and rate (the
// repetitions) are summarised by the median of each counter.
inline std::vector<latency_point> latency_points(const std::string& workload,
                                                 const std::vector<measurement>& all) {
    using latency_detail::counter;
    std::map<std::pair<std::string, double>, std::vector<const measurement*>> groups;
    for (const measurement& m : all) {
        if (m.workload != workload)
            continue;
        const auto rate = m.args.find("rate");
        if (rate == m.args.end())
            continue;
        groups[{m.executor, rate->second}].push_back(&m);
    }
    std::vector<latency_point> out;
    for (const auto& [key, runs] : groups) {
        const auto median_of = [&](const char* name) {
            std::vector<double> values;
            for (const measurement* m : runs)
                values.push_back(counter(*m, name));
            return latency_detail::median(std::move(values));
        };
        latency_point p;
        p.executor = key.first;
        p.rate = key.second;
        p.p50_us = median_of("p50_us");
        p.p99_us = median_of("p99_us");
        p.p999_us = median_of("p999_us");
        p.achieved_rate = median_of("achieved_rate");
        p.saturated = p.achieved_rate < 0.95 * p.rate;
        // One measurement per point when the parser already merged the repetitions.
        std::size_t repetitions = runs.size();
        for (const measurement* m : runs)
            repetitions = std::max(repetitions, m->samples.size());
        p.repetitions = static_cast<int>(repetitions);
        out.push_back(std::move(p));
    }
    return out;
}

// Markdown: a row per offered rate, a column per executor with p50 / p99 / p99.9; then the
// highest rate each executor sustained and where it saturated.
inline std::string latency_table(const std::vector<latency_point>& points) {
    using namespace latency_detail;
    const std::vector<std::string> executors = executors_of(points);
    const std::vector<double> rates = rates_of(points);
    std::map<std::pair<std::string, double>, const latency_point*> at;
    for (const latency_point& p : points)
        at[{p.executor, p.rate}] = &p;
    std::ostringstream out;
    out << "Latency from each request's due time to the end of its response (open loop, fixed "
           "arrival rate): p50 / p99 / p99.9, the median of the repetitions. *Saturated*: the "
           "executor completed fewer than 95% of the offered requests per second; its "
           "percentiles are lower bounds that grow with the length of the run.\n\n";
    out << "| offered rate |";
    for (const std::string& e : executors)
        out << " " << e << " |";
    out << "\n|---:|";
    for (std::size_t i = 0; i < executors.size(); ++i)
        out << "---|";
    out << "\n";
    for (double rate : rates) {
        out << "| " << grouped(rate) << "/s |";
        for (const std::string& e : executors) {
            const auto found = at.find({e, rate});
            if (found == at.end()) {
                out << " - |";
                continue;
            }
            const latency_point& p = *found->second;
            out << " ";
            if (p.saturated)
                out << "*saturated* (" << grouped(p.achieved_rate) << "/s): ≥ ";
            out << format_us(p.p50_us) << " / " << format_us(p.p99_us) << " / "
                << format_us(p.p999_us) << " |";
        }
        out << "\n";
    }
    out << "\n| executor | sustained up to | saturated at | achieved there "
           "|\n|---|---:|---:|---:|\n";
    for (const std::string& e : executors) {
        const latency_point* sustained = nullptr;
        const latency_point* saturated = nullptr;
        for (double rate : rates) {
            const auto found = at.find({e, rate});
            if (found == at.end())
                continue;
            if (found->second->saturated) {
                if (saturated == nullptr)
                    saturated = found->second;
            } else if (saturated == nullptr) {
                sustained = found->second;
            }
        }
        out << "| " << e << " | " << (sustained ? grouped(sustained->rate) + "/s" : "-") << " | "
            << (saturated ? grouped(saturated->rate) + "/s" : "not reached") << " | "
            << (saturated ? grouped(saturated->achieved_rate) + "/s" : "-") << " |\n";
    }
    return out.str();
}

// p99 against the offered rate, a line per executor; both axes logarithmic, the y axis with
// labelled decades. Saturated points are hollow. `floor_us` (the server's service time, when
// known) is drawn as a grey reference line: no request can be faster.
inline std::string latency_chart_svg(const std::string& title,
                                     const std::vector<latency_point>& points,
                                     double floor_us = 0) {
    using namespace latency_detail;
    const std::vector<std::string> executors = executors_of(points);
    const std::vector<double> rates = rates_of(points);
    const int width = 760;
    const int left = 70;
    const int right = 190; // the legend
    // A long title's parenthesis goes on a line of its own.
    const auto paren = title.find(" (");
    const std::string headline = title.substr(0, paren);
    std::string details;
    if (paren != std::string::npos) {
        details = title.substr(paren + 2);
        if (!details.empty() && details.back() == ')')
            details.pop_back();
    }
    const int top = details.empty() ? 56 : 74;
    const int plot_height = 300;
    const int height = top + plot_height + 50;
    const int plot_width = width - left - right;

    double lo = floor_us > 0 ? floor_us : 1e300;
    double hi = 0;
    for (const latency_point& p : points) {
        if (p.p99_us > 0)
            lo = std::min(lo, p.p99_us);
        hi = std::max(hi, p.p99_us);
    }
    if (hi <= 0 || rates.empty())
        return "";
    const int decade_lo = static_cast<int>(std::floor(std::log10(lo)));
    const int decade_hi = std::max(decade_lo + 1, static_cast<int>(std::ceil(std::log10(hi))));
    const double rate_lo = std::log10(rates.front());
    const double rate_hi = std::log10(rates.back());
    const auto x_of = [&](double rate) {
        const double span = rate_hi - rate_lo;
        const double f = span > 0 ? (std::log10(rate) - rate_lo) / span : 0.5;
        return left + 20 + f * (plot_width - 40);
    };
    const auto y_of = [&](double us) {
        const double f = (std::log10(us) - decade_lo) / (decade_hi - decade_lo);
        return top + plot_height - f * plot_height;
    };

    std::ostringstream svg;
    svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
        << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
        << "<rect x=\"0\" y=\"0\" width=\"" << width << "\" height=\"" << height
        << "\" fill=\"white\" class=\"background\"/>\n"
        << "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">" << xml_escape(headline)
        << "</text>\n";
    if (!details.empty())
        svg << "<text x=\"10\" y=\"38\" fill=\"#333\">" << xml_escape(details) << "</text>\n";
    svg << "<text x=\"10\" y=\"" << (details.empty() ? 38 : 56)
        << "\" fill=\"#555\">p99 latency from the due time against the offered rate (log scales, "
           "lower is better; hollow: saturated)</text>\n";
    // y axis: a labelled grid line per decade
    for (int d = decade_lo; d <= decade_hi; ++d) {
        const double y = y_of(std::pow(10.0, d));
        svg << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + plot_width
            << "\" y2=\"" << y << "\" stroke=\"#e0e0e0\"/>\n<text x=\"" << left - 6 << "\" y=\""
            << y + 4 << "\" text-anchor=\"end\">" << decade_label(d) << "</text>\n";
    }
    // x axis: a tick per offered rate
    const int axis_y = top + plot_height;
    svg << "<line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left << "\" y2=\"" << axis_y
        << "\" stroke=\"#333\"/>\n<line x1=\"" << left << "\" y1=\"" << axis_y << "\" x2=\""
        << left + plot_width << "\" y2=\"" << axis_y << "\" stroke=\"#333\"/>\n";
    for (double rate : rates) {
        const double x = x_of(rate);
        svg << "<line x1=\"" << x << "\" y1=\"" << axis_y << "\" x2=\"" << x << "\" y2=\""
            << axis_y + 5 << "\" stroke=\"#333\"/>\n<text x=\"" << x << "\" y=\"" << axis_y + 18
            << "\" text-anchor=\"middle\">" << grouped(rate) << "</text>\n";
    }
    svg << "<text x=\"" << left + plot_width / 2 << "\" y=\"" << axis_y + 38
        << "\" text-anchor=\"middle\" fill=\"#555\">offered rate (requests per second)</text>\n";
    if (floor_us > 0) {
        const double y = y_of(floor_us);
        svg << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + plot_width
            << "\" y2=\"" << y << "\" stroke=\"#9e9e9e\" stroke-dasharray=\"2,3\"/>\n<text x=\""
            << left + plot_width - 4 << "\" y=\"" << y - 4
            << "\" text-anchor=\"end\" fill=\"#757575\">service time " << format_us(floor_us)
            << "</text>\n";
    }
    // a line per executor, and the legend
    int triad_index = 0;
    int peer_index = 0;
    int legend_y = top + 10;
    for (const std::string& e : executors) {
        const bool ours = e.rfind("triad", 0) == 0;
        const std::string color = line_color(e, ours ? triad_index++ : peer_index++);
        const std::string dash = is_pool(e) ? " stroke-dasharray=\"6,3\"" : "";
        std::vector<const latency_point*> line;
        for (const latency_point& p : points)
            if (p.executor == e && p.p99_us > 0)
                line.push_back(&p);
        std::sort(line.begin(), line.end(),
                  [](const latency_point* a, const latency_point* b) { return a->rate < b->rate; });
        svg << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\"" << dash
            << " points=\"";
        for (const latency_point* p : line)
            svg << x_of(p->rate) << "," << y_of(p->p99_us) << " ";
        svg << "\"/>\n";
        for (const latency_point* p : line)
            svg << "<circle cx=\"" << x_of(p->rate) << "\" cy=\"" << y_of(p->p99_us)
                << "\" r=\"4\" stroke=\"" << color << "\" stroke-width=\"2\" fill=\""
                << (p->saturated ? "white" : color) << "\"><title>"
                << xml_escape(
                       e + " at " + grouped(p->rate) + "/s: p99 " + format_us(p->p99_us) +
                       (p->saturated ? ", saturated (" + grouped(p->achieved_rate) + "/s)" : ""))
                << "</title></circle>\n";
        const int lx = left + plot_width + 16;
        svg << "<line x1=\"" << lx << "\" y1=\"" << legend_y << "\" x2=\"" << lx + 24 << "\" y2=\""
            << legend_y << "\" stroke=\"" << color << "\" stroke-width=\"2\"" << dash
            << "/>\n<text x=\"" << lx + 30 << "\" y=\"" << legend_y + 4 << "\">" << xml_escape(e)
            << "</text>\n";
        legend_y += 20;
    }
    svg << "</svg>\n";
    return svg.str();
}

} // namespace triad_report
