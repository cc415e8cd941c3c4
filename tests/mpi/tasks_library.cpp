// A shared library that defines task types, linked by test_mpi_pool: its invokers are numbered
// in the same table as the program's. Built twice: the second build (TRIAD_TEST_TASKS_V2, same
// file name, its own directory) defines one more, as another version of a library would, so a
// job whose workers load it numbers every task type differently and must be refused.
#include "tasks_library.hpp"

namespace {
struct plus_1000 {
    long operator()(long x) const { return x + 1000; }
};
#ifdef TRIAD_TEST_TASKS_V2
struct plus_2000 {
    long operator()(long x) const { return x + 2000; }
};
#endif
} // namespace

triad::future<long> library_task(triad::mpi_pool& pool, long x) {
#ifdef TRIAD_TEST_TASKS_V2
    if (x < 0)
        return pool.submit(plus_2000{}, x);
#endif
    return pool.submit(plus_1000{}, x);
}
