// A generator of references would hand out references into a suspended frame.
#include <triad/generator.hpp>
triad::generator<int&> refs(int& x) {
    co_yield x;
}
int main() {
    int x = 0;
    auto gen = refs(x);
}
