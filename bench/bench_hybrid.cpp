// Fetch, then analyse: the Python course's hybrid exercise. K datasets each arrive after L ms
// (I/O), then each is analysed (CPU: the Python course's sum of sqrt(n) * log(n + 1) over M
// numbers). The hybrid fetches on the event loop and analyses on a process pool as each dataset
// arrives; it is measured against each tool alone and against the loop handing the analysis to
// threads.
//
// Shapes, the same for every executor here and in bench/python/hybrid.py:
//   - 8 datasets (4 in --quick), each "fetched" in 100 ms (30 ms), of 2,000,000 numbers (500,000).
//   - A fetch is a wait (a blocking sleep on a pool's worker, a timer on the loop) and then a copy
//     of the dataset, which is generated once before any timing (as received bytes are copied
//     from the socket): no executor generates data in its timed region.
//   - Every pool has 8 workers (4 in --quick), one per dataset, so every fetch is in flight at
//     once: triad_threads and triad_processes fetch and analyse on them; the hybrids' analysis
//     pools (processes, threads) have as many. The loop alone analyses on its own thread.
//   - Pools are built before the timed loop; the event loop too (one per benchmark, reused).

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

std::vector<std::uint32_t> generate_dataset(std::size_t id, std::size_t n) {
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

// Every dataset, generated once before any timing.
const std::vector<std::vector<std::uint32_t>>& all_datasets() {
    static const std::vector<std::vector<std::uint32_t>> datasets = [] {
        const sizes s = workload_sizes();
        std::vector<std::vector<std::uint32_t>> out;
        for (std::size_t i = 0; i < s.datasets; ++i)
            out.push_back(generate_dataset(i, s.numbers));
        return out;
    }();
    return datasets;
}

// What arrives: a copy of the dataset, made on whichever thread or process received it.
std::vector<std::uint32_t> received_dataset(std::size_t id, std::size_t n) {
    const std::vector<std::uint32_t>& source = all_datasets().at(id);
    return {source.begin(), source.begin() + static_cast<std::ptrdiff_t>(n)};
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
    return received_dataset(id, n);
}

double fetch_and_analyse(std::size_t id, std::size_t n, int latency_ms) {
    return analyse(fetch_blocking(id, n, latency_ms));
}

triad::task<std::vector<std::uint32_t>> fetch_async(std::size_t id, std::size_t n,
                                                    std::chrono::milliseconds latency) {
    co_await triad::sleep(latency);
    co_return received_dataset(id, n);
}

void finish(benchmark::State& state, const std::vector<double>& results) {
    const sizes s = workload_sizes();
    // set_items closes the run's cost window: the expected results below are not its cost.
    triad_bench::set_items(state, static_cast<double>(s.datasets));
    static std::vector<double> expected;
    if (expected.empty())
        for (std::size_t i = 0; i < s.datasets; ++i)
            expected.push_back(analyse(received_dataset(i, s.numbers)));
    if (results != expected)
        state.SkipWithError("wrong results");
}

void sequential(benchmark::State& state) {
    const sizes s = workload_sizes();
    std::vector<double> results;
    triad_bench::measure_cost_from_here();
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
    triad_bench::measure_cost_from_here();
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

// One worker per dataset, for every pool: every fetch is in flight at once. The pools' rows carry
// it as their argument ("workers:N").
std::size_t workers() {
    return workload_sizes().datasets;
}
std::size_t workers_of(const benchmark::State& state) {
    return static_cast<std::size_t>(state.range(0));
}

void triad_threads(benchmark::State& state) {
    triad::thread_pool pool(workers_of(state));
    fetch_and_analyse_on(state, pool);
}

void triad_processes(benchmark::State& state) {
    triad::process_pool pool(workers_of(state));
    fetch_and_analyse_on(state, pool);
}

// The loop alone: fetches overlap, the analyses run one after another on its thread.
void triad_loop(benchmark::State& state) {
    const sizes s = workload_sizes();
    triad::event_loop loop;
    std::vector<double> results;
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        results = loop.run(triad::make_task([&]() -> triad::task<std::vector<double>> {
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

// The loop fetches; Pool (processes, as in the Python course, or threads) analyses.
template <class Pool>
void triad_hybrid_on(benchmark::State& state) {
    const sizes s = workload_sizes();
    Pool pool(workers_of(state));
    triad::event_loop loop;
    std::vector<double> results;
    triad_bench::measure_cost_from_here();
    for (auto _ : state)
        results = loop.run(hybrid(pool, s));
    finish(state, results);
}

const bool registered = [] {
    const sizes s = workload_sizes();
    (void)all_datasets(); // generated before any benchmark runs
    const std::string w = "fetch_then_analyse";
    // The title names what decides the process hybrid on this VM. perf stat of a one-round run:
    // 77,000 page faults against 33,000 for the loop alone, 2 s of CPU for 8 datasets. Each dataset
    // it ships to a worker process goes through about 28 MB of fresh pages (serialised, piped,
    // read, rebuilt), and a first touch took 20-60 us a page here (wall time, under load): the
    // likely reason it took 29 ms per dataset in one full run and 123 ms in another.
    const std::string megabytes = std::to_string(s.numbers * sizeof(std::uint32_t) / 1000000);
    triad_bench::describe(
        w, {std::to_string(s.datasets) + " datasets fetched in " + std::to_string(s.fetch.count()) +
                " ms each, then analysed (" + std::to_string(s.numbers / 1000) +
                "k numbers each); every pool has " + std::to_string(workers()) +
                " workers; the process hybrid copies each " + megabytes +
                " MB dataset to a worker through fresh pages, whose page faults cost 20-60 us each "
                "on this VM, so its rows follow the host",
            "mixed", "dataset", ""});
    for (auto [executor, fn] :
         {std::pair{"sequential", &sequential}, std::pair{"triad_loop", &triad_loop}})
        triad_bench::add(executor, w, fn)->UseRealTime()->Unit(benchmark::kMillisecond);
    for (auto [executor, fn] :
         {std::pair{"triad_threads", &triad_threads},
          std::pair{"triad_processes", &triad_processes},
          std::pair{"triad_hybrid", &triad_hybrid_on<triad::process_pool>},
          std::pair{"triad_hybrid_threads", &triad_hybrid_on<triad::thread_pool>}})
        triad_bench::add(executor, w, fn)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond)
            ->ArgName("workers")
            ->Arg(static_cast<std::int64_t>(workers()));
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    return triad_bench::run_benchmarks(argc, argv);
}
