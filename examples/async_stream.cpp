// Lesson: an async generator hands each result over as soon as it is ready, so the consumer
// starts on the first one at once instead of waiting for the whole list; and it is lazy, so a
// consumer that stops early stops the producer too. Mirrors Python's `async for` over an async
// generator (an `async def` that `yield`s). Each "page" takes a sleep standing for network
// latency.
//
// Usage: async_stream [pages] [delay_ms] [stop_after]   (default: 10 50 3)

#include <triad/async.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

using clock_type = std::chrono::steady_clock;

namespace {

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// The stream: each page is yielded the moment it has arrived.
triad::generator<std::string> pages(int count, std::chrono::milliseconds latency, int& fetched) {
    for (int i = 0; i < count; ++i) {
        co_await triad::sleep(latency);
        ++fetched;
        co_yield fmt::format("page {}", i);
    }
}

// The same pages as a list: nothing is usable until the last one has arrived.
triad::task<std::vector<std::string>> all_pages(int count, std::chrono::milliseconds latency) {
    std::vector<std::string> result;
    for (int i = 0; i < count; ++i) {
        co_await triad::sleep(latency);
        result.push_back(fmt::format("page {}", i));
    }
    co_return result;
}

} // namespace

int main(int argc, char** argv) {
    const int count = argc > 1 ? std::atoi(argv[1]) : 10;
    const std::chrono::milliseconds latency(argc > 2 ? std::atoi(argv[2]) : 50);
    const int stop_after = argc > 3 ? std::atoi(argv[3]) : 3;

    triad::run(triad::make_task([&]() -> triad::task<void> {
        auto start = clock_type::now();
        const std::vector<std::string> list = co_await all_pages(count, latency);
        fmt::print("a list:   first page usable after {:.3f}s (all {} arrived first)\n",
                   seconds_since(start), list.size());

        int fetched = 0;
        start = clock_type::now();
        auto stream = pages(count, latency, fetched);
        double first = 0;
        int received = 0;
        while (auto page = co_await stream.next())
            if (++received == 1)
                first = seconds_since(start);
        fmt::print("a stream: first page usable after {:.3f}s, all {} after {:.3f}s\n", first,
                   received, seconds_since(start));

        fetched = 0;
        {
            auto early = pages(count, latency, fetched);
            for (int i = 0; i < stop_after; ++i)
                if (!co_await early.next())
                    break;
        } // destroying the generator at its co_yield ends the producer
        co_await triad::sleep(2 * latency); // it would have fetched more by now if it ran on
        fmt::print("stopping after {} pages: the producer fetched {} of {} and stopped\n",
                   stop_after, fetched, count);
    }));
    return 0;
}
