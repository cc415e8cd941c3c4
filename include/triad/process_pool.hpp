#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <triad/cpu.hpp>
#include <triad/detail/process_manager.hpp>
#include <triad/detail/progress.hpp>
#include <triad/detail/remote.hpp>
#include <triad/errors.hpp>
#include <triad/future.hpp>
#include <triad/pool_options.hpp>
#include <triad/serialize.hpp>

namespace triad {

/**
 * What runs once in each worker process before it takes tasks: any callable taking the
 * worker's slot index. A function, or a lambda without captures, can also be used by pools
 * whose workers come from the process-wide fork server (`triad::fork_server_guard`); state
 * captured by anything else exists only in this process's memory as it is now.
 */
class process_initializer {
public:
    process_initializer() noexcept = default;
    template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, process_initializer> &&
             std::is_invocable_v<std::decay_t<F>&, std::size_t>)
        process_initializer(F&& f) // NOLINT: implicit, like std::function
        : m_call(std::forward<F>(f)) {
        // A function pointer, or a stateless lambda: moving it into m_call left it intact.
        if constexpr (std::is_convertible_v<std::decay_t<F>, void (*)(std::size_t)>)
            m_function = static_cast<void (*)(std::size_t)>(f);
    }

    explicit operator bool() const noexcept { return static_cast<bool>(m_call); }
    void operator()(std::size_t worker_index) const { m_call(worker_index); }
    /** The function it calls, where it is a plain function (or a lambda without captures). */
    void (*function() const noexcept)(std::size_t) { return m_function; }
    const std::function<void(std::size_t)>& callable() const noexcept { return m_call; }

private:
    std::function<void(std::size_t)> m_call;
    void (*m_function)(std::size_t) = nullptr;
};

/** How a `triad::process_pool` is built; every field has a sensible default. */
struct process_pool_options {
    /** Worker processes; unset means `triad::cpu_count()`. Zero throws `std::invalid_argument`. */
    std::optional<std::size_t> processes{};
    /**
     * Runs once in each worker process, with its slot index, before it takes any task (also in
     * replacements). It may capture anything: workers are forks of this process as it is when
     * the pool is built. If it throws at start-up the constructor throws
     * `triad::initializer_error`; if it throws in a replacement, the pool breaks.
     */
    process_initializer initializer{};
    /** Replace a worker after it ran this many tasks (a chunk of `map` is one); 0: never. */
    std::size_t max_tasks_per_child = 0;
    /**
     * A task (or a chunk of `map`) running longer than this has its worker killed and
     * replaced, and its future throws `triad::task_timeout`. Unset: no limit.
     */
    std::optional<std::chrono::nanoseconds> task_timeout{};
    /**
     * Largest message either way; a bigger one is a `triad::protocol_error`. At least 1 KiB, at
     * most 1 TiB (else `std::invalid_argument`).
     */
    std::uint64_t max_message_size = std::uint64_t{4} << 30;
    /**
     * How deep user types may nest in a message (a tree of nodes); deeper is a
     * `triad::protocol_error` for the task, so no message can exhaust a stack.
     */
    std::size_t max_nesting = default_max_nesting;
    /** Worker processes are named `<prefix>-<index>` (shortened to fit 15 characters). */
    std::string name_prefix = "triad-proc";
    /**
     * Fork this pool's workers from the process-wide fork server when one was started
     * (`triad::fork_server_guard`); false: from a server of its own, forked from this process
     * as it is now (its memory, and any lock another thread holds).
     */
    bool use_fork_server_guard = true;
};

/** How one task submitted to a `triad::process_pool` runs. */
struct task_options {
    /**
     * Kill the task's worker if the task runs longer than this; its future throws
     * `triad::task_timeout`. Unset: the pool's `task_timeout`. Must be positive.
     */
    std::optional<std::chrono::nanoseconds> timeout{};
};

template <class R>
class imap_range;

namespace detail {
// map, starmap and imap over any pool that sends chunks of items to workers and gets back a
// future<chunk_result<R>> per chunk: the process pool and the MPI pool. A Pool provides size(),
// map_chunk_size(items, options), chunk_timeout_ns(options), items_done(task) and
// send_chunk<F, Item, Spread>(fn, first, count, timeout_ns, task_id*).
struct pool_maps {
    template <bool Spread, class Pool, class Fn, class Items>
    static auto map(Pool& pool, Fn&& fn, Items&& items, map_options options);
    template <bool Ordered, class Pool, class Fn, class Items>
    static auto imap(Pool& pool, Fn&& fn, Items&& items, map_options options);
};
} // namespace detail

/**
 * A pool of worker processes built on fork() and pipes: Python's `multiprocessing.Pool` and
 * `ProcessPoolExecutor`, returning the same `triad::future<T>` as the thread pool.
 *
 * Pick processes over threads to isolate work: code that is not thread-safe, that may crash,
 * leak or hang, or memory you want back afterwards. A task that throws fails its future with
 * `triad::remote_error`; a worker that dies (segfault, abort, `_exit`, SIGKILL) fails only the
 * task it was running (`triad::worker_died`) and is replaced while every other task goes on.
 * When this process dies, even by SIGKILL, the workers exit too.
 *
 * What can be sent: the callable must be a function, a lambda without captures or a stateless
 * function object (workers are forks, so they have the same code at the same address); the
 * arguments and result must be `triad::serializable`. Anything else is a compile-time error
 * that says what to do instead.
 *
 * Workers are forked from a single-threaded fork server made when the pool is built, so
 * threads started later never leave a held lock in a worker. Build pools early: the workers
 * see this process's memory as it was then (copy-on-write), and its open files are closed in
 * them (stdin, stdout and stderr stay).
 *
 * @par Thread Safety
 * Every member may be called from any thread. Continuations of its futures (`on_ready`,
 * `then`) run on the pool's I/O thread: keep them short.
 *
 * @code
 * triad::process_pool pool;                            // triad::cpu_count() processes
 * std::vector<bool> primes = pool.map(is_prime, numbers);
 * triad::future<long> f = pool.submit(count_words, path);
 * @endcode
 */
class process_pool {
public:
    /** `triad::cpu_count()` worker processes. */
    process_pool() : process_pool(process_pool_options{}) {}
    /** `processes` workers; 0 throws `std::invalid_argument`. */
    explicit process_pool(std::size_t processes)
        : process_pool(process_pool_options{.processes = processes}) {}
    explicit process_pool(process_pool_options options);

    /** Drains the queue (like `shutdown()`), then ends and reaps every process. */
    ~process_pool() = default;
    process_pool(const process_pool&) = delete;
    process_pool& operator=(const process_pool&) = delete;

    /** The number of worker processes. */
    std::size_t size() const noexcept { return m_manager.size(); }

    /**
     * Runs `fn(args...)` in a worker process; the future holds its result, or throws
     * `triad::remote_error` (the task threw), `triad::worker_died`, `triad::task_timeout` or
     * `triad::task_cancelled`. Throws `triad::pool_closed` after `shutdown()`.
     */
    template <class Fn, class... Args>
    requires(!std::is_same_v<std::remove_cvref_t<Fn>, task_options>)
        [[nodiscard]] auto submit(Fn&& fn, const Args&... args)
            -> future<detail::submit_result_t<Fn, Args...>>;

    /** `submit` with per-task options: `pool.submit({.timeout = 2s}, fn, args...)`. */
    template <class Fn, class... Args>
    [[nodiscard]] auto submit(const task_options& options, Fn&& fn, const Args&... args)
        -> future<detail::submit_result_t<Fn, Args...>>;

    /**
     * `fn(item)` for every item, results in input order, in chunks (about four per worker
     * unless `options.chunk_size` says otherwise). Blocks; if items threw, rethrows the first
     * failing item's error as `triad::remote_error` after every chunk finished.
     */
    template <class Fn, std::ranges::input_range Items>
    auto map(Fn&& fn, Items&& items, map_options options = {});

    /** Like `map`, with each item a tuple unpacked into the arguments (Python's `starmap`). */
    template <class Fn, std::ranges::input_range Items>
    auto starmap(Fn&& fn, Items&& items, map_options options = {});

    /**
     * A lazy range of `fn(item)` in input order. Items are read and sent as results are
     * consumed, with at most two chunks per worker in flight, so memory stays bounded however
     * long the input. Dereferencing an item that failed throws its error; iteration goes on.
     * The input range must outlive the iteration if passed as an lvalue (rvalues are kept).
     */
    template <class Fn, std::ranges::input_range Items>
    auto imap(Fn&& fn, Items&& items, map_options options = {});

    /** As `imap`, but results come in the order they finish. */
    template <class Fn, std::ranges::input_range Items>
    auto imap_unordered(Fn&& fn, Items&& items, map_options options = {});

    /** Blocks until nothing is queued or running. The pool stays usable. */
    void wait_idle() { m_manager.wait_idle(); }

    /**
     * Stops taking work (then `submit` throws `triad::pool_closed`), finishes or cancels what
     * is queued, ends the workers and reaps them. With `cancel`, tasks not yet started never
     * start and their futures throw `triad::task_cancelled`. Idempotent.
     */
    void shutdown(shutdown_mode mode = shutdown_mode::drain) {
        m_manager.shutdown(mode == shutdown_mode::cancel);
    }

    /**
     * Stops now (Python's `Pool.terminate()`): running tasks have their workers killed and
     * their futures throw `triad::task_cancelled`, queued ones are cancelled, and every process
     * is reaped before it returns. Idempotent; any thread may call it, also during a
     * `shutdown()` that waits for a hung task, which it then ends.
     */
    void terminate() { m_manager.terminate(); }

    /** True once `shutdown()` began, or the pool broke (a failed initializer, a lost fork server).
     */
    bool closed() const noexcept { return m_manager.closed(); }

    /** Tasks waiting (a chunk of `map` counts as one). A snapshot. */
    std::uint64_t queued() const { return m_manager.queued(); }
    /** Tasks running in a worker now. A snapshot. */
    std::uint64_t running() const noexcept { return m_manager.running(); }
    /** Tasks that finished, with a result or an exception. */
    std::uint64_t completed() const noexcept { return m_manager.completed(); }
    /**
     * Tasks dropped unrun: by `future::cancel()` (counted when the pool reaches the task),
     * `shutdown(shutdown_mode::cancel)` or `terminate()`.
     */
    std::uint64_t cancelled() const noexcept { return m_manager.cancelled(); }
    /** Workers replaced after a crash or a timeout. */
    std::uint64_t workers_replaced() const noexcept { return m_manager.workers_replaced(); }
    /** Workers replaced after `max_tasks_per_child` tasks. */
    std::uint64_t workers_recycled() const noexcept { return m_manager.workers_recycled(); }
    /** The process ids of the workers that are up now. */
    std::vector<pid_t> worker_pids() const { return m_manager.worker_pids(); }

private:
    friend struct detail::pool_maps;

    template <class R, class Call, class Encode>
    future<R> send(std::uintptr_t function, std::int64_t timeout_ns, Encode&& encode_arguments,
                   std::uint64_t* task_id = nullptr);

    std::int64_t timeout_ns(const std::optional<std::chrono::nanoseconds>& timeout) const {
        if (!timeout)
            return m_manager.default_timeout_ns();
        if (*timeout <= std::chrono::nanoseconds::zero())
            throw std::invalid_argument("triad::process_pool: a timeout must be positive");
        return timeout->count();
    }

    template <class F, class Item, bool Spread, class It>
    auto send_chunk(const F& fn, It first, std::size_t count, std::int64_t timeout_ns,
                    std::uint64_t* task_id = nullptr);

    // A map chunk's timeout: per item if the map has one (negative), else the pool's.
    std::int64_t chunk_timeout_ns(const map_options& options) const {
        if (!options.item_timeout)
            return m_manager.default_timeout_ns();
        return -timeout_ns(options.item_timeout);
    }

    std::uint64_t items_done(std::uint64_t task) const noexcept {
        return m_manager.items_done(task);
    }

    std::size_t map_chunk_size(std::size_t items, const map_options& options) const noexcept {
        if (options.chunk_size != 0)
            return options.chunk_size;
        const std::size_t chunks = std::max<std::size_t>(1, size() * 4);
        return std::max<std::size_t>(1, (items + chunks - 1) / chunks);
    }

    static detail::process_manager_config to_config(process_pool_options&& options);

    detail::process_manager m_manager;
};

// ---------------------------------------------------------------------------------------------
// The lazy result range of imap / imap_unordered

/**
 * The range `imap` and `imap_unordered` return: an input range of `R`. Move-only; destroying
 * it early is fine (chunks in flight finish in the workers and are dropped).
 */
template <class R>
class imap_range {
public:
    class iterator {
    public:
        using value_type = R;
        using difference_type = std::ptrdiff_t;

        iterator() = default;
        /** The current result; throws `triad::remote_error` (or the chunk's error) if it failed. */
        R& operator*() const { return m_range->current(); }
        R* operator->() const { return &m_range->current(); }
        iterator& operator++() {
            m_range->advance();
            return *this;
        }
        void operator++(int) { m_range->advance(); }
        friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.done(); }

    private:
        friend class imap_range;
        explicit iterator(imap_range* range) : m_range(range) {}
        bool done() const { return m_range->at_end(); }
        imap_range* m_range = nullptr;
    };
    friend class iterator;

    imap_range(imap_range&&) noexcept = default;
    imap_range& operator=(imap_range&&) noexcept = default;

    /** Starts consuming (blocks until the first result). Call once. */
    iterator begin() {
        m_state->fill();
        m_state->next_chunk();
        return iterator(this);
    }
    std::default_sentinel_t end() const noexcept { return {}; }

private:
    friend struct detail::pool_maps;
    using chunk = detail::chunk_result<R>;

    // Results of finished chunks, handed from the pool's I/O thread to the consumer.
    struct ready_queue {
        std::mutex mutex;
        std::condition_variable changed;
        std::deque<std::size_t> finished; // chunk numbers
    };

    struct in_flight {
        std::size_t number;
        std::size_t count;
        future<chunk> result;
    };

    struct state {
        // Sends the next chunk and returns its future and size; nothing when the input is done.
        std::function<std::optional<std::pair<future<chunk>, std::size_t>>()> send_next;
        bool ordered = true;
        std::size_t max_in_flight = 2;
        std::deque<in_flight> flying;
        std::shared_ptr<ready_queue> ready = std::make_shared<ready_queue>();
        std::size_t next_number = 0;
        bool input_done = false;
        // The chunk being consumed. Not std::vector<bool>, whose elements cannot be referenced.
        std::conditional_t<std::is_same_v<R, bool>, std::deque<bool>, std::vector<R>> values;
        std::vector<std::exception_ptr> errors; // per item, null where it succeeded
        std::size_t position = 0;
        bool finished = false;
        std::unique_ptr<detail::progress_meter> meter;

        void fill() {
            while (!input_done && flying.size() < max_in_flight) {
                auto sent = send_next();
                if (!sent) {
                    input_done = true;
                    break;
                }
                const std::size_t number = next_number++;
                if (!ordered) {
                    sent->first.on_ready([queue = ready, number] {
                        std::lock_guard lock(queue->mutex);
                        queue->finished.push_back(number);
                        queue->changed.notify_one();
                    });
                }
                flying.push_back({number, sent->second, std::move(sent->first)});
            }
        }

        // Makes the next finished chunk current; false when everything was consumed.
        bool next_chunk() {
            for (;;) {
                fill();
                if (flying.empty()) {
                    finished = true;
                    return false;
                }
                auto it = flying.begin();
                if (!ordered) {
                    std::unique_lock lock(ready->mutex);
                    ready->changed.wait(lock, [&] { return !ready->finished.empty(); });
                    const std::size_t number = ready->finished.front();
                    ready->finished.pop_front();
                    it = std::find_if(flying.begin(), flying.end(),
                                      [number](const in_flight& f) { return f.number == number; });
                }
                in_flight done = std::move(*it);
                flying.erase(it);
                values.clear();
                errors.assign(done.count, nullptr);
                position = 0;
                try {
                    chunk result = done.result.get();
                    if constexpr (std::is_same_v<R, bool>)
                        values.assign(result.first.begin(), result.first.end());
                    else
                        values = std::move(result.first);
                    for (const auto& [index, failure] : result.second)
                        if (index < errors.size())
                            errors[index] = std::make_exception_ptr(
                                remote_error(failure.type_name, failure.message));
                } catch (...) {
                    // The whole chunk failed (its worker died, it timed out): every item in it
                    // reports that.
                    values.assign(done.count, R{});
                    errors.assign(done.count, std::current_exception());
                }
                if (values.size() != done.count)
                    throw protocol_error("triad: a map chunk came back with the wrong length");
                fill();
                if (done.count != 0)
                    return true;
            }
        }
    };

    explicit imap_range(std::unique_ptr<state> s) : m_state(std::move(s)) {}

    R& current() const {
        // Past the end, or after an error from the input range left no current item.
        if (m_state->finished || m_state->position >= m_state->values.size())
            throw std::out_of_range("triad::imap_range: dereferenced past the end");
        if (const auto& error = m_state->errors[m_state->position])
            std::rethrow_exception(error);
        return m_state->values[m_state->position];
    }
    void advance() {
        if (m_state->finished)
            return;
        if (m_state->meter) {
            m_state->meter->add(1);
            m_state->meter->tick();
        }
        if (++m_state->position >= m_state->values.size() && !m_state->next_chunk() &&
            m_state->meter)
            m_state->meter->finish(); // the final line, ended, when the last item is consumed
    }
    bool at_end() const noexcept { return m_state->finished; }

    std::unique_ptr<state> m_state;
};

// ---------------------------------------------------------------------------------------------
// Definitions

inline detail::process_manager_config process_pool::to_config(process_pool_options&& options) {
    detail::process_manager_config config;
    config.processes = options.processes ? *options.processes : cpu_count();
    config.initializer_address = reinterpret_cast<std::uintptr_t>(options.initializer.function());
    config.initializer = options.initializer.callable();
    if (options.use_fork_server_guard)
        config.zygote = detail::zygote_connection::current();
    config.max_tasks_per_child = options.max_tasks_per_child;
    config.task_timeout = options.task_timeout;
    config.max_message_size = options.max_message_size;
    config.max_nesting = options.max_nesting;
    config.name_prefix = std::move(options.name_prefix);
    if (config.task_timeout && *config.task_timeout <= std::chrono::nanoseconds::zero())
        throw std::invalid_argument("triad::process_pool: task_timeout must be positive");
    return config;
}

inline process_pool::process_pool(process_pool_options options)
    : m_manager(to_config(std::move(options))) {}

template <class R, class Call, class Encode>
future<R> process_pool::send(std::uintptr_t function, std::int64_t timeout_ns,
                             Encode&& encode_arguments, std::uint64_t* task_id) {
    auto task = std::make_unique<detail::remote_future_task<R>>(m_manager.next_task_id());
    if (task_id != nullptr)
        *task_id = task->id();
    std::vector<char>& frame = task->frame();
    detail::build_task_frame(frame, task->id(), Call::id, function, timeout_ns,
                             std::forward<Encode>(encode_arguments));
    if (frame.size() - sizeof(detail::frame_header) > m_manager.max_message_size())
        throw protocol_error(detail::concat("triad::process_pool: the arguments encode to ",
                                            frame.size(), " bytes, over max_message_size (",
                                            m_manager.max_message_size(), ")"));
    future<R> result = detail::future_access::make<R>(task.get());
    m_manager.enqueue(task.release()); // on refusal it fails the task, then throws
    return result;
}

template <class Fn, class... Args>
requires(!std::is_same_v<std::remove_cvref_t<Fn>, task_options>) auto process_pool::submit(
    Fn&& fn, const Args&... args) -> future<detail::submit_result_t<Fn, Args...>> {
    return submit(task_options{}, std::forward<Fn>(fn), args...);
}

template <class Fn, class... Args>
auto process_pool::submit(const task_options& options, Fn&& fn, const Args&... args)
    -> future<detail::submit_result_t<Fn, Args...>> {
    using F = std::decay_t<Fn>;
    if constexpr (!detail::submit_is_valid<F, std::decay_t<Args>...>()) {
        // One static_assert naming the type; instantiating the rest for it would only add
        // errors that bury that one.
        detail::refuse_submit<F, std::decay_t<Args>...>();
        return {};
    } else {
        using R = detail::submit_result_t<Fn, Args...>;
        using call = detail::remote_call<F, std::decay_t<Args>...>;
        return send<R, call>(
            detail::callable_address(F(fn)), timeout_ns(options.timeout),
            [&](detail::byte_writer& writer) {
                (detail::encode_value(writer, static_cast<const std::decay_t<Args>&>(args)), ...);
            });
    }
}

template <class F, class Item, bool Spread, class It>
auto process_pool::send_chunk(const F& fn, It first, std::size_t count, std::int64_t timeout_ns,
                              std::uint64_t* task_id) {
    using call = detail::remote_chunk<F, Item, Spread>;
    using R = typename call::result_type;
    return send<detail::chunk_result<R>, call>(
        detail::callable_address(fn), timeout_ns,
        [&](detail::byte_writer& writer) { detail::encode_sequence(writer, first, count); },
        task_id);
}

namespace detail {

template <bool Spread, class Pool, class Fn, class Items>
auto pool_maps::map(Pool& pool, Fn&& fn, Items&& items, map_options options) {
    using F = std::decay_t<Fn>;
    using Item = std::ranges::range_value_t<Items>;
    using R = detail::map_result_t<F, Item, Spread>;
    if constexpr (!detail::map_is_valid<F, Item, Spread>()) {
        detail::refuse_map<F, Item, Spread>(); // as submit does
        return std::vector<R>{};
    } else if constexpr (!(std::ranges::random_access_range<Items> &&
                           std::ranges::sized_range<Items>)) {
        std::vector<Item> copied(std::ranges::begin(items), std::ranges::end(items));
        return map<Spread>(pool, std::forward<Fn>(fn), copied, options);
    } else {
        const F callable(fn);
        const std::size_t n = static_cast<std::size_t>(std::ranges::size(items));
        const std::size_t chunk = pool.map_chunk_size(n, options);
        const std::int64_t timeout = pool.chunk_timeout_ns(options);
        detail::progress_meter meter(options.progress, n);
        struct sent_chunk {
            future<detail::chunk_result<R>> result;
            std::size_t count;
            std::uint64_t task;
        };
        std::vector<sent_chunk> chunks;
        chunks.reserve((n + chunk - 1) / chunk);
        std::exception_ptr error;
        auto first = std::ranges::begin(items);
        for (std::size_t begin = 0; begin < n; begin += chunk) {
            const std::size_t count = std::min(chunk, n - begin);
            try {
                std::uint64_t task = 0;
                auto result = pool.template send_chunk<F, Item, Spread>(
                    callable, first + static_cast<std::ranges::range_difference_t<Items>>(begin),
                    count, timeout, &task);
                chunks.push_back({std::move(result), count, task});
            } catch (...) {
                error = std::current_exception(); // stop sending; wait for what was sent
                break;
            }
        }
        // The bar counts items: those of finished chunks, and those the workers report done
        // within the chunks they are running.
        const auto show_progress = [&](std::size_t from) {
            std::size_t under_way = 0;
            for (std::size_t i = from; i < chunks.size(); ++i)
                under_way += chunks[i].result.ready()
                                 ? chunks[i].count
                                 : static_cast<std::size_t>(pool.items_done(chunks[i].task));
            meter.set_partial(under_way);
            meter.tick();
        };
        std::vector<R> results;
        results.reserve(n);
        std::size_t first_failure = n;
        std::size_t offset = 0;
        for (std::size_t i = 0; i < chunks.size(); ++i) {
            auto& [result, count, task] = chunks[i];
            if (meter.enabled())
                while (result.wait_for(std::chrono::milliseconds(100)) ==
                       std::future_status::timeout)
                    show_progress(i);
            try {
                auto [values, failures] = result.get();
                if (values.size() != count)
                    throw protocol_error("triad: a map chunk came back with the wrong length");
                if (!error && !failures.empty() &&
                    offset + failures.front().first < first_failure) {
                    first_failure = offset + failures.front().first;
                    error = std::make_exception_ptr(remote_error(failures.front().second.type_name,
                                                                 failures.front().second.message));
                }
                results.insert(results.end(), std::make_move_iterator(values.begin()),
                               std::make_move_iterator(values.end()));
            } catch (const task_timeout& e) {
                // The worker counts items within its chunk; say where the chunk starts.
                if (!error)
                    error = std::make_exception_ptr(task_timeout(detail::concat(
                        e.what(), " (the chunk starts at input item ", offset, ")")));
            } catch (...) {
                if (!error)
                    error = std::current_exception();
            }
            offset += count;
            meter.add(count);
        }
        meter.finish(!error); // the final line, ended, before map returns
        if (error)
            std::rethrow_exception(error);
        return results;
    }
}

template <bool Ordered, class Pool, class Fn, class Items>
auto pool_maps::imap(Pool& pool, Fn&& fn, Items&& items, map_options options) {
    using F = std::decay_t<Fn>;
    using Item = std::ranges::range_value_t<Items>;
    using R = detail::map_result_t<F, Item, false>;
    using range_type = imap_range<R>;
    if constexpr (!detail::map_is_valid<F, Item, false>()) {
        detail::refuse_map<F, Item, false>(); // as submit does
        return range_type(nullptr);
    } else {
        // Rvalue inputs are kept alive by the range; lvalue inputs are referenced.
        using held = std::conditional_t<std::is_lvalue_reference_v<Items>, Items,
                                        std::remove_cvref_t<Items>>;
        struct source {
            held items;
            std::ranges::iterator_t<std::remove_reference_t<held>> next;
            explicit source(Items&& in)
                : items(std::forward<Items>(in)), next(std::ranges::begin(items)) {}
        };

        std::size_t chunk = options.chunk_size;
        std::size_t total = 0;
        if constexpr (std::ranges::sized_range<Items>) {
            total = static_cast<std::size_t>(std::ranges::size(items));
            if (chunk == 0)
                chunk = std::clamp<std::size_t>(pool.map_chunk_size(total, options), 1, 256);
        } else if (chunk == 0) {
            chunk = 16;
        }
        auto input = std::make_shared<source>(std::forward<Items>(items));
        auto s = std::make_unique<typename range_type::state>();
        s->ordered = Ordered;
        s->max_in_flight = 2 * pool.size();
        if constexpr (std::ranges::sized_range<Items>)
            if (options.progress != progress_bar::off)
                s->meter = std::make_unique<detail::progress_meter>(options.progress, total);
        const F callable(fn);
        const std::int64_t timeout = pool.chunk_timeout_ns(options);
        s->send_next =
            [&pool, input, chunk, callable,
             timeout]() -> std::optional<std::pair<future<detail::chunk_result<R>>, std::size_t>> {
            // Pull the next chunk of items from the input; only it is ever held here.
            std::vector<Item> batch;
            const auto end = std::ranges::end(input->items);
            while (batch.size() < chunk && input->next != end) {
                batch.push_back(*input->next);
                ++input->next;
            }
            if (batch.empty())
                return std::nullopt;
            const std::size_t count = batch.size();
            return std::pair{
                pool.template send_chunk<F, Item, false>(callable, batch.begin(), count, timeout),
                count};
        };
        // Sending starts now, as Python's imap does, not when iteration begins.
        s->fill();
        return range_type(std::move(s));
    }
}

} // namespace detail

template <class Fn, std::ranges::input_range Items>
auto process_pool::map(Fn&& fn, Items&& items, map_options options) {
    return detail::pool_maps::map<false>(*this, std::forward<Fn>(fn), std::forward<Items>(items),
                                         options);
}

template <class Fn, std::ranges::input_range Items>
auto process_pool::starmap(Fn&& fn, Items&& items, map_options options) {
    return detail::pool_maps::map<true>(*this, std::forward<Fn>(fn), std::forward<Items>(items),
                                        options);
}

template <class Fn, std::ranges::input_range Items>
auto process_pool::imap(Fn&& fn, Items&& items, map_options options) {
    return detail::pool_maps::imap<true>(*this, std::forward<Fn>(fn), std::forward<Items>(items),
                                         options);
}

template <class Fn, std::ranges::input_range Items>
auto process_pool::imap_unordered(Fn&& fn, Items&& items, map_options options) {
    return detail::pool_maps::imap<false>(*this, std::forward<Fn>(fn), std::forward<Items>(items),
                                          options);
}

} // namespace triad
