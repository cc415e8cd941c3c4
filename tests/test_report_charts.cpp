// The report's charts (bench/report/charts.hpp) and the README's generated sections
// (bench/report/readme.hpp), on small made-up data: the axes, legends and error bars the charts
// must have, and the markers --update-readme and --check-readme rely on.

#include "readme.hpp"
#include "report.hpp"

#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>

#include <catch2/catch.hpp>

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
