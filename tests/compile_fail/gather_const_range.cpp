// Misuse: gather moves the tasks out of the range, which therefore cannot be const.
#include <triad/combinators.hpp>

#include <vector>

triad::task<void> misuse(const std::vector<triad::task<int>>& tasks) {
    (void)co_await triad::gather(tasks);
}
