# Builds the decoder fuzzer with Clang and runs it briefly from a seed corpus of valid messages.
# -D: SOURCE (tests/fuzz), BINARY (a build directory), CXX (clang++), SECONDS
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE}" -B "${BINARY}" -G Ninja
                        "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=RelWithDebInfo
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the fuzzer failed")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BINARY}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the fuzzer failed")
endif()
file(MAKE_DIRECTORY "${BINARY}/corpus")
execute_process(COMMAND "${BINARY}/make_corpus" "${BINARY}/corpus" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "writing the seed corpus failed")
endif()
# -max_len leaves room for the seeds of trees nested past the decoder's limit (about 7.5 KB).
execute_process(COMMAND "${BINARY}/fuzz_decode" "-max_total_time=${SECONDS}" -malloc_limit_mb=256
                        -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 "${BINARY}/corpus"
                WORKING_DIRECTORY "${BINARY}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the decoder fuzzer found a failing input (see above; it was saved as crash-*)")
endif()
