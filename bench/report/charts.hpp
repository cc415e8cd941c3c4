#pragma once

// The report's SVG charts, drawn with no plotting package: a bar chart per workload (time per
// item of every executor, with the spread of the measurement) and a scaling chart per workload
// that has an axis (speedup by workers, or time by concurrency). Included by report.hpp after
// the tables these charts draw (`row`, `table`, `measurement`, format_time, xml_escape); not a
// header to include on its own.
//
// Every chart has axes with round ticks and units, a legend, and error bars where the
// measurement has a spread. Text positions come from an estimate of the text's width, so long
// titles wrap and labels are never clipped at the edge.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace triad_report {

// The four kinds of contender, each with its colour (the Okabe–Ito palette, which readers with
// any common colour-vision deficiency still tell apart).
inline std::string executor_kind(const std::string& executor) {
    if (executor == "sequential" || executor == "python_sequential")
        return "sequential";
    if (is_python(executor))
        return "python";
    if (executor.rfind("triad", 0) == 0)
        return "triad";
    return "peer";
}

inline std::string executor_color(const std::string& executor) {
    const std::string kind = executor_kind(executor);
    return kind == "sequential" ? "#999999"
           : kind == "python"   ? "#e69f00"
           : kind == "triad"    ? "#009e73"
                                : "#0072b2";
}

inline const char* kind_legend(const std::string& kind) {
    return kind == "triad"    ? "triad"
           : kind == "peer"   ? "C++ peers"
           : kind == "python" ? "Python (bench/python/)"
                              : "sequential (no executor)";
}

// The width of a line of text in pixels: DejaVu Sans (what rsvg and most browsers fall back to
// for sans-serif) averages about 0.52 em per character in these labels, bold about 0.58: a
// little more, so that an estimate errs on the side of room.
inline double text_width(const std::string& text, double font_size, bool bold = false) {
    std::size_t characters = 0;
    for (const char c : text)
        if ((static_cast<unsigned char>(c) & 0xc0) != 0x80) // not a UTF-8 continuation byte
            ++characters;
    return static_cast<double>(characters) * font_size * (bold ? 0.62 : 0.56);
}

// `text` broken at spaces into lines no wider than `width` pixels.
inline std::vector<std::string> wrap_text(const std::string& text, double width, double font_size,
                                          bool bold = false) {
    std::vector<std::string> lines;
    std::istringstream words(text);
    std::string line;
    for (std::string word; words >> word;) {
        const std::string longer = line.empty() ? word : line + " " + word;
        if (!line.empty() && text_width(longer, font_size, bold) > width) {
            lines.push_back(line);
            line = word;
        } else {
            line = longer;
        }
    }
    if (!line.empty())
        lines.push_back(line);
    return lines;
}

// A step of 1, 2 or 5 times a power of ten that cuts `range` into about `target` parts.
inline double round_step(double range, int target) {
    if (!(range > 0))
        return 1;
    const double raw = range / target;
    const double magnitude = std::pow(10, std::floor(std::log10(raw)));
    const double f = raw / magnitude;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * magnitude;
}

// The unit a time of `ns` reads best in.
inline std::pair<double, const char*> time_unit(double ns) {
    if (ns >= 1e9)
        return {1e9, "s"};
    if (ns >= 1e6)
        return {1e6, "ms"};
    if (ns >= 1e3)
        return {1e3, "µs"};
    return {1, "ns"};
}

// A tick label: "0", "500 µs", "1.5 ms"; `unit` fixes the unit for every tick of a linear axis.
inline std::string time_tick(double ns, std::pair<double, const char*> unit) {
    if (ns == 0)
        return "0";
    char text[32];
    std::snprintf(text, sizeof text, "%g %s", ns / unit.first, unit.second);
    return text;
}

// An axis: a log axis from a decade to a decade when the values span a decade or more, a linear
// axis from zero with round ticks otherwise.
struct axis {
    bool log = false;
    double lo = 0;
    double hi = 1;
    std::vector<double> ticks;

    // Where v falls between lo (0) and hi (1).
    double fraction(double v) const {
        if (log)
            return (std::log10(std::max(v, lo)) - std::log10(lo)) /
                   (std::log10(hi) - std::log10(lo));
        return (v - lo) / (hi - lo);
    }
};

inline axis make_axis(double min, double max, bool allow_log, int target_ticks = 5) {
    axis a;
    min = std::max(min, 1e-9);
    max = std::max(max, min);
    if (allow_log && max / min >= 10) {
        a.log = true;
        a.lo = std::pow(10, std::floor(std::log10(min) + 1e-9));
        a.hi = std::pow(10, std::ceil(std::log10(max) - 1e-9));
        if (a.hi <= a.lo)
            a.hi = a.lo * 10;
        for (double v = a.lo; v <= a.hi * 1.001; v *= 10)
            a.ticks.push_back(v);
        return a;
    }
    const double step = round_step(max, target_ticks);
    a.lo = 0;
    a.hi = std::ceil(max / step - 1e-9) * step;
    if (a.hi <= 0)
        a.hi = step;
    for (int i = 0; i * step <= a.hi * 1.0001; ++i)
        a.ticks.push_back(i * step);
    return a;
}

// The spread of a row or a measurement (low, high), if it has one.
template <class Measured>
std::optional<std::pair<double, double>> spread_of(const Measured& m) {
    if (m.ns_low > 0 && m.ns_high > m.ns_low)
        return std::pair{m.ns_low, m.ns_high};
    return std::nullopt;
}

inline std::string svg_open(int width, int height) {
    std::ostringstream svg;
    svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
        << "\" viewBox=\"0 0 " << width << " " << height
        << "\" font-family=\"DejaVu Sans, Verdana, sans-serif\" font-size=\"12\">\n"
        << "<rect x=\"0\" y=\"0\" width=\"" << width << "\" height=\"" << height
        << "\" fill=\"white\" class=\"background\"/>\n";
    return svg.str();
}

// Lines of text from (x, y) down, `step` apart; returns the y below the last.
inline int text_lines(std::ostringstream& svg, const std::vector<std::string>& lines, int x, int y,
                      int step, const std::string& attributes) {
    for (const std::string& line : lines) {
        svg << "<text x=\"" << x << "\" y=\"" << y << "\" " << attributes << ">" << xml_escape(line)
            << "</text>\n";
        y += step;
    }
    return y;
}

// An error bar from x1 to x2 at height y (horizontal), or from y1 to y2 at x (vertical).
inline void error_bar(std::ostringstream& svg, double x1, double y1, double x2, double y2,
                      const std::string& color = "#222") {
    const bool horizontal = y1 == y2;
    const double cap = 4;
    svg << "<g class=\"spread\" stroke=\"" << color << "\" stroke-width=\"1.5\">"
        << "<line x1=\"" << x1 << "\" y1=\"" << y1 << "\" x2=\"" << x2 << "\" y2=\"" << y2
        << "\"/>";
    for (const auto& [x, y] : {std::pair{x1, y1}, std::pair{x2, y2}})
        svg << "<line x1=\"" << (horizontal ? x : x - cap) << "\" y1=\""
            << (horizontal ? y - cap : y) << "\" x2=\"" << (horizontal ? x : x + cap) << "\" y2=\""
            << (horizontal ? y + cap : y) << "\"/>";
    svg << "</g>\n";
}

inline const char* spread_legend() {
    return "interval of the median";
}

// A line chart's legend entry at (left, y): a short stroke in the series' colour and dash, then
// its label; y moves down to the next entry.
inline void legend_line_entry(std::ostringstream& svg, int left, int& y, const std::string& color,
                              const std::string& dash, const std::string& label) {
    svg << "<line x1=\"" << left << "\" y1=\"" << y + 8 << "\" x2=\"" << left + 22 << "\" y2=\""
        << y + 8 << "\" stroke=\"" << color << "\" stroke-width=\"2\"" << dash << "/>\n<text x=\""
        << left + 28 << "\" y=\"" << y + 12 << "\">" << xml_escape(label) << "</text>\n";
    y += 18;
}

// A horizontal bar per row: the time per item (median), an error bar for its spread, the time
// and the speedup over the same language's sequential run at the end of the bar. The time axis
// is logarithmic when the rows span a decade or more (labelled decades), linear from zero
// otherwise; a legend names the colours.
inline std::string bar_chart_svg(const table& t) {
    const int width = 760;
    const int margin = 10;
    const int row_height = 24;
    const int label_gap = 8;
    double lo = 1e300;
    double hi = 0;
    double left = 0;
    double right = 0;
    bool any_spread = false;
    std::vector<std::string> value_labels;
    std::vector<std::string> kinds; // in legend order
    for (const row& r : t.rows) {
        const auto spread = spread_of(r);
        any_spread = any_spread || spread.has_value();
        lo = std::min(lo, spread ? spread->first : r.ns_per_item);
        hi = std::max(hi, spread ? spread->second : r.ns_per_item);
        left = std::max(left, text_width(r.executor, 12));
        value_labels.push_back(format_time(r.ns_per_item) +
                               (r.speedup ? "  (" + format_ratio(*r.speedup) + ")" : ""));
        right = std::max(right, text_width(value_labels.back(), 12));
        const std::string kind = executor_kind(r.executor);
        if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end())
            kinds.push_back(kind);
    }
    static const std::vector<std::string> legend_order = {"triad", "peer", "python", "sequential"};
    std::sort(kinds.begin(), kinds.end(), [&](const std::string& a, const std::string& b) {
        return std::find(legend_order.begin(), legend_order.end(), a) <
               std::find(legend_order.begin(), legend_order.end(), b);
    });
    if (t.rows.empty()) {
        lo = 1;
        hi = 10;
    }
    const axis x_axis = make_axis(lo, hi, true);
    const int plot_left = margin + static_cast<int>(left) + label_gap;
    const int plot_right = width - margin - static_cast<int>(right) - 8;
    const int plot_w = std::max(200, plot_right - plot_left);
    const auto px = [&](double ns) { return plot_left + x_axis.fraction(ns) * plot_w; };

    std::ostringstream body;
    int y = 20;
    y = text_lines(body, wrap_text(t.info.title, width - 2 * margin, 14, true), margin, y, 18,
                   "font-size=\"14\" font-weight=\"bold\"");
    y = text_lines(body,
                   wrap_text("time per " + t.info.item +
                                 " (median; shorter is better); in brackets, speedup over "
                                 "the same language's sequential run",
                             width - 2 * margin, 12),
                   margin, y, 15, "fill=\"#555\"");
    // The legend: one swatch per kind of contender in the chart, then the error bar.
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
    for (const std::string& kind : kinds) {
        const int x = legend_item(16 + text_width(kind_legend(kind), 12));
        body << "<rect class=\"legend\" x=\"" << x << "\" y=\"" << y << "\" width=\"12\" "
             << "height=\"12\" fill=\"" << executor_color(kind) // a kind is named like one
             << "\"/>\n<text x=\"" << x + 16 << "\" y=\"" << y + 10 << "\">"
             << xml_escape(kind_legend(kind)) << "</text>\n";
    }
    if (any_spread) {
        const int x = legend_item(26 + text_width(spread_legend(), 12));
        error_bar(body, x + 1, y + 6, x + 21, y + 6);
        body << "<text x=\"" << x + 26 << "\" y=\"" << y + 10 << "\">" << spread_legend()
             << "</text>\n";
    }
    y += 24;

    const int plot_top = y;
    const int plot_bottom = plot_top + row_height * static_cast<int>(t.rows.size());
    // Grid lines first, so bars and labels cover them.
    for (double tick : x_axis.ticks)
        body << "<line x1=\"" << px(tick) << "\" y1=\"" << plot_top << "\" x2=\"" << px(tick)
             << "\" y2=\"" << plot_bottom << "\" stroke=\"#e4e4e4\"/>\n";
    for (std::size_t i = 0; i < t.rows.size(); ++i) {
        const row& r = t.rows[i];
        const int top = plot_top + static_cast<int>(i) * row_height;
        const double end = std::max(px(r.ns_per_item), plot_left + 2.0);
        double label_x = end;
        body << "<text x=\"" << plot_left - label_gap << "\" y=\"" << top + 16
             << "\" text-anchor=\"end\">" << xml_escape(r.executor) << "</text>\n"
             << "<rect class=\"bar\" x=\"" << plot_left << "\" y=\"" << top + 4 << "\" width=\""
             << end - plot_left << "\" height=\"" << row_height - 8 << "\" fill=\""
             << executor_color(r.executor) << "\"><title>"
             << xml_escape(r.executor + (r.config.empty() ? "" : " (" + r.config + ")") + ": " +
                           format_time(r.ns_per_item))
             << "</title></rect>\n";
        if (const auto spread = spread_of(r)) {
            error_bar(body, px(spread->first), top + row_height / 2.0, px(spread->second),
                      top + row_height / 2.0);
            label_x = std::max(label_x, px(spread->second));
        }
        body << "<text x=\"" << label_x + 6 << "\" y=\"" << top + 16 << "\">"
             << xml_escape(value_labels[i]) << "</text>\n";
    }
    // The axis: a line, ticks with their times, and what it measures.
    body << "<line x1=\"" << plot_left << "\" y1=\"" << plot_bottom << "\" x2=\""
         << plot_left + plot_w << "\" y2=\"" << plot_bottom << "\" stroke=\"black\"/>\n";
    const auto unit = time_unit(x_axis.hi);
    for (double tick : x_axis.ticks)
        body << "<line x1=\"" << px(tick) << "\" y1=\"" << plot_bottom << "\" x2=\"" << px(tick)
             << "\" y2=\"" << plot_bottom + 5 << "\" stroke=\"black\"/>\n"
             << "<text x=\"" << px(tick) << "\" y=\"" << plot_bottom + 18
             << "\" text-anchor=\"middle\">"
             << xml_escape(time_tick(tick, x_axis.log ? time_unit(tick) : unit)) << "</text>\n";
    body << "<text x=\"" << plot_left + plot_w / 2 << "\" y=\"" << plot_bottom + 36
         << "\" text-anchor=\"middle\">"
         << xml_escape("time per " + t.info.item + (x_axis.log ? " (log scale)" : ""))
         << "</text>\n";
    const int height = plot_bottom + 46;
    return svg_open(width, height) + body.str() + "</svg>\n";
}

// Speedup over sequential against workers (CPU-bound: linear axes, with the ideal speedup,
// min(workers, CPUs)), or time per item against the axis argument (I/O: log axes when the values
// span decades, with the ideal of perfect overlap, the time at the smallest setting divided by
// how many more are in flight). One line per C++ executor that has the axis argument; triad's
// lines solid, the peers' dashed. `cpus` is the machine's CPU count, 0 when unknown.
inline std::string scaling_chart_svg(const std::string& workload, const workload_info& info,
                                     const std::vector<measurement>& all, unsigned cpus = 0) {
    struct point {
        double x;
        double ns;
        std::optional<std::pair<double, double>> spread;
        bool operator<(const point& other) const { return x < other.x; }
    };
    std::map<std::string, std::vector<point>> lines;
    double sequential = 0;
    for (const measurement& m : all) {
        if (m.workload != workload || is_python(m.executor))
            continue;
        if (m.executor == "sequential")
            sequential = m.ns_per_item;
        if (auto a = m.args.find(info.axis); a != m.args.end())
            lines[m.executor].push_back({a->second, m.ns_per_item, spread_of(m)});
    }
    const bool cpu = info.kind == "cpu" && sequential > 0;
    // Speedup, or ns per item; a speedup's interval turns round (a longer time is a lower one).
    const auto value = [&](double ns) { return cpu ? sequential / ns : ns; };
    double x_lo = 1e300;
    double x_hi = 0;
    double y_lo = 1e300;
    double y_hi = 0;
    bool any_spread = false;
    for (auto& [executor, points] : lines) {
        std::sort(points.begin(), points.end());
        for (const point& p : points) {
            x_lo = std::min(x_lo, p.x);
            x_hi = std::max(x_hi, p.x);
            for (double ns :
                 {p.ns, p.spread ? p.spread->first : p.ns, p.spread ? p.spread->second : p.ns}) {
                y_lo = std::min(y_lo, value(ns));
                y_hi = std::max(y_hi, value(ns));
            }
            any_spread = any_spread || p.spread.has_value();
        }
    }
    if (lines.empty()) {
        x_lo = y_lo = 1;
        x_hi = y_hi = 10;
    }
    // The ideal: min(workers, CPUs) for a speedup; perfect overlap for a time.
    std::vector<std::pair<double, double>> ideal;
    std::string ideal_label;
    if (cpu) {
        const double knee = cpus > 0 ? std::min<double>(cpus, x_hi) : x_hi;
        ideal = {{std::min(1.0, x_lo), std::min(1.0, x_lo)}, {knee, knee}};
        if (x_hi > knee)
            ideal.push_back({x_hi, knee});
        y_hi = std::max(y_hi, knee) * 1.05; // room above the top point
        ideal_label = cpus > 0 ? "ideal: min(" + info.axis + ", " + std::to_string(cpus) + " CPUs)"
                               : "ideal: speedup = " + info.axis;
    } else if (!lines.empty()) {
        double first = 1e300; // the best time at the smallest setting
        for (const auto& [executor, points] : lines)
            if (points.front().x == x_lo)
                first = std::min(first, points.front().ns);
        if (first < 1e300 && x_hi > x_lo) {
            ideal = {{x_lo, first}, {x_hi, first * x_lo / x_hi}};
            y_lo = std::min(y_lo, first * x_lo / x_hi);
            char from[32];
            std::snprintf(from, sizeof from, "%g", x_lo);
            ideal_label = x_lo == 1 ? "ideal: time at 1 ÷ " + info.axis
                                    : "ideal: time at " + std::string(from) + " × " + from + " ÷ " +
                                          info.axis;
        }
    }
    const axis x_axis = cpu ? make_axis(0, x_hi, false, static_cast<int>(std::min(x_hi, 8.0)))
                            : make_axis(x_lo, x_hi, true);
    axis y_axis = make_axis(cpu ? 0 : y_lo, y_hi, !cpu);
    if (cpu) { // speedups read best in steps of 1x, 0.5x under 3x
        const double step = y_hi <= 3 ? 0.5 : round_step(y_hi, 6);
        y_axis.hi = std::ceil(y_hi / step - 1e-9) * step;
        y_axis.ticks.clear();
        for (int i = 0; i * step <= y_axis.hi * 1.0001; ++i)
            y_axis.ticks.push_back(i * step);
    }

    // Layout: the title over everything, the legend to the right of the plot.
    // triad's lines in greens, reds and black, the peers' in blues (as in the bar charts).
    static const char* const triad_palette[] = {"#009e73", "#d55e00", "#cc79a7", "#000000"};
    static const char* const peer_palette[] = {"#0072b2", "#56b4e9", "#999999"};
    const int width = 760;
    const int margin = 10;
    double legend_w = text_width(ideal_label, 12);
    for (const auto& [executor, points] : lines)
        legend_w = std::max(legend_w, text_width(executor, 12));
    if (any_spread)
        legend_w = std::max(legend_w, text_width(spread_legend(), 12));
    const int legend_left = width - margin - static_cast<int>(legend_w) - 30;
    std::ostringstream body;
    int y = 20;
    y = text_lines(body, wrap_text(info.title, width - 2 * margin, 14, true), margin, y, 18,
                   "font-size=\"14\" font-weight=\"bold\"");
    const std::string y_title = cpu ? "speedup over sequential"
                                    : "time per " + info.item + (y_axis.log ? " (log scale)" : "");
    const auto y_unit = time_unit(y_axis.hi);
    double tick_w = 0;
    for (double tick : y_axis.ticks) {
        char label[32];
        std::snprintf(label, sizeof label, "%g×", tick);
        tick_w = std::max(tick_w,
                          text_width(cpu ? std::string(label)
                                         : time_tick(tick, y_axis.log ? time_unit(tick) : y_unit),
                                     12));
    }
    const int plot_left = margin + 20 + static_cast<int>(tick_w) + 10;
    const int plot_right = legend_left - 24;
    const int plot_top = y + 4;
    const int plot_h = 250;
    const int plot_bottom = plot_top + plot_h;
    const int plot_w = plot_right - plot_left;
    const auto px = [&](double x) { return plot_left + x_axis.fraction(x) * plot_w; };
    const auto py = [&](double v) { return plot_bottom - y_axis.fraction(v) * plot_h; };

    // Axes, grid and ticks.
    for (double tick : y_axis.ticks) {
        char label[32];
        std::snprintf(label, sizeof label, "%g×", tick);
        body << "<line x1=\"" << plot_left << "\" y1=\"" << py(tick) << "\" x2=\"" << plot_right
             << "\" y2=\"" << py(tick) << "\" stroke=\"#e4e4e4\"/>\n"
             << "<text x=\"" << plot_left - 6 << "\" y=\"" << py(tick) + 4
             << "\" text-anchor=\"end\">"
             << xml_escape(cpu ? std::string(label)
                               : time_tick(tick, y_axis.log ? time_unit(tick) : y_unit))
             << "</text>\n";
    }
    std::vector<double> x_ticks = x_axis.ticks;
    if (cpu) // workers are whole numbers; zero workers is no point to label
        x_ticks.erase(std::remove_if(x_ticks.begin(), x_ticks.end(),
                                     [](double v) { return v == 0 || v != std::floor(v); }),
                      x_ticks.end());
    for (double tick : x_ticks) {
        char label[32];
        std::snprintf(label, sizeof label, "%g", tick);
        body << "<line x1=\"" << px(tick) << "\" y1=\"" << plot_bottom << "\" x2=\"" << px(tick)
             << "\" y2=\"" << plot_bottom + 5 << "\" stroke=\"black\"/>\n"
             << "<text x=\"" << px(tick) << "\" y=\"" << plot_bottom + 18
             << "\" text-anchor=\"middle\">" << label << "</text>\n";
    }
    body << "<line x1=\"" << plot_left << "\" y1=\"" << plot_bottom << "\" x2=\"" << plot_right
         << "\" y2=\"" << plot_bottom << "\" stroke=\"black\"/>\n"
         << "<line x1=\"" << plot_left << "\" y1=\"" << plot_top << "\" x2=\"" << plot_left
         << "\" y2=\"" << plot_bottom << "\" stroke=\"black\"/>\n"
         << "<text x=\"" << (plot_left + plot_right) / 2 << "\" y=\"" << plot_bottom + 36
         << "\" text-anchor=\"middle\">"
         << xml_escape(info.axis + (x_axis.log ? " (log scale)" : "")) << "</text>\n"
         << "<text x=\"" << margin + 12 << "\" y=\"" << plot_top + plot_h / 2
         << "\" transform=\"rotate(-90 " << margin + 12 << " " << plot_top + plot_h / 2
         << ")\" text-anchor=\"middle\">" << xml_escape(y_title) << "</text>\n";

    // The ideal, under the data.
    if (!ideal.empty()) {
        body << "<polyline class=\"ideal\" fill=\"none\" stroke=\"#777\" stroke-width=\"1.5\" "
                "stroke-dasharray=\"2 4\" points=\"";
        for (const auto& [x, v] : ideal)
            body << px(x) << "," << py(v) << " ";
        body << "\"/>\n";
    }
    // The data, and the legend beside the plot.
    int legend_y = plot_top;
    const auto legend_line = [&](const std::string& color, const std::string& dash,
                                 const std::string& label) {
        legend_line_entry(body, legend_left, legend_y, color, dash, label);
    };
    int triad_series = 0;
    int peer_series = 0;
    int series = 0;
    for (const auto& [executor, points] : lines) {
        // Each series' error bars a little to the side of the others', so that they do not hide
        // one another where the lines meet.
        const double dodge = (series++ - (static_cast<double>(lines.size()) - 1) / 2) * 4;
        const bool triad = executor_kind(executor) == "triad";
        const std::string color =
            triad ? triad_palette[triad_series++ % 4] : peer_palette[peer_series++ % 3];
        const std::string dash = triad ? "" : " stroke-dasharray=\"7 4\"";
        body << "<polyline class=\"series\" fill=\"none\" stroke=\"" << color
             << "\" stroke-width=\"2\"" << dash << " points=\"";
        for (const point& p : points)
            body << px(p.x) << "," << py(value(p.ns)) << " ";
        body << "\"/>\n";
        for (const point& p : points) {
            if (p.spread)
                error_bar(body, px(p.x) + dodge, py(value(p.spread->first)), px(p.x) + dodge,
                          py(value(p.spread->second)), color);
            body << "<circle cx=\"" << px(p.x) << "\" cy=\"" << py(value(p.ns)) << "\" r=\"3\" "
                 << (triad ? "fill=\"" + color + "\"" : "fill=\"white\" stroke=\"" + color + "\"")
                 << "/>\n";
        }
        legend_line(color, dash, executor);
    }
    if (!ideal.empty())
        legend_line("#777", " stroke-dasharray=\"2 4\"", ideal_label);
    if (any_spread) {
        error_bar(body, legend_left + 11, legend_y + 2, legend_left + 11, legend_y + 14);
        body << "<text x=\"" << legend_left + 28 << "\" y=\"" << legend_y + 12 << "\">"
             << spread_legend() << "</text>\n";
        legend_y += 18;
    }
    const int height = std::max(plot_bottom + 46, legend_y + 10);
    return svg_open(width, height) + body.str() + "</svg>\n";
}

} // namespace triad_report

namespace triad_report {

// The task-size sweep in one chart: for each executor, its efficiency (the work's own time over
// the time it took, per worker: 100% is perfect use of the workers) by the size of one task,
// from the workloads named task_<N>us. Empty when fewer than two sizes were measured.
inline std::string efficiency_chart_svg(const std::vector<table>& tables) {
    std::map<std::string, std::vector<std::pair<double, double>>> lines; // executor -> (us, eff)
    std::set<double> sizes;
    for (const table& t : tables) {
        unsigned us = 0;
        char tail = 0;
        if (std::sscanf(t.workload.c_str(), "task_%uu%c", &us, &tail) != 2 || tail != 's')
            continue;
        for (const row& r : t.rows) {
            const auto e = r.counters.find("efficiency");
            if (e == r.counters.end() || r.executor == "sequential" || is_python(r.executor))
                continue;
            lines[r.executor].push_back({static_cast<double>(us), e->second});
            sizes.insert(us);
        }
    }
    if (sizes.size() < 2)
        return {};
    static const char* const triad_palette[] = {"#009e73", "#d55e00", "#cc79a7", "#000000",
                                                "#e69f00"};
    static const char* const peer_palette[] = {"#0072b2", "#56b4e9", "#999999", "#332288"};
    const int width = 760;
    const int margin = 10;
    double legend_w = text_width("ideal: 100%", 12);
    for (const auto& [executor, points] : lines)
        legend_w = std::max(legend_w, text_width(executor, 12));
    const int legend_left = width - margin - static_cast<int>(legend_w) - 30;
    std::ostringstream body;
    int y = 20;
    y = text_lines(body,
                   wrap_text("Efficiency by task size: where each model's per-task overhead "
                             "stops mattering",
                             width - 2 * margin, 14, true),
                   margin, y, 18, "font-size=\"14\" font-weight=\"bold\"");
    y = text_lines(body,
                   wrap_text("The work's own time over the time taken times the workers "
                             "(medians; 100% = every worker busy with the work alone).",
                             legend_left - margin, 12),
                   margin, y, 16, "fill=\"#555\"");
    const axis x_axis = make_axis(*sizes.begin(), *sizes.rbegin(), true);
    const int plot_left = margin + 60;
    const int plot_right = legend_left - 24;
    const int plot_top = y + 8;
    const int plot_h = 250;
    const int plot_bottom = plot_top + plot_h;
    const int plot_w = plot_right - plot_left;
    const auto px = [&](double x) { return plot_left + x_axis.fraction(x) * plot_w; };
    const auto py = [&](double v) { return plot_bottom - std::clamp(v, 0.0, 1.1) / 1.1 * plot_h; };
    for (int tick = 0; tick <= 100; tick += 20) {
        body << "<line x1=\"" << plot_left << "\" y1=\"" << py(tick / 100.0) << "\" x2=\""
             << plot_right << "\" y2=\"" << py(tick / 100.0) << "\" stroke=\"#e4e4e4\"/>\n"
             << "<text x=\"" << plot_left - 6 << "\" y=\"" << py(tick / 100.0) + 4
             << "\" text-anchor=\"end\">" << tick << "%</text>\n";
    }
    for (double tick : x_axis.ticks)
        body << "<line x1=\"" << px(tick) << "\" y1=\"" << plot_bottom << "\" x2=\"" << px(tick)
             << "\" y2=\"" << plot_bottom + 5 << "\" stroke=\"black\"/>\n"
             << "<text x=\"" << px(tick) << "\" y=\"" << plot_bottom + 18
             << "\" text-anchor=\"middle\">"
             << xml_escape(time_tick(tick * 1e3, time_unit(tick * 1e3))) << "</text>\n";
    body << "<line x1=\"" << plot_left << "\" y1=\"" << plot_bottom << "\" x2=\"" << plot_right
         << "\" y2=\"" << plot_bottom << "\" stroke=\"black\"/>\n"
         << "<line x1=\"" << plot_left << "\" y1=\"" << plot_top << "\" x2=\"" << plot_left
         << "\" y2=\"" << plot_bottom << "\" stroke=\"black\"/>\n"
         << "<text x=\"" << (plot_left + plot_right) / 2 << "\" y=\"" << plot_bottom + 36
         << "\" text-anchor=\"middle\">work per task (log scale)</text>\n"
         << "<text x=\"" << margin + 12 << "\" y=\"" << plot_top + plot_h / 2
         << "\" transform=\"rotate(-90 " << margin + 12 << " " << plot_top + plot_h / 2
         << ")\" text-anchor=\"middle\">efficiency</text>\n"
         << "<polyline class=\"ideal\" fill=\"none\" stroke=\"#777\" stroke-width=\"1.5\" "
            "stroke-dasharray=\"2 4\" points=\""
         << plot_left << "," << py(1) << " " << plot_right << "," << py(1) << "\"/>\n";
    int legend_y = plot_top;
    const auto legend_line = [&](const std::string& color, const std::string& dash,
                                 const std::string& label) {
        legend_line_entry(body, legend_left, legend_y, color, dash, label);
    };
    int triad_series = 0;
    int peer_series = 0;
    for (auto& [executor, points] : lines) {
        std::sort(points.begin(), points.end());
        const bool triad = executor_kind(executor) == "triad";
        const std::string color =
            triad ? triad_palette[triad_series++ % 5] : peer_palette[peer_series++ % 4];
        const std::string dash = triad ? "" : " stroke-dasharray=\"7 4\"";
        body << "<polyline class=\"series\" fill=\"none\" stroke=\"" << color
             << "\" stroke-width=\"2\"" << dash << " points=\"";
        for (const auto& [us, eff] : points)
            body << px(us) << "," << py(eff) << " ";
        body << "\"/>\n";
        for (const auto& [us, eff] : points)
            body << "<circle cx=\"" << px(us) << "\" cy=\"" << py(eff) << "\" r=\"3\" "
                 << (triad ? "fill=\"" + color + "\"" : "fill=\"white\" stroke=\"" + color + "\"")
                 << "/>\n";
        legend_line(color, dash, executor);
    }
    legend_line("#777", " stroke-dasharray=\"2 4\"", "ideal: 100%");
    const int height = std::max(plot_bottom + 46, legend_y + 10);
    return svg_open(width, height) + body.str() + "</svg>\n";
}

} // namespace triad_report
