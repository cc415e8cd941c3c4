// Must not compile: a capturing lambda holds state that only exists in the parent.
#include <triad/process_pool.hpp>
int main() {
    triad::process_pool pool(1);
    int offset = 3;
    return pool.submit([offset](int x) { return x + offset; }, 1).get();
}
