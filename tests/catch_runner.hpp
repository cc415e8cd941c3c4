// Runs the Catch2 tests of this binary, as Catch2's own main would.
#pragma once

namespace triad_test {
int run_catch(int argc, char* argv[]);
}
