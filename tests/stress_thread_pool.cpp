// A seeded, randomized stress test of triad::thread_pool and its futures. Each round builds a
// pool, lets several outside threads and the pool's own tasks hammer it with everything it
// offers (submit, cancel, post, map, nested waits of random depth, timed waits, then, then on the
// pool, share, as_completed left early, exceptions) while another thread shuts it down (drain or
// cancel) in the middle of it all. After each round it checks that every task's callable was
// either run or dropped, exactly once; that every future is ready; and that each map item ran at
// most once (exactly once if the map returned). Leaks are the sanitizer builds' job.
//
//   stress_thread_pool [--seconds N]      (default 20)
//   TRIAD_STRESS_SEED=<seed> replays a run; the seed is printed first.
#include <triad/future.hpp>
#include <triad/thread_pool.hpp>

#include "stress_main.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using triad_test::expect;

namespace {

struct failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// What happened to each task's callable: run, or destroyed without running.
class ledger {
public:
    std::size_t open() {
        std::lock_guard lock(m_mutex);
        m_runs.push_back(std::make_unique<std::atomic<int>>(0));
        m_drops.push_back(std::make_unique<std::atomic<int>>(0));
        return m_runs.size() - 1;
    }
    void ran(std::size_t id) { ++*slot(m_runs, id); }
    void dropped(std::size_t id) { ++*slot(m_drops, id); }
    // cancel() said this task will never run.
    void cancelled(std::size_t id) {
        std::lock_guard lock(m_mutex);
        m_cancelled.push_back(id);
    }
    // A task that was never handed to the pool (its submit threw) counts as dropped.
    void check(std::uint64_t seed, int round) {
        std::lock_guard lock(m_mutex);
        for (std::size_t id = 0; id < m_runs.size(); ++id) {
            const int runs = *m_runs[id];
            const int drops = *m_drops[id];
            expect(runs + drops == 1 && runs <= 1,
                   "seed " + std::to_string(seed) + " round " + std::to_string(round) + ": task " +
                       std::to_string(id) + " ran " + std::to_string(runs) + " times, dropped " +
                       std::to_string(drops) + " times");
        }
        for (std::size_t id : m_cancelled)
            expect(*m_runs[id] == 0, "seed " + std::to_string(seed) + " round " +
                                         std::to_string(round) + ": task " + std::to_string(id) +
                                         " ran after cancel() returned true");
    }
    std::size_t size() {
        std::lock_guard lock(m_mutex);
        return m_runs.size();
    }

private:
    std::atomic<int>* slot(std::vector<std::unique_ptr<std::atomic<int>>>& v, std::size_t id) {
        std::lock_guard lock(m_mutex);
        return v[id].get();
    }
    std::mutex m_mutex;
    std::vector<std::unique_ptr<std::atomic<int>>> m_runs;
    std::vector<std::unique_ptr<std::atomic<int>>> m_drops;
    std::vector<std::size_t> m_cancelled;
};

// A callable that records whether it ran; destroyed unrun, it records a drop. Moved-from copies
// record nothing.
template <class Fn>
class tracked {
public:
    tracked(ledger& book, Fn fn) : m_book(&book), m_id(book.open()), m_fn(std::move(fn)) {}
    tracked(tracked&& other) noexcept
        : m_book(std::exchange(other.m_book, nullptr)), m_id(other.m_id),
          m_fn(std::move(other.m_fn)), m_ran(other.m_ran) {}
    tracked& operator=(tracked&&) = delete;
    ~tracked() {
        if (m_book != nullptr && !m_ran)
            m_book->dropped(m_id);
    }
    std::size_t id() const { return m_id; }
    auto operator()() {
        m_ran = true;
        m_book->ran(m_id);
        return m_fn();
    }

private:
    ledger* m_book;
    std::size_t m_id;
    Fn m_fn;
    bool m_ran = false;
};

template <class Fn>
tracked<Fn> track(ledger& book, Fn fn) {
    return tracked<Fn>(book, std::move(fn));
}

// Futures kept to be checked for readiness once the pool is gone.
struct kept {
    std::mutex mutex;
    std::vector<triad::future<int>> futures;
    std::vector<triad::shared_future<int>> shared;
    void keep(triad::future<int> f) {
        std::lock_guard lock(mutex);
        futures.push_back(std::move(f));
    }
    void keep(triad::shared_future<int> f) {
        std::lock_guard lock(mutex);
        shared.push_back(std::move(f));
    }
};

class round_runner {
public:
    round_runner(std::uint64_t seed, int round) : m_seed(seed), m_round(round) {}

    void run() {
        std::mt19937_64 rng(m_seed * 1'000'003 + static_cast<std::uint64_t>(m_round));
        const std::size_t threads = 1 + rng() % 4;
        const int producers = 1 + static_cast<int>(rng() % 3);
        const bool cancel = rng() % 2 == 0;
        const auto shutdown_after = std::chrono::milliseconds(5 + rng() % 60);
        {
            triad::thread_pool pool(triad::thread_pool_options{
                .threads = threads,
                .on_error = [](std::exception_ptr) {}, // posted tasks throw on purpose
            });
            m_pool = &pool;
            std::vector<std::thread> outside;
            for (int p = 0; p < producers; ++p)
                outside.emplace_back([this, seed = rng()] { produce(seed); });
            std::this_thread::sleep_for(shutdown_after);
            pool.shutdown(cancel ? triad::shutdown_mode::cancel : triad::shutdown_mode::drain);
            for (auto& t : outside)
                t.join();
            m_pool = nullptr;
        }
        for (auto& f : m_kept.futures)
            expect(f.ready(), "seed " + std::to_string(m_seed) + " round " +
                                  std::to_string(m_round) + ": a future was left unready");
        for (auto& f : m_kept.shared)
            expect(f.ready(), "a shared future was left unready");
        m_book.check(m_seed, m_round);
        m_tasks = m_book.size();
    }

    std::size_t tasks() const { return m_tasks; }

private:
    // Outside threads: random operations until the pool refuses work.
    void produce(std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        try {
            for (;;)
                one_operation(rng, 0);
        } catch (const triad::pool_closed&) {
        }
    }

    // One random operation; from a task when depth > 0. Throws pool_closed once the pool
    // refuses (only outside threads see that).
    void one_operation(std::mt19937_64& rng, int depth) {
        triad::thread_pool& pool = *m_pool;
        switch (rng() % 10) {
        case 0: { // submit and sometimes wait, or cancel
            auto task = track(m_book, [] { return 1; });
            const std::size_t id = task.id();
            auto f = pool.submit(std::move(task));
            const auto what = rng() % 3;
            if (what == 0) {
                consume(f);
            } else if (what == 1 && f.cancel()) {
                m_book.cancelled(id);
                expect(f.ready(), "a future cancelled by cancel() is not ready");
                try {
                    (void)f.get();
                    expect(false, "a future cancelled by cancel() returned a value");
                } catch (const triad::task_cancelled&) {
                }
            } else {
                m_kept.keep(std::move(f));
            }
            break;
        }
        case 1: // post, sometimes throwing
            if (rng() % 4 == 0)
                pool.post(track(m_book, []() -> int { throw failure("posted (expected)"); }));
            else
                pool.post(track(m_book, [] { return 0; }));
            break;
        case 2: { // nested submit-and-wait chain of random depth
            const int levels = static_cast<int>(rng() % 8);
            auto f = pool.submit(track(m_book, [this, levels] { return chain(levels); }));
            consume(f);
            break;
        }
        case 3: { // a task that does random operations itself
            if (depth < 2) {
                auto f = pool.submit(track(m_book, [this, s = rng(), depth] {
                    std::mt19937_64 inner(s);
                    for (int i = 0; i < 3; ++i)
                        one_operation(inner, depth + 1);
                    return 1;
                }));
                consume(f);
            }
            break;
        }
        case 4: { // map, maybe throwing on one item
            const std::size_t n = 1 + rng() % 300;
            const std::size_t bad = rng() % 4 == 0 ? rng() % n : n;
            std::vector<std::atomic<int>> hits(n);
            std::vector<std::size_t> items(n);
            for (std::size_t i = 0; i < n; ++i)
                items[i] = i;
            bool returned = false;
            try {
                pool.map(
                    [&](std::size_t i) {
                        ++hits[i];
                        if (i == bad)
                            throw failure("map item (expected)");
                        return i;
                    },
                    items, {.chunk_size = rng() % 3 == 0 ? 1 + rng() % 16 : 0});
                returned = true;
            } catch (const failure&) {
            } catch (const triad::task_cancelled&) {
            }
            for (auto& h : hits)
                expect(h <= 1, "a map item ran twice");
            if (returned)
                for (auto& h : hits)
                    expect(h == 1, "a map returned with an item not run");
            break;
        }
        case 5: { // timed wait on something slow
            auto f = pool.submit(track(m_book, [] {
                std::this_thread::sleep_for(200us);
                return 1;
            }));
            (void)f.wait_for(std::chrono::microseconds(rng() % 500));
            m_kept.keep(std::move(f));
            break;
        }
        case 6: { // then, inline and on the pool
            auto f = pool.submit(track(m_book, [] { return 1; }));
            if (rng() % 2 == 0) {
                m_kept.keep(std::move(f).then([](triad::future<int> x) { return x.get(); }));
            } else {
                m_kept.keep(std::move(f).then(pool, [](triad::future<int> x) { return x.get(); }));
            }
            break;
        }
        case 7: { // share, several readers
            auto shared = pool.submit(track(m_book, [] { return 1; })).share();
            for (int i = 0; i < 3; ++i)
                m_kept.keep(shared.then([](triad::shared_future<int> s) { return s.get(); }));
            if (rng() % 2 == 0)
                consume_shared(shared);
            m_kept.keep(std::move(shared));
            break;
        }
        case 8: { // as_completed, left early
            std::vector<triad::future<int>> batch;
            const std::size_t n = 1 + rng() % 6;
            for (std::size_t i = 0; i < n; ++i)
                batch.push_back(pool.submit(track(m_book, [] { return 1; })));
            const std::size_t stop_after = rng() % (n + 1);
            std::size_t seen = 0;
            try {
                for (auto& f : triad::as_completed(batch)) {
                    consume(f);
                    if (++seen >= stop_after)
                        break;
                }
            } catch (const triad::task_cancelled&) {
            }
            for (auto& f : batch) // the rest can take continuations again
                if (f.valid())
                    m_kept.keep(std::move(f).then([](triad::future<int> x) { return x.get(); }));
            break;
        }
        default: { // a task that throws
            auto f = pool.submit(track(m_book, []() -> int { throw failure("expected"); }));
            try {
                (void)f.get();
                expect(false, "a throwing task returned");
            } catch (const failure&) {
            } catch (const triad::task_cancelled&) {
            }
            break;
        }
        }
    }

    int chain(int levels) {
        if (levels == 0)
            return 1;
        auto f = m_pool->submit(track(m_book, [this, levels] { return chain(levels - 1); }));
        try {
            return f.get();
        } catch (const triad::task_cancelled&) {
            return 1; // a cancelling shutdown got there first
        }
    }

    static void consume(triad::future<int>& f) {
        try {
            expect(f.get() == 1, "a task returned the wrong value");
        } catch (const triad::task_cancelled&) {
        } catch (const failure&) {
        }
    }
    static void consume_shared(const triad::shared_future<int>& f) {
        try {
            expect(f.get() == 1, "a shared future returned the wrong value");
        } catch (const triad::task_cancelled&) {
        }
    }

    std::uint64_t m_seed;
    int m_round;
    triad::thread_pool* m_pool = nullptr;
    ledger m_book;
    kept m_kept;
    std::size_t m_tasks = 0;
};

} // namespace

int main(int argc, char** argv) {
    return triad_test::stress_main(argc, argv, [](std::uint64_t seed, int round) {
        round_runner runner(seed, round);
        runner.run();
        return runner.tasks();
    });
}
