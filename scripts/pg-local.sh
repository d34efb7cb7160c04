#!/usr/bin/env bash
# Manages the local development PostgreSQL 15 cluster that scripts/run-server.sh
# uses (the same data directory and port), e.g. to look at the data while no
# server runs.
#
#   scripts/pg-local.sh start    init (if needed) and start; create db pulsesync
#   scripts/pg-local.sh stop     stop (fast)
#   scripts/pg-local.sh status   running or not, where, and the URL
#   scripts/pg-local.sh psql ... psql into database pulsesync (extra args to psql)
#   scripts/pg-local.sh url      print the DATABASE_URL
#
# Env: PULSESYNC_HOME (default <repo>/.pulsesync), PULSESYNC_PG_PORT (54329),
#      PULSESYNC_PG_BIN (/usr/lib/postgresql/15/bin).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cmd="${1:-status}"
[ $# -gt 0 ] && shift
datadir="$(ps_dev_datadir)"
port="$(ps_dev_port)"
if ps_pg_is_running "$datadir"; then
  running="$(ps_pg_running_port "$datadir")"
  port="${running:-$port}"
fi
url="postgresql://postgres@127.0.0.1:$port/pulsesync"

case "$cmd" in
  start)
    ps_pg_init "$datadir"
    ps_pg_start "$datadir" "$port"
    ps_pg_createdb "$PS_PG_PORT" pulsesync
    echo "PostgreSQL: postgresql://postgres@127.0.0.1:$PS_PG_PORT/pulsesync (data $datadir)"
    ;;
  stop)
    ps_pg_stop "$datadir"
    ;;
  status)
    if ps_pg_is_running "$datadir"; then
      echo "running: $url (data $datadir)"
    else
      echo "stopped (data $datadir)"
      exit 3
    fi
    ;;
  psql)
    exec "$PULSESYNC_PG_BIN/psql" "$url" "$@"
    ;;
  url)
    echo "$url"
    ;;
  *)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
