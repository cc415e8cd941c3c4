// Misuse: the scope's function must take the group (by reference).
#include <triad/combinators.hpp>

triad::task<void> misuse() {
    co_await triad::task_group::scope([]() -> triad::task<void> { co_return; });
}
