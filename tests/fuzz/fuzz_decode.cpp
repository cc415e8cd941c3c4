// libFuzzer target for triad's decoder: any input must decode or throw triad::protocol_error,
// never crash, read out of bounds (ASan), overflow the stack on deep nesting, or hold more memory
// than the input's size can justify (the allocation meter below). What decodes must re-encode to
// as many bytes and decode again.

#include "fuzz_types.hpp"

#include <triad/detail/remote.hpp>

#include <sanitizer/allocator_interface.h>
#include <sanitizer/common_interface_defs.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

namespace {

// --- the allocation meter ------------------------------------------------------------------------

// The most memory one decode of an n-byte input may hold at once, from what the decoder promises:
//  - capacity reserved ahead of elements comes out of one budget per message, 4n + 64 KiB
//    (byte_reader's constructor), whatever the counts claim;
//  - every element that exists is backed by its fewest encoded bytes, so elements hold at most
//    n times the largest ratio of an element's memory to its fewest bytes. Among the fuzzed types
//    that is a variant in a vector: a 4-byte index may pick the empty alternative of a variant
//    with room for a tree (28 bytes per input byte; a map node, the next largest, ~11). A vector
//    that grows past what it could reserve holds its old and its doubled buffer at once while
//    it moves: three times that.
//  - 16 KiB for what is not the message's: an exception object and its message.
// Peaks of 45n have been seen (a vector of empty variants just past 1,024 elements). For the
// inputs fuzzed (at most 8 KiB) the limit is below the 16n + 1 MiB one might guess, and far below
// it for small inputs, where the constant would otherwise hide everything: a reservation that
// escaped the budget, such as each level of a deep tree reserving 4n, exceeds it (the
// greedy_chain seed does exactly that).
// -malloc_limit_mb stays as the backstop for one huge allocation, which the meter sees only
// after it succeeded.
constexpr std::size_t reservation_budget_factor = 4;
constexpr std::size_t reservation_budget_slack = 64 * 1024;
constexpr std::size_t element_expansion =
    3 * sizeof(std::variant<std::monostate, fuzz::tree, fuzz::level, fuzz::code, fuzz::shade>) /
    sizeof(std::uint32_t);
constexpr std::size_t overhead_allowance = 16 * 1024;

constexpr std::size_t allocation_limit(std::size_t input_size) {
    return (reservation_budget_factor + element_expansion) * input_size + reservation_budget_slack +
           overhead_allowance;
}

// Counted by the sanitizer allocator's hooks, so every allocation (operator new, malloc, the
// standard library's) is seen; only while a decode runs. One thread: libFuzzer calls us serially.
struct allocation_meter {
    bool armed = false;
    std::size_t input_size = 0;
    std::size_t limit = 0;
    std::size_t live = 0;
    std::size_t peak = 0;
};
allocation_meter g_meter;

// The decode that came closest to its limit, reported at exit so a run shows its margin.
struct closest_decode {
    double fraction = 0;
    std::size_t input_size = 0;
    std::size_t peak = 0;
    const char* type = "nothing";
};
closest_decode g_closest;

void report_closest() {
    std::fprintf(stderr,
                 "fuzz_decode: the hungriest decode held %zu bytes for a %zu-byte input as %s, "
                 "%.0f%% of its limit\n",
                 g_closest.peak, g_closest.input_size, g_closest.type, 100 * g_closest.fraction);
}

void on_malloc(const volatile void*, std::size_t size) {
    if (!g_meter.armed)
        return;
    g_meter.live += size;
    g_meter.peak = std::max(g_meter.peak, g_meter.live);
    if (g_meter.live <= g_meter.limit)
        return;
    g_meter.armed = false;
    // Abort inside the hook, so the report shows the allocation that crossed the line.
    std::fprintf(stderr,
                 "fuzz_decode: one decode of a %zu-byte input holds %zu bytes, more than its "
                 "limit of %zu (this allocation: %zu bytes)\n",
                 g_meter.input_size, g_meter.live, g_meter.limit, size);
    __sanitizer_print_stack_trace();
    std::abort();
}

void on_free(const volatile void* p) {
    if (!g_meter.armed || p == nullptr)
        return;
    // The hook runs before the block is released, so its size is still known. A block from
    // before the decode began (none are expected) must not drive the count below zero.
    const std::size_t size = __sanitizer_get_allocated_size(p);
    g_meter.live -= std::min(size, g_meter.live);
}

class metered {
public:
    metered(std::size_t input_size, const char* type) noexcept : m_type(type) {
        g_meter = {true, input_size, allocation_limit(input_size), 0, 0};
    }
    ~metered() {
        g_meter.armed = false;
        const double fraction = static_cast<double>(g_meter.peak) / g_meter.limit;
        if (fraction > g_closest.fraction)
            g_closest = {fraction, g_meter.input_size, g_meter.peak, m_type};
    }
    metered(const metered&) = delete;
    metered& operator=(const metered&) = delete;

private:
    const char* m_type;
};

// --- decoding and round trips --------------------------------------------------------------------

[[noreturn]] void fail(const char* what, const char* type) {
    std::fprintf(stderr, "fuzz_decode: %s (decoding as %s)\n", what, type);
    std::abort();
}

// What re-encoding a decoded value must give. Every value's encoding has a length fixed by the
// value, so it is always as long as the input; beyond that:
enum class round_trip {
    exact,     // the input's bytes themselves: the type has no associative containers
    canonical, // ordered containers re-encode sorted, and from then on the bytes are fixed
    decodes,   // hash containers re-encode in bucket order, which the decode can change
};

template <class T, round_trip Check>
void decode_as(std::span<const char> bytes, const char* type) {
    std::optional<T> value;
    try {
        metered meter(bytes.size(), type);
        value.emplace(triad::from_bytes<T>(bytes));
    } catch (const triad::protocol_error&) {
        return;
    }
    const std::vector<char> again = triad::to_bytes(*value);
    if (again.size() != bytes.size())
        fail("a decoded value re-encodes to a different length", type);
    if (Check == round_trip::exact && !std::equal(again.begin(), again.end(), bytes.begin()))
        fail("a decoded value re-encodes to different bytes", type);
    T second;
    try {
        second = triad::from_bytes<T>(again);
    } catch (const triad::protocol_error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        fail("a decoded value's re-encoding does not decode", type);
    }
    if (Check != round_trip::decodes && triad::to_bytes(second) != again)
        fail("a re-encoded value does not survive another round trip unchanged", type);
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    if (__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free) == 0) {
        std::fprintf(stderr, "fuzz_decode: cannot install the allocation hooks\n");
        std::abort();
    }
    std::atexit(report_closest);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using enum round_trip;
    const std::span<const char> bytes(reinterpret_cast<const char*>(data), size);
    decode_as<fuzz::message, decodes>(bytes, "message");
    decode_as<std::vector<std::string>, exact>(bytes, "vector<string>");
    decode_as<std::map<std::string, std::vector<fuzz::record>>, canonical>(bytes, "map of records");
    decode_as<triad::detail::chunk_result<std::string>, exact>(bytes, "chunk_result");
    decode_as<fuzz::tree, canonical>(bytes, "tree");
    decode_as<fuzz::forest, canonical>(bytes, "forest");
    decode_as<fuzz::enum_table, decodes>(bytes, "enum_table");
    decode_as<fuzz::enum_row, exact>(bytes, "enum_row");
    // The frame layer: headers are validated before a payload is trusted.
    try {
        triad::detail::frame_parser parser(1 << 20);
        auto& buffer = parser.buffer();
        buffer.ensure_room(size);
        std::copy(bytes.begin(), bytes.end(), buffer.end());
        buffer.grow(size);
        parser.parse(
            [](const triad::detail::frame_header&, triad::detail::byte_reader& payload, bool) {
                decode_as<triad::detail::remote_failure, exact>(
                    std::span(payload.position(), payload.remaining()), "remote_failure");
            });
    } catch (const triad::protocol_error&) {
    }
    return 0;
}
