#!/usr/bin/env bash
# Second device call of 2026-11-30h (issue 12, end to end from host u8): the same as .gpu/h/go.sh without
# the served part, after the logits-only download and the part-size setting: the INT8 pack on the int8
# path and dequantized in fp16 with the staging study (copy threads × part size × chunk), then the GPU
# tests. From the main checkout's root with the carried folder .gpu/h2; OUT is set by the device tool.
set -uo pipefail
exec > >(tee "$OUT/go.log") 2>&1
H=${CARRY:-.gpu/h2}; D=/tmp/gh2; mkdir -p "$D"
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
cp "$H"/resnet50-int8.safetensors.xz "$H"/inputs.u8.xz "$H"/ref-resnet50-int8.f32 "$H"/labels.json \
  "$H"/class-names.json "$H"/gpu_bench.xz "$H"/cuda_tests.xz "$D"/
el "engine"
GPU_DIR=$D VARIANTS=resnet50-int8 SKIP_SERVE=1 SKIP_TORCH=1 SKIP_TESTS=1 ENGINE_TIMEOUT_S=270 \
  ENGINE_ARGS=--staging-grid bash scripts/gpu/run.sh 2>&1 | grep -vE "^    " | grep -vE "^\s+[0-9]+\.[0-9]+  "
grep -E "^    threads" "$OUT/engine.log"
el "tests"
timeout 160 "$D"/cuda_tests --test-threads=1 2>&1 | tee "$OUT/tests.log" | tail -22
el "done"
