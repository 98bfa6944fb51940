#!/usr/bin/env bash
# One device call (issues 13.5 and 12, session 2026-11-30c): served throughput with replicas on 1 and 2
# GPUs and 1 or 2 executors per GPU, INT8 (int8 path) and the baseline's shapes (INT8 file dequantized,
# fp16). Run from the repository root; OUT is set by the device tool. PHASES: which runs.
set -uo pipefail
A=$PWD/${CARRY:-.gpu/d}; D=/tmp/gpuall
mkdir -p "$D"; cp "$A"/* "$D"/ 2>/dev/null
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
for f in "$D"/*.xz; do
  [ -e "$f" ] || continue
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}" && rm "$f"
done
chmod +x "$D"/gpu_bench "$D"/inferscope 2>/dev/null
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nvidia-smi topo -m 2>/dev/null | head -4
  ls /usr/lib/x86_64-linux-gnu/libcudnn.so.* /usr/local/cuda-13.0/targets/x86_64-linux/lib/libcublasLt.so.* 2>/dev/null | tr '\n' ' '
  echo; nproc; uname -r; "$D"/inferscope --version
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [ ! -e "$D/models/resnet50-int8.onnx" ]; then
  "$D"/gpu_bench onnx --dir "$D" --models "$D/models" && cp "$D/class-names.json" "$D/models/labels.json"
  "$D"/gpu_bench onnx --dir "$D" --models "$D/models-fp16" --dequantize && cp "$D/class-names.json" "$D/models-fp16/labels.json"
fi
M=$A/multi_gpu.sh
I=resnet50-int8=$D/models; F=resnet50-int8=$D/models-fp16
for p in ${PHASES:-1 2 3 4 5 6 7}; do
  case $p in
    1) el "int8 1 GPU";  SPECS="kserve-u8:64 kserve-u8:256" bash $M $D $OUT $I:0:1 ;;
    2) el "int8 2 GPUs"; SPECS="kserve-u8:64 kserve-u8:256 kserve-u8:512" bash $M $D $OUT $I:0,1:1 ;;
    3) el "fp16 1 GPU";  SPECS="kserve-u8:64 kserve-u8:256" bash $M $D $OUT $F:0:1 ;;
    4) el "fp16 2 GPUs"; SPECS="kserve-u8:64 kserve-u8:256 kserve-u8:512" bash $M $D $OUT $F:0,1:1 ;;
    5) el "int8 1 GPU 2 executors";  SPECS="kserve-u8:64 kserve-u8:256" bash $M $D $OUT $I:0:2 ;;
    6) el "int8 2 GPUs 2 executors"; SPECS="kserve-u8:256 kserve-u8:512" bash $M $D $OUT $I:0,1:2 ;;
    7) el "fp16 1 GPU 2 executors";  SPECS="kserve-u8:256" bash $M $D $OUT $F:0:2 ;;
  esac
done
el "done"
tar -C "$OUT" -czf "$OUT/served.tgz" served 2>/dev/null && rm -rf "$OUT/served"
