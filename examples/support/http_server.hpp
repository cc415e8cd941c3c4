#pragma once

// A real HTTP/1.1 service for the examples that fetch URLs: a Boost.Beast server on 127.0.0.1
// (an ephemeral port) running on threads of its own, each reply delayed to stand for network
// latency, with failures injected on request (the Python course's failing URL), and two clients:
// a blocking one for threads and a coroutine one for the triad event loop. Nothing is mocked:
// every request crosses a TCP connection and is parsed by Beast on both sides.
//
// What the server answers, by path:
//   /error             500 every time (the course's "http://example.com/error")
//   /close             closes the connection without a reply, every time
//   anything else      200 with the body {"path":"<path>","value":<value_of(path)>}
// and by query parameter (any path):
//   delay=<ms>         this reply's latency instead of the server's (0..60000; else 400)
//   fail=<n>           the first n requests for this exact target fail, later ones succeed
//                      (a transient failure, which a retry gets past)
//   how=500|close      how those n requests fail (default 500)

#include <triad/task.hpp>

#include <boost/asio/ip/tcp.hpp>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace triad_examples {

using tcp = boost::asio::ip::tcp;

/** How the example server behaves. */
struct http_server_options {
    /** Every reply waits this long before it is sent (per request; `delay=` overrides). */
    std::chrono::milliseconds latency{0};
    /** Threads running the server's io_context; one serves thousands of waiting requests. */
    std::size_t threads = 1;
};

/** What a client got back. */
struct http_reply {
    unsigned status = 0;
    std::string body;
};

/** A reply whose status is not 200, as an exception (what `raise_for_status` raises). */
class http_status_error : public std::runtime_error {
public:
    http_status_error(unsigned status, const std::string& target)
        : std::runtime_error("HTTP " + std::to_string(status) + " for " + target),
          m_status(status) {}
    unsigned status() const noexcept { return m_status; }

private:
    unsigned m_status;
};

/** The value the server puts in the body for `path` (FNV-1a, so clients can check replies). */
inline std::uint64_t value_of(std::string_view path) {
    std::uint64_t h = 14695981039346656037ULL;
    for (char c : path) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ULL;
    }
    return h % 1'000'000;
}

/** Reads the `"value":` field of a body the server sent; nullopt if there is none. */
inline std::optional<std::uint64_t> parse_value(std::string_view body) {
    constexpr std::string_view key = "\"value\":";
    const auto at = body.find(key);
    if (at == std::string_view::npos)
        return std::nullopt;
    std::uint64_t value = 0;
    const char* first = body.data() + at + key.size();
    const auto [end, ec] = std::from_chars(first, body.data() + body.size(), value);
    if (ec != std::errc() || end == first)
        return std::nullopt;
    return value;
}

/**
 * The server: listens on 127.0.0.1 at an ephemeral port from construction to destruction.
 * Connections are kept alive (HTTP/1.1) until the client closes them.
 *
 * Build a `triad::process_pool` before this: the server's threads should not be running when
 * the pool forks its workers.
 *
 * @par Thread Safety
 * The counters may be read from any thread while the server runs.
 */
class http_server {
public:
    explicit http_server(http_server_options options = {});
    http_server(const http_server&) = delete;
    http_server& operator=(const http_server&) = delete;
    ~http_server();

    /** Where the server listens. */
    tcp::endpoint endpoint() const;
    unsigned short port() const;
    /** "http://127.0.0.1:<port><target>", for printing. */
    std::string url(std::string_view target) const;

    /** Requests read so far. */
    std::uint64_t requests() const noexcept;
    /** Requests answered with 500 or a closed connection. */
    std::uint64_t failures_injected() const noexcept;
    /** The most requests the server held at once (its view of the client's concurrency). */
    std::uint64_t max_in_flight() const noexcept;
    void reset_max_in_flight() noexcept;

private:
    struct state;
    std::unique_ptr<state> m_state;
};

/**
 * A blocking client for threads (what `requests.Session` is to a Python thread): keeps one
 * connection alive between requests and reconnects after a failure. Use one per thread. Every
 * request has a deadline (`requests.get(url, timeout=...)`): a server that never answers costs
 * the timeout, not the thread.
 *
 * @par Thread Safety
 * None: one thread at a time.
 */
class http_client {
public:
    explicit http_client(tcp::endpoint server,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30));
    http_client(http_client&&) noexcept;
    http_client& operator=(http_client&&) noexcept;
    ~http_client();

    /** GETs `target`; throws `boost::system::system_error` if the connection fails, closes
     * without a reply or the reply takes longer than the timeout (`error::timed_out`). Any
     * status is returned. */
    http_reply get(const std::string& target);

    /** GETs `target` and throws `http_status_error` unless the status is 200. */
    std::string get_ok(const std::string& target);

private:
    struct state;
    std::unique_ptr<state> m_state;
};

/**
 * GETs `target` from a task on the triad event loop over a connection of its own (aiohttp
 * without a session). Throws `boost::system::system_error` if the connection fails or closes
 * without a reply; any status is returned. Parameters by value: the task may outlive the caller's
 * temporaries.
 */
triad::task<http_reply> async_get(tcp::endpoint server, std::string target);

/** `async_get` that throws `http_status_error` unless the status is 200 (for `triad::retry`). */
triad::task<std::string> async_get_ok(tcp::endpoint server, std::string target);

} // namespace triad_examples
