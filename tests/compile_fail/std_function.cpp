// Must not compile: std::function is not a stateless callable.
#include <functional>
#include <triad/process_pool.hpp>
int main() {
    triad::process_pool pool(1);
    std::function<int(int)> f = [](int x) { return x; };
    return pool.submit(f, 1).get();
}
