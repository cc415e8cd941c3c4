// Writes valid encodings as the fuzzer's seed corpus, so it starts from real structure.

#include "fuzz_types.hpp"

#include <fstream>
#include <string>

int main(int argc, char** argv) {
    if (argc != 2)
        return 2;
    for (int seed = 0; seed < 16; ++seed) {
        const std::vector<char> bytes = triad::to_bytes(fuzz::sample(seed));
        std::ofstream(std::string(argv[1]) + "/seed" + std::to_string(seed), std::ios::binary)
            .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    return 0;
}
