// A callable whose operator() is &-qualified cannot be called as the rvalue the task holds; the
// message says so (before, the call failed inside submit's return type, before any advice).
#include <triad/thread_pool.hpp>

struct lvalue_only {
    int operator()() & { return 1; }
};

int main() {
    triad::thread_pool pool(1);
    auto f = pool.submit(lvalue_only{});
    return f.get();
}
