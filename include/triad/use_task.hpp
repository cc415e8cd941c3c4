#pragma once

#include <atomic>
#include <coroutine>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/query.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <triad/detail/async_core.hpp>
#include <triad/errors.hpp>
#include <triad/task.hpp>

namespace triad {

/**
 * The completion token that makes any Boost.Asio asynchronous operation awaitable in a task:
 * `co_await socket.async_read_some(buffer, triad::use_task)`. The result is the handler's
 * arguments after the error code (nothing, one value, or a tuple); an error code is thrown as
 * `boost::system::system_error`, an exception_ptr (`co_spawn` of an Asio awaitable) is rethrown.
 *
 * The operation may belong to any `io_context`, also one another thread runs: the task is
 * always resumed on the loop's thread, and the loop counts the operation as work in flight (it
 * waits for it rather than report a deadlock). That holds also for an initiation of your own
 * that calls the handler on a thread of its own without going through the handler's executor.
 * An operation on an `io_context` nobody runs never completes (the task waits, as it would in
 * asyncio), and neither does its cancellation: the operation is cancelled, but its completion
 * (`operation_aborted`) is delivered only when that `io_context` runs again. An `io_context`
 * destroyed with the operation in flight (which destroys the handler without calling it), or
 * an initiation that drops the handler, resumes the task with
 * `boost::system::system_error(boost::asio::error::operation_aborted)`.
 *
 * Cancelling the task cancels the operation in flight through Asio's per-operation cancellation
 * slot, and the wait throws `triad::task_cancelled`; an operation that had already completed
 * delivers its result instead, and the task sees the cancellation at its next suspension.
 * As Asio requires of its cancellation signals, the cancellation is emitted where the
 * operation's handler runs (where a composed operation takes its steps): an operation of
 * another `io_context` runs there, its completion too (the task is then resumed by a post to
 * the loop), and is cancelled there; one given an executor with `bind_executor`, on that
 * executor; anything else on the loop's thread. An initiation of your own whose work runs on a
 * thread of its own must make the cancellation handler it installs safe to call from there.
 *
 * Asio's token adapters compose with it: `boost::asio::redirect_error(triad::use_task, ec)`,
 * `as_tuple(triad::use_task)`, `experimental::as_single(triad::use_task)`,
 * `bind_executor(strand, triad::use_task)` (the completion runs on the strand, then the task
 * resumes on the loop's thread) and `bind_cancellation_slot(slot, triad::use_task)` (the
 * operation is cancelled by the slot's signal, which throws `system_error(operation_aborted)`,
 * and by cancelling the task, which throws `task_cancelled`; put it innermost, next to
 * `use_task`). With an adapter that turns the error into a value (redirect_error, as_tuple), a
 * cancelled operation delivers its `operation_aborted` as that value, as with Asio's own
 * awaitables, and the task sees the cancellation at its next suspension.
 *
 * @par Thread Safety
 * Await in a task, on the loop's thread. The operation may complete on any thread.
 *
 * @code
 * boost::asio::steady_timer timer(triad::current_executor(), 5s);
 * co_await timer.async_wait(triad::use_task);
 * @endcode
 */
struct use_task_t {
    constexpr use_task_t() noexcept = default;
};
inline constexpr use_task_t use_task{};

namespace detail {

template <class... Results>
struct asio_results {
    using type = std::tuple<Results...>;
};
template <class Result>
struct asio_results<Result> {
    using type = Result;
};
template <>
struct asio_results<> {
    using type = void;
};

// How an Asio completion reports failure: not at all, by an error code first (I/O), or by an
// exception_ptr first (co_spawn of an Asio awaitable).
enum class asio_failure { none, error_code, exception };

inline bool is_operation_aborted(const std::exception_ptr& error) noexcept {
    if (!error)
        return false;
    try {
        std::rethrow_exception(error);
    } catch (const boost::system::system_error& e) {
        return e.code() == boost::asio::error::operation_aborted;
    } catch (...) {
        return false;
    }
}

// What a completion handed over, kept until the task resumes.
template <asio_failure Failure, class... Results>
struct asio_outcome {
    using value_type = typename asio_results<Results...>::type;

    std::optional<std::tuple<Results...>> results;
    boost::system::error_code error;
    std::exception_ptr exception;

    template <class... Args>
    void store(Args&&... args) {
        if constexpr (Failure == asio_failure::none)
            results.emplace(std::forward<Args>(args)...);
        else
            store_failure(std::forward<Args>(args)...);
    }

    // Did the operation end because it was cancelled?
    bool aborted() const noexcept {
        if constexpr (Failure == asio_failure::error_code)
            return error == boost::asio::error::operation_aborted;
        else if constexpr (Failure == asio_failure::exception)
            return is_operation_aborted(exception); // how a cancelled Asio coroutine ends
        else
            return false;
    }

    value_type take() {
        if constexpr (Failure == asio_failure::error_code) {
            if (error)
                throw boost::system::system_error(error);
        } else if constexpr (Failure == asio_failure::exception) {
            if (exception)
                std::rethrow_exception(exception);
        }
        if constexpr (sizeof...(Results) == 1)
            return std::move(std::get<0>(*results));
        else if constexpr (sizeof...(Results) > 1)
            return std::move(*results);
    }

private:
    template <class... Args>
    void store_failure(const boost::system::error_code& e, Args&&... args) {
        error = e;
        results.emplace(std::forward<Args>(args)...);
    }
    template <class... Args>
    void store_failure(std::exception_ptr e, Args&&... args) {
        exception = std::move(e);
        results.emplace(std::forward<Args>(args)...);
    }
};

// --- operations that are not the loop's own ----------------------------------------------------
// An operation whose I/O object belongs to another io_context (or whose initiation does not say
// which) may complete on another thread, may have its handler destroyed there without a call
// (its io_context destroyed), and must be cancelled where its handler runs. What the awaiting
// task and the handler (every copy of it, wherever Asio moved it) share lives here, held by
// both, so neither side ever touches memory the other freed.
class asio_link_base : public std::enable_shared_from_this<asio_link_base> {
public:
    enum class phase : unsigned char { starting, waiting, done, detached };

    explicit asio_link_base(loop_core& loop)
        : m_loop(&loop), m_gate(loop.gate()), m_loop_executor(loop.io().get_executor()),
          m_work(std::in_place, m_loop_executor) {}
    asio_link_base(const asio_link_base&) = delete;
    asio_link_base& operator=(const asio_link_base&) = delete;

    // Emits a cancellation into the operation's slot, unless its handler already ran (an Asio
    // operation's slot handler may point into an I/O object the task destroys once resumed).
    void emit(boost::asio::cancellation_type type) {
        std::lock_guard lock(m_mutex);
        if (m_claimed || m_phase == phase::detached)
            return;
        m_emitting = true;
        struct reset {
            bool& flag;
            ~reset() { flag = false; }
        } emitting{m_emitting};
        m_signal.emit(type);
    }

    // The last copy of the handler went without being called.
    void abandon() noexcept {
        {
            std::lock_guard lock(m_mutex);
            if (m_claimed)
                return;
            m_claimed = true;
            m_abandoned = true;
            if (settle() != phase::waiting)
                return; // still starting (await_suspend carries on), or nobody waits any more
        }
        // Never resumed from here: this runs inside a destructor (of an io_context, perhaps).
        try {
            post_delivery();
        } catch (...) {
            // No memory to queue the resumption: the task waits for ever, like a task whose
            // operation never completes.
        }
    }

    // Loop thread: resumes the waiting task, unless it has gone meanwhile.
    void deliver() {
        {
            std::lock_guard lock(m_mutex);
            if (m_phase == phase::detached)
                return;
        }
        m_deliver(m_op);
    }

    std::recursive_mutex m_mutex; // recursive: an emit may run the handler on the same thread
    boost::asio::cancellation_signal m_signal;
    phase m_phase = phase::starting;     // under m_mutex
    bool m_claimed = false;              // under m_mutex: the handler ran, or the last copy went
    bool m_abandoned = false;            // under m_mutex
    bool m_emitting = false;             // under m_mutex
    std::atomic<unsigned> m_handlers{0}; // live copies of the handler
    loop_core* m_loop;
    // The loop may be gone when the operation ends (its task destroyed suspended).
    std::shared_ptr<loop_gate> m_gate;
    boost::asio::io_context::executor_type m_loop_executor;
    // Loop thread only. Keeps the loop waiting while the operation is in flight: nothing else
    // does when the handler's executor is not the loop's, or the initiation is one's own.
    using loop_work = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
    std::optional<loop_work> m_work;
    void (*m_deliver)(void* op) = nullptr; // loop thread only, like m_op
    void* m_op = nullptr;

protected:
    // Under m_mutex, once claimed: the phase before, which says who resumes the task.
    phase settle() noexcept {
        const phase previous = m_phase;
        if (previous != phase::detached)
            m_phase = phase::done;
        return previous;
    }

    // Another thread hands the resumption to the loop, unless the loop is gone (see loop_gate).
    void post_delivery() {
        m_gate->post([self = shared_from_this()] {
            if (self->m_gate->open())
                self->deliver();
        });
    }
};

template <class Outcome>
class asio_link final : public asio_link_base {
public:
    using asio_link_base::asio_link_base;

    template <class... Args>
    void complete(Args&&... args) {
        bool here;
        {
            std::lock_guard lock(m_mutex);
            if (m_claimed)
                return;
            m_claimed = true;
            m_outcome.store(std::forward<Args>(args)...);
            if (settle() != phase::waiting)
                return; // still starting (await_suspend carries on), or nobody waits any more
            // On the loop's thread the task resumes right here, as a local operation does;
            // from inside an emit (a cancellation that completed the operation at once) or any
            // other thread, by a post to the loop.
            // (A loop at the address of one that is gone is another loop.)
            here = !m_emitting && tls_loop == m_loop && m_gate->open();
        }
        if (here)
            deliver();
        else
            post_delivery();
    }

    Outcome m_outcome; // written under m_mutex by the completion, read on the loop after it
};

// Gives a handler the loop's executor, or (OnLoop false) none: then Asio uses the I/O object's.
template <class Derived, bool OnLoop>
struct loop_executor_association {};
template <class Derived>
struct loop_executor_association<Derived, true> {
    using executor_type = boost::asio::io_context::executor_type;
    executor_type get_executor() const noexcept {
        return static_cast<const Derived*>(this)->link().m_loop_executor;
    }
};

// The handler of such an operation, with the link's cancellation slot. Its executor: when the
// I/O object belongs to another io_context, that one's (Asio's default), so the operation, its
// steps and its completion stay on that io_context's thread and hold no work on the loop (which
// a loop destroyed meanwhile would not survive); the completion then posts the resumption to
// the loop. When the initiation does not say where it works: the loop's, as Asio's ops expect.
template <class Outcome, bool OnLoop>
class foreign_completion
    : public loop_executor_association<foreign_completion<Outcome, OnLoop>, OnLoop> {
public:
    using cancellation_slot_type = boost::asio::cancellation_slot;

    explicit foreign_completion(std::shared_ptr<asio_link<Outcome>> link) noexcept
        : m_link(std::move(link)) {
        m_link->m_handlers.fetch_add(1, std::memory_order_relaxed);
    }
    foreign_completion(const foreign_completion& other) noexcept : m_link(other.m_link) {
        if (m_link)
            m_link->m_handlers.fetch_add(1, std::memory_order_relaxed);
    }
    foreign_completion(foreign_completion&& other) noexcept = default;
    foreign_completion& operator=(const foreign_completion&) = delete;
    foreign_completion& operator=(foreign_completion&&) = delete;
    ~foreign_completion() {
        if (m_link && m_link->m_handlers.fetch_sub(1, std::memory_order_acq_rel) == 1)
            m_link->abandon();
    }

    cancellation_slot_type get_cancellation_slot() const noexcept {
        return m_link->m_signal.slot();
    }
    const asio_link<Outcome>& link() const noexcept { return *m_link; }

    template <class... Args>
    void operator()(Args&&... args) {
        // This copy is spent: its destruction must not count as one that went uncalled.
        std::shared_ptr<asio_link<Outcome>> link = std::move(m_link);
        link->m_handlers.fetch_sub(1, std::memory_order_acq_rel);
        link->complete(std::forward<Args>(args)...);
    }

private:
    std::shared_ptr<asio_link<Outcome>> m_link;
};

// Installed in the slot of bind_cancellation_slot(slot, use_task): the user's signal cancels
// the operation as well as the task's cancellation does.
struct slot_forwarder {
    std::shared_ptr<asio_link_base> link;
    void operator()(boost::asio::cancellation_type type) { link->emit(type); }
};

struct no_user_slot {};
struct no_executor {};

// The executor of the I/O object an initiation works on: Asio's initiations tell it by
// get_executor(); its adapters (redirect_error, as_tuple, bind_executor, ...) wrap the
// initiation in an init_wrapper whose `initiation_` is the one they wrap.
template <class Initiation>
auto io_executor_of(const Initiation& initiation) {
    if constexpr (requires { initiation.get_executor(); })
        return initiation.get_executor();
    else if constexpr (requires { initiation.initiation_; })
        return io_executor_of(initiation.initiation_);
    else
        return no_executor{};
}

// The executor bind_executor(executor, use_task) gives the handler (its init_wrapper keeps it
// in `ex_`), or no_executor: then the handler runs on the loop's.
template <class Initiation>
auto bound_executor_of(const Initiation& initiation) {
    if constexpr (requires {
                      initiation.ex_;
                      initiation.initiation_;
                  })
        return initiation.ex_;
    else if constexpr (requires { initiation.initiation_; })
        return bound_executor_of(initiation.initiation_);
    else
        return no_executor{};
}

// Does `executor` run its work in `io` (and so on the loop's thread)?
template <class Executor>
bool runs_in(const Executor& executor, boost::asio::io_context& io) noexcept {
    const boost::asio::execution_context* const loop_context = &io;
    if constexpr (requires { boost::asio::query(executor, boost::asio::execution::context); }) {
        const boost::asio::execution_context* const context =
            &boost::asio::query(executor, boost::asio::execution::context);
        return context == loop_context;
    } else if constexpr (requires { executor.context(); }) {
        const boost::asio::execution_context* const context = &executor.context();
        return context == loop_context;
    } else {
        return false;
    }
}

// The awaitable an Asio initiating function returns for use_task: starts the operation when
// awaited. The loop's own operations (the initiation's I/O executor is the loop's) take the
// fast path: the handler points at this awaiter, runs on the loop's thread and resumes the task
// there. Everything else shares an asio_link with its handler (see above).
template <class Initiation, class Arguments, class Outcome, class UserSlot = no_user_slot>
class asio_operation {
public:
    asio_operation(Initiation initiation, Arguments arguments, UserSlot user_slot = {})
        : m_initiation(std::move(initiation)), m_arguments(std::move(arguments)),
          m_user_slot(std::move(user_slot)) {}
    // Only before it was awaited (the adapters' return type takes it over).
    asio_operation(asio_operation&& other) noexcept(
        std::is_nothrow_move_constructible_v<Initiation>&&
            std::is_nothrow_move_constructible_v<Arguments>)
        : m_initiation(std::move(other.m_initiation)), m_arguments(std::move(other.m_arguments)),
          m_user_slot(std::move(other.m_user_slot)) {}
    asio_operation& operator=(asio_operation&&) = delete;
    ~asio_operation() {
        if (m_link) {
            // In flight when the task frame goes (it is destroyed suspended): the handler,
            // when it comes, finds nobody to resume.
            {
                std::lock_guard lock(m_link->m_mutex);
                m_link->m_phase = asio_link_base::phase::detached;
            }
            m_link->m_work.reset();
        }
    }

    bool await_ready() const noexcept { return false; }

    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        loop_core& loop = current_loop("triad::use_task");
        m_loop = &loop;
        static constexpr wait_kind kind{&on_cancel, "triad::use_task"};
        if (!m_wait.begin(h, kind, this))
            return false;
        if constexpr (std::is_same_v<UserSlot, no_user_slot> &&
                      requires { m_initiation.get_executor(); }) {
            if (runs_in(m_initiation.get_executor(), loop.io()))
                return start_local();
        }
        return start_foreign(loop);
    }

    typename Outcome::value_type await_resume() {
        if (m_abandoned) {
            if (m_wait.cancelled())
                throw task_cancelled();
            throw boost::system::system_error(
                boost::asio::error::operation_aborted,
                "triad::use_task: the operation's handler was destroyed without being called "
                "(its io_context was destroyed, or the initiation dropped it)");
        }
        if (m_wait.cancelled()) {
            // A cancellation that came after the operation completed does not throw its result
            // away (bytes read are not lost, as with Asio's awaitable): the result is delivered
            // and the request waits for the task's next suspension.
            if (!m_completed || m_outcome.aborted())
                throw task_cancelled();
            m_wait.request_again();
        }
        return m_outcome.take();
    }

private:
    using link_type = asio_link<Outcome>;
    using io_executor_type = decltype(io_executor_of(std::declval<const Initiation&>()));
    using bound_executor_type = decltype(bound_executor_of(std::declval<const Initiation&>()));
    static constexpr bool knows_io_executor = !std::is_same_v<io_executor_type, no_executor>;
    static constexpr bool has_bound_executor = !std::is_same_v<bound_executor_type, no_executor>;

    // The fast path's handler.
    struct local_completion {
        using executor_type = boost::asio::io_context::executor_type;
        using cancellation_slot_type = boost::asio::cancellation_slot;

        asio_operation* self;

        executor_type get_executor() const noexcept { return self->m_loop->io().get_executor(); }
        cancellation_slot_type get_cancellation_slot() const noexcept {
            return self->m_signal.slot();
        }
        template <class... Args>
        void operator()(Args&&... args) {
            self->complete_local(std::forward<Args>(args)...);
        }
    };

    bool start_local() {
        m_initiating = true;
        try {
            std::apply(
                [&](auto&... arguments) {
                    std::move(m_initiation)(local_completion{this}, std::move(arguments)...);
                },
                m_arguments);
        } catch (...) {
            // Nothing started: a later cancellation must not reach this operation.
            m_initiating = false;
            m_wait.end();
            throw;
        }
        m_initiating = false;
        // Completed while it was being started (Asio ran the handler at once, as dispatch does
        // on the loop's thread): carry on without suspending, rather than be resumed from
        // inside the handler, one call deeper each time.
        return !m_completed;
    }

    template <class... Args>
    void complete_local(Args&&... args) {
        m_outcome.store(std::forward<Args>(args)...);
        if (tls_loop != m_loop) [[unlikely]] {
            // An initiation that named the loop's executor but ran the handler on a thread of
            // its own, not through the handler's executor: the task resumes on the loop.
            boost::asio::post(m_loop->io(), [this] { finish_local(); });
            return;
        }
        finish_local();
    }

    void finish_local() {
        m_completed = true;
        m_wait.end();
        if (m_initiating)
            return; // await_suspend sees m_completed and does not suspend
        detail::resume(m_wait.waiter());
    }

    bool start_foreign(loop_core& loop) {
        m_link = std::make_shared<link_type>(loop);
        m_link->m_deliver = &deliver_foreign;
        m_link->m_op = this;
        if constexpr (knows_io_executor) {
            io_executor_type io_executor = io_executor_of(m_initiation);
            if (!runs_in(io_executor, loop.io()))
                m_io_executor.emplace(std::move(io_executor));
        }
        if constexpr (has_bound_executor) {
            bound_executor_type bound_executor = bound_executor_of(m_initiation);
            if (!runs_in(bound_executor, loop.io()))
                m_bound_executor.emplace(std::move(bound_executor));
        }
        if constexpr (!std::is_same_v<UserSlot, no_user_slot>)
            if (m_user_slot.is_connected())
                m_user_slot.template emplace<slot_forwarder>(slot_forwarder{m_link});
        const auto start = [this](auto handler) {
            std::apply(
                [&](auto&... arguments) {
                    std::move(m_initiation)(std::move(handler), std::move(arguments)...);
                },
                m_arguments);
        };
        try {
            if constexpr (knows_io_executor) {
                if (m_io_executor)
                    start(foreign_completion<Outcome, false>(m_link));
                else
                    start(foreign_completion<Outcome, true>(m_link));
            } else {
                start(foreign_completion<Outcome, true>(m_link));
            }
        } catch (...) {
            {
                std::lock_guard lock(m_link->m_mutex);
                m_link->m_phase = asio_link_base::phase::detached;
            }
            m_link->m_work.reset();
            m_wait.end();
            throw;
        }
        {
            std::lock_guard lock(m_link->m_mutex);
            if (m_link->m_phase == asio_link_base::phase::starting) {
                m_link->m_phase = asio_link_base::phase::waiting;
                return true;
            }
        }
        // Completed (or dropped) while it was being started.
        take_foreign();
        return false;
    }

    static void deliver_foreign(void* op) {
        auto* self = static_cast<asio_operation*>(op);
        self->take_foreign();
        detail::resume(self->m_wait.waiter());
    }

    // Loop thread, once the link's phase is done.
    void take_foreign() {
        {
            std::lock_guard lock(m_link->m_mutex); // the completion wrote under it
            m_outcome = std::move(m_link->m_outcome);
            m_abandoned = m_link->m_abandoned;
        }
        m_link->m_work.reset();
        m_completed = true;
        m_wait.end();
        if constexpr (knows_io_executor) {
            if (m_io_executor && !m_abandoned && m_link->m_signal.slot().has_handler()) {
                // The operation's side may still use the link's signal after the completion:
                // to finish there, and (Boost 1.81's co_spawn, when its handler's executor is
                // another than its own, as with bind_executor) in a post to its executor that
                // forwards a cancellation through a raw pointer into the signal. So the signal
                // goes on that executor, after whatever is queued there now.
                try {
                    boost::asio::post(*m_io_executor, [keep = m_link] {});
                } catch (...) {
                }
            }
        }
    }

    static void on_cancel(void* context) noexcept {
        auto* self = static_cast<asio_operation*>(context);
        if (!self->m_link) {
            // The operation then completes (operation_aborted), which resumes the task.
            self->m_signal.emit(boost::asio::cancellation_type::all);
            return;
        }
        // Asio's cancellation signals are not thread-safe: a cancellation is emitted where
        // the operation's handler runs, since the steps of a composed operation run there and
        // install their own cancellation handlers in the slot. That is the executor given to
        // bind_executor, or else the other io_context's (see foreign_completion), or else the
        // loop's thread. (If nobody runs that executor, the cancellation waits, as the
        // operation does.)
        if constexpr (has_bound_executor) {
            if (self->m_bound_executor && self->post_emit(*self->m_bound_executor))
                return;
        } else if constexpr (knows_io_executor) {
            if (self->m_io_executor && self->post_emit(*self->m_io_executor))
                return;
        }
        self->m_link->emit(boost::asio::cancellation_type::all);
    }

    template <class Executor>
    bool post_emit(const Executor& executor) noexcept {
        try {
            boost::asio::post(executor,
                              [link = m_link] { link->emit(boost::asio::cancellation_type::all); });
            return true;
        } catch (...) {
            return false; // no memory: emitted here, which is better than not at all
        }
    }

    Initiation m_initiation;
    Arguments m_arguments;
    [[no_unique_address]] UserSlot m_user_slot;
    Outcome m_outcome;
    boost::asio::cancellation_signal m_signal;           // the fast path's
    std::shared_ptr<link_type> m_link;                   // the other path's
    std::optional<io_executor_type> m_io_executor;       // set when not the loop's
    std::optional<bound_executor_type> m_bound_executor; // set when not the loop's
    cancellable_wait m_wait;
    loop_core* m_loop = nullptr;
    bool m_initiating = false;
    bool m_completed = false;
    bool m_abandoned = false;
};

// What an Asio adapter around use_task (redirect_error, as_single, ...) returns: its
// async_result needs one return type whatever the initiation, so the operation is awaited
// through a task.
template <class T>
class [[nodiscard]] asio_awaitable {
public:
    template <class Initiation, class Arguments, class Outcome, class UserSlot>
    asio_awaitable(asio_operation<Initiation, Arguments, Outcome, UserSlot>&& operation)
        : m_task(run(std::move(operation))) {}

    auto operator co_await() & { return m_task.operator co_await(); }
    auto operator co_await() && { return std::move(m_task).operator co_await(); }

private:
    template <class Operation>
    static task<T> run(Operation operation) {
        co_return co_await operation;
    }

    task<T> m_task;
};

template <asio_failure Failure, class... Results>
struct use_task_result {
    using outcome_type = asio_outcome<Failure, std::decay_t<Results>...>;
    using return_type = asio_awaitable<typename outcome_type::value_type>;

    template <class Initiation, class... Arguments>
    static auto initiate(Initiation&& initiation, triad::use_task_t, Arguments&&... arguments) {
        return asio_operation<std::decay_t<Initiation>, std::tuple<std::decay_t<Arguments>...>,
                              outcome_type>(
            std::forward<Initiation>(initiation),
            std::tuple<std::decay_t<Arguments>...>(std::forward<Arguments>(arguments)...));
    }
};

// bind_cancellation_slot(slot, use_task): Asio's own adapter would replace the task's slot by
// the user's; this one gives the operation the task's and forwards the user's into it.
template <class Slot, asio_failure Failure, class... Results>
struct use_task_slot_result {
    using outcome_type = asio_outcome<Failure, std::decay_t<Results>...>;
    using return_type = asio_awaitable<typename outcome_type::value_type>;

    template <class Initiation, class Token, class... Arguments>
    static auto initiate(Initiation&& initiation, Token&& token, Arguments&&... arguments) {
        return asio_operation<std::decay_t<Initiation>, std::tuple<std::decay_t<Arguments>...>,
                              outcome_type, Slot>(
            std::forward<Initiation>(initiation),
            std::tuple<std::decay_t<Arguments>...>(std::forward<Arguments>(arguments)...),
            token.get_cancellation_slot());
    }
};

} // namespace detail
} // namespace triad

namespace boost::asio {

template <class... Results>
class async_result<triad::use_task_t, void(boost::system::error_code, Results...)>
    : public triad::detail::use_task_result<triad::detail::asio_failure::error_code, Results...> {};

template <class... Results>
class async_result<triad::use_task_t, void(std::exception_ptr, Results...)>
    : public triad::detail::use_task_result<triad::detail::asio_failure::exception, Results...> {};

template <class... Results>
class async_result<triad::use_task_t, void(Results...)>
    : public triad::detail::use_task_result<triad::detail::asio_failure::none, Results...> {};

template <class Slot, class... Results>
class async_result<cancellation_slot_binder<triad::use_task_t, Slot>,
                   void(boost::system::error_code, Results...)>
    : public triad::detail::use_task_slot_result<Slot, triad::detail::asio_failure::error_code,
                                                 Results...> {};

template <class Slot, class... Results>
class async_result<cancellation_slot_binder<triad::use_task_t, Slot>,
                   void(std::exception_ptr, Results...)>
    : public triad::detail::use_task_slot_result<Slot, triad::detail::asio_failure::exception,
                                                 Results...> {};

template <class Slot, class... Results>
class async_result<cancellation_slot_binder<triad::use_task_t, Slot>, void(Results...)>
    : public triad::detail::use_task_slot_result<Slot, triad::detail::asio_failure::none,
                                                 Results...> {};

} // namespace boost::asio
