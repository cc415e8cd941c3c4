// Lesson: a file too large to load at once is processed in chunks, each chunk's statistics
// computed on its own (sequentially, on threads or on processes) and then combined, which must
// be done with totals and counts: the average of chunk averages is wrong when chunks differ in
// size. Mirrors the Python course's taxi-trip statistics (process_chunk returning the chunk's
// avg_distance, max_distance and total_miles, combined by pool.map; pd.read_csv(chunksize=...)
// with a tqdm progress bar), its pd.to_datetime date parsing on a pool, and its advice to size
// the pool by memory ("if you have 16GB RAM and each process might use 4GB").
//
// The trips are generated (deterministically, from a seed) into a temporary directory; chunks
// are byte ranges of the file cut at line ends, so a worker opens the file, reads only its
// range and parses it: the whole file is never in memory, whatever its size.
//
// Usage: chunked_csv [file_megabytes=48] [chunk_megabytes=5] [seed=2024]
//        (chunked_csv 400 32 writes and processes a 400 MB file)

#include <triad/cpu.hpp>
#include <triad/process_pool.hpp>
#include <triad/thread_pool.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <unistd.h>

#include "support/arguments.hpp"
#include "support/temp_dir.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

constexpr double mib = 1024.0 * 1024.0;

// --- dates: what pd.to_datetime does for one column ---------------------------------------------

// Seconds since 1970-01-01 00:00:00 for "YYYY-MM-DD HH:MM:SS", or nothing if the text is not a
// valid date and time (a 2024-02-30 is refused, as pandas refuses it).
std::optional<std::int64_t> parse_timestamp(std::string_view text) {
    if (text.size() != 19 || text[4] != '-' || text[7] != '-' || text[10] != ' ' ||
        text[13] != ':' || text[16] != ':')
        return std::nullopt;
    const auto number = [text](std::size_t at, std::size_t width) -> int {
        int value = 0;
        const auto [end, ec] = std::from_chars(text.data() + at, text.data() + at + width, value);
        return ec == std::errc() && end == text.data() + at + width ? value : -1;
    };
    const int year = number(0, 4), month = number(5, 2), day = number(8, 2);
    const int hour = number(11, 2), minute = number(14, 2), second = number(17, 2);
    if (year < 0 || month < 0 || day < 0 || hour < 0 || hour > 23 || minute < 0 || minute > 59 ||
        second < 0 || second > 59)
        return std::nullopt;
    const std::chrono::year_month_day date{std::chrono::year(year),
                                           std::chrono::month(static_cast<unsigned>(month)),
                                           std::chrono::day(static_cast<unsigned>(day))};
    if (!date.ok())
        return std::nullopt;
    const std::int64_t days = std::chrono::sys_days(date).time_since_epoch().count();
    return days * 86400 + hour * 3600 + minute * 60 + second;
}

void append_timestamp(std::string& out, std::int64_t seconds) {
    const std::chrono::year_month_day date{
        std::chrono::sys_days(std::chrono::days(seconds / 86400))};
    const std::int64_t in_day = seconds % 86400;
    char text[20];
    const int n = std::snprintf(text, sizeof text, "%04d-%02u-%02u %02d:%02d:%02d",
                                static_cast<int>(date.year()), static_cast<unsigned>(date.month()),
                                static_cast<unsigned>(date.day()), static_cast<int>(in_day / 3600),
                                static_cast<int>(in_day / 60 % 60), static_cast<int>(in_day % 60));
    out.append(text, static_cast<std::size_t>(n));
}

std::string format_timestamp(std::int64_t seconds) {
    std::string out;
    append_timestamp(out, seconds);
    return out;
}

// Money and miles are written with two decimals and read back as whole cents and hundredths,
// so every sum is an exact integer: however the chunks are split and in whatever order their
// results are added, the totals are the same to the cent.
std::optional<std::int64_t> parse_hundredths(std::string_view text) {
    const bool negative = !text.empty() && text.front() == '-';
    if (negative)
        text.remove_prefix(1);
    const std::size_t dot = text.size() >= 3 ? text.size() - 3 : std::string_view::npos;
    if (dot == std::string_view::npos || dot == 0 || text[dot] != '.')
        return std::nullopt;
    std::int64_t whole = 0;
    int fraction = 0;
    const auto a = std::from_chars(text.data(), text.data() + dot, whole);
    const auto b = std::from_chars(text.data() + dot + 1, text.data() + text.size(), fraction);
    if (a.ec != std::errc() || a.ptr != text.data() + dot || b.ec != std::errc() ||
        b.ptr != text.data() + text.size())
        return std::nullopt;
    const std::int64_t value = whole * 100 + fraction;
    return negative ? -value : value;
}

void append_hundredths(std::string& out, std::int64_t value) {
    if (value < 0) {
        out.push_back('-');
        value = -value;
    }
    char digits[24];
    out.append(digits, std::to_chars(digits, digits + sizeof digits, value / 100).ptr);
    out.push_back('.');
    out.push_back(static_cast<char>('0' + value % 100 / 10));
    out.push_back(static_cast<char>('0' + value % 10));
}

void append_integer(std::string& out, std::int64_t value) {
    char digits[24];
    out.append(digits, std::to_chars(digits, digits + sizeof digits, value).ptr);
}

// --- the generated trips ------------------------------------------------------------------------

constexpr std::string_view csv_header =
    "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,"
    "PULocationID,DOLocationID,payment_type,fare_amount,tip_amount,total_amount\n";

// splitmix64: the same numbers on every platform (std::uniform_int_distribution is not
// specified exactly, so the file, and the totals CTest checks, would differ between libraries).
class random_source {
public:
    explicit random_source(std::uint64_t seed) : m_state(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (m_state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    std::int64_t below(std::int64_t n) { return static_cast<std::int64_t>(next() % n); }

private:
    std::uint64_t m_state;
};

// Relative demand by hour of day (quiet before dawn, busiest in the evening), and how long a
// mile takes then, in seconds: rush hours crawl, nights are quick.
constexpr std::array<std::int64_t, 24> hourly_demand = {
    32, 20, 13, 8, 6, 9, 22, 40, 52, 54, 55, 58, 62, 63, 65, 66, 68, 74, 80, 76, 68, 62, 55, 44};
constexpr std::array<std::int64_t, 24> seconds_per_mile = {150, 145, 140, 140, 145, 170, 240, 300,
                                                           320, 290, 260, 255, 255, 260, 265, 290,
                                                           320, 335, 330, 280, 230, 210, 190, 170};

// Writes yellow-cab-like trips, in pickup order from 2024-01-01, until the file holds at least
// `target_bytes`; about 100,000 trips a day, as in New York. About 1 row in 250 is bad the way
// real TLC rows are: dropoff before pickup, no distance, or a negative fare (a refund).
struct generated_file {
    std::uint64_t rows = 0;
    std::uint64_t bytes = 0;
    std::int64_t first_pickup = 0;
    std::int64_t last_pickup = 0;
};

generated_file write_trips(const std::string& path, std::uint64_t target_bytes,
                           std::uint64_t seed) {
    std::FILE* file = std::fopen(path.c_str(), "wb");
    if (file == nullptr)
        throw std::system_error(errno, std::generic_category(), "cannot create " + path);
    random_source random(seed);
    generated_file made;
    std::string buffer(csv_header);
    const std::int64_t start = *parse_timestamp("2024-01-01 00:00:00");
    std::int64_t pickup_ms = start * 1000;
    made.first_pickup = start;
    const auto flush = [&] {
        if (std::fwrite(buffer.data(), 1, buffer.size(), file) != buffer.size())
            throw std::system_error(errno, std::generic_category(), "cannot write " + path);
        made.bytes += buffer.size();
        buffer.clear();
    };
    while (made.bytes + buffer.size() < target_bytes) {
        const std::int64_t pickup = pickup_ms / 1000;
        const std::int64_t hour = pickup % 86400 / 3600;
        const bool weekday = (pickup / 86400 + 3) % 7 < 5; // 1970-01-01 was a Thursday
        // Next pickup: demand sets the mean gap, for 100,000 trips a day in all (the demand
        // weights add up to 1152).
        constexpr std::int64_t twice_mean_gap_ms = std::int64_t{2} * 3'600'000 * 1152 / 100'000;
        pickup_ms += random.below(twice_mean_gap_ms / hourly_demand[hour]) + 1;

        const std::int64_t kind = random.below(100);
        std::int64_t distance = kind < 70   ? 40 + random.below(260)     // across the neighbourhood
                                : kind < 93 ? 300 + random.below(700)    // across town
                                            : 1000 + random.below(1200); // to an airport
        std::int64_t seconds = distance * seconds_per_mile[hour] / 100 + 60 + random.below(240);
        std::int64_t fare = 300 + 70 * ((distance + 19) / 20) + 35 * (seconds / 60);
        const std::int64_t bad = random.below(1000);
        if (bad < 2)
            seconds = -60 - random.below(600); // the meter's clock was wrong
        else if (bad < 3)
            distance = 0;
        else if (bad < 4)
            fare = -fare;
        const std::int64_t payment = random.below(100) < 72 ? 1 : random.below(30) == 0 ? 4 : 2;
        const std::int64_t tip =
            payment == 1 && fare > 0 ? fare * (15 + random.below(11)) / 100 : 0;
        const std::int64_t extras = 50 + 100 + 250 + (hour >= 20 || hour < 6 ? 100 : 0) +
                                    (weekday && hour >= 16 && hour < 20 ? 250 : 0);
        const std::int64_t people = random.below(100);
        const std::int64_t passengers = people < 70   ? 1
                                        : people < 84 ? 2
                                        : people < 89 ? 3
                                        : people < 92 ? 4
                                        : people < 95 ? 5
                                        : people < 98 ? 6
                                                      : 0;
        append_integer(buffer, 1 + random.below(2));
        buffer.push_back(',');
        append_timestamp(buffer, pickup);
        buffer.push_back(',');
        append_timestamp(buffer, pickup + seconds);
        buffer.push_back(',');
        append_integer(buffer, passengers);
        buffer.push_back(',');
        append_hundredths(buffer, distance);
        buffer.push_back(',');
        append_integer(buffer, 1 + random.below(265));
        buffer.push_back(',');
        append_integer(buffer, 1 + random.below(265));
        buffer.push_back(',');
        append_integer(buffer, payment);
        buffer.push_back(',');
        append_hundredths(buffer, fare);
        buffer.push_back(',');
        append_hundredths(buffer, tip);
        buffer.push_back(',');
        append_hundredths(buffer, fare + tip + (fare < 0 ? -extras : extras));
        buffer.push_back('\n');
        ++made.rows;
        made.last_pickup = pickup;
        if (buffer.size() >= (1 << 20))
            flush();
    }
    flush();
    if (std::fclose(file) != 0)
        throw std::system_error(errno, std::generic_category(), "cannot close " + path);
    return made;
}

// --- one chunk ----------------------------------------------------------------------------------

// A byte range of the file holding whole lines: what one task reads. It crosses to a worker
// process as its fields (the path, not an open file: the workers' descriptors are their own).
struct chunk_span {
    std::string path;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    template <class Archive>
    void serialize(Archive& ar) {
        ar(path, offset, length);
    }
};

// The course's process_chunk result, extended: everything is a count or an exact sum, so chunk
// results combine by adding, and the means are derived at the end.
struct trip_stats {
    std::int64_t trips = 0;    // valid rows
    std::int64_t rejected = 0; // rows a careful pipeline drops
    std::int64_t passengers = 0;
    std::int64_t distance = 0; // hundredths of a mile
    std::int64_t max_distance = 0;
    std::int64_t fares = 0; // cents
    std::int64_t tips = 0;
    std::int64_t charged = 0;
    std::int64_t trip_seconds = 0;
    std::int64_t first_pickup = 0; // seconds since 1970; 0 when there are no trips
    std::int64_t last_pickup = 0;
    std::array<std::int64_t, 24> by_hour{}; // trips by hour of pickup

    template <class Archive>
    void serialize(Archive& ar) {
        ar(trips, rejected, passengers, distance, max_distance, fares, tips, charged, trip_seconds,
           first_pickup, last_pickup, by_hour);
    }
    bool operator==(const trip_stats&) const = default;

    double mean_fare() const { return trips ? static_cast<double>(fares) / 100.0 / trips : 0; }
    double mean_distance() const {
        return trips ? static_cast<double>(distance) / 100.0 / trips : 0;
    }

    void add(const trip_stats& other) {
        if (other.trips && (trips == 0 || other.first_pickup < first_pickup))
            first_pickup = other.first_pickup;
        if (other.trips && (trips == 0 || other.last_pickup > last_pickup))
            last_pickup = other.last_pickup;
        trips += other.trips;
        rejected += other.rejected;
        passengers += other.passengers;
        distance += other.distance;
        max_distance = std::max(max_distance, other.max_distance);
        fares += other.fares;
        tips += other.tips;
        charged += other.charged;
        trip_seconds += other.trip_seconds;
        for (std::size_t h = 0; h < by_hour.size(); ++h)
            by_hour[h] += other.by_hour[h];
    }
};

void add_row(trip_stats& stats, std::string_view line) {
    std::array<std::string_view, 11> field;
    std::size_t count = 0;
    for (std::size_t start = 0;;) {
        const std::size_t comma = line.find(',', start);
        if (count == field.size()) {
            ++stats.rejected; // too many fields
            return;
        }
        field[count++] = line.substr(start, comma - start);
        if (comma == std::string_view::npos)
            break;
        start = comma + 1;
    }
    const auto pickup = parse_timestamp(field[1]);
    const auto dropoff = parse_timestamp(field[2]);
    const auto distance = parse_hundredths(field[4]);
    const auto fare = parse_hundredths(field[8]);
    const auto tip = parse_hundredths(field[9]);
    const auto charged = parse_hundredths(field[10]);
    int passengers = -1;
    std::from_chars(field[3].data(), field[3].data() + field[3].size(), passengers);
    if (count != field.size() || !pickup || !dropoff || !distance || !fare || !tip || !charged ||
        passengers < 0 || *dropoff <= *pickup || *distance <= 0 || *fare < 0) {
        ++stats.rejected;
        return;
    }
    if (stats.trips == 0 || *pickup < stats.first_pickup)
        stats.first_pickup = *pickup;
    stats.last_pickup = std::max(stats.last_pickup, *pickup);
    ++stats.trips;
    stats.passengers += passengers;
    stats.distance += *distance;
    stats.max_distance = std::max(stats.max_distance, *distance);
    stats.fares += *fare;
    stats.tips += *tip;
    stats.charged += *charged;
    stats.trip_seconds += *dropoff - *pickup;
    ++stats.by_hour[static_cast<std::size_t>(*pickup % 86400 / 3600)];
}

// Reads one chunk and computes its statistics: the task every executor runs.
trip_stats process_chunk(const chunk_span& chunk) {
    std::ifstream in(chunk.path, std::ios::binary);
    std::string text(chunk.length, '\0');
    in.seekg(static_cast<std::streamoff>(chunk.offset));
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    if (!in)
        throw std::runtime_error("cannot read " + std::to_string(chunk.length) + " bytes at " +
                                 std::to_string(chunk.offset) + " of " + chunk.path);
    trip_stats stats;
    std::string_view rest = text;
    while (!rest.empty()) {
        const std::size_t end = rest.find('\n');
        add_row(stats, rest.substr(0, end));
        rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
    }
    return stats;
}

// Cuts the file into ranges of about `chunk_bytes`, each moved forward to the next line end, so
// no line is split; the header is skipped. The last chunk is what is left, so it is shorter.
std::vector<chunk_span> plan_chunks(const std::string& path, std::uint64_t file_bytes,
                                    std::uint64_t chunk_bytes) {
    std::ifstream in(path, std::ios::binary);
    const auto line_end_after = [&](std::uint64_t at) {
        in.clear();
        in.seekg(static_cast<std::streamoff>(at));
        for (char c; at < file_bytes && in.get(c); ++at)
            if (c == '\n')
                return at + 1;
        return file_bytes;
    };
    std::vector<chunk_span> chunks;
    for (std::uint64_t start = line_end_after(0); start < file_bytes;) {
        const std::uint64_t end =
            start + chunk_bytes >= file_bytes ? file_bytes : line_end_after(start + chunk_bytes);
        chunks.push_back({path, start, end - start});
        start = end;
    }
    return chunks;
}

trip_stats combine(const std::vector<trip_stats>& chunks) {
    trip_stats all;
    for (const trip_stats& chunk : chunks)
        all.add(chunk);
    return all;
}

std::string megabytes(double bytes) {
    return bytes >= 1024 * mib ? fmt::format("{:.1f} GiB", bytes / (1024 * mib))
                               : fmt::format("{:.1f} MiB", bytes / mib);
}

int run(int argc, char** argv) {
    // At least 0.01 MiB (about a hundred trips) so every chunk has rows to average; at most
    // 1 TiB of disk.
    const auto file_mb = triad_examples::argument(argc, argv, 1, 48.0, 0.01, 1024.0 * 1024.0);
    const auto chunk_mb = triad_examples::argument(argc, argv, 2, 5.0, 0.01, 1024.0 * 1024.0);
    const auto seed = triad_examples::argument<std::uint64_t>(argc, argv, 3, 2024, 0, UINT64_MAX);
    if (!file_mb || !chunk_mb || !seed) {
        fmt::print(stderr,
                   "usage: {} [file_megabytes in 0.01..1048576] [chunk_megabytes in "
                   "0.01..1048576] [seed: 0..2^64-1]\n",
                   argv[0]);
        return 2;
    }
    const auto file_target = static_cast<std::uint64_t>(*file_mb * mib);
    const auto chunk_bytes = static_cast<std::uint64_t>(*chunk_mb * mib);

    // --- How many workers? The course's lesson, with this machine's numbers. ---
    // Each task holds its chunk's text while it parses it (pandas would hold a DataFrame, several
    // times larger); a worker process adds its own few MiB.
    const std::uint64_t per_worker = chunk_bytes + 8 * static_cast<std::uint64_t>(mib);
    const std::size_t workers = triad::workers_for_memory(per_worker);
    const auto available = triad::available_memory();
    fmt::print("=== How many workers? (the course: \"16GB RAM and each process might use 4GB\") "
               "===\n");
    fmt::print("The course's machine: 16 GB / 4 GB per process = 4 processes at most; its code "
               "used min(3, cpu_count() - 1)\n");
    fmt::print("This machine: cpu_count() = {}, available memory = {} (cgroup limit minus usage, "
               "or MemAvailable)\n",
               triad::cpu_count(), available ? megabytes(static_cast<double>(*available)) : "?");
    fmt::print("If each worker needed 4 GiB: workers_for_memory(4 GiB) = {}\n",
               triad::workers_for_memory(std::size_t{4} << 30));
    fmt::print("Each chunk here needs about {}: workers_for_memory({}) = {} workers for both "
               "pools\n\n",
               megabytes(static_cast<double>(per_worker)),
               megabytes(static_cast<double>(per_worker)), workers);

    // Build the process pool before the file exists and before any thread starts: its workers
    // are forks of this process as it is now, and they open the file themselves.
    triad::process_pool processes(workers);
    triad::thread_pool threads(workers);

    const triad_examples::temp_dir directory("triad-taxi");
    const std::string path = (directory.path() / "yellow_tripdata.csv").string();
    fmt::print("=== Generating the trips (seed {}) ===\n", *seed);
    auto start = clock_type::now();
    const generated_file made = write_trips(path, file_target, *seed);
    fmt::print("Wrote {} rows, {}, pickups from {} to {}, in {:.3f}s\n", made.rows,
               megabytes(static_cast<double>(made.bytes)), format_timestamp(made.first_pickup),
               format_timestamp(made.last_pickup), seconds_since(start));
    const std::vector<chunk_span> chunks = plan_chunks(path, made.bytes, chunk_bytes);
    fmt::print("{} chunks of about {} each (byte ranges cut at line ends); the last holds {}\n\n",
               chunks.size(), megabytes(static_cast<double>(chunk_bytes)),
               megabytes(static_cast<double>(chunks.back().length)));

    // Each progress bar counts chunks; it is drawn on stderr when that is a terminal (tqdm's
    // process_map). Each file chunk is one task, so chunk_size is 1.
    const triad::map_options options{.chunk_size = 1, .progress = triad::progress_bar::terminal};

    fmt::print("=== Sequential ===\n");
    start = clock_type::now();
    std::vector<trip_stats> sequential;
    for (const chunk_span& chunk : chunks)
        sequential.push_back(process_chunk(chunk));
    const double sequential_time = seconds_since(start);
    fmt::print("Time: {:.3f}s\n", sequential_time);

    fmt::print("\n=== Thread pool ({} threads) ===\n", threads.size());
    start = clock_type::now();
    const std::vector<trip_stats> threaded = threads.map(process_chunk, chunks, options);
    const double thread_time = seconds_since(start);
    fmt::print("Time: {:.3f}s, speedup {:.2f}x (in Python the GIL kept its thread pool slower "
               "than the loop: 30.2 s against 25.3 s)\n",
               thread_time, sequential_time / thread_time);

    fmt::print("\n=== Process pool ({} processes, imap: combined as the results arrive) ===\n",
               processes.size());
    start = clock_type::now();
    std::vector<trip_stats> in_processes;
    trip_stats running;
    for (const trip_stats& chunk : processes.imap(process_chunk, chunks, options)) {
        running.add(chunk); // constant memory however many chunks: only totals are kept
        in_processes.push_back(chunk);
    }
    const double process_time = seconds_since(start);
    fmt::print("Time: {:.3f}s, speedup {:.2f}x\n", process_time, sequential_time / process_time);

    const trip_stats all = combine(sequential);
    const bool agree = threaded == sequential && in_processes == sequential &&
                       combine(threaded) == all && running == all;
    fmt::print("\ncheck: sequential, thread pool and process pool agree on all {} chunks and "
               "every total: {}\n\n",
               chunks.size(), agree ? "yes" : "NO");

    fmt::print("=== Results ===\n");
    fmt::print("trips: {} valid, {} rejected (dropoff before pickup, no distance or a negative "
               "fare)\n",
               all.trips, all.rejected);
    fmt::print("pickups from {} to {}\n", format_timestamp(all.first_pickup),
               format_timestamp(all.last_pickup));
    fmt::print("total fares: ${}.{:02}, tips ${}.{:02}, charged ${}.{:02}; total miles {}.{:02}, "
               "longest trip {}.{:02} mi\n",
               all.fares / 100, all.fares % 100, all.tips / 100, all.tips % 100, all.charged / 100,
               all.charged % 100, all.distance / 100, all.distance % 100, all.max_distance / 100,
               all.max_distance % 100);
    const double mean_of_means_fare = [&] {
        double sum = 0;
        for (const trip_stats& chunk : sequential)
            sum += chunk.mean_fare();
        return sum / static_cast<double>(sequential.size());
    }();
    const double mean_of_means_distance = [&] {
        double sum = 0;
        for (const trip_stats& chunk : sequential)
            sum += chunk.mean_distance();
        return sum / static_cast<double>(sequential.size());
    }();
    fmt::print("mean fare: ${:.4f} per trip (total fares / trips: right)\n", all.mean_fare());
    // Weighted by trips, the chunk means give the right answer back: sum(mean_i * trips_i) /
    // sum(trips_i) = total fares / trips. Unweighted, a short chunk counts as much as a full one.
    const std::int64_t last_trips = sequential.back().trips;
    const std::int64_t first_trips = sequential.front().trips;
    const bool nearly_equal = std::abs(static_cast<double>(last_trips - first_trips)) <
                              0.05 * static_cast<double>(first_trips);
    fmt::print("average of the {} chunk means: ${:.4f} (the course's way: wrong by ${:.4f}, "
               "because its last chunk's {} trips weigh as much as the first chunk's {}{})\n",
               sequential.size(), mean_of_means_fare,
               std::abs(mean_of_means_fare - all.mean_fare()), last_trips, first_trips,
               nearly_equal ? "; nearly equal chunks hide the error, unequal ones show it" : "");
    fmt::print("mean distance: {:.4f} mi (right); average of chunk means: {:.4f} mi (wrong)\n",
               all.mean_distance(), mean_of_means_distance);
    const auto busiest = std::max_element(all.by_hour.begin(), all.by_hour.end());
    const auto quietest = std::min_element(all.by_hour.begin(), all.by_hour.end());
    fmt::print("mean trip time: {:.1f} min; mean passengers {:.2f}; busiest hour {:02}:00 ({} "
               "trips), quietest {:02}:00 ({})\n",
               all.trips ? static_cast<double>(all.trip_seconds) / 60.0 / all.trips : 0.0,
               all.trips ? static_cast<double>(all.passengers) / all.trips : 0.0,
               busiest - all.by_hour.begin(), *busiest, quietest - all.by_hour.begin(), *quietest);
    return agree ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    // Caught here, not left to std::terminate, so that the stack unwinds and the temporary
    // directory (perhaps hundreds of MB of CSV) is removed on a failure too: a full disk, a
    // worker that died.
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        fmt::print(stderr, "chunked_csv: {}\n", e.what());
        return 1;
    }
}
