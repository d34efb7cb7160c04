# shellcheck shell=bash
# Helpers sourced by the other scripts in scripts/. Not meant to be run.
#
# Environment it reads:
#   PULSESYNC_BUILD_DIR  build directory (default: build, relative to the repo)
#   PULSESYNC_PG_BIN     PostgreSQL server binaries (default: /usr/lib/postgresql/15/bin)
#
# PostgreSQL clusters are private to pulsesync: initdb'd into a directory of
# our choosing, trust authentication, listening on 127.0.0.1 only. initdb and
# pg_ctl refuse to run as root, so when uid is 0 every server-side command runs
# as the `postgres` OS user (runuser) and the data directory belongs to it.

PULSESYNC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PULSESYNC_PG_BIN="${PULSESYNC_PG_BIN:-/usr/lib/postgresql/15/bin}"

ps_log() { printf '[pulsesync] %s\n' "$*" >&2; }
ps_die() { printf '[pulsesync] error: %s\n' "$*" >&2; exit 1; }

# Absolute build directory.
ps_build_dir() {
  local d="${PULSESYNC_BUILD_DIR:-build}"
  case "$d" in
    /*) printf '%s\n' "$d" ;;
    *) printf '%s\n' "$PULSESYNC_ROOT/$d" ;;
  esac
}

# Short stable hash of a string (for directory names).
ps_hash() { printf '%s' "$1" | sha256sum | cut -c1-12; }

ps_is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a PostgreSQL server-side command as the cluster's OS user, from /, so
# that an unreadable working directory does not bother it.
ps_pg_as_owner() {
  if ps_is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

ps_pg_check_tools() {
  if [ ! -x "$PULSESYNC_PG_BIN/initdb" ] || [ ! -x "$PULSESYNC_PG_BIN/pg_ctl" ]; then
    ps_die "PostgreSQL 15 server binaries not found in $PULSESYNC_PG_BIN (run scripts/install-deps.sh)"
  fi
  if ps_is_root; then
    getent passwd postgres >/dev/null ||
      ps_die "running as root needs the 'postgres' OS user (it comes with the postgresql-15 package)"
    command -v runuser >/dev/null || ps_die "runuser not found (package util-linux)"
  fi
}

# True when the cluster's OS user can reach (search) directory $1.
ps_pg_can_traverse() {
  if ps_is_root; then
    runuser -u postgres -- test -x "$1" 2>/dev/null
  else
    test -x "$1"
  fi
}

# ps_pg_choose_datadir WANTED FALLBACK
# Creates the parent of WANTED and prints WANTED if the cluster's OS user can
# reach it, else prints FALLBACK (creating its parents, world-searchable) and
# says why on stderr. As non-root, WANTED is always usable.
ps_pg_choose_datadir() {
  local wanted="$1" fallback="$2" parent
  parent="$(dirname "$wanted")"
  mkdir -p "$parent"
  parent="$(cd "$parent" && pwd -P)"
  if ps_pg_can_traverse "$parent"; then
    printf '%s/%s\n' "$parent" "$(basename "$wanted")"
    return
  fi
  ps_log "the postgres OS user cannot reach $parent (a parent directory is not searchable by others);"
  ps_log "using $fallback for the PostgreSQL data instead"
  local d="$fallback"
  mkdir -p "$(dirname "$fallback")"
  # Make the directories we may just have created searchable by postgres.
  while d="$(dirname "$d")"; [ "$d" != / ] && [ "$d" != /var/lib ] && [ "$d" != /var ]; do
    chmod a+x "$d"
  done
  ps_pg_can_traverse "$(dirname "$fallback")" ||
    ps_die "the postgres OS user cannot reach $(dirname "$fallback") either"
  printf '%s\n' "$fallback"
}

# Directory for the unix socket: the data dir when its path is short enough
# for sockaddr_un (107 bytes incl. "/.s.PGSQL.NNNNN"), else a short /tmp dir.
ps_pg_socket_dir() {
  local datadir="$1"
  if [ "${#datadir}" -le 80 ]; then
    printf '%s\n' "$datadir"
  else
    printf '/tmp/pulsesync-pg-%s\n' "$(ps_hash "$datadir")"
  fi
}

# ps_pg_init DATADIR [throwaway]
# initdb's DATADIR unless it already holds a cluster. "throwaway" turns off
# durability (fsync etc.) for test clusters.
ps_pg_init() {
  local datadir="$1" mode="${2:-}"
  ps_pg_check_tools
  if [ -f "$datadir/PG_VERSION" ]; then
    if ps_is_root && [ "$(stat -c %U "$datadir")" != postgres ]; then
      ps_log "giving $datadir to the postgres OS user"
      chown -R postgres:postgres "$datadir"
    fi
    return 0
  fi
  mkdir -p "$datadir"
  if [ -n "$(ls -A "$datadir")" ]; then
    ps_die "$datadir is not empty and holds no PostgreSQL cluster; move it away or set another location"
  fi
  ps_is_root && chown postgres:postgres "$datadir"
  chmod 700 "$datadir"
  ps_log "initdb $datadir"
  local out
  if ! out="$(ps_pg_as_owner "$PULSESYNC_PG_BIN/initdb" -D "$datadir" --auth=trust -U postgres \
      --encoding=UTF8 --locale=C.UTF-8 --no-instructions 2>&1)"; then
    printf '%s\n' "$out" >&2
    ps_die "initdb failed for $datadir"
  fi
  # Settings that do not depend on the port go into the cluster's own config;
  # the port/address/socket are written to pulsesync.conf at every start.
  {
    echo ""
    echo "# pulsesync: local development cluster"
    echo "max_connections = 200"
    if [ "$mode" = throwaway ]; then
      echo "# throwaway test cluster: durability off for speed"
      echo "fsync = off"
      echo "synchronous_commit = off"
      echo "full_page_writes = off"
    fi
    echo "include_if_exists = 'pulsesync.conf'"
  } | ps_pg_as_owner tee -a "$datadir/postgresql.conf" >/dev/null
}

# Port the cluster in DATADIR runs on (from postmaster.pid), empty if none.
ps_pg_running_port() {
  local pidfile="$1/postmaster.pid"
  if [ -f "$pidfile" ]; then sed -n 4p "$pidfile" 2>/dev/null || true; fi
}

# True when process $1 exists and is not a zombie (a killed postmaster whose
# parent never reaps it, as under some container inits, still answers kill -0).
ps_pid_alive() {
  local state
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ "$state" != Z ] && [ "$state" != X ]
}

ps_pg_is_running() {
  local pid
  [ -f "$1/postmaster.pid" ] || return 1
  pid="$(sed -n 1p "$1/postmaster.pid" 2>/dev/null)"
  ps_pid_alive "$pid" || return 1
  ps_pg_as_owner "$PULSESYNC_PG_BIN/pg_ctl" -D "$1" status >/dev/null 2>&1
}

# After a crash (kill -9, power loss) postmaster.pid and the socket lock file
# stay behind. postgres removes them itself when their pid is gone, but not
# when the pid is a zombie; remove them here in that case.
ps_pg_clear_stale_pid() {
  local datadir="$1" sockdir pid f
  [ -f "$datadir/postmaster.pid" ] || return 0
  pid="$(sed -n 1p "$datadir/postmaster.pid" 2>/dev/null)"
  if ps_pid_alive "$pid"; then return 0; fi
  ps_log "removing stale postmaster.pid (process ${pid:-?} is gone; PostgreSQL was not shut down cleanly)"
  rm -f "$datadir/postmaster.pid"
  sockdir="$(ps_pg_socket_dir "$datadir")"
  for f in "$sockdir"/.s.PGSQL.*.lock; do
    [ -f "$f" ] || continue
    if ! ps_pid_alive "$(sed -n 1p "$f" 2>/dev/null)"; then rm -f "$f" "${f%.lock}"; fi
  done
}

ps_port_in_use() {
  [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

# Prints a TCP port on 127.0.0.1 that nothing listens on (random, 20000-59999).
ps_free_port() {
  # Below the kernel's ephemeral range, so that no outgoing connection (the
  # tests make many) can be holding the port when PostgreSQL binds it.
  local p i low=32768
  if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  fi
  [ "$low" -gt 12000 ] || low=32768
  for i in $(seq 1 200); do
    p=$((10000 + (RANDOM * 32768 + RANDOM) % (low - 10000)))
    if ! ps_port_in_use "$p"; then
      printf '%s\n' "$p"
      return 0
    fi
    : "$i"
  done
  ps_die "no free TCP port found"
}

# ps_pg_start DATADIR PORT
# Starts the cluster (waiting until it accepts connections). Sets
# PS_PG_STARTED=1 when this call started it, 0 when it was already running
# (then PS_PG_PORT is the port it really runs on). A stale postmaster.pid
# after a crash is handled by postgres itself; shared memory still held by
# dying backends is waited out by retrying.
# shellcheck disable=SC2034  # PS_PG_STARTED and PS_PG_PORT are read by callers
ps_pg_start() {
  local datadir="$1" port="$2" sockdir log attempt
  PS_PG_STARTED=0
  PS_PG_PORT="$port"
  ps_pg_check_tools
  if ps_pg_is_running "$datadir"; then
    local running
    running="$(ps_pg_running_port "$datadir")"
    if [ -n "$running" ] && [ "$running" != "$port" ]; then
      ps_log "PostgreSQL in $datadir is already running on port $running (not $port); using it"
      PS_PG_PORT="$running"
    else
      ps_log "PostgreSQL in $datadir is already running on port $port; reusing it"
    fi
    return 0
  fi
  ps_pg_clear_stale_pid "$datadir"
  if ps_port_in_use "$port"; then
    ps_die "TCP port $port is already in use by another program; choose another with PULSESYNC_PG_PORT=<port>"
  fi
  sockdir="$(ps_pg_socket_dir "$datadir")"
  if [ "$sockdir" != "$datadir" ]; then
    mkdir -p "$sockdir"
    ps_is_root && chown postgres:postgres "$sockdir"
    chmod 700 "$sockdir"
  fi
  printf "# written by pulsesync scripts/lib.sh at each start\nlisten_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\n" \
    "$port" "$sockdir" | ps_pg_as_owner tee "$datadir/pulsesync.conf" >/dev/null
  log="$datadir/postgres.log"
  for attempt in 1 2 3 4 5; do
    if ps_pg_as_owner "$PULSESYNC_PG_BIN/pg_ctl" -D "$datadir" -l "$log" -w -t 60 start >/dev/null 2>&1; then
      PS_PG_STARTED=1
      ps_log "PostgreSQL started: 127.0.0.1:$port, data $datadir, log $log"
      return 0
    fi
    ps_log "PostgreSQL did not start (attempt $attempt); last log lines:"
    tail -n 5 "$log" >&2 2>/dev/null || true
    sleep 2
  done
  ps_die "could not start PostgreSQL in $datadir (see $log)"
}

# ps_pg_throwaway PREFIX: a throwaway cluster (no fsync; for tests and
# benchmarks) in a new directory PREFIX.XXXXXX under $TMPDIR, or under /tmp
# when postgres cannot reach $TMPDIR, started on a free port. Sets pg_tmp
# (the directory) and pg_datadir as soon as each exists, so that the
# caller's EXIT trap can stop and remove them, and exports
# PULSESYNC_TEST_DATABASE_URL (the superuser on 127.0.0.1).
ps_pg_throwaway() {
  local prefix="$1" port
  pg_tmp="$(mktemp -d "${TMPDIR:-/tmp}/$prefix.XXXXXX")"
  chmod 755 "$pg_tmp"
  if ! ps_pg_can_traverse "$pg_tmp"; then
    rm -rf "$pg_tmp"
    pg_tmp="$(mktemp -d "/tmp/$prefix.XXXXXX")"
    chmod 755 "$pg_tmp"
  fi
  pg_datadir="$pg_tmp/pgdata"
  ps_pg_init "$pg_datadir" throwaway
  port="$(ps_free_port)"
  ps_pg_start "$pg_datadir" "$port"
  export PULSESYNC_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:$port/postgres"
}

ps_pg_stop() {
  local datadir="$1"
  if ps_pg_is_running "$datadir"; then
    ps_log "stopping PostgreSQL ($datadir)"
    ps_pg_as_owner "$PULSESYNC_PG_BIN/pg_ctl" -D "$datadir" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      ps_pg_as_owner "$PULSESYNC_PG_BIN/pg_ctl" -D "$datadir" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  local sockdir
  sockdir="$(ps_pg_socket_dir "$datadir")"
  if [ "$sockdir" != "$datadir" ]; then rmdir "$sockdir" 2>/dev/null || true; fi
}

# ps_pg_createdb PORT NAME: creates database NAME unless it exists.
ps_pg_createdb() {
  local port="$1" name="$2" exists
  exists="$("$PULSESYNC_PG_BIN/psql" -X -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAq \
    -v ON_ERROR_STOP=1 -v name="$name" <<'SQL'
SELECT 1 FROM pg_database WHERE datname = :'name';
SQL
  )" || ps_die "cannot connect to PostgreSQL on 127.0.0.1:$port"
  if [ "$exists" != 1 ]; then
    ps_log "creating database $name"
    "$PULSESYNC_PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$name"
  fi
}

# The development cluster of scripts/run-server.sh and scripts/pg-local.sh:
# ${PULSESYNC_HOME:-<repo>/.pulsesync}/pgdata, or, when root and postgres
# cannot reach that, /var/lib/pulsesync/<hash of that path>/pgdata.
ps_dev_datadir() {
  local home="${PULSESYNC_HOME:-$PULSESYNC_ROOT/.pulsesync}"
  mkdir -p "$home"
  home="$(cd "$home" && pwd -P)"
  ps_pg_choose_datadir "$home/pgdata" "/var/lib/pulsesync/$(ps_hash "$home/pgdata")/pgdata"
}
ps_dev_port() { printf '%s\n' "${PULSESYNC_PG_PORT:-54329}"; }
