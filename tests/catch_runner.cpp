// Catch2's implementation, compiled once per configuration and shared by every test binary,
// including test_fork_server, which has a main of its own. (Catch2 declares Session only where
// its implementation is compiled, so a main calls it through here.)
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "catch_runner.hpp"

int triad_test::run_catch(int argc, char* argv[]) {
    return Catch::Session().run(argc, argv);
}
