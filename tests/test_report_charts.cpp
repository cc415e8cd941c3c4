// The report's charts (bench/report/charts.hpp, timeline.hpp) and the README's generated sections
// (bench/report/readme.hpp), on small made-up data: the axes, legends and error bars the charts
// must have, the timelines' lanes and busy shares, and the markers --update-readme and
// --check-readme rely on.

#include "readme.hpp"
#include "report.hpp"

#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <sstream>
#include <string>

namespace {

boost::property_tree::ptree parse_svg(const std::string& text) {
    std::istringstream in(text);
    boost::property_tree::ptree tree;
    boost::property_tree::read_xml(in, tree); // throws on malformed XML
    return tree;
}

// Elements named `tag` with class `cls` anywhere under `tree`.
std::size_t count_class(const boost::property_tree::ptree& tree, const std::string& tag,
                        const std::string& cls) {
    std::size_t n = 0;
    for (const auto& [name, child] : tree) {
        if (name == tag && child.get<std::string>("<xmlattr>.class", "") == cls)
            ++n;
        n += count_class(child, tag, cls);
    }
    return n;
}

bool has_text(const std::string& svg, const std::string& text) {
    return svg.find(">" + text + "</text>") != std::string::npos;
}

triad_report::row make_row(const std::string& executor, double ns, double low = 0,
                           double high = 0) {
    triad_report::row r{executor, "", ns, std::nullopt};
    if (high > low) {
        r.ns_low = low;
        r.ns_high = high;
    }
    return r;
}

triad_report::measurement make_measurement(const std::string& executor, double workers, double ns) {
    triad_report::measurement m;
    m.workload = "w";
    m.executor = executor;
    if (workers > 0) {
        m.config = "workers:" + std::to_string(static_cast<int>(workers));
        m.args["workers"] = workers;
    }
    m.ns_per_item = ns;
    return m;
}

} // namespace

TEST_CASE("a bar chart over decades has a log axis labelled at round decades with units") {
    triad_report::table t;
    t.info = {"Work", "cpu", "item", ""};
    t.rows = {make_row("triad_threads", 450e3), make_row("python_threads", 22e6)};
    const std::string svg = triad_report::bar_chart_svg(t);
    parse_svg(svg);
    CHECK(has_text(svg, "100 µs"));
    CHECK(has_text(svg, "1 ms"));
    CHECK(has_text(svg, "10 ms"));
    CHECK(has_text(svg, "100 ms"));
    CHECK(has_text(svg, "time per item (log scale)"));
}

TEST_CASE("a bar chart within a decade has a linear axis from zero with round ticks") {
    triad_report::table t;
    t.info = {"Work", "io", "request", ""};
    t.rows = {make_row("sequential", 1.7e6), make_row("triad_loop", 3.6e6)};
    const std::string svg = triad_report::bar_chart_svg(t);
    CHECK(has_text(svg, "0"));
    CHECK(has_text(svg, "1 ms"));
    CHECK(has_text(svg, "4 ms"));
    CHECK(has_text(svg, "time per request"));
    CHECK(svg.find("log scale") == std::string::npos);
}

TEST_CASE("a bar chart has a legend for the kinds it shows, peers in another colour than triad") {
    triad_report::table t;
    t.info = {"Work", "cpu", "item", ""};
    t.rows = {make_row("triad_threads", 1e3), make_row("asio_thread_pool", 2e3),
              make_row("sequential", 3e3)};
    const std::string svg = triad_report::bar_chart_svg(t);
    CHECK(count_class(parse_svg(svg), "rect", "legend") == 3); // no Python: no Python swatch
    CHECK(has_text(svg, "triad"));
    CHECK(has_text(svg, "C++ peers"));
    CHECK(triad_report::executor_color("triad_threads") !=
          triad_report::executor_color("asio_thread_pool"));
}

TEST_CASE("a bar chart draws an error bar for each row with a spread, and says what it is") {
    triad_report::table t;
    t.info = {"Work", "cpu", "item", ""};
    t.rows = {make_row("triad_threads", 1e3, 0.9e3, 1.2e3), make_row("asio_thread_pool", 2e3)};
    const std::string svg = triad_report::bar_chart_svg(t);
    const auto tree = parse_svg(svg);
    CHECK(count_class(tree, "rect", "bar") == 2);
    CHECK(count_class(tree, "g", "spread") == 2); // the row's, and the legend's
    CHECK(has_text(svg, "interval of the median"));
    t.rows[0] = make_row("triad_threads", 1e3);
    CHECK(count_class(parse_svg(triad_report::bar_chart_svg(t)), "g", "spread") == 0);
}

TEST_CASE("a speedup chart has round ticks and the ideal line, capped at the CPU count") {
    const triad_report::workload_info info{"Work", "cpu", "item", "workers"};
    std::vector<triad_report::measurement> all = {
        make_measurement("sequential", 0, 1000), make_measurement("triad_threads", 1, 1000),
        make_measurement("triad_threads", 2, 510), make_measurement("triad_threads", 4, 505),
        make_measurement("asio_thread_pool", 2, 520)};
    all.back().ns_low = 500;
    all.back().ns_high = 560;
    const std::string svg = triad_report::scaling_chart_svg("w", info, all, 2);
    const auto tree = parse_svg(svg);
    CHECK(count_class(tree, "polyline", "series") == 2);
    CHECK(count_class(tree, "polyline", "ideal") == 1);
    CHECK(has_text(svg, "ideal: min(workers, 2 CPUs)"));
    CHECK(has_text(svg, "1×"));
    CHECK(has_text(svg, "2×"));
    CHECK(has_text(svg, "speedup over sequential"));
    CHECK(count_class(tree, "g", "spread") == 2); // asio's point, and the legend's
}

TEST_CASE("the README's sections are replaced between their markers, and checked") {
    const std::string readme = "intro\n<!-- report:headline -->\nold | 1 ms\n"
                               "<!-- /report:headline -->\nmiddle\n<!-- report:overheads -->\n"
                               "<!-- /report:overheads -->\nend\n";
    const std::map<std::string, std::string> sections = {{"headline", "| 2 ms |\n"},
                                                         {"overheads", "a\nb\n"}};
    const std::string updated = triad_report::update_readme(readme, sections);
    CHECK(updated == "intro\n<!-- report:headline -->\n| 2 ms |\n<!-- /report:headline -->\n"
                     "middle\n<!-- report:overheads -->\na\nb\n<!-- /report:overheads -->\nend\n");
    CHECK(triad_report::readme_differences(updated, sections).empty());
    CHECK(triad_report::update_readme(updated, sections) == updated);

    const auto differences = triad_report::readme_differences(readme, sections);
    REQUIRE(differences.size() == 2);
    CHECK(differences[0].find("section report:headline differs") == 0);
    CHECK(differences[0].find("old | 1 ms") != std::string::npos);

    const std::map<std::string, std::string> more = {{"choosing", "x\n"}};
    CHECK(triad_report::readme_differences(readme, more).at(0).find("missing") !=
          std::string::npos);
    CHECK_THROWS(triad_report::update_readme(readme, more));
}

namespace {

// tests/data/report_timeline/raw/traces, beside the report fixture.
const std::string timeline_traces = std::string(TRIAD_REPORT_FIXTURE) + "_timeline/raw/traces";

triad_report::trace fixture_trace() {
    const auto traces = triad_report::read_traces(timeline_traces);
    REQUIRE(traces.contains("primes.triad_thread_pool.json"));
    return triad_report::parse_trace(traces.at("primes.triad_thread_pool.json"),
                                     "raw/traces/primes.triad_thread_pool.json");
}

const triad_report::trace_lane& lane_named(const triad_report::trace& t, const std::string& name) {
    for (const auto& lane : t.lanes)
        if (lane.name == name)
            return lane;
    FAIL("no lane named " << name);
    throw 0; // not reached
}

// A trace of `events` tasks of 1 µs spread over `lanes` threads, a 2 µs gap after each and 5 ms
// after every 200th: far more tasks than a row has pixels, and gaps wider than a pixel to keep.
std::string synthetic_trace(int lanes, int events) {
    std::string json = "{\"traceEvents\":[";
    for (int lane = 0; lane < lanes; ++lane)
        json += "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":" +
                std::to_string(10 + lane) + ",\"args\":{\"name\":\"worker " + std::to_string(lane) +
                "\"}},";
    char event[160];
    for (int i = 0; i < events; ++i) {
        std::snprintf(event, sizeof event,
                      "%s{\"name\":\"task\",\"cat\":\"thread_pool\",\"ph\":\"X\",\"ts\":%.3f,"
                      "\"dur\":1.000,\"pid\":1,\"tid\":%d}",
                      i == 0 ? "" : ",", (i / lanes) * 3.0 + (i / lanes / 200) * 5000.0,
                      10 + i % lanes);
        json += event;
    }
    return json + "],\"displayTimeUnit\":\"ns\",\"otherData\":{\"workload\":\"w\","
                  "\"executor\":\"e\",\"title\":\"many\",\"dropped_events\":0}}";
}

} // namespace

TEST_CASE("a trace's lanes are found, named and ordered by category, then by name naturally") {
    const triad_report::trace t = fixture_trace();
    std::vector<std::string> names;
    for (const auto& lane : t.lanes)
        names.push_back(lane.name);
    CHECK(names == std::vector<std::string>{"event_loop 1 loop",
                                            "process_pool 1 worker 0 (pid 1300)", // process_name
                                            "pid 1400 tid 1401", // no metadata at all
                                            "thread_pool 1 worker 0", "thread_pool 1 worker 1",
                                            "thread_pool 1 worker 9", "thread_pool 1 worker 10",
                                            "thread_pool 1 worker 2"}); // named, no task: last
    CHECK(t.categories == std::vector<std::string>{"event_loop", "process_pool", "thread_pool"});
    CHECK(lane_named(t, "process_pool 1 worker 0 (pid 1300)").pid == 1300);
    CHECK(lane_named(t, "thread_pool 1 worker 2").tasks == 0);
    CHECK(t.tasks == 11);
    CHECK(t.title == "prime checks, 2 workers");
    CHECK(t.workload == "primes");
    CHECK(t.executor == "triad_thread_pool");
    CHECK(t.start_us == 0);
    CHECK(t.end_us == 200);
}

TEST_CASE("a lane's busy time is the union of its intervals: nested tasks count once") {
    const triad_report::trace t = fixture_trace();
    // [0, 100) holding [20, 50) holding [30, 40), then [120, 150): 130 µs busy, not the 170 µs
    // the durations add up to.
    CHECK(lane_named(t, "thread_pool 1 worker 0").busy_us == Approx(130));
    CHECK(lane_named(t, "thread_pool 1 worker 1").busy_us == Approx(50));
    CHECK(triad_report::union_length({{0, 10}, {5, 15}, {20, 25}, {21, 22}}) == Approx(20));
    const std::string summary = triad_report::timeline_summary(t);
    CHECK(summary.find("8 lanes, 11 tasks in 200.00 µs; busy: ") == 0);
    CHECK(summary.find("thread_pool 1 worker 0 65%") != std::string::npos);
    CHECK(summary.find("thread_pool 1 worker 10 75%") != std::string::npos);
    CHECK(summary.find("thread_pool 1 worker 2 0%") != std::string::npos);
    CHECK(summary.find("pid 1400 tid 1401 <1%") != std::string::npos); // 1 µs of 200
}

TEST_CASE("a timeline has a row per lane, round time ticks, a legend and nested bands") {
    const triad_report::trace t = fixture_trace();
    const std::string svg = triad_report::timeline_svg(t);
    const auto tree = parse_svg(svg);
    CHECK(count_class(tree, "rect", "lane") == t.lanes.size());
    CHECK(count_class(tree, "rect", "legend") == 4); // three categories and the nesting
    CHECK(has_text(svg, "prime checks, 2 workers"));
    CHECK(has_text(svg, "thread_pool 1 worker 10"));
    CHECK(has_text(svg, "0"));
    CHECK(has_text(svg, "100 µs"));
    CHECK(has_text(svg, "200 µs"));
    CHECK(has_text(svg, "time since the first event"));
    CHECK(has_text(svg, "task inside a task"));
    CHECK(has_text(svg, "65%"));
    CHECK(has_text(svg, "&lt;1%"));
    // Worker 0's three levels, each darker than the one it is in.
    CHECK(svg.find("fill=\"#009e73\"") != std::string::npos);
    CHECK(svg.find("fill=\"" + triad_report::darker("#009e73", 0.7) + "\"") != std::string::npos);
    CHECK(svg.find("fill=\"" + triad_report::darker("#009e73", 0.4) + "\"") != std::string::npos);
}

TEST_CASE("a timeline of 100,000 tasks stays small: tasks closer than a pixel are merged") {
    const triad_report::trace t =
        triad_report::parse_trace(synthetic_trace(2, 100000), "synthetic.json");
    REQUIRE(t.tasks == 100000);
    REQUIRE(t.lanes.size() == 2);
    CHECK(t.lanes[0].busy_us == Approx(50000));
    const std::string svg = triad_report::timeline_svg(t);
    const auto tree = parse_svg(svg);
    std::size_t runs = 0; // rectangles, as "M" commands of the busy paths
    const std::function<void(const boost::property_tree::ptree&)> count =
        [&](const boost::property_tree::ptree& node) {
            for (const auto& [name, child] : node) {
                if (name == "path" && child.get<std::string>("<xmlattr>.class", "") == "busy") {
                    const std::string d = child.get<std::string>("<xmlattr>.d");
                    runs += static_cast<std::size_t>(std::count(d.begin(), d.end(), 'M'));
                }
                count(child);
            }
        };
    count(tree);
    CHECK(runs >= 2 * 250); // the 250 bursts of each lane stay apart
    CHECK(runs <= 2 * 760); // a rectangle per pixel of the chart's width per lane at most
    CHECK(svg.size() < 300 * 1024);

    // Columns of 1 µs: a whole one, one 70% busy, one 50%, one 10% (shown as a quarter: busy
    // at all), an empty one, one with two tasks, none after the last task.
    const auto runs_of = triad_report::pixel_runs(
        {{0, 1}, {1.3, 2}, {2, 2.5}, {3.6, 3.7}, {5, 5.1}, {5.2, 5.3}}, 0, 1, 10);
    REQUIRE(runs_of.size() == 5);
    CHECK(runs_of[0].from == 0);
    CHECK(runs_of[0].to == 1);
    CHECK(runs_of[0].density == 1);
    CHECK(runs_of[1].density == 0.75);
    CHECK(runs_of[2].density == 0.5);
    CHECK(runs_of[3].from == 3);
    CHECK(runs_of[3].to == 4);
    CHECK(runs_of[3].density == 0.25);
    CHECK(runs_of[4].from == 5); // two tasks in one column: 20%, apart from the one before
    CHECK(runs_of[4].density == 0.25);
    // A task over many columns fills them, with its partial edges by their share.
    const auto long_task = triad_report::pixel_runs({{0.5, 7.5}}, 0, 1, 10);
    REQUIRE(long_task.size() == 3);
    CHECK(long_task[1].from == 1);
    CHECK(long_task[1].to == 7);
    CHECK(long_task[1].density == 1);
    CHECK(long_task[2].density == 0.5);
}

TEST_CASE("no traces directory, or an empty one, leaves the report as it was") {
    CHECK(triad_report::read_traces(timeline_traces + "/no such directory").empty());
    const std::filesystem::path empty =
        std::filesystem::temp_directory_path() / "triad_test_report_no_traces";
    std::filesystem::create_directories(empty);
    CHECK(triad_report::read_traces(empty).empty());
    std::filesystem::remove(empty);

    const std::map<std::string, triad_report::workload_info> workloads = {
        {"w", {"Work", "cpu", "item", ""}}};
    const std::vector<triad_report::measurement> all = {make_measurement("triad_threads", 0, 10)};
    const auto before = triad_report::render_report(workloads, all, "preamble\n");
    CHECK(before.at("REPORT.md").find("timelines") == std::string::npos);
    triad_report::report_context context;
    context.traces = triad_report::read_traces(timeline_traces);
    const auto after = triad_report::render_report(workloads, all, "preamble\n", context);
    CHECK(after.size() == before.size() + 1);
    CHECK(after.contains("charts/timeline_primes.triad_thread_pool.svg"));
    const std::string& md = after.at("REPORT.md");
    CHECK(md.find("## Where the time goes: timelines\n") != std::string::npos);
    // A map's ranges nest in their runner with no worker waiting: the text says so, and that
    // busy (time inside tasks) is not CPU time.
    CHECK(md.find("a `map`'s range of items inside its runner") != std::string::npos);
    CHECK(md.find("busy is not CPU time") != std::string::npos);
    CHECK(md.find("### prime checks, 2 workers\n\n`primes` on `triad_thread_pool`: 8 lanes, 11 "
                  "tasks in 200.00 µs; busy: ") != std::string::npos);
    CHECK(md.find("(charts/timeline_primes.triad_thread_pool.svg)") != std::string::npos);
}

TEST_CASE("a malformed trace is named with what is wrong, and the others are still drawn") {
    CHECK_THROWS_WITH(triad_report::parse_trace("{\"traceEvents\":[", "raw/traces/cut.e.json"),
                      Catch::Contains("raw/traces/cut.e.json: not valid JSON"));
    CHECK_THROWS_WITH(triad_report::parse_trace("{\"events\":[]}", "raw/traces/other.e.json"),
                      Catch::Contains("raw/traces/other.e.json: no traceEvents array"));
    CHECK_THROWS_WITH(
        triad_report::parse_trace("{\"traceEvents\":[{\"ph\":\"X\",\"pid\":1,\"tid\":1,\"ts\":1}]}",
                                  "raw/traces/x.e.json"),
        Catch::Contains("raw/traces/x.e.json: traceEvents[0]: missing number field 'dur'"));

    std::map<std::string, std::string> traces = triad_report::read_traces(timeline_traces);
    traces["broken.triad_loop.json"] = "{\"traceEvents\":[{\"ph\":";
    std::map<std::string, std::string> files;
    const std::string section = triad_report::timeline_section(traces, files);
    CHECK(files.size() == 1); // the good one's chart
    CHECK(section.find("**Traces that could not be read:**\n\n- raw/traces/broken.triad_loop.json: "
                       "not valid JSON") != std::string::npos);
    CHECK(section.find("### prime checks, 2 workers") != std::string::npos);
}

TEST_CASE("the task-size sweep is one efficiency chart: a line per executor over the sizes") {
    const auto sized = [](const std::string& workload,
                          std::vector<std::pair<std::string, double>> efficiencies) {
        triad_report::table t;
        t.workload = workload;
        for (const auto& [executor, efficiency] : efficiencies) {
            triad_report::row r = make_row(executor, 1000);
            r.counters["efficiency"] = efficiency;
            t.rows.push_back(r);
        }
        return t;
    };
    std::vector<triad_report::table> tables = {
        sized("task_1us", {{"triad_threads", 0.9}, {"tbb_task_group", 0.5}, {"sequential", 1}}),
        sized("task_1000us", {{"triad_threads", 0.97}, {"tbb_task_group", 0.96}}),
        sized("primes", {{"triad_threads", 0.2}})};
    const std::string svg = triad_report::efficiency_chart_svg(tables);
    const auto tree = parse_svg(svg);
    CHECK(count_class(tree, "polyline", "series") == 2); // not the sequential row's, nor primes'
    CHECK(count_class(tree, "polyline", "ideal") == 1);
    CHECK(has_text(svg, "1 µs"));
    CHECK(has_text(svg, "1 ms"));
    CHECK(has_text(svg, "100%"));
    CHECK(has_text(svg, "triad_threads"));
    CHECK(has_text(svg, "tbb_task_group"));
    // One size is no sweep: no chart.
    tables.erase(tables.begin());
    CHECK(triad_report::efficiency_chart_svg(tables).empty());
}

TEST_CASE("a table cell names the three fastest of a long tie and counts the rest") {
    triad_report::table t;
    t.fastest = "a";
    t.ties = {"b", "c"};
    CHECK(triad_report::verdict_cell(t) == "tie: a, b and c");
    t.ties = {"b", "c", "d"};
    CHECK(triad_report::verdict_cell(t) == "tie: a, b, c and d");
    t.ties = {"b", "c", "d", "e", "f"};
    CHECK(triad_report::verdict_cell(t) == "tie of 6: a, b, c and 3 more");
    t.winner = "a";
    CHECK(triad_report::verdict_cell(t) == "**a**");
}
