#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace triad::detail {

template <class Signature>
class unique_function;

// A move-only std::function (C++23's std::move_only_function, which GCC 12 offers only in C++23
// mode): options such as a pool's initializer may own what they use, a std::unique_ptr included.
template <class R, class... Args>
class unique_function<R(Args...)> {
public:
    unique_function() noexcept = default;
    unique_function(std::nullptr_t) noexcept {}

    template <class Fn>
    requires(!std::is_same_v<std::remove_cvref_t<Fn>, unique_function> &&
             std::is_invocable_r_v<R, std::decay_t<Fn>&, Args...>)
        unique_function(Fn&& fn) { // NOLINT(google-explicit-constructor): like std::function
        using stored = std::decay_t<Fn>;
        if constexpr (std::is_pointer_v<stored> || std::is_member_pointer_v<stored> ||
                      requires { fn == nullptr; })
            if (fn == nullptr)
                return;
        m_target = std::make_unique<model<stored>>(std::forward<Fn>(fn));
    }

    unique_function(unique_function&&) noexcept = default;
    unique_function& operator=(unique_function&&) noexcept = default;
    unique_function(const unique_function&) = delete;
    unique_function& operator=(const unique_function&) = delete;
    ~unique_function() = default;

    explicit operator bool() const noexcept { return m_target != nullptr; }

    R operator()(Args... args) const {
        if (m_target == nullptr)
            throw std::bad_function_call();
        return m_target->call(std::forward<Args>(args)...);
    }

private:
    struct concept_base {
        virtual ~concept_base() = default;
        virtual R call(Args&&... args) = 0;
    };
    template <class Fn>
    struct model final : concept_base {
        template <class F>
        explicit model(F&& f) : fn(std::forward<F>(f)) {}
        R call(Args&&... args) override {
            if constexpr (std::is_void_v<R>)
                std::invoke(fn, std::forward<Args>(args)...);
            else
                return std::invoke(fn, std::forward<Args>(args)...);
        }
        Fn fn;
    };

    std::unique_ptr<concept_base> m_target;
};

} // namespace triad::detail
