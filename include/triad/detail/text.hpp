#pragma once

#include <charconv>
#include <concepts>
#include <string>
#include <string_view>

namespace triad::detail {

// Builds error messages with append() only. (GCC 12 at -O3 raises a false -Wrestrict on
// `"literal" + std::string&&`, GCC bug 105329, which would break users building with -Werror.)
inline void append_text(std::string& out, std::string_view text) {
    out.append(text);
}

template <std::integral Integer>
void append_text(std::string& out, Integer value) {
    char digits[24];
    const auto result = std::to_chars(digits, digits + sizeof digits, value);
    out.append(digits, result.ptr);
}

template <class... Parts>
std::string concat(const Parts&... parts) {
    std::string out;
    (append_text(out, parts), ...);
    return out;
}

} // namespace triad::detail
