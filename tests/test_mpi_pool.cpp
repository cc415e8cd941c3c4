// triad::mpi_pool in a real MPI job: CTest starts this binary under `mpirun -np 3`, so every
// test case runs on rank 0 with a pool of two worker ranks (ranks 1 and 2 serve it). Test
// cases tagged [.] are scenarios for tests/mpi/run_job.cmake, which also checks how the job
// ends: exit code, messages, and no process left behind.
#include <triad/mpi_pool.hpp>

#include <triad/combinators.hpp>
#include <triad/task.hpp>

#include <catch2/catch.hpp>

#include "catch_runner.hpp"
#include "tasks_library.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

triad::mpi_pool* g_pool = nullptr;

triad::mpi_pool& pool() {
    REQUIRE(g_pool != nullptr);
    return *g_pool;
}

long square(long x) {
    return x * x;
}
long add(long a, long b) {
    return a + b;
}
int rank_of_caller(int) {
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}
int pid_of_caller(int) {
    return static_cast<int>(::getpid());
}
int sleep_then_rank(int milliseconds) {
    std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds));
    return rank_of_caller(0);
}
long fails_on_three(long x) {
    if (x == 3)
        throw std::out_of_range("three is not allowed");
    return x;
}
int throws_an_int(int) {
    throw 42;
}
int dies(int) {
    std::abort();
}
int deep(int n) {
    volatile char frame[4096];
    frame[0] = static_cast<char>(n);
    return n == 0 ? frame[0] : deep(n - 1) + frame[0]; // not a tail call
}
int overflows_its_stack(int) {
    return deep(1 << 30);
}
struct stateless_doubler {
    long operator()(long x) const { return 2 * x; }
};

std::atomic<long> g_items_read{0};

// 0, 1, 2, ... n-1, counting the items read (not std::views, which Clang 14 cannot compile
// with libstdc++ 12).
class counted_numbers {
public:
    class iterator {
    public:
        using value_type = long;
        using difference_type = std::ptrdiff_t;
        long operator*() const {
            g_items_read.fetch_add(1);
            return m_value;
        }
        iterator& operator++() {
            ++m_value;
            return *this;
        }
        void operator++(int) { ++m_value; }
        bool operator==(const iterator& other) const { return m_value == other.m_value; }

    private:
        friend class counted_numbers;
        long m_value = 0;
    };
    explicit counted_numbers(long n) : m_n(n) {}
    iterator begin() const { return at(0); }
    iterator end() const { return at(m_n); }

private:
    static iterator at(long value) {
        iterator it;
        it.m_value = value;
        return it;
    }
    long m_n;
};

} // namespace

TEST_CASE("100,000 submitted tasks all come back, each with its own result", "[mpi_pool]") {
    constexpr long n = 100'000;
    std::vector<triad::future<long>> futures;
    futures.reserve(n);
    for (long i = 0; i < n; ++i)
        futures.push_back(pool().submit(square, i));
    long wrong = 0;
    for (long i = 0; i < n; ++i)
        wrong += futures[static_cast<std::size_t>(i)].get() != i * i;
    CHECK(wrong == 0);
    CHECK(pool().completed() >= static_cast<std::uint64_t>(n));
    pool().wait_idle();
    CHECK(pool().running() == 0);
    CHECK(pool().queued() == 0);
}

TEST_CASE("tasks run on the worker ranks, in other processes, on both of them", "[mpi_pool]") {
    REQUIRE(pool().size() == 2);
    std::vector<triad::future<int>> ranks;
    for (int i = 0; i < 40; ++i)
        ranks.push_back(pool().submit(sleep_then_rank, 5));
    std::set<int> seen;
    for (auto& f : ranks)
        seen.insert(f.get());
    CHECK(seen == std::set<int>{1, 2});
    CHECK(pool().submit(pid_of_caller, 0).get() != static_cast<int>(::getpid()));
}

// In a fresh pool, where no rank's window has grown yet: a rank whose tasks were short keeps
// about 200 us of them queued ahead, which a task far longer than its recent ones holds back
// (what the README says). So this case runs in a job of its own, not in the one-job run.
TEST_CASE("a short task does not wait behind a long one while a rank is free",
          "[mpi_pool][fresh_pool]") {
    auto slow = pool().submit(sleep_then_rank, 1500);
    std::vector<triad::future<int>> quick;
    for (int i = 0; i < 20; ++i)
        quick.push_back(pool().submit(sleep_then_rank, 1));
    const auto start = std::chrono::steady_clock::now();
    for (auto& f : quick)
        f.get();
    // Generous: 20 ms of work; behind the slow task it would be 1.5 s.
    CHECK(std::chrono::steady_clock::now() - start < 1s);
    CHECK_FALSE(slow.ready());
    slow.get();
}

TEST_CASE("map returns every item's result in input order, chunked automatically", "[mpi_pool]") {
    std::vector<long> items(100'000);
    std::iota(items.begin(), items.end(), 0L);
    const std::vector<long> squares = pool().map(square, items);
    REQUIRE(squares.size() == items.size());
    bool in_order = true;
    for (std::size_t i = 0; i < items.size(); ++i)
        in_order = in_order && squares[i] == items[i] * items[i];
    CHECK(in_order);
    // Not 100,000 tasks: about four chunks per worker rank.
    CHECK(pool().map(stateless_doubler{}, std::vector<long>{1, 2, 3}) ==
          std::vector<long>{2, 4, 6});
    const std::vector<std::tuple<long, long>> pairs{{1, 2}, {3, 4}, {5, 6}};
    CHECK(pool().starmap(add, pairs) == std::vector<long>{3, 7, 11});
    CHECK(pool().map(square, std::vector<long>{}).empty());
}

TEST_CASE("imap reads its input only as results are consumed", "[mpi_pool]") {
    g_items_read = 0;
    const counted_numbers counted(1'000'000);
    static_assert(std::ranges::input_range<const counted_numbers>);
    auto results = pool().imap(square, counted, {.chunk_size = 10});
    long consumed = 0;
    for (long value : results) {
        CHECK(value == consumed * consumed);
        if (++consumed == 25)
            break;
    }
    // At most two chunks per worker rank in flight, plus the one being consumed.
    CHECK(g_items_read.load() <= 10 * (2 * 2 + 3));
    long total = 0;
    for (long value : pool().imap_unordered(square, std::vector<long>{1, 2, 3, 4}))
        total += value;
    CHECK(total == 30);
}

TEST_CASE("a task that throws gives remote_error, and map reports the first failing item",
          "[mpi_pool]") {
    try {
        pool().submit(fails_on_three, 3L).get();
        FAIL("no exception");
    } catch (const triad::remote_error& e) {
        CHECK(e.type_name() == "std::out_of_range");
        CHECK(e.message() == "three is not allowed");
    }
    CHECK_THROWS_AS(pool().submit(throws_an_int, 0).get(), triad::remote_error);
    CHECK_THROWS_WITH(pool().map(fails_on_three, std::vector<long>{1, 2, 3, 4, 3}),
                      Catch::Contains("three is not allowed"));
    // The pool goes on.
    CHECK(pool().submit(square, 7L).get() == 49);
    std::vector<long> seen;
    auto results = pool().imap(fails_on_three, std::vector<long>{1, 3, 5});
    for (auto it = results.begin(); it != std::default_sentinel; ++it) {
        try {
            seen.push_back(*it);
        } catch (const triad::remote_error&) {
            seen.push_back(-1);
        }
    }
    CHECK(seen == std::vector<long>{1, -1, 5});
}

TEST_CASE("a function outside the executable is refused with the reason", "[mpi_pool]") {
    double (*cosine)(double) = &::cos;
    CHECK_THROWS_WITH(pool().submit(cosine, 0.5),
                      Catch::Contains("not in the executable") &&
                          Catch::Contains("send a function of your program"));
    CHECK_THROWS_AS(pool().map(stateless_doubler{}, std::vector<long>{1},
                               {.item_timeout = std::chrono::seconds(1)}),
                    std::invalid_argument);
}

TEST_CASE("a task type defined in a shared library the program links runs on the workers",
          "[mpi_pool]") {
    CHECK(library_task(pool(), 7).get() == 1007);
}

TEST_CASE("the futures compose: as_completed, then, and co_await on the event loop", "[mpi_pool]") {
    std::vector<triad::future<long>> futures;
    for (long i = 1; i <= 10; ++i)
        futures.push_back(pool().submit(square, i));
    long sum = 0;
    for (auto& f : triad::as_completed(futures))
        sum += f.get();
    CHECK(sum == 385);

    CHECK(pool().submit(square, 6L).then([](triad::future<long> x) { return x.get() + 1; }).get() ==
          37);

    std::thread::id loop_thread;
    std::thread::id resumed_on;
    const long total = triad::run([&]() -> triad::task<long> {
        loop_thread = std::this_thread::get_id();
        const long a = co_await pool().submit(square, 3L);
        resumed_on = std::this_thread::get_id();
        const long b = co_await pool().submit(add, 4L, 5L);
        co_return a + b;
    }());
    CHECK(total == 18);
    CHECK(resumed_on == loop_thread); // not the pool's I/O thread
}

TEST_CASE("a continuation that waits on another task of the pool does not stall it", "[mpi_pool]") {
    // The continuation runs on the pool's I/O thread (or on this thread, while it helps): its
    // wait must keep the pool going, since nobody else may.
    auto chained = pool().submit(square, 2L).then([](triad::future<long> first) {
        // Long enough that no thread's brief helping spin covers it.
        return g_pool->submit(sleep_then_rank, static_cast<int>(100 * first.get())).get();
    });
    std::this_thread::sleep_for(100ms); // so that this thread is not helping meanwhile
    CHECK(chained.wait_for(20s) == std::future_status::ready);
    CHECK(chained.get() >= 1);
}

TEST_CASE("shutdown from two threads at once: both return, later submits are refused",
          "[mpi_pool][shutdown]") {
    std::vector<triad::future<int>> running;
    for (int i = 0; i < 8; ++i)
        running.push_back(pool().submit(sleep_then_rank, 20));
    triad::mpi_pool* shared = &pool();
    std::thread other([shared] { shared->shutdown(); }); // no Catch2 macro off the main thread
    pool().shutdown();
    other.join();
    for (auto& f : running)
        CHECK(f.get() >= 1); // drained, not dropped
    CHECK(pool().closed());
    CHECK_THROWS_AS(pool().submit(square, 1L), triad::pool_closed);
    pool().shutdown(); // idempotent
}

TEST_CASE("shutdown(cancel) drops queued tasks with task_cancelled", "[mpi_pool][shutdown]") {
    std::vector<triad::future<int>> futures;
    for (int i = 0; i < 200; ++i)
        futures.push_back(pool().submit(sleep_then_rank, 10));
    pool().shutdown(triad::shutdown_mode::cancel);
    std::size_t ran = 0;
    std::size_t cancelled = 0;
    for (auto& f : futures) {
        try {
            f.get();
            ++ran;
        } catch (const triad::task_cancelled&) {
            ++cancelled;
        }
    }
    CHECK(ran + cancelled == futures.size());
    CHECK(cancelled > 100);
    CHECK(pool().cancelled() == cancelled);
}

// --- scenarios for tests/mpi/run_job.cmake -----------------------------------------------------

TEST_CASE("scenario: a worker rank dies in a task", "[.scenario]") {
    auto slow = pool().submit(sleep_then_rank, 5000); // task 1, on one rank
    std::this_thread::sleep_for(200ms);
    auto fatal = pool().submit(dies, 0); // task 2, on the other
    fatal.get();                         // never returns: Open MPI ends the job
}

TEST_CASE("scenario: a task overflows its stack", "[.scenario]") {
    pool().submit(overflows_its_stack, 0).get(); // never returns: Open MPI ends the job
}

namespace {

// A user's SIGTERM handler that wants its siginfo_t: rank 0's pool chains to it.
void user_sigterm(int signal, siginfo_t* info, void*) {
    // Rank 0 raise()s it, with tgkill(2): the kernel's siginfo names this process and SI_TKILL.
    // The workers get theirs from mpirun, with kill(2).
    const bool raised = info != nullptr && info->si_signo == signal && info->si_code == SI_TKILL &&
                        info->si_pid == ::getpid();
    const bool killed = info != nullptr && info->si_signo == signal && info->si_code == SI_USER;
    const char* line = raised   ? "user SIGTERM handler: siginfo intact\n"
                       : killed ? "user SIGTERM handler: siginfo of a kill from another process\n"
                                : "user SIGTERM handler: siginfo garbage\n";
    (void)!::write(STDERR_FILENO, line, std::strlen(line));
    const bool sane = raised || killed;
    ::_exit(sane ? 3 : 4);
}

// mpi_main twice in one process: the second call must refuse with an exception, not abort.
int run_twice(int argc, char* argv[]) {
    triad::mpi_main(argc, argv, [](triad::mpi_pool& p) { return p.submit(square, 2L).get() - 4; });
    try {
        triad::mpi_main(argc, argv, [](triad::mpi_pool&) { return 0; });
    } catch (const triad::mpi_error& e) {
        std::printf("second mpi_main: %s\n", e.what());
        return 0;
    }
    return 1;
}

} // namespace

std::vector<char> megabytes(long count) {
    return std::vector<char>(static_cast<std::size_t>(count) << 20, 'x');
}

TEST_CASE("scenario: rank 0 cannot hold a large result", "[.scenario]") {
    (void)pool().submit(square, 1L).get(); // everything started
    // Little room left on rank 0: receiving a 600 MB result fails (std::bad_alloc), while its
    // worker rank waits in MPI_Send for that receive.
    std::FILE* status = std::fopen("/proc/self/status", "r");
    long vm_kb = 0;
    char line[256];
    while (status != nullptr && std::fgets(line, sizeof line, status) != nullptr)
        if (std::sscanf(line, "VmSize: %ld", &vm_kb) == 1)
            break;
    if (status != nullptr)
        std::fclose(status);
    const rlimit tight{static_cast<rlim_t>(vm_kb + (200L << 10)) << 10, RLIM_INFINITY};
    ::setrlimit(RLIMIT_AS, &tight);
    (void)pool().submit(megabytes, 600L).get(); // the job ends (before: it hung)
}

int main(int argc, char* argv[]) {
    // Rank 0 runs the tests with the pool; ranks 1 and 2 serve it until it is done.
    const char* scenario = std::getenv("TRIAD_MPI_SCENARIO");
    const bool main_throws = scenario != nullptr && std::string(scenario) == "main_throws";
    const bool sigterm = scenario != nullptr && std::string(scenario) == "sigterm_siginfo";
    if (scenario != nullptr && std::string(scenario) == "twice")
        return run_twice(argc, argv);
    triad::mpi_pool_options options;
    if (scenario != nullptr && std::string(scenario) == "short_startup")
        options.startup_timeout = 3s; // beside a rank that never joins (tests/mpi/plain_rank.cpp)
    if (scenario != nullptr && std::string(scenario) == "stuck_before_main") {
        // Rank 2 is stuck in user code before mpi_main, so before MPI starts: the others must
        // not wait for it in MPI_Init_thread for ever.
        options.startup_timeout = 3s;
        const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
        if (rank != nullptr && std::string(rank) == "2")
            std::this_thread::sleep_for(std::chrono::minutes(2));
    }
    if (sigterm) {
        struct sigaction action {};
        action.sa_sigaction = &user_sigterm;
        action.sa_flags = SA_SIGINFO;
        sigemptyset(&action.sa_mask);
        ::sigaction(SIGTERM, &action, nullptr);
    }
    return triad::mpi_main(
        argc, argv,
        [&](triad::mpi_pool& p) {
            g_pool = &p;
            if (sigterm) {
                (void)p.submit(square, 1L).get();
                ::raise(SIGTERM); // as Open MPI ends a job
            }
            if (main_throws) {
                for (int i = 0; i < 4; ++i)
                    (void)p.submit(sleep_then_rank, 100);
                throw std::runtime_error("rank 0 gives up");
            }
            return triad_test::run_catch(argc, argv);
        },
        options);
}
