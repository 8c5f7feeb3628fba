#!/usr/bin/env bash
# Every figure issue 19 names, in one run on this machine, each beside its peer where it has one
# and beside its goal: run.sh (the tasks routes on both engines against the Express peer, login
# interference, the CPU cost of authenticating, idle RSS), reports.sh (reports against the peer,
# the catalog cached and uncached) and jobs.py (one PostgreSQL node, fsync on, batched and single
# claims, GET /tasks p99 while the queue runs flat out), then one closing table.
# A measurement tool, not a test: it never fails on a number.
#
#   Benchmarks/bench/all.sh
#   QUICK=1 Benchmarks/bench/all.sh   shorter runs (about 7 minutes): DURATION=4, TASKS=200000,
#                                     PRODUCTS=20000, JOBS=10000
#
#   DURATION, TASKS, PRODUCTS, JOBS   override the durations and sizes of either form
#                                     (full form: 15 s, 1,000,000 tasks, 100,000 products, 100,000 jobs)
#   CAIRN_BIN=...                     the cairn binary (default .build-release/release/cairn, built
#                                     by run.sh when missing)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case ${1:-} in -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;; "") ;; *) echo "unknown argument: $1" >&2; exit 2 ;; esac
if [ "${QUICK:-0}" = 1 ]; then
  DURATION=${DURATION:-4} TASKS=${TASKS:-200000} PRODUCTS=${PRODUCTS:-20000} JOBS=${JOBS:-10000}
else
  DURATION=${DURATION:-15} TASKS=${TASKS:-1000000} PRODUCTS=${PRODUCTS:-100000} JOBS=${JOBS:-100000}
fi
export DURATION
BENCH_SUMMARY=$(mktemp /tmp/cairn-bench-summary.XXXXXX)
export BENCH_SUMMARY
trap 'rm -f "$BENCH_SUMMARY"' EXIT

started=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
failed=()
# Each part runs to its end even when another failed; the closing table shows n/a for what is missing.
step() {  # step NAME CMD...
  local name=$1; shift
  echo; echo "=============== $name ==============="
  "$@" || failed+=("$name (exit $?)")
}
step "run.sh: tasks routes, login interference, authentication cost, RSS" "$here/run.sh" --no-build
step "reports.sh: reports and catalog" env TASKS="$TASKS" PRODUCTS="$PRODUCTS" "$here/reports.sh"
jobs_args=(--no-build --only postgres --nodes 1 --jobs "$JOBS")
[ "${QUICK:-0}" = 1 ] && jobs_args+=(--quick)
step "jobs.py: one PostgreSQL node, fsync on" python3 "$here/jobs.py" "${jobs_args[@]}"

echo
echo "Issue 19 — every figure in one run ($(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'), $(( $(date +%s) - started )) s;" \
  "wrk runs of ${DURATION} s, $TASKS report tasks, $JOBS jobs per throughput run; load average $load_start at start, $(cut -d' ' -f1-3 /proc/loadavg) at end)"
python3 "$here/helpers.py" summary "$BENCH_SUMMARY"
echo "  Tasks routes: SQLite with synchronous=FULL against the peer in memory; PostgreSQL with fsync off for both (run.sh)."
echo "  Jobs: fsync on. Idle RSS: cairn on SQLite 2 s after start-up (peer: one node process, in memory)."
for f in "${failed[@]}"; do echo "  ! part failed: $f"; done
