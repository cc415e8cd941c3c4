// Which executor wins on real network I/O? HTTP downloads over loopback TCP from a server this
// benchmark starts itself on 127.0.0.1 (Boost.Beast on a triad event loop, on its own thread),
// which delays each reply to stand for network latency and sends a body of a chosen size.
// Clients: the event loop (async Beast), the thread pool and the process pool (blocking Beast,
// one connection per request), a sequential loop, and the peers: raw Asio coroutines, a
// boost::asio::thread_pool, std::async. `--triad_serve` runs only the server (for the Python
// peer): it prints the port and serves until stdin closes.
//
// Equal footing: every pool and event loop is built before the timed loop (a pool's size is its
// configuration, "workers:N"); every blocking client keeps one io_context per thread; every
// client counts the body through its connection's 64 KiB buffer rather than keeping it; the
// server sends each body size from one buffer built once.

#include <triad/async.hpp>
#include <triad/process_pool.hpp>
#include <triad/thread_pool.hpp>

#include "bench_common.hpp"
#include "loopback_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <future>
#include <iostream>
#include <latch>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// "/delay/<ms>/bytes/<n>"
std::string target_for(int delay_ms, std::size_t bytes) {
    return "/delay/" + std::to_string(delay_ms) + "/bytes/" + std::to_string(bytes);
}

void parse_target(const std::string& target, int& delay_ms, std::size_t& bytes) {
    delay_ms = 0;
    bytes = 0;
    std::sscanf(target.c_str(), "/delay/%d/bytes/%zu", &delay_ms, &bytes);
    bytes = std::min<std::size_t>(bytes, 64u << 20);
}

// --- the server --------------------------------------------------------------------------------

// The server's loop thread only, so no lock; a map, so a body never moves once built.
const std::string& body_of_size(std::size_t bytes) {
    static std::map<std::size_t, std::string> bodies;
    auto [it, added] = bodies.try_emplace(bytes);
    if (added)
        it->second.assign(bytes, 'x');
    return it->second;
}

triad::task<void> serve_connection(tcp::socket socket) {
    try {
        // As HTTP servers do: the last, partial segment of a response goes out without waiting
        // for the client's ACK of the previous ones (Nagle), whatever the client's ACK timing.
        socket.set_option(tcp::no_delay(true));
        beast::flat_buffer buffer;
        http::request<http::string_body> request;
        co_await http::async_read(socket, buffer, request, triad::use_task);
        int delay_ms = 0;
        std::size_t bytes = 0;
        parse_target(std::string(request.target()), delay_ms, bytes);
        co_await triad::sleep(std::chrono::milliseconds(delay_ms));
        // One body per size, built once and sent by reference: the server stands in for the
        // network, and a fresh 4 MiB string per response (memset and page faults on the server's
        // thread) made the concurrent rows pay for the server's allocator.
        const std::string& body = body_of_size(bytes);
        http::response<http::span_body<const char>> response{http::status::ok, request.version()};
        response.set(http::field::content_type, "application/octet-stream");
        response.body() = {body.data(), body.size()};
        response.keep_alive(false);
        response.prepare_payload();
        co_await http::async_write(socket, response, triad::use_task);
        beast::error_code ignored;
        socket.shutdown(tcp::socket::shutdown_send, ignored);
    } catch (const std::exception&) {
        // A client that went away; nothing to do.
    }
}

// The server, for the whole run: every request of every executor goes to it.
triad_bench::loopback_server& server() {
    static triad_bench::loopback_server s(serve_connection);
    return s;
}

// --- clients -----------------------------------------------------------------------------------

// Beast reads at most the buffer's spare capacity (and at least 512 bytes) per system call; an
// empty flat_buffer makes that 512 bytes, and a 4 MiB body 8,000 recv calls. 64 KiB is Beast's
// own per-read ceiling.
beast::flat_buffer read_buffer() {
    beast::flat_buffer buffer;
    buffer.reserve(64 * 1024);
    return buffer;
}

// A response body that is counted as it arrives and not kept: every client reads through its
// connection's 64 KiB buffer only. Kept as strings, 20 concurrent 4 MiB bodies are 80 MiB of
// fresh pages per round (glibc returns them to the system when they are freed together), and on
// this VM a first touch took 20-60 us a page under load: 0.4-1.2 s per round, paid on one thread by
// the event loops and spread over the cores by the pools, while the sequential client reuses one
// body. That, not the executors, decided http_large_bodies.
struct counted_body {
    using value_type = std::size_t;
    class reader {
    public:
        template <bool is_request, class Fields>
        reader(http::header<is_request, Fields>&, value_type& count) : m_count(count) {}
        void init(const boost::optional<std::uint64_t>&, beast::error_code& ec) {
            m_count = 0;
            ec = {};
        }
        template <class Buffers>
        std::size_t put(const Buffers& buffers, beast::error_code& ec) {
            ec = {};
            const std::size_t n = asio::buffer_size(buffers);
            m_count += n;
            return n;
        }
        void finish(beast::error_code& ec) { ec = {}; }

    private:
        value_type& m_count;
    };
};

// The io_context a blocking socket needs, one per thread for all its requests, as an expert's
// blocking client keeps one (each costs an epoll fd, an eventfd, a timerfd and about 8 system
// calls). Pool workers, worker processes and the sequential loop thereby reuse theirs; std::async
// starts a thread per call, so there it is one per request by nature of that executor.
// A worker process forked from a thread that already had one inherits it, epoll fd included
// (shared with the parent), so a new process first gives its copy a reactor of its own.
asio::io_context& thread_io_context() {
    thread_local asio::io_context io(1);
    thread_local pid_t owner = ::getpid();
    if (owner != ::getpid()) {
        io.notify_fork(asio::execution_context::fork_child);
        owner = ::getpid();
    }
    return io;
}

// A blocking client, as requests.get is: its own connection, the thread waits.
std::size_t fetch_blocking(std::uint16_t port, std::string target) {
    tcp::socket socket(thread_io_context());
    socket.connect({asio::ip::address_v4::loopback(), port});
    http::request<http::empty_body> request{http::verb::get, target, 11};
    request.set(http::field::host, "127.0.0.1");
    http::write(socket, request);
    beast::flat_buffer buffer = read_buffer();
    http::response<counted_body> response;
    http::read(socket, buffer, response);
    return response.body();
}

triad::task<std::size_t> fetch_async(tcp::endpoint where, std::string target) {
    tcp::socket socket(triad::current_executor());
    co_await socket.async_connect(where, triad::use_task);
    http::request<http::empty_body> request{http::verb::get, target, 11};
    request.set(http::field::host, "127.0.0.1");
    co_await http::async_write(socket, request, triad::use_task);
    beast::flat_buffer buffer = read_buffer();
    http::response<counted_body> response;
    co_await http::async_read(socket, buffer, response, triad::use_task);
    co_return response.body();
}

asio::awaitable<std::size_t> fetch_asio(tcp::endpoint where, std::string target) {
    tcp::socket socket(co_await asio::this_coro::executor);
    co_await socket.async_connect(where, asio::use_awaitable);
    http::request<http::empty_body> request{http::verb::get, target, 11};
    request.set(http::field::host, "127.0.0.1");
    co_await http::async_write(socket, request, asio::use_awaitable);
    beast::flat_buffer buffer = read_buffer();
    http::response<counted_body> response;
    co_await http::async_read(socket, buffer, response, asio::use_awaitable);
    co_return response.body();
}

struct shape {
    int delay_ms;
    std::size_t bytes;
};

// Arguments: requests, delay in ms, body bytes.
shape shape_of(const benchmark::State& state) {
    return {static_cast<int>(state.range(1)), static_cast<std::size_t>(state.range(2))};
}
std::size_t requests_of(const benchmark::State& state) {
    return static_cast<std::size_t>(state.range(0));
}
// The pools' fourth argument: their number of workers.
std::size_t workers_of(const benchmark::State& state) {
    return static_cast<std::size_t>(state.range(3));
}

void finish(benchmark::State& state, std::size_t received, std::size_t n, std::size_t bytes) {
    if (received != n * bytes)
        state.SkipWithError("wrong byte count");
    triad_bench::set_items(state, static_cast<double>(n));
    state.SetBytesProcessed(static_cast<int64_t>(received) * state.iterations());
}

std::size_t io_threads(std::size_t n) {
    return std::min<std::size_t>(n, 256);
}

void sequential(benchmark::State& state) {
    const std::size_t n = requests_of(state);
    const shape s = shape_of(state);
    const std::uint16_t port = server().port();
    std::size_t received = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        received = 0;
        for (std::size_t i = 0; i < n; ++i)
            received += fetch_blocking(port, target_for(s.delay_ms, s.bytes));
    }
    finish(state, received, n, s.bytes);
}

void triad_threads(benchmark::State& state) {
    const std::size_t n = requests_of(state);
    const shape s = shape_of(state);
    const std::uint16_t port = server().port();
    triad::thread_pool pool(workers_of(state));
    std::size_t received = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        const auto sizes =
            pool.map([&](int) { return fetch_blocking(port, target_for(s.delay_ms, s.bytes)); },
                     std::vector<int>(n), {.chunk_size = 1});
        received = 0;
        for (std::size_t b : sizes)
            received += b;
    }
    finish(state, received, n, s.bytes);
}

void triad_processes(benchmark::State& state) {
    const std::size_t n = requests_of(state);
    const shape s = shape_of(state);
    const std::uint16_t port = server().port();
    triad::process_pool pool(workers_of(state));
    std::size_t received = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::vector<std::pair<std::uint16_t, std::string>> jobs(
            n, {port, target_for(s.delay_ms, s.bytes)});
        const auto sizes = pool.starmap(fetch_blocking, jobs, {.chunk_size = 1});
        received = 0;
        for (std::size_t b : sizes)
            received += b;
    }
    finish(state, received, n, s.bytes);
}

triad::task<std::size_t> fetch_all(std::size_t n, shape s, tcp::endpoint where) {
    triad::semaphore limit(1000); // keep descriptors within reach
    std::vector<triad::task<std::size_t>> tasks;
    tasks.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
        tasks.push_back(triad::make_task([&limit, s, where]() -> triad::task<std::size_t> {
            auto permit = co_await limit.acquire_guard();
            co_return co_await fetch_async(where, target_for(s.delay_ms, s.bytes));
        }));
    std::size_t total = 0;
    for (std::size_t b : co_await triad::gather(std::move(tasks)))
        total += b;
    co_return total;
}

void triad_loop(benchmark::State& state) {
    const std::size_t n = requests_of(state);
    const shape s = shape_of(state);
    const tcp::endpoint where = server().endpoint();
    triad::event_loop loop;
    std::size_t received = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        received = loop.run(fetch_all(n, s, where));
    finish(state, received, n, s.bytes);
}

void asio_coroutines(benchmark::State& state) {
    const std::size_t n = requests_of(state);
    const shape s = shape_of(state);
    const tcp::endpoint where = server().endpoint();
    asio::io_context io(1);
    std::size_t received = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        io.restart();
        received = 0;
        for (std::size_t i = 0; i < n; ++i)
            asio::co_spawn(io, fetch_asio(where, target_for(s.delay_ms, s.bytes)),
                           [&received](std::exception_ptr e, std::size_t b) {
                               if (!e)
                                   received += b;
                           });
        io.run();
    }
    finish(state, received, n, s.bytes);
}

void asio_pool(benchmark::State& state) {
    const std::size_t n = requests_of(state);
    const shape s = shape_of(state);
    const std::uint16_t port = server().port();
    // Built before the timed loop like the other pools; it cannot be joined and reused, so each
    // round waits on a latch its tasks count down.
    asio::thread_pool pool(workers_of(state));
    std::size_t received = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::atomic<std::size_t> total{0};
        std::latch done(static_cast<std::ptrdiff_t>(n));
        for (std::size_t i = 0; i < n; ++i)
            asio::post(pool, [&] {
                total += fetch_blocking(port, target_for(s.delay_ms, s.bytes));
                done.count_down();
            });
        done.wait();
        received = total;
    }
    pool.join();
    finish(state, received, n, s.bytes);
}

void std_async(benchmark::State& state) {
    const std::size_t n = requests_of(state);
    const shape s = shape_of(state);
    const std::uint16_t port = server().port();
    std::size_t received = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::vector<std::future<std::size_t>> futures;
        for (std::size_t i = 0; i < n; ++i)
            futures.push_back(std::async(std::launch::async, fetch_blocking, port,
                                         target_for(s.delay_ms, s.bytes)));
        received = 0;
        for (auto& f : futures)
            received += f.get();
    }
    finish(state, received, n, s.bytes);
}

const bool registered = [] {
    struct http_workload {
        std::string name;
        std::size_t requests;
        int delay_ms;
        std::size_t bytes;
    };
    std::vector<http_workload> list;
    if (triad_bench::quick()) {
        list = {{"http_20", 20, 10, 16 * 1024}, {"http_200", 200, 10, 16 * 1024}};
    } else {
        list = {{"http_20", 20, 10, 16 * 1024},
                {"http_200", 200, 10, 16 * 1024},
                {"http_1000", 1000, 10, 16 * 1024},
                {"http_large_bodies", 20, 0, 4 << 20}};
    }
    for (const auto& w : list) {
        triad_bench::describe(w.name, {std::to_string(w.requests) + " HTTP GETs over loopback, " +
                                           std::to_string(w.delay_ms) + " ms server latency, " +
                                           std::to_string(w.bytes / 1024) +
                                           " KiB bodies (counted as they arrive, not kept)",
                                       "io", "request", ""});
        const std::vector<std::int64_t> args{static_cast<std::int64_t>(w.requests), w.delay_ms,
                                             static_cast<std::int64_t>(w.bytes)};
        const auto add = [&](const char* executor, void (*fn)(benchmark::State&)) {
            return triad_bench::add(executor, w.name, fn)
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond)
                ->Args(args)
                ->ArgNames({"requests", "delay_ms", "bytes"});
        };
        // The pools name their size ("workers:N"), which is their configuration.
        const auto add_pool = [&](const char* executor, void (*fn)(benchmark::State&),
                                  std::size_t workers) {
            std::vector<std::int64_t> with_workers = args;
            with_workers.push_back(static_cast<std::int64_t>(workers));
            triad_bench::add(executor, w.name, fn)
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond)
                ->Args(with_workers)
                ->ArgNames({"requests", "delay_ms", "bytes", "workers"});
        };
        if (w.requests <= 20)
            add("sequential", sequential);
        add_pool("triad_threads", triad_threads, io_threads(w.requests));
        if (w.requests <= 200)
            add_pool("triad_processes", triad_processes, 2 * triad::cpu_count());
        add("triad_loop", triad_loop);
        add("asio_co_spawn", asio_coroutines);
        add_pool("asio_thread_pool", asio_pool, io_threads(w.requests));
        if (w.requests <= 200)
            add("std_async", std_async);
    }
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    triad_bench::raise_descriptor_limit();
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == "--triad_serve") {
            std::printf("%u\n", server().port());
            std::fflush(stdout);
            std::string line;
            while (std::getline(std::cin, line)) {
            }
            return 0;
        }
    return triad_bench::run_benchmarks(argc, argv);
}
