// What the seeded stress programs share: failed checks counted by expect(), the command line
// (`--seconds N`), and the rounds, run from a seed that is printed first and replayed from
// TRIAD_STRESS_SEED, until the time is up or a check failed. tests/soak runs the same programs
// for minutes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace triad_test {

inline std::atomic<long> g_stress_failures{0};

// Every failed check fails the run; only the first 20 are printed, so a broken invariant does
// not bury the seed under its repeats.
inline void expect(bool condition, const std::string& what) {
    if (!condition && g_stress_failures.fetch_add(1) < 20)
        std::fprintf(stderr, "stress: FAILED: %s\n", what.c_str());
}

// main() of a stress program: calls `run_round(seed, round)`, which returns how many tasks the
// round ran, for round 0, 1, ... until `--seconds` (default 20) have passed or a check failed.
// Returns the exit code: 0 if every check held, 1 if one failed, 2 for a bad command line.
template <class RunRound>
int stress_main(int argc, char** argv, RunRound run_round) {
    double seconds = 20;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--seconds" && i + 1 < argc) {
            seconds = std::atof(argv[++i]);
        } else {
            std::fprintf(stderr, "usage: %s [--seconds N]  (TRIAD_STRESS_SEED=<seed> replays)\n",
                         argv[0]);
            return 2;
        }
    }
    std::uint64_t seed = std::random_device{}();
    if (const char* fixed = std::getenv("TRIAD_STRESS_SEED"))
        seed = std::strtoull(fixed, nullptr, 10);
    std::printf("stress: seed %llu (replay with TRIAD_STRESS_SEED=%llu), %.0f s\n",
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed),
                seconds);
    std::fflush(stdout);
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    int rounds = 0;
    std::size_t tasks = 0;
    do {
        tasks += run_round(seed, rounds);
        ++rounds;
    } while (std::chrono::steady_clock::now() < until && g_stress_failures == 0);
    std::printf("stress: %d rounds, %zu tasks, %ld failures (seed %llu)\n", rounds, tasks,
                g_stress_failures.load(), static_cast<unsigned long long>(seed));
    return g_stress_failures == 0 ? 0 : 1;
}

} // namespace triad_test
