#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <triad/cpu.hpp>
#include <triad/detail/bulk.hpp>
#include <triad/detail/progress.hpp>
#include <triad/detail/scheduler.hpp>
#include <triad/detail/shared_state.hpp>
#include <triad/detail/task_queue.hpp>
#include <triad/detail/text.hpp>
#include <triad/detail/unique_function.hpp>
#include <triad/errors.hpp>
#include <triad/future.hpp>
#include <triad/pool_options.hpp>

namespace triad {

namespace detail {

template <class T>
struct is_reference_wrapper : std::false_type {};
template <class T>
struct is_reference_wrapper<std::reference_wrapper<T>> : std::true_type {};

template <class M>
struct member_pointer_class {};
template <class M, class C>
struct member_pointer_class<M C::*> {
    using type = C;
};

// An argument held by value in the task, of the type the result refers to.
template <class Result, class Arg>
inline constexpr bool result_refers_to_arg =
    !std::is_pointer_v<std::decay_t<Arg>> && !is_reference_wrapper<std::decay_t<Arg>>::value &&
    (std::is_same_v<std::remove_cvref_t<Result>, std::decay_t<Arg>> ||
     std::is_base_of_v<std::remove_cvref_t<Result>, std::decay_t<Arg>>);

template <class Fn, class... Args>
constexpr bool member_of_copied_object() {
    using F = std::decay_t<Fn>;
    if constexpr (std::is_member_pointer_v<F> && sizeof...(Args) > 0) {
        using first = std::decay_t<std::tuple_element_t<0, std::tuple<Args...>>>;
        return std::is_base_of_v<typename member_pointer_class<F>::type, first>;
    } else {
        return false;
    }
}

template <class Fn, class... Args>
constexpr bool result_refers_into_task_v() {
    if constexpr (!std::is_invocable_v<std::decay_t<Fn>, std::decay_t<Args>...>) {
        return false;
    } else {
        using R = std::invoke_result_t<std::decay_t<Fn>, std::decay_t<Args>...>;
        if constexpr (!std::is_reference_v<R>)
            return false;
        else
            return member_of_copied_object<Fn, Args...>() || (result_refers_to_arg<R, Args> || ...);
    }
}

// A task whose reference result can only point into its own copy of an argument: the reference
// would dangle as soon as the future is consumed (std::async has the same trap).
template <class Fn, class... Args>
concept result_refers_into_task = result_refers_into_task_v<Fn, Args...>();

} // namespace detail

/** How a `triad::thread_pool` is built; every field has a sensible default. */
struct thread_pool_options {
    /** Worker threads; unset means `triad::cpu_count()`. Zero throws `std::invalid_argument`. */
    std::optional<std::size_t> threads{};
    /** Workers are named `<prefix>-<index>` (shortened to Linux's 15 characters). */
    std::string name_prefix = "triad";
    /**
     * Runs once on each worker, with its index, before it takes any task (Python's
     * `initializer=`): the place for per-thread state such as one HTTP session per thread. If it
     * throws, the constructor throws `triad::initializer_error` with the original nested. It also
     * runs on each stand-in thread (see `thread_pool`), whose index is `size()` or more; there an
     * exception goes to `on_error`. Any callable, move-only ones included.
     */
    detail::unique_function<void(std::size_t worker_index)> initializer{};
    /**
     * Receives every exception that nobody else can: one escaping a task started with `post()`,
     * or an `on_ready` callback run on a worker, or a stand-in's initializer; on the thread where
     * it happened. Unset: the exception's type and message are printed to stderr. Either way the
     * worker lives. Any callable, move-only ones included.
     */
    detail::unique_function<void(std::exception_ptr)> on_error{};
    /**
     * How long an idle worker polls for new work before it sleeps. Longer trades CPU for latency
     * when tasks arrive in quick bursts.
     */
    std::chrono::nanoseconds idle_spin = std::chrono::microseconds(5);
};

/**
 * A work-stealing thread pool: Python's `ThreadPoolExecutor`, with `map` that chunks, no
 * deadlock when a task waits on another, and exceptions that are never lost.
 *
 * Each worker has its own deque (the newest task first, for cache locality); submissions from
 * other threads go to a shared queue; idle workers steal from each other, then spin a few
 * microseconds, then sleep. A task that waits on a future (or a `map`) of its own pool runs other
 * queued tasks while it waits, so nested submit-and-wait cannot deadlock, even with one thread.
 * When helping would go too deep for the thread's stack, and for every timed wait (which must
 * return by its deadline, so it cannot run a task of unknown length), the worker blocks instead
 * and a stand-in thread runs the pool's tasks until the wait ends (as Java's
 * `ForkJoinPool.managedBlock` does); idle stand-ins are kept as spares for reuse until the pool
 * shuts down. Timed waits get stand-ins up to max(256, 4 x size()) of them; an untimed wait always
 * gets one, and throws `std::system_error` if the system refuses a thread.
 *
 * @par Thread Safety
 * Every member may be called from any thread, concurrently, except that `shutdown` and
 * `wait_idle` may not be called from the pool's own tasks (`std::logic_error`: they would wait
 * for themselves). The destructor may run on one of the pool's own threads (the last
 * `shared_ptr` dropped inside a task): then it returns at once and a background thread drains
 * and joins the pool.
 *
 * @code
 * triad::thread_pool pool;                      // triad::cpu_count() threads
 * auto squares = pool.map([](int x) { return x * x; }, std::vector{1, 2, 3});
 * triad::future<int> f = pool.submit([](int a, int b) { return a + b; }, 2, 3);
 * @endcode
 */
class thread_pool {
public:
    /** `triad::cpu_count()` workers. */
    thread_pool() : thread_pool(thread_pool_options{}) {}
    /** `threads` workers; 0 throws `std::invalid_argument`. */
    explicit thread_pool(std::size_t threads)
        : thread_pool(thread_pool_options{.threads = threads}) {}
    explicit thread_pool(thread_pool_options options);

    /**
     * Drains the queue (like `shutdown()`) and joins the workers. On one of the pool's own
     * threads it cannot join itself: it hands the drain and join to a background thread and
     * returns at once.
     */
    ~thread_pool();
    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;

    /** The number of worker threads (stand-ins not counted). */
    std::size_t size() const noexcept { return m_scheduler->size(); }

    /**
     * Runs `fn(args...)` on a worker and forgets it. An exception it throws goes to
     * `thread_pool_options::on_error` (default: stderr). Arguments are copied or moved into the
     * task, as by `std::thread`. Throws `triad::pool_closed` after `shutdown()`.
     */
    template <class Fn, class... Args>
    void post(Fn&& fn, Args&&... args);

    /**
     * Runs `fn(args...)` on a worker; the future holds its result or exception. Arguments are
     * copied or moved into the task. Throws `triad::pool_closed` after `shutdown()`. When the
     * result is a reference, the task (its callable and its copies of the arguments) lives as
     * long as the future, so a reference into them stays valid while the future does; a call
     * whose result can only refer into the task's own copy of an argument (`submit(&T::member,
     * obj)`) is refused at compile time: pass `std::ref(obj)` or a pointer, or return by value.
     */
    template <class Fn, class... Args>
    [[nodiscard]] auto submit(Fn&& fn, Args&&... args);

    // The compiler quotes this line when it refuses such a call, so the advice stays on it.
    // clang-format off
    template <class Fn, class... Args>
        requires detail::result_refers_into_task<Fn, Args...>
    void submit(Fn&&, Args&&...) = delete; // the result would refer into the task's own copy of an argument: pass std::ref(obj) or a pointer, or return by value
    // clang-format on

    /**
     * Applies `fn` to every item of `items` on the workers and returns the results in input
     * order (Python's `executor.map`, but chunked, so a million tiny items cost little more than
     * a loop). Blocks until every item is done; if items threw, rethrows the exception of the
     * first failing item (by position) after all items finished. `fn` is called concurrently, so
     * it must be safe to call from several threads. Ranges that are not random-access are copied
     * first.
     */
    template <class Fn, std::ranges::input_range Items>
    auto map(Fn&& fn, Items&& items, map_options options = {});

    /** Calls `fn(item)` for every item on the workers; errors as for `map`. */
    template <std::ranges::input_range Items, class Fn>
    void for_each(Items&& items, Fn&& fn, map_options options = {});

    /**
     * Calls `fn(i)` for every `i` in `[first, last)` on the workers, `i` of the common type of
     * `first` and `last`; errors as for `map`. Throws `std::out_of_range` if a bound does not fit
     * that type (say, a negative `first` with an unsigned `last`).
     */
    template <std::integral First, std::integral Last, class Fn>
    void parallel_for(First first, Last last, Fn&& fn, map_options options = {});

    /**
     * Blocks until every task submitted before the call has finished (a task that waits for its
     * subtasks finishes after them). Work submitted while it waits is not waited for — neither
     * a new producer's nor what those tasks post without waiting for it, such as `then(pool, f)`
     * continuations — so a producer that never stops cannot starve it. The pool stays usable.
     * Throws `std::logic_error` from one of the pool's own tasks.
     */
    void wait_idle() { m_scheduler->wait_idle_until(nullptr); }

    /** `wait_idle()` for at most `timeout`; false if it ran out first. */
    template <class Rep, class Period>
    bool wait_idle_for(const std::chrono::duration<Rep, Period>& timeout) {
        const detail::steady_time deadline = detail::deadline_after(timeout);
        return m_scheduler->wait_idle_until(&deadline);
    }

    /** `wait_idle()` until `time` at the latest (any clock); false if it passed first. */
    template <class Clock, class Duration>
    bool wait_idle_until(const std::chrono::time_point<Clock, Duration>& time) {
        const detail::steady_time deadline = detail::to_steady_deadline(time);
        return m_scheduler->wait_idle_until(&deadline);
    }

    /**
     * Stops taking work from outside (then `submit` throws `triad::pool_closed`), finishes or
     * cancels what is queued, and joins the workers. Tasks already running always finish.
     * Idempotent; a cancel during another thread's drain turns the rest of that drain into a
     * cancel.
     *
     * The drain rule: with `drain`, every task queued before the call runs. A task running
     * during the drain may still submit (so it can wait on subtasks); such a subtask, and its
     * own subtasks, start only while the pre-shutdown task they descend from is still running,
     * or while a task of the pool is blocked in an untimed wait (`get()`, `wait()`) for its
     * result (it then counts as the root of what it submits); anything else is cancelled when
     * a worker reaches it (its future throws `triad::task_cancelled`), and waits by threads
     * outside the pool do not keep it alive. A `then(pool, f)` continuation whose future
     * completes during the drain counts as a subtask of the task that completed it. So the
     * drain ends as soon as the tasks themselves end, even if a task re-posts itself forever.
     * With `cancel`, queued tasks are dropped and their futures throw `triad::task_cancelled`.
     */
    void shutdown(shutdown_mode mode = shutdown_mode::drain) {
        m_scheduler->shutdown(mode == shutdown_mode::cancel);
    }

    /** True once `shutdown()` has begun: work from outside the pool is refused from then on. */
    bool closed() const noexcept { return m_scheduler->is_closed(); }

    /** Tasks waiting in queues (a map counts one task per worker taking part). A snapshot. */
    std::uint64_t queued() const noexcept { return m_scheduler->queued(); }
    /**
     * Tasks started and not yet finished. A snapshot. A task waiting on a future counts, and so
     * does each task its thread runs meanwhile, and each task a stand-in runs, so this can
     * exceed `size()`. A task counts from when a worker takes it off a queue, a moment before
     * the worker claims it from its future: a `cancel()` in that moment still wins, and the
     * task counts here until the worker drops it (and then in `cancelled()`).
     */
    std::uint64_t running() const noexcept { return m_scheduler->running(); }
    /**
     * Tasks that ran to the end (returned or threw). Like every counter here, a snapshot that
     * moves just after a task's result is published; after `wait_idle()` it counts every task
     * submitted before the call.
     */
    std::uint64_t completed() const noexcept { return m_scheduler->completed(); }
    /**
     * Tasks dropped unrun: by `future::cancel()`, `shutdown(shutdown_mode::cancel)` or the drain
     * rule. A task cancelled by its future is counted when a worker reaches it.
     */
    std::uint64_t cancelled() const noexcept { return m_scheduler->cancelled(); }
    /** Stand-in threads now running tasks in place of workers blocked in a wait. A snapshot. */
    std::size_t stand_ins() const noexcept { return m_scheduler->stand_ins(); }

    /**
     * What `future::then(pool, f)` keeps to post its continuation: it shares the pool's engine,
     * so a continuation still works when the pool object itself was destroyed from one of its
     * own tasks (its drain goes on in the background).
     */
    class continuation_handle {
    public:
        template <class Fn>
        void post(Fn&& fn) {
            post_to(*m_engine, std::forward<Fn>(fn));
        }

    private:
        friend class thread_pool;
        explicit continuation_handle(std::shared_ptr<detail::scheduler> engine) noexcept
            : m_engine(std::move(engine)) {}
        std::shared_ptr<detail::scheduler> m_engine;
    };
    continuation_handle make_continuation_handle() const {
        return continuation_handle(m_scheduler);
    }

private:
    template <class Fn, class... Args>
    static void post_to(detail::scheduler& engine, Fn&& fn, Args&&... args);
    template <class Body>
    void run_bulk(std::size_t items, map_options options, Body& body);

    static detail::scheduler_config to_config(thread_pool_options&& options);
    using wait_slot_pointer = const detail::wait_slot*;

    std::shared_ptr<detail::scheduler> m_scheduler;
};

// ---------------------------------------------------------------------------------------------
// Definitions

namespace detail {

// A callable that completes a future (a then(pool, fn) continuation) says which, so that the
// drain can see whether somebody waits for it.
template <class Fn>
concept has_result_slot = requires(const Fn& fn) {
    { fn.result_slot() } -> std::convertible_to<const wait_slot*>;
};

template <class Fn>
struct posted_task final : task_node {
    explicit posted_task(Fn fn) : task_node(&posted_task::execute_node), m_fn(std::move(fn)) {}

    static bool execute_node(task_node* node, bool cancel) noexcept {
        std::unique_ptr<posted_task> self(static_cast<posted_task*>(node));
        if (cancel)
            return false;
        std::exception_ptr error;
        try {
            self->m_fn();
        } catch (...) {
            error = std::current_exception();
        }
        if (error) // after the catch ended (see shared_state::set_error): on_error may hand it on
            scheduler::report_task_error(std::move(error));
        return true;
    }

    Fn m_fn;
};

template <class Fn, class R>
class submitted_task final : public shared_state<R>, public task_node {
public:
    explicit submitted_task(Fn fn)
        : shared_state<R>(2), task_node(&submitted_task::execute_node), m_fn(std::move(fn)) {
        m_result = this;
        this->allow_cancel();
    }
    ~submitted_task() override {
        if constexpr (keeps_callable)
            if (!this->cancelled_by_future())
                m_fn.~Fn();
    }

    // future::cancel() won: what the task captured goes now, on the cancelling thread, before
    // the future can be seen ready (as when it runs), not when a worker reaches the node.
    void release_cancelled() noexcept override { m_fn.~Fn(); }

    static bool execute_node(task_node* node, bool cancel) noexcept {
        auto* self = static_cast<submitted_task*>(node);
        // Cancelled by its future (future::cancel) while queued: the result is set already.
        const bool owned = self->try_claim();
        if (owned) {
            if (cancel)
                self->set_error(cancelled_error());
            else
                self->set_from(std::move(self->m_fn));
        }
        // A value result: whatever the task captured is released before anyone can observe the
        // result. A reference result may point into the callable or its arguments, so they live
        // as long as the state. A task its future cancelled released them then.
        if constexpr (!keeps_callable)
            if (owned)
                self->m_fn.~Fn();
        if (owned)
            self->publish();
        self->release();
        return owned && !cancel;
    }

private:
    static constexpr bool keeps_callable = std::is_reference_v<R>;
    union {
        Fn m_fn;
    };
};

// Binds arguments the way std::thread does: decay-copied into the task, moved into the call.
template <class Fn, class... Args>
auto bind_task(Fn&& fn, Args&&... args) {
    return [fn = std::forward<Fn>(fn),
            ... args = std::forward<Args>(args)]() mutable -> decltype(auto) {
        return std::invoke(std::move(fn), std::move(args)...);
    };
}

template <class Fn, class... Args>
inline constexpr bool task_is_callable =
    std::is_invocable_v<std::decay_t<Fn>, std::decay_t<Args>...>&&
        std::is_move_constructible_v<std::decay_t<Fn>>;

template <class Fn, class... Args>
constexpr void check_task_signature() {
    static_assert(std::is_invocable_v<std::decay_t<Fn>, std::decay_t<Args>...>,
                  "triad::thread_pool: the task cannot be called with these arguments (they are "
                  "copied into the task and passed as rvalues, and the callable is called as an "
                  "rvalue; to pass a reference, wrap it in std::ref; a callable whose operator() "
                  "is &-qualified must be wrapped in a lambda)");
    static_assert(std::is_move_constructible_v<std::decay_t<Fn>>,
                  "triad::thread_pool: the callable must be move-constructible");
}

} // namespace detail

inline detail::scheduler_config thread_pool::to_config(thread_pool_options&& options) {
    detail::scheduler_config config;
    config.threads = options.threads ? *options.threads : cpu_count();
    config.name_prefix = std::move(options.name_prefix);
    config.initializer = std::move(options.initializer);
    config.on_error = std::move(options.on_error);
    config.idle_spin = options.idle_spin;
    return config;
}

inline thread_pool::thread_pool(thread_pool_options options)
    : m_scheduler(std::make_shared<detail::scheduler>(to_config(std::move(options)))) {}

inline thread_pool::~thread_pool() {
    if (m_scheduler->is_inherited()) {
        // Made before this process was forked from its maker (a static pool, to_thread's, at a
        // forked child's exit()): its threads are not in this process, there is nothing to
        // drain, and joining them crashed or hung. Nor is the engine freed: its queues are as
        // the fork left them, perhaps mid-update. It keeps an owner that never lets go.
        union never_destroyed {
            std::shared_ptr<detail::scheduler> owner;
            ~never_destroyed() {}
        } keep{m_scheduler};
        (void)keep;
        return;
    }
    if (!m_scheduler->is_own_thread()) {
        // Drained and joined here, while this object is whole: a then(pool, f) continuation
        // that falls due during the drain still posts through it.
        m_scheduler->shutdown(false);
        return;
    }
    // The last owner let go inside one of the pool's own tasks: this thread cannot join itself,
    // so a background thread drains and joins the pool (the current task counts as running, so
    // the drain waits for it to return). Continuations hold the engine through their handles.
    try {
        std::thread([engine = m_scheduler] { engine->shutdown(false); }).detach();
    } catch (...) {
        std::fputs("triad::thread_pool: destroyed on one of its own threads, and no thread could "
                   "be started to drain it in the background\n",
                   stderr);
        std::abort();
    }
}

template <class Fn, class... Args>
void thread_pool::post(Fn&& fn, Args&&... args) {
    post_to(*m_scheduler, std::forward<Fn>(fn), std::forward<Args>(args)...);
}

template <class Fn, class... Args>
void thread_pool::post_to(detail::scheduler& engine, Fn&& fn, Args&&... args) {
    if constexpr (!detail::task_is_callable<Fn, Args...>) {
        detail::check_task_signature<Fn, Args...>();
    } else {
        using bound =
            decltype(detail::bind_task(std::forward<Fn>(fn), std::forward<Args>(args)...));
        const wait_slot_pointer result = [&]() -> wait_slot_pointer {
            if constexpr (sizeof...(Args) == 0 && detail::has_result_slot<std::decay_t<Fn>>)
                return fn.result_slot();
            else
                return nullptr;
        }();
        const detail::admission admitted = engine.admit(1);
        detail::task_node* node = nullptr;
        try {
            node = std::make_unique<detail::posted_task<bound>>(
                       detail::bind_task(std::forward<Fn>(fn), std::forward<Args>(args)...))
                       .release();
        } catch (...) {
            engine.refuse(1, admitted);
            throw;
        }
        node->m_result = result;
        engine.push(node, node, 1, admitted);
    }
}

template <class Fn, class... Args>
auto thread_pool::submit(Fn&& fn, Args&&... args) {
    if constexpr (!detail::task_is_callable<Fn, Args...>) {
        detail::check_task_signature<Fn, Args...>();
    } else {
        using R = std::invoke_result_t<std::decay_t<Fn>, std::decay_t<Args>...>;
        using bound =
            decltype(detail::bind_task(std::forward<Fn>(fn), std::forward<Args>(args)...));
        using task = detail::submitted_task<bound, R>;
        const detail::admission admitted = m_scheduler->admit(1);
        task* node = nullptr;
        try {
            node = std::make_unique<task>(
                       detail::bind_task(std::forward<Fn>(fn), std::forward<Args>(args)...))
                       .release();
        } catch (...) {
            m_scheduler->refuse(1, admitted);
            throw;
        }
        future<R> result = detail::future_access::make<R>(node);
        m_scheduler->push(node, node, 1, admitted);
        return result;
    }
}

template <class Body>
void thread_pool::run_bulk(std::size_t items, map_options options, Body& body) {
    if (options.item_timeout)
        throw std::invalid_argument("triad::thread_pool: map_options::item_timeout is for process "
                                    "pools (a thread cannot be killed); check a deadline in the "
                                    "task instead");
    if (items == 0)
        return;
    const auto run = [](void* context, std::size_t begin, std::size_t end, detail::bulk_job& job) {
        Body& b = *static_cast<Body*>(context);
        for (std::size_t i = begin; i < end; ++i) {
            if constexpr (std::is_nothrow_invocable_v<Body&, std::size_t>) {
                b(i);
            } else {
                try {
                    b(i);
                } catch (...) {
                    job.record_error(i, std::current_exception());
                }
            }
        }
    };
    detail::progress_meter meter(options.progress, items);
    auto owned = std::make_unique<detail::bulk_job>(items, size(), options.chunk_size, +run, &body,
                                                    meter.counter());
    detail::bulk_job* job = owned.get();
    const std::size_t runners = job->runner_count();
    const detail::admission admitted = m_scheduler->admit(runners);
    future<void> done = detail::future_access::make<void>(owned.release());
    m_scheduler->push(job->newest(), job->oldest(), runners, admitted);
    if (meter.enabled())
        while (done.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout)
            meter.tick();
    done.get();
    meter.finish();
}

namespace detail {
// Ranges that map and for_each use in place; any other input range (a non-common view such as
// iota | take_while, an input-only one such as views::istream) is copied into a vector first.
template <class Items>
inline constexpr bool in_place_range =
    std::ranges::random_access_range<Items>&& std::ranges::sized_range<Items>;

template <class Items>
auto copy_items(Items&& items) {
    std::vector<std::ranges::range_value_t<Items>> copied;
    if constexpr (std::ranges::sized_range<Items>)
        copied.reserve(static_cast<std::size_t>(std::ranges::size(items)));
    for (auto&& item : items)
        copied.emplace_back(std::forward<decltype(item)>(item));
    return copied;
}
} // namespace detail

template <class Fn, std::ranges::input_range Items>
auto thread_pool::map(Fn&& fn, Items&& items, map_options options) {
    using reference = std::ranges::range_reference_t<Items>;
    if constexpr (!std::is_invocable_v<Fn&, reference>) {
        static_assert(std::is_invocable_v<Fn&, reference>,
                      "triad::thread_pool::map: the function cannot be called with an item of the "
                      "range (it is called as an lvalue, with the range's reference type)");
    } else {
        using R = std::remove_cvref_t<std::invoke_result_t<Fn&, reference>>;
        static_assert(!std::is_void_v<R>, "triad::thread_pool::map: the function returns void; "
                                          "use for_each(items, fn) or parallel_for(first, last, "
                                          "fn)");
        if constexpr (std::is_void_v<R>) {
            return;
        } else if constexpr (detail::in_place_range<Items>) {
            const std::size_t n = static_cast<std::size_t>(std::ranges::size(items));
            auto first = std::ranges::begin(items);
            const auto item = [&first](std::size_t i) -> decltype(auto) {
                return first[static_cast<std::ranges::range_difference_t<Items>>(i)];
            };
            if constexpr (std::is_default_constructible_v<R> && std::is_move_assignable_v<R> &&
                          !std::is_same_v<R, bool>) {
                // Straight into the vector: one allocation, no second pass (a second large
                // buffer per call also makes glibc return memory to the OS and fault it back).
                std::vector<R> results(n);
                auto body = [&](std::size_t i) { results[i] = std::invoke(fn, item(i)); };
                run_bulk(n, options, body);
                return results;
            } else {
                detail::result_buffer<R> results(n);
                auto body = [&](std::size_t i) { results.emplace(i, std::invoke(fn, item(i))); };
                run_bulk(n, options, body);
                return results.release_to_vector();
            }
        } else {
            auto copied = detail::copy_items(std::forward<Items>(items));
            return map(std::forward<Fn>(fn), copied, options);
        }
    }
}

template <std::ranges::input_range Items, class Fn>
void thread_pool::for_each(Items&& items, Fn&& fn, map_options options) {
    using reference = std::ranges::range_reference_t<Items>;
    if constexpr (!std::is_invocable_v<Fn&, reference>) {
        static_assert(std::is_invocable_v<Fn&, reference>,
                      "triad::thread_pool::for_each: the function cannot be called with an item "
                      "of the range (it is called as an lvalue, with the range's reference type)");
    } else if constexpr (detail::in_place_range<Items>) {
        const std::size_t n = static_cast<std::size_t>(std::ranges::size(items));
        auto first = std::ranges::begin(items);
        auto body = [&](std::size_t i) {
            std::invoke(fn, first[static_cast<std::ranges::range_difference_t<Items>>(i)]);
        };
        run_bulk(n, options, body);
    } else {
        auto copied = detail::copy_items(std::forward<Items>(items));
        for_each(copied, std::forward<Fn>(fn), options);
    }
}

template <std::integral First, std::integral Last, class Fn>
void thread_pool::parallel_for(First first_in, Last last_in, Fn&& fn, map_options options) {
    using Index = std::common_type_t<First, Last>;
    static_assert(std::is_invocable_v<Fn&, Index>,
                  "triad::thread_pool::parallel_for: the function must take the index type");
    if (!std::in_range<Index>(first_in) || !std::in_range<Index>(last_in))
        throw std::out_of_range(detail::concat("triad::thread_pool::parallel_for: first (",
                                               first_in, ") or last (", last_in,
                                               ") does not fit their common index type"));
    const auto first = static_cast<Index>(first_in);
    const auto last = static_cast<Index>(last_in);
    if (!(first < last))
        return;
    using wide = std::make_unsigned_t<Index>;
    const auto count = static_cast<wide>(static_cast<wide>(last) - static_cast<wide>(first));
    if (count > std::numeric_limits<std::size_t>::max())
        throw std::length_error("triad::thread_pool::parallel_for: the range is too large");
    auto body = [&](std::size_t i) {
        std::invoke(fn, static_cast<Index>(static_cast<wide>(first) + static_cast<wide>(i)));
    };
    run_bulk(static_cast<std::size_t>(count), options, body);
}

} // namespace triad
