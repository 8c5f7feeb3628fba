#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on loopback for tests and prints its URL.
#   scripts/pg-cluster.sh start [PORT]   → prints postgres://postgres@127.0.0.1:PORT/cairn_test
#   scripts/pg-cluster.sh stop           → stops the cluster started last
# Installs Debian's postgresql package when no server binaries are present. initdb refuses to
# run as root, so the cluster runs as the postgres user. fsync is off (the data is disposable)
# unless PG_FSYNC=on, which benchmarks use. PG_STATE names the file that remembers the cluster
# (default /tmp/cairn-pg-cluster.path), so a caller can keep its own cluster apart.
set -euo pipefail
state=${PG_STATE:-/tmp/cairn-pg-cluster.path}
case "${1:-}" in
start)
  port=${2:-54329}
  if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    echo "installing postgresql from Debian's packages" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
  fi
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  pgdata=$(mktemp -d /tmp/cairn-pgdata.XXXXXX)
  run() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$pgdata"
  chmod 700 "$pgdata"
  run "$pgbin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  run "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $pgdata -c fsync=${PG_FSYNC:-off} -c max_connections=1000 -c shared_buffers=256MB" start >/dev/null
  run "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U postgres cairn_test
  echo "$pgbin $pgdata" > "$state"
  echo "postgres://postgres@127.0.0.1:$port/cairn_test?sslmode=disable"
  ;;
stop)
  [ -f "$state" ] || exit 0
  read -r pgbin pgdata < "$state"
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null || true
  else "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null || true; fi
  rm -rf "$pgdata" "$state"
  ;;
*) echo "usage: $0 start [PORT] | stop" >&2; exit 2 ;;
esac
