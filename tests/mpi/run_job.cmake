# Runs one MPI job and checks how it ended: cmake -DMPIEXEC=<mpirun> -DBINARY=<program>
#   [-DARGS=<args>] [-DSECOND=<copy> [-DNOTE_FROM=<elf>]] [-DEXIT=zero|nonzero] [-DEXPECT=<regex;...>] [-DTIMEOUT=s]
#   [-DSCENARIO=<name>] [-DWORKER_LIBRARY_PATH=<dir>] [-DPLAIN=<program>] -P run_job.cmake
# With SECOND, rank 0 runs BINARY and ranks 1-2 run SECOND, a copy of BINARY without its build
# id (made here with objcopy): the same code, a different build; with NOTE_FROM=<object> as well,
# the copy keeps a build id but takes that object's. With PLAIN=<program>, ranks 0-1 run BINARY
# and rank 2 runs that program. SCENARIO is passed to every rank
# as TRIAD_MPI_SCENARIO. With WORKER_LIBRARY_PATH,
# ranks 1-2 run BINARY with LD_LIBRARY_PATH=<dir>. Afterwards no process may be left that carries this job's marker in
# its environment: mpirun, its daemon and every rank must be gone.
cmake_minimum_required(VERSION 3.21)
if(NOT DEFINED TIMEOUT)
  set(TIMEOUT 120)
endif()
if(NOT DEFINED EXIT)
  set(EXIT zero)
endif()
string(RANDOM LENGTH 16 marker)
set(ENV{TRIAD_MPI_JOB} "${marker}")
if(NOT SCENARIO)
  set(SCENARIO none)
endif()
set(ENV{TRIAD_MPI_SCENARIO} "${SCENARIO}")
set(ENV{OMPI_ALLOW_RUN_AS_ROOT} 1)
set(ENV{OMPI_ALLOW_RUN_AS_ROOT_CONFIRM} 1)
set(forward --oversubscribe --bind-to none -x TRIAD_MPI_JOB -x TRIAD_MPI_SCENARIO)
if(SECOND)
  if(NOTE_FROM)
    # The build id of another object of the same kind (same size): a different build, as far
    # as the id says, of the same code.
    execute_process(COMMAND objcopy "--dump-section=.note.gnu.build-id=${SECOND}.note"
      "${NOTE_FROM}" "${SECOND}.unused" RESULT_VARIABLE dumped)
    execute_process(COMMAND objcopy "--update-section=.note.gnu.build-id=${SECOND}.note"
      "${BINARY}" "${SECOND}" RESULT_VARIABLE copied)
    if(NOT dumped EQUAL 0)
      set(copied 1)
    endif()
  else()
    execute_process(COMMAND objcopy --remove-section=.note.gnu.build-id "${BINARY}" "${SECOND}"
      RESULT_VARIABLE copied)
  endif()
  if(NOT copied EQUAL 0)
    message(FATAL_ERROR "objcopy could not copy ${BINARY}")
  endif()
  set(command ${MPIEXEC} ${forward} -np 1 "${BINARY}" ${ARGS} : -np 2 "${SECOND}" ${ARGS})
elseif(PLAIN)
  set(command ${MPIEXEC} ${forward} -np 2 "${BINARY}" ${ARGS} : -np 1 "${PLAIN}")
elseif(WORKER_LIBRARY_PATH)
  set(command ${MPIEXEC} ${forward} -np 1 "${BINARY}" ${ARGS}
    : -np 2 env "LD_LIBRARY_PATH=${WORKER_LIBRARY_PATH}" "${BINARY}" ${ARGS})
else()
  set(command ${MPIEXEC} ${forward} -np 3 "${BINARY}" ${ARGS})
endif()
execute_process(COMMAND ${command} TIMEOUT ${TIMEOUT}
  RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(code MATCHES "timeout")
  message(FATAL_ERROR "the MPI job hung: still running after ${TIMEOUT} s")
endif()
if(EXIT STREQUAL "zero" AND NOT code EQUAL 0)
  message(FATAL_ERROR "the MPI job failed: ${code}")
elseif(EXIT STREQUAL "nonzero" AND code EQUAL 0)
  message(FATAL_ERROR "the MPI job succeeded; it should have failed")
endif()
foreach(pattern IN LISTS EXPECT)
  if(NOT "${out}${err}" MATCHES "${pattern}")
    message(FATAL_ERROR "the output does not match: ${pattern}")
  endif()
endforeach()
# Processes of this job that are still there, looked for by the marker in their environment
# (which the search itself must not inherit).
unset(ENV{TRIAD_MPI_JOB})
foreach(attempt RANGE 20)
  execute_process(COMMAND sh -c "grep -l -s -a 'TRIAD_MPI_JOB=${marker}' /proc/[0-9]*/environ"
    OUTPUT_VARIABLE left OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT left)
    break()
  endif()
  execute_process(COMMAND "${CMAKE_COMMAND}" -E sleep 0.5)
endforeach()
if(left)
  message(FATAL_ERROR "processes of the job were left behind: ${left}")
endif()
