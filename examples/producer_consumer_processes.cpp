// Lesson: producer and consumer processes connected by a queue. Mirrors the Python course's
// multiprocessing.Queue exercise, where a producer process puts numbers and a consumer squares
// them — but without a sentinel value: close() ends the stream, and every consumer drains what
// is left before it sees the end.
//
// Usage: producer_consumer_processes [items=20] [consumers=2]

#include <triad/process.hpp>
#include <triad/process_queue.hpp>

#include <fmt/core.h>

#include <cstdlib>
#include <unistd.h>
#include <utility>
#include <vector>

int main(int argc, char** argv) {
    const int items = argc > 1 ? std::atoi(argv[1]) : 20;
    const int consumer_count = argc > 2 ? std::atoi(argv[2]) : 2;
    if (items < 0 || consumer_count <= 0) {
        fmt::print(stderr, "usage: {} [items >= 0] [consumers > 0]\n", argv[0]);
        return 2;
    }

    triad::process_queue<int> numbers;                  // producer -> consumers
    triad::process_queue<std::pair<int, long>> squares; // consumers -> this process

    std::vector<triad::process> consumers;
    for (int c = 0; c < consumer_count; ++c)
        consumers.emplace_back([&] {
            while (const auto n = numbers.get())
                squares.put({static_cast<int>(::getpid()), static_cast<long>(*n) * *n});
        });

    triad::process producer([&] {
        for (int i = 1; i <= items; ++i)
            numbers.put(i);
        numbers.close(); // consumers finish what is queued, then stop
    });

    long total = 0;
    for (int i = 0; i < items; ++i) {
        const auto [pid, square] = *squares.get();
        total += square;
        if (i < 5)
            fmt::print("consumer {} squared a number: {}\n", pid, square);
    }
    fmt::print("...\nproducer exit code {}\n", producer.join());
    for (auto& c : consumers)
        fmt::print("consumer {} exit code {}\n", c.pid(), c.join());
    const long expected = static_cast<long>(items) * (items + 1) * (2 * items + 1) / 6;
    fmt::print("sum of squares: {} (expected {})\n", total, expected);
    return total == expected ? 0 : 1;
}
