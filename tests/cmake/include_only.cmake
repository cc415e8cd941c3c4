# Builds and runs the consumer with nothing but the compiler and -I include.
get_filename_component(out_dir "${OUTPUT}" DIRECTORY)
file(MAKE_DIRECTORY "${out_dir}")
execute_process(
  COMMAND "${CXX}" -std=c++20 -O1 -Wall -Wextra -Wpedantic -Werror "-I${INCLUDE_DIR}"
          "${SOURCE}" -o "${OUTPUT}" -pthread
  RESULT_VARIABLE compile_result)
if(NOT compile_result EQUAL 0)
  message(FATAL_ERROR "compiling with plain -I include failed")
endif()
execute_process(COMMAND "${OUTPUT}" RESULT_VARIABLE run_result)
if(NOT run_result EQUAL 0)
  message(FATAL_ERROR "the consumer built with -I include failed (${run_result})")
endif()
