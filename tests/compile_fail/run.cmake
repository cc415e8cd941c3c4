# Compiles SOURCE and expects failure with a diagnostic containing EXPECT. With ERRORS, the
# compiler must report exactly that many errors: a misuse is explained once, by the advice, and
# not followed by errors from inside triad that bury it.
# -D: CXX, INCLUDE_DIR, SOURCE, EXPECT, optionally ERRORS, PCH (the header pch.cmake wrote) and
# INCLUDES
set(pch_flags)
# INCLUDES: more include directories, separated by '|' (MPI's, for the MPI pool's cases).
if(INCLUDES)
  string(REPLACE "|" ";" includes "${INCLUDES}")
  foreach(dir IN LISTS includes)
    list(APPEND include_flags "-I${dir}")
  endforeach()
endif()
if(PCH AND EXISTS "${PCH}")
  set(pch_flags -include "${PCH}")
endif()
execute_process(
  COMMAND "${CXX}" -std=c++20 -fsyntax-only -fno-diagnostics-color "-I${INCLUDE_DIR}" ${include_flags} ${pch_flags}
          "${SOURCE}"
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
if(DEFINED ERRORS AND NOT ERRORS STREQUAL "")
  string(REGEX MATCHALL "error:" errors "${out}${err}")
  list(LENGTH errors count)
  if(NOT count EQUAL ERRORS)
    message(FATAL_ERROR "${SOURCE} was rejected with ${count} errors, not ${ERRORS}:\n${err}")
  endif()
endif()
