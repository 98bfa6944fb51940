#!/usr/bin/env bash
# 2026-11-30f (docs/gpu.md): the explained path (class activation maps) on the GPU. Run from the checkout root on
# the GPU machine once /tmp/g holds every unpacked file: the four packs, inputs.u8 + maps-*.f32 + cams-*.json
# (`gpu_bench prepare --count 8 --maps 8`), class-names.json, and the binaries gpu_bench (features cuda,ort),
# cuda_tests (`--test cuda`), inferscope and cam_served (server, --features cuda). Writes under $OUT.
# SKIP_TESTS=1 / SKIP_CAM=1 / SKIP_SERVE=1 skip a phase; RUNS: timed pairs at batch 1 (`gpu_bench cam`).
set -uo pipefail
G=/tmp/g
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cusparselt/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
chmod +x $G/gpu_bench $G/cuda_tests $G/inferscope $G/cam_served
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvcc --version 2>/dev/null | tail -2 | head -1
  ls /usr/lib/x86_64-linux-gnu/libcudnn.so.* /usr/local/cuda-13.0/targets/x86_64-linux/lib/libcublasLt.so.* 2>/dev/null | tr '\n' ' '; echo
  uname -r
} > $OUT/env.txt 2>&1
cat $OUT/env.txt
ls -la $G
if [ "${SKIP_TESTS:-0}" != 1 ]; then
echo "== GPU tests"
INFERSCOPE_GPU_DIR=$G timeout 240 $G/cuda_tests --test-threads=1 --nocapture ${TEST_ARGS:-} > $OUT/tests.log 2>&1
echo "tests rc=$?"; grep -E "^test |test result|photo|panicked" $OUT/tests.log | tail -60
fi
if [ "${SKIP_CAM:-0}" != 1 ]; then
echo "== gpu_bench cam"
timeout 200 $G/gpu_bench cam --dir $G --out $OUT --runs ${RUNS:-300} 2>&1 | tee $OUT/cam.log | grep -vE "^photo"
fi
if [ "${SKIP_SERVE:-0}" != 1 ]; then
echo "== serve --backend cuda + cam_served"
$G/gpu_bench onnx --dir $G --models /tmp/gm > /dev/null
cp $G/class-names.json /tmp/gm/labels.json
mkdir -p /tmp/gsite
$G/inferscope serve --backend cuda --models-dir /tmp/gm --site-root /tmp/gsite --addr 127.0.0.1:3000 > $OUT/serve.log 2>&1 &
srv=$!
t0=$(date +%s)
for v in resnet50-baseline resnet50-pruned resnet50-sparse24 resnet50-int8; do
  for i in $(seq 1 400); do curl -sf "http://127.0.0.1:3000/v2/models/$v/ready" >/dev/null && break; sleep 0.5; done
  echo "$v ready after $(( $(date +%s) - t0 )) s"
done
curl -s 127.0.0.1:3000/healthz > $OUT/healthz.json
timeout 150 $G/cam_served --url http://127.0.0.1:3000 --dir $G --count 8 --rounds 5 --out $OUT/cam_served.json 2>&1 | tee $OUT/cam_served.log
echo "cam_served rc=${PIPESTATUS[0]}"
kill $srv; wait $srv 2>/dev/null
tail -3 $OUT/serve.log
fi
