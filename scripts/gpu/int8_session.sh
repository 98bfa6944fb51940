#!/usr/bin/env bash
# One device call (issue 12, session 2026-11-30e; PACKS: folder with the INT8 pack, inputs, reference, labels;
# CARRY: folder with gpu_bench.xz, cuda_tests.xz, igemm.cu, igemm_bench.py): the INT8 file on the engine with the wgmma kernels
# (int8 path and dequantized fp16 in one process), PyTorch fp16 + graphs + torch.compile on the same pack,
# igemm_bench per layer shape, the GPU tests. Run from the repository root; OUT is set by the device tool.
set -uo pipefail
A=${PACKS:-.gpu/a}; E=${CARRY:-.gpu/e}; D=/tmp/gpuall
mkdir -p "$D"
cp "$A"/resnet50-int8.safetensors.xz "$A"/inputs.u8.xz "$A"/ref-resnet50-int8.f32 "$A"/labels.json "$A"/class-names.json "$D"/
cp "$E"/gpu_bench.xz "$E"/cuda_tests.xz "$D"/
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
el "engine"
GPU_DIR=$D VARIANTS=resnet50-int8 SKIP_SERVE=1 SKIP_TORCH=1 SKIP_TESTS=1 ENGINE_TIMEOUT_S=${ENGINE_T:-300} \
  bash scripts/gpu/run.sh 2>&1 | grep -vE "^\s+(layer|conv1|fc)" | tail -70
if [ "${TORCH:-1}" = 1 ]; then
  el "torch"
  timeout 200 env -u LD_LIBRARY_PATH python3 scripts/gpu/torch_ref.py --dir "$D" --out "$OUT" --compile 256 \
    --compile-variants resnet50-int8 --budget-s 120 2>&1 | tee "$OUT/torch.log" | tail -12
fi
if [ "${IGEMM:-1}" = 1 ]; then
  el "igemm_bench"
  (cd "$E" && PYTHONUNBUFFERED=1 timeout 120 python3 igemm_bench.py --src igemm.cu --batches 256 \
    --tiles 128x128,128x64,64x64,32x64,wg128x128k64,wg128x256,wg128x64k64,wg64x128,wg64x64 --out "$OUT/igemm.json" 2>&1 \
    | grep -E "^bs.*total|rror" | cut -c1-400)
fi
if [ "${TESTS:-1}" = 1 ]; then
  el "tests"
  timeout 150 "$D"/cuda_tests --test-threads=1 2>&1 | tee "$OUT/tests.log" | tail -16
fi
el "done"
