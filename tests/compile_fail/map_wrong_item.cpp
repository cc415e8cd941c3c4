// map refuses a callable that cannot take an item.
#include <string>
#include <triad/process_pool.hpp>
#include <vector>
int length(std::string s) {
    return static_cast<int>(s.size());
}
int main() {
    triad::process_pool pool(1);
    std::vector<int> items{1, 2, 3};
    return pool.map(length, items).front();
}
