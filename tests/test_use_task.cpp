#include <triad/use_task.hpp>

#include <triad/task.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

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

TEST_CASE("an operation on another io_context resumes the task on the loop's thread, and the "
          "loop waits for it",
          "[use_task]") {
    // Joining an existing Asio program: its io_context runs on its own thread.
    boost::asio::io_context other;
    auto keep_running = boost::asio::make_work_guard(other);
    std::thread other_thread([&other] { other.run(); });
    std::thread::id loop_thread;
    std::thread::id after_timer;
    std::thread::id after_read;
    std::string received;
    CHECK_NOTHROW(triad::run(triad::make_task([&]() -> triad::task<void> {
        loop_thread = std::this_thread::get_id();
        // Nothing else is going on in the loop: it must wait, not declare a deadlock.
        boost::asio::steady_timer timer(other, 30ms);
        co_await timer.async_wait(triad::use_task);
        after_timer = std::this_thread::get_id();
        boost::asio::local::stream_protocol::socket reader(other);
        boost::asio::local::stream_protocol::socket writer(other);
        boost::asio::local::connect_pair(reader, writer);
        std::thread late_writer([&writer] {
            std::this_thread::sleep_for(30ms);
            boost::asio::write(writer, boost::asio::buffer("ping", 4));
        });
        char buffer[4];
        co_await boost::asio::async_read(reader, boost::asio::buffer(buffer), triad::use_task);
        after_read = std::this_thread::get_id();
        late_writer.join();
        received.assign(buffer, 4);
    })));
    keep_running.reset();
    other_thread.join();
    CHECK(after_timer == loop_thread);
    CHECK(after_read == loop_thread);
    CHECK(received == "ping");
}

TEST_CASE("an operation that completed before a cancellation arrived delivers its result; the "
          "cancellation is seen at the next suspension",
          "[use_task]") {
    std::string received;
    bool cancelled_later = false;
    triad::run(triad::make_task([&]() -> triad::task<void> {
        boost::asio::local::stream_protocol::socket reader(triad::current_executor());
        boost::asio::local::stream_protocol::socket writer(triad::current_executor());
        boost::asio::local::connect_pair(reader, writer);
        boost::asio::write(writer, boost::asio::buffer("ping", 4));
        // The bytes are there: the read completes as it starts, and its handler is queued.
        // The cancel below runs in the same turn, before that handler.
        auto reading = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            char buffer[4];
            const std::size_t n =
                co_await reader.async_read_some(boost::asio::buffer(buffer), triad::use_task);
            received.assign(buffer, n);
            try {
                co_await triad::sleep(1h);
            } catch (const triad::task_cancelled&) {
                cancelled_later = true;
                throw;
            }
        }));
        auto canceller = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            reading.cancel();
            co_return;
        }));
        co_await canceller;
        CHECK_THROWS_AS(co_await reading, triad::task_cancelled);
    }));
    CHECK(received == "ping");
    CHECK(cancelled_later);
}

// Operations that complete inline run in constant stack: test_transfer_depth.cpp, at every
// optimisation level.

namespace {
boost::asio::awaitable<int> asio_answer() {
    co_return 42;
}
boost::asio::awaitable<int> asio_throws() {
    throw std::runtime_error("asio coroutine failed");
    co_return 0;
}
boost::asio::awaitable<void> asio_throws_void() {
    throw std::runtime_error("asio void coroutine failed");
    co_return;
}
} // namespace

TEST_CASE("co_spawn of an Asio awaitable through use_task returns its value or rethrows its "
          "exception",
          "[use_task]") {
    triad::run(triad::make_task([]() -> triad::task<void> {
        const int answer = co_await boost::asio::co_spawn(triad::current_executor(), asio_answer(),
                                                          triad::use_task);
        CHECK(answer == 42);
        CHECK_THROWS_WITH(co_await boost::asio::co_spawn(triad::current_executor(), asio_throws(),
                                                         triad::use_task),
                          "asio coroutine failed");
        CHECK_THROWS_WITH(co_await boost::asio::co_spawn(triad::current_executor(),
                                                         asio_throws_void(), triad::use_task),
                          "asio void coroutine failed");
    }));
}

TEST_CASE("an initiation that throws leaves no cancellation callback behind", "[use_task]") {
    bool sleep_cancelled = false;
    triad::run(triad::make_task([&]() -> triad::task<void> {
        triad::task_handle<void>* self = nullptr;
        auto waiting = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            try {
                co_await boost::asio::async_initiate<const triad::use_task_t,
                                                     void(boost::system::error_code)>(
                    [](auto&&) { throw std::runtime_error("initiation failed"); }, triad::use_task);
            } catch (const std::runtime_error&) {
            }
            // Cancelled while it runs: the request must wait for the next suspension, not go
            // to the operation that never started (and is gone).
            self->cancel();
            try {
                co_await triad::sleep(2s);
            } catch (const triad::task_cancelled&) {
                sleep_cancelled = true;
                throw;
            }
        }));
        self = &waiting;
        CHECK_THROWS_AS(co_await waiting, triad::task_cancelled);
    }));
    CHECK(sleep_cancelled);
}

TEST_CASE("a loop destroyed just after an operation on another io_context completed is safe",
          "[use_task]") {
    // The other io_context's thread hands the completion over, then lets go of the work it
    // held on the loop's io_context: a loop that finished and was destroyed in between made
    // that thread touch freed memory (an abort within 20,000 rounds, every time).
    boost::asio::io_context other;
    auto keep_running = boost::asio::make_work_guard(other);
    std::thread other_thread([&other] { other.run(); });
#ifdef TRIAD_TEST_SANITIZER
    constexpr int rounds = 2'000;
#else
    constexpr int rounds = 20'000;
#endif
    int completed = 0;
    for (int i = 0; i < rounds; ++i)
        triad::run(triad::make_task([&]() -> triad::task<void> {
            co_await boost::asio::post(other.get_executor(), triad::use_task);
            ++completed;
        }));
    keep_running.reset();
    other_thread.join();
    CHECK(completed == rounds);
}

TEST_CASE("an operation that failed before a cancellation arrived delivers its exception",
          "[use_task]") {
    boost::asio::io_context other;
    auto keep_running = boost::asio::make_work_guard(other);
    std::thread other_thread([&other] { other.run(); });
    int failures_seen = 0;
    std::atomic<bool> fail_now{false};
    for (int round = 0; round < 5; ++round) {
        fail_now = false;
        triad::run(triad::make_task([&]() -> triad::task<void> {
            auto victim = triad::spawn(triad::make_task([&]() -> triad::task<void> {
                try {
                    // What co_spawn does: the completion, an exception_ptr first, is handed to
                    // the handler's executor from the other io_context's thread.
                    co_await boost::asio::async_initiate<const triad::use_task_t,
                                                         void(std::exception_ptr, int)>(
                        [&other, &fail_now](auto handler) {
                            boost::asio::post(other, [&fail_now, h = std::move(handler)]() mutable {
                                while (!fail_now)
                                    std::this_thread::yield();
                                auto ex = boost::asio::get_associated_executor(h);
                                boost::asio::dispatch(ex, [h = std::move(h)]() mutable {
                                    h(std::make_exception_ptr(std::runtime_error("real failure")),
                                      0);
                                });
                            });
                        },
                        triad::use_task);
                } catch (const triad::task_cancelled&) {
                    throw; // (a runtime_error too: caught first)
                } catch (const std::runtime_error& e) {
                    if (std::string(e.what()) == "real failure")
                        ++failures_seen;
                }
            }));
            co_await triad::sleep(0ms); // the victim starts and waits
            // The failure is queued on the loop before the cancellation comes.
            fail_now = true;
            std::this_thread::sleep_for(20ms);
            victim.cancel();
            try {
                co_await victim;
            } catch (const triad::task_cancelled&) {
            }
        }));
    }
    keep_running.reset();
    other_thread.join();
    CHECK(failures_seen == 5); // it used to be replaced by task_cancelled
}
