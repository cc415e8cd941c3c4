// timeout needs something a task can co_await.
#include <chrono>
#include <triad/combinators.hpp>
triad::task<void> wait_for_number() {
    co_await triad::timeout(std::chrono::seconds(1), 42);
}
int main() {}
