// Must not compile: a string_view result would point into the worker's memory.
#include <string_view>
#include <triad/process_pool.hpp>
std::string_view name(int) { return "worker"; }
int main() {
    triad::process_pool pool(1);
    return static_cast<int>(pool.submit(name, 1).get().size());
}
