#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

// Only MPI's C interface: its deprecated C++ bindings do not compile warning-free.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <triad/detail/mpi.hpp>
#include <triad/detail/remote.hpp>
#include <triad/errors.hpp>
#include <triad/future.hpp>
#include <triad/pool_options.hpp>
#include <triad/process_pool.hpp>
#include <triad/serialize.hpp>

namespace triad {

/** How a `triad::mpi_pool` runs; every field has a sensible default. */
struct mpi_pool_options {
    /**
     * Tasks rank 0 keeps in flight on each worker rank. Unset: sized from how long the rank's
     * tasks take (enough to cover ~200 us of work, one for tasks over 2 ms), so short tasks
     * stream and long ones are handed out only to ranks that are free.
     */
    std::optional<std::size_t> max_in_flight_per_rank{};
    /** Largest message either way; a bigger one is a `triad::protocol_error` for its task. At
     * least 1 KiB, under 2 GiB (MPI counts are `int`), else `std::invalid_argument`. */
    std::uint64_t max_message_size = std::uint64_t{1} << 30;
    /** How deep user types may nest in a message; deeper is a `triad::protocol_error`. */
    std::size_t max_nesting = default_max_nesting;
    /**
     * How long a rank waits in `mpi_main`'s start-up (`MPI_Init_thread`, then the pool's
     * collective calls) for every other rank to join. A rank that runs another program, or
     * never reaches `mpi_main`, would otherwise hold the job up for ever (neither can be called
     * off); past this, the rank says so on stderr and exits with code 1, which ends the job.
     * Worker ranks wait 5 s longer, and 5 s more for each rank before them (up to 35 s in all),
     * so that one rank, rank 0 if it can, is the one to say it. Where the program started MPI
     * itself, the time counts from `mpi_main`. Zero or less: wait for ever (a program whose
     * ranks do long, uneven work before `mpi_main`).
     */
    std::chrono::milliseconds startup_timeout = std::chrono::minutes(5);
};

class mpi_pool;

template <class Main>
int mpi_main(int& argc, char**& argv, Main&& main, mpi_pool_options options = {});

/**
 * The process pool's interface over the ranks of an MPI job: Python's
 * `mpi4py.futures.MPIPoolExecutor`. Rank 0 drives; ranks 1..N-1 run its tasks. It is made only
 * by `triad::mpi_main`, which runs the worker loop on every other rank, so one `main` serves
 * both roles:
 *
 * @code
 * int main(int argc, char** argv) {
 *     return triad::mpi_main(argc, argv, [&](triad::mpi_pool& pool) {
 *         std::vector<bool> primes = pool.map(is_prime, numbers);   // on ranks 1..N-1
 *         return 0;
 *     });
 * }
 * // mpirun -np 8 ./app
 * @endcode
 *
 * What can be sent is what `triad::process_pool` sends, with the same compile-time errors: a
 * function, a lambda without captures or a stateless function object, with
 * `triad::serializable` arguments and result. Ranks are separate executions of one binary, so
 * a function is named by its offset in the executable (a function of a shared library is
 * refused with `std::invalid_argument`), and `mpi_main` refuses to start unless every rank runs
 * the same build. Code before `mpi_main` runs on every rank: set up there what tasks need.
 *
 * Rank 0 keeps each rank's tasks in flight up to a window sized from their duration and
 * sends more as results come back (the results ask for work), so a rank that is free gets
 * the next task. A task that throws fails its future with `triad::remote_error`.
 *
 * A rank that dies (a crash, `exit()`, a kill) ends the whole job: that is Open MPI's default,
 * and MPI gives the survivors no reliable way to go on. Before it does, the dying rank prints
 * which task it was running, and rank 0, when Open MPI stops it, prints the tasks in flight on
 * every rank. A worker rank whose rank 0 dies is ended by Open MPI the same way.
 *
 * @par Thread Safety
 * Every member may be called from any thread of rank 0. Continuations of its futures (`then`,
 * `on_ready`, a resumed coroutine) run on the pool's I/O thread, or on the thread running
 * `mpi_main`'s function while it waits on a future (it receives results itself then, which
 * makes a round trip cost about what MPI's does): keep them short. `wait_idle()` and
 * `shutdown()` from a continuation on the I/O thread do not wait (the first throws).
 */
class mpi_pool {
public:
    mpi_pool(const mpi_pool&) = delete;
    mpi_pool& operator=(const mpi_pool&) = delete;
    /** Drains the queue (like `shutdown()`) and tells the worker ranks to leave `mpi_main`. */
    ~mpi_pool() = default;

    /** The number of worker ranks (the job's size minus one). */
    std::size_t size() const noexcept { return m_workers; }

    /**
     * Runs `fn(args...)` on a worker rank; the future holds its result, or throws
     * `triad::remote_error` (the task threw), `triad::protocol_error` or
     * `triad::task_cancelled`. Throws `triad::pool_closed` after `shutdown()`.
     */
    template <class Fn, class... Args>
    [[nodiscard]] auto submit(Fn&& fn, const Args&... args)
        -> future<detail::submit_result_t<Fn, Args...>>;

    /**
     * `fn(item)` for every item, results in input order, in chunks (about four per worker rank
     * unless `options.chunk_size` says otherwise). Blocks; if items threw, rethrows the first
     * failing item's error as `triad::remote_error` after every chunk finished. An
     * `item_timeout` is refused (`std::invalid_argument`): a rank cannot be killed alone.
     */
    template <class Fn, std::ranges::input_range Items>
    auto map(Fn&& fn, Items&& items, map_options options = {}) {
        return detail::pool_maps::map<false>(*this, std::forward<Fn>(fn),
                                             std::forward<Items>(items), options);
    }
    /** Like `map`, with each item a tuple unpacked into the arguments (Python's `starmap`). */
    template <class Fn, std::ranges::input_range Items>
    auto starmap(Fn&& fn, Items&& items, map_options options = {}) {
        return detail::pool_maps::map<true>(*this, std::forward<Fn>(fn), std::forward<Items>(items),
                                            options);
    }
    /**
     * A lazy range of `fn(item)` in input order: items are read and sent as results are
     * consumed, at most two chunks per worker rank in flight. As `process_pool::imap`.
     */
    template <class Fn, std::ranges::input_range Items>
    auto imap(Fn&& fn, Items&& items, map_options options = {}) {
        return detail::pool_maps::imap<true>(*this, std::forward<Fn>(fn),
                                             std::forward<Items>(items), options);
    }
    /** As `imap`, but results come in the order they finish. */
    template <class Fn, std::ranges::input_range Items>
    auto imap_unordered(Fn&& fn, Items&& items, map_options options = {}) {
        return detail::pool_maps::imap<false>(*this, std::forward<Fn>(fn),
                                              std::forward<Items>(items), options);
    }

    /** Blocks until nothing is queued or running. The pool stays usable. */
    void wait_idle() { m_dispatcher->wait_idle(); }

    /**
     * Stops taking work (then `submit` throws `triad::pool_closed`), finishes or cancels what
     * is queued, and tells the worker ranks to leave `mpi_main`. Idempotent; any thread may
     * call it, several at once. From a continuation on the I/O thread it only closes the pool.
     */
    void shutdown(shutdown_mode mode = shutdown_mode::drain) {
        m_dispatcher->shutdown(mode == shutdown_mode::cancel);
    }

    /** True once `shutdown()` began, or the pool broke (an MPI call failed). */
    bool closed() const { return m_dispatcher->closed(); }
    /** Tasks waiting on rank 0 (a chunk of `map` counts as one). A snapshot. */
    std::uint64_t queued() const { return m_dispatcher->queued(); }
    /** Tasks sent to a worker rank and not answered yet. A snapshot. */
    std::uint64_t running() const noexcept { return m_dispatcher->running(); }
    /** Tasks that finished, with a result or an exception. */
    std::uint64_t completed() const noexcept { return m_dispatcher->completed(); }
    /** Tasks dropped unrun: by `future::cancel()` or `shutdown(shutdown_mode::cancel)`. */
    std::uint64_t cancelled() const noexcept { return m_dispatcher->cancelled(); }

private:
    template <class Main>
    friend int mpi_main(int& argc, char**& argv, Main&& main, mpi_pool_options options);
    friend struct detail::pool_maps;

    mpi_pool(MPI_Comm comm, int ranks, const mpi_pool_options& options)
        : m_workers(static_cast<std::size_t>(ranks - 1)),
          m_dispatcher(std::make_unique<detail::mpi_dispatcher>(
              detail::mpi_dispatcher_config{comm, ranks, options.max_in_flight_per_rank.value_or(0),
                                            options.max_message_size, options.max_nesting})) {}

    static std::uint64_t function_offset(std::uintptr_t address) {
        return address == 0 ? 0 : detail::executable_image::get().offset_of(address);
    }

    template <class R, class Call, class Encode>
    future<R> send(std::uint64_t function, Encode&& encode_arguments,
                   std::uint64_t* task_id = nullptr) {
        auto task = std::make_unique<detail::remote_future_task<R>>(m_dispatcher->next_task_id());
        if (task_id != nullptr)
            *task_id = task->id();
        std::vector<char>& frame = task->frame();
        detail::build_task_frame(frame, task->id(), Call::id, function, 0,
                                 std::forward<Encode>(encode_arguments));
        if (frame.size() - sizeof(detail::frame_header) > m_dispatcher->max_message_size())
            throw protocol_error(detail::concat("triad::mpi_pool: the arguments encode to ",
                                                frame.size(), " bytes, over max_message_size (",
                                                m_dispatcher->max_message_size(), ")"));
        future<R> result = detail::future_access::make<R>(task.get());
        m_dispatcher->enqueue(task.release()); // on refusal it fails the task, then throws
        return result;
    }

    // What pool_maps needs.
    template <class F, class Item, bool Spread, class It>
    auto send_chunk(const F& fn, It first, std::size_t count, std::int64_t,
                    std::uint64_t* task_id = nullptr) {
        using call = detail::remote_chunk<F, Item, Spread>;
        using R = typename call::result_type;
        return send<detail::chunk_result<R>, call>(
            function_offset(detail::callable_address(fn)),
            [&](detail::byte_writer& writer) { detail::encode_sequence(writer, first, count); },
            task_id);
    }
    std::int64_t chunk_timeout_ns(const map_options& options) const {
        if (options.item_timeout)
            throw std::invalid_argument(
                "triad::mpi_pool: map_options::item_timeout is not supported: a task on another "
                "rank cannot be stopped without ending the MPI job");
        return 0;
    }
    std::size_t map_chunk_size(std::size_t items, const map_options& options) const noexcept {
        if (options.chunk_size != 0)
            return options.chunk_size;
        const std::size_t chunks = std::max<std::size_t>(1, size() * 4);
        return std::max<std::size_t>(1, (items + chunks - 1) / chunks);
    }
    std::uint64_t items_done(std::uint64_t) const noexcept { return 0; }

    std::size_t m_workers;
    std::unique_ptr<detail::mpi_dispatcher> m_dispatcher;
};

template <class Fn, class... Args>
auto mpi_pool::submit(Fn&& fn, const Args&... args)
    -> future<detail::submit_result_t<Fn, Args...>> {
    using F = std::decay_t<Fn>;
    if constexpr (!detail::submit_is_valid<F, std::decay_t<Args>...>()) {
        detail::refuse_submit<F, std::decay_t<Args>...>(); // one error, as process_pool's
        return {};
    } else {
        using R = detail::submit_result_t<Fn, Args...>;
        using call = detail::remote_call<F, std::decay_t<Args>...>;
        return send<R, call>(
            function_offset(detail::callable_address(F(fn))), [&](detail::byte_writer& writer) {
                (detail::encode_value(writer, static_cast<const std::decay_t<Args>&>(args)), ...);
            });
    }
}

namespace detail {

// MPI started (and, if this call started it, finished) around mpi_main, with the pool's own
// communicator.
class mpi_session {
public:
    mpi_session(int& argc, char**& argv, std::chrono::milliseconds startup_timeout)
        : m_startup_timeout(startup_timeout) {
        // MPI cannot start twice in a process, and MPI_Query_thread after MPI_Finalize aborts
        // the job: a clear error instead.
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (finalized != 0)
            throw mpi_error("triad::mpi_pool: MPI was already finished (by an earlier "
                            "triad::mpi_main, or MPI_Finalize), and cannot start again; to call "
                            "mpi_main more than once, start MPI yourself (MPI_Init_thread at "
                            "MPI_THREAD_MULTIPLE) before the first call and finish it after the "
                            "last");
        int initialized = 0;
        MPI_Initialized(&initialized);
        int provided = 0;
        m_started = std::chrono::steady_clock::now();
        if (initialized == 0) {
            // MPI_Init_thread waits for every rank to start MPI: a rank stuck before mpi_main
            // (or a program that never starts MPI) holds it up for ever, and it cannot be
            // polled. A watchdog thread leaves the job past the start-up timeout, as
            // wait_for_every_rank does later. The rank is not known yet: the launcher's says it.
            m_rank = launcher_value(
                {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}, 0);
            m_size = launcher_value({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"}, 1);
            std::mutex mutex;
            std::condition_variable started_cv;
            bool started = false;
            std::thread watchdog;
            if (m_startup_timeout > std::chrono::milliseconds::zero())
                watchdog = std::thread([&] {
                    std::unique_lock lock(mutex);
                    // A limit past what the clock can count (milliseconds::max()) is for ever.
                    const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::time_point::max() - m_started);
                    if (limit() >= room)
                        started_cv.wait(lock, [&] { return started; });
                    else if (!started_cv.wait_until(lock, m_started + limit(),
                                                    [&] { return started; }))
                        leave("MPI_Init_thread");
                });
            const int code = MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
            if (watchdog.joinable()) {
                {
                    std::lock_guard lock(mutex);
                    started = true;
                }
                started_cv.notify_one();
                watchdog.join();
            }
            mpi_check(code, "MPI_Init_thread");
            m_finalize = true;
        } else {
            MPI_Query_thread(&provided);
        }
        // Rank 0's I/O thread makes the MPI calls, not the thread that started MPI.
        if (provided < MPI_THREAD_SERIALIZED) {
            end();
            throw mpi_error("triad::mpi_pool: MPI was initialised with a thread level below "
                            "MPI_THREAD_SERIALIZED; the pool calls MPI from its own thread (let "
                            "triad::mpi_main initialise MPI, or ask for MPI_THREAD_MULTIPLE)");
        }
        if (!m_finalize)
            m_started = std::chrono::steady_clock::now(); // MPI was started by the caller
        MPI_Comm_rank(MPI_COMM_WORLD, &m_rank);
        MPI_Comm_size(MPI_COMM_WORLD, &m_size);
        MPI_Request joined = MPI_REQUEST_NULL;
        mpi_check(MPI_Comm_idup(MPI_COMM_WORLD, &m_comm, &joined), "MPI_Comm_idup");
        wait_for_every_rank(joined, "MPI_Comm_idup");
        MPI_Comm_set_errhandler(m_comm, MPI_ERRORS_RETURN);
    }
    mpi_session(const mpi_session&) = delete;
    mpi_session& operator=(const mpi_session&) = delete;
    ~mpi_session() { end(); }

    MPI_Comm comm() const noexcept { return m_comm; }
    int rank() const noexcept { return m_rank; }
    int size() const noexcept { return m_size; }

    // Every rank's executable identity, gathered on every rank; "" if all match, else the
    // reason, naming the first rank that differs from rank 0.
    std::string mismatch() const {
        constexpr std::size_t width = 192;
        const std::string invokers = executable_image::invoker_fingerprint();
        std::string mine = executable_image::get().identity() + '\n' + invokers;
        mine.resize(width, '\0');
        std::vector<char> all(width * static_cast<std::size_t>(m_size));
        MPI_Request gathered = MPI_REQUEST_NULL;
        mpi_check(MPI_Iallgather(mine.data(), static_cast<int>(width), MPI_CHAR, all.data(),
                                 static_cast<int>(width), MPI_CHAR, m_comm, &gathered),
                  "MPI_Iallgather");
        wait_for_every_rank(gathered, "MPI_Iallgather");
        const auto identity = [&](int rank) {
            const char* p = all.data() + width * static_cast<std::size_t>(rank);
            return std::string(p, strnlen(p, width));
        };
        const auto executable = [&](int rank) {
            const std::string both = identity(rank);
            return both.substr(0, both.find('\n'));
        };
        for (int rank = 1; rank < m_size; ++rank)
            if (executable(rank) != executable(0))
                return concat("triad::mpi_pool: rank ", rank,
                              " runs a different executable than rank 0 (", executable(rank),
                              ", rank 0 has ", executable(0),
                              "). Every rank must run the same build: tasks name functions by "
                              "their place in it. Copy the same binary to every host.");
        for (int rank = 1; rank < m_size; ++rank)
            if (identity(rank) != identity(0))
                return concat(
                    "triad::mpi_pool: rank ", rank,
                    " runs the same executable as rank 0 but can run different tasks (",
                    identity(rank).substr(identity(rank).find('\n') + 1), ", rank 0 has ",
                    identity(0).substr(identity(0).find('\n') + 1),
                    "): the shared libraries that define tasks differ between them (another "
                    "version, LD_PRELOAD, LD_LIBRARY_PATH). Every rank must load the same builds "
                    "of them.");
        return {};
    }

private:
    // Completes a start-up collective, which needs every rank, within the start-up timeout
    // (counted from mpi_main, or from MPI_Init_thread where mpi_main starts MPI).
    void wait_for_every_rank(MPI_Request& request, const char* call) const {
        const bool forever = m_startup_timeout <= std::chrono::milliseconds::zero();
        const auto deadline = limit();
        mpi_backoff backoff;
        for (;;) {
            int done = 0;
            mpi_check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), call);
            if (done != 0)
                return;
            // In milliseconds: a limit near milliseconds::max() overflows nanoseconds.
            if (!forever && std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::steady_clock::now() - m_started) >= deadline)
                leave(call);
            backoff.pause();
        }
    }

    // This rank's limit. Worker ranks give rank 0 five seconds more, and one another five
    // seconds more each (up to half a minute more): Open MPI's mpirun, told of two ranks ending
    // at once, can hang for good, and the first to go ends the job, in about 1.5 s.
    std::chrono::milliseconds limit() const noexcept {
        using std::chrono::milliseconds;
        if (m_rank <= 0 || m_startup_timeout <= milliseconds::zero())
            return m_startup_timeout;
        const milliseconds extra(5000 + 5000 * std::min(m_rank - 1, 6));
        return m_startup_timeout > milliseconds::max() - extra ? milliseconds::max()
                                                               : m_startup_timeout + extra;
    }

    // Past the start-up timeout a collective cannot be called off and no other rank can be
    // told: this rank leaves, saying why, and that ends the job.
    [[noreturn]] void leave(const char* call) const noexcept {
        const std::string message = concat(
            "triad::mpi_pool: rank ", m_rank, " of ", m_size,
            ": not every rank of the job joined the pool's start-up in ", limit().count(), " ms (",
            call,
            "). Every rank must run the same triad program and reach triad::mpi_main; a rank "
            "running another program, or stuck before mpi_main, holds up the rest. Leaving the "
            "job, which ends it (mpi_pool_options::startup_timeout sets the limit).\n");
        std::fputs(message.c_str(), stderr);
        std::fflush(stderr);
        // Not MPI_Abort: two ranks aborting at once left Open MPI's mpirun hung for good. A
        // rank that exits without MPI_Finalize ends the job as surely.
        std::_Exit(1);
    }

    // The rank and size the launcher gave this process, before MPI says them (0 and 1 if it
    // does not say).
    static int launcher_value(std::initializer_list<const char*> names, int otherwise) noexcept {
        for (const char* name : names)
            if (const char* value = std::getenv(name); value != nullptr && *value != '\0')
                return std::atoi(value);
        return otherwise;
    }

    void end() noexcept {
        if (m_comm != MPI_COMM_NULL)
            MPI_Comm_free(&m_comm);
        if (m_finalize) {
            m_finalize = false;
            MPI_Finalize();
        }
    }

    MPI_Comm m_comm = MPI_COMM_NULL;
    int m_rank = 0;
    int m_size = 1;
    bool m_finalize = false;
    std::chrono::milliseconds m_startup_timeout;
    std::chrono::steady_clock::time_point m_started{};
};

} // namespace detail

/**
 * Runs an MPI job's `main` with a `triad::mpi_pool`: on rank 0 it calls `main(pool)` and
 * returns what that returns (0 if it returns void), after the pool drained; on every other
 * rank it runs tasks until rank 0 is done, then returns 0. It starts MPI (at
 * `MPI_THREAD_MULTIPLE`) and finishes it, unless MPI was started before, in which case the
 * caller finishes it. So `main` is just `return triad::mpi_main(argc, argv, run);`.
 *
 * Throws `triad::mpi_error` on rank 0 (other ranks return 1) when the job has one rank, or
 * when the ranks do not all run the same executable; on every rank when MPI was already
 * finished (`mpi_main` starts MPI once per process unless the caller starts it) or started
 * below `MPI_THREAD_SERIALIZED`. If `main` throws, the queued tasks are
 * cancelled, the worker ranks are released, MPI is finished, and the exception propagates.
 */
template <class Main>
int mpi_main(int& argc, char**& argv, Main&& main, mpi_pool_options options) {
    // One error for a wrong `main`, not that one followed by every use of its result.
    if constexpr (!std::is_invocable_v<Main&, mpi_pool&>) {
        static_assert(std::is_invocable_v<Main&, mpi_pool&>,
                      "triad::mpi_main: the function must be callable as main(triad::mpi_pool&)");
        return 1;
    } else if constexpr (!(std::is_void_v<std::invoke_result_t<Main&, mpi_pool&>> ||
                           std::is_convertible_v<std::invoke_result_t<Main&, mpi_pool&>, int>)) {
        static_assert(std::is_void_v<std::invoke_result_t<Main&, mpi_pool&>>,
                      "triad::mpi_main: the function must return void or an exit code (int)");
        return 1;
    } else {
        using result = std::invoke_result_t<Main&, mpi_pool&>;
        if (options.max_message_size < 1024 || options.max_message_size > detail::mpi_max_message)
            throw std::invalid_argument(
                "triad::mpi_pool: max_message_size must be at least 1 KiB and under 2 GiB");
        if (options.max_nesting == 0)
            throw std::invalid_argument("triad::mpi_pool: max_nesting must be at least 1");
        if (options.max_in_flight_per_rank && *options.max_in_flight_per_rank == 0)
            throw std::invalid_argument(
                "triad::mpi_pool: max_in_flight_per_rank must be at least 1");

        detail::mpi_session session(argc, argv, options.startup_timeout);
        const std::string mismatch = session.mismatch();
        if (session.size() < 2 || !mismatch.empty()) {
            if (session.rank() != 0)
                return 1;
            throw mpi_error(
                !mismatch.empty()
                    ? mismatch
                    : std::string("triad::mpi_pool: the MPI job has one rank; rank 0 "
                                  "drives and ranks 1..N-1 run tasks, so start at least "
                                  "two: mpirun -np N ./program"));
        }
        if (session.rank() != 0) {
            detail::mpi_worker(session.comm(), session.rank(), options.max_message_size,
                               options.max_nesting)
                .serve();
            return 0;
        }
        mpi_pool pool(session.comm(), session.size(), options);
        try {
            int code = 0;
            {
                // While main waits on a future, it takes the pool's MPI steps itself (its own
                // result included) instead of sleeping until the I/O thread wakes it.
                detail::wait_helper* const previous =
                    std::exchange(detail::tls_wait_helper, pool.m_dispatcher.get());
                struct restore {
                    detail::wait_helper* previous;
                    ~restore() { detail::tls_wait_helper = previous; }
                } restore_helper{previous};
                if constexpr (std::is_void_v<result>)
                    main(pool);
                else
                    code = static_cast<int>(main(pool));
            }
            pool.shutdown();
            return code;
        } catch (...) {
            pool.shutdown(shutdown_mode::cancel);
            throw;
        }
    }
}

} // namespace triad
