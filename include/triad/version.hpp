#pragma once

/// triad's version, defined once here; CMake reads it from this file.
#define TRIAD_VERSION_MAJOR 0
#define TRIAD_VERSION_MINOR 1
#define TRIAD_VERSION_PATCH 0

namespace triad {

/** The library's version as `major * 10000 + minor * 100 + patch`. */
inline constexpr int version =
    TRIAD_VERSION_MAJOR * 10000 + TRIAD_VERSION_MINOR * 100 + TRIAD_VERSION_PATCH;

} // namespace triad
