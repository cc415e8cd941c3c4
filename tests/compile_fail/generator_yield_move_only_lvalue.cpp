// `co_yield x` of an lvalue copies x; a move-only item must be moved.
#include <memory>
#include <triad/generator.hpp>
triad::generator<std::unique_ptr<int>> owners() {
    auto p = std::make_unique<int>(1);
    co_yield p;
}
int main() {
    auto gen = owners();
}
