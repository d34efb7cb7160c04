#!/usr/bin/env bash
# The docker-compose.yml topology on one machine, without Docker:
# PostgreSQL 15, migrations, N pulsesyncd replicas (default 2) and HAProxy
# balancing gRPC (HTTP/2) across them, with active health checks.
#
#   deploy/local/stack.sh up       start everything (idempotent: refuses if up)
#   deploy/local/stack.sh status   what runs where (exit 0 when every part is up)
#   deploy/local/stack.sh down     stop everything this script started
#   deploy/local/stack.sh env      print the stack's addresses as KEY=VALUE lines
#
# Clients talk to the balancer (default 127.0.0.1:50051, the same address as
# scripts/run-server.sh and docker compose). Each replica serves Prometheus
# metrics on its own port (default 9464, 9465, ...).
#
# Environment:
#   PULSESYNC_STACK_DIR       state, logs and config (default <repo>/.pulsesync/stack)
#   PULSESYNC_STACK_LISTEN    balancer address (default 127.0.0.1:50051; port 0 = a free one)
#   PULSESYNC_STACK_REPLICAS  number of pulsesyncd replicas (default 2)
#   PULSESYNC_STACK_METRICS_PORT  first replica's metrics port (default 9464; the
#                             next replicas count up; 0 = free ports)
#   DATABASE_URL              use this database (no PostgreSQL is started); else a
#                             private cluster in $PULSESYNC_STACK_DIR/pgdata on
#                             127.0.0.1:${PULSESYNC_STACK_PG_PORT:-54330}, database pulsesync
#   PULSESYNC_BUILD_DIR, PULSESYNC_SKIP_DEPS=1, PULSESYNC_SKIP_BUILD=1 as in scripts/
#   PULSESYNCD                the pulsesyncd binary (default: the build's)
#   Any other PULSESYNC_* / SUPABASE_JWT_SECRET variable reaches the replicas
#   (e.g. PULSESYNC_JWT_SECRET, PULSESYNC_POOL_SIZE, PULSESYNC_SHUTDOWN_GRACE).
# shellcheck disable=SC2317  # functions below are called from traps
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

stack_dir() {
  local d="${PULSESYNC_STACK_DIR:-$PULSESYNC_ROOT/.pulsesync/stack}"
  mkdir -p "$d"
  (cd "$d" && pwd -P)
}

DIR="$(stack_dir)"
STATE="$DIR/stack.env"

# KEY=VALUE lines of the running stack (written by `up`).
state_get() { [ -f "$STATE" ] && sed -n "s/^$1=//p" "$STATE" | tail -n 1; }
state_put() { printf '%s=%s\n' "$1" "$2" >>"$STATE"; }

pid_alive() { [ -n "${1:-}" ] && ps_pid_alive "$1"; }

# Port of host:port ("" if none).
port_of() { printf '%s\n' "${1##*:}"; }

# stop_pid PID NAME TIMEOUT_S: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pid="$1" name="$2" timeout="$3" i
  pid_alive "$pid" || return 0
  ps_log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  ps_log "$name did not stop in ${timeout}s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

wait_for() {  # wait_for TIMEOUT_S DESCRIPTION COMMAND...
  local timeout="$1" what="$2" i
  shift 2
  for ((i = 0; i < timeout * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  ps_die "timed out after ${timeout}s waiting for $what"
}

pulsesyncd_bin() {
  if [ -n "${PULSESYNCD:-}" ]; then printf '%s\n' "$PULSESYNCD"; return; fi
  printf '%s/server/pulsesyncd\n' "$(ps_build_dir)"
}

haproxy_config() {  # haproxy_config LISTEN SERVER_ADDRESS...
  local listen="$1" i=0 server
  shift
  cat <<EOF
# Written by deploy/local/stack.sh; regenerated at every \`up\`.
global
  maxconn 4096
  log stdout format raw local0 info

defaults
  mode http
  log global
  option httplog
  timeout connect 2s
  # gRPC streams stay open for hours; clients ping every 20 s.
  timeout client 1h
  timeout server 1h
  timeout client-fin 5s
  # A replica that refuses the connection is retried on another one.
  retries 2
  option redispatch 1

frontend grpc
  bind $listen proto h2
  default_backend pulsesyncd

backend pulsesyncd
  # Streams are long-lived: balance on open connections, not on turns.
  balance leastconn
  # TCP checks every second: a killed replica is out within ~1 s; a
  # draining one refuses calls with UNAVAILABLE, which clients retry.
EOF
  for server in "$@"; do
    i=$((i + 1))
    printf '  server replica%d %s proto h2 check inter 1s fall 1 rise 2\n' "$i" "$server"
  done
}

cmd_up() {
  if [ -f "$STATE" ] && pid_alive "$(state_get HAPROXY_PID)"; then
    ps_die "the stack in $DIR is already up (deploy/local/stack.sh status; down first)"
  fi
  [ "${PULSESYNC_SKIP_DEPS:-0}" = 1 ] || bash "$PULSESYNC_ROOT/scripts/install-deps.sh"
  [ "${PULSESYNC_SKIP_BUILD:-0}" = 1 ] || [ -n "${PULSESYNCD:-}" ] ||
    bash "$PULSESYNC_ROOT/scripts/build.sh"
  local bin replicas listen metrics_port haproxy_bin
  bin="$(pulsesyncd_bin)"
  [ -x "$bin" ] || ps_die "$bin not found; build first (scripts/build.sh)"
  haproxy_bin="$(command -v haproxy || true)"
  [ -n "$haproxy_bin" ] || ps_die "haproxy not found (scripts/install-deps.sh installs it)"
  replicas="${PULSESYNC_STACK_REPLICAS:-2}"
  listen="${PULSESYNC_STACK_LISTEN:-127.0.0.1:50051}"
  if [ "$(port_of "$listen")" = 0 ]; then listen="${listen%:*}:$(ps_free_port)"; fi
  if ps_port_in_use "$(port_of "$listen")"; then
    ps_die "balancer port $(port_of "$listen") is in use; set PULSESYNC_STACK_LISTEN"
  fi
  metrics_port="${PULSESYNC_STACK_METRICS_PORT:-9464}"

  : >"$STATE"
  state_put DIR "$DIR"
  # From here on, a failure (ps_die exits) takes down what was started.
  trap 'rc=$?; if [ "$rc" -ne 0 ]; then ps_log "start-up failed; stopping what was started"; cmd_down || true; fi' EXIT

  local url="${DATABASE_URL:-}"
  if [ -z "$url" ]; then
    local datadir
    datadir="$(ps_pg_choose_datadir "$DIR/pgdata" "/var/lib/pulsesync/$(ps_hash "$DIR/pgdata")/pgdata")"
    ps_pg_init "$datadir"
    ps_pg_start "$datadir" "${PULSESYNC_STACK_PG_PORT:-54330}"
    state_put PG_DATADIR "$datadir"
    state_put PG_STARTED "$PS_PG_STARTED"
    ps_pg_createdb "$PS_PG_PORT" pulsesync
    url="postgresql://postgres@127.0.0.1:$PS_PG_PORT/pulsesync"
  fi
  state_put DATABASE_URL "$url"

  ps_log "migrating the database"
  "$bin" migrate --database_url="$url" >"$DIR/migrate.log" 2>&1 ||
    { cat "$DIR/migrate.log" >&2; ps_die "migration failed"; }

  local i servers=() port_file mport
  for ((i = 1; i <= replicas; i++)); do
    port_file="$DIR/replica$i.port"
    rm -f "$port_file"
    if [ "$metrics_port" = 0 ]; then mport="$(ps_free_port)"; else mport=$((metrics_port + i - 1)); fi
    # setsid: a Ctrl-C in this terminal later does not reach the replicas.
    PULSESYNC_PLAINTEXT=1 setsid "$bin" serve --database_url="$url" --listen=127.0.0.1:0 \
      --port_file="$port_file" --metrics_listen="127.0.0.1:$mport" \
      </dev/null >"$DIR/replica$i.log" 2>&1 &
    state_put "REPLICA${i}_PID" "$!"
    state_put "REPLICA${i}_METRICS" "127.0.0.1:$mport"
  done
  for ((i = 1; i <= replicas; i++)); do
    wait_for 30 "replica $i (log: $DIR/replica$i.log)" test -s "$DIR/replica$i.port"
    servers+=("127.0.0.1:$(cat "$DIR/replica$i.port")")
    state_put "REPLICA${i}_ADDRESS" "${servers[-1]}"
  done
  state_put REPLICAS "$replicas"

  haproxy_config "$listen" "${servers[@]}" >"$DIR/haproxy.cfg"
  "$haproxy_bin" -c -q -f "$DIR/haproxy.cfg" || ps_die "invalid $DIR/haproxy.cfg"
  setsid "$haproxy_bin" -db -f "$DIR/haproxy.cfg" </dev/null >"$DIR/haproxy.log" 2>&1 &
  state_put HAPROXY_PID "$!"
  state_put ADDRESS "$listen"
  wait_for 30 "the balancer on $listen to serve (log: $DIR/haproxy.log)" \
    "$bin" health --address="$listen"
  trap - EXIT
  cmd_status
}

cmd_down() {
  [ -f "$STATE" ] || { ps_log "no stack in $DIR"; return 0; }
  stop_pid "$(state_get HAPROXY_PID)" haproxy 10
  local i replicas
  replicas="$(state_get REPLICAS)"
  for ((i = 1; i <= ${replicas:-9}; i++)); do
    stop_pid "$(state_get "REPLICA${i}_PID")" "pulsesyncd replica $i" 30
  done
  if [ "$(state_get PG_STARTED)" = 1 ]; then ps_pg_stop "$(state_get PG_DATADIR)"; fi
  rm -f "$STATE" "$DIR"/replica*.port
  ps_log "stack down (logs and data stay in $DIR)"
}

cmd_status() {
  [ -f "$STATE" ] || { ps_log "no stack in $DIR"; return 3; }
  local ok=0 i replicas pid bin
  bin="$(pulsesyncd_bin)"
  replicas="$(state_get REPLICAS)"
  printf 'stack %s\n' "$DIR"
  printf '  database   %s\n' "$(state_get DATABASE_URL)"
  pid="$(state_get HAPROXY_PID)"
  if pid_alive "$pid" && "$bin" health --address="$(state_get ADDRESS)" >/dev/null 2>&1; then
    printf '  balancer   %s  pid %s  SERVING\n' "$(state_get ADDRESS)" "$pid"
  else
    printf '  balancer   %s  pid %s  DOWN\n' "$(state_get ADDRESS)" "$pid"
    ok=1
  fi
  for ((i = 1; i <= ${replicas:-0}; i++)); do
    pid="$(state_get "REPLICA${i}_PID")"
    if pid_alive "$pid" && "$bin" health --address="$(state_get "REPLICA${i}_ADDRESS")" >/dev/null 2>&1; then
      printf '  replica %d  %s  pid %s  SERVING  metrics http://%s/metrics\n' "$i" \
        "$(state_get "REPLICA${i}_ADDRESS")" "$pid" "$(state_get "REPLICA${i}_METRICS")"
    else
      printf '  replica %d  %s  pid %s  DOWN\n' "$i" "$(state_get "REPLICA${i}_ADDRESS")" "$pid"
      ok=1
    fi
  done
  printf '  logs       %s/*.log\n' "$DIR"
  return "$ok"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) [ -f "$STATE" ] && cat "$STATE" ;;
  *)
    echo "usage: deploy/local/stack.sh up|down|status|env" >&2
    exit 2
    ;;
esac
