#include <triad/process_pool.hpp>
#include <triad/process_queue.hpp>
#include <triad/thread_pool.hpp>

#include <catch2/catch.hpp>

#include "process_support.hpp"
#include "support.hpp"

#include <atomic>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <list>
#include <mutex>
#include <numeric>
#include <pty.h>
#include <set>
#include <string>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <termios.h>
#include <thread>
#include <unistd.h>
#include <vector>

// The whole file in a namespace of its own: the unity build compiles several test files as one
// translation unit (tests/CMakeLists.txt), where helpers of the same name must not meet.
namespace triad_test_process_pool {

using namespace std::chrono_literals;
using triad_test::children;
using triad_test::eventually;
using triad_test::open_descriptors;
using triad_test::process_gone;

namespace {

// Task functions: workers run them by address, so they are plain functions and captureless
// lambdas.
long square(long x) {
    return x * x;
}
int get_pid(int) {
    return static_cast<int>(::getpid());
}
std::string describe(std::string name, int count) {
    return name + ":" + std::to_string(count);
}
int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}

// Set by the initializer in each worker.
int g_initialized = 0;

// A flag in memory the workers share (mapped before any pool): a task that waits on it runs
// until the test opens it (at most a minute), however slow the machine.
std::atomic<int>* const g_gate = [] {
    void* memory = ::mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        std::abort();
    return new (memory) std::atomic<int>(0);
}();
int wait_for_gate(int x) {
    for (int i = 0; i < 60'000 && g_gate->load() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return x;
}

struct counting_input {
    // An input range of 0..n that records how far ahead of consumption it was read.
    struct shared {
        long produced = 0;
        long consumed = 0;
        long max_ahead = 0;
    };
    long n;
    shared* state;

    struct iterator {
        using value_type = long;
        using difference_type = std::ptrdiff_t;
        long i = 0;
        shared* state = nullptr;
        long operator*() const { return i; }
        iterator& operator++() {
            ++i;
            ++state->produced;
            state->max_ahead = std::max(state->max_ahead, state->produced - state->consumed);
            return *this;
        }
        void operator++(int) { ++*this; }
        bool operator==(const iterator& other) const { return i == other.i; }
    };
    iterator begin() const { return {0, state}; }
    iterator end() const { return {n, state}; }
};

long peak_rss_kib() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss;
}

// A line of /proc/self/status, in KiB ("VmHWM" is the peak resident size, "VmRSS" the current).
long status_kib(std::string key) {
    std::ifstream status("/proc/self/status");
    std::string line;
    key += ':';
    while (std::getline(status, line))
        if (line.rfind(key, 0) == 0)
            return std::atol(line.c_str() + key.size());
    return -1;
}

std::vector<std::uint8_t> echo_bytes(std::vector<std::uint8_t> bytes) {
    for (auto& b : bytes)
        b = static_cast<std::uint8_t>(b + 1);
    return bytes;
}

} // namespace

TEST_CASE("submit runs functions and captureless lambdas in workers", "[process_pool]") {
    triad::process_pool pool(2);
    CHECK(pool.size() == 2);
    CHECK(pool.submit(square, 12L).get() == 144);
    CHECK(pool.submit(describe, std::string("trips"), 3).get() == "trips:3");
    CHECK(pool.submit([](int a, int b) { return a * b; }, 6, 7).get() == 42);
    pool.submit([](int) {}, 1).get(); // void results too
    const int parent = static_cast<int>(::getpid());
    CHECK(pool.submit(get_pid, 0).get() != parent);
}

TEST_CASE("100,000 tasks all come back exact", "[process_pool]") {
    triad::process_pool pool(2);
    std::vector<triad::future<long>> futures;
    futures.reserve(100'000);
    for (long i = 0; i < 100'000; ++i)
        futures.push_back(pool.submit(square, i));
    long long sum = 0;
    long long expected = 0;
    for (long i = 0; i < 100'000; ++i) {
        sum += futures[static_cast<std::size_t>(i)].get();
        expected += i * i;
    }
    CHECK(sum == expected);
    CHECK(pool.completed() == 100'000);
}

TEST_CASE("map, starmap and imap keep input order, imap_unordered loses nothing",
          "[process_pool]") {
    triad::process_pool pool(2);
    std::vector<long> items(100'000);
    std::iota(items.begin(), items.end(), 0);
    for (std::size_t chunk : {std::size_t{0}, std::size_t{1}, std::size_t{7}}) {
        const auto doubled = pool.map([](long x) { return 2 * x; }, items, {.chunk_size = chunk});
        REQUIRE(doubled.size() == items.size());
        for (std::size_t i = 0; i < items.size(); ++i)
            REQUIRE(doubled[i] == 2 * items[i]);
    }
    const std::list<std::string> words{"a", "bb", "ccc"};
    CHECK(pool.map([](std::string w) { return w.size(); }, words) ==
          std::vector<std::size_t>{1, 2, 3});
    CHECK(pool.map([](long x) { return x % 2 == 0; }, std::vector<long>{1, 2}) ==
          std::vector<bool>{false, true});

    const std::vector<std::pair<std::string, int>> pairs{{"x", 1}, {"y", 2}};
    CHECK(pool.starmap(describe, pairs) == std::vector<std::string>{"x:1", "y:2"});

    long position = 0;
    for (long value : pool.imap(square, items, {.chunk_size = 100})) {
        REQUIRE(value == position * position);
        ++position;
    }
    CHECK(position == 100'000);

    std::vector<long> unordered;
    for (long value : pool.imap_unordered(square, items, {.chunk_size = 1000}))
        unordered.push_back(value);
    std::sort(unordered.begin(), unordered.end());
    for (std::size_t i = 0; i < items.size(); ++i)
        REQUIRE(unordered[i] == items[i] * items[i]);

    CHECK(pool.map(square, std::vector<long>{}).empty());
    int none = 0;
    for (long v : pool.imap(square, std::vector<long>{})) {
        (void)v;
        ++none;
    }
    CHECK(none == 0);
}

TEST_CASE("imap streams ten million inputs with bounded memory", "[process_pool][stress]") {
#ifdef TRIAD_TEST_SANITIZER
    constexpr long n = 1'000'000;
#else
    constexpr long n = 10'000'000;
#endif
    triad::process_pool pool(2);
    counting_input::shared state;
    const counting_input input{n, &state};
    long long sum = 0;
    for (long value : pool.imap([](long x) { return x & 0xff; }, input, {.chunk_size = 1000})) {
        sum += value;
        ++state.consumed;
    }
    long long expected = 0;
    for (long i = 0; i < n; ++i)
        expected += i & 0xff;
    CHECK(sum == expected);
    // Two chunks per worker in flight plus the one being read: never the whole input.
    CHECK(state.max_ahead <= 6 * 1000);
}

TEST_CASE("a task that throws fails with remote_error naming the original type", "[process_pool]") {
    triad::process_pool pool(1);
    auto failing = pool.submit([](int) -> int { throw std::out_of_range("index 12"); }, 0);
    try {
        failing.get();
        FAIL("no exception");
    } catch (const triad::remote_error& e) {
        CHECK(e.type_name() == "std::out_of_range");
        CHECK(e.message() == "index 12");
        CHECK(std::string(e.what()) == "std::out_of_range: index 12");
    }
    // map: the first failing item by position, after every chunk finished.
    std::vector<long> items(100);
    std::iota(items.begin(), items.end(), 0);
    const auto risky = [](long x) {
        if (x == 70 || x == 30)
            throw std::runtime_error("item " + std::to_string(x));
        return x;
    };
    CHECK_THROWS_WITH(pool.map(risky, items, {.chunk_size = 10}),
                      Catch::Contains("std::runtime_error: item 30"));
    CHECK(pool.submit(square, 3L).get() == 9); // the worker survived
}

TEST_CASE("a worker that dies fails only its task and is replaced", "[process_pool]") {
    struct death {
        const char* name;
        int (*task)(int);
        const char* says;
    };
    const death deaths[] = {
        // SIG_DFL first: a sanitizer's SIGSEGV handler would turn the crash into exit(1).
        {"segfault",
         [](int) -> int {
             std::signal(SIGSEGV, SIG_DFL);
             std::raise(SIGSEGV);
             return 0;
         },
         "SIGSEGV"},
        {"abort", [](int) -> int { std::abort(); }, "SIGABRT"},
        {"_exit(3)", [](int) -> int { ::_exit(3); }, "exited with status 3"},
        {"SIGKILL",
         [](int) -> int {
             ::kill(::getpid(), SIGKILL);
             std::this_thread::sleep_for(10s);
             return 0;
         },
         "SIGKILL"},
    };
    triad::process_pool pool(2);
    for (const death& d : deaths) {
        INFO(d.name);
        std::vector<triad::future<int>> before;
        for (int i = 0; i < 20; ++i)
            before.push_back(pool.submit(sleep_ms, 1));
        auto doomed = pool.submit(d.task, 0);
        std::vector<triad::future<int>> after;
        for (int i = 0; i < 20; ++i)
            after.push_back(pool.submit(sleep_ms, 1));
        CHECK_THROWS_WITH(doomed.get(), Catch::Contains(d.says));
        for (auto& f : before)
            CHECK(f.get() == 1);
        for (auto& f : after)
            CHECK(f.get() == 1);
    }
    CHECK(pool.workers_replaced() == 4);
    CHECK(eventually([&] { return pool.worker_pids().size() == 2; }, 20s));
}

TEST_CASE("a task's worker_died is seen only after workers_replaced counts its worker",
          "[process_pool][regression]") {
    // The task failed with "the worker was replaced" before the counter moved, so a caller that
    // read workers_replaced() right after get() could see 0 (examples/crash_isolation did, in CI).
    triad::process_pool pool(1);
    for (std::uint64_t round = 1; round <= 20; ++round) {
        auto doomed = pool.submit([](int) -> int { ::_exit(3); }, 0);
        CHECK_THROWS_AS(doomed.get(), triad::worker_died);
        CHECK(pool.workers_replaced() == round);
    }
}

TEST_CASE("a worker killed from outside (as by the OOM killer) fails only its task",
          "[process_pool]") {
    char path[] = "/tmp/triad-victim-XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::close(fd);
    triad::process_pool pool(2);
    auto victim = pool.submit(
        [](std::string file) {
            std::ofstream(file) << ::getpid() << '\n';
            std::this_thread::sleep_for(30s);
            return 0;
        },
        std::string(path));
    std::vector<triad::future<int>> others;
    for (int i = 0; i < 40; ++i)
        others.push_back(pool.submit(sleep_ms, 5));
    pid_t pid = 0;
    REQUIRE(eventually(
        [&] {
            std::ifstream(path) >> pid;
            return pid > 0;
        },
        20s));
    ::kill(pid, SIGKILL);
    CHECK_THROWS_WITH(victim.get(), Catch::Contains("SIGKILL"));
    for (auto& f : others)
        CHECK(f.get() == 5);
    CHECK(pool.workers_replaced() == 1);
    ::unlink(path);
}

TEST_CASE("a task over the timeout has its worker killed and throws task_timeout",
          "[process_pool]") {
    triad::process_pool pool(triad::process_pool_options{.processes = 2, .task_timeout = 300ms});
    const auto start = std::chrono::steady_clock::now();
    auto slow = pool.submit(sleep_ms, 20'000);
    auto quick = pool.submit(sleep_ms, 10);
    CHECK_THROWS_AS(slow.get(), triad::task_timeout);
    CHECK(std::chrono::steady_clock::now() - start < 10s);
    CHECK(quick.get() == 10);
    CHECK(pool.submit(sleep_ms, 5).get() == 5);
    CHECK(pool.workers_replaced() == 1);
}

TEST_CASE("workers are recycled after max_tasks_per_child tasks", "[process_pool]") {
    triad::process_pool pool(triad::process_pool_options{.processes = 1, .max_tasks_per_child = 3});
    std::set<int> pids;
    for (int i = 0; i < 10; ++i)
        pids.insert(pool.submit(get_pid, 0).get());
    CHECK(pids.size() == 4); // 3 + 3 + 3 + 1
    CHECK(pool.workers_recycled() == 3);
    CHECK(pool.workers_replaced() == 0);
    // Queued work survives a retirement.
    std::vector<triad::future<long>> many;
    for (long i = 0; i < 50; ++i)
        many.push_back(pool.submit(square, i));
    for (long i = 0; i < 50; ++i)
        CHECK(many[static_cast<std::size_t>(i)].get() == i * i);
}

TEST_CASE("the initializer runs in every worker, a failing one fails the constructor",
          "[process_pool]") {
    triad::process_pool pool(triad::process_pool_options{
        .processes = 2,
        .initializer = [](std::size_t slot) { g_initialized = 100 + static_cast<int>(slot); },
    });
    const auto seen =
        pool.map([](int) { return g_initialized; }, std::vector<int>(64), {.chunk_size = 1});
    for (int v : seen)
        CHECK((v == 100 || v == 101));
    CHECK(g_initialized == 0); // not in the parent

    const auto build = [] {
        triad::process_pool failing(triad::process_pool_options{
            .processes = 2,
            .initializer = [](std::size_t) { throw std::runtime_error("no database"); },
        });
    };
    CHECK_THROWS_AS(build(), triad::initializer_error);
    CHECK_THROWS_WITH(build(), Catch::Contains("no database"));
}

TEST_CASE("shutdown drains or cancels, then refuses work", "[process_pool]") {
    {
        triad::process_pool pool(2);
        std::vector<triad::future<int>> futures;
        for (int i = 0; i < 20; ++i)
            futures.push_back(pool.submit(sleep_ms, 5));
        pool.shutdown();
        CHECK(pool.closed());
        for (auto& f : futures)
            CHECK(f.get() == 5);
        CHECK_THROWS_AS((void)pool.submit(square, 1L), triad::pool_closed);
        CHECK_THROWS_AS(pool.map(square, std::vector<long>{1}), triad::pool_closed);
    }
    {
        g_gate->store(0);
        triad::process_pool pool(1);
        // Runs until shutdown(cancel) has closed the pool: it was 300 ms, and a test thread
        // preempted that long before shutdown saw a queued task start (and not be cancelled).
        auto running = pool.submit(wait_for_gate, 300);
        REQUIRE(eventually([&] { return pool.running() == 1; }, 20s));
        std::vector<triad::future<int>> queued;
        for (int i = 0; i < 30; ++i)
            queued.push_back(pool.submit(sleep_ms, 1));
        std::thread opener([&pool] {
            (void)eventually([&pool] { return pool.closed(); }, 60s);
            g_gate->store(1);
        });
        pool.shutdown(triad::shutdown_mode::cancel);
        opener.join();
        CHECK(running.get() == 300);
        for (auto& f : queued)
            CHECK_THROWS_AS(f.get(), triad::task_cancelled);
        CHECK(pool.cancelled() == 30);
    }
}

TEST_CASE("the destructor drains, no zombie and no descriptor outlive the pool", "[process_pool]") {
    const std::size_t descriptors = open_descriptors();
    REQUIRE(children().empty());
    std::vector<triad::future<long>> futures;
    {
        triad::process_pool pool(2);
        for (long i = 0; i < 200; ++i)
            futures.push_back(pool.submit(square, i));
        auto crash = pool.submit([](int) -> int { std::abort(); }, 0);
        CHECK_THROWS_AS(crash.get(), triad::worker_died);
        CHECK(children().size() == 1); // only the fork server is our child
    }
    for (long i = 0; i < 200; ++i)
        CHECK(futures[static_cast<std::size_t>(i)].get() == i * i);
    CHECK(children().empty());
    CHECK(open_descriptors() == descriptors);
}

TEST_CASE("no pool descriptor leaks into programs the user runs", "[process_pool]") {
    const auto count_in_child = [] {
        std::FILE* p = ::popen("ls /proc/self/fd | wc -l", "r");
        int n = -1;
        REQUIRE(std::fscanf(p, "%d", &n) == 1);
        ::pclose(p);
        return n;
    };
    const int before = count_in_child();
    triad::process_pool pool(2);
    CHECK(count_in_child() == before);
}

TEST_CASE("workers exit when the parent process is killed", "[process_pool]") {
    const auto workers = triad_test::orphans_of_killed_parent([](const auto& report) {
        triad::process_pool pool(2);
        auto pids = pool.worker_pids();
        pids.push_back(pool.submit(get_pid, 0).get()); // make sure they run
        report(pids);
    });
    REQUIRE(workers.size() == 3);
    for (pid_t w : workers)
        CHECK(eventually([w] { return process_gone(w); }, 10s));
}

TEST_CASE("a pool built on a thread that then ends keeps its workers", "[process_pool]") {
    std::unique_ptr<triad::process_pool> pool;
    std::thread([&] { pool = std::make_unique<triad::process_pool>(2); }).join();
    std::this_thread::sleep_for(100ms);
    CHECK(pool->submit(square, 11L).get() == 121);
    CHECK(pool->workers_replaced() == 0);
}

TEST_CASE("a respawned worker never inherits a lock another thread holds", "[process_pool]") {
    static std::mutex held;
    triad::process_pool pool(1);
    std::atomic<bool> locked{false};
    std::atomic<bool> release{false};
    std::thread holder([&] {
        std::lock_guard lock(held);
        locked = true;
        while (!release)
            std::this_thread::sleep_for(1ms);
    });
    while (!locked)
        std::this_thread::yield();
    // Crash the worker: its replacement is forked now, while `held` is locked here.
    CHECK_THROWS_AS(pool.submit([](int) -> int { std::abort(); }, 0).get(), triad::worker_died);
    auto uses_lock = pool.submit(
        [](int) {
            std::lock_guard lock(held); // would hang forever in a fork of this process now
            return 1;
        },
        0);
    CHECK(uses_lock.wait_for(10s) == std::future_status::ready);
    release = true;
    holder.join();
    CHECK(uses_lock.get() == 1);
}

TEST_CASE("signals interrupting syscalls (EINTR) lose nothing", "[process_pool]") {
    struct sigaction action {};
    action.sa_handler = [](int) {};
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0; // no SA_RESTART: blocking calls fail with EINTR
    struct sigaction previous {};
    ::sigaction(SIGALRM, &action, &previous);
    itimerval every_ms{{0, 1000}, {0, 1000}};
    ::setitimer(ITIMER_REAL, &every_ms, nullptr);
    long long sum = 0;
    {
        triad::process_pool pool(2);
        std::vector<long> items(20'000);
        std::iota(items.begin(), items.end(), 0);
        for (long v : pool.map(square, items, {.chunk_size = 5}))
            sum += v;
        std::vector<triad::future<int>> sleepers;
        for (int i = 0; i < 20; ++i)
            sleepers.push_back(pool.submit(sleep_ms, 3));
        for (auto& f : sleepers)
            sum += f.get();
    }
    itimerval off{};
    ::setitimer(ITIMER_REAL, &off, nullptr);
    ::sigaction(SIGALRM, &previous, nullptr);
    long long expected = 60;
    for (long i = 0; i < 20'000; ++i)
        expected += i * i;
    CHECK(sum == expected);
}

TEST_CASE("a worker dying while the parent writes to it does not kill the parent (SIGPIPE)",
          "[process_pool]") {
    triad::process_pool pool(1);
    // The first task ends the worker; the big one behind it is being written as it dies.
    auto quits = pool.submit([](int) -> int { ::_exit(0); }, 0);
    auto big = pool.submit(echo_bytes, std::vector<std::uint8_t>(32 << 20, 1));
    CHECK_THROWS_AS(quits.get(), triad::worker_died);
    const auto echoed = big.get();
    REQUIRE(echoed.size() == (32u << 20));
    CHECK(echoed.front() == 2);
    CHECK(echoed.back() == 2);
}

TEST_CASE("a 256 MiB argument and result travel with bounded memory", "[process_pool][stress]") {
#ifdef TRIAD_TEST_SANITIZER
    constexpr std::size_t size = std::size_t{32} << 20;
#else
    constexpr std::size_t size = std::size_t{256} << 20;
#endif
    triad::process_pool pool(1);
    // A fork starts with its parent's resident pages: measure the worker's growth from there.
    const long worker_before = pool.submit(status_kib, std::string("VmRSS")).get();
    const long before = peak_rss_kib();
    std::vector<std::uint8_t> payload(size, 7);
    payload.back() = 9;
    auto result = pool.submit(echo_bytes, payload).get();
    REQUIRE(result.size() == size);
    CHECK(result.front() == 8);
    CHECK(result.back() == 10);
    const long grown_mib = (peak_rss_kib() - before) / 1024;
    const long payload_mib = static_cast<long>(size >> 20);
    const long worker_mib =
        (pool.submit(status_kib, std::string("VmHWM")).get() - worker_before) / 1024;
#ifdef TRIAD_TEST_TSAN
    // ThreadSanitizer's shadow memory is counted in the resident size: no bound to check.
    (void)grown_mib;
    (void)worker_mib;
    (void)payload_mib;
#else
    // The payload, its encoding, the received result and its decoding: a small multiple.
    CHECK(grown_mib <= 5 * payload_mib);
    CHECK(worker_mib <= 5 * payload_mib);
#endif
}

TEST_CASE("a message over max_message_size is refused with protocol_error", "[process_pool]") {
    triad::process_pool pool(triad::process_pool_options{.processes = 1, .max_message_size = 4096});
    CHECK_THROWS_AS((void)pool.submit(echo_bytes, std::vector<std::uint8_t>(10'000)),
                    triad::protocol_error);
    // A result over the limit fails that task, refused by the worker itself (which lives on);
    // the pool goes on.
    const auto workers = pool.worker_pids();
    auto big_result = pool.submit([](int) { return std::string(100'000, 'x'); }, 0);
    CHECK_THROWS_WITH(big_result.get(), Catch::Contains("over max_message_size"));
    CHECK_THROWS_AS(pool.submit([](int) { return std::string(100'000, 'x'); }, 0).get(),
                    triad::protocol_error);
    CHECK(pool.submit(square, 4L).get() == 16);
    CHECK(pool.worker_pids() == workers);
}

TEST_CASE("process pool futures mix with the thread pool", "[process_pool]") {
    triad::process_pool processes(2);
    triad::thread_pool threads(2);
    // A thread-pool task waiting on a process-pool future.
    auto combined = threads.submit([&processes] { return processes.submit(square, 9L).get() + 1; });
    CHECK(combined.get() == 82);
    std::vector<triad::future<long>> mixed;
    mixed.push_back(processes.submit(square, 2L));
    mixed.push_back(threads.submit([] { return 3L; }));
    long sum = 0;
    for (auto& f : triad::as_completed(mixed))
        sum += f.get();
    CHECK(sum == 7);
}

TEST_CASE("map draws a progress line when asked", "[process_pool]") {
    triad::detail::progress_meter meter(triad::progress_bar::always, 200);
    meter.add(50);
    const std::string line = meter.line();
    CHECK(line.find(" 25%|") == 0);
    CHECK(line.find("| 50/200 [") != std::string::npos);
    CHECK(line.find("it/s]") != std::string::npos);
    triad::process_pool pool(2);
    const auto out =
        pool.map(square, std::vector<long>(1000, 3), {.progress = triad::progress_bar::always});
    CHECK(out.size() == 1000);
}

namespace {
bool is_even(long x) {
    return x % 2 == 0;
}

// A tree of nodes, and a message that claims `depth` of them nested one in another. It is
// encoded without recursion, so only the side that decodes it recurses.
struct node {
    std::vector<node> children;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(children);
    }
};
struct deep_message {
    std::size_t depth = 0;
    node root;
    template <class Archive>
    void serialize(Archive& ar) {
        if constexpr (std::is_same_v<Archive, triad::encoder>) {
            for (std::size_t i = 1; i < depth; ++i) {
                ar.writer().write_size(1);
                ar.writer().write_scalar(triad::detail::element_marker);
            }
            ar.writer().write_size(0);
        } else {
            ar(root.children);
        }
    }
};
deep_message make_deep(std::size_t depth) {
    return deep_message{depth, {}};
}
std::size_t receive_deep(deep_message message) {
    return message.root.children.size();
}
} // namespace

TEST_CASE("imap and imap_unordered of a function returning bool", "[process_pool]") {
    triad::process_pool pool(2);
    std::vector<long> items(1000);
    std::iota(items.begin(), items.end(), 0L);
    long index = 0;
    long evens = 0;
    for (bool even : pool.imap(is_even, items, {.chunk_size = 64})) {
        CHECK(even == (index++ % 2 == 0));
        evens += even ? 1 : 0;
    }
    CHECK(index == 1000);
    CHECK(evens == 500);
    long unordered_evens = 0;
    for (bool even : pool.imap_unordered(is_even, items))
        unordered_evens += even ? 1 : 0;
    CHECK(unordered_evens == 500);
}

TEST_CASE("a message nesting user types too deep fails its task, not a process", "[process_pool]") {
    triad::process_pool pool(1);
    // A result nested 100,000 deep (about 900 KB): decoded on the pool's I/O thread, where
    // unbounded recursion would overflow the stack and end this program.
    CHECK_THROWS_WITH(pool.submit(make_deep, std::size_t{100'000}).get(),
                      Catch::Contains("nested more than 256 levels"));
    // An argument nested that deep: refused in the worker, which lives on.
    const auto pid = pool.worker_pids();
    CHECK_THROWS_WITH(pool.submit(receive_deep, make_deep(100'000)).get(),
                      Catch::Contains("nested more than 256 levels"));
    CHECK(pool.worker_pids() == pid);
    CHECK(pool.workers_replaced() == 0);
    // Within the limit, and a larger limit when asked.
    CHECK(pool.submit(make_deep, std::size_t{200}).get().root.children.size() == 1);
    triad::process_pool deeper({.processes = 1, .max_nesting = 2000});
    CHECK(deeper.submit(receive_deep, make_deep(1500)).get() == 1);
}

TEST_CASE("pool options out of range are refused with a message", "[process_pool]") {
    CHECK_THROWS_WITH(
        triad::process_pool({.processes = 1, .max_message_size = std::uint64_t{1} << 41}),
        Catch::Contains("max_message_size above"));
    CHECK_THROWS_WITH(triad::process_pool({.processes = 1, .max_nesting = 0}),
                      Catch::Contains("max_nesting"));
}

TEST_CASE("two threads shutting a pool down at once both return", "[process_pool]") {
    for (int round = 0; round < 20; ++round) {
        triad::process_pool pool(2);
        std::vector<triad::future<int>> futures;
        for (int i = 0; i < 4; ++i)
            futures.push_back(pool.submit(sleep_ms, 20));
        const bool finished = triad_test::finishes_within(20s, [&pool] {
            std::thread other([&pool] { pool.shutdown(); });
            pool.shutdown();
            other.join();
        });
        REQUIRE(finished);
        for (auto& f : futures)
            CHECK(f.get() == 20);
    }
}

TEST_CASE("a pool builds while another thread is blocked reading stdin", "[process_pool]") {
    // stdin becomes a pipe nobody writes to yet, and a thread blocks reading it, holding the
    // stream's lock for as long as the read lasts.
    int input[2];
    REQUIRE(::pipe(input) == 0);
    const int saved_stdin = ::dup(0);
    REQUIRE(::dup2(input[0], 0) == 0);
    std::thread reader([] { std::fgetc(stdin); });
    std::this_thread::sleep_for(50ms); // let it block
    const bool built = triad_test::finishes_within(10s, [] {
        triad::process_pool pool(1);
        (void)pool.submit(square, 3L).get();
    });
    CHECK(built);
    REQUIRE(::write(input[1], "x", 1) == 1);
    reader.join();
    ::dup2(saved_stdin, 0);
    ::close(saved_stdin);
    ::close(input[0]);
    ::close(input[1]);
    std::clearerr(stdin);
}

TEST_CASE("terminate() kills running tasks and cancels the queue, at once", "[process_pool]") {
    triad::process_pool pool(2);
    auto hung = pool.submit(sleep_ms, 60'000);
    auto also_hung = pool.submit(sleep_ms, 60'000);
    std::vector<triad::future<int>> queued;
    for (int i = 0; i < 10; ++i)
        queued.push_back(pool.submit(sleep_ms, 1));
    REQUIRE(eventually([&] { return pool.running() == 2; }, 20s));
    const auto workers = pool.worker_pids();
    // A thread blocked in shutdown(), waiting for the hung tasks, is released too.
    std::thread draining([&pool] { pool.shutdown(); });
    std::this_thread::sleep_for(50ms);
    const auto start = std::chrono::steady_clock::now();
    pool.terminate();
    draining.join();
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    CHECK_THROWS_AS(hung.get(), triad::task_cancelled);
    CHECK_THROWS_AS(also_hung.get(), triad::task_cancelled);
    for (auto& f : queued)
        CHECK_THROWS_AS(f.get(), triad::task_cancelled);
    for (pid_t w : workers)
        CHECK(process_gone(w));
    CHECK(children().empty());
    pool.terminate(); // idempotent
    CHECK_THROWS_AS((void)pool.submit(square, 1L), triad::pool_closed);
}

TEST_CASE("a timeout per task, and per map item", "[process_pool]") {
    triad::process_pool pool(2);
    CHECK_THROWS_AS(pool.submit({.timeout = 100ms}, sleep_ms, 5000).get(), triad::task_timeout);
    CHECK(pool.submit(sleep_ms, 300).get() == 300); // the pool itself has no limit
    CHECK(pool.submit({.timeout = 2s}, sleep_ms, 10).get() == 10);
    CHECK_THROWS_AS(pool.submit({.timeout = 0ms}, sleep_ms, 1), std::invalid_argument);

    // Each item gets the whole limit, however many share a chunk: four 300 ms items in one
    // chunk take 1.2 s, over the limit, and pass.
    const std::vector<int> slow(4, 300);
    CHECK(pool.map(sleep_ms, slow, {.chunk_size = 4, .item_timeout = 700ms}) == slow);
    // One item over it fails the map, naming the item.
    const std::vector<int> one_hangs{10, 10, 10, 10, 5000, 10};
    CHECK_THROWS_WITH(pool.map(sleep_ms, one_hangs, {.chunk_size = 6, .item_timeout = 500ms}),
                      Catch::Contains("item 4 of a map chunk"));
    CHECK_THROWS_AS(pool.map(sleep_ms, one_hangs, {.chunk_size = 6, .item_timeout = 500ms}),
                    triad::task_timeout);
    triad::thread_pool threads(1);
    CHECK_THROWS_AS(threads.map([](int x) { return x; }, std::vector<int>{1}, {.item_timeout = 1s}),
                    std::invalid_argument);
}

TEST_CASE("imap starts sending when it is called, not when iteration begins", "[process_pool]") {
    triad::process_pool pool(2);
    counting_input::shared state;
    auto results = pool.imap(square, counting_input{1000, &state}, {.chunk_size = 10});
    CHECK(state.produced > 0);
    CHECK(eventually([&] { return pool.completed() > 0; }, 20s));
    long total = 0;
    for (long value : results) {
        ++state.consumed;
        total += value;
    }
    CHECK(total == 332'833'500); // sum of squares 0..999
}

namespace {
int busy_2ms(int x) {
    const auto until = std::chrono::steady_clock::now() + 2ms;
    while (std::chrono::steady_clock::now() < until) {
    }
    return x;
}

// stderr as the slave side of a pseudo-terminal for the scope; what was written is read from
// the master side, all along (a full terminal buffer would block the writer).
class captured_terminal {
public:
    captured_terminal() {
        REQUIRE(::openpty(&m_master, &m_slave, nullptr, nullptr, nullptr) == 0);
        termios mode{};
        ::tcgetattr(m_slave, &mode);
        mode.c_oflag &= ~static_cast<tcflag_t>(OPOST); // no \n -> \r\n translation
        ::tcsetattr(m_slave, TCSANOW, &mode);
        m_saved = ::dup(STDERR_FILENO);
        ::dup2(m_slave, STDERR_FILENO);
        m_reader = std::thread([this] {
            char buffer[4096];
            for (;;) {
                const ssize_t n = ::read(m_master, buffer, sizeof buffer);
                if (n <= 0)
                    return;
                std::lock_guard lock(m_mutex);
                m_text.append(buffer, static_cast<std::size_t>(n));
            }
        });
    }
    ~captured_terminal() { restore(); }
    captured_terminal(const captured_terminal&) = delete;
    captured_terminal& operator=(const captured_terminal&) = delete;

    // Puts stderr back and returns everything written to the terminal.
    std::string restore() {
        if (m_saved >= 0) {
            ::dup2(m_saved, STDERR_FILENO);
            ::close(m_saved);
            m_saved = -1;
            ::close(m_slave); // the reader sees the end (EIO) once nothing is left
            m_reader.join();
            ::close(m_master);
        }
        std::lock_guard lock(m_mutex);
        return m_text;
    }

private:
    int m_master = -1;
    int m_slave = -1;
    int m_saved = -1;
    std::thread m_reader;
    std::mutex m_mutex;
    std::string m_text;
};

// The percentages of the lines drawn, in order.
std::vector<int> drawn_percentages(const std::string& text) {
    std::vector<int> found;
    for (std::size_t at = text.find('%'); at != std::string::npos; at = text.find('%', at + 1)) {
        std::size_t start = at;
        while (start > 0 && (std::isdigit(static_cast<unsigned char>(text[start - 1])) ||
                             text[start - 1] == ' '))
            --start;
        found.push_back(std::atoi(text.substr(start, at - start).c_str()));
    }
    return found;
}
} // namespace

TEST_CASE("a process-pool map's progress bar counts items and ends its line before map returns",
          "[process_pool]") {
    triad::process_pool pool(2);
    std::vector<int> items(2000);
    std::iota(items.begin(), items.end(), 0);
    captured_terminal terminal;
    // 2,000 items of 2 ms on 2 workers: about 2 s, in 8 chunks (4 per worker).
    const auto out = pool.map(busy_2ms, items, {.progress = triad::progress_bar::terminal});
    const std::string after = "after map\n";
    [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, after.data(), after.size());
    const std::string text = terminal.restore();
    CHECK(out == items);
    INFO(text);
    const std::vector<int> percentages = drawn_percentages(text);
    REQUIRE(percentages.size() >= 5);
    // Steps smaller than a chunk's 12.5%: the workers report items within their chunks.
    int small_steps = 0;
    for (std::size_t i = 1; i < percentages.size(); ++i)
        if (percentages[i] > percentages[i - 1] && percentages[i] - percentages[i - 1] < 12)
            ++small_steps;
    CHECK(small_steps >= 3);
    CHECK(percentages.back() == 100);
    // The 100% line is complete and ended before map returned: the next output starts a line.
    CHECK(text.find("| 2000/2000 [") != std::string::npos);
    CHECK(text.size() >= after.size());
    CHECK(text.compare(text.size() - after.size(), after.size(), after) == 0);
    const std::size_t last_line = text.rfind('\r');
    REQUIRE(last_line != std::string::npos);
    CHECK(text.find('\n', last_line) == text.size() - after.size() - 1);
}

namespace {
triad::process_queue<int>* g_queue = nullptr;
int put_square(int x) {
    g_queue->put(x * x);
    return x;
}
} // namespace

TEST_CASE("a process_queue made before a pool is usable from its workers", "[process_pool]") {
    triad::process_queue<int> queue;
    g_queue = &queue;
    {
        triad::process_pool pool(2);
        CHECK(pool.map(put_square, std::vector<int>{1, 2, 3, 4}) == std::vector<int>{1, 2, 3, 4});
    }
    std::vector<int> squares;
    int value = 0;
    while (queue.try_get(value) == triad::queue_status::success)
        squares.push_back(value);
    std::sort(squares.begin(), squares.end());
    CHECK(squares == std::vector<int>{1, 4, 9, 16});
    g_queue = nullptr;
}

} // namespace triad_test_process_pool
