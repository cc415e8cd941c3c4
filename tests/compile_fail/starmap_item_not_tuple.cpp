// starmap needs each item to be a tuple of the arguments.
#include <triad/process_pool.hpp>
#include <vector>
int add(int a, int b) {
    return a + b;
}
int main() {
    triad::process_pool pool(1);
    std::vector<int> items{1, 2, 3};
    return pool.starmap(add, items).front();
}
