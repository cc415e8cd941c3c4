#pragma once

#include <coroutine>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
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
 * `boost::system::system_error`. Cancelling the task cancels the operation in flight through
 * Asio's per-operation cancellation slot, and the wait throws `triad::task_cancelled`.
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

// The awaitable an Asio initiating function returns for use_task: starts the operation when
// awaited, with a handler that resumes the task on the loop's thread.
template <class Initiation, class Arguments, bool HasErrorCode, class... Results>
class asio_operation {
public:
    asio_operation(Initiation initiation, Arguments arguments)
        : m_initiation(std::move(initiation)), m_arguments(std::move(arguments)) {}

    bool await_ready() const noexcept { return false; }

    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        if (!m_wait.begin(h, &on_cancel, this))
            return false;
        m_signal = std::make_unique<boost::asio::cancellation_signal>();
        auto handler = boost::asio::bind_cancellation_slot(m_signal->slot(), completion{this});
        std::apply(
            [&](auto&... arguments) {
                std::move(m_initiation)(std::move(handler), std::move(arguments)...);
            },
            m_arguments);
        return true;
    }

    auto await_resume() {
        m_wait.throw_if_cancelled();
        if (m_error)
            throw boost::system::system_error(m_error);
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
        if constexpr (HasErrorCode)
            store(std::forward<Args>(args)...);
        else
            m_results.emplace(std::forward<Args>(args)...);
        m_wait.end();
        // An Asio handler runs on the loop's thread, inside the loop: resume right here.
        detail::resume(m_wait.waiter());
    }
    template <class... Args>
    void store(const boost::system::error_code& error, Args&&... args) {
        m_error = error;
        m_results.emplace(std::forward<Args>(args)...);
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
    cancellable_wait m_wait;
};

} // namespace detail
} // namespace triad

namespace boost::asio {

template <class... Results>
class async_result<triad::use_task_t, void(boost::system::error_code, Results...)> {
public:
    template <class Initiation, class... Arguments>
    static auto initiate(Initiation&& initiation, triad::use_task_t, Arguments&&... arguments) {
        return triad::detail::asio_operation<std::decay_t<Initiation>,
                                             std::tuple<std::decay_t<Arguments>...>, true,
                                             std::decay_t<Results>...>(
            std::forward<Initiation>(initiation),
            std::tuple<std::decay_t<Arguments>...>(std::forward<Arguments>(arguments)...));
    }
};

template <class... Results>
class async_result<triad::use_task_t, void(Results...)> {
public:
    template <class Initiation, class... Arguments>
    static auto initiate(Initiation&& initiation, triad::use_task_t, Arguments&&... arguments) {
        return triad::detail::asio_operation<std::decay_t<Initiation>,
                                             std::tuple<std::decay_t<Arguments>...>, false,
                                             std::decay_t<Results>...>(
            std::forward<Initiation>(initiation),
            std::tuple<std::decay_t<Arguments>...>(std::forward<Arguments>(arguments)...));
    }
};

} // namespace boost::asio
