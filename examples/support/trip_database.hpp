#pragma once

// A real SQLite database for the examples: a temporary directory that cleans up after itself, a
// small RAII connection, and a deterministic table of taxi trips with ten aggregate queries over
// it (the Python course's "10 database queries"), slow enough on 10^5-10^6 rows to be worth
// running concurrently.

#include <sqlite3.h>

#include "temp_dir.hpp"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace triad_examples {

/**
 * Call first, before any connection is opened: by default SQLite keeps memory statistics under
 * one process-wide mutex taken on every allocation, which makes threads that sort and group
 * (allocating all the time) wait for each other. Returns false if SQLite was already in use.
 */
inline bool configure_sqlite_for_threads() {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK;
}

/** An SQLite error, with the database's message. */
class sqlite_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/**
 * One SQLite connection. Opened with SQLITE_OPEN_NOMUTEX (the "multi-thread" mode): the
 * connection has no mutex of its own, so it must be used by one thread at a time, while separate
 * connections run in parallel. That is why the examples open one per thread: a shared connection
 * would need a lock (the "serialized" mode takes one on every call) and its queries would run one
 * at a time.
 */
class sqlite_connection {
public:
    sqlite_connection(const std::filesystem::path& file, int flags) {
        if (sqlite3_open_v2(file.c_str(), &m_db, flags | SQLITE_OPEN_NOMUTEX, nullptr) !=
            SQLITE_OK) {
            std::string message = m_db ? sqlite3_errmsg(m_db) : "out of memory";
            sqlite3_close(m_db);
            throw sqlite_error("cannot open " + file.string() + ": " + message);
        }
        sqlite3_busy_timeout(m_db, 5000);
        // Sorts and GROUP BYs of a big scan spill to temporary files by default; and reading
        // through a memory map shares the file's pages between connections instead of copying
        // them into each connection's own small cache.
        exec("PRAGMA temp_store=MEMORY; PRAGMA mmap_size=1073741824");
    }
    sqlite_connection(sqlite_connection&& other) noexcept
        : m_db(std::exchange(other.m_db, nullptr)) {}
    sqlite_connection& operator=(sqlite_connection&&) = delete;
    ~sqlite_connection() { sqlite3_close(m_db); }

    static sqlite_connection read_only(const std::filesystem::path& file) {
        return sqlite_connection(file, SQLITE_OPEN_READONLY);
    }
    static sqlite_connection create(const std::filesystem::path& file) {
        return sqlite_connection(file, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    }

    sqlite3* get() const noexcept { return m_db; }

    /** Runs statements that return nothing. */
    void exec(const std::string& sql) {
        char* error = nullptr;
        if (sqlite3_exec(m_db, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
            std::string message = error ? error : sqlite3_errmsg(m_db);
            sqlite3_free(error);
            throw sqlite_error(message + " in: " + sql);
        }
    }

    /** Runs a query and returns its rows as text, "a|b|c" per line (easy to compare). */
    std::string query_text(const std::string& sql) {
        sqlite3_stmt* statement = prepare(sql);
        std::string out;
        int rc;
        while ((rc = sqlite3_step(statement)) == SQLITE_ROW) {
            for (int c = 0; c < sqlite3_column_count(statement); ++c) {
                if (c > 0)
                    out += '|';
                const unsigned char* text = sqlite3_column_text(statement, c);
                out += text ? reinterpret_cast<const char*>(text) : "NULL";
            }
            out += '\n';
        }
        sqlite3_finalize(statement);
        if (rc != SQLITE_DONE)
            throw sqlite_error(std::string(sqlite3_errmsg(m_db)) + " in: " + sql);
        return out;
    }

    /** The first column of the first row, as an integer. */
    std::int64_t query_int(const std::string& sql) {
        sqlite3_stmt* statement = prepare(sql);
        const int rc = sqlite3_step(statement);
        const std::int64_t value = rc == SQLITE_ROW ? sqlite3_column_int64(statement, 0) : 0;
        sqlite3_finalize(statement);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            throw sqlite_error(std::string(sqlite3_errmsg(m_db)) + " in: " + sql);
        return value;
    }

    /** A prepared statement; the caller finalizes it. */
    sqlite3_stmt* prepare(const std::string& sql) {
        sqlite3_stmt* statement = nullptr;
        if (sqlite3_prepare_v2(m_db, sql.c_str(), -1, &statement, nullptr) != SQLITE_OK)
            throw sqlite_error(std::string(sqlite3_errmsg(m_db)) + " in: " + sql);
        return statement;
    }

    /** Steps a prepared insert once and resets it for the next row. */
    void step_done(sqlite3_stmt* statement) {
        if (sqlite3_step(statement) != SQLITE_DONE)
            throw sqlite_error(sqlite3_errmsg(m_db));
        sqlite3_reset(statement);
    }

private:
    sqlite3* m_db = nullptr;
};

/**
 * Creates table `trips` in `file` with `rows` deterministic trips (a linear congruential
 * generator, so every run builds the same data): zones, hours, passengers, distances, fares and
 * tips in integer units.
 */
inline void create_trip_database(const std::filesystem::path& file, std::int64_t rows) {
    sqlite_connection db = sqlite_connection::create(file);
    // Building a throwaway file: no journal, no fsync.
    db.exec("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE trips (id INTEGER PRIMARY KEY, pickup_zone INTEGER, dropoff_zone "
            "INTEGER, hour INTEGER, passengers INTEGER, distance_m INTEGER, duration_s INTEGER, "
            "fare_cents INTEGER, tip_cents INTEGER, payment INTEGER)");
    db.exec("BEGIN");
    sqlite3_stmt* insert = db.prepare("INSERT INTO trips VALUES (?,?,?,?,?,?,?,?,?,?)");
    std::uint64_t state = 42;
    const auto next = [&state](std::uint64_t bound) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        return static_cast<std::int64_t>((state >> 33) % bound);
    };
    for (std::int64_t id = 1; id <= rows; ++id) {
        const std::int64_t distance = 300 + next(20'000);
        const std::int64_t duration = 60 + distance / 8 + next(900);
        const std::int64_t fare = 300 + distance * 7 / 40 + duration / 4;
        const std::int64_t payment = next(4);
        const std::int64_t tip = payment == 0 ? fare * next(30) / 100 : 0;
        const std::int64_t values[] = {id,          1 + next(263), 1 + next(263), next(24),
                                       1 + next(6), distance,      duration,      fare,
                                       tip,         payment};
        for (int c = 0; c < 10; ++c)
            sqlite3_bind_int64(insert, c + 1, values[c]);
        db.step_done(insert);
    }
    sqlite3_finalize(insert);
    db.exec("COMMIT");
}

/** One of the ten queries: what it asks and its SQL. */
struct trip_query {
    std::string name;
    std::string sql;
};

/** Ten aggregate queries over `trips`, each a full scan (no index helps them). */
inline std::vector<trip_query> trip_queries() {
    return {
        {"trips and revenue per pickup zone", "SELECT pickup_zone, COUNT(*), SUM(fare_cents + "
                                              "tip_cents) FROM trips GROUP BY pickup_zone"},
        {"average fare per hour", "SELECT hour, COUNT(*), ROUND(AVG(fare_cents) / 100.0, 2) FROM "
                                  "trips GROUP BY hour ORDER BY hour"},
        {"busiest zone pairs", "SELECT pickup_zone, dropoff_zone, COUNT(*) AS n FROM trips GROUP "
                               "BY pickup_zone, dropoff_zone ORDER BY n DESC, 1, 2 LIMIT 10"},
        {"tip rate by payment type",
         "SELECT payment, SUM(tip_cents) * 10000 / SUM(fare_cents) FROM trips GROUP BY payment"},
        {"long trips per passenger count",
         "SELECT passengers, COUNT(*) FROM trips WHERE distance_m > 15000 GROUP BY passengers"},
        {"median distance", "SELECT distance_m FROM trips ORDER BY distance_m, id LIMIT 1 OFFSET "
                            "(SELECT COUNT(*) / 2 FROM trips)"},
        {"speed classes", "SELECT distance_m * 36 / (duration_s * 10) / 5 AS kmh, COUNT(*) FROM "
                          "trips GROUP BY kmh ORDER BY kmh"},
        {"zones with the most distinct destinations",
         "SELECT pickup_zone, COUNT(DISTINCT dropoff_zone) AS d FROM trips GROUP BY pickup_zone "
         "ORDER BY d DESC, pickup_zone LIMIT 5"},
        {"top 5 fares", "SELECT id, fare_cents FROM trips ORDER BY fare_cents DESC, id LIMIT 5"},
        {"round trips per hour", "SELECT hour, COUNT(*), SUM(distance_m) FROM trips WHERE "
                                 "pickup_zone = dropoff_zone GROUP BY hour ORDER BY hour"},
    };
}

/** FNV-1a over a result's text: one number that says two results are the same. */
inline std::uint64_t checksum(const std::string& text) {
    std::uint64_t h = 14695981039346656037ULL;
    for (char c : text) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ULL;
    }
    return h;
}

} // namespace triad_examples
