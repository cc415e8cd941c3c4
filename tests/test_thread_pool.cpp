#include <triad/thread_pool.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <list>
#include <mutex>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>

using namespace std::chrono_literals;

namespace {

// A gate that tasks block on until the test opens it. It blocks the thread outright (no
// helping), so a gated task really occupies its worker.
class gate {
public:
    void open() {
        m_open = true;
        m_open.notify_all();
    }
    void wait() const { m_open.wait(false); }

private:
    std::atomic<bool> m_open{false};
};

struct no_default {
    explicit no_default(int v) : value(v) {}
    int value;
};

double process_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

template <class Predicate>
bool eventually(Predicate predicate, std::chrono::milliseconds limit = 10s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!predicate()) {
        if (std::chrono::steady_clock::now() > until)
            return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

} // namespace

TEST_CASE("100,000 submitted tasks all return their own result", "[thread_pool]") {
    triad::thread_pool pool(4);
    std::vector<triad::future<long long>> futures;
    futures.reserve(100'000);
    for (long long i = 0; i < 100'000; ++i)
        futures.push_back(pool.submit([](long long x) { return x * x; }, i));
    long long sum = 0;
    for (auto& f : futures)
        sum += f.get();
    long long expected = 0;
    for (long long i = 0; i < 100'000; ++i)
        expected += i * i;
    CHECK(sum == expected);
    CHECK(pool.completed() == 100'000);
}

TEST_CASE("the pool is sized by cpu_count() by default and rejects zero threads", "[thread_pool]") {
    triad::thread_pool pool;
    CHECK(pool.size() == triad::cpu_count());
    CHECK_THROWS_AS(triad::thread_pool(0), std::invalid_argument);
    CHECK_THROWS_AS(triad::thread_pool(triad::thread_pool_options{.threads = 0}),
                    std::invalid_argument);
}

TEST_CASE("submit binds arguments by copy or move, and std::ref by reference", "[thread_pool]") {
    triad::thread_pool pool(2);
    auto owned = std::make_unique<int>(5);
    auto moved = pool.submit([](std::unique_ptr<int> p) { return *p + 1; }, std::move(owned));
    CHECK(moved.get() == 6);

    int counter = 0;
    pool.submit([](int& c) { c = 11; }, std::ref(counter)).get();
    CHECK(counter == 11);

    std::string text = "copied";
    auto copy = pool.submit([](std::string s) { return s + "!"; }, text);
    CHECK(copy.get() == "copied!");
    CHECK(text == "copied");

    int target = 0;
    auto ref = pool.submit([&target]() -> int& { return target; });
    ref.get() = 3;
    CHECK(target == 3);
}

TEST_CASE("map returns results in input order for any chunk size and range", "[thread_pool]") {
    triad::thread_pool pool(3);
    std::vector<int> items(10'007);
    std::iota(items.begin(), items.end(), 0);
    for (std::size_t chunk :
         {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{100'000}}) {
        const auto squares = pool.map([](int x) { return x * 2; }, items, {.chunk_size = chunk});
        REQUIRE(squares.size() == items.size());
        for (std::size_t i = 0; i < items.size(); ++i)
            REQUIRE(squares[i] == static_cast<int>(i) * 2);
    }

    const std::list<std::string> words{"a", "bb", "ccc"};
    CHECK(pool.map([](const std::string& w) { return w.size(); }, words) ==
          std::vector<std::size_t>{1, 2, 3});

    const auto odd = pool.map([](int x) { return x % 2 == 1; }, std::vector{1, 2, 3, 4});
    CHECK(odd == std::vector<bool>{true, false, true, false});

    std::vector<int> fifty(50);
    std::iota(fifty.begin(), fifty.end(), 0);
    const auto built = pool.map([](int x) { return no_default(x); }, fifty);
    REQUIRE(built.size() == 50);
    CHECK(built[49].value == 49);

    CHECK(pool.map([](int x) { return x; }, std::vector<int>{}).empty());
}

TEST_CASE("map rethrows the first failing item's exception after every item ran", "[thread_pool]") {
    triad::thread_pool pool(2);
    std::atomic<int> ran{0};
    const auto risky = [&ran](int x) {
        ++ran;
        if (x == 700 || x == 300)
            throw std::runtime_error("item " + std::to_string(x));
        return std::to_string(x);
    };
    std::vector<int> items(1000);
    std::iota(items.begin(), items.end(), 0);
    CHECK_THROWS_MATCHES(pool.map(risky, items, {.chunk_size = 10}), std::runtime_error,
                         Catch::Message("item 300"));
    CHECK(ran == 1000);
}

TEST_CASE("for_each and parallel_for visit every item exactly once", "[thread_pool]") {
    triad::thread_pool pool(3);
    std::vector<std::atomic<int>> hits(5000);
    pool.parallel_for(0, 5000, [&](int i) { hits[static_cast<std::size_t>(i)]++; });
    CHECK(std::all_of(hits.begin(), hits.end(), [](auto& h) { return h.load() == 1; }));

    std::atomic<long long> sum{0};
    pool.parallel_for(-100LL, 100, [&](long long i) { sum += i; }, {.chunk_size = 3});
    CHECK(sum == -100);
    pool.parallel_for(10, 10, [&](int) { sum += 1000; });
    pool.parallel_for(10, 5, [&](int) { sum += 1000; });
    CHECK(sum == -100);
    CHECK_THROWS_AS(pool.parallel_for(-1, std::size_t{10}, [](std::size_t) {}), std::out_of_range);

    std::vector<std::string> words{"x", "yy", "zzz"};
    std::atomic<std::size_t> letters{0};
    pool.for_each(words, [&](const std::string& w) { letters += w.size(); });
    CHECK(letters == 6);
}

TEST_CASE("as_completed over pool futures follows the order tasks finish", "[thread_pool]") {
    triad::thread_pool pool(3);
    gate gates[3];
    std::vector<triad::future<int>> futures;
    for (int i = 0; i < 3; ++i)
        futures.push_back(pool.submit([&gates, i] {
            gates[i].wait();
            return i;
        }));
    // Each gate opens only after the previous task's result came out, so the completion order
    // is fixed whatever the machine's load.
    const std::vector<int> plan{2, 0, 1};
    std::vector<int> order;
    gates[plan[0]].open();
    for (auto& f : triad::as_completed(futures)) {
        order.push_back(f.get());
        if (order.size() < plan.size())
            gates[plan[order.size()]].open();
    }
    CHECK(order == plan);
}

TEST_CASE("exceptions reach get(), and posted tasks' exceptions reach the error handler",
          "[thread_pool]") {
    std::mutex mutex;
    std::vector<std::string> errors;
    triad::thread_pool pool(triad::thread_pool_options{
        .threads = 2,
        .on_error =
            [&](std::exception_ptr e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& ex) {
                    std::lock_guard lock(mutex);
                    errors.emplace_back(ex.what());
                }
            },
    });
    auto failing = pool.submit([]() -> int { throw std::invalid_argument("bad input"); });
    CHECK_THROWS_MATCHES(failing.get(), std::invalid_argument, Catch::Message("bad input"));

    for (int i = 0; i < 10; ++i)
        pool.post([i] { throw std::runtime_error("posted " + std::to_string(i)); });
    pool.wait_idle();
    {
        std::lock_guard lock(mutex);
        CHECK(errors.size() == 10);
    }
    // The workers survived every throw.
    CHECK(pool.submit([] { return 1; }).get() == 1);
}

TEST_CASE("an error handler that throws does not kill the worker", "[thread_pool]") {
    triad::thread_pool pool(triad::thread_pool_options{
        .threads = 1,
        .on_error = [](std::exception_ptr) { throw std::logic_error("handler failed (expected)"); },
    });
    pool.post([] { throw std::runtime_error("task failed (expected in this test)"); });
    CHECK(pool.submit([] { return 2; }).get() == 2);
}

TEST_CASE("a task that submits subtasks and waits on them cannot deadlock, even on one thread",
          "[thread_pool]") {
    triad::thread_pool pool(1);
    // Recursive fork-join: every level waits on futures of its own pool.
    std::function<long(int)> fib = [&](int n) -> long {
        if (n < 2)
            return n;
        auto left = pool.submit(fib, n - 1);
        auto right = pool.submit(fib, n - 2);
        return left.get() + right.get();
    };
    CHECK(pool.submit(fib, 15).get() == 610);

    // map from inside a task of the same pool.
    auto nested = pool.submit([&pool] {
        auto inner = pool.map([](int x) { return x + 1; }, std::vector{1, 2, 3});
        return std::accumulate(inner.begin(), inner.end(), 0);
    });
    CHECK(nested.get() == 9);

    // Timed waits help too.
    auto timed = pool.submit([&pool] {
        auto inner = pool.submit([] { return 5; });
        return inner.wait_for(10s) == std::future_status::ready ? inner.get() : -1;
    });
    CHECK(timed.get() == 5);
}

TEST_CASE("a waiting worker wakes for work submitted after it went to sleep", "[thread_pool]") {
    triad::thread_pool pool(1);
    triad::promise<int> handoff;
    auto handoff_future = handoff.get_future();
    // The only worker waits on a result that only a task submitted later can produce.
    auto waiter = pool.submit([&] { return handoff_future.get() * 2; });
    std::this_thread::sleep_for(50ms); // let the worker find nothing to do and sleep
    pool.post([&] { handoff.set_value(21); });
    CHECK(waiter.wait_for(30s) == std::future_status::ready);
    CHECK(waiter.get() == 42);
}

TEST_CASE("a worker's timed wait times out when nothing happens", "[thread_pool]") {
    triad::thread_pool pool(1);
    triad::promise<int> never;
    auto never_future = never.get_future();
    auto status = pool.submit([&] { return never_future.wait_for(30ms); });
    CHECK(status.get() == std::future_status::timeout);
    never.set_value(0);
}

TEST_CASE("shutdown drains the queue, then refuses work", "[thread_pool]") {
    triad::thread_pool pool(2);
    std::atomic<int> ran{0};
    for (int i = 0; i < 1000; ++i)
        pool.post([&ran] {
            std::this_thread::sleep_for(10us);
            ++ran;
        });
    CHECK_FALSE(pool.closed());
    pool.shutdown();
    CHECK(pool.closed());
    CHECK(ran == 1000);
    CHECK_THROWS_AS(pool.post([] {}), triad::pool_closed);
    CHECK_THROWS_AS((void)pool.submit([] { return 1; }), triad::pool_closed);
    CHECK_THROWS_AS(pool.map([](int x) { return x; }, std::vector{1}), triad::pool_closed);
    pool.shutdown(); // idempotent
    CHECK(pool.completed() == 1000);
}

TEST_CASE("tasks still running during a drain may queue subtasks, which run", "[thread_pool]") {
    triad::thread_pool pool(1);
    gate release;
    std::atomic<int> children{0};
    auto parent = pool.submit([&] {
        release.wait();
        auto child = pool.submit([&] { return ++children; });
        return child.get();
    });
    std::thread closer([&] { pool.shutdown(); });
    REQUIRE(eventually([&] { return pool.closed(); }));
    release.open();
    closer.join();
    CHECK(parent.get() == 1);
    CHECK(children == 1);
}

TEST_CASE("shutdown with cancel drops queued tasks and their futures throw task_cancelled",
          "[thread_pool]") {
    triad::thread_pool pool(1);
    gate release;
    auto running = pool.submit([&] {
        release.wait();
        return 7;
    });
    REQUIRE(eventually([&] { return pool.running() == 1; }));
    std::vector<triad::future<int>> queued;
    for (int i = 0; i < 100; ++i)
        queued.push_back(pool.submit([i] { return i; }));
    std::atomic<int> posted_ran{0};
    for (int i = 0; i < 10; ++i)
        pool.post([&] { ++posted_ran; });
    CHECK(pool.queued() == 110);

    std::thread canceller([&] { pool.shutdown(triad::shutdown_mode::cancel); });
    REQUIRE(eventually([&] { return pool.closed(); }));
    release.open();
    canceller.join();

    CHECK(running.get() == 7);
    for (auto& f : queued)
        CHECK_THROWS_AS(f.get(), triad::task_cancelled);
    CHECK(posted_ran == 0);
    CHECK(pool.cancelled() == 110);
    CHECK(pool.completed() == 1);
}

TEST_CASE("the destructor drains queued tasks and joins", "[thread_pool]") {
    std::atomic<int> ran{0};
    {
        triad::thread_pool pool(2);
        for (int i = 0; i < 5000; ++i)
            pool.post([&ran] { ++ran; });
    }
    CHECK(ran == 5000);
}

TEST_CASE("the initializer runs once per worker with distinct indices, and names the threads",
          "[thread_pool]") {
    std::mutex mutex;
    std::multiset<std::size_t> indices;
    thread_local std::size_t my_index = 999;
    triad::thread_pool pool(triad::thread_pool_options{
        .threads = 4,
        .name_prefix = "crawler",
        .initializer =
            [&](std::size_t i) {
                my_index = i;
                std::lock_guard lock(mutex);
                indices.insert(i);
            },
    });
    CHECK(indices == std::multiset<std::size_t>{0, 1, 2, 3});

    auto names = pool.map(
        [](int) {
            char name[16] = {};
            pthread_getname_np(pthread_self(), name, sizeof name);
            return std::string(name) + "/" + std::to_string(my_index);
        },
        std::vector<int>(64), {.chunk_size = 1});
    for (const auto& n : names) {
        const auto slash = n.find('/');
        REQUIRE(slash != std::string::npos);
        CHECK(n.substr(0, slash) == "crawler-" + n.substr(slash + 1));
    }
}

TEST_CASE("a long name prefix is shortened to fit Linux's 15 characters", "[thread_pool]") {
    triad::thread_pool pool(
        triad::thread_pool_options{.threads = 1, .name_prefix = "a-very-long-thread-prefix"});
    auto name = pool.submit([] {
        char buffer[16] = {};
        pthread_getname_np(pthread_self(), buffer, sizeof buffer);
        return std::string(buffer);
    });
    CHECK(name.get() == "a-very-long-t-0");
}

TEST_CASE("an initializer that throws makes the constructor throw initializer_error",
          "[thread_pool]") {
    const auto build = [] {
        triad::thread_pool pool(triad::thread_pool_options{
            .threads = 3,
            .initializer =
                [](std::size_t i) {
                    if (i == 1)
                        throw std::runtime_error("no session for worker 1");
                },
        });
    };
    CHECK_THROWS_WITH(build(), Catch::Contains("worker 1") && Catch::Contains("no session"));
    try {
        build();
    } catch (const triad::initializer_error& e) {
        CHECK_THROWS_AS(std::rethrow_if_nested(e), std::runtime_error);
    }
}

TEST_CASE("4 producer threads submitting 1,000,000 tiny tasks lose none", "[thread_pool][stress]") {
    constexpr int per_producer = 250'000;
    triad::thread_pool pool(2);
    std::atomic<long long> posted_sum{0};
    std::vector<std::vector<triad::future<int>>> futures(4);
    std::vector<std::thread> producers;
    for (int p = 0; p < 4; ++p) {
        producers.emplace_back([&, p] {
            auto& mine = futures[static_cast<std::size_t>(p)];
            mine.reserve(per_producer / 2);
            for (int i = 0; i < per_producer; ++i) {
                if (i % 2 == 0)
                    pool.post([&posted_sum, i] { posted_sum += i; });
                else
                    mine.push_back(pool.submit([i] { return i; }));
            }
        });
    }
    for (auto& t : producers)
        t.join();
    pool.wait_idle();
    long long submitted_sum = 0;
    for (auto& list : futures)
        for (auto& f : list)
            submitted_sum += f.get();
    long long even = 0;
    long long odd = 0;
    for (int i = 0; i < per_producer; ++i)
        (i % 2 == 0 ? even : odd) += i;
    CHECK(posted_sum == 4 * even);
    CHECK(submitted_sum == 4 * odd);
    CHECK(pool.completed() == 4ull * per_producer);
    CHECK(pool.queued() == 0);
    CHECK(pool.running() == 0);
}

TEST_CASE("wait_idle waits for everything and the pool stays usable", "[thread_pool]") {
    triad::thread_pool pool(2);
    std::atomic<int> ran{0};
    for (int round = 1; round <= 3; ++round) {
        for (int i = 0; i < 200; ++i)
            pool.post([&ran] {
                std::this_thread::sleep_for(20us);
                ++ran;
            });
        pool.wait_idle();
        CHECK(ran == 200 * round);
    }
    pool.wait_idle(); // an idle pool returns at once
}

TEST_CASE("wait_idle and shutdown from inside a task are refused", "[thread_pool]") {
    triad::thread_pool pool(1);
    CHECK_THROWS_AS(pool.submit([&pool] { pool.wait_idle(); }).get(), std::logic_error);
    CHECK_THROWS_AS(pool.submit([&pool] { pool.shutdown(); }).get(), std::logic_error);
}

TEST_CASE("counters report queued, running and completed tasks", "[thread_pool]") {
    triad::thread_pool pool(1);
    gate release;
    pool.post([&] { release.wait(); });
    for (int i = 0; i < 5; ++i)
        pool.post([] {});
    CHECK(eventually([&] { return pool.running() == 1 && pool.queued() == 5; }));
    release.open();
    pool.wait_idle();
    CHECK(pool.running() == 0);
    CHECK(pool.queued() == 0);
    CHECK(pool.completed() == 6);
    CHECK(pool.cancelled() == 0);
}

TEST_CASE("idle workers sleep instead of spinning", "[thread_pool]") {
    triad::thread_pool pool(2);
    pool.map([](int x) { return x; }, std::vector<int>(1000));
    pool.wait_idle();
    const double before = process_cpu_seconds();
    std::this_thread::sleep_for(300ms);
    const double used = process_cpu_seconds() - before;
    // Two spinning workers would burn about 0.6 s of CPU here.
    CHECK(used < 0.1);
}

// Pools above 64 workers probe victims at random instead of scanning every deque; nothing
// may be stranded in a deque that no probe happens to reach.
TEST_CASE("a pool of hundreds of I/O threads runs every task, nested ones included",
          "[thread_pool]") {
    triad::thread_pool pool(300);
    const std::vector<int> r = pool.map(
        [](int x) {
            std::this_thread::sleep_for(1ms); // blocking, as a download is
            return x;
        },
        [] {
            std::vector<int> v(3000);
            std::iota(v.begin(), v.end(), 0);
            return v;
        }(),
        {.chunk_size = 1});
    CHECK(std::accumulate(r.begin(), r.end(), 0LL) == 2999LL * 3000 / 2);

    // Each task fans out from its own worker's deque, where only thieves can reach the
    // children while their parent waits.
    pool.wait_idle();
    const std::uint64_t before = pool.completed();
    std::atomic<int> leaves{0};
    std::vector<triad::future<void>> parents;
    for (int i = 0; i < 200; ++i)
        parents.push_back(pool.submit([&pool, &leaves] {
            std::vector<triad::future<void>> children;
            for (int j = 0; j < 20; ++j)
                children.push_back(pool.submit([&leaves] {
                    std::this_thread::sleep_for(100us);
                    ++leaves;
                }));
            for (auto& c : children)
                c.get();
        }));
    for (auto& p : parents)
        p.get();
    CHECK(leaves == 200 * 20);
    pool.wait_idle();
    CHECK(pool.completed() - before == 200 + 200 * 20);
}
