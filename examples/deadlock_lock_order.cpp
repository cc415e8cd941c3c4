// Lesson: two threads that take the same two locks in opposite orders deadlock; take them in one
// order, or all at once. Mirrors the Python course's deadlock example (task1 and task2 with lock1
// and lock2, fixed by "always acquire locks in the same order"), as two bank accounts with money
// moving both ways.
//
// The naive version would hang forever, so it waits for its second lock with a timeout
// (std::timed_mutex): the program always ends, and says what each thread held and waited for.
// A barrier between the first and the second lock makes the deadlock certain rather than likely.
// Then three fixes, each moving money both ways at once with exact final balances: one lock
// order everywhere (the course's fix), std::scoped_lock (locks both, all or none, in any
// order) and triad::synchronize (the same for triad::synchronized values).
//
// Usage: deadlock_lock_order [transfers=100000] [timeout_ms=200]

#include <triad/synchronized.hpp>

#include <fmt/core.h>

#include <barrier>
#include <chrono>
#include <cstdlib>
#include <latch>
#include <mutex>
#include <string>
#include <thread>

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

struct account {
    std::string name;
    long balance;
    std::timed_mutex mutex;
};

// Thread `who` moves money from `from` to `to` the naive way: lock `from`, then `to`. Returns
// true if it got both.
bool naive_transfer(int who, account& from, account& to, long amount, std::barrier<>& both,
                    std::chrono::milliseconds timeout) {
    std::unique_lock first(from.mutex);
    fmt::print("thread {}: holds account {}, now locking account {}\n", who, from.name, to.name);
    both.arrive_and_wait(); // both threads now hold their first lock
    const bool got_second = to.mutex.try_lock_for(timeout); // gives up instead of hanging
    // Neither lets go until both have tried, so each one's wait really is for the other.
    both.arrive_and_wait();
    if (!got_second) {
        fmt::print("thread {}: gave up on account {} after {} ms while holding account {}\n", who,
                   to.name, timeout.count(), from.name);
        return false;
    }
    from.balance -= amount;
    to.balance += amount;
    to.mutex.unlock();
    return true;
}

bool naive(std::chrono::milliseconds timeout) {
    fmt::print("=== Naive nested locking: thread 1 moves A -> B while thread 2 moves B -> A ===\n");
    account a{"A", 1000, {}};
    account b{"B", 1000, {}};
    std::barrier<> both(2);
    bool done1 = false;
    bool done2 = false;
    const auto start = clock_type::now();
    std::thread t1([&] { done1 = naive_transfer(1, a, b, 100, both, timeout); });
    std::thread t2([&] { done2 = naive_transfer(2, b, a, 50, both, timeout); });
    t1.join();
    t2.join();
    const double seconds = seconds_since(start);
    if (done1 || done2) {
        fmt::print("no deadlock: a thread got both locks; the lesson did not show\n");
        return false;
    }
    fmt::print("deadlock detected after {:.2f} s: thread 1 held A and waited for B, thread 2 held "
               "B and waited for A; without the timeout both would wait forever\n",
               seconds);
    fmt::print("both transfers abandoned, balances unchanged: A {}, B {}\n\n", a.balance,
               b.balance);
    return a.balance == 1000 && b.balance == 1000;
}

// Thread 1 makes `transfers` transfers of 3 from A to B while thread 2 makes as many of 2 from
// B to A, starting together; `move(from, to, amount)` is the fix under test.
template <class Account, class Move, class BalanceOf>
bool both_ways(const char* title, const char* label, Account& a, Account& b, int transfers,
               Move move, BalanceOf balance_of) {
    fmt::print("=== {} ===\n", title);
    std::latch ready(2);
    const auto start = clock_type::now();
    std::thread t1([&] {
        ready.arrive_and_wait();
        for (int i = 0; i < transfers; ++i)
            move(a, b, 3);
    });
    std::thread t2([&] {
        ready.arrive_and_wait();
        for (int i = 0; i < transfers; ++i)
            move(b, a, 2);
    });
    t1.join();
    t2.join();
    const double seconds = seconds_since(start);
    const long expected_a = 1'000'000 - static_cast<long>(transfers);
    const long expected_b = 1'000'000 + static_cast<long>(transfers);
    const long got_a = balance_of(a);
    const long got_b = balance_of(b);
    const bool exact = got_a == expected_a && got_b == expected_b;
    fmt::print("{} transfers each way in {:.3f} s ({:.0f} per second), no deadlock\n", transfers,
               seconds, 2.0 * transfers / seconds);
    fmt::print("{}: final balances A {} (expected {}), B {} (expected {}): {}\n\n", label, got_a,
               expected_a, got_b, expected_b, exact ? "exact" : "WRONG");
    return exact;
}

} // namespace

int main(int argc, char** argv) {
    const int transfers = argc > 1 ? std::atoi(argv[1]) : 100'000;
    const int timeout_ms = argc > 2 ? std::atoi(argv[2]) : 200;
    if (transfers < 1 || timeout_ms < 1) {
        fmt::print(stderr, "usage: {} [transfers >= 1] [timeout_ms >= 1]\n", argv[0]);
        return 2;
    }
    bool ok = naive(std::chrono::milliseconds(timeout_ms));

    const auto balance = [](account& x) { return x.balance; };
    {
        account a{"A", 1'000'000, {}};
        account b{"B", 1'000'000, {}};
        ok = both_ways(
                 "Fix 1: one lock order everywhere (A before B), the Python course's fix",
                 "one lock order", a, b, transfers,
                 [](account& from, account& to, long amount) {
                     account& first = from.name < to.name ? from : to;
                     account& second = from.name < to.name ? to : from;
                     std::lock_guard lock_first(first.mutex);
                     std::lock_guard lock_second(second.mutex);
                     from.balance -= amount;
                     to.balance += amount;
                 },
                 balance) &&
             ok;
    }
    {
        account a{"A", 1'000'000, {}};
        account b{"B", 1'000'000, {}};
        ok = both_ways(
                 "Fix 2: std::scoped_lock takes both locks at once, in any order",
                 "std::scoped_lock", a, b, transfers,
                 [](account& from, account& to, long amount) {
                     std::scoped_lock both(from.mutex, to.mutex);
                     from.balance -= amount;
                     to.balance += amount;
                 },
                 balance) &&
             ok;
    }
    {
        triad::synchronized<long> a{1'000'000};
        triad::synchronized<long> b{1'000'000};
        ok = both_ways(
                 "Fix 3: triad::synchronize locks both triad::synchronized balances at once",
                 "triad::synchronize", a, b, transfers,
                 [](triad::synchronized<long>& from, triad::synchronized<long>& to, long amount) {
                     auto [source, target] = triad::synchronize(from, to);
                     *source -= amount;
                     *target += amount;
                 },
                 [](triad::synchronized<long>& x) { return x.copy(); }) &&
             ok;
    }
    fmt::print("{}\n", ok ? "All checks passed: the deadlock was detected, and every fix avoided "
                            "it with exact balances."
                          : "A check FAILED (see above).");
    return ok ? 0 : 1;
}
