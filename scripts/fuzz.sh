#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/) with clang in their own build
# directory and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [NAME...]
#
# SECONDS per harness (default 60); NAMEs among jwt json change_filter cursor
# brotli_batch (default: all). Each harness starts from its seed corpus
# fuzz/corpus/NAME (read only) and writes what it finds to
# <build>/corpus/NAME; a crash leaves its input in <build>/artifacts/ and
# makes this script fail (add the input to fuzz/corpus/NAME, write a
# regression test, fix). Exit status: 0 when every harness ran its time
# without a crash.
# Env: PULSESYNC_FUZZ_BUILD_DIR (default: build-fuzz), PULSESYNC_JOBS
#      (default: 2), PULSESYNC_CLANG (default: clang-14, else clang),
#      PULSESYNC_SKIP_BUILD=1 runs what is built.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PULSESYNC_ROOT"

seconds="${1:-60}"
shift || true
case "$seconds" in
  ''|*[!0-9]*) ps_die "usage: scripts/fuzz.sh [SECONDS] [NAME...] (SECONDS: a whole number)" ;;
esac
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(jwt json change_filter cursor brotli_batch)

build_dir="${PULSESYNC_FUZZ_BUILD_DIR:-build-fuzz}"
case "$build_dir" in /*) ;; *) build_dir="$PULSESYNC_ROOT/$build_dir" ;; esac
jobs="${PULSESYNC_JOBS:-2}"

clang="${PULSESYNC_CLANG:-}"
if [ -z "$clang" ]; then
  clang=clang
  if command -v clang-14 >/dev/null; then clang="clang-14"; fi
fi
command -v "$clang" >/dev/null ||
  ps_die "$clang not found (scripts/install-deps.sh installs clang-14 and libclang-rt-14-dev)"
clangxx="${clang/clang/clang++}"

if [ "${PULSESYNC_SKIP_BUILD:-0}" != 1 ]; then
  if [ ! -f "$build_dir/build.ninja" ]; then
    ps_log "configuring $build_dir (fuzz build, $clangxx)"
    cmake -S "$PULSESYNC_ROOT" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER="$clang" -DCMAKE_CXX_COMPILER="$clangxx" -DPULSESYNC_FUZZ=ON >/dev/null
  fi
  ps_log "building the fuzzers in $build_dir with $jobs jobs"
  cmake --build "$build_dir" -j "$jobs" --target fuzzers
fi

mkdir -p "$build_dir/artifacts"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
for name in "${names[@]}"; do
  binary="$build_dir/fuzz/${name}_fuzzer"
  seeds="$PULSESYNC_ROOT/fuzz/corpus/$name"
  [ -x "$binary" ] || ps_die "$binary not built (unknown harness \"$name\"?)"
  [ -d "$seeds" ] || ps_die "no seed corpus $seeds"
  mkdir -p "$build_dir/corpus/$name"
  ps_log "fuzzing $name for ${seconds}s"
  # -max_len: the inputs that matter are small; the limits they probe
  # (8 KiB tokens, nesting depth) are within it.
  if ! "$binary" "$build_dir/corpus/$name" "$seeds" \
      -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$build_dir/artifacts/$name-" -print_final_stats=1 \
      >"$build_dir/$name.log" 2>&1; then
    failed+=("$name")
    tail -n 60 "$build_dir/$name.log" >&2
    ps_log "$name FAILED: log $build_dir/$name.log, inputs in $build_dir/artifacts/"
  else
    ps_log "$name: $(grep -E '^stat::number_of_executed_units' "$build_dir/$name.log" | awk '{print $2}') runs, no crash"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  ps_die "fuzzers failed: ${failed[*]}"
fi
ps_log "fuzzing passed (${#names[@]} harnesses, ${seconds}s each)"
