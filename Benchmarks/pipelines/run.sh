#!/usr/bin/env bash
# Data-platform benchmark, one run on this machine (a measurement tool: it prints tables and
# never fails on a number). Release builds; files are generated under /tmp and removed on exit.
#   1. parser throughput on one core (MB/s): Cairn's CSV, NDJSON and XML readers on generated
#      files of about 500 MB, and Python's csv module on the same CSV;
#   2. upload throughput (MB/s) of a 1 GB CSV through POST /files, with the server's peak RSS;
#   3. end to end: a filter-and-aggregate pipeline on flights.csv and on the 1 GB CSV (upload
#      excluded: from POST /pipelines/{id}/runs to the job's success), against the same SQL in
#      DuckDB (read_csv_auto) and a Python csv + sqlite3 script doing the same work.
#   Benchmarks/pipelines/run.sh [--quick]    (--quick: ~100 MB files instead of 500 MB / 1 GB)
#   BIG_COPIES=64 Benchmarks/pipelines/run.sh  (the large CSV as 64 copies of flights.csv: 2 GB)
#   SKIP_PARSERS=1 Benchmarks/pipelines/run.sh (sections 2 and 3 only)
#   BUILD_PATH=.build-release Benchmarks/pipelines/run.sh (reuse a release build kept apart)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
data=${CAIRN_SHARED_DATA:-$root/../shared/data}
work=$(mktemp -d /tmp/cairn-pipeline-bench.XXXXXX)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
copies_500=16; copies_1g=${BIG_COPIES:-32}
if [ "${1:-}" = --quick ]; then copies_500=3; copies_1g=3; fi

echo "building cairn and cairn-bench (release)..." >&2
build=${BUILD_PATH:-.build}
(cd "$root" && swift build -c release --build-path "$build" --product cairn >/dev/null && swift build -c release --build-path "$build" --product cairn-bench >/dev/null)
bench=$root/$build/release/cairn-bench
python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check duckdb

gzip -dc "$data/flights.csv.gz" >"$work/flights.csv"
repeat() { { cat "$work/flights.csv"; for _ in $(seq $(($1 - 1))); do tail -n +2 "$work/flights.csv"; done; } >"$2"; }
repeat "$copies_500" "$work/flights-500.csv"
repeat "$copies_1g" "$work/flights-1g.csv"
[ -n "${SKIP_PARSERS:-}" ] || python3 - "$work/flights-500.csv" "$work/flights-500.ndjson" "$work/flights-500.xml" <<'PY'
import csv, json, sys
from xml.sax.saxutils import quoteattr, escape
with open(sys.argv[1], newline='') as f, open(sys.argv[2], 'w') as nd, open(sys.argv[3], 'w') as xml:
    xml.write('<?xml version="1.0"?>\n<flights>\n')
    for row in csv.DictReader(f):
        nd.write(json.dumps(row) + '\n')
        xml.write('<flight ' + ' '.join(f'{k}={quoteattr(v)}' for k, v in row.items()) + '/>\n')
    xml.write('</flights>\n')
PY
mb() { echo "$(( $(stat -c %s "$1") / 1000000 ))"; }

if [ -z "${SKIP_PARSERS:-}" ]; then
echo
echo "## 1. Parser throughput, one core"
echo "| input | size | Cairn | Python csv |"
echo "|---|---|---|---|"
py_csv=$(python3 - "$work/flights-500.csv" <<'PY'
import csv, os, sys, time
t = time.time(); n = sum(1 for _ in csv.reader(open(sys.argv[1], newline='')))
print(f"{os.path.getsize(sys.argv[1]) / 1e6 / (time.time() - t):.1f} MB/s")
PY
)
echo "| CSV | $(mb "$work/flights-500.csv") MB | $("$bench" csv "$work/flights-500.csv" | sed 's/.*: //') | $py_csv |"
echo "| NDJSON | $(mb "$work/flights-500.ndjson") MB | $("$bench" ndjson "$work/flights-500.ndjson" | sed 's/.*: //') | |"
echo "| XML (attributes) | $(mb "$work/flights-500.xml") MB | $("$bench" xml "$work/flights-500.xml" /flights/flight | sed 's/.*: //') | |"
fi
rm -f "$work/flights-500.ndjson" "$work/flights-500.xml"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
base=http://127.0.0.1:$port
CAIRN_BCRYPT_COST=4 CAIRN_LOG_LEVEL=warning "$root/$build/release/cairn" serve --data-dir "$work/data" --port "$port" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -sf "$base/health/live" >/dev/null && break; sleep 0.1; done
curl -sf -X POST "$base/auth/register" -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.com","password":"bench password 1","name":"Bench"}' >/dev/null
token=$(curl -sf -X POST "$base/auth/login" -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.com","password":"bench password 1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
rss() { awk '/VmHWM/ {printf "%d MB", $2 / 1024}' "/proc/$server_pid/status"; }
now() { date +%s.%N; }
upload() {
  curl -sf -X POST -T "$1" "$base/files" -H "Authorization: Bearer $token" -H 'Content-Type: text/csv' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
idle_rss=$(rss)

echo
echo "## 2. Upload (POST /files, SQLite, fsync on)"
start=$(now); big=$(upload "$work/flights-1g.csv"); end=$(now)
echo "$(mb "$work/flights-1g.csv") MB in $(python3 -c "print(f'{$end - $start:.1f}')") s: $(python3 -c "print(f'{$(mb "$work/flights-1g.csv") / ($end - $start):.0f}')") MB/s; server peak RSS $idle_rss idle → $(rss)"
small=$(upload "$work/flights.csv")

sql="SELECT carrier, count(*) AS flights, avg(arr_delay) AS mean_arr_delay, max(dep_delay) AS worst_dep_delay FROM input WHERE origin = 'JFK' AND dep_delay > 15 GROUP BY carrier ORDER BY carrier"
pipeline=$(python3 -c 'import json,sys; print(json.dumps({"name":"bench","input":{"format":"csv"},"sql":sys.argv[1],"output":{"format":"csv"}}))' "$sql" \
  | curl -sf -X POST "$base/pipelines" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' --data-binary @- \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
run_cairn() { # file id → seconds
  local start job state
  start=$(now)
  job=$(curl -sf -X POST "$base/pipelines/$pipeline/runs" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"fileId\":\"$1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  while :; do
    state=$(curl -sf "$base/jobs/$job" -H "Authorization: Bearer $token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    case $state in succeeded | discarded | cancelled) break ;; esac
    sleep 0.05
  done
  [ "$state" = succeeded ] || echo "run $job ended $state" >&2
  python3 -c "print(f'{$(now) - $start:.2f}')"
}
run_duckdb() {
  python3 - "$1" "$sql" <<'PY'
import duckdb, sys, time
t = time.time()
duckdb.sql(sys.argv[2].replace("FROM input", f"FROM read_csv_auto('{sys.argv[1]}', nullstr=['NA', ''])")).fetchall()
print(f"{time.time() - t:.2f}")
PY
}
run_python() {
  python3 - "$1" "$sql" "$work/python.sqlite" <<'PY'
import csv, os, sqlite3, sys, time
t = time.time()
if os.path.exists(sys.argv[3]): os.remove(sys.argv[3])
db = sqlite3.connect(sys.argv[3])
db.execute("PRAGMA journal_mode=OFF"); db.execute("PRAGMA synchronous=OFF")
with open(sys.argv[1], newline='') as f:
    reader = csv.reader(f)
    header = next(reader)
    db.execute("CREATE TABLE input (" + ", ".join(f'"{h}"' for h in header) + ")")
    def values():
        for row in reader:
            yield [None if v in ('', 'NA', 'NULL') else (int(v) if v.lstrip('-').isdigit() else v) for v in row]
    db.executemany("INSERT INTO input VALUES (" + ", ".join("?" * len(header)) + ")", values())
db.commit()
db.execute(sys.argv[2]).fetchall()
print(f"{time.time() - t:.2f}")
PY
  rm -f "$work/python.sqlite"
}
echo
echo "## 3. Filter-and-aggregate pipeline, end to end (seconds; lower is better)"
echo "SQL: $sql"
echo "| input | Cairn (job) | Python csv + sqlite3 | DuckDB | Cairn vs Python | Cairn vs DuckDB | server peak RSS |"
echo "|---|---|---|---|---|---|---|"
for pair in "flights.csv:$small:$work/flights.csv" "flights-1g.csv:$big:$work/flights-1g.csv"; do
  IFS=: read -r name id path <<<"$pair"
  c=$(run_cairn "$id"); p=$(run_python "$path"); d=$(run_duckdb "$path")
  echo "| $name ($(mb "$path") MB) | $c | $p | $d | $(python3 -c "print(f'{$p / $c:.2f}× faster')") | $(python3 -c "print(f'{$c / $d:.1f}× slower')") | $(rss) |"
done
echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores; the server, DuckDB and Python share them)"
