// Lesson: CPU-bound work in separate processes. Mirrors the Python course's Exercise 1 (prime checks,
// sequential vs multiprocessing.Pool, with the speedup). Processes cost more to start and to
// talk to than threads, so they pay off when each task is heavy — and they isolate: a task
// that crashes, leaks or is not thread-safe cannot harm the others or this program.
//
// Usage: process_pool_primes [numbers=2000] [start=10000000000000]

#include <triad/process_pool.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// The Python course's process_number: is it prime (trial division), its square and cube.
struct number_facts {
    std::uint64_t number = 0;
    bool is_prime = false;
    double square = 0;
    double cube = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(number, is_prime, square, cube);
    }
    bool operator==(const number_facts&) const = default;
};

number_facts process_number(std::uint64_t n) {
    bool prime = n >= 2 && (n % 2 != 0 || n == 2);
    for (std::uint64_t d = 3; prime && d * d <= n; d += 2)
        prime = n % d != 0;
    const auto x = static_cast<double>(n);
    return {n, prime, x * x, x * x * x};
}

} // namespace

int main(int argc, char** argv) {
    const long count = argc > 1 ? std::atol(argv[1]) : 2000;
    const std::uint64_t first =
        argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 10'000'000'000'000ULL;
    if (count <= 0) {
        fmt::print(stderr, "usage: {} [numbers > 0] [start]\n", argv[0]);
        return 2;
    }
    std::vector<std::uint64_t> numbers;
    for (std::uint64_t n = first | 1; numbers.size() < static_cast<std::size_t>(count); n += 2)
        numbers.push_back(n);

    // Build the pool first: its workers are forks of this process as it is now.
    triad::process_pool pool;

    fmt::print("=== Sequential Processing ===\n");
    auto start = clock_type::now();
    std::vector<number_facts> sequential;
    for (std::uint64_t n : numbers)
        sequential.push_back(process_number(n));
    const double sequential_time = seconds_since(start);
    fmt::print("Time: {:.3f}s\n", sequential_time);

    fmt::print("\n=== Parallel Processing ({} processes) ===\n", pool.size());
    start = clock_type::now();
    const std::vector<number_facts> parallel = pool.map(process_number, numbers);
    const double parallel_time = seconds_since(start);
    fmt::print("Time: {:.3f}s\n", parallel_time);
    for (std::size_t i = 0; i < 3 && i < parallel.size(); ++i)
        fmt::print("  {}: prime={}\n", parallel[i].number, parallel[i].is_prime);
    if (parallel != sequential) {
        fmt::print(stderr, "the pool and the loop disagree\n");
        return 1;
    }
    fmt::print("Speedup: {:.2f}x\n", sequential_time / parallel_time);
    return 0;
}
