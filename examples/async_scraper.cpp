// Lesson: an asynchronous scraper with a concurrency cap, retries and gathered errors. Mirrors
// the Python course's Exercise 2 (AsyncWebScraper: a semaphore of 3 over 7 URLs, one of which fails,
// results gathered with return_exceptions=True) and its follow-up ("add retries with
// exponential backoff"). One thread, several requests in flight, never more than the cap.
// The request is simulated with a sleep so the lesson runs anywhere.
//
// Usage: async_scraper [latency_ms=500] [max_concurrent=3]

#include <triad/async.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

struct page {
    std::string url;
    std::string data;
};

struct scraper {
    triad::semaphore limit;
    std::chrono::milliseconds latency;
    int in_flight = 0;
    int most_in_flight = 0;

    triad::task<page> fetch_once(const std::string& url) {
        auto permit = co_await limit.acquire_guard(); // async with self.semaphore
        most_in_flight = std::max(most_in_flight, ++in_flight);
        fmt::print("Fetching: {}\n", url);
        co_await triad::sleep(latency); // the network round trip
        --in_flight;
        if (url.find("error") != std::string::npos)
            throw std::runtime_error("Failed to connect to " + url);
        fmt::print("Completed: {}\n", url);
        co_return page{url, "Content from " + url};
    }

    triad::task<page> fetch(std::string url) {
        // Transient failures are worth another try, after a growing pause. The lambda is named
        // before the co_await: GCC 12 destroys a capturing lambda temporary twice when it is
        // written inside a co_await expression (see the README's note on GCC 12).
        auto attempt = [this, url] { return fetch_once(url); };
        co_return co_await triad::retry(
            {.attempts = 3, .initial_delay = std::chrono::milliseconds(100)}, std::move(attempt));
    }
};

} // namespace

int main(int argc, char** argv) {
    const std::chrono::milliseconds latency(argc > 1 ? std::atoi(argv[1]) : 500);
    const long cap = argc > 2 ? std::atol(argv[2]) : 3;
    if (latency.count() < 0 || cap <= 0) {
        fmt::print(stderr, "usage: {} [latency_ms >= 0] [max_concurrent > 0]\n", argv[0]);
        return 2;
    }
    const std::vector<std::string> urls{
        "http://example.com/page1", "http://example.com/page2", "http://example.com/page3",
        "http://example.com/error", // will fail, three times
        "http://example.com/page4", "http://example.com/page5", "http://example.com/page6",
    };
    scraper s{triad::semaphore(static_cast<std::size_t>(cap)), latency};

    const auto start = clock_type::now();
    const auto results =
        triad::run(triad::make_task([&]() -> triad::task<std::vector<triad::outcome<page>>> {
            std::vector<triad::task<page>> fetches;
            for (const auto& url : urls)
                fetches.push_back(s.fetch(url));
            co_return co_await triad::gather_settled(
                std::move(fetches)); // errors gathered, not thrown
        }));
    const double duration = std::chrono::duration<double>(clock_type::now() - start).count();

    fmt::print("\n=== Results ===\n");
    int successful = 0;
    for (std::size_t i = 0; i < results.size(); ++i) {
        if (results[i].has_value()) {
            ++successful;
        } else {
            try {
                std::rethrow_exception(results[i].error());
            } catch (const std::exception& e) {
                fmt::print("Error: {}\n", e.what());
            }
        }
    }
    fmt::print("Successful: {}/{}\n", successful, urls.size());
    fmt::print("Most requests in flight: {} (the cap is {})\n", s.most_in_flight, cap);
    fmt::print("Total time: {:.2f}s\n", duration);
    fmt::print("Average time per URL: {:.2f}s\n", duration / static_cast<double>(urls.size()));
    return successful == 6 && s.most_in_flight <= cap ? 0 : 1;
}
