#pragma once

#include <array>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <functional>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <triad/detail/async_core.hpp>
#include <triad/errors.hpp>
#include <triad/task.hpp>

namespace triad {

namespace detail {

template <class T>
using value_or_monostate = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class T>
value_or_monostate<T> take_value(task<T>& t) {
    auto h = task_access::handle(t);
    if constexpr (std::is_void_v<T>) {
        h.promise().take();
        return {};
    } else {
        return h.promise().take();
    }
}

enum class join_mode {
    all,     // gather: the first failure cancels the others
    settled, // gather_settled: every child runs to its end
    any,     // when_any: the first to finish cancels the others
};

// The parent of a combinator awaits this: it starts the children (each with its own
// cancellation), and resumes the parent, by symmetric transfer from the last child's final
// suspension, once every child has finished. Cancelling the parent cancels every child.
// The first child is started by symmetric transfer and the others from resume()'s frame, one
// after the other (a start list, see async_core.hpp): never by a nested call, so a recursion
// through gather or when_any of any depth runs in constant stack.
class join_children {
public:
    static constexpr std::size_t none = static_cast<std::size_t>(-1);

    join_children(std::span<promise_base* const> children, join_mode mode) noexcept
        : m_children(children), m_mode(mode) {}
    join_children(const join_children&) = delete;
    join_children& operator=(const join_children&) = delete;

    bool await_ready() const noexcept { return m_children.empty(); }

    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> parent) {
        if (!m_wait.begin(parent, &on_cancel, this))
            return transfer(parent); // children never start; the frames go with the tasks
        m_remaining = m_children.size();
        const start_list* const base = tls_starts;
        m_starts.next = &start_next;
        m_starts.owner = this;
        m_starts.below = tls_starts;
        tls_starts = &m_starts;
        if (tls_resuming) {
            const std::coroutine_handle<> first = next_start(base); // the first child
            return transfer(first ? first : std::noop_coroutine());
        }
        // No resume() runs below (a coroutine of another kind, resumed by plain resume(),
        // awaits the combinator): start the children here. One of them may finish the last,
        // before this returns: the parent is then resumed below, not by child_done.
        m_starting = true;
        resume_above(nullptr, base);
        m_starting = false;
        if (m_remaining != 0)
            return std::noop_coroutine();
        m_wait.end();
        return transfer(parent);
    }

    void await_resume() { m_wait.throw_if_cancelled(); }

    std::size_t first_failure() const noexcept { return m_first_failure; }
    std::size_t winner() const noexcept { return m_winner; }

private:
    bool stopped() const noexcept {
        return (m_mode == join_mode::all && m_first_failure != none) ||
               (m_mode == join_mode::any && m_winner != none);
    }

    void cancel_unfinished() noexcept {
        for (promise_base* child : m_children)
            if (!child->finished())
                child->m_own_cancel.request();
    }

    // The start list's next(): the next child to start, skipping those that must not start.
    static std::coroutine_handle<> start_next(start_list* list) noexcept {
        auto* self = static_cast<join_children*>(list->owner);
        while (self->m_next < self->m_children.size()) {
            const std::size_t i = self->m_next++;
            if (self->m_next == self->m_children.size())
                tls_starts = list->below; // the last child: the list is done
            promise_base& child = *self->m_children[i];
            child.m_on_done = &child_done;
            child.m_owner = self;
            child.m_owner_index = i;
            if (self->stopped()) { // a failure or a winner: the rest never start
                child.error() = std::make_exception_ptr(task_cancelled());
                --self->m_remaining;
                continue;
            }
            return child.m_self; // runs until its first suspension point
        }
        return self->all_done();
    }

    static std::coroutine_handle<> child_done(promise_base& child) noexcept {
        auto* self = static_cast<join_children*>(child.m_owner);
        --self->m_remaining;
        const std::size_t i = child.m_owner_index;
        if (self->m_mode == join_mode::all && child.failed() && self->m_first_failure == none) {
            self->m_first_failure = i;
            self->cancel_unfinished();
        } else if (self->m_mode == join_mode::any && self->m_winner == none) {
            self->m_winner = i;
            self->cancel_unfinished();
        }
        const std::coroutine_handle<> parent = self->all_done();
        return parent ? parent : std::noop_coroutine();
    }

    // The parent, once no child is left running or to start (and none is being started by
    // await_suspend itself); else null.
    std::coroutine_handle<> all_done() noexcept {
        if (m_remaining != 0 || m_starting)
            return nullptr;
        m_wait.end();
        return m_wait.waiter();
    }

    static void on_cancel(void* context) noexcept {
        static_cast<join_children*>(context)->cancel_unfinished();
    }

    std::span<promise_base* const> m_children;
    join_mode m_mode;
    cancellable_wait m_wait;
    start_list m_starts;
    std::size_t m_next = 0; // the next child to start
    std::size_t m_remaining = 0;
    std::size_t m_first_failure = none;
    std::size_t m_winner = none;
    bool m_starting = false;
};

template <class T>
promise_base* promise_of(task<T>& t) {
    if (!t.valid())
        throw future_error("triad: a combinator was given an empty task");
    return &task_access::handle(t).promise();
}

[[noreturn]] inline void rethrow_child(promise_base& child) {
    std::rethrow_exception(std::exchange(child.error(), nullptr));
}

} // namespace detail

/**
 * A task's outcome, kept instead of thrown (what `gather_settled` returns per task, like
 * asyncio's `return_exceptions=True`).
 */
template <class T>
class outcome {
public:
    explicit outcome(T value) : m_value(std::move(value)) {}
    explicit outcome(std::exception_ptr error) : m_error(std::move(error)) {}
    bool has_value() const noexcept { return !m_error; }
    explicit operator bool() const noexcept { return has_value(); }
    /** The value, or rethrows the exception. */
    T& value() & {
        if (m_error)
            std::rethrow_exception(m_error);
        return *m_value;
    }
    T&& value() && { return std::move(value()); }
    /** The exception, or null. */
    const std::exception_ptr& error() const noexcept { return m_error; }

private:
    std::optional<T> m_value;
    std::exception_ptr m_error;
};

template <>
class outcome<void> {
public:
    outcome() = default;
    explicit outcome(std::exception_ptr error) : m_error(std::move(error)) {}
    bool has_value() const noexcept { return !m_error; }
    explicit operator bool() const noexcept { return has_value(); }
    void value() const {
        if (m_error)
            std::rethrow_exception(m_error);
    }
    const std::exception_ptr& error() const noexcept { return m_error; }

private:
    std::exception_ptr m_error;
};

namespace detail {
template <class T>
outcome<T> take_outcome(task<T>& t) {
    auto& p = task_access::handle(t).promise();
    if (p.failed())
        return outcome<T>(std::exchange(p.error(), nullptr));
    if constexpr (std::is_void_v<T>) {
        return outcome<void>();
    } else {
        return outcome<T>(p.take());
    }
}
} // namespace detail

/**
 * Runs the tasks concurrently and returns their results in argument order (void results as
 * `std::monostate`), like `asyncio.gather`. The first exception cancels the other tasks and is
 * rethrown once they have all finished; cancelling the gather cancels them all.
 *
 * @code
 * auto [page, rows] = co_await triad::gather(fetch(url), query(sql));
 * @endcode
 */
template <class... T>
task<std::tuple<detail::value_or_monostate<T>...>> gather(task<T>... tasks) {
    const std::array<detail::promise_base*, sizeof...(T)> children{detail::promise_of(tasks)...};
    detail::join_children join(children, detail::join_mode::all);
    co_await join;
    if (join.first_failure() != detail::join_children::none)
        detail::rethrow_child(*children[join.first_failure()]);
    co_return std::tuple<detail::value_or_monostate<T>...>(detail::take_value(tasks)...);
}

/** `gather` over a vector of tasks: a vector of results in the same order. */
template <class T>
task<std::vector<detail::value_or_monostate<T>>> gather(std::vector<task<T>> tasks) {
    std::vector<detail::promise_base*> children;
    children.reserve(tasks.size());
    for (task<T>& t : tasks)
        children.push_back(detail::promise_of(t));
    detail::join_children join(children, detail::join_mode::all);
    co_await join;
    if (join.first_failure() != detail::join_children::none)
        detail::rethrow_child(*children[join.first_failure()]);
    std::vector<detail::value_or_monostate<T>> results;
    results.reserve(tasks.size());
    for (task<T>& t : tasks)
        results.push_back(detail::take_value(t));
    co_return results;
}

/**
 * Runs the tasks concurrently to their ends and returns each one's `outcome` (value or
 * exception) in argument order; it never throws for them (`return_exceptions=True`).
 */
template <class... T>
task<std::tuple<outcome<T>...>> gather_settled(task<T>... tasks) {
    const std::array<detail::promise_base*, sizeof...(T)> children{detail::promise_of(tasks)...};
    detail::join_children join(children, detail::join_mode::settled);
    co_await join;
    co_return std::tuple<outcome<T>...>(detail::take_outcome(tasks)...);
}

/** `gather_settled` over a vector of tasks. */
template <class T>
task<std::vector<outcome<T>>> gather_settled(std::vector<task<T>> tasks) {
    std::vector<detail::promise_base*> children;
    children.reserve(tasks.size());
    for (task<T>& t : tasks)
        children.push_back(detail::promise_of(t));
    detail::join_children join(children, detail::join_mode::settled);
    co_await join;
    std::vector<outcome<T>> results;
    results.reserve(tasks.size());
    for (task<T>& t : tasks)
        results.push_back(detail::take_outcome(t));
    co_return results;
}

namespace detail {
template <std::size_t I, class Variant, class Tasks>
void take_winner(std::size_t winner, Variant& out, Tasks& tasks) {
    if constexpr (I < std::tuple_size_v<Tasks>) {
        if (winner == I)
            out.template emplace<I>(take_value(std::get<I>(tasks)));
        else
            take_winner<I + 1>(winner, out, tasks);
    }
}
} // namespace detail

/**
 * Runs the tasks concurrently; the first to finish wins and the others are cancelled. Returns
 * the winner's index and result (rethrows if the winner failed), once the others have
 * finished.
 */
template <class... T>
task<std::pair<std::size_t, std::variant<detail::value_or_monostate<T>...>>>
when_any(task<T>... tasks) {
    static_assert(sizeof...(T) > 0, "triad::when_any needs at least one task");
    std::tuple<task<T>&...> refs(tasks...);
    const std::array<detail::promise_base*, sizeof...(T)> children{detail::promise_of(tasks)...};
    detail::join_children join(children, detail::join_mode::any);
    co_await join;
    const std::size_t winner = join.winner();
    if (children[winner]->failed())
        detail::rethrow_child(*children[winner]);
    std::variant<detail::value_or_monostate<T>...> value;
    detail::take_winner<0>(winner, value, refs);
    co_return std::pair{winner, std::move(value)};
}

/** `when_any` over a vector of tasks; throws `std::invalid_argument` if it is empty. */
template <class T>
task<std::pair<std::size_t, detail::value_or_monostate<T>>> when_any(std::vector<task<T>> tasks) {
    if (tasks.empty())
        throw std::invalid_argument("triad::when_any: no tasks");
    std::vector<detail::promise_base*> children;
    children.reserve(tasks.size());
    for (task<T>& t : tasks)
        children.push_back(detail::promise_of(t));
    detail::join_children join(children, detail::join_mode::any);
    co_await join;
    const std::size_t winner = join.winner();
    if (children[winner]->failed())
        detail::rethrow_child(*children[winner]);
    co_return std::pair{winner, detail::take_value(tasks[winner])};
}

// --- timeout -----------------------------------------------------------------------------------

namespace detail {

// One child raced against a deadline: when the deadline comes first the child is cancelled,
// and the wait goes on until it has finished (its cleanup included). The child is started by
// symmetric transfer and resumes the parent the same way when it finishes, also at once: a
// recursion through timeout of any depth runs in constant stack.
class timeout_join {
public:
    timeout_join(promise_base& child, std::chrono::steady_clock::time_point deadline) noexcept
        : m_child(child) {
        m_timer.deadline = deadline;
    }
    timeout_join(const timeout_join&) = delete;
    timeout_join& operator=(const timeout_join&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> parent) {
        m_loop = &current_loop("triad::timeout");
        m_timer.fire = &on_deadline;
        m_timer.context = this;
        m_loop->add_timer(&m_timer); // may throw: before anything needs undoing
        if (!m_wait.begin(parent, &on_cancel, this)) {
            m_loop->remove_timer(&m_timer);
            return transfer(parent); // the child never starts; await_resume throws
        }
        m_child.m_on_done = &child_done;
        m_child.m_owner = this;
        return transfer(m_child.m_self);
    }
    void await_resume() {
        if (!m_wait.cancelled())
            return;
        // The awaiting task was cancelled. Unless that ended the child (or it never started),
        // the child's value or own exception came first: it is delivered, and the cancellation
        // this wait consumed waits for the task's next suspension point.
        if (!m_child.finished() || is_cancellation(m_child.error()))
            throw task_cancelled();
        m_wait.request_again();
    }
    bool timed_out() const noexcept { return m_timed_out; }

private:
    static std::coroutine_handle<> child_done(promise_base& child) noexcept {
        auto* self = static_cast<timeout_join*>(child.m_owner);
        self->m_loop->remove_timer(&self->m_timer);
        self->m_wait.end();
        return self->m_wait.waiter();
    }
    static void on_deadline(void* context) noexcept {
        auto* self = static_cast<timeout_join*>(context);
        self->m_timed_out = true;
        self->m_child.m_own_cancel.request();
    }
    static void on_cancel(void* context) noexcept {
        static_cast<timeout_join*>(context)->m_child.m_own_cancel.request();
    }

    promise_base& m_child;
    timer_node m_timer;
    cancellable_wait m_wait;
    loop_core* m_loop = nullptr;
    bool m_timed_out = false;
};

// What co_await on an A gives.
template <class A>
decltype(auto) get_awaiter(A&& a) {
    if constexpr (requires { std::forward<A>(a).operator co_await(); })
        return std::forward<A>(a).operator co_await();
    else if constexpr (requires { operator co_await(std::forward<A>(a)); })
        return operator co_await(std::forward<A>(a));
    else
        return std::forward<A>(a);
}
template <class A>
using await_result_t = decltype(get_awaiter(std::declval<A>()).await_resume());

// Can `co_await std::forward<A>(a)` be written in a task?
template <class A>
concept awaitable = requires(A&& a) {
    get_awaiter(std::forward<A>(a)).await_ready();
    get_awaiter(std::forward<A>(a)).await_resume();
};

template <class T>
struct is_task : std::false_type {};
template <class T>
struct is_task<task<T>> : std::true_type {};
template <class T>
struct is_shared_future : std::false_type {};
template <class T>
struct is_shared_future<shared_future<T>> : std::true_type {};

// What timeout(d, awaitable) gives for an awaitable passed as A (a forwarding reference's
// type): a task holds values, so a const or rvalue reference result is copied or moved out,
// and a reference to a mutable object comes as std::reference_wrapper.
template <class R>
struct timeout_value {
    using type = R;
};
template <class R>
struct timeout_value<R&> {
    using type =
        std::conditional_t<std::is_const_v<R>, std::remove_const_t<R>, std::reference_wrapper<R>>;
};
template <class R>
struct timeout_value<R&&> {
    using type = std::remove_const_t<R>;
};
// Kept in place (by reference) are lvalues other than tasks (taken over) and shared futures
// (copied: a shared_future is a handle, and co_await copies it anyway).
template <class A>
inline constexpr bool timeout_in_place =
    std::is_lvalue_reference_v<A> && !is_task<std::remove_cvref_t<A>>::value &&
    !is_shared_future<std::remove_cvref_t<A>>::value;
// The form the awaitable is awaited in: in place (A&), or as the task's own copy (an rvalue).
template <class A>
using timeout_awaited_t = std::conditional_t<timeout_in_place<A>, A, std::remove_cvref_t<A>&&>;
template <class A, bool = awaitable<timeout_awaited_t<A>>>
struct timeout_result {
    using type = typename timeout_value<await_result_t<timeout_awaited_t<A>>>::type;
};
template <class A>
struct timeout_result<A, false> {
    using type = void; // not awaitable: the static_assert in timeout says so
};
template <class A>
using timeout_result_t = typename timeout_result<A>::type;

// The child of a timeout around something that is not a task: awaits it as its own copy, or in
// place (the caller's object, which must outlive the await).
template <class R, class A>
task<R> await_owned(A awaitable) {
    co_return co_await std::move(awaitable);
}
template <class R, class A>
task<R> await_in_place(A& awaitable) {
    co_return co_await awaitable;
}

template <class T, class Rep, class Period>
task<T> timeout_task(std::chrono::duration<Rep, Period> duration, task<T> inner) {
    timeout_join join(*promise_of(inner), deadline_after(duration));
    co_await join;
    auto& child = task_access::handle(inner).promise();
    if (join.timed_out() && is_cancellation(child.error()))
        throw timeout_error(
            concat("triad::timeout: the operation did not finish within ",
                   std::chrono::duration_cast<std::chrono::milliseconds>(duration).count(),
                   " ms and was cancelled"));
    if constexpr (std::is_void_v<T>)
        child.take();
    else
        co_return child.take();
}

} // namespace detail

/**
 * Awaits `awaitable` for at most `duration` (Python's `asyncio.wait_for`): past it, the wait is
 * cancelled — an Asio operation in flight included — and, once it has unwound, the returned
 * task throws `triad::timeout_error`. The clock starts when that task starts (it is lazy, like
 * every task). If the awaitable ends first, its value or exception is returned; so is a value
 * that arrived in the same turn as the deadline, or that the awaited code produced although it
 * was cancelled (it caught the cancellation, or its operation had completed).
 *
 * Anything a task can `co_await` is accepted: a `task` (or an lvalue task, which is taken over:
 * a task is awaited once), `triad::sleep`, a `future` or `shared_future`, a `task_handle`
 * (cancelled at the deadline, as awaiting a handle and being cancelled does), an Asio operation
 * with `triad::use_task`, and the waits of the primitives in `<triad/sync.hpp>`. An rvalue is
 * moved into the returned task. An lvalue is awaited in place, by reference, so a `future`
 * that times out is not consumed and can be awaited again; the object must then outlive the
 * returned task's await. It does when the call is awaited where it is made
 * (`co_await triad::timeout(1s, fut)`); a task kept for later or spawned must not outlive it
 * (pass `std::move(fut)` then). A `shared_future` lvalue is copied instead: it is a handle.
 * A task holds values, so a
 * reference result comes as a copy, or as `std::reference_wrapper` if it refers to a mutable
 * object. Something that is not awaitable is rejected at compile time.
 *
 * Cancelling the task awaiting the timeout cancels the awaitable and throws
 * `triad::task_cancelled`, unless the awaitable had already finished with its result: that is
 * delivered and the cancellation is seen at the next suspension point.
 *
 * @par Thread Safety
 * Loop thread only (a task of the loop awaits it).
 *
 * @code
 * std::size_t n = co_await triad::timeout(5s, socket.async_read_some(buffer, triad::use_task));
 * co_await triad::timeout(1s, ready.wait()); // a triad::event
 * int v = co_await triad::timeout(10s, fut); // fut stays valid if this throws timeout_error
 * @endcode
 */
template <class Rep, class Period, class Awaitable>
auto timeout(std::chrono::duration<Rep, Period> duration, Awaitable&& awaitable)
    -> task<detail::timeout_result_t<Awaitable>> {
    using plain = std::remove_cvref_t<Awaitable>;
    using result = detail::timeout_result_t<Awaitable>;
    constexpr bool awaitable_ok = detail::awaitable<detail::timeout_awaited_t<Awaitable>>;
    constexpr bool storable = detail::timeout_in_place<Awaitable> ||
                              detail::is_task<plain>::value ||
                              std::is_constructible_v<plain, Awaitable>;
    static_assert(awaitable_ok,
                  "triad::timeout: the second argument is not awaitable (pass a task, a future, "
                  "triad::sleep(...), an Asio operation with triad::use_task, or a wait of a "
                  "sync primitive; a task must not be const)");
    static_assert(!awaitable_ok || storable,
                  "triad::timeout: this awaitable cannot be moved into the task timeout returns; "
                  "pass it as an lvalue (it is then awaited in place, and must outlive that "
                  "task's await)");
    // Only what can be compiled is, so an assertion is the only error.
    if constexpr (awaitable_ok && storable) {
        if constexpr (detail::is_task<plain>::value)
            return detail::timeout_task(duration, std::move(awaitable)); // taken over
        else if constexpr (detail::timeout_in_place<Awaitable>)
            return detail::timeout_task(duration, detail::await_in_place<result>(awaitable));
        else
            return detail::timeout_task(
                duration, detail::await_owned<result, plain>(std::forward<Awaitable>(awaitable)));
    } else {
        return task<result>();
    }
}

// --- task groups -------------------------------------------------------------------------------

/**
 * Structured concurrency (Python's `asyncio.TaskGroup`): tasks spawned in a group are awaited
 * together with `co_await group.join()`; the first one to fail cancels the others, and `join`
 * rethrows that failure once all have finished. Cancelling the task that waits in `join`
 * cancels the group. A group destroyed with tasks still running cancels them (always join).
 *
 * @par Thread Safety
 * Loop thread only.
 *
 * @code
 * triad::task_group group;
 * for (auto& url : urls) group.spawn(fetch(url));
 * co_await group.join();
 * @endcode
 */
class task_group {
public:
    task_group() = default;
    task_group(const task_group&) = delete;
    task_group& operator=(const task_group&) = delete;
    ~task_group() {
        cancel();
        for (detail::promise_base* child : m_running) {
            child->m_group = nullptr;
            child->m_group_done = nullptr;
            detail::release_spawned(*child);
        }
        // A failure join() never rethrew is reported, once (its child left it to the group).
        if (m_error && !m_error_delivered) {
            if (detail::tls_loop != nullptr)
                detail::tls_loop->report_unhandled(m_error);
            else
                detail::report_to_stderr("triad: exception in a task group nobody joined", m_error);
        }
    }

    /** Starts `t` in the group; the handle gives its own result if you want it. */
    template <class T>
    task_handle<T> spawn(task<T> t) {
        task_handle<T> handle = triad::spawn(std::move(t));
        detail::promise_base& p = *handle_promise(handle);
        ++p.m_refs; // the group's own reference, dropped when the child finishes
        p.m_group = this;
        p.m_group_done = &child_done;
        p.m_owner_index = m_running.size();
        m_running.push_back(&p);
        if (m_error)
            p.m_own_cancel.request(); // a sibling already failed
        return handle;
    }

    /** Cancels every task of the group still running. */
    void cancel() noexcept {
        for (detail::promise_base* child : m_running)
            child->m_own_cancel.request();
    }

    /** Tasks of the group still running. */
    std::size_t running() const noexcept { return m_running.size(); }

    /** Waits for every task; rethrows the first failure (after all finished). */
    task<void> join() {
        while (!m_running.empty())
            co_await join_awaiter(*this);
        if (m_error) {
            m_error_delivered = true;
            std::rethrow_exception(m_error);
        }
    }

private:
    template <class T>
    static detail::promise_base* handle_promise(task_handle<T>& h) {
        return &h.m_handle.promise();
    }

    struct join_awaiter {
        explicit join_awaiter(task_group& g) noexcept : group(g) {}
        task_group& group;
        detail::cancellable_wait wait;
        bool await_ready() const noexcept { return group.m_running.empty(); }
        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> waiter) {
            if (!wait.begin(waiter, &on_cancel, this)) {
                group.cancel();
                return false;
            }
            group.m_waiter = this;
            return true;
        }
        void await_resume() {
            group.m_waiter = nullptr;
            wait.end();
            wait.throw_if_cancelled();
        }
        static void on_cancel(void* context) noexcept {
            // The waiter stays until the group has wound down; join then throws task_cancelled.
            static_cast<join_awaiter*>(context)->group.cancel();
        }
    };

    static void child_done(void* group, detail::promise_base& child) noexcept {
        auto* self = static_cast<task_group*>(group);
        const std::size_t i = child.m_owner_index;
        self->m_running[i] = self->m_running.back();
        self->m_running[i]->m_owner_index = i;
        self->m_running.pop_back();
        if (child.failed() && !self->m_error && !detail::is_cancellation(child.error())) {
            // The group rethrows it from join() (or reports it if never joined): the child's
            // handle must not report it a second time.
            self->m_error = child.error();
            child.m_failure_observed = true;
            self->cancel();
        }
        child.m_group = nullptr;
        child.m_group_done = nullptr;
        --child.m_refs; // the running reference outlives this call: never the last one
        if (self->m_running.empty() && self->m_waiter != nullptr)
            detail::tls_loop->schedule(self->m_waiter->wait.waiter());
    }

    std::vector<detail::promise_base*> m_running;
    std::exception_ptr m_error;
    bool m_error_delivered = false;
    join_awaiter* m_waiter = nullptr;
};

} // namespace triad
