#include <triad/use_task.hpp>

#include <triad/task.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <string>

using namespace std::chrono_literals;
namespace ip = boost::asio::ip;

TEST_CASE("an Asio timer is awaited with use_task", "[use_task]") {
    const auto start = std::chrono::steady_clock::now();
    triad::run(triad::make_task([]() -> triad::task<void> {
        boost::asio::steady_timer timer(triad::current_executor(), 20ms);
        co_await timer.async_wait(triad::use_task);
    }));
    CHECK(std::chrono::steady_clock::now() - start >= 20ms);
}

TEST_CASE("sockets accept, connect, write and read through use_task", "[use_task]") {
    const std::string echoed = triad::run(triad::make_task([]() -> triad::task<std::string> {
        ip::tcp::acceptor acceptor(triad::current_executor(), {ip::address_v4::loopback(), 0});
        auto server = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            ip::tcp::socket peer = co_await acceptor.async_accept(triad::use_task);
            char buffer[5];
            co_await boost::asio::async_read(peer, boost::asio::buffer(buffer), triad::use_task);
            co_await boost::asio::async_write(peer, boost::asio::buffer(buffer), triad::use_task);
        }));
        ip::tcp::socket client(triad::current_executor());
        co_await client.async_connect(acceptor.local_endpoint(), triad::use_task);
        co_await boost::asio::async_write(client, boost::asio::buffer("hello", 5), triad::use_task);
        std::string reply(5, '\0');
        const std::size_t n =
            co_await boost::asio::async_read(client, boost::asio::buffer(reply), triad::use_task);
        co_await server;
        co_return reply.substr(0, n);
    }));
    CHECK(echoed == "hello");
}

TEST_CASE("an Asio error arrives as boost::system::system_error", "[use_task]") {
    CHECK_THROWS_AS(
        triad::run(triad::make_task([]() -> triad::task<void> {
            // A port that was just released: nothing listens there.
            ip::tcp::endpoint closed;
            {
                ip::tcp::acceptor probe(triad::current_executor(), {ip::address_v4::loopback(), 0});
                closed = probe.local_endpoint();
            }
            ip::tcp::socket client(triad::current_executor());
            co_await client.async_connect(closed, triad::use_task);
        })),
        boost::system::system_error);
}

TEST_CASE("cancelling a task cancels the Asio operation it awaits", "[use_task]") {
    bool cancelled = false;
    triad::run(triad::make_task([&]() -> triad::task<void> {
        auto waiting = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            boost::asio::steady_timer timer(triad::current_executor(), 1h);
            try {
                co_await timer.async_wait(triad::use_task);
            } catch (const triad::task_cancelled&) {
                cancelled = true;
                throw;
            }
        }));
        co_await triad::sleep(5ms);
        waiting.cancel();
        CHECK_THROWS_AS(co_await waiting, triad::task_cancelled);
    }));
    CHECK(cancelled);
}
