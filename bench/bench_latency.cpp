// How long does a request wait, at a given load? HTTP GET latency under open-loop load at a
// fixed arrival rate (the wrk2 method): request i is due at start + i / rate whatever happened
// to the requests before it, and its latency runs from that DUE time to the end of its
// response. A client that stalls (a full thread pool, a loop that falls behind) therefore shows
// up as latency, instead of quietly sending fewer requests (coordinated omission).
//
// The server (Boost.Beast on a triad event loop, on its own thread, keep-alive connections)
// answers each GET after a fixed service time of 5 ms with a 1 KiB body. Waiting costs it no
// CPU, so it serves any number of requests at once; its own CPU use is reported per point
// (`server_busy`, the fraction of one core) to show it is not what saturates.
//
// Clients, each with keep-alive connections to the server:
// - triad_loop, asio_co_spawn: one coroutine per request, started at its due time; a request
//   takes an idle connection or opens one, up to 256 connections (then it waits for one).
// - triad_threads, asio_thread_pool: 16 threads with blocking Beast, one connection per
//   thread; each request is posted at its due time, and its latency includes its wait in the
//   pool's queue. 16 threads serve at most 16 / 5 ms = 3,200 requests per second.
//
// Rates: 1,000 to 8,000 requests per second for every client, 16,000 for the coroutine clients,
// each for 0.8 s (a p99.9 of fewer than 1,000 requests is their maximum).
//
// A request that has not started by the end of the run plus a drain allowance is abandoned;
// its latency counts as the time it had waited by then (a lower bound), so a saturated point
// takes bounded time. A point whose achieved rate is below 95% of the offered rate is marked
// `saturated` (the counter is 1, absent otherwise): its percentiles are lower bounds that grow
// with the run's length.
//
// Shared with bench_io_http.cpp (copied, to be factored): the Beast server on a triad loop
// thread (here with keep-alive), the descriptor limit.

#include <triad/async.hpp>
#include <triad/thread_pool.hpp>

#include "bench_common.hpp"
#include "loopback_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <future>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sys/resource.h>
#include <time.h>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

namespace {

constexpr auto service_time = std::chrono::milliseconds(5);
constexpr std::size_t body_bytes = 1024;
constexpr std::size_t pool_threads = 16;
// A coroutine client opens at most this many connections (aiohttp's default limit is 100); a
// request beyond them waits for one, as it would in a thread pool's queue. Unbounded, a client
// that stalls opens a connection for each request due meanwhile, until descriptors run out.
constexpr std::size_t coroutine_connections = 256;
const std::string target = "/latency";

// --- the server --------------------------------------------------------------------------------

triad::task<void> serve_connection(tcp::socket socket) {
    try {
        socket.set_option(tcp::no_delay(true));
        beast::flat_buffer buffer;
        for (;;) {
            http::request<http::empty_body> request;
            co_await http::async_read(socket, buffer, request, triad::use_task);
            co_await triad::sleep(service_time);
            http::response<http::string_body> response{http::status::ok, request.version()};
            response.set(http::field::content_type, "application/octet-stream");
            response.body() = std::string(body_bytes, 'x');
            response.keep_alive(request.keep_alive());
            response.prepare_payload();
            co_await http::async_write(socket, response, triad::use_task);
            if (!request.keep_alive())
                break;
        }
        beast::error_code ignored;
        socket.shutdown(tcp::socket::shutdown_send, ignored);
    } catch (const std::exception&) {
        // The client closed its connection (end of a run); nothing to do.
    }
}

// The server, for the whole run: every request of every executor goes to it.
triad_bench::loopback_server& server() {
    static triad_bench::loopback_server s(serve_connection);
    return s;
}

// --- the open-loop schedule and what each request measured ----------------------------------

struct load_shape {
    double rate;             // requests per second offered
    steady::duration length; // requests are due over this long
    steady::duration drain;  // and may still start this much later
};

class open_loop {
public:
    explicit open_loop(load_shape shape)
        : m_shape(shape), m_count(static_cast<std::size_t>(std::llround(
                              shape.rate * std::chrono::duration<double>(shape.length).count()))),
          m_latency_ns(m_count, 0) {}

    std::size_t count() const noexcept { return m_count; }

    void begin() {
        m_start = steady::now();
        m_cutoff = m_start + m_shape.length + m_shape.drain;
        m_completed = 0;
        m_abandoned = 0;
        m_failures = 0;
    }

    steady::time_point due(std::size_t i) const {
        return m_start +
               std::chrono::nanoseconds(std::llround(static_cast<double>(i) * 1e9 / m_shape.rate));
    }
    steady::time_point cutoff() const noexcept { return m_cutoff; }
    // Past the cutoff a request that has not started is abandoned, not sent.
    bool too_late(steady::time_point now) const noexcept { return now >= m_cutoff; }

    // Each request ends in exactly one of these; several threads may call them at once for
    // different requests.
    void completed(std::size_t i, bool response_ok) {
        m_latency_ns[i] = (steady::now() - due(i)).count();
        ++(response_ok ? m_completed : m_failures);
    }
    void abandoned(std::size_t i) {
        m_latency_ns[i] = (steady::now() - due(i)).count();
        ++m_abandoned;
    }
    void failed(std::size_t i) {
        m_latency_ns[i] = (steady::now() - due(i)).count();
        ++m_failures;
    }

    // After the run: the counters of one benchmark point.
    void report(benchmark::State& state, double elapsed_s, double server_cpu_s) {
        if (m_failures != 0) {
            state.SkipWithError("a request failed, or its response was not 200 with a 1 KiB body");
            return;
        }
        std::vector<std::int64_t> sorted = m_latency_ns;
        std::sort(sorted.begin(), sorted.end());
        // Nearest rank: the smallest latency at least q of the requests did not exceed.
        const auto percentile_us = [&](double q) {
            if (sorted.empty())
                return 0.0;
            const auto rank =
                static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
            return static_cast<double>(
                       sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1]) /
                   1e3;
        };
        const double achieved = static_cast<double>(m_completed.load()) / elapsed_s;
        state.counters["p50_us"] = percentile_us(0.50);
        state.counters["p99_us"] = percentile_us(0.99);
        state.counters["p999_us"] = percentile_us(0.999);
        state.counters["achieved_rate"] = achieved;
        state.counters["service_us"] =
            std::chrono::duration<double, std::micro>(service_time).count();
        // Only when they are not zero: Google Benchmark's coefficient of variation of a counter
        // that is 0 in every repetition is 0 / 0, written as NaN, which is not JSON (Boost.JSON
        // rejects the whole file). Absent means 0.
        if (achieved < 0.95 * m_shape.rate)
            state.counters["saturated"] = 1;
        if (m_abandoned != 0)
            state.counters["abandoned"] = static_cast<double>(m_abandoned.load());
        state.counters["server_busy"] = server_cpu_s / elapsed_s;
        triad_bench::set_items(state, static_cast<double>(m_count));
    }

private:
    load_shape m_shape;
    std::size_t m_count;
    std::vector<std::int64_t> m_latency_ns; // one per request, from its due time
    steady::time_point m_start{};
    steady::time_point m_cutoff{};
    std::atomic<std::size_t> m_completed{0};
    std::atomic<std::size_t> m_abandoned{0};
    std::atomic<std::size_t> m_failures{0};
};

load_shape shape_of(const benchmark::State& state) {
    using namespace std::chrono_literals;
    const bool quick = triad_bench::quick();
    return {static_cast<double>(state.range(0)), quick ? steady::duration(250ms) : 800ms,
            quick ? steady::duration(100ms) : 200ms};
}

// A response that never came would hang the run, and bench_report with it: a run still going a
// minute past its cutoff ends the program with an error.
class watchdog {
public:
    static void arm(steady::time_point deadline) {
        instance().m_deadline = deadline.time_since_epoch().count();
    }
    static void disarm() { instance().m_deadline = 0; }

private:
    watchdog() {
        std::thread([this] {
            for (;;) {
                std::this_thread::sleep_for(std::chrono::seconds(1));
                const auto deadline = m_deadline.load();
                if (deadline != 0 && steady::now().time_since_epoch().count() > deadline) {
                    std::fprintf(stderr, "bench_latency: a run hung (a response never came)\n");
                    std::_Exit(2);
                }
            }
        }).detach();
    }
    static watchdog& instance() {
        static watchdog w;
        return w;
    }
    std::atomic<steady::rep> m_deadline{0};
};

// Runs one timed point: `offer` sends the load and returns when every request has ended.
template <class Offer>
void measure(benchmark::State& state, open_loop& load, Offer offer) {
    triad_bench::loopback_server& s = server();
    double elapsed_s = 0;
    double server_cpu_s = 0;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        const double server_before = s.cpu_seconds();
        load.begin();
        watchdog::arm(load.cutoff() + std::chrono::minutes(1));
        const auto start = steady::now();
        offer();
        watchdog::disarm();
        elapsed_s = std::chrono::duration<double>(steady::now() - start).count();
        server_cpu_s = s.cpu_seconds() - server_before;
    }
    load.report(state, elapsed_s, server_cpu_s);
}

http::request<http::empty_body> get_request() {
    http::request<http::empty_body> request{http::verb::get, target, 11};
    request.set(http::field::host, "127.0.0.1");
    request.keep_alive(true);
    return request;
}

bool response_ok(const http::response<http::string_body>& response) {
    return response.result() == http::status::ok && response.body().size() == body_bytes;
}

// A keep-alive connection with its read buffer (Beast may read past one response into it).
struct connection {
    tcp::socket socket;
    beast::flat_buffer buffer;
};

// --- coroutine clients: one coroutine per request ----------------------------------------------

// Idle keep-alive connections of a single-threaded client; a request takes one or opens one.
using idle_connections = std::vector<std::unique_ptr<connection>>;

struct triad_client {
    idle_connections idle;
    triad::semaphore connections{coroutine_connections};
};

triad::task<std::unique_ptr<connection>> connect_triad(tcp::endpoint where) {
    auto c = std::make_unique<connection>(connection{tcp::socket(triad::current_executor()), {}});
    co_await c->socket.async_connect(where, triad::use_task);
    c->socket.set_option(tcp::no_delay(true));
    co_return c;
}

triad::task<bool> get_triad(connection& c) {
    auto request = get_request();
    co_await http::async_write(c.socket, request, triad::use_task);
    http::response<http::string_body> response;
    co_await http::async_read(c.socket, c.buffer, response, triad::use_task);
    co_return response_ok(response);
}

triad::task<void> request_triad(open_loop& load, std::size_t i, triad_client& client,
                                tcp::endpoint where) {
    auto permit = co_await client.connections.acquire_guard();
    if (load.too_late(steady::now())) { // waited for a connection past the cutoff
        load.abandoned(i);
        co_return;
    }
    idle_connections& idle = client.idle;
    try {
        std::unique_ptr<connection> c;
        if (idle.empty()) {
            c = co_await connect_triad(where);
        } else {
            c = std::move(idle.back());
            idle.pop_back();
        }
        load.completed(i, co_await get_triad(*c));
        idle.push_back(std::move(c));
    } catch (const std::exception&) {
        load.failed(i);
    }
}

// Opens `n` connections at once and proves each with a GET, before the timed run.
triad::task<void> warm_up_triad(idle_connections& idle, tcp::endpoint where, std::size_t n) {
    std::vector<triad::task<std::unique_ptr<connection>>> opening;
    for (std::size_t i = 0; i < n; ++i)
        opening.push_back(connect_triad(where));
    for (auto& c : co_await triad::gather(std::move(opening))) {
        if (!co_await get_triad(*c))
            throw std::runtime_error("warm-up: bad response");
        idle.push_back(std::move(c));
    }
}

triad::task<void> offer_triad(open_loop& load, triad_client& client, tcp::endpoint where) {
    co_await triad::task_group::scope([&](triad::task_group& requests) -> triad::task<void> {
        std::size_t i = 0;
        while (i < load.count()) {
            const auto now = steady::now();
            if (load.too_late(now)) {
                for (; i < load.count(); ++i)
                    load.abandoned(i);
                break;
            }
            if (load.due(i) > now) {
                co_await triad::sleep_until(load.due(i));
                continue;
            }
            // Every request already due starts now (after a stall, several at once).
            for (; i < load.count() && load.due(i) <= now; ++i)
                (void)requests.spawn(request_triad(load, i, client, where));
        }
    });
}

void triad_loop(benchmark::State& state) {
    const tcp::endpoint where = server().endpoint();
    open_loop load(shape_of(state));
    triad::event_loop loop;
    triad_client client; // after the loop: its sockets close before the loop goes
    try {
        loop.run(warm_up_triad(client.idle, where, pool_threads));
    } catch (const std::exception&) {
        state.SkipWithError("warm-up failed");
        return;
    }
    measure(state, load, [&] { loop.run(offer_triad(load, client, where)); });
}

// Asio has no semaphore for coroutines: a waiter parks on a timer that never expires, and a
// release hands its slot over by cancelling the first waiter's timer.
class asio_slots {
public:
    explicit asio_slots(std::size_t n) : m_free(n) {}
    asio::awaitable<void> acquire() {
        if (m_free > 0) {
            --m_free;
            co_return;
        }
        asio::steady_timer parked(co_await asio::this_coro::executor, steady::time_point::max());
        m_waiters.push_back(&parked);
        boost::system::error_code woken;
        co_await parked.async_wait(asio::redirect_error(asio::use_awaitable, woken));
    }
    void release() {
        if (m_waiters.empty()) {
            ++m_free;
            return;
        }
        m_waiters.front()->cancel();
        m_waiters.pop_front();
    }

private:
    std::size_t m_free;
    std::deque<asio::steady_timer*> m_waiters;
};

struct asio_client {
    idle_connections idle;
    asio_slots connections{coroutine_connections};
};

asio::awaitable<std::unique_ptr<connection>> connect_asio(tcp::endpoint where) {
    auto c = std::make_unique<connection>(
        connection{tcp::socket(co_await asio::this_coro::executor), {}});
    co_await c->socket.async_connect(where, asio::use_awaitable);
    c->socket.set_option(tcp::no_delay(true));
    co_return c;
}

asio::awaitable<bool> get_asio(connection& c) {
    auto request = get_request();
    co_await http::async_write(c.socket, request, asio::use_awaitable);
    http::response<http::string_body> response;
    co_await http::async_read(c.socket, c.buffer, response, asio::use_awaitable);
    co_return response_ok(response);
}

asio::awaitable<void> request_asio(open_loop& load, std::size_t i, asio_client& client,
                                   tcp::endpoint where) {
    co_await client.connections.acquire();
    if (load.too_late(steady::now())) { // waited for a connection past the cutoff
        load.abandoned(i);
        client.connections.release();
        co_return;
    }
    idle_connections& idle = client.idle;
    try {
        std::unique_ptr<connection> c;
        if (idle.empty()) {
            c = co_await connect_asio(where);
        } else {
            c = std::move(idle.back());
            idle.pop_back();
        }
        load.completed(i, co_await get_asio(*c));
        idle.push_back(std::move(c));
    } catch (const std::exception&) {
        load.failed(i);
    }
    client.connections.release();
}

asio::awaitable<void> warm_up_asio(idle_connections& idle, tcp::endpoint where, bool& ok) {
    auto c = co_await connect_asio(where);
    ok = ok && co_await get_asio(*c);
    idle.push_back(std::move(c));
}

asio::awaitable<void> offer_asio(open_loop& load, asio_client& client, tcp::endpoint where) {
    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer timer(executor);
    std::size_t i = 0;
    while (i < load.count()) {
        const auto now = steady::now();
        if (load.too_late(now)) {
            for (; i < load.count(); ++i)
                load.abandoned(i);
            break;
        }
        if (load.due(i) > now) {
            timer.expires_at(load.due(i));
            co_await timer.async_wait(asio::use_awaitable);
            continue;
        }
        for (; i < load.count() && load.due(i) <= now; ++i)
            asio::co_spawn(executor, request_asio(load, i, client, where), asio::detached);
    }
}

void asio_coroutines(benchmark::State& state) {
    const tcp::endpoint where = server().endpoint();
    open_loop load(shape_of(state));
    asio::io_context io(1);
    asio_client client;
    bool warm = true;
    for (std::size_t i = 0; i < pool_threads; ++i)
        asio::co_spawn(io, warm_up_asio(client.idle, where, warm), asio::detached);
    io.run();
    if (!warm || client.idle.size() != pool_threads) {
        state.SkipWithError("warm-up failed");
        return;
    }
    measure(state, load, [&] {
        io.restart();
        asio::co_spawn(io, offer_asio(load, client, where), asio::detached);
        io.run(); // until the last request has ended
    });
}

// --- thread pools with blocking clients: one connection per worker thread ----------------------

// Each worker thread keeps its own io_context and connection, as an expert would; they go with
// the thread when its pool is destroyed.
struct blocking_connection {
    asio::io_context io{1};
    connection c{tcp::socket(io), {}};
};
thread_local std::unique_ptr<blocking_connection> t_connection;

bool get_blocking(std::uint16_t port) {
    if (!t_connection) {
        auto fresh = std::make_unique<blocking_connection>();
        fresh->c.socket.connect({asio::ip::address_v4::loopback(), port});
        fresh->c.socket.set_option(tcp::no_delay(true));
        t_connection = std::move(fresh);
    }
    connection& c = t_connection->c;
    auto request = get_request();
    http::write(c.socket, request);
    http::response<http::string_body> response;
    http::read(c.socket, c.buffer, response);
    return response_ok(response);
}

void request_blocking(open_loop& load, std::size_t i, std::uint16_t port) {
    if (load.too_late(steady::now())) {
        load.abandoned(i);
        return;
    }
    try {
        load.completed(i, get_blocking(port));
    } catch (const std::exception&) {
        t_connection.reset();
        load.failed(i);
    }
}

// Posts each request at its due time from this thread; returns when all have ended. The latches
// are shared with the tasks: the last count_down may still be inside the latch when wait returns.
template <class Post>
void offer_blocking(open_loop& load, std::uint16_t port, Post post) {
    auto ended = std::make_shared<std::latch>(static_cast<std::ptrdiff_t>(load.count()));
    for (std::size_t i = 0; i < load.count(); ++i) {
        std::this_thread::sleep_until(load.due(i));
        post([&load, ended, i, port] {
            request_blocking(load, i, port);
            ended->count_down();
        });
    }
    ended->wait();
}

// Every worker opens its connection before the timed run: each of `threads` tasks holds its
// worker until all have connected, so no worker takes two.
template <class Post>
bool warm_up_blocking(std::size_t threads, std::uint16_t port, Post post) {
    auto connected = std::make_shared<std::latch>(static_cast<std::ptrdiff_t>(threads) + 1);
    auto ok = std::make_shared<std::atomic<bool>>(true);
    for (std::size_t i = 0; i < threads; ++i)
        post([connected, ok, port] {
            try {
                if (!get_blocking(port))
                    *ok = false;
            } catch (const std::exception&) {
                *ok = false;
            }
            connected->arrive_and_wait();
        });
    connected->arrive_and_wait();
    return *ok;
}

void triad_threads(benchmark::State& state) {
    const std::uint16_t port = server().port();
    open_loop load(shape_of(state));
    triad::thread_pool pool(pool_threads);
    const auto post = [&pool](auto fn) { pool.post(std::move(fn)); };
    if (!warm_up_blocking(pool_threads, port, post)) {
        state.SkipWithError("warm-up failed");
        return;
    }
    measure(state, load, [&] { offer_blocking(load, port, post); });
}

void asio_pool(benchmark::State& state) {
    const std::uint16_t port = server().port();
    open_loop load(shape_of(state));
    asio::thread_pool pool(pool_threads);
    const auto post = [&pool](auto fn) { asio::post(pool, std::move(fn)); };
    if (!warm_up_blocking(pool_threads, port, post)) {
        state.SkipWithError("warm-up failed");
        return;
    }
    measure(state, load, [&] { offer_blocking(load, port, post); });
}

const bool registered = [] {
    const std::string workload = "http_latency";
    triad_bench::describe(
        workload, {"HTTP GET latency at a fixed arrival rate (5 ms service time, 1 KiB bodies; "
                   "thread pools of 16 threads, coroutine clients up to 256 connections)",
                   "latency", "request", "rate"});
    // Below, at and past the thread pools' ceiling of 16 / 5 ms = 3,200 requests per second;
    // the coroutine clients have no such ceiling, and go on to twice the top rate.
    const std::vector<std::int64_t> rates =
        triad_bench::quick() ? std::vector<std::int64_t>{1000, 4000}
                             : std::vector<std::int64_t>{1000, 2000, 3000, 4000, 8000};
    const std::int64_t coroutines_only = triad_bench::quick() ? 0 : 16000;
    const auto add = [&](const char* executor, void (*fn)(benchmark::State&), bool pool) {
        auto* b = triad_bench::add(executor, workload, fn)
                      ->Iterations(1)
                      ->UseRealTime()
                      ->Unit(benchmark::kMillisecond);
        if (pool) {
            for (std::int64_t rate : rates)
                b->Args({rate, static_cast<std::int64_t>(pool_threads)});
            b->ArgNames({"rate", "threads"});
        } else {
            for (std::int64_t rate : rates)
                b->Args({rate});
            if (coroutines_only != 0)
                b->Args({coroutines_only});
            b->ArgNames({"rate"});
        }
    };
    add("triad_loop", triad_loop, false);
    add("asio_co_spawn", asio_coroutines, false);
    add("triad_threads", triad_threads, true);
    add("asio_thread_pool", asio_pool, true);
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    triad_bench::raise_descriptor_limit();
    return triad_bench::run_benchmarks(argc, argv);
}
