#!/usr/bin/env bash
# Sync load simulation: for each edge count, a fresh etcd and one `llmgw control-plane` on it,
# a minimal config (team `search`), then `llmgw-sim` against it. Prints each run's table and
# writes them to bench/out/sim-<timestamp>.md. See bench/SIM.md.
#
#   bench/sim.sh                                  # 100, 500 and 2,000 edges, 60 s each
#   SIM_EDGES=2000 bench/sim.sh --config-acks false   # flags after the name go to llmgw-sim
#
# Knobs (environment):
#   SIM_EDGES        edge counts, space-separated (default "100 500 2000")
#   SIM_SECONDS      measured window per run (default 60)
#   SIM_WARMUP       warm-up per run (default 10)
#   SIM_REVOCATIONS  key revocations timed per run, spread over the window (default 12)
#   CP_ARGS          extra `llmgw control-plane` flags, e.g. "--usage-max-txn-rate 50"
#   SIM_SKIP_BUILD=1 use the existing target/release binaries as they are
set -euo pipefail

COMMAND_LINE=""
for v in SIM_EDGES SIM_SECONDS SIM_WARMUP SIM_REVOCATIONS CP_ARGS SIM_SKIP_BUILD; do
    if [[ -n "${!v+x}" ]]; then COMMAND_LINE+="$v='${!v}' "; fi
done
COMMAND_LINE+="$0${*:+ $*}"

SIM_EDGES="${SIM_EDGES:-100 500 2000}"
SIM_SECONDS="${SIM_SECONDS:-60}"
SIM_WARMUP="${SIM_WARMUP:-10}"
SIM_REVOCATIONS="${SIM_REVOCATIONS:-12}"
CP_ARGS="${CP_ARGS:-}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[sim] %s\n' "$*" >&2; }
die() { printf '[sim] error: %s\n' "$*" >&2; exit 1; }

command -v curl >/dev/null || die "curl is required (readiness checks)"
command -v python3 >/dev/null || die "python3 is required (free ports)"
ETCD="${LLMGW_ETCD_BIN:-$(command -v etcd || echo /usr/bin/etcd)}"
[[ -x "$ETCD" ]] || die "etcd not found: install it (Debian: apt-get install etcd-server) or set LLMGW_ETCD_BIN"

if [[ "${SIM_SKIP_BUILD:-0}" != 1 ]]; then
    log "building release binaries"
    cargo build --release -p llmgw -p llmgw-tests --bin llmgw --bin llmgw-sim >&2
fi
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT_DIR="$ROOT/bench/out"
mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/sim-$STAMP.md"
# Copies, so a concurrent rebuild of target/release cannot change them mid-run.
WORK="$(mktemp -d /tmp/llmgw-sim.XXXXXX)"
cp target/release/llmgw target/release/llmgw-sim "$WORK/"

PIDS=()
stop_pids() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pids
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_http() { # URL: until it answers 200, up to 30 s
    for _ in $(seq 300); do
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" == 200 ]]; then return 0; fi
        sleep 0.1
    done
    return 1
}

export LLMGW_ADMIN_TOKEN="sim-admin-$RANDOM$RANDOM$RANDOM"
export LLMGW_EDGE_TOKEN="sim-edge-$RANDOM$RANDOM$RANDOM"
cat >"$WORK/config.yaml" <<'EOF'
version: 1
teams:
  - name: search
EOF

{
    echo "# llmgw-sim — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
    echo "- etcd: $("$ETCD" --version | head -1)"
    echo "- command: \`$COMMAND_LINE\`"
} >"$OUT"

RC=0
for edges in $SIM_EDGES; do
    client_port="$(free_port)"; peer_port="$(free_port)"
    grpc_port="$(free_port)"; metrics_port="$(free_port)"
    data="$WORK/etcd-$edges"
    log "$edges edges: etcd on $client_port, control plane on $grpc_port (metrics $metrics_port)"
    "$ETCD" --name sim --data-dir "$data" \
        --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "sim=http://127.0.0.1:$peer_port" --logger zap --log-level warn \
        >"$WORK/etcd-$edges.log" 2>&1 &
    etcd_pid=$!
    PIDS+=("$etcd_pid")
    wait_http "http://127.0.0.1:$client_port/health" || die "etcd did not start: $(tail -5 "$WORK/etcd-$edges.log")"
    # shellcheck disable=SC2086 # CP_ARGS is a list of flags
    RUST_LOG=warn "$WORK/llmgw" control-plane --store etcd --etcd-endpoints "http://127.0.0.1:$client_port" \
        --grpc-listen "127.0.0.1:$grpc_port" --metrics-listen "127.0.0.1:$metrics_port" --id sim-cp $CP_ARGS \
        >"$WORK/cp-$edges.log" 2>&1 &
    cp_pid=$!
    PIDS+=("$cp_pid")
    wait_http "http://127.0.0.1:$metrics_port/readyz" || die "control plane did not start: $(tail -5 "$WORK/cp-$edges.log")"
    "$WORK/llmgw" admin --endpoint "http://127.0.0.1:$grpc_port" apply -f "$WORK/config.yaml" >/dev/null
    set +e
    "$WORK/llmgw-sim" --control-plane "http://127.0.0.1:$grpc_port" --edges "$edges" \
        --duration-s "$SIM_SECONDS" --warmup-s "$SIM_WARMUP" --revocations "$SIM_REVOCATIONS" \
        --metrics "http://127.0.0.1:$metrics_port/metrics" --etcd-metrics "http://127.0.0.1:$client_port/metrics" \
        --cp-pid "$cp_pid" --etcd-pid "$etcd_pid" "$@" >"$WORK/sim-$edges.md"
    rc=$?
    set -e
    if [[ $rc != 0 ]]; then
        log "$edges edges: llmgw-sim exited with $rc"
        RC=$rc
    fi
    { echo; echo "## $edges edges (llmgw-sim exit status $rc)"; echo; cat "$WORK/sim-$edges.md"; } | tee -a "$OUT"
    stop_pids
done
log "written to $OUT"
exit "$RC"
