#include <triad/trace.hpp>

#include <triad/process_pool.hpp>
#include <triad/task.hpp>
#include <triad/thread_pool.hpp>

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.hpp"

// The whole file in a namespace of its own: the unity build compiles several test files as one
// translation unit (tests/CMakeLists.txt), where helpers of the same name must not meet.
namespace triad_test_trace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

fs::path temp_path(const std::string& name) {
    return fs::temp_directory_path() / (name + "." + std::to_string(::getpid()) + ".json");
}

// One span of a trace file, and the lanes' names.
struct span {
    std::string name;
    std::string category;
    double ts = 0;
    double dur = 0;
    std::int64_t pid = 0;
    std::int64_t tid = 0;
};
struct parsed_trace {
    std::vector<span> spans;
    std::map<std::pair<std::int64_t, std::int64_t>, std::string> lanes;
    json::object other;
};

parsed_trace read_trace(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    const json::value doc = json::parse(text.str()); // throws if the file is not JSON
    parsed_trace t;
    for (const json::value& v : doc.at("traceEvents").as_array()) {
        const json::object& e = v.as_object();
        const std::string ph(e.at("ph").as_string());
        const auto pid = e.at("pid").to_number<std::int64_t>();
        const auto tid = e.at("tid").to_number<std::int64_t>();
        if (ph == "M") {
            if (e.at("name").as_string() == "thread_name")
                t.lanes[{pid, tid}] = std::string(e.at("args").at("name").as_string());
        } else {
            REQUIRE(ph == "X");
            t.spans.push_back({std::string(e.at("name").as_string()),
                               std::string(e.at("cat").as_string()), e.at("ts").to_number<double>(),
                               e.at("dur").to_number<double>(), pid, tid});
        }
    }
    t.other = doc.at("otherData").as_object();
    return t;
}

std::size_t count_category(const parsed_trace& t, const std::string& category) {
    std::size_t n = 0;
    for (const span& s : t.spans)
        n += s.category == category;
    return n;
}

// Stops a trace a failed check left on, so the next test can start one.
struct stop_on_exit {
    ~stop_on_exit() {
        if (triad::trace::is_on())
            (void)triad::trace::stop();
    }
};

} // namespace

TEST_CASE("trace: every task of a thread pool is one span on its worker's lane", "[trace]") {
    const fs::path path = temp_path("triad_trace_pool");
    const stop_on_exit guard;
    std::set<std::string> expected_lanes;
    {
        triad::thread_pool pool(2);
        triad::trace::start(path, {.metadata = {{"workload", "squares"}}});
        CHECK(triad::trace::is_on());
        std::vector<triad::future<int>> futures;
        for (int i = 0; i < 200; ++i)
            futures.push_back(pool.submit([i] {
                triad_test::busy_for(20us);
                return i * i;
            }));
        for (auto& f : futures)
            f.get();
        // A span ends just after its task's result is published: wait_idle, not get, says
        // that every span is recorded.
        pool.wait_idle();
        const triad::trace::summary s = triad::trace::stop();
        CHECK(s.events == 200);
        CHECK(s.dropped == 0);
        CHECK_FALSE(triad::trace::is_on());
        // Tasks after the stop are not recorded.
        pool.submit([] {}).get();
    }
    const parsed_trace t = read_trace(path);
    REQUIRE(t.spans.size() == 200);
    CHECK(t.other.at("workload").as_string() == "squares");
    CHECK(t.other.at("dropped_events").to_number<int>() == 0);
    for (const span& s : t.spans) {
        CHECK(s.name == "task");
        CHECK(s.category == "thread_pool");
        CHECK(s.pid == ::getpid());
        CHECK(s.dur >= 15.0); // microseconds: each task was busy for 20
        CHECK(s.ts >= 0.0);
        REQUIRE(t.lanes.count({s.pid, s.tid}) == 1);
        const std::string& lane = t.lanes.at({s.pid, s.tid});
        CHECK(lane.find("thread_pool ") == 0);
        CHECK((lane.find(" worker 0") != std::string::npos ||
               lane.find(" worker 1") != std::string::npos));
    }
    fs::remove(path);
}

TEST_CASE("trace: off, nothing is recorded, a session holds only its own tasks", "[trace]") {
    const fs::path path = temp_path("triad_trace_sessions");
    const stop_on_exit guard;
    triad::thread_pool pool(2);
    for (int i = 0; i < 50; ++i)
        pool.submit([] {}).get();
    triad::trace::start(path);
    CHECK(triad::trace::stop().events == 0);
    // A second session on the same threads starts empty and counts only what it saw.
    triad::trace::start(path);
    for (int i = 0; i < 30; ++i)
        pool.submit([] {}).get();
    pool.wait_idle();
    CHECK(triad::trace::stop().events == 30);
    CHECK(read_trace(path).spans.size() == 30);
    // A buffer keeps its chunks for the next session: a short session after a long one on the
    // same threads holds none of the long one's spans.
    triad::trace::start(path);
    for (int i = 0; i < 10'000; ++i)
        pool.post([] {});
    pool.wait_idle();
    CHECK(triad::trace::stop().events == 10'000);
    triad::trace::start(path);
    for (int i = 0; i < 5; ++i)
        pool.submit([] {}).get();
    pool.wait_idle();
    CHECK(triad::trace::stop().events == 5);
    CHECK(read_trace(path).spans.size() == 5);
    fs::remove(path);
}

TEST_CASE("trace: start twice, stop without start and a bad path fail with clear errors",
          "[trace]") {
    const fs::path path = temp_path("triad_trace_errors");
    const stop_on_exit guard;
    CHECK_THROWS_WITH(triad::trace::stop(), Catch::Contains("tracing is not on"));
    CHECK_THROWS_AS(triad::trace::start(""), std::invalid_argument);
    CHECK_THROWS_AS(triad::trace::start(path, {.max_events_per_thread = 0}), std::invalid_argument);
    CHECK_THROWS_WITH(triad::trace::start("/nonexistent-dir/trace.json"),
                      Catch::Contains("/nonexistent-dir/trace.json"));
    CHECK_FALSE(triad::trace::is_on());
    triad::trace::start(path);
    CHECK_THROWS_WITH(triad::trace::start(path), Catch::Contains("already on"));
    CHECK(triad::trace::stop().events == 0);
    fs::remove(path);
}

TEST_CASE("trace: a thread's events past its limit are dropped and counted", "[trace]") {
    const fs::path path = temp_path("triad_trace_limit");
    const stop_on_exit guard;
    triad::thread_pool pool(1);
    triad::trace::start(path, {.max_events_per_thread = 10});
    for (int i = 0; i < 25; ++i)
        pool.submit([] {}).get();
    pool.wait_idle();
    const triad::trace::summary s = triad::trace::stop();
    CHECK(s.events == 10);
    CHECK(s.dropped == 15);
    const parsed_trace t = read_trace(path);
    CHECK(t.spans.size() == 10);
    CHECK(t.other.at("dropped_events").to_number<int>() == 15);
    fs::remove(path);
}

TEST_CASE("trace: a thread's buffer spans many chunks and is reused by later threads", "[trace]") {
    const fs::path path = temp_path("triad_trace_chunks");
    const stop_on_exit guard;
    constexpr int tasks = 10'000; // more than two chunks of events on one worker
    for (int round = 0; round < 2; ++round) {
        triad::thread_pool pool(1); // new threads each round: the finished ones' buffers
        triad::trace::start(path);
        for (int i = 0; i < tasks; ++i)
            pool.post([] {});
        pool.wait_idle();
        CHECK(triad::trace::stop().events == tasks);
        CHECK(read_trace(path).spans.size() == tasks);
    }
    fs::remove(path);
}

TEST_CASE("trace: process pool tasks are spans on each worker process's lane", "[trace]") {
    const fs::path path = temp_path("triad_trace_processes");
    const stop_on_exit guard;
    std::set<std::int64_t> worker_pids;
    {
        triad::process_pool pool(2);
        triad::trace::start(path);
        std::vector<int> items(20);
        for (int i = 0; i < 20; ++i)
            items[i] = i;
        const auto results = pool.map(
            +[](int x) {
                triad_test::busy_for(200us);
                return x * 2;
            },
            items, {.chunk_size = 1});
        REQUIRE(results.size() == 20);
        CHECK(results[19] == 38);
        // A task that throws is traced too, and its error still reads right behind the times.
        auto failing = pool.submit(+[] {
            triad_test::busy_for(200us);
            throw std::runtime_error("traced failure");
            return 0;
        });
        CHECK_THROWS_WITH(failing.get(), Catch::Contains("traced failure"));
        CHECK(triad::trace::stop().events == 21);
    }
    const parsed_trace t = read_trace(path);
    REQUIRE(t.spans.size() == 21);
    for (const span& s : t.spans) {
        CHECK(s.category == "process_pool");
        CHECK(s.pid != ::getpid());
        CHECK(s.tid == s.pid);
        CHECK(s.dur >= 150.0);
        REQUIRE(t.lanes.count({s.pid, s.tid}) == 1);
        CHECK(t.lanes.at({s.pid, s.tid}).find("process_pool ") == 0);
        worker_pids.insert(s.pid);
    }
    CHECK(worker_pids.size() <= 2);
    // One worker's spans follow each other: it runs one task at a time.
    std::map<std::int64_t, std::vector<span>> by_worker;
    for (const span& s : t.spans)
        by_worker[s.pid].push_back(s);
    for (auto& [pid, spans] : by_worker) {
        std::sort(spans.begin(), spans.end(),
                  [](const span& a, const span& b) { return a.ts < b.ts; });
        for (std::size_t i = 1; i < spans.size(); ++i)
            CHECK(spans[i].ts >= spans[i - 1].ts + spans[i - 1].dur - 0.002);
    }
    fs::remove(path);
}

TEST_CASE("trace: an event loop's resumptions are spans on the loop's lane", "[trace]") {
    const fs::path path = temp_path("triad_trace_loop");
    const stop_on_exit guard;
    triad::trace::start(path);
    triad::run([]() -> triad::task<void> {
        for (int i = 0; i < 3; ++i)
            co_await triad::sleep(1ms);
    }());
    const triad::trace::summary s = triad::trace::stop();
    const parsed_trace t = read_trace(path);
    // The start, and one resumption after each of the three sleeps.
    CHECK(s.events >= 4);
    CHECK(count_category(t, "event_loop") >= 4);
    for (const span& e : t.spans) {
        CHECK(e.name == "resume");
        CHECK(e.tid == ::getpid()); // the loop ran on this (the main) thread
        CHECK(t.lanes.at({e.pid, e.tid}).find("event_loop ") == 0);
    }
    fs::remove(path);
}

TEST_CASE("trace: a child forked while tracing is on records nothing and writes no file",
          "[trace]") {
    const fs::path path = temp_path("triad_trace_fork");
    const stop_on_exit guard;
    triad::thread_pool pool(1);
    triad::trace::start(path);
    pool.submit([] {}).get();
    pool.wait_idle();
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        const int code = triad::trace::is_on() ? 3 : 0;
#ifdef TRIAD_TEST_SANITIZER
        // LeakSanitizer, at exit() in a fork of a process with threads, reports their
        // thread_local destructor records as leaks: the writer is called as exit() would.
        triad::detail::trace::registry::write_at_exit();
        ::_exit(code);
#else
        // exit(), not _exit(): the atexit writer runs here and must leave the file alone.
        std::exit(code);
#endif
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(fs::file_size(path) == 0); // written by stop, not by the child's exit
    CHECK(triad::trace::is_on());
    CHECK(triad::trace::stop().events == 1);
    CHECK(read_trace(path).spans.size() == 1);
    fs::remove(path);
}

// Run by the next test in a child process with TRIAD_TRACE set; hidden from normal runs.
TEST_CASE("trace: (child) tasks under TRIAD_TRACE", "[.trace_child]") {
    triad::thread_pool pool(2);
    for (int i = 0; i < 40; ++i)
        pool.submit([] {}).get();
}

TEST_CASE("trace: TRIAD_TRACE=path traces from the start to a normal exit, %p is the pid",
          "[trace]") {
    const fs::path dir =
        fs::temp_directory_path() / ("triad_trace_env." + std::to_string(::getpid()));
    fs::create_directories(dir);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::setenv("TRIAD_TRACE", (dir / "run.%p.json").c_str(), 1);
        ::execl("/proc/self/exe", "test_trace", "trace: (child) tasks under TRIAD_TRACE",
                static_cast<char*>(nullptr));
        ::_exit(127);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    const fs::path written = dir / ("run." + std::to_string(child) + ".json");
    REQUIRE(fs::exists(written));
    const parsed_trace t = read_trace(written);
    CHECK(count_category(t, "thread_pool") == 40);
    fs::remove_all(dir);
}

TEST_CASE("trace: starting and stopping while other threads submit loses no file and no "
          "memory",
          "[trace]") {
    const fs::path path = temp_path("triad_trace_race");
    const stop_on_exit guard;
    triad::thread_pool pool(2);
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> submitted{0};
    std::vector<std::thread> submitters;
    for (int i = 0; i < 2; ++i)
        submitters.emplace_back([&] {
            while (!done.load()) {
                pool.submit([] {}).get();
                submitted.fetch_add(1);
            }
        });
    for (int round = 0; round < 30; ++round) {
        triad::trace::start(path);
        std::this_thread::sleep_for(1ms);
        const triad::trace::summary s = triad::trace::stop();
        const parsed_trace t = read_trace(path); // every file complete and valid
        CHECK(t.spans.size() == s.events);
    }
    done = true;
    for (auto& t : submitters)
        t.join();
    CHECK(submitted.load() > 0);
    fs::remove(path);
}

TEST_CASE("trace: a result that fits max_message_size still fits while tracing", "[trace]") {
    // The times a traced answer carries are the tracer's, not the task's: they must not push a
    // result that fits the limit over it (tracing would change what a program computes).
    const fs::path path = temp_path("triad_trace_message_size");
    const stop_on_exit guard;
    triad::process_pool pool({.processes = 1, .max_message_size = 1024});
    std::vector<char> encoded;
    std::size_t length = 900;
    for (;; ++length) {
        encoded.clear();
        triad::encode_to(encoded, std::string(length, 'x'));
        if (encoded.size() == 1024)
            break;
        REQUIRE(encoded.size() < 1024);
    }
    const auto make = +[](std::size_t n) { return std::string(n, 'x'); };
    CHECK(pool.submit(make, length).get().size() == length);
    triad::trace::start(path);
    CHECK(pool.submit(make, length).get().size() == length);
    CHECK_THROWS_WITH(pool.submit(make, length + 1).get(),
                      Catch::Contains("over max_message_size"));
    CHECK(triad::trace::stop().events == 2);
    fs::remove(path);
}

TEST_CASE("trace: the writer at exit does not deadlock with a thread forking meanwhile",
          "[trace]") {
    // The writer at exit warns on stderr about dropped events; a thread forking as
    // triad::process does (stderr locked, then the tracer's prepare handler takes its mutex)
    // takes the two locks the other way round. The sleep widens that window.
    const fs::path path = temp_path("triad_trace_exit_fork");
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        triad::trace::start(path, {.max_events_per_thread = 1});
        {
            triad::thread_pool pool(1);
            pool.submit([] {}).get();
            pool.submit([] {}).get(); // dropped: the writer at exit prints a warning
        }
        std::thread([] {
            ::flockfile(stderr);
            std::this_thread::sleep_for(300ms);
            const pid_t grandchild = ::fork();
            ::funlockfile(stderr);
            if (grandchild == 0)
                ::_exit(0);
            ::waitpid(grandchild, nullptr, 0);
        }).detach();
        std::this_thread::sleep_for(50ms);
        std::exit(0);
    }
    int status = 0;
    CHECK(triad_test::wait_child_for(child, 10s, status)); // not hung
#ifndef TRIAD_TEST_SANITIZER // LeakSanitizer may report at exit() in a fork (see test_task.cpp)
    // Not only no deadlock: the child ended well (a pool inherited from the test process, left
    // there by an earlier to_thread, crashed its exit() after the file was written).
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
#endif
    CHECK(read_trace(path).spans.size() == 1);
    fs::remove(path);
}

#ifndef TRIAD_TEST_SANITIZER // their allocators do not report through mallinfo2
TEST_CASE("trace: the buffers of threads that ended are freed when their session is written",
          "[trace]") {
    const fs::path path = temp_path("triad_trace_memory");
    const stop_on_exit guard;
    const auto heap_bytes = [] {
        const struct mallinfo2 m = ::mallinfo2();
        return static_cast<double>(m.uordblks + m.hblkhd);
    };
    const double before = heap_bytes();
    triad::trace::start(path);
    // 100 threads that record and end: a 160 KB chunk each at least.
    for (int i = 0; i < 100; ++i) {
        triad::thread_pool pool(1);
        pool.submit([] {}).get();
    }
    CHECK(triad::trace::stop().events == 100);
    CHECK(heap_bytes() - before < 4e6);
    // A thread that ends after its session is over leaves nothing either.
    std::optional<triad::thread_pool> late;
    late.emplace(1);
    triad::trace::start(path);
    late->submit([] {}).get();
    late->wait_idle();
    CHECK(triad::trace::stop().events == 1);
    const double with_late = heap_bytes();
    late.reset();
    CHECK(with_late - heap_bytes() > 100e3);
    fs::remove(path);
}
#endif

TEST_CASE("trace: metadata that is not UTF-8 still makes a valid JSON file", "[trace]") {
    const fs::path path = temp_path("triad_trace_utf8");
    const stop_on_exit guard;
    triad::trace::start(path, {.metadata = {{"latin1", "caf\xe9!"},
                                            {"cut", "\xe2\x82"},
                                            {"quoted \"\n\t", "\xe2\x82\xac \xf0\x9f\x98\x80"}}});
    triad::thread_pool pool(1);
    pool.submit([] {}).get();
    pool.wait_idle();
    CHECK(triad::trace::stop().events == 1);
    const parsed_trace t = read_trace(path); // Boost.JSON refuses malformed UTF-8
    CHECK(t.other.at("latin1").as_string() == "caf\xef\xbf\xbd!");
    CHECK(t.other.at("cut").as_string() == "\xef\xbf\xbd\xef\xbf\xbd");
    CHECK(t.other.at("quoted \"\n\t").as_string() == "\xe2\x82\xac \xf0\x9f\x98\x80");
    fs::remove(path);
}

} // namespace triad_test_trace
