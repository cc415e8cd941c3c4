#pragma once

// The README's benchmark sections, generated from a report so that the README holds no
// hand-typed benchmark numbers. Each section sits between marker comments:
//
//   <!-- report:headline -->
//   ...generated, replaced by `bench_report --update-readme README.md`...
//   <!-- /report:headline -->
//
// and `bench_report --check-readme README.md` fails, naming the section, when the text between
// the markers is not what the report generates. Header-only, after report.hpp.

#include "report.hpp"

#include <cmath>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace triad_report {

// Where the README's numbers come from.
struct report_source {
    std::string link; // the report's REPORT.md, relative to the README
    std::string date;
    std::string host;
    std::string cpu;
    unsigned cpus = 0;
    std::string python; // "Python 3.11.7", or empty when the Python peers did not run
};

// The group of questions an overhead workload answers, by the triad executor it measures.
inline std::string overhead_group(const std::string& workload,
                                  const std::vector<measurement>& all) {
    std::string group = "Tasks, futures and the thread pool";
    for (const measurement& m : all) {
        if (m.workload != workload)
            continue;
        if (m.executor == "triad_loop")
            return "The event loop";
        if (m.executor == "triad_processes" || m.executor == "raw_pipe")
            group = "The process pool";
    }
    return group;
}

// Per group of overhead questions, a table: triad's time per item, and each peer's time with how
// many times triad's it is, all from the same run.
inline std::string readme_overhead_tables(const std::map<std::string, workload_info>& workloads,
                                          const std::vector<measurement>& all) {
    static const char* const groups[] = {"Tasks, futures and the thread pool", "The process pool",
                                         "The event loop"};
    std::ostringstream out;
    for (const char* group : groups) {
        std::ostringstream rows;
        for (const std::string& workload : workload_order(workloads)) {
            const workload_info& info = workloads.at(workload);
            if (info.kind != "overhead" || overhead_group(workload, all) != group)
                continue;
            std::vector<const measurement*> triad;
            std::vector<const measurement*> peers;
            for (const measurement& m : all)
                if (m.workload == workload)
                    (executor_kind(m.executor) == "triad" ? triad : peers).push_back(&m);
            if (triad.empty() && peers.empty())
                continue;
            const auto faster = [](auto* a, auto* b) { return a->ns_per_item < b->ns_per_item; };
            std::stable_sort(triad.begin(), triad.end(), faster);
            std::stable_sort(peers.begin(), peers.end(), faster);
            const std::set<std::string> shared = shared_config_parts(workload, all);
            // "asio_thread_pool 291.2 ns (4.83x)": the executor, its configuration if it has
            // one, its time, how many times triad's fastest time that is (not for the work
            // alone, which has no machinery to compare), and the memory per task if measured.
            const auto describe = [&](const measurement& m, bool ratio) {
                const std::string config = varying_config(m.config, shared);
                const bool alone = m.executor == "sequential";
                std::string text =
                    (alone ? std::string("the work alone (sequential)") : m.executor) +
                    (config.empty() ? "" : " `" + config + "`") + " " + format_time(m.ns_per_item);
                if (ratio && !alone && !triad.empty())
                    text += " (" + format_ratio(m.ns_per_item / triad.front()->ns_per_item) + ")";
                if (auto bytes = m.counters.find("bytes_per_task"); bytes != m.counters.end())
                    text += ", " + format_counter(bytes->second) + " B per task";
                return text;
            };
            std::string triad_cell;
            for (const measurement* m : triad)
                triad_cell += (triad_cell.empty() ? "" : "; ") + describe(*m, false);
            std::string peer_cell;
            for (const measurement* m : peers)
                peer_cell += (peer_cell.empty() ? "" : "; ") + describe(*m, true);
            rows << "| " << info.title << " | " << (triad_cell.empty() ? "-" : triad_cell) << " | "
                 << (peer_cell.empty() ? "-" : peer_cell) << " |\n";
        }
        if (rows.str().empty())
            continue;
        out << (out.str().empty() ? "" : "\n") << "**" << group << "**\n\n"
            << "| question | triad | in the same run (time; how many times triad's) |\n"
            << "|---|---|---|\n"
            << rows.str();
    }
    return out.str();
}

// The MPI pool's numbers, and the estimate for a cluster that rests on them: rank 0's cost per
// task (from 20,000 tiny tasks in flight at once), its memory per outstanding task, and the
// prime check's time per item, give the shortest chunk that keeps 1,000 ranks busy.
inline std::string readme_mpi(const std::vector<measurement>& all) {
    const auto find = [&](const std::string& workload,
                          const std::string& executor) -> const measurement* {
        for (const measurement& m : all)
            if (m.workload == workload && m.executor == executor)
                return &m;
        return nullptr;
    };
    const auto counter = [](const measurement* m, const std::string& name) {
        if (m == nullptr)
            return 0.0;
        const auto found = m->counters.find(name);
        return found == m->counters.end() ? 0.0 : found->second;
    };
    const measurement* pool = find("mpi_round_trip", "triad_mpi");
    const measurement* raw = find("mpi_round_trip", "raw_mpi");
    const measurement* stream = find("mpi_submit_stream", "triad_mpi");
    const measurement* primes = find("mpi_primes", "sequential");
    if (pool == nullptr || raw == nullptr || stream == nullptr || primes == nullptr)
        return "This report has no MPI rows (`bench_mpi` runs where MPI is installed).\n";
    const double pool_p50 = counter(pool, "p50_us") * 1e3;
    const double raw_p50 = counter(raw, "p50_us") * 1e3;
    const double pool_p10 = counter(pool, "p10_us") * 1e3;
    const double raw_p10 = counter(raw, "p10_us") * 1e3;
    const double per_task = stream->ns_per_item; // rank 0's time per task, in flight at once
    const double bytes = counter(stream, "rank0_bytes_per_task");
    const double item = primes->ns_per_item; // one prime check
    constexpr double ranks = 1000;
    // Rank 0 keeps up while each rank asks no more often than once per (ranks x per_task).
    const double chunk_ns = ranks * per_task;
    const auto chunk_items = static_cast<long>(std::ceil(chunk_ns / std::max(item, 1.0)));
    std::ostringstream out;
    out << "| measured on this machine (3 ranks, 2 cores) | value |\n|---|---:|\n"
        << "| one task's round trip, median (p10) of single trips | " << format_time(pool_p50)
        << " (" << format_time(pool_p10) << ") |\n"
        << "| raw `MPI_Send`/`MPI_Recv` ping-pong, same job | " << format_time(raw_p50) << " ("
        << format_time(raw_p10) << ") |\n"
        << "| round trip, pool / raw (median; p10) | "
        << format_ratio(raw_p50 > 0 ? pool_p50 / raw_p50 : 0) << "; "
        << format_ratio(raw_p10 > 0 ? pool_p10 / raw_p10 : 0) << " |\n"
        << "| rank 0's time per task, 20,000 tiny tasks in flight | " << format_time(per_task)
        << " (" << static_cast<long>(1e9 / std::max(per_task, 1.0)) << " tasks/s) |\n"
        << "| rank 0's memory per outstanding task | " << static_cast<long>(bytes) << " bytes |\n"
        << "| one prime check (the course's trial division) | " << format_time(item) << " |\n\n"
        << "So rank 0 serves " << static_cast<long>(ranks)
        << " ranks without making them wait while each rank's task takes at least "
        << static_cast<long>(ranks) << " x " << format_time(per_task) << " = "
        << format_time(chunk_ns) << ": a chunk of " << chunk_items
        << " prime checks (`map_options::chunk_size`), or fewer, longer tasks. Its memory for "
           "1,000 ranks is "
        << static_cast<long>(ranks * 2 * bytes / 1024)
        << " KiB at two tasks in flight each, plus what is queued.\n";
    return out.str();
}

// The README's generated sections by name (the marker without "report:"), from a report.
inline std::map<std::string, std::string>
readme_sections(const std::map<std::string, workload_info>& workloads,
                const std::vector<measurement>& all, const report_source& source,
                const report_context& context = {}) {
    std::vector<table> tables;
    for (const std::string& workload : workload_order(workloads))
        if (workloads.at(workload).kind != "overhead" && workloads.at(workload).kind != "latency")
            tables.push_back(make_table(workload, workloads.at(workload), all, context));
    const std::string dir = source.link.substr(0, source.link.rfind('/') + 1);
    std::map<std::string, std::string> sections;
    sections["source"] = "The numbers below come from the latest full report, [" + source.link +
                         "](" + source.link + "), run on " + source.date + " on `" + source.host +
                         "` (" + source.cpu +
                         (source.cpus > 0 ? ", " + std::to_string(source.cpus) + " CPUs" : "") +
                         (source.python.empty() ? "" : "; " + source.python) +
                         "), and are regenerated from it by `bench_report --update-readme "
                         "README.md`.\n";
    std::string headline = headline_table(tables, context);
    for (const table& t : tables)
        if (t.info.kind == "cpu" && !t.rows.empty()) { // the first CPU-bound workload's chart
            headline +=
                "\n![" + xml_escape(t.info.title) + "](" + dir + "charts/" + t.workload + ".svg)\n";
            break;
        }
    sections["headline"] = headline;
    sections["choosing"] = choosing_table(tables);
    sections["overheads"] = readme_overhead_tables(workloads, all);
    sections["mpi"] = readme_mpi(all);
    return sections;
}

inline std::string begin_marker(const std::string& name) {
    return "<!-- report:" + name + " -->";
}

inline std::string end_marker(const std::string& name) {
    return "<!-- /report:" + name + " -->";
}

// Where a section's text lies in the README: [first, last) between its marker lines.
inline std::optional<std::pair<std::size_t, std::size_t>> section_span(const std::string& readme,
                                                                       const std::string& name) {
    const std::string begin = begin_marker(name) + "\n";
    const std::string end = "\n" + end_marker(name);
    const auto b = readme.find(begin);
    if (b == std::string::npos)
        return std::nullopt;
    const auto e = readme.find(end, b + begin.size() - 1);
    if (e == std::string::npos)
        return std::nullopt;
    return std::pair{b + begin.size(), e + 1};
}

// The README with every section's text replaced by `sections`; a missing marker is an error (the
// README says where a section goes, not this program).
inline std::string update_readme(std::string readme,
                                 const std::map<std::string, std::string>& sections) {
    for (const auto& [name, text] : sections) {
        const auto span = section_span(readme, name);
        if (!span)
            throw std::runtime_error("the README has no section " + begin_marker(name) + " ... " +
                                     end_marker(name));
        readme.replace(span->first, span->second - span->first, text);
    }
    return readme;
}

// The sections whose text in the README differs from `sections`, each with why.
inline std::vector<std::string>
readme_differences(const std::string& readme, const std::map<std::string, std::string>& sections) {
    std::vector<std::string> out;
    for (const auto& [name, text] : sections) {
        const auto span = section_span(readme, name);
        if (!span) {
            out.push_back("section report:" + name + " is missing (no " + begin_marker(name) +
                          " ... " + end_marker(name) + ")");
            continue;
        }
        const std::string current = readme.substr(span->first, span->second - span->first);
        if (current == text)
            continue;
        std::istringstream a(current);
        std::istringstream b(text);
        std::string line_a;
        std::string line_b;
        int number = 1;
        while (true) {
            const bool more_a = static_cast<bool>(std::getline(a, line_a));
            const bool more_b = static_cast<bool>(std::getline(b, line_b));
            if (!more_a || !more_b || line_a != line_b) {
                out.push_back("section report:" + name + " differs from the report at its line " +
                              std::to_string(number) +
                              ":\n  README: " + (more_a ? line_a : "(ends)") +
                              "\n  report: " + (more_b ? line_b : "(ends)"));
                break;
            }
            ++number;
        }
    }
    return out;
}

} // namespace triad_report
