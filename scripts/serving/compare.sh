#!/usr/bin/env bash
# The serving benchmark of docs/serving.md: the same ONNX file served by `inferscope serve` (dynamic
# batching on and off) and by python onnxruntime behind a minimal HTTP server (scripts/serving/
# ort_server.py), same machine, same run, same client (`inferscope bench`, KServe v2 binary tensors),
# closed loop at concurrency 1, 4 and 16. Prints a markdown table; JSON per run in target/bench/.
#
#   scripts/serving/compare.sh [seconds=20] [model=models/resnet50-baseline.onnx]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SECONDS_EACH="${1:-20}"
MODEL_FILE="${2:-models/resnet50-baseline.onnx}"
THREADS="${BENCH_THREADS:-2}"
BIN="${INFERSCOPE_BIN:-$ROOT/target/release/inferscope}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.tools/ort/onnxruntime/capi/libonnxruntime.so.1.32.0}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"
P_BATCH=3921 P_NOBATCH=3922 P_ORT=3923
MODELS_DIR="$(dirname "$MODEL_FILE")"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN" serve --addr "127.0.0.1:$P_BATCH" --models-dir "$MODELS_DIR" --threads "$THREADS" \
  --max-batch-size 8 --max-queue-delay-us 2000 --queue-capacity 256 --grpc-addr off 2> "$OUT/serve-batch.log" & pids+=($!)
"$BIN" serve --addr "127.0.0.1:$P_NOBATCH" --models-dir "$MODELS_DIR" --threads "$THREADS" \
  --max-batch-size 1 --queue-capacity 256 --grpc-addr off 2> "$OUT/serve-nobatch.log" & pids+=($!)
PYTHONPATH="$ROOT/.tools/ort" python3 scripts/serving/ort_server.py --model "$MODEL_FILE" \
  --port "$P_ORT" --threads "$THREADS" > "$OUT/ort-server.log" 2>&1 & pids+=($!)
for port in $P_BATCH $P_NOBATCH $P_ORT; do
  for _ in $(seq 150); do curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.2; done
done

declare -A NAMES=([$P_BATCH]="inferscope, batching ≤8/2 ms" [$P_NOBATCH]="inferscope, no batching" [$P_ORT]="python onnxruntime + http.server")
for c in 1 4 16; do
  for port in $P_BATCH $P_NOBATCH $P_ORT; do
    "$BIN" bench --url "http://127.0.0.1:$port" --concurrency "$c" --duration "$SECONDS_EACH" --warmup 3 \
      --label "${NAMES[$port]}" --json "$OUT/c$c-$port.json" >/dev/null
  done
done

python3 - "$OUT" "$P_BATCH" "$P_NOBATCH" "$P_ORT" <<'PY'
import json, sys
out, ports = sys.argv[1], sys.argv[2:]
print("| server | concurrency | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for c in (1, 4, 16):
    for p in ports:
        s = json.load(open(f"{out}/c{c}-{p}.json"))
        l = s["latency_ms"]
        print(f"| {s['label']} | {c} | {s['throughput_rps']:.2f} | {l['p50']:.0f} | {l['p90']:.0f} | "
              f"{l['p99']:.0f} | {l['p999']:.0f} | {sum(s['errors'].values())} |")
PY
for port in $P_BATCH; do
  curl -s "http://127.0.0.1:$port/metrics" | grep -E '^inferscope_batch_size_(sum|count)' || true
done
