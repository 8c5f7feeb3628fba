#!/usr/bin/env bash
# Upload and download MB/s of one file through Cairn on the file store and on the S3 store
# (moto's server on loopback), and a filter-and-aggregate pipeline run over it, in one run, with
# the node's peak RSS (VmHWM) in each; and the
# same bytes put to and got from moto directly with boto3 (multipart, 8 MiB parts), which is what
# the loopback S3 server itself costs. A measuring tool: no thresholds.
#
#   Benchmarks/objects/run.sh                 # 1 GiB, .build-release/release/cairn (built if missing)
#   SIZE_MB=256 CAIRN_BIN=.build/debug/cairn Benchmarks/objects/run.sh   # debug numbers mean little
#
# Needs python3 with 'moto[server]' and boto3, curl. Everything listens on 127.0.0.1 and is
# stopped and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MB=${SIZE_MB:-1024}
CAIRN_BIN=${CAIRN_BIN:-.build-release/release/cairn}
if [ ! -x "$CAIRN_BIN" ]; then
  swift build -c release --scratch-path .build-release --product cairn
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
now() { date +%s.%N; }
rate() { python3 -c "import sys; print(f'{$SIZE_MB / ($2 - $1):.1f}')" "$@"; }

# The file: copies of flights.csv (real data, ../shared/data) to at least SIZE_MB, so the same upload
# also feeds the pipeline run.
data_dir=${CAIRN_SHARED_DATA:-$(cd .. && pwd)/shared/data}
gzip -dc "$data_dir/flights.csv.gz" > "$work/flights.csv"
copies=$(( (SIZE_MB * 1024 * 1024 + $(stat -c %s "$work/flights.csv") - 1) / $(stat -c %s "$work/flights.csv") ))
{ cat "$work/flights.csv"; for _ in $(seq $((copies - 1))); do tail -n +2 "$work/flights.csv"; done; } > "$work/data.bin"
rm -f "$work/flights.csv"
SIZE_MB=$(python3 -c "import os; print(round(os.path.getsize('$work/data.bin') / 1048576))")
sql="SELECT carrier, count(*) AS flights, avg(arr_delay) AS mean_arr_delay FROM input WHERE origin = 'JFK' AND dep_delay > 15 GROUP BY carrier ORDER BY carrier"
moto_port=$(free_port)
python3 -m moto.server -H 127.0.0.1 -p "$moto_port" > "$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$moto_port/" && break; sleep 0.1; done
curl -s --noproxy '*' -X PUT -o /dev/null "http://127.0.0.1:$moto_port/bench"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1

# The loopback server alone: the same bytes, multipart with 8 MiB parts, then a streamed GET.
python3 - "$moto_port" "$work/data.bin" "$SIZE_MB" <<'EOF'
import sys, time, boto3
from boto3.s3.transfer import TransferConfig
port, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=2)
start = time.time(); s3.upload_file(path, "bench", "direct", Config=config); up = time.time() - start
start = time.time()
body = s3.get_object(Bucket="bench", Key="direct")["Body"]
while body.read(1 << 20): pass
down = time.time() - start
s3.delete_object(Bucket="bench", Key="direct")
print(f"moto directly (boto3)   upload {size / up:7.1f} MB/s   download {size / down:7.1f} MB/s")
EOF

run_node() { # $1 label, $2 blob url
  local port data token id t0 t1 t2 hwm
  port=$(free_port)
  data=$(mktemp -d "$work/node.XXXX")
  env -i PATH="$PATH" HOME="$HOME" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL_S3="http://127.0.0.1:$moto_port" CAIRN_BLOB_URL="$2" CAIRN_LOG_LEVEL=warning CAIRN_BCRYPT_COST=4 \
    CAIRN_FILES_MAX_SIZE=$((SIZE_MB * 2 * 1024 * 1024)) \
    "$CAIRN_BIN" serve --data-dir "$data" --port "$port" > "$data/server.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 200); do curl -s --noproxy '*' -o /dev/null "http://127.0.0.1:$port/health/ready" && break; sleep 0.1; done
  curl -s --noproxy '*' -o /dev/null -H 'Content-Type: application/json' -d '{"email":"b@example.com","password":"correct horse battery","name":"B"}' "http://127.0.0.1:$port/auth/register"
  token=$(curl -s --noproxy '*' -H 'Content-Type: application/json' -d '{"email":"b@example.com","password":"correct horse battery"}' "http://127.0.0.1:$port/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
  t0=$(now)
  id=$(curl -s --noproxy '*' -H "Authorization: Bearer $token" -H 'Content-Type: application/octet-stream' -X POST -T "$work/data.bin" \
    "http://127.0.0.1:$port/files?format=csv" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  t1=$(now)
  curl -s --noproxy '*' -H "Authorization: Bearer $token" -o "$data/down.bin" "http://127.0.0.1:$port/files/$id/content"
  t2=$(now)
  cmp -s "$work/data.bin" "$data/down.bin" || echo "  ($1: the download differs!)"
  rm -f "$data/down.bin"
  # The pipeline end to end: from POST /pipelines/{id}/runs to the job's success (input read
  # from the store, output written to it).
  local pipeline job state t3 t4
  pipeline=$(python3 -c 'import json,sys; print(json.dumps({"name":"bench","input":{"format":"csv"},"sql":sys.argv[1],"output":{"format":"csv"}}))' "$sql" \
    | curl -s --noproxy '*' -H "Authorization: Bearer $token" -H 'Content-Type: application/json' --data-binary @- "http://127.0.0.1:$port/pipelines" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  t3=$(now)
  job=$(curl -s --noproxy '*' -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "{\"fileId\":\"$id\"}" \
    "http://127.0.0.1:$port/pipelines/$pipeline/runs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  while :; do
    state=$(curl -s --noproxy '*' -H "Authorization: Bearer $token" "http://127.0.0.1:$port/jobs/$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    case $state in succeeded | discarded | cancelled) break ;; esac
    sleep 0.05
  done
  t4=$(now)
  [ "$state" = succeeded ] || echo "  ($1: the pipeline run ended $state)"
  hwm=$(awk '/VmHWM/ {print $2 / 1024}' "/proc/$pid/status")
  printf '%-23s upload %7s MB/s   download %7s MB/s   pipeline %6.1f s   node peak RSS %6.0f MiB\n' "$1" "$(rate "$t0" "$t1")" "$(rate "$t1" "$t2")" \
    "$(python3 -c "print($t4 - $t3)")" "$hwm"
  kill -TERM "$pid"; wait "$pid" || true
}
echo "Cairn, $SIZE_MB MiB, $CAIRN_BIN"
run_node "file store" "file://$work/blobs"
run_node "S3 store (moto)" "s3://bench/cairn"
