// A seeded, randomized stress test of triad::process_pool. Each round builds a pool with random
// settings (workers, recycling after a few tasks, a pool-wide timeout) and lets several threads
// submit tasks that finish, throw, crash, hang past their own timeout or the pool's, as well as
// maps and imaps, while another thread ends the pool in the middle of it all: shutdown (drain
// or cancel) or terminate(), some tasks cancelled by their futures. Every task counts its runs in
// shared memory; after each round it checks that no task ran twice, that each future's outcome
// agrees with what the task did (a result means it ran once; cancelled or refused means it never
// started, or was killed by terminate), and that no process of the pool is left.
//
//   stress_process_pool [--seconds N]      (default 20)
//   TRIAD_STRESS_SEED=<seed> replays a run; the seed is printed first.
#include <triad/process_pool.hpp>

#include "process_support.hpp"
#include "stress_main.hpp"
#include "support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

using namespace std::chrono_literals;
using triad_test::expect;

namespace {

// Runs of each task, in memory every worker shares (mapped before any pool).
constexpr std::size_t max_tasks = 1 << 20;
std::atomic<int>* const g_runs = [] {
    void* memory = ::mmap(nullptr, max_tasks * sizeof(std::atomic<int>), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED)
        std::abort();
    return static_cast<std::atomic<int>*>(memory);
}();

enum class kind : int { quick, slow, throws, crashes, hangs };

// The task: counts its run, then does what its kind says.
int act(int id, int what, int ms) {
    g_runs[id].fetch_add(1);
    switch (static_cast<kind>(what)) {
    case kind::quick:
        return id;
    case kind::slow:
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        return id;
    case kind::throws:
        throw std::runtime_error("expected");
    case kind::crashes:
        std::signal(SIGSEGV, SIG_DFL);
        std::raise(SIGSEGV);
        return -1;
    case kind::hangs:
        std::this_thread::sleep_for(std::chrono::seconds(30));
        return id;
    }
    return -1;
}

int item(int id) {
    g_runs[id].fetch_add(1);
    return id;
}

struct tracked {
    int id;
    kind what;
    bool own_timeout;
    triad::future<int> result;
    bool cancelled = false; // by future::cancel(), which said it will never run
};

class round_runner {
public:
    round_runner(std::uint64_t seed, int round, std::atomic<int>& next_id)
        : m_random(seed + static_cast<std::uint64_t>(round) * 7919), m_next_id(next_id) {}

    std::size_t run() {
        triad::process_pool_options options;
        options.processes = 1 + m_random() % 3;
        if (m_random() % 2 == 0)
            options.max_tasks_per_child = 2 + m_random() % 5;
        if (m_random() % 2 == 0)
            options.task_timeout = std::chrono::milliseconds(300 + m_random() % 300);
        triad::process_pool pool(options);
        const int submitters = 1 + static_cast<int>(m_random() % 3);
        const auto ending = static_cast<int>(m_random() % 3); // drain, cancel, terminate
        const auto end_after = std::chrono::milliseconds(50 + m_random() % 400);
        std::vector<std::thread> threads;
        std::vector<std::vector<tracked>> submitted(static_cast<std::size_t>(submitters));
        std::vector<std::vector<std::pair<std::vector<int>, std::optional<std::vector<int>>>>> maps(
            static_cast<std::size_t>(submitters));
        std::vector<std::uint64_t> seeds;
        for (int t = 0; t < submitters; ++t)
            seeds.push_back(m_random());
        for (int t = 0; t < submitters; ++t)
            threads.emplace_back([&, t] {
                submit_some(pool, seeds[static_cast<std::size_t>(t)],
                            submitted[static_cast<std::size_t>(t)],
                            maps[static_cast<std::size_t>(t)]);
            });
        std::this_thread::sleep_for(end_after);
        if (ending == 0)
            pool.shutdown();
        else if (ending == 1)
            pool.shutdown(triad::shutdown_mode::cancel);
        else
            pool.terminate();
        for (auto& thread : threads)
            thread.join();
        std::size_t tasks = 0;
        for (auto& list : submitted)
            for (auto& t : list) {
                check(t, ending == 2);
                ++tasks;
            }
        for (auto& list : maps)
            for (auto& [ids, values] : list) {
                for (int id : ids)
                    expect(g_runs[id].load() <= 1, "a map item ran twice");
                if (values) {
                    expect(*values == ids, "a map returned wrong values");
                    for (int id : ids)
                        expect(g_runs[id].load() == 1, "a returned map item did not run once");
                }
                tasks += ids.size();
            }
        return tasks;
    }

private:
    void
    submit_some(triad::process_pool& pool, std::uint64_t seed, std::vector<tracked>& out,
                std::vector<std::pair<std::vector<int>, std::optional<std::vector<int>>>>& maps) {
        std::mt19937_64 random(seed);
        for (int i = 0; i < 60; ++i) {
            const auto choice = random() % 100;
            try {
                if (choice < 10) {
                    std::vector<int> ids(1 + random() % 40);
                    for (int& id : ids)
                        id = m_next_id.fetch_add(1);
                    maps.emplace_back(ids, std::nullopt);
                    const bool use_imap = random() % 2 == 0;
                    try {
                        if (use_imap) {
                            std::vector<int> values;
                            for (int v : pool.imap(item, ids, {.chunk_size = 1 + random() % 8}))
                                values.push_back(v);
                            maps.back().second = values;
                        } else {
                            maps.back().second =
                                pool.map(item, ids, {.chunk_size = 1 + random() % 8});
                        }
                    } catch (const std::exception&) {
                        // ended by the shutdown racing it: items ran at most once
                    }
                    continue;
                }
                const int id = m_next_id.fetch_add(1);
                kind what = kind::quick;
                if (choice < 45)
                    what = kind::slow;
                else if (choice < 52)
                    what = kind::throws;
                else if (choice < 57)
                    what = kind::crashes;
                else if (choice < 60)
                    what = kind::hangs;
                const bool own_timeout = what == kind::hangs || random() % 10 == 0;
                const int ms = static_cast<int>(random() % 20);
                triad::future<int> f =
                    own_timeout
                        ? pool.submit({.timeout = 200ms}, act, id, static_cast<int>(what), ms)
                        : pool.submit(act, id, static_cast<int>(what), ms);
                out.push_back({id, what, own_timeout, std::move(f)});
                if (random() % 6 == 0) {
                    tracked& victim = out[random() % out.size()];
                    if (!victim.cancelled)
                        victim.cancelled = victim.result.cancel();
                }
            } catch (const triad::pool_closed&) {
                return; // the pool was shut down: nothing more is taken
            }
            if (random() % 8 == 0)
                std::this_thread::sleep_for(std::chrono::milliseconds(random() % 10));
        }
    }

    void check(tracked& t, bool terminated) {
        const int runs = g_runs[t.id].load();
        expect(runs <= 1,
               "task " + std::to_string(t.id) + " ran " + std::to_string(runs) + " times");
        if (t.cancelled) {
            expect(runs == 0, "task " + std::to_string(t.id) + " ran after cancel() returned true");
            expect(t.result.ready(), "a future cancelled by cancel() is not ready");
            try {
                (void)t.result.get();
                expect(false, "a future cancelled by cancel() returned a value");
            } catch (const triad::task_cancelled&) {
            } catch (const std::exception& e) {
                expect(false, std::string("cancelled by cancel(), but: ") + e.what());
            }
            return;
        }
        if (t.result.wait_for(60s) != std::future_status::ready) {
            expect(false, "a future was never completed");
            return;
        }
        try {
            const int value = t.result.get();
            expect(value == t.id, "a task returned the wrong value");
            expect(runs == 1, "a task with a result did not run exactly once");
            expect(t.what == kind::quick || t.what == kind::slow, "a failing task returned");
        } catch (const triad::remote_error&) {
            expect(t.what == kind::throws && runs == 1,
                   "remote_error from a task that did not throw");
        } catch (const triad::worker_died&) {
            // Only a task that started can fail with its worker (a crash, or killed under it).
            expect(runs == 1, "worker_died for a task that never ran");
        } catch (const triad::task_timeout&) {
            expect(runs == 1, "task_timeout for a task that never ran");
        } catch (const triad::task_cancelled&) {
            expect(runs == 0 || terminated, "cancelled, but the task ran (and was not terminated)");
        } catch (const std::exception& e) {
            expect(false, std::string("unexpected error: ") + e.what());
        }
    }

    std::mt19937_64 m_random;
    std::atomic<int>& m_next_id;
};

} // namespace

int main(int argc, char** argv) {
    std::atomic<int> next_id{0};
    return triad_test::stress_main(argc, argv, [&next_id](std::uint64_t seed, int round) {
        if (next_id.load() > static_cast<int>(max_tasks) - 10'000) {
            for (std::size_t i = 0; i < max_tasks; ++i)
                g_runs[i].store(0);
            next_id = 0;
        }
        round_runner runner(seed, round, next_id);
        const std::size_t tasks = runner.run();
        // Every process of the round's pool is gone once the pool is.
        const bool clean =
            triad_test::eventually([] { return triad_test::descendants().empty(); }, 10s);
        expect(clean, "processes of a finished pool were left behind");
        return tasks;
    });
}
