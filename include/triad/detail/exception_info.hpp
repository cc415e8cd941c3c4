#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <typeinfo>

#include <cxxabi.h>

namespace triad::detail {

inline std::string demangle(const char* mangled) {
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> readable(
        abi::__cxa_demangle(mangled, nullptr, nullptr, &status), &std::free);
    return status == 0 && readable ? std::string(readable.get()) : std::string(mangled);
}

// "std::runtime_error: boom" for the exception in `error`, whatever its type.
inline std::string describe_exception(const std::exception_ptr& error) {
    if (!error)
        return "no exception";
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        return demangle(typeid(e).name()) + ": " + e.what();
    } catch (...) {
        const std::type_info* type = abi::__cxa_current_exception_type();
        return type != nullptr ? demangle(type->name()) + " (not derived from std::exception)"
                               : std::string("unknown exception");
    }
}

// Last-resort reporting for exceptions that have nowhere else to go; it must not throw itself.
inline void report_to_stderr(const char* where, const std::exception_ptr& error) noexcept {
    try {
        const std::string text = describe_exception(error);
        std::fprintf(stderr, "%s: %s\n", where, text.c_str());
    } catch (...) {
        std::fprintf(stderr, "%s: an exception was thrown (and describing it failed)\n", where);
    }
}

// Where an exception goes that escaped a callback with nobody to rethrow it to (an `on_ready`
// callback run by whichever thread completed the future). A thread that has a better place than
// stderr, such as a pool worker with its pool's `on_error`, installs one.
class error_sink {
public:
    virtual void report(std::exception_ptr error) noexcept = 0;

protected:
    ~error_sink() = default;
};

inline thread_local error_sink* tls_error_sink = nullptr;

inline void report_unhandled(const char* where, const std::exception_ptr& error) noexcept {
    if (error_sink* sink = tls_error_sink)
        sink->report(error);
    else
        report_to_stderr(where, error);
}

} // namespace triad::detail
