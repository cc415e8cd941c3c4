// map needs a result per item.
#include <triad/process_pool.hpp>
#include <vector>
void log_item(int) {}
int main() {
    triad::process_pool pool(1);
    std::vector<int> items{1, 2, 3};
    pool.map(log_item, items);
}
