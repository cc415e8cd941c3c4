// Built once per optimisation level (-O0, -O1, -Og, -O2, -O3, -Os) with the build's compiler:
// awaiting runs in constant stack whether or not the compiler makes symmetric transfer a tail
// call (GCC does only from -O2). Each case runs on a thread with a 1 MiB stack, where a chain
// that nests a frame per await would overflow long before the end.

#include <triad/combinators.hpp>
#include <triad/generator.hpp>
#include <triad/task.hpp>
#include <triad/use_task.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/dispatch.hpp>

#include <chrono>
#include <coroutine>
#include <exception>
#include <functional>
#include <optional>
#include <variant>
#include <vector>

#include <pthread.h>

namespace {

// Runs `body` on a fresh thread with a small stack and waits for it.
void on_small_stack(std::function<void()> body) {
    struct job {
        std::function<void()> body;
        std::exception_ptr error;
    } work{std::move(body), nullptr};
    pthread_attr_t attributes;
    REQUIRE(::pthread_attr_init(&attributes) == 0);
    REQUIRE(::pthread_attr_setstacksize(&attributes, 1 << 20) == 0);
    pthread_t thread;
    const int rc = ::pthread_create(
        &thread, &attributes,
        [](void* p) -> void* {
            auto* w = static_cast<job*>(p);
            try {
                w->body();
            } catch (...) {
                w->error = std::current_exception();
            }
            return nullptr;
        },
        &work);
    ::pthread_attr_destroy(&attributes);
    REQUIRE(rc == 0);
    ::pthread_join(thread, nullptr);
    if (work.error)
        std::rethrow_exception(work.error);
}

triad::task<long> chain(int depth) {
    if (depth == 0)
        co_return 0;
    co_return 1 + co_await chain(depth - 1);
}

triad::task<int> ready_one() {
    co_return 1;
}

triad::generator<long> counting(long n) {
    for (long i = 0; i < n; ++i)
        co_yield i;
}

triad::generator<long> doubled(triad::generator<long> source) {
    while (auto v = co_await source.next())
        co_yield 2 * *v;
}

triad::task<long> timeout_chain(int depth) {
    if (depth == 0)
        co_return 0;
    co_return 1 + co_await triad::timeout(std::chrono::hours(1), timeout_chain(depth - 1));
}

// Through gather (a tuple and a vector) and when_any in turn, the recursion in the first child.
// A coroutine of another kind that runs at once, as a user's own might: its owner destroys it
// when it goes out of scope, finished or not.
struct eager_coroutine {
    struct promise_type {
        eager_coroutine get_return_object() {
            return {std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_always final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept {}
    };
    std::coroutine_handle<promise_type> handle;
    ~eager_coroutine() {
        if (handle)
            handle.destroy();
    }
};

triad::task<long> answer_at_once() {
    co_return 42;
}

eager_coroutine await_answer(long* out) {
    *out = co_await answer_at_once();
}

// Native frames of about 1 KiB each, then an eager coroutine that awaits a task.
[[gnu::noinline]] long answer_deep_in_the_stack(int levels) {
    volatile char pad[1024];
    pad[0] = static_cast<char>(levels);
    if (levels == 0) {
        long answer = -1;
        { const eager_coroutine awaiting = await_answer(&answer); }
        return answer;
    }
    return answer_deep_in_the_stack(levels - 1) + pad[0] * 0;
}

triad::task<long> chain_to_eager(int depth) {
    if (depth == 0) {
        long answer = -1;
        { const eager_coroutine awaiting = await_answer(&answer); }
        co_return answer;
    }
    co_return co_await chain_to_eager(depth - 1);
}

// An eager coroutine (run by the task that makes it) that awaits, 100,000 times each, a task,
// a generator's next() and a gather, all of which finish at once.
eager_coroutine await_ready_things(long* out) {
    long total = 0;
    for (int i = 0; i < 100'000; ++i)
        total += co_await ready_one();
    triad::generator<long> items = counting(100'000);
    while (const std::optional<long> item = co_await items.next())
        total += *item >= 0 ? 1 : 0;
    for (int i = 0; i < 100'000; ++i) {
        const auto [one] = co_await triad::gather(ready_one());
        total += one;
    }
    *out = total;
}

triad::task<long> shield_scope_chain(int depth) {
    if (depth == 0)
        co_return 0;
    if (depth % 2 == 0)
        co_return 1 + co_await triad::shield(shield_scope_chain(depth - 1));
    auto body = [depth](triad::task_group&) -> triad::task<long> {
        co_return co_await shield_scope_chain(depth - 1);
    };
    co_return 1 + co_await triad::task_group::scope(std::move(body));
}

triad::task<long> combinator_chain(int depth) {
    if (depth == 0)
        co_return 0;
    if (depth % 3 == 0) {
        const auto [below, one] = co_await triad::gather(combinator_chain(depth - 1), ready_one());
        co_return below + one;
    }
    if (depth % 3 == 1) {
        std::vector<triad::task<long>> only;
        only.push_back(combinator_chain(depth - 1));
        const std::vector<long> below = co_await triad::gather(std::move(only));
        co_return below[0] + 1;
    }
    const auto [index, below] = co_await triad::when_any(combinator_chain(depth - 1));
    co_return std::get<0>(below) + static_cast<long>(index) + 1;
}

} // namespace

TEST_CASE("a 200,000-deep chain of awaited tasks runs in constant stack", "[transfer]") {
    long depth = 0;
    on_small_stack([&] { depth = triad::run(chain(200'000)); });
    CHECK(depth == 200'000);
}

TEST_CASE("a loop of 200,000 awaits of tasks that finish at once runs in constant stack",
          "[transfer]") {
    long sum = 0;
    on_small_stack([&] {
        sum = triad::run(triad::make_task([]() -> triad::task<long> {
            long total = 0;
            for (int i = 0; i < 200'000; ++i)
                total += co_await ready_one();
            co_return total;
        }));
    });
    CHECK(sum == 200'000);
}

TEST_CASE("a loop of 200,000 Asio operations that complete inline runs in constant stack",
          "[transfer]") {
    int rounds = 0;
    on_small_stack([&] {
        rounds = triad::run(triad::make_task([]() -> triad::task<int> {
            int n = 0;
            for (int i = 0; i < 200'000; ++i) {
                co_await boost::asio::dispatch(triad::current_executor(), triad::use_task);
                ++n;
            }
            co_return n;
        }));
    });
    CHECK(rounds == 200'000);
}

TEST_CASE("a stream of 1,000,000 items from a generator that never waits runs in constant stack",
          "[transfer]") {
    long sum = 0;
    on_small_stack([&] {
        sum = triad::run(triad::make_task([]() -> triad::task<long> {
            auto gen = counting(1'000'000);
            long total = 0;
            while (auto v = co_await gen.next())
                total += *v;
            co_return total;
        }));
    });
    CHECK(sum == 999'999L * 1'000'000L / 2);
}

TEST_CASE("a pipeline of generators streaming 1,000,000 items runs in constant stack",
          "[transfer]") {
    long sum = 0;
    on_small_stack([&] {
        sum = triad::run(triad::make_task([]() -> triad::task<long> {
            auto gen = doubled(doubled(counting(1'000'000)));
            long total = 0;
            while (auto v = co_await gen.next())
                total += *v;
            co_return total;
        }));
    });
    CHECK(sum == 4 * (999'999L * 1'000'000L / 2));
}

TEST_CASE("a 100,000-deep recursion through timeout runs in constant stack", "[transfer]") {
    long depth = 0;
    on_small_stack([&] { depth = triad::run(timeout_chain(100'000)); });
    CHECK(depth == 100'000);
}

TEST_CASE("a coroutine of another kind that awaits a task deep in the stack gets its result at "
          "once, and no transfer under it outlives it",
          "[transfer]") {
    // A transfer made deep in the stack was handed back to the loop's resume(): the eager
    // coroutine's own code got control back with the await pending, destroyed it, and the loop
    // then resumed the freed task (double free; heap-use-after-free under ASan).
    long deep = 0;
    on_small_stack([&] {
        deep = triad::run(triad::make_task(
            []() -> triad::task<long> { co_return answer_deep_in_the_stack(200); }));
    });
    CHECK(deep == 42);
    for (const int depth : {0, 1000, 1018, 1100, 3000}) {
        long chained = 0;
        on_small_stack([&] { chained = triad::run(chain_to_eager(depth)); });
        CHECK(chained == 42);
    }
}

TEST_CASE("a coroutine of another kind that awaits tasks, next() and gather in a loop runs in "
          "constant stack",
          "[transfer]") {
    // Each await that finished at once handed back the awaiting coroutine's handle, which GCC
    // below -O2 resumes by a nested call: the loop overflowed a 1 MiB stack at -O0, -O1, -Og.
    long total = 0;
    on_small_stack([&] {
        triad::run(triad::make_task([&]() -> triad::task<void> {
            const eager_coroutine awaiting = await_ready_things(&total);
            co_return;
        }));
    });
    CHECK(total == 300'000);
}

TEST_CASE("a 100,000-deep recursion through shield and task_group::scope runs in constant "
          "stack",
          "[transfer]") {
    // Both started their child with a nested resume: 20,000 levels of shield or 10,000 of
    // scope overflowed a 1 MiB stack at -O2.
    long depth = 0;
    on_small_stack([&] { depth = triad::run(shield_scope_chain(100'000)); });
    CHECK(depth == 100'000);
}

TEST_CASE("a 100,000-deep recursion through gather and when_any runs in constant stack",
          "[transfer]") {
    long depth = 0;
    on_small_stack([&] { depth = triad::run(combinator_chain(100'000)); });
    CHECK(depth == 100'000);
}
