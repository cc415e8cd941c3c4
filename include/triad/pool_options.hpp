#pragma once

#include <chrono>
#include <cstddef>
#include <optional>

/// Options shared by every triad pool.
namespace triad {

/** Whether a long `map` or `imap` draws a progress line (count, total, rate, ETA) on stderr. */
enum class progress_bar {
    off,      ///< never (the default)
    terminal, ///< only when stderr is a terminal, like tqdm
    always,   ///< even into a file or pipe
};

/** Options for `map`, `for_each`, `parallel_for`, `starmap` and `imap`. */
struct map_options {
    /**
     * Items per task. 0 (the default) picks for you: the thread pool's workers take guided
     * shares of what is left (large first, down to one item at the end); the process pool sends
     * about four chunks per worker, as Python's `Pool.map` does.
     */
    std::size_t chunk_size = 0;
    /** Draws a progress line on stderr while the call runs. */
    progress_bar progress = progress_bar::off;
    /**
     * Process pools only: an item running longer than this has its worker killed, and the map
     * throws `triad::task_timeout` naming the item (each item gets the whole limit, however
     * the items are chunked). Unset: the pool's `task_timeout`, if any, limits each chunk. A
     * thread cannot be killed, so the thread pool refuses it (`std::invalid_argument`).
     */
    std::optional<std::chrono::nanoseconds> item_timeout{};
};

/** `drain` runs everything queued before stopping; `cancel` drops it (its futures throw
 * `triad::task_cancelled`). */
enum class shutdown_mode { drain, cancel };

} // namespace triad
