#include <triad/use_task.hpp>

#include <triad/task.hpp>

#include <catch2/catch.hpp>

#include "support.hpp"

#include <triad/combinators.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/as_single.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

// The whole file in a namespace of its own: the unity build compiles several test files as one
// translation unit (tests/CMakeLists.txt), where helpers of the same name must not meet.
namespace triad_test_use_task {

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

TEST_CASE("an operation that completed before a cancellation arrived delivers its result, the "
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

// --- Asio's token adapters --------------------------------------------------------------------

namespace {
// A port that was just released: nothing listens there.
ip::tcp::endpoint closed_port(const boost::asio::io_context::executor_type& executor) {
    ip::tcp::acceptor probe(executor, {ip::address_v4::loopback(), 0});
    return probe.local_endpoint();
}
} // namespace

TEST_CASE("redirect_error, as_tuple and as_single compose with use_task", "[use_task]") {
    triad::run(triad::make_task([]() -> triad::task<void> {
        const ip::tcp::endpoint closed = closed_port(triad::current_executor());
        ip::tcp::socket client(triad::current_executor());
        boost::system::error_code ec;
        co_await client.async_connect(closed, boost::asio::redirect_error(triad::use_task, ec));
        CHECK(ec == boost::asio::error::connection_refused);

        ip::tcp::socket other_client(triad::current_executor());
        auto [connect_error] =
            co_await other_client.async_connect(closed, boost::asio::as_tuple(triad::use_task));
        CHECK(connect_error == boost::asio::error::connection_refused);

        boost::asio::local::stream_protocol::socket reader(triad::current_executor());
        boost::asio::local::stream_protocol::socket writer(triad::current_executor());
        boost::asio::local::connect_pair(reader, writer);
        boost::asio::write(writer, boost::asio::buffer("ping", 4));
        char buffer[4];
        auto [read_error, n] = co_await reader.async_read_some(
            boost::asio::buffer(buffer), boost::asio::as_tuple(triad::use_task));
        CHECK_FALSE(read_error);
        CHECK(n == 4);

        boost::asio::write(writer, boost::asio::buffer("pong", 4));
        std::tuple<boost::system::error_code, std::size_t> single = co_await reader.async_read_some(
            boost::asio::buffer(buffer), boost::asio::experimental::as_single(triad::use_task));
        CHECK_FALSE(std::get<0>(single));
        CHECK(std::get<1>(single) == 4);

        // A value from redirect_error: the bytes read.
        boost::asio::write(writer, boost::asio::buffer("ping", 4));
        const std::size_t read = co_await reader.async_read_some(
            boost::asio::buffer(buffer), boost::asio::redirect_error(triad::use_task, ec));
        CHECK_FALSE(ec);
        CHECK(read == 4);
    }));
}

TEST_CASE("bind_executor with a strand runs the completion on the strand and resumes the task on "
          "the loop's thread",
          "[use_task]") {
    boost::asio::io_context other;
    auto keep_running = boost::asio::make_work_guard(other);
    std::thread other_thread([&other] { other.run(); });
    std::thread::id loop_thread;
    std::thread::id after_local_strand;
    std::thread::id after_other_strand;
    CHECK_NOTHROW(triad::run(triad::make_task([&]() -> triad::task<void> {
        loop_thread = std::this_thread::get_id();
        auto local_strand = boost::asio::make_strand(triad::current_executor());
        boost::asio::steady_timer timer(triad::current_executor(), 5ms);
        co_await timer.async_wait(boost::asio::bind_executor(local_strand, triad::use_task));
        after_local_strand = std::this_thread::get_id();
        // The loop's timer, a strand of another io_context: the completion goes to that
        // thread, and the loop, which has nothing else to do, must wait for it.
        auto other_strand = boost::asio::make_strand(other);
        timer.expires_after(5ms);
        co_await timer.async_wait(boost::asio::bind_executor(other_strand, triad::use_task));
        after_other_strand = std::this_thread::get_id();
    })));
    keep_running.reset();
    other_thread.join();
    CHECK(after_local_strand == loop_thread);
    CHECK(after_other_strand == loop_thread);
}

TEST_CASE("bind_cancellation_slot: the slot's signal and the task's cancellation both cancel the "
          "operation",
          "[use_task]") {
    bool user_cancel_aborted = false;
    triad::run(triad::make_task([&]() -> triad::task<void> {
        boost::asio::cancellation_signal user;
        boost::asio::steady_timer timer(triad::current_executor(), 1h);
        auto by_user = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            try {
                co_await timer.async_wait(
                    boost::asio::bind_cancellation_slot(user.slot(), triad::use_task));
            } catch (const boost::system::system_error& e) {
                user_cancel_aborted = e.code() == boost::asio::error::operation_aborted;
            }
        }));
        co_await triad::sleep(5ms);
        user.emit(boost::asio::cancellation_type::all);
        co_await by_user;

        boost::asio::cancellation_signal unused;
        auto by_task = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            co_await timer.async_wait(
                boost::asio::bind_cancellation_slot(unused.slot(), triad::use_task));
        }));
        co_await triad::sleep(5ms);
        by_task.cancel();
        CHECK_THROWS_AS(co_await by_task, triad::task_cancelled);
        // The operation is over: the user's signal reaches nothing any more.
        unused.emit(boost::asio::cancellation_type::all);
        user.emit(boost::asio::cancellation_type::all);
    }));
    CHECK(user_cancel_aborted);
}

// --- operations of other threads and other io_contexts ----------------------------------------

namespace {
// Turns a loop that would wait for ever into a failure: past `limit`, it stops the loop's
// io_context until the run is over, which makes run() report that nothing can wake its tasks.
class watchdog {
public:
    watchdog(triad::event_loop& loop, std::chrono::milliseconds limit)
        : m_thread([this, &loop, limit] {
              const auto until = std::chrono::steady_clock::now() + limit;
              while (!m_done && std::chrono::steady_clock::now() < until)
                  std::this_thread::sleep_for(5ms);
              while (!m_done) {
                  m_fired = true;
                  loop.context().stop();
                  std::this_thread::sleep_for(20ms);
              }
          }) {}
    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;
    ~watchdog() {
        m_done = true;
        m_thread.join();
    }
    bool fired() const noexcept { return m_fired; }

private:
    std::atomic<bool> m_done{false};
    std::atomic<bool> m_fired{false};
    std::thread m_thread;
};
} // namespace

TEST_CASE("an initiation that runs the handler on a thread of its own resumes the task on the "
          "loop's thread, and the loop waits for it",
          "[use_task]") {
    // Not what Asio asks of an initiation (the handler should be dispatched to its associated
    // executor), but what many hand-written wrappers do.
    std::thread worker;
    std::thread::id loop_thread;
    std::thread::id resumed_on;
    int value = 0;
    {
        triad::event_loop loop;
        watchdog guard(loop, 10s);
        CHECK_NOTHROW(loop.run(triad::make_task([&]() -> triad::task<void> {
            loop_thread = std::this_thread::get_id();
            value = co_await boost::asio::async_initiate<const triad::use_task_t,
                                                         void(boost::system::error_code, int)>(
                [&worker](auto handler) {
                    worker = std::thread([h = std::move(handler)]() mutable {
                        std::this_thread::sleep_for(30ms);
                        std::move(h)(boost::system::error_code(), 7);
                    });
                },
                triad::use_task);
            resumed_on = std::this_thread::get_id();
        })));
        CHECK_FALSE(guard.fired());
    }
    if (worker.joinable())
        worker.join();
    CHECK(value == 7);
    CHECK(resumed_on == loop_thread);
}

TEST_CASE("a handler the initiation copies resumes the task once, one it drops resumes it with "
          "operation_aborted",
          "[use_task]") {
    std::thread worker;
    std::thread dropper;
    bool copied_resumed = false;
    bool dropped_aborted = false;
    {
        triad::event_loop loop;
        watchdog guard(loop, 10s);
        CHECK_NOTHROW(loop.run(triad::make_task([&]() -> triad::task<void> {
            // Copies: the ones destroyed uncalled do not count while another is alive.
            co_await boost::asio::async_initiate<const triad::use_task_t,
                                                 void(boost::system::error_code)>(
                [&worker](auto handler) {
                    std::function<void(boost::system::error_code)> first = std::move(handler);
                    auto second = first;
                    worker = std::thread([second]() mutable {
                        std::this_thread::sleep_for(20ms);
                        second(boost::system::error_code());
                    });
                },
                triad::use_task);
            copied_resumed = true;
            try {
                co_await boost::asio::async_initiate<const triad::use_task_t,
                                                     void(boost::system::error_code)>(
                    [&dropper](auto handler) {
                        dropper = std::thread([h = std::move(handler)]() mutable {
                            std::this_thread::sleep_for(20ms);
                            auto gone = std::move(h); // destroyed here, never called
                        });
                    },
                    triad::use_task);
            } catch (const boost::system::system_error& e) {
                dropped_aborted = e.code() == boost::asio::error::operation_aborted;
            }
        })));
        CHECK_FALSE(guard.fired());
    }
    if (worker.joinable())
        worker.join();
    if (dropper.joinable())
        dropper.join();
    CHECK(copied_resumed);
    CHECK(dropped_aborted);
}

namespace {
// An operation on another io_context that records the thread its cancellation arrives on, and
// then completes with operation_aborted through its handler's executor, as Asio's do.
struct recording_operation {
    using executor_type = boost::asio::io_context::executor_type;
    executor_type executor;
    std::atomic<std::thread::id>* cancelled_on;

    executor_type get_executor() const noexcept { return executor; }

    template <class Handler>
    void operator()(Handler handler) const {
        auto slot = boost::asio::get_associated_cancellation_slot(handler);
        auto pending = std::make_shared<std::optional<Handler>>(std::move(handler));
        slot.assign([pending, where = cancelled_on, io = executor](boost::asio::cancellation_type) {
            where->store(std::this_thread::get_id());
            if (!*pending)
                return;
            Handler h = std::move(**pending);
            pending->reset(); // (the handler holds the slot's signal: no cycle left behind)
            auto ex = boost::asio::get_associated_executor(h, io);
            boost::asio::dispatch(
                ex, [h = std::move(h)]() mutable { h(boost::asio::error::operation_aborted); });
        });
    }
};
// The same, not saying which executor it works on.
struct unnamed_recording_operation {
    recording_operation operation;
    template <class Handler>
    void operator()(Handler handler) const {
        operation(std::move(handler));
    }
};
} // namespace

TEST_CASE("the cancellation of an operation is emitted where its handler runs: its own "
          "io_context, the executor bound with bind_executor, or else the loop's thread",
          "[use_task]") {
    // Asio's cancellation signals are not thread-safe, and a composed operation takes its steps
    // (each installing a handler in the slot) where its handler runs: that is where it must be
    // cancelled from. It used to be emitted on the loop's thread always.
    boost::asio::io_context other;
    auto keep_running = boost::asio::make_work_guard(other);
    std::atomic<std::thread::id> other_thread_id;
    std::thread other_thread([&other, &other_thread_id] {
        other_thread_id = std::this_thread::get_id();
        other.run();
    });
    std::atomic<std::thread::id> own_cancelled_on;
    std::atomic<std::thread::id> bound_cancelled_on;
    std::atomic<std::thread::id> unnamed_cancelled_on;
    std::thread::id loop_thread;
    triad::run(triad::make_task([&]() -> triad::task<void> {
        loop_thread = std::this_thread::get_id();
        using signature = void(boost::system::error_code);
        auto own = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            co_await boost::asio::async_initiate<const triad::use_task_t, signature>(
                recording_operation{other.get_executor(), &own_cancelled_on}, triad::use_task);
        }));
        auto bound = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            auto token = boost::asio::bind_executor(
                boost::asio::make_strand(triad::current_executor()), triad::use_task);
            co_await boost::asio::async_initiate<decltype(token), signature>(
                recording_operation{other.get_executor(), &bound_cancelled_on}, token);
        }));
        auto unnamed = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            co_await boost::asio::async_initiate<const triad::use_task_t, signature>(
                unnamed_recording_operation{{other.get_executor(), &unnamed_cancelled_on}},
                triad::use_task);
        }));
        co_await triad::sleep(5ms);
        own.cancel();
        bound.cancel();
        unnamed.cancel();
        CHECK_THROWS_AS(co_await own, triad::task_cancelled);
        CHECK_THROWS_AS(co_await bound, triad::task_cancelled);
        CHECK_THROWS_AS(co_await unnamed, triad::task_cancelled);
    }));
    keep_running.reset();
    other_thread.join();
    CHECK(own_cancelled_on.load() == other_thread_id.load());
    CHECK(bound_cancelled_on.load() == loop_thread);
    CHECK(unnamed_cancelled_on.load() == loop_thread);
}

TEST_CASE("cancelling a composed operation of another io_context while it takes its steps is safe",
          "[use_task]") {
    // async_read of more than arrives: it reads in many steps on the other thread, each one
    // installing its cancellation handler in the slot while the deadline cancels it.
    boost::asio::io_context other;
    auto keep_running = boost::asio::make_work_guard(other);
    std::thread other_thread([&other] { other.run(); });
#ifdef TRIAD_TEST_SANITIZER
    constexpr int rounds = 20;
#else
    constexpr int rounds = 100;
#endif
    int timed_out = 0;
    auto strand = boost::asio::make_strand(other);
    for (int round = 0; round < rounds; ++round) {
        boost::asio::local::stream_protocol::socket reader(other);
        boost::asio::local::stream_protocol::socket writer(other);
        boost::asio::local::connect_pair(reader, writer);
        std::atomic<bool> stop_writing{false};
        std::thread dribble([&] {
            while (!stop_writing) {
                boost::system::error_code ignored;
                writer.write_some(boost::asio::buffer("x", 1), ignored);
                std::this_thread::sleep_for(50us);
            }
        });
        triad::run(triad::make_task([&]() -> triad::task<void> {
            std::vector<char> buffer(1 << 20);
            try {
                // Every other round with the handler bound to a strand of the other
                // io_context: the steps run on the strand, and so must the cancellation.
                if (round % 2 == 0)
                    co_await triad::timeout(std::chrono::milliseconds(2 + round % 5),
                                            boost::asio::async_read(reader,
                                                                    boost::asio::buffer(buffer),
                                                                    triad::use_task));
                else
                    co_await triad::timeout(
                        std::chrono::milliseconds(2 + round % 5),
                        boost::asio::async_read(
                            reader, boost::asio::buffer(buffer),
                            boost::asio::bind_executor(strand, triad::use_task)));
            } catch (const triad::timeout_error&) {
                ++timed_out;
            }
        }));
        stop_writing = true;
        dribble.join();
    }
    keep_running.reset();
    other_thread.join();
    CHECK(timed_out == rounds);
}

TEST_CASE("an operation on a paused io_context keeps the task waiting, cancellation included, "
          "until that io_context runs again",
          "[use_task]") {
    boost::asio::io_context other;
    auto keep_running = boost::asio::make_work_guard(other);
    std::thread other_thread([&other] { other.run(); });
    std::atomic<bool> finished{false};
    std::atomic<bool> started{false};
    std::atomic<bool> paused{false};
    bool waited_while_paused = false;
    bool timed_out = false;
    std::thread controller;
    {
        triad::event_loop loop;
        watchdog guard(loop, 20s);
        CHECK_NOTHROW(loop.run(triad::make_task([&]() -> triad::task<void> {
            boost::asio::steady_timer timer(other, 1h);
            controller = std::thread([&] {
                while (!started)
                    std::this_thread::yield();
                std::this_thread::sleep_for(20ms);
                other.stop(); // paused: the deadline below passes meanwhile
                other_thread.join();
                paused = true;
                std::this_thread::sleep_for(300ms);
                waited_while_paused = !finished;
                other.restart();
                other_thread = std::thread([&other] { other.run(); });
            });
            auto waiting = triad::spawn(triad::make_task([&]() -> triad::task<void> {
                try {
                    co_await triad::timeout(100ms, timer.async_wait(triad::use_task));
                } catch (const triad::timeout_error&) {
                    timed_out = true;
                }
                finished = true;
            }));
            // Run in the same batch, right after the wait above started: holds the loop's thread
            // (and so the deadline) until the controller has paused `other`. Without it, a
            // controller held up 80 ms (a loaded machine) paused `other` after the deadline had
            // already been delivered through it, and the task had finished.
            auto hold = triad::spawn(triad::make_task([&]() -> triad::task<void> {
                started = true;
                triad_test::eventually([&] { return paused.load(); }, 30s);
                co_return;
            }));
            co_await hold;
            co_await waiting;
        })));
        CHECK_FALSE(guard.fired());
    }
    controller.join();
    keep_running.reset();
    other_thread.join();
    CHECK(waited_while_paused);
    CHECK(timed_out);
}

TEST_CASE("an io_context destroyed with an operation in flight resumes the task with "
          "operation_aborted",
          "[use_task]") {
    bool post_aborted = false;
    bool co_spawn_aborted = false;
    {
        // Nobody runs it: the post waits in its queue until the io_context goes.
        auto idle = std::make_unique<boost::asio::io_context>();
        std::thread destroyer;
        triad::event_loop loop;
        watchdog guard(loop, 10s);
        CHECK_NOTHROW(loop.run(triad::make_task([&]() -> triad::task<void> {
            const auto idle_executor = idle->get_executor();
            destroyer = std::thread([&idle] {
                std::this_thread::sleep_for(30ms);
                idle.reset();
            });
            try {
                co_await boost::asio::post(idle_executor, triad::use_task);
            } catch (const boost::system::system_error& e) {
                post_aborted = e.code() == boost::asio::error::operation_aborted;
            }
        })));
        CHECK_FALSE(guard.fired());
        destroyer.join();
    }
    {
        // Running, stopped, then destroyed while an Asio coroutine on it sleeps.
        auto other = std::make_unique<boost::asio::io_context>();
        auto keep_running = std::make_optional(boost::asio::make_work_guard(*other));
        std::thread other_thread([&other] { other->run(); });
        std::thread destroyer;
        triad::event_loop loop;
        watchdog guard(loop, 10s);
        CHECK_NOTHROW(loop.run(triad::make_task([&]() -> triad::task<void> {
            boost::asio::io_context& doomed = *other;
            destroyer = std::thread([&] {
                std::this_thread::sleep_for(30ms);
                other->stop();
                other_thread.join();
                keep_running.reset();
                other.reset();
            });
            try {
                co_await boost::asio::co_spawn(
                    doomed,
                    []() -> boost::asio::awaitable<void> {
                        boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor,
                                                        1h);
                        co_await timer.async_wait(boost::asio::use_awaitable);
                    },
                    triad::use_task);
            } catch (const boost::system::system_error& e) {
                co_spawn_aborted = e.code() == boost::asio::error::operation_aborted;
            }
        })));
        CHECK_FALSE(guard.fired());
        destroyer.join();
    }
    CHECK(post_aborted);
    CHECK(co_spawn_aborted);
}

namespace {
boost::asio::awaitable<int> busy_answer(std::chrono::microseconds busy) {
    const auto until = std::chrono::steady_clock::now() + busy;
    while (std::chrono::steady_clock::now() < until) {
    }
    co_return 42;
}
} // namespace

TEST_CASE("a co_spawn on another io_context cancelled as it completes is safe", "[use_task]") {
    // Boost 1.81's co_spawn cancellation handler keeps a raw pointer into the signal of the
    // operation and emits through it from the other thread: that signal must outlive it (a
    // heap-use-after-free under AddressSanitizer before).
    boost::asio::io_context other;
    auto keep_running = boost::asio::make_work_guard(other);
    std::thread other_thread([&other] { other.run(); });
#ifdef TRIAD_TEST_SANITIZER
    constexpr int rounds = 300;
#else
    constexpr int rounds = 2'000;
#endif
    int delivered = 0;
    int cancelled = 0;
    for (int round = 0; round < rounds; ++round) {
        triad::run(triad::make_task([&]() -> triad::task<void> {
            auto victim = triad::spawn(triad::make_task([&]() -> triad::task<void> {
                const int answer = co_await boost::asio::co_spawn(
                    other, busy_answer(std::chrono::microseconds(20 + round % 40)),
                    triad::use_task);
                if (answer == 42)
                    ++delivered;
                co_await triad::sleep(0ms);
            }));
            co_await triad::sleep(0ms); // the victim starts its co_spawn
            const auto until =
                std::chrono::steady_clock::now() + std::chrono::microseconds(round % 50);
            while (std::chrono::steady_clock::now() < until) {
            }
            victim.cancel();
            try {
                co_await victim;
            } catch (const triad::task_cancelled&) {
                ++cancelled;
            }
        }));
    }
    keep_running.reset();
    other_thread.join();
    CHECK(cancelled == rounds); // at the co_spawn, or at the sleep after a delivered answer
    CHECK(delivered <= rounds);
}

TEST_CASE("a task waiting on an io_context that nobody runs yet is resumed when it runs, on the "
          "loop's thread, through stop() calls on the loop's own io_context",
          "[use_task]") {
    // run() never gives up on a task that an operation of another io_context may still resume
    // (it once did, when stop() was called: the frame was left suspended, and destroying that
    // io_context afterwards reached into the destroyed loop). stop() on the loop's io_context
    // comes from the watchdog here, over and over, while nothing runs `idle`.
    auto idle = std::make_unique<boost::asio::io_context>();
    std::thread late_runner;
    std::thread::id loop_thread;
    std::thread::id resumed_on;
    bool resumed = false;
    {
        triad::event_loop loop;
        watchdog guard(loop, 100ms);
        late_runner = std::thread([&] {
            // Only after the watchdog has stopped the loop's io_context (and for a while more,
            // stops again every 20 ms): a fixed 400 ms was not enough for a watchdog thread held
            // up 300 ms, which had then fired no stop() by the time the task was resumed.
            triad_test::eventually([&] { return guard.fired(); }, 30s);
            std::this_thread::sleep_for(100ms);
            idle->run();
        });
        CHECK_NOTHROW(loop.run(triad::make_task([&]() -> triad::task<void> {
            loop_thread = std::this_thread::get_id();
            co_await boost::asio::post(idle->get_executor(), triad::use_task);
            resumed_on = std::this_thread::get_id();
            resumed = true;
        })));
        CHECK(guard.fired());
    }
    late_runner.join();
    idle.reset();
    CHECK(resumed);
    CHECK(resumed_on == loop_thread);
}

} // namespace triad_test_use_task
