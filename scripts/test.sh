#!/usr/bin/env bash
# Quick start 2 (and CI): installs dependencies, builds, starts a throwaway
# PostgreSQL 15 cluster on a free port, runs the whole test suite with ctest,
# removes the cluster, and exits with ctest's status.
#
# Tests get PULSESYNC_TEST_DATABASE_URL, a superuser URL to the "postgres"
# database; they create and drop their own databases.
# Then, whatever ctest's outcome, each libFuzzer harness runs for a few
# seconds (scripts/fuzz.sh, clang, its own build directory build-fuzz).
# Extra arguments go to ctest (e.g. -L unit, -R Feed, --repeat until-fail:3).
# Env: PULSESYNC_BUILD_DIR (default: build), PULSESYNC_TEST_JOBS (default: 2),
#      PULSESYNC_SKIP_DEPS=1 / PULSESYNC_SKIP_BUILD=1 skip those steps,
#      PULSESYNC_KEEP_PG=1 keeps the cluster's directory (for its log),
#      PULSESYNC_FUZZ_SECONDS per harness (default: 8; 0 skips fuzzing).
# shellcheck disable=SC2317  # functions below are called from traps
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PULSESYNC_ROOT"

[ "${PULSESYNC_SKIP_DEPS:-0}" = 1 ] || bash scripts/install-deps.sh
[ "${PULSESYNC_SKIP_BUILD:-0}" = 1 ] || bash scripts/build.sh

build_dir="$(ps_build_dir)"
[ -f "$build_dir/CTestTestfile.cmake" ] || ps_die "$build_dir has no tests; did the build succeed?"

pg_tmp=""
pg_datadir=""
ctest_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$ctest_pid" ] && kill -0 "$ctest_pid" 2>/dev/null; then
    kill -TERM "$ctest_pid" 2>/dev/null || true
    wait "$ctest_pid" 2>/dev/null || true
  fi
  if [ -n "$pg_datadir" ]; then
    ps_pg_stop "$pg_datadir"
  fi
  if [ -n "$pg_tmp" ]; then
    if [ "${PULSESYNC_KEEP_PG:-0}" = 1 ]; then
      ps_log "kept the test cluster in $pg_tmp"
    else
      rm -rf "$pg_tmp"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ps_pg_throwaway pulsesync-test
ps_log "test PostgreSQL: $PULSESYNC_TEST_DATABASE_URL (data $pg_datadir)"

# In the background, so that a SIGTERM to this script (e.g. a CI timeout)
# is acted on at once; cleanup then stops ctest and the cluster.
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error \
  -j "${PULSESYNC_TEST_JOBS:-2}" --timeout 300 "$@" </dev/null &
ctest_pid=$!
set +e
wait "$ctest_pid"
rc=$?
set -e
ctest_pid=""
if [ "$rc" -eq 0 ]; then
  ps_log "tests passed"
else
  ps_log "tests FAILED (ctest exit status $rc); PostgreSQL log: $pg_datadir/postgres.log (PULSESYNC_KEEP_PG=1 keeps it)"
fi

fuzz_seconds="${PULSESYNC_FUZZ_SECONDS:-8}"
if [ "$fuzz_seconds" != 0 ]; then
  if ! PULSESYNC_SKIP_BUILD=0 bash scripts/fuzz.sh "$fuzz_seconds" </dev/null; then
    ps_log "fuzzing FAILED (scripts/fuzz.sh $fuzz_seconds)"
    [ "$rc" -ne 0 ] || rc=1
  fi
fi
exit "$rc"
