#include <triad/synchronized.hpp>

#include <catch2/catch.hpp>

#include "support.hpp"

#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// The whole file in a namespace of its own: the unity build compiles several test files as one
// translation unit (tests/CMakeLists.txt), where helpers of the same name must not meet.
namespace triad_test_synchronized {

using namespace std::chrono_literals;
using triad_test::finishes_within;

namespace {

#ifdef TRIAD_TEST_SANITIZER
constexpr int increments = 5'000;
constexpr int transfers = 5'000;
#else
constexpr int increments = 50'000;
constexpr int transfers = 50'000;
#endif

// Runs `body` on another thread and gives its result: for checks that must come from a thread
// other than the one holding a lock (a mutex may not be tried by its owner).
template <class Body>
auto on_other_thread(Body body) {
    decltype(body()) result{};
    std::thread t([&] { result = body(); });
    t.join();
    return result;
}

template <class S>
concept has_copy = requires(const S& s) {
    s.copy();
};

} // namespace

TEST_CASE("threads incrementing through with_lock lose no update", "[synchronized]") {
    triad::synchronized<long> counter{0};
    constexpr int thread_count = 4;
    std::vector<std::thread> threads;
    for (int t = 0; t < thread_count; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < increments; ++i)
                counter.with_lock([](long& v) { ++v; });
        });
    for (auto& t : threads)
        t.join();
    CHECK(counter.copy() == static_cast<long>(thread_count) * increments);
}

TEST_CASE("threads incrementing through lock() guards lose no update, any mutex",
          "[synchronized]") {
    triad::synchronized<long> shared{0};
    triad::synchronized<long, std::mutex> plain{0};
    triad::synchronized<long, std::timed_mutex> timed{0};
    constexpr int thread_count = 3;
    std::vector<std::thread> threads;
    for (int t = 0; t < thread_count; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < increments; ++i) {
                ++*shared.lock();
                ++*plain.lock();
                auto guard = timed.lock();
                *guard += 1;
            }
        });
    for (auto& t : threads)
        t.join();
    const long expected = static_cast<long>(thread_count) * increments;
    CHECK(shared.copy() == expected);
    CHECK(plain.copy() == expected);
    CHECK(timed.copy() == expected);
}

TEST_CASE("an exception from the function releases the lock", "[synchronized]") {
    triad::synchronized<int> value{1};
    CHECK_THROWS_AS(value.with_lock([](int& v) {
        v = 2;
        throw std::runtime_error("boom");
    }),
                    std::runtime_error);
    CHECK_THROWS_AS(value.with_rlock([](const int&) -> int { throw std::runtime_error("boom"); }),
                    std::runtime_error);
    CHECK(on_other_thread([&] { return value.try_lock_for(0ms).has_value(); }));
    CHECK(value.copy() == 2);
}

TEST_CASE("with_lock and with_rlock return what the function returns", "[synchronized]") {
    triad::synchronized<std::vector<int>> values{std::vector<int>{1, 2, 3}};
    CHECK(values.with_lock([](std::vector<int>& v) {
        v.push_back(4);
        return v.size();
    }) == 4);
    CHECK(values.with_rlock([](const std::vector<int>& v) { return v.back(); }) == 4);
    CHECK(values.rlock()->size() == 4);
    CHECK((*values.lock())[0] == 1);
}

TEST_CASE("readers holding rlock share it: two are inside at once", "[synchronized]") {
    // Each reader arrives at a barrier while it holds its shared lock: the barrier opens only
    // if both are inside together. An exclusive rlock would leave the second reader waiting for
    // the first, which waits at the barrier: the watchdog fails the check instead of hanging.
    auto value = std::make_shared<triad::synchronized<int>>(7);
    auto both_inside = std::make_shared<std::barrier<>>(2);
    auto seen = std::make_shared<std::atomic<int>>(0);
    const bool finished = finishes_within(30s, [value, both_inside, seen] {
        const auto reader = [&] {
            auto guard = value->rlock();
            both_inside->arrive_and_wait();
            seen->fetch_add(*guard);
        };
        std::thread a(reader);
        std::thread b(reader);
        a.join();
        b.join();
    });
    REQUIRE(finished);
    CHECK(seen->load() == 14);
}

TEST_CASE("readers inside with_rlock share it: two are inside at once", "[synchronized]") {
    auto value = std::make_shared<triad::synchronized<int, std::shared_timed_mutex>>(5);
    auto both_inside = std::make_shared<std::barrier<>>(2);
    auto seen = std::make_shared<std::atomic<int>>(0);
    const bool finished = finishes_within(30s, [value, both_inside, seen] {
        const auto reader = [&] {
            seen->fetch_add(value->with_rlock([&](const int& v) {
                both_inside->arrive_and_wait();
                return v;
            }));
        };
        std::thread a(reader);
        std::thread b(reader);
        a.join();
        b.join();
    });
    REQUIRE(finished);
    CHECK(seen->load() == 10);
}

TEST_CASE("a writer excludes readers: a reader sees only the finished write", "[synchronized]") {
    struct pair_of {
        int first = 0;
        int second = 0;
    };
    triad::synchronized<pair_of> value;
    std::latch reader_started(1);
    pair_of seen{-1, -1};
    auto writer = value.lock();
    std::thread reader([&] {
        reader_started.count_down();
        seen = value.copy(); // a shared lock: must wait for the writer
    });
    reader_started.wait();
    writer->first = 1;
    // Give the reader time to reach its lock; whatever the timing, it cannot see a half write.
    std::this_thread::sleep_for(20ms);
    writer->second = 1;
    writer.unlock();
    reader.join();
    CHECK(seen.first == 1);
    CHECK(seen.second == 1);
}

TEST_CASE("a writer excludes timed readers, a reader excludes timed writers", "[synchronized]") {
    triad::synchronized<int> value{1};
    {
        auto writer = value.lock();
        CHECK_FALSE(on_other_thread([&] { return value.try_rlock_for(20ms).has_value(); }));
        CHECK_FALSE(on_other_thread([&] { return value.try_lock_for(20ms).has_value(); }));
    }
    {
        auto reader = value.rlock();
        CHECK(on_other_thread([&] { return value.try_rlock_for(5s).has_value(); }));
        CHECK_FALSE(on_other_thread([&] { return value.try_lock_for(20ms).has_value(); }));
    }
    CHECK(on_other_thread([&] { return value.try_lock_for(0ms).has_value(); }));
}

TEMPLATE_TEST_CASE("try_lock_for times out while another thread holds the lock", "[synchronized]",
                   std::shared_mutex, std::timed_mutex, std::mutex, std::shared_timed_mutex) {
    triad::synchronized<int, TestType> value{0};
    std::latch held(1);
    triad_test::gate release;
    std::thread holder([&] {
        auto guard = value.lock();
        *guard = 42;
        held.count_down();
        release.wait();
    });
    held.wait();
    const auto start = std::chrono::steady_clock::now();
    const auto refused = value.try_lock_for(50ms);
    const auto waited = std::chrono::steady_clock::now() - start;
    CHECK_FALSE(refused.has_value());
    CHECK(waited >= 50ms);
    release.open();
    // Once the holder lets go, a timed lock gets it (the deadline is only a watchdog).
    auto granted = value.try_lock_for(30s);
    holder.join();
    REQUIRE(granted.has_value());
    CHECK(**granted == 42);
    **granted = 43;
    granted.reset();
    CHECK(value.copy() == 43);
}

TEST_CASE("synchronize from two threads in opposite orders finishes and moves money exactly",
          "[synchronized]") {
    // The classic lock-order deadlock: one thread locks (a, b), the other (b, a). synchronize
    // locks both without deadlock whatever the order; the watchdog turns a regression into a
    // failed check, not a hung test.
    auto a = std::make_shared<triad::synchronized<long>>(1'000'000);
    auto b = std::make_shared<triad::synchronized<long>>(1'000'000);
    const bool finished = finishes_within(120s, [a, b] {
        std::thread forward([a, b] {
            for (int i = 0; i < transfers; ++i) {
                auto [from, to] = triad::synchronize(*a, *b);
                *from -= 3;
                *to += 3;
            }
        });
        std::thread backward([a, b] {
            for (int i = 0; i < transfers; ++i) {
                auto [from, to] = triad::synchronize(*b, *a);
                *from -= 1;
                *to += 1;
            }
        });
        forward.join();
        backward.join();
    });
    REQUIRE(finished);
    CHECK(a->copy() == 1'000'000 - 2L * transfers);
    CHECK(b->copy() == 1'000'000 + 2L * transfers);
}

TEST_CASE("synchronize locks objects of different types and mutexes", "[synchronized]") {
    triad::synchronized<std::string> name{std::string("ada")};
    triad::synchronized<int, std::mutex> count{1};
    triad::synchronized<std::vector<int>, std::timed_mutex> log;
    {
        auto [n, c, l] = triad::synchronize(name, count, log);
        *n += "!";
        ++*c;
        l->push_back(*c);
        CHECK_FALSE(on_other_thread([&] { return count.try_lock_for(10ms).has_value(); }));
    }
    CHECK(name.copy() == "ada!");
    CHECK(count.copy() == 2);
    CHECK(log.copy() == std::vector<int>{2});
    auto [only] = triad::synchronize(count);
    CHECK(*only == 2);
}

TEST_CASE("synchronize refuses the same object twice with a logic_error", "[synchronized]") {
    triad::synchronized<int> a{1};
    triad::synchronized<int> b{2};
    CHECK_THROWS_MATCHES(
        triad::synchronize(a, b, a), std::logic_error,
        Catch::Matchers::Message("triad::synchronize: arguments 1 and 3 are the same "
                                 "triad::synchronized object; locking it twice from one thread "
                                 "would deadlock, so pass it once"));
    // Nothing was locked by the refused call.
    CHECK(on_other_thread([&] { return a.try_lock_for(0ms).has_value(); }));
    CHECK(on_other_thread([&] { return b.try_lock_for(0ms).has_value(); }));
}

TEST_CASE("a moved-from guard is empty and refuses to be used", "[synchronized]") {
    triad::synchronized<int> value{3};
    auto first = value.lock();
    auto second = std::move(first);
    CHECK_FALSE(first);
    CHECK(second);
    CHECK_THROWS_AS(*first, std::logic_error);
    CHECK_THROWS_WITH(first.operator->(), Catch::Contains("used after it was moved from"));
    CHECK(*second == 3);
    // The lock moved with it: still held, until the new owner goes.
    CHECK_FALSE(on_other_thread([&] { return value.try_lock_for(0ms).has_value(); }));
    second.unlock();
    CHECK_FALSE(second);
    CHECK_THROWS_AS(*second, std::logic_error);
    CHECK(on_other_thread([&] { return value.try_lock_for(0ms).has_value(); }));

    // Move-assigning over a guard releases what it held.
    triad::synchronized<int> other{4};
    auto g = value.lock();
    auto h = other.lock();
    g = std::move(h);
    CHECK(*g == 4);
    CHECK(on_other_thread([&] { return value.try_lock_for(0ms).has_value(); }));
    CHECK_FALSE(on_other_thread([&] { return other.try_lock_for(0ms).has_value(); }));
}

TEST_CASE("a move-only value lives in a synchronized", "[synchronized]") {
    triad::synchronized<std::unique_ptr<int>> owner{std::make_unique<int>(9)};
    STATIC_REQUIRE_FALSE(has_copy<triad::synchronized<std::unique_ptr<int>>>);
    CHECK(**owner.rlock() == 9);
    std::unique_ptr<int> taken =
        owner.with_lock([](std::unique_ptr<int>& p) { return std::move(p); });
    REQUIRE(taken);
    CHECK(*taken == 9);
    CHECK(owner.with_rlock([](const std::unique_ptr<int>& p) { return p == nullptr; }));
    *owner.lock() = std::make_unique<int>(10);
    CHECK(**owner.lock() == 10);
}

TEST_CASE("in_place builds the value from constructor arguments", "[synchronized]") {
    triad::synchronized<std::string> text(std::in_place, 3, 'x');
    CHECK(text.copy() == "xxx");
    struct pinned {
        explicit pinned(int v) : value(v) {}
        pinned(const pinned&) = delete;
        pinned& operator=(const pinned&) = delete;
        int value;
    };
    triad::synchronized<pinned, std::mutex> fixed(std::in_place, 5);
    CHECK(fixed.lock()->value == 5);
    triad::synchronized<std::vector<int>> empty;
    CHECK(empty.rlock()->empty());
}

TEMPLATE_TEST_CASE("try_lock_for with a huge timeout waits for the lock instead of giving up",
                   "[synchronized]", std::shared_mutex, std::timed_mutex, std::mutex,
                   std::shared_timed_mutex) {
    // now() + hours::max() overflows (the mutex's own try_lock_for computes it too): the
    // deadline wrapped into the past, and the call returned nullopt at once or, on
    // std::shared_timed_mutex, a guard without the lock while a writer still held it. "Wait as
    // long as it takes" must wait, for the exclusive and the shared lock alike: the holder
    // writes a new value just before it lets go, and the waiter must see it.
    triad::synchronized<int, TestType> value{0};
    const auto after_holder = [&](auto try_lock) {
        std::latch held(1);
        triad_test::gate release;
        std::thread holder([&] {
            auto guard = value.lock();
            held.count_down();
            release.wait();
            ++*guard;
        });
        held.wait();
        std::thread opener([&] {
            std::this_thread::sleep_for(50ms);
            release.open();
        });
        int seen = -1;
        if (auto guard = try_lock())
            seen = **guard;
        opener.join();
        holder.join();
        return seen;
    };
    CHECK(after_holder([&] { return value.try_lock_for(std::chrono::hours::max()); }) == 1);
    CHECK(after_holder([&] { return value.try_lock_for(std::chrono::nanoseconds::max()); }) == 2);
    CHECK(after_holder([&] { return value.try_lock_for(std::chrono::duration<double>(1e300)); }) ==
          3);
    if constexpr (triad::detail::shared_lockable<TestType>) {
        CHECK(after_holder([&] { return value.try_rlock_for(std::chrono::hours::max()); }) == 4);
        CHECK(after_holder([&] { return value.try_rlock_for(std::chrono::nanoseconds::max()); }) ==
              5);
    }
    // Zero and negative timeouts still try once, and a NaN one is refused.
    CHECK(value.try_lock_for(-std::chrono::hours::max()).has_value());
    CHECK(value.try_lock_for(0ms).has_value());
    CHECK_THROWS_AS(value.try_lock_for(std::chrono::duration<double>(std::nan(""))),
                    std::invalid_argument);
}

TEST_CASE("synchronize tells a synchronized from one nested at the same address",
          "[synchronized]") {
    // A synchronized whose value starts with another synchronized shares its address with that
    // inner object: two objects, two mutexes. Comparing the objects' addresses refused them as
    // "the same object"; what must differ is the mutex.
    struct account {
        triad::synchronized<long> balance{0};
        int id = 7;
    };
    triad::synchronized<account> outer;
    auto& inner = outer.lock()->balance; // the inner object has its own lock
    REQUIRE(static_cast<const void*>(&outer) == static_cast<const void*>(&inner));
    auto [o, i] = triad::synchronize(outer, inner);
    *i += 5;
    CHECK(o->id == 7);
    CHECK(*i == 5);
}

namespace {

// A reader-writer lock with no try_lock_shared, as a hand-rolled one may be: shared locking
// needs only lock_shared and unlock_shared, so rlock, with_rlock and copy must share with it.
class rw_without_try_shared {
public:
    void lock() { m_mutex.lock(); }
    bool try_lock() { return m_mutex.try_lock(); }
    void unlock() { m_mutex.unlock(); }
    void lock_shared() { m_mutex.lock_shared(); }
    void unlock_shared() { m_mutex.unlock_shared(); }

private:
    std::shared_mutex m_mutex;
};

} // namespace

TEST_CASE("a mutex with lock_shared but no try_lock_shared still gives shared locks",
          "[synchronized]") {
    // It was taken for exclusive-only: rlock and with_rlock did not compile ("this Mutex is
    // exclusive-only", though it has lock_shared) and copy() took the exclusive lock.
    auto value = std::make_shared<triad::synchronized<int, rw_without_try_shared>>(6);
    auto both_inside = std::make_shared<std::barrier<>>(2);
    auto seen = std::make_shared<std::atomic<int>>(0);
    const bool finished = finishes_within(30s, [value, both_inside, seen] {
        std::thread a([&] {
            auto guard = value->rlock();
            both_inside->arrive_and_wait();
            seen->fetch_add(*guard);
        });
        std::thread b([&] {
            seen->fetch_add(value->with_rlock([&](const int& v) {
                both_inside->arrive_and_wait();
                return v;
            }));
        });
        a.join();
        b.join();
    });
    REQUIRE(finished);
    CHECK(seen->load() == 12);
    CHECK(value->copy() == 6);
    CHECK(value->try_lock_for(0ms).has_value());
}

} // namespace triad_test_synchronized
