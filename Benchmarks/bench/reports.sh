#!/usr/bin/env bash
# Reports and catalog on PostgreSQL, Cairn beside the Express peer, on this machine, in one run.
# A measurement tool, not a test: it prints figures and never fails on a number.
#
#   Benchmarks/bench/reports.sh [--only reports|catalog] [--tasks N]
#
#   CAIRN_BIN=...   the cairn binary (default .build-release/release/cairn; build it first:
#                   swift build -c release --scratch-path .build-release --product cairn)
#   TASKS=1000000   tasks seeded for each server (same count, same cluster)
#   PRODUCTS=100000 products seeded for cairn's catalog
#   DURATION=15     seconds per wrk run
#   PEER_DIR=...    the Express peer (default /work/shared/peers/express)
#
# Reports: GET /reports/tasks.csv over TASKS tasks on both servers — MB/s and rows/s of one
# download, time to first byte, peak RSS growth of the server while it streams, and p99 of
# GET /tasks?limit=20 idle versus during 4 concurrent report downloads.
# Catalog (cairn only): GET /products/{id} over 1,000 random products and a list page, with the
# cache (TTL 30 s, warmed) versus without it (TTL 0: every request reads the database), and
# GET /products/{id} while the products table is locked (the database "made slow").
#
# Everything listens on 127.0.0.1; servers, the PostgreSQL cluster and temp files are removed
# on exit.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"  # here, root, helpers, PEER_DIR, PASSWORD, ONLY, wants
TASKS=${TASKS:-1000000}
PRODUCTS=${PRODUCTS:-100000}
DURATION=${DURATION:-15}
while [ $# -gt 0 ]; do
  case $1 in
    --only) ONLY=$2; shift ;;
    --tasks) TASKS=$2; shift ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
case $ONLY in all|reports|catalog) ;; *) echo "--only takes reports or catalog" >&2; exit 2 ;; esac
CAIRN_BIN=${CAIRN_BIN:-$root/.build-release/release/cairn}
[ -x "$CAIRN_BIN" ] || { echo "no cairn binary at $CAIRN_BIN (build it first, see --help)" >&2; exit 1; }

work=$(mktemp -d /tmp/cairn-bench-reports.XXXXXX)

c() { curl -sS --noproxy '*' --max-time 600 "$@"; }
wait_url() {
  local i
  for i in $(seq 600); do c -o /dev/null -f --max-time 2 "$1" 2>/dev/null && return 0; sleep 0.1; done
  die "$1 did not come up"
}
for tool in wrk curl python3 node setsid; do command -v "$tool" >/dev/null || die "$tool is required"; done
PEER_NODE_PATH=$("$PEER_DIR/setup.sh") || die "the peer's setup.sh failed"

# ---- PostgreSQL (own throwaway cluster; keep another session's pg-cluster state file) ----------
start_pg_cluster bench_cairn bench_peer
psql() { "$PG_PGBIN/psql" -h 127.0.0.1 -p "$pgport" -U postgres -v ON_ERROR_STOP=1 "$@"; }
CAIRN_DB="$pgbase/bench_cairn?sslmode=disable"
# One HS256 secret for every cairn node, so a token of one node is valid on the others.
JWT_SECRET=$(python3 -c "import secrets; print(secrets.token_urlsafe(48))")
# And one master key: nodes sharing a database must seal secrets alike (a node with another key
# refuses to start, by design), so the catalog's second and third nodes need the first one's.
MASTER_KEY=$(python3 -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())")

# start_cairn NAME EXTRA_ENV...: sets <NAME>_PID and <NAME>_BASE.
start_cairn() {
  local name=$1 port; shift
  port=$(freeport)
  start_bg "$work/$name.log" env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 CAIRN_LOG_LEVEL=warning \
    CAIRN_ACCESS_TOKEN_TTL=2h CAIRN_DATABASE_URL="$CAIRN_DB" CAIRN_JWT_SECRET="$JWT_SECRET" CAIRN_MASTER_KEY="$MASTER_KEY" "$@" \
    "$CAIRN_BIN" serve --data-dir "$work/$name-data" --host 127.0.0.1 --port "$port"
  printf -v "${name}_PID" %s "$LAST_PID"
  printf -v "${name}_BASE" %s "http://127.0.0.1:$port"
  wait_url "http://127.0.0.1:$port/health/ready"
}

echo "Reports and catalog — $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "  machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo "  cairn:   $CAIRN_BIN; peer: $PEER_DIR (node $(node --version), NODE_ENV=production, PEER_WORKERS=2)"
echo "  PostgreSQL $(basename "$(dirname "$PG_PGBIN")"), one local cluster for both, fsync=off; cairn nodes share an HS256 secret (the peer uses HS256 too)"

echo "[setup] cairn: starting, registering, seeding $TASKS tasks and $PRODUCTS products with cairn seed..." >&2
start_cairn main
MAIN_DATA=$work/main-data
code=$(c -o "$work/register.json" -w '%{http_code}' -X POST "$main_BASE/auth/register" -H 'Content-Type: application/json' \
  -d "{\"email\":\"bench@example.com\",\"password\":\"$PASSWORD\",\"name\":\"Bench\"}")
[ "$code" = 201 ] || die "register answered $code"
TENANT=$(python3 "$helpers" json tenantId <"$work/register.json")
c -o "$work/login.json" -X POST "$main_BASE/auth/login" -H 'Content-Type: application/json' \
  -d "{\"email\":\"bench@example.com\",\"password\":\"$PASSWORD\"}"
TOKEN=$(python3 "$helpers" json accessToken <"$work/login.json")
seed_start=$(date +%s.%N)
env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 CAIRN_LOG_LEVEL=warning CAIRN_DATABASE_URL="$CAIRN_DB" CAIRN_JWT_SECRET="$JWT_SECRET" CAIRN_MASTER_KEY="$MASTER_KEY" \
  "$CAIRN_BIN" seed --data-dir "$MAIN_DATA" --tenant "$TENANT" --tasks "$TASKS" --products "$PRODUCTS" >"$work/seed.log" 2>&1 \
  || { tail -5 "$work/seed.log" >&2; die "cairn seed failed"; }
seed_s=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$seed_start" "$(date +%s.%N)")
echo "  cairn seed: $TASKS tasks + $PRODUCTS products in $seed_s s ($(tail -1 "$work/seed.log"))"

# measure_download NAME PID URL TOKEN: one download; prints "bytes seconds ttfb_s peak_rss_growth_mb"
measure_download() {
  local name=$1 pid=$2 url=$3 token=$4
  local base; base=$(rss_mb "$pid")
  python3 - "$pid" "$work/$name-peak.txt" <<'EOF' &
import os, sys, time
pid, out = int(sys.argv[1]), sys.argv[2]
pgid = os.getpgid(pid)
peak = 0
stop = out + ".stop"
first = True
while not os.path.exists(stop):
    total = 0
    for e in os.listdir("/proc"):
        if not e.isdigit(): continue
        try:
            if os.getpgid(int(e)) != pgid: continue
            with open(f"/proc/{e}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"): total += int(line.split()[1])
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            pass
    peak = max(peak, total)
    if first:
        open(out + ".ready", "w").close()
        first = False
    time.sleep(0.05)
open(out, "w").write(f"{peak / 1024:.1f}")
EOF
  local sampler=$! i
  for i in $(seq 100); do [ -f "$work/$name-peak.txt.ready" ] && break; sleep 0.05; done
  local stats
  stats=$(c -o /dev/null -w '%{size_download} %{time_total} %{time_starttransfer}' -H "Authorization: Bearer $token" "$url")
  touch "$work/$name-peak.txt.stop"; wait "$sampler" || true
  local peak; peak=$(cat "$work/$name-peak.txt")
  echo "$stats $(python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.1f}')" "$peak" "$base")"
  rm -f "$work/$name-peak.txt" "$work/$name-peak.txt.stop" "$work/$name-peak.txt.ready"
}

# p99_with_reports NAME BASE TOKEN REPORT_URL: p99 and req/s of GET /tasks?limit=20 idle, then
# while 4 clients download the report over and over.
p99_with_reports() {
  local name=$1 base=$2 token=$3 report=$4 i
  timeout -k 5 $((DURATION + 60)) wrk -t2 -c16 -d"${DURATION}s" --latency -H "Authorization: Bearer $token" \
    "$base/tasks?limit=20" >"$work/$name-idle.txt" 2>&1 || true
  sleep 1
  for i in 1 2 3 4; do
    ( end=$((SECONDS + DURATION + 2)); while [ $SECONDS -lt $end ]; do
        curl -sS --noproxy '*' --max-time $((DURATION + 5)) -o /dev/null -H "Authorization: Bearer $token" "$report" || true
      done ) >/dev/null 2>&1 &
    PIDS+=("$!")
  done
  sleep 1
  timeout -k 5 $((DURATION + 60)) wrk -t2 -c16 -d"${DURATION}s" --latency -H "Authorization: Bearer $token" \
    "$base/tasks?limit=20" >"$work/$name-busy.txt" 2>&1 || true
  wait_downloads
  read -r irps ip99 _ _ < <(python3 "$helpers" wrk "$work/$name-idle.txt")
  read -r brps bp99 bbad _ < <(python3 "$helpers" wrk "$work/$name-busy.txt")
  printf '  %-6s GET /tasks?limit=20 (wrk -t2 -c16): idle p99 %7.2f ms %8.0f req/s | during 4 report downloads p99 %7.2f ms %8.0f req/s | p99 ratio %.2fx%s\n' \
    "$name" "$ip99" "$irps" "$bp99" "$brps" "$(python3 -c "import sys; print(float(sys.argv[2]) / float(sys.argv[1]))" "$ip99" "$bp99")" \
    "$([ "$bbad" = 0 ] || echo " ($bbad non-2xx)")"
}
wait_downloads() {  # the download loops end by themselves after DURATION + 2 s
  local p keep=()
  for p in "${PIDS[@]}"; do
    if [ "$p" = "$main_PID" ] || [ "$p" = "${peer_PID:-}" ]; then keep+=("$p"); else wait "$p" 2>/dev/null || true; fi
  done
  PIDS=("${keep[@]}")
}

if wants reports; then
  echo "[setup] peer: starting (PostgreSQL, 2 workers), seeding $TASKS tasks..." >&2
  peer_port=$(freeport)
  start_bg "$work/peer.log" env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 NODE_ENV=production PORT="$peer_port" \
    HOST=127.0.0.1 PEER_DATABASE_URL="$pgbase/bench_peer" PEER_WORKERS=2 "$PEER_DIR/run.sh"
  peer_PID=$LAST_PID peer_BASE="http://127.0.0.1:$peer_port"
  wait_url "$peer_BASE/health"
  sleep 1
  PEER_TOKEN=$(node "$PEER_DIR/mint-token.js" alice 7200)
  c -o /dev/null -X POST "$peer_BASE/bench/seed?n=$TASKS" -H "Authorization: Bearer $PEER_TOKEN"
  psql -d bench_cairn -qc "VACUUM ANALYZE" >/dev/null; psql -d bench_peer -qc "VACUUM ANALYZE" >/dev/null

  echo
  echo "Reports — GET /reports/tasks.csv over $TASKS tasks, one download with curl (warm cache: each server streams it once first)"
  c -o /dev/null -H "Authorization: Bearer $TOKEN" "$main_BASE/reports/tasks.csv"
  c -o /dev/null -H "Authorization: Bearer $PEER_TOKEN" "$peer_BASE/reports/tasks.csv"
  sleep 1
  read -r cb cs ct cr < <(measure_download cairn "$main_PID" "$main_BASE/reports/tasks.csv" "$TOKEN")
  sleep 1
  read -r pb ps pt pr < <(measure_download peer "$peer_PID" "$peer_BASE/reports/tasks.csv" "$PEER_TOKEN")
  sleep 1
  read -r gb gs gt gr < <(c -o /dev/null -w '%{size_download} %{time_total} %{time_starttransfer} -\n' -H 'Accept-Encoding: gzip' \
    -H "Authorization: Bearer $TOKEN" "$main_BASE/reports/tasks.csv")
  python3 - "$TASKS" "$cb" "$cs" "$ct" "$cr" "$pb" "$ps" "$pt" "$pr" "$gb" "$gs" "$gt" <<'EOF'
import sys
n = int(sys.argv[1])
cb, cs, ct, cr, pb, ps, pt, pr, gb, gs, gt = map(float, sys.argv[2:])
row = lambda name, b, s, t, r, cols: print(f"  {name:<22} {b / 1e6:8.1f} MB in {s:6.2f} s = {b / 1e6 / s:7.1f} MB/s, {n / s:9,.0f} rows/s, first byte after {t * 1000:6.0f} ms, peak RSS growth {r} ({cols})")
row("cairn", cb, cs, ct, f"{cr:.1f} MB", "7 columns")
row("peer", pb, ps, pt, f"{pr:.1f} MB", "4 columns")
print(f"  cairn gzip (level 1)   {gb / 1e6:8.1f} MB in {gs:6.2f} s = {n / gs:9,.0f} rows/s, first byte after {gt * 1000:.0f} ms")
print(f"  ratio cairn/peer: {cb / cs / (pb / ps):.2f}x MB/s (goal 3x), {ps / cs:.2f}x rows/s; cairn peak RSS growth {cr:.1f} MB (goal < 50 MB)")
EOF
  summary reports.tasks "$TASKS"
  summary reports.cairn_mbps "$(python3 -c "import sys; print(float(sys.argv[1]) / float(sys.argv[2]) / 1e6)" "$cb" "$cs")"
  summary reports.peer_mbps "$(python3 -c "import sys; print(float(sys.argv[1]) / float(sys.argv[2]) / 1e6)" "$pb" "$ps")"
  summary reports.cairn_rss_growth "$cr"; summary reports.peer_rss_growth "$pr"
  echo
  echo "Latency of other requests while reports stream (${DURATION} s each)"
  p99_with_reports cairn "$main_BASE" "$TOKEN" "$main_BASE/reports/tasks.csv"
  p99_with_reports peer "$peer_BASE" "$PEER_TOKEN" "$peer_BASE/reports/tasks.csv"
  kill -TERM -- "-$peer_PID" 2>/dev/null || true
fi

if wants catalog; then
  echo
  echo "Catalog — cairn only (the peer has no catalog); wrk -t2 -c64 -d${DURATION}s, Bearer token, $PRODUCTS products"
  c -o "$work/products.csv" -H "Authorization: Bearer $TOKEN" "$main_BASE/reports/products.csv"
  sed -n '2,1001p' "$work/products.csv" | cut -d, -f1 >"$work/ids.txt"
  cat >"$work/ids.lua" <<EOF
local ids = {}
for line in io.lines("$work/ids.txt") do ids[#ids + 1] = line end
request = function() return wrk.format("GET", "/products/" .. ids[math.random(#ids)]) end
EOF
  start_cairn nocache CAIRN_CATALOG_CACHE_TTL=0
  run() {  # run LABEL BASE PATH|lua [SUMMARY_KEY]
    local label=$1 base=$2 target=$3 key=${4:-} out=$work/cat-$RANDOM.txt args=()
    if [ "$target" = lua ]; then args=(-s "$work/ids.lua" "$base"); else args=("$base$target"); fi
    # Warm-up (fills the cache where there is one), then the measured run.
    timeout 60 wrk -t2 -c64 -d3s -H "Authorization: Bearer $TOKEN" "${args[@]}" >/dev/null 2>&1 || true
    timeout -k 5 $((DURATION + 60)) wrk -t2 -c64 -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" "${args[@]}" >"$out" 2>&1 || true
    python3 - "$label" "$out" <<'EOF'
import re, sys
label, path = sys.argv[1], sys.argv[2]
text = open(path).read()
def ms(key):
    m = re.search(rf"^\s*{key}%\s+(\S+)", text, re.M)
    if not m: return float("nan")
    v = re.fullmatch(r"([0-9.]+)(us|ms|s)", m.group(1))
    return float(v.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[v.group(2)]
rps = re.search(r"Requests/sec:\s*([0-9.]+)", text)
bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
print(f"  {label:<52} {float(rps.group(1)) if rps else float('nan'):9,.0f} req/s   p50 {ms(50):7.2f} ms   p99 {ms(99):7.2f} ms" + (f"   ({bad.group(1)} non-2xx)" if bad else ""))
EOF
    [ -z "$key" ] || summary "$key" "$(python3 "$helpers" wrk "$out" | cut -d' ' -f1)"
  }
  run "GET /products/{id}, 1,000 ids, cached (TTL 30 s)" "$main_BASE" lua catalog.cached_rps
  run "GET /products/{id}, 1,000 ids, uncached (TTL 0)" "$nocache_BASE" lua catalog.uncached_rps
  run "GET /products?category=kitchen&limit=20, cached" "$main_BASE" "/products?category=kitchen&limit=20"
  run "GET /products?category=kitchen&limit=20, uncached" "$nocache_BASE" "/products?category=kitchen&limit=20"
  # The database made slow: the products table is locked for the whole run, so every read
  # waits; a node with a short read timeout opens its breaker and serves stale copies.
  start_cairn slow CAIRN_CATALOG_CACHE_TTL=1 CAIRN_CATALOG_READ_TIMEOUT_MS=200
  timeout 60 wrk -t2 -c64 -d3s -H "Authorization: Bearer $TOKEN" -s "$work/ids.lua" "$slow_BASE" >/dev/null 2>&1 || true
  sleep 1.5
  ( psql -d bench_cairn -qc "BEGIN; LOCK TABLE products IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep($DURATION + 5); COMMIT;" >/dev/null 2>&1 ) &
  lockpid=$!
  sleep 0.5
  timeout -k 5 $((DURATION + 60)) wrk -t2 -c64 -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" -s "$work/ids.lua" \
    "$slow_BASE" >"$work/slow.txt" 2>&1 || true
  wait "$lockpid" || true
  python3 - "$work/slow.txt" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
rps = re.search(r"Requests/sec:\s*([0-9.]+)", text)
p = {k: re.search(rf"^\s*{k}%\s+(\S+)", text, re.M) for k in (50, 99)}
bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
print(f"  {'GET /products/{id}, DB locked (TTL 1 s, timeout 200 ms)':<52} {float(rps.group(1)) if rps else float('nan'):9,.0f} req/s   p50 {p[50].group(1) if p[50] else '?':>9}   p99 {p[99].group(1) if p[99] else '?':>9}" + (f"   ({bad.group(1)} non-2xx)" if bad else ""))
EOF
  c "$slow_BASE/metrics" | grep -E '^cairn_catalog_(circuit_trips_total|cache_requests_total)' | sed 's/^/    /'
fi
