// Lesson: I/O-bound work (downloads, API calls) speeds up on a thread pool because the threads
// spend their time waiting, not computing. Mirrors the Python course's ThreadPoolExecutor cell: 4
// URLs at 0.5 s each take 2.0 s in a loop and 0.5 s on a pool. The downloads are real HTTP GETs to
// a local server (support/http_server.hpp: Boost.Beast on 127.0.0.1) that waits the latency before
// each reply, as a distant server would; bench/ measures the same over loopback at scale.
//
// Usage: io_bound_downloads [downloads=4] [latency_ms=500]

#include <triad/thread_pool.hpp>

#include <fmt/core.h>

#include "support/arguments.hpp"
#include "support/http_server.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace {

namespace ex = triad_examples;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// requests.get(url): a connection of its own, and the thread blocks until the reply is in.
std::string download(ex::tcp::endpoint server, const std::string& path) {
    ex::http_client client(server);
    return client.get_ok(path);
}

// Every reply carries the value the server derives from its path: a check that each body is the
// page asked for, not only that some bytes came back.
std::uint64_t checked_value(const std::string& path, const std::string& body) {
    const auto value = ex::parse_value(body);
    if (!value || *value != ex::value_of(path))
        throw std::runtime_error("wrong reply for " + path + ": " + body);
    return *value;
}

// The pool's downloads check their own reply: the sum of the values, checked after, would not
// see a reply for another URL of the list.
std::string checked_download(ex::tcp::endpoint server, const std::string& path) {
    std::string body = download(server, path);
    checked_value(path, body);
    return body;
}

} // namespace

int main(int argc, char** argv) try {
    const auto count = ex::argument<long>(argc, argv, 1, 4, 1, 10'000);
    const auto latency_ms = ex::argument<long>(argc, argv, 2, 500, 0, 10'000);
    if (!count || !latency_ms) {
        fmt::print(stderr, "usage: {} [downloads in 1..10000] [latency_ms in 0..10000]\n", argv[0]);
        return 2;
    }
    ex::http_server server({.latency = std::chrono::milliseconds(*latency_ms), .threads = 1});
    std::vector<std::string> paths;
    for (long i = 0; i < *count; ++i)
        paths.push_back("/page/" + std::to_string(i));
    fmt::print("Downloading {} URLs from {}, {} ms each\n\n", *count, server.url("/page/<n>"),
               *latency_ms);

    auto start = clock_type::now();
    std::size_t bytes = 0;
    std::uint64_t values = 0;
    for (const auto& path : paths) {
        const std::string body = download(server.endpoint(), path);
        bytes += body.size();
        values += checked_value(path, body);
    }
    const double sequential = seconds_since(start);
    const std::uint64_t sequential_values = values;
    fmt::print("Sequential:              {:.2f} s ({} bytes)\n", sequential, bytes);

    // For waiting, not computing, size the pool by how many requests should be in flight, not
    // by the CPU count: blocked threads cost no CPU.
    const std::size_t threads = std::min<std::size_t>(paths.size(), 64);
    triad::thread_pool pool(threads);
    server.reset_max_in_flight();
    start = clock_type::now();
    std::vector<triad::future<std::string>> pages;
    for (const auto& path : paths)
        pages.push_back(pool.submit(checked_download, server.endpoint(), path));
    bytes = 0;
    values = 0;
    int shown = 0;
    for (auto& page : triad::as_completed(pages)) { // results in the order they arrive
        const std::string body = page.get();
        bytes += body.size();
        values += ex::parse_value(body).value_or(0);
        if (shown++ < 3)
            fmt::print("  finished after {:.2f} s: {}\n", seconds_since(start), body);
    }
    const double pooled = seconds_since(start);
    fmt::print("Thread pool ({} threads): {:.2f} s ({} bytes)\n", threads, pooled, bytes);
    fmt::print("Requests the server held at once: {}\n", server.max_in_flight());
    fmt::print("Replies: {} requests served, values {} in both runs\n", server.requests(),
               values == sequential_values ? "equal" : "DIFFERENT");
    fmt::print("Speedup: {:.1f}x\n", sequential / pooled);
    return values == sequential_values ? 0 : 1;
} catch (const std::exception& e) {
    fmt::print(stderr, "io_bound_downloads: {}\n", e.what());
    return 1;
}
