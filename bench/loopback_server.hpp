#pragma once

// The HTTP server the HTTP benchmarks talk to: Boost.Beast on 127.0.0.1, on a thread and triad
// event loop of its own for the whole run, so that every client executor meets the same server.
// What it answers is the benchmark's: it passes a task that serves one connection.

#include <triad/async.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <future>
#include <optional>
#include <thread>

#include <pthread.h>
#include <sys/resource.h>
#include <time.h>

namespace triad_bench {

using serve_connection_fn = triad::task<void> (*)(boost::asio::ip::tcp::socket);

// Accepts until the acceptor is closed. A failed accept (out of descriptors, say) is retried
// after a millisecond: a client waiting for that connection would wait for ever if the server
// stopped accepting.
inline triad::task<void> accept_connections(boost::asio::ip::tcp::acceptor& acceptor,
                                            serve_connection_fn serve) {
    co_await triad::task_group::scope([&](triad::task_group& connections) -> triad::task<void> {
        for (;;) {
            boost::asio::ip::tcp::socket socket(triad::current_executor());
            bool accepted = true;
            try {
                socket = co_await acceptor.async_accept(triad::use_task);
            } catch (const std::exception&) {
                accepted = false;
            }
            if (!accepted) {
                if (!acceptor.is_open())
                    break; // closed by ~loopback_server: stop
                co_await triad::sleep(std::chrono::milliseconds(1));
                continue;
            }
            (void)connections.spawn(serve(std::move(socket)));
        }
    });
}

class loopback_server {
public:
    explicit loopback_server(serve_connection_fn serve) {
        std::promise<std::uint16_t> port;
        auto ready = port.get_future();
        m_thread = std::thread([this, &port, serve] {
            triad::event_loop loop;
            m_executor = loop.executor();
            boost::asio::ip::tcp::acceptor acceptor(loop.executor(),
                                                    {boost::asio::ip::address_v4::loopback(), 0});
            acceptor.listen(4096);
            m_acceptor = &acceptor;
            port.set_value(acceptor.local_endpoint().port());
            loop.run(accept_connections(acceptor, serve));
        });
        m_port = ready.get();
    }
    loopback_server(const loopback_server&) = delete;
    loopback_server& operator=(const loopback_server&) = delete;
    ~loopback_server() {
        boost::asio::post(*m_executor, [this] { m_acceptor->close(); });
        m_thread.join();
    }

    std::uint16_t port() const noexcept { return m_port; }
    boost::asio::ip::tcp::endpoint endpoint() const {
        return {boost::asio::ip::address_v4::loopback(), m_port};
    }

    // CPU time the server's thread has used, in seconds: its share of a run says whether the
    // server came near saturating.
    double cpu_seconds() {
        clockid_t clock{};
        timespec now{};
        if (::pthread_getcpuclockid(m_thread.native_handle(), &clock) != 0 ||
            ::clock_gettime(clock, &now) != 0)
            return 0;
        return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
    }

private:
    std::thread m_thread;
    std::optional<boost::asio::io_context::executor_type> m_executor;
    boost::asio::ip::tcp::acceptor* m_acceptor = nullptr;
    std::uint16_t m_port = 0;
};

// Thousands of connections in flight need more descriptors than the usual soft limit of 1,024.
inline void raise_descriptor_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 65536);
        ::setrlimit(RLIMIT_NOFILE, &limit);
    }
}

} // namespace triad_bench
