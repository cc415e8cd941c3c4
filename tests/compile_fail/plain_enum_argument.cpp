// An enum without a fixed underlying type may hold fewer values than its bytes can.
#include <triad/process_pool.hpp>
enum color { red, green };
int paint(color c) {
    return c == red ? 1 : 2;
}
int main() {
    triad::process_pool pool(1);
    return pool.submit(paint, green).get();
}
