// The process-wide fork server: started first thing in main (below), before any thread, so the
// pools built by the tests fork their workers from a snapshot in which no lock is held.
#include <catch2/catch.hpp>

#include <triad/fork_server.hpp>
#include <triad/process_pool.hpp>

#include "catch_runner.hpp"
#include "process_support.hpp"
#include "support.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

std::mutex g_lock; // held by another thread when a pool is built
int g_late = 0;    // set by a test, after the snapshot
int g_initialized = 0;

int take_the_lock(int x) {
    std::lock_guard lock(g_lock);
    return x + 1;
}
int read_late(int) {
    return g_late;
}
int read_initialized(int) {
    return g_initialized;
}
void initialize_worker(std::size_t index) {
    g_initialized = 100 + static_cast<int>(index);
}
int crash(int) {
    std::signal(SIGSEGV, SIG_DFL);
    std::raise(SIGSEGV);
    return 0;
}
int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}

// Holds g_lock on another thread for the scope.
class lock_holder {
public:
    lock_holder() {
        m_thread = std::thread([this] {
            std::lock_guard lock(g_lock);
            m_holding = true;
            m_holding.notify_all();
            m_release.wait(false);
        });
        m_holding.wait(false);
    }
    ~lock_holder() {
        m_release = true;
        m_release.notify_all();
        m_thread.join();
    }
    lock_holder(const lock_holder&) = delete;
    lock_holder& operator=(const lock_holder&) = delete;

private:
    std::atomic<bool> m_holding{false};
    std::atomic<bool> m_release{false};
    std::thread m_thread;
};

} // namespace

int main(int argc, char** argv) {
    triad::fork_server_guard fork_server; // before Catch2 or any test starts a thread
    return triad_test::run_catch(argc, argv);
}

TEST_CASE("with the early fork server, a pool built while another thread holds a lock works",
          "[fork_server]") {
    lock_holder holder;
    triad::process_pool pool(2);
    auto results = pool.map(take_the_lock, std::vector<int>{1, 2, 3, 4});
    CHECK(results == std::vector<int>{2, 3, 4, 5});
    // A replacement worker comes from the same clean snapshot.
    CHECK_THROWS_AS(pool.submit(crash, 0).get(), triad::worker_died);
    CHECK(pool.submit(take_the_lock, 9).get() == 10);
}

TEST_CASE("without it, the same pool's workers inherit the held lock (bounded by a timeout)",
          "[fork_server]") {
    lock_holder holder;
    triad::process_pool pool({.processes = 1, .task_timeout = 1s, .use_fork_server_guard = false});
    CHECK_THROWS_AS(pool.submit(take_the_lock, 1).get(), triad::task_timeout);
}

TEST_CASE("workers see memory as it was when the fork server started", "[fork_server]") {
    g_late = 42;
    triad::process_pool early(1);
    CHECK(early.submit(read_late, 0).get() == 0);
    triad::process_pool own({.processes = 1, .use_fork_server_guard = false});
    CHECK(own.submit(read_late, 0).get() == 42);
    g_late = 0;
}

TEST_CASE("an initializer must be a function or a captureless lambda with the fork server",
          "[fork_server]") {
    triad::process_pool by_function({.processes = 2, .initializer = initialize_worker});
    auto seen = by_function.map(read_initialized, std::vector<int>{0, 0, 0, 0});
    for (int value : seen)
        CHECK((value == 100 || value == 101));
    triad::process_pool by_lambda(
        {.processes = 1, .initializer = [](std::size_t) { g_initialized = 7; }});
    CHECK(by_lambda.submit(read_initialized, 0).get() == 7);
    int captured = 5;
    CHECK_THROWS_WITH(
        triad::process_pool(
            {.processes = 1, .initializer = [captured](std::size_t) { g_initialized = captured; }}),
        Catch::Contains("initializer must be a function or a lambda without captures"));
    // Without the fork server, a capturing initializer is fine.
    triad::process_pool own({.processes = 1,
                             .initializer = [captured](std::size_t) { g_initialized = captured; },
                             .use_fork_server_guard = false});
    CHECK(own.submit(read_initialized, 0).get() == 5);
}

TEST_CASE("one fork server at a time, and only while the process has one thread", "[fork_server]") {
    CHECK_THROWS_WITH(triad::fork_server_guard(), Catch::Contains("already running"));
    // A forked child does not use its parent's server; with a thread running it cannot start one.
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        std::atomic<bool> stop{false};
        std::thread busy([&stop] { stop.wait(false); });
        int code = 0;
        try {
            triad::fork_server_guard refused;
            code = 1;
        } catch (const std::logic_error& e) {
            code = std::string(e.what()).find("threads are running") != std::string::npos ? 0 : 2;
        }
        stop = true;
        stop.notify_all();
        busy.join();
        ::_exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("crashes, timeouts and recycling work the same with the fork server", "[fork_server]") {
    triad::process_pool pool({.processes = 2, .max_tasks_per_child = 3, .task_timeout = 300ms});
    CHECK_THROWS_AS(pool.submit(crash, 0).get(), triad::worker_died);
    CHECK_THROWS_AS(pool.submit(sleep_ms, 5000).get(), triad::task_timeout);
    std::vector<int> ones(20, 1);
    CHECK(pool.map(sleep_ms, ones, {.chunk_size = 1}) == ones);
    CHECK(pool.workers_recycled() > 0);
    pool.shutdown();
    CHECK(triad_test::eventually([] {
        // Only the fork server's zygote stays, a child of this process.
        return triad_test::descendants().size() == 1;
    }));
}

TEST_CASE("the early server and its pools end when this process is killed", "[fork_server]") {
    const auto pids = triad_test::orphans_of_killed_parent([](const auto& report) {
        triad::fork_server_guard own; // this child has one thread: it may start its own
        triad::process_pool pool(2);
        (void)pool.submit(sleep_ms, 1).get();
        std::vector<pid_t> started;
        for (const auto& p : triad_test::descendants())
            started.push_back(p.pid); // zygote, pool server, workers
        report(started);
    });
    CHECK(pids.size() == 4);
    for (pid_t pid : pids)
        CHECK(triad_test::eventually([pid] { return triad_test::process_gone(pid); }));
    // The child's own guard never touched this process's fork server, which still serves.
    triad::process_pool after(1);
    CHECK(after.submit(sleep_ms, 1).get() == 1);
}
