#!/usr/bin/env bash
# The cost of OpenTelemetry tracing (issue 16): requests per second and p99 latency of
# GET /tasks?limit=20 with tracing off, on at 100 % sampling and on at 10 %, in one run, against
# a release build on SQLite, spans exported over OTLP/HTTP to a local receiver that accepts them.
# A measurement tool, not a test: it prints a table and never fails on a number (goal: the
# overhead at 10 % under 5 %).
#
#   Benchmarks/tracing/run.sh [--quick] [--no-build] [--together]
#
#   --together      load the three nodes at the same time, each with its own wrk, instead of one
#                   after another: what else slows the machine then slows all three alike
#   DURATION=15     seconds per wrk run (--quick: 3)
#   CONNECTIONS=32  wrk connections (2 wrk threads)
#   ROUNDS=3        times the three modes are measured, interleaved (the median of each is shown,
#                   and with more than one round the median of each round's ratio to off)
#   CAIRN_BIN=...   the cairn binary (default: the release build, built if needed)
#
# CPU µs/req is Cairn's own CPU time (user + system) over the measured run per request; the
# OTLP receiver's is shown apart ("receiver µs/req"), as wrk's is not counted at all: both share
# the machine with Cairn, so they can lower its requests per second, not its CPU per request.
# With --together, compare CPU per request: each node then serves about a third of the requests.
#
# Everything listens on 127.0.0.1; what is started here is stopped and removed on exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
BUILD=1
TOGETHER=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) DURATION=3; ROUNDS=1 ;;
    --no-build) BUILD=0 ;;
    --together) TOGETHER=1 ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
DURATION=${DURATION:-15}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl is not installed" >&2; exit 2; }

if [ -z "${CAIRN_BIN:-}" ]; then
  if [ "$BUILD" = 1 ]; then
    # The build's own output goes to stderr (stdout is the results): its progress, and the
    # compiler's errors when it fails, which stdout alone would have hidden.
    echo "building cairn (release, --scratch-path .build-release; ~10 min the first time)..." >&2
    (cd "$root" && swift build -c release --scratch-path .build-release --product cairn) >&2 || { echo "the release build failed (its output is above)" >&2; exit 1; }
  fi
  CAIRN_BIN="$root/.build-release/release/cairn"
fi
[ -x "$CAIRN_BIN" ] || { echo "no cairn binary at $CAIRN_BIN (build with: swift build -c release --scratch-path .build-release --product cairn)" >&2; exit 2; }

work=$(mktemp -d /tmp/cairn-tracing-bench.XXXXXX)
PIDS=()
cleanup() {
  local rc=$? pid
  set +e
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# waits up to 60 s for a pattern in a log file; prints the first match
wait_for() {
  local file=$1 pattern=$2 i
  for i in $(seq 600); do
    if grep -Eo "$pattern" "$file" 2>/dev/null | head -1 | grep .; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file:" >&2; cat "$file" >&2; return 1
}

# ---- the OTLP/HTTP receiver: reads each export and answers 200, counting spans' bytes ------------
python3 - "$work/receiver.port" >"$work/receiver.log" 2>&1 <<'PY' &
import sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
open(sys.argv[1], "w").write(str(server.server_address[1]))
server.serve_forever()
PY
receiver_pid=$!
PIDS+=("$receiver_pid")
for i in $(seq 100); do [ -s "$work/receiver.port" ] && break; sleep 0.1; done
collector="http://127.0.0.1:$(cat "$work/receiver.port")"

# ---- a node in MODE for round ROUND: started, seeded with 40 tasks and warmed up -----------------
# Sets NODE_PID, NODE_BASE and NODE_TOKEN.
start_node() {
  local mode=$1 data="$work/data-$1-$2" log="$work/cairn-$1-$2.log" port token
  local -a env=(CAIRN_BCRYPT_COST=4)
  case $mode in
    off) ;;
    100) env+=(OTEL_EXPORTER_OTLP_ENDPOINT="$collector" OTEL_TRACES_SAMPLER=always_on) ;;
    10) env+=(OTEL_EXPORTER_OTLP_ENDPOINT="$collector" OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.1) ;;
  esac
  # Info level: the `listening` line gives the port; requests log at debug, so nothing more.
  env "${env[@]}" CAIRN_LOG_LEVEL=info "$CAIRN_BIN" serve --port 0 --data-dir "$data" >"$log" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  port=$(wait_for "$log" 'port[=":]+[0-9]+' | grep -Eo '[0-9]+$')
  NODE_BASE="http://127.0.0.1:$port"
  curl -fsS -o /dev/null -X POST "$NODE_BASE/auth/register" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"bench password!","name":"Bench"}'
  NODE_TOKEN=$(curl -fsS -X POST "$NODE_BASE/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"bench password!"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
  for i in $(seq 40); do
    curl -fsS -o /dev/null -X POST "$NODE_BASE/tasks" -H "authorization: Bearer $NODE_TOKEN" -H 'content-type: application/json' -d "{\"title\":\"task $i\"}"
  done
  wrk -t2 -c"$CONNECTIONS" -d1 -H "authorization: Bearer $NODE_TOKEN" "$NODE_BASE/tasks?limit=20" >/dev/null
}

# user + system CPU time of a process so far, in clock ticks
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Appends "MODE req/s p99-ms CPU-µs/req receiver-µs/req" to the results from wrk's output and
# the node's CPU ticks over the run (the receiver's too, or "nan" when it served several nodes).
record() {
  local mode=$1 out=$2 ticks0=$3 ticks1=$4 sink_ticks=$5 rps p99 requests cpu sink
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  requests=$(awk '/requests in/ {print $1}' "$out")
  cpu=$(python3 -c "print(($ticks1 - $ticks0) * 1e6 / $(getconf CLK_TCK) / $requests)")
  if [ "$sink_ticks" = nan ]; then sink=nan; else sink=$(python3 -c "print($sink_ticks * 1e6 / $(getconf CLK_TCK) / $requests)"); fi
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' "$out")
  echo "$mode $rps $p99 $cpu $sink" >>"$work/results"
}

# ---- one round, the modes one after another: each node has the machine to itself ----------------
# The server's CPU time (user + system) over the measured run gives a figure per request that
# depends less on what else the machine runs than requests per second do. The receiver's CPU
# time is shown apart ("receiver µs/req"): it shares the machine, so it can take requests per
# second from Cairn, but it is not Cairn's cost (shown beside it, never added).
round_in_turn() {
  local round=$1 mode t0 t1 s0 s1
  for mode in off 100 10; do
    start_node "$mode" "$round"
    t0=$(ticks "$NODE_PID"); s0=$(ticks "$receiver_pid")
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H "authorization: Bearer $NODE_TOKEN" "$NODE_BASE/tasks?limit=20" >"$work/wrk-$mode-$round.txt"
    t1=$(ticks "$NODE_PID"); s1=$(ticks "$receiver_pid")
    kill -TERM "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true
    record "$mode" "$work/wrk-$mode-$round.txt" "$t0" "$t1" $((s1 - s0))
  done
}

# ---- one round, the three nodes loaded at the same time (--together) ----------------------------
# Each node gets its own single-threaded wrk; all three share the cores for the same seconds, so
# whatever else slows the machine then slows them alike. Their CPU per request compares directly;
# their requests per second are each about a third of what one node alone serves.
round_together() {
  local round=$1 mode i
  local -a modes=(off 100 10) pids=() bases=() tokens=() t0=() t1=() loads=()
  for mode in "${modes[@]}"; do
    start_node "$mode" "$round"
    pids+=("$NODE_PID"); bases+=("$NODE_BASE"); tokens+=("$NODE_TOKEN")
  done
  for i in 0 1 2; do t0+=("$(ticks "${pids[$i]}")"); done
  for i in 0 1 2; do
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "authorization: Bearer ${tokens[$i]}" "${bases[$i]}/tasks?limit=20" \
      >"$work/wrk-${modes[$i]}-$round.txt" &
    loads+=($!)
  done
  for i in 0 1 2; do wait "${loads[$i]}"; done
  for i in 0 1 2; do t1+=("$(ticks "${pids[$i]}")"); done
  for i in 0 1 2; do kill -TERM "${pids[$i]}"; wait "${pids[$i]}" 2>/dev/null || true; done
  for i in 0 1 2; do record "${modes[$i]}" "$work/wrk-${modes[$i]}-$round.txt" "${t0[$i]}" "${t1[$i]}" nan; done
}

if [ "$TOGETHER" = 1 ]; then how="the three nodes loaded together, wrk -t1 each"; else how="one node at a time, wrk -t2"; fi
echo "GET /tasks?limit=20, SQLite, $CONNECTIONS connections, ${DURATION}s per run, $ROUNDS round(s), $how; binary $CAIRN_BIN"
for round in $(seq "$ROUNDS"); do
  if [ "$TOGETHER" = 1 ]; then round_together "$round"; else round_in_turn "$round"; fi
done

python3 - "$work/results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    mode, rps, p99, cpu, sink = line.split()
    runs.setdefault(mode, []).append((float(rps), float(p99), float(cpu), float(sink)))
for mode, label in (("off", "off"), ("100", "on, 100 %"), ("10", "on, 10 %")):
    print(f"{label:<14} req/s " + "  ".join(f"{r[0]:.0f}" for r in runs[mode]) + "   CPU µs/req " + "  ".join(f"{r[2]:.0f}" for r in runs[mode]))
median = {mode: tuple(statistics.median(r[i] for r in rows) for i in range(4)) for mode, rows in runs.items()}
off = median["off"]
print(f"medians over {len(runs['off'])} round(s):")
print(f"{'tracing':<14}{'req/s':>10}{'p99 ms':>9}{'CPU µs/req':>12}{'req/s vs off':>14}{'p99 vs off':>12}{'CPU vs off':>12}{'receiver µs/req':>17}")
for mode, label in (("off", "off"), ("100", "on, 100 %"), ("10", "on, 10 %")):
    rps, p99, cpu, sink = median[mode]
    receiver = "-" if sink != sink else f"{sink:.1f}"  # nan: the receiver served the nodes together
    print(f"{label:<14}{rps:>10.0f}{p99:>9.2f}{cpu:>12.1f}{rps / off[0]:>14.3f}{p99 / off[1]:>12.3f}{cpu / off[2]:>12.3f}{receiver:>17}")
overhead = 1 - median["10"][0] / off[0]
print(f"overhead at 10 %: {overhead * 100:.1f} % of req/s, {(median['10'][2] / off[2] - 1) * 100:.1f} % of server CPU per request (goal: under 5 %)")
# The modes of one round ran back to back (or together), so a round's ratio cancels most of what the rest of
# the machine did meanwhile; the median of those paired ratios moves less than the ratio of
# medians above when the load changes during the run.
if len(runs["off"]) > 1:
    for mode, label in (("100", "100 %"), ("10", "10 %")):
        rps_loss = sorted(1 - b[0] / a[0] for a, b in zip(runs["off"], runs[mode]))
        cpu_gain = sorted(b[2] / a[2] - 1 for a, b in zip(runs["off"], runs[mode]))
        print(
            f"paired by round, {label}: req/s lost {statistics.median(rps_loss) * 100:.1f} % (rounds: "
            + ", ".join(f"{v * 100:.1f}" for v in rps_loss)
            + f"), CPU per request added {statistics.median(cpu_gain) * 100:.1f} % (rounds: "
            + ", ".join(f"{v * 100:.1f}" for v in cpu_gain)
            + ")"
        )
PY
