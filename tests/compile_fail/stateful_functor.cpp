// A function object with members holds state that only exists in this process.
#include <triad/process_pool.hpp>
struct add {
    int offset;
    int operator()(int x) const { return x + offset; }
};
int main() {
    triad::process_pool pool(1);
    return pool.submit(add{3}, 1).get();
}
