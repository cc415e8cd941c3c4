#pragma once

// The message shapes the fuzzer decodes: every codec rule nested a few levels deep.

#include <triad/serialize.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace fuzz {

enum class mode : std::uint16_t { a = 1, b = 2 };

struct record {
    std::int64_t id = 0;
    std::string name;
    std::vector<double> values;
    std::optional<mode> flag;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(id, name, values, flag);
    }
};

using message =
    std::tuple<record, std::vector<std::string>, std::map<int, std::optional<double>>,
               std::variant<std::monostate, int, std::string, std::vector<bool>>,
               std::set<std::int64_t>, std::array<std::uint16_t, 3>, std::chrono::nanoseconds,
               std::unordered_map<std::string, std::vector<std::pair<int, bool>>>,
               std::vector<record>>;

inline message sample(int seed) {
    message m;
    std::get<0>(m) = record{seed, "name" + std::to_string(seed), {1.5, 2.5}, mode::b};
    std::get<1>(m) = {"x", std::string(static_cast<std::size_t>(seed % 7), 'y')};
    std::get<2>(m) = {{1, 2.0}, {seed, std::nullopt}};
    if (seed % 3 == 0)
        std::get<3>(m) = std::string("alt");
    else if (seed % 3 == 1)
        std::get<3>(m) = std::vector<bool>{true, false};
    std::get<4>(m) = {seed, -seed, 7};
    std::get<5>(m) = {1, 2, 3};
    std::get<6>(m) = std::chrono::nanoseconds(seed);
    std::get<7>(m) = {{"k", {{1, true}, {2, false}}}};
    std::get<8>(m) = {std::get<0>(m), record{}};
    return m;
}

} // namespace fuzz
