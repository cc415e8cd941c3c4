// Fetch, then analyse: the Python course's hybrid exercise. K datasets each arrive after L ms (I/O),
// then each is analysed (CPU: the Python course's sum of sqrt(n) * log(n + 1) over M numbers). The
// hybrid fetches on the event loop and analyses on a process pool as each dataset arrives;
// it is measured against each tool alone and against the loop handing the analysis to threads.

#include <triad/async.hpp>
#include <triad/process_pool.hpp>
#include <triad/thread_pool.hpp>

#include "bench_common.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

struct sizes {
    std::size_t datasets;
    std::chrono::milliseconds fetch;
    std::size_t numbers;
};

sizes workload_sizes() {
    return triad_bench::quick() ? sizes{4, std::chrono::milliseconds(30), 500'000}
                                : sizes{8, std::chrono::milliseconds(100), 2'000'000};
}

std::vector<std::uint32_t> make_dataset(std::size_t id, std::size_t n) {
    std::vector<std::uint32_t> numbers(n);
    std::uint64_t state = 0x9E3779B97F4A7C15ull * (id + 1);
    for (auto& v : numbers) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v = static_cast<std::uint32_t>(state % 1000) + 1;
    }
    return numbers;
}

// The Python course's cpu_intensive_analysis.
double analyse(std::vector<std::uint32_t> numbers) {
    double sum = 0;
    for (std::uint32_t n : numbers)
        sum += std::sqrt(static_cast<double>(n)) * std::log(static_cast<double>(n) + 1);
    return sum;
}

// A blocking fetch (a pool thread or process waits for the download).
std::vector<std::uint32_t> fetch_blocking(std::size_t id, std::size_t n, int latency_ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(latency_ms));
    return make_dataset(id, n);
}

double fetch_and_analyse(std::size_t id, std::size_t n, int latency_ms) {
    return analyse(fetch_blocking(id, n, latency_ms));
}

triad::task<std::vector<std::uint32_t>> fetch_async(std::size_t id, std::size_t n,
                                                    std::chrono::milliseconds latency) {
    co_await triad::sleep(latency);
    co_return make_dataset(id, n);
}

void finish(benchmark::State& state, const std::vector<double>& results) {
    const sizes s = workload_sizes();
    static std::vector<double> expected;
    if (expected.empty())
        for (std::size_t i = 0; i < s.datasets; ++i)
            expected.push_back(analyse(make_dataset(i, s.numbers)));
    if (results != expected)
        state.SkipWithError("wrong results");
    triad_bench::set_items(state, static_cast<double>(s.datasets));
}

void sequential(benchmark::State& state) {
    const sizes s = workload_sizes();
    std::vector<double> results;
    for (auto _ : state) {
        results.clear();
        for (std::size_t i = 0; i < s.datasets; ++i)
            results.push_back(fetch_and_analyse(i, s.numbers, static_cast<int>(s.fetch.count())));
    }
    finish(state, results);
}

// Each dataset fetched and analysed by one pool task: the pool's workers do both halves.
template <class Pool>
void fetch_and_analyse_on(benchmark::State& state, Pool& pool) {
    const sizes s = workload_sizes();
    std::vector<double> results;
    for (auto _ : state) {
        std::vector<triad::future<double>> futures;
        for (std::size_t i = 0; i < s.datasets; ++i)
            futures.push_back(
                pool.submit(fetch_and_analyse, i, s.numbers, static_cast<int>(s.fetch.count())));
        results.clear();
        for (auto& f : futures)
            results.push_back(f.get());
    }
    finish(state, results);
}

void triad_threads(benchmark::State& state) {
    triad::thread_pool pool(workload_sizes().datasets); // sized for the waiting
    fetch_and_analyse_on(state, pool);
}

void triad_processes(benchmark::State& state) {
    triad::process_pool pool(2 * triad::cpu_count());
    fetch_and_analyse_on(state, pool);
}

// The loop alone: fetches overlap, the analyses run one after another on its thread.
void triad_loop(benchmark::State& state) {
    const sizes s = workload_sizes();
    std::vector<double> results;
    for (auto _ : state) {
        results = triad::run(triad::make_task([&]() -> triad::task<std::vector<double>> {
            std::vector<triad::task<std::vector<std::uint32_t>>> fetches;
            for (std::size_t i = 0; i < s.datasets; ++i)
                fetches.push_back(fetch_async(i, s.numbers, s.fetch));
            std::vector<double> out;
            for (auto& data : co_await triad::gather(std::move(fetches)))
                out.push_back(analyse(std::move(data)));
            co_return out;
        }));
    }
    finish(state, results);
}

// The hybrid: each dataset goes to the analysis pool as soon as it has arrived.
template <class Pool>
triad::task<std::vector<double>> hybrid(Pool& pool, sizes s) {
    std::vector<triad::task<double>> pipelines;
    for (std::size_t i = 0; i < s.datasets; ++i)
        pipelines.push_back(triad::make_task([&pool, i, s]() -> triad::task<double> {
            std::vector<std::uint32_t> data = co_await fetch_async(i, s.numbers, s.fetch);
            co_return co_await pool.submit(analyse, std::move(data));
        }));
    co_return co_await triad::gather(std::move(pipelines));
}

// The loop fetches; Pool (processes, as in the Python course, or threads) analyses, one per core.
template <class Pool>
void triad_hybrid_on(benchmark::State& state) {
    const sizes s = workload_sizes();
    Pool pool(triad::cpu_count());
    std::vector<double> results;
    for (auto _ : state)
        results = triad::run(hybrid(pool, s));
    finish(state, results);
}

const bool registered = [] {
    const sizes s = workload_sizes();
    const std::string w = "fetch_then_analyse";
    triad_bench::describe(w, {std::to_string(s.datasets) + " datasets fetched in " +
                                  std::to_string(s.fetch.count()) + " ms each, then analysed (" +
                                  std::to_string(s.numbers / 1000) + "k numbers each)",
                              "mixed", "dataset", ""});
    for (auto [executor, fn] :
         {std::pair{"sequential", &sequential}, std::pair{"triad_threads", &triad_threads},
          std::pair{"triad_processes", &triad_processes}, std::pair{"triad_loop", &triad_loop},
          std::pair{"triad_hybrid", &triad_hybrid_on<triad::process_pool>},
          std::pair{"triad_hybrid_threads", &triad_hybrid_on<triad::thread_pool>}})
        triad_bench::add(executor, w, fn)->UseRealTime()->Unit(benchmark::kMillisecond);
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    return triad_bench::run_benchmarks(argc, argv);
}
