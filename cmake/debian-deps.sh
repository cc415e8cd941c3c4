#!/usr/bin/env bash
# Installs the Debian 12 packages triad's build needs, skipping those already present. Sourced
# by tests/run and bench/run. Needs root (or sudo) only when something is missing.
triad_install_deps() {
  # libtbb-dev: oneTBB, a peer in the benchmarks (tests/run builds and smoke-runs them too).
  # libsqlite3-dev: the real database of the examples that query and write one.
  # libopenmpi-dev, openmpi-bin: triad::mpi_pool, its tests (real MPI jobs), example and benchmark;
  # python3-mpi4py: the benchmark's Python peer, mpi4py.futures.
  local wanted=(cmake ninja-build g++ clang libclang-rt-14-dev
                libboost1.81-dev catch2 libfmt-dev libbenchmark-dev libtbb-dev libsqlite3-dev
                python3 libopenmpi-dev openmpi-bin python3-mpi4py)
  local missing=()
  local pkg
  for pkg in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "triad: installing missing packages: ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "triad: these packages are missing and this is not root: ${missing[*]}" >&2
      echo "triad: install them (apt-get install ${missing[*]}) or run as root" >&2
      return 1
    fi
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}
