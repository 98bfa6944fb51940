#!/usr/bin/env bash
# One device call (issue 12, session 2026-11-30h: end to end from host u8). From the main checkout's root
# with the carried folder .gpu/h (INT8 pack, inputs, reference, labels, photo, gpu_bench.xz, cuda_tests.xz,
# inferscope.xz): the INT8 pack on the int8 path and dequantized in fp16 with the staging study
# (`gpu_bench run --staging-grid`), the GPU tests, then served INT8 with 4 and 8 copy threads
# (INFERSCOPE_COPY_THREADS), interleaved. OUT is set by the device tool.
set -uo pipefail
exec > >(tee "$OUT/go.log") 2>&1
H=${CARRY:-.gpu/h}; D=/tmp/gh; mkdir -p "$D"
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
cp "$H"/resnet50-int8.safetensors.xz "$H"/inputs.u8.xz "$H"/ref-resnet50-int8.f32 "$H"/labels.json \
  "$H"/class-names.json "$H"/photo.jpg "$H"/gpu_bench.xz "$H"/cuda_tests.xz "$H"/inferscope.xz "$D"/
el "engine"
nproc; lscpu | grep -E "Model name|NUMA node\(s\)|^CPU\(s\)" 
GPU_DIR=$D VARIANTS=resnet50-int8 SKIP_SERVE=1 SKIP_TORCH=1 SKIP_TESTS=1 ENGINE_TIMEOUT_S=270 \
  ENGINE_ARGS=--staging-grid bash scripts/gpu/run.sh 2>&1 | grep -vE "^    " | grep -vE "^\s+[0-9]+\.[0-9]+  " 
grep -E "^    threads|^  (phases|raw|[0-9]+ images)" "$OUT/engine.log"
el "tests"
timeout 160 "$D"/cuda_tests --test-threads=1 2>&1 | tee "$OUT/tests.log" | tail -22
el "served"
if [ -x "$D/inferscope" ]; then
  "$D"/gpu_bench onnx --dir "$D" --models "$D/models" >/dev/null 2>&1
  cp "$D/class-names.json" "$D/models/labels.json"
  for t in 4 8 4 8; do
    [ $(( $(date +%s) - T0 )) -gt 500 ] && { echo "no time left for served threads $t"; continue; }
    echo "#### served, copy threads $t"
    INFERSCOPE_COPY_THREADS=$t MAXB=64 SPECS="kserve-u8:256" DUR=8 WARM=6 timeout 70 \
      bash scripts/gpu/served.sh "$D" "$OUT/srv-t$t-$(date +%s)" resnet50-int8="$D/models" 2>&1 \
      | grep -E "==|img/s|p50|p99|rror|batch_size" | head -12
  done
  (cd "$OUT" && tar czf served.tgz srv-* && rm -rf srv-*)
fi
el "done"
