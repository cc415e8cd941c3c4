// map refuses items that cannot be encoded.
#include <triad/process_pool.hpp>
#include <vector>
struct point {
    int x, y;
};
int norm(point p) {
    return p.x + p.y;
}
int main() {
    triad::process_pool pool(1);
    std::vector<point> items{{1, 2}};
    return pool.map(norm, items).front();
}
