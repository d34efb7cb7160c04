#!/bin/sh
# Container entrypoint: `pulsesyncd migrate`, then `pulsesyncd serve`.
# Arguments starting with "-" are extra flags for `serve`; any other
# arguments are run as a command instead, e.g.
#   docker compose run --rm pulsesyncd pulsesync --server=pulsesyncd:50051 status
# Env: DATABASE_URL (required), PULSESYNC_LISTEN (default 0.0.0.0:50051),
#      PULSESYNC_MIGRATIONS_DIR (default /usr/share/pulsesync/migrations),
#      PULSESYNC_MIGRATE_ATTEMPTS (default 5, 2 s apart).
set -eu

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi

if [ -z "${DATABASE_URL:-}" ]; then
  echo "pulsesync-entrypoint: DATABASE_URL is not set" >&2
  exit 64
fi
export PULSESYNC_MIGRATIONS_DIR="${PULSESYNC_MIGRATIONS_DIR:-/usr/share/pulsesync/migrations}"
listen="${PULSESYNC_LISTEN:-0.0.0.0:50051}"

attempt=1
max="${PULSESYNC_MIGRATE_ATTEMPTS:-5}"
until pulsesyncd migrate --database_url="$DATABASE_URL"; do
  if [ "$attempt" -ge "$max" ]; then
    echo "pulsesync-entrypoint: migrate failed $attempt times; giving up" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  echo "pulsesync-entrypoint: migrate failed; retrying in 2 s" >&2
  sleep 2
done

exec pulsesyncd serve --database_url="$DATABASE_URL" --listen="$listen" "$@"
