#pragma once

// Timelines from the tracer's Chrome trace event files (raw/traces/<workload>.<executor>.json):
// one row per lane (a thread, or a worker process of the process pool), a band where the lane
// ran a task, so that a reader sees where the time went: idle workers, one long task holding up
// the end, a loop thread that never rests. Included by report.hpp after the charts; uses its
// JSON helpers, `natural_less`, `format_time`, `xml_escape` and the chart conventions of
// charts.hpp (svg_open, make_axis, time_unit, time_tick, text_width).
//
// A trace may hold ~200,000 events; the SVG stays small because a lane's intervals are merged
// into runs of pixel columns before any rectangle is drawn (tasks closer than a pixel become one
// run, shaded by how busy the lane was there), so its size is bounded by the plot's width times
// the lanes, whatever the number of events.

#include "report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace triad_report {

// A half-open time interval [start, end) in microseconds since the tracer started.
struct trace_interval {
    double start = 0;
    double end = 0;
    bool operator<(const trace_interval& other) const {
        return start != other.start ? start < other.start : end > other.end; // outer first
    }
};

// One (pid, tid) of a trace and what ran on it.
struct trace_lane {
    long long pid = 0;
    long long tid = 0;
    std::string name;     // thread_name, else the process's name, else "pid P tid T"
    std::string category; // the category most of its events have; empty when it ran none
    // Its events by category, sorted by start, outer events before the ones nested in them.
    std::map<std::string, std::vector<trace_interval>> events;
    std::size_t tasks = 0;
    double busy_us = 0; // the union of its intervals: a task nested in another counts once
};

struct trace {
    std::string where; // the file, for messages: "raw/traces/primes.triad_thread_pool.json"
    std::string workload;
    std::string executor;
    std::string title;
    // Grouped by category (lanes that ran no task, a named thread that stayed idle, last), by
    // name in natural order within one.
    std::vector<trace_lane> lanes;
    std::vector<std::string> categories; // in the order of the groups
    double start_us = 0;                 // the first event's start
    double end_us = 0;                   // the last event's end
    std::size_t tasks = 0;
    std::size_t dropped = 0; // events the tracer dropped (its buffers were full)

    double span_us() const { return end_us - start_us; }
};

// The total length of the union of `intervals`: nested and overlapping ones count once.
inline double union_length(std::vector<trace_interval> intervals) {
    std::sort(intervals.begin(), intervals.end());
    double total = 0;
    double covered_to = -1e300;
    for (const trace_interval& i : intervals) {
        const double from = std::max(i.start, covered_to);
        if (i.end > from)
            total += i.end - from;
        covered_to = std::max(covered_to, i.end);
    }
    return total;
}

// The depth of each interval of a lane (0: not inside another, 1: inside one, ...), for
// intervals sorted as trace_interval sorts them. An interval that starts where another ends is
// not inside it; one that overlaps another without fitting in it counts as inside too (only
// properly nested ones come from one thread, but a clock's rounding can make them overlap).
inline std::vector<int> nesting_depths(const std::vector<trace_interval>& sorted) {
    std::vector<int> depths;
    depths.reserve(sorted.size());
    std::vector<double> open_ends; // the ends of the intervals that contain the current start
    for (const trace_interval& i : sorted) {
        while (!open_ends.empty() && open_ends.back() <= i.start)
            open_ends.pop_back();
        depths.push_back(static_cast<int>(open_ends.size()));
        open_ends.push_back(i.end);
    }
    return depths;
}

// A run of pixel columns [from, to) of one band, with the share of their time spent in tasks
// (their density), in quarters: a column with any task in it shows at least a quarter.
struct pixel_run {
    int from = 0;
    int to = 0;
    double density = 0;
};

// The intervals of one band on `columns` pixels of `us_per_px` microseconds each from `origin`,
// merged into runs of columns of the same density: a timeline's rectangles. However many the
// intervals, there are at most `columns` runs; where tasks are closer than a pixel the run is
// shaded by how busy the lane was there, rather than drawn solid (or not at all).
inline std::vector<pixel_run> pixel_runs(const std::vector<trace_interval>& intervals,
                                         double origin, double us_per_px, int columns) {
    const auto n = static_cast<std::size_t>(std::max(columns, 0));
    std::vector<double> busy(n + 1, 0);  // the partly covered columns' busy share
    std::vector<double> whole(n + 1, 0); // +1 where a stretch of wholly covered columns starts
    for (const trace_interval& i : intervals) {
        const double p0 = std::clamp((i.start - origin) / us_per_px, 0.0, static_cast<double>(n));
        const double p1 = std::clamp((i.end - origin) / us_per_px, p0, static_cast<double>(n));
        const auto c0 = static_cast<std::size_t>(p0);
        const auto c1 = static_cast<std::size_t>(p1);
        if (c0 == c1) {
            busy[c0] += p1 - p0;
        } else {
            busy[c0] += static_cast<double>(c0 + 1) - p0;
            busy[c1] += p1 - static_cast<double>(c1);
            whole[c0 + 1] += 1;
            whole[c1] -= 1;
        }
    }
    std::vector<pixel_run> runs;
    double covered = 0;
    for (std::size_t c = 0; c < n; ++c) {
        covered += whole[c];
        const double share = std::min(1.0, busy[c] + covered);
        const double density = share <= 0 ? 0 : std::max(1.0, std::round(share * 4)) / 4;
        if (density == 0)
            continue;
        if (!runs.empty() && runs.back().to == static_cast<int>(c) &&
            runs.back().density == density)
            ++runs.back().to;
        else
            runs.push_back({static_cast<int>(c), static_cast<int>(c) + 1, density});
    }
    return runs;
}

// A trace file's text, parsed; `where` names the file in exceptions ("where: what is wrong").
inline trace parse_trace(std::string_view json, const std::string& where) {
    const boost::json::value parsed = parse_json(json, where);
    const boost::json::object& root = as_object(parsed, where);
    const auto* events = root.if_contains("traceEvents");
    if (events == nullptr || !events->is_array())
        bad_input(where, "no traceEvents array (not a Chrome trace event file?)");
    trace t;
    t.where = where;
    if (const auto* other = root.if_contains("otherData"); other != nullptr && other->is_object()) {
        const auto& o = other->as_object();
        if (const auto* v = o.if_contains("workload"))
            t.workload = str(*v);
        if (const auto* v = o.if_contains("executor"))
            t.executor = str(*v);
        if (const auto* v = o.if_contains("title"))
            t.title = str(*v);
        if (const auto* v = o.if_contains("dropped_events"))
            t.dropped = static_cast<std::size_t>(std::max(0.0, num(*v)));
    }
    std::map<std::pair<long long, long long>, trace_lane> lanes;
    std::map<long long, std::string> process_names;
    t.start_us = 1e300;
    t.end_us = -1e300;
    std::size_t index = 0;
    for (const boost::json::value& v : events->as_array()) {
        const std::string event_where = where + ": traceEvents[" + std::to_string(index++) + "]";
        const boost::json::object& e = as_object(v, event_where);
        const std::string phase = e.contains("ph") ? str(e.at("ph")) : "";
        if (phase != "X" && phase != "M")
            continue; // the tracer writes no others; instants, counters... would not be tasks
        const auto pid = static_cast<long long>(number_field(e, "pid", event_where));
        const auto tid =
            e.contains("tid") ? static_cast<long long>(number_field(e, "tid", event_where)) : 0;
        if (phase == "M") {
            const std::string name = text_field(e, "name", event_where);
            const auto* args = e.if_contains("args");
            const std::string value =
                args != nullptr && args->is_object() && args->as_object().contains("name")
                    ? str(args->as_object().at("name"))
                    : "";
            if (name == "thread_name" && !value.empty())
                lanes[{pid, tid}].name = value;
            else if (name == "process_name" && !value.empty())
                process_names[pid] = value;
            continue;
        }
        const double ts = number_field(e, "ts", event_where);
        const double dur = number_field(e, "dur", event_where);
        if (dur < 0 || !std::isfinite(ts) || !std::isfinite(dur))
            bad_input(event_where, "an event with a negative or non-finite time");
        const std::string category = e.contains("cat") ? str(e.at("cat")) : "";
        trace_lane& lane = lanes[{pid, tid}];
        lane.events[category.empty() ? "(no category)" : category].push_back({ts, ts + dur});
        ++lane.tasks;
        ++t.tasks;
        t.start_us = std::min(t.start_us, ts);
        t.end_us = std::max(t.end_us, ts + dur);
    }
    if (t.tasks == 0)
        t.start_us = t.end_us = 0;
    if (t.title.empty())
        t.title =
            t.workload.empty() && t.executor.empty() ? where : t.workload + " on " + t.executor;

    std::map<std::string, bool> seen_categories;
    for (auto& [key, lane] : lanes) {
        if (lane.tasks == 0 && lane.name.empty())
            continue; // a process's own metadata (tid 0), not a thread
        lane.pid = key.first;
        lane.tid = key.second;
        if (lane.name.empty()) {
            const auto process = process_names.find(lane.pid);
            lane.name =
                process != process_names.end()
                    ? process->second +
                          (lane.tid != lane.pid ? " tid " + std::to_string(lane.tid) : "")
                    : "pid " + std::to_string(lane.pid) + " tid " + std::to_string(lane.tid);
        }
        std::size_t most = 0;
        std::vector<trace_interval> all;
        for (auto& [category, intervals] : lane.events) {
            std::sort(intervals.begin(), intervals.end());
            if (intervals.size() > most) {
                most = intervals.size();
                lane.category = category;
            }
            all.insert(all.end(), intervals.begin(), intervals.end());
        }
        lane.busy_us = union_length(std::move(all));
        if (!lane.category.empty()) // a named thread that ran no task has none
            seen_categories[lane.category] = true;
        t.lanes.push_back(std::move(lane));
    }
    for (const auto& [category, seen] : seen_categories)
        t.categories.push_back(category);
    std::sort(t.lanes.begin(), t.lanes.end(), [](const trace_lane& a, const trace_lane& b) {
        if (a.category != b.category) // idle lanes (no category) last
            return !a.category.empty() && (b.category.empty() || a.category < b.category);
        if (a.name != b.name)
            return natural_less(a.name, b.name);
        return std::pair{a.pid, a.tid} < std::pair{b.pid, b.tid};
    });
    return t;
}

// The colour of a category of events (the Okabe–Ito palette, as in the other charts): the
// tracer's three executors fixed, any other in the palette's remaining colours by name.
inline std::string category_color(const std::string& category) {
    if (category == "thread_pool")
        return "#009e73";
    if (category == "event_loop")
        return "#0072b2";
    if (category == "process_pool")
        return "#d55e00";
    static const char* const others[] = {"#cc79a7", "#e69f00", "#56b4e9", "#999999"};
    std::size_t hash = 0;
    for (const char c : category)
        hash = hash * 31 + static_cast<unsigned char>(c);
    return others[hash % 4];
}

// `color` ("#rrggbb") darkened by `factor` (0: black, 1: unchanged): tasks nested in a task.
inline std::string darker(const std::string& color, double factor) {
    unsigned rgb = 0;
    if (color.size() == 7)
        rgb = static_cast<unsigned>(std::stoul(color.substr(1), nullptr, 16));
    char text[8];
    std::snprintf(text, sizeof text, "#%02x%02x%02x",
                  static_cast<unsigned>(((rgb >> 16) & 0xff) * factor),
                  static_cast<unsigned>(((rgb >> 8) & 0xff) * factor),
                  static_cast<unsigned>((rgb & 0xff) * factor));
    return text;
}

inline std::string percent(double fraction) {
    char text[16];
    std::snprintf(text, sizeof text, "%.0f%%", fraction * 100);
    if (fraction > 0 && std::string_view(text) == "0%")
        return "<1%"; // busy, if hardly: not the same as never
    return text;
}

// A lane's busy share of the trace's wall span (the union of its intervals over the span).
inline double busy_fraction(const trace& t, const trace_lane& lane) {
    return t.span_us() > 0 ? std::min(1.0, lane.busy_us / t.span_us()) : 0;
}

// "2 lanes, 400 tasks in 12.30 ms", and the events the tracer dropped if any.
inline std::string timeline_totals(const trace& t) {
    std::ostringstream out;
    out << t.lanes.size() << (t.lanes.size() == 1 ? " lane, " : " lanes, ") << t.tasks
        << (t.tasks == 1 ? " task" : " tasks");
    if (t.tasks > 0)
        out << " in " << format_time(t.span_us() * 1e3);
    if (t.dropped > 0)
        out << " (" << t.dropped << " events dropped by the tracer: the chart misses them)";
    return out.str();
}

// One line for the report: "2 lanes, 400 tasks in 12.30 ms; busy: worker 0 98%, worker 1 61%".
inline std::string timeline_summary(const trace& t) {
    std::ostringstream out;
    out << timeline_totals(t);
    if (t.tasks == 0)
        return out.str();
    out << "; busy: ";
    for (std::size_t i = 0; i < t.lanes.size(); ++i)
        out << (i == 0 ? "" : ", ") << t.lanes[i].name << " "
            << percent(busy_fraction(t, t.lanes[i]));
    return out.str();
}

// How many levels of nesting the chart tells apart: a task in a task in a task looks like one
// in a task in a task.
inline constexpr int timeline_levels = 3;

// The timeline: a row per lane, its name on the left and its busy share on the right; a band
// where it ran a task, in its category's colour, a thinner darker band inside where a task ran
// inside a task (a worker that helps while it waits), paler where tasks were closer than a pixel
// and the lane was busy only part of its time; time from the first event on the x axis.
inline std::string timeline_svg(const trace& t) {
    const int width = 760;
    const int margin = 10;
    const int row_height = 22;
    const int band_height = 16;
    const int label_gap = 8;
    double left = 0;
    for (const trace_lane& lane : t.lanes)
        left = std::max(left, text_width(lane.name, 12));
    left = std::min(left, 260.0); // a long name is cut rather than squeezing the plot
    const double right = text_width("100%", 12);
    const int plot_left = margin + static_cast<int>(left) + label_gap;
    const int plot_w = std::max(200, width - margin - static_cast<int>(right) - 8 - plot_left);
    const double span = std::max(t.span_us(), 1e-3);
    // Round ticks in ns, as the other charts' axes, but the plot ends where the trace does: a
    // timeline rounded up to the next tick would show idle time that was never traced.
    axis x_axis = make_axis(0, span * 1e3, false, 8);
    x_axis.hi = span * 1e3;
    x_axis.ticks.erase(std::remove_if(x_axis.ticks.begin(), x_axis.ticks.end(),
                                      [&](double tick) { return tick > x_axis.hi * 1.0001; }),
                       x_axis.ticks.end());
    if (t.tasks == 0)
        x_axis.ticks = {0}; // no time to mark
    const double us_per_px = x_axis.hi / 1e3 / plot_w;
    const auto fixed = [](double v) { // one decimal: a tenth of a pixel is all a reader sees
        char text[32];
        std::snprintf(text, sizeof text, "%.1f", v);
        return std::string(text);
    };

    std::ostringstream body;
    int y = 20;
    y = text_lines(body, wrap_text(t.title, width - 2 * margin, 14, true), margin, y, 18,
                   "font-size=\"14\" font-weight=\"bold\"");
    y = text_lines(body,
                   wrap_text(timeline_totals(t) +
                                 ". One row per thread or worker process, time from the "
                                 "first event; a darker band inside a task is a task run inside "
                                 "it (a worker helping while it waits, or a map's range of "
                                 "items inside its runner); a paler band, tasks "
                                 "closer than a pixel, busy that share of the time.",
                             width - 2 * margin, 12),
                   margin, y, 15, "fill=\"#555\"");
    // Per lane, per nesting level and category (the level counted over all of the lane's events,
    // whatever their category), its intervals.
    std::vector<std::map<std::pair<int, std::string>, std::vector<trace_interval>>> bands;
    bool nested = false;
    for (const trace_lane& lane : t.lanes) {
        std::vector<std::pair<trace_interval, const std::string*>> all;
        for (const auto& [category, intervals] : lane.events)
            for (const trace_interval& i : intervals)
                all.push_back({i, &category});
        std::sort(all.begin(), all.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        std::vector<trace_interval> sorted;
        sorted.reserve(all.size());
        for (const auto& [i, category] : all)
            sorted.push_back(i);
        const std::vector<int> depths = nesting_depths(sorted);
        auto& lane_bands = bands.emplace_back();
        for (std::size_t k = 0; k < all.size(); ++k) {
            nested = nested || depths[k] > 0;
            lane_bands[{std::min(depths[k], timeline_levels - 1), *all[k].second}].push_back(
                all[k].first); // still sorted
        }
    }
    // The legend: a swatch per category, and one for nesting when there is any.
    int legend_x = margin;
    y += 2;
    const auto legend_item = [&](double item_width) {
        if (legend_x + item_width > width - margin) {
            legend_x = margin;
            y += 16;
        }
        const int x = legend_x;
        legend_x += static_cast<int>(item_width) + 18;
        return x;
    };
    std::vector<std::string> legend_categories;
    for (const trace_lane& lane : t.lanes)
        for (const auto& [category, intervals] : lane.events)
            if (std::find(legend_categories.begin(), legend_categories.end(), category) ==
                legend_categories.end())
                legend_categories.push_back(category);
    std::sort(legend_categories.begin(), legend_categories.end());
    for (const std::string& category : legend_categories) {
        const int x = legend_item(16 + text_width(category, 12));
        body << "<rect class=\"legend\" x=\"" << x << "\" y=\"" << y
             << "\" width=\"12\" height=\"12\" fill=\"" << category_color(category)
             << "\"/>\n<text x=\"" << x + 16 << "\" y=\"" << y + 10 << "\">" << xml_escape(category)
             << "</text>\n";
    }
    if (nested) {
        const std::string label = "task inside a task";
        const int x = legend_item(16 + text_width(label, 12));
        const std::string color = legend_categories.size() == 1
                                      ? category_color(legend_categories.front())
                                      : std::string("#777777");
        body << "<rect class=\"legend\" x=\"" << x << "\" y=\"" << y
             << "\" width=\"12\" height=\"12\" fill=\"" << color << "\"/>\n<rect x=\"" << x
             << "\" y=\"" << y + 3 << "\" width=\"12\" height=\"6\" fill=\"" << darker(color, 0.55)
             << "\"/>\n<text x=\"" << x + 16 << "\" y=\"" << y + 10 << "\">" << xml_escape(label)
             << "</text>\n";
    }
    y += 24;

    const int plot_top = y;
    // A thin gap between the category groups.
    int plot_bottom = plot_top;
    std::vector<int> row_tops;
    for (std::size_t i = 0; i < t.lanes.size(); ++i) {
        if (i > 0 && t.lanes[i].category != t.lanes[i - 1].category)
            plot_bottom += 8;
        row_tops.push_back(plot_bottom);
        plot_bottom += row_height;
    }
    if (t.lanes.empty())
        plot_bottom += row_height;
    for (double tick : x_axis.ticks)
        body << "<line x1=\"" << fixed(plot_left + tick / 1e3 / us_per_px) << "\" y1=\"" << plot_top
             << "\" x2=\"" << fixed(plot_left + tick / 1e3 / us_per_px) << "\" y2=\"" << plot_bottom
             << "\" stroke=\"#e4e4e4\"/>\n";
    for (std::size_t i = 0; i < t.lanes.size(); ++i) {
        const trace_lane& lane = t.lanes[i];
        const int top = row_tops[i];
        std::string label = lane.name;
        if (text_width(label, 12) > left) { // cut at a character, with an ellipsis
            while (!label.empty() && text_width(label + "…", 12) > left) {
                while (!label.empty() && (static_cast<unsigned char>(label.back()) & 0xc0) == 0x80)
                    label.pop_back();
                if (!label.empty())
                    label.pop_back();
            }
            label += "…";
        }
        body << "<text x=\"" << plot_left - label_gap << "\" y=\"" << top + 15
             << "\" text-anchor=\"end\">" << xml_escape(label) << "</text>\n"
             << "<rect class=\"lane\" x=\"" << plot_left << "\" y=\"" << top + 2 << "\" width=\""
             << plot_w << "\" height=\"" << row_height - 4 << "\" fill=\"#f4f4f4\"><title>"
             << xml_escape(lane.name + " (pid " + std::to_string(lane.pid) + ", tid " +
                           std::to_string(lane.tid) + "): busy " + percent(busy_fraction(t, lane)) +
                           ", " + std::to_string(lane.tasks) + " tasks")
             << "</title></rect>\n";
        // Each level a darker, thinner band centred in the one it is nested in, drawn by pixel
        // column: a path per level, category and density.
        for (const auto& [key, intervals] : bands[i]) {
            const auto& [level, category] = key; // outer levels first, under the inner
            const double h = band_height * (1 - 0.3 * level);
            const std::string band_top = fixed(top + (row_height - h) / 2);
            std::map<double, std::ostringstream> paths; // density -> path
            for (const pixel_run& r : pixel_runs(intervals, t.start_us, us_per_px, plot_w))
                paths[r.density] << "M" << plot_left + r.from << " " << band_top << "h"
                                 << r.to - r.from << "v" << fixed(h) << "h-" << r.to - r.from
                                 << "z";
            for (const auto& [density, d] : paths) {
                body << "<path class=\"busy\" fill=\""
                     << darker(category_color(category), 1 - 0.3 * level) << "\"";
                if (density < 1)
                    body << " fill-opacity=\"" << density << "\"";
                body << " d=\"" << d.str() << "\"/>\n";
            }
        }
        body << "<text x=\"" << plot_left + plot_w + 6 << "\" y=\"" << top + 15 << "\">"
             << xml_escape(percent(busy_fraction(t, lane))) << "</text>\n";
    }
    if (t.tasks == 0) // over the lanes' backgrounds
        body << "<text x=\"" << plot_left + plot_w / 2 << "\" y=\"" << plot_top + 15
             << "\" text-anchor=\"middle\" fill=\"#555\">no tasks in this trace</text>\n";
    // The axis: time from the first event, round ticks in one unit.
    body << "<line x1=\"" << plot_left << "\" y1=\"" << plot_bottom << "\" x2=\""
         << plot_left + plot_w << "\" y2=\"" << plot_bottom << "\" stroke=\"black\"/>\n";
    const auto unit = time_unit(x_axis.ticks.back());
    for (double tick : x_axis.ticks) {
        const std::string x = fixed(plot_left + tick / 1e3 / us_per_px);
        body << "<line x1=\"" << x << "\" y1=\"" << plot_bottom << "\" x2=\"" << x << "\" y2=\""
             << plot_bottom + 5 << "\" stroke=\"black\"/>\n"
             << "<text x=\"" << x << "\" y=\"" << plot_bottom + 18 << "\" text-anchor=\"middle\">"
             << xml_escape(time_tick(tick, unit)) << "</text>\n";
    }
    body << "<text x=\"" << plot_left + plot_w / 2 << "\" y=\"" << plot_bottom + 36
         << "\" text-anchor=\"middle\">time since the first event</text>\n"
         << "<text x=\"" << plot_left + plot_w + 6 << "\" y=\"" << plot_top - 6
         << "\" fill=\"#555\">busy</text>\n";
    const int height = plot_bottom + 46;
    return svg_open(width, height) + body.str() + "</svg>\n";
}

// The trace files of a report: file name -> text, for every *.json in `traces_dir`; none when
// the directory does not exist (reports from before the tracer).
inline std::map<std::string, std::string> read_traces(const std::filesystem::path& traces_dir) {
    std::map<std::string, std::string> traces;
    if (!std::filesystem::is_directory(traces_dir))
        return traces;
    for (const auto& entry : std::filesystem::directory_iterator(traces_dir)) {
        if (!entry.is_regular_file() || entry.path().extension() != ".json")
            continue;
        std::ifstream in(entry.path(), std::ios::binary);
        if (!in)
            throw std::runtime_error("cannot read " + entry.path().string());
        std::ostringstream text;
        text << in.rdbuf();
        traces[entry.path().filename().string()] = text.str();
    }
    return traces;
}

// The report's timeline section and its charts (charts/timeline_<file's stem>.svg, added to
// `files`), from raw/traces' file name -> text; empty when there are no traces. A trace that
// cannot be read is named in the section with what is wrong, and the rest are still drawn.
inline std::string timeline_section(const std::map<std::string, std::string>& traces,
                                    std::map<std::string, std::string>& files) {
    if (traces.empty())
        return {};
    std::vector<std::string> names;
    for (const auto& [name, text] : traces)
        names.push_back(name);
    std::sort(names.begin(), names.end(), natural_less);
    std::ostringstream md;
    md << "## Where the time goes: timelines\n\n"
       << "One traced run of a workload per executor (`raw/traces/`, Chrome trace event files "
          "that chrome://tracing and Perfetto open): a row per thread or worker process, a band "
          "where it ran a task, a darker one inside where a task ran inside a task (a worker "
          "helping while it waits, or a `map`'s range of items inside its runner, which is why a "
          "`map` lane is dark from end to end), a paler one where tasks were closer than a pixel "
          "(as pale as the lane was idle there). Busy is the share of the trace's span a lane "
          "spent in tasks, nested ones counted once, waits inside a task included: busy is not "
          "CPU time. Task counts are spans: a `map` runner and each range it claims count one "
          "each. These runs "
          "are separate from the measured ones, so their times are not the tables'.\n\n";
    std::vector<std::string> unreadable;
    for (const std::string& name : names) {
        const std::string where = "raw/traces/" + name;
        trace t;
        try {
            t = parse_trace(traces.at(name), where);
        } catch (const std::exception& e) {
            unreadable.push_back(e.what());
            continue;
        }
        const std::string stem = name.substr(0, name.size() - std::string(".json").size());
        const std::string chart = "charts/timeline_" + stem + ".svg";
        files[chart] = timeline_svg(t);
        md << "### " << t.title << "\n\n";
        if (!t.workload.empty() || !t.executor.empty())
            md << "`" << t.workload << "` on `" << t.executor << "`: ";
        md << timeline_summary(t) << ".\n\n"
           << "![" << xml_escape(t.title) << ", timeline](" << chart << ")\n\n";
    }
    if (!unreadable.empty()) {
        md << "**Traces that could not be read:**\n\n";
        for (const std::string& u : unreadable)
            md << "- " << u << "\n";
        md << "\n";
    }
    return md.str();
}

} // namespace triad_report
