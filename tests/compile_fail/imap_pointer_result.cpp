// imap refuses a result that is a pointer into the worker's memory.
#include <triad/process_pool.hpp>
#include <vector>
const int* lookup(int) {
    static const int table[] = {1, 2, 3};
    return table;
}
int main() {
    triad::process_pool pool(1);
    std::vector<int> items{1, 2, 3};
    int sum = 0;
    for (const int* p : pool.imap(lookup, items))
        sum += *p;
    return sum;
}
