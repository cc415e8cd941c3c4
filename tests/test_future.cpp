#include <triad/future.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

TEST_CASE("a promise's value reaches its future, for values, references, void and move-only types",
          "[future]") {
    triad::promise<int> p;
    triad::future<int> f = p.get_future();
    CHECK(f.valid());
    CHECK_FALSE(f.ready());
    p.set_value(42);
    CHECK(f.ready());
    CHECK(f.get() == 42);
    CHECK_FALSE(f.valid());

    int target = 1;
    triad::promise<int&> pr;
    auto fr = pr.get_future();
    pr.set_value(target);
    fr.get() = 7;
    CHECK(target == 7);

    triad::promise<void> pv;
    auto fv = pv.get_future();
    pv.set_value();
    fv.get();

    triad::promise<std::unique_ptr<std::string>> pm;
    auto fm = pm.get_future();
    pm.set_value(std::make_unique<std::string>("moved"));
    CHECK(*fm.get() == "moved");
}

TEST_CASE("get() rethrows the producer's exception with its type", "[future]") {
    triad::promise<int> p;
    auto f = p.get_future();
    p.set_exception(std::make_exception_ptr(std::out_of_range("index 9")));
    CHECK_THROWS_MATCHES(f.get(), std::out_of_range, Catch::Message("index 9"));
}

TEST_CASE("misuse is reported as triad::future_error, never undefined behaviour", "[future]") {
    triad::future<int> empty;
    CHECK_FALSE(empty.valid());
    CHECK_FALSE(empty.ready());
    CHECK_THROWS_AS(empty.get(), triad::future_error);
    CHECK_THROWS_AS(empty.wait(), triad::future_error);
    CHECK_THROWS_AS(empty.wait_for(1ms), triad::future_error);

    triad::promise<int> p;
    auto f = p.get_future();
    CHECK_THROWS_AS(p.get_future(), triad::future_error);
    p.set_value(1);
    CHECK_THROWS_AS(p.set_value(2), triad::future_error);
    CHECK_THROWS_AS(p.set_exception(std::make_exception_ptr(std::runtime_error("x"))),
                    triad::future_error);
    CHECK(f.get() == 1);
    CHECK_THROWS_AS(f.get(), triad::future_error);

    triad::promise<int> q;
    CHECK_THROWS_AS(q.set_exception(nullptr), triad::future_error);
    triad::promise<int> moved_to = std::move(q);
    CHECK_THROWS_AS(q.get_future(), triad::future_error);
}

TEST_CASE("a promise destroyed unsatisfied breaks its future", "[future]") {
    triad::future<int> f;
    {
        triad::promise<int> p;
        f = p.get_future();
    }
    CHECK(f.ready());
    CHECK_THROWS_AS(f.get(), triad::broken_promise);
}

TEST_CASE("wait_for and wait_until time out, then see the value set by another thread",
          "[future]") {
    triad::promise<int> p;
    auto f = p.get_future();
    CHECK(f.wait_for(20ms) == std::future_status::timeout);
    CHECK(f.wait_for(-5s) == std::future_status::timeout);
    CHECK(f.wait_until(std::chrono::system_clock::now() + 10ms) == std::future_status::timeout);
    CHECK(f.wait_until(std::chrono::steady_clock::now() - 1h) == std::future_status::timeout);

    std::thread producer([&p] {
        std::this_thread::sleep_for(30ms);
        p.set_value(5);
    });
    // Huge durations and far time points saturate instead of overflowing.
    CHECK(f.wait_for(std::chrono::nanoseconds::max()) == std::future_status::ready);
    CHECK(f.wait_until(std::chrono::steady_clock::time_point::max()) == std::future_status::ready);
    CHECK(f.wait_for(std::chrono::hours::max()) == std::future_status::ready);
    producer.join();
    CHECK(f.get() == 5);
}

TEST_CASE("a second thread waiting on the same future gets future_error", "[future]") {
    triad::promise<int> p;
    auto f = p.get_future();
    std::atomic<bool> first_waiting{false};
    std::thread first([&] {
        first_waiting = true;
        for (;;) {
            try {
                f.wait();
                return;
            } catch (const triad::future_error&) {
                std::this_thread::sleep_for(1ms); // collided with the main thread's probe
            }
        }
    });
    while (!first_waiting)
        std::this_thread::yield();
    // The first thread needs a moment to register itself; after that a second waiter is misuse.
    bool rejected = false;
    for (int attempt = 0; attempt < 200 && !rejected; ++attempt) {
        try {
            if (f.wait_for(1ms) == std::future_status::timeout)
                std::this_thread::sleep_for(5ms);
        } catch (const triad::future_error&) {
            rejected = true;
        }
    }
    CHECK(rejected);
    p.set_value(3);
    first.join();
    CHECK(f.get() == 3);
}

TEST_CASE("on_ready runs on the producer's thread, or inline when already ready", "[future]") {
    triad::promise<int> p;
    auto f = p.get_future();
    std::thread::id ran_on;
    f.on_ready([&] { ran_on = std::this_thread::get_id(); });
    std::thread::id producer_id;
    std::thread producer([&] {
        producer_id = std::this_thread::get_id();
        p.set_value(9);
    });
    producer.join();
    CHECK(ran_on == producer_id);
    CHECK(f.get() == 9);

    auto ready = triad::make_ready_future(std::string("now"));
    bool inline_call = false;
    ready.on_ready([&] { inline_call = true; });
    CHECK(inline_call);
    CHECK(ready.get() == "now");

    triad::promise<int> q;
    auto g = q.get_future();
    g.on_ready([] {});
    CHECK_THROWS_AS(g.on_ready([] {}), triad::future_error);
    q.set_value(1);
    CHECK(g.get() == 1);
}

TEST_CASE("an exception from an on_ready callback on the producer's thread does not escape",
          "[future]") {
    triad::promise<int> p;
    auto f = p.get_future();
    f.on_ready([] { throw std::runtime_error("callback failed (expected in this test)"); });
    CHECK_NOTHROW(p.set_value(1));
    CHECK(f.get() == 1);
}

TEST_CASE("then chains work and carries exceptions along", "[future]") {
    triad::promise<int> p;
    auto doubled = p.get_future().then([](triad::future<int> f) { return f.get() * 2; });
    auto text =
        std::move(doubled).then([](triad::future<int> f) { return std::to_string(f.get()); });
    p.set_value(21);
    CHECK(text.get() == "42");

    auto failed =
        triad::make_exceptional_future<int>(std::make_exception_ptr(std::logic_error("no")))
            .then([](triad::future<int> f) { return f.get() + 1; });
    CHECK_THROWS_AS(failed.get(), std::logic_error);

    auto to_void = triad::make_ready_future(1).then([](triad::future<int> f) { (void)f.get(); });
    to_void.get();
}

TEST_CASE("as_completed yields futures in the order they complete", "[future]") {
    std::vector<triad::promise<int>> promises(5);
    std::vector<triad::future<int>> futures;
    for (auto& p : promises)
        futures.push_back(p.get_future());
    const std::vector<int> completion_order{3, 1, 4, 0, 2};
    std::thread producer([&] {
        for (int i : completion_order) {
            std::this_thread::sleep_for(2ms);
            promises[static_cast<std::size_t>(i)].set_value(i * 10);
        }
    });
    std::vector<int> seen;
    auto range = triad::as_completed(futures);
    for (auto it = range.begin(); it != range.end(); ++it) {
        CHECK(&*it == &futures[it.index()]);
        seen.push_back(it->get() / 10);
    }
    producer.join();
    CHECK(seen == completion_order);
}

TEST_CASE("as_completed handles ready futures, empty input and early exit", "[future]") {
    std::vector<triad::future<int>> none;
    int count = 0;
    for (auto& f : triad::as_completed(none)) {
        (void)f;
        ++count;
    }
    CHECK(count == 0);

    std::vector<triad::future<int>> ready;
    ready.push_back(triad::make_ready_future(1));
    ready.push_back(triad::make_ready_future(2));
    int sum = 0;
    for (auto& f : triad::as_completed(ready))
        sum += f.get();
    CHECK(sum == 3);

    // Leave the loop after the first result; the others complete after the range is gone.
    std::vector<triad::promise<int>> promises(3);
    std::vector<triad::future<int>> futures;
    for (auto& p : promises)
        futures.push_back(p.get_future());
    promises[1].set_value(1);
    for (auto& f : triad::as_completed(futures)) {
        CHECK(f.get() == 1);
        break;
    }
    promises[0].set_value(0);
    promises[2].set_value(2);
    CHECK(futures[0].get() == 0);
    CHECK(futures[2].get() == 2);
}

TEST_CASE("as_completed rejects invalid futures", "[future]") {
    std::vector<triad::future<int>> futures(2);
    CHECK_THROWS_AS(triad::as_completed(futures), triad::future_error);
}

TEST_CASE("wait_all returns once every future is ready", "[future]") {
    std::vector<triad::promise<int>> promises(4);
    std::vector<triad::future<int>> futures;
    for (auto& p : promises)
        futures.push_back(p.get_future());
    std::thread producer([&] {
        for (auto& p : promises) {
            std::this_thread::sleep_for(1ms);
            p.set_value(1);
        }
    });
    triad::wait_all(futures);
    for (auto& f : futures)
        CHECK(f.ready());
    producer.join();
}

TEST_CASE("100,000 futures handed across threads all arrive intact", "[future][stress]") {
    constexpr int count = 100'000;
    std::vector<triad::promise<int>> promises(count);
    std::vector<triad::future<int>> futures;
    futures.reserve(count);
    for (auto& p : promises)
        futures.push_back(p.get_future());
    std::thread producer([&] {
        for (int i = 0; i < count; ++i)
            promises[static_cast<std::size_t>(i)].set_value(i);
    });
    long long sum = 0;
    for (int i = 0; i < count; ++i) {
        // Mix blocking, timed and polling waits to race each against the producer.
        if (i % 3 == 0)
            (void)futures[static_cast<std::size_t>(i)].wait_for(1us);
        sum += futures[static_cast<std::size_t>(i)].get();
    }
    producer.join();
    CHECK(sum == static_cast<long long>(count) * (count - 1) / 2);
}
