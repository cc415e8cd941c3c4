#pragma once

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
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
// returns the smallest limit: a parent's quota caps its children.
template <class ReadLevel>
std::optional<double> smallest_limit_upwards(std::string dir, const std::string& top,
                                             ReadLevel read_level) {
    std::optional<double> best;
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

// The CPU quota of the process's cgroups (v1 and v2), in CPUs, if any is set. `fs_root` prefixes
// every path so tests can point it at a fake /proc and /sys.
inline std::optional<double> cgroup_cpu_limit(const std::string& fs_root = "") {
    const auto cgroup_text = read_small_file(fs_root + "/proc/self/cgroup");
    const auto mountinfo_text = read_small_file(fs_root + "/proc/self/mountinfo");
    if (!cgroup_text || !mountinfo_text)
        return std::nullopt;
    const auto memberships = parse_proc_cgroup(*cgroup_text);
    const auto mounts = parse_mountinfo(*mountinfo_text);

    std::optional<double> best;
    const auto consider = [&best](std::optional<double> limit) {
        if (limit && (!best || *limit < *best))
            best = limit;
    };
    for (const cgroup_membership& member : memberships) {
        const bool v2 = member.hierarchy == "0" && member.controllers.empty();
        const bool v1_cpu = !v2 && list_contains(member.controllers, "cpu");
        if (!v2 && !v1_cpu)
            continue;
        for (const cgroup_mount& mount : mounts) {
            if (mount.v2 != v2 || (v1_cpu && !list_contains(mount.options, "cpu")))
                continue;
            const std::string top = fs_root + mount.mount_point;
            const std::string dir = cgroup_directory(fs_root, mount, member.path);
            if (v2) {
                consider(smallest_limit_upwards(dir, top, [](const std::string& d) {
                    const auto text = read_small_file(d + "/cpu.max");
                    return text ? parse_cpu_max(*text) : std::nullopt;
                }));
            } else {
                consider(smallest_limit_upwards(dir, top, [](const std::string& d) {
                    const auto quota = read_small_file(d + "/cpu.cfs_quota_us");
                    const auto period = read_small_file(d + "/cpu.cfs_period_us");
                    return quota && period ? parse_cfs_quota(*quota, *period) : std::nullopt;
                }));
            }
        }
    }
    return best;
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
