// Writes valid encodings as the fuzzer's seed corpus, so it starts from real structure: every
// fuzzed type, enums at their edge values, and trees nested up to and just past the decoder's
// nesting limit along each of the ways a tree reaches itself.

#include "fuzz_types.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace {

std::string g_directory;
int g_written = 0;

void write_bytes(const std::string& name, const std::vector<char>& bytes) {
    const std::string path = g_directory + "/" + name;
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
        std::fprintf(stderr, "make_corpus: cannot write %s\n", path.c_str());
        std::exit(1);
    }
    ++g_written;
}

template <class T>
void write_seed(const std::string& name, const T& value) {
    write_bytes(name, triad::to_bytes(value));
}

// Not a valid message: a chain of `depth` trees in which every level claims as many children as
// the bytes left could hold were each the smallest tree, though only the first is there. Each
// claim is honest enough to be reserved for, so this is where a reservation that escaped the
// per-message budget would multiply by the depth.
std::vector<char> greedy_chain(std::size_t depth) {
    constexpr std::size_t smallest_tree = 1 + 3 * 8; // tone and three empty counts
    constexpr std::size_t per_level = 1 + 8 + 1;     // tone, children's count, the child's marker
    const std::size_t total = (depth - 1) * per_level + smallest_tree;
    std::vector<char> bytes;
    triad::detail::byte_writer writer(bytes);
    for (std::size_t i = 1; i < depth; ++i) {
        writer.write_scalar(std::uint8_t{1});
        const std::size_t left = total - bytes.size() - 8;
        writer.write_size(left / (1 + smallest_tree));
        writer.write_scalar(triad::detail::element_marker);
    }
    writer.write_scalar(std::uint8_t{0});
    for (int i = 0; i < 3; ++i)
        writer.write_size(0);
    return bytes;
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 2)
        return 2;
    g_directory = argv[1];
    for (int seed = 0; seed < 16; ++seed) {
        write_seed("seed" + std::to_string(seed), fuzz::sample(seed));
        write_seed("forest" + std::to_string(seed), fuzz::sample_forest(seed));
        write_seed("enums" + std::to_string(seed), fuzz::sample_enum_table(seed));
        write_seed("enum_row" + std::to_string(seed), fuzz::sample_enum_row(seed));
    }
    for (int seed = 0; seed < 4; ++seed)
        write_seed("bush" + std::to_string(seed), fuzz::bush(seed, 1 + seed % 3));
    // The limit admits exactly default_max_nesting levels, so one level less, the limit and one
    // more sit on both sides of the check.
    const std::pair<fuzz::path, const char*> paths[] = {{fuzz::path::children, "children"},
                                                        {fuzz::path::named, "named"},
                                                        {fuzz::path::mixed, "mixed"}};
    for (const auto& [via, name] : paths) {
        for (std::size_t depth = triad::default_max_nesting - 1;
             depth <= triad::default_max_nesting + 1; ++depth)
            write_seed(std::string("deep_") + name + std::to_string(depth),
                       fuzz::chain(depth, via));
    }
    write_bytes("greedy_chain", greedy_chain(triad::default_max_nesting));
    std::printf("make_corpus: %d seeds\n", g_written);
    return 0;
}
