#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include <triad/detail/text.hpp>
#include <triad/errors.hpp>

/// triad's binary codec: what a process pool sends between processes.
///
/// The format is little-endian and positional: integers and floats at their fixed width, sizes
/// as 64-bit counts, `bool` as one byte, `optional` as a flag byte, `variant` as a 32-bit index.
/// The decoder trusts nothing: every read is bounds-checked, every count is checked against
/// the bytes that are left before anything is allocated for it, and leftovers are an error, all
/// reported as `triad::protocol_error`. User types may nest (a tree of nodes), but a message may
/// nest them at most `max_nesting` levels deep (default `triad::default_max_nesting`), so a
/// hostile or mistaken message cannot exhaust the decoding thread's stack.
namespace triad {

/** How deep user types may nest in one decoded message, unless a caller says otherwise. */
inline constexpr std::size_t default_max_nesting = 256;

namespace detail {

static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big,
              "triad's codec needs a little- or big-endian host");

template <class T>
T to_little_endian(T value) noexcept {
    if constexpr (std::endian::native == std::endian::big && sizeof(T) > 1) {
        auto bytes = std::bit_cast<std::array<unsigned char, sizeof(T)>>(value);
        for (std::size_t i = 0; i < sizeof(T) / 2; ++i)
            std::swap(bytes[i], bytes[sizeof(T) - 1 - i]);
        return std::bit_cast<T>(bytes);
    } else {
        return value;
    }
}

/// Appends encoded bytes to a buffer.
class byte_writer {
public:
    explicit byte_writer(std::vector<char>& out) noexcept : m_out(&out) {}

    void write_bytes(const void* data, std::size_t size) {
        const auto* p = static_cast<const char*>(data);
        m_out->insert(m_out->end(), p, p + size);
    }

    template <class T>
    void write_scalar(T value) {
        static_assert(std::is_trivially_copyable_v<T>);
        value = to_little_endian(value);
        write_bytes(&value, sizeof value);
    }

    void write_size(std::size_t n) { write_scalar<std::uint64_t>(n); }

    std::vector<char>& buffer() noexcept { return *m_out; }

private:
    std::vector<char>* m_out;
};

/// Reads encoded bytes, checking every step.
class byte_reader {
public:
    byte_reader(const char* data, std::size_t size,
                std::size_t max_nesting = default_max_nesting) noexcept
        : m_pos(data), m_end(data + size), m_nesting_left(max_nesting), m_max_nesting(max_nesting),
          m_reserve_budget(4 * size + 64 * 1024) {}

    // Memory decoding may reserve ahead of what arrives, for the whole message: four times its
    // size. Without a shared budget, nested containers could each reserve that much.
    bool take_reservation(std::size_t bytes) noexcept {
        if (bytes > m_reserve_budget)
            return false;
        m_reserve_budget -= bytes;
        return true;
    }

    // One level deeper into a user type; a message nested deeper than the limit is refused
    // before the recursion can exhaust the stack.
    void enter_nested() {
        if (m_nesting_left == 0)
            throw protocol_error(concat("triad: corrupt or hostile message: user types nested more "
                                        "than ",
                                        m_max_nesting,
                                        " levels deep (the decoder's limit; "
                                        "process_pool_options::max_nesting raises it)"));
        --m_nesting_left;
    }
    void leave_nested() noexcept { ++m_nesting_left; }

    std::size_t remaining() const noexcept { return static_cast<std::size_t>(m_end - m_pos); }
    const char* position() const noexcept { return m_pos; }

    void need(std::size_t size) const {
        if (size > remaining())
            throw protocol_error(concat("triad: truncated message: ", size, " more bytes needed, ",
                                        remaining(), " left"));
    }

    void read_bytes(void* data, std::size_t size) {
        need(size);
        if (size != 0)
            std::memcpy(data, m_pos, size);
        m_pos += size;
    }

    const char* skip(std::size_t size) {
        need(size);
        const char* start = m_pos;
        m_pos += size;
        return start;
    }

    template <class T>
    T read_scalar() {
        T value;
        read_bytes(&value, sizeof value);
        return to_little_endian(value);
    }

    // A count of elements that each take at least `min_element_size` bytes: a count the
    // remaining bytes cannot back is corrupt, whatever it claims.
    std::size_t read_count(std::size_t min_element_size) {
        const auto count = read_scalar<std::uint64_t>();
        const std::size_t per = min_element_size == 0 ? 1 : min_element_size;
        if (count > remaining() / per)
            throw protocol_error(concat("triad: corrupt message: a count of ", count,
                                        " elements needs at least ", per, " bytes each, but only ",
                                        remaining(), " bytes are left"));
        return static_cast<std::size_t>(count);
    }

    void expect_end() const {
        if (remaining() != 0)
            throw protocol_error(
                concat("triad: corrupt message: ", remaining(), " unexpected bytes at the end"));
    }

private:
    const char* m_pos;
    const char* m_end;
    std::size_t m_nesting_left;
    std::size_t m_max_nesting;
    std::size_t m_reserve_budget;
};

template <class T, class = void>
struct codec; // no definition: not serializable unless specialised below

template <class T, class = void>
struct has_codec : std::false_type {};
template <class T>
struct has_codec<T, std::void_t<decltype(codec<T>::supported)>>
    : std::bool_constant<codec<T>::supported> {};

} // namespace detail

/**
 * A type the codec can send between processes: arithmetic types, enums with a fixed underlying
 * type (`enum class`, `enum E : int`), `std::string`,
 * `std::vector`, `std::array`, `std::pair`, `std::tuple`, `std::optional`, `std::variant`,
 * `std::map`, `std::unordered_map`, `std::set`, `std::unordered_set`, `std::chrono::duration`,
 * nested in any way, and your own default-constructible types that list their fields:
 *
 * @code
 * struct trip {
 *     double distance;
 *     std::string borough;
 *     template <class Archive> void serialize(Archive& ar) { ar(distance, borough); }
 * };
 * // or, without touching the type, a free function found by ADL:
 * template <class Archive> void serialize(Archive& ar, trip& t) { ar(t.distance, t.borough); }
 * @endcode
 */
template <class T>
concept serializable = detail::has_codec<std::remove_cv_t<T>>::value;

/** The archive handed to a `serialize` customization when encoding. */
class encoder {
public:
    explicit encoder(detail::byte_writer& out) noexcept : m_out(&out) {}
    template <class... T>
    void operator()(const T&... fields);
    detail::byte_writer& writer() noexcept { return *m_out; }

private:
    detail::byte_writer* m_out;
};

/** The archive handed to a `serialize` customization when decoding. */
class decoder {
public:
    explicit decoder(detail::byte_reader& in) noexcept : m_in(&in) {}
    template <class... T>
    void operator()(T&... fields);
    detail::byte_reader& reader() noexcept { return *m_in; }

private:
    detail::byte_reader* m_in;
};

namespace detail {

// Refuses a type that cannot be sent, naming it. Every encode and decode path for a type calls
// this one specialization, which the compiler instantiates once, so a type is refused once;
// callers call it only where `serializable` is false and skip the rest of their work for that
// type, so nothing else fails after it. (The check is a function, not a class whose `value`
// callers test: Clang poisons a class whose instantiation failed, and every later use of it
// would be an error of its own.)
template <class T>
void refuse_unserializable() {
    static_assert(serializable<T>,
                  "triad: this type cannot be sent between processes. Use arithmetic types, "
                  "enums with a fixed underlying type (enum class, or enum E : int; a plain enum "
                  "may hold fewer values than its bytes can, so decoding it could be undefined), "
                  "std::string and standard containers of them, or give your type a "
                  "member `template <class Archive> void serialize(Archive& ar) { ar(field1, "
                  "field2); }` (or a free serialize(Archive&, T&) found by ADL). Pointers, "
                  "references, std::string_view and callables cannot be sent: send the data.");
}

template <class T>
void encode_value(byte_writer& out, const T& value) {
    if constexpr (serializable<T>)
        codec<std::remove_cv_t<T>>::encode(out, value);
    else
        refuse_unserializable<std::remove_cv_t<T>>();
}

template <class T>
void decode_value(byte_reader& in, T& value) {
    if constexpr (serializable<T>)
        codec<std::remove_cv_t<T>>::decode(in, value);
    else
        refuse_unserializable<std::remove_cv_t<T>>();
}

// The fewest bytes a T can encode to; 0 when unknown (user types) or truly empty.
template <class T>
constexpr std::size_t min_size_of() {
    if constexpr (has_codec<std::remove_cv_t<T>>::value)
        return codec<std::remove_cv_t<T>>::min_size;
    else
        return 0;
}

// Elements that may encode to nothing (std::monostate, user types, which may have no fields)
// carry a one-byte marker in containers, so a container's count is always backed by bytes.
inline constexpr std::uint8_t element_marker = 0xE1;

template <class T>
inline constexpr bool needs_marker = min_size_of<T>() == 0;

template <class T>
void encode_element(byte_writer& out, const T& value) {
    if constexpr (needs_marker<T>)
        out.write_scalar(element_marker);
    encode_value(out, value);
}

template <class T>
void decode_element(byte_reader& in, T& value) {
    if constexpr (needs_marker<T>) {
        if (in.read_scalar<std::uint8_t>() != element_marker)
            throw protocol_error("triad: corrupt message: bad element marker");
    }
    decode_value(in, value);
}

template <class T>
constexpr std::size_t element_min_size() {
    return needs_marker<T> ? 1 : min_size_of<T>();
}

// A decoded container may reserve up front only while that stays proportional to the bytes
// really left; beyond that it grows as elements actually arrive. Hash containers reserve
// buckets (a pointer each), not elements, and a set of small keys holds few distinct values
// whatever the count claims: they reserve at most 1,024 and grow with what arrives.
template <class T, class Container>
void reserve_bounded(Container& c, std::size_t count, byte_reader& in) {
    if constexpr (requires { c.bucket_count(); }) {
        const std::size_t buckets = std::min<std::size_t>(count, 1024);
        if (in.take_reservation(buckets * sizeof(void*)))
            c.reserve(buckets);
    } else if (count <= (in.remaining() + 4096) / sizeof(T) * 4 &&
               in.take_reservation(count * sizeof(T))) {
        c.reserve(count);
    }
}

// --- scalars -----------------------------------------------------------------------------------

template <class T>
struct codec<T, std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>>> {
    static constexpr bool supported = true;
    static constexpr std::size_t min_size = sizeof(T);
    static void encode(byte_writer& out, const T& v) { out.write_scalar(v); }
    static void decode(byte_reader& in, T& v) { v = in.read_scalar<T>(); }
};

template <>
struct codec<bool> {
    static constexpr bool supported = true;
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& out, const bool& v) {
        out.write_scalar<std::uint8_t>(v ? 1 : 0);
    }
    static void decode(byte_reader& in, bool& v) {
        const auto byte = in.read_scalar<std::uint8_t>();
        if (byte > 1)
            throw protocol_error(concat("triad: corrupt message: bool byte is ", byte));
        v = byte == 1;
    }
};

// An enum whose underlying type is fixed (every `enum class`, and `enum E : int`) can hold
// every value of that type. One without a fixed type can hold only the values of the smallest
// bit-field that fits its enumerators, which C++ gives no way to ask for: decoding into it could
// make a value it cannot hold, which is undefined behaviour. Such enums are not sendable.
template <class T>
concept enum_with_fixed_type = std::is_enum_v<T> && requires {
    T{std::underlying_type_t<T>{}};
};

template <class T>
struct codec<T, std::enable_if_t<std::is_enum_v<T>>> {
    using underlying = std::underlying_type_t<T>;
    static constexpr bool supported = enum_with_fixed_type<T>;
    static constexpr std::size_t min_size = sizeof(underlying);
    static void encode(byte_writer& out, const T& v) {
        if constexpr (std::is_same_v<underlying, bool>)
            codec<bool>::encode(out, static_cast<bool>(v));
        else
            out.write_scalar(static_cast<underlying>(v));
    }
    static void decode(byte_reader& in, T& v) {
        if constexpr (std::is_same_v<underlying, bool>) {
            bool value = false;
            codec<bool>::decode(in, value); // a bool-based enum holds 0 or 1, nothing else
            v = static_cast<T>(value);
        } else {
            v = static_cast<T>(in.read_scalar<underlying>());
        }
    }
};

template <>
struct codec<std::monostate> {
    static constexpr bool supported = true;
    static constexpr std::size_t min_size = 0;
    static void encode(byte_writer&, const std::monostate&) {}
    static void decode(byte_reader&, std::monostate&) {}
};

template <class Rep, class Period>
struct codec<std::chrono::duration<Rep, Period>> {
    static constexpr bool supported = serializable<Rep>;
    static constexpr std::size_t min_size = sizeof(Rep);
    static void encode(byte_writer& out, const std::chrono::duration<Rep, Period>& v) {
        encode_value(out, v.count());
    }
    static void decode(byte_reader& in, std::chrono::duration<Rep, Period>& v) {
        Rep count{};
        decode_value(in, count);
        v = std::chrono::duration<Rep, Period>(count);
    }
};

// Element types whose encoding is their bytes: sequences of them travel as one block.
template <class T>
constexpr bool blittable_enum() {
    if constexpr (enum_with_fixed_type<T>)
        return !std::is_same_v<std::underlying_type_t<T>, bool>;
    else
        return false;
}
template <class T>
inline constexpr bool
    is_blittable = (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) || blittable_enum<T>();

// --- strings and sequences ---------------------------------------------------------------------

template <class Char, class Traits, class Alloc>
struct codec<std::basic_string<Char, Traits, Alloc>> {
    static constexpr bool supported = is_blittable<Char>;
    static constexpr std::size_t min_size = 8;
    using string_type = std::basic_string<Char, Traits, Alloc>;
    static void encode(byte_writer& out, const string_type& s) {
        out.write_size(s.size());
        if constexpr (std::endian::native == std::endian::little || sizeof(Char) == 1)
            out.write_bytes(s.data(), s.size() * sizeof(Char));
        else
            for (Char c : s)
                out.write_scalar(c);
    }
    static void decode(byte_reader& in, string_type& s) {
        const std::size_t n = in.read_count(sizeof(Char));
        s.resize(n);
        if constexpr (std::endian::native == std::endian::little || sizeof(Char) == 1)
            in.read_bytes(s.data(), n * sizeof(Char));
        else
            for (Char& c : s)
                c = in.read_scalar<Char>();
    }
};

template <class T, class Alloc>
struct codec<std::vector<T, Alloc>> {
    static constexpr bool supported = serializable<T>;
    static constexpr std::size_t min_size = 8;
    static void encode(byte_writer& out, const std::vector<T, Alloc>& v) {
        out.write_size(v.size());
        if constexpr (is_blittable<T> && std::endian::native == std::endian::little) {
            out.write_bytes(v.data(), v.size() * sizeof(T));
        } else {
            for (const auto& element : v)
                encode_element(out, static_cast<const T&>(element));
        }
    }
    static void decode(byte_reader& in, std::vector<T, Alloc>& v) {
        const std::size_t n = in.read_count(element_min_size<T>());
        v.clear();
        if constexpr (is_blittable<T> && std::endian::native == std::endian::little) {
            v.resize(n);
            in.read_bytes(v.data(), n * sizeof(T));
        } else {
            reserve_bounded<T>(v, n, in);
            for (std::size_t i = 0; i < n; ++i) {
                T element{};
                decode_element(in, element);
                v.push_back(std::move(element));
            }
        }
    }
};

template <class T, std::size_t N>
struct codec<std::array<T, N>> {
    static constexpr bool supported = serializable<T>;
    static constexpr std::size_t min_size = N * min_size_of<T>();
    static void encode(byte_writer& out, const std::array<T, N>& a) {
        for (const T& element : a)
            encode_value(out, element);
    }
    static void decode(byte_reader& in, std::array<T, N>& a) {
        for (T& element : a)
            decode_value(in, element);
    }
};

// Encodes `count` elements from `first` exactly as a std::vector of them would be encoded, so
// a slice of any range can be sent without copying it into a vector first.
template <class It>
void encode_sequence(byte_writer& out, It first, std::size_t count) {
    using T = std::iter_value_t<It>;
    out.write_size(count);
    if constexpr (is_blittable<T> && std::endian::native == std::endian::little &&
                  std::contiguous_iterator<It>) {
        out.write_bytes(std::to_address(first), count * sizeof(T));
    } else {
        for (std::size_t i = 0; i < count; ++i, ++first)
            encode_element(out, static_cast<const T&>(*first));
    }
}

// --- products and sums -------------------------------------------------------------------------

template <class A, class B>
struct codec<std::pair<A, B>> {
    static constexpr bool supported = serializable<A> && serializable<B>;
    static constexpr std::size_t min_size = min_size_of<A>() + min_size_of<B>();
    static void encode(byte_writer& out, const std::pair<A, B>& p) {
        encode_value(out, p.first);
        encode_value(out, p.second);
    }
    static void decode(byte_reader& in, std::pair<A, B>& p) {
        decode_value(in, p.first);
        decode_value(in, p.second);
    }
};

template <class... T>
struct codec<std::tuple<T...>> {
    static constexpr bool supported = (serializable<T> && ...);
    static constexpr std::size_t min_size = (std::size_t{0} + ... + min_size_of<T>());
    static void encode(byte_writer& out, const std::tuple<T...>& t) {
        std::apply([&out](const auto&... e) { (encode_value(out, e), ...); }, t);
    }
    static void decode(byte_reader& in, std::tuple<T...>& t) {
        std::apply([&in](auto&... e) { (decode_value(in, e), ...); }, t);
    }
};

template <class T>
struct codec<std::optional<T>> {
    static constexpr bool supported = serializable<T>;
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& out, const std::optional<T>& o) {
        out.write_scalar<std::uint8_t>(o ? 1 : 0);
        if (o)
            encode_value(out, *o);
    }
    static void decode(byte_reader& in, std::optional<T>& o) {
        bool present = false;
        codec<bool>::decode(in, present);
        if (!present) {
            o.reset();
            return;
        }
        T value{};
        decode_value(in, value);
        o = std::move(value);
    }
};

template <class... T>
struct codec<std::variant<T...>> {
    static constexpr bool supported = (serializable<T> && ...);
    static constexpr std::size_t min_size = 4;
    static void encode(byte_writer& out, const std::variant<T...>& v) {
        if (v.valueless_by_exception())
            throw protocol_error("triad: cannot encode a valueless std::variant");
        out.write_scalar<std::uint32_t>(static_cast<std::uint32_t>(v.index()));
        std::visit([&out](const auto& alternative) { encode_value(out, alternative); }, v);
    }
    static void decode(byte_reader& in, std::variant<T...>& v) {
        const auto index = in.read_scalar<std::uint32_t>();
        if (index >= sizeof...(T))
            throw protocol_error(concat("triad: corrupt message: variant index ", index,
                                        " but the variant has ", sizeof...(T), " alternatives"));
        decode_alternative(in, v, index, std::index_sequence_for<T...>{});
    }

private:
    template <std::size_t... I>
    static void decode_alternative(byte_reader& in, std::variant<T...>& v, std::size_t index,
                                   std::index_sequence<I...>) {
        (void)((index == I ? (decode_value(in, v.template emplace<I>()), true) : false) || ...);
    }
};

// --- associative containers ----------------------------------------------------------------------

template <class Container, class Key, class Value>
struct map_codec {
    static constexpr bool supported = serializable<Key> && serializable<Value>;
    static constexpr std::size_t min_size = 8;
    using entry = std::pair<Key, Value>;
    static void encode(byte_writer& out, const Container& m) {
        out.write_size(m.size());
        for (const auto& [key, value] : m) {
            if constexpr (needs_marker<entry>)
                out.write_scalar(element_marker);
            encode_value(out, key);
            encode_value(out, value);
        }
    }
    static void decode(byte_reader& in, Container& m) {
        const std::size_t n = in.read_count(element_min_size<entry>());
        m.clear();
        if constexpr (requires { m.reserve(n); })
            reserve_bounded<std::pair<Key, Value>>(m, n, in);
        for (std::size_t i = 0; i < n; ++i) {
            Key key{};
            Value value{};
            if constexpr (needs_marker<entry>) {
                if (in.read_scalar<std::uint8_t>() != element_marker)
                    throw protocol_error("triad: corrupt message: bad element marker");
            }
            decode_value(in, key);
            decode_value(in, value);
            if (!m.emplace(std::move(key), std::move(value)).second)
                throw protocol_error("triad: corrupt message: a map holds the same key twice");
        }
    }
};

template <class Container, class Key>
struct set_codec {
    static constexpr bool supported = serializable<Key>;
    static constexpr std::size_t min_size = 8;
    static void encode(byte_writer& out, const Container& s) {
        out.write_size(s.size());
        for (const auto& key : s)
            encode_element(out, key);
    }
    static void decode(byte_reader& in, Container& s) {
        const std::size_t n = in.read_count(element_min_size<Key>());
        s.clear();
        if constexpr (requires { s.reserve(n); })
            reserve_bounded<Key>(s, n, in);
        for (std::size_t i = 0; i < n; ++i) {
            Key key{};
            decode_element(in, key);
            if (!s.insert(std::move(key)).second)
                throw protocol_error("triad: corrupt message: a set holds the same key twice");
        }
    }
};

template <class K, class V, class C, class A>
struct codec<std::map<K, V, C, A>> : map_codec<std::map<K, V, C, A>, K, V> {};
template <class K, class V, class H, class E, class A>
struct codec<std::unordered_map<K, V, H, E, A>>
    : map_codec<std::unordered_map<K, V, H, E, A>, K, V> {};
template <class K, class C, class A>
struct codec<std::set<K, C, A>> : set_codec<std::set<K, C, A>, K> {};
template <class K, class H, class E, class A>
struct codec<std::unordered_set<K, H, E, A>> : set_codec<std::unordered_set<K, H, E, A>, K> {};

// --- user types --------------------------------------------------------------------------------

// Stands in for both archives when checking that a type has a serialize customization.
struct probe_archive {
    template <class... T>
    void operator()(T&...) {}
};

template <class T>
concept has_member_serialize = requires(T& value, probe_archive& ar) {
    value.serialize(ar);
};

template <class T>
concept has_adl_serialize = requires(T& value, probe_archive& ar) {
    serialize(ar, value);
};

template <class T>
struct codec<
    T, std::enable_if_t<std::is_class_v<T> && (has_member_serialize<T> || has_adl_serialize<T>)>> {
    static constexpr bool supported = std::is_default_constructible_v<T>;
    static constexpr std::size_t min_size = 0;
    static void encode(byte_writer& out, const T& value) {
        encoder ar(out);
        // The customization takes a non-const object so one function serves both directions;
        // the encoder only ever reads from it.
        T& fields = const_cast<T&>(value);
        if constexpr (has_member_serialize<T>)
            fields.serialize(ar);
        else
            serialize(ar, fields);
    }
    static void decode(byte_reader& in, T& value) {
        // User types are where recursion can happen (a node holding a vector of nodes).
        in.enter_nested();
        struct leave {
            byte_reader& in;
            ~leave() { in.leave_nested(); }
        } level{in};
        decoder ar(in);
        if constexpr (has_member_serialize<T>)
            value.serialize(ar);
        else
            serialize(ar, value);
    }
};

} // namespace detail

template <class... T>
void encoder::operator()(const T&... fields) {
    (detail::encode_value(*m_out, fields), ...);
}

template <class... T>
void decoder::operator()(T&... fields) {
    (detail::decode_value(*m_in, fields), ...);
}

/**
 * Appends the encoding of `value` to `out`. A `T` that is not `triad::serializable` is a
 * compile-time error that names it and says what can be sent instead.
 */
template <class T>
void encode_to(std::vector<char>& out, const T& value) {
    detail::byte_writer writer(out);
    detail::encode_value(writer, value);
}

/** The encoding of `value`. */
template <class T>
std::vector<char> to_bytes(const T& value) {
    std::vector<char> out;
    encode_to(out, value);
    return out;
}

/**
 * Decodes a `T` that must fill `bytes` exactly. Throws `triad::protocol_error` if the bytes are
 * truncated, corrupt, claim more than they hold, nest user types deeper than `max_nesting`, or
 * carry anything after the value.
 */
template <class T>
T from_bytes(std::span<const char> bytes, std::size_t max_nesting = default_max_nesting) {
    if constexpr (serializable<T>) {
        detail::byte_reader reader(bytes.data(), bytes.size(), max_nesting);
        T value{};
        detail::decode_value(reader, value);
        reader.expect_end();
        return value;
    } else {
        detail::refuse_unserializable<std::remove_cv_t<T>>();
        // Nothing here may use T (it may be a reference, or have no default constructor), and
        // a call that does not return keeps the compiler from adding a missing-return
        // diagnostic to that one error.
        std::terminate();
    }
}

} // namespace triad
