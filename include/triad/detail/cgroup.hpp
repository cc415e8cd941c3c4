#pragma once

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

namespace triad::detail {

// One line of /proc/self/cgroup: "hierarchy-id:controllers:path".
struct cgroup_membership {
    std::string hierarchy;
    std::string controllers;
    std::string path;
};

// A cgroup file system from /proc/self/mountinfo.
struct cgroup_mount {
    std::string root;        // the directory of the hierarchy that is mounted
    std::string mount_point; // where it is mounted
    bool v2 = false;
    std::string options; // super options; for v1 they name the controllers
};

inline std::vector<std::string_view> split(std::string_view text, char separator) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    for (;;) {
        const std::size_t end = text.find(separator, start);
        parts.push_back(text.substr(start, end == std::string_view::npos ? end : end - start));
        if (end == std::string_view::npos)
            return parts;
        start = end + 1;
    }
}

inline bool list_contains(std::string_view comma_list, std::string_view item) {
    const auto items = split(comma_list, ',');
    return std::find(items.begin(), items.end(), item) != items.end();
}

inline std::vector<cgroup_membership> parse_proc_cgroup(std::string_view text) {
    std::vector<cgroup_membership> result;
    for (std::string_view line : split(text, '\n')) {
        const std::size_t first = line.find(':');
        const std::size_t second =
            first == std::string_view::npos ? first : line.find(':', first + 1);
        if (second == std::string_view::npos)
            continue;
        result.push_back({std::string(line.substr(0, first)),
                          std::string(line.substr(first + 1, second - first - 1)),
                          std::string(line.substr(second + 1))});
    }
    return result;
}

// mountinfo escapes space, tab, newline and backslash as octal "\ooo".
inline std::string unescape_mount_field(std::string_view field) {
    std::string out;
    for (std::size_t i = 0; i < field.size(); ++i) {
        if (field[i] == '\\' && i + 3 < field.size() &&
            std::all_of(field.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                        field.begin() + static_cast<std::ptrdiff_t>(i) + 4,
                        [](char c) { return c >= '0' && c <= '7'; })) {
            out.push_back(static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 +
                                            (field[i + 3] - '0')));
            i += 3;
        } else {
            out.push_back(field[i]);
        }
    }
    return out;
}

// "36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct"
inline std::vector<cgroup_mount> parse_mountinfo(std::string_view text) {
    std::vector<cgroup_mount> result;
    for (std::string_view line : split(text, '\n')) {
        const std::size_t dash = line.find(" - ");
        if (dash == std::string_view::npos)
            continue;
        std::vector<std::string_view> head;
        for (std::string_view field : split(line.substr(0, dash), ' '))
            if (!field.empty())
                head.push_back(field);
        std::vector<std::string_view> tail;
        for (std::string_view field : split(line.substr(dash + 3), ' '))
            if (!field.empty())
                tail.push_back(field);
        if (head.size() < 5 || tail.size() < 3)
            continue;
        const bool v2 = tail[0] == "cgroup2";
        if (!v2 && tail[0] != "cgroup")
            continue;
        result.push_back({unescape_mount_field(head[3]), unescape_mount_field(head[4]), v2,
                          std::string(tail[2])});
    }
    return result;
}

inline std::optional<long long> parse_integer(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.remove_suffix(1);
    long long value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size())
        return std::nullopt;
    return value;
}

// cgroup v2 cpu.max: "max 100000" (no limit) or "150000 100000" (1.5 CPUs).
inline std::optional<double> parse_cpu_max(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.remove_suffix(1);
    const std::size_t space = text.find(' ');
    if (space == std::string_view::npos || text.substr(0, space) == "max")
        return std::nullopt;
    const auto quota = parse_integer(text.substr(0, space));
    const auto period = parse_integer(text.substr(space + 1));
    if (!quota || !period || *quota <= 0 || *period <= 0)
        return std::nullopt;
    return static_cast<double>(*quota) / static_cast<double>(*period);
}

// cgroup v1 cpu.cfs_quota_us (-1: no limit) and cpu.cfs_period_us.
inline std::optional<double> parse_cfs_quota(std::string_view quota_text,
                                             std::string_view period_text) {
    const auto quota = parse_integer(quota_text);
    const auto period = parse_integer(period_text);
    if (!quota || !period || *quota <= 0 || *period <= 0)
        return std::nullopt;
    return static_cast<double>(*quota) / static_cast<double>(*period);
}

inline std::optional<std::string> read_small_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return std::nullopt;
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

inline bool is_directory(const std::string& path) {
    struct stat info {};
    return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

// The directory of the process's cgroup inside a mount, falling back to the mount point when the
// process sees a path from outside its cgroup namespace (a container without cgroupns).
inline std::string cgroup_directory(const std::string& fs_root, const cgroup_mount& mount,
                                    const std::string& path) {
    std::string relative = path;
    if (mount.root != "/") {
        if (path.compare(0, mount.root.size(), mount.root) == 0)
            relative = path.substr(mount.root.size());
        else
            relative.clear();
    }
    std::string dir = fs_root + mount.mount_point + relative;
    while (dir.size() > 1 && dir.back() == '/')
        dir.pop_back();
    return is_directory(dir) ? dir : fs_root + mount.mount_point;
}

// Applies `read_level(dir)` to the cgroup directory and each ancestor up to the mount point and
// returns the smallest limit: a parent's limit caps its children.
template <class ReadLevel>
auto smallest_limit_upwards(std::string dir, const std::string& top, ReadLevel read_level)
    -> std::invoke_result_t<ReadLevel&, const std::string&> {
    std::invoke_result_t<ReadLevel&, const std::string&> best;
    for (;;) {
        if (const auto limit = read_level(dir); limit && (!best || *limit < *best))
            best = limit;
        if (dir.size() <= top.size())
            return best;
        const std::size_t slash = dir.rfind('/');
        if (slash == std::string::npos || slash < top.size())
            return best;
        dir.resize(slash);
    }
}

// Calls `visit(dir, top, v2)` for each cgroup of this process that can hold a limit of the given
// controller: its v2 (unified) cgroup and its v1 cgroup in the hierarchy mounted with
// `v1_controller`. `dir` is the process's directory, `top` the mount point, where a walk up the
// hierarchy stops. `fs_root` prefixes every path so tests can point it at a fake /proc and /sys.
template <class Visit>
void for_each_cgroup_directory(const std::string& fs_root, std::string_view v1_controller,
                               Visit visit) {
    auto cgroup_text = read_small_file(fs_root + "/proc/self/cgroup");
    auto mountinfo_text = read_small_file(fs_root + "/proc/self/mountinfo");
    // /proc/self is the main thread. Once it has called pthread_exit it is a zombie that has left
    // its namespaces and cgroups: its mountinfo cannot be read and its cgroup is the root, so every
    // limit would vanish (a container's 300 MiB would read as the host's free memory). The
    // calling thread shares the process's memory cgroup and mounts: ask through it instead.
    if (!mountinfo_text || mountinfo_text->empty()) {
        cgroup_text = read_small_file(fs_root + "/proc/thread-self/cgroup");
        mountinfo_text = read_small_file(fs_root + "/proc/thread-self/mountinfo");
    }
    if (!cgroup_text || !mountinfo_text)
        return;
    const auto memberships = parse_proc_cgroup(*cgroup_text);
    const auto mounts = parse_mountinfo(*mountinfo_text);
    for (const cgroup_membership& member : memberships) {
        const bool v2 = member.hierarchy == "0" && member.controllers.empty();
        const bool v1 = !v2 && list_contains(member.controllers, v1_controller);
        if (!v2 && !v1)
            continue;
        for (const cgroup_mount& mount : mounts) {
            if (mount.v2 != v2 || (v1 && !list_contains(mount.options, v1_controller)))
                continue;
            visit(cgroup_directory(fs_root, mount, member.path), fs_root + mount.mount_point, v2);
        }
    }
}

// The CPU quota of the process's cgroups (v1 and v2), in CPUs, if any is set.
inline std::optional<double> cgroup_cpu_limit(const std::string& fs_root = "") {
    std::optional<double> best;
    for_each_cgroup_directory(
        fs_root, "cpu", [&best](const std::string& dir, const std::string& top, bool v2) {
            const auto limit = smallest_limit_upwards(dir, top, [v2](const std::string& d) {
                if (v2) {
                    const auto text = read_small_file(d + "/cpu.max");
                    return text ? parse_cpu_max(*text) : std::nullopt;
                }
                const auto quota = read_small_file(d + "/cpu.cfs_quota_us");
                const auto period = read_small_file(d + "/cpu.cfs_period_us");
                return quota && period ? parse_cfs_quota(*quota, *period) : std::nullopt;
            });
            if (limit && (!best || *limit < *best))
                best = limit;
        });
    return best;
}

// A cgroup memory limit in bytes: v2 memory.max ("max": none) or v1 memory.limit_in_bytes, where
// "no limit" reads as the largest page-aligned 63-bit count (9223372036854771712 with 4 KiB
// pages); anything from 2^62 bytes up is taken to mean that.
inline std::optional<std::uint64_t> parse_memory_limit(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.remove_suffix(1);
    const auto value = parse_integer(text);
    if (!value || *value < 0 || *value >= (1LL << 62))
        return std::nullopt;
    return static_cast<std::uint64_t>(*value);
}

// One "key value" line of memory.stat; nullopt if the key is absent.
inline std::optional<std::uint64_t> memory_stat_field(std::string_view stat, std::string_view key) {
    for (std::string_view line : split(stat, '\n')) {
        if (line.size() <= key.size() || line.substr(0, key.size()) != key ||
            line[key.size()] != ' ')
            continue;
        const auto value = parse_integer(line.substr(key.size() + 1));
        if (!value || *value < 0)
            return std::nullopt;
        return static_cast<std::uint64_t>(*value);
    }
    return std::nullopt;
}

// "MemAvailable:   24289020 kB" from /proc/meminfo, in bytes: the kernel's estimate of what can
// be allocated without swapping, free memory plus the page cache it can drop.
inline std::optional<std::uint64_t> parse_mem_available(std::string_view meminfo) {
    constexpr std::string_view key = "MemAvailable:";
    for (std::string_view line : split(meminfo, '\n')) {
        if (line.substr(0, key.size()) != key)
            continue;
        line.remove_prefix(key.size());
        while (!line.empty() && line.front() == ' ')
            line.remove_prefix(1);
        const bool kilobytes = line.size() > 3 && line.substr(line.size() - 3) == " kB";
        if (kilobytes)
            line.remove_suffix(3);
        const auto value = parse_integer(line);
        if (!value || *value < 0)
            return std::nullopt;
        const auto count = static_cast<std::uint64_t>(*value);
        const std::uint64_t unit = kilobytes ? 1024 : 1;
        // Saturates: from 2^54 kB up the product would wrap, to 0 at 2^54 exactly, and "no
        // memory at all" is the one wrong answer that makes workers_for_memory refuse to scale.
        if (count > std::numeric_limits<std::uint64_t>::max() / unit)
            return std::numeric_limits<std::uint64_t>::max();
        return count * unit;
    }
    return std::nullopt;
}

// What one cgroup level leaves free: its limit minus its usage, where usage does not count the
// inactive file cache (`reclaimable`): the kernel drops that before it fails an allocation, and
// MemAvailable counts it as available too, so both sources mean the same thing. Without this, a
// program that has just read a large file would see its cgroup as full.
inline std::uint64_t memory_left(std::uint64_t limit, std::uint64_t usage,
                                 std::uint64_t reclaimable) noexcept {
    const std::uint64_t used = usage - std::min(usage, reclaimable);
    return limit - std::min(limit, used);
}

// The room left under the tightest memory limit of the process's cgroups (v2 memory.max minus
// memory.current, v1 memory.limit_in_bytes minus memory.usage_in_bytes, at every level up to
// the mount point), or nullopt when no level sets a limit. A level whose usage cannot be read
// still caps at its limit.
inline std::optional<std::uint64_t> cgroup_memory_available(const std::string& fs_root = "") {
    std::optional<std::uint64_t> best;
    for_each_cgroup_directory(
        fs_root, "memory", [&best](const std::string& dir, const std::string& top, bool v2) {
            const auto left = smallest_limit_upwards(
                dir, top, [v2](const std::string& d) -> std::optional<std::uint64_t> {
                    const auto limit_text =
                        read_small_file(d + (v2 ? "/memory.max" : "/memory.limit_in_bytes"));
                    const auto limit = limit_text ? parse_memory_limit(*limit_text) : std::nullopt;
                    if (!limit)
                        return std::nullopt;
                    std::uint64_t usage = 0;
                    if (const auto text = read_small_file(
                            d + (v2 ? "/memory.current" : "/memory.usage_in_bytes")))
                        if (const auto value = parse_integer(*text); value && *value > 0)
                            usage = static_cast<std::uint64_t>(*value);
                    // v1's total_ fields cover the level's descendants, as its usage does.
                    std::uint64_t inactive = 0;
                    if (const auto stat = read_small_file(d + "/memory.stat"))
                        inactive =
                            memory_stat_field(*stat, v2 ? "inactive_file" : "total_inactive_file")
                                .value_or(0);
                    return memory_left(*limit, usage, inactive);
                });
            if (left && (!best || *left < *best))
                best = left;
        });
    return best;
}

// Bytes this process may still allocate: the room under its cgroup limits and the host's
// MemAvailable, whichever is smaller (a cgroup limit above the host's free memory does not
// make memory appear); nullopt if neither can be read.
inline std::optional<std::uint64_t> available_memory(const std::string& fs_root = "") {
    const auto in_cgroup = cgroup_memory_available(fs_root);
    const auto meminfo = read_small_file(fs_root + "/proc/meminfo");
    const auto on_host = meminfo ? parse_mem_available(*meminfo) : std::nullopt;
    if (in_cgroup && on_host)
        return std::min(*in_cgroup, *on_host);
    return in_cgroup ? in_cgroup : on_host;
}

// workers_for_memory's arithmetic: as many workers as fit in `available`, at most `cpus`, at
// least one. `bytes_per_worker` must not be 0. Unknown memory caps nothing.
inline std::size_t memory_bound_workers(std::size_t cpus, std::optional<std::uint64_t> available,
                                        std::size_t bytes_per_worker) noexcept {
    std::size_t n = cpus == 0 ? 1 : cpus;
    if (available) {
        const std::uint64_t fit = *available / bytes_per_worker;
        if (fit < n)
            n = static_cast<std::size_t>(fit);
    }
    return n == 0 ? 1 : n;
}

// CPUs in the process's affinity mask, 0 if it cannot be read. Affinity belongs to threads; the
// process's is its main thread's (the thread whose id is the pid), which every thread inherits
// unless it narrows its own: a worker pinned to one CPU must not make the whole process look
// like a one-CPU machine. If the main thread is gone (it called pthread_exit), the calling
// thread's mask is the best there is.
inline std::size_t affinity_cpu_count() noexcept {
    pid_t target = ::getpid();
    for (int cpus = CPU_SETSIZE; cpus <= (1 << 20); cpus *= 2) {
        cpu_set_t* set = CPU_ALLOC(static_cast<std::size_t>(cpus));
        if (set == nullptr)
            return 0;
        const std::size_t bytes = CPU_ALLOC_SIZE(static_cast<std::size_t>(cpus));
        CPU_ZERO_S(bytes, set);
        const int rc = ::sched_getaffinity(target, bytes, set);
        const int count = rc == 0 ? CPU_COUNT_S(bytes, set) : 0;
        const int error = errno;
        CPU_FREE(set);
        if (rc == 0)
            return static_cast<std::size_t>(count);
        if (error == ESRCH && target != 0) {
            target = 0;
            cpus /= 2; // the same size again, for this thread
            continue;
        }
        if (error != EINVAL) // EINVAL: the kernel's mask is larger than ours; try a bigger one
            return 0;
    }
    return 0;
}

// Combines the affinity count with a cgroup quota: a quota of 1.5 CPUs allows 2 busy threads.
inline std::size_t effective_cpu_count(std::size_t affinity, std::optional<double> quota) noexcept {
    std::size_t n = affinity == 0 ? 1 : affinity;
    if (quota && *quota > 0) {
        const double ceiling = std::ceil(*quota);
        if (ceiling < static_cast<double>(n))
            n = static_cast<std::size_t>(ceiling);
    }
    return n == 0 ? 1 : n;
}

} // namespace triad::detail
