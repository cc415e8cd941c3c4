// Lesson: gather runs awaitables concurrently, so four fetches take as long as the longest,
// not as long as all four together. Mirrors the Python course's asyncio.gather of downloads. The
// fetches here are real: an HTTP-like exchange over loopback TCP with a server this program
// starts (Boost.Asio), each reply delayed by the server to stand for network latency.
//
// Usage: gather_fetches [delays_ms...]   (default: 200 400 300 100)

#include <triad/async.hpp>

#include <fmt/core.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <cstdlib>
#include <istream>
#include <string>
#include <vector>

namespace ip = boost::asio::ip;
using clock_type = std::chrono::steady_clock;

namespace {

// The server: reads "GET <delay_ms>\n", waits that long, answers with a body.
triad::task<void> serve_one(ip::tcp::socket peer) {
    boost::asio::streambuf request;
    co_await boost::asio::async_read_until(peer, request, '\n', triad::use_task);
    std::istream in(&request);
    std::string verb;
    int delay_ms = 0;
    in >> verb >> delay_ms;
    co_await triad::sleep(std::chrono::milliseconds(delay_ms));
    const std::string body = fmt::format("payload after {} ms\n", delay_ms);
    co_await boost::asio::async_write(peer, boost::asio::buffer(body), triad::use_task);
}

// One task per connection, in a task group scope: it ends once every connection is served,
// also if accepting fails or the server is cancelled.
triad::task<void> server(ip::tcp::acceptor& acceptor, std::size_t requests) {
    co_await triad::task_group::scope([&](triad::task_group& connections) -> triad::task<void> {
        for (std::size_t i = 0; i < requests; ++i)
            (void)connections.spawn(serve_one(co_await acceptor.async_accept(triad::use_task)));
    });
}

// The client: one request, one reply.
triad::task<std::string> fetch(ip::tcp::endpoint where, int delay_ms) {
    ip::tcp::socket socket(triad::current_executor());
    co_await socket.async_connect(where, triad::use_task);
    const std::string request = fmt::format("GET {}\n", delay_ms);
    co_await boost::asio::async_write(socket, boost::asio::buffer(request), triad::use_task);
    boost::asio::streambuf reply;
    co_await boost::asio::async_read_until(socket, reply, '\n', triad::use_task);
    std::string line;
    std::getline(std::istream(&reply) >> std::ws, line);
    co_return line;
}

} // namespace

int main(int argc, char** argv) {
    std::vector<int> delays;
    for (int i = 1; i < argc; ++i)
        delays.push_back(std::atoi(argv[i]));
    if (delays.empty())
        delays = {200, 400, 300, 100};

    triad::run(triad::make_task([&]() -> triad::task<void> {
        ip::tcp::acceptor acceptor(triad::current_executor(), {ip::address_v4::loopback(), 0});
        auto serving = triad::spawn(server(acceptor, delays.size()));

        const auto start = clock_type::now();
        std::vector<triad::task<std::string>> fetches;
        for (int d : delays)
            fetches.push_back(fetch(acceptor.local_endpoint(), d));
        const std::vector<std::string> pages = co_await triad::gather(std::move(fetches));
        const double took = std::chrono::duration<double>(clock_type::now() - start).count();

        for (std::size_t i = 0; i < pages.size(); ++i)
            fmt::print("fetch {} ({} ms): {}\n", i, delays[i], pages[i]);
        int longest = 0;
        int total = 0;
        for (int d : delays) {
            longest = std::max(longest, d);
            total += d;
        }
        fmt::print("gather took {:.3f}s: the longest fetch is {:.3f}s, all of them one after "
                   "another would take {:.3f}s\n",
                   took, longest / 1000.0, total / 1000.0);
        co_await serving;
    }));
    return 0;
}
