// map refuses a capturing lambda.
#include <triad/process_pool.hpp>
#include <vector>
int main() {
    triad::process_pool pool(1);
    int offset = 3;
    std::vector<int> items{1, 2, 3};
    return pool.map([offset](int x) { return x + offset; }, items).front();
}
