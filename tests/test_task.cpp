#include <triad/task.hpp>

#include <triad/process_pool.hpp>
#include <triad/sync.hpp>
#include <triad/thread_pool.hpp>
#include <triad/use_task.hpp>

#include <catch2/catch.hpp>

#include "support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

// The whole file in a namespace of its own: the unity build compiles several test files as one
// translation unit (tests/CMakeLists.txt), where helpers of the same name must not meet.
namespace triad_test_task {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

class triad_gate {
public:
    void open() {
        m_open = true;
        m_open.notify_all();
    }
    void wait() const { m_open.wait(false); }

private:
    std::atomic<bool> m_open{false};
};

triad::task<int> answer() {
    co_return 42;
}

triad::task<int> depth(int n) {
    if (n == 0)
        co_return 0;
    co_return 1 + co_await depth(n - 1);
}

triad::task<void> sleep_task(std::chrono::milliseconds d) {
    co_await triad::sleep(d);
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

TEST_CASE("a forked child that destroys an inherited pool, or exits after to_thread, ends "
          "normally",
          "[task]") {
    // The pools' threads are the parent's: the child has none to drain or join. It used to
    // join them: pthread_join on a thread of another process segfaulted or waited for ever.
    // Eight threads: 64 MB of stacks, past glibc's 40 MB cache, which the child trims (with
    // two, their stacks stayed cached and the join happened to return).
    std::optional<triad::thread_pool> pool(std::in_place, 8);
    CHECK(pool->submit([] { return 1; }).get() == 1);
    CHECK(triad::run(triad::to_thread([] { return 2; })) == 2); // default_thread_pool()
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        pool.reset();
#ifdef TRIAD_TEST_SANITIZER
        // LeakSanitizer, at exit() in a fork of a process with threads, reports their
        // thread_local destructor records as leaks (see test_trace.cpp): only the pool here.
        ::_exit(0);
#else
        std::exit(0); // destroys default_thread_pool(), a static
#endif
    }
    int status = 0;
    CHECK(triad_test::wait_child_for(child, 30s, status)); // not hung
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(pool->submit([] { return 3; }).get() == 3); // the parent's pool is untouched
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
    // The work ends only once the cancelled wait has been seen (with 100 ms of work instead, a
    // loop thread held up that long found the work done and the waiter finished).
    std::atomic<bool> cancelled{false};
    triad::run([&]() -> triad::task<void> {
        auto waiter = triad::spawn(triad::make_task([&]() -> triad::task<long> {
            co_return co_await threads.submit([&] {
                triad_test::eventually([&] { return cancelled.load(); }, 30s);
                work_done = true;
                return 1L;
            });
        }));
        co_await triad::sleep(10ms);
        waiter.cancel();
        CHECK_THROWS_AS(co_await waiter, triad::task_cancelled);
        CHECK_FALSE(work_done.load());
        cancelled = true;
    }());
    threads.wait_idle();
    CHECK(work_done);
}

TEST_CASE("co_await on a future of a reference gives the referenced object", "[task]") {
    static int shared_value = 1;
    triad::thread_pool threads(1);
    bool same_lvalue = false;
    bool same_rvalue = false;
    triad::run(triad::make_task([&]() -> triad::task<void> {
        auto f = threads.submit([]() -> int& { return shared_value; });
        int& by_lvalue = co_await f;
        same_lvalue = &by_lvalue == &shared_value;
        int& by_rvalue = co_await threads.submit([]() -> int& { return shared_value; });
        same_rvalue = &by_rvalue == &shared_value;
    }));
    CHECK(same_lvalue);
    CHECK(same_rvalue);
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

TEST_CASE("a task woken by another thread's post is not taken for a deadlock", "[task]") {
    // Nothing in the loop could wake the task, but a thread posts to the loop 50 ms later (no
    // work guard, as the docs allow): run used to throw "can never happen" at once.
    triad::event_loop loop({.stall_timeout = 5ms, .on_stall = [](const triad::stall_report&) {}});
    triad::event ready;
    std::thread poster;
    const int value = loop.run(triad::make_task([&]() -> triad::task<int> {
        poster = std::thread([&] {
            std::this_thread::sleep_for(50ms);
            loop.post([&] { ready.set(); });
        });
        co_await ready.wait();
        co_return 7;
    }));
    poster.join();
    CHECK(value == 7);
}

namespace {
// A hand-written awaitable whose completion comes from a callback on another thread, posted to
// the loop: nothing registers it with the loop.
struct resumed_from_a_callback {
    triad::event_loop& loop;
    std::thread& worker;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
        worker = std::thread([this, h] {
            std::this_thread::sleep_for(30ms);
            loop.post([h] { h.resume(); });
        });
    }
    int await_resume() const noexcept { return 5; }
};
} // namespace

TEST_CASE("a custom awaitable resumed from another thread's callback is waited for", "[task]") {
    triad::event_loop loop({.stall_timeout = 5ms, .on_stall = [](const triad::stall_report&) {}});
    std::thread worker;
    const int value = loop.run(triad::make_task([&]() -> triad::task<int> {
        co_return co_await resumed_from_a_callback{loop, worker};
    }));
    worker.join();
    CHECK(value == 5);
}

TEST_CASE("stalled tasks are reported by name with what each waits on, and the loop waits on",
          "[task]") {
    triad::event never_set_by_a_task;
    std::vector<triad::stall_report> reports;
    triad::event_loop loop({.stall_timeout = 20ms, .on_stall = [&](const triad::stall_report& r) {
                                reports.push_back(r);
                                if (reports.size() == 2)
                                    never_set_by_a_task.set(); // what a user would do by hand
                            }});
    bool cleaned = false;
    loop.run(triad::make_task([&]() -> triad::task<void> {
        auto waiter = triad::spawn(triad::make_task([&]() -> triad::task<void> {
                                       struct cleanup {
                                           bool& flag;
                                           ~cleanup() { flag = true; }
                                       } guard{cleaned};
                                       co_await never_set_by_a_task.wait();
                                   }),
                                   {.name = "fetch 3"});
        co_await never_set_by_a_task.wait();
        co_await waiter;
    }));
    CHECK(cleaned);
    REQUIRE(reports.size() == 2);
    CHECK(reports[0].idle >= 20ms);
    // Reported at doubling intervals: the second report comes at least 2 x 20 ms after the
    // first. (Compared with twice the first's idle time, the check failed whenever the loop's
    // thread was held up over 25 ms around the first report: 0.81 s >= 1.13 s on a loaded core.)
    CHECK(reports[1].idle - reports[0].idle >= 40ms);
    REQUIRE(reports[0].tasks.size() == 2);
    CHECK(reports[0].tasks[0].name == "main");
    CHECK(reports[0].tasks[0].waiting_on == "triad::event::wait");
    CHECK(reports[0].tasks[1].name == "fetch 3");
    CHECK(reports[0].tasks[1].waiting_on == "triad::event::wait");
    CHECK_THAT(reports[0].text(), Catch::Contains("fetch 3: waiting on triad::event::wait"));
}

TEST_CASE("tasks() lists the live tasks of the loop and what each waits on", "[task]") {
    triad::event_loop loop;
    std::vector<triad::task_info> seen;
    // The thread's work waits until the list is taken: with a fixed 30 ms of work instead, a
    // loop thread held up 25 ms (a loaded machine) found `to_thread` finished, and listed 2.
    std::atomic<bool> listed{false};
    loop.run(triad::make_task([&]() -> triad::task<void> {
        auto sleeper = triad::spawn(sleep_task(1h), {.name = "sleeper"});
        auto pool_waiter =
            triad::spawn(triad::to_thread([&listed] {
                             triad_test::eventually([&] { return listed.load(); }, 30s);
                             return 1;
                         }),
                         {.name = "to_thread"});
        auto unnamed = triad::spawn(answer());
        co_await triad::sleep(5ms);
        seen = loop.tasks();
        listed = true;
        sleeper.cancel();
        co_await pool_waiter;
    }));
    REQUIRE(seen.size() == 3); // `unnamed` has finished
    CHECK(seen[0].name == "main");
    // It is the one asking; the frame the loop resumed is its lambda's (see make_task), which
    // nothing leads to from main, so main is not told from a task on an unknown awaitable.
    CHECK_THAT(seen[0].waiting_on, Catch::StartsWith("running or ready"));
    std::vector<std::string> rest{seen[1].name + " " + seen[1].waiting_on,
                                  seen[2].name + " " + seen[2].waiting_on};
    std::sort(rest.begin(), rest.end());
    CHECK(rest == std::vector<std::string>{"sleeper triad::sleep", "to_thread a future"});
    CHECK_THROWS_WITH(loop.tasks(), Catch::Contains("loop's thread"));
}

namespace {

// An awaitable of the user's own: it keeps the handle and registers no cancellable wait, so
// triad cannot tell what it waits for.
struct parked {
    std::coroutine_handle<>& slot;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept { slot = h; }
    void await_resume() const noexcept {}
};

triad::task<void> park(std::coroutine_handle<>& slot) {
    co_await parked{slot};
}

triad::task<void> park_nested(std::coroutine_handle<>& slot) {
    co_await park(slot);
}

constexpr const char* unknown_awaitable = "an awaitable triad does not know (not cancellable)";

// A main task whose own frame runs (not a lambda's, which make_task would await).
triad::task<void> list_beside_parked(triad::event_loop& loop, std::vector<triad::task_info>& seen,
                                     std::coroutine_handle<>& first,
                                     std::coroutine_handle<>& second) {
    auto direct = triad::spawn(park(first), {.name = "direct"});
    auto nested = triad::spawn(park_nested(second), {.name = "nested"});
    co_await triad::sleep(5ms);
    auto fresh = triad::spawn(answer(), {.name = "fresh"}); // queued, not started
    seen = loop.tasks();
    loop.post([&first, &second] {
        first.resume();
        second.resume();
    });
    co_await direct;
    co_await nested;
    (void)co_await fresh;
}

} // namespace

TEST_CASE("tasks() tells a task suspended on an awaitable of the user's own from a ready one",
          "[task]") {
    triad::event_loop loop;
    std::vector<triad::task_info> seen;
    std::coroutine_handle<> first;
    std::coroutine_handle<> second;
    loop.run(list_beside_parked(loop, seen, first, second));
    REQUIRE(seen.size() == 4);
    std::map<std::string, std::string> by_name;
    for (const triad::task_info& t : seen)
        by_name[t.name] = t.waiting_on;
    CHECK(by_name["main"] == "running or ready"); // the one asking
    CHECK(by_name["fresh"] == "running or ready");
    CHECK(by_name["direct"] == unknown_awaitable);
    CHECK(by_name["nested"] == unknown_awaitable);
}

TEST_CASE("tasks() says when it cannot tell a ready task from one on an unknown awaitable",
          "[task]") {
    triad::event_loop loop;
    std::vector<triad::task_info> seen;
    std::coroutine_handle<> slot;
    // The lambda's frame, which main awaits, is what the loop resumes: nothing leads from main
    // to it, so main cannot be told from a task on an awaitable triad does not know.
    loop.run(triad::make_task([&]() -> triad::task<void> {
        auto parked_task = triad::spawn(park(slot), {.name = "parked"});
        co_await triad::sleep(5ms);
        seen = loop.tasks();
        loop.post([&slot] { slot.resume(); });
        co_await parked_task;
    }));
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].waiting_on ==
          "running or ready, or an awaitable triad does not know (not cancellable)");
    CHECK(seen[1].waiting_on == seen[0].waiting_on);
}

TEST_CASE("the stall report names an awaitable of the user's own as one triad does not know",
          "[task]") {
    std::coroutine_handle<> slot;
    std::vector<triad::stall_report> reports;
    triad::event_loop* self = nullptr;
    triad::event_loop loop({.stall_timeout = 20ms, .on_stall = [&](const triad::stall_report& r) {
                                reports.push_back(r);
                                self->post([&] { slot.resume(); });
                            }});
    self = &loop;
    loop.run(triad::make_task([&]() -> triad::task<void> {
        auto parked_task = triad::spawn(park_nested(slot), {.name = "parked"});
        co_await parked_task;
    }));
    REQUIRE(reports.size() == 1);
    REQUIRE(reports[0].tasks.size() == 2);
    CHECK(reports[0].tasks[0].waiting_on == "a spawned task (task_handle)");
    CHECK(reports[0].tasks[1].name == "parked");
    CHECK(reports[0].tasks[1].waiting_on == unknown_awaitable);
    CHECK_THAT(reports[0].text(),
               Catch::Contains(std::string("parked: waiting on ") + unknown_awaitable));
}

TEST_CASE("tasks() called from a task an Asio handler resumed says when it cannot tell ready "
          "from an unknown awaitable",
          "[task]") {
    triad::event_loop loop;
    std::vector<triad::task_info> seen;
    std::coroutine_handle<> slot;
    loop.run(triad::make_task([&]() -> triad::task<void> {
        auto parked_task = triad::spawn(park(slot), {.name = "parked"});
        boost::asio::steady_timer timer(loop.executor(), 5ms);
        co_await timer.async_wait(triad::use_task); // resumed by the handler, not the queue
        seen = loop.tasks();
        loop.post([&slot] { slot.resume(); });
        co_await parked_task;
    }));
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].waiting_on == "running or ready, or an awaitable triad does not know (not "
                                "cancellable)");
    CHECK(seen[1].waiting_on == seen[0].waiting_on);
}

TEST_CASE("an exception escaping work posted to the loop ends run after every task ended",
          "[task]") {
    triad::event_loop loop;
    bool cleaned = false;
    CHECK_THROWS_WITH(loop.run(triad::make_task([&]() -> triad::task<void> {
        auto other = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            struct cleanup {
                bool& flag;
                ~cleanup() { flag = true; }
            } guard{cleaned};
            co_await triad::sleep(1h);
        }));
        co_await triad::sleep(0ms); // `other` starts
        loop.post([] { throw std::runtime_error("posted work failed"); });
        co_await triad::sleep(1h);
    })),
                      Catch::Contains("posted work failed"));
    CHECK(cleaned); // the frames were unwound, not left suspended
}

TEST_CASE("spawn_threadsafe starts a task from another thread and gives a future", "[task]") {
    triad::event_loop loop;
    triad::event stop;
    std::thread other;
    std::vector<int> values;
    std::string error;
    loop.run(triad::make_task([&]() -> triad::task<void> {
        other = std::thread([&] {
            for (int i = 0; i < 100; ++i)
                values.push_back(loop.spawn_threadsafe(triad::make_task([i]() -> triad::task<int> {
                                         co_await triad::sleep(0ms);
                                         co_return i* i;
                                     }))
                                     .get());
            try {
                loop.spawn_threadsafe(throws_after(1ms)).get();
            } catch (const std::domain_error& e) {
                error = e.what();
            }
            stop.set();
        });
        co_await stop.wait();
    }));
    other.join();
    REQUIRE(values.size() == 100);
    for (int i = 0; i < 100; ++i)
        CHECK(values[static_cast<std::size_t>(i)] == i * i);
    CHECK(error == "failed on purpose");
    // Posted to a loop that is destroyed before it runs again: a broken promise, not a hang.
    std::optional<triad::future<int>> orphan;
    {
        triad::event_loop short_lived;
        orphan.emplace(short_lived.spawn_threadsafe(answer()));
    }
    CHECK_THROWS_AS(orphan->get(), triad::broken_promise);
}

TEST_CASE("a task that spawn_threadsafe starts while run winds down gives task_cancelled",
          "[task]") {
    // The posted start is processed after the main task returned, while another task still
    // cleans up: the new task is cancelled before its first step, and its future says so (it
    // once said broken_promise).
    triad::event_loop loop;
    triad::future<int> late;
    loop.run(triad::make_task([&]() -> triad::task<void> {
        (void)triad::spawn(triad::make_task([]() -> triad::task<void> {
            bool cancelled = false;
            try {
                co_await triad::sleep(1h);
            } catch (const triad::task_cancelled&) {
                cancelled = true;
            }
            if (cancelled)
                co_await triad::sleep(50ms); // its cleanup takes a while
        }));
        co_await triad::sleep(1ms);
        std::thread([&] { late = loop.spawn_threadsafe(answer()); }).join();
    }));
    CHECK_THROWS_AS(late.get(), triad::task_cancelled);
}

TEST_CASE("a cancellation that arrives while a finished handle's waiter is scheduled is "
          "delivered at the next suspension point",
          "[task]") {
    std::string outcome;
    triad::event finishing;
    triad::run(triad::make_task([&]() -> triad::task<void> {
        auto quick = triad::spawn(triad::make_task([&]() -> triad::task<int> {
            co_await triad::sleep(1ms);
            finishing.set(); // schedules the canceller ahead of the waiter
            co_return 1;
        }));
        auto waiter = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            // Not CHECK(co_await quick == 1): Catch's macro repeats its expression, and GCC 12
            // then resumes another awaiter object than the one it suspended.
            const int got = co_await quick;
            CHECK(got == 1);
            try {
                co_await triad::sleep(10s);
                outcome = "slept on: the cancellation was lost";
            } catch (const triad::task_cancelled&) {
                outcome = "cancelled";
            }
        }));
        // Runs after `quick` finished, while `waiter` is scheduled but has not run yet.
        co_await finishing.wait();
        waiter.cancel();
        co_await waiter;
    }));
    CHECK(outcome == "cancelled");
}

namespace {
triad::task<void> sleep_for(clock_type::duration d) {
    co_await triad::sleep(d);
}
} // namespace

TEST_CASE("a cancelled sleep leaves no timer armed: a stall is reported on time, and a user's "
          "io_context has nothing left to wait for",
          "[task]") {
    // The loop's Asio timer stayed armed for the deadline of the last sleep even when that
    // sleep was cancelled: the stall report came only then, and so did a user's io.run().
    triad::event unstick;
    auto stalled_after = clock_type::duration::max();
    const auto start = clock_type::now();
    triad::event_loop loop({.stall_timeout = 100ms, .on_stall = [&](const triad::stall_report&) {
                                stalled_after = clock_type::now() - start;
                                unstick.set();
                            }});
    loop.run(triad::make_task([&]() -> triad::task<void> {
        auto sleeper = triad::spawn(sleep_for(30s));
        co_await triad::sleep(1ms);
        sleeper.cancel();
        CHECK_THROWS_AS(co_await sleeper, triad::task_cancelled);
        co_await unstick.wait(); // only the stall report sets it
    }));
    CHECK(stalled_after < 10s);

    boost::asio::io_context io;
    {
        triad::event_loop on_user_io(io);
        on_user_io.run(triad::make_task([&]() -> triad::task<void> {
            auto sleeper = triad::spawn(sleep_for(30s));
            co_await triad::sleep(1ms);
            sleeper.cancel();
            CHECK_THROWS_AS(co_await sleeper, triad::task_cancelled);
        }));
        const auto before = clock_type::now(); // the loop is still there
        io.restart();
        io.run();
        CHECK(clock_type::now() - before < 10s);
    }
}

TEST_CASE("a task spawn_threadsafe posts to a user's io_context is started by the loop's next "
          "run, even when the user ran the io_context first",
          "[task]") {
    // The user's own poll took the start off the queue outside run(): it used to be dropped,
    // and the future broken.
    boost::asio::io_context io;
    triad::event_loop loop(io);
    triad::future<int> started;
    std::thread([&] { started = loop.spawn_threadsafe(answer()); }).join();
    io.restart();
    io.poll(); // the user's own use of the io_context, between two runs
    CHECK_FALSE(started.ready());
    loop.run(triad::make_task([]() -> triad::task<void> { co_await triad::sleep(1ms); }));
    REQUIRE(started.ready());
    CHECK(started.get() == 42);

    // Destroyed before it runs again: a broken promise, not a hang.
    triad::future<int> orphan;
    {
        triad::event_loop short_lived(io);
        std::thread([&] { orphan = short_lived.spawn_threadsafe(answer()); }).join();
        io.restart();
        io.poll();
    }
    CHECK_THROWS_AS(orphan.get(), triad::broken_promise);
}

TEST_CASE("work posted to a loop that never runs again is destroyed unrun", "[task]") {
    // The loop's destructor lets Asio's own work on its io_context run out, and it used to run
    // posted work with it, after everything declared later was gone.
    auto ran = std::make_shared<bool>(false);
    {
        triad::event_loop loop;
        loop.run(triad::make_task([]() -> triad::task<void> { co_return; }));
        std::thread([&] { loop.post([ran] { *ran = true; }); }).join();
        loop.post([ran] { *ran = true; });
    }
    CHECK_FALSE(*ran);
    CHECK(ran.use_count() == 1); // destroyed, not leaked
}

TEST_CASE("a thread that starts tasks without pause neither starves the loop nor keeps run from "
          "ending",
          "[task]") {
    // The loop ran Asio's ready handlers until there were none (never, under the flood), so
    // main's wake-up waited; and run's wind-down spawned each start that arrived meanwhile,
    // so there was always one more task to wait for.
    triad::event_loop loop;
    std::atomic<bool> stop{false};
    std::thread flood([&] {
        const auto until = clock_type::now() + 20s; // a hang ends here, and the check fails
        while (!stop && clock_type::now() < until)
            (void)loop.spawn_threadsafe(answer());
    });
    const auto start = clock_type::now();
    loop.run(triad::make_task([]() -> triad::task<void> { co_await triad::sleep(10ms); }));
    const auto took = clock_type::now() - start;
    stop = true;
    flood.join();
    CHECK(took < 10s);
}

TEST_CASE("an on_stall that throws changes nothing: the loop waits on", "[task]") {
    triad::event wake;
    std::thread late;
    int reports = 0;
    triad::event_loop loop({.stall_timeout = 20ms, .on_stall = [&](const triad::stall_report&) {
                                if (reports++ == 0)
                                    late = std::thread([&] {
                                        std::this_thread::sleep_for(100ms);
                                        wake.set();
                                    });
                                throw std::runtime_error("on_stall threw on purpose");
                            }});
    CHECK_NOTHROW(loop.run(triad::make_task([&]() -> triad::task<void> { co_await wake.wait(); })));
    late.join();
    CHECK(reports >= 1);
}

TEST_CASE("an event loop runs on a user's io_context, alongside the user's own handlers",
          "[task]") {
    boost::asio::io_context io;
    std::vector<std::string> order;
    boost::asio::post(io, [&] { order.push_back("user handler"); });
    {
        triad::event_loop loop(io);
        CHECK(&loop.context() == &io);
        loop.run(triad::make_task([&]() -> triad::task<void> {
            co_await triad::sleep(1ms);
            order.push_back("task");
            // A sleep still pending when the loop goes: its timer's handler stays in the
            // user's io_context and must not touch the destroyed loop.
            auto pending = triad::spawn(sleep_task(1h));
        }));
    }
    CHECK(order == std::vector<std::string>{"user handler", "task"});
    bool later = false;
    boost::asio::post(io, [&] { later = true; });
    io.restart();
    io.run(); // the leftover timer handler runs here, after the loop is gone
    CHECK(later);
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

TEST_CASE("sleep_until a steady_clock time point is exact: sleepers wake in the order of their "
          "time points, however close",
          "[task]") {
    // Converted through a second reading of the clock, each deadline moved by the time between
    // the two readings, and time points 1 ns apart woke out of order.
    constexpr int sleepers = 1000;
    std::vector<int> woke;
    triad::run([&]() -> triad::task<void> {
        const auto at = std::chrono::steady_clock::now() + 500ms; // after every sleeper started
        std::vector<triad::task_handle<void>> handles;
        for (int i = sleepers - 1; i >= 0; --i) // started last to first: the order is the clock's
            handles.push_back(triad::spawn(triad::make_task([&woke, at, i]() -> triad::task<void> {
                co_await triad::sleep_until(at + std::chrono::nanoseconds(i));
                woke.push_back(i);
            })));
        for (auto& handle : handles)
            co_await handle;
    }());
    REQUIRE(woke.size() == sleepers);
    CHECK(std::is_sorted(woke.begin(), woke.end()));
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

namespace {
// A lazy coroutine of another kind whose unhandled_exception() rethrows: the exception leaves
// its resume(), into whatever resumed it.
struct rethrowing_coroutine {
    struct promise_type {
        std::coroutine_handle<> continuation;
        rethrowing_coroutine get_return_object() {
            return rethrowing_coroutine(std::coroutine_handle<promise_type>::from_promise(*this));
        }
        std::suspend_always initial_suspend() noexcept { return {}; }
        struct final_awaiter {
            bool await_ready() noexcept { return false; }
            std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
                return h.promise().continuation;
            }
            void await_resume() noexcept {}
        };
        final_awaiter final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() { throw; }
    };
    std::coroutine_handle<promise_type> handle;
    explicit rethrowing_coroutine(std::coroutine_handle<promise_type> h) noexcept : handle(h) {}
    rethrowing_coroutine(rethrowing_coroutine&& other) noexcept
        : handle(std::exchange(other.handle, nullptr)) {}
    rethrowing_coroutine& operator=(rethrowing_coroutine&&) = delete;
    ~rethrowing_coroutine() {
        if (handle)
            handle.destroy();
    }
    bool await_ready() noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
        handle.promise().continuation = awaiting;
        return handle;
    }
    void await_resume() noexcept {}
};

rethrowing_coroutine throws_out_of_resume() {
    throw std::runtime_error("thrown out of resume()");
    co_return;
}

} // namespace

TEST_CASE("an exception out of a coroutine's resume() ends the program with the reason, not a "
          "hang",
          "[task][regression]") {
    // The awaiting task could never be resumed: run cancelled it and waited for it for ever,
    // and the loop would have resumed the tasks of the interrupted batch a second time.
    const auto [status, err] = triad_test::status_and_stderr_of_child([] {
        triad::run(
            triad::make_task([]() -> triad::task<void> { co_await throws_out_of_resume(); }));
    });
    INFO(err);
    CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT));
    CHECK(err.find("an exception escaped from a coroutine's resume()") != std::string::npos);
    CHECK(err.find("thrown out of resume()") != std::string::npos);
}

} // namespace triad_test_task
