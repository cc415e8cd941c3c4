// Lesson: a handful of blocking database queries is work for threads, each with its own
// connection set up once by the pool's initializer. Mirrors the Python course's "10 database
// queries -> threading" (a ThreadPoolExecutor whose initializer opens one connection per thread).
// The database is real: an SQLite file in a temporary directory, built by this program.
//
// Why one connection per thread: the connections are opened with SQLITE_OPEN_NOMUTEX (SQLite's
// multi-thread mode), where a connection must never be used by two threads at once but separate
// connections run fully in parallel. One shared connection would need a lock around every call
// (the serialized mode takes one), and the ten queries would run one after another. Prepared
// statements and the page cache belong to a connection too, so each thread keeps its own.
//
// SQLite runs inside this process, so its queries are computation rather than waits on a server:
// here threads win by keeping more cores busy (C++ has no GIL), which the example measures. On a
// machine whose cores are taken by other work the speedup shrinks to nothing; the "cores busy"
// figures show when that is the reason.
//
// Usage: database_queries_threads [rows=1000000] [threads=cpu_count()]

#include <triad/cpu.hpp>
#include <triad/thread_pool.hpp>

#include <fmt/core.h>

#include "support/arguments.hpp"
#include "support/trip_database.hpp"

#include <sys/resource.h>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
namespace ex = triad_examples;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// CPU time this process used so far, every thread together: divided by the wall time, how many
// cores the queries kept busy (near 1 if something serialized them, or if the machine's other
// work left no second core free).
double cpu_seconds() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    const auto seconds = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Each worker's connection, opened by the pool's initializer and closed when the thread ends.
thread_local std::optional<ex::sqlite_connection> tls_connection;

} // namespace

int run(int argc, char** argv) {
    // Bounds: 20 million rows is a database of about a gigabyte in $TMPDIR; more threads than
    // 1024 only queue (there are ten queries).
    const auto rows = triad_examples::argument<long>(argc, argv, 1, 1'000'000, 1, 20'000'000);
    const auto threads = triad_examples::argument<long>(
        argc, argv, 2, static_cast<long>(triad::cpu_count()), 1, 1024);
    if (!rows || !threads) {
        fmt::print(stderr, "usage: {} [rows in 1..20000000] [threads in 1..1024]\n", argv[0]);
        return 2;
    }
    ex::configure_sqlite_for_threads();
    if (sqlite3_threadsafe() == 0) {
        fmt::print(stderr, "this SQLite was built without thread support\n");
        return 1;
    }

    ex::temp_dir dir("triad-db");
    const std::filesystem::path file = dir.path() / "trips.db";
    auto start = clock_type::now();
    ex::create_trip_database(file, *rows);
    fmt::print("Database: {} rows in {} ({:.1f} MB), built in {:.2f}s\n", *rows, file.string(),
               static_cast<double>(std::filesystem::file_size(file)) / 1e6, seconds_since(start));
    const std::vector<ex::trip_query> queries = ex::trip_queries();

    fmt::print("\n=== Sequential: {} queries on one connection ===\n", queries.size());
    start = clock_type::now();
    double cpu_before = cpu_seconds();
    std::vector<std::string> sequential;
    {
        ex::sqlite_connection db = ex::sqlite_connection::read_only(file);
        for (const auto& q : queries)
            sequential.push_back(db.query_text(q.sql));
    }
    const double sequential_time = seconds_since(start);
    fmt::print("Time: {:.3f}s, {:.1f} cores busy on average\n", sequential_time,
               (cpu_seconds() - cpu_before) / sequential_time);

    fmt::print("\n=== Thread pool ({} threads, one read-only connection each) ===\n", *threads);
    // The initializer runs once on each worker before it takes a task, like Python's
    // ThreadPoolExecutor(initializer=...): the place to open the thread's connection.
    triad::thread_pool pool(triad::thread_pool_options{
        .threads = static_cast<std::size_t>(*threads),
        .name_prefix = "db",
        .initializer =
            [file](std::size_t) { tls_connection.emplace(ex::sqlite_connection::read_only(file)); },
    });
    start = clock_type::now();
    cpu_before = cpu_seconds();
    std::vector<triad::future<std::string>> pending;
    for (const auto& q : queries)
        pending.push_back(pool.submit([sql = q.sql] { return tls_connection->query_text(sql); }));
    std::vector<std::string> threaded;
    for (auto& f : pending)
        threaded.push_back(f.get());
    const double threaded_time = seconds_since(start);
    fmt::print("Time: {:.3f}s, {:.1f} cores busy on average\n", threaded_time,
               (cpu_seconds() - cpu_before) / threaded_time);

    fmt::print("\n=== Results ===\n");
    std::size_t same = 0;
    for (std::size_t i = 0; i < queries.size(); ++i) {
        const bool equal = sequential[i] == threaded[i];
        same += equal ? 1 : 0;
        const std::string first_row = sequential[i].substr(0, sequential[i].find('\n'));
        fmt::print("{:2}. {:<42} {:016x} {}  first row: {}\n", i + 1, queries[i].name,
                   ex::checksum(threaded[i]), equal ? "equal" : "DIFFERENT", first_row);
    }
    fmt::print("Results equal: {}/{}\n", same, queries.size());
    fmt::print("Speedup: {:.2f}x\n", sequential_time / threaded_time);
    return same == queries.size() ? 0 : 1;
}

int main(int argc, char** argv) {
    // Caught here, not left to std::terminate, so that the stack unwinds and the temporary
    // directory is removed on a failure too (a full disk, a thread that cannot start).
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        fmt::print(stderr, "database_queries_threads: {}\n", e.what());
        return 1;
    }
}
