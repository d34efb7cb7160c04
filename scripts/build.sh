#!/usr/bin/env bash
# Configures (first time) and builds pulsesync with CMake + Ninja.
#   Binaries: <build>/server/pulsesyncd and <build>/client/cli/pulsesync
# Env: PULSESYNC_BUILD_DIR (default: build), PULSESYNC_BUILD_TYPE
#      (default: RelWithDebInfo), PULSESYNC_JOBS (default: 2),
#      PULSESYNC_CMAKE_ARGS (extra configure arguments; forces a configure).
# Extra arguments are passed to `cmake --build` (e.g. --target pulsesyncd).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build_dir="$(ps_build_dir)"
build_type="${PULSESYNC_BUILD_TYPE:-RelWithDebInfo}"
jobs="${PULSESYNC_JOBS:-2}"
read -r -a extra_cmake_args <<<"${PULSESYNC_CMAKE_ARGS:-}"

# Ninja re-runs CMake by itself when a CMakeLists.txt changes, so configure
# only when the build directory is new, of another type, or asked to.
configured_type=""
if [ -f "$build_dir/CMakeCache.txt" ]; then
  configured_type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build_dir/CMakeCache.txt")"
fi
if [ ! -f "$build_dir/build.ninja" ] || [ "$configured_type" != "$build_type" ] ||
   [ ${#extra_cmake_args[@]} -gt 0 ]; then
  ps_log "configuring $build_dir ($build_type)"
  cmake -S "$PULSESYNC_ROOT" -B "$build_dir" -G Ninja \
    -DCMAKE_BUILD_TYPE="$build_type" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
    "${extra_cmake_args[@]}"
fi

ps_log "building in $build_dir with $jobs jobs"
cmake --build "$build_dir" -j "$jobs" "$@"
ps_log "built $build_dir/server/pulsesyncd and $build_dir/client/cli/pulsesync"
