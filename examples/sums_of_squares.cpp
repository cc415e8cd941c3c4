// Lesson: exact results from a process pool. Mirrors the Python course's cpu_heavy_task, which pool.map
// runs over 1,000,000..4,000,000 and prints "Task 4000000 result: 21333325333334000000" — a
// number that does not fit in 64 bits. Python's integers grow; in C++ choose a wide enough type:
// here the sum is computed in unsigned __int128 and sent back as its decimal text.
//
// Usage: sums_of_squares [x...]   (default: 1000000 2000000 3000000 4000000)

#include <triad/process_pool.hpp>

#include <fmt/core.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

__extension__ typedef unsigned __int128 uint128;

std::string to_decimal(uint128 value) {
    if (value == 0)
        return "0";
    std::string digits;
    for (; value != 0; value /= 10)
        digits.insert(digits.begin(), static_cast<char>('0' + static_cast<int>(value % 10)));
    return digits;
}

struct task_result {
    std::uint64_t x = 0;
    std::string sum; // exact, in decimal
    int pid = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(x, sum, pid);
    }
};

// sum(i * i for i in range(x)), as the Python course compute it.
task_result cpu_heavy_task(std::uint64_t x) {
    uint128 sum = 0;
    for (std::uint64_t i = 0; i < x; ++i)
        sum += static_cast<uint128>(i) * i;
    return {x, to_decimal(sum), static_cast<int>(::getpid())};
}

} // namespace

int main(int argc, char** argv) {
    std::vector<std::uint64_t> inputs;
    for (int i = 1; i < argc; ++i)
        inputs.push_back(std::strtoull(argv[i], nullptr, 10));
    if (inputs.empty())
        inputs = {1'000'000, 2'000'000, 3'000'000, 4'000'000};

    fmt::print("Main Process ID: {}\n", ::getpid());
    fmt::print("Starting the process pool...\n");
    triad::process_pool pool;
    const std::vector<task_result> results = pool.map(cpu_heavy_task, inputs, {.chunk_size = 1});

    fmt::print("\nAll tasks completed. Results:\n");
    for (const task_result& r : results)
        fmt::print("Task {} result: {} (Processed by PID {})\n", r.x, r.sum, r.pid);
    return 0;
}
