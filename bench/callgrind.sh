#!/usr/bin/env bash
# Instructions per request of `llmgw edge`, with valgrind's callgrind: stable where wall-clock
# benchmarks on a shared machine are not. Starts the mock provider and the edge (the same config
# as bench/run.sh, quota on), warms up, counts N requests, and prints the instructions per
# request and the functions that cost most (inclusive).
#
#   bench/callgrind.sh                 # non-streamed requests
#   CG_STREAM=1 bench/callgrind.sh     # 9-event streams
#
# Knobs: CG_REQUESTS (2000), CG_TOP (40 functions), BENCH_SKIP_BUILD=1 (use target/release as is).
# Needs valgrind (apt-get install valgrind) and oha (cargo install oha --locked).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CG_REQUESTS="${CG_REQUESTS:-2000}"
CG_TOP="${CG_TOP:-40}"
log() { printf '[callgrind] %s\n' "$*" >&2; }
die() { printf '[callgrind] error: %s\n' "$*" >&2; exit 1; }
command -v valgrind >/dev/null || die "valgrind is required (apt-get install valgrind)"
command -v oha >/dev/null || die "oha is required (cargo install oha --locked)"

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release -p llmgw -p llmgw-tests --bin llmgw --bin mock-provider >&2
fi
WORK="$(mktemp -d /tmp/llmgw-callgrind.XXXXXX)"
cp target/release/llmgw target/release/mock-provider "$WORK/"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
MOCK_PORT="$(free_port)"; EDGE_PORT="$(free_port)"; METRICS_PORT="$(free_port)"
"$WORK/mock-provider" --listen "127.0.0.1:$MOCK_PORT" --record-limit 0 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
KEY="sk-llmgw-bench-0000000000000000"
cat >"$WORK/llmgw.yaml" <<EOF
version: 1
providers:
  - name: mock
    kind: openai_compatible
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    credentials:
      - value: sk-mock-upstream
models:
  - name: bench
    targets:
      - provider: mock
        model: bench
        pricing: { input_per_mtok: 0.15, output_per_mtok: 0.60 }
teams:
  - name: bench
    budget: { limit_usd: 1000000, period: monthly }
    limits: { tpm: 1000000000000 }
keys:
  - name: bench
    team: bench
    secret: { value: $KEY }
    budget: { limit_usd: 1000000, period: total }
    limits: { rpm: 1000000000 }
EOF
OUT="$WORK/callgrind.out"
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT" "$WORK/llmgw" --log-format json edge \
    --config "$WORK/llmgw.yaml" --listen "127.0.0.1:$EDGE_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
    >"$WORK/edge.log" 2>&1 &
VG=$!
PIDS+=("$VG")
for _ in $(seq 1 120); do
    curl -fsS -o /dev/null "http://127.0.0.1:$METRICS_PORT/readyz" 2>/dev/null && break
    sleep 0.5
done
curl -fsS -o /dev/null "http://127.0.0.1:$METRICS_PORT/readyz" || die "the edge did not start: $(tail -n 20 "$WORK/edge.log")"

if [[ "${CG_STREAM:-0}" == 1 ]]; then
    BODY='{"model":"bench","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello to the benchmark."}]}'
    WHAT="9-event streams"
else
    BODY='{"model":"bench","messages":[{"role":"user","content":"Say hello to the benchmark."}]}'
    WHAT="non-streamed requests"
fi
URL="http://127.0.0.1:$EDGE_PORT/v1/chat/completions"
HDRS=(-m POST -H "Authorization: Bearer $KEY" -H "content-type: application/json" -d "$BODY")
log "warming up (200 requests), then counting $CG_REQUESTS $WHAT"
oha --no-tui -n 200 -c 4 "${HDRS[@]}" "$URL" >/dev/null
callgrind_control -z "$VG" >/dev/null 2>&1
oha --no-tui -n "$CG_REQUESTS" -c 4 "${HDRS[@]}" "$URL" >"$WORK/oha.txt"
grep -q "Success rate:.*100.00%" "$WORK/oha.txt" || die "requests failed: $(cat "$WORK/oha.txt")"
callgrind_control -d "$VG" >/dev/null 2>&1
DUMP="$(ls -t "$OUT".* | head -n1)"
TOTAL="$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')"
echo "llmgw $(git rev-parse --short HEAD): $((TOTAL / CG_REQUESTS)) instructions per request ($WHAT, $CG_REQUESTS counted, c=4)"
echo
echo "Most expensive functions, inclusive, per request:"
callgrind_annotate --inclusive=yes "$DUMP" 2>/dev/null \
    | awk -v n="$CG_REQUESTS" '/^ *[0-9,]+ +\(/ { c=$1; gsub(",", "", c); $1=""; $2=""; sub(/^ +/, ""); sub(/ \[.*$/, ""); printf "%9d  %s\n", c / n, $0 }' \
    | grep -v -E 'std::rt|start_thread|clone3|clone.S|thread_start|block_on|enter_runtime|LocalKey|call_once|__rust_begin|main$|PROGRAM' \
    | head -n "$CG_TOP"
echo
echo "(full dump: $DUMP; callgrind_annotate --inclusive=yes --tree=caller $DUMP for callers)"
