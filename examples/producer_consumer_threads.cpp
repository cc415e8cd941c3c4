// Lesson: producer and consumer threads connected by a bounded queue, which slows fast producers
// down to the consumers' pace, and ended by close() instead of a stop event; then the same
// pipeline with a priority queue, which serves urgent work first. Mirrors the Python course's
// DataPipeline exercise (queue.Queue(maxsize=5), 2 producers, 3 consumers, 4 items each, a
// threading.Event to stop the consumers) and its "try queue.PriorityQueue()" follow-up.
//
// Usage: producer_consumer_threads [producers=2] [consumers=3] [items_per_producer=4]
//                                  [queue_size=5] [time_scale=1]
// time_scale scales the course's simulated work (producers 0.1-0.3 s an item, consumers
// 0.2-0.5 s); 0.01 runs the same pipeline a hundred times faster.

#include <triad/blocking_queue.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "support/arguments.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

struct item {
    std::string id; // "P<producer>-<index>", as in the course
    int value = 0;  // 1..100
};

// What producer `p` makes, drawn from its own seeded generator so main can replay it and know
// the exact totals the consumers must report. Raw std::mt19937 output, which the standard fixes
// (its distributions differ between standard libraries), so the totals are the same everywhere.
struct recipe {
    explicit recipe(int producer) : random(static_cast<std::uint32_t>(1000 + producer)) {}
    std::mt19937 random;
    int value() { return 1 + static_cast<int>(random() % 100); }
    double work(double low, double high) {
        return low + (high - low) * static_cast<double>(random()) / 4294967296.0;
    }
};

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

void simulate_work(double seconds) {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

} // namespace

int main(int argc, char** argv) {
    // Bounded so that producers x items fits an int and the threads fit the machine.
    const auto producers_arg = triad_examples::argument(argc, argv, 1, 2, 1, 1000);
    const auto consumers_arg = triad_examples::argument(argc, argv, 2, 3, 1, 1000);
    const auto per_producer_arg = triad_examples::argument(argc, argv, 3, 4, 0, 1'000'000);
    const auto queue_size_arg = triad_examples::argument(argc, argv, 4, 5, 1, 1'000'000);
    const auto scale_arg = triad_examples::argument(argc, argv, 5, 1.0, 0.0, 100.0);
    if (!producers_arg || !consumers_arg || !per_producer_arg || !queue_size_arg || !scale_arg) {
        fmt::print(stderr,
                   "usage: {} [producers 1..1000] [consumers 1..1000] [items_per_producer "
                   "0..1000000] [queue_size 1..1000000] [time_scale 0..100]\n",
                   argv[0]);
        return 2;
    }
    const int producers = *producers_arg;
    const int consumers = *consumers_arg;
    const int per_producer = *per_producer_arg;
    const int queue_size = *queue_size_arg;
    const double scale = *scale_arg;
    const int total = producers * per_producer;
    const bool verbose = total <= 50; // the course prints every step; a long run only sums up

    // --- Part 1: the pipeline, FIFO ---
    fmt::print("=== Producer-consumer pipeline: {} producers, {} consumers, queue of {} ===\n",
               producers, consumers, queue_size);
    triad::blocking_queue<item> queue(static_cast<std::size_t>(queue_size));
    std::atomic<int> produced{0};
    std::atomic<int> consumed{0};
    std::atomic<long> result_sum{0};
    std::atomic<int> waits_for_room{0};
    std::atomic<std::size_t> most_queued{0};
    std::atomic<long> work_micros{0}; // all simulated work, as one thread would do it

    const auto start = clock_type::now();
    std::vector<std::thread> threads;
    // Consumers first, as in the course, so they are ready to work.
    for (int c = 0; c < consumers; ++c)
        threads.emplace_back([&, c] {
            std::mt19937 random(static_cast<std::uint32_t>(c));
            // The course polls get(timeout=1) until a stop event is set; here pop() waits, and
            // returns empty once the queue is closed and everything in it consumed.
            while (auto next = queue.pop()) {
                if (verbose)
                    fmt::print("Consumer {}: Processing {}\n", c, next->id);
                const double work = scale * std::uniform_real_distribution<>(0.2, 0.5)(random);
                simulate_work(work);
                work_micros += static_cast<long>(work * 1e6);
                const int result = next->value * 2;
                result_sum += result;
                ++consumed;
                if (verbose)
                    fmt::print("Consumer {}: Completed {} -> {}\n", c, next->id, result);
            }
            if (verbose)
                fmt::print("Consumer {}: Finished\n", c);
        });
    std::vector<std::thread> producer_threads;
    for (int p = 0; p < producers; ++p)
        producer_threads.emplace_back([&, p] {
            recipe make(p);
            for (int i = 0; i < per_producer; ++i) {
                item next{fmt::format("P{}-{}", p, i), make.value()};
                if (verbose)
                    fmt::print("Producer {}: Creating {}\n", p, next.id);
                // A refused try_push leaves the item with us: count the wait, then block in push.
                if (!queue.try_push(std::move(next))) {
                    ++waits_for_room;
                    queue.push(std::move(next));
                }
                ++produced;
                const std::size_t now = queue.size();
                std::size_t seen = most_queued.load();
                while (now > seen && !most_queued.compare_exchange_weak(seen, now)) {
                }
                const double work = scale * make.work(0.1, 0.3);
                simulate_work(work);
                work_micros += static_cast<long>(work * 1e6);
            }
            if (verbose)
                fmt::print("Producer {}: Finished\n", p);
        });
    for (auto& t : producer_threads)
        t.join();
    queue.close(); // the stop signal: consumers drain what is queued, then return
    for (auto& t : threads)
        t.join();
    const double elapsed = seconds_since(start);

    long expected_sum = 0;
    for (int p = 0; p < producers; ++p) {
        recipe make(p);
        for (int i = 0; i < per_producer; ++i) {
            expected_sum += 2L * make.value();
            make.work(0.1, 0.3);
        }
    }
    const double sequential = static_cast<double>(work_micros.load()) / 1e6;
    fmt::print("\n=== Pipeline Complete ===\n");
    fmt::print("produced {} items, consumed {} items (expected {})\n", produced.load(),
               consumed.load(), total);
    fmt::print("sum of results: {} (expected {})\n", result_sum.load(), expected_sum);
    fmt::print("the queue never held more than {} items (maxsize {}), producers found it full {} "
               "times and waited\n",
               most_queued.load(), queue_size, waits_for_room.load());
    fmt::print("Pipeline: {:.2f} s (the same work on one thread: {:.2f} s), speedup: {:.1f}x\n",
               elapsed, sequential, elapsed > 0 ? sequential / elapsed : 0.0);
    bool ok = produced == total && consumed == total && result_sum == expected_sum &&
              most_queued <= static_cast<std::size_t>(queue_size);

    // --- Part 2: a PriorityQueue, urgent work first ---
    // The course's follow-up: the item's value as its priority, larger first. Python's
    // PriorityQueue serves the smallest (hence the usual negated priorities); triad's serves the
    // greatest by its Compare, and equal priorities in the order they arrived.
    fmt::print("\n=== Priority queue: urgent tasks first ===\n");
    struct task {
        int priority;
        std::string name;
    };
    const auto less_urgent = [](const task& a, const task& b) { return a.priority < b.priority; };
    triad::priority_queue<task, decltype(less_urgent)> tasks(16, less_urgent);
    const std::vector<task> submitted{
        {1, "update docs"},    {5, "fix outage"},   {3, "review patch"}, {1, "tidy logs"},
        {5, "restore backup"}, {2, "answer email"}, {3, "deploy fix"}};
    // The worker starts only once everything is queued, so the order served is the queue's
    // alone, not a race between arrival and service.
    for (const auto& t : submitted) {
        fmt::print("submitted: [{}] {}\n", t.priority, t.name);
        tasks.push(t);
    }
    tasks.close();
    std::vector<std::string> served;
    std::thread worker([&] {
        while (auto t = tasks.pop()) {
            simulate_work(scale * 0.05);
            served.push_back(fmt::format("{}:{}", t->priority, t->name));
        }
    });
    worker.join();
    std::string order;
    for (const auto& s : served)
        order += (order.empty() ? "" : ", ") + s;
    fmt::print("served in order: {}\n", order);
    const std::vector<std::string> expected_order{
        "5:fix outage",   "5:restore backup", "3:review patch", "3:deploy fix",
        "2:answer email", "1:update docs",    "1:tidy logs"};
    const bool priority_ok = served == expected_order;
    fmt::print("urgent first, equal priorities first come first served: {}\n",
               priority_ok ? "yes" : "NO");
    ok = ok && priority_ok;

    fmt::print("\n{}\n", ok ? "all checks passed" : "CHECK FAILED");
    return ok ? 0 : 1;
}
