#include <triad/generator.hpp>

#include <triad/combinators.hpp>
#include <triad/sync.hpp>
#include <triad/task.hpp>
#include <triad/use_task.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/dispatch.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

// The whole file in a namespace of its own: the unity build compiles several test files as one
// translation unit (tests/CMakeLists.txt), where helpers of the same name must not meet.
namespace triad_test_generator {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

triad::generator<int> ticks(int n, std::chrono::milliseconds gap) {
    for (int i = 0; i < n; ++i) {
        co_await triad::sleep(gap);
        co_yield i;
    }
}

triad::generator<long> counting(long n) {
    for (long i = 0; i < n; ++i)
        co_yield i;
}

// Counts its destructions, to prove a frame's locals were (or were not) destroyed.
struct tracked {
    int& destroyed;
    explicit tracked(int& counter) : destroyed(counter) {}
    tracked(const tracked&) = delete;
    tracked& operator=(const tracked&) = delete;
    ~tracked() { ++destroyed; }
};

// Counts copies and moves of the items.
struct counted {
    static inline int copies = 0;
    static inline int moves = 0;
    int value = 0;
    explicit counted(int v) : value(v) {}
    counted(const counted& other) : value(other.value) { ++copies; }
    counted(counted&& other) noexcept : value(other.value) { ++moves; }
    counted& operator=(const counted&) = delete;
    counted& operator=(counted&&) = delete;
    static void reset() { copies = moves = 0; }
};

template <class T>
triad::task<std::vector<T>> drain(triad::generator<T>& gen) {
    std::vector<T> items;
    while (auto item = co_await gen.next())
        items.push_back(std::move(*item));
    co_return items;
}

} // namespace

TEST_CASE("a generator yields its items in order, awaiting between them", "[generator]") {
    const auto start = clock_type::now();
    const std::vector<int> items = triad::run([]() -> triad::task<std::vector<int>> {
        auto gen = ticks(5, 2ms);
        co_return co_await drain(gen);
    }());
    CHECK(items == std::vector<int>{0, 1, 2, 3, 4});
    CHECK(clock_type::now() - start >= 10ms);
}

TEST_CASE("a generator is lazy: its body starts at the first next()", "[generator]") {
    std::vector<std::string> log;
    auto body = [&log]() -> triad::generator<int> {
        log.push_back("start");
        co_yield 1;
        log.push_back("after 1");
        co_yield 2;
        log.push_back("end");
    };
    triad::run([&]() -> triad::task<void> {
        auto gen = body();
        co_await triad::sleep(1ms);
        CHECK(log.empty());
        CHECK_FALSE(gen.done());
        const std::optional<int> first = co_await gen.next();
        CHECK(first == 1);
        CHECK(log == std::vector<std::string>{"start"}); // runs only up to the co_yield
        const std::optional<int> second = co_await gen.next();
        CHECK(second == 2);
        const std::optional<int> end = co_await gen.next();
        CHECK_FALSE(end.has_value());
        CHECK(gen.done());
        CHECK(log == std::vector<std::string>{"start", "after 1", "end"});
        const std::optional<int> again = co_await gen.next(); // after the end: empty again
        CHECK_FALSE(again.has_value());
    }());
}

TEST_CASE("a generator never started is destroyed without running its body", "[generator]") {
    int ran = 0;
    auto body = [&ran]() -> triad::generator<int> {
        ++ran;
        co_yield 1;
    };
    { auto gen = body(); }
    CHECK(ran == 0);
}

TEST_CASE("co_yield of an lvalue copies it, of an rvalue moves it, of another type converts",
          "[generator]") {
    counted::reset();
    auto body = []() -> triad::generator<counted> {
        counted kept(1);
        co_yield kept; // a copy for the consumer
        CHECK(kept.value == 1);
        co_yield counted(2); // moved out of the temporary
        counted moved(3);
        co_yield std::move(moved);
    };
    std::vector<int> copies_after;
    std::vector<int> values;
    triad::run([&]() -> triad::task<void> {
        auto gen = body();
        while (auto item = co_await gen.next()) {
            values.push_back(item->value);
            copies_after.push_back(counted::copies);
        }
    }());
    CHECK(values == std::vector<int>{1, 2, 3});
    CHECK(copies_after == std::vector<int>{1, 1, 1}); // only the lvalue was copied

    auto strings = []() -> triad::generator<std::string> {
        co_yield "converted"; // const char* -> std::string
        std::string s = "copied";
        co_yield s;
        co_yield std::string(3, 'x');
    };
    const auto words = triad::run([&]() -> triad::task<std::vector<std::string>> {
        auto gen = strings();
        co_return co_await drain(gen);
    }());
    CHECK(words == std::vector<std::string>{"converted", "copied", "xxx"});
}

TEST_CASE("a generator of a move-only type moves each item to the consumer", "[generator]") {
    auto body = []() -> triad::generator<std::unique_ptr<int>> {
        for (int i = 0; i < 3; ++i) {
            auto p = std::make_unique<int>(i * 10);
            co_await triad::sleep(0ms);
            co_yield std::move(p);
        }
        co_yield std::make_unique<int>(30);
    };
    std::vector<int> values;
    triad::run([&]() -> triad::task<void> {
        auto gen = body();
        while (auto item = co_await gen.next()) {
            REQUIRE(*item != nullptr);
            values.push_back(**item);
        }
    }());
    CHECK(values == std::vector<int>{0, 10, 20, 30});
}

TEST_CASE("an exception in the body is rethrown by next(), which then returns empty",
          "[generator]") {
    int destroyed = 0;
    auto body = [&destroyed]() -> triad::generator<int> {
        tracked local(destroyed);
        co_yield 1;
        co_await triad::sleep(1ms);
        throw std::domain_error("stream broke");
    };
    triad::run([&]() -> triad::task<void> {
        auto gen = body();
        const std::optional<int> first = co_await gen.next();
        CHECK(first == 1);
        bool threw = false;
        try {
            co_await gen.next();
        } catch (const std::domain_error& e) {
            threw = std::string(e.what()) == "stream broke";
        }
        CHECK(threw);
        CHECK(destroyed == 1); // the body unwound
        CHECK(gen.done());
        const std::optional<int> after = co_await gen.next();
        CHECK_FALSE(after.has_value());
    }());
}

TEST_CASE("cancelling the consumer cancels the body's wait, and next() throws task_cancelled",
          "[generator]") {
    int destroyed = 0;
    bool body_saw_cancel = false;
    bool consumer_saw_cancel = false;
    auto body = [&]() -> triad::generator<int> {
        tracked local(destroyed);
        co_yield 1;
        try {
            co_await triad::sleep(10s);
        } catch (const triad::task_cancelled&) {
            body_saw_cancel = true;
            throw;
        }
        co_yield 2;
    };
    const auto start = clock_type::now();
    triad::run([&]() -> triad::task<void> {
        auto consumer = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            auto gen = body();
            co_await gen.next();
            try {
                co_await gen.next();
            } catch (const triad::task_cancelled&) {
                consumer_saw_cancel = true;
            }
            CHECK(gen.done());
            const std::optional<int> after = co_await gen.next();
            CHECK_FALSE(after.has_value());
        }));
        co_await triad::sleep(5ms);
        consumer.cancel();
        co_await consumer;
    }());
    CHECK(body_saw_cancel);
    CHECK(consumer_saw_cancel);
    CHECK(destroyed == 1);
    CHECK(clock_type::now() - start < 5s);
}

TEST_CASE("a body that catches the cancellation may go on yielding", "[generator]") {
    std::optional<int> got;
    triad::run([&]() -> triad::task<void> {
        auto consumer = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            auto body = []() -> triad::generator<int> {
                bool cancelled = false;
                try {
                    co_await triad::sleep(10s);
                } catch (const triad::task_cancelled&) {
                    cancelled = true;
                }
                co_yield cancelled ? -1 : 1;
            };
            auto gen = body();
            got = co_await gen.next();
        }));
        co_await triad::sleep(5ms);
        consumer.cancel();
        co_await consumer; // the cancellation was delivered (to the body) and consumed
    }());
    CHECK(got == -1);
}

TEST_CASE("a cancellation through a pipeline of generators reaches the innermost wait",
          "[generator]") {
    int inner_destroyed = 0;
    int outer_destroyed = 0;
    auto inner = [&]() -> triad::generator<int> {
        tracked local(inner_destroyed);
        for (int i = 0;; ++i) {
            co_await triad::sleep(std::chrono::milliseconds(i < 3 ? 1 : 10'000));
            co_yield i;
        }
    };
    auto doubled = [&](triad::generator<int> source) -> triad::generator<int> {
        tracked local(outer_destroyed);
        while (auto v = co_await source.next())
            co_yield 2 * *v;
    };
    std::vector<int> items;
    bool cancelled = false;
    triad::run([&]() -> triad::task<void> {
        auto consumer = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            auto gen = doubled(inner());
            try {
                while (auto v = co_await gen.next())
                    items.push_back(*v);
            } catch (const triad::task_cancelled&) {
                cancelled = true;
            }
        }));
        co_await triad::sleep(50ms);
        consumer.cancel();
        co_await consumer;
    }());
    CHECK(items == std::vector<int>{0, 2, 4});
    CHECK(cancelled);
    CHECK(inner_destroyed == 1);
    CHECK(outer_destroyed == 1);
}

TEST_CASE("timeout around next() cancels the body's wait and throws timeout_error", "[generator]") {
    int destroyed = 0;
    auto body = [&]() -> triad::generator<int> {
        tracked local(destroyed);
        co_yield 1;
        co_await triad::sleep(10s);
        co_yield 2;
    };
    const auto start = clock_type::now();
    triad::run([&]() -> triad::task<void> {
        auto gen = body();
        const std::optional<int> first = co_await triad::timeout(1s, gen.next());
        CHECK(first == 1);
        bool timed_out = false;
        try {
            co_await triad::timeout(20ms, gen.next());
        } catch (const triad::timeout_error&) {
            timed_out = true;
        }
        CHECK(timed_out);
        CHECK(gen.done());
        CHECK(destroyed == 1);
    }());
    CHECK(clock_type::now() - start < 5s);
}

TEST_CASE("next() is a cancellation point: a pending cancellation throws there and the body "
          "stays at its co_yield",
          "[generator]") {
    int resumed = 0;
    triad::task_handle<void>* self = nullptr;
    auto body = [&]() -> triad::generator<int> {
        ++resumed;
        self->cancel(); // while the body runs: the request waits for a suspension point
        co_yield 1;
        ++resumed;
        co_yield 2;
    };
    std::vector<int> items;
    bool cancelled_at_next = false;
    triad::run([&]() -> triad::task<void> {
        triad::task_handle<void> consumer =
            triad::spawn(triad::make_task([&]() -> triad::task<void> {
                auto gen = body();
                const std::optional<int> first = co_await gen.next(); // delivered all the same
                items.push_back(first.value_or(-1));
                try {
                    co_await gen.next();
                } catch (const triad::task_cancelled&) {
                    cancelled_at_next = true;
                }
                CHECK(resumed == 1); // the body was not resumed
                const std::optional<int> second = co_await gen.next();
                items.push_back(second.value_or(-1));
            }));
        self = &consumer;
        co_await consumer;
    }());
    CHECK(items == std::vector<int>{1, 2});
    CHECK(cancelled_at_next);
    CHECK(resumed == 2);
}

TEST_CASE("destroying a generator at a co_yield destroys its frame and runs its destructors",
          "[generator]") {
    int destroyed = 0;
    bool finished = false;
    auto body = [&]() -> triad::generator<int> {
        tracked outer(destroyed);
        for (int i = 0; i < 100; ++i) {
            tracked inner(destroyed);
            co_await triad::sleep(0ms);
            co_yield i;
        }
        finished = true;
    };
    triad::run([&]() -> triad::task<void> {
        {
            auto gen = body();
            co_await gen.next();
            co_await gen.next();
            CHECK(destroyed == 1); // the first iteration's `inner`
        }
        CHECK(destroyed == 3); // the second `inner` and `outer`, at the co_yield
    }());
    CHECK_FALSE(finished);
}

TEST_CASE("destroying a generator while a next() waits lets that next() finish, then frees the "
          "frame",
          "[generator]") {
    int destroyed = 0;
    auto body = [&]() -> triad::generator<int> {
        tracked local(destroyed);
        co_await triad::sleep(20ms);
        co_yield 7;
        co_yield 8;
    };
    std::optional<int> got;
    int destroyed_when_delivered = -1;
    triad::run([&]() -> triad::task<void> {
        auto gen = std::make_unique<triad::generator<int>>(body());
        auto consumer = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            got = co_await gen->next();
            destroyed_when_delivered = destroyed;
        }));
        co_await triad::sleep(2ms); // the consumer waits; the body sleeps
        gen.reset();
        CHECK(destroyed == 0); // not while the body waits in its sleep
        co_await consumer;
    }());
    CHECK(got == 7);
    CHECK(destroyed_when_delivered == 1); // freed as the item was delivered
    CHECK(destroyed == 1);
}

TEST_CASE("a generator moved while a next() waits goes on serving it", "[generator]") {
    std::vector<int> items;
    triad::run([&]() -> triad::task<void> {
        auto gen = ticks(3, 5ms);
        triad::generator<int> moved;
        auto consumer = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            auto first = co_await gen.next(); // `gen` is moved from while this waits
            items.push_back(first.value_or(-1));
            while (auto v = co_await moved.next())
                items.push_back(*v);
        }));
        co_await triad::sleep(1ms);
        moved = std::move(gen);
        co_await consumer;
    }());
    CHECK(items == std::vector<int>{0, 1, 2});
}

TEST_CASE("a second consumer's next() while one waits throws future_error", "[generator]") {
    std::string message;
    std::vector<int> items;
    triad::run([&]() -> triad::task<void> {
        auto gen = ticks(2, 10ms);
        auto first = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            while (auto v = co_await gen.next())
                items.push_back(*v);
        }));
        co_await triad::sleep(2ms);
        try {
            co_await gen.next();
        } catch (const triad::future_error& e) {
            message = e.what();
        }
        co_await first;
    }());
    CHECK_THAT(message, Catch::Contains("another next() of this generator is still waiting"));
    CHECK(items == std::vector<int>{0, 1}); // the first consumer is unharmed
}

TEST_CASE("a body that awaits its own generator's next() gets future_error", "[generator]") {
    triad::generator<int>* self = nullptr;
    auto body = [&]() -> triad::generator<int> {
        co_await self->next();
        co_yield 1;
    };
    triad::run([&]() -> triad::task<void> {
        auto gen = body();
        self = &gen;
        CHECK_THROWS_AS(co_await gen.next(), triad::future_error);
        CHECK(gen.done());
    }());
}

TEST_CASE("next() on an empty generator throws future_error", "[generator]") {
    triad::generator<int> empty;
    CHECK_FALSE(empty.valid());
    CHECK_THROWS_WITH(empty.next(), Catch::Contains("the generator is empty"));
    auto gen = counting(1);
    auto moved = std::move(gen);
    CHECK_THROWS_AS(gen.next(), triad::future_error);
    CHECK(moved.valid());
}

TEST_CASE("a generator's body awaits futures, channels, locks, Asio operations and tasks",
          "[generator]") {
    auto body = [](triad::channel<int>& input, triad::async_mutex& mutex,
                   triad::thread_pool& pool) -> triad::generator<std::string> {
        co_yield std::to_string(co_await pool.submit([] { return 6 * 7; }));
        while (auto v = co_await input.receive()) {
            auto guard = co_await mutex.lock();
            co_await boost::asio::dispatch(triad::current_executor(), triad::use_task);
            co_yield "in:" + std::to_string(*v);
        }
        auto [a, b] =
            co_await triad::gather(triad::make_task([]() -> triad::task<int> { co_return 1; }),
                                   triad::make_task([]() -> triad::task<int> {
                                       co_await triad::sleep(1ms);
                                       co_return 2;
                                   }));
        co_yield std::to_string(a + b);
    };
    triad::thread_pool pool(1);
    const auto items = triad::run([&]() -> triad::task<std::vector<std::string>> {
        triad::channel<int> input(1);
        triad::async_mutex mutex;
        auto producer = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            for (int i = 0; i < 3; ++i)
                co_await input.send(i);
            input.close();
        }));
        auto gen = body(input, mutex, pool);
        auto items = co_await drain(gen);
        co_await producer;
        co_return items;
    }());
    CHECK(items == std::vector<std::string>{"42", "in:0", "in:1", "in:2", "3"});
}

TEST_CASE("run ends while a consumer waits in next(): the body is cancelled and unwinds",
          "[generator]") {
    int destroyed = 0;
    bool consumer_cancelled = false;
    auto body = [&]() -> triad::generator<int> {
        tracked local(destroyed);
        co_await triad::sleep(10s);
        co_yield 1;
    };
    const auto start = clock_type::now();
    triad::run([&]() -> triad::task<void> {
        (void)triad::spawn(triad::make_task([&]() -> triad::task<void> {
            auto gen = body();
            try {
                co_await gen.next();
            } catch (const triad::task_cancelled&) {
                consumer_cancelled = true;
            }
        }));
        co_await triad::sleep(2ms);
    }());
    CHECK(consumer_cancelled);
    CHECK(destroyed == 1);
    CHECK(clock_type::now() - start < 5s);
}

TEST_CASE("a generator can be consumed without an event loop when its body never waits",
          "[generator]") {
    // A consumer that is not one of triad's coroutines: a minimal eager one.
    struct eager {
        struct promise_type {
            eager get_return_object() noexcept { return {}; }
            std::suspend_never initial_suspend() noexcept { return {}; }
            std::suspend_never final_suspend() noexcept { return {}; }
            void return_void() noexcept {}
            void unhandled_exception() noexcept { std::terminate(); }
        };
    };
    long sum = 0;
    auto consume = [](long& total) -> eager {
        auto gen = counting(1000);
        while (auto v = co_await gen.next())
            total += *v;
    };
    consume(sum);
    CHECK(sum == 999 * 1000 / 2);
}

TEST_CASE("a stream of 1,000,000 items runs in constant stack", "[generator]") {
    // Each hand-over would take a frame of stack if the transfers nested.
    const long sum = triad::run([]() -> triad::task<long> {
        auto gen = counting(1'000'000);
        long total = 0;
        while (auto v = co_await gen.next())
            total += *v;
        co_return total;
    }());
    CHECK(sum == 999'999L * 1'000'000L / 2);
}

} // namespace triad_test_generator
