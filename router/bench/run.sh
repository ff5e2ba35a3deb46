#!/usr/bin/env bash
# Router benchmark: the same load against a backend directly and through the router, in one run,
# on loopback only. Measures the latency the router adds (p50, p99), its throughput relative to
# direct, and its memory under load. Measurement takes under 2 minutes (the release build before
# it is not counted, and is cached after the first run).
#
#   router/bench/run.sh            # or: make bench-router
#
# Phases, each run against the backend directly and through the router, alternately, ROUNDS
# times; the table reports the median round (a shared 2-core machine is noisy):
#   1. latency: open loop at a fixed rate (examples/loadgen.rs), so the machine is not saturated
#      and the difference is the cost of the extra hop;
#   2. throughput: wrk, closed loop, CONNECTIONS connections, a backend that answers at once: the
#      router's own cost at saturation (wrk, router and backend share the machine's cores);
#   3. throughput: the same against a backend that takes MODEL_DELAY_MS per request, like a small
#      model;
#   4. throughput with the router on a core of its own (machines with 2 or more cores): wrk and
#      an instant backend pinned to the first core, a second router pinned to the second, so the
#      router's capacity is measured rather than its share of contended cores.
# In phases 2 and 4 the router's CPU time (/proc/<pid>/stat) gives its CPU cost per request.
# The results are printed and spliced into docs/benchmarks.md between the router-results markers.
# Knobs (environment): BENCH_ROUNDS (3), BENCH_SECONDS (per run, 4), BENCH_RATE (phase 1, req/s,
# 1000), BENCH_CONNECTIONS (32), BENCH_MODEL_DELAY_MS (5), BENCH_ACCESS_LOG (on|off, on),
# BENCH_PORT_BASE (18080: uses base..base+4 and base+1010..base+1011), BENCH_WRITE_DOCS (1: write
# docs/benchmarks.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
ROUNDS="${BENCH_ROUNDS:-3}"
SECS="${BENCH_SECONDS:-4}"
RATE="${BENCH_RATE:-1000}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
MODEL_DELAY_MS="${BENCH_MODEL_DELAY_MS:-5}"
ACCESS_LOG="${BENCH_ACCESS_LOG:-on}"
BASE="${BENCH_PORT_BASE:-18080}"
ROUTER_PORT=$BASE
FAST_PORT=$((BASE + 1))
MODEL_PORT=$((BASE + 2))
PINNED_ROUTER_PORT=$((BASE + 3))
PINNED_FAST_PORT=$((BASE + 4))
ADMIN_PORT=$((BASE + 1010))
PINNED_ADMIN_PORT=$((BASE + 1011))
CLK_TCK=$(getconf CLK_TCK)
# Phase 4 needs two cores: the first for wrk and the backend, the second for the router alone.
PIN=0
if command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]] \
  && read -r CPU_A CPU_B < <(taskset -cp $$ | sed 's/.*: //' | python3 -c '
import sys
cpus = []  # the cores this script may use, from a list such as "0-3,6"
for part in sys.stdin.read().strip().split(","):
    lo, _, hi = part.partition("-")
    cpus += range(int(lo), int(hi or lo) + 1)
print(cpus[0], cpus[1])'); then
  PIN=1
fi
KEY="bench-key-0123456789abcdef"

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)..."
  if [[ $(id -u) -eq 0 ]]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null
fi

echo "building (release)..."
cargo build --release --quiet -p atrium-router --bin atrium-router --example echo_backend --example loadgen
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
ROUTER_BIN="$TARGET_DIR/release/atrium-router"
BACKEND_BIN="$TARGET_DIR/release/examples/echo_backend"
LOADGEN_BIN="$TARGET_DIR/release/examples/loadgen"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Backends: one answering at once (isolates the router's own cost), one taking MODEL_DELAY_MS per
# request. One worker thread each, so the two cores are not over-subscribed more than needed.
"$BACKEND_BIN" "127.0.0.1:$FAST_PORT" 0 1 >"$WORK/fast.log" 2>&1 &
PIDS+=($!)
"$BACKEND_BIN" "127.0.0.1:$MODEL_PORT" "$MODEL_DELAY_MS" 1 >"$WORK/model.log" 2>&1 &
PIDS+=($!)

# The router as deployed: key auth, access log on (to a file), limits that never refuse here.
mkdir -p "$WORK/keys"
printf '%s' "$KEY" >"$WORK/keys/primary"
printf '%s' "other-key" >"$WORK/keys/secondary"
cat >"$WORK/config.json" <<EOF
{
  "endpoint": "bench",
  "authMode": "Key",
  "deployments": [
    {"name": "fast", "url": "http://127.0.0.1:$FAST_PORT", "scoringPath": "/score", "instances": 1,
     "requestTimeoutMs": 5000, "maxConcurrentRequestsPerInstance": 1024, "maxQueueWaitMs": 500},
    {"name": "model", "url": "http://127.0.0.1:$MODEL_PORT", "scoringPath": "/score", "instances": 1,
     "requestTimeoutMs": 5000, "maxConcurrentRequestsPerInstance": 1024, "maxQueueWaitMs": 500}
  ],
  "traffic": {"fast": 100, "model": 0},
  "mirrorTraffic": {}
}
EOF
if [[ "$ACCESS_LOG" == "off" ]]; then export RUST_LOG="info,atrium_router::access=off"; else export RUST_LOG="info"; fi
"$ROUTER_BIN" --listen "127.0.0.1:$ROUTER_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --config "$WORK/config.json" --keys-dir "$WORK/keys" >"$WORK/router.log" 2>&1 &
ROUTER_PID=$!
PIDS+=("$ROUTER_PID")

for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 \
    && curl -fsS "http://127.0.0.1:$FAST_PORT/" >/dev/null 2>&1 \
    && curl -fsS "http://127.0.0.1:$MODEL_PORT/" >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null || { echo "router not ready"; cat "$WORK/router.log"; exit 1; }

if [[ $PIN == 1 ]]; then
  # Phase 4's own backend and router, each pinned. Pinned to one core, the router's runtime starts
  # one worker thread (tokio counts the cores it may use).
  sed -e "s#127.0.0.1:$FAST_PORT#127.0.0.1:$PINNED_FAST_PORT#" "$WORK/config.json" >"$WORK/pinned.json"
  taskset -c "$CPU_A" "$BACKEND_BIN" "127.0.0.1:$PINNED_FAST_PORT" 0 1 >"$WORK/pinned-fast.log" 2>&1 &
  PIDS+=($!)
  taskset -c "$CPU_B" "$ROUTER_BIN" --listen "127.0.0.1:$PINNED_ROUTER_PORT" --admin-listen "127.0.0.1:$PINNED_ADMIN_PORT" \
    --config "$WORK/pinned.json" --keys-dir "$WORK/keys" >"$WORK/pinned-router.log" 2>&1 &
  PINNED_ROUTER_PID=$!
  PIDS+=("$PINNED_ROUTER_PID")
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$PINNED_ADMIN_PORT/readyz" >/dev/null 2>&1 \
      && curl -fsS "http://127.0.0.1:$PINNED_FAST_PORT/" >/dev/null 2>&1; then
      break
    fi
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$PINNED_ADMIN_PORT/readyz" >/dev/null \
    || { echo "pinned router not ready"; cat "$WORK/pinned-router.log"; exit 1; }
fi

# Scoring requests: POST /score with a small JSON body and the key; the model phase names the
# deployment with the header (direct, the backend ignores it).
wrk_script() { # FILE EXTRA_LUA
  cat >"$1" <<EOF
wrk.method = "POST"
wrk.body = '{"data": [[1.0, 2.0, 3.0, 4.0]]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
$2
EOF
}
wrk_script "$WORK/fast.lua" ""
wrk_script "$WORK/model.lua" 'wrk.headers["azureml-model-deployment"] = "model"'

wrk_run() { # NAME URL SCRIPT SECONDS [CPU]
  ${5:+taskset -c "$5"} wrk -t1 -c"$CONNECTIONS" -d"$4s" --latency -s "$3" "$2" >"$WORK/$1.out"
  if grep -q "Non-2xx" "$WORK/$1.out"; then echo "non-2xx responses in $1:"; cat "$WORK/$1.out"; exit 1; fi
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # PID: user + system time
# A wrk run through a router, with the router's CPU time over it and the run's wall time written
# to NAME.cpu (seconds, seconds).
wrk_router_run() { # NAME URL SCRIPT SECONDS ROUTER_PID [CPU]
  local before after start end
  start=$(date +%s%N)
  before=$(cpu_ticks "$5")
  wrk_run "$1" "$2" "$3" "$4" "${6:-}"
  after=$(cpu_ticks "$5")
  end=$(date +%s%N)
  echo "$(( after - before )) $CLK_TCK $(( end - start ))" | awk '{ print $1 / $2, $3 / 1e9 }' >"$WORK/$1.cpu"
}
lat_run() { # NAME URL
  "$LOADGEN_BIN" "$2" "$RATE" "$SECS" "authorization: Bearer $KEY" >"$WORK/$1.out"
  if ! grep -q "errors=0 non2xx=0" "$WORK/$1.out"; then echo "failed requests in $1:"; cat "$WORK/$1.out"; exit 1; fi
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$ROUTER_PID/status"; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date +%s)
echo "warming up..."
wrk_run warm-direct "http://127.0.0.1:$FAST_PORT/score" "$WORK/fast.lua" 2
wrk_run warm-router "http://127.0.0.1:$ROUTER_PORT/score" "$WORK/fast.lua" 2
if [[ $PIN == 1 ]]; then
  wrk_run warm-pinned "http://127.0.0.1:$PINNED_ROUTER_PORT/score" "$WORK/fast.lua" 2 "$CPU_A"
fi
rss_kib >"$WORK/rss_idle"

( peak=0; while kill -0 "$ROUTER_PID" 2>/dev/null; do
    r=$(rss_kib || echo 0); if [[ ${r:-0} -gt $peak ]]; then peak=$r; echo "$peak" >"$WORK/rss_peak"; fi; sleep 0.2
  done ) &
SAMPLER=$!

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS: latency at $RATE req/s, throughput at $CONNECTIONS connections (instant, ${MODEL_DELAY_MS} ms$([[ $PIN == 1 ]] && echo ", router on its own core"))..."
  lat_run "lat-direct-$round" "http://127.0.0.1:$FAST_PORT/score"
  lat_run "lat-router-$round" "http://127.0.0.1:$ROUTER_PORT/score"
  wrk_run "fast-direct-$round" "http://127.0.0.1:$FAST_PORT/score" "$WORK/fast.lua" "$SECS"
  wrk_router_run "fast-router-$round" "http://127.0.0.1:$ROUTER_PORT/score" "$WORK/fast.lua" "$SECS" "$ROUTER_PID"
  wrk_run "model-direct-$round" "http://127.0.0.1:$MODEL_PORT/score" "$WORK/model.lua" "$SECS"
  wrk_run "model-router-$round" "http://127.0.0.1:$ROUTER_PORT/score" "$WORK/model.lua" "$SECS"
  if [[ $PIN == 1 ]]; then
    wrk_run "pinned-direct-$round" "http://127.0.0.1:$PINNED_FAST_PORT/score" "$WORK/fast.lua" "$SECS" "$CPU_A"
    wrk_router_run "pinned-router-$round" "http://127.0.0.1:$PINNED_ROUTER_PORT/score" "$WORK/fast.lua" "$SECS" \
      "$PINNED_ROUTER_PID" "$CPU_A"
  fi
done
kill "$SAMPLER" 2>/dev/null || true
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(( $(date +%s) - START ))

MACHINE="$(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
python3 - "$WORK" "$ROUNDS" "$SECS" "$RATE" "$CONNECTIONS" "$MODEL_DELAY_MS" "$ACCESS_LOG" "$ELAPSED" \
  "$LOAD_BEFORE" "$LOAD_AFTER" "$PIN" "$MACHINE" "$(date -u +%Y-%m-%d)" >"$WORK/report.md" <<'EOF'
import re, statistics, sys
work, rounds, secs, rate, conns, delay, access_log, elapsed, load_before, load_after, pin, machine, day = sys.argv[1:]
rounds, pin = int(rounds), pin == "1"

def read(name):
    with open(f"{work}/{name}.out") as f:
        return f.read()

def us(text):  # wrk duration -> microseconds
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]

def wrk(name):
    text = read(name)
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", text, re.M))
    rps = float(re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M).group(1))
    requests = int(re.search(r"^\s*(\d+) requests in", text, re.M).group(1))
    out = {"rps": rps, "p50": us(pct["50"]), "p99": us(pct["99"]), "requests": requests}
    try:
        with open(f"{work}/{name}.cpu") as f:
            cpu, wall = map(float, f.read().split())
        out["cpu_us"] = cpu * 1e6 / requests  # the router's CPU time per request
        out["cpu_share"] = cpu / wall  # of one core
    except OSError:
        pass
    return out

def loadgen(name):
    return {k: float(v) for k, v in re.findall(r"(\w+)=(\d+)", read(name))}

def median_round(kind, parse, key):
    """The round whose router/direct comparison is the median one, as (direct, router)."""
    pairs = [(parse(f"{kind}-direct-{r}"), parse(f"{kind}-router-{r}")) for r in range(1, rounds + 1)]
    ranked = sorted(pairs, key=key)
    return ranked[len(ranked) // 2], pairs

ratio = lambda p: p[1]["rps"] / p[0]["rps"]
(ld, lr), lat_all = median_round("lat", loadgen, lambda p: p[1]["p50_us"] - p[0]["p50_us"])
lat99 = statistics.median(r["p99_us"] - d["p99_us"] for d, r in lat_all)
(fd, fr), fast_all = median_round("fast", wrk, ratio)
(md, mr), model_all = median_round("model", wrk, ratio)
fast_cpu = statistics.median(r["cpu_us"] for _, r in fast_all)
if pin:
    (pd, pr), pinned_all = median_round("pinned", wrk, ratio)
    pinned_cpu = statistics.median(r["cpu_us"] for _, r in pinned_all)
def kib(name):
    try:
        return int(open(f"{work}/{name}").read().strip())
    except (OSError, ValueError):
        return 0
rss_idle, rss_peak = kib("rss_idle"), kib("rss_peak")

add50 = (lr["p50_us"] - ld["p50_us"]) / 1000
add99 = lat99 / 1000
fast_ratio, model_ratio = fr["rps"] / fd["rps"], mr["rps"] / md["rps"]
def mark(ok):
    return "**met**" if ok else "**missed**"
def spread(pairs, f):
    return ", ".join(f(d, r) for d, r in pairs)
def throughput(d, r):
    return f"{d['rps']:,.0f} → {r['rps']:,.0f} ({r['rps']/d['rps']:.0%})"

rows = [
    f"| Latency p50, {rate} req/s open loop | {ld['p50_us']/1000:.3f} ms | {lr['p50_us']/1000:.3f} ms | {add50:+.3f} ms | ≤ 0.5 ms: {mark(add50 <= 0.5)} |",
    f"| Latency p99, {rate} req/s open loop | {ld['p99_us']/1000:.3f} ms | {lr['p99_us']/1000:.3f} ms | {add99:+.3f} ms (median of rounds) | ≤ 1 ms: {mark(add99 <= 1.0)} |",
    f"| Throughput, {conns} connections, instant backend | {fd['rps']:,.0f} req/s | {fr['rps']:,.0f} req/s | {fast_ratio:.0%} | ≥ 90%: {mark(fast_ratio >= 0.9)} |",
]
if pin:
    rows.append(
        f"| The same, router on a core of its own (wrk and backend share the other) | {pd['rps']:,.0f} req/s | {pr['rps']:,.0f} req/s "
        f"| {pr['rps']/pd['rps']:.0%}; router at {pr['cpu_share']:.0%} of its core | ≥ 90%: {mark(pr['rps']/pd['rps'] >= 0.9)} |")
rows += [
    f"| Router CPU per request, instant backend | | {fast_cpu:.1f} µs" + (f" ({pinned_cpu:.1f} µs on its own core)" if pin else "") + " | | |",
    f"| Throughput, {conns} connections, {delay} ms model | {md['rps']:,.0f} req/s | {mr['rps']:,.0f} req/s | {model_ratio:.0%} | ≥ 90%: {mark(model_ratio >= 0.9)} |",
    f"| Latency p50 / p99 at that load | {md['p50']/1000:.2f} / {md['p99']/1000:.2f} ms | {mr['p50']/1000:.2f} / {mr['p99']/1000:.2f} ms | {(mr['p50']-md['p50'])/1000:+.2f} / {(mr['p99']-md['p99'])/1000:+.2f} ms | |",
    f"| Router RSS idle / peak under load | | {rss_idle/1024:.1f} / {rss_peak/1024:.1f} MiB | | |",
]
rounds_list = [
    "- latency p50 added: " + spread(lat_all, lambda d, r: "%+.3f ms" % ((r["p50_us"] - d["p50_us"]) / 1000)),
    "- latency p99 added: " + spread(lat_all, lambda d, r: "%+.3f ms" % ((r["p99_us"] - d["p99_us"]) / 1000)),
    f"- instant backend: {spread(fast_all, throughput)}; router CPU per request: "
    + ", ".join(f"{r['cpu_us']:.1f} µs" for _, r in fast_all),
]
if pin:
    rounds_list.append(
        f"- router on its own core: {spread(pinned_all, throughput)}; router CPU: "
        + ", ".join(f"{r['cpu_share']:.0%} of its core, {r['cpu_us']:.1f} µs per request" for _, r in pinned_all))
rounds_list.append(f"- {delay} ms model: {spread(model_all, throughput)}")
nl = "\n"
print(f"""Machine: {machine}; router, backends and load generators all on it, loopback only. Run of {day}:
{rounds} rounds of {secs} s per run, access log {access_log}, measured in {elapsed} s; load average
before / after: {load_before} / {load_after}.

| Measurement | Direct | Through router | Router adds / ratio | Target |
|---|---|---|---|---|
{nl.join(rows)}

Every round (direct → router):
{nl.join(rounds_list)}""")
EOF
cat "$WORK/report.md"
if [[ "${BENCH_WRITE_DOCS:-1}" == 1 ]]; then
  python3 hack/splice-results.py "$WORK/report.md" docs/benchmarks.md router-results
  echo "bench-router: results written to docs/benchmarks.md"
fi
