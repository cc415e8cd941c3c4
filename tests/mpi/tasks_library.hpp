#pragma once

#include <triad/mpi_pool.hpp>

// Submits a task type defined in the shared library test_mpi_tasks: x + 1000 on a worker rank.
triad::future<long> library_task(triad::mpi_pool& pool, long x);
