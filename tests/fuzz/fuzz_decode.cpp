// libFuzzer target for triad's decoder: any input must decode or throw triad::protocol_error,
// never crash, read out of bounds (ASan) or allocate what it does not deliver (-malloc_limit_mb).

#include "fuzz_types.hpp"

#include <triad/detail/remote.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

template <class T>
static void decode_as(std::span<const char> bytes) {
    try {
        (void)triad::from_bytes<T>(bytes);
    } catch (const triad::protocol_error&) {
    }
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const char> bytes(reinterpret_cast<const char*>(data), size);
    decode_as<fuzz::message>(bytes);
    decode_as<std::vector<std::string>>(bytes);
    decode_as<std::map<std::string, std::vector<fuzz::record>>>(bytes);
    decode_as<triad::detail::chunk_result<std::string>>(bytes);
    // The frame layer: headers are validated before a payload is trusted.
    try {
        triad::detail::frame_parser parser(1 << 20);
        auto& buffer = parser.buffer();
        buffer.ensure_room(size);
        std::copy(bytes.begin(), bytes.end(), buffer.end());
        buffer.grow(size);
        parser.parse(
            [](const triad::detail::frame_header&, triad::detail::byte_reader& payload, bool) {
                decode_as<triad::detail::remote_failure>(
                    std::span(payload.position(), payload.remaining()));
            });
    } catch (const triad::protocol_error&) {
    }
    return 0;
}
