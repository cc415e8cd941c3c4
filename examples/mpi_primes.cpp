// Lesson: when CPU-bound work outgrows one machine, the same map runs across the ranks of an MPI
// job. Mirrors the Python course's Exercise 1 (prime checks, sequential vs a pool, with the
// speedup) on mpi4py.futures.MPIPoolExecutor's model: rank 0 drives, every other rank works.
// One main serves both roles: triad::mpi_main runs the function below on rank 0 and the worker
// loop everywhere else. Code before mpi_main runs on every rank.
//
// Usage: mpirun -np N mpi_primes [numbers=2000] [start=10000000000000]   (N >= 2)

#include <triad/mpi_pool.hpp>

#include "support/arguments.hpp"

#include <fmt/core.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// The Python course's process_number (is it prime, by trial division), plus the rank that
// checked it, so the lesson can show where the work went.
struct checked_number {
    std::uint64_t number = 0;
    bool is_prime = false;
    int rank = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(number, is_prime, rank);
    }
};

bool is_prime(std::uint64_t n) {
    bool prime = n >= 2 && (n % 2 != 0 || n == 2);
    for (std::uint64_t d = 3; prime && d * d <= n; d += 2)
        prime = n % d != 0;
    return prime;
}

checked_number check_number(std::uint64_t n) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return {n, is_prime(n), rank};
}

int run(triad::mpi_pool& pool, long count, std::uint64_t first) {
    std::vector<std::uint64_t> numbers;
    for (std::uint64_t n = first | 1; numbers.size() < static_cast<std::size_t>(count); n += 2)
        numbers.push_back(n);

    fmt::print("=== Sequential Processing (rank 0) ===\n");
    auto start = clock_type::now();
    std::vector<bool> sequential;
    for (std::uint64_t n : numbers)
        sequential.push_back(is_prime(n));
    const double sequential_time = seconds_since(start);
    fmt::print("Time: {:.3f}s\n", sequential_time);

    fmt::print("\n=== MPI pool ({} worker ranks) ===\n", pool.size());
    start = clock_type::now();
    const std::vector<checked_number> checked = pool.map(check_number, numbers);
    const double parallel_time = seconds_since(start);
    fmt::print("Time: {:.3f}s\n", parallel_time);

    std::map<int, long> per_rank;
    long primes = 0;
    for (std::size_t i = 0; i < checked.size(); ++i) {
        if (checked[i].number != numbers[i] || checked[i].is_prime != sequential[i]) {
            fmt::print(stderr, "the pool and the loop disagree on {}\n", numbers[i]);
            return 1;
        }
        ++per_rank[checked[i].rank];
        primes += checked[i].is_prime;
    }
    for (const auto& [rank, n] : per_rank)
        fmt::print("  rank {}: {} numbers\n", rank, n);
    fmt::print("Primes: {} of {}, the same as the sequential loop\n", primes, numbers.size());
    fmt::print("Speedup: {:.2f}x\n", sequential_time / parallel_time);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    const auto count = triad_examples::argument<long>(argc, argv, 1, 2000, 1, 100'000'000);
    const auto first = triad_examples::argument<std::uint64_t>(argc, argv, 2, 10'000'000'000'000ULL,
                                                               2, 1ULL << 62);
    if (!count || !first) {
        fmt::print(stderr, "usage: mpirun -np N {} [numbers 1..1e8] [start 2..2^62]\n", argv[0]);
        return 2;
    }
    try {
        return triad::mpi_main(argc, argv,
                               [&](triad::mpi_pool& pool) { return run(pool, *count, *first); });
    } catch (const triad::mpi_error& e) { // one rank only, or ranks running different builds
        fmt::print(stderr, "{}\n", e.what());
        return 1;
    }
}
