// A rank that is an MPI program but not a triad one: it starts MPI, then goes about its own
// work (here, two minutes of sleep) and never reaches triad::mpi_main. Started beside
// test_mpi_pool's ranks, it must not hang their start-up (tests/CMakeLists.txt, "a rank running
// another program"): they leave the job, which ends it, this rank included.
#include <mpi.h>

#include <chrono>
#include <thread>

int main(int argc, char* argv[]) {
    MPI_Init(&argc, &argv);
    std::this_thread::sleep_for(std::chrono::minutes(2));
    MPI_Finalize();
    return 0;
}
