#pragma once

#include <cstddef>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include <triad/detail/cgroup.hpp>
#include <triad/detail/text.hpp>

namespace triad {

/**
 * The number of CPUs this process may really keep busy: the CPUs in its affinity mask (taskset,
 * cpusets), capped by its cgroup CPU quota (v1 `cpu.cfs_quota_us` or v2 `cpu.max`, the limit a
 * container runtime sets with `--cpus`), rounded up. `std::thread::hardware_concurrency()` and
 * Python's `os.cpu_count()` ignore both and oversubscribe a container.
 *
 * The environment variable `TRIAD_CPU_COUNT`, if set, overrides the answer (for benchmarks and
 * tests); it must be a positive integer or this throws `std::invalid_argument`. Always at least 1.
 * Every triad pool uses this as its default size.
 *
 * @par Thread Safety
 * Safe; it reads the kernel's view each time it is called.
 */
inline std::size_t cpu_count() {
    if (const char* forced = std::getenv("TRIAD_CPU_COUNT"); forced != nullptr && *forced != '\0') {
        const auto value = detail::parse_integer(forced);
        if (!value || *value <= 0)
            throw std::invalid_argument(detail::concat("triad::cpu_count: TRIAD_CPU_COUNT=\"",
                                                       forced, "\" is not a positive integer"));
        return static_cast<std::size_t>(*value);
    }
    std::size_t affinity = detail::affinity_cpu_count();
    if (affinity == 0)
        affinity = std::thread::hardware_concurrency();
    return detail::effective_cpu_count(affinity, detail::cgroup_cpu_limit());
}

} // namespace triad
