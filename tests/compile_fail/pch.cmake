# Precompiles <triad/triad.hpp> for the compile-fail cases with Clang (about 2 s of each case's
# 4 s), with the flags run.cmake uses. A case that finds it invalid or missing includes the
# header as text: the same diagnostics, only slower.
# -D: CXX (Clang), INCLUDE_DIR, HEADER (written here; the .pch goes next to it)
file(WRITE "${HEADER}" "#include <triad/triad.hpp>\n")
set(output "${HEADER}.pch")
execute_process(
  COMMAND "${CXX}" -std=c++20 "-I${INCLUDE_DIR}" -x c++-header "${HEADER}" -o "${output}"
  RESULT_VARIABLE rc
  ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "could not precompile <triad/triad.hpp>:\n${err}")
endif()
