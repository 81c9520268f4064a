#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the store tests and print its SQLAlchemy URL:
#   export RFTLAB_TEST_POSTGRES_URL=$(bash scripts/start_postgres.sh)
# Installs PostgreSQL from Debian's packages when it is missing (needs root and apt). Runs the cluster as the
# `postgres` user when started as root (the server refuses to run as root). Idempotent: a running cluster is reused.
# Settings: RFTLAB_PG_DIR (default /tmp/rftlab-postgres), RFTLAB_PG_PORT (default 55432), RFTLAB_PG_DB (rftlab_test).
set -euo pipefail

data_root=${RFTLAB_PG_DIR:-/tmp/rftlab-postgres}
port=${RFTLAB_PG_PORT:-55432}
database=${RFTLAB_PG_DB:-rftlab_test}

log() { echo "start_postgres: $*" >&2; }

find_bin_dir() {
  local candidate
  for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$candidate/initdb" ] && { echo "$candidate"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

if ! bin_dir=$(find_bin_dir); then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
    exit 1
  fi
  log "installing PostgreSQL from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bin_dir=$(find_bin_dir) || { log "PostgreSQL was installed but initdb is not found"; exit 1; }
fi

# as_owner CMD...: run as the cluster's owner (postgres when we are root, else ourselves).
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$data_root" --shell /bin/sh postgres
  as_owner() { runuser -u postgres -- "$@"; }
else
  as_owner() { "$@"; }
fi

data_dir="$data_root/data"
mkdir -p "$data_root"
[ "$(id -u)" -eq 0 ] && chown postgres "$data_root"

if [ ! -f "$data_dir/PG_VERSION" ]; then
  log "creating a cluster in $data_dir"
  as_owner "$bin_dir/initdb" -D "$data_dir" -U postgres --auth=trust --encoding=UTF8 >"$data_root/initdb.log" 2>&1 \
    || { cat "$data_root/initdb.log" >&2; exit 1; }
fi

if ! as_owner "$bin_dir/pg_ctl" -D "$data_dir" status >/dev/null 2>&1; then
  log "starting PostgreSQL on 127.0.0.1:$port"
  as_owner "$bin_dir/pg_ctl" -D "$data_dir" -l "$data_root/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data_root" start >&2 \
    || { tail -20 "$data_root/server.log" >&2; exit 1; }
fi

exists=$(as_owner "$bin_dir/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = '$database'")
if [ "$exists" != "1" ]; then
  as_owner "$bin_dir/createdb" -h 127.0.0.1 -p "$port" -U postgres "$database"
fi

echo "postgresql+psycopg://postgres@127.0.0.1:$port/$database"
