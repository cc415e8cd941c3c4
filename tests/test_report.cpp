// The benchmark report generator (bench/report/report.hpp) on a small fixed Google Benchmark
// JSON file: the tables and winners it derives are exact, the SVG charts are well-formed XML
// with one bar per row.

#include "report.hpp"

#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>

namespace {

std::string fixture(const std::string& name) {
    std::ifstream in(std::string(TRIAD_REPORT_FIXTURE) + "/raw/" + name);
    REQUIRE(in);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

struct fixture_data {
    triad_report::registry reg = triad_report::parse_registry(fixture("cpu_bound.registry.jsonl"));
    std::vector<triad_report::measurement> all = [this] {
        auto out = triad_report::parse_results(fixture("cpu_bound.json"), reg);
        for (auto& m : triad_report::parse_python_rows(fixture("python.jsonl")))
            if (reg.workloads.contains(m.workload))
                out.push_back(std::move(m));
        return out;
    }();
};

const triad_report::measurement* find(const std::vector<triad_report::measurement>& all,
                                      const std::string& executor, const std::string& config) {
    for (const auto& m : all)
        if (m.executor == executor && m.config == config)
            return &m;
    return nullptr;
}

// Counts elements named `tag` whose attribute class is `cls`, anywhere under `tree`.
std::size_t count_elements(const boost::property_tree::ptree& tree, const std::string& tag,
                           const std::string& cls) {
    std::size_t n = 0;
    for (const auto& [name, child] : tree) {
        if (name == tag && child.get<std::string>("<xmlattr>.class", "") == cls)
            ++n;
        n += count_elements(child, tag, cls);
    }
    return n;
}

boost::property_tree::ptree parse_xml(const std::string& text) {
    std::istringstream in(text);
    boost::property_tree::ptree tree;
    boost::property_tree::read_xml(in, tree); // throws on malformed XML
    return tree;
}

} // namespace

TEST_CASE("the registry maps families to executors and workloads") {
    const fixture_data d;
    CHECK(d.reg.families.size() == 6);
    CHECK(d.reg.families.at("BM_triad_threads_primes") ==
          std::pair<std::string, std::string>{"triad_threads", "primes"});
    CHECK(d.reg.workloads.at("primes").kind == "cpu");
    CHECK(d.reg.workloads.at("primes").axis == "workers");
    CHECK(d.reg.workloads.at("pool_post").title == "Post a trivial task");
}

TEST_CASE("results: medians replace repetitions, iteration runs are averaged, errors and strangers "
          "skipped") {
    const fixture_data d;
    // 6 C++ configurations (the errored one and the unregistered family dropped) + 3 Python rows
    // (the one whose workload no binary describes dropped).
    REQUIRE(d.all.size() == 9);
    const auto* sequential = find(d.all, "sequential", "");
    REQUIRE(sequential != nullptr);
    CHECK(sequential->ns_per_item == Approx(1e6)); // the median (1000 ms), not the mean or a run
    const auto* two = find(d.all, "triad_threads", "workers:2");
    REQUIRE(two != nullptr);
    CHECK(two->ns_per_item == Approx(5e5)); // (520 + 480) / 2 ms over 1000 items
    CHECK(two->args.at("workers") == 2);
    const auto* processes = find(d.all, "triad_processes", "workers:2");
    REQUIRE(processes != nullptr);
    CHECK(processes->ns_per_item == Approx(5.5e5)); // seconds converted
    CHECK(find(d.all, "asio_thread_pool", "workers:2") == nullptr);
    const auto* post = find(d.all, "triad_threads", "");
    REQUIRE(post != nullptr);
    CHECK(post->ns_per_item == Approx(80.0));
    CHECK(post->counters.at("bytes_per_task") == 64.0);
}

TEST_CASE("run names split into family and configuration") {
    using triad_report::split_run_name;
    CHECK(split_run_name("BM_x/workers:2/iterations:3/real_time") ==
          std::pair<std::string, std::string>{"BM_x", "workers:2"});
    CHECK(split_run_name("BM_x") == std::pair<std::string, std::string>{"BM_x", ""});
    CHECK(split_run_name("BM_x/requests:20/delay_ms:10/real_time").second ==
          "requests:20/delay_ms:10");
    CHECK(triad_report::parse_args("requests:20/delay_ms:10").at("delay_ms") == 10);
}

TEST_CASE(
    "the workload table: matched configuration, speedups per language, no winner from one run") {
    const fixture_data d;
    const auto t = triad_report::make_table("primes", d.reg.workloads.at("primes"), d.all);
    REQUIRE(t.rows.size() == 5);
    CHECK(t.matched_config == "workers:2");
    CHECK(t.fastest == "triad_threads");
    // The other rows have one run each: nothing can be significant, so nobody wins.
    CHECK(t.winner.empty());
    CHECK(t.ties == std::vector<std::string>{"triad_processes", "sequential"});
    CHECK(t.runner_up == "triad_processes");
    CHECK(t.margin == Approx(1.1));
    REQUIRE(t.winner_speedup);
    CHECK(*t.winner_speedup == Approx(2.0));
    CHECK(t.best_python == "python_multiprocessing");
    CHECK(t.python_behind == Approx(22.0));
    CHECK(triad_report::markdown_table(t) ==
          "| executor | configuration | time per prime check (median) | interval of the median | "
          "runs | "
          "speedup over sequential |\n"
          "|---|---|---:|---|---:|---:|\n"
          "| triad_threads | workers:2 | 500.00 µs | 480.00 µs – 520.00 µs | 2 | 2.00x |\n"
          "| triad_processes | workers:2 | 550.00 µs | one run | 1 | 1.82x |\n"
          "| sequential | - | 1.00 ms | one run | 1 | 1.00x |\n"
          "| python_multiprocessing | workers:2 | 11.00 ms | one run | 1 | 1.82x |\n"
          "| python_sequential | - | 20.00 ms | one run | 1 | 1.00x |\n");
    CHECK(triad_report::verdict_line(t) ==
          "Verdict (at workers:2, the largest `workers` that every C++ executor with it was "
          "measured at): tie between triad_threads, triad_processes and sequential: the fastest "
          "median, triad_threads's, is not significantly faster than triad_processes and "
          "sequential (Mann–Whitney U at 5%).");
}

TEST_CASE("the choosing table names each workload's verdict and the runner-up's margin") {
    const fixture_data d;
    const std::vector<triad_report::table> tables{
        triad_report::make_table("primes", d.reg.workloads.at("primes"), d.all)};
    CHECK(triad_report::choosing_table(tables) ==
          "| workload | kind | verdict | runner-up (slower by) | fastest's speedup over "
          "sequential | Python's best (slower than the fastest by) |\n"
          "|---|---|---|---|---:|---|\n"
          "| Prime checks | cpu | tie: triad_threads, triad_processes and sequential | "
          "triad_processes (1.10x) | 2.00x | python_multiprocessing (22.00x) |\n");
}

TEST_CASE("the overhead table ranks executors against the fastest one with machinery") {
    const fixture_data d;
    CHECK(triad_report::overhead_table(d.reg.workloads, d.all) ==
          "| operation | executor | configuration | per item (median) | interval of the median | "
          "relative | "
          "other counters |\n"
          "|---|---|---|---:|---|---:|---|\n"
          "| Post a trivial task | sequential | - | 0.3 ns | one run | (the work alone) | - |\n"
          "| Post a trivial task | triad_threads | - | 80.0 ns | one run | 1.00x | bytes_per_task "
          "64 |\n"
          "| Post a trivial task | python_threads | workers:2 | 12.00 µs | one run | 150x | "
          "bytes_per_task 1500 |\n");
}

TEST_CASE("the bar chart is well-formed SVG with one bar per row") {
    const fixture_data d;
    const auto t = triad_report::make_table("primes", d.reg.workloads.at("primes"), d.all);
    const auto tree = parse_xml(triad_report::bar_chart_svg(t));
    CHECK(tree.count("svg") == 1);
    CHECK(count_elements(tree, "rect", "bar") == t.rows.size());
}

TEST_CASE("the scaling chart draws one line per C++ executor that has the axis") {
    const fixture_data d;
    const auto tree =
        parse_xml(triad_report::scaling_chart_svg("primes", d.reg.workloads.at("primes"), d.all));
    CHECK(count_elements(tree, "polyline", "series") == 2); // threads and processes; not Python
}

TEST_CASE("a titled workload with markup in its name still makes valid XML") {
    triad_report::table t;
    t.info = {"<fast> & \"slow\"", "cpu", "item", ""};
    t.rows = {{"a<b", "", 1.0, 1.0}, {"c&d", "", 2.0, std::nullopt}};
    CHECK(count_elements(parse_xml(triad_report::bar_chart_svg(t)), "rect", "bar") == 2);
}

TEST_CASE("the whole report: REPORT.md, a bar chart per workload, a scaling chart per axis") {
    const fixture_data d;
    const auto files = triad_report::render_report(d.reg.workloads, d.all, "preamble\n");
    CHECK(files.size() == 3);
    CHECK(files.contains("charts/primes.svg"));
    CHECK(files.contains("charts/primes_scaling.svg"));
    const std::string& md = files.at("REPORT.md");
    CHECK(md.find("preamble") != std::string::npos);
    CHECK(md.find("![Prime checks](charts/primes.svg)") != std::string::npos);
    // The choosing table comes last.
    CHECK(md.rfind("## Choosing the right approach") > md.rfind("## Overheads"));
    CHECK(md.substr(md.rfind('\n', md.size() - 2) + 1) ==
          "| Prime checks | cpu | tie: triad_threads, triad_processes and sequential | "
          "triad_processes (1.10x) | 2.00x | python_multiprocessing (22.00x) |\n");
    // The headline: triad's columns in order at the matched configuration, no bold without a
    // significant winner, the best peer, Python and the verdict.
    CHECK(md.find("| Prime checks, at workers:2 | 1.00 ms | 500.00 µs | 550.00 µs | - | - | - | "
                  "python_multiprocessing 11.00 ms | tie: triad_threads, triad_processes and "
                  "sequential |") != std::string::npos);
    // At most 2 runs per row: the report says no difference can be significant.
    CHECK(md.find("at most 2 runs per row: with 2 against 2 the Mann–Whitney test cannot go "
                  "below p = 0.333, so no difference can be significant") != std::string::npos);
}

TEST_CASE("workloads are ordered by kind, then by name with numbers compared as numbers") {
    std::map<std::string, triad_report::workload_info> w{{"downloads_200", {"", "io", "", ""}},
                                                         {"downloads_20", {"", "io", "", ""}},
                                                         {"post", {"", "overhead", "", ""}},
                                                         {"primes", {"", "cpu", "", ""}},
                                                         {"hybrid", {"", "mixed", "", ""}}};
    CHECK(triad_report::workload_order(w) ==
          std::vector<std::string>{"primes", "downloads_20", "downloads_200", "hybrid", "post"});
}

TEST_CASE("malformed input is an error that names the problem, not a crash") {
    const triad_report::registry empty;
    CHECK_THROWS_WITH(triad_report::parse_results("{\"benchmarks\": [", empty),
                      Catch::Contains("benchmark results: not valid JSON"));
    CHECK_THROWS_WITH(triad_report::parse_results("{\"context\": {}}", empty),
                      Catch::Contains("no 'benchmarks' array"));
    CHECK_THROWS_WITH(triad_report::parse_registry("\n{\"family\": 1, \"executor\": \"x\"}"),
                      Catch::Contains("registry line 2: missing string field 'family'"));
    CHECK_THROWS_WITH(triad_report::parse_python_rows("{\"workload\": \"w\", \"executor\": \"e\"}"),
                      Catch::Contains("Python row 1: missing number field 'ns_per_item'"));
    CHECK(triad_report::parse_args("workers:2/name:abc/Pool(2)") ==
          std::map<std::string, double>{{"workers", 2}});
}
