#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
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
struct is_task : std::false_type {};
template <class T>
struct is_task<task<T>> : std::true_type {};

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

    // A coroutine_handle for one of ours, a bool for a coroutine of another kind.
    template <class Promise>
    auto await_suspend(std::coroutine_handle<Promise> parent) {
        check_task_count(m_children.size(), "triad: a combinator");
        if constexpr (is_task_promise<Promise>) {
            if (!m_wait.begin(parent, kind(), this))
                return transfer(parent); // children never start; the frames go with the tasks
            const start_list* const base = push_starts();
            if (tls_resuming) {
                const std::coroutine_handle<> first = next_start(base); // the first child
                return transfer(first ? first : std::noop_coroutine());
            }
            // No resume() runs below: start the children here.
            return start_here(base) ? std::noop_coroutine() : transfer(parent);
        } else {
            // A coroutine of another kind (see is_task_promise): it goes on at once, without
            // suspending, if the children finished here.
            if (!m_wait.begin(parent, kind(), this))
                return false;
            return start_here(push_starts());
        }
    }

    void await_resume() { m_wait.throw_if_cancelled(); }

    std::size_t first_failure() const noexcept { return m_first_failure; }
    std::size_t winner() const noexcept { return m_winner; }

private:
    // Pushes this combinator's start list; gives the one below.
    const start_list* push_starts() noexcept {
        m_remaining = m_children.size();
        m_starts.next = &start_next;
        m_starts.owner = this;
        m_starts.below = tls_starts;
        tls_starts = &m_starts;
        return m_starts.below;
    }

    // Starts the children in a resume() of their own; true if the parent has to wait for them.
    // One of them may finish the last before this returns: the parent then goes on from the
    // caller, not from child_done.
    bool start_here(const start_list* base) {
        m_starting = true;
        resume_above(nullptr, base);
        m_starting = false;
        if (m_remaining != 0)
            return true;
        m_wait.end();
        return false;
    }

    // What the awaiting task waits on, in the loop's list of tasks.
    const wait_kind& kind() const noexcept {
        static constexpr wait_kind all{&on_cancel, "triad::gather"};
        static constexpr wait_kind settled{&on_cancel, "triad::gather_settled"};
        static constexpr wait_kind any{&on_cancel, "triad::when_any"};
        switch (m_mode) {
        case join_mode::all:
            return all;
        case join_mode::settled:
            return settled;
        case join_mode::any:
            break;
        }
        return any;
    }

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
            child.m_owner_index = static_cast<std::uint32_t>(i);
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
    /** The value, or rethrows the exception (as `std::optional::value` does, for every
     * qualification: a `const` vector of outcomes is read the same way). */
    T& value() & {
        if (m_error)
            std::rethrow_exception(m_error);
        return *m_value;
    }
    const T& value() const& {
        if (m_error)
            std::rethrow_exception(m_error);
        return *m_value;
    }
    T&& value() && { return std::move(value()); }
    const T&& value() const&& { return std::move(value()); }
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

namespace detail {

template <class T>
struct is_task_handle : std::false_type {};
template <class T>
struct is_task_handle<task_handle<T>> : std::true_type {};

// A range whose elements the range combinators take: tasks, or handles of spawned tasks.
template <class R>
concept task_or_handle_range = std::ranges::input_range<R> &&
    (is_task<std::ranges::range_value_t<R>>::value ||
     is_task_handle<std::ranges::range_value_t<R>>::value);

template <class R>
using range_task_value_t = typename std::ranges::range_value_t<R>::value_type;

// A handle awaited as a task: cancelling it cancels the handle's task and waits for it.
template <class T>
task<T> await_handle(task_handle<T> handle) {
    if constexpr (std::is_void_v<T>)
        co_await handle;
    else
        co_return co_await handle;
}

// Moves the tasks (or handles, each turned into a task that awaits it) out of `range` into a
// vector; a vector given as an rvalue is taken whole.
template <class R>
std::vector<task<range_task_value_t<R>>> collect_tasks(R&& range, const char* who) {
    using T = range_task_value_t<R>;
    using element = std::ranges::range_value_t<R>;
    constexpr bool movable =
        !std::is_const_v<std::remove_reference_t<std::ranges::range_reference_t<R>>>;
    static_assert(movable, "triad: gather, gather_settled, when_any and as_completed move the "
                           "tasks out of the range they are given, so its elements must not be "
                           "const");
    if constexpr (!movable) {
        return {}; // explained by the assertion alone
    } else if constexpr (std::is_same_v<std::remove_cvref_t<R>, std::vector<task<T>>> &&
                         !std::is_lvalue_reference_v<R>) {
        return std::move(range);
    } else {
        std::vector<task<T>> tasks;
        if constexpr (std::ranges::sized_range<R>)
            tasks.reserve(static_cast<std::size_t>(std::ranges::size(range)));
        for (auto&& item : range) {
            if constexpr (is_task<element>::value) {
                tasks.push_back(std::move(item));
            } else {
                if (!item.valid())
                    throw future_error(concat(who, ": an empty task handle in the range"));
                tasks.push_back(await_handle(std::move(item)));
            }
        }
        return tasks;
    }
}

template <class T>
task<std::vector<value_or_monostate<T>>> gather_vector(std::vector<task<T>> tasks) {
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

} // namespace detail

/**
 * `gather` over a range: a vector of results in the range's order. The range holds tasks
 * (`std::vector`, `std::array`, `std::deque`, a view that makes them, ...), which are moved
 * out of it, or `task_handle`s of spawned tasks, which are taken over and awaited: the first
 * failure cancels the other handles' tasks too. A vector given as an rvalue is taken whole, at
 * no cost.
 *
 * @code
 * auto pages = co_await triad::gather(urls | std::views::transform(fetch)); // vector<page>
 * @endcode
 */
template <class R>
requires detail::task_or_handle_range<R>
auto gather(R&& tasks)
    -> task<std::vector<detail::value_or_monostate<detail::range_task_value_t<R>>>> {
    return detail::gather_vector(detail::collect_tasks(std::forward<R>(tasks), "triad::gather"));
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

namespace detail {
template <class T>
task<std::vector<outcome<T>>> gather_settled_vector(std::vector<task<T>> tasks) {
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
} // namespace detail

/** `gather_settled` over a range of tasks or task handles (taken as `gather` takes them). */
template <class R>
requires detail::task_or_handle_range<R>
auto gather_settled(R&& tasks) -> task<std::vector<outcome<detail::range_task_value_t<R>>>> {
    return detail::gather_settled_vector(
        detail::collect_tasks(std::forward<R>(tasks), "triad::gather_settled"));
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

namespace detail {
template <class T>
task<std::pair<std::size_t, value_or_monostate<T>>> when_any_vector(std::vector<task<T>> tasks) {
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
} // namespace detail

/**
 * `when_any` over a range of tasks or task handles (taken as `gather` takes them): the
 * winner's index in the range and its result; the others are cancelled (a handle's task too).
 * Throws `std::invalid_argument` when awaited if the range is empty.
 */
template <class R>
requires detail::task_or_handle_range<R>
auto when_any(R&& tasks)
    -> task<std::pair<std::size_t, detail::value_or_monostate<detail::range_task_value_t<R>>>> {
    return detail::when_any_vector(
        detail::collect_tasks(std::forward<R>(tasks), "triad::when_any"));
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
        m_timer.self = this;
    }
    timeout_join(const timeout_join&) = delete;
    timeout_join& operator=(const timeout_join&) = delete;

    bool await_ready() const noexcept { return false; }
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> parent) {
        m_loop = &current_loop("triad::timeout");
        m_timer.fire = &on_deadline;
        m_loop->add_timer(&m_timer); // may throw: before anything needs undoing
        static constexpr wait_kind kind{&on_cancel, "triad::timeout"};
        if (!m_wait.begin(parent, kind, this)) {
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
    static void on_deadline(timer_node* node) noexcept {
        auto* self = static_cast<timer_of*>(node)->self;
        self->m_timed_out = true;
        self->m_child.m_own_cancel.request();
    }
    static void on_cancel(void* context) noexcept {
        static_cast<timeout_join*>(context)->m_child.m_own_cancel.request();
    }

    // A timeout is rarer than a sleep: its node keeps a pointer back, not a base.
    struct timer_of : timer_node {
        timeout_join* self = nullptr;
    };

    promise_base& m_child;
    timer_of m_timer;
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

// --- shield ------------------------------------------------------------------------------------

namespace detail {

// Runs one child with its own cancellation, which nobody requests, while the parent waits: a
// cancellation of the parent is noted (and consumed) but not passed on.
class shield_join {
public:
    explicit shield_join(promise_base& child) noexcept : m_child(child) {}
    shield_join(const shield_join&) = delete;
    shield_join& operator=(const shield_join&) = delete;

    bool await_ready() const noexcept { return false; }
    // The child starts by symmetric transfer and hands back the same way, so a recursion
    // through shield runs in constant stack.
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> parent) {
        // False when a cancellation was already pending: it is consumed all the same, and the
        // child still runs.
        static constexpr wait_kind kind{&on_cancel, "triad::shield"};
        (void)m_wait.begin(parent, kind, this);
        m_child.m_on_done = &child_done;
        m_child.m_owner = this;
        return transfer(m_child.m_self);
    }
    void await_resume() const noexcept {}

    // The parent's cancellation, consumed while the child ran, is requested again for the
    // parent's next suspension point.
    void redeliver() noexcept {
        if (m_wait.cancelled())
            m_wait.request_again();
    }

private:
    static std::coroutine_handle<> child_done(promise_base& child) noexcept {
        auto* self = static_cast<shield_join*>(child.m_owner);
        self->m_wait.end();
        return self->m_wait.waiter();
    }
    static void on_cancel(void*) noexcept {}

    promise_base& m_child;
    cancellable_wait m_wait;
};

} // namespace detail

/**
 * Runs `inner` to its end even if the awaiting task is cancelled meanwhile (the opposite of
 * `timeout`; compare `asyncio.shield`). The awaiting task waits for `inner`, gets its value
 * or exception, and a cancellation that arrived meanwhile — or was already pending — is then
 * delivered at its next suspension point: nothing is left running behind its back, and the
 * cancellation is not lost. For work that must complete once started: a commit, a rollback,
 * a goodbye message on a socket.
 *
 * Shield only work that ends by itself: `triad::run` waits for it too when it winds down
 * (wrap it in `timeout` if it might not end).
 *
 * @par Thread Safety
 * Loop thread only.
 *
 * @code
 * co_await triad::shield(db.commit(txn)); // a cancellation waits until the commit is done
 * co_await triad::sleep(1s);              // ... and is delivered here
 * @endcode
 */
template <class T>
task<T> shield(task<T> inner) {
    detail::shield_join join(*detail::promise_of(inner));
    co_await join;
    struct redeliver_on_exit {
        detail::shield_join& join;
        ~redeliver_on_exit() { join.redeliver(); }
    } redeliver{join};
    auto& child = detail::task_access::handle(inner).promise();
    if constexpr (std::is_void_v<T>)
        child.take();
    else
        co_return child.take();
}

/** `shield` for any awaitable: an Asio operation with `use_task`, a future, a task handle. */
template <class Awaitable>
requires(!detail::is_task<Awaitable>::value) auto shield(Awaitable awaitable)
    -> task<detail::await_result_t<Awaitable>> {
    return shield(
        detail::await_owned<detail::await_result_t<Awaitable>, Awaitable>(std::move(awaitable)));
}

// --- as_completed ------------------------------------------------------------------------------

/**
 * What `triad::as_completed(tasks)` returns: results in the order the tasks finish (Python's
 * `asyncio.as_completed`). Built from a range
 * of tasks — all spawned at once, so it needs a running loop — or of `task_handle`s of tasks
 * already spawned (taken over). Each `co_await next()` gives the value of the next task to
 * finish, or rethrows its exception; `remaining()` counts the results not yet given.
 *
 * Cancelling the task waiting in `next()` cancels every unfinished task and waits for all of
 * them to finish, then throws `triad::task_cancelled` (as `gather` does). `co_await close()`
 * does the same without a cancellation: use it before leaving early when the tasks refer to
 * locals of your frame. Destroying the object cannot wait: the unfinished tasks are cancelled
 * and finish on their own (each owns its frame; a failure nobody took is reported to
 * `on_unhandled`). If they use what your frame owns, build it from the handles of a
 * `task_group::scope`'s tasks: the scope then waits for them whatever happens.
 *
 * @par Thread Safety
 * Loop thread only; one task at a time may wait in `next()`.
 *
 * @code
 * auto done = triad::as_completed(std::move(fetches)); // std::vector<triad::task<page>>
 * while (done.remaining() > 0) {
 *     page p = co_await done.next(); // the fastest first
 * }
 * @endcode
 */
template <class T>
class as_completed_tasks {
    struct state;
    class waiter_base;
    class drain_awaiter;

public:
    class next_awaiter;

    /**
     * Takes the tasks (moved out of the range, and spawned now) or the handles. Throws
     * `std::logic_error` when tasks are given and no loop runs on this thread, `future_error`
     * for an empty task or handle.
     */
    template <class R>
    requires detail::task_or_handle_range<R> && std::is_same_v<detail::range_task_value_t<R>, T>
    explicit as_completed_tasks(R&& tasks);

    as_completed_tasks(as_completed_tasks&&) noexcept = default;
    /** Cancels the unfinished tasks this one held (see the destructor), then takes `other`'s. */
    as_completed_tasks& operator=(as_completed_tasks&&) noexcept = default;
    as_completed_tasks(const as_completed_tasks&) = delete;
    as_completed_tasks& operator=(const as_completed_tasks&) = delete;
    /** Cancels the unfinished tasks; they finish on their own (see the class comment). */
    ~as_completed_tasks() = default;

    /** Results not yet given by `next()` (0 once moved from). */
    std::size_t remaining() const noexcept {
        return m_state ? m_state->handles.size() - m_state->delivered : 0;
    }

    /**
     * `co_await next()` waits for the next task to finish and gives its value, or rethrows its
     * exception. Throws `future_error` when nothing remains or another task already waits. A
     * cancellation point (see the class comment).
     */
    [[nodiscard]] next_awaiter next() noexcept { return next_awaiter(m_state.get()); }

    /**
     * Cancels the unfinished tasks and waits until every task has finished; the results not
     * yet taken are dropped (a failure among them other than the cancellation is reported to
     * `on_unhandled`). Cancelling it does not stop the wait: it throws `task_cancelled` once
     * all have finished.
     */
    task<void> close();

private:
    // Watches one task: a joiner that calls back instead of resuming a coroutine.
    struct watch : detail::promise_base::joiner {
        state* owner = nullptr;
        std::size_t index = 0;
    };

    // On the heap, so that the object moves freely while its tasks report to it.
    struct state {
        std::vector<task_handle<T>> handles;
        std::vector<watch> watches;     // one per handle, never reallocated once linked
        std::vector<std::size_t> ready; // finished, in that order; reserved in full
        std::size_t ready_head = 0;     // the first of `ready` not given yet
        std::size_t unfinished = 0;
        std::size_t delivered = 0;
        waiter_base* waiter = nullptr;

        state() = default;
        state(const state&) = delete;
        state& operator=(const state&) = delete;
        ~state();

        void start();
        void cancel_unfinished() noexcept {
            for (task_handle<T>& h : handles)
                h.cancel();
        }
        static void on_finished(detail::promise_base::joiner* j) noexcept {
            auto* w = static_cast<watch*>(j);
            state& self = *w->owner;
            self.ready.push_back(w->index); // capacity reserved: cannot throw
            --self.unfinished;
            if (self.waiter != nullptr)
                self.waiter->finished_one();
        }
    };

    std::unique_ptr<state> m_state;
};

template <class R>
as_completed_tasks(R&&) -> as_completed_tasks<detail::range_task_value_t<R>>;

// A task waiting on an as_completed_tasks: for the next result, or for every task to finish.
template <class T>
class as_completed_tasks<T>::waiter_base {
public:
    waiter_base(const waiter_base&) = delete;
    waiter_base& operator=(const waiter_base&) = delete;

    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        if (m_state->waiter != nullptr)
            throw future_error("triad::as_completed: another task is already waiting on it");
        // Before the wait, m_cancelling says which wait this is: close() drains from the start.
        static constexpr detail::wait_kind next_kind{&on_cancel, "triad::as_completed::next"};
        static constexpr detail::wait_kind close_kind{&on_cancel, "triad::as_completed::close"};
        if (!m_wait.begin(h, m_cancelling ? close_kind : next_kind, this)) {
            // A cancellation was pending: every task is cancelled, and awaited.
            m_cancelling = true;
            m_state->cancel_unfinished();
        }
        m_state->waiter = this;
        return true; // a task is unfinished, or await_ready would have said so
    }

protected:
    friend class as_completed_tasks;
    waiter_base(state* s, bool draining) noexcept : m_state(s), m_cancelling(draining) {}

    // Throws what ended the wait, other than a result.
    void check() const {
        if (m_abandoned)
            throw future_error("triad::as_completed was destroyed while a task waited on it");
        if (m_state == nullptr)
            throw future_error("triad::as_completed: the object was moved from");
        if (m_wait.cancelled())
            throw task_cancelled();
    }

    // A task has finished: wake up, unless every task is being waited out.
    void finished_one() noexcept {
        if (m_cancelling && m_state->unfinished > 0)
            return;
        m_state->waiter = nullptr;
        m_wait.end();
        detail::tls_loop->schedule(m_wait.waiter());
    }
    static void on_cancel(void* context) noexcept {
        auto* self = static_cast<waiter_base*>(context);
        self->m_cancelling = true;
        self->m_state->cancel_unfinished();
    }

    state* m_state;
    detail::cancellable_wait m_wait;
    bool m_cancelling;
    bool m_abandoned = false;
};

/** What `as_completed_tasks::next()` returns: await it. */
template <class T>
class as_completed_tasks<T>::next_awaiter : public waiter_base {
public:
    bool await_ready() const noexcept {
        return this->m_state == nullptr ||
               this->m_state->ready_head < this->m_state->ready.size() ||
               this->m_state->delivered == this->m_state->handles.size();
    }
    T await_resume() {
        this->check();
        state& s = *this->m_state;
        if (s.ready_head == s.ready.size())
            throw future_error("triad::as_completed::next: every result was given already "
                               "(check remaining())");
        const std::size_t i = s.ready[s.ready_head++];
        ++s.delivered;
        return s.handles[i].result();
    }

private:
    friend class as_completed_tasks;
    explicit next_awaiter(state* s) noexcept : waiter_base(s, false) {}
};

// Waits until every task has finished.
template <class T>
class as_completed_tasks<T>::drain_awaiter : public waiter_base {
public:
    explicit drain_awaiter(state* s) noexcept : waiter_base(s, true) {}
    bool await_ready() const noexcept { return this->m_state->unfinished == 0; }
    void await_resume() const { this->check(); }
};

template <class T>
template <class R>
requires detail::task_or_handle_range<R> && std::is_same_v<detail::range_task_value_t<R>, T>
as_completed_tasks<T>::as_completed_tasks(R&& tasks) : m_state(std::make_unique<state>()) {
    if constexpr (detail::is_task<std::ranges::range_value_t<R>>::value) {
        std::vector<task<T>> collected =
            detail::collect_tasks(std::forward<R>(tasks), "triad::as_completed");
        for (task<T>& t : collected)
            if (!t.valid())
                throw future_error("triad::as_completed: an empty task in the range");
        (void)detail::current_loop("triad::as_completed"); // before anything is spawned
        m_state->handles.reserve(collected.size());
        try {
            for (task<T>& t : collected)
                m_state->handles.push_back(triad::spawn(std::move(t)));
        } catch (...) {
            m_state->cancel_unfinished(); // spawned ones must not run on unwatched
            throw;
        }
    } else {
        static_assert(
            !std::is_const_v<std::remove_reference_t<std::ranges::range_reference_t<R>>>,
            "triad::as_completed takes the task handles over: the range must not be const");
        if constexpr (std::ranges::sized_range<R>)
            m_state->handles.reserve(static_cast<std::size_t>(std::ranges::size(tasks)));
        for (auto&& h : tasks) {
            if (!h.valid())
                throw future_error("triad::as_completed: an empty task handle in the range");
            m_state->handles.push_back(std::move(h));
        }
    }
    m_state->start();
}

template <class T>
void as_completed_tasks<T>::state::start() {
    watches.resize(handles.size());
    ready.reserve(handles.size());
    for (std::size_t i = 0; i < handles.size(); ++i) {
        if (handles[i].done()) {
            ready.push_back(i);
            continue;
        }
        watch& w = watches[i];
        w.owner = this;
        w.index = i;
        w.notify = &on_finished;
        detail::promise_base& p = handles[i].m_handle.promise();
        w.next = p.m_joiners;
        p.m_joiners = &w;
        ++unfinished;
    }
}

template <class T>
as_completed_tasks<T>::state::~state() {
    if (waiter != nullptr) { // destroyed by another task than the one waiting
        waiter_base* w = std::exchange(waiter, nullptr);
        w->m_abandoned = true;
        w->m_state = nullptr;
        w->m_wait.end();
        if (detail::tls_loop != nullptr)
            detail::tls_loop->schedule(w->m_wait.waiter());
    }
    for (std::size_t i = 0; i < handles.size(); ++i)
        if (handles[i].valid() && !handles[i].done()) {
            if (i < watches.size()) // not yet watched if the constructor failed
                detail::unlink_joiner(handles[i].m_handle.promise(), &watches[i]);
            handles[i].cancel();
        }
    // The handles go now; a task still running holds its own frame and finishes on its own.
}

template <class T>
task<void> as_completed_tasks<T>::close() {
    if (!m_state)
        co_return;
    m_state->cancel_unfinished();
    if (m_state->unfinished > 0) {
        drain_awaiter drain(m_state.get());
        co_await drain; // throws task_cancelled after all finished if this task was cancelled
    }
    m_state->delivered = m_state->handles.size();
    m_state->ready_head = m_state->ready.size();
    for (task_handle<T>& h : m_state->handles)
        h = task_handle<T>(); // a failure nobody took is reported as the handle goes
}

/**
 * Gives the results of `tasks` — a range of `task<T>` (moved out of it and spawned now) or of
 * `task_handle<T>` (taken over) — in the order they finish: see `as_completed_tasks`. Needs a
 * running loop. (For futures of the pools, the `as_completed` of `<triad/future.hpp>`.)
 *
 * @code
 * auto done = triad::as_completed(std::move(fetches));
 * while (done.remaining() > 0)
 *     use(co_await done.next());
 * @endcode
 */
template <class R>
requires detail::task_or_handle_range<R> as_completed_tasks<detail::range_task_value_t<R>>
as_completed(R&& tasks) {
    return as_completed_tasks<detail::range_task_value_t<R>>(std::forward<R>(tasks));
}

// --- task groups -------------------------------------------------------------------------------

namespace detail {

// What task_group::scope(fn) runs: fn(group) must give a task. A misuse is explained once, by
// the advice: the scope then compiles as if the body were a task<void>.
template <class Fn, class Group>
struct scope_body {
    static constexpr bool invocable = std::is_invocable_v<Fn&, Group&>;
    static_assert(invocable, "triad::task_group::scope: the function must be callable as "
                             "fn(triad::task_group&): take the group by reference");
    using result = typename std::conditional_t<invocable, std::invoke_result<Fn&, Group&>,
                                               std::type_identity<task<void>>>::type;
    static_assert(!invocable || is_task<result>::value,
                  "triad::task_group::scope: the function must return a triad::task<T>; write "
                  "it as a coroutine: [&](triad::task_group& g) -> triad::task<void> { ... }");
    static constexpr bool valid = invocable && is_task<result>::value;
    using type = std::conditional_t<valid, result, task<void>>;
    using value_type = typename type::value_type;
};

} // namespace detail

/**
 * Structured concurrency (Trio's nursery, Python's `asyncio.TaskGroup`): tasks spawned in a
 * group never outlive the scope that owns it.
 *
 * The way to use it is `co_await task_group::scope(fn)`: the group lives in the scope, `fn`
 * gets it and returns the body's task, and whatever happens — the body returns, throws, or the
 * awaiting task is cancelled — the scope completes only after every task of the group has
 * finished (their cleanup included). The first failure, of the body or of a task, cancels the
 * body and the other tasks and is rethrown once all have finished; a later failure is reported
 * to the loop's `on_unhandled` (a task's, unless taken from its handle). A cancellation of the
 * awaiting task is passed to the body and to every task; the scope then throws
 * `triad::task_cancelled`, after all have finished.
 *
 * The bare object (`spawn`, then `co_await join()`) is still there, but `join` can only be
 * awaited on the paths that reach it: **a group destroyed while its tasks still run ends the
 * program** (`std::terminate`, with a message on stderr) — they could go on using what has
 * been destroyed, as `std::thread` would. The code before `join` must therefore never throw or
 * be cancelled: prefer `scope`.
 *
 * @par Thread Safety
 * Loop thread only.
 *
 * @code
 * int n = co_await triad::task_group::scope([&](triad::task_group& g) -> triad::task<int> {
 *     for (auto& url : urls) (void)g.spawn(fetch(url));
 *     co_return static_cast<int>(urls.size());
 * }); // every fetch has finished here, whatever happened
 * @endcode
 */
class task_group : private detail::spawn_group {
    class scope_start;
    struct join_awaiter;

public:
    /**
     * Runs `fn(group)` on a group that lives in the returned task and awaits the body's task
     * and every task of the group; gives the body's value (see the class comment for failures
     * and cancellation). `fn` is kept alive in the scope until the end, so a lambda's captures
     * are safe to use in its body. If `fn` itself throws, that is the body failing. With a
     * cancellation already pending, the body never starts and `task_cancelled` is thrown.
     * A cancellation that arrives after the body returned its value (it did not end by it)
     * is delivered at the awaiting task's next suspension point.
     *
     * GCC 12 destroys a lambda temporary written inside a `co_await` expression twice: a lambda
     * that captures by value an object with a destructor (a string, a pointer that owns) must
     * be named before the `co_await` (`auto body = [s](triad::task_group& g) -> ...;` then
     * `co_await triad::task_group::scope(std::move(body));`). Capturing by reference is safe.
     */
    template <class Fn>
    static auto scope(Fn fn) -> task<typename detail::scope_body<Fn, task_group>::value_type>;

    task_group() noexcept : spawn_group{&child_done} {}
    task_group(const task_group&) = delete;
    task_group& operator=(const task_group&) = delete;
    /**
     * Ends the program (`std::terminate`, after a message on stderr) if tasks of the group
     * still run; else reports a failure that `join` never rethrew.
     */
    ~task_group();

    /**
     * Starts `t` in the group; the handle gives its own result if you want it. In a group that
     * was cancelled or has failed, `t` starts cancelled.
     */
    template <class T>
    task_handle<T> spawn(task<T> t);

    /**
     * Cancels every task of the group still running, and every one spawned in it later. Only
     * the first call does anything: each task is asked once, so its cleanup may still await.
     */
    void cancel() noexcept;

    /** Tasks of the group still running. */
    std::size_t running() const noexcept { return m_running.size(); }

    /**
     * Waits for every task; rethrows the first failure after all finished. If the waiting task
     * is cancelled (or a cancellation is pending), the group is cancelled and `join` still
     * waits for every task to finish, then throws `task_cancelled` (or the first failure, the
     * cancellation then going on to the next suspension point).
     */
    task<void> join();

private:
    template <class T>
    static detail::promise_base* handle_promise(task_handle<T>& h) {
        return &h.m_handle.promise();
    }

    // The body of a scope ended: a failure cancels the group and is kept if it came first.
    void body_failed(const std::exception_ptr& error) noexcept;
    static void child_done(detail::spawn_group* group, detail::promise_base& child) noexcept;
    void wake_waiters() noexcept;

    std::vector<detail::promise_base*> m_running;
    std::exception_ptr m_error;
    bool m_error_delivered = false;
    bool m_cancelled = false;
    join_awaiter* m_joiners = nullptr; // tasks waiting in join(), woken when the group is empty
    scope_start* m_scope = nullptr;    // the scope that owns this group, while it waits
};

// Waits, once, until the group has no running task; also when cancelled (it cancels the group).
struct task_group::join_awaiter {
    explicit join_awaiter(task_group& g) noexcept : group(g) {}
    join_awaiter(const join_awaiter&) = delete;
    join_awaiter& operator=(const join_awaiter&) = delete;

    task_group& group;
    detail::cancellable_wait wait;
    join_awaiter* next = nullptr;

    bool await_ready() const noexcept { return group.m_running.empty(); }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> waiter) {
        static constexpr detail::wait_kind kind{&on_cancel, "triad::task_group join"};
        if (!wait.begin(waiter, kind, this))
            group.cancel(); // a cancellation was pending: the tasks are cancelled, and awaited
        next = group.m_joiners;
        group.m_joiners = this;
        return true;
    }
    void await_resume() const noexcept {}
    bool cancelled() const noexcept { return wait.cancelled(); }

    static void on_cancel(void* context) noexcept {
        // The waiter stays until the group has wound down.
        static_cast<join_awaiter*>(context)->group.cancel();
    }
};

// Starts the body of a scope and waits until it and every task of the group have finished. A
// cancellation of the awaiting task cancels the body (which has its own cancellation, so that a
// failing task can cancel it without touching the awaiting task's) and the group.
class task_group::scope_start {
public:
    scope_start(task_group& group, detail::promise_base* body) noexcept
        : m_group(group), m_body(body) {}
    scope_start(const scope_start&) = delete;
    scope_start& operator=(const scope_start&) = delete;

    bool await_ready() const noexcept { return false; }
    // The body starts by symmetric transfer, and body_done decides where control goes when it
    // ends: a recursion through scopes runs in constant stack.
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> parent) {
        static constexpr detail::wait_kind kind{&on_cancel, "triad::task_group::scope"};
        if (!m_wait.begin(parent, kind, this)) {
            m_group.cancel(); // the body never starts; what fn() spawned is cancelled
        } else if (m_body != nullptr) {
            m_body->m_on_done = &body_done;
            m_body->m_owner = this;
            m_started = true;
            m_body_running = true;
            m_group.m_scope = this;
            return detail::transfer(m_body->m_self); // nothing here may follow
        }
        if (m_group.m_running.empty()) {
            m_group.m_scope = nullptr;
            m_wait.end();
            return detail::transfer(parent);
        }
        m_group.m_scope = this;
        return std::noop_coroutine();
    }
    void await_resume() const noexcept {}

    bool cancelled() const noexcept { return m_wait.cancelled(); }
    bool started() const noexcept { return m_started; }

    // A task of the group failed first: the body stops too.
    void cancel_body() noexcept {
        if (m_body_running)
            m_body->m_own_cancel.request();
    }
    // The group has no running task left.
    void tasks_done() noexcept {
        if (m_body_running)
            return;
        m_group.m_scope = nullptr; // woken once
        m_wait.end();
        detail::tls_loop->schedule(m_wait.waiter());
    }

private:
    static std::coroutine_handle<> body_done(detail::promise_base& body) noexcept {
        auto* self = static_cast<scope_start*>(body.m_owner);
        self->m_body_running = false;
        if (body.failed())
            self->m_group.body_failed(body.error());
        if (!self->m_group.m_running.empty())
            return std::noop_coroutine(); // the last task of the group goes on
        self->m_group.m_scope = nullptr;
        self->m_wait.end();
        return self->m_wait.waiter();
    }
    static void on_cancel(void* context) noexcept {
        auto* self = static_cast<scope_start*>(context);
        self->m_group.cancel();
        self->cancel_body();
    }

    task_group& m_group;
    detail::promise_base* m_body;
    detail::cancellable_wait m_wait;
    bool m_started = false;
    bool m_body_running = false;
};

template <class Fn>
auto task_group::scope(Fn fn) -> task<typename detail::scope_body<Fn, task_group>::value_type> {
    using body_task = typename detail::scope_body<Fn, task_group>::type;
    using value_type = typename body_task::value_type;
    task_group group;
    body_task body;
    std::exception_ptr start_error;
    try {
        if constexpr (detail::scope_body<Fn, task_group>::valid)
            body = fn(group);
        if (!body.valid())
            throw future_error("triad::task_group::scope: the function returned an empty task");
    } catch (...) {
        start_error = std::current_exception();
        group.body_failed(start_error);
    }
    scope_start start(group, body.valid() ? &detail::task_access::handle(body).promise() : nullptr);
    co_await start;
    bool cancelled = start.cancelled();
    // A task spawned in the group after it was last seen empty (by a task holding a reference
    // to it) is waited for too: the group must be empty before it goes.
    while (!group.m_running.empty()) {
        join_awaiter more(group);
        co_await more;
        cancelled = cancelled || more.cancelled();
    }
    // Every task of the group and the body have finished.
    detail::cancel_state* const own = co_await detail::current_cancellation{};
    if (group.m_error) {
        group.m_error_delivered = true;
        if (cancelled && own != nullptr)
            own->request(); // not lost: delivered at the next suspension point
        std::rethrow_exception(group.m_error);
    }
    if (start_error)
        std::rethrow_exception(start_error); // fn threw a cancellation
    if (!start.started())
        throw task_cancelled(); // the cancellation pending when the scope began
    auto& result = detail::task_access::handle(body).promise();
    if (cancelled && !result.failed() && own != nullptr)
        own->request(); // the body returned although cancelled: its value first
    if constexpr (std::is_void_v<value_type>)
        result.take();
    else
        co_return result.take();
}

inline task_group::~task_group() {
    if (!m_running.empty()) {
        const std::size_t n = m_running.size();
        std::fprintf(stderr,
                     "triad::task_group destroyed with %zu task%s still running: the code before "
                     "join() threw or was cancelled, or join() was never awaited. The tasks could "
                     "go on using what was destroyed, so the program ends here. Use co_await "
                     "triad::task_group::scope(...), which always waits for its tasks.\n",
                     n, n == 1 ? "" : "s");
        std::fflush(stderr);
        std::terminate();
    }
    // A failure join() never rethrew is reported, once (its child left it to the group).
    if (m_error && !m_error_delivered) {
        if (detail::tls_loop != nullptr)
            detail::tls_loop->report_unhandled(m_error);
        else
            detail::report_to_stderr("triad: exception in a task group nobody joined", m_error);
    }
}

template <class T>
task_handle<T> task_group::spawn(task<T> t) {
    if (m_running.size() == m_running.capacity()) // room first: push_back below cannot throw
        m_running.reserve(std::max<std::size_t>(8, 2 * m_running.size()));
    task_handle<T> handle = triad::spawn(std::move(t));
    detail::promise_base& p = *handle_promise(handle);
    ++p.m_refs; // the group's own reference, dropped when the child finishes
    p.m_owner = static_cast<detail::spawn_group*>(this);
    p.m_owner_index = static_cast<std::uint32_t>(m_running.size());
    m_running.push_back(&p);
    if (m_cancelled)
        p.m_own_cancel.request(); // never runs its body
    return handle;
}

inline void task_group::cancel() noexcept {
    // Once: a task that caught its cancellation may await in its cleanup, and a second request
    // would cut that short.
    if (std::exchange(m_cancelled, true))
        return;
    for (detail::promise_base* child : m_running)
        child->m_own_cancel.request();
}

inline task<void> task_group::join() {
    bool cancelled = false;
    while (!m_running.empty()) {
        join_awaiter waiting(*this);
        co_await waiting;
        cancelled = cancelled || waiting.cancelled();
    }
    if (m_error) {
        m_error_delivered = true;
        if (cancelled)
            if (detail::cancel_state* own = co_await detail::current_cancellation{})
                own->request(); // not lost: delivered at the next suspension point
        std::rethrow_exception(m_error);
    }
    if (cancelled)
        throw task_cancelled();
}

inline void task_group::body_failed(const std::exception_ptr& error) noexcept {
    if (!detail::is_cancellation(error)) {
        if (!m_error) {
            m_error = error;
        } else if (error != m_error) {
            // A second failure, after the first cancelled the body: reported, never lost.
            if (detail::tls_loop != nullptr)
                detail::tls_loop->report_unhandled(error);
            else
                detail::report_to_stderr("triad: a task group's body failed", error);
        }
    }
    cancel();
}

inline void task_group::child_done(detail::spawn_group* group,
                                   detail::promise_base& child) noexcept {
    auto* self = static_cast<task_group*>(group);
    const std::size_t i = child.m_owner_index;
    self->m_running[i] = self->m_running.back();
    self->m_running[i]->m_owner_index = static_cast<std::uint32_t>(i);
    self->m_running.pop_back();
    if (child.failed() && !self->m_error && !detail::is_cancellation(child.error())) {
        // The group rethrows it from join() or the scope (or reports it if never joined): the
        // child's handle must not report it a second time.
        self->m_error = child.error();
        child.m_failure_observed = true;
        self->cancel();
        if (self->m_scope != nullptr)
            self->m_scope->cancel_body();
    }
    child.m_owner = nullptr;
    --child.m_refs; // the running reference outlives this call: never the last one
    if (self->m_running.empty())
        self->wake_waiters();
}

inline void task_group::wake_waiters() noexcept {
    for (join_awaiter* j = std::exchange(m_joiners, nullptr); j != nullptr;) {
        join_awaiter* next = j->next; // j lives in a frame about to resume
        j->wait.end();
        detail::tls_loop->schedule(j->wait.waiter());
        j = next;
    }
    if (m_scope != nullptr)
        m_scope->tasks_done();
}

} // namespace triad
