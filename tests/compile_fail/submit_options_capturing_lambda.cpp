// The task_options overload of submit refuses what submit refuses.
#include <chrono>
#include <triad/process_pool.hpp>
int main() {
    triad::process_pool pool(1);
    int offset = 3;
    return pool
        .submit(
            {.timeout = std::chrono::seconds(1)}, [offset](int x) { return x + offset; }, 1)
        .get();
}
