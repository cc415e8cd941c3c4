// The main of every test binary but test_fork_server; Catch2 itself is in catch_runner.cpp.
#include "catch_runner.hpp"

int main(int argc, char* argv[]) {
    return triad_test::run_catch(argc, argv);
}
