// triad::synchronize on a const synchronized: it takes exclusive locks, which a const object
// does not give.
#include <triad/synchronized.hpp>

int main() {
    triad::synchronized<int> a{1};
    const triad::synchronized<int> b{2};
    auto [x, y] = triad::synchronize(a, b);
    return *x + *y;
}
