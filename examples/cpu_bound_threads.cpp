// Lesson: CPU-bound work speeds up on threads in C++. In Python the GIL lets only one thread
// run Python code at a time, so the Python course turn to multiprocessing for prime checks and sums of
// squares; in C++ every thread runs on its own core, and a thread pool is the cheap way to use
// them all. Mirrors the Python course's Exercise 1 (prime checks, sequential vs pool, with the speedup)
// and their sum-of-squares pool.map, whose exact results need 128 bits.
//
// Usage: cpu_bound_threads [primes=400] [start=1000000000000]

#include <triad/thread_pool.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
__extension__ typedef unsigned __int128 uint128;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// The Python course's is_prime: trial division by odd numbers up to the square root.
bool is_prime(std::uint64_t n) {
    if (n < 2)
        return false;
    if (n % 2 == 0)
        return n == 2;
    for (std::uint64_t d = 3; d * d <= n; d += 2)
        if (n % d == 0)
            return false;
    return true;
}

// The Python course's sum(i * i for i in range(x)).
uint128 sum_of_squares(std::uint64_t x) {
    uint128 sum = 0;
    for (std::uint64_t i = 0; i < x; ++i)
        sum += static_cast<uint128>(i) * i;
    return sum;
}

} // namespace

int main(int argc, char** argv) {
    const long count = argc > 1 ? std::atol(argv[1]) : 400;
    const std::uint64_t first =
        argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1'000'000'000'000ULL;
    if (count <= 0) {
        fmt::print(stderr, "usage: {} [primes > 0] [start]\n", argv[0]);
        return 2;
    }
    // Odd numbers from `first`: composites are cheap to reject, primes cost a full scan.
    std::vector<std::uint64_t> numbers;
    for (std::uint64_t n = first | 1; numbers.size() < static_cast<std::size_t>(count); n += 2)
        numbers.push_back(n);

    triad::thread_pool pool; // one thread per CPU this process may use
    fmt::print("Checking {} numbers from {} on {} threads\n\n", count, numbers.front(),
               pool.size());

    fmt::print("=== Sequential ===\n");
    auto start = clock_type::now();
    std::vector<bool> sequential_results;
    for (std::uint64_t n : numbers)
        sequential_results.push_back(is_prime(n));
    const double sequential = seconds_since(start);
    fmt::print("Time: {:.3f}s\n", sequential);

    fmt::print("\n=== Thread pool ===\n");
    start = clock_type::now();
    const std::vector<bool> pooled_results = pool.map(is_prime, numbers);
    const double pooled = seconds_since(start);
    fmt::print("Time: {:.3f}s\n", pooled);
    for (std::size_t i = 0; i < 3 && i < numbers.size(); ++i)
        fmt::print("  {}: prime={}\n", numbers[i], pooled_results[i]);
    if (pooled_results != sequential_results) {
        fmt::print(stderr, "the pool and the loop disagree\n");
        return 1;
    }
    fmt::print("Speedup: {:.2f}x\n", sequential / pooled);

    fmt::print("\n=== Sums of squares (pool.map) ===\n");
    const std::vector<std::uint64_t> inputs{1'000'000, 2'000'000, 3'000'000, 4'000'000};
    const auto sums = pool.map(sum_of_squares, inputs);
    for (std::size_t i = 0; i < inputs.size(); ++i)
        fmt::print("Task {} result: {}\n", inputs[i], sums[i]);
    return 0;
}
