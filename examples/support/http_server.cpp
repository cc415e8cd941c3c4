// The implementation of support/http_server.hpp, compiled once for all the examples: Beast's
// parsers and the server's coroutines are most of an example's compile time when every example
// instantiates them (half a minute per example under AddressSanitizer).

#include "http_server.hpp"

#include <triad/task.hpp>
#include <triad/use_task.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace triad_examples {

namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

class server_impl {
public:
    explicit server_impl(http_server_options options)
        : m_options(options), m_acceptor(m_io, {asio::ip::address_v4::loopback(), 0}),
          m_endpoint(m_acceptor.local_endpoint()) {
        asio::co_spawn(m_io, accept_loop(), asio::detached);
        for (std::size_t i = 0; i < std::max<std::size_t>(1, m_options.threads); ++i)
            m_threads.emplace_back([this] { m_io.run(); });
    }
    server_impl(const server_impl&) = delete;
    server_impl& operator=(const server_impl&) = delete;
    ~server_impl() {
        m_io.stop(); // connections still open are dropped with the io_context
        for (auto& t : m_threads)
            t.join();
    }

    /** Where the server listens (read once: the acceptor belongs to the server's threads). */
    tcp::endpoint endpoint() const { return m_endpoint; }
    unsigned short port() const { return endpoint().port(); }
    /** "http://127.0.0.1:<port><target>", for printing. */
    std::string url(std::string_view target) const {
        return "http://127.0.0.1:" + std::to_string(port()) + std::string(target);
    }

    /** Requests read so far. */
    std::uint64_t requests() const noexcept { return m_requests.load(); }
    /** Requests answered with 500 or a closed connection. */
    std::uint64_t failures_injected() const noexcept { return m_failures.load(); }
    /** The most requests the server held at once (its view of the client's concurrency). */
    std::uint64_t max_in_flight() const noexcept { return m_max_in_flight.load(); }
    void reset_max_in_flight() noexcept { m_max_in_flight.store(m_in_flight.load()); }

private:
    asio::awaitable<void> accept_loop() {
        for (;;) {
            auto [ec, socket] =
                co_await m_acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
            if (ec == asio::error::operation_aborted || !m_acceptor.is_open())
                co_return; // the server is stopping
            if (ec) {
                // Out of descriptors (EMFILE) or a connection reset before it was accepted: the
                // listening socket is still fine, so keep accepting. Returning here left the
                // connections the kernel still queued unanswered and their clients hung for good.
                asio::steady_timer pause(m_io, std::chrono::milliseconds(10));
                co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
                continue;
            }
            asio::co_spawn(m_io, session(std::move(socket)), asio::detached);
        }
    }

    // One connection: requests one after another (keep-alive) until the client closes it.
    asio::awaitable<void> session(tcp::socket socket) {
        boost::beast::flat_buffer buffer;
        for (;;) {
            http::request<http::string_body> request;
            auto [read_error, read] = co_await http::async_read(
                socket, buffer, request, asio::as_tuple(asio::use_awaitable));
            if (read_error)
                co_return; // closed by the client (or garbage)
            m_requests.fetch_add(1);
            const std::uint64_t now = m_in_flight.fetch_add(1) + 1;
            std::uint64_t seen = m_max_in_flight.load();
            while (seen < now && !m_max_in_flight.compare_exchange_weak(seen, now)) {
            }
            struct leave {
                std::atomic<std::uint64_t>& n;
                ~leave() { n.fetch_sub(1); }
            } leaving{m_in_flight};

            const std::string target(request.target());
            const std::string_view path = std::string_view(target).substr(0, target.find('?'));
            const auto delay = query_number(target, "delay");
            // A delay out of range is the client's mistake, answered at once: a negative one
            // would be no wait, and a huge one overflowed the timer's clock and never replied.
            const bool bad_delay = delay && (*delay < 0 || *delay > max_delay.count());
            if (!bad_delay) {
                asio::steady_timer timer(socket.get_executor());
                timer.expires_after(delay ? std::chrono::milliseconds(*delay) : m_options.latency);
                co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
            }

            bool fail = path == "/error";
            bool close = path == "/close";
            if (const auto planned = query_number(target, "fail"); planned && !fail && !close) {
                std::lock_guard lock(m_mutex);
                if (m_failed[target]++ < *planned) {
                    const bool by_closing = target.find("how=close") != std::string::npos;
                    (by_closing ? close : fail) = true;
                }
            }
            if (fail || close)
                m_failures.fetch_add(1);
            if (close) {
                boost::system::error_code ignored;
                socket.shutdown(tcp::socket::shutdown_both, ignored);
                co_return;
            }

            http::response<http::string_body> response{bad_delay ? http::status::bad_request
                                                       : fail ? http::status::internal_server_error
                                                              : http::status::ok,
                                                       request.version()};
            response.set(http::field::server, "triad-examples");
            response.set(http::field::content_type, "application/json");
            response.keep_alive(request.keep_alive());
            response.body() = bad_delay ? std::string(R"({"error":"delay must be 0..60000 ms"})")
                              : fail    ? std::string(R"({"error":"injected failure"})")
                                        : "{\"path\":\"" + std::string(path) +
                                           "\",\"value\":" + std::to_string(value_of(path)) + "}";
            response.prepare_payload();
            auto [write_error, written] =
                co_await http::async_write(socket, response, asio::as_tuple(asio::use_awaitable));
            if (write_error || !response.keep_alive())
                co_return;
        }
    }

    static std::optional<long> query_number(std::string_view target, std::string_view name) {
        const auto query = target.find('?');
        if (query == std::string_view::npos)
            return std::nullopt;
        std::string_view rest = target.substr(query + 1);
        while (!rest.empty()) {
            const std::string_view pair = rest.substr(0, rest.find('&'));
            rest.remove_prefix(std::min(rest.size(), pair.size() + 1));
            if (pair.size() > name.size() && pair.substr(0, name.size()) == name &&
                pair[name.size()] == '=') {
                // A value that is not a whole number ("abc", "5abc", one past long) is out of
                // every range, so "delay=abc" is answered 400 rather than ignored.
                long value = 0;
                const std::string_view digits = pair.substr(name.size() + 1);
                const auto [end, ec] =
                    std::from_chars(digits.data(), digits.data() + digits.size(), value);
                if (ec != std::errc() || end != digits.data() + digits.size())
                    return std::numeric_limits<long>::min();
                return value;
            }
        }
        return std::nullopt;
    }

    static constexpr std::chrono::milliseconds max_delay{60'000};

    // Declared before m_io, so destroyed after it: the io_context destroys the sessions still
    // suspended (a client connected at shutdown), and their frames' destructors decrement
    // m_in_flight, which must still be alive then.
    std::mutex m_mutex;
    std::map<std::string, long> m_failed; // under m_mutex: requests seen per target with fail=
    std::atomic<std::uint64_t> m_requests{0};
    std::atomic<std::uint64_t> m_failures{0};
    std::atomic<std::uint64_t> m_in_flight{0};
    std::atomic<std::uint64_t> m_max_in_flight{0};
    http_server_options m_options;
    asio::io_context m_io;
    tcp::acceptor m_acceptor;
    tcp::endpoint m_endpoint;
    std::vector<std::thread> m_threads;
};

class client_impl {
public:
    client_impl(tcp::endpoint server, std::chrono::milliseconds timeout)
        : m_server(server), m_timeout(timeout), m_socket(m_io) {}

    /** GETs `target`; throws `boost::system::system_error` if the connection fails, closes
     * without a reply or the reply takes longer than the timeout (`error::timed_out`). Any
     * status is returned. */
    http_reply get(const std::string& target) {
        // The exchange runs as asynchronous operations on this client's own io_context, driven
        // here until the deadline: Asio's blocking calls ignore SO_RCVTIMEO and would wait for
        // good. The deadline saturates: now() + a huge timeout overflowed into the past.
        using clock = std::chrono::steady_clock;
        const auto now = clock::now();
        const auto deadline = m_timeout >= std::chrono::duration_cast<std::chrono::milliseconds>(
                                               clock::time_point::max() - now)
                                  ? clock::time_point::max()
                                  : now + m_timeout;
        bool done = false;
        std::exception_ptr error;
        http_reply reply;
        asio::co_spawn(m_io, exchange(target, deadline), [&](std::exception_ptr e, http_reply r) {
            done = true;
            error = std::move(e);
            reply = std::move(r);
        });
        m_io.restart();
        m_io.run_until(deadline);
        if (!done) {
            close(); // cancels the pending operation; its handler runs below
            m_io.restart();
            m_io.run();
            throw boost::system::system_error(asio::error::timed_out, "GET " + target);
        }
        if (error) {
            close();
            std::rethrow_exception(error);
        }
        return reply;
    }

    /** GETs `target` and throws `http_status_error` unless the status is 200. */
    std::string get_ok(const std::string& target) {
        http_reply reply = get(target);
        if (reply.status != 200)
            throw http_status_error(reply.status, target);
        return std::move(reply.body);
    }

private:
    asio::awaitable<http_reply> exchange(std::string target,
                                         std::chrono::steady_clock::time_point deadline) {
        // run_until can return before this coroutine has started (a timeout of 0, or a thread
        // preempted past a short one). Closing the socket then cancels nothing, and the run()
        // that follows would connect and wait for the reply with no deadline at all.
        if (std::chrono::steady_clock::now() >= deadline)
            throw boost::system::system_error(asio::error::timed_out);
        if (!m_socket.is_open())
            co_await m_socket.async_connect(m_server, asio::use_awaitable);
        http::request<http::empty_body> request{http::verb::get, target, 11};
        request.set(http::field::host, "127.0.0.1");
        co_await http::async_write(m_socket, request, asio::use_awaitable);
        http::response<http::string_body> response;
        co_await http::async_read(m_socket, m_buffer, response, asio::use_awaitable);
        if (!response.keep_alive())
            close();
        co_return http_reply{response.result_int(), std::move(response.body())};
    }

    void close() {
        boost::system::error_code ignored;
        m_socket.close(ignored);
        m_buffer.clear();
    }

    tcp::endpoint m_server;
    std::chrono::milliseconds m_timeout;
    asio::io_context m_io; // run by get() only, on the calling thread
    tcp::socket m_socket;
    boost::beast::flat_buffer m_buffer;
};

} // namespace

struct http_server::state : server_impl {
    using server_impl::server_impl;
};

http_server::http_server(http_server_options options) : m_state(std::make_unique<state>(options)) {}
http_server::~http_server() = default;
tcp::endpoint http_server::endpoint() const {
    return m_state->endpoint();
}
unsigned short http_server::port() const {
    return m_state->port();
}
std::string http_server::url(std::string_view target) const {
    return m_state->url(target);
}
std::uint64_t http_server::requests() const noexcept {
    return m_state->requests();
}
std::uint64_t http_server::failures_injected() const noexcept {
    return m_state->failures_injected();
}
std::uint64_t http_server::max_in_flight() const noexcept {
    return m_state->max_in_flight();
}
void http_server::reset_max_in_flight() noexcept {
    m_state->reset_max_in_flight();
}

struct http_client::state : client_impl {
    using client_impl::client_impl;
};

http_client::http_client(tcp::endpoint server, std::chrono::milliseconds timeout)
    : m_state(std::make_unique<state>(server, timeout)) {}
http_client::~http_client() = default;
http_client::http_client(http_client&&) noexcept = default;
http_client& http_client::operator=(http_client&&) noexcept = default;
http_reply http_client::get(const std::string& target) {
    return m_state->get(target);
}
std::string http_client::get_ok(const std::string& target) {
    return m_state->get_ok(target);
}

/**
 * GETs `target` from a task on the triad event loop over a connection of its own (aiohttp
 * without a session). Throws `boost::system::system_error` if the connection fails or closes
 * without a reply; any status is returned. Parameters by value: the task may outlive the caller's
 * temporaries.
 */
triad::task<http_reply> async_get(tcp::endpoint server, std::string target) {
    tcp::socket socket(triad::current_executor());
    co_await socket.async_connect(server, triad::use_task);
    http::request<http::empty_body> request{http::verb::get, target, 11};
    request.set(http::field::host, "127.0.0.1");
    request.keep_alive(false);
    co_await http::async_write(socket, request, triad::use_task);
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> response;
    co_await http::async_read(socket, buffer, response, triad::use_task);
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    co_return http_reply{response.result_int(), std::move(response.body())};
}

/** `async_get` that throws `http_status_error` unless the status is 200 (for `triad::retry`). */
triad::task<std::string> async_get_ok(tcp::endpoint server, std::string target) {
    http_reply reply = co_await async_get(server, target);
    if (reply.status != 200)
        throw http_status_error(reply.status, target);
    co_return std::move(reply.body);
}

} // namespace triad_examples
