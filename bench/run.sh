#!/usr/bin/env bash
# Load benchmark: the mock provider direct, nginx in front of it, `llmgw edge` in front of it,
# and `llmgw dev` (control plane + edge in one process) in front of it, measured with oha in one
# run on loopback. Prints one table and writes it to
# bench/out/results-<timestamp>.md. See bench/README.md for what each column means.
#
#   bench/run.sh                    # ~2-3 minutes after the build
#   BENCH_SECONDS=5 bench/run.sh    # each measurement 5 s instead of 10 s
#
# Knobs (environment):
#   BENCH_SECONDS   duration of each measurement, seconds (default 10)
#   BENCH_WARMUP    warm-up per target before measuring, seconds (default 2; 0 skips it)
#   BENCH_CONC      concurrency of the saturation run (default 32)
#   BENCH_STREAM_CONC  concurrency of the streaming run (default 16)
#   BENCH_RATES     fixed request rates, space-separated (default "100 1000")
#   NGINX_WORKERS   nginx worker_processes (default auto: one per core, like llmgw's runtime)
#   MOCK_THREADS    mock provider runtime threads (default: its own default, one per core)
#   BENCH_SKIP_BUILD=1  use the existing target/release binaries as they are
#   BENCH_QUOTA=0   the bench key without budgets and rate limits (default 1: with them, so
#                   every request reserves and settles quota)
set -euo pipefail

# The exact command, with the knobs that were set in the environment.
COMMAND_LINE=""
for v in BENCH_SECONDS BENCH_WARMUP BENCH_CONC BENCH_STREAM_CONC BENCH_RATES NGINX_WORKERS MOCK_THREADS BENCH_SKIP_BUILD BENCH_QUOTA; do
    if [[ -n "${!v+x}" ]]; then COMMAND_LINE+="$v='${!v}' "; fi
done
COMMAND_LINE+="$0${*:+ $*}"

BENCH_SECONDS="${BENCH_SECONDS:-10}"
BENCH_WARMUP="${BENCH_WARMUP:-2}"
BENCH_CONC="${BENCH_CONC:-32}"
BENCH_STREAM_CONC="${BENCH_STREAM_CONC:-16}"
BENCH_RATES="${BENCH_RATES:-100 1000}"
NGINX_WORKERS="${NGINX_WORKERS:-auto}"
MOCK_THREADS="${MOCK_THREADS:-}"


ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export PATH="$CARGO_HOME/bin:$PATH"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools ---------------------
command -v python3 >/dev/null || die "python3 is required (parses oha's JSON)"
command -v curl >/dev/null || die "curl is required (readiness checks)"

if ! command -v oha >/dev/null; then
    log "installing oha (cargo install oha --locked) into $CARGO_HOME/bin"
    cargo install oha --locked >&2
fi
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    command -v apt-get >/dev/null || die "nginx is missing and apt-get is not available"
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
    log "installing nginx (apt-get)"
    if ! $SUDO apt-get install -y nginx-light >&2 && ! $SUDO apt-get install -y nginx >&2; then
        $SUDO apt-get update >&2
        $SUDO apt-get install -y nginx-light >&2 || $SUDO apt-get install -y nginx >&2
    fi
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

# oha's JSON flag changed name over versions: --output-format json (new) or -j/--json (old).
OHA_HELP="$(oha --help)"
if grep -q -- '--output-format' <<<"$OHA_HELP"; then
    OHA_JSON=(--output-format json)
else
    OHA_JSON=(-j)
fi
OHA_EXTRA=()
if grep -q -- '--no-tui' <<<"$OHA_HELP"; then OHA_EXTRA+=(--no-tui); fi
# Let requests in flight at the deadline finish instead of counting them as errors.
if grep -q -- '--wait-ongoing-requests-after-deadline' <<<"$OHA_HELP"; then
    OHA_EXTRA+=(--wait-ongoing-requests-after-deadline)
fi
OHA_LATCORR=()
if grep -q -- '--latency-correction' <<<"$OHA_HELP"; then OHA_LATCORR=(--latency-correction); fi

# ---------------------------------------------------------------- build ---------------------
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building release binaries (waits for the cargo lock if someone else holds it)"
    cargo build --release -p llmgw -p llmgw-tests --bin llmgw --bin mock-provider >&2
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LLMGW_BIN="$TARGET_DIR/release/llmgw"
MOCK_BIN="$TARGET_DIR/release/mock-provider"
[[ -x "$LLMGW_BIN" && -x "$MOCK_BIN" ]] || die "release binaries missing in $TARGET_DIR/release"
# Copy them: other engineers rebuild target/release while we run; a copy cannot change under us.

# ---------------------------------------------------------------- processes -----------------
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT_DIR="$ROOT/bench/out"
RAW_DIR="$OUT_DIR/raw-$STAMP"
mkdir -p "$RAW_DIR"
WORK="$(mktemp -d /tmp/llmgw-bench.XXXXXX)"
cp "$LLMGW_BIN" "$WORK/llmgw"
cp "$MOCK_BIN" "$WORK/mock-provider"

PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # URL [extra curl args...]: wait until it answers 200, up to 20 s
    local url="$1"; shift
    for _ in $(seq 200); do
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" || true)" == 200 ]]; then return 0; fi
        sleep 0.1
    done
    return 1
}

# --- mock provider
MOCK_ARGS=(--listen 127.0.0.1:0 --record-limit 0)
if [[ -n "$MOCK_THREADS" ]]; then MOCK_ARGS+=(--threads "$MOCK_THREADS"); fi
"$WORK/mock-provider" "${MOCK_ARGS[@]}" >"$WORK/mock.out" 2>"$WORK/mock.err" &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_ADDR=""
for _ in $(seq 200); do
    MOCK_ADDR="$(sed -n 's/^listening on //p' "$WORK/mock.out")"
    [[ -n "$MOCK_ADDR" ]] && break
    kill -0 "$MOCK_PID" 2>/dev/null || die "mock provider exited: $(cat "$WORK/mock.err")"
    sleep 0.1
done
[[ -n "$MOCK_ADDR" ]] || die "mock provider did not start"
log "mock provider on $MOCK_ADDR (pid $MOCK_PID)"

# --- nginx
NGINX_PORT="$(free_port)"
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
NGINX_USER=""
if [[ "$(id -u)" == 0 ]]; then NGINX_USER="user root;"; fi
cat >"$WORK/nginx/nginx.conf" <<EOF
# Generated by bench/run.sh
$NGINX_USER
daemon off;
worker_processes $NGINX_WORKERS;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    keepalive_requests 1000000;
    upstream mock {
        server $MOCK_ADDR;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx/stdout" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

# --- llmgw edge (standalone)
EDGE_PORT="$(free_port)"
EDGE_METRICS_PORT="$(free_port)"
BENCH_KEY="sk-llmgw-bench-0000000000000000"
# Budgets and rate limits on (default): every request reserves in four pools (key budget and
# RPM, team budget and TPM) and settles after; limits far above what the run can reach.
if [[ "${BENCH_QUOTA:-1}" == 1 ]]; then
    QUOTA_NOTE=", a budget and rate limits on the key and its team"
    QUOTA_TEAM="    budget: { limit_usd: 1000000, period: monthly }
    limits: { tpm: 1000000000000 }"
    QUOTA_KEY="    budget: { limit_usd: 1000000, period: total }
    limits: { rpm: 1000000000 }"
else
    QUOTA_NOTE=", no limits"
    QUOTA_TEAM=""
    QUOTA_KEY=""
fi
cat >"$WORK/llmgw.yaml" <<EOF
# Generated by bench/run.sh: one provider (the mock), one model, one key$QUOTA_NOTE.
version: 1
providers:
  - name: mock
    kind: openai_compatible
    base_url: http://$MOCK_ADDR/v1
    credentials:
      - value: sk-mock-upstream
    timeout_ms: 60000
    connect_timeout_ms: 2000
models:
  - name: bench
    targets:
      - provider: mock
        model: bench
        pricing: { input_per_mtok: 0.15, output_per_mtok: 0.60 }
teams:
  - name: bench
$QUOTA_TEAM
keys:
  - name: bench
    team: bench
    secret: { value: $BENCH_KEY }
$QUOTA_KEY
EOF
RUST_LOG=warn "$WORK/llmgw" --log-format json edge --config "$WORK/llmgw.yaml" \
    --listen "127.0.0.1:$EDGE_PORT" --metrics-listen "127.0.0.1:$EDGE_METRICS_PORT" \
    >"$WORK/llmgw.out" 2>"$WORK/llmgw.err" &
EDGE_PID=$!
PIDS+=("$EDGE_PID")

# --- llmgw dev: the control plane and an edge in one process on the embedded store, seeded with
# the same config: quota comes as grants from the control plane, usage goes to its ledger.
DEV_PORT="$(free_port)"
DEV_GRPC_PORT="$(free_port)"
DEV_METRICS_PORT="$(free_port)"
LLMGW_MASTER_KEY="$(python3 -c 'import os; print(os.urandom(32).hex())')" RUST_LOG=warn \
    "$WORK/llmgw" --log-format json dev --data-dir "$WORK/dev-data" --config "$WORK/llmgw.yaml" \
    --listen "127.0.0.1:$DEV_PORT" --grpc-listen "127.0.0.1:$DEV_GRPC_PORT" \
    --metrics-listen "127.0.0.1:$DEV_METRICS_PORT" >"$WORK/dev.out" 2>"$WORK/dev.err" &
DEV_PID=$!
PIDS+=("$DEV_PID")

BODY='{"model":"bench","messages":[{"role":"user","content":"Say hello to the benchmark."}]}'
# include_usage, as a client that wants token counts sends it: 9 events (role, 5 words, finish,
# usage, [DONE]).
STREAM_BODY='{"model":"bench","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello to the benchmark."}]}'
HDRS=(-H "Authorization: Bearer $BENCH_KEY" -H "content-type: application/json")
PATH_CHAT="/v1/chat/completions"

wait_http "http://$MOCK_ADDR$PATH_CHAT" -X POST "${HDRS[@]}" -d "$BODY" || die "mock not answering"
wait_http "http://127.0.0.1:$NGINX_PORT$PATH_CHAT" -X POST "${HDRS[@]}" -d "$BODY" \
    || die "nginx not answering: $(cat "$WORK/nginx/stdout" "$WORK/nginx/logs/error.log" 2>/dev/null)"
log "nginx on 127.0.0.1:$NGINX_PORT (pid $NGINX_PID, worker_processes $NGINX_WORKERS)"
wait_http "http://127.0.0.1:$EDGE_PORT$PATH_CHAT" -X POST "${HDRS[@]}" -d "$BODY" \
    || die "llmgw edge not answering: $(tail -n 20 "$WORK/llmgw.err")"
log "llmgw edge on 127.0.0.1:$EDGE_PORT (pid $EDGE_PID)"
wait_http "http://127.0.0.1:$DEV_PORT$PATH_CHAT" -X POST "${HDRS[@]}" -d "$BODY" \
    || die "llmgw dev not answering: $(tail -n 20 "$WORK/dev.err" "$WORK/dev.out")"
log "llmgw dev on 127.0.0.1:$DEV_PORT (pid $DEV_PID)"
# A streamed answer, direct and through each proxy, must carry the mock's 9 SSE events.
for url in "http://$MOCK_ADDR" "http://127.0.0.1:$NGINX_PORT" "http://127.0.0.1:$EDGE_PORT" "http://127.0.0.1:$DEV_PORT"; do
    n="$(curl -sN -X POST "${HDRS[@]}" -d "$STREAM_BODY" "$url$PATH_CHAT" | grep -c '^data:' || true)"
    [[ "$n" == 9 ]] || die "$url: streamed answer has $n data events, expected 9"
done

# ---------------------------------------------------------------- measurement helpers -------
CLK_TCK="$(getconf CLK_TCK)"

# pids of a process and its children (nginx: master + workers)
proc_tree() {
    local pid="$1" kids
    echo "$pid"
    kids="$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)"
    for k in $kids; do echo "$k"; done
}
cpu_ticks() { # sum of utime+stime (fields 14, 15) over a process tree
    local total=0 pid stat
    for pid in $(proc_tree "$1"); do
        stat="$(cat /proc/"$pid"/stat 2>/dev/null)" || continue
        # fields after the ")" of comm: state is field 3, utime 14, stime 15
        read -r -a f <<<"${stat##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
peak_rss_kib() { # sum of VmHWM over a process tree
    local total=0 pid kb
    for pid in $(proc_tree "$1"); do
        kb="$(awk '/^VmHWM:/ {print $2}' /proc/"$pid"/status 2>/dev/null || true)"
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# llmgw's own-processing histogram (cumulative buckets), before and after a run
overhead_snapshot() {
    curl -fsS "http://127.0.0.1:$EDGE_METRICS_PORT/metrics" | grep '^llmgw_gateway_overhead_seconds_bucket' >"$1" || true
}

run_oha() { # NAME URL BODY oha-args...: writes $RAW_DIR/NAME.json
    local name="$1" url="$2" body="$3"; shift 3
    oha "${OHA_EXTRA[@]}" "${OHA_JSON[@]}" -m POST "${HDRS[@]}" -d "$body" "$@" "$url" \
        >"$RAW_DIR/$name.json" 2>"$RAW_DIR/$name.err" \
        || die "oha failed for $name: $(cat "$RAW_DIR/$name.err")"
}

declare -A URL PID
URL[direct]="http://$MOCK_ADDR$PATH_CHAT";           PID[direct]=$MOCK_PID
URL[nginx]="http://127.0.0.1:$NGINX_PORT$PATH_CHAT"; PID[nginx]=$NGINX_PID
URL[llmgw]="http://127.0.0.1:$EDGE_PORT$PATH_CHAT";  PID[llmgw]=$EDGE_PID
URL[dev]="http://127.0.0.1:$DEV_PORT$PATH_CHAT";     PID[dev]=$DEV_PID
TARGETS=(direct nginx llmgw dev)

LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
n_runs=$(( 2 + $(wc -w <<<"$BENCH_RATES") ))
log "measuring: ${#TARGETS[@]} targets x $n_runs runs x ${BENCH_SECONDS}s (+${BENCH_WARMUP}s warm-up each)"
for t in "${TARGETS[@]}"; do
    url="${URL[$t]}"
    if [[ "$BENCH_WARMUP" != 0 ]]; then
        run_oha "$t-warmup" "$url" "$BODY" -c "$BENCH_CONC" -z "${BENCH_WARMUP}s"
    fi
    log "$t: saturation c=$BENCH_CONC"
    before="$(cpu_ticks "${PID[$t]}")"
    run_oha "$t-sat" "$url" "$BODY" -c "$BENCH_CONC" -z "${BENCH_SECONDS}s"
    after="$(cpu_ticks "${PID[$t]}")"
    echo "$((after - before))" >"$RAW_DIR/$t-sat.cputicks"
    for q in $BENCH_RATES; do
        log "$t: fixed rate q=$q"
        # concurrency cap well above rate x latency, so the rate is the only limit
        if [[ "$t" == llmgw ]]; then overhead_snapshot "$RAW_DIR/llmgw-q$q.before"; fi
        run_oha "$t-q$q" "$url" "$BODY" -q "$q" -c 64 "${OHA_LATCORR[@]}" -z "${BENCH_SECONDS}s"
        if [[ "$t" == llmgw ]]; then overhead_snapshot "$RAW_DIR/llmgw-q$q.after"; fi
    done
    log "$t: streaming c=$BENCH_STREAM_CONC"
    run_oha "$t-stream" "$url" "$STREAM_BODY" -c "$BENCH_STREAM_CONC" -z "${BENCH_SECONDS}s"
    peak_rss_kib "${PID[$t]}" >"$RAW_DIR/$t.hwm_kib"
done

# ---------------------------------------------------------------- report --------------------
CPU_MODEL="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
NPROC="$(nproc)"
OHA_VERSION="$(oha --version 2>/dev/null | head -n1)"
NGINX_VERSION="$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
REPORT="$OUT_DIR/results-$STAMP.md"
LLMGW_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- . ':!bench' 2>/dev/null || true)" ]]; then
    LLMGW_REV+=" (+ uncommitted changes)"
fi

python3 - "$RAW_DIR" "$CLK_TCK" "$BENCH_CONC" "$BENCH_STREAM_CONC" "$BENCH_RATES" >"$REPORT.table" <<'PY'
import json, sys, os
raw, clk, conc, sconc, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5].split()
targets = [("direct", "mock direct"), ("nginx", "nginx"), ("llmgw", "llmgw edge"),
           ("dev", "llmgw dev (control plane + edge)")]

def load(name):
    with open(os.path.join(raw, name + ".json")) as f:
        return json.load(f)

def lat(d, p):  # seconds -> ms
    v = (d.get("latencyPercentiles") or {}).get(p)
    return None if v is None else v * 1000.0

def count(d):
    """(total requests, ok 2xx, non-2xx, transport errors)"""
    codes = d.get("statusCodeDistribution") or {}
    errs = d.get("errorDistribution") or {}
    ok = sum(n for c, n in codes.items() if str(c).startswith("2"))
    bad = sum(n for c, n in codes.items() if not str(c).startswith("2"))
    e = sum(errs.values())
    return ok + bad + e, ok, bad, e

def rps_ok(d):
    s = d["summary"]
    total, ok, _, _ = count(d)
    rps = s.get("requestsPerSec") or 0.0
    return rps * ok / total if total else 0.0  # successful requests per second

res = {}
problems = []
for key, _ in targets:
    r = {}
    runs = ["sat", "stream"] + ["q" + q for q in rates]
    for run in runs:
        d = load(f"{key}-{run}")
        r[run] = d
        total, ok, bad, e = count(d)
        if bad or e:
            problems.append(f"- {key} {run}: {total} requests, {ok} 2xx, {bad} non-2xx "
                            f"{json.dumps(d.get('statusCodeDistribution'))}, {e} errors "
                            f"{json.dumps(d.get('errorDistribution'))}")
    with open(os.path.join(raw, f"{key}-sat.cputicks")) as f:
        r["cpu_ticks"] = int(f.read())
    with open(os.path.join(raw, f"{key}.hwm_kib")) as f:
        r["hwm_kib"] = int(f.read())
    res[key] = r

def fmt(v, nd=0, sign=False):
    if v is None:
        return "n/a"
    s = f"{v:+.{nd}f}" if sign else f"{v:,.{nd}f}"
    return s

hdr = ["target", f"req/s c={conc}", "ratio to nginx", f"p50 / p99 ms c={conc}"]
for q in rates:
    hdr += [f"+p50 @{q}", f"+p99 @{q}"]
hdr += [f"stream req/s c={sconc}", "CPU ms/1k req", "peak RSS MiB", "failed"]
lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
nginx_rps = rps_ok(res["nginx"]["sat"])
for key, label in targets:
    r = res[key]
    sat = r["sat"]
    rps = rps_ok(sat)
    row = [label if key != "direct" else "mock direct (baseline)", fmt(rps),
           f"{rps / nginx_rps:.2f}" if nginx_rps else "n/a",
           f"{fmt(lat(sat, 'p50'), 2)} / {fmt(lat(sat, 'p99'), 2)}"]
    for q in rates:
        d, base = r["q" + q], res["direct"]["q" + q]
        if key == "direct":
            row += [f"({fmt(lat(d, 'p50'), 3)} ms)", f"({fmt(lat(d, 'p99'), 3)} ms)"]
        else:
            row += [fmt(lat(d, "p50") - lat(base, "p50"), 3, sign=True),
                    fmt(lat(d, "p99") - lat(base, "p99"), 3, sign=True)]
    row.append(fmt(rps_ok(r["stream"])))
    total_sat = count(sat)[0]
    cpu_ms = r["cpu_ticks"] * 1000.0 / clk
    row.append(fmt(cpu_ms * 1000.0 / total_sat, 1) if total_sat else "n/a")
    row.append(fmt(r["hwm_kib"] / 1024.0, 1))
    failed = sum(count(r[k])[2] + count(r[k])[3] for k in r if isinstance(r[k], dict))
    row.append(str(failed))
    lines.append("| " + " | ".join(row) + " |")

print("\n".join(lines))
print()
ng, lg = res["nginx"], res["llmgw"]
verdict = []
def judge(ok):
    return "PASS" if ok else "FAIL"
lr, nr = rps_ok(lg["sat"]), rps_ok(ng["sat"])
if nr:
    verdict.append(f"- req/s at c={conc}: llmgw {lr:,.0f}, nginx {nr:,.0f}, {100 * lr / nr:.0f}% "
                   f"(target >= nginx's): {judge(lr >= nr)}")
ls, ns = rps_ok(lg["stream"]), rps_ok(ng["stream"])
if ns:
    verdict.append(f"- streaming req/s at c={sconc}: llmgw {ls:,.0f}, nginx {ns:,.0f}, {100 * ls / ns:.0f}% "
                   f"(target >= nginx's): {judge(ls >= ns)}")
for q in rates:
    for p in ("p50", "p99"):
        base = lat(res["direct"]["q" + q], p)
        la, na = lat(lg["q" + q], p) - base, lat(ng["q" + q], p) - base
        # Below zero the difference is the machine's noise, not something a proxy adds.
        verdict.append(f"- added {p} @{q} req/s: llmgw {la:+.3f} ms, nginx {na:+.3f} ms "
                       f"(target llmgw <= nginx): {judge(max(la, 0.0) <= max(na, 0.0))}")
cpu_per_k = lambda k: res[k]["cpu_ticks"] * 1000.0 / clk * 1000.0 / max(count(res[k]["sat"])[0], 1)
verdict.append(f"- CPU per 1,000 requests: llmgw {cpu_per_k('llmgw'):.1f} ms, nginx {cpu_per_k('nginx'):.1f} ms "
               f"(target <= 20 ms): {judge(cpu_per_k('llmgw') <= 20.0)}")
def overhead(q):
    """p50/p99 upper bounds (µs) of llmgw_gateway_overhead_seconds over the q run, from the
    buckets' difference; None without the files (an llmgw without the metric)."""
    def read(path):
        out = {}
        try:
            with open(path) as f:
                for line in f:
                    le = line.split('le="', 1)[1].split('"', 1)[0]
                    out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
        except (OSError, IndexError, ValueError):
            return None
        return out
    b, a = read(os.path.join(raw, f"llmgw-q{q}.before")), read(os.path.join(raw, f"llmgw-q{q}.after"))
    if not a:
        return None
    diff = sorted((le, a[le] - (b or {}).get(le, 0.0)) for le in a)
    total = diff[-1][1]
    if total <= 0:
        return None
    def pct(p):
        return next(le for le, n in diff if n >= p * total)
    fmt = lambda v: "> 100 ms" if v == float("inf") else f"<= {v * 1e6:g} us"
    return int(total), fmt(pct(0.5)), fmt(pct(0.99))
for q in rates:
    o = overhead(q)
    if o:
        verdict.append(f"- llmgw own processing @{q} req/s (llmgw_gateway_overhead_seconds, {o[0]} requests): "
                       f"p50 {o[1]}, p99 {o[2]} (target p50 <= 20 us, p99 <= 100 us)")
print("Targets from the issue:")
print("\n".join(verdict))
if problems:
    print()
    print("Failed requests (oha's status and error breakdown):")
    print("\n".join(problems))
PY

{
    echo "# llmgw load benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo
    echo "- command: \`$COMMAND_LINE\`"
    echo "- host: nproc=$NPROC, CPU: $CPU_MODEL, kernel $(uname -r);" \
         "load average before measuring: $LOAD_AT_START (anything above ~0 means other work competed)"
    echo "- llmgw: $LLMGW_REV; $NGINX_VERSION (worker_processes $NGINX_WORKERS); $OHA_VERSION"
    echo "- each measurement ${BENCH_SECONDS}s after a ${BENCH_WARMUP}s warm-up per target; loopback;" \
         "load generator, proxies and mock share all $NPROC cores (nothing pinned)"
    echo "- llmgw: \`edge --config\` standalone, \`--log-format json\`, RUST_LOG=warn (the access log is off at warn)"
    echo "- fixed-rate runs: oha ${OHA_LATCORR[*]:-without latency correction}; +p50/+p99 = target minus mock direct at the same rate;" \
         "the baseline row shows mock direct's own p50/p99 in parentheses"
    echo "- CPU ms/1k req: the process's utime+stime (nginx: master + workers) during the saturation run;" \
         "the baseline row is the mock's own CPU. Peak RSS: VmHWM (nginx: summed over master + workers)"
    echo "- raw oha JSON: bench/out/raw-$STAMP/"
    echo
    cat "$REPORT.table"
} >"$REPORT"
rm -f "$REPORT.table"
cat "$REPORT"
log "written to ${REPORT#"$ROOT"/}"
