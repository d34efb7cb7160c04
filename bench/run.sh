#!/usr/bin/env bash
# Every benchmark in one command (issue 7): builds them, starts a throwaway
# PostgreSQL 15 on a free port (as scripts/test.sh does), runs each at a size
# bounded in time, and prints the table of headline figures: value, the
# ceiling measured in the same run (raw PostgreSQL or raw SQLite doing the
# same work), their ratio, and the goal. Each benchmark's own output goes
# to the log it names. Loopback only; nothing is asserted.
#
#   bench/run.sh    # the issue's sizes (1M tasks, 1,000 subscribers, 10,000
#                   # idle streams, 100,000-row initial sync, growth to 1M
#                   # server rows and 100k client rows): about 4 minutes on
#                   # 2 cores
#   PULSESYNC_BENCH_SCALE=small bench/run.sh   # a quick look: about 2 minutes
# Env: PULSESYNC_BUILD_DIR (default build), PULSESYNC_SKIP_BUILD=1,
#      PULSESYNC_BENCH_LOG (default: a temporary file, kept).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$PULSESYNC_ROOT"

scale="${PULSESYNC_BENCH_SCALE:-full}"
case "$scale" in
  small)
    apply_args=(--writers=4 --batches=25 --batch=100)
    client_args=(--writes=1000 --pending=10000 --snapshot_rows=50000 --growth_rows=50000)
    growth_args=(--server_rows=200000)
    stats_args=(--tasks=200000 --projects=200 --queries=500)
    feed_args=(--scenarios=1,2,4 --subscribers=200 --rate=1000 --seconds=5 --idle_streams=2000)
    ;;
  full)
    apply_args=(--writers=4 --batches=50 --batch=100)
    client_args=(--writes=2000 --pending=10000 --snapshot_rows=100000 --growth_rows=100000)
    growth_args=(--server_rows=1000000)
    stats_args=(--tasks=1000000 --projects=1000 --queries=2000)
    feed_args=(--scenarios=1,2,4 --subscribers=1000 --rate=1000 --seconds=10 --idle_streams=10000)
    ;;
  *) ps_die "PULSESYNC_BENCH_SCALE must be small or full, not $scale" ;;
esac

build_dir="$(ps_build_dir)"
if [ "${PULSESYNC_SKIP_BUILD:-0}" != 1 ]; then
  bash scripts/build.sh --target pulsesyncd apply_bench client_bench micro_bench stats_bench \
    feed_bench growth_bench
fi

log="${PULSESYNC_BENCH_LOG:-$(mktemp "${TMPDIR:-/tmp}/pulsesync-bench.XXXXXX.log")}"
pg_tmp=""
pg_datadir=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$pg_datadir" ] && ps_pg_stop "$pg_datadir"
  [ -n "$pg_tmp" ] && rm -rf "$pg_tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ps_pg_throwaway pulsesync-bench
ps_log "benchmarks at scale $scale against $PULSESYNC_TEST_DATABASE_URL; output in $log"

figures="$pg_tmp/figures.tsv"
: >"$figures"
# quiesce: each benchmark starts on a quiet database, not one still writing
# back or vacuuming what the previous one wrote (a million tasks for
# stats_bench): a CHECKPOINT, then until no autovacuum worker runs (at most
# two minutes; a benchmark then runs anyway, and the log says so).
quiesce() {
  local psql=("$PULSESYNC_PG_BIN/psql" -X -tAq "$PULSESYNC_TEST_DATABASE_URL")
  "${psql[@]}" -c CHECKPOINT >/dev/null 2>&1 || return 0
  local deadline=$((SECONDS + 120)) busy
  while true; do
    busy="$("${psql[@]}" -c "SELECT count(*) FROM pg_stat_activity \
                              WHERE backend_type = 'autovacuum worker'" 2>/dev/null || echo 0)"
    [ "$busy" = 0 ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      ps_log "autovacuum still busy after 120 s; running the next benchmark anyway"
      return 0
    fi
    sleep 1
  done
}

# run NAME COMMAND...: the benchmark's output to the log, its FIGURE lines
# to the table; a failed benchmark is reported and the others still run.
run() {
  local name="$1"
  shift
  quiesce
  ps_log "running $name"
  echo "===== $name: $*" >>"$log"
  local started=$SECONDS
  if "$@" >"$pg_tmp/out" 2>&1; then
    ps_log "$name done in $((SECONDS - started)) s"
  else
    ps_log "$name FAILED (exit $?); see $log"
    printf 'FIGURE\t%s\t0\tfailed\t0\t\n' "$name" >>"$figures"
  fi
  cat "$pg_tmp/out" >>"$log"
  grep '^FIGURE' "$pg_tmp/out" >>"$figures" || true
}

run micro_bench "$build_dir/bench/micro_bench" --benchmark_min_time=0.05
run apply_bench "$build_dir/bench/apply_bench" "${apply_args[@]}"
run client_bench "$build_dir/bench/client_bench" "${client_args[@]}"
run stats_bench "$build_dir/bench/stats_bench" "${stats_args[@]}"
run feed_bench "$build_dir/bench/feed_bench" "${feed_args[@]}"
run growth_bench "$build_dir/bench/growth_bench" "${growth_args[@]}"

echo
echo "pulsesync benchmarks ($scale; $(nproc) cores; PostgreSQL 15 on loopback, throwaway settings)"
echo "ratio = value / ceiling, both measured in this run; goals from issue 7"
awk -F'\t' '
  function num(x) { return x + 0 }
  {
    name = $2; value = num($3); unit = $4; ceiling = num($5); goal = $6
    ratio = ceiling > 0 ? sprintf("%.2f", value / ceiling) : "-"
    met = "-"
    if (unit == "failed") { met = "FAILED" }
    else if (goal ~ /^>=/) { met = (value >= num(substr(goal, 3))) ? "met" : "not met" }
    else if (goal ~ /^<=/) { met = (value <= num(substr(goal, 3))) ? "met" : "not met" }
    rows[NR] = sprintf("%-72s | %12s %-8s | %12s | %6s | %-9s %s", name,
                       sprintf("%.6g", value), unit,
                       ceiling > 0 ? sprintf("%.6g", ceiling) : "-", ratio,
                       goal == "" ? "-" : goal, met)
  }
  END {
    printf "%-72s | %21s | %12s | %6s | %s\n", "figure", "value", "ceiling", "ratio", "goal"
    for (i = 1; i <= NR; i++) print rows[i]
  }' "$figures"
echo
echo "full output: $log"
