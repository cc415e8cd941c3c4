// Lesson: gather runs awaitables concurrently, so four fetches take as long as the longest,
// not as long as all four together. Mirrors the Python course's asyncio.gather of downloads. The
// fetches are real HTTP GETs to a local server (support/http_server.hpp: Boost.Beast on
// 127.0.0.1), each reply delayed by the server (?delay=) to stand for network latency.
//
// Usage: gather_fetches [delays_ms...]   (default: 200 400 300 100; each in 0..60000)

#include <triad/async.hpp>

#include <fmt/core.h>

#include "support/arguments.hpp"
#include "support/http_server.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace ex = triad_examples;
using clock_type = std::chrono::steady_clock;

// One fetch: the page's body, checked to be the page asked for. `finished` records the order in
// which the fetches complete (the loop is one thread: no lock needed).
triad::task<std::string> fetch(ex::tcp::endpoint server, std::size_t index, long delay_ms,
                               std::vector<std::size_t>& finished) {
    const std::string path = "/fetch/" + std::to_string(index);
    std::string body =
        co_await ex::async_get_ok(server, path + "?delay=" + std::to_string(delay_ms));
    if (ex::parse_value(body) != ex::value_of(path))
        throw std::runtime_error("wrong reply for " + path + ": " + body);
    finished.push_back(index);
    co_return body;
}

} // namespace

int main(int argc, char** argv) try {
    std::vector<long> delays;
    for (int i = 1; i < argc; ++i) {
        const auto delay = ex::argument<long>(argc, argv, i, 0, 0, 60'000);
        if (!delay) {
            fmt::print(stderr, "usage: {} [delay_ms in 0..60000]...\n", argv[0]);
            return 2;
        }
        delays.push_back(*delay);
    }
    if (delays.empty())
        delays = {200, 400, 300, 100};
    ex::http_server server;

    std::vector<std::size_t> finished;
    const auto start = clock_type::now();
    const std::vector<std::string> pages =
        triad::run(triad::make_task([&]() -> triad::task<std::vector<std::string>> {
            std::vector<triad::task<std::string>> fetches;
            for (std::size_t i = 0; i < delays.size(); ++i)
                fetches.push_back(fetch(server.endpoint(), i, delays[i], finished));
            co_return co_await triad::gather(std::move(fetches)); // results in request order
        }));
    const double took = std::chrono::duration<double>(clock_type::now() - start).count();

    for (std::size_t i = 0; i < pages.size(); ++i)
        fmt::print("fetch {} ({} ms): {}\n", i, delays[i], pages[i]);
    std::string order;
    std::vector<long> delays_in_order;
    for (std::size_t i : finished) {
        order += fmt::format(" {}", i);
        delays_in_order.push_back(delays[i]);
    }
    // Counted, not timed: one after another they would finish in the order asked; side by side
    // the shortest wait finishes first.
    const bool by_delay = std::is_sorted(delays_in_order.begin(), delays_in_order.end());
    fmt::print("finished in the order{}: {}\n", order,
               by_delay ? "shortest wait first, so they waited side by side"
                        : "NOT by their waits");
    const long longest = *std::max_element(delays.begin(), delays.end());
    long total = 0;
    for (long d : delays)
        total += d;
    fmt::print("gather took {:.3f}s: the longest fetch is {:.3f}s, all of them one after "
               "another would take {:.3f}s\n",
               took, static_cast<double>(longest) / 1000.0, static_cast<double>(total) / 1000.0);
    return by_delay ? 0 : 1;
} catch (const std::exception& e) {
    fmt::print(stderr, "gather_fetches: {}\n", e.what());
    return 1;
}
