// The process pool in a hostile process: SIGCHLD ignored, workers that die with results
// unsent, tasks queued behind a long one, timeouts that race the next task, children and
// grandchildren holding the pool's descriptors, SIGTERM to every process of the service, a
// parent killed while an unrelated child lives, descriptors running out, initializers that fail
// in a replacement. Each case checks the results, a time bound, that no task ran twice (side
// effects counted in shared memory) and that no process is left behind.
#include <triad/process.hpp>
#include <triad/process_pool.hpp>
#include <triad/process_queue.hpp>

#include <catch2/catch.hpp>

#include "process_support.hpp"
#include "support.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

// The whole file in a namespace of its own: the unity build compiles several test files as one
// translation unit (tests/CMakeLists.txt), where helpers of the same name must not meet.
namespace triad_test_process_pool_hostile {

using namespace std::chrono_literals;
using triad_test::children;
using triad_test::descendants;
using triad_test::eventually;
using triad_test::finishes_within;
using triad_test::process_alive;
using triad_test::process_gone;
using triad_test::signal_scope;

namespace {

// How many times each task ran, in memory every worker shares (mapped before any pool, so
// every fork server and worker inherits it).
constexpr std::size_t counter_count = 1 << 16;
std::atomic<int>* const g_runs = [] {
    void* memory = ::mmap(nullptr, counter_count * sizeof(std::atomic<int>), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        std::abort();
    return static_cast<std::atomic<int>*>(memory);
}();

void reset_runs() {
    for (std::size_t i = 0; i < counter_count; ++i)
        g_runs[i].store(0);
}

int count_run(int id) {
    g_runs[id].fetch_add(1);
    return id;
}
int count_then_sleep(int id, int ms) {
    g_runs[id].fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return id;
}
int count_then_abort(int id) {
    g_runs[id].fetch_add(1);
    std::signal(SIGABRT, SIG_DFL);
    std::abort();
}
int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}
int crash(int) {
    std::signal(SIGSEGV, SIG_DFL);
    std::raise(SIGSEGV);
    return 0;
}
// Forks a grandchild that outlives the task (15 s) and holds the worker's descriptors; its pid
// goes to g_runs[slot], so the test can end it.
int fork_helper(int slot) {
    const pid_t helper = ::fork();
    if (helper == 0) {
        ::sleep(15);
        ::_exit(0);
    }
    g_runs[slot].store(helper);
    return static_cast<int>(helper);
}
int fork_helper_then_crash(int slot) {
    fork_helper(slot);
    return crash(0);
}

void nothing(int) {}

// A gate in the shared memory: a task or an initializer that waits on it runs until the test
// opens it (at most a minute), however slow the machine, where a fixed sleep gave the test a
// window that a preempted test thread could miss.
constexpr std::size_t gate_slot = counter_count - 8;
void wait_for_gate() {
    for (int i = 0; i < 60'000 && g_runs[gate_slot].load() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
}
void open_gate() {
    g_runs[gate_slot].store(1);
}
// Opens the gate when the scope ends, also on a failed REQUIRE: declared before the pool, so a
// task waiting on it ends before the pool's destructor waits for it.
struct gate_opener {
    ~gate_opener() { open_gate(); }
};
int count_then_wait_for_gate(int id) {
    g_runs[id].fetch_add(1);
    wait_for_gate();
    return id;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The pool works, crashes fail only their task, and nothing is left once it is gone.
void check_pool_survives_crashes() {
    const auto before = descendants().size();
    {
        triad::process_pool pool(2);
        auto crashed = pool.submit(crash, 0);
        auto fine = pool.submit(sleep_ms, 1);
        CHECK_THROWS_AS(crashed.get(), triad::worker_died);
        CHECK(fine.get() == 1);
        CHECK(pool.submit(sleep_ms, 2).get() == 2);
    }
    CHECK(eventually([&] { return descendants().size() == before; }, 10s));
}

} // namespace

TEST_CASE("a parent that ignores SIGCHLD: crashes are reported and the pool ends",
          "[process_pool][hostile]") {
    signal_scope ignored(SIGCHLD, SIG_IGN);
    CHECK(finishes_within(30s, check_pool_survives_crashes));
}

TEST_CASE("a parent with SA_NOCLDWAIT: crashes are reported and the pool ends",
          "[process_pool][hostile]") {
    signal_scope no_wait(SIGCHLD, nothing, SA_NOCLDWAIT);
    CHECK(finishes_within(30s, check_pool_survives_crashes));
}

TEST_CASE("a task that finished before its worker died never runs again",
          "[process_pool][hostile]") {
    reset_runs();
    triad::process_pool pool(1);
    for (int round = 0; round < 30; ++round) {
        // Sent together: the first is done (its result may still be unsent) when the second
        // kills the worker.
        auto done = pool.submit(count_run, round);
        auto killer = pool.submit(count_then_abort, 1000 + round);
        CHECK(done.get() == round);
        CHECK_THROWS_AS(killer.get(), triad::worker_died);
    }
    for (int round = 0; round < 30; ++round) {
        INFO("round " << round);
        CHECK(g_runs[round].load() == 1);
        CHECK(g_runs[1000 + round].load() == 1);
    }
}

TEST_CASE("a quick task's result does not wait behind a slow task", "[process_pool][hostile]") {
    triad::process_pool pool(1);
    (void)pool.submit(sleep_ms, 0).get(); // warm
    for (int round = 0; round < 3; ++round) {
        const auto start = std::chrono::steady_clock::now();
        auto quick = pool.submit(sleep_ms, 0);
        auto slow = pool.submit(sleep_ms, 1500);
        CHECK(quick.get() == 0);
        CHECK(seconds_since(start) < 0.75); // the slow one takes 1.5 s
        CHECK(slow.get() == 1500);
    }
}

TEST_CASE("no task waits behind a busy worker while another is idle", "[process_pool][hostile]") {
    triad::process_pool pool(2);
    (void)pool.map(sleep_ms, std::vector<int>{0, 0}); // both workers up
    for (int round = 0; round < 3; ++round) {
        auto long_task = pool.submit(sleep_ms, 2000);
        std::this_thread::sleep_for(20ms);
        const auto start = std::chrono::steady_clock::now();
        auto first = pool.submit(sleep_ms, 20);
        auto second = pool.submit(sleep_ms, 20);
        CHECK(first.get() == 20);
        CHECK(second.get() == 20);
        CHECK(seconds_since(start) < 1.0); // not after the 2 s task
        CHECK(long_task.get() == 2000);
    }
}

TEST_CASE("tasks taken back from a busy worker run exactly once", "[process_pool][hostile]") {
    reset_runs();
    triad::process_pool pool(3);
    std::mt19937 random(12345);
    std::vector<triad::future<int>> futures;
    int id = 0;
    for (int round = 0; round < 20; ++round) {
        futures.push_back(pool.submit(count_then_sleep, id++, 150));
        for (int i = 0; i < 30; ++i)
            futures.push_back(pool.submit(count_then_sleep, id++, static_cast<int>(random() % 3)));
    }
    for (auto& f : futures)
        (void)f.get();
    for (int i = 0; i < id; ++i) {
        INFO("task " << i);
        REQUIRE(g_runs[i].load() == 1);
    }
}

TEST_CASE("a timeout fails the task that ran too long, never the one after it",
          "[process_pool][hostile]") {
    reset_runs();
    triad::process_pool pool({.processes = 1, .task_timeout = 30ms});
    std::mt19937 random(7);
    int timeouts = 0;
    for (int round = 0; round < 60; ++round) {
        // Around the deadline: some finish, some time out...
        auto around = pool.submit(count_then_sleep, round, 27 + static_cast<int>(random() % 7));
        // ...and the next task must never pay for it. Its own limit is long: under the pool's
        // 30 ms, a 5 ms task on a loaded machine (one core, four busy loops) timed out by
        // itself. A kill meant for `around` that landed on it would still fail it.
        auto next = pool.submit({.timeout = 10s}, count_then_sleep, 1000 + round, 5);
        try {
            (void)around.get();
        } catch (const triad::task_timeout&) {
            ++timeouts;
        }
        CHECK(next.get() == 1000 + round);
        CHECK(g_runs[round].load() == 1);
        CHECK(g_runs[1000 + round].load() == 1);
    }
    CHECK(timeouts > 0);
}

TEST_CASE("recycling, crashes and timeouts together: every task ran at most once",
          "[process_pool][hostile]") {
    reset_runs();
    triad::process_pool pool({.processes = 2, .max_tasks_per_child = 5, .task_timeout = 200ms});
    std::mt19937 random(99);
    std::vector<std::pair<int, triad::future<int>>> futures;
    for (int id = 0; id < 400; ++id) {
        const auto kind = random() % 20;
        if (kind == 0)
            futures.emplace_back(id, pool.submit(count_then_abort, id));
        else if (kind == 1)
            futures.emplace_back(id, pool.submit(count_then_sleep, id, 1000));
        else
            futures.emplace_back(id,
                                 pool.submit(count_then_sleep, id, static_cast<int>(random() % 2)));
    }
    int failed = 0;
    for (auto& [id, f] : futures) {
        int value = -1;
        try {
            value = f.get();
        } catch (const triad::worker_died&) {
            ++failed;
        } catch (const triad::task_timeout&) {
            ++failed;
        }
        INFO("task " << id);
        CHECK((value == id || value == -1));
        CHECK(g_runs[id].load() == 1);
    }
    CHECK(failed > 0);
    CHECK(pool.workers_recycled() > 0);
}

TEST_CASE("a triad::process child alive at shutdown does not delay it", "[process_pool][hostile]") {
    triad::process_pool pool(2);
    CHECK(pool.submit(sleep_ms, 1).get() == 1);
    triad::process child([] { std::this_thread::sleep_for(30s); });
    const auto start = std::chrono::steady_clock::now();
    pool.shutdown();
    CHECK(seconds_since(start) < 2.0);
    child.kill();
    (void)child.join();
}

TEST_CASE("a grandchild a task forked does not hold up shutdown or a crash report",
          "[process_pool][hostile]") {
    reset_runs();
    {
        triad::process_pool pool(1);
        (void)pool.submit(fork_helper, 0).get();
        // The worker crashes while its helper lives on, holding the worker's pipes.
        auto crashed = pool.submit(fork_helper_then_crash, 1);
        CHECK(finishes_within(10s,
                              [&crashed] { CHECK_THROWS_AS(crashed.get(), triad::worker_died); }));
        const auto start = std::chrono::steady_clock::now();
        pool.shutdown();
        CHECK(seconds_since(start) < 2.0);
    }
    for (int slot : {0, 1})
        if (const int helper = g_runs[slot].load(); helper > 0)
            ::kill(helper, SIGKILL);
}

TEST_CASE("SIGTERM to every process of the service leaves the pool to its owner",
          "[process_pool][hostile]") {
    // systemd stops a service by sending SIGTERM to every process in its cgroup. The fork
    // server ignores it (it ends with this process); workers die of it and are replaced.
    triad::process_pool pool(2);
    CHECK(pool.submit(sleep_ms, 1).get() == 1);
    auto running = pool.submit(sleep_ms, 5000);
    REQUIRE(eventually([&] { return pool.running() == 1; }, 20s));
    const auto workers = pool.worker_pids();
    REQUIRE(workers.size() == 2);
    for (const auto& p : descendants())
        ::kill(p.pid, SIGTERM);
    CHECK_THROWS_AS(running.get(), triad::worker_died);
    for (pid_t w : workers)
        CHECK(eventually([w] { return process_gone(w); }, 10s));
    CHECK_FALSE(pool.closed());
    CHECK(pool.submit(sleep_ms, 3).get() == 3);
    CHECK(pool.map(sleep_ms, std::vector<int>{1, 1, 1, 1}) == std::vector<int>{1, 1, 1, 1});
}

TEST_CASE("the pool's processes end when the parent is killed while an unrelated child lives",
          "[process_pool][hostile]") {
    const auto pids = triad_test::orphans_of_killed_parent([](const auto& report) {
        triad::process_pool pool(2);
        std::vector<pid_t> started = pool.worker_pids();
        // A child forked the plain way after the pool: it inherits the pool's descriptors.
        const pid_t unrelated = ::fork();
        if (unrelated == 0) {
            ::sleep(30);
            ::_exit(0);
        }
        started.push_back(unrelated);
        for (const auto& p : children())
            if (p.pid != unrelated)
                started.push_back(p.pid); // the fork server
        report(started);
    });
    REQUIRE(pids.size() == 4); // two workers, the unrelated child, the server
    const pid_t unrelated = pids[2];
    for (std::size_t i = 0; i < pids.size(); ++i)
        if (pids[i] != unrelated)
            CHECK(eventually([pid = pids[i]] { return process_gone(pid); }, 10s));
    CHECK(process_alive(unrelated)); // it was not ours to end
    ::kill(unrelated, SIGKILL);
}

// [ubsan_vptr_exempt]: run with tests/ubsan.supp (tests/CMakeLists.txt), as UBSan's vptr check
// cannot work without descriptors.
TEST_CASE("running out of descriptors delays a replacement, the pool recovers",
          "[process_pool][hostile][ubsan_vptr_exempt]") {
    triad::process_pool pool(1);
    CHECK(pool.submit(sleep_ms, 1).get() == 1);
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    // Every descriptor below a low limit taken: the crashed worker's three (its pipes and
    // pidfd) come free, but a replacement needs four.
    const int lowest_free = ::dup(0);
    ::close(lowest_free);
    rlimit tight = saved;
    tight.rlim_cur = static_cast<rlim_t>(lowest_free) + 8;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
    std::vector<int> filler;
    for (int fd; (fd = ::dup(0)) >= 0;)
        filler.push_back(fd);
    // Catch's assertions wait until descriptors are back: under UBSan, the first check of a
    // polymorphic type needs a pipe (see tests/ubsan.supp), and Catch's reporting makes some.
    bool crash_reported = false;
    try {
        (void)pool.submit(crash, 0).get();
    } catch (const triad::worker_died&) {
        crash_reported = true;
    }
    auto waiting = pool.submit(sleep_ms, 4);
    std::this_thread::sleep_for(500ms);
    const bool waited = !waiting.ready(); // no worker: it waits (for up to 5 s) rather than fail
    for (int fd : filler)
        ::close(fd);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
    CHECK(crash_reported);
    CHECK(waited);
    CHECK(finishes_within(10s, [&waiting] { CHECK(waiting.get() == 4); }));
    CHECK_FALSE(pool.closed());
}

namespace {
// Fails in a replacement worker twice, then works: the counter lives in shared memory.
void flaky_initializer(std::size_t) {
    const int start = g_runs[counter_count - 1].fetch_add(1);
    if (start == 1 || start == 2)
        throw std::runtime_error("the database is not up yet");
}
} // namespace

TEST_CASE("an initializer that fails in a replacement is retried, ten failures break the pool",
          "[process_pool][hostile]") {
    reset_runs();
    {
        triad::process_pool pool({.processes = 1, .initializer = flaky_initializer});
        CHECK_THROWS_AS(pool.submit(crash, 0).get(), triad::worker_died);
        // The replacement's initializer fails twice, then the third start works.
        CHECK(pool.submit(sleep_ms, 5).get() == 5);
        CHECK_FALSE(pool.closed());
    }
    {
        triad::process_pool pool({.processes = 1, .initializer = [](std::size_t) {
                                      if (g_runs[counter_count - 2].fetch_add(1) > 0)
                                          throw std::runtime_error("gone for good");
                                  }});
        CHECK_THROWS_AS(pool.submit(crash, 0).get(), triad::worker_died);
        auto waiting = pool.submit(sleep_ms, 5);
        REQUIRE(finishes_within(20s, [&waiting] {
            CHECK_THROWS_WITH(waiting.get(), Catch::Contains("gone for good"));
        }));
        CHECK(pool.closed());
    }
}

TEST_CASE("no zombie and no descriptor is left by the hostile cases", "[process_pool][hostile]") {
    const auto fds = triad_test::open_descriptors();
    {
        triad::process_pool pool(2);
        (void)pool.map(sleep_ms, std::vector<int>(10, 1));
        CHECK_THROWS_AS(pool.submit(crash, 0).get(), triad::worker_died);
    }
    CHECK(eventually([] { return descendants().empty(); }, 10s));
    CHECK(triad_test::open_descriptors() == fds);
}

// --- found by attacking the first version of these fixes -------------------------------------

namespace {
int busy_ms(int ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
    }
    return ms;
}
std::size_t size_of(const std::vector<char>& bytes) {
    return bytes.size();
}
std::string sized(int bytes) {
    return std::string(static_cast<std::size_t>(bytes), 'x');
}
int exec_sleep(int) {
    ::execlp("sleep", "sleep", "20", static_cast<char*>(nullptr));
    return -1;
}
} // namespace

TEST_CASE("a triad::process inside a triad::process child keeps the child's own files",
          "[process_pool][hostile]") {
    triad::process_pool pool(1); // its descriptors are what a child must close, and forget
    triad::process outer([] {
        triad::process inner([] { return 7; });
        return inner.join();
    });
    CHECK(outer.join() == 7);
}

TEST_CASE("a signal from outside to every process (systemctl kill -s USR1) leaves the pool working",
          "[process_pool][hostile]") {
    signal_scope handled(SIGUSR1, nothing);
    triad::process_pool pool(2);
    CHECK(pool.submit(sleep_ms, 1).get() == 1);
    for (const auto& p : descendants())
        ::kill(p.pid, SIGUSR1);
    ::kill(::getpid(), SIGUSR1);
    std::this_thread::sleep_for(100ms);
    CHECK_FALSE(pool.closed());
    CHECK(pool.map(sleep_ms, std::vector<int>{1, 1, 1, 1}) == std::vector<int>{1, 1, 1, 1});
}

TEST_CASE("a task with a large argument does not wait behind a busy worker",
          "[process_pool][hostile]") {
    triad::process_pool pool(2);
    (void)pool.map(sleep_ms, std::vector<int>{0, 0});
    auto short_one = pool.submit(sleep_ms, 200);
    auto long_one = pool.submit(sleep_ms, 3000);
    std::this_thread::sleep_for(20ms);
    const auto start = std::chrono::steady_clock::now();
    CHECK(pool.submit(size_of, std::vector<char>(4 << 20, 'x')).get() == (4u << 20));
    CHECK(seconds_since(start) < 1.5);
    CHECK(long_one.get() == 3000);
}

TEST_CASE("a good result is kept when an oversized one arrives in the same read",
          "[process_pool][hostile]") {
    triad::process_pool pool({.processes = 1, .max_message_size = 1024});
    for (int round = 0; round < 5; ++round) {
        auto good = pool.submit(sized, 50);
        auto bad = pool.submit(sized, 4000);
        // Keep the I/O thread busy so both results arrive together.
        good.on_ready([] { std::this_thread::sleep_for(50ms); });
        CHECK_THROWS_AS(bad.get(), triad::protocol_error);
        CHECK(good.get().size() == 50);
    }
}

TEST_CASE("shutdown ends a replacement stuck in its initializer, and terminate ends a broken pool",
          "[process_pool][hostile]") {
    reset_runs();
    CHECK(finishes_within(15s, [] {
        triad::process_pool pool({.processes = 2, .initializer = [](std::size_t) {
                                      if (g_runs[counter_count - 4].fetch_add(1) >= 2)
                                          ::pause(); // replacements hang here
                                  }});
        CHECK_THROWS_AS(pool.submit(crash, 0).get(), triad::worker_died);
        CHECK(pool.submit(sleep_ms, 1).get() == 1); // the healthy worker
        pool.shutdown();
    }));
}

TEST_CASE("a per-task timeout holds even when the task execs another program",
          "[process_pool][hostile]") {
    triad::process_pool pool(1);
    const auto start = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(pool.submit({.timeout = 100ms}, exec_sleep, 0).get(), triad::task_timeout);
    CHECK(seconds_since(start) < 5.0);
    CHECK(pool.submit(busy_ms, 1).get() == 1);
}

namespace {
std::vector<std::unique_ptr<triad::process_queue<int>>>* g_queues = nullptr;
int put_in_every_queue(int value) {
    for (auto& q : *g_queues)
        q->put(value);
    return value;
}
} // namespace

TEST_CASE("more than a hundred queues made before a pool all stay usable in its workers",
          "[process_pool][hostile]") {
    // The fork server keeps them all open, however many, and nothing of the pool's lands on
    // their numbers.
    std::vector<std::unique_ptr<triad::process_queue<int>>> queues;
    for (int i = 0; i < 200; ++i)
        queues.push_back(std::make_unique<triad::process_queue<int>>());
    g_queues = &queues;
    {
        triad::process_pool pool(1);
        CHECK(pool.submit(put_in_every_queue, 5).get() == 5);
    }
    for (auto& q : queues) {
        int value = 0;
        CHECK(q->try_get(value) == triad::queue_status::success);
        CHECK(value == 5);
    }
    g_queues = nullptr;
}

// --- found by attacking the API ----------------------------------------------------------------

TEST_CASE("a submit racing terminate() is refused or settled, never left pending",
          "[process_pool][hostile]") {
    // Eight submitting threads on two cores: a submit accepted but not yet handed to the I/O
    // thread when terminate() ends the loop is then likely.
    const auto until = std::chrono::steady_clock::now() + 8s;
    for (int round = 0; std::chrono::steady_clock::now() < until; ++round) {
        triad::process_pool pool(2);
        auto hung = pool.submit(sleep_ms, 60'000);
        std::atomic<bool> stop{false};
        std::vector<std::vector<triad::future<int>>> accepted(8);
        std::vector<std::thread> submitters;
        for (std::size_t t = 0; t < accepted.size(); ++t)
            submitters.emplace_back([&, t] {
                while (!stop.load()) {
                    try {
                        accepted[t].push_back(pool.submit(sleep_ms, 0));
                    } catch (const triad::pool_closed&) {
                        return;
                    }
                }
            });
        std::this_thread::sleep_for(std::chrono::microseconds(2000 + (round * 7919) % 20000));
        pool.terminate();
        stop = true;
        for (auto& thread : submitters)
            thread.join();
        for (auto& list : accepted)
            for (auto& f : list)
                REQUIRE(f.wait_for(10s) == std::future_status::ready);
    }
}

TEST_CASE("the longest timeouts mean never, not an overflow", "[process_pool][hostile]") {
    triad::process_pool pool({.processes = 1, .task_timeout = std::chrono::nanoseconds::max()});
    CHECK(pool.submit(sleep_ms, 200).get() == 200);
    CHECK(pool.submit({.timeout = std::chrono::nanoseconds::max()}, sleep_ms, 200).get() == 200);
    CHECK(pool.map(sleep_ms, std::vector<int>{100, 100},
                   {.item_timeout = std::chrono::nanoseconds::max()}) ==
          std::vector<int>{100, 100});
}

namespace {
// A result that takes 100 ms to encode.
struct slow_to_encode {
    int value = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        if constexpr (std::is_same_v<Archive, triad::encoder>)
            std::this_thread::sleep_for(100ms);
        ar(value);
    }
};
slow_to_encode make_slow(int x) {
    return {x};
}
} // namespace

TEST_CASE("a per-item timeout covers items, not the encoding after the last one",
          "[process_pool][hostile]") {
    // Three instant items whose results take 300 ms to encode: the chunk outlives the 50 ms
    // per-item limit, and no item does.
    triad::process_pool pool(1);
    const auto results =
        pool.map(make_slow, std::vector<int>{1, 2, 3}, {.chunk_size = 3, .item_timeout = 50ms});
    REQUIRE(results.size() == 3);
    CHECK(results[2].value == 3);
}

TEST_CASE("a map's per-item timeout names the item in the input", "[process_pool][hostile]") {
    triad::process_pool pool(2);
    std::vector<int> items(80, 1);
    items[57] = 5000;
    CHECK_THROWS_WITH(pool.map(sleep_ms, items, {.chunk_size = 10, .item_timeout = 500ms}),
                      Catch::Contains("item 7 of a map chunk") &&
                          Catch::Contains("the chunk starts at input item 50"));
}

namespace {
// An input range that throws at item 40.
struct throwing_input {
    struct iterator {
        using value_type = int;
        using difference_type = std::ptrdiff_t;
        int i = 0;
        int operator*() const {
            if (i == 40)
                throw std::runtime_error("input failed");
            return i;
        }
        iterator& operator++() {
            ++i;
            return *this;
        }
        void operator++(int) { ++i; }
        bool operator==(const iterator& other) const { return i == other.i; }
    };
    iterator begin() const { return {}; }
    iterator end() const { return {100}; }
};
int identity(int x) {
    return x;
}
} // namespace

TEST_CASE("an input range that throws during imap is an error, never a bad read",
          "[process_pool][hostile]") {
    triad::process_pool pool(2);
    auto results = pool.imap(identity, throwing_input{}, {.chunk_size = 4});
    int seen = 0;
    int errors = 0;
    // A caller that catches and goes on iterating gets errors or values, never garbage.
    for (auto it = results.begin(); it != results.end() && errors < 5;) {
        try {
            const int value = *it;
            CHECK(value == seen);
            ++seen;
            ++it;
        } catch (const std::runtime_error&) {
            ++errors;
        } catch (const std::out_of_range&) {
            ++errors;
        }
    }
    CHECK(errors > 0);
    CHECK(seen <= 40);
}

TEST_CASE("cancel() drops a task still queued in the parent, it never runs in a worker",
          "[process_pool][cancel]") {
    reset_runs();
    const gate_opener opener;
    triad::process_pool pool(1);
    // Busy until the gate opens: it was 300 ms, and a test thread preempted that long after
    // the submits saw the queue run and cancel() rightly fail.
    auto busy = pool.submit(count_then_wait_for_gate, 0);
    REQUIRE(eventually([] { return g_runs[0].load() == 1; }, 20s));
    std::vector<triad::future<int>> queued;
    for (int id = 1; id <= 5; ++id)
        queued.push_back(pool.submit(count_run, id));
    // The worker has at most a couple of tasks ahead in its pipe: the last one is still here.
    CHECK(queued.back().cancel());
    CHECK(queued.back().ready());
    CHECK(queued.back().cancel()); // cancelled before: still true
    CHECK_FALSE(busy.cancel());    // running
    CHECK_THROWS_AS(queued.back().get(), triad::task_cancelled);
    open_gate();
    CHECK(busy.get() == 0);
    for (int id = 1; id <= 4; ++id) {
        auto& f = queued[static_cast<std::size_t>(id - 1)];
        bool was_cancelled = false;
        try {
            const int value = f.get();
            CHECK(value == id);
        } catch (const triad::task_cancelled&) {
            was_cancelled = true;
        }
        CHECK(g_runs[id].load() == (was_cancelled ? 0 : 1));
    }
    pool.shutdown();
    CHECK(g_runs[5].load() == 0);
    CHECK(pool.cancelled() == 1);
}

TEST_CASE("cancel() racing dispatch on the process pool: each task ran once or was cancelled",
          "[process_pool][cancel]") {
    reset_runs();
    constexpr int count = 4'000;
    std::vector<triad::future<int>> futures;
    std::vector<char> cancelled(count, 0);
    {
        triad::process_pool pool(2);
        for (int id = 0; id < count; ++id) {
            futures.push_back(pool.submit(count_run, id));
            if (id % 2 == 0)
                cancelled[static_cast<std::size_t>(id)] = futures.back().cancel() ? 1 : 0;
        }
        int true_cancels = 0;
        int wrong = 0;
        for (int id = 0; id < count; ++id) {
            const auto at = static_cast<std::size_t>(id);
            try {
                wrong += futures[at].get() != id || cancelled[at] != 0;
            } catch (const triad::task_cancelled&) {
                wrong += cancelled[at] == 0;
            }
            true_cancels += cancelled[at];
        }
        pool.shutdown();
        for (int id = 0; id < count; ++id)
            wrong += g_runs[id].load() != (cancelled[static_cast<std::size_t>(id)] != 0 ? 0 : 1);
        CHECK(wrong == 0);
        CHECK(pool.cancelled() == static_cast<std::uint64_t>(true_cancels));
        INFO("cancelled " << true_cancels << " of " << count / 2 << " attempts");
        CHECK(true_cancels > 0);
    }
}

TEST_CASE("a task taken back from a crashed worker can be cancelled while it waits again",
          "[process_pool][cancel]") {
    reset_runs();
    const gate_opener opener;
    // The replacement worker waits in its initializer until the gate opens, so what the crashed
    // one had not started waits in the queue meanwhile. (It slept 300 ms: a test thread
    // preempted that long after the crash saw the tasks run, and cancel() rightly fail.)
    triad::process_pool pool({.processes = 1, .initializer = [](std::size_t) {
                                  if (g_runs[counter_count - 9].fetch_add(1) >= 1)
                                      wait_for_gate(); // replacements only
                              }});
    // The crash comes after the next task was piped to the worker: it goes back to the queue.
    auto crashing = pool.submit(count_then_abort, 0);
    std::vector<triad::future<int>> behind;
    for (int id = 1; id <= 3; ++id)
        behind.push_back(pool.submit(count_then_sleep, id, 100));
    CHECK_THROWS_AS(crashing.get(), triad::worker_died);
    // The crashed task's future fails first, then the rest goes back to the queue: until then
    // cancel() says no (the task is with the dead worker), and nothing can start it meanwhile.
    int cancelled = 0;
    for (auto it = behind.rbegin(); it != behind.rend(); ++it)
        cancelled += eventually([&it] { return it->cancel(); }, 10s) ? 1 : 0;
    open_gate();
    for (int id = 1; id <= 3; ++id) {
        auto& f = behind[static_cast<std::size_t>(id - 1)];
        try {
            const int value = f.get();
            CHECK(value == id);
            CHECK(g_runs[id].load() == 1);
        } catch (const triad::task_cancelled&) {
            CHECK(g_runs[id].load() == 0);
        }
    }
    CHECK(cancelled == 3);
    pool.shutdown();
    CHECK(pool.cancelled() == static_cast<std::uint64_t>(cancelled));
}

} // namespace triad_test_process_pool_hostile
