#!/usr/bin/env bash
# One device call (issue 12 item 2, session 2026-11-30d): the 2:4 variant in one engine process twice —
# dense fp16 (`-dense`: the baseline's shapes and kernels) and with its 2:4 1x1 layers on cuSPARSELt
# where the per-layer search finds them faster — then the GPU tests and PyTorch fp16 + CUDA graph on
# the same pack. Run from the repository root with the carried folder (default .gpu/s) holding
# gpu_bench.xz, cuda_tests.xz, resnet50-sparse24.safetensors.xz, inputs.u8.xz, ref-resnet50-sparse24.f32,
# labels.json and run.sh / torch_ref.py copies; OUT is set by the device tool.
set -uo pipefail
A=$PWD/${CARRY:-.gpu/s}; D=/tmp/gpus
mkdir -p "$D"; cp "$A"/* "$D"/ 2>/dev/null
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
ls -l /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt/lib/ > "$OUT/cusparselt.txt" 2>&1
el "engine"
GPU_DIR=$D VARIANTS=${VARIANTS:-resnet50-sparse24} SKIP_SERVE=1 TEST_ARGS="--skip the_f64_reference_agrees_with_onnx_runtime" SKIP_TORCH=1 SKIP_TESTS=${SKIP_TESTS:-0} \
  ENGINE_TIMEOUT_S=${ENGINE_T:-330} ENGINE_ARGS="${ENGINE_ARGS:-}" bash "$A/run.sh" 2>&1 \
  | grep -vE "^\s+(layer[0-9]|conv1|fc)\S* +[0-9.]+ +(graph#|IMPLICIT|GEMM|FFT|WINO|DIRECT)" | tail -120
if [ "${TORCH:-1}" = 1 ]; then
  el "torch"
  timeout "${TORCH_T:-120}" env -u LD_LIBRARY_PATH python3 "$A/torch_ref.py" --dir "$D" --out "$OUT" \
    --budget-s "${TORCH_BUDGET:-90}" 2>&1 | tee "$OUT/torch.log" | tail -12
fi
el "done"
