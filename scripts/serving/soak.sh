#!/usr/bin/env bash
# Soak test (a benchmark, not part of CI): serve the baseline, measure its capacity, then offer 4× that
# load (open loop) for 10 minutes while sampling the server's memory; report errors by kind, latency,
# and memory at start, peak and end. Everything over capacity must be refused quickly (503) or time out
# cleanly, and memory must stay flat.
#
#   scripts/serving/soak.sh [minutes=10] [factor=4]      (after `cargo build --release -p inferscope-server`)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
MINUTES="${1:-10}"
FACTOR="${2:-4}"
BIN="${INFERSCOPE_BIN:-$ROOT/target/release/inferscope}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.tools/ort/onnxruntime/capi/libonnxruntime.so.1.32.0}"
OUT="${SOAK_OUT:-$ROOT/target/soak}"
mkdir -p "$OUT"
PORT="${SOAK_PORT:-3917}"

"$BIN" serve --addr "127.0.0.1:$PORT" --models-dir models --threads 2 --timeout-ms 5000 --grpc-addr off \
  2> "$OUT/server.log" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null && break
  sleep 0.2
done

echo "== capacity (closed loop, concurrency 4, 20 s)"
"$BIN" bench --url "http://127.0.0.1:$PORT" --concurrency 4 --duration 20 --warmup 3 \
  --label capacity --json "$OUT/capacity.json"
RATE=$(python3 -c "import json; print(round(json.load(open('$OUT/capacity.json'))['throughput_rps'] * $FACTOR, 1))")

echo "== soak: open loop at $RATE req/s (${FACTOR}× capacity) for $MINUTES min"
rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }
echo "t_s rss_kb" > "$OUT/memory.tsv"
(
  t=0
  while kill -0 "$SERVER" 2>/dev/null; do
    echo "$t $(rss)" >> "$OUT/memory.tsv"
    sleep 10; t=$((t + 10))
  done
) &
SAMPLER=$!
"$BIN" bench --url "http://127.0.0.1:$PORT" --rate "$RATE" --duration "$((MINUTES * 60))" --warmup 0 \
  --timeout 10 --label soak --json "$OUT/soak.json"
kill "$SAMPLER" 2>/dev/null || true

echo "== after the soak: the server still answers"
"$BIN" bench --url "http://127.0.0.1:$PORT" --concurrency 1 --duration 5 --warmup 0 --label after \
  --json "$OUT/after.json"
curl -s "http://127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt"

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = [l.split() for l in open(f"{out}/memory.tsv").read().splitlines()[1:] if len(l.split()) == 2]
mem = [int(r[1]) / 1024 for r in rows]
soak = json.load(open(f"{out}/soak.json"))
after = json.load(open(f"{out}/after.json"))
print(f"memory MiB: start {mem[0]:.0f}, peak {max(mem):.0f}, end {mem[-1]:.0f} ({len(mem)} samples)")
print(f"soak: {soak['requests']} requests, {soak['ok']} ok ({soak['throughput_rps']:.2f}/s), errors {soak['errors']}")
print(f"soak latency of answered requests ms: p50 {soak['latency_ms']['p50']:.0f}, p99 {soak['latency_ms']['p99']:.0f}")
print(f"after: {after['ok']} ok, errors {after['errors']}, p50 {after['latency_ms']['p50']:.0f} ms")
PY
