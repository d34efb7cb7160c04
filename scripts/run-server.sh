#!/usr/bin/env bash
# Quick start 1: installs dependencies, builds, and runs pulsesyncd in the
# foreground against PostgreSQL.
#
# - DATABASE_URL set: uses that database and touches no database server.
# - otherwise: starts (or reuses) a private PostgreSQL 15 cluster with its data
#   in ${PULSESYNC_HOME:-<repo>/.pulsesync}/pgdata on 127.0.0.1:${PULSESYNC_PG_PORT:-54329},
#   database "pulsesync", and stops it again when the server exits (if this
#   script started it). Running again reuses the data.
# Then: pulsesyncd migrate, and pulsesyncd serve on ${PULSESYNC_LISTEN:-127.0.0.1:50051},
# with Prometheus metrics on ${PULSESYNC_METRICS_LISTEN-127.0.0.1:9464} (set it empty for none).
# Extra arguments are passed to `pulsesyncd serve`. The server speaks
# plaintext gRPC (--plaintext, meant for loopback) unless TLS is configured:
# --tls_cert_file/--tls_key_file among the arguments, or PULSESYNC_TLS_CERT_FILE.
# PULSESYNC_SKIP_DEPS=1 / PULSESYNC_SKIP_BUILD=1 skip the first two steps.
# shellcheck disable=SC2317  # functions below are called from traps
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PULSESYNC_ROOT"

[ "${PULSESYNC_SKIP_DEPS:-0}" = 1 ] || bash scripts/install-deps.sh
[ "${PULSESYNC_SKIP_BUILD:-0}" = 1 ] || bash scripts/build.sh

build_dir="$(ps_build_dir)"
pulsesyncd="$build_dir/server/pulsesyncd"
[ -x "$pulsesyncd" ] || ps_die "$pulsesyncd not found; did the build succeed?"
listen="${PULSESYNC_LISTEN:-127.0.0.1:50051}"
# Prometheus metrics on loopback unless set (empty turns them off).
export PULSESYNC_METRICS_LISTEN="${PULSESYNC_METRICS_LISTEN-127.0.0.1:9464}"

# Plaintext unless the caller configured TLS (pulsesyncd refuses both at once).
transport_flags=(--plaintext)
transport_desc="gRPC, plaintext"
if [ -n "${PULSESYNC_TLS_CERT_FILE:-}" ]; then
  transport_flags=()
  transport_desc="gRPC, TLS"
fi
for a in "$@"; do
  case "$a" in
    --tls_cert_file*) transport_flags=(); transport_desc="gRPC, TLS" ;;
    --plaintext*) transport_flags=() ;;
  esac
done

pg_datadir=""
pg_started=0
server_pid=""
signals=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$pg_started" = 1 ]; then
    ps_pg_stop "$pg_datadir"
  fi
  exit "$rc"
}
trap cleanup EXIT

# Ctrl-C / SIGTERM: ask the server to stop (a second one kills it); cleanup
# then stops PostgreSQL.
on_signal() {
  signals=$((signals + 1))
  local code=$((128 + $1))
  if [ -n "$server_pid" ]; then
    if [ "$signals" -ge 2 ]; then
      kill -KILL "$server_pid" 2>/dev/null || true
    else
      ps_log "stopping pulsesyncd"
      kill -TERM "$server_pid" 2>/dev/null || true
    fi
  else
    exit "$code"
  fi
}
trap 'on_signal 2' INT
trap 'on_signal 15' TERM

if [ -n "${DATABASE_URL:-}" ]; then
  pg_where="from DATABASE_URL (this script starts and stops no PostgreSQL)"
else
  pg_datadir="$(ps_dev_datadir)"
  ps_pg_init "$pg_datadir"
  ps_pg_start "$pg_datadir" "$(ps_dev_port)"
  pg_started="$PS_PG_STARTED"
  ps_pg_createdb "$PS_PG_PORT" pulsesync
  DATABASE_URL="postgresql://postgres@127.0.0.1:$PS_PG_PORT/pulsesync"
  if [ "$pg_started" = 1 ]; then
    pg_where="127.0.0.1:$PS_PG_PORT, data in $pg_datadir (log: $pg_datadir/postgres.log)"
  else
    pg_where="127.0.0.1:$PS_PG_PORT, data in $pg_datadir (already running; left running on exit)"
  fi
fi
export DATABASE_URL

shown_url="$(printf '%s' "$DATABASE_URL" | sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#')"
stop_note=""
psql_line=""
metrics_line="off"
[ -n "$PULSESYNC_METRICS_LISTEN" ] && metrics_line="http://$PULSESYNC_METRICS_LISTEN/metrics"
[ -n "$pg_datadir" ] && psql_line="  psql         psql '$DATABASE_URL'
"
[ "$pg_started" = 1 ] && stop_note=" (stops PostgreSQL too)"

ps_log "migrating the database"
"$pulsesyncd" migrate --database_url="$DATABASE_URL"

cat <<EOF

  pulsesyncd   listening on $listen ($transport_desc)
  metrics      $metrics_line
  PostgreSQL   $pg_where
  DATABASE_URL $shown_url
$psql_line
  press Ctrl-C to stop$stop_note

EOF

# Run in the background and wait, so that a SIGTERM to this script is
# handled at once instead of after the server exits.
"$pulsesyncd" serve --database_url="$DATABASE_URL" --listen="$listen" \
  ${transport_flags[@]+"${transport_flags[@]}"} "$@" &
server_pid=$!
set +e
while :; do
  wait "$server_pid"
  rc=$?
  kill -0 "$server_pid" 2>/dev/null || break
done
set -e
server_pid=""
ps_log "pulsesyncd exited with status $rc"
exit "$rc"
