# Runs every case of one test file in one process and passes only if each of them ran and passed:
#   cmake -DBINARY=<test binary> -DSPEC=<Catch2 test spec> [-DTIMEOUT=<s>] -P run_file_cases.cmake
# The exit code alone is not enough: a case that ends the process with status 0 (exit(0), a forked
# child that returns into the runner's parent path, ...) would skip every later case of the file
# and still pass. So the cases the spec selects are counted first, and the run must end with
# Catch2's "All tests passed (... in <that many> test cases)". --durations prints each case as it
# ends: after a hang (TIMEOUT, below CTest's), the case after the last one printed is the culprit.
cmake_minimum_required(VERSION 3.21)
if(NOT DEFINED TIMEOUT)
  set(TIMEOUT 540)
endif()
execute_process(COMMAND "${BINARY}" --filenames-as-tags "${SPEC}" --list-test-names-only
  RESULT_VARIABLE listed OUTPUT_VARIABLE names ERROR_VARIABLE list_errors)
string(REGEX MATCHALL "\n" lines "${names}")
list(LENGTH lines count)
# Catch2 v2 exits with the number of cases listed (at most 255).
if(count EQUAL 0 OR NOT listed MATCHES "^[0-9]+$" OR
   NOT (listed EQUAL count OR (listed EQUAL 255 AND count GREATER 255)))
  message(FATAL_ERROR "listing the cases of ${SPEC} failed (${listed}, ${count} lines):\n"
    "${names}${list_errors}")
endif()
execute_process(COMMAND "${BINARY}" --filenames-as-tags -w NoTests --durations yes "${SPEC}"
  TIMEOUT ${TIMEOUT} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")
if(NOT code EQUAL 0)
  message(FATAL_ERROR "the run of ${SPEC} failed: ${code}")
endif()
if(NOT out MATCHES "All tests passed \\([0-9]+ assertions? in ${count} test cases?\\)")
  message(FATAL_ERROR "the run of ${SPEC} exited 0 but did not report all ${count} cases passed: "
    "a case ended the process early, the later ones never ran")
endif()
