// A callable that cannot take the arguments given.
#include <string>
#include <triad/process_pool.hpp>
int twice(int x) {
    return 2 * x;
}
int main() {
    triad::process_pool pool(1);
    return pool.submit(twice, std::string("two")).get();
}
