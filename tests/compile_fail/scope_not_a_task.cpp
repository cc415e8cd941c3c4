// Misuse: the scope's function must return a triad::task.
#include <triad/combinators.hpp>

triad::task<void> misuse() {
    co_await triad::task_group::scope([](triad::task_group&) { return 1; });
}
