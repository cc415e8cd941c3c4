// The statistics behind the report's verdicts (bench/report/report.hpp): the Mann-Whitney U test
// on small cases whose exact p-values are known, the order-statistic interval of the median, and
// the rule that calls a winner only when it is significant.

#include "report.hpp"

#include <catch2/catch.hpp>

#include <vector>

using triad_report::stats::mann_whitney_p;

TEST_CASE("Mann-Whitney: 5 against 5 completely separated is 2/252, the smallest p there is",
          "[report]") {
    const std::vector<double> fast{1, 2, 3, 4, 5};
    const std::vector<double> slow{6, 7, 8, 9, 10};
    CHECK(mann_whitney_p(fast, slow) == Approx(2.0 / 252));
    CHECK(mann_whitney_p(slow, fast) == Approx(2.0 / 252));
    CHECK(triad_report::smallest_p(5) == Approx(2.0 / 252));
}

TEST_CASE("Mann-Whitney: 3 against 3 can never reach 5%", "[report]") {
    CHECK(mann_whitney_p({1, 2, 3}, {4, 5, 6}) == Approx(0.1));
    CHECK(triad_report::smallest_p(3) == Approx(0.1));
    CHECK_FALSE(triad_report::stats::significantly_faster({1, 2, 3}, {4, 5, 6}));
}

TEST_CASE("Mann-Whitney: identical samples give p = 1, ties included", "[report]") {
    CHECK(mann_whitney_p({5, 5, 5, 5, 5}, {5, 5, 5, 5, 5}) == Approx(1.0));
    CHECK(mann_whitney_p({1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}) == Approx(1.0));
}

TEST_CASE("Mann-Whitney: one overlap out of 25 pairs", "[report]") {
    // U = 1: of the 252 splits, one has U = 0 and one U = 1 at each end, so p = 4/252.
    CHECK(mann_whitney_p({1, 2, 3, 4, 7}, {6, 8, 9, 10, 11}) == Approx(4.0 / 252));
}

TEST_CASE("Mann-Whitney: large samples use the normal approximation", "[report]") {
    std::vector<double> a;
    std::vector<double> b;
    for (int i = 0; i < 30; ++i) {
        a.push_back(i);
        b.push_back(i + 0.5);
    }
    const double close = mann_whitney_p(a, b); // interleaved: no evidence of a difference
    CHECK(close > 0.5);
    for (double& v : b)
        v += 100;
    CHECK(mann_whitney_p(a, b) < 1e-9); // separated
}

TEST_CASE("the interval of the median is the order-statistic interval with its coverage",
          "[report]") {
    using triad_report::stats::median_interval;
    using triad_report::stats::median_interval_coverage;
    // 5 runs: no interval reaches 95%; the range covers 1 - 2/32.
    CHECK(median_interval({10, 11, 12, 13, 100}) == std::pair{10.0, 100.0});
    CHECK(median_interval_coverage(5, 1) == Approx(0.9375));
    // 9 runs: [x(2), x(8)] covers 1 - 2 * 10/512 = 96.1%, [x(3), x(7)] only 82%.
    const std::vector<double> nine{9, 1, 8, 2, 7, 3, 6, 4, 5};
    CHECK(median_interval(nine) == std::pair{2.0, 8.0});
    CHECK(median_interval_coverage(9, 2) == Approx(1 - 20.0 / 512));
    CHECK(median_interval_coverage(9, 3) < 0.95);
    // It contains the median, and one run is a point.
    const std::vector<double> samples{10, 12, 11, 30, 9, 10.5, 11.5};
    const auto [low, high] = median_interval(samples);
    CHECK(low <= triad_report::stats::median(samples));
    CHECK(high >= triad_report::stats::median(samples));
    CHECK(median_interval({7}) == std::pair{7.0, 7.0});
}

TEST_CASE("one sample is never significant", "[report]") {
    CHECK_FALSE(triad_report::stats::significantly_faster({1}, {100}));
    CHECK(triad_report::stats::significantly_faster({1, 2, 3, 4, 5}, {6, 7, 8, 9, 10}));
    CHECK_FALSE(triad_report::stats::significantly_faster({6, 7, 8, 9, 10}, {1, 2, 3, 4, 5}));
}
