#!/usr/bin/env bash
# One device call (issue 12, session 2026-11-30b): real INT8 file on the engine + PyTorch, GPU tests,
# then the served path. Run from the repository root; OUT is set by the device tool.
set -uo pipefail
A=$PWD/${CARRY:-.gpu/a}; D=/tmp/gpuall
mkdir -p "$D"; cp "$A"/* "$D"/ 2>/dev/null
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
el "engine"
GPU_DIR=$D VARIANTS=${VARIANTS:-resnet50-int8} SKIP_SERVE=1 SKIP_TORCH=1 SKIP_TESTS=1 ENGINE_TIMEOUT_S=${ENGINE_T:-240} \
  bash scripts/gpu/run.sh 2>&1 | grep -vE "^\s+(layer|conv1|fc)" | tail -60
if [ "${TORCH:-1}" = 1 ]; then
  el "torch"
  timeout 150 env -u LD_LIBRARY_PATH python3 scripts/gpu/torch_ref.py --dir "$D" --out "$OUT" --compile 256 \
    --compile-variants "${VARIANTS:-resnet50-int8}" --budget-s 110 2>&1 | tee "$OUT/torch.log" | tail -20
fi
if [ "${SERVE:-1}" = 1 ]; then
  el "served"
  export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu"
  "$D"/gpu_bench onnx --dir "$D" --models "$D/models" && cp "$D/class-names.json" "$D/models/labels.json"
  "$D"/gpu_bench onnx --dir "$D" --models "$D/models-fp16" --dequantize && cp "$D/class-names.json" "$D/models-fp16/labels.json"
  timeout 200 bash "$A/served.sh" "$D" "$OUT" ${SERVED:-resnet50-int8=$D/models} 2>&1 | tail -60
  [ -n "${SERVED2:-}" ] && SPECS="${SPECS2:-kserve-u8:64}" timeout 100 bash "$A/served.sh" "$D" "$OUT" $SERVED2 2>&1 | tail -30
fi
if [ "${TESTS:-1}" = 1 ] && [ -x "$D/cuda_tests" ]; then
  el "tests"
  timeout 90 "$D"/cuda_tests --test-threads=1 2>&1 | tee "$OUT/tests.log" | tail -14
fi
el "done"
tar -C "$OUT" -czf "$OUT/served.tgz" served 2>/dev/null && rm -rf "$OUT/served"
