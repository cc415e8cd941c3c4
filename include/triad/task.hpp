#pragma once

#include <algorithm>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <triad/cpu.hpp>
#include <triad/detail/async_core.hpp>
#include <triad/errors.hpp>
#include <triad/future.hpp>
#include <triad/thread_pool.hpp>

namespace triad {

/** How `triad::spawn` starts a task. */
struct spawn_options {
    /** Shown by `event_loop::tasks()` and in stall reports (asyncio's task name). */
    std::string name{};
};

template <class T = void>
class task;
template <class T>
class task_handle;
class task_group;
template <class T>
class as_completed_tasks;

namespace detail {
struct task_access;
} // namespace detail

/**
 * A lazy coroutine producing a `T` (Python's coroutine object): it starts when awaited or
 * spawned, and an exception it throws propagates to whoever awaits it. Awaiting a task is a
 * symmetric transfer, so chains of `co_await` of any depth do not grow the stack. Move-only;
 * await it once.
 *
 * @par Thread Safety
 * Tasks run on the thread of their event loop; a task object is used by one thread at a time.
 *
 * @code
 * triad::task<int> answer() { co_return 42; }
 * triad::task<int> twice() { co_return 2 * co_await answer(); }
 * int v = triad::run(twice()); // 84
 * @endcode
 */
template <class T>
class [[nodiscard]] task {
    static_assert(!std::is_reference_v<T>,
                  "triad::task<T&> is not supported: return a value, a pointer or a "
                  "std::reference_wrapper");

public:
    class promise_type : public detail::task_promise<T> {
    public:
        task get_return_object() noexcept {
            auto h = std::coroutine_handle<promise_type>::from_promise(*this);
            this->m_self = h;
            return task(h);
        }
    };
    using value_type = T;

    /** An empty task (`valid() == false`), as left by a move. */
    task() noexcept = default;
    task(task&& other) noexcept : m_handle(std::exchange(other.m_handle, nullptr)) {}
    task& operator=(task&& other) noexcept {
        if (this != &other) {
            reset();
            m_handle = std::exchange(other.m_handle, nullptr);
        }
        return *this;
    }
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    ~task() { reset(); }

    /** True until the task was moved from or awaited. */
    bool valid() const noexcept { return static_cast<bool>(m_handle); }

    class awaiter {
    public:
        explicit awaiter(task& owner) noexcept : m_owner(owner) {}
        bool await_ready() const noexcept { return false; }
        // A coroutine_handle for one of ours, a bool for a coroutine of another kind.
        template <class Promise>
        auto await_suspend(std::coroutine_handle<Promise> parent) noexcept {
            auto& child = m_owner.m_handle.promise();
            if constexpr (detail::is_task_promise<Promise>) {
                child.m_continuation = parent;
                child.m_cancel = detail::cancellation_of(parent);
                return detail::transfer(m_owner.m_handle);
            } else {
                // Awaited by a coroutine of another kind (see detail::is_task_promise): the
                // child runs to its first suspension here, and the awaiting coroutine goes on
                // at once, without suspending, if it finished.
                child.m_continuation = std::noop_coroutine();
                detail::resume(m_owner.m_handle);
                if (child.finished())
                    return false;
                child.m_continuation = parent;
                return true;
            }
        }
        T await_resume() {
            // The frame goes as soon as its result is out: a task is awaited once.
            struct release {
                task& owner;
                ~release() { owner.reset(); }
            } done{m_owner};
            return m_owner.m_handle.promise().take();
        }

    private:
        task& m_owner;
    };

    /** Runs the task to its end (started now) and gives its value or rethrows. */
    awaiter operator co_await() & {
        require_valid();
        return awaiter(*this);
    }
    awaiter operator co_await() && {
        require_valid();
        return awaiter(*this);
    }

private:
    template <class U>
    friend class task_handle;
    friend struct detail::task_access;

    explicit task(std::coroutine_handle<promise_type> h) noexcept : m_handle(h) {}

    void require_valid() const {
        if (!m_handle)
            throw future_error("triad::task: awaiting an empty task (moved from, or awaited "
                               "already)");
    }
    void reset() noexcept {
        if (m_handle)
            std::exchange(m_handle, nullptr).destroy();
    }
    std::coroutine_handle<promise_type> release() noexcept {
        return std::exchange(m_handle, nullptr);
    }

    std::coroutine_handle<promise_type> m_handle;
};

namespace detail {

struct task_access {
    template <class T>
    static std::coroutine_handle<typename task<T>::promise_type> release(task<T>& t) noexcept {
        return t.release();
    }
    template <class T>
    static std::coroutine_handle<typename task<T>::promise_type> handle(task<T>& t) noexcept {
        return t.m_handle;
    }
};

inline bool is_cancellation(const std::exception_ptr& error) noexcept {
    if (!error)
        return false;
    try {
        std::rethrow_exception(error);
    } catch (const task_cancelled&) {
        return true;
    } catch (...) {
        return false;
    }
}

// Drops one reference to a spawned task's frame; the last one reports an exception nobody
// took and frees the frame.
inline void release_spawned(promise_base& p) noexcept {
    if (--p.m_refs != 0)
        return;
    if (p.m_held && p.m_loop != nullptr)
        p.m_loop->unhold(&p);
    if (p.failed() && !p.m_result_taken && !p.m_failure_observed && !is_cancellation(p.error())) {
        // Also when the last handle goes after the loop returned: reported, never lost.
        loop_core* loop = p.m_loop != nullptr ? p.m_loop : tls_loop;
        if (loop != nullptr)
            loop->report_unhandled(p.error());
        else
            report_to_stderr("triad: exception in a spawned task that nobody awaited", p.error());
    }
    p.m_self.destroy();
}

inline std::coroutine_handle<> spawned_done(promise_base& p) noexcept {
    loop_core& loop = *tls_loop;
    loop.untrack(&p);
    if (p.m_owner != nullptr) {
        auto* group = static_cast<spawn_group*>(p.m_owner);
        group->child_done(group, p);
    }
    promise_base::joiner* j = p.m_joiners;
    p.m_loop = &loop; // the joiners' place, from now on
    while (j != nullptr) {
        promise_base::joiner* next = j->next; // the joiner lives in a frame about to resume
        if (j->notify != nullptr)
            j->notify(j);
        else
            loop.schedule(j->waiter);
        j = next;
    }
    if (p.m_refs > 1 && p.failed() && !p.m_failure_observed && !is_cancellation(p.error())) {
        try {
            loop.hold(&p);
        } catch (...) {
            p.m_loop = nullptr; // no room to list it: reported to stderr if it outlives the loop
        }
    }
    release_spawned(p); // the running task's reference
    return std::noop_coroutine();
}

// Takes a joiner that is still waiting off a spawned task's list (its watcher goes away first).
inline void unlink_joiner(promise_base& p, promise_base::joiner* j) noexcept {
    for (promise_base::joiner** link = &p.m_joiners; *link != nullptr; link = &(*link)->next)
        if (*link == j) {
            *link = j->next;
            return;
        }
}

// Starts a task as an independent root: its own cancellation, scheduled on the loop.
// If either list cannot grow (std::bad_alloc), the task stays with `t` and on no list, so
// run() does not wait for a task that never runs.
template <class T>
std::coroutine_handle<typename task<T>::promise_type> start_spawned(task<T>& t, loop_core& loop) {
    auto h = task_access::handle(t);
    promise_base& p = h.promise();
    loop.track(&p);
    try {
        loop.schedule(h);
    } catch (...) {
        loop.untrack(&p);
        throw;
    }
    p.m_refs = 1; // running
    p.m_on_done = &spawned_done;
    return task_access::release(t);
}

} // namespace detail

/**
 * A task started with `triad::spawn` (Python's `asyncio.Task`): await it for its result, poll
 * it, cancel it. Dropping the handle does not stop the task; an exception it ends with that
 * nobody retrieves is reported to the loop's `on_unhandled` (default: stderr), never lost.
 *
 * @par Thread Safety
 * Loop thread only.
 */
template <class T>
class [[nodiscard]] task_handle {
public:
    using value_type = T;

    task_handle() noexcept = default;
    task_handle(task_handle&& other) noexcept : m_handle(std::exchange(other.m_handle, nullptr)) {}
    task_handle& operator=(task_handle&& other) noexcept {
        if (this != &other) {
            reset();
            m_handle = std::exchange(other.m_handle, nullptr);
        }
        return *this;
    }
    task_handle(const task_handle&) = delete;
    task_handle& operator=(const task_handle&) = delete;
    ~task_handle() { reset(); }

    bool valid() const noexcept { return static_cast<bool>(m_handle); }
    /** True once the task has finished (returned, thrown or been cancelled). */
    bool done() const noexcept { return m_handle && m_handle.promise().finished(); }

    /**
     * Asks the task to stop: its current suspension point (or the next) throws
     * `triad::task_cancelled`; its cleanup still runs. Await it to know when it is done.
     */
    void cancel() noexcept {
        if (m_handle && !done())
            m_handle.promise().m_own_cancel.request();
    }

    /** The finished task's value (or its exception). Throws `future_error` if not finished. */
    T result() {
        if (!done())
            throw future_error("triad::task_handle::result: the task has not finished");
        return take();
    }

    class awaiter {
    public:
        explicit awaiter(task_handle& owner) noexcept : m_owner(owner) {}
        bool await_ready() const noexcept { return m_owner.done(); }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> waiter) {
            auto& p = m_owner.m_handle.promise();
            m_joiner.waiter = waiter;
            m_joiner.next = p.m_joiners;
            p.m_joiners = &m_joiner;
            // Cancelling the awaiting coroutine cancels the task it awaits (as asyncio does);
            // the awaiter then still waits for that task to finish, also when the
            // cancellation was already pending here.
            static constexpr detail::wait_kind kind{&on_cancel, "a spawned task (task_handle)"};
            if (!m_wait.begin(waiter, kind, this)) {
                m_cancelled_before = true;
                p.m_own_cancel.request();
            }
            return true;
        }
        T await_resume() {
            m_wait.end();
            // A cancellation that came after the task finished, while this waiter was only
            // scheduled, was consumed by the wait: it is requested again below.
            if (!m_cancelled_before && !m_wait.cancelled())
                return m_owner.take();
            // The task finished although cancelled: its result is delivered, and the
            // cancellation consumed here waits for the awaiting task's next suspension point.
            // (If it ended by the cancellation, take() rethrows that instead.)
            if constexpr (std::is_void_v<T>) {
                m_owner.take();
                m_wait.request_again();
            } else {
                T value = m_owner.take();
                m_wait.request_again();
                return value;
            }
        }

    private:
        static void on_cancel(void* context) noexcept {
            auto* self = static_cast<awaiter*>(context);
            self->m_owner.m_handle.promise().m_own_cancel.request();
        }
        task_handle& m_owner;
        detail::promise_base::joiner m_joiner;
        detail::cancellable_wait m_wait;
        bool m_cancelled_before = false;
    };

    /** Waits for the task and gives its value or rethrows; a second await throws `future_error`. */
    awaiter operator co_await() {
        if (!m_handle)
            throw future_error("triad::task_handle: awaiting an empty handle");
        return awaiter(*this);
    }

private:
    template <class U>
    friend task_handle<U> spawn(task<U> t, spawn_options options);
    template <class U>
    friend task_handle<U> spawn(task<U> t);
    friend class task_group;
    template <class U>
    friend class as_completed_tasks;
    explicit task_handle(std::coroutine_handle<typename task<T>::promise_type> h) noexcept
        : m_handle(h) {
        ++m_handle.promise().m_refs;
    }

    T take() {
        auto& p = m_handle.promise();
        if (p.m_result_taken)
            throw future_error("triad::task_handle: the result was already taken");
        p.m_result_taken = true;
        return p.take();
    }

    void reset() noexcept {
        if (m_handle)
            detail::release_spawned(std::exchange(m_handle, nullptr).promise());
    }

    std::coroutine_handle<typename task<T>::promise_type> m_handle;
};

/**
 * Starts `t` now on the running loop, concurrently with the caller (Python's `create_task`).
 * Throws `std::logic_error` when no loop runs on this thread.
 */
template <class T>
task_handle<T> spawn(task<T> t, spawn_options options) {
    if (!t.valid())
        throw future_error("triad::spawn: the task is empty");
    detail::loop_core& loop = detail::current_loop("triad::spawn");
    if (!options.name.empty())
        loop.set_name(&detail::task_access::handle(t).promise(), std::move(options.name));
    return task_handle<T>(detail::start_spawned(t, loop));
}

/** The same, with no options (and nothing to build and destroy for them on each spawn). */
template <class T>
task_handle<T> spawn(task<T> t) {
    if (!t.valid())
        throw future_error("triad::spawn: the task is empty");
    return task_handle<T>(detail::start_spawned(t, detail::current_loop("triad::spawn")));
}

/**
 * Turns a callable that returns a task (typically a lambda) into a task that owns it.
 *
 * A lambda coroutine reads its captures through the lambda object; a lambda temporary dies at
 * the end of its statement, so `spawn([&] () -> task<void> { ... }())` would run with its
 * captures gone. `spawn(make_task([&] () -> task<void> { ... }))` keeps the lambda alive for as
 * long as the task runs.
 */
template <class Fn>
auto make_task(Fn callable) -> std::invoke_result_t<Fn&> {
    using result = std::invoke_result_t<Fn&>;
    if constexpr (std::is_void_v<typename result::value_type>)
        co_await callable();
    else
        co_return co_await callable();
}

/** A live task of an event loop, as `event_loop::tasks()` lists it (`asyncio.all_tasks()`). */
struct task_info {
    /** The name given at spawn (`spawn_options::name`), or `task@<address>`. */
    std::string name;
    /**
     * What it is suspended on: the triad wait it is in (`triad::sleep`, `triad::event::wait`,
     * `triad::channel::receive`, `triad::use_task`, `triad::gather`, `triad::timeout`,
     * `triad::task_group join`, a future, a spawned task...; for a combinator, the combinator,
     * not what its children wait on), "running or ready" when it is not suspended, or "an
     * awaitable triad does not know (not cancellable)" for an awaitable of your own. Called
     * from a task that was not resumed from the loop's queue (by an Asio handler) or while a
     * task it awaits is queued, the last two cannot always be told apart and are listed as
     * "running or ready, or an awaitable triad does not know (not cancellable)".
     */
    std::string waiting_on;
};

/** What `event_loop_options::on_stall` receives. */
struct stall_report {
    /** How long nothing could wake any task. */
    std::chrono::steady_clock::duration idle{};
    /** Every live task, the loop's main task first. */
    std::vector<task_info> tasks;
    /** The report as lines of text, as the default handler prints it. */
    std::string text() const {
        std::string out = detail::concat(
            "triad::event_loop: for ",
            std::chrono::duration_cast<std::chrono::milliseconds>(idle).count(),
            " ms nothing could wake a task (no timer, I/O operation or awaited future is "
            "pending; only another thread posting to the loop could). Live tasks:\n");
        for (const task_info& t : tasks)
            out += detail::concat("  ", t.name, ": waiting on ", t.waiting_on, "\n");
        return out;
    }
};

/** How a `triad::event_loop` is built. */
struct event_loop_options {
    /**
     * Receives every exception that ends a spawned task nobody awaited (asyncio's "Task
     * exception was never retrieved"), and every exception thrown by work posted to the loop
     * after a first one (which ends `run`, and `run` rethrows). Unset: type and message on
     * stderr.
     */
    std::function<void(std::exception_ptr)> on_unhandled{};
    /**
     * After this long with no ready task and nothing registered that could wake one (no timer,
     * I/O operation or awaited future), `on_stall` is called; again after twice as long, and so
     * on. Zero: never.
     */
    std::chrono::steady_clock::duration stall_timeout = std::chrono::seconds(5);
    /**
     * Receives the stall report, on the loop's thread; it may wake tasks (set an event,
     * cancel a handle). The loop keeps waiting either way: another thread may still post to it,
     * so a stall is never treated as an error (an exception from `on_stall` is written to
     * stderr and ignored). Unset: the report's text on stderr.
     */
    std::function<void(const stall_report&)> on_stall{};
};

/**
 * An event loop on the calling thread, built on Boost.Asio's `io_context`: every Asio socket,
 * timer and resolver made with `executor()` works with its tasks (see `triad::use_task`).
 * `run(main)` runs until `main` finishes, then cancels the tasks still running and lets them
 * finish, as `asyncio.run` does; whatever ends `run` (an exception escaping work posted to the
 * loop included), every task has ended before it returns.
 *
 * A blocking wait on a future inside the loop's thread would stall every task, so it throws
 * `std::logic_error`: `co_await` the future instead. Tasks waiting for something that nothing
 * registered can bring about (an event nobody sets) are not an error, since another thread may
 * still post to the loop; after `stall_timeout` the loop reports them (`on_stall`, default
 * stderr) with their names and what each waits on, and keeps waiting.
 *
 * @par Thread Safety
 * `run` and `tasks` on one thread; `post`, `spawn_threadsafe` and `executor()` from any thread.
 */
class event_loop {
public:
    explicit event_loop(event_loop_options options = {})
        : event_loop(nullptr, std::move(options)) {}
    /**
     * A loop on the user's `io_context`, to join an existing Asio program: `run` runs that
     * context (its other handlers included) on the calling thread. No other thread may run the
     * context while `run` does.
     */
    explicit event_loop(boost::asio::io_context& io, event_loop_options options = {})
        : event_loop(&io, std::move(options)) {}
    event_loop(const event_loop&) = delete;
    event_loop& operator=(const event_loop&) = delete;

    /** Runs `main` to its end and returns its value or rethrows. Not re-entrant. */
    template <class T>
    T run(task<T> main);

    /**
     * Runs `fn()` on the loop's thread; callable from any thread, also while `run` waits with
     * nothing else to do. A loop is thereby an executor for `future::then(loop, fn)`. Work posted
     * to a loop that never runs again is destroyed unrun with the loop. An exception escaping
     * `fn` ends `run` (after every task has ended) and is rethrown there.
     */
    template <class Fn>
    void post(Fn&& fn) {
        // Gated: the loop's destructor lets Asio's own work run out, and must not run this.
        boost::asio::post(m_core->io(),
                          [gate = m_core->gate(), fn = std::forward<Fn>(fn)]() mutable {
                              if (gate->open())
                                  fn();
                          });
    }

    /**
     * Starts `t` on this loop from any thread (Python's `asyncio.run_coroutine_threadsafe`):
     * the future gives its value or exception (`task_cancelled` if it was cancelled). It starts
     * when the loop next runs (also when a user's io_context, run outside `run`, takes it off
     * the queue first); a loop destroyed before that breaks the future
     * (`triad::broken_promise`). Throws `future_error` for an empty task.
     */
    template <class T>
    future<T> spawn_threadsafe(task<T> t, spawn_options options = {});

    /**
     * Every live task of this loop, spawned ones and `run`'s main, with its name and what it is
     * suspended on. Loop thread only (from a task, or `on_stall`).
     */
    std::vector<task_info> tasks() const;

    /** The Asio executor of this loop, for I/O objects and `boost::asio::post`. */
    boost::asio::io_context::executor_type executor() noexcept {
        return m_core->io().get_executor();
    }
    /** The underlying `io_context`. */
    boost::asio::io_context& context() noexcept { return m_core->io(); }

private:
    event_loop(boost::asio::io_context* io, event_loop_options options)
        : m_core(std::make_shared<detail::loop_core>(io, std::move(options.on_unhandled))) {
        detail::loop_core* core = m_core.get();
        auto report = std::move(options.on_stall);
        m_core->set_stall_report(
            options.stall_timeout,
            [core, report = std::move(report)](std::chrono::steady_clock::duration idle) {
                stall_report r{idle, list_tasks(*core)};
                if (report)
                    report(r);
                else
                    std::fputs(r.text().c_str(), stderr);
            });
    }

    static std::vector<task_info> list_tasks(const detail::loop_core& core);

    std::shared_ptr<detail::loop_core> m_core;
};

inline std::vector<task_info> event_loop::list_tasks(const detail::loop_core& core) {
    // A task that no cancellable wait holds is either ready (or running), or suspended on an
    // awaitable triad does not know. Ready means its frame, or the frame of a task it awaits, is
    // in the loop's queue; only its own frame can be recognised there, since nothing leads from
    // a task to the frame it awaits. So the answer is sure only when every queued frame is a
    // live spawned task's own, and the task running now (if this is called from one) was
    // resumed from the queue: a chain the loop resumes from a task's own frame stays that
    // task's until the task finishes (handing over to another task's frame means finishing).
    std::vector<const void*> own_frames;
    own_frames.reserve(core.spawned().size());
    for (const detail::promise_base* p : core.spawned())
        own_frames.push_back(p->m_self.address());
    std::sort(own_frames.begin(), own_frames.end());
    const auto is_own_frame = [&](std::coroutine_handle<> h) {
        return std::binary_search(own_frames.begin(), own_frames.end(),
                                  static_cast<const void*>(h.address()));
    };
    const bool attributable =
        std::all_of(core.ready().begin(), core.ready().end(), is_own_frame) &&
        std::all_of(core.running().begin(), core.running().end(), is_own_frame) &&
        (!detail::tls_resuming || !core.running().empty());
    const auto queued = [&](const detail::promise_base* p) {
        const auto in = [p](const std::vector<std::coroutine_handle<>>& frames) {
            return std::find(frames.begin(), frames.end(), p->m_self) != frames.end();
        };
        return in(core.ready()) || in(core.running());
    };

    std::vector<task_info> out;
    out.reserve(core.spawned().size());
    for (const detail::promise_base* p : core.spawned()) {
        task_info info;
        if (const std::string* name = core.name_of(p))
            info.name = *name;
        else {
            char address[32];
            std::snprintf(address, sizeof address, "task@%p", static_cast<const void*>(p));
            info.name = address;
        }
        const detail::cancellable_wait* armed = p->m_own_cancel.armed();
        const char* what = armed != nullptr ? armed->what() : nullptr;
        info.waiting_on = what != nullptr    ? what
                          : armed != nullptr ? "a suspension point"
                          : queued(p)        ? "running or ready"
                          : attributable     ? "an awaitable triad does not know (not cancellable)"
                                             : "running or ready, or an awaitable triad does not "
                                               "know (not cancellable)";
        out.push_back(std::move(info));
    }
    // run's main task is the oldest: list it first.
    std::stable_partition(out.begin(), out.end(),
                          [](const task_info& t) { return t.name == "main"; });
    return out;
}

inline std::vector<task_info> event_loop::tasks() const {
    if (detail::tls_loop != m_core.get())
        throw std::logic_error("triad::event_loop::tasks: call it on the loop's thread, while it "
                               "runs (from a task or on_stall)");
    return list_tasks(*m_core);
}

namespace detail {
// The promise of a spawn_threadsafe: a task cancelled before its first step (run winding down)
// never runs deliver_to's body, and its future then says task_cancelled, not broken_promise.
template <class T>
struct threadsafe_result {
    promise<T> out;
    bool delivered = false;
    explicit threadsafe_result(promise<T> p) : out(std::move(p)) {}
    threadsafe_result(threadsafe_result&& other) noexcept
        : out(std::move(other.out)), delivered(std::exchange(other.delivered, true)) {}
    threadsafe_result& operator=(threadsafe_result&&) = delete;
    ~threadsafe_result() {
        if (!delivered) {
            try {
                out.set_exception(std::make_exception_ptr(task_cancelled()));
            } catch (...) {
            }
        }
    }
};

template <class T>
task<void> deliver_to(task<T> t, threadsafe_result<T> result) {
    std::exception_ptr error;
    try {
        if constexpr (std::is_void_v<T>) {
            co_await std::move(t);
            result.out.set_value();
        } else {
            result.out.set_value(co_await std::move(t));
        }
    } catch (...) {
        error = std::current_exception();
    }
    // Handed over after the catch ended (see shared_state::set_error).
    if (error)
        result.out.set_exception(std::move(error));
    result.delivered = true;
}
} // namespace detail

namespace detail {
// What spawn_threadsafe posts. Run by the loop, it spawns the task; run by the loop's
// io_context outside run (a user's, between two runs), it waits for the loop's next run.
template <class T>
class threadsafe_start : public loop_core::deferred_work {
public:
    threadsafe_start(loop_core& loop, task<T> t, promise<T> out, spawn_options options)
        : m_loop(&loop), m_gate(loop.gate()), m_task(std::move(t)), m_out(std::move(out)),
          m_options(std::move(options)) {}
    threadsafe_start(threadsafe_start&&) noexcept = default;
    threadsafe_start& operator=(threadsafe_start&&) = delete;

    void operator()() {
        if (tls_loop == m_loop && m_gate->open()) {
            if (m_loop->cancelling_all()) {
                // run winds down: spawned, it would be cancelled at once; and a thread that
                // keeps starting tasks would keep run from ever ending.
                m_out.set_exception(std::make_exception_ptr(task_cancelled()));
                return;
            }
            (void)spawn(deliver_to(std::move(m_task), threadsafe_result<T>(std::move(m_out))),
                        std::move(m_options));
            return;
        }
        // Not the loop: kept for its next run, unless it is gone (the future is then broken).
        m_gate->if_open(
            [this] { m_loop->defer(std::make_unique<threadsafe_start>(std::move(*this))); });
    }
    void run() override { (*this)(); }

private:
    loop_core* m_loop;
    std::shared_ptr<loop_gate> m_gate;
    task<T> m_task;
    promise<T> m_out;
    spawn_options m_options;
};
} // namespace detail

template <class T>
future<T> event_loop::spawn_threadsafe(task<T> t, spawn_options options) {
    if (!t.valid())
        throw future_error("triad::event_loop::spawn_threadsafe: the task is empty");
    promise<T> out;
    future<T> result = out.get_future();
    post(detail::threadsafe_start<T>(*m_core, std::move(t), std::move(out), std::move(options)));
    return result;
}

template <class T>
T event_loop::run(task<T> main) {
    if (detail::tls_loop != nullptr)
        throw std::logic_error("triad::run: an event loop already runs on this thread; co_await "
                               "the task (or spawn it) instead");
    if (!main.valid())
        throw future_error("triad::run: the task is empty");
    struct scope {
        detail::loop_core* loop;
        detail::wait_helper* previous_helper = detail::tls_wait_helper;
        explicit scope(detail::loop_core* l) : loop(l) {
            detail::tls_loop = l;
            detail::tls_wait_helper = l;
        }
        ~scope() {
            detail::tls_loop = nullptr;
            detail::tls_wait_helper = previous_helper;
        }
    } running(m_core.get());

    detail::loop_core& loop = *m_core;
    task_handle<T> handle = spawn(std::move(main), {.name = "main"});
    loop.run_deferred();
    // Work posted to the loop may throw out of Asio's run: that ends run, but only once every
    // task has ended (their frames are never left suspended).
    std::exception_ptr escaped;
    const auto run_catching = [&](auto done) {
        for (;;) {
            std::exception_ptr error;
            try {
                loop.run_until(done);
                return;
            } catch (...) {
                error = std::current_exception();
            }
            // After the catch ended (see shared_state::set_error): on_unhandled may hand it on.
            if (!escaped) {
                escaped = std::move(error);
                loop.cancel_all_spawned(true);
            } else {
                loop.report_unhandled(std::move(error),
                                      "triad::event_loop: work posted to the loop threw after "
                                      "an earlier failure had ended run");
            }
        }
    };
    run_catching([&] { return handle.done(); });
    // Whatever is still running is cancelled and allowed to finish, as asyncio.run does. A
    // task spawned meanwhile (by a cleanup handler) is cancelled as well, or run would wait
    // for it for as long as it runs.
    loop.cancel_all_spawned(true);
    run_catching([&] { return loop.spawned().empty(); });
    loop.cancel_all_spawned(false);
    loop.disarm_if_idle();
    if (escaped)
        std::rethrow_exception(escaped);
    return handle.result();
}

/** `event_loop().run(main)`: Python's `asyncio.run`. */
template <class T>
T run(task<T> main, event_loop_options options = {}) {
    event_loop loop(std::move(options));
    return loop.run(std::move(main));
}

/** The executor of the loop running on this thread (for Asio I/O objects inside tasks). */
inline boost::asio::io_context::executor_type current_executor() {
    return detail::current_loop("triad::current_executor").io().get_executor();
}

// --- sleep -------------------------------------------------------------------------------------

namespace detail {

// The timer node is a base: a sleeping task carries no pointer back from it.
class sleep_awaiter : private timer_node {
public:
    explicit sleep_awaiter(std::chrono::steady_clock::time_point deadline) noexcept {
        this->deadline = deadline;
    }
    // Movable until awaited (timeout(d, sleep(...)) moves it into a task), as Asio's
    // operations are; a waiting one is never moved: its timer and callback point to it.
    sleep_awaiter(sleep_awaiter&& other) noexcept : timer_node() { deadline = other.deadline; }
    sleep_awaiter& operator=(const sleep_awaiter&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        m_loop = &current_loop("triad::sleep");
        static constexpr wait_kind kind{&on_cancel, "triad::sleep"};
        if (!m_wait.begin(h, kind, this))
            return false;
        if (deadline <= std::chrono::steady_clock::now()) {
            m_loop->schedule(h); // sleep(0) yields to the other ready tasks
        } else {
            fire = &on_fire;
            m_loop->add_timer(this);
        }
        return true;
    }
    void await_resume() {
        m_wait.end();
        m_wait.throw_if_cancelled();
    }

private:
    static void on_fire(timer_node* node) noexcept {
        auto* self = static_cast<sleep_awaiter*>(node);
        self->m_wait.end();
        self->m_loop->schedule(self->m_wait.waiter());
    }
    static void on_cancel(void* context) noexcept {
        auto* self = static_cast<sleep_awaiter*>(context);
        if (self->queued()) { // a yielding sleep is already scheduled
            self->m_loop->remove_timer(self);
            self->m_loop->schedule(self->m_wait.waiter());
        }
    }

    cancellable_wait m_wait;
    loop_core* m_loop = nullptr;
};

} // namespace detail

/**
 * Suspends the calling task for `duration` without blocking the loop (`asyncio.sleep`);
 * `sleep(0)` lets other ready tasks run. A cancellation point.
 */
template <class Rep, class Period>
detail::sleep_awaiter sleep(std::chrono::duration<Rep, Period> duration) {
    return detail::sleep_awaiter(detail::deadline_after(duration));
}

/** Suspends the calling task until `time`. */
template <class Clock, class Duration>
detail::sleep_awaiter sleep_until(std::chrono::time_point<Clock, Duration> time) {
    return detail::sleep_awaiter(detail::to_steady_deadline(time));
}

// --- awaiting futures of the pools -------------------------------------------------------------

namespace detail {

// Shared by the awaiting coroutine and the future's continuation, which runs on another thread
// and may outlive the wait (a cancelled wait) and even the loop.
struct future_bridge {
    std::coroutine_handle<> waiter;
    loop_core* loop = nullptr;
    bool abandoned = false; // loop thread only
    cancellable_wait* wait = nullptr;
};

// The continuation a wait registers on the future (or the shared future's hub): it hands the
// wake-up to the loop's thread. The state owns it until it runs; a cancelled wait takes it
// back, if it has not run, so that the future can be awaited again.
struct future_wakeup {
    hub_link link; // a shared future's list of continuations
    std::shared_ptr<loop_gate> gate;
    std::shared_ptr<future_bridge> bridge;

    static void fire(void* context) noexcept {
        // The producer's thread: hand over to the loop's thread, if the loop still exists.
        std::unique_ptr<future_wakeup> self(static_cast<future_wakeup*>(context));
        std::exception_ptr error;
        try {
            self->gate->post([gate = self->gate, bridge = std::move(self->bridge)] {
                if (!gate->open() || bridge->abandoned)
                    return;
                bridge->abandoned = true;
                bridge->wait->end();
                bridge->loop->end_foreign_wait();
                bridge->loop->schedule(bridge->waiter);
            });
        } catch (...) {
            error = std::current_exception();
        }
        if (error) // after the catch ended (see shared_state::set_error)
            report_unhandled("triad: co_await on a future could not wake its task", error);
    }
};

template <class T>
struct is_shared_future_type : std::false_type {};
template <class T>
struct is_shared_future_type<shared_future<T>> : std::true_type {};

template <class Future>
class future_awaiter {
public:
    explicit future_awaiter(Future future) : m_future(std::move(future)) {}
    future_awaiter(const future_awaiter&) = delete;
    future_awaiter& operator=(const future_awaiter&) = delete;

    bool await_ready() { return ref().ready(); }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        loop_core& loop = current_loop("triad: co_await on a future");
        auto bridge = std::make_shared<future_bridge>();
        auto wakeup = std::make_unique<future_wakeup>();
        wakeup->gate = loop.gate();
        wakeup->bridge = bridge;
        static constexpr wait_kind kind{&on_cancel, "a future"};
        if (!m_wait.begin(h, kind, this))
            return false;
        bridge->waiter = h;
        bridge->loop = &loop;
        bridge->wait = &m_wait;
        m_bridge = std::move(bridge);
        loop.begin_foreign_wait();
        bool registered = false;
        try {
            registered = register_wakeup(*wakeup);
        } catch (...) {
            loop.end_foreign_wait();
            m_wait.end();
            throw;
        }
        if (!registered) { // ready meanwhile: go on at once
            loop.end_foreign_wait();
            m_wait.end();
            return false;
        }
        m_wakeup = wakeup.release(); // the state's now; on_cancel may take it back
        return true;
    }
    decltype(auto) await_resume() {
        m_wait.throw_if_cancelled();
        return ref().get();
    }

private:
    static constexpr bool shared = is_shared_future_type<std::remove_pointer_t<Future>>::value;

    bool register_wakeup(future_wakeup& w) {
        if (!ref().valid())
            throw future_error("triad: co_await on a future with no state (default-constructed, "
                               "moved from, or already consumed by get())");
        if constexpr (shared) {
            w.link.fn = &future_wakeup::fire;
            w.link.context = &w;
            return shared_future_access::hub(ref())->add_continuation(w.link);
        } else {
            return future_access::state(ref())->try_set_continuation(&future_wakeup::fire, &w);
        }
    }
    // True if the wake-up will never run (it is the awaiter's again); false if it has run or
    // is running.
    bool take_back_wakeup() noexcept {
        if constexpr (shared)
            return shared_future_access::hub(ref())->remove_continuation(m_wakeup->link);
        else
            return future_access::state(ref())->try_clear_continuation();
    }

    static void on_cancel(void* context) noexcept {
        auto* self = static_cast<future_awaiter*>(context);
        // Stop waiting; the work goes on. The wake-up is taken back, so the future may be
        // awaited again (or, shared, does not keep one per abandoned wait until it is ready);
        // if it already ran, what it posted finds the bridge abandoned.
        self->m_bridge->abandoned = true;
        std::unique_ptr<future_wakeup> taken_back;
        if (self->take_back_wakeup())
            taken_back.reset(self->m_wakeup);
        self->m_wakeup = nullptr;
        self->m_bridge->loop->end_foreign_wait();
        self->m_bridge->loop->schedule(self->m_bridge->waiter);
    }
    auto& ref() {
        if constexpr (std::is_pointer_v<Future>)
            return *m_future;
        else
            return m_future;
    }

    Future m_future;
    cancellable_wait m_wait;
    std::shared_ptr<future_bridge> m_bridge;
    future_wakeup* m_wakeup = nullptr;
};

} // namespace detail

/**
 * `co_await fut` inside a task waits for a future of any triad pool without blocking the
 * loop's thread (the Python course's `loop.run_in_executor`). A cancellation point: cancelling
 * stops the wait, not the work.
 */
template <class T>
detail::future_awaiter<future<T>> operator co_await(future<T>&& f) {
    return detail::future_awaiter<future<T>>(std::move(f));
}
template <class T>
detail::future_awaiter<future<T>*> operator co_await(future<T>& f) {
    return detail::future_awaiter<future<T>*>(&f);
}
/** `co_await` on a `shared_future` yields a reference to the shared result. */
template <class T>
detail::future_awaiter<shared_future<T>> operator co_await(const shared_future<T>& f) {
    return detail::future_awaiter<shared_future<T>>(f);
}

/** The thread pool behind `to_thread`: min(32, cpu_count() + 4) threads, like Python's. */
inline thread_pool& default_thread_pool() {
    static thread_pool pool(thread_pool_options{
        .threads = std::min<std::size_t>(32, cpu_count() + 4), .name_prefix = "triad-io"});
    return pool;
}

namespace detail {
template <class T>
task<T> await_future(future<T> f) {
    co_return co_await std::move(f);
}
} // namespace detail

/**
 * Runs blocking `fn(args...)` on `default_thread_pool()` and returns a task that awaits it
 * (Python's `asyncio.to_thread`). The work is submitted at once; arguments are copied.
 */
template <class Fn, class... Args>
auto to_thread(Fn&& fn, Args&&... args)
    -> task<std::invoke_result_t<std::decay_t<Fn>, std::decay_t<Args>...>> {
    return detail::await_future(
        default_thread_pool().submit(std::forward<Fn>(fn), std::forward<Args>(args)...));
}

} // namespace triad
