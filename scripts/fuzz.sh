#!/usr/bin/env bash
# Fuzzes Cairn's parsers of untrusted bytes with libFuzzer (issue 13).
#
#   scripts/fuzz.sh [seconds-per-target] [target...]      default: 60 s, every target
#   scripts/fuzz.sh --list                                 the targets
#
# Builds cairn-fuzz into .build-fuzz (its own scratch path, so the normal .build stays valid) with
# CAIRN_LIBFUZZER=1, which makes Package.swift compile our modules with -sanitize=fuzzer,address
# (coverage feedback and AddressSanitizer) and link cairn-fuzz with libFuzzer. Not -Xswiftc: that
# also reaches the macro plug-in CairnMacros, a host tool that cannot link libFuzzer's own `main`.
# Then runs each target for the given time on a scratch copy of Fuzz/corpus/<target> plus
# Fuzz/regressions/<target>. A crash, leak or hang stops that target and leaves the input in
# Fuzz/findings/<target>/ (kept out of git): turn it into a regression (Fuzz/regressions/<target>/)
# with a fix. Prints executions, rate and findings per target and exits 1 if anything was found.
#
# Environment: CAIRN_FUZZ_JOBS (parallel targets, default 1), CAIRN_FUZZ_TIMEOUT (seconds one
# input may take before it counts as a hang, default 10), CAIRN_FUZZ_MAX_LEN (bytes, default 4096),
# CAIRN_FUZZ_SKIP_BUILD=1 (use the binary already built).
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=60
if [ "${1:-}" = "--list" ]; then
  sed -n 's/^    case \([a-zA-Z]*\)\( = "\(.*\)"\)\{0,1\}$/\1 \3/p' Sources/CairnFuzz/FuzzTarget.swift |
    awk '{ print ($2 != "" ? $2 : $1) }'
  exit 0
fi
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then seconds=$1; shift; fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then mapfile -t targets < <("$0" --list); fi

scratch=.build-fuzz
binary="$scratch/debug/cairn-fuzz"
if [ "${CAIRN_FUZZ_SKIP_BUILD:-0}" != 1 ]; then
  echo "== building cairn-fuzz with libFuzzer and AddressSanitizer into $scratch"
  start=$(date +%s)
  CAIRN_LIBFUZZER=1 swift build --scratch-path "$scratch" --product cairn-fuzz 2>&1 |
    grep -E "error|warning: .*(Cairn|cairn-fuzz)" || true
  [ -x "$binary" ] || { echo "the fuzz build failed"; exit 2; }
  echo "   built in $(($(date +%s) - start)) s"
fi

# Swift's crash reporter (swift-backtrace) outlives a crashed fuzzer and keeps its pipes open;
# libFuzzer prints its own stack.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:symbolize=1}
work=$(mktemp -d /tmp/cairn-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT

run_one() {
  local target=$1 corpus="$work/$1" findings="Fuzz/findings/$1" log="$work/$1.log"
  mkdir -p "$corpus" "$findings"
  cp Fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true
  cp Fuzz/regressions/"$target"/* "$corpus"/ 2>/dev/null || true
  CAIRN_FUZZ_TARGET=$target timeout -k 10 $((seconds + 120)) "$binary" "$corpus" \
    -max_total_time="$seconds" -timeout="${CAIRN_FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 \
    -max_len="${CAIRN_FUZZ_MAX_LEN:-4096}" -print_final_stats=1 -artifact_prefix="$findings/" \
    >"$log" 2>&1 </dev/null
  local status=$?
  local runs rate found
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  found=$(find "$findings" -type f | wc -l)
  printf '%-14s exit %-3s %10s execs %7s/s  corpus %5s  findings %s\n' "$target" "$status" "${runs:-?}" "${rate:-?}" \
    "$(find "$corpus" -type f | wc -l)" "$found"
  if [ "$status" -ne 0 ]; then
    grep -E "ERROR|SUMMARY|Fatal error|Assertion|precondition|Test unit written" "$log" | head -8 | sed 's/^/    /'
    cp "$log" "$findings/../$target.log"
  fi
  [ "$status" -eq 0 ]
}
export -f run_one
export binary seconds work

echo "== fuzzing ${#targets[@]} targets, $seconds s each, ${CAIRN_FUZZ_JOBS:-1} at a time"
printf '%s\n' "${targets[@]}" | xargs -P "${CAIRN_FUZZ_JOBS:-1}" -I{} bash -c 'run_one "$@"' _ {}
