// Lesson: an asynchronous scraper with a concurrency cap, retries and gathered errors. Mirrors
// the Python course's Exercise 2 (AsyncWebScraper: a semaphore of 3 over 7 URLs, one of which
// fails, results gathered with return_exceptions=True) and its follow-up ("add retries with
// exponential backoff"). One thread, several requests in flight, never more than the cap. The
// requests are real HTTP GETs to a local server (support/http_server.hpp: Boost.Beast on
// 127.0.0.1) that waits the latency before each reply and answers /error with a 500.
//
// Usage: async_scraper [latency_ms=500] [max_concurrent=3]

#include <triad/async.hpp>

#include <fmt/core.h>

#include "support/arguments.hpp"
#include "support/http_server.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace ex = triad_examples;
using clock_type = std::chrono::steady_clock;

struct page {
    std::string url;
    std::string data;
};

struct scraper {
    ex::tcp::endpoint server;
    std::string base_url;
    triad::semaphore limit;
    int in_flight = 0;
    int most_in_flight = 0;
    int attempts = 0;

    triad::task<page> fetch_once(const std::string& path) {
        auto permit = co_await limit.acquire_guard(); // async with self.semaphore
        most_in_flight = std::max(most_in_flight, ++in_flight);
        ++attempts;
        fmt::print("Fetching: {}\n", base_url + path);
        struct leave {
            int& n;
            ~leave() { --n; }
        } leaving{in_flight};                                       // also when the request throws
        std::string body = co_await ex::async_get_ok(server, path); // throws on a 500
        fmt::print("Completed: {}\n", base_url + path);
        co_return page{base_url + path, std::move(body)};
    }

    triad::task<page> fetch(std::string path) {
        // Transient failures are worth another try, after a growing pause. The lambda is named
        // before the co_await: GCC 12 destroys a capturing lambda temporary twice when it is
        // written inside a co_await expression (see the README's note on GCC 12).
        auto attempt = [this, path] { return fetch_once(path); };
        co_return co_await triad::retry(
            {.attempts = 3, .initial_delay = std::chrono::milliseconds(100)}, std::move(attempt));
    }
};

} // namespace

int main(int argc, char** argv) try {
    const auto latency_ms = ex::argument<long>(argc, argv, 1, 500, 0, 10'000);
    const auto cap = ex::argument<long>(argc, argv, 2, 3, 1, 1'000);
    if (!latency_ms || !cap) {
        fmt::print(stderr, "usage: {} [latency_ms in 0..10000] [max_concurrent in 1..1000]\n",
                   argv[0]);
        return 2;
    }
    ex::http_server server({.latency = std::chrono::milliseconds(*latency_ms)});
    const std::vector<std::string> paths{
        "/page1", "/page2", "/page3",
        "/error", // the server answers 500: fails three times
        "/page4", "/page5", "/page6",
    };
    scraper s{server.endpoint(), server.url(""), triad::semaphore(static_cast<std::size_t>(*cap))};

    const auto start = clock_type::now();
    const auto results =
        triad::run(triad::make_task([&]() -> triad::task<std::vector<triad::outcome<page>>> {
            std::vector<triad::task<page>> fetches;
            for (const auto& path : paths)
                fetches.push_back(s.fetch(path));
            co_return co_await triad::gather_settled(
                std::move(fetches)); // errors gathered, not thrown
        }));
    const double duration = std::chrono::duration<double>(clock_type::now() - start).count();

    fmt::print("\n=== Results ===\n");
    int successful = 0;
    int checked = 0;
    for (std::size_t i = 0; i < results.size(); ++i) {
        if (results[i].has_value()) {
            ++successful;
            const auto value = ex::parse_value(results[i].value().data);
            checked += value && *value == ex::value_of(paths[i]);
        } else {
            try {
                std::rethrow_exception(results[i].error());
            } catch (const std::exception& e) {
                fmt::print("Error: {} failed after 3 attempts: {}\n", server.url(paths[i]),
                           e.what());
            }
        }
    }
    fmt::print("Successful: {}/{}, {} with the body of the page asked for\n", successful,
               paths.size(), checked);
    fmt::print("Requests sent: {} ({} answered with an error)\n", s.attempts,
               server.failures_injected());
    fmt::print("Most requests in flight: {} (the cap is {}; the server saw {})\n", s.most_in_flight,
               *cap, server.max_in_flight());
    fmt::print("Total time: {:.2f}s\n", duration);
    fmt::print("Average time per URL: {:.2f}s\n", duration / static_cast<double>(paths.size()));
    return successful == 6 && checked == 6 && s.most_in_flight <= *cap ? 0 : 1;
} catch (const std::exception& e) {
    fmt::print(stderr, "async_scraper: {}\n", e.what());
    return 1;
}
