# Runs one command and checks what it printed: ctest's PASS_REGULAR_EXPRESSION passes when any one
# pattern matches and ignores the exit code, while an example's test needs every key line and a
# clean exit. Invoked by CTest as
#   cmake -DCOMMAND=<program;args...> -DEXPECT=<regex;regex...> [-DREJECT=<regex;...>]
#         -P triad_check_output.cmake
# Patterns are CMake regular expressions matched against stdout and stderr together. A sanitizer
# report anywhere in the output is always rejected.
if(NOT DEFINED COMMAND)
  message(FATAL_ERROR "triad_check_output: COMMAND is not set")
endif()
execute_process(COMMAND ${COMMAND} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
set(all "${out}${err}")
message("${all}")
set(failures "")
if(NOT rc EQUAL 0)
  string(APPEND failures "  exit status ${rc}, expected 0\n")
endif()
foreach(pattern IN LISTS EXPECT)
  if(NOT all MATCHES "${pattern}")
    string(APPEND failures "  no line matches: ${pattern}\n")
  endif()
endforeach()
# A sanitizer report fails the test even when the program exits 0: one from a process pool's
# worker reaches this output, while the pool sees only a worker that died (SIGABRT, status 66),
# which a program that tolerates failed tasks reports and survives.
set(sanitizer_reports "ERROR: AddressSanitizer" "ERROR: LeakSanitizer" "WARNING: ThreadSanitizer"
                      ": runtime error: ")
foreach(pattern IN LISTS REJECT sanitizer_reports)
  if(all MATCHES "${pattern}")
    string(APPEND failures "  a line matches what must not appear: ${pattern}\n")
  endif()
endforeach()
if(failures)
  message(FATAL_ERROR "triad_check_output: ${COMMAND}\n${failures}")
endif()
