// Where does the time go, and what does it cost to look? Two things in one binary:
// - the cost of triad's tracer (triad/trace.hpp): the same rounds with tracing off and on, a
//   million empty posts to a thread pool of 2 (each task one span) and 20,000 one-item tasks of
//   a process pool of 2 (each one span timed by its worker process). Off, every task pays one
//   relaxed load and a branch, which the `_off` rows carry (compare them with bench_pool_overhead
//   and bench_process_pool); on, two clock reads and a store per task, and the file is written
//   after the timed round.
// - `--triad_timelines=DIR`: one traced run per workload and executor at the configuration the
//   report's tables use (2 workers), each written to DIR/<workload>.<executor>.json, which
//   bench_report draws as a timeline (a lane per worker, process or loop).

#include <triad/combinators.hpp>
#include <triad/process_pool.hpp>
#include <triad/task.hpp>
#include <triad/thread_pool.hpp>
#include <triad/trace.hpp>

#include "bench_common.hpp"
#include "workloads.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const int posts = triad_bench::quick() ? 100'000 : 1'000'000;
const int process_tasks = triad_bench::quick() ? 2'000 : 20'000;

std::size_t workers() {
    return triad::cpu_count();
}

fs::path scratch_trace() {
    return fs::temp_directory_path() /
           ("triad_bench_timeline." + std::to_string(::getpid()) + ".json");
}

void empty_task() {
    benchmark::ClobberMemory();
}

// One round per repetition (Iterations(1)): the tracer's buffers start empty each time, as
// they do for a program that turns tracing on once.
void post_round(benchmark::State& state, bool traced) {
    triad::thread_pool pool(workers());
    const auto round = [&] {
        for (int i = 0; i < posts; ++i)
            pool.post(empty_task);
        pool.wait_idle();
    };
    round(); // warm-up, untimed
    if (traced)
        triad::trace::start(scratch_trace(), {.max_events_per_thread = std::size_t(posts)});
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        round();
    triad_bench::set_items(state, posts);
    if (traced) {
        const triad::trace::summary s = triad::trace::stop();
        fs::remove(scratch_trace());
        if (s.events != static_cast<std::size_t>(posts))
            state.SkipWithError("the trace lost spans");
    }
}

int plus_one(int x) {
    return x + 1;
}

void process_round(benchmark::State& state, bool traced) {
    triad::process_pool pool(workers());
    std::vector<int> items(static_cast<std::size_t>(process_tasks));
    for (std::size_t i = 0; i < items.size(); ++i)
        items[i] = static_cast<int>(i);
    const auto round = [&] { return pool.map(&plus_one, items, {.chunk_size = 1}); };
    (void)round(); // warm-up, untimed
    if (traced)
        triad::trace::start(scratch_trace());
    triad_bench::measure_cost_from_here();
    std::vector<int> results;
    for (auto _ : state)
        results = round();
    triad_bench::set_items(state, process_tasks);
    if (traced) {
        const triad::trace::summary s = triad::trace::stop();
        fs::remove(scratch_trace());
        if (s.events != static_cast<std::size_t>(process_tasks))
            state.SkipWithError("the trace lost spans");
    }
    if (results.size() != items.size() || results.back() != process_tasks)
        state.SkipWithError("wrong results");
}

// --- timelines ------------------------------------------------------------------------------

long fib_forked(triad::thread_pool& pool, int n) {
    if (n < 2)
        return n;
    triad::future<long> child = pool.submit([&pool, n] { return fib_forked(pool, n - 1); });
    const long other = fib_forked(pool, n - 2);
    return child.get() + other;
}

triad::task<int> download(std::chrono::milliseconds latency) {
    co_await triad::sleep(latency);
    co_return 1;
}

// Traces `run` into DIR/<workload>.<executor>.json; false (with a message) if it went wrong.
template <class Run>
bool write_timeline(const fs::path& dir, const std::string& workload, const std::string& executor,
                    const std::string& title, Run run) {
    const fs::path path = dir / (workload + "." + executor + ".json");
    triad::trace::start(
        path, {.metadata = {{"workload", workload}, {"executor", executor}, {"title", title}}});
    const bool ok = run();
    const triad::trace::summary s = triad::trace::stop();
    std::printf("%s: %zu spans%s\n", path.c_str(), s.events, ok ? "" : " (WRONG RESULT)");
    return ok && s.events > 0 && s.dropped == 0;
}

int write_timelines(const fs::path& dir) {
    fs::create_directories(dir);
    const std::size_t n = workers();
    const std::string on_workers = std::to_string(n) + " workers";
    const auto& primes = triad_bench::prime_workload();
    const std::size_t prime_count = triad_bench::quick() ? 200 : primes.size();
    const std::vector<std::uint64_t> prime_inputs(primes.begin(),
                                                  primes.begin() + static_cast<long>(prime_count));
    bool ok = true;
    {
        triad::thread_pool pool(n);
        ok &= write_timeline(dir, "primes", "triad_threads",
                             "Prime checks, thread_pool::map, " + on_workers, [&] {
                                 const auto r = pool.map(&triad_bench::is_prime, prime_inputs);
                                 pool.wait_idle();
                                 return r.size() == prime_inputs.size();
                             });
    }
    {
        triad::process_pool pool(n);
        ok &= write_timeline(dir, "primes", "triad_processes",
                             "Prime checks, process_pool::map, " + on_workers, [&] {
                                 const auto r = pool.map(&triad_bench::is_prime, prime_inputs);
                                 return r.size() == prime_inputs.size();
                             });
    }
    {
        triad::thread_pool pool(n);
        const int fib_n = 22; // 28,656 forks: each a span, nested where a wait helps
        ok &= write_timeline(dir, "fib_tasks", "triad_threads",
                             "fib(22), a task per call (nested submit + get), " + on_workers, [&] {
                                 const long r = fib_forked(pool, fib_n);
                                 pool.wait_idle();
                                 return r == 17711;
                             });
    }
    {
        const std::size_t downloads = 200;
        ok &= write_timeline(dir, "downloads_200", "triad_loop",
                             "200 simulated downloads of 50 ms, coroutines on one event loop", [&] {
                                 const int done =
                                     triad::run(triad::make_task([&]() -> triad::task<int> {
                                         std::vector<triad::task<int>> tasks;
                                         for (std::size_t i = 0; i < downloads; ++i)
                                             tasks.push_back(download(50ms));
                                         int count = 0;
                                         for (int r : co_await triad::gather(std::move(tasks)))
                                             count += r;
                                         co_return count;
                                     }));
                                 return done == static_cast<int>(downloads);
                             });
    }
    return ok ? 0 : 1;
}

const bool registered = [] {
    const auto round = [](benchmark::internal::Benchmark* b) {
        b->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(1);
    };
    triad_bench::describe("trace_cost_post",
                          {"The tracer's cost: a million empty posts to a pool of 2, tracing off "
                           "and on",
                           "overhead", "task", ""});
    triad_bench::describe("trace_cost_process",
                          {"The tracer's cost: 20,000 one-item tasks on a process pool of 2, "
                           "tracing off and on",
                           "overhead", "task", ""});
    round(triad_bench::add("triad_threads", "trace_cost_post",
                           [](benchmark::State& s) { post_round(s, false); }));
    round(triad_bench::add("triad_threads_traced", "trace_cost_post",
                           [](benchmark::State& s) { post_round(s, true); }));
    round(triad_bench::add("triad_processes", "trace_cost_process",
                           [](benchmark::State& s) { process_round(s, false); }));
    round(triad_bench::add("triad_processes_traced", "trace_cost_process",
                           [](benchmark::State& s) { process_round(s, true); }));
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    const std::string flag = "--triad_timelines=";
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]).rfind(flag, 0) == 0)
            return write_timelines(std::string(argv[i]).substr(flag.size()));
    return triad_bench::run_benchmarks(argc, argv);
}
