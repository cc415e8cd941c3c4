#include <triad/retry.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

TEST_CASE("retry succeeds after failures, with growing waits in between", "[retry]") {
    std::vector<clock_type::time_point> attempts;
    const int value = triad::run(
        triad::retry({.attempts = 4, .initial_delay = 20ms, .multiplier = 2.0, .jitter = 0.0},
                     [&]() -> triad::task<int> {
                         attempts.push_back(clock_type::now());
                         if (attempts.size() < 4)
                             throw std::runtime_error("flaky");
                         co_return 7;
                     }));
    CHECK(value == 7);
    REQUIRE(attempts.size() == 4);
    // Waits of 20, 40 and 80 ms: each at least its nominal length, each longer than the last.
    const auto gap = [&](std::size_t i) { return attempts[i] - attempts[i - 1]; };
    CHECK(gap(1) >= 20ms);
    CHECK(gap(2) >= 40ms);
    CHECK(gap(3) >= 80ms);
    CHECK(gap(3) > gap(2));
}

TEST_CASE("retry gives up after the last attempt and rethrows the last failure", "[retry]") {
    int calls = 0;
    CHECK_THROWS_WITH(triad::run(triad::retry({.attempts = 3, .initial_delay = 1ms},
                                              [&]() -> triad::task<void> {
                                                  ++calls;
                                                  throw std::runtime_error("attempt " +
                                                                           std::to_string(calls));
                                                  co_return;
                                              })),
                      "attempt 3");
    CHECK(calls == 3);
}

TEST_CASE("retry stops at once for failures retry_on rejects, and never retries cancellation",
          "[retry]") {
    int calls = 0;
    const triad::retry_policy only_runtime{
        .attempts = 5, .initial_delay = 1ms, .retry_on = [](const std::exception_ptr& e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::runtime_error&) {
                return true;
            } catch (...) {
                return false;
            }
        }};
    CHECK_THROWS_AS(triad::run(triad::retry(only_runtime,
                                            [&]() -> triad::task<void> {
                                                ++calls;
                                                throw std::logic_error("a bug, not bad luck");
                                                co_return;
                                            })),
                    std::logic_error);
    CHECK(calls == 1);

    calls = 0;
    CHECK_THROWS_AS(triad::run(triad::retry({.attempts = 5},
                                            [&]() -> triad::task<void> {
                                                ++calls;
                                                throw triad::task_cancelled();
                                                co_return;
                                            })),
                    triad::task_cancelled);
    CHECK(calls == 1);
}

TEST_CASE("backoff is exponential, capped, and jittered within the fraction", "[retry]") {
    const triad::retry_policy p{
        .initial_delay = 100ms, .multiplier = 3.0, .max_delay = 500ms, .jitter = 0.2};
    using triad::detail::retry_delay;
    CHECK(retry_delay(p, 2, 0.5) == std::chrono::nanoseconds(100ms));
    CHECK(retry_delay(p, 3, 0.5) == std::chrono::nanoseconds(300ms));
    CHECK(retry_delay(p, 4, 0.5) == std::chrono::nanoseconds(500ms)); // capped
    CHECK(retry_delay(p, 2, 0.0) == std::chrono::nanoseconds(80ms));  // -20%
    CHECK(retry_delay(p, 2, 1.0) == std::chrono::nanoseconds(120ms)); // +20%
}

TEST_CASE("a policy without attempts is refused", "[retry]") {
    CHECK_THROWS_AS(
        triad::run(triad::retry({.attempts = 0}, []() -> triad::task<int> { co_return 1; })),
        std::invalid_argument);
}

namespace {
int g_flaky_calls = 0;
// The attempt takes its argument by reference: it refers to the copy retry keeps.
triad::task<std::string> flaky_fetch(const std::string& url, int fail_times) {
    co_await triad::sleep(0ms);
    if (++g_flaky_calls <= fail_times)
        throw std::runtime_error("flaky " + url);
    co_return "page of " + url;
}
} // namespace

TEST_CASE("retry(policy, fn, args...) is safe inline in a co_await: no lambda temporary",
          "[retry]") {
    // Written the way GCC 12 miscompiles with a copying lambda (GCC bug 100611): inline in the
    // co_await, with a std::string argument that a double destruction would free twice (ASan
    // runs this at -O0).
    g_flaky_calls = 0;
    const std::string page = triad::run(triad::make_task([]() -> triad::task<std::string> {
        co_return co_await triad::retry({.attempts = 3, .initial_delay = 1ms}, flaky_fetch,
                                        std::string(200, 'u'), 2);
    }));
    CHECK(page == "page of " + std::string(200, 'u'));
    CHECK(g_flaky_calls == 3);
}
