// Lesson: image filtering is CPU-bound work that spreads over cores, here on a process pool as
// the Python course does (multiprocessing.Pool().map(apply_blur, image_paths) with PIL's
// ImageFilter.BLUR), next to a plain loop and a thread pool. In Python the GIL forces the
// choice of processes; in C++ threads run CPU work in parallel too, so the thread pool is as
// fast or faster (no fork, no copying of arguments and results). Pick processes in C++ for
// isolation: a decoder that may crash or leak, code that is not thread-safe, memory you want
// back when the worker goes.
//
// The images are generated (deterministic grayscale PGM files in a temporary directory), each
// is blurred with a 5x5 Gaussian kernel and written back as PGM; every output file is read
// again and checksummed, and the three ways must produce identical files.
//
// Usage: image_blur_processes [images=16] [size=768] [passes=3]

#include <triad/process_pool.hpp>
#include <triad/thread_pool.hpp>

#include <fmt/core.h>

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "support/arguments.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

struct image {
    int width = 0;
    int height = 0;
    std::vector<std::uint8_t> pixels; // row-major, one byte per pixel
};

// Binary PGM (P5), maxval 255: the simplest grayscale format that image viewers open.
void write_pgm(const fs::path& path, const image& img) {
    std::ofstream out(path, std::ios::binary);
    out << "P5\n" << img.width << ' ' << img.height << "\n255\n";
    out.write(reinterpret_cast<const char*>(img.pixels.data()),
              static_cast<std::streamsize>(img.pixels.size()));
    if (!out)
        throw std::runtime_error("cannot write " + path.string());
}

image read_pgm(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::string magic;
    int maxval = 0;
    image img;
    in >> magic >> img.width >> img.height >> maxval;
    in.get(); // the single whitespace byte after the header
    if (!in || magic != "P5" || maxval != 255 || img.width <= 0 || img.height <= 0)
        throw std::runtime_error(path.string() + " is not an 8-bit binary PGM");
    img.pixels.resize(static_cast<std::size_t>(img.width) * static_cast<std::size_t>(img.height));
    in.read(reinterpret_cast<char*>(img.pixels.data()),
            static_cast<std::streamsize>(img.pixels.size()));
    if (!in)
        throw std::runtime_error(path.string() + " is truncated");
    return img;
}

// FNV-1a over the whole file, header included: equal checksums mean byte-identical files.
std::uint64_t file_checksum(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::uint64_t hash = 14695981039346656037ULL;
    for (std::istreambuf_iterator<char> it(in), end; it != end; ++it) {
        hash ^= static_cast<unsigned char>(*it);
        hash *= 1099511628211ULL;
    }
    return hash;
}

// A test card: gradients, rings and seeded noise, so that a blur visibly changes every region.
image make_image(int index, int size) {
    image img{size, size, std::vector<std::uint8_t>(static_cast<std::size_t>(size) * size)};
    std::uint32_t noise = 2654435761U * static_cast<std::uint32_t>(index + 1);
    const int cx = size / 2 + (index * 37) % (size / 4 + 1);
    const int cy = size / 2 - (index * 53) % (size / 4 + 1);
    for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x) {
            noise = noise * 1664525U + 1013904223U; // an LCG: the same bytes on every machine
            const int dx = x - cx;
            const int dy = y - cy;
            const int ring = ((dx * dx + dy * dy) / (8 + index)) % 2 == 0 ? 60 : 0;
            const int value =
                (x * 255 / size + y * 127 / size) / 2 + ring + static_cast<int>(noise >> 28) * 4;
            img.pixels[static_cast<std::size_t>(y) * size + x] =
                static_cast<std::uint8_t>(value > 255 ? 255 : value);
        }
    return img;
}

// The 5x5 Gaussian (1 4 6 4 1)^2 / 256, applied as two 1-D passes in integers, edges clamped.
// Integer arithmetic keeps the output identical whichever process or thread computes it.
image gaussian_blur(const image& src, int passes) {
    const int w = src.width;
    const int h = src.height;
    static constexpr int kernel[5] = {1, 4, 6, 4, 1};
    const auto clamp = [](int v, int hi) { return v < 0 ? 0 : v > hi ? hi : v; };
    image out = src;
    std::vector<std::uint16_t> rows(out.pixels.size()); // horizontal sums, times 16
    for (int pass = 0; pass < passes; ++pass) {
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) {
                int sum = 0;
                for (int k = -2; k <= 2; ++k)
                    sum += kernel[k + 2] *
                           out.pixels[static_cast<std::size_t>(y) * w + clamp(x + k, w - 1)];
                rows[static_cast<std::size_t>(y) * w + x] = static_cast<std::uint16_t>(sum);
            }
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x) {
                int sum = 0;
                for (int k = -2; k <= 2; ++k)
                    sum +=
                        kernel[k + 2] * rows[static_cast<std::size_t>(clamp(y + k, h - 1)) * w + x];
                out.pixels[static_cast<std::size_t>(y) * w + x] =
                    static_cast<std::uint8_t>((sum + 128) / 256);
            }
    }
    return out;
}

// One unit of work, sent to a worker process: plain data, serializable.
struct blur_job {
    std::string input;
    std::string output;
    int passes = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(input, output, passes);
    }
};

struct blur_result {
    std::string output;
    std::uint64_t checksum = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(output, checksum);
    }
};

// The Python course's apply_blur: open, filter, save, return the output path (and here the
// checksum of what was saved, computed where the work was done).
blur_result apply_blur(blur_job job) {
    write_pgm(job.output, gaussian_blur(read_pgm(job.input), job.passes));
    return {job.output, file_checksum(job.output)};
}

std::vector<blur_job> jobs_into(const fs::path& dir, const std::vector<fs::path>& inputs,
                                int passes) {
    fs::create_directory(dir);
    std::vector<blur_job> jobs;
    for (const fs::path& in : inputs)
        jobs.push_back(
            {in.string(), (dir / ("blurred_" + in.filename().string())).string(), passes});
    return jobs;
}

int blur_all(int count, int size, int passes) {
    // The pool first: its workers are forks of this process as it is now, before any thread.
    triad::process_pool processes;
    triad::thread_pool threads;

    const triad_examples::temp_dir dir("triad-blur");
    std::vector<fs::path> inputs;
    for (int i = 0; i < count; ++i) {
        inputs.push_back(dir.path() / fmt::format("image{:02}.pgm", i + 1));
        write_pgm(inputs.back(), make_image(i, size));
    }
    fmt::print("{} images of {}x{} pixels (PGM) in {}, Gaussian 5x5 blur, {} passes\n\n", count,
               size, size, dir.path().string(), passes);

    fmt::print("=== Sequential ===\n");
    const std::vector<blur_job> sequential_jobs =
        jobs_into(dir.path() / "sequential", inputs, passes);
    auto start = clock_type::now();
    std::vector<blur_result> sequential;
    for (const blur_job& job : sequential_jobs)
        sequential.push_back(apply_blur(job));
    const double sequential_time = seconds_since(start);
    fmt::print("Time: {:.3f}s\n", sequential_time);

    fmt::print("\n=== Thread pool ({} threads) ===\n", threads.size());
    const std::vector<blur_job> thread_jobs = jobs_into(dir.path() / "threads", inputs, passes);
    start = clock_type::now();
    const std::vector<blur_result> threaded = threads.map(apply_blur, thread_jobs);
    const double thread_time = seconds_since(start);
    fmt::print("Time: {:.3f}s (speedup {:.2f}x)\n", thread_time, sequential_time / thread_time);

    fmt::print("\n=== Process pool ({} processes) ===\n", processes.size());
    const std::vector<blur_job> process_jobs = jobs_into(dir.path() / "processes", inputs, passes);
    start = clock_type::now();
    const std::vector<blur_result> forked = processes.map(apply_blur, process_jobs);
    const double process_time = seconds_since(start);
    fmt::print("Time: {:.3f}s (speedup {:.2f}x)\n", process_time, sequential_time / process_time);
    fmt::print("Blurred images: [{}, ..., {}]\n",
               fs::path(forked.front().output).filename().string(),
               fs::path(forked.back().output).filename().string());

    // Check the files on disk, not only what the workers said they wrote.
    fmt::print("\n=== Checksums (FNV-1a of each output file) ===\n");
    int mismatches = 0;
    for (int i = 0; i < count; ++i) {
        const std::uint64_t a = file_checksum(sequential[i].output);
        const std::uint64_t b = file_checksum(threaded[i].output);
        const std::uint64_t c = file_checksum(forked[i].output);
        const bool reported =
            a == sequential[i].checksum && b == threaded[i].checksum && c == forked[i].checksum;
        const bool equal = a == b && b == c && reported;
        mismatches += equal ? 0 : 1;
        fmt::print("{}: {:016x} {:016x} {:016x} {}\n", inputs[i].filename().string(), a, b, c,
                   equal ? "equal" : "DIFFERENT");
    }
    if (mismatches != 0) {
        fmt::print(stderr, "{} of {} images differ between the three ways\n", mismatches, count);
        return 1;
    }
    fmt::print("all {} checksums equal across sequential, threads and processes\n", count);
    fmt::print("\nIn C++ threads run CPU work in parallel too (there is no GIL): processes add a "
               "fork and a copy of every argument and result, and buy isolation, not speed.\n");
    return 0;
}

int run(int argc, char** argv) {
    // Bounded so that the pixel arithmetic stays inside int (make_image squares distances of up
    // to 3/4 of the side) and the files inside a few GB of /tmp.
    constexpr std::int64_t max_pixels = std::int64_t{1} << 30;
    const auto count = triad_examples::argument<int>(argc, argv, 1, 16, 1, 1000);
    const auto size = triad_examples::argument<int>(argc, argv, 2, 768, 8, 16384);
    const auto passes = triad_examples::argument<int>(argc, argv, 3, 3, 1, 100);
    if (!count || !size || !passes || std::int64_t{*count} * *size * *size > max_pixels) {
        fmt::print(stderr,
                   "usage: {} [images 1..1000] [size 8..16384] [passes 1..100], images x size^2 "
                   "at most 2^30\n",
                   argv[0]);
        return 2;
    }
    return blur_all(*count, *size, *passes);
}

} // namespace

int main(int argc, char** argv) {
    // Caught here, not left to std::terminate, so that the stack unwinds and the temporary
    // directory of images is removed on a failure too (a full disk, a worker that died).
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        fmt::print(stderr, "image_blur_processes: {}\n", e.what());
        return 1;
    }
}
