#include <triad/serialize.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

// The whole file in a namespace of its own: the unity build compiles several test files as one
// translation unit (tests/CMakeLists.txt), where helpers of the same name must not meet.
namespace triad_test_serialize {

namespace {

enum class color : std::uint8_t { red = 1, green = 2 };

struct trip {
    double distance = 0;
    std::string borough;
    std::vector<int> stops;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(distance, borough, stops);
    }
    bool operator==(const trip&) const = default;
};

struct point {
    int x = 0;
    int y = 0;
    bool operator==(const point&) const = default;
};
template <class Archive>
void serialize(Archive& ar, point& p) {
    ar(p.x, p.y);
}

struct no_fields {};

// A tree of nodes: the recursion a hostile message can exploit.
struct node {
    std::vector<node> children;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(children);
    }
};

// `depth` nodes, each the only child of the one before, encoded without recursion (so the
// test itself cannot overflow its stack making them): each level is a count of 1, then the
// child's marker byte.
std::vector<char> nested_nodes(std::size_t depth) {
    std::vector<char> bytes;
    triad::detail::byte_writer writer(bytes);
    for (std::size_t i = 1; i < depth; ++i) {
        writer.write_size(1);
        writer.write_scalar(triad::detail::element_marker);
    }
    writer.write_size(0);
    return bytes;
}

enum plain_enum { plain_a, plain_b };
enum sized_enum : int { sized_a, sized_b };
enum class flag_enum : bool { off, on };

// Counts the bytes a container has allocated at its peak.
inline std::size_t g_live_bytes = 0;
inline std::size_t g_peak_bytes = 0;
template <class T>
struct counting_allocator {
    using value_type = T;
    counting_allocator() = default;
    template <class U>
    counting_allocator(const counting_allocator<U>&) noexcept {}
    T* allocate(std::size_t n) {
        g_live_bytes += n * sizeof(T);
        g_peak_bytes = std::max(g_peak_bytes, g_live_bytes);
        return std::allocator<T>().allocate(n);
    }
    void deallocate(T* p, std::size_t n) noexcept {
        g_live_bytes -= n * sizeof(T);
        std::allocator<T>().deallocate(p, n);
    }
    template <class U>
    bool operator==(const counting_allocator<U>&) const noexcept {
        return true;
    }
};

template <class T>
T round_trip(const T& value) {
    return triad::from_bytes<T>(triad::to_bytes(value));
}

// A message whose 8-byte count at `offset` is replaced by `count`.
std::vector<char> with_count(std::vector<char> bytes, std::size_t offset, std::uint64_t count) {
    std::memcpy(bytes.data() + offset, &count, sizeof count);
    return bytes;
}

} // namespace

TEST_CASE("every supported type survives a round trip, nested", "[serialize]") {
    CHECK(round_trip(42) == 42);
    CHECK(round_trip(-7LL) == -7LL);
    CHECK(round_trip(3.5) == 3.5);
    CHECK(round_trip(true));
    CHECK(round_trip('x') == 'x');
    CHECK(round_trip(color::green) == color::green);
    CHECK(round_trip(std::string("héllo\0world", 12)) == std::string("héllo\0world", 12));
    CHECK(round_trip(std::vector<double>{1.5, -2, 1e300}) == std::vector<double>{1.5, -2, 1e300});
    CHECK(round_trip(std::vector<bool>{true, false, true}) == std::vector<bool>{true, false, true});
    CHECK(round_trip(std::array<int, 3>{1, 2, 3}) == std::array<int, 3>{1, 2, 3});
    CHECK(round_trip(std::pair<int, std::string>{1, "a"}) == std::pair<int, std::string>{1, "a"});
    CHECK(round_trip(std::tuple<int, double, std::string>{1, 2.5, "z"}) ==
          std::tuple<int, double, std::string>{1, 2.5, "z"});
    CHECK(round_trip(std::optional<std::string>{}) == std::nullopt);
    CHECK(round_trip(std::optional<std::string>{"set"}) == std::optional<std::string>{"set"});
    using v = std::variant<std::monostate, int, std::string>;
    CHECK(round_trip(v{std::string("alt")}) == v{std::string("alt")});
    CHECK(round_trip(v{}) == v{});
    const std::map<std::string, std::vector<int>> m{{"a", {1}}, {"b", {2, 3}}};
    CHECK(round_trip(m) == m);
    const std::unordered_map<int, std::string> um{{1, "one"}, {2, "two"}};
    CHECK(round_trip(um) == um);
    CHECK(round_trip(std::set<int>{3, 1, 2}) == std::set<int>{1, 2, 3});
    CHECK(round_trip(std::unordered_set<std::string>{"x", "y"}) ==
          std::unordered_set<std::string>{"x", "y"});
    CHECK(round_trip(std::chrono::milliseconds(1500)) == std::chrono::milliseconds(1500));

    const std::vector<
        std::map<std::string, std::optional<std::tuple<int, std::vector<std::string>>>>>
        nested{
            {{"k", std::tuple<int, std::vector<std::string>>{1, {"p", "q"}}}, {"n", std::nullopt}}};
    CHECK(round_trip(nested) == nested);
}

TEST_CASE("user types serialize through a member or an ADL function", "[serialize]") {
    const trip t{12.5, "Queens", {1, 5, 9}};
    CHECK(round_trip(t) == t);
    CHECK(round_trip(std::vector<trip>{t, t}) == std::vector<trip>{t, t});
    CHECK(round_trip(point{3, -4}) == point{3, -4});
    STATIC_REQUIRE(triad::serializable<trip>);
    STATIC_REQUIRE(triad::serializable<std::map<int, std::vector<point>>>);
}

TEST_CASE("what cannot be sent is rejected at compile time", "[serialize]") {
    STATIC_REQUIRE_FALSE(triad::serializable<int*>);
    STATIC_REQUIRE_FALSE(triad::serializable<std::string_view>);
    STATIC_REQUIRE_FALSE(triad::serializable<const char*>);
    STATIC_REQUIRE_FALSE(triad::serializable<no_fields>);
    STATIC_REQUIRE_FALSE(triad::serializable<std::vector<int*>>);
    STATIC_REQUIRE_FALSE(triad::serializable<std::tuple<int, void*>>);
    STATIC_REQUIRE_FALSE(triad::serializable<std::optional<std::string_view>>);
    // An enum without a fixed underlying type may hold fewer values than its bytes can:
    // decoding one could make a value it cannot hold.
    STATIC_REQUIRE_FALSE(triad::serializable<plain_enum>);
    STATIC_REQUIRE(triad::serializable<sized_enum>);
    STATIC_REQUIRE(triad::serializable<flag_enum>);
}

TEST_CASE("an enum based on bool decodes only 0 or 1", "[serialize]") {
    CHECK(round_trip(flag_enum::on) == flag_enum::on);
    CHECK(round_trip(std::vector<flag_enum>{flag_enum::on, flag_enum::off}) ==
          std::vector<flag_enum>{flag_enum::on, flag_enum::off});
    std::vector<char> bytes = triad::to_bytes(flag_enum::on);
    REQUIRE(bytes.size() == 1);
    bytes[0] = 7;
    CHECK_THROWS_WITH(triad::from_bytes<flag_enum>(bytes), Catch::Contains("bool byte is 7"));
    std::vector<char> many = triad::to_bytes(std::vector<flag_enum>{flag_enum::on});
    many.back() = 7;
    CHECK_THROWS_AS(triad::from_bytes<std::vector<flag_enum>>(many), triad::protocol_error);
}

TEST_CASE("user types nested past the limit are refused, not a stack overflow", "[serialize]") {
    // Within the limit: decoded.
    CHECK_NOTHROW(triad::from_bytes<node>(nested_nodes(triad::default_max_nesting)));
    // 100,000 levels take ~1 MB: without a limit, the decoder's recursion overflows the stack.
    CHECK_THROWS_WITH(triad::from_bytes<node>(nested_nodes(100'000)),
                      Catch::Contains("nested more than 256 levels"));
    CHECK_THROWS_AS(triad::from_bytes<node>(nested_nodes(triad::default_max_nesting + 1)),
                    triad::protocol_error);
    // The limit is the caller's to choose.
    CHECK_NOTHROW(triad::from_bytes<node>(nested_nodes(1000), 1000));
    CHECK_THROWS_AS(triad::from_bytes<node>(nested_nodes(3), 2), triad::protocol_error);
}

TEST_CASE("a hash set of small keys reserves by what can arrive, not by the claimed count",
          "[serialize]") {
    using small_set =
        std::unordered_set<std::uint8_t, std::hash<std::uint8_t>, std::equal_to<std::uint8_t>,
                           counting_allocator<std::uint8_t>>;
    // A million zero bytes claiming a million keys: at most 256 distinct keys can exist, and the
    // second zero is already a duplicate.
    std::vector<char> bytes(8 + 1'000'000, 0);
    const std::uint64_t count = 1'000'000;
    std::memcpy(bytes.data(), &count, sizeof count);
    g_live_bytes = g_peak_bytes = 0;
    CHECK_THROWS_WITH(triad::from_bytes<small_set>(bytes), Catch::Contains("same key"));
    CHECK(g_peak_bytes < 64 * 1024); // reserving a million buckets would be 8 MB
}

TEST_CASE("every truncation of a message is a protocol_error", "[serialize]") {
    const std::vector<char> bytes =
        triad::to_bytes(std::make_tuple(trip{1, "Bronx", {1, 2}}, std::string("tail"),
                                        std::map<int, int>{{1, 2}}, std::optional<double>{2.0}));
    using type = std::tuple<trip, std::string, std::map<int, int>, std::optional<double>>;
    for (std::size_t n = 0; n < bytes.size(); ++n)
        CHECK_THROWS_AS(triad::from_bytes<type>(std::span(bytes.data(), n)), triad::protocol_error);
    CHECK_NOTHROW(triad::from_bytes<type>(bytes));
}

TEST_CASE("a count larger than the message is refused before anything is allocated",
          "[serialize]") {
    const std::vector<char> ints = triad::to_bytes(std::vector<std::uint64_t>{1, 2, 3});
    // 2^60 elements of 8 bytes would be an exabyte; it must fail fast, not try.
    CHECK_THROWS_WITH(
        triad::from_bytes<std::vector<std::uint64_t>>(with_count(ints, 0, 1ull << 60)),
        Catch::Contains("count of 1152921504606846976"));
    const std::vector<char> strings = triad::to_bytes(std::vector<std::string>{"a", "b"});
    CHECK_THROWS_AS(triad::from_bytes<std::vector<std::string>>(with_count(strings, 0, 1ull << 40)),
                    triad::protocol_error);
    const std::vector<char> text = triad::to_bytes(std::string("abc"));
    CHECK_THROWS_AS(triad::from_bytes<std::string>(with_count(text, 0, ~0ull)),
                    triad::protocol_error);
    const std::vector<char> maps = triad::to_bytes(std::map<int, int>{{1, 1}});
    CHECK_THROWS_AS((triad::from_bytes<std::map<int, int>>(with_count(maps, 0, 1ull << 50))),
                    triad::protocol_error);
}

TEST_CASE("corrupt values are protocol errors", "[serialize]") {
    std::vector<char> flag = triad::to_bytes(true);
    flag[0] = 7;
    CHECK_THROWS_WITH(triad::from_bytes<bool>(flag), Catch::Contains("bool"));

    using v = std::variant<int, std::string>;
    std::vector<char> alternative = triad::to_bytes(v{5});
    alternative[0] = 9;
    CHECK_THROWS_WITH(triad::from_bytes<v>(alternative), Catch::Contains("variant index 9"));

    // The same key twice in a map.
    std::vector<char> pairs = triad::to_bytes(std::vector<std::pair<int, int>>{{1, 2}, {1, 3}});
    CHECK_THROWS_WITH((triad::from_bytes<std::map<int, int>>(pairs)), Catch::Contains("same key"));

    std::vector<char> extra = triad::to_bytes(1);
    extra.push_back('!');
    CHECK_THROWS_WITH(triad::from_bytes<int>(extra), Catch::Contains("unexpected bytes"));
}

TEST_CASE("containers of elements that may encode to nothing still bound their counts",
          "[serialize]") {
    const std::vector<std::monostate> empties(5);
    CHECK(round_trip(empties).size() == 5);
    const std::vector<char> bytes = triad::to_bytes(empties);
    CHECK(bytes.size() == 8 + 5); // a marker byte per element
    CHECK_THROWS_AS(
        triad::from_bytes<std::vector<std::monostate>>(with_count(bytes, 0, 1ull << 40)),
        triad::protocol_error);
}

TEST_CASE("a slice of a range encodes exactly as a vector of it", "[serialize]") {
    const std::vector<int> numbers{1, 2, 3, 4, 5};
    std::vector<char> sliced;
    triad::detail::byte_writer writer(sliced);
    triad::detail::encode_sequence(writer, numbers.begin() + 1, 3);
    CHECK(sliced == triad::to_bytes(std::vector<int>{2, 3, 4}));

    const std::vector<std::string> words{"a", "bb", "ccc"};
    std::vector<char> sliced_words;
    triad::detail::byte_writer word_writer(sliced_words);
    triad::detail::encode_sequence(word_writer, words.begin(), 2);
    CHECK(sliced_words == triad::to_bytes(std::vector<std::string>{"a", "bb"}));
}

} // namespace triad_test_serialize
