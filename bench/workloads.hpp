#pragma once

// The CPU-bound workloads of the Python course, shared by the benchmarks: prime checks by trial
// division and sums of squares.

#include <cstdint>
#include <vector>

namespace triad_bench {

__extension__ typedef unsigned __int128 uint128;

// Trial division by odd numbers up to the square root, exactly as the Python course's is_prime.
inline bool is_prime(std::uint64_t n) {
    if (n < 2)
        return false;
    if (n % 2 == 0)
        return n == 2;
    for (std::uint64_t d = 3; d * d <= n; d += 2)
        if (n % d == 0)
            return false;
    return true;
}

namespace detail {
inline std::uint64_t mul_mod(std::uint64_t a, std::uint64_t b, std::uint64_t m) {
    return static_cast<std::uint64_t>(static_cast<uint128>(a) * b % m);
}
inline std::uint64_t pow_mod(std::uint64_t base, std::uint64_t exp, std::uint64_t m) {
    std::uint64_t result = 1;
    for (base %= m; exp != 0; exp >>= 1, base = mul_mod(base, base, m))
        if ((exp & 1) != 0)
            result = mul_mod(result, base, m);
    return result;
}
} // namespace detail

// Deterministic Miller-Rabin for 64-bit n: only used to build the workload list quickly; the
// benchmarked work is the trial division above.
inline bool is_prime_fast(std::uint64_t n) {
    if (n < 2)
        return false;
    for (std::uint64_t p : {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37})
        if (n % p == 0)
            return n == p;
    std::uint64_t d = n - 1;
    int r = 0;
    for (; d % 2 == 0; d /= 2)
        ++r;
    for (std::uint64_t a : {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37}) {
        std::uint64_t x = detail::pow_mod(a, d, n);
        if (x == 1 || x == n - 1)
            continue;
        bool composite = true;
        for (int i = 1; i < r && composite; ++i) {
            x = detail::mul_mod(x, x, n);
            composite = x != n - 1;
        }
        if (composite)
            return false;
    }
    return true;
}

// The first `count` primes at or above `from`.
inline std::vector<std::uint64_t> primes_from(std::uint64_t from, std::size_t count) {
    std::vector<std::uint64_t> primes;
    primes.reserve(count);
    for (std::uint64_t n = from | 1; primes.size() < count; n += 2)
        if (is_prime_fast(n))
            primes.push_back(n);
    return primes;
}

// The workload list for prime checks: large primes (the most expensive case for trial
// division, about 1 ms each), as many as make a sequential run take about a second here.
inline const std::vector<std::uint64_t>& prime_workload() {
    static const std::vector<std::uint64_t> primes = primes_from(1'000'000'000'000ULL, 1000);
    return primes;
}

// The Python course's sum(i * i for i in range(x)), exact in 128 bits (x = 4,000,000 overflows 64).
inline uint128 sum_of_squares(std::uint64_t x) {
    uint128 sum = 0;
    for (std::uint64_t i = 0; i < x; ++i) {
        // Keeps the compiler from replacing the loop by the closed form: the point is the work.
        asm volatile("" : "+r"(i));
        sum += static_cast<uint128>(i) * i;
    }
    return sum;
}

// The Python course's inputs (1e6, 2e6, 3e6, 4e6) sixteen times over. Four uneven tasks alone cap
// any in-order schedule on 2 workers at 10/6 = 1.67x (one worker draws 2e6 + 4e6); repeating them
// measures the executor rather than that imbalance.
inline const std::vector<std::uint64_t>& squares_workload() {
    static const std::vector<std::uint64_t> inputs = [] {
        std::vector<std::uint64_t> v;
        for (int round = 0; round < 16; ++round)
            for (std::uint64_t x : {1'000'000, 2'000'000, 3'000'000, 4'000'000})
                v.push_back(x);
        return v;
    }();
    return inputs;
}

// Integer work whose cost grows linearly with `steps` (a few cycles each) and that no compiler can
// shorten: a chain of xorshift64 steps, each depending on the one before, the value forced through
// a register every step. The same seed and steps always give the same result, so an executor's
// results can be checked against a sequential run's.
inline std::uint64_t spin(std::uint64_t seed, std::uint64_t steps) {
    std::uint64_t x = (seed * 0x9E3779B97F4A7C15ULL) | 1; // never 0, where xorshift would stay
    for (std::uint64_t i = 0; i < steps; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        asm volatile("" : "+r"(x));
    }
    return x;
}

} // namespace triad_bench
