#!/usr/bin/env bash
# Device call 2b (2026-11-30c), right after 2a on the same machine: the engine benchmark of the new
# pruned file next to the INT8 file (int8 path, and dequantized in fp16 = the baseline's shapes), then
# served INT8 with more executors and clients (--max-connections raised).
set -uo pipefail
A=$PWD/${CARRY:-.gpu/f}; D=/tmp/gpuall
mkdir -p "$D"; cp "$A"/* "$D"/ 2>/dev/null
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
for f in "$D"/*.xz; do
  [ -e "$f" ] || continue
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}" && rm "$f"
done
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu"
el "engine: pruned + int8"
timeout 260 "$D"/gpu_bench run --dir "$D" --out "$OUT" --variants resnet50-pruned,resnet50-int8 > "$OUT/engine.log" 2>&1
grep -vE "^\s+(layer|conv1|fc)" "$OUT/engine.log" | tail -40
el "served int8"
rm -rf "$D/models"; "$D"/gpu_bench onnx --dir "$D" --models "$D/models" && cp "$D/class-names.json" "$D/models/labels.json"
I=resnet50-int8=$D/models
MAXCONN=1024 TAG=-mc SPECS="kserve-u8:256 kserve-u8:512" bash $A/multi_gpu.sh $D $OUT $I:0:2 $I:0:3 $I:0,1:2
el "done"
tar -C "$OUT" -czf "$OUT/served.tgz" served 2>/dev/null && rm -rf "$OUT/served"
