#!/usr/bin/env bash
# Parser throughput on one core: Cairn's CSV reader, yaslab/CSV.swift and Python's csv module
# on the same files (flights.csv from ../shared/data, and that file repeated to about 500 MB).
# A measurement tool: prints a table, never fails on a number. Temp files are removed on exit.
#   Benchmarks/ingest/run.sh [--quick]     (--quick: flights.csv only)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
data=${CAIRN_SHARED_DATA:-$root/../shared/data}
work=$(mktemp -d /tmp/cairn-ingest-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "building cairn-bench (release)..." >&2
(cd "$root" && swift build -c release --product cairn-bench >/dev/null)
bench=$root/.build/release/cairn-bench
gzip -dc "$data/flights.csv.gz" >"$work/flights.csv"
files=("$work/flights.csv")
if [ "${1:-}" != --quick ]; then
  { cat "$work/flights.csv"; for _ in $(seq 15); do tail -n +2 "$work/flights.csv"; done; } >"$work/flights-x16.csv"
  files+=("$work/flights-x16.csv")
fi
python_csv() {
  python3 - "$1" <<'PY'
import csv, os, sys, time
start = time.time(); n = 0
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    for row in csv.reader(f):
        n += 1
s = time.time() - start
print(f"{n - 1} records, {os.path.getsize(sys.argv[1]) / 1e6:.1f} MB in {s:.2f} s: {os.path.getsize(sys.argv[1]) / 1e6 / s:.1f} MB/s")
PY
}
echo "| file | Cairn CSVReader | CSV.swift | Python csv |"
echo "|---|---|---|---|"
for f in "${files[@]}"; do
  ours=$("$bench" csv "$f" | sed 's/.*: //')
  lib=$("$bench" csv "$f" --library | sed 's/.*: //')
  py=$(python_csv "$f" | sed 's/.*: //')
  echo "| $(basename "$f") ($(du -m "$f" | cut -f1) MB) | $ours | $lib | $py |"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores)"
