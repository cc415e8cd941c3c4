# Warnings for triad's own targets (tests, benchmarks, examples). Never imposed on users of the
# library: only targets that link triad_warnings get them.
add_library(triad_warnings INTERFACE)
target_compile_options(triad_warnings INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang,AppleClang>:-Wall -Wextra -Wpedantic -Werror>)
