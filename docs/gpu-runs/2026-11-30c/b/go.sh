#!/usr/bin/env bash
# Device call 2a (2026-11-30c): GPU tests (the replica test on both GPUs), the new pruned file served.
set -uo pipefail
A=$PWD/${CARRY:-.gpu/e}; D=/tmp/gpuall
mkdir -p "$D"; cp "$A"/* "$D"/ 2>/dev/null
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
for f in "$D"/*.xz; do
  [ -e "$f" ] || continue
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}" && rm "$f"
done
chmod +x "$D"/gpu_bench "$D"/inferscope "$D"/cuda_tests 2>/dev/null
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu"
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader > "$OUT/env.txt"; date -u >> "$OUT/env.txt"
el "tests"
timeout 150 "$D"/cuda_tests --test-threads=1 > "$OUT/tests.log" 2>&1; tail -16 "$OUT/tests.log"
el "served pruned"
"$D"/gpu_bench onnx --dir "$D" --models "$D/models-p" && cp "$D/class-names.json" "$D/models-p/labels.json"
SPECS="kserve-u8:256" bash $A/multi_gpu.sh $D $OUT resnet50-pruned=$D/models-p:0:1 resnet50-pruned=$D/models-p:0,1:1
el "done"
tar -C "$OUT" -czf "$OUT/served.tgz" served 2>/dev/null && rm -rf "$OUT/served"
