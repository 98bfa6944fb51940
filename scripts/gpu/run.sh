#!/usr/bin/env bash
# The one script run on the GPU machine (docs/gpu.md). From the repository root, with the carried folder
# (default .gpu) holding what `gpu_bench prepare` wrote plus the binaries, each possibly xz-compressed:
#   gpu_bench            the engine benchmark (cargo build --release --features cuda,ort --example gpu_bench)
#   cuda_tests           optional: the engine's GPU tests (cargo test --release --features cuda --test cuda --no-run)
#   inferscope           optional: the server built with `--features cuda`; then `serve --backend cuda` is
#                        started on the packs and checked over KServe v2 (scripts/gpu/serve_check.py)
#   *.safetensors        fp16 packs of the variants;  ref-*.f32  CPU engine logits;  inputs.u8, labels.json
# Writes env.txt, engine.log, gpu_bench.json, tests.log, torch.log, torch.json under $OUT.
# Environment: GPU_DIR (default .gpu), TORCH_COMPILE (batch sizes for torch.compile, e.g. "1,256"),
# SPARSE_PROBE (batch size of the cuSPARSELt 2:4 probe, 0 = off), VARIANTS (comma list, default all),
# ENGINE_ARGS (extra `gpu_bench run` flags, e.g. --legacy-only), SKIP_TORCH=1 (engine only),
# SKIP_ENGINE=1 (no `gpu_bench run`), SKIP_TESTS=1, TEST_ARGS (extra test-binary flags, e.g. --skip NAME), SKIP_SERVE=1, INT8_CUDNN_PROBE=1 (INT8 again with
# cuDNN's int8 convolutions on the 1x1 layers, into $OUT/cudnn).
set -uo pipefail
DIR="${GPU_DIR:-.gpu}"
OUT="${OUT:-/tmp/gpu-out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1

for f in "$DIR"/*.xz; do
  [ -e "$f" ] || continue
  [ -e "${f%.xz}" ] && [ "${f%.xz}" -nt "$f" ] && continue
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}" \
    || echo "cannot unpack $f"
done
chmod +x "$DIR"/gpu_bench "$DIR"/cuda_tests "$DIR"/inferscope 2>/dev/null

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvcc --version 2>/dev/null | tail -2 | head -1
  ls /usr/lib/x86_64-linux-gnu/libcudnn.so.* /usr/local/cuda-13.0/targets/x86_64-linux/lib/libcublasLt.so.* 2>/dev/null | tr '\n' ' '
  echo
  env -u LD_LIBRARY_PATH python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
  uname -r
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

variants=()
[ -n "${VARIANTS:-}" ] && variants=(--variants "$VARIANTS")
if [ "${SKIP_ENGINE:-0}" != 1 ]; then
echo "== GPU engine"
timeout "${ENGINE_TIMEOUT_S:-400}" "$DIR"/gpu_bench run --dir "$DIR" --out "$OUT" "${variants[@]}" ${ENGINE_ARGS:-} 2>&1 | tee "$OUT/engine.log"
# cuDNN's int8 convolutions (off by default) in a process of their own: a CUDA error that ends the
# context takes only this one.
if [ "${INT8_CUDNN_PROBE:-0}" = 1 ]; then
  echo "== GPU engine, INT8 with cuDNN's int8 convolutions on the 1x1 layers"
  INFERSCOPE_INT8_CUDNN=1 timeout 200 "$DIR"/gpu_bench run --dir "$DIR" --out "$OUT/cudnn" \
    --variants resnet50-int8 ${ENGINE_ARGS:-} 2>&1 | tee "$OUT/engine-int8-cudnn.log" | grep -E "^(==|batch|correct|Error)"
fi
fi

if [ -x "$DIR/cuda_tests" ] && [ "${SKIP_TESTS:-0}" != 1 ]; then
  echo "== GPU engine tests"
  timeout 120 "$DIR"/cuda_tests --test-threads=1 ${TEST_ARGS:-} 2>&1 | tee "$OUT/tests.log" | tail -15
fi

if [ -x "$DIR/inferscope" ] && [ "${SKIP_SERVE:-0}" != 1 ]; then
  echo "== inferscope serve --backend cuda"
  # Only packs travel: write them back as ONNX files, serve them on the GPU, talk KServe v2 to it.
  "$DIR"/gpu_bench onnx --dir "$DIR" --models /tmp/gpu-models
  cp "$DIR"/class-names.json /tmp/gpu-models/labels.json 2>/dev/null
  mkdir -p /tmp/gpu-site
  "$DIR"/inferscope serve --backend cuda --models-dir /tmp/gpu-models --site-root /tmp/gpu-site \
    --addr 127.0.0.1:3000 > "$OUT/serve.log" 2>&1 &
  server=$!
  timeout 240 python3 scripts/gpu/serve_check.py --dir "$DIR" --out "$OUT" 2>&1 | tee "$OUT/serve_check.log"
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
  tail -5 "$OUT/serve.log"
fi

[ "${SKIP_TORCH:-0}" = 1 ] && exit 0
echo "== PyTorch reference"
# PyTorch brings its own cuDNN (newer than the system's): keep the engine's library path away from it.
timeout 300 env -u LD_LIBRARY_PATH python3 scripts/gpu/torch_ref.py --dir "$DIR" --out "$OUT" \
  --compile "${TORCH_COMPILE:-}" --sparse-probe "${SPARSE_PROBE:-0}" --budget-s "${TORCH_BUDGET_S:-150}" \
  2>&1 | tee "$OUT/torch.log"

echo "== summary"
python3 scripts/gpu/table.py "$OUT"
