#pragma once

// Command-line sizes for the examples: the whole argument, in range, or a usage error. atoi and
// atol take "12abc" as 12 and "1e99" as 1, strtoul turns "-1" into 2^64-1, and an out-of-range
// number is undefined behaviour there.

#include <charconv>
#include <optional>
#include <string_view>
#include <system_error>

namespace triad_examples {

// argv[index] as a Number in [low, high]; `fallback` when the argument is absent; empty when it
// is not a whole number in range (the caller prints its usage line). Written so that a NaN is out
// of range: "nan" parses as a double, and a NaN duration in sleep_for is undefined behaviour.
template <class Number>
std::optional<Number> argument(int argc, char** argv, int index, Number fallback, Number low,
                               Number high) {
    if (argc <= index)
        return fallback;
    const std::string_view text = argv[index];
    Number value{};
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || !(value >= low && value <= high))
        return std::nullopt;
    return value;
}

} // namespace triad_examples
