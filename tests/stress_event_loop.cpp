// A seeded, randomized stress test of the event loop. Each round runs a loop whose tasks draw
// random steps (sleeps, yields, semaphore sections, channel traffic, futures of a thread pool
// completing on its threads, timers on a second io_context run by another thread, timeouts,
// gather, when_any, task groups, nested tasks) while other tasks cancel them at random, another
// thread sets events and starts tasks with spawn_threadsafe, and run() ends with work still in
// flight. After each round it checks that every task that started ended exactly once, that no
// frame is left (every task's locals were destroyed), that the semaphore never admitted more
// than its permits, that every value sent was received at most once (exactly once unless its
// receiver was cancelled), and that the loop never stalls (everything here is woken by something
// the loop knows about; a stall fails the run at once). Leaks and races are the sanitizer builds'
// job.
//
//   stress_event_loop [--seconds N]      (default 20)
//   TRIAD_STRESS_SEED=<seed> replays a run; the seed is printed first.
#include <triad/async.hpp>
#include <triad/thread_pool.hpp>

#include "stress_main.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using triad_test::expect;

namespace {

struct step_failed : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Shared by the tasks of one round (all on the loop's thread, except the counters the other
// threads touch).
struct round_state {
    std::mt19937_64 rng;
    triad::thread_pool* pool = nullptr;
    boost::asio::io_context* foreign = nullptr;
    triad::semaphore limit{3};
    int in_section = 0;
    int section_peak = 0;
    triad::channel<int> channel{4};
    int next_value = 0;
    std::vector<int> received; // times each value was received
    std::vector<int> ends;     // times each task ended (its frame's locals destroyed)
    int live_frames = 0;
    std::vector<triad::task_handle<void>> handles;
    triad::event outside_event; // set by another thread
    bool stop_cancelling = false;

    int pick(int n) { return static_cast<int>(rng() % static_cast<std::uint64_t>(n)); }
};

// Lives in each task's frame: the task ended exactly once when it is destroyed exactly once.
struct frame_probe {
    round_state& s;
    std::size_t id;
    frame_probe(round_state& state) : s(state), id(state.ends.size()) {
        s.ends.push_back(0);
        ++s.live_frames;
    }
    frame_probe(const frame_probe&) = delete;
    frame_probe& operator=(const frame_probe&) = delete;
    ~frame_probe() {
        ++s.ends[id];
        --s.live_frames;
    }
};

triad::task<int> worker(round_state& s, int depth);

triad::task<int> leaf(round_state& s, int value) {
    frame_probe probe(s);
    if (s.pick(2) == 0)
        co_await triad::sleep(std::chrono::microseconds(s.pick(300)));
    co_return value;
}

triad::task<void> one_step(round_state& s, int depth) {
    frame_probe probe(s);
    switch (s.pick(depth > 2 ? 8 : 12)) {
    case 0:
        co_await triad::sleep(0ms);
        break;
    case 1:
        co_await triad::sleep(std::chrono::microseconds(s.pick(2000)));
        break;
    case 2: {
        auto permit = co_await s.limit.acquire_guard();
        s.section_peak = std::max(s.section_peak, ++s.in_section);
        struct leave {
            int& n;
            ~leave() { --n; }
        } leaving{s.in_section};
        co_await triad::sleep(std::chrono::microseconds(s.pick(500)));
        break;
    }
    case 3: {
        const int value = s.next_value++;
        s.received.push_back(0);
        co_await s.channel.send(value);
        break;
    }
    case 4: {
        if (auto value = co_await s.channel.receive())
            ++s.received[static_cast<std::size_t>(*value)];
        break;
    }
    case 5: {
        const int x = s.pick(1000);
        const int got = co_await s.pool->submit([x] {
            std::this_thread::sleep_for(std::chrono::microseconds(x % 200));
            return x * 2;
        });
        if (got != 2 * x)
            throw step_failed("a pool future gave the wrong value");
        break;
    }
    case 6: {
        boost::asio::steady_timer timer(*s.foreign, std::chrono::microseconds(s.pick(1000)));
        co_await timer.async_wait(triad::use_task);
        break;
    }
    case 7: {
        try {
            co_await triad::timeout(std::chrono::microseconds(s.pick(1000)), leaf(s, 1));
        } catch (const triad::timeout_error&) {
        }
        break;
    }
    case 8: {
        auto [a, b] = co_await triad::gather(leaf(s, 1), worker(s, depth + 1));
        if (a != 1 || b != depth + 1)
            throw step_failed("gather gave the wrong values");
        break;
    }
    case 9: {
        auto [index, value] = co_await triad::when_any(leaf(s, 7), worker(s, depth + 1));
        if ((index == 0 && std::get<0>(value) != 7) ||
            (index == 1 && std::get<1>(value) != depth + 1))
            throw step_failed("when_any gave the wrong value");
        break;
    }
    case 10: {
        triad::task_group group;
        for (int i = s.pick(4); i >= 0; --i)
            (void)group.spawn(worker(s, depth + 1));
        co_await group.join();
        break;
    }
    default: {
        const int got = co_await worker(s, depth + 1);
        if (got != depth + 1)
            throw step_failed("a nested task gave the wrong value");
        break;
    }
    }
}

triad::task<int> worker(round_state& s, int depth) {
    frame_probe probe(s);
    for (int steps = s.pick(6); steps > 0; --steps)
        co_await one_step(s, depth);
    co_return depth;
}

triad::task<void> worker_root(round_state& s) {
    (void)co_await worker(s, 0);
}

triad::task<void> canceller(round_state& s) {
    frame_probe probe(s);
    while (!s.stop_cancelling) {
        co_await triad::sleep(std::chrono::microseconds(200 + s.pick(800)));
        if (!s.handles.empty())
            s.handles[static_cast<std::size_t>(s.pick(static_cast<int>(s.handles.size())))]
                .cancel();
    }
}

triad::task<void> round_main(round_state& s, triad::event_loop& loop, std::thread& outsider,
                             int threadsafe_tasks, std::atomic<int>& threadsafe_done) {
    frame_probe probe(s);
    const int tasks = 20 + s.pick(60);
    for (int i = 0; i < tasks; ++i)
        s.handles.push_back(triad::spawn(worker_root(s)));
    auto cancelling = triad::spawn(canceller(s));
    // Every spawn_threadsafe happens before the event is set, so before run() can end: the
    // loop is not destroyed under this thread.
    outsider = std::thread([&loop, &s, &threadsafe_done, n = threadsafe_tasks] {
        std::vector<triad::future<int>> started;
        for (int i = 0; i < n; ++i)
            started.push_back(loop.spawn_threadsafe(triad::make_task([]() -> triad::task<int> {
                co_await triad::sleep(100us);
                co_return 3;
            })));
        std::this_thread::sleep_for(1ms);
        s.outside_event.set();
        for (auto& f : started) {
            try {
                if (f.get() == 3)
                    ++threadsafe_done;
            } catch (const triad::task_cancelled&) {
                ++threadsafe_done; // run() wound it down
            } catch (const triad::broken_promise&) {
                ++threadsafe_done; // posted, but run() had ended: dropped with the loop
            }
        }
    });
    co_await s.outside_event.wait();
    // Wait for a random share of the workers; run() cancels the rest and lets them unwind.
    const int awaited = s.pick(static_cast<int>(s.handles.size()) + 1);
    for (int i = 0; i < awaited; ++i) {
        try {
            co_await s.handles[static_cast<std::size_t>(i)];
        } catch (const triad::task_cancelled&) {
        } catch (const triad::timeout_error&) {
        }
    }
    s.stop_cancelling = true;
    s.channel.close();
    co_await cancelling;
    s.handles.clear(); // a failure they hold is reported to the loop's on_unhandled
}

std::size_t run_round(std::uint64_t seed, int round) {
    round_state s;
    s.rng.seed(seed + static_cast<std::uint64_t>(round) * 0x9E3779B97F4A7C15ULL);
    triad::thread_pool pool(2);
    s.pool = &pool;
    boost::asio::io_context foreign;
    auto foreign_work = boost::asio::make_work_guard(foreign);
    std::thread foreign_thread([&] { foreign.run(); });
    s.foreign = &foreign;

    // A lost wake-up with a timer still pending elsewhere (the canceller's) is no stall: it
    // would hang the round instead. Rounds take milliseconds; one that takes a minute failed.
    std::mutex round_mutex;
    std::condition_variable round_over;
    bool finished = false;
    std::thread watchdog([&] {
        std::unique_lock lock(round_mutex);
        if (!round_over.wait_for(lock, 60s, [&] { return finished; })) {
            std::fprintf(stderr, "stress: FAILED: round %d hung for 60 s (seed %llu)\n", round,
                         static_cast<unsigned long long>(seed));
            std::fflush(stderr);
            std::_Exit(1);
        }
    });
    std::atomic<int> threadsafe_done{0};
    const int threadsafe_tasks = s.pick(5);
    std::thread outsider;
    {
        triad::event_loop loop({.on_unhandled =
                                    [](std::exception_ptr error) {
                                        try {
                                            std::rethrow_exception(error);
                                        } catch (const triad::channel_closed&) {
                                            // a sender still waiting when the round closed it
                                        } catch (const std::exception& e) {
                                            expect(false,
                                                   std::string("a task failed: ") + e.what());
                                        }
                                    },
                                .stall_timeout = 2s,
                                .on_stall =
                                    [seed, round](const triad::stall_report& report) {
                                        // Everything here is woken by something the loop knows
                                        // of: a stall is a lost wake-up, and the loop would wait
                                        // for ever.
                                        std::fputs(report.text().c_str(), stderr);
                                        std::fprintf(stderr,
                                                     "stress: FAILED: the loop stalled (seed %llu, "
                                                     "round %d)\n",
                                                     static_cast<unsigned long long>(seed), round);
                                        std::fflush(stderr);
                                        std::_Exit(1);
                                    }});
        try {
            loop.run(round_main(s, loop, outsider, threadsafe_tasks, threadsafe_done));
        } catch (const std::exception& e) {
            expect(false, std::string("round threw: ") + e.what());
        }
    }
    outsider.join();
    foreign_work.reset();
    foreign_thread.join();
    {
        const std::lock_guard lock(round_mutex);
        finished = true;
    }
    round_over.notify_one();
    watchdog.join();

    const std::string where =
        " (seed " + std::to_string(seed) + ", round " + std::to_string(round) + ")";
    expect(s.live_frames == 0,
           std::to_string(s.live_frames) + " task frames were never destroyed" + where);
    for (std::size_t id = 0; id < s.ends.size(); ++id)
        expect(s.ends[id] == 1, "task " + std::to_string(id) + " ended " +
                                    std::to_string(s.ends[id]) + " times" + where);
    expect(s.section_peak <= 3,
           "the semaphore admitted " + std::to_string(s.section_peak) + " at once" + where);
    for (std::size_t v = 0; v < s.received.size(); ++v)
        expect(s.received[v] <= 1, "value " + std::to_string(v) + " was received " +
                                       std::to_string(s.received[v]) + " times" + where);
    expect(threadsafe_done == threadsafe_tasks,
           "spawn_threadsafe: " + std::to_string(threadsafe_done) + " of " +
               std::to_string(threadsafe_tasks) + " futures resolved" + where);
    return s.ends.size();
}

} // namespace

int main(int argc, char** argv) {
    return triad_test::stress_main(argc, argv, run_round);
}
