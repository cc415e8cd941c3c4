// How cheap is fine-grained nested parallelism? The standard benchmark of work-stealing
// schedulers (TBB, Taskflow, Cilk, libfork): a task forks a child, does the other half itself
// and joins, recursively. On 2 workers, in one process:
//
// - `fib_tasks`: fib(30) with no cutoff, one task per call with n >= 2 (1,346,268 tasks: each
//   call forks fib(n-1) and computes fib(n-2) itself, the Cilk idiom), so the scheduler's cost
//   per fork and join is all there is to measure;
// - `fib_cutoff`: the same below n < 16 done sequentially (1,596 tasks), as a user would write it;
// - `quicksort`: 10 million random ints, each partition forks its left part, down to 2,048
//   elements, which std::sort finishes (std::async: down to 156,250; see sort_async).
//
// Peers: triad's thread pool (nested `submit` + `get`: a worker waiting on a future runs other
// queued tasks meanwhile, its own newest first), oneTBB's `task_group` (run + wait, in a
// `task_arena` of 2: the calling thread takes one slot, as triad's waiting caller does not, so
// both have 2 threads at work), `std::async` with one thread per task (only with a cutoff: a
// thread for each of 1.3 million tasks is nobody's choice), and the work done sequentially.
// Target: triad at least 1.2x faster than oneTBB on `fib_tasks`.

#include <triad/thread_pool.hpp>

#include "bench_common.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#ifdef TRIAD_BENCH_HAVE_TBB
#include <tbb/task_arena.h>
#include <tbb/task_group.h>
#endif

namespace {

constexpr std::size_t workers = 2;

// --- fib ----------------------------------------------------------------------------------------

int fib_n() {
    return triad_bench::quick() ? 25 : 30;
}

// No cutoff: only fib(0) and fib(1) are leaves. With one, calls below it run sequentially.
constexpr int no_cutoff = 2;
constexpr int fib_cutoff = 16;

long fib_sequential(int n) {
    return n < 2 ? n : fib_sequential(n - 1) + fib_sequential(n - 2);
}

// The tasks a run forks: one per call at or above the cutoff.
double fib_tasks(int n, int cutoff) {
    return n < cutoff ? 0.0 : 1.0 + fib_tasks(n - 1, cutoff) + fib_tasks(n - 2, cutoff);
}

long fib_triad(triad::thread_pool& pool, int n, int cutoff) {
    if (n < cutoff)
        return fib_sequential(n);
    triad::future<long> child =
        pool.submit([&pool, n, cutoff] { return fib_triad(pool, n - 1, cutoff); });
    const long other = fib_triad(pool, n - 2, cutoff);
    return child.get() + other;
}

#ifdef TRIAD_BENCH_HAVE_TBB
long fib_tbb(int n, int cutoff) {
    if (n < cutoff)
        return fib_sequential(n);
    long child = 0;
    tbb::task_group group;
    group.run([&child, n, cutoff] { child = fib_tbb(n - 1, cutoff); });
    const long other = fib_tbb(n - 2, cutoff);
    group.wait();
    return child + other;
}
#endif

long fib_async(int n, int cutoff) {
    if (n < cutoff)
        return fib_sequential(n);
    std::future<long> child = std::async(std::launch::async, fib_async, n - 1, cutoff);
    const long other = fib_async(n - 2, cutoff);
    return child.get() + other;
}

// A round returns fib(n); a wrong value fails the run.
template <class Round>
void run_fib(benchmark::State& state, int cutoff, Round round) {
    const int n = fib_n();
    const long expected = fib_sequential(n);
    if (round(n, cutoff) != expected) { // the warm-up, untimed, as for every contender
        state.SkipWithError("wrong fib value");
        return;
    }
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        const long value = round(n, cutoff);
        if (value != expected) {
            state.SkipWithError("wrong fib value");
            break;
        }
        benchmark::DoNotOptimize(value);
    }
    triad_bench::set_items(state, fib_tasks(n, std::max(cutoff, no_cutoff)));
}

void triad_fib(benchmark::State& state, int cutoff) {
    triad::thread_pool pool(workers);
    run_fib(state, cutoff, [&pool](int n, int c) {
        return pool.submit([&pool, n, c] { return fib_triad(pool, n, c); }).get();
    });
}

#ifdef TRIAD_BENCH_HAVE_TBB
void tbb_fib(benchmark::State& state, int cutoff) {
    tbb::task_arena arena(static_cast<int>(workers));
    arena.initialize();
    run_fib(state, cutoff,
            [&arena](int n, int c) { return arena.execute([n, c] { return fib_tbb(n, c); }); });
}
#endif

void async_fib(benchmark::State& state, int cutoff) {
    run_fib(state, cutoff, [](int n, int c) { return fib_async(n, c); });
}

void sequential_fib(benchmark::State& state, int cutoff) {
    run_fib(state, cutoff, [](int n, int) { return fib_sequential(n); });
}

// --- quicksort ----------------------------------------------------------------------------------

constexpr std::ptrdiff_t sort_cutoff = 2048;

std::size_t sort_size() {
    return triad_bench::quick() ? 1'000'000 : 10'000'000;
}

const std::vector<int>& sort_input() {
    static const std::vector<int> input = [] {
        std::vector<int> v(sort_size());
        std::mt19937 random(12345);
        std::uniform_int_distribution<int> value(0, 1 << 30);
        for (int& x : v)
            x = value(random);
        return v;
    }();
    return input;
}

// Splits [first, last) around a median-of-three pivot: every element of the left part is at most
// every element of the right part, and neither part is empty (so the recursion ends).
int* partition_range(int* first, int* last) {
    int* middle = first + (last - first) / 2;
    const int pivot =
        std::max(std::min(*first, *middle), std::min(std::max(*first, *middle), *(last - 1)));
    int* left = first - 1;
    int* right = last;
    for (;;) { // Hoare's scheme
        do
            ++left;
        while (*left < pivot);
        do
            --right;
        while (*right > pivot);
        if (left >= right)
            return right + 1;
        std::iter_swap(left, right);
    }
}

// The same recursion as the parallel rows without the forks, so that the speedup over it is the
// parallelism alone (std::sort of the whole array is another algorithm).
void sort_sequential(int* first, int* last) {
    if (last - first < sort_cutoff) {
        std::sort(first, last);
        return;
    }
    int* split = partition_range(first, last);
    sort_sequential(first, split);
    sort_sequential(split, last);
}

void sort_triad(triad::thread_pool& pool, int* first, int* last) {
    if (last - first < sort_cutoff) {
        std::sort(first, last);
        return;
    }
    int* split = partition_range(first, last);
    triad::future<void> left =
        pool.submit([&pool, first, split] { sort_triad(pool, first, split); });
    sort_triad(pool, split, last);
    left.get();
}

#ifdef TRIAD_BENCH_HAVE_TBB
void sort_tbb(int* first, int* last) {
    if (last - first < sort_cutoff) {
        std::sort(first, last);
        return;
    }
    int* split = partition_range(first, last);
    tbb::task_group group;
    group.run([first, split] { sort_tbb(first, split); });
    sort_tbb(split, last);
    group.wait();
}
#endif

// A thread per part down to 2,048 elements is some 10,000 threads, thousands of them alive at
// once (the machine's load average passed 1,000): std::async forks only parts of at least a 64th
// of the input (about 100 threads), as a user of threads would.
std::ptrdiff_t async_sort_cutoff() {
    return static_cast<std::ptrdiff_t>(sort_size() / 64);
}

void sort_async(int* first, int* last) {
    if (last - first < async_sort_cutoff()) {
        std::sort(first, last);
        return;
    }
    int* split = partition_range(first, last);
    std::future<void> left = std::async(std::launch::async, sort_async, first, split);
    sort_async(split, last);
    left.get();
}

// A round sorts `data` in place; a result that is not the sorted input fails the run.
template <class Round>
void run_sort(benchmark::State& state, Round round) {
    static const std::vector<int> expected = [] {
        std::vector<int> v = sort_input();
        std::sort(v.begin(), v.end());
        return v;
    }();
    std::vector<int> data = sort_input();
    round(data.data(), data.data() + data.size()); // the warm-up, untimed
    if (data != expected) {
        state.SkipWithError("quicksort: the result is not the sorted input");
        return;
    }
    triad_bench::measure_cost_from_here();
    for (auto _ : state) {
        state.PauseTiming(); // the copy of the input is not part of the sort
        data = sort_input();
        state.ResumeTiming();
        round(data.data(), data.data() + data.size());
        benchmark::ClobberMemory();
    }
    if (data != expected)
        state.SkipWithError("quicksort: the result is not the sorted input");
    triad_bench::set_items(state, static_cast<double>(sort_size()));
}

void triad_sort(benchmark::State& state) {
    triad::thread_pool pool(workers);
    run_sort(state, [&pool](int* first, int* last) {
        pool.submit([&pool, first, last] { sort_triad(pool, first, last); }).get();
    });
}

#ifdef TRIAD_BENCH_HAVE_TBB
void tbb_sort(benchmark::State& state) {
    tbb::task_arena arena(static_cast<int>(workers));
    arena.initialize();
    run_sort(state, [&arena](int* first, int* last) {
        arena.execute([first, last] { sort_tbb(first, last); });
    });
}
#endif

void async_sort(benchmark::State& state) {
    run_sort(state, sort_async);
}

void sequential_sort(benchmark::State& state) {
    run_sort(state, sort_sequential);
}

const bool registered = [] {
    const auto timed = [](benchmark::internal::Benchmark* b) {
        return b->UseRealTime()->Unit(benchmark::kMillisecond);
    };
    // The configuration a row ran with, in its name, so the report can show it.
    const auto with = [&](benchmark::internal::Benchmark* b, const char* name, int64_t value) {
        return timed(b)->ArgName(name)->Arg(value);
    };
    const std::string fib = "fib(" + std::to_string(fib_n()) + ")";
    triad_bench::describe(
        "fib_tasks", {fib + ", a task per call (no cutoff), 2 workers", "forkjoin", "task", ""});
    triad_bench::describe("fib_cutoff",
                          {fib + ", sequential below n < 16, 2 workers", "forkjoin", "task", ""});
    triad_bench::describe("quicksort",
                          {"Parallel quicksort of " + std::to_string(sort_size() / 1'000'000) +
                               " million ints (std::sort below 2,048), 2 workers",
                           "forkjoin", "element", ""});

    timed(triad_bench::add("triad_threads", "fib_tasks",
                           [](benchmark::State& s) { triad_fib(s, no_cutoff); }));
#ifdef TRIAD_BENCH_HAVE_TBB
    timed(triad_bench::add("tbb_task_group", "fib_tasks",
                           [](benchmark::State& s) { tbb_fib(s, no_cutoff); }));
#endif
    timed(triad_bench::add("sequential", "fib_tasks",
                           [](benchmark::State& s) { sequential_fib(s, no_cutoff); }));

    // Here the argument is the cutoff: the table shows it with each row.
    with(triad_bench::add("triad_threads", "fib_cutoff",
                          [](benchmark::State& s) { triad_fib(s, fib_cutoff); }),
         "cutoff", fib_cutoff);
#ifdef TRIAD_BENCH_HAVE_TBB
    with(triad_bench::add("tbb_task_group", "fib_cutoff",
                          [](benchmark::State& s) { tbb_fib(s, fib_cutoff); }),
         "cutoff", fib_cutoff);
#endif
    with(triad_bench::add("std_async", "fib_cutoff",
                          [](benchmark::State& s) { async_fib(s, fib_cutoff); }),
         "cutoff", fib_cutoff);
    timed(triad_bench::add("sequential", "fib_cutoff",
                           [](benchmark::State& s) { sequential_fib(s, fib_cutoff); }));

    with(triad_bench::add("triad_threads", "quicksort", triad_sort), "cutoff", sort_cutoff);
#ifdef TRIAD_BENCH_HAVE_TBB
    with(triad_bench::add("tbb_task_group", "quicksort", tbb_sort), "cutoff", sort_cutoff);
#endif
    with(triad_bench::add("std_async", "quicksort", async_sort), "cutoff", async_sort_cutoff());
    timed(triad_bench::add("sequential", "quicksort", sequential_sort));
    return true;
}();

} // namespace

int main(int argc, char** argv) {
    return triad_bench::run_benchmarks(argc, argv);
}
