#include <triad/cpu.hpp>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <sched.h>

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

TEST_CASE("a cgroup v1 CFS quota caps the count; no quota means no cap", "[cpu]") {
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
