// Must not compile: a pointer means nothing on another rank.
#include <triad/mpi_pool.hpp>
#include <vector>
int deref(const int* p) {
    return *p;
}
int main(int argc, char** argv) {
    return triad::mpi_main(argc, argv, [](triad::mpi_pool& pool) {
        int x = 1;
        std::vector<const int*> items{&x};
        return pool.map(deref, items).front();
    });
}
