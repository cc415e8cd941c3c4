// Lesson: I/O-bound work (downloads, API calls) speeds up on a thread pool because the threads
// spend their time waiting, not computing. Mirrors the Python course's ThreadPoolExecutor cell: 4 URLs
// at 0.5 s each take 2.0 s in a loop and 0.5 s on a pool. The download is simulated with a
// sleep so the lesson runs anywhere; bench/ measures real HTTP over loopback.
//
// Usage: io_bound_downloads [downloads=4] [latency_ms=500]

#include <triad/thread_pool.hpp>

#include <fmt/core.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// Stands in for an HTTP GET: the thread blocks for the round trip, as requests.get() does.
std::string download(const std::string& url, std::chrono::milliseconds latency) {
    std::this_thread::sleep_for(latency);
    return "<html>" + url + "</html>";
}

} // namespace

int main(int argc, char** argv) {
    const int count = argc > 1 ? std::atoi(argv[1]) : 4;
    const std::chrono::milliseconds latency(argc > 2 ? std::atoi(argv[2]) : 500);
    if (count <= 0 || latency.count() < 0) {
        fmt::print(stderr, "usage: {} [downloads > 0] [latency_ms >= 0]\n", argv[0]);
        return 2;
    }
    std::vector<std::string> urls;
    for (int i = 0; i < count; ++i)
        urls.push_back("https://example.com/page/" + std::to_string(i));
    fmt::print("Downloading {} URLs, {} ms each\n\n", count, latency.count());

    auto start = clock_type::now();
    std::size_t bytes = 0;
    for (const auto& url : urls)
        bytes += download(url, latency).size();
    const double sequential = seconds_since(start);
    fmt::print("Sequential:              {:.2f} s ({} bytes)\n", sequential, bytes);

    // For waiting, not computing, size the pool by how many requests should be in flight, not
    // by the CPU count: blocked threads cost no CPU.
    const std::size_t threads = std::min<std::size_t>(urls.size(), 64);
    triad::thread_pool pool(threads);
    start = clock_type::now();
    std::vector<triad::future<std::string>> pages;
    for (const auto& url : urls)
        pages.push_back(pool.submit(download, url, latency));
    bytes = 0;
    int shown = 0;
    for (auto& page : triad::as_completed(pages)) { // results in the order they arrive
        const std::string body = page.get();
        bytes += body.size();
        if (shown++ < 3)
            fmt::print("  finished after {:.2f} s: {}\n", seconds_since(start), body);
    }
    const double pooled = seconds_since(start);
    fmt::print("Thread pool ({} threads): {:.2f} s ({} bytes)\n", threads, pooled, bytes);
    fmt::print("Speedup: {:.1f}x\n", sequential / pooled);
    return 0;
}
