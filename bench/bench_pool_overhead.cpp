// What does the pool itself cost per task? One million empty tasks through post + wait_idle,
// submit + get, and map, against the peers a C++ user would otherwise pick, in the same run:
// boost::asio::thread_pool, oneTBB (task_group, parallel_for; in an arena of as many threads
// as the pools have workers), std::async, a std::thread per task, and a plain loop.
// Targets (2 cores): post < 100 ns/task, submit + get < 150 ns/task, map within 2x of a loop,
// and ahead of boost::asio::thread_pool on every row.
//
// The per-task cost of the post and submit rows depends on the heap's state (a heap that glibc
// trimmed faults its pages back in), so each repetition of those rows is one round (the
// runner's repetitions give the spread), every run starts from a trimmed heap
// (bench_common.hpp), and every contender gets the same untimed warm-up round first, left out
// of the cost counters too. The first burst of a fresh process is measured on its own: the
// `_cold` rows run this binary anew for each repetition (`--triad_cold=<workload>:<executor>`)
// and time its first million posts or submits. Both depend on how fast the machine faults fresh
// memory in (on this VM, transparent huge pages make triad's first burst several times cheaper).

#include <triad/thread_pool.hpp>

#include "bench_common.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <latch>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace {

// --quick (TRIAD_BENCH_QUICK) takes a tenth, for every contender alike.
const int many_tasks = triad_bench::quick() ? 100'000 : 1'000'000;
// Thread creation costs tens of microseconds, so the per-thread peers get fewer tasks; the
// table compares time per task.
const int thread_tasks = triad_bench::quick() ? 2'000 : 10'000;

std::size_t workers() {
    return triad::cpu_count();
}

void empty_task() {
    benchmark::ClobberMemory();
}

// --- post: fire and forget, then wait for all -------------------------------------------------

void triad_post(benchmark::State& state) {
    triad::thread_pool pool(workers());
    const auto round = [&] {
        for (int i = 0; i < many_tasks; ++i)
            pool.post(empty_task);
        pool.wait_idle();
    };
    round(); // warm-up, untimed, as for every contender
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        round();
    triad_bench::set_items(state, many_tasks);
}

// Every task counts down a latch the round waits on: asio's own way to wait for all posted work,
// join(), ends the pool, and a pool rebuilt each round is not what triad's row measures.
void asio_post_round(boost::asio::thread_pool& pool) {
    std::latch done(many_tasks);
    for (int i = 0; i < many_tasks; ++i)
        boost::asio::post(pool, [&done] {
            empty_task();
            done.count_down();
        });
    done.wait();
}

void asio_post(benchmark::State& state) {
    boost::asio::thread_pool pool(workers());
    asio_post_round(pool); // warm-up, untimed, as for every contender
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        asio_post_round(pool);
    pool.join();
    triad_bench::set_items(state, many_tasks);
}

void thread_per_task_post(benchmark::State& state) {
    const auto round = [] {
        std::vector<std::thread> threads;
        threads.reserve(thread_tasks);
        for (int i = 0; i < thread_tasks; ++i)
            threads.emplace_back(empty_task);
        for (auto& t : threads)
            t.join();
    };
    round(); // warm-up
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        round();
    triad_bench::set_items(state, thread_tasks);
}

// oneTBB in an arena of workers() threads: this thread (it runs tasks too while it waits) and
// workers() - 1 of TBB's, so as many threads run tasks as in the pools.
tbb::task_arena tbb_arena() {
    return tbb::task_arena(static_cast<int>(workers()));
}

void tbb_post(benchmark::State& state) {
    tbb::task_arena arena = tbb_arena();
    const auto round = [&] {
        arena.execute([] {
            tbb::task_group group;
            for (int i = 0; i < many_tasks; ++i)
                group.run(empty_task);
            group.wait();
        });
    };
    round(); // warm-up
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        round();
    triad_bench::set_items(state, many_tasks);
}

void sequential_post(benchmark::State& state) {
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        for (int i = 0; i < many_tasks; ++i)
            empty_task();
    triad_bench::set_items(state, many_tasks);
}

// --- submit + get: a future per task ----------------------------------------------------------

int one() {
    return 1;
}

template <class Futures>
void get_all(Futures& futures) {
    long sum = 0;
    for (auto& f : futures)
        sum += f.get();
    benchmark::DoNotOptimize(sum);
    futures.clear();
}

void triad_submit(benchmark::State& state) {
    triad::thread_pool pool(workers());
    std::vector<triad::future<int>> futures;
    futures.reserve(many_tasks);
    const auto round = [&] {
        for (int i = 0; i < many_tasks; ++i)
            futures.push_back(pool.submit(one));
        get_all(futures);
    };
    round(); // warm-up
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        round();
    triad_bench::set_items(state, many_tasks);
}

void asio_submit(benchmark::State& state) {
    boost::asio::thread_pool pool(workers());
    std::vector<std::future<int>> futures;
    futures.reserve(many_tasks);
    const auto round = [&] {
        for (int i = 0; i < many_tasks; ++i)
            futures.push_back(boost::asio::post(pool, boost::asio::use_future(one)));
        get_all(futures);
    };
    round(); // warm-up
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        round();
    pool.join();
    triad_bench::set_items(state, many_tasks);
}

void std_async_submit(benchmark::State& state) {
    std::vector<std::future<int>> futures;
    futures.reserve(thread_tasks);
    const auto round = [&] {
        for (int i = 0; i < thread_tasks; ++i)
            futures.push_back(std::async(std::launch::async, one));
        get_all(futures);
    };
    round(); // warm-up
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        round();
    triad_bench::set_items(state, thread_tasks);
}

// oneTBB has no future: each task writes its result to its own slot, read after wait().
void tbb_submit(benchmark::State& state) {
    tbb::task_arena arena = tbb_arena();
    std::vector<int> results(many_tasks);
    const auto round = [&] {
        arena.execute([&] {
            tbb::task_group group;
            for (int i = 0; i < many_tasks; ++i)
                group.run([&results, i] { results[static_cast<std::size_t>(i)] = one(); });
            group.wait();
        });
        benchmark::DoNotOptimize(std::accumulate(results.begin(), results.end(), 0L));
    };
    round(); // warm-up
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        round();
    triad_bench::set_items(state, many_tasks);
}

void sequential_submit(benchmark::State& state) {
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        long sum = 0;
        for (int i = 0; i < many_tasks; ++i) {
            sum += one();
            benchmark::ClobberMemory();
        }
        benchmark::DoNotOptimize(sum);
    }
    triad_bench::set_items(state, many_tasks);
}

// --- map: a trivial body over a million ints ---------------------------------------------------

const std::vector<int>& map_input() {
    static const std::vector<int> input = [] {
        std::vector<int> v(many_tasks);
        std::iota(v.begin(), v.end(), 0);
        return v;
    }();
    return input;
}

// A lambda, not a function: a lambda's call inlines into the chunk loop, a function pointer's
// cannot, and that is what a user of map on tiny items should write.
constexpr auto twice = [](int x) { return x * 2; };

void triad_map(benchmark::State& state) {
    triad::thread_pool pool(workers());
    const auto& input = map_input();
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::vector<int> out = pool.map(twice, input);
        benchmark::DoNotOptimize(out.data());
    }
    triad_bench::set_items(state, many_tasks);
}

// What a user writes for map on asio: one posted chunk per worker, futures to collect.
void asio_map(benchmark::State& state) {
    boost::asio::thread_pool pool(workers());
    const auto& input = map_input();
    const std::size_t chunks = workers() * 4;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::vector<int> out(input.size());
        std::vector<std::future<void>> done;
        const std::size_t step = (input.size() + chunks - 1) / chunks;
        for (std::size_t begin = 0; begin < input.size(); begin += step) {
            const std::size_t end = std::min(input.size(), begin + step);
            done.push_back(boost::asio::post(pool, boost::asio::use_future([&, begin, end] {
                                                 for (std::size_t i = begin; i < end; ++i)
                                                     out[i] = twice(input[i]);
                                             })));
        }
        for (auto& f : done)
            f.get();
        benchmark::DoNotOptimize(out.data());
    }
    pool.join();
    triad_bench::set_items(state, many_tasks);
}

void std_async_map(benchmark::State& state) {
    const auto& input = map_input();
    const std::size_t chunks = workers();
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::vector<int> out(input.size());
        std::vector<std::future<void>> done;
        const std::size_t step = (input.size() + chunks - 1) / chunks;
        for (std::size_t begin = 0; begin < input.size(); begin += step) {
            const std::size_t end = std::min(input.size(), begin + step);
            done.push_back(std::async(std::launch::async, [&, begin, end] {
                for (std::size_t i = begin; i < end; ++i)
                    out[i] = twice(input[i]);
            }));
        }
        for (auto& f : done)
            f.get();
        benchmark::DoNotOptimize(out.data());
    }
    triad_bench::set_items(state, many_tasks);
}

// oneTBB's own parallel map: parallel_for over the range, its default (auto) partitioner.
void tbb_map(benchmark::State& state) {
    tbb::task_arena arena = tbb_arena();
    const auto& input = map_input();
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::vector<int> out(input.size());
        arena.execute([&] {
            tbb::parallel_for(tbb::blocked_range<std::size_t>(0, input.size()),
                              [&](const tbb::blocked_range<std::size_t>& range) {
                                  for (std::size_t i = range.begin(); i != range.end(); ++i)
                                      out[i] = twice(input[i]);
                              });
        });
        benchmark::DoNotOptimize(out.data());
    }
    triad_bench::set_items(state, many_tasks);
}

// The fastest plain loop (the compiler vectorises it), not push_back, which is twice as slow.
void sequential_map(benchmark::State& state) {
    const auto& input = map_input();
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        std::vector<int> out(input.size());
        std::transform(input.begin(), input.end(), out.begin(), twice);
        benchmark::DoNotOptimize(out.data());
    }
    triad_bench::set_items(state, many_tasks);
}

// --- the first burst of a fresh process -------------------------------------------------------

// In the child (`--triad_cold=<workload>:<executor>`): the first million posts (then waiting
// for all) or submits (then getting each) of a fresh process, timed from the first call to the
// end; prints nanoseconds. The pool is built before the clock starts, for every contender.
int cold_burst(const std::string& what) {
    const auto colon = what.find(':');
    const std::string workload = what.substr(0, colon);
    const std::string executor = colon == std::string::npos ? "" : what.substr(colon + 1);
    std::vector<int> results;
    results.reserve(many_tasks);
    std::chrono::steady_clock::duration took{};
    if (workload == "post" && executor == "triad_threads") {
        triad::thread_pool pool(workers());
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < many_tasks; ++i)
            pool.post(empty_task);
        pool.wait_idle();
        took = std::chrono::steady_clock::now() - start;
        results.assign(many_tasks, 1);
    } else if (workload == "post" && executor == "asio_thread_pool") {
        boost::asio::thread_pool pool(workers());
        const auto start = std::chrono::steady_clock::now();
        asio_post_round(pool);
        took = std::chrono::steady_clock::now() - start;
        pool.join();
        results.assign(many_tasks, 1);
    } else if (workload == "submit" && executor == "triad_threads") {
        triad::thread_pool pool(workers());
        std::vector<triad::future<int>> futures;
        futures.reserve(many_tasks);
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < many_tasks; ++i)
            futures.push_back(pool.submit(one));
        for (auto& f : futures)
            results.push_back(f.get());
        took = std::chrono::steady_clock::now() - start;
    } else if (workload == "submit" && executor == "asio_thread_pool") {
        boost::asio::thread_pool pool(workers());
        std::vector<std::future<int>> futures;
        futures.reserve(many_tasks);
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < many_tasks; ++i)
            futures.push_back(boost::asio::post(pool, boost::asio::use_future(one)));
        for (auto& f : futures)
            results.push_back(f.get());
        took = std::chrono::steady_clock::now() - start;
        pool.join();
    } else {
        std::fprintf(stderr, "--triad_cold: unknown workload or executor: %s\n", what.c_str());
        return 2;
    }
    if (std::accumulate(results.begin(), results.end(), 0L) != many_tasks)
        return 3;
    std::printf("%lld\n", static_cast<long long>(
                              std::chrono::duration_cast<std::chrono::nanoseconds>(took).count()));
    return 0;
}

std::string self_path;

// In the benchmark: run this binary again as a cold child, read its time.
void cold_run(benchmark::State& state, const std::string& what) {
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        int fds[2];
        if (::pipe(fds) != 0) {
            state.SkipWithError("pipe failed");
            return;
        }
        const pid_t child = ::fork();
        if (child < 0) {
            ::close(fds[0]);
            ::close(fds[1]);
            state.SkipWithError("fork failed");
            return;
        }
        if (child == 0) {
            ::dup2(fds[1], STDOUT_FILENO);
            ::close(fds[0]);
            ::close(fds[1]);
            const std::string flag = "--triad_cold=" + what;
            ::execl(self_path.c_str(), self_path.c_str(), flag.c_str(),
                    static_cast<char*>(nullptr));
            ::_exit(127);
        }
        ::close(fds[1]);
        std::string out;
        std::array<char, 64> buffer{};
        for (ssize_t n; (n = ::read(fds[0], buffer.data(), buffer.size())) > 0;)
            out.append(buffer.data(), static_cast<std::size_t>(n));
        ::close(fds[0]);
        int status = 0;
        ::waitpid(child, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || out.empty()) {
            state.SkipWithError("the cold child failed");
            return;
        }
        state.SetIterationTime(std::strtod(out.c_str(), nullptr) * 1e-9);
    }
    triad_bench::set_items(state, many_tasks);
}

const bool registered = [] {
    const auto ms = [](benchmark::internal::Benchmark* b) {
        b->UseRealTime()->Unit(benchmark::kMillisecond);
    };
    // The heap-sensitive rows: one round (50-300 ms) per repetition, so the runner's
    // repetitions are a distribution over rounds, not a number averaged over them.
    const auto distribution = [ms](benchmark::internal::Benchmark* b) {
        ms(b);
        b->Iterations(1);
    };
    triad_bench::describe(
        "pool_post",
        {"Post a million empty tasks to a pool of 2, then wait for all", "overhead", "task", ""});
    triad_bench::describe(
        "pool_submit_get",
        {"Submit a million tasks to a pool of 2, then get each result", "overhead", "task", ""});
    triad_bench::describe("pool_map", {"map of x * 2 over a million ints on 2 workers (sequential: "
                                       "the plain loop)",
                                       "overhead", "item", ""});
    triad_bench::describe(
        "pool_post_cold",
        {"Post a million tasks in a fresh process (its first burst)", "overhead", "task", ""});
    triad_bench::describe("pool_submit_get_cold",
                          {"Submit and get a million tasks in a fresh process (its first burst)",
                           "overhead", "task", ""});
    distribution(triad_bench::add("triad_threads", "pool_post", triad_post));
    distribution(triad_bench::add("asio_thread_pool", "pool_post", asio_post));
    distribution(triad_bench::add("thread_per_task", "pool_post", thread_per_task_post));
    distribution(triad_bench::add("tbb_task_group", "pool_post", tbb_post));
    ms(triad_bench::add("sequential", "pool_post", sequential_post));
    distribution(triad_bench::add("triad_threads", "pool_submit_get", triad_submit));
    // asio's futures are std::futures (use_future): this row is "asio + std::future".
    distribution(triad_bench::add("asio_thread_pool", "pool_submit_get", asio_submit));
    distribution(triad_bench::add("std_async", "pool_submit_get", std_async_submit));
    distribution(triad_bench::add("tbb_task_group", "pool_submit_get", tbb_submit));
    ms(triad_bench::add("sequential", "pool_submit_get", sequential_submit));
    // Each repetition is a new process: the first burst, every time.
    const auto cold = [](benchmark::internal::Benchmark* b) {
        b->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);
    };
    for (const char* executor : {"triad_threads", "asio_thread_pool"}) {
        const std::string name = executor;
        cold(triad_bench::add(name, "pool_post_cold", [name](benchmark::State& state) {
            cold_run(state, "post:" + name);
        }));
        cold(triad_bench::add(name, "pool_submit_get_cold", [name](benchmark::State& state) {
            cold_run(state, "submit:" + name);
        }));
    }
    ms(triad_bench::add("triad_threads", "pool_map", triad_map));
    ms(triad_bench::add("asio_thread_pool", "pool_map", asio_map));
    ms(triad_bench::add("std_async", "pool_map", std_async_map));
    ms(triad_bench::add("tbb_parallel_for", "pool_map", tbb_map));
    ms(triad_bench::add("sequential", "pool_map", sequential_map));
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    const std::string cold_flag = "--triad_cold=";
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]).rfind(cold_flag, 0) == 0)
            return cold_burst(std::string(argv[i]).substr(cold_flag.size()));
    self_path = "/proc/self/exe";
    char resolved[4096];
    if (const ssize_t n = ::readlink("/proc/self/exe", resolved, sizeof resolved - 1); n > 0)
        self_path.assign(resolved, static_cast<std::size_t>(n));
    return triad_bench::run_benchmarks(argc, argv);
}
