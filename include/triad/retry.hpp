#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <exception>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <triad/detail/text.hpp>
#include <triad/errors.hpp>
#include <triad/task.hpp>

namespace triad {

/** How `triad::retry` spaces and limits its attempts. */
struct retry_policy {
    /** Attempts in all, the first included (at least 1). */
    std::size_t attempts = 3;
    /** The wait after the first failure. */
    std::chrono::milliseconds initial_delay{100};
    /** Each wait is this many times the previous one (exponential backoff). */
    double multiplier = 2.0;
    /** No wait is longer than this. */
    std::chrono::milliseconds max_delay{10'000};
    /**
     * Each wait is spread uniformly by this fraction either way (0.1: ±10%), so clients that
     * failed together do not retry together.
     */
    double jitter = 0.1;
    /**
     * Which failures are worth another attempt. Unset: every exception except cancellation.
     * `task_cancelled` is never retried.
     */
    std::function<bool(const std::exception_ptr&)> retry_on{};
};

namespace detail {

// Throws `std::invalid_argument` naming the first field of `policy` that makes no sense.
inline void check_retry_policy(const retry_policy& policy) {
    const auto refuse = [](const char* problem) {
        throw std::invalid_argument(std::string("triad::retry: the policy's ") + problem);
    };
    if (policy.attempts == 0)
        refuse("attempts is 0; it counts the first attempt, so it must be at least 1");
    if (policy.initial_delay.count() < 0)
        refuse("initial_delay is negative");
    if (policy.max_delay.count() < 0)
        refuse("max_delay is negative");
    if (std::isnan(policy.multiplier))
        refuse("multiplier is NaN");
    if (std::isinf(policy.multiplier))
        refuse("multiplier is infinite");
    if (policy.multiplier < 0)
        refuse("multiplier is negative");
    if (std::isnan(policy.jitter))
        refuse("jitter is NaN");
    if (!(policy.jitter >= 0 && policy.jitter <= 1))
        refuse("jitter is outside [0, 1]");
}

// The wait before attempt `attempt` (1-based, > 1), jitter applied with `random` in [0, 1), for
// a policy `check_retry_policy` accepted. Computed in doubles and compared before it becomes a
// duration, so it saturates: never more than `max_delay` (jitter aside), never more than
// `nanoseconds::max()`, whatever the attempt number and however large `max_delay` is.
inline std::chrono::nanoseconds retry_delay(const retry_policy& policy, std::size_t attempt,
                                            double random) {
    using double_ns = std::chrono::duration<double, std::nano>;
    const double initial = double_ns(policy.initial_delay).count();
    const double cap = double_ns(policy.max_delay).count();
    const double growth =
        std::pow(policy.multiplier, static_cast<double>(attempt < 2 ? 0 : attempt - 2));
    // initial * growth: 0 * inf (a zero initial delay, a growth past double) is NaN, not 0.
    double delay = initial == 0 || growth == 0 ? 0.0 : initial * growth;
    delay = std::min(delay, cap);
    delay *= 1.0 + policy.jitter * (2.0 * random - 1.0);
    // The largest nanosecond count is 2^63 - 1; as a double it rounds up to 2^63, which no
    // long long holds, hence >= (and every smaller double converts exactly enough).
    constexpr double limit = static_cast<double>(std::chrono::nanoseconds::max().count());
    if (!(delay < limit))
        return std::chrono::nanoseconds::max();
    return std::chrono::nanoseconds(static_cast<long long>(std::max(0.0, delay)));
}

inline double retry_random() {
    thread_local std::mt19937_64 engine{std::random_device{}()};
    return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
}

template <class F>
using attempt_task_t = std::invoke_result_t<F&>;

template <class T>
struct task_value;
template <class T>
struct task_value<task<T>> {
    using type = T;
};

} // namespace detail

/**
 * Calls `make_attempt()` (which returns a `triad::task<T>`) until one attempt succeeds, waiting
 * with exponential backoff and jitter between attempts, as the Python course's scraper exercise
 * asks. Rethrows the last failure when attempts run out, or at once for a failure `retry_on`
 * rejects. Cancellation is never retried. Throws `std::invalid_argument`, naming the field, when
 * it starts with a policy that has no attempts, a negative delay, a multiplier that is negative,
 * NaN or infinite, or a jitter outside [0, 1] (NaN included). Waits saturate at `max_delay`
 * (and `nanoseconds::max()`), however large it is and however many the attempts.
 *
 * @code
 * auto page = co_await triad::retry({.attempts = 4}, fetch, url); // fetch(url), up to 4 times
 * auto same = co_await triad::retry({.attempts = 4}, [&] { return fetch(url); });
 * @endcode
 *
 * GCC 12 destroys a lambda temporary that captures by copy twice when it is written inside a
 * `co_await` expression (GCC bug 100611: `co_await retry(p, [url] { ... })` is a double free).
 * The `retry(policy, fn, args...)` form needs no lambda; otherwise name the lambda first. The
 * same bug destroys the `retry_on` of a policy built inline in the `co_await` twice
 * (`co_await retry({.retry_on = [tag](auto&) { ... }}, fn)`), and no signature can prevent it:
 * inline, a policy is safe only without `retry_on`. With one, name the policy first (or return
 * it from a function).
 */
template <class F>
auto retry(retry_policy policy, F make_attempt)
    -> task<typename detail::task_value<detail::attempt_task_t<F>>::type> {
    using T = typename detail::task_value<detail::attempt_task_t<F>>::type;
    detail::check_retry_policy(policy);
    for (std::size_t attempt = 1;; ++attempt) {
        std::exception_ptr failure;
        try {
            if constexpr (std::is_void_v<T>) {
                co_await make_attempt();
                co_return;
            } else {
                co_return co_await make_attempt();
            }
        } catch (const task_cancelled&) {
            throw;
        } catch (...) {
            failure = std::current_exception();
        }
        const bool worth_it = policy.retry_on ? policy.retry_on(failure) : true;
        if (!worth_it || attempt >= policy.attempts)
            std::rethrow_exception(failure);
        co_await sleep(detail::retry_delay(policy, attempt + 1, detail::retry_random()));
    }
}

/**
 * `retry(policy, fn, args...)`: retries `fn(args...)`, which returns a `triad::task<T>`. The
 * arguments are copied once and kept until the last attempt (each attempt gets them as
 * lvalues), so `fn` and `args` are safe to write inline in a `co_await`: no lambda temporary for
 * GCC 12 to destroy twice. The policy is not covered: see above for one with `retry_on`.
 */
template <class Fn, class Arg, class... Args>
requires std::invocable < std::decay_t<Fn>
&, std::decay_t<Arg>&,
    std::decay_t<Args>&... > auto retry(retry_policy policy, Fn&& fn, Arg&& arg, Args&&... args) {
    auto attempt = [fn = std::forward<Fn>(fn), arg = std::forward<Arg>(arg),
                    ... args = std::forward<Args>(args)]() mutable {
        return std::invoke(fn, arg, args...);
    };
    return retry(std::move(policy), std::move(attempt));
}

} // namespace triad
