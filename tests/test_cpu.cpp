#include <triad/cpu.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include <sched.h>

// The whole file in a namespace of its own: the unity build compiles several test files as one
// translation unit (tests/CMakeLists.txt), where helpers of the same name must not meet.
namespace triad_test_cpu {

namespace fs = std::filesystem;

namespace {

// A fake /proc and /sys under a temporary directory, for triad::detail::cgroup_cpu_limit.
class fake_root {
public:
    fake_root() {
        char pattern[] = "/tmp/triad-cgroup-XXXXXX";
        const char* made = ::mkdtemp(pattern);
        REQUIRE(made != nullptr);
        m_path = made;
    }
    ~fake_root() {
        std::error_code ignored;
        fs::remove_all(m_path, ignored);
    }
    fake_root(const fake_root&) = delete;
    fake_root& operator=(const fake_root&) = delete;

    void write(const std::string& relative, const std::string& content) const {
        const fs::path file = fs::path(m_path) / relative;
        fs::create_directories(file.parent_path());
        std::ofstream(file) << content;
    }
    const std::string& path() const { return m_path; }

private:
    std::string m_path;
};

} // namespace

TEST_CASE("cpu_count is at least one and at most what the machine has", "[cpu]") {
    const std::size_t n = triad::cpu_count();
    CHECK(n >= 1);
    if (std::thread::hardware_concurrency() != 0)
        CHECK(n <= std::thread::hardware_concurrency());
}

namespace {

int first_allowed_cpu() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    int first = 0;
    while (!CPU_ISSET(first, &set))
        ++first;
    return first;
}

// Runs `body` in a forked child and returns what it wrote, or the child's failure.
template <class Body>
std::string in_child(Body body) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::close(fds[0]);
        const std::string out = body();
        const auto written = ::write(fds[1], out.data(), out.size());
        ::_exit(written == static_cast<ssize_t>(out.size()) ? 0 : 1);
    }
    ::close(fds[1]);
    std::string out;
    char buffer[256];
    for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;)
        out.append(buffer, static_cast<std::size_t>(n));
    ::close(fds[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    return out;
}

} // namespace

TEST_CASE("cpu_count follows the process's affinity mask", "[cpu]") {
    // A process started under `taskset -c N`: here a single-threaded child pins itself.
    const std::string seen = in_child([] {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(first_allowed_cpu(), &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0)
            return std::string("sched_setaffinity failed");
        return std::to_string(triad::cpu_count());
    });
    CHECK(seen == "1");
}

TEST_CASE("a thread that pins itself does not shrink the process's cpu_count",
          "[cpu][regression]") {
    // Before: cpu_count read the calling thread's mask, so a pinned worker saw one CPU.
    const std::size_t process_count = triad::cpu_count();
    std::size_t seen = 0;
    std::thread pinned([&] {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(first_allowed_cpu(), &one);
        REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);
        seen = triad::cpu_count();
    });
    pinned.join();
    CHECK(seen == process_count);
}

TEST_CASE("cpu_count obeys a real cgroup CPU quota", "[cpu]") {
    // Makes a cgroup with a quota of half a CPU (v2 cpu.max, or v1 cpu.cfs_quota_us) and moves
    // a forked child into it. Needs root and a writable cgroup file system: skipped otherwise.
    if (triad::detail::affinity_cpu_count() < 2) {
        WARN("skipped: this machine has one CPU, so a quota cannot lower the count");
        return;
    }
    const std::string name = "triad-test-" + std::to_string(::getpid());
    struct candidate {
        std::string dir;
        std::string quota_file;
        std::string quota;
    };
    const candidate candidates[] = {
        {"/sys/fs/cgroup/" + name, "cpu.max", "50000 100000"},               // v2, unified
        {"/sys/fs/cgroup/unified/" + name, "cpu.max", "50000 100000"},       // v2 beside v1
        {"/sys/fs/cgroup/cpu/" + name, "cpu.cfs_quota_us", "50000"},         // v1
        {"/sys/fs/cgroup/cpu,cpuacct/" + name, "cpu.cfs_quota_us", "50000"}, // v1, joined
    };
    std::string made;
    for (const auto& c : candidates) {
        std::error_code error;
        if (!fs::create_directory(c.dir, error))
            continue;
        if (!fs::exists(c.dir + "/cgroup.procs")) { // a plain directory, not a cgroup
            fs::remove(c.dir, error);
            continue;
        }
        if (c.quota_file != "cpu.max")
            std::ofstream(c.dir + "/cpu.cfs_period_us") << "100000";
        std::ofstream quota(c.dir + "/" + c.quota_file);
        quota << c.quota;
        quota.close();
        if (!quota) {
            fs::remove(c.dir, error);
            continue;
        }
        made = c.dir;
        break;
    }
    if (made.empty()) {
        WARN("skipped: no cgroup could be made here (needs root and a writable cgroup fs)");
        return;
    }
    const std::string procs = made + "/cgroup.procs";
    const std::string seen = in_child([&] {
        std::ofstream join(procs);
        join << ::getpid();
        join.close();
        if (!join)
            return std::string("could not join the cgroup");
        return std::to_string(triad::cpu_count());
    });
    std::error_code error;
    fs::remove(made, error); // the child has exited, so the cgroup is empty
    CHECK(seen == "1");      // half a CPU of quota, rounded up
}

TEST_CASE("TRIAD_CPU_COUNT overrides the answer and is validated", "[cpu]") {
    ::setenv("TRIAD_CPU_COUNT", "3", 1);
    CHECK(triad::cpu_count() == 3);
    ::setenv("TRIAD_CPU_COUNT", "zero", 1);
    CHECK_THROWS_WITH(triad::cpu_count(),
                      Catch::Contains("TRIAD_CPU_COUNT") && Catch::Contains("positive integer"));
    ::setenv("TRIAD_CPU_COUNT", "0", 1);
    CHECK_THROWS_AS(triad::cpu_count(), std::invalid_argument);
    ::unsetenv("TRIAD_CPU_COUNT");
    CHECK(triad::cpu_count() >= 1);
}

TEST_CASE("cgroup quota files are parsed exactly", "[cpu]") {
    using namespace triad::detail;
    CHECK_FALSE(parse_cpu_max("max 100000\n").has_value());
    CHECK(parse_cpu_max("150000 100000\n") == Approx(1.5));
    CHECK_FALSE(parse_cpu_max("garbage").has_value());
    CHECK_FALSE(parse_cpu_max("0 100000").has_value());
    CHECK_FALSE(parse_cfs_quota("-1\n", "100000\n").has_value());
    CHECK(parse_cfs_quota("50000\n", "100000\n") == Approx(0.5));
    CHECK_FALSE(parse_cfs_quota("50000", "0").has_value());

    CHECK(effective_cpu_count(8, 1.5) == 2);
    CHECK(effective_cpu_count(2, std::nullopt) == 2);
    CHECK(effective_cpu_count(4, 0.1) == 1);
    CHECK(effective_cpu_count(2, 16.0) == 2);
    CHECK(effective_cpu_count(0, std::nullopt) == 1);
}

TEST_CASE("mountinfo lines are parsed, escapes included", "[cpu]") {
    using namespace triad::detail;
    const auto mounts = parse_mountinfo(
        "25 1 0:22 / /sys rw - sysfs sysfs rw\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup "
        "rw,cpu,cpuacct\n"
        "40 31 0:40 /kube /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
    REQUIRE(mounts.size() == 2);
    CHECK(mounts[0].mount_point == "/sys/fs/cgroup/cpu,cpuacct");
    CHECK_FALSE(mounts[0].v2);
    CHECK(list_contains(mounts[0].options, "cpu"));
    CHECK(mounts[1].v2);
    CHECK(mounts[1].root == "/kube");
    CHECK(mounts[1].mount_point == "/sys/fs/my cgroup");
}

TEST_CASE("a cgroup v2 quota anywhere up the hierarchy caps the count", "[cpu]") {
    fake_root root;
    root.write("proc/self/cgroup", "0::/app/worker\n");
    root.write("proc/self/mountinfo", "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    root.write("sys/fs/cgroup/cpu.max", "max 100000\n");
    root.write("sys/fs/cgroup/app/cpu.max", "250000 100000\n");
    root.write("sys/fs/cgroup/app/worker/cpu.max", "max 100000\n");
    const auto limit = triad::detail::cgroup_cpu_limit(root.path());
    REQUIRE(limit.has_value());
    CHECK(*limit == Approx(2.5));
}

TEST_CASE("a cgroup v1 CFS quota caps the count, no quota means no cap", "[cpu]") {
    fake_root root;
    root.write("proc/self/cgroup", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n");
    root.write("proc/self/mountinfo",
               "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
               "33 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
    root.write("sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n");
    root.write("sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
    const auto limit = triad::detail::cgroup_cpu_limit(root.path());
    REQUIRE(limit.has_value());
    CHECK(*limit == Approx(0.5));

    fake_root unlimited;
    unlimited.write("proc/self/cgroup", "4:cpu,cpuacct:/\n");
    unlimited.write("proc/self/mountinfo",
                    "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n");
    unlimited.write("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
    unlimited.write("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
    CHECK_FALSE(triad::detail::cgroup_cpu_limit(unlimited.path()).has_value());
}

TEST_CASE("a cgroup path from outside the container's namespace falls back to the mount point",
          "[cpu]") {
    fake_root root;
    root.write("proc/self/cgroup", "0::/host/slice/container.scope\n");
    root.write("proc/self/mountinfo", "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    root.write("sys/fs/cgroup/cpu.max", "100000 100000\n");
    const auto limit = triad::detail::cgroup_cpu_limit(root.path());
    REQUIRE(limit.has_value());
    CHECK(*limit == Approx(1.0));
}

TEST_CASE("missing /proc files mean no cgroup limit", "[cpu]") {
    fake_root empty;
    CHECK_FALSE(triad::detail::cgroup_cpu_limit(empty.path()).has_value());
}

// --- workers_for_memory ----------------------------------------------------------------------

namespace {

constexpr std::uint64_t mib = 1024 * 1024;
constexpr std::uint64_t gib = 1024 * mib;

} // namespace

TEST_CASE("memory limit, memory.stat and meminfo files are parsed exactly", "[cpu]") {
    using namespace triad::detail;
    CHECK_FALSE(parse_memory_limit("max\n").has_value());
    CHECK(parse_memory_limit("67108864\n") == 64 * mib);
    CHECK_FALSE(parse_memory_limit("9223372036854771712\n").has_value()); // v1's "no limit"
    CHECK_FALSE(parse_memory_limit("garbage").has_value());
    CHECK_FALSE(parse_memory_limit("-1").has_value());

    const std::string stat = "total_inactive_file 7\ninactive_file_x 9\ninactive_file 5\n";
    CHECK(memory_stat_field(stat, "inactive_file") == 5u);
    CHECK(memory_stat_field(stat, "total_inactive_file") == 7u);
    CHECK_FALSE(memory_stat_field(stat, "active_file").has_value());

    CHECK(parse_mem_available("MemTotal:       32000000 kB\nMemAvailable:   24289020 kB\n") ==
          24289020ull * 1024);
    CHECK_FALSE(parse_mem_available("MemTotal:       32000000 kB\n").has_value());
    // 2^54 kB and more do not fit in 64 bits of bytes: saturate instead of wrapping to 0 (which
    // made workers_for_memory answer 1 on a machine claiming more memory than it can count).
    constexpr auto most = std::numeric_limits<std::uint64_t>::max();
    CHECK(parse_mem_available("MemAvailable: 18014398509481984 kB\n") == most);
    CHECK(parse_mem_available("MemAvailable: 9223372036854775807 kB\n") == most);
    CHECK(parse_mem_available("MemAvailable: 18014398509481983 kB\n") == most - 1023);

    CHECK(memory_left(100, 30, 10) == 80);
    CHECK(memory_left(100, 5, 10) == 100); // more reclaimable cache than usage: all free
    CHECK(memory_left(100, 150, 10) == 0); // over the limit (v1 can be, briefly)
}

TEST_CASE("workers_for_memory's arithmetic: the course's 16 GB and 4 GB per process", "[cpu]") {
    using triad::detail::memory_bound_workers;
    CHECK(memory_bound_workers(8, 16 * gib, 4 * gib) == 4);     // memory binds
    CHECK(memory_bound_workers(2, 16 * gib, 4 * gib) == 2);     // CPUs bind
    CHECK(memory_bound_workers(8, 16 * gib - 1, 4 * gib) == 3); // rounds down
    CHECK(memory_bound_workers(8, 3 * gib, 4 * gib) == 1);      // not one fits: still one
    CHECK(memory_bound_workers(8, std::nullopt, 4 * gib) == 8); // unknown memory caps nothing
    CHECK(memory_bound_workers(0, 16 * gib, 1) == 1);
}

TEST_CASE("workers_for_memory refuses a zero per-worker size", "[cpu]") {
    CHECK_THROWS_AS(triad::workers_for_memory(0), std::invalid_argument);
    CHECK_THROWS_WITH(triad::workers_for_memory(0), Catch::Contains("bytes_per_worker is 0"));
}

TEST_CASE("the tightest cgroup v2 level is the one with the least room, not the lowest limit",
          "[cpu]") {
    // The parent's limit is higher but it is nearly full (a sibling uses it); the root has no
    // memory files at all, as on a real v2 system.
    fake_root root;
    root.write("proc/self/cgroup", "0::/app/worker\n");
    root.write("proc/self/mountinfo", "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    root.write("proc/meminfo", "MemTotal:       33554432 kB\nMemAvailable:   16777216 kB\n");
    root.write("sys/fs/cgroup/app/memory.max", std::to_string(gib) + "\n");
    root.write("sys/fs/cgroup/app/memory.current", std::to_string(900 * mib) + "\n");
    root.write("sys/fs/cgroup/app/memory.stat", "anon 1\ninactive_file 0\n");
    root.write("sys/fs/cgroup/app/worker/memory.max", std::to_string(512 * mib) + "\n");
    root.write("sys/fs/cgroup/app/worker/memory.current", std::to_string(200 * mib) + "\n");
    root.write("sys/fs/cgroup/app/worker/memory.stat",
               "inactive_file " + std::to_string(100 * mib) + "\n");
    CHECK(triad::detail::cgroup_memory_available(root.path()) == 124 * mib);
    CHECK(triad::detail::available_memory(root.path()) == 124 * mib);

    // Without the parent's pressure the child's own room counts, its file cache excluded.
    root.write("sys/fs/cgroup/app/memory.current", std::to_string(100 * mib) + "\n");
    CHECK(triad::detail::cgroup_memory_available(root.path()) == 412 * mib);
}

TEST_CASE("cgroup v2 memory.max of \"max\" everywhere falls back to MemAvailable", "[cpu]") {
    fake_root root;
    root.write("proc/self/cgroup", "0::/user.slice\n");
    root.write("proc/self/mountinfo", "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    root.write("proc/meminfo", "MemFree:         1000 kB\nMemAvailable:    2048000 kB\n");
    root.write("sys/fs/cgroup/user.slice/memory.max", "max\n");
    root.write("sys/fs/cgroup/user.slice/memory.current", "123456789\n");
    CHECK_FALSE(triad::detail::cgroup_memory_available(root.path()).has_value());
    CHECK(triad::detail::available_memory(root.path()) == 2048000ull * 1024);
}

TEST_CASE("a cgroup v1 memory limit caps available memory, up the hierarchy", "[cpu]") {
    fake_root root;
    root.write("proc/self/cgroup", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n");
    root.write("proc/self/mountinfo",
               "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
               "33 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
               "40 31 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
    root.write("proc/meminfo", "MemAvailable:   16777216 kB\n");
    root.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    root.write("sys/fs/cgroup/memory/memory.usage_in_bytes", "8000000000\n");
    root.write("sys/fs/cgroup/memory/docker/memory.limit_in_bytes", std::to_string(gib) + "\n");
    root.write("sys/fs/cgroup/memory/docker/memory.usage_in_bytes", std::to_string(700 * mib));
    root.write("sys/fs/cgroup/memory/docker/memory.stat",
               "inactive_file 0\ntotal_inactive_file " + std::to_string(300 * mib) + "\n");
    root.write("sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
               std::to_string(256 * mib) + "\n");
    root.write("sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes",
               std::to_string(200 * mib) + "\n");
    root.write("sys/fs/cgroup/memory/docker/abc/memory.stat",
               "inactive_file 1\ntotal_inactive_file " + std::to_string(50 * mib) + "\n");
    // docker/abc: 256 - (200 - 50) = 106 MiB; docker: 1024 - (700 - 300) = 624 MiB.
    CHECK(triad::detail::cgroup_memory_available(root.path()) == 106 * mib);
    CHECK(triad::detail::available_memory(root.path()) == 106 * mib);

    // The same limit in a v1 hierarchy that is not the memory controller's counts for nothing.
    fake_root cpu_only;
    cpu_only.write("proc/self/cgroup", "4:cpu,cpuacct:/docker/abc\n");
    cpu_only.write("proc/self/mountinfo",
                   "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n");
    cpu_only.write("sys/fs/cgroup/cpu,cpuacct/docker/abc/memory.limit_in_bytes", "1048576\n");
    CHECK_FALSE(triad::detail::cgroup_memory_available(cpu_only.path()).has_value());
}

TEST_CASE("available memory is the smaller of the cgroup's room and MemAvailable", "[cpu]") {
    fake_root root;
    root.write("proc/self/cgroup", "0::/job\n");
    root.write("proc/self/mountinfo", "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    root.write("proc/meminfo", "MemAvailable:     524288 kB\n"); // 512 MiB on the host
    root.write("sys/fs/cgroup/job/memory.max", std::to_string(4 * gib) + "\n");
    root.write("sys/fs/cgroup/job/memory.current", std::to_string(gib) + "\n");
    CHECK(triad::detail::cgroup_memory_available(root.path()) == 3 * gib);
    CHECK(triad::detail::available_memory(root.path()) == 512 * mib);

    // A limit without a readable usage still caps.
    fs::remove(fs::path(root.path()) / "sys/fs/cgroup/job/memory.current");
    root.write("sys/fs/cgroup/job/memory.max", std::to_string(256 * mib) + "\n");
    CHECK(triad::detail::available_memory(root.path()) == 256 * mib);
}

TEST_CASE("a MemAvailable too large for 64 bits of bytes means plenty, not none", "[cpu]") {
    fake_root root;
    root.write("proc/meminfo",
               "MemTotal: 36028797018963968 kB\nMemAvailable: 18014398509481984 kB\n");
    const auto available = triad::detail::available_memory(root.path());
    REQUIRE(available.has_value());
    CHECK(*available == std::numeric_limits<std::uint64_t>::max());
    CHECK(triad::detail::memory_bound_workers(8, available, 4 * gib) == 8);
}

TEST_CASE("after the main thread exits, the limits are read through /proc/thread-self", "[cpu]") {
    // What Linux shows once main() has called pthread_exit: the leader is a zombie, so
    // /proc/self/mountinfo cannot be read and /proc/self/cgroup names the root cgroup. The calling
    // thread still sees its mounts and cgroups through /proc/thread-self.
    fake_root root;
    root.write("proc/self/cgroup", "4:memory:/\n1:cpu:/\n0::/\n");
    root.write("proc/thread-self/cgroup", "4:memory:/job\n1:cpu:/job\n0::/\n");
    root.write("proc/thread-self/mountinfo",
               "31 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
               "34 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
    root.write("proc/meminfo", "MemAvailable:   16777216 kB\n");
    root.write("sys/fs/cgroup/memory/job/memory.limit_in_bytes", std::to_string(300 * mib));
    root.write("sys/fs/cgroup/memory/job/memory.usage_in_bytes", std::to_string(100 * mib));
    root.write("sys/fs/cgroup/cpu/job/cpu.cfs_quota_us", "150000\n");
    root.write("sys/fs/cgroup/cpu/job/cpu.cfs_period_us", "100000\n");
    CHECK(triad::detail::available_memory(root.path()) == 200 * mib);
    CHECK(triad::detail::cgroup_cpu_limit(root.path()) == 1.5);
}

TEST_CASE("no /proc at all: memory unknown, so only the CPUs bound the workers", "[cpu]") {
    fake_root empty;
    CHECK_FALSE(triad::detail::cgroup_memory_available(empty.path()).has_value());
    CHECK_FALSE(triad::detail::available_memory(empty.path()).has_value());
}

TEST_CASE("workers_for_memory on this machine: capped by the CPUs, at least one", "[cpu]") {
    ::setenv("TRIAD_CPU_COUNT", "3", 1);
    CHECK(triad::workers_for_memory(1) == 3);
    CHECK(triad::workers_for_memory(std::numeric_limits<std::size_t>::max()) == 1);
    ::setenv("TRIAD_CPU_COUNT", "64", 1);
    const auto available = triad::available_memory();
    REQUIRE(available.has_value()); // Linux has had MemAvailable since 3.14
    CHECK(*available > 0);
    // A quarter of what is free each: about four workers, give or take what others allocate
    // or free meanwhile.
    const std::size_t n = triad::workers_for_memory(static_cast<std::size_t>(*available / 4));
    CHECK(n >= 2);
    CHECK(n <= 8);
    ::unsetenv("TRIAD_CPU_COUNT");
}

namespace {

// Where this process could make a memory cgroup: its own memory cgroup (v1, or v2 when the
// memory controller is enabled for its children) and the hierarchy's root.
std::vector<std::pair<std::string, bool>> memory_cgroup_parents() {
    std::vector<std::pair<std::string, bool>> parents;
    triad::detail::for_each_cgroup_directory(
        "", "memory", [&](const std::string& dir, const std::string& top, bool v2) {
            for (const std::string& parent : {dir, top}) {
                if (v2) { // cgroup.subtree_control: "cpu io memory pids\n"
                    auto enabled =
                        triad::detail::read_small_file(parent + "/cgroup.subtree_control");
                    if (!enabled)
                        continue;
                    std::replace(enabled->begin(), enabled->end(), '\n', ' ');
                    const auto names = triad::detail::split(*enabled, ' ');
                    if (std::find(names.begin(), names.end(), "memory") == names.end())
                        continue;
                }
                parents.emplace_back(parent, v2);
            }
        });
    return parents;
}

bool write_file(const std::string& path, const std::string& text) {
    std::ofstream out(path);
    out << text;
    out.close();
    return static_cast<bool>(out);
}

} // namespace

TEST_CASE("workers_for_memory obeys a real cgroup memory limit set by a parent cgroup", "[cpu]") {
    // Makes a cgroup limited to 64 MiB with a child cgroup limited to 1 GiB, moves a forked
    // process into the child and asks there: the parent's limit must win. Needs root and a
    // writable memory controller (v1, or v2 with memory delegated): skipped otherwise.
    const std::string name = "triad-test-" + std::to_string(::getpid());
    std::string outer;
    std::string inner;
    for (const auto& [parent, v2] : memory_cgroup_parents()) {
        std::error_code error;
        const std::string dir = parent + "/" + name;
        if (!fs::create_directory(dir, error))
            continue;
        const std::string limit_file = v2 ? "/memory.max" : "/memory.limit_in_bytes";
        if (!fs::exists(dir + limit_file) || !write_file(dir + limit_file, "67108864") ||
            !fs::create_directory(dir + "/inner", error) ||
            !write_file(dir + "/inner" + limit_file, std::to_string(gib))) {
            fs::remove(dir + "/inner", error);
            fs::remove(dir, error);
            continue;
        }
        outer = dir;
        inner = dir + "/inner";
        break;
    }
    if (outer.empty()) {
        WARN("skipped: no memory cgroup could be made here (needs root and a writable memory "
             "controller)");
        return;
    }
    const std::string seen = in_child([&] {
        if (!write_file(inner + "/cgroup.procs", std::to_string(::getpid())))
            return std::string("could not join the cgroup");
        ::setenv("TRIAD_CPU_COUNT", "8", 1);
        const auto available = triad::available_memory();
        return std::to_string(available.value_or(0)) + " " +
               std::to_string(triad::workers_for_memory(16 * mib)) + " " +
               std::to_string(triad::workers_for_memory(mib)) + " " +
               std::to_string(triad::workers_for_memory(128 * mib));
    });
    std::error_code error;
    fs::remove(inner, error); // the child has exited, so both cgroups are empty
    fs::remove(outer, error);
    CHECK_FALSE(fs::exists(outer));
    if (seen == "could not join the cgroup") { // e.g. a v2 delegation boundary in the way
        WARN("skipped: a process could not be moved into " << inner);
        return;
    }
    INFO("the child saw: " << seen);
    std::istringstream fields(seen);
    std::uint64_t available = 0;
    std::size_t sixteen = 0, one = 0, big = 0;
    REQUIRE(fields >> available >> sixteen >> one >> big);
    CHECK(available <= 64 * mib);
    CHECK(available > 32 * mib); // a forked child has charged only a few pages
    CHECK(sixteen >= 2);
    CHECK(sixteen <= 4);
    CHECK(one == 8); // the CPUs bind
    CHECK(big == 1); // nothing fits: still one worker
}

} // namespace triad_test_cpu
