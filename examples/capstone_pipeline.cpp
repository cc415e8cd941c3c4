// Lesson: one pipeline uses each tool where it fits: files are parsed in worker processes, each
// record is enriched by an HTTP call made by coroutines on the event loop (capped by a semaphore,
// failures retried with backoff), and the results go to SQLite in batched transactions from one
// writer thread, with a progress line for every stage. Mirrors the Python course's capstone from
// its chat (multiprocessing.Pool over CSV files, asyncio + aiohttp for the API calls, database
// writes, tqdm progress bars).
//
// Everything is real: the CSV files are generated into a temporary directory, the enrichment API
// is an HTTP/1.1 server on 127.0.0.1 with latency and injected failures (some requests fail once
// with a 500 or a dropped connection, and the course's failing URL /error always fails), and the
// database is an SQLite file.
//
// Usage: capstone_pipeline [files=8] [records_per_file=500] [latency_ms=20] [max_in_flight=50]
//                          [batch=100]

#include <triad/async.hpp>
#include <triad/process_pool.hpp>
#include <triad/thread_pool.hpp>

#include <fmt/core.h>

#include "support/arguments.hpp"
#include "support/http_server.hpp"
#include "support/trip_database.hpp"

#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
namespace ex = triad_examples;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// --- stage 1: files, processed in worker processes ---------------------------------------------

// Writes trips_<index>.csv with `records` deterministic trips whose ids start at `first_id`.
void write_trip_file(const std::filesystem::path& path, std::int64_t first_id,
                     std::int64_t records) {
    std::ofstream out(path);
    out << "id,pickup_zone,distance_m,duration_s,fare_cents\n";
    std::uint64_t state = static_cast<std::uint64_t>(first_id) * 2654435761ULL + 1;
    const auto next = [&state](std::uint64_t bound) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        return static_cast<std::int64_t>((state >> 33) % bound);
    };
    for (std::int64_t id = first_id; id < first_id + records; ++id) {
        const std::int64_t distance = 300 + next(20'000);
        const std::int64_t duration = 60 + distance / 8 + next(900);
        out << id << ',' << 1 + next(263) << ',' << distance << ',' << duration << ','
            << 300 + distance * 7 / 40 + duration / 4 << '\n';
    }
}

// One parsed and cleaned trip, sent back from a worker process.
struct trip {
    std::int64_t id = 0;
    std::int64_t zone = 0;
    std::int64_t distance_m = 0;
    std::int64_t fare_cents = 0;
    std::int64_t speed_kmh_x10 = 0; // computed in the worker
    template <class Archive>
    void serialize(Archive& ar) {
        ar(id, zone, distance_m, fare_cents, speed_kmh_x10);
    }
};

struct file_result {
    std::vector<trip> trips;
    std::int64_t pid = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(trips, pid);
    }
};

// Runs in a worker process: read the CSV, parse and derive (the pandas part of the course).
file_result process_file(std::string path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line); // header
    file_result result;
    result.pid = ::getpid();
    while (std::getline(in, line)) {
        std::int64_t fields[5] = {};
        const char* p = line.data();
        const char* end = line.data() + line.size();
        bool ok = true;
        for (auto& field : fields) {
            const auto [next, ec] = std::from_chars(p, end, field);
            ok = ok && ec == std::errc();
            p = next == end ? end : next + 1;
        }
        if (!ok || fields[3] <= 0)
            throw std::runtime_error("malformed line in " + path + ": " + line);
        result.trips.push_back({fields[0], fields[1], fields[2], fields[4],
                                fields[2] * 36 / fields[3]}); // m/s * 3.6, in tenths of km/h
    }
    return result;
}

// --- stage 2: enrichment over HTTP, on the event loop ------------------------------------------

// Which requests the server is asked to fail, by trip id (see support/http_server.hpp): the
// course's failing URL for some (every attempt fails: reported), one failure for others (a
// retry gets past it).
bool always_fails(std::int64_t id) {
    return id % 97 == 0;
}
bool fails_once_500(std::int64_t id) {
    return !always_fails(id) && id % 10 == 3;
}
bool fails_once_closed(std::int64_t id) {
    return !always_fails(id) && id % 25 == 7;
}

std::string zone_path(std::int64_t zone) {
    return "/zone/" + std::to_string(zone);
}

std::string target_for(const trip& t) {
    if (always_fails(t.id))
        return "/error?trip=" + std::to_string(t.id);
    std::string target = zone_path(t.zone) + "?trip=" + std::to_string(t.id);
    if (fails_once_500(t.id))
        target += "&fail=1";
    if (fails_once_closed(t.id))
        target += "&fail=1&how=close";
    return target;
}

struct progress {
    std::int64_t total = 0;
    std::size_t files_total = 0;
    std::atomic<std::size_t> files_done{0};
    std::atomic<std::int64_t> fetched{0};
    std::atomic<std::int64_t> failed{0};
    std::atomic<std::int64_t> written{0};
    std::atomic<std::int64_t> attempts{0};
    std::int64_t in_flight = 0; // the loop's thread only
    std::int64_t most_in_flight = 0;
};

// One attempt: a permit from the semaphore for the request only (not for the backoff wait).
triad::task<std::string> attempt_fetch(triad::semaphore* limit, progress* counts,
                                       ex::tcp::endpoint server, std::string target) {
    auto permit = co_await limit->acquire_guard();
    counts->attempts.fetch_add(1);
    counts->most_in_flight = std::max(counts->most_in_flight, ++counts->in_flight);
    struct leave {
        std::int64_t& n;
        ~leave() { --n; }
    } leaving{counts->in_flight};
    co_return co_await ex::async_get_ok(server, target);
}

struct enriched_trip {
    trip data;
    std::optional<std::int64_t> zone_value; // empty: the enrichment failed after its retries
};

triad::task<enriched_trip> enrich(trip t, triad::semaphore* limit, progress* counts,
                                  ex::tcp::endpoint server) {
    const triad::retry_policy policy{
        .attempts = 3, .initial_delay = std::chrono::milliseconds(10), .max_delay = {}};
    enriched_trip out{t, std::nullopt};
    try {
        // The retry(policy, fn, args...) form: no lambda temporary inside co_await (GCC 12).
        const std::string body =
            co_await triad::retry(policy, attempt_fetch, limit, counts, server, target_for(t));
        if (const auto value = ex::parse_value(body))
            out.zone_value = static_cast<std::int64_t>(*value);
        counts->fetched.fetch_add(1);
    } catch (const std::exception&) {
        counts->failed.fetch_add(1); // reported: written with no enrichment
    }
    co_return out;
}

// --- stage 3: SQLite writes in batches, on one writer thread -----------------------------------

// SQLite has one writer at a time, so one thread owns the writing connection.
thread_local std::optional<ex::sqlite_connection> tls_writer;

std::size_t write_batch(std::vector<enriched_trip> rows) {
    ex::sqlite_connection& db = *tls_writer;
    db.exec("BEGIN"); // one transaction per batch: one journal sync instead of one per row
    sqlite3_stmt* insert = db.prepare("INSERT INTO enriched VALUES (?,?,?,?,?,?)");
    for (const enriched_trip& row : rows) {
        sqlite3_bind_int64(insert, 1, row.data.id);
        sqlite3_bind_int64(insert, 2, row.data.zone);
        sqlite3_bind_int64(insert, 3, row.data.distance_m);
        sqlite3_bind_int64(insert, 4, row.data.fare_cents);
        sqlite3_bind_int64(insert, 5, row.data.speed_kmh_x10);
        if (row.zone_value)
            sqlite3_bind_int64(insert, 6, *row.zone_value);
        else
            sqlite3_bind_null(insert, 6);
        db.step_done(insert);
    }
    sqlite3_finalize(insert);
    db.exec("COMMIT");
    return rows.size();
}

// --- progress ----------------------------------------------------------------------------------

std::string bar(std::int64_t done, std::int64_t total) {
    constexpr int width = 16;
    const int filled = total == 0 ? width : static_cast<int>(done * width / total);
    return std::string(static_cast<std::size_t>(filled), '#') +
           std::string(static_cast<std::size_t>(width - filled), '.');
}

const bool terminal = ::isatty(STDERR_FILENO) != 0;

// tqdm's lines, one per stage, redrawn in place on a terminal (nothing when stderr is a file).
void draw(const progress& p, bool final_draw) {
    if (!terminal)
        return;
    const auto files = static_cast<std::int64_t>(p.files_done.load());
    const std::int64_t enriched = p.fetched.load() + p.failed.load();
    fmt::print(stderr, "\rfiles [{}] {}/{}  enriched [{}] {}/{}  written [{}] {}/{}{}",
               bar(files, static_cast<std::int64_t>(p.files_total)), files, p.files_total,
               bar(enriched, p.total), enriched, p.total, bar(p.written.load(), p.total),
               p.written.load(), p.total, final_draw ? "\n" : "");
}

// A line of output above the progress line (tqdm.write).
void print_line(const std::string& line) {
    if (terminal)
        fmt::print(stderr, "\r\033[K");
    fmt::print("{}\n", line);
    std::fflush(stdout);
}

} // namespace

int run(int argc, char** argv) {
    // Bounds: every request in flight holds two descriptors (the client's socket and the
    // server's), so 400 stays under the usual limit of 1024; at most ten million trips (the ids
    // 1 + f * records must not overflow, and every file is written to $TMPDIR); a latency of ten
    // seconds at most, so that a mistyped one cannot make the run look hung.
    const auto files_arg = triad_examples::argument<long>(argc, argv, 1, 8, 1, 1000);
    const auto records_arg = triad_examples::argument<long>(argc, argv, 2, 500, 1, 10'000'000);
    const auto latency_arg = triad_examples::argument<long>(argc, argv, 3, 20, 0, 10'000);
    const auto in_flight_arg = triad_examples::argument<long>(argc, argv, 4, 50, 1, 400);
    const auto batch_arg = triad_examples::argument<long>(argc, argv, 5, 100, 1, 1'000'000);
    if (!files_arg || !records_arg || !latency_arg || !in_flight_arg || !batch_arg ||
        *files_arg * *records_arg > 10'000'000) {
        fmt::print(stderr,
                   "usage: {} [files in 1..1000] [records_per_file] [latency_ms in 0..10000] "
                   "[max_in_flight in 1..400] [batch in 1..1000000]; files * records_per_file "
                   "at most 10000000\n",
                   argv[0]);
        return 2;
    }
    const long files = *files_arg;
    const long records = *records_arg;
    const long latency_ms = *latency_arg;
    const long max_in_flight = *in_flight_arg;
    const long batch = *batch_arg;

    // The process pool first: its workers are forks of this process as it is now, before the
    // server's and the writer's threads exist.
    triad::process_pool pool;

    ex::temp_dir dir("triad-capstone");
    std::vector<std::string> paths;
    for (long f = 0; f < files; ++f) {
        paths.push_back((dir.path() / fmt::format("trips_{:02}.csv", f)).string());
        write_trip_file(paths.back(), 1 + f * records, records);
    }
    const std::filesystem::path db_file = dir.path() / "pipeline.db";
    {
        ex::sqlite_connection db = ex::sqlite_connection::create(db_file);
        db.exec("PRAGMA journal_mode=WAL;"
                "CREATE TABLE enriched (id INTEGER PRIMARY KEY, zone INTEGER, distance_m INTEGER,"
                " fare_cents INTEGER, speed_kmh_x10 INTEGER, zone_value INTEGER)");
    }
    fmt::print("{} files of {} trips in {}, {} worker processes\n", files, records,
               dir.path().string(), pool.size());

    ex::http_server server({.latency = std::chrono::milliseconds(latency_ms)});
    fmt::print("Enrichment API: {} ({} ms latency, at most {} requests in flight)\n",
               server.url("/zone/<zone>"), latency_ms, max_in_flight);

    triad::thread_pool writer(triad::thread_pool_options{
        .threads = 1,
        .name_prefix = "sqlite-writer",
        .initializer =
            [db_file](std::size_t) { tls_writer.emplace(ex::sqlite_connection::create(db_file)); },
    });

    progress counts;
    counts.total = files * records;
    counts.files_total = paths.size();
    std::int64_t batches = 0;
    std::int64_t expected_value_sum = 0;
    std::int64_t expected_failures = 0;
    std::int64_t expected_injected = 0;

    const auto start = clock_type::now();
    triad::run(triad::make_task([&]() -> triad::task<void> {
        triad::semaphore limit(static_cast<std::size_t>(max_in_flight));
        bool finished = false;
        auto ticker = triad::spawn(triad::make_task([&]() -> triad::task<void> {
            while (!finished) {
                draw(counts, false);
                co_await triad::sleep(std::chrono::milliseconds(100));
            }
        }));

        // One task per file: parse in a process, enrich on the loop, write on the writer.
        const auto one_file = [&](std::size_t index) -> triad::task<void> {
            file_result parsed = co_await pool.submit(process_file, paths[index]);
            counts.files_done.fetch_add(1);
            for (const trip& t : parsed.trips) {
                if (always_fails(t.id)) {
                    ++expected_failures;
                    expected_injected += 3;
                } else {
                    expected_value_sum +=
                        static_cast<std::int64_t>(ex::value_of(zone_path(t.zone)));
                    expected_injected += fails_once_500(t.id) || fails_once_closed(t.id) ? 1 : 0;
                }
            }
            // In batches, as the course's chunked version: a batch is enriched, then written in
            // one transaction while the other files' batches are being fetched.
            std::size_t file_batches = 0;
            std::int64_t missing = 0;
            const auto size = static_cast<std::size_t>(batch);
            for (std::size_t from = 0; from < parsed.trips.size(); from += size) {
                const auto to = std::min(parsed.trips.size(), from + size);
                std::vector<triad::task<enriched_trip>> fetches;
                for (std::size_t i = from; i < to; ++i)
                    fetches.push_back(enrich(parsed.trips[i], &limit, &counts, server.endpoint()));
                std::vector<enriched_trip> rows = co_await triad::gather(std::move(fetches));
                for (const auto& r : rows)
                    missing += r.zone_value ? 0 : 1;
                counts.written.fetch_add(static_cast<std::int64_t>(
                    co_await writer.submit(write_batch, std::move(rows))));
                ++file_batches;
            }
            batches += static_cast<std::int64_t>(file_batches);
            const auto n = static_cast<std::int64_t>(parsed.trips.size());
            print_line(fmt::format("{}: {} trips parsed by PID {}, {} enriched, {} failed, {} "
                                   "batches written",
                                   std::filesystem::path(paths[index]).filename().string(), n,
                                   parsed.pid, n - missing, missing, file_batches));
        };
        std::vector<triad::task<void>> all;
        for (std::size_t i = 0; i < paths.size(); ++i)
            all.push_back(one_file(i));
        co_await triad::gather(std::move(all));
        finished = true;
        co_await ticker;
        draw(counts, true);
    }));
    const double took = seconds_since(start);

    // The checks read the database back: what is in the file is what counts.
    ex::sqlite_connection db = ex::sqlite_connection::read_only(db_file);
    const std::int64_t rows = db.query_int("SELECT COUNT(*) FROM enriched");
    const std::int64_t without =
        db.query_int("SELECT COUNT(*) FROM enriched WHERE zone_value IS NULL");
    const std::int64_t value_sum = db.query_int("SELECT IFNULL(SUM(zone_value), 0) FROM enriched");
    const std::int64_t distinct_ids = db.query_int("SELECT COUNT(DISTINCT id) FROM enriched");

    fmt::print("\n=== Pipeline done in {:.2f}s ===\n", took);
    fmt::print(
        "HTTP requests: {} ({} attempts by the client), injected failures: {} (expected {})\n",
        server.requests(), counts.attempts.load(), server.failures_injected(), expected_injected);
    fmt::print("Most requests in flight: {} (the cap is {})\n", counts.most_in_flight,
               max_in_flight);
    fmt::print("Rows written: {} of {} items in {} batches ({} distinct ids)\n", rows, counts.total,
               batches, distinct_ids);
    fmt::print("Enriched: {}, failed after 3 attempts and reported: {} (expected {})\n",
               rows - without, without, expected_failures);
    fmt::print("Sum of enrichment values: {} (expected {})\n", value_sum, expected_value_sum);
    const bool ok = counts.most_in_flight <= max_in_flight && rows == counts.total &&
                    distinct_ids == counts.total && without == expected_failures &&
                    counts.failed.load() == expected_failures && value_sum == expected_value_sum &&
                    static_cast<std::int64_t>(server.failures_injected()) == expected_injected;
    fmt::print("{}\n", ok ? "All checks passed" : "CHECK FAILED");
    return ok ? 0 : 1;
}

int main(int argc, char** argv) {
    // Caught here, not left to std::terminate, so that the stack unwinds and the temporary
    // directory is removed on a failure too (a full disk, a thread that cannot start).
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        fmt::print(stderr, "capstone_pipeline: {}\n", e.what());
        return 1;
    }
}
