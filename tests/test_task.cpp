#include <triad/task.hpp>

#include <triad/process_pool.hpp>
#include <triad/sync.hpp>
#include <triad/thread_pool.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <malloc.h>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

triad::task<int> answer() {
    co_return 42;
}

triad::task<int> depth(int n) {
    if (n == 0)
        co_return 0;
    co_return 1 + co_await depth(n - 1);
}

triad::task<void> throws_after(std::chrono::milliseconds d) {
    co_await triad::sleep(d);
    throw std::domain_error("failed on purpose");
}

triad::task<void> record_after(std::chrono::milliseconds d, std::vector<int>& order, int id) {
    co_await triad::sleep(d);
    order.push_back(id);
}

long square(long x) {
    return x * x;
}

} // namespace

TEST_CASE("a task is lazy, returns its value and propagates exceptions", "[task]") {
    bool started = false;
    auto body = [&]() -> triad::task<int> {
        started = true;
        co_return 7;
    };
    CHECK(triad::run([&]() -> triad::task<int> {
              triad::task<int> t = body();
              CHECK_FALSE(started); // not until awaited
              const int v = co_await t;
              CHECK(started);
              CHECK_FALSE(t.valid()); // awaited once
              co_return v + co_await answer();
          }()) == 49);

    CHECK_THROWS_MATCHES(triad::run(throws_after(1ms)), std::domain_error,
                         Catch::Message("failed on purpose"));
    auto awaiting_twice = []() -> triad::task<void> {
        triad::task<int> t = answer();
        co_await t;
        co_await t;
    };
    CHECK_THROWS_AS(triad::run(awaiting_twice()), triad::future_error);
}

TEST_CASE("deep co_await chains do not grow the stack (symmetric transfer)", "[task]") {
    // Each level would take a few hundred bytes of stack if resumption nested.
    CHECK(triad::run(depth(200'000)) == 200'000);
}

TEST_CASE("run is not re-entrant and spawn needs a loop", "[task]") {
    auto nested = []() -> triad::task<int> { co_return triad::run(answer()); };
    CHECK_THROWS_AS(triad::run(nested()), std::logic_error);
    CHECK_THROWS_WITH((void)triad::spawn(answer()), Catch::Contains("no triad event loop"));
}

TEST_CASE("spawned tasks run concurrently and are awaited through their handle", "[task]") {
    std::vector<int> order;
    triad::run([&]() -> triad::task<void> {
        auto slow = triad::spawn(record_after(30ms, order, 30));
        auto fast = triad::spawn(record_after(10ms, order, 10));
        auto middle = triad::spawn(record_after(20ms, order, 20));
        CHECK_FALSE(slow.done());
        co_await slow;
        co_await fast;
        co_await middle;
        CHECK(fast.done());
    }());
    CHECK(order == std::vector<int>{10, 20, 30});
}

TEST_CASE("cancelling a task makes its suspension point throw and its cleanup run", "[task]") {
    bool cleaned = false;
    bool caught = false;
    triad::run([&]() -> triad::task<void> {
        auto victim = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            struct cleanup {
                bool& flag;
                ~cleanup() { flag = true; }
            } guard{cleaned};
            try {
                co_await triad::sleep(10s);
            } catch (const triad::task_cancelled&) {
                caught = true;
                throw;
            }
        }));
        co_await triad::sleep(5ms);
        victim.cancel();
        CHECK_THROWS_AS(co_await victim, triad::task_cancelled);
    }());
    CHECK(cleaned);
    CHECK(caught);
}

TEST_CASE("an exception in a task nobody awaits is reported, a cancellation is not", "[task]") {
    std::vector<std::string> reported;
    triad::event_loop_options options{.on_unhandled = [&](std::exception_ptr e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            reported.emplace_back(ex.what());
        }
    }};
    triad::run(
        []() -> triad::task<void> {
            (void)triad::spawn(throws_after(1ms)); // dropped at once
            auto kept = triad::spawn(throws_after(1ms));
            auto cancelled =
                triad::spawn([]() -> triad::task<void> { co_await triad::sleep(1h); }());
            cancelled.cancel();
            co_await triad::sleep(20ms);
            // `kept` is dropped here, its exception never retrieved.
        }(),
        options);
    CHECK(reported == std::vector<std::string>{"failed on purpose", "failed on purpose"});
}

TEST_CASE("run cancels the tasks still running when the main task ends", "[task]") {
    bool cleaned = false;
    triad::run([&]() -> triad::task<void> {
        (void)triad::spawn(triad::make_task([&]() -> triad::task<void> {
            struct cleanup {
                bool& flag;
                ~cleanup() { flag = true; }
            } guard{cleaned};
            co_await triad::sleep(1h);
        }));
        co_await triad::sleep(1ms); // it has started (one cancelled before that never runs)
    }());
    CHECK(cleaned);
}

TEST_CASE("100,000 concurrent sleeps of 50 ms finish in seconds, not hours", "[task][stress]") {
    // One after another they would take 5,000 s; the bound only has to rule that out, and the
    // machines are shared (953 ms was seen once under load against an earlier 900 ms bound).
#ifdef TRIAD_TEST_SANITIZER
    constexpr int tasks = 20'000; // sanitizers slow every resume down
    constexpr auto limit = 10s;
#else
    constexpr int tasks = 100'000;
    constexpr auto limit = 5s;
#endif
    int finished = 0;
    const auto start = clock_type::now();
    triad::run([&]() -> triad::task<void> {
        std::vector<triad::task_handle<void>> handles;
        handles.reserve(tasks);
        for (int i = 0; i < tasks; ++i)
            handles.push_back(triad::spawn(triad::make_task([&]() -> triad::task<void> {
                co_await triad::sleep(50ms);
                ++finished;
            })));
        for (auto& h : handles)
            co_await h;
    }());
    const auto elapsed = clock_type::now() - start;
    CHECK(finished == tasks);
    CHECK(elapsed >= 50ms);
    CHECK(elapsed < limit);
}

TEST_CASE("co_await waits on futures of both pools without blocking the loop", "[task]") {
    triad::thread_pool threads(2);
    triad::process_pool processes(1);
    int ticks = 0;
    const long total = triad::run([&]() -> triad::task<long> {
        // A ticker keeps running while the futures are awaited: the loop is not blocked.
        auto ticker = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            for (;;) {
                co_await triad::sleep(1ms);
                ++ticks;
            }
        }));
        const long a = co_await threads.submit([] {
            std::this_thread::sleep_for(50ms);
            return 20L;
        });
        const long b = co_await processes.submit(square, 5L);
        triad::future<long> f = threads.submit([] { return 3L; });
        const long c = co_await f; // an lvalue future
        const long d = co_await triad::to_thread([] { return 4L; });
        ticker.cancel();
        co_return a + b + c + d;
    }());
    CHECK(total == 52);
    CHECK(ticks >= 10);
}

TEST_CASE("co_await on a shared_future yields the shared value to every awaiting task", "[task]") {
    triad::thread_pool threads(1);
    triad::shared_future<std::string> shared = threads
                                                   .submit([] {
                                                       std::this_thread::sleep_for(20ms);
                                                       return std::string("config");
                                                   })
                                                   .share();
    const std::size_t total = triad::run([&]() -> triad::task<std::size_t> {
        auto reader = [&shared]() -> triad::task<std::size_t> {
            const std::string& value = co_await shared;
            co_return value.size();
        };
        auto a = triad::spawn(reader());
        auto b = triad::spawn(reader());
        co_return co_await a + co_await b;
    }());
    CHECK(total == 12);
}

TEST_CASE("then(loop, fn) runs the continuation on the loop's thread", "[task]") {
    triad::thread_pool threads(1);
    triad::event_loop loop;
    std::thread::id loop_thread;
    const int result = loop.run([&]() -> triad::task<int> {
        loop_thread = std::this_thread::get_id();
        auto on_loop = threads.submit([] { return 20; }).then(loop, [](triad::future<int> f) {
            return std::make_pair(f.get() + 1, std::this_thread::get_id());
        });
        const auto [value, ran_on] = co_await std::move(on_loop);
        CHECK(ran_on == loop_thread);
        co_return value;
    }());
    CHECK(result == 21);
}

TEST_CASE("a refused blocking wait on a shared_future leaves nothing behind",
          "[task][regression]") {
    // shared_future::get() on the loop's thread throws std::logic_error; before, its waiter node
    // stayed in the shared state's list and completing the future wrote to a dead stack frame.
    triad::promise<int> p;
    triad::shared_future<int> shared = p.get_future().share();
    triad::run([&]() -> triad::task<void> {
        CHECK_THROWS_AS(shared.get(), std::logic_error);
        co_return;
    }());
    volatile char cover[65536] = {}; // the dead frame's memory, reused
    p.set_value(5);
    int changed = 0;
    for (std::size_t i = 0; i < sizeof cover; ++i)
        changed += cover[i] != 0;
    CHECK(changed == 0);
    CHECK(shared.get() == 5);
}

TEST_CASE("cancelling a wait on a future stops the wait, not the work", "[task]") {
    triad::thread_pool threads(1);
    std::atomic<bool> work_done{false};
    triad::run([&]() -> triad::task<void> {
        auto waiter = triad::spawn(triad::make_task([&]() -> triad::task<long> {
            co_return co_await threads.submit([&] {
                std::this_thread::sleep_for(100ms);
                work_done = true;
                return 1L;
            });
        }));
        co_await triad::sleep(10ms);
        waiter.cancel();
        CHECK_THROWS_AS(co_await waiter, triad::task_cancelled);
        CHECK_FALSE(work_done.load());
    }());
    threads.wait_idle();
    CHECK(work_done);
}

TEST_CASE("a blocking wait on the loop's thread is refused", "[task]") {
    triad::thread_pool threads(1);
    CHECK_THROWS_WITH(triad::run([&]() -> triad::task<int> {
                          auto f = threads.submit([] {
                              std::this_thread::sleep_for(20ms);
                              return 1;
                          });
                          co_return f.get();
                      }()),
                      Catch::Contains("co_await the future instead"));
}

TEST_CASE("tasks waiting for something that can never happen are an error, not a hang", "[task]") {
    triad::event never;
    bool cleaned = false;
    CHECK_THROWS_WITH(triad::run([&]() -> triad::task<void> {
                          struct cleanup {
                              bool& flag;
                              ~cleanup() { flag = true; }
                          } guard{cleaned};
                          co_await never.wait();
                      }()),
                      Catch::Contains("can never happen"));
    CHECK(cleaned); // the stuck task was cancelled and unwound, not leaked
}

TEST_CASE("sleep(0) yields to other ready tasks", "[task]") {
    std::vector<int> order;
    triad::run([&]() -> triad::task<void> {
        auto other = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            order.push_back(2);
            co_return;
        }));
        order.push_back(1);
        co_await triad::sleep(0ms);
        order.push_back(3);
        co_await other;
    }());
    CHECK(order == std::vector<int>{1, 2, 3});
}

TEST_CASE("a failed task whose last handle is dropped after the loop ended is reported", "[task]") {
    int reports = 0;
    triad::event_loop loop({.on_unhandled = [&](std::exception_ptr) { ++reports; }});
    std::optional<triad::task_handle<void>> kept;
    loop.run(triad::make_task([&]() -> triad::task<void> {
        kept.emplace(triad::spawn(throws_after(1ms)));
        co_await triad::sleep(10ms);
    }));
    CHECK(reports == 0); // still held: whoever holds it may still look
    kept.reset();        // outside the loop: used to be lost silently
    CHECK(reports == 1);
}

TEST_CASE("co_return takes a braced list for the task's type", "[task]") {
    const auto pair = triad::run([]() -> triad::task<std::pair<int, std::string>> {
        co_return {1, "one"};
    }());
    CHECK(pair.first == 1);
    CHECK(pair.second == "one");
}

TEST_CASE("a task cancelled before it started never runs its body", "[task]") {
    bool ran = false;
    triad::run(triad::make_task([&]() -> triad::task<void> {
        auto never = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            ran = true; // asyncio never runs a task cancelled before its first step
            co_return;
        }));
        never.cancel();
        CHECK_THROWS_AS(co_await never, triad::task_cancelled);
    }));
    CHECK_FALSE(ran);
}

TEST_CASE("awaiting a handle with a cancellation pending waits until the task has finished",
          "[task]") {
    bool cleaned = false;
    bool finished_first = false;
    triad::run(triad::make_task([&]() -> triad::task<void> {
        triad::task_handle<void>* self = nullptr;
        auto outer = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            auto inner = triad::spawn(triad::make_task([&]() -> triad::task<void> {
                bool cancelled = false;
                try {
                    co_await triad::sleep(1h);
                } catch (const triad::task_cancelled&) {
                    cancelled = true;
                }
                if (cancelled) {
                    co_await triad::sleep(30ms); // cleanup that itself waits
                    cleaned = true;
                    throw triad::task_cancelled();
                }
            }));
            co_await triad::sleep(1ms);
            self->cancel(); // pending when the await below starts
            try {
                co_await inner;
            } catch (const triad::task_cancelled&) {
                finished_first = cleaned;
                throw;
            }
        }));
        self = &outer;
        CHECK_THROWS_AS(co_await outer, triad::task_cancelled);
    }));
    CHECK(cleaned);
    CHECK(finished_first); // it used to return while the inner task was still cleaning up
}

TEST_CASE("a task spawned while run cancels the rest is cancelled too, so run ends", "[task]") {
    bool late_finished = false;
    const auto start = std::chrono::steady_clock::now();
    triad::run(triad::make_task([&]() -> triad::task<void> {
        (void)triad::spawn(triad::make_task([&]() -> triad::task<void> {
            try {
                co_await triad::sleep(1h);
            } catch (const triad::task_cancelled&) {
                // Cleanup that starts another task: run must cancel that one as well (it used
                // to wait the 5 s for it).
                (void)triad::spawn(triad::make_task([&]() -> triad::task<void> {
                    co_await triad::sleep(5s);
                    late_finished = true;
                }));
                throw;
            }
        }));
        co_await triad::sleep(1ms);
    }));
    CHECK_FALSE(late_finished);
    CHECK(std::chrono::steady_clock::now() - start < 4s);
}

TEST_CASE("a cancelled wait on a future takes its continuation back: the future can be awaited "
          "again",
          "[task]") {
    triad::thread_pool threads(1);
    std::atomic<bool> release{false};
    long value = 0;
    triad::run([&]() -> triad::task<void> {
        triad::future<long> fut = threads.submit([&] {
            while (!release)
                std::this_thread::sleep_for(1ms);
            return 5L;
        });
        auto waiter = triad::spawn(triad::make_task([&]() -> triad::task<long> {
            co_return co_await fut; // in place: fut stays the caller's
        }));
        co_await triad::sleep(5ms);
        waiter.cancel();
        CHECK_THROWS_AS(co_await waiter, triad::task_cancelled);
        CHECK(fut.valid());
        release = true;
        // Used to throw future_error: the abandoned wait's continuation was still registered.
        value = co_await fut;
    }());
    CHECK(value == 5);
}

TEST_CASE("cancelled waits on a shared_future that never becomes ready keep memory flat",
          "[task]") {
#ifdef TRIAD_TEST_SANITIZER
    constexpr int rounds = 5'000;
#else
    constexpr int rounds = 50'000;
#endif
    triad::promise<int> never;
    const triad::shared_future<int> shared = never.get_future().share();
    std::size_t grown = 0;
    triad::run([&]() -> triad::task<void> {
        const auto wait_once = [&]() -> triad::task<void> {
            auto waiter = triad::spawn(
                triad::make_task([&]() -> triad::task<void> { (void)co_await shared; }));
            co_await triad::sleep(0ms); // the waiter is suspended on the future now
            waiter.cancel();
            try {
                co_await waiter;
            } catch (const triad::task_cancelled&) {
            }
        };
        co_await wait_once(); // warm up the frame caches
        const std::size_t before = ::mallinfo2().uordblks;
        for (int i = 0; i < rounds; ++i)
            co_await wait_once();
        const std::size_t after = ::mallinfo2().uordblks;
        grown = after > before ? after - before : 0;
    }());
    // Each abandoned wait used to leave its continuation (over 100 bytes) on the hub until the
    // result came.
    CHECK(grown < 256 * 1024);
    never.set_value(1);
}
