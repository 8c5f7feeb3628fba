# Sourced first by run.sh and reports.sh: where things are and the settings both share, the
# process groups a benchmark starts, their cleanup on exit, and a throwaway PostgreSQL cluster.
# Everything a benchmark starts through start_bg or start_pg_cluster, and its `work` directory
# once it sets one, is stopped and removed when it exits, however it exits.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
helpers="$here/helpers.py"
PEER_DIR=${PEER_DIR:-/work/shared/peers/express}
PASSWORD='correct horse battery staple'   # of every account the benchmarks register
ONLY=all                                  # the part to run (--only); wants PART: whether it runs
wants() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }
work=                                     # the script's temp directory, set once its arguments are read

PIDS=()            # process-group leaders started here (each server runs in its own session)
PG_PGBIN= PG_PGDATA=
LAST_PID=

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do stop_proc "$pid"; done
  if [ -n "$PG_PGDATA" ]; then
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$PG_PGBIN/pg_ctl" -D "$PG_PGDATA" -m fast -w stop >/dev/null 2>&1
    else "$PG_PGBIN/pg_ctl" -D "$PG_PGDATA" -m fast -w stop >/dev/null 2>&1; fi
    rm -rf "$PG_PGDATA"
  fi
  [ -z "$work" ] || rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_proc() {  # stop a process group started by start_bg (TERM, then KILL after 5 s)
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return 0
}

start_bg() {  # start_bg LOG CMD...: runs CMD in a new session (own process group), sets LAST_PID
  local log=$1; shift
  setsid "$@" >"$log" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

die() { echo "error: $*" >&2; exit 1; }
# summary KEY VALUE: one figure for Benchmarks/bench/all.sh's closing table (a line of
# BENCH_SUMMARY, when it is set; nothing otherwise).
summary() { [ -z "${BENCH_SUMMARY:-}" ] || printf '%s\t%s\n' "$1" "$2" >>"$BENCH_SUMMARY"; }
freeport() { python3 "$helpers" freeport; }
rss_mb() { python3 "$helpers" rss "$1"; }

# start_pg_cluster DB...: a throwaway cluster (scripts/pg-cluster.sh) on a free port, with the
# databases DB...; sets pgport, pgbase (postgres://postgres@127.0.0.1:<port>), PG_PGBIN and
# PG_PGDATA (cleanup stops and removes it).
start_pg_cluster() {
  local pgstate=/tmp/cairn-pg-cluster.path had_state=0 db
  pgport=$(freeport)
  # scripts/pg-cluster.sh remembers "the cluster started last" in one shared state file; keep
  # whatever another session put there, and stop our own cluster ourselves (see cleanup).
  [ -f "$pgstate" ] && { cp "$pgstate" "$work/pgstate.before"; had_state=1; }
  "$root/scripts/pg-cluster.sh" start "$pgport" >/dev/null || die "scripts/pg-cluster.sh start failed"
  read -r PG_PGBIN PG_PGDATA <"$pgstate"
  if [ "$had_state" = 1 ]; then cp "$work/pgstate.before" "$pgstate"; else rm -f "$pgstate"; fi
  for db in "$@"; do
    "$PG_PGBIN/psql" -h 127.0.0.1 -p "$pgport" -U postgres -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $db" >/dev/null \
      || die "could not create database $db"
  done
  pgbase="postgres://postgres@127.0.0.1:$pgport"
}
