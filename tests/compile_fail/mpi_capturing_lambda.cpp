// Must not compile: a capturing lambda holds state that only exists on rank 0.
#include <triad/mpi_pool.hpp>
int main(int argc, char** argv) {
    int offset = 3;
    return triad::mpi_main(argc, argv, [&](triad::mpi_pool& pool) {
        return pool.submit([offset](int x) { return x + offset; }, 1).get();
    });
}
