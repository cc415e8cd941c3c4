#pragma once

#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/error.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <triad/detail/async_core.hpp>
#include <triad/errors.hpp>

namespace triad {

/**
 * The completion token that makes any Boost.Asio asynchronous operation awaitable in a task:
 * `co_await socket.async_read_some(buffer, triad::use_task)`. The result is the handler's
 * arguments after the error code (nothing, one value, or a tuple); an error code is thrown as
 * `boost::system::system_error`, an exception_ptr (`co_spawn` of an Asio awaitable) is rethrown.
 * The operation may belong to any `io_context`, also one another thread runs: the task is
 * resumed on the loop's thread, and the loop counts the operation as work in flight.
 * Cancelling the task cancels the operation in flight through Asio's per-operation cancellation
 * slot, and the wait throws `triad::task_cancelled`; an operation that had already completed
 * delivers its result instead, and the task sees the cancellation at its next suspension.
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

// The awaitable an Asio initiating function returns for use_task: starts the operation when
// awaited, with a handler bound to the loop's executor, so that whichever io_context runs the
// operation, the task is resumed on the loop's thread, and the loop counts the operation as
// work in flight (Asio tracks outstanding work on a handler's executor) rather than as a
// deadlock.
template <class Initiation, class Arguments, asio_failure Failure, class... Results>
class asio_operation {
public:
    asio_operation(Initiation initiation, Arguments arguments)
        : m_initiation(std::move(initiation)), m_arguments(std::move(arguments)) {}

    bool await_ready() const noexcept { return false; }

    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        loop_core& loop = current_loop("triad::use_task");
        if (!m_wait.begin(h, &on_cancel, this))
            return false;
        m_signal = std::make_unique<boost::asio::cancellation_signal>();
        auto handler = boost::asio::bind_executor(
            loop.io().get_executor(),
            boost::asio::bind_cancellation_slot(m_signal->slot(), completion{this}));
        m_initiating = true;
        try {
            std::apply(
                [&](auto&... arguments) {
                    std::move(m_initiation)(std::move(handler), std::move(arguments)...);
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

    auto await_resume() {
        if (m_wait.cancelled()) {
            // A cancellation that came after the operation completed does not throw its result
            // away (bytes read are not lost, as with Asio's awaitable): the result is delivered
            // and the request waits for the task's next suspension.
            if (!m_completed || aborted())
                throw task_cancelled();
            m_wait.request_again();
        }
        if constexpr (Failure == asio_failure::error_code) {
            if (m_error)
                throw boost::system::system_error(m_error);
        } else if constexpr (Failure == asio_failure::exception) {
            if (m_exception)
                std::rethrow_exception(m_exception);
        }
        if constexpr (sizeof...(Results) == 1)
            return std::move(std::get<0>(*m_results));
        else if constexpr (sizeof...(Results) > 1)
            return std::move(*m_results);
    }

private:
    struct completion {
        asio_operation* self;
        template <class... Args>
        void operator()(Args&&... args) {
            self->complete(std::forward<Args>(args)...);
        }
    };

    template <class... Args>
    void complete(Args&&... args) {
        if constexpr (Failure == asio_failure::none)
            m_results.emplace(std::forward<Args>(args)...);
        else
            store(std::forward<Args>(args)...);
        m_completed = true;
        m_wait.end();
        if (m_initiating)
            return; // await_suspend sees m_completed and does not suspend
        // The handler runs on the loop's thread (it is bound to the loop's executor): resume
        // right here.
        detail::resume(m_wait.waiter());
    }
    template <class... Args>
    void store(const boost::system::error_code& error, Args&&... args) {
        m_error = error;
        m_results.emplace(std::forward<Args>(args)...);
    }
    template <class... Args>
    void store(std::exception_ptr error, Args&&... args) {
        m_exception = std::move(error);
        m_results.emplace(std::forward<Args>(args)...);
    }

    // Did the operation end because it was cancelled?
    bool aborted() const noexcept {
        if constexpr (Failure == asio_failure::error_code)
            return m_error == boost::asio::error::operation_aborted;
        else if constexpr (Failure == asio_failure::exception)
            return is_operation_aborted(m_exception); // how a cancelled Asio coroutine ends
        else
            return false;
    }

    static bool is_operation_aborted(const std::exception_ptr& error) noexcept {
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

    static void on_cancel(void* context) noexcept {
        // The operation then completes (operation_aborted), which resumes the task.
        static_cast<asio_operation*>(context)->m_signal->emit(boost::asio::cancellation_type::all);
    }

    Initiation m_initiation;
    Arguments m_arguments;
    std::unique_ptr<boost::asio::cancellation_signal> m_signal; // a pointer, so this moves
    std::optional<std::tuple<Results...>> m_results;
    boost::system::error_code m_error;
    std::exception_ptr m_exception;
    cancellable_wait m_wait;
    bool m_initiating = false;
    bool m_completed = false;
};

template <asio_failure Failure, class... Results>
struct use_task_result {
    template <class Initiation, class... Arguments>
    static auto initiate(Initiation&& initiation, triad::use_task_t, Arguments&&... arguments) {
        return asio_operation<std::decay_t<Initiation>, std::tuple<std::decay_t<Arguments>...>,
                              Failure, std::decay_t<Results>...>(
            std::forward<Initiation>(initiation),
            std::tuple<std::decay_t<Arguments>...>(std::forward<Arguments>(arguments)...));
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

} // namespace boost::asio
