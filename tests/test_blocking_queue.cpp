#include <triad/blocking_queue.hpp>

#include "support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// The whole file in a namespace of its own: the unity build compiles several test files as one
// translation unit (tests/CMakeLists.txt), where helpers of the same name must not meet.
namespace triad_test_blocking_queue {

using namespace std::chrono_literals;
using triad_test::eventually;
using triad_test::finishes_within;

namespace {

// Producer `p`'s item `i` is p * per_producer + i: every item is unique, and its producer and
// place in that producer's sequence can be read back.
template <class Queue>
void check_exactly_once(Queue& queue, int producers, int consumers, int per_producer, bool fifo) {
    const int total = producers * per_producer;
    std::vector<std::atomic<int>> seen(static_cast<std::size_t>(total));
    std::atomic<long long> sum{0};
    std::atomic<int> count{0};
    std::atomic<int> out_of_order{0};

    std::vector<std::thread> consumer_threads;
    for (int c = 0; c < consumers; ++c)
        consumer_threads.emplace_back([&] {
            // A FIFO queue hands each consumer a producer's items in the order it pushed them.
            std::vector<int> last(static_cast<std::size_t>(producers), -1);
            while (auto item = queue.pop()) {
                seen[static_cast<std::size_t>(*item)].fetch_add(1);
                sum += *item;
                ++count;
                const int p = *item / per_producer;
                const int i = *item % per_producer;
                if (i <= last[static_cast<std::size_t>(p)])
                    ++out_of_order;
                last[static_cast<std::size_t>(p)] = i;
            }
        });
    std::vector<std::thread> producer_threads;
    for (int p = 0; p < producers; ++p)
        producer_threads.emplace_back([&, p] {
            for (int i = 0; i < per_producer; ++i)
                queue.push(p * per_producer + i);
        });
    for (auto& t : producer_threads)
        t.join();
    queue.close();
    for (auto& t : consumer_threads)
        t.join();

    CHECK(count == total);
    CHECK(sum == static_cast<long long>(total) * (total - 1) / 2);
    CHECK(std::all_of(seen.begin(), seen.end(), [](const auto& n) { return n.load() == 1; }));
    if (fifo)
        CHECK(out_of_order == 0);
    CHECK(queue.size() == 0);
}

// A value whose copy and move constructors throw while `fail` is set: the strong guarantee.
struct fragile {
    static inline std::atomic<bool> fail{false};
    int value = 0;
    std::unique_ptr<int> payload; // a moved-from item shows as null

    explicit fragile(int v) : value(v), payload(std::make_unique<int>(v)) {}
    fragile(fragile&& other) : value(other.value) {
        if (fail)
            throw std::runtime_error("fragile: move failed");
        payload = std::move(other.payload);
    }
    fragile(const fragile& other) : value(other.value) {
        if (fail)
            throw std::runtime_error("fragile: copy failed");
        payload = std::make_unique<int>(*other.payload);
    }
    fragile& operator=(fragile&&) = delete;
    fragile& operator=(const fragile&) = delete;
    bool operator<(const fragile& other) const { return value < other.value; }
};

// A clock of its own, to show that *_until takes any clock.
struct offset_clock {
    using rep = std::chrono::steady_clock::rep;
    using period = std::chrono::steady_clock::period;
    using duration = std::chrono::steady_clock::duration;
    using time_point = std::chrono::time_point<offset_clock>;
    [[maybe_unused]] static constexpr bool is_steady = true; // the Clock requirements
    static time_point now() {
        return time_point(std::chrono::steady_clock::now().time_since_epoch() + 1h);
    }
};

struct by_priority {
    bool operator()(const std::pair<int, int>& a, const std::pair<int, int>& b) const {
        return a.first < b.first;
    }
};

} // namespace

TEST_CASE("capacity 0 is refused with a message naming the problem", "[blocking_queue]") {
    CHECK_THROWS_WITH(triad::blocking_queue<int>(0),
                      Catch::Contains("triad::blocking_queue") &&
                          Catch::Contains("capacity must be at least 1"));
    CHECK_THROWS_AS(triad::priority_queue<int>(0), std::invalid_argument);
    CHECK_THROWS_WITH(triad::priority_queue<int>(0), Catch::Contains("triad::priority_queue"));
}

TEST_CASE("a queue keeps FIFO order and reports size, capacity and closed", "[blocking_queue]") {
    triad::blocking_queue<std::string> q(3);
    CHECK(q.capacity() == 3);
    CHECK(q.size() == 0);
    CHECK_FALSE(q.closed());
    q.push("a");
    const std::string b = "b";
    q.push(b); // a copy
    CHECK(q.try_push("c"));
    CHECK(q.size() == 3);
    std::string d = "d";
    CHECK_FALSE(q.try_push(std::move(d)));
    CHECK(d == "d"); // refused: not moved from
    CHECK(q.pop() == "a");
    CHECK(q.try_pop() == "b");
    CHECK(q.pop_for(1s) == "c");
    CHECK_FALSE(q.try_pop().has_value());
}

TEST_CASE("an unbounded queue never waits for room", "[blocking_queue]") {
    triad::blocking_queue<int> q(triad::unbounded);
    CHECK(q.capacity() == std::numeric_limits<std::size_t>::max());
    for (int i = 0; i < 10000; ++i)
        REQUIRE(q.try_push(i));
    CHECK(q.size() == 10000);
    triad::priority_queue<int> p(triad::unbounded);
    for (int i = 0; i < 1000; ++i)
        REQUIRE(p.try_push(i));
    CHECK(p.pop() == 999);
}

TEST_CASE("several producers and consumers: every item delivered exactly once",
          "[blocking_queue]") {
    SECTION("blocking_queue, capacity 4") {
        triad::blocking_queue<int> q(4);
        check_exactly_once(q, 4, 3, 5000, true);
    }
    SECTION("blocking_queue, capacity 1") {
        triad::blocking_queue<int> q(1);
        check_exactly_once(q, 3, 3, 2000, true);
    }
    SECTION("priority_queue, capacity 8") {
        triad::priority_queue<int> q(8);
        check_exactly_once(q, 4, 3, 5000, false);
    }
}

TEST_CASE("a full queue blocks its producer: it never gets more than capacity ahead",
          "[blocking_queue]") {
    constexpr int capacity = 3;
    constexpr int total = 200;
    triad::blocking_queue<int> q(capacity);
    std::atomic<int> pushed{0}; // pushes that returned
    std::thread producer([&] {
        for (int i = 0; i < total; ++i) {
            q.push(i);
            ++pushed;
        }
    });
    int popped = 0;
    int times_full = 0;
    while (popped < total) {
        // Wait until the producer has filled the queue (or pushed everything), then prove it
        // stopped there: capacity items queued, a try_push refused, no push returned beyond it.
        REQUIRE(eventually([&] { return pushed == std::min(total, popped + capacity); }));
        if (pushed < total) {
            ++times_full;
            CHECK(q.size() == capacity);
            CHECK_FALSE(q.try_push(-1));
            std::this_thread::yield();
            CHECK(pushed == popped + capacity);
        }
        const auto item = q.pop();
        REQUIRE(item.has_value());
        CHECK(*item == popped);
        ++popped;
        CHECK(pushed <= popped + capacity);
    }
    producer.join();
    CHECK(times_full == total - capacity);
    CHECK(q.size() == 0);
}

TEST_CASE("timeouts return by their deadline", "[blocking_queue]") {
    triad::blocking_queue<int> q(1);
    auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(q.pop_for(50ms).has_value());
    auto waited = std::chrono::steady_clock::now() - start;
    CHECK(waited >= 50ms);
    CHECK(waited < 5s);

    q.push(1);
    int two = 2;
    start = std::chrono::steady_clock::now();
    CHECK_FALSE(q.push_for(std::move(two), 50ms));
    waited = std::chrono::steady_clock::now() - start;
    CHECK(waited >= 50ms);
    CHECK(waited < 5s);

    SECTION("zero and negative timeouts do not wait") {
        CHECK_FALSE(q.push_for(3, 0ms));
        CHECK_FALSE(q.push_for(3, -1s));
        CHECK(q.pop_for(-1s) == 1);
        CHECK_FALSE(q.pop_for(0ms).has_value());
    }
    SECTION("a huge timeout does not overflow: ready items return at once") {
        CHECK(q.pop_for(std::chrono::hours::max()) == 1);
        CHECK(q.push_for(4, std::chrono::nanoseconds::max()));
        CHECK(q.pop_for(std::chrono::seconds::max()) == 4);
    }
    SECTION("*_until on the system clock and on a clock of its own") {
        start = std::chrono::steady_clock::now();
        CHECK_FALSE(q.push_until(5, std::chrono::system_clock::now() + 30ms));
        CHECK(q.pop_until(offset_clock::now() + 30ms) == 1);
        CHECK_FALSE(q.pop_until(offset_clock::now() + 30ms).has_value());
        waited = std::chrono::steady_clock::now() - start;
        CHECK(waited >= 60ms);
        CHECK(waited < 5s);
        CHECK(q.push_until(6, offset_clock::now() - 1s)); // room: a past deadline still pushes
        CHECK(q.pop_until(std::chrono::system_clock::now() - 1s) == 6);
    }
    SECTION("a timed wait ends early when its condition comes true") {
        std::optional<int> popped; // Catch2's checks are for the test's own thread
        std::thread consumer([&] {
            std::this_thread::sleep_for(20ms);
            popped = q.pop();
        });
        CHECK(q.push_for(7, 10s));
        consumer.join();
        CHECK(popped == 1);
        CHECK(q.pop_for(10s) == 7);
    }
}

TEST_CASE("close wakes blocked poppers and pushers", "[blocking_queue]") {
    SECTION("poppers get an empty optional") {
        triad::blocking_queue<int> q(2);
        std::atomic<int> ended{0};
        std::atomic<int> got_item{0};
        std::vector<std::thread> poppers;
        for (int i = 0; i < 3; ++i)
            poppers.emplace_back([&] {
                if (q.pop())
                    ++got_item;
                ++ended;
            });
        poppers.emplace_back([&] { // the longest timeouts saturate instead of overflowing
            if (q.pop_for(std::chrono::hours::max()))
                ++got_item;
            ++ended;
        });
        poppers.emplace_back([&] {
            if (q.pop_until(std::chrono::system_clock::time_point::max()))
                ++got_item;
            ++ended;
        });
        std::this_thread::sleep_for(20ms); // most likely all are waiting; either way must end
        CHECK(ended == 0);
        CHECK(finishes_within(10s, [&] {
            q.close();
            for (auto& t : poppers)
                t.join();
        }));
        CHECK(ended == 5);
        CHECK(got_item == 0);
    }
    SECTION("pushers throw queue_closed and add nothing") {
        triad::priority_queue<int> q(1);
        q.push(0);
        std::atomic<int> threw{0};
        std::atomic<int> named_the_push{0}; // checked here: Catch2's checks are not thread-safe
        std::vector<std::thread> pushers;
        for (int i = 0; i < 3; ++i)
            pushers.emplace_back([&, i] {
                try {
                    if (i == 0)
                        (void)q.push_for(i + 1, std::chrono::hours::max());
                    else
                        q.push(i + 1);
                } catch (const triad::queue_closed& e) {
                    const std::string what = e.what();
                    if (what.find("triad::priority_queue::push") != std::string::npos &&
                        what.find("closed") != std::string::npos)
                        ++named_the_push;
                    ++threw;
                }
            });
        std::this_thread::sleep_for(20ms);
        CHECK(finishes_within(10s, [&] {
            q.close();
            for (auto& t : pushers)
                t.join();
        }));
        CHECK(threw == 3);
        CHECK(named_the_push == 3);
        CHECK(q.size() == 1);
        CHECK(q.pop() == 0);
        CHECK_FALSE(q.pop().has_value());
    }
}

TEST_CASE("after close, pops drain what is left, then return empty", "[blocking_queue]") {
    triad::blocking_queue<int> q(8);
    for (int i = 0; i < 5; ++i)
        q.push(i);
    q.close();
    q.close(); // idempotent
    CHECK(q.closed());
    CHECK_THROWS_WITH(q.push(9), Catch::Contains("triad::blocking_queue::push") &&
                                     Catch::Contains("the queue is closed"));
    CHECK_THROWS_AS((void)q.try_push(9), triad::queue_closed);
    // Each message names the call that was made, not the one it is implemented with.
    CHECK_THROWS_WITH((void)q.push_for(9, 1s), Catch::Contains("triad::blocking_queue::push_for:"));
    const int nine = 9;
    CHECK_THROWS_WITH((void)q.push_for(nine, 1s),
                      Catch::Contains("triad::blocking_queue::push_for:"));
    CHECK_THROWS_WITH((void)q.push_until(9, std::chrono::steady_clock::now() + 1s),
                      Catch::Contains("triad::blocking_queue::push_until:"));
    CHECK(q.size() == 5);
    std::vector<int> got;
    while (auto item = q.pop())
        got.push_back(*item);
    CHECK(got == std::vector<int>{0, 1, 2, 3, 4});
    const auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(q.pop_for(1h).has_value());
    CHECK_FALSE(q.try_pop().has_value());
    CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("priority_queue serves the greatest first and equals in FIFO order", "[blocking_queue]") {
    SECTION("a fixed sequence") {
        triad::priority_queue<std::pair<int, int>, by_priority> q(16);
        const std::vector<std::pair<int, int>> pushed{{1, 0}, {5, 1}, {3, 2}, {5, 3},
                                                      {1, 4}, {3, 5}, {5, 6}, {0, 7}};
        for (const auto& item : pushed)
            q.push(item);
        std::vector<std::pair<int, int>> got;
        while (auto item = q.try_pop())
            got.push_back(*item);
        CHECK(got == std::vector<std::pair<int, int>>{
                         {5, 1}, {5, 3}, {5, 6}, {3, 2}, {3, 5}, {1, 0}, {1, 4}, {0, 7}});
    }
    SECTION("std::greater serves the smallest first, as Python's PriorityQueue") {
        triad::priority_queue<int, std::greater<int>> q(8);
        for (int v : {4, 1, 3, 1, 2})
            q.push(v);
        std::vector<int> got;
        while (auto item = q.try_pop())
            got.push_back(*item);
        CHECK(got == std::vector<int>{1, 1, 2, 3, 4});
    }
    SECTION("random priorities against a stable sort") {
        std::mt19937 random(12345);
        triad::priority_queue<std::pair<int, int>, by_priority> q(triad::unbounded);
        std::vector<std::pair<int, int>> expected;
        for (int i = 0; i < 2000; ++i) {
            const std::pair<int, int> item{static_cast<int>(random() % 10), i};
            q.push(item);
            expected.push_back(item);
        }
        std::stable_sort(expected.begin(), expected.end(),
                         [](const auto& a, const auto& b) { return a.first > b.first; });
        std::vector<std::pair<int, int>> got;
        while (auto item = q.try_pop())
            got.push_back(*item);
        CHECK(got == expected);
    }
    SECTION("a comparator with state") {
        const auto distance_to = [](int target) {
            return [target](int a, int b) { return std::abs(a - target) > std::abs(b - target); };
        };
        triad::priority_queue<int, std::function<bool(int, int)>> q(8, distance_to(10));
        for (int v : {0, 9, 20, 12})
            q.push(v);
        CHECK(q.pop() == 9);
        CHECK(q.pop() == 12);
        CHECK(q.pop() == 0); // 0 and 20 are equally far: first pushed first
        CHECK(q.pop() == 20);
    }
}

TEST_CASE("move-only items", "[blocking_queue]") {
    triad::blocking_queue<std::unique_ptr<int>> q(2);
    q.push(std::make_unique<int>(1));
    auto two = std::make_unique<int>(2);
    CHECK(q.try_push(std::move(two)));
    CHECK(two == nullptr);
    auto three = std::make_unique<int>(3);
    CHECK_FALSE(q.try_push(std::move(three)));
    CHECK_FALSE(q.push_for(std::move(three), 1ms));
    REQUIRE(three != nullptr); // refused pushes leave the item with the caller
    CHECK(*three == 3);
    CHECK(**q.pop() == 1);
    CHECK(**q.pop() == 2);

    const auto deref_less = [](const std::unique_ptr<int>& a, const std::unique_ptr<int>& b) {
        return *a < *b;
    };
    triad::priority_queue<std::unique_ptr<int>, decltype(deref_less)> p(4, deref_less);
    for (int v : {2, 7, 1})
        p.push(std::make_unique<int>(v));
    CHECK(**p.pop() == 7);
    CHECK(**p.pop() == 2);
    CHECK(**p.pop() == 1);
}

TEMPLATE_TEST_CASE("a throwing move or copy leaves the queue as it was", "[blocking_queue]",
                   triad::blocking_queue<fragile>, triad::priority_queue<fragile>) {
    TestType q(4);
    q.push(fragile(1));
    q.push(fragile(2));
    fragile::fail = true;

    SECTION("push: the item stays with the caller and the queue is unchanged") {
        fragile three(3);
        CHECK_THROWS_WITH(q.push(std::move(three)), "fragile: move failed");
        CHECK_THROWS_WITH((void)q.try_push(std::move(three)), "fragile: move failed");
        CHECK_THROWS_WITH((void)q.push_for(std::move(three), 1s), "fragile: move failed");
        CHECK_THROWS_WITH(q.push(three), "fragile: copy failed");
        CHECK(three.payload != nullptr);
        CHECK(q.size() == 2);
        fragile::fail = false;
        q.push(std::move(three));
        CHECK(q.size() == 3);
    }
    SECTION("pop: the item stays in the queue") {
        CHECK_THROWS_WITH(q.pop(), "fragile: move failed");
        CHECK_THROWS_WITH(q.try_pop(), "fragile: move failed");
        CHECK_THROWS_WITH(q.pop_for(1s), "fragile: move failed");
        CHECK(q.size() == 2);
        fragile::fail = false;
    }
    fragile::fail = false;
    std::vector<int> got;
    while (auto item = q.try_pop()) {
        REQUIRE(item->payload != nullptr); // not a moved-from shell
        CHECK(*item->payload == item->value);
        got.push_back(item->value);
    }
    std::sort(got.begin(), got.end());
    CHECK(got.size() >= 2);
    CHECK(got[0] == 1);
    CHECK(got[1] == 2);
}

TEST_CASE("randomized stress: producers, consumers, timeouts and an early close",
          "[blocking_queue]") {
    std::uint64_t seed = std::random_device{}();
    if (const char* fixed = std::getenv("TRIAD_STRESS_SEED"))
        seed = std::strtoull(fixed, nullptr, 10);
    std::printf("blocking_queue stress: seed %llu (replay with TRIAD_STRESS_SEED=%llu)\n",
                static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
    std::fflush(stdout);
    INFO("seed " << seed << " (replay with TRIAD_STRESS_SEED=" << seed << ")");
#ifdef TRIAD_TEST_SANITIZER
    constexpr int rounds = 30;
#else
    constexpr int rounds = 120;
#endif
    std::mt19937_64 random(seed);
    for (int round = 0; round < rounds; ++round) {
        INFO("round " << round);
        const bool priority = random() % 2 == 0;
        const std::size_t capacity = 1 + random() % 8;
        const int producers = 1 + static_cast<int>(random() % 4);
        const int consumers = 1 + static_cast<int>(random() % 4);
        const int per_producer = 50 + static_cast<int>(random() % 400);
        const bool close_early = random() % 3 == 0;
        const int total = producers * per_producer;

        std::optional<triad::blocking_queue<int>> fifo;
        std::optional<triad::priority_queue<int>> prio;
        if (priority)
            prio.emplace(capacity);
        else
            fifo.emplace(capacity);
        const auto push = [&](int op, int v) -> bool { // true: queued; false: refused, retry
            if (priority)
                return op == 0   ? (prio->push(v), true)
                       : op == 1 ? prio->try_push(v)
                                 : prio->push_for(v, 1ms);
            return op == 0   ? (fifo->push(v), true)
                   : op == 1 ? fifo->try_push(v)
                             : fifo->push_for(v, 1ms);
        };
        const auto pop = [&](int op) -> std::optional<int> {
            if (priority)
                return op == 0 ? prio->pop() : op == 1 ? prio->try_pop() : prio->pop_for(1ms);
            return op == 0 ? fifo->pop() : op == 1 ? fifo->try_pop() : fifo->pop_for(1ms);
        };
        const auto drained = [&] {
            return priority ? prio->closed() && prio->size() == 0
                            : fifo->closed() && fifo->size() == 0;
        };

        std::vector<std::atomic<int>> delivered(static_cast<std::size_t>(total));
        std::vector<std::atomic<int>> refused(static_cast<std::size_t>(total));
        std::atomic<int> out_of_order{0};
        std::atomic<int> producers_done{0};
        std::vector<std::thread> threads;
        for (int c = 0; c < consumers; ++c)
            threads.emplace_back([&, s = random()] {
                std::mt19937_64 r(s);
                std::vector<int> last(static_cast<std::size_t>(producers), -1);
                while (!drained()) {
                    const auto item = pop(static_cast<int>(r() % 3));
                    if (!item)
                        continue;
                    delivered[static_cast<std::size_t>(*item)].fetch_add(1);
                    const int p = *item / per_producer;
                    const int i = *item % per_producer;
                    if (i <= last[static_cast<std::size_t>(p)])
                        ++out_of_order;
                    last[static_cast<std::size_t>(p)] = i;
                }
            });
        for (int p = 0; p < producers; ++p)
            threads.emplace_back([&, p, s = random()] {
                std::mt19937_64 r(s);
                for (int i = 0; i < per_producer; ++i) {
                    const int v = p * per_producer + i;
                    try {
                        while (!push(static_cast<int>(r() % 3), v)) {
                        }
                    } catch (const triad::queue_closed&) {
                        for (int j = i; j < per_producer; ++j) // this and the rest: refused
                            refused[static_cast<std::size_t>(p * per_producer + j)].fetch_add(1);
                        break;
                    }
                }
                ++producers_done;
            });
        // The closer: after the producers, or early, racing them.
        if (close_early)
            std::this_thread::sleep_for(std::chrono::microseconds(random() % 2000));
        else
            while (producers_done < producers)
                std::this_thread::yield();
        if (priority)
            prio->close();
        else
            fifo->close();
        for (auto& t : threads)
            t.join();

        int delivered_count = 0;
        bool exactly_once = true;
        for (int v = 0; v < total; ++v) {
            const int d = delivered[static_cast<std::size_t>(v)];
            const int x = refused[static_cast<std::size_t>(v)];
            delivered_count += d;
            if (d + x != 1)
                exactly_once = false;
        }
        CHECK(exactly_once);
        if (!close_early)
            CHECK(delivered_count == total);
        if (!priority)
            CHECK(out_of_order == 0);
        CHECK(drained());
    }
}

} // namespace triad_test_blocking_queue
