# Install rules and the CMake package: find_package(triad CONFIG REQUIRED) then link triad::triad.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS triad EXPORT triad-targets)
if(TARGET triad_mpi)
  install(TARGETS triad_mpi EXPORT triad-targets)
  set(TRIAD_WITH_MPI ON)
else()
  set(TRIAD_WITH_MPI OFF)
endif()
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/triad" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

set(TRIAD_CMAKE_DIR "${CMAKE_INSTALL_DATADIR}/cmake/triad"
    CACHE STRING "Where triad's CMake package files are installed, relative to the prefix")

install(EXPORT triad-targets NAMESPACE triad:: DESTINATION "${TRIAD_CMAKE_DIR}")

configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/triadConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/triadConfig.cmake"
  INSTALL_DESTINATION "${TRIAD_CMAKE_DIR}")
# Header-only: the package is architecture independent.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/triadConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion
  ARCH_INDEPENDENT)
install(FILES
  "${PROJECT_BINARY_DIR}/triadConfig.cmake"
  "${PROJECT_BINARY_DIR}/triadConfigVersion.cmake"
  DESTINATION "${TRIAD_CMAKE_DIR}")
