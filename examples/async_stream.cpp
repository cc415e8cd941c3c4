// Lesson: an async generator hands each result over as soon as it is ready, so the consumer
// starts on the first one at once instead of waiting for the whole list; and it is lazy, so a
// consumer that stops early stops the producer too. Mirrors Python's `async for` over an async
// generator (an `async def` that `yield`s). Each page is a real HTTP GET to a local server
// (support/http_server.hpp: Boost.Beast on 127.0.0.1) that waits delay_ms before each reply.
//
// Usage: async_stream [pages] [delay_ms] [stop_after]   (default: 10 50 3)

#include <triad/async.hpp>

#include <fmt/core.h>

#include "support/arguments.hpp"
#include "support/http_server.hpp"

#include <chrono>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

using clock_type = std::chrono::steady_clock;

namespace {

namespace ex = triad_examples;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// One page from the server: its body, checked to be the page asked for.
triad::task<std::string> fetch_page(ex::tcp::endpoint server, int index) {
    const std::string path = "/page/" + std::to_string(index);
    std::string body = co_await ex::async_get_ok(server, path);
    if (ex::parse_value(body) != ex::value_of(path))
        throw std::runtime_error("wrong reply for " + path + ": " + body);
    co_return body;
}

// The stream: each page is yielded the moment it has arrived.
triad::generator<std::string> pages(ex::tcp::endpoint server, int count) {
    for (int i = 0; i < count; ++i)
        co_yield co_await fetch_page(server, i);
}

// The same pages as a list: nothing is usable until the last one has arrived.
triad::task<std::vector<std::string>> all_pages(ex::tcp::endpoint server, int count) {
    std::vector<std::string> result;
    for (int i = 0; i < count; ++i)
        result.push_back(co_await fetch_page(server, i));
    co_return result;
}

} // namespace

int main(int argc, char** argv) try {
    const auto count = ex::argument<int>(argc, argv, 1, 10, 1, 10'000);
    const auto delay_ms = ex::argument<long>(argc, argv, 2, 50, 0, 10'000);
    const auto stop_after = ex::argument<int>(argc, argv, 3, 3, 1, 10'000);
    if (!count || !delay_ms || !stop_after) {
        fmt::print(stderr,
                   "usage: {} [pages in 1..10000] [delay_ms in 0..10000] [stop_after in "
                   "1..10000]\n",
                   argv[0]);
        return 2;
    }
    const std::chrono::milliseconds latency(*delay_ms);
    ex::http_server server({.latency = latency});

    triad::run(triad::make_task([&]() -> triad::task<void> {
        auto start = clock_type::now();
        const std::vector<std::string> list = co_await all_pages(server.endpoint(), *count);
        fmt::print("a list:   first page usable after {:.3f}s (all {} arrived first)\n",
                   seconds_since(start), list.size());

        start = clock_type::now();
        const std::uint64_t stream_start = server.requests();
        auto stream = pages(server.endpoint(), *count);
        double first = 0;
        std::uint64_t requested_by_first = 0;
        int received = 0;
        while (auto page = co_await stream.next())
            if (++received == 1) {
                first = seconds_since(start);
                requested_by_first = server.requests() - stream_start;
            }
        fmt::print("a stream: first page usable after {:.3f}s, all {} after {:.3f}s\n", first,
                   received, seconds_since(start));
        // Counted, not timed: when the first page was in the consumer's hands, how many requests
        // the server had seen (the list needed all of them).
        fmt::print("requests made when the first page was usable: list {}, stream {}\n", *count,
                   requested_by_first);

        const std::uint64_t before = server.requests();
        {
            auto early = pages(server.endpoint(), *count);
            for (int i = 0; i < *stop_after; ++i)
                if (!co_await early.next())
                    break;
        } // destroying the generator at its co_yield ends the producer
        co_await triad::sleep(2 * latency); // it would have fetched more by now if it ran on
        fmt::print("stopping after {} pages: the producer fetched {} of {} and stopped\n",
                   *stop_after, server.requests() - before, *count);
    }));
    return 0;
} catch (const std::exception& e) {
    fmt::print(stderr, "async_stream: {}\n", e.what());
    return 1;
}
