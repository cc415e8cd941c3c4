// An argument type without a serialize customization cannot be encoded.
#include <triad/process_pool.hpp>
struct point {
    int x, y;
};
int norm(point p) {
    return p.x + p.y;
}
int main() {
    triad::process_pool pool(1);
    return pool.submit(norm, point{1, 2}).get();
}
