#!/usr/bin/env bash
# Cairn beside the Express peer (/work/shared/peers/express), on this machine, in one run.
# A measurement tool, not a test: it prints tables and never fails on a number.
#
#   Benchmarks/bench/run.sh [--quick] [--only sqlite|postgres|login|auth|rss] [--no-build]
#
#   DURATION=15     seconds per wrk run (--quick: 3)
#   CONNECTIONS=64  wrk connections for the cairn-vs-peer tables (2 wrk threads)
#   CAIRN_BIN=...   the cairn binary to measure (default: the release build, built if needed)
#   PEER_DIR=...    the Express peer (default /work/shared/peers/express)
#
# Every server listens on, and every request goes to, 127.0.0.1. Everything started here
# (servers, the PostgreSQL cluster, temp dirs) is stopped and removed on exit.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"  # here, root, helpers, PEER_DIR, PASSWORD, ONLY, wants
CONNECTIONS=${CONNECTIONS:-64}
LOGIN_CONNECTIONS=16      # wrk connections for the login-interference reads
LOGIN_RATE=20             # logins per second asked of the second client
LOGIN_INFLIGHT=8          # at most this many logins in flight at once
LOGIN_USERS=4             # distinct accounts the logins rotate over
BUILD=1

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --quick) DURATION=3 ;;
    --only) [ $# -ge 2 ] || { usage >&2; exit 2; }; ONLY=$2; shift ;;
    --only=*) ONLY=${1#*=} ;;
    --no-build) BUILD=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
DURATION=${DURATION:-15}
case $ONLY in all|sqlite|postgres|login|auth|rss) ;; *) echo "--only takes sqlite, postgres, login, auth or rss" >&2; exit 2 ;; esac
case $DURATION in ''|*[!0-9]*) echo "DURATION must be a whole number of seconds" >&2; exit 2 ;; esac

# ---- bookkeeping (cleanup: common.sh) ---------------------------------------------------------
work=$(mktemp -d /tmp/cairn-bench.XXXXXX)

c() { curl -sS --noproxy '*' --max-time 30 "$@"; }

wait_healthy() {  # wait_healthy URL PID LOG NAME
  local url=$1 pid=$2 log=$3 name=$4 i
  for i in $(seq 600); do
    if c -o /dev/null -f --max-time 2 "$url" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited during start-up; its log:" >&2; tail -30 "$log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "$name not healthy after 60 s; its log:" >&2; tail -30 "$log" >&2; exit 1
}

# ---- tools -----------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  echo "installing wrk from Debian's packages" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
fi
# Whether the peer runs at all: --only login and --only auth measure cairn alone.
PEER_RUNS=0
if wants sqlite || wants postgres || wants rss; then PEER_RUNS=1; fi
for tool in wrk curl python3 setsid; do command -v "$tool" >/dev/null || die "$tool is required"; done
if [ "$PEER_RUNS" = 1 ]; then
  command -v node >/dev/null || die "node is required"
  [ -x "$PEER_DIR/run.sh" ] || die "no Express peer at $PEER_DIR"
  PEER_NODE_PATH=$("$PEER_DIR/setup.sh") || die "the peer's setup.sh failed"
fi

if [ -z "${CAIRN_BIN:-}" ]; then
  CAIRN_BIN=$root/.build-release/release/cairn
  if [ "$BUILD" = 1 ] || [ ! -x "$CAIRN_BIN" ]; then
    echo "building cairn (release, --scratch-path .build-release; ~10 min the first time)..." >&2
    if ! (cd "$root" && swift build -c release --scratch-path .build-release --product cairn) >"$work/build.log" 2>&1; then
      tail -30 "$work/build.log" >&2; die "release build failed"
    fi
  fi
fi
[ -x "$CAIRN_BIN" ] || die "no cairn binary at $CAIRN_BIN"

# ---- servers ---------------------------------------------------------------------------------
# start_cairn NAME [DATABASE_URL]: sets <NAME>_PID, <NAME>_BASE, <NAME>_LOG. Clean environment:
# only the settings below, so a CAIRN_* variable in the caller's shell cannot change the run.
start_cairn() {
  local name=$1 dburl=${2:-} port dir
  port=$(freeport); dir=$work/$name-data; mkdir -p "$dir"
  local envs=(PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 CAIRN_LOG_LEVEL=warning CAIRN_BCRYPT_COST=12
              CAIRN_ACCESS_TOKEN_TTL=2h)
  [ -n "$dburl" ] && envs+=(CAIRN_DATABASE_URL="$dburl")
  start_bg "$work/$name.log" env -i "${envs[@]}" "$CAIRN_BIN" serve --data-dir "$dir" --host 127.0.0.1 --port "$port"
  printf -v "${name}_PID" %s "$LAST_PID"
  printf -v "${name}_BASE" %s "http://127.0.0.1:$port"
  printf -v "${name}_LOG" %s "$work/$name.log"
  wait_healthy "http://127.0.0.1:$port/health/ready" "$LAST_PID" "$work/$name.log" "cairn ($name)"
}

# start_peer NAME [DATABASE_URL WORKERS]: the peer through its own run.sh.
start_peer() {
  local name=$1 dburl=${2:-} workers=${3:-1} port
  port=$(freeport)
  local envs=(PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 NODE_ENV=production PORT="$port" HOST=127.0.0.1)
  [ -n "$dburl" ] && envs+=(PEER_DATABASE_URL="$dburl" PEER_WORKERS="$workers")
  start_bg "$work/$name.log" env -i "${envs[@]}" "$PEER_DIR/run.sh"
  printf -v "${name}_PID" %s "$LAST_PID"
  printf -v "${name}_BASE" %s "http://127.0.0.1:$port"
  printf -v "${name}_LOG" %s "$work/$name.log"
  wait_healthy "http://127.0.0.1:$port/health" "$LAST_PID" "$work/$name.log" "peer ($name)"
  if [ "$workers" -gt 1 ]; then   # /health answers as soon as one worker listens; wait for all
    local i
    for i in $(seq 100); do
      [ "$(grep -c 'express peer on' "$work/$name.log")" -ge "$workers" ] && break; sleep 0.1
    done
  fi
}

stop_server() {  # stops a server and forgets its pid (so cleanup never signals a reused pid)
  local pid=$1 p keep=()
  stop_proc "$pid"
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# cairn_user BASE EMAIL: registers an account (201), prints nothing.
cairn_register() {
  local base=$1 email=$2 code
  code=$(c -o "$work/register.json" -w '%{http_code}' -X POST "$base/auth/register" \
           -H 'Content-Type: application/json' \
           -d "{\"email\":\"$email\",\"password\":\"$PASSWORD\",\"name\":\"Bench\"}")
  [ "$code" = 201 ] || die "cairn register $email answered $code: $(cat "$work/register.json")"
}
cairn_login() {  # prints an access token
  local base=$1 email=$2 code
  code=$(c -o "$work/login.json" -w '%{http_code}' -X POST "$base/auth/login" \
           -H 'Content-Type: application/json' -d "{\"email\":\"$email\",\"password\":\"$PASSWORD\"}")
  [ "$code" = 200 ] || die "cairn login $email answered $code: $(cat "$work/login.json")"
  python3 "$helpers" json accessToken <"$work/login.json"
}
seed_cairn() {  # seed_cairn BASE TOKEN N: N tasks through the public API
  local base=$1 token=$2 n=$3 i code bad=0
  local pad; pad=$(printf 'x%.0s' $(seq 40))
  for i in $(seq "$n"); do
    code=$(c -o /dev/null -w '%{http_code}' -X POST "$base/tasks" -H "Authorization: Bearer $token" \
             -H 'Content-Type: application/json' -d "{\"title\":\"task $i $pad\"}")
    [ "$code" = 201 ] || bad=$((bad + 1))
  done
  [ "$bad" = 0 ] || die "cairn: $bad of $n seeding POSTs did not answer 201"
}
seed_peer() {  # seed_peer BASE TOKEN N
  local code
  code=$(c -o /dev/null -w '%{http_code}' -X POST "$1/bench/seed?n=$3" -H "Authorization: Bearer $2")
  [ "$code" = 204 ] || die "peer seed answered $code"
}
first_task_id() {  # first_task_id BASE TOKEN
  c -H "Authorization: Bearer $2" "$1/tasks?limit=1" | python3 "$helpers" json items 0 id
}

# ---- loads -----------------------------------------------------------------------------------
# run_wrk OUT TOKEN CONNS URL [METHOD]: one wrk run; it always stops by itself (and `timeout`
# backs that up).
run_wrk() {
  local out=$1 token=$2 conns=$3 url=$4 method=${5:-GET} extra=()
  [ "$method" = POST ] && extra=(-s "$here/post.lua")
  timeout -k 5 $((DURATION + 60)) wrk -t2 -c"$conns" -d"${DURATION}s" --timeout 10s --latency \
    -H "Authorization: Bearer $token" "${extra[@]}" "$url" >"$out" 2>&1 || true
}
# precheck TOKEN URL METHOD: the HTTP status the route answers right now (one curl).
precheck() {
  local token=$1 url=$2 method=$3
  if [ "$method" = POST ]; then
    c -o /dev/null -w '%{http_code}' -X POST "$url" -H "Authorization: Bearer $token" \
      -H 'Content-Type: application/json' -d '{"title":"bench"}' || echo 000
  else
    c -o /dev/null -w '%{http_code}' "$url" -H "Authorization: Bearer $token" || echo 000
  fi
}

# compare TITLE TAG: loads the three routes on cairn (CAIRN_*) and the peer (PEER_*), one after
# the other per route, and prints the table.
compare() {
  local title=$1 tag=$2
  local tsv=$work/$tag.tsv
  : >"$tsv"
  local routes=("GET /tasks?limit=20|/tasks?limit=20|GET"
                "GET /tasks/{id}|/tasks/{ID}|GET"
                "POST /tasks|/tasks|POST")
  local r label path method side results note
  for r in "${routes[@]}"; do
    IFS='|' read -r label path method <<<"$r"
    results=() note=
    for side in CAIRN PEER; do
      local base_var=${side}_BASE tok_var=${side}_TOKEN id_var=${side}_TASK
      local url=${!base_var}${path/\{ID\}/${!id_var}} code out=$work/$tag-$side-${method}-${#results[@]}.txt
      code=$(precheck "${!tok_var}" "$url" "$method")
      if [[ $code == 2?? ]]; then
        echo "  $(printf '%-5s' "${side,,}") $label (pre-check $code): wrk -t2 -c$CONNECTIONS -d${DURATION}s ..." >&2
        run_wrk "$out" "${!tok_var}" "$CONNECTIONS" "$url" "$method"
        results+=($(python3 "$helpers" wrk "$out"))
        grep -q 'Requests/sec' "$out" || note+="${side,,}: wrk failed ($(head -c 200 "$out" | tr '\n' ' ')) "
      else
        results+=(nan nan 0 0)
        note+="${side,,} answered $code to the pre-check curl, not loaded. "
      fi
      sleep 1
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "${results[@]}" "$note" >>"$tsv"
    summary "tasks.$tag.$label.cairn_rps" "${results[0]}"; summary "tasks.$tag.$label.cairn_p99" "${results[1]}"
    summary "tasks.$tag.$label.peer_rps" "${results[4]}"; summary "tasks.$tag.$label.peer_p99" "${results[5]}"
  done
  echo
  python3 "$helpers" table "$title" "$tsv"
}

server_log_notes() {  # server_log_notes NAME LOG: mention what the server wrote at warning+
  local name=$1 log=$2 n
  n=$(grep -cv '^\s*$' "$log" || true)
  if [ "$name" = cairn ] && [ "$n" -gt 0 ]; then
    echo "  note: cairn logged $n line(s) at warning level or above; first: $(grep -v '^\s*$' "$log" | head -1 | cut -c1-200)"
  elif [ "$name" = peer ]; then
    n=$(grep -cv 'express peer on\|^\s*$' "$log" || true)
    [ "$n" = 0 ] || echo "  note: the peer logged $n line(s) besides start-up; first: $(grep -v 'express peer on\|^\s*$' "$log" | head -1 | cut -c1-200)"
  fi
}

# start_pair TAG [CAIRN_DB PEER_DB]: starts both servers, seeds 100 tasks each, records RSS.
start_pair() {
  local tag=$1 cdb=${2:-} pdb=${3:-}
  echo "[$tag] starting cairn and the peer..." >&2
  start_cairn cairn_srv "$cdb"
  if [ -n "$pdb" ]; then start_peer peer_srv "$pdb" 2; else start_peer peer_srv; fi
  CAIRN_PID=$cairn_srv_PID CAIRN_BASE=$cairn_srv_BASE CAIRN_LOG=$cairn_srv_LOG
  PEER_PID=$peer_srv_PID PEER_BASE=$peer_srv_BASE PEER_LOG=$peer_srv_LOG
  sleep 2
  printf -v "RSS_${tag}_CAIRN_START" %s "$(rss_mb "$CAIRN_PID")"
  printf -v "RSS_${tag}_PEER_START" %s "$(rss_mb "$PEER_PID")"
  echo "[$tag] seeding 100 tasks on each..." >&2
  cairn_register "$CAIRN_BASE" bench@example.com
  CAIRN_TOKEN=$(cairn_login "$CAIRN_BASE" bench@example.com)
  seed_cairn "$CAIRN_BASE" "$CAIRN_TOKEN" 100
  CAIRN_TASK=$(first_task_id "$CAIRN_BASE" "$CAIRN_TOKEN")
  PEER_TOKEN=$(node "$PEER_DIR/mint-token.js" alice 7200)
  seed_peer "$PEER_BASE" "$PEER_TOKEN" 100
  PEER_TASK=$(first_task_id "$PEER_BASE" "$PEER_TOKEN")
  sleep 2
  printf -v "RSS_${tag}_CAIRN_SEEDED" %s "$(rss_mb "$CAIRN_PID")"
  printf -v "RSS_${tag}_PEER_SEEDED" %s "$(rss_mb "$PEER_PID")"
}
stop_pair() {
  local tag=$1
  printf -v "RSS_${tag}_CAIRN_LOADED" %s "$(rss_mb "$CAIRN_PID")"
  printf -v "RSS_${tag}_PEER_LOADED" %s "$(rss_mb "$PEER_PID")"
  server_log_notes cairn "$CAIRN_LOG"
  server_log_notes peer "$PEER_LOG"
  stop_server "$CAIRN_PID"; stop_server "$PEER_PID"
}

# ---- header ----------------------------------------------------------------------------------
cairn_kind=other; case $CAIRN_BIN in */release/*) cairn_kind=release ;; */debug/*) cairn_kind="DEBUG (numbers not meaningful)" ;; esac
# What this run does, and only that: the login and auth parts start no peer and name their own
# wrk settings in their sections.
stamp="$(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
if [ "$PEER_RUNS" = 1 ]; then echo "Cairn vs Express peer — $stamp"; else echo "Cairn alone (--only $ONLY, no peer) — $stamp"; fi
echo "  machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start (other work on the box adds noise)"
echo "  cairn:   $CAIRN_BIN ($cairn_kind)"
if [ "$PEER_RUNS" = 1 ]; then
  echo "  peer:    $PEER_DIR (node $(node --version), NODE_ENV=production)"
  echo "  wrk:     -t2 -c$CONNECTIONS -d${DURATION}s --latency; wrk, cairn and the peer share the same $(nproc) cores"
  echo "  ratio c/p = cairn / peer (req/s: above 1 means cairn is faster; p99: below 1 means cairn is faster)"
else
  echo "  wrk:     -t2, ${DURATION}s runs (connections as each part says below); wrk and cairn share the same $(nproc) cores"
fi

# ---- run 1: SQLite vs in-memory ----------------------------------------------------------------
if wants sqlite || wants rss; then
  start_pair sqlite
  if wants sqlite; then
    echo
    compare "Run 1 — cairn on SQLite (WAL, synchronous=FULL: every commit reaches the disk) vs the peer in memory (1 process, nothing persisted); 100 seeded tasks" sqlite
  fi
  stop_pair sqlite
fi

# ---- run 2: PostgreSQL -----------------------------------------------------------------------
if wants postgres; then
  echo "[postgres] starting a throwaway PostgreSQL cluster..." >&2
  start_pg_cluster bench_cairn bench_peer
  start_pair postgres "$pgbase/bench_cairn?sslmode=disable" "$pgbase/bench_peer"
  echo
  compare "Run 2 — both on PostgreSQL $(basename "$(dirname "$PG_PGBIN")") (same local cluster, fsync=off: DURABILITY OFF FOR BOTH in this run); cairn 1 process (pool 16), peer node:cluster PEER_WORKERS=2 (pool 10 each); 100 seeded tasks" postgres
  stop_pair postgres
fi

# ---- login interference --------------------------------------------------------------------------
if wants login; then
  echo "[login] starting cairn (SQLite) and registering $LOGIN_USERS accounts..." >&2
  start_cairn login_srv
  emails=()
  for i in $(seq 0 $((LOGIN_USERS - 1))); do
    cairn_register "$login_srv_BASE" "login$i@example.com"; emails+=("login$i@example.com")
  done
  token=$(cairn_login "$login_srv_BASE" login0@example.com)
  seed_cairn "$login_srv_BASE" "$token" 100
  url="$login_srv_BASE/tasks?limit=20"
  code=$(precheck "$token" "$url" GET)
  [ "$code" = 200 ] || die "login run: GET /tasks?limit=20 answered $code"
  echo "  idle: wrk -t2 -c$LOGIN_CONNECTIONS -d${DURATION}s GET /tasks?limit=20 ..." >&2
  run_wrk "$work/login-idle.txt" "$token" "$LOGIN_CONNECTIONS" "$url"
  read -r idle_rps idle_p99 idle_bad idle_sock < <(python3 "$helpers" wrk "$work/login-idle.txt")
  sleep 2
  echo "  busy: the same, while a second client asks for $LOGIN_RATE logins/s ..." >&2
  python3 "$helpers" logins "$login_srv_BASE/auth/login" "$LOGIN_RATE" "$DURATION" $((LOGIN_RATE * DURATION)) \
    "$LOGIN_INFLIGHT" "${emails[@]}" -- "$PASSWORD" >"$work/logins.json" 2>"$work/logins.err" &
  login_pid=$!
  PIDS+=("$login_pid")
  sleep 0.3
  run_wrk "$work/login-busy.txt" "$token" "$LOGIN_CONNECTIONS" "$url"
  wait "$login_pid" || true
  stop_server "$login_pid"
  read -r busy_rps busy_p99 busy_bad busy_sock < <(python3 "$helpers" wrk "$work/login-busy.txt")
  echo
  echo "Login interference — cairn on SQLite, bcrypt cost 12 (CAIRN_BCRYPT_THREADS default 1): GET /tasks?limit=20, wrk -t2 -c$LOGIN_CONNECTIONS -d${DURATION}s"
  python3 - "$work/logins.json" "$idle_rps" "$idle_p99" "$busy_rps" "$busy_p99" "$LOGIN_USERS" "$LOGIN_INFLIGHT" <<'EOF'
import json, sys
path, irps, ip99, brps, bp99, users, inflight = sys.argv[1:]
irps, ip99, brps, bp99 = map(float, (irps, ip99, brps, bp99))
fmt = lambda v: f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"
print(f"  idle                     : p99 {fmt(ip99):>10}   {irps:>9,.0f} req/s")
print(f"  while logging in         : p99 {fmt(bp99):>10}   {brps:>9,.0f} req/s")
print(f"  ratio (with logins/idle) : p99 {bp99 / ip99:>9.2f}x   {brps / irps:>9.2f}x req/s")
try:
    s = json.load(open(path))
    print(f"  logins: asked {s['target_per_s']:.0f}/s, achieved {s['achieved_per_s']}/s "
          f"({s['ok']} succeeded of {s['sent']} sent in {s['elapsed_s']} s; statuses {s['statuses']}); "
          f"login latency p50 {s['latency_p50_ms']} ms, p99 {s['latency_p99_ms']} ms "
          f"({users} accounts, at most {inflight} in flight)")
except Exception as e:
    print(f"  logins: no summary ({e})")
EOF
  summary login.idle_p99 "$idle_p99"; summary login.busy_p99 "$busy_p99"
  summary login.achieved "$(python3 "$helpers" json achieved_per_s <"$work/logins.json" 2>/dev/null || echo nan)"
  [ -s "$work/logins.err" ] && echo "  note: the login client wrote: $(head -c 300 "$work/logins.err")"
  for f in idle busy; do
    b=${f}_bad s=${f}_sock
    [ "${!b}" = 0 ] || echo "  ! $f: ${!b} non-2xx/3xx responses"
    [ "${!s}" = 0 ] || echo "  ! $f: ${!s} socket errors"
  done
  server_log_notes cairn "$login_srv_LOG"
  stop_server "$login_srv_PID"
fi

# ---- the cost of authenticating ------------------------------------------------------------------
# The server's CPU time per request (utime + stime from /proc/PID/stat over a wrk run, divided by
# the requests it served) for GET /health/live (no token, no database), GET /products/{id} (a
# token verified, the product served from the catalog's cache: an authenticated route that reads
# nothing heavy) and GET /users/me (a token verified, one row read). The product's difference to
# /health/live bounds what authenticating a request costs from above (it also holds a cache
# lookup and a product's JSON). CPU time, not req/s: wrk shares the cores, and CPU per request is
# what the goal is about.
if wants auth; then
  echo "[auth] starting cairn (SQLite)..." >&2
  start_cairn auth_srv
  cairn_register "$auth_srv_BASE" auth@example.com
  token=$(cairn_login "$auth_srv_BASE" auth@example.com)
  product=$(c -X POST "$auth_srv_BASE/products" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"sku":"AUTH-1","name":"Widget","priceMinor":1000,"currency":"EUR"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') \
    || die "auth run: the product was not created"
  cpu_per_request() {  # cpu_per_request OUT URL [TOKEN]: prints "rps µs_per_request"
    local out=$1 url=$2 token=${3:-} before after headers=()
    [ -n "$token" ] && headers=(-H "Authorization: Bearer $token")
    timeout 60 wrk -t2 -c32 -d2s "${headers[@]}" "$url" >/dev/null 2>&1 || true   # warm-up (fills the token cache)
    before=$(python3 "$helpers" cpu "$auth_srv_PID")
    timeout -k 5 $((DURATION + 60)) wrk -t2 -c32 -d"${DURATION}s" --latency "${headers[@]}" "$url" >"$out" 2>&1 || true
    after=$(python3 "$helpers" cpu "$auth_srv_PID")
    python3 "$helpers" cpureq "$out" "$before" "$after"
  }
  for route in /health/live "/products/$product" /users/me; do
    code=$(c -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$auth_srv_BASE$route" || echo 000)
    [ "$code" = 200 ] || die "auth run: GET $route answered $code"
  done
  echo "  wrk -t2 -c32 -d${DURATION}s GET /health/live (no token), GET /products/{id} and GET /users/me (token) ..." >&2
  read -r live_rps live_us < <(cpu_per_request "$work/auth-live.txt" "$auth_srv_BASE/health/live")
  read -r product_rps product_us < <(cpu_per_request "$work/auth-product.txt" "$auth_srv_BASE/products/$product" "$token")
  read -r me_rps me_us < <(cpu_per_request "$work/auth-me.txt" "$auth_srv_BASE/users/me" "$token")
  echo
  echo "The cost of authenticating — cairn on SQLite, wrk -t2 -c32 -d${DURATION}s; server CPU time per request"
  printf '  GET /health/live (no token, no database): %9.0f req/s  %7.1f µs CPU/request\n' "$live_rps" "$live_us"
  printf '  GET /products/{id} (token, cached)      : %9.0f req/s  %7.1f µs CPU/request\n' "$product_rps" "$product_us"
  printf '  GET /users/me (token, one row read)     : %9.0f req/s  %7.1f µs CPU/request\n' "$me_rps" "$me_us"
  printf '  cached product minus /health/live       : %7.1f µs CPU/request (goal ≤ ~20 µs for authenticating; an upper bound)\n' \
    "$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$live_us" "$product_us")"
  printf '  /users/me minus /health/live            : %7.1f µs CPU/request (authenticating and one row read)\n' \
    "$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$live_us" "$me_us")"
  summary auth.live_us "$live_us"; summary auth.product_us "$product_us"; summary auth.me_us "$me_us"
  summary auth.live_rps "$live_rps"; summary auth.product_rps "$product_rps"; summary auth.me_rps "$me_rps"
  server_log_notes cairn "$auth_srv_LOG"
  stop_server "$auth_srv_PID"
fi

# ---- memory --------------------------------------------------------------------------------------
if wants rss || [ "$ONLY" = all ]; then
  echo
  echo "Resident memory (VmRSS, MB; the peer's process group: 1 node process in memory mode, primary + 2 workers on PostgreSQL)"
  printf '  %-34s | %15s | %23s | %16s\n' "server" "after start-up" "after seeding 100 tasks" "after the loads"
  printf '  %s-+-%s-+-%s-+-%s\n' "$(printf -- '-%.0s' $(seq 34))" "$(printf -- '-%.0s' $(seq 15))" \
    "$(printf -- '-%.0s' $(seq 23))" "$(printf -- '-%.0s' $(seq 16))"
  row() {  # row LABEL TAG SIDE
    local s="RSS_$2_$3_START" d="RSS_$2_$3_SEEDED" l="RSS_$2_$3_LOADED"
    [ -n "${!s:-}" ] || return 0
    local loaded=${!l:--}; [ "$ONLY" = rss ] && loaded=-
    printf '  %-34s | %15s | %23s | %16s\n' "$1" "${!s}" "${!d}" "$loaded"
  }
  summary rss.cairn_sqlite_start "${RSS_sqlite_CAIRN_START:-nan}"; summary rss.peer_memory_start "${RSS_sqlite_PEER_START:-nan}"
  row "cairn, SQLite" sqlite CAIRN
  row "peer, in memory (1 process)" sqlite PEER
  row "cairn, PostgreSQL" postgres CAIRN
  row "peer, PostgreSQL (3 processes)" postgres PEER
fi
echo
echo "done."
