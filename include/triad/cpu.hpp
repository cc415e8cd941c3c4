#pragma once

#include <cstddef>
#include <cstdint>
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

/**
 * The bytes of memory this process may still allocate: the room under its cgroup memory limits
 * (v2 `memory.max` minus `memory.current`, v1 `memory.limit_in_bytes` minus
 * `memory.usage_in_bytes`, at every level up the hierarchy, the tightest winning: what
 * `docker --memory` sets) or the host's `MemAvailable` from /proc/meminfo, whichever is
 * smaller. Inactive file cache is counted as available, in the cgroup as in `MemAvailable`: the
 * kernel drops it before it fails an allocation. Empty if neither can be read (no /proc).
 *
 * @par Thread Safety
 * Safe; it reads the kernel's view each time it is called. It is a snapshot: other processes
 * allocate and free meanwhile.
 */
inline std::optional<std::uint64_t> available_memory() {
    return detail::available_memory();
}

/**
 * How many workers to run when each needs `bytes_per_worker` bytes: `cpu_count()`, capped by
 * `available_memory() / bytes_per_worker` (the Python course's "16 GB of RAM and each process
 * may use 4 GB: at most 4 processes", with the numbers read from the machine and its cgroup).
 *
 * Always at least 1, even when not one worker fits: a pool needs a worker, the work needs the
 * same memory if it runs in this thread instead, and the figure is a snapshot that counts neither
 * swap nor what other processes are about to free, so throwing would turn a pessimistic
 * estimate into a failure. A caller that must refuse compares `available_memory()` with its
 * need itself. If memory cannot be read, the answer is `cpu_count()`.
 *
 * Throws `std::invalid_argument` if `bytes_per_worker` is 0, and whatever `cpu_count()`
 * throws (a malformed `TRIAD_CPU_COUNT`).
 *
 * @par Thread Safety
 * Safe; it reads the kernel's view each time it is called.
 *
 * @code
 * triad::process_pool pool(triad::workers_for_memory(4ull << 30)); // each task may use 4 GiB
 * @endcode
 */
inline std::size_t workers_for_memory(std::size_t bytes_per_worker) {
    if (bytes_per_worker == 0)
        throw std::invalid_argument("triad::workers_for_memory: bytes_per_worker is 0; pass "
                                    "what one worker needs at its peak, in bytes");
    return detail::memory_bound_workers(cpu_count(), detail::available_memory(), bytes_per_worker);
}

} // namespace triad
