#pragma once

// The message shapes the fuzzer decodes: every codec rule nested a few levels deep.

#include <triad/serialize.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
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

// Enums at each kind of fixed underlying type: a bool-based one (only 0 and 1 are valid bytes), a
// signed one, a 64-bit one, and an unscoped one with a fixed type.
enum class shade : bool { dark, light };
enum class level : std::int8_t {
    lowest = std::numeric_limits<std::int8_t>::min(),
    none = 0,
    highest = std::numeric_limits<std::int8_t>::max()
};
enum class code : std::int64_t {
    lowest = std::numeric_limits<std::int64_t>::min(),
    none = 0,
    highest = std::numeric_limits<std::int64_t>::max()
};
enum wide : std::uint32_t { wide_none = 0, wide_highest = 0xffff'ffff };

// A recursive user type, reaching itself three ways: through a vector, through a map keyed by an
// enum, and through a variant. Each level costs the decoder one step of its nesting limit. (No
// defaulted operator==: with it, Clang 14 decides the type is not default-constructible while
// it is still incomplete, and the codec then refuses it.)
struct tree {
    shade tone = shade::dark;
    std::vector<tree> children;
    std::map<level, tree> named;
    std::vector<std::variant<std::monostate, code, tree>> mixed;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(tone, children, named, mixed);
    }
};

// Trees nested in containers and variants, beside enums in a set and an array. Ordered containers
// only, so the encoding is canonical once re-encoded.
using forest = std::tuple<tree, std::vector<tree>, std::map<level, std::vector<tree>>,
                          std::optional<tree>, std::set<shade>, std::array<wide, 2>,
                          std::vector<std::variant<std::monostate, tree, level, code, shade>>>;

// Enums as hash keys, and enum sequences both blitted (level) and checked one by one (shade).
using enum_table =
    std::tuple<std::unordered_map<code, std::vector<level>>, std::unordered_set<wide>,
               std::map<shade, std::optional<code>>, std::vector<shade>, std::vector<level>,
               std::array<shade, 3>, std::pair<level, wide>>;

// Every enum alone and in sequences, without associative containers, so a decode that changed a
// value (a bool-based enum's byte 2 read as 0, say) shows as re-encoded bytes that differ.
using enum_row =
    std::tuple<shade, level, code, wide, std::vector<shade>, std::vector<level>, std::vector<code>,
               std::array<shade, 2>, std::optional<shade>, std::variant<shade, level, code, wide>,
               std::vector<std::pair<shade, wide>>>;

enum class path { children, named, mixed };

// A chain of `depth` trees, each the only child of the one before, by way of `via`.
inline tree chain(std::size_t depth, path via) {
    tree root;
    for (std::size_t i = 1; i < depth; ++i) {
        tree parent;
        parent.tone = i % 2 == 0 ? shade::dark : shade::light;
        if (via == path::children)
            parent.children.push_back(std::move(root));
        else if (via == path::named)
            parent.named.emplace(static_cast<level>(i % 256 - 128), std::move(root));
        else
            parent.mixed.emplace_back(std::move(root));
        root = std::move(parent);
    }
    return root;
}

// A bushy tree a few levels deep, its shape drawn from `seed`.
inline tree bush(int seed, int depth) {
    tree t;
    t.tone = seed % 2 == 0 ? shade::light : shade::dark;
    if (depth == 0)
        return t;
    for (int i = 0; i < 1 + seed % 3; ++i)
        t.children.push_back(bush(seed / 2 + i, depth - 1));
    t.named.emplace(level::lowest, bush(seed + 1, depth - 1));
    t.named.emplace(level::highest, tree{});
    t.mixed.emplace_back(code::lowest);
    t.mixed.emplace_back(bush(seed / 3, depth - 1));
    t.mixed.emplace_back(std::monostate{});
    return t;
}

inline forest sample_forest(int seed) {
    forest f;
    std::get<0>(f) = bush(seed, 1 + seed % 3);
    std::get<1>(f) = {tree{}, bush(seed + 7, 1)};
    std::get<2>(f) = {
        {level::lowest, {tree{}}}, {level::none, {}}, {level::highest, {bush(seed, 1)}}};
    if (seed % 2 == 0)
        std::get<3>(f) = bush(seed, 1);
    std::get<4>(f) = {shade::dark, shade::light};
    std::get<5>(f) = {wide_none, wide_highest};
    std::get<6>(f) = {std::monostate{}, bush(seed, 1), level::lowest, code::highest, shade::light};
    return f;
}

inline enum_table sample_enum_table(int seed) {
    enum_table t;
    std::get<0>(t) = {{code::lowest, {level::lowest, level::highest}},
                      {code::highest, {}},
                      {static_cast<code>(seed), {level::none}}};
    std::get<1>(t) = {wide_none, wide_highest, static_cast<wide>(seed)};
    std::get<2>(t) = {{shade::dark, std::nullopt}, {shade::light, code::highest}};
    std::get<3>(t) = {shade::light, shade::dark, shade::light};
    std::get<4>(t) = {level::lowest, level::none, level::highest};
    std::get<5>(t) = {shade::light, shade::dark, shade::light};
    std::get<6>(t) = {level::lowest, wide_highest};
    return t;
}

inline enum_row sample_enum_row(int seed) {
    const bool even = seed % 2 == 0;
    enum_row r{even ? shade::light : shade::dark,
               even ? level::lowest : level::highest,
               even ? code::lowest : code::highest,
               even ? wide_highest : wide_none,
               {shade::light, shade::dark},
               {level::lowest, level::none, level::highest},
               {code::lowest, code::none, code::highest},
               {shade::dark, shade::light},
               std::nullopt,
               level::lowest,
               {{shade::light, wide_highest}}};
    if (seed % 3 == 0)
        std::get<8>(r) = shade::light;
    if (seed % 4 == 1)
        std::get<9>(r) = shade::light;
    else if (seed % 4 == 2)
        std::get<9>(r) = code::highest;
    else if (seed % 4 == 3)
        std::get<9>(r) = wide_highest;
    return r;
}

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
