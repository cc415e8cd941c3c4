// Lesson: the hybrid of the Python course's bonus exercise — fetch datasets asynchronously (I/O, one
// thread, all in flight together), then analyse them on a process pool (CPU, every core),
// awaiting the pool's futures from the event loop without blocking it (loop.run_in_executor in
// Python; co_await on a triad::future here).
//
// Usage: async_process_hybrid [datasets=4] [numbers_per_dataset=1000000] [fetch_ms=300]

#include <triad/async.hpp>
#include <triad/process_pool.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

using clock_type = std::chrono::steady_clock;

namespace {

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

triad::task<dataset> fetch_dataset(std::string id, std::size_t size,
                                   std::chrono::milliseconds delay) {
    fmt::print("Fetching dataset {}...\n", id);
    co_await triad::sleep(delay); // the download
    std::mt19937 random(static_cast<unsigned>(std::hash<std::string>{}(id)));
    std::uniform_int_distribution<std::uint32_t> value(1, 1000);
    dataset d{id, std::vector<std::uint32_t>(size)};
    for (auto& n : d.numbers)
        n = value(random);
    fmt::print("Fetched dataset {}\n", id);
    co_return d;
}

} // namespace

int main(int argc, char** argv) {
    const int count = argc > 1 ? std::atoi(argv[1]) : 4;
    const std::size_t size = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1'000'000;
    const std::chrono::milliseconds delay(argc > 3 ? std::atoi(argv[3]) : 300);
    if (count <= 0) {
        fmt::print(stderr, "usage: {} [datasets > 0] [numbers] [fetch_ms]\n", argv[0]);
        return 2;
    }
    // The pool first: its workers are forks of this process as it is now, before the loop.
    triad::process_pool pool;

    const auto start = clock_type::now();
    const std::vector<analysis> results =
        triad::run(triad::make_task([&]() -> triad::task<std::vector<analysis>> {
            fmt::print("=== Phase 1: Fetching Datasets (Async I/O) ===\n");
            std::vector<triad::task<dataset>> fetches;
            for (int i = 1; i <= count; ++i)
                fetches.push_back(fetch_dataset(fmt::format("DS{:03}", i), size, delay));
            std::vector<dataset> datasets = co_await triad::gather(std::move(fetches));

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
}
