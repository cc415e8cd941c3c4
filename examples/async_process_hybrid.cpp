// Lesson: the hybrid of the Python course's bonus exercise — fetch datasets asynchronously (I/O,
// one thread, all in flight together), then analyse them on a process pool (CPU, every core),
// awaiting the pool's futures from the event loop without blocking it (loop.run_in_executor in
// Python; co_await on a triad::future here). The downloads are real HTTP GETs to a local server
// (support/http_server.hpp: Boost.Beast on 127.0.0.1) that waits fetch_ms before each reply; the
// value in each reply seeds its dataset's numbers.
//
// Usage: async_process_hybrid [datasets=4] [numbers_per_dataset=1000000] [fetch_ms=300]

#include <triad/async.hpp>
#include <triad/process_pool.hpp>

#include <fmt/core.h>

#include "support/arguments.hpp"
#include "support/http_server.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using clock_type = std::chrono::steady_clock;

namespace {

namespace ex = triad_examples;

struct dataset {
    std::string id;
    std::vector<std::uint32_t> numbers;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(id, numbers);
    }
};

struct analysis {
    std::string id;
    double result = 0;
    std::size_t count = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(id, result, count);
    }
};

// The Python course's cpu_intensive_analysis: sum of sqrt(n) * log(n + 1).
analysis cpu_intensive_analysis(dataset data) {
    double sum = 0;
    for (std::uint32_t n : data.numbers)
        if (n > 0)
            sum += std::sqrt(static_cast<double>(n)) * std::log(static_cast<double>(n) + 1);
    return {data.id, sum, data.numbers.size()};
}

triad::task<dataset> fetch_dataset(ex::tcp::endpoint server, std::string id, std::size_t size) {
    fmt::print("Fetching dataset {}...\n", id);
    const std::string path = "/datasets/" + id;
    const std::string body = co_await ex::async_get_ok(server, path); // the download
    const auto seed = ex::parse_value(body);
    if (!seed || *seed != ex::value_of(path))
        throw std::runtime_error("wrong reply for " + path + ": " + body);
    std::mt19937 random(static_cast<unsigned>(*seed));
    std::uniform_int_distribution<std::uint32_t> value(1, 1000);
    dataset d{id, std::vector<std::uint32_t>(size)};
    for (auto& n : d.numbers)
        n = value(random);
    fmt::print("Fetched dataset {}\n", id);
    co_return d;
}

} // namespace

int main(int argc, char** argv) try {
    const auto count = ex::argument<int>(argc, argv, 1, 4, 1, 1'000);
    const auto size = ex::argument<std::size_t>(argc, argv, 2, 1'000'000, 1, 100'000'000);
    const auto fetch_ms = ex::argument<long>(argc, argv, 3, 300, 0, 10'000);
    if (!count || !size || !fetch_ms) {
        fmt::print(stderr,
                   "usage: {} [datasets in 1..1000] [numbers in 1..100000000] [fetch_ms in "
                   "0..10000]\n",
                   argv[0]);
        return 2;
    }
    // The pool first: its workers are forks of this process as it is now, before the loop and
    // the server's thread.
    triad::process_pool pool;
    ex::http_server server({.latency = std::chrono::milliseconds(*fetch_ms)});

    const auto start = clock_type::now();
    const std::vector<analysis> results =
        triad::run(triad::make_task([&]() -> triad::task<std::vector<analysis>> {
            fmt::print("=== Phase 1: Fetching Datasets (Async I/O) ===\n");
            std::vector<triad::task<dataset>> fetches;
            for (int i = 1; i <= *count; ++i)
                fetches.push_back(
                    fetch_dataset(server.endpoint(), fmt::format("DS{:03}", i), *size));
            std::vector<dataset> datasets = co_await triad::gather(std::move(fetches));
            fmt::print("{} downloads of {} ms each took {:.2f}s: all in flight together (the "
                       "server held {} at once)\n",
                       *count, *fetch_ms,
                       std::chrono::duration<double>(clock_type::now() - start).count(),
                       server.max_in_flight());

            fmt::print("\n=== Phase 2: Processing Datasets ({} processes) ===\n", pool.size());
            std::vector<triad::future<analysis>> running;
            for (const dataset& d : datasets)
                running.push_back(pool.submit(cpu_intensive_analysis, d));
            std::vector<analysis> out;
            for (auto& f : running)
                out.push_back(co_await f); // the loop stays free while the processes work
            co_return out;
        }));
    const double duration = std::chrono::duration<double>(clock_type::now() - start).count();

    fmt::print("\n=== Results ===\n");
    for (const analysis& r : results)
        fmt::print("{}: result={:.2f}, count={}\n", r.id, r.result, r.count);
    fmt::print("Total time: {:.2f}s\n", duration);
    return 0;
} catch (const std::exception& e) {
    fmt::print(stderr, "async_process_hybrid: {}\n", e.what());
    return 1;
}
