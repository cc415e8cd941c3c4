# Compiles SOURCE and expects failure with a diagnostic containing EXPECT.
# -D: CXX, INCLUDE_DIR, SOURCE, EXPECT
execute_process(
  COMMAND "${CXX}" -std=c++20 -fsyntax-only "-I${INCLUDE_DIR}" "${SOURCE}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must be rejected")
endif()
string(FIND "${out}${err}" "${EXPECT}" found)
if(found EQUAL -1)
  message(FATAL_ERROR "${SOURCE} was rejected without the expected advice \"${EXPECT}\":\n${err}")
endif()
