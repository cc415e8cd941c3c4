// Lesson: a read-modify-write that other threads can interleave loses updates, and a lock (or
// one atomic step) makes it whole. Mirrors the Python course's UnsafeCounter vs SafeCounter
// (five threads, a pause between reading and writing the count) and its BankAccount with Alice,
// Bob and Charlie depositing and withdrawing at once.
//
// In C++ two threads touching a plain variable without a lock is a data race: undefined
// behaviour, where the compiler may assume it never happens. So the unsafe versions here race on
// a std::atomic read and a separate std::atomic write: every access is defined (and clean under
// ThreadSanitizer), yet the read-modify-write as a whole is not atomic, so updates are lost
// exactly as in the course. Then three fixes: one atomic fetch_add, a std::mutex, and
// triad::synchronized, which keeps the value and its mutex together.
//
// Usage: race_conditions [threads=5] [increments=1000] [pause_us=100] [people=3]
//                        [transactions=5]

#include <triad/synchronized.hpp>

#include <fmt/core.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <latch>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// Runs body(index) on `count` threads that start together (a latch), and returns the time taken.
double run_together(int count, const std::function<void(int)>& body) {
    const auto start = clock_type::now();
    std::latch ready(count);
    std::vector<std::thread> threads;
    for (int t = 0; t < count; ++t)
        threads.emplace_back([&, t] {
            ready.arrive_and_wait();
            body(t);
        });
    for (auto& thread : threads)
        thread.join();
    return seconds_since(start);
}

// The race shows when threads overlap, which a loaded machine may not give every time: the
// unsafe demonstrations retry a bounded number of times and say how many it took.
constexpr int max_attempts = 20;

std::string dollars(long cents) {
    const long magnitude = cents < 0 ? -cents : cents;
    return fmt::format("{}${}.{:02}", cents < 0 ? "-" : "", magnitude / 100, magnitude % 100);
}

// ---------------------------------------------------------------------------------------------
// Counters

struct counter_setup {
    int threads;
    int increments;
    std::chrono::microseconds pause; // the course's time.sleep(0.01) between read and write
};

bool report_counter(const char* name, long expected, long actual, double seconds,
                    const std::string& note = "") {
    fmt::print("{:<22}: expected {}, got {}, lost updates: {}{}, {:.3f} s\n", name, expected,
               actual, expected - actual, note, seconds);
    return expected == actual;
}

// UnsafeCounter: read, pause, write back. Each access is atomic, the increment is not.
long unsafe_count(const counter_setup& s, double& seconds) {
    std::atomic<long> count{0};
    seconds = run_together(s.threads, [&](int) {
        for (int i = 0; i < s.increments; ++i) {
            const long current = count.load();
            std::this_thread::sleep_for(s.pause); // another thread reads the same value here
            count.store(current + 1);             // ... and one of the two writes is lost
        }
    });
    return count.load();
}

// Fix 1: the read-modify-write as one atomic instruction (the pause stays, outside it).
long atomic_count(const counter_setup& s, double& seconds) {
    std::atomic<long> count{0};
    seconds = run_together(s.threads, [&](int) {
        for (int i = 0; i < s.increments; ++i) {
            std::this_thread::sleep_for(s.pause);
            count.fetch_add(1);
        }
    });
    return count.load();
}

// Fix 2: SafeCounter, a mutex around read, pause and write.
long mutex_count(const counter_setup& s, double& seconds) {
    long count = 0;
    std::mutex mutex;
    seconds = run_together(s.threads, [&](int) {
        for (int i = 0; i < s.increments; ++i) {
            std::lock_guard lock(mutex);
            const long current = count;
            std::this_thread::sleep_for(s.pause);
            count = current + 1;
        }
    });
    return count;
}

// Fix 3: the value and its mutex in one object, so the count cannot be reached unlocked.
long synchronized_count(const counter_setup& s, double& seconds) {
    triad::synchronized<long> count{0};
    seconds = run_together(s.threads, [&](int) {
        for (int i = 0; i < s.increments; ++i)
            count.with_lock([&](long& value) {
                const long current = value;
                std::this_thread::sleep_for(s.pause);
                value = current + 1;
            });
    });
    return count.copy();
}

bool counters(const counter_setup& s) {
    fmt::print("=== Counters: {} threads x {} increments, a {} us pause between read and write "
               "===\n",
               s.threads, s.increments, s.pause.count());
    const long expected = static_cast<long>(s.threads) * s.increments;
    bool ok = true;

    double seconds = 0;
    long actual = expected;
    int attempt = 0;
    while (actual == expected && attempt < max_attempts) {
        ++attempt;
        actual = unsafe_count(s, seconds);
    }
    if (actual == expected) {
        fmt::print("unsafe counter: no update was lost in {} attempts; the race did not show\n",
                   max_attempts);
        ok = false;
    } else {
        report_counter("unsafe counter", expected, actual, seconds,
                       fmt::format(" (the race showed on attempt {})", attempt));
    }

    actual = atomic_count(s, seconds);
    ok = report_counter("std::atomic fetch_add", expected, actual, seconds) && ok;
    actual = mutex_count(s, seconds);
    ok = report_counter("std::mutex", expected, actual, seconds) && ok;
    actual = synchronized_count(s, seconds);
    ok = report_counter("triad::synchronized", expected, actual, seconds) && ok;
    fmt::print("The locked versions run the pause inside the lock, one thread at a time, as the "
               "course's SafeCounter does;\nthe atomic one pauses outside its single step.\n\n");
    return ok;
}

// ---------------------------------------------------------------------------------------------
// BankAccount

constexpr std::array<const char*, 6> names = {"Alice", "Bob", "Charlie", "Dave", "Erin", "Frank"};

const char* name_of(int person) {
    return names[static_cast<std::size_t>(person) % names.size()];
}

// One person's transactions, the same in every version: random deposits and withdrawals of
// $10.00 to $100.00 (in cents, so every sum is exact), from a seeded generator.
struct transaction {
    bool deposit;
    long cents;
};

std::vector<transaction> transactions_of(int person, int count) {
    std::mt19937 random(static_cast<unsigned>(person) + 1);
    std::uniform_int_distribution<long> amount(1000, 10000);
    std::bernoulli_distribution coin(0.5);
    std::vector<transaction> result;
    for (int i = 0; i < count; ++i) {
        const bool deposit = coin(random);
        result.push_back({deposit, amount(random)});
    }
    return result;
}

// What each person's own record says they did: deposits made and withdrawals granted.
struct ledger {
    long deposited = 0;
    long withdrawn = 0;
    int refused = 0;
};

struct bank_setup {
    int people;
    int transactions;
    std::chrono::microseconds pause;
};

constexpr long initial_balance = 100'000; // $1000.00, as in the course

// Without the lock: BankAccount's deposit and withdraw with `with self.lock:` removed. The check
// in withdraw and the write after it are separate steps (check-then-act).
struct naive_account {
    std::atomic<long> balance{initial_balance};

    void deposit(long cents, std::chrono::microseconds pause) {
        const long current = balance.load();
        std::this_thread::sleep_for(pause);
        balance.store(current + cents);
    }
    bool withdraw(long cents, std::chrono::microseconds pause) {
        if (balance.load() < cents)
            return false;
        const long current = balance.load();
        std::this_thread::sleep_for(pause);
        balance.store(current - cents);
        return true;
    }
};

// The course's BankAccount: balance and transaction count behind one lock.
struct account_state {
    long balance = initial_balance;
    int transactions = 0;
};

long books_say(const std::vector<ledger>& ledgers) {
    long balance = initial_balance;
    for (const auto& l : ledgers)
        balance += l.deposited - l.withdrawn;
    return balance;
}

bool bank_without_lock(const bank_setup& s) {
    std::vector<ledger> ledgers;
    long final_balance = 0;
    double seconds = 0;
    int attempt = 0;
    do {
        ++attempt;
        naive_account account;
        ledgers.assign(static_cast<std::size_t>(s.people), ledger{});
        seconds = run_together(s.people, [&](int person) {
            auto& mine = ledgers[static_cast<std::size_t>(person)];
            for (const auto& t : transactions_of(person, s.transactions)) {
                if (t.deposit) {
                    account.deposit(t.cents, s.pause);
                    mine.deposited += t.cents;
                } else if (account.withdraw(t.cents, s.pause)) {
                    mine.withdrawn += t.cents;
                } else {
                    ++mine.refused;
                }
                std::this_thread::sleep_for(s.pause); // the course's pause between transactions
            }
        });
        final_balance = account.balance.load();
    } while (final_balance == books_say(ledgers) && attempt < max_attempts);

    const long expected = books_say(ledgers);
    fmt::print("=== Bank account without the lock: {} people x {} transactions ===\n", s.people,
               s.transactions);
    fmt::print("Final balance: {}; the people's own records say {}\n", dollars(final_balance),
               dollars(expected));
    if (final_balance == expected) {
        fmt::print("without the lock: the books balanced in {} attempts; the race did not show\n\n",
                   max_attempts);
        return false;
    }
    fmt::print(
        "without the lock: the books are off by {} (money {} by overwritten updates; "
        "the race showed on attempt {}), {:.3f} s\n\n",
        dollars(final_balance > expected ? final_balance - expected : expected - final_balance),
        final_balance > expected ? "created" : "lost", attempt, seconds);
    return true;
}

bool bank_with_lock(const bank_setup& s, bool verbose) {
    fmt::print("=== Bank Account Simulation with Thread Safety ===\n");
    triad::synchronized<account_state> account;
    fmt::print("Initial balance: {}\n\n", dollars(account.rlock()->balance));
    std::vector<ledger> ledgers(static_cast<std::size_t>(s.people));
    std::atomic<bool> went_negative{false};
    const double seconds = run_together(s.people, [&](int person) {
        const char* name = name_of(person);
        auto& mine = ledgers[static_cast<std::size_t>(person)];
        for (const auto& t : transactions_of(person, s.transactions)) {
            account.with_lock([&](account_state& a) {
                if (t.deposit) {
                    const long current = a.balance;
                    std::this_thread::sleep_for(s.pause);
                    a.balance = current + t.cents;
                    ++a.transactions;
                    mine.deposited += t.cents;
                    if (verbose)
                        fmt::print("{} deposited {}. New balance: {}\n", name, dollars(t.cents),
                                   dollars(a.balance));
                } else if (a.balance >= t.cents) {
                    const long current = a.balance;
                    std::this_thread::sleep_for(s.pause);
                    a.balance = current - t.cents;
                    ++a.transactions;
                    mine.withdrawn += t.cents;
                    if (verbose)
                        fmt::print("{} withdrew {}. New balance: {}\n", name, dollars(t.cents),
                                   dollars(a.balance));
                } else {
                    ++mine.refused;
                    if (verbose)
                        fmt::print("{} withdrawal of {} failed - insufficient funds\n", name,
                                   dollars(t.cents));
                }
                if (a.balance < 0)
                    went_negative = true;
            });
            std::this_thread::sleep_for(s.pause);
        }
    });
    const auto [balance, transactions] = account.copy();
    const long expected = books_say(ledgers);
    int refused = 0;
    for (const auto& l : ledgers)
        refused += l.refused;
    fmt::print("\n=== Final Results ===\n");
    fmt::print("Final balance: {}\n", dollars(balance));
    fmt::print("Total transactions: {} (and {} refused for insufficient funds)\n", transactions,
               refused);
    const bool ok = balance == expected && !went_negative;
    fmt::print("with the lock: final balance {}, the people's records say {}: {}, {:.3f} s\n\n",
               dollars(balance), dollars(expected), ok ? "exact" : "MISMATCH", seconds);
    return ok;
}

// Check-then-act on its own: everyone sees enough money, then everyone takes it.
bool overdraw(const bank_setup& s) {
    const int people = s.people < 2 ? 2 : s.people;
    constexpr long start = 10'000; // $100.00
    constexpr long amount = 8'000; // $80.00: only one withdrawal fits
    fmt::print("=== Check-then-act: {} people each withdraw {} from {} at once ===\n", people,
               dollars(amount), dollars(start));

    long balance = start;
    int granted = 0;
    int attempt = 0;
    while (balance >= 0 && attempt < max_attempts) {
        ++attempt;
        std::atomic<long> naive{start};
        std::atomic<int> naive_granted{0};
        run_together(people, [&](int) {
            if (naive.load() >= amount) {             // check ...
                std::this_thread::sleep_for(s.pause); // ... the others check too ...
                naive.fetch_sub(amount);              // ... then act: each withdrawal is atomic
                naive_granted.fetch_add(1);
            }
        });
        balance = naive.load();
        granted = naive_granted.load();
    }
    bool ok = true;
    if (balance >= 0) {
        fmt::print("without the lock: no overdraft in {} attempts; the race did not show\n",
                   max_attempts);
        ok = false;
    } else {
        fmt::print("without the lock: {} withdrawals granted, balance {}: overdrawn (the race "
                   "showed on attempt {})\n",
                   granted, dollars(balance), attempt);
    }

    triad::synchronized<long> account{start};
    std::atomic<int> locked_granted{0};
    run_together(people, [&](int) {
        account.with_lock([&](long& b) { // check and act under one lock
            if (b >= amount) {
                std::this_thread::sleep_for(s.pause);
                b -= amount;
                locked_granted.fetch_add(1);
            }
        });
    });
    const long final_balance = account.copy();
    const bool locked_ok = locked_granted.load() == 1 && final_balance == start - amount;
    fmt::print("with the lock: {} withdrawal granted, balance {}: {}\n", locked_granted.load(),
               dollars(final_balance), locked_ok ? "exact" : "WRONG");
    return ok && locked_ok;
}

} // namespace

int main(int argc, char** argv) {
    const int threads = argc > 1 ? std::atoi(argv[1]) : 5;
    const int increments = argc > 2 ? std::atoi(argv[2]) : 1000;
    const int pause_us = argc > 3 ? std::atoi(argv[3]) : 100;
    const int people = argc > 4 ? std::atoi(argv[4]) : 3;
    const int transactions = argc > 5 ? std::atoi(argv[5]) : 5;
    if (threads < 2 || increments < 1 || pause_us < 1 || people < 2 || transactions < 1) {
        fmt::print(stderr,
                   "usage: {} [threads >= 2] [increments >= 1] [pause_us >= 1] [people >= 2] "
                   "[transactions >= 1]\n",
                   argv[0]);
        return 2;
    }
    const std::chrono::microseconds pause(pause_us);

    bool ok = counters({threads, increments, pause});
    const bank_setup bank{people, transactions, pause};
    ok = bank_without_lock(bank) && ok;
    ok = bank_with_lock(bank, transactions <= 10) && ok;
    ok = overdraw(bank) && ok;
    fmt::print("{}\n", ok ? "All checks passed: every race showed, every fix was exact."
                          : "A check FAILED (see above).");
    return ok ? 0 : 1;
}
