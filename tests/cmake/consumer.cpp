// A minimal user of triad, shared by the three packaging tests.
#include <triad/triad.hpp>

#include <cstdio>
#include <vector>

int main() {
    triad::thread_pool pool(2);
    const std::vector<int> items{1, 2, 3, 4};
    const std::vector<int> squares = pool.map([](int x) { return x * x; }, items);
    const int sum = squares[0] + squares[1] + squares[2] + squares[3];
    std::printf("triad %d: sum of squares = %d\n", triad::version, sum);
    return sum == 30 ? 0 : 1;
}
