#!/usr/bin/env bash
# 2026-11-30e: the served path (inferscope serve --backend cuda + inferscope bench, binary KServe, u8) on the
# INT8 file with this session's kernels. Run from the repository root; OUT is set by the device tool.
set -uo pipefail
A=${PACKS:-.gpu/a}; E=${CARRY:-.gpu/e}; D=/tmp/gpuall
mkdir -p "$D"
cp "$A"/resnet50-int8.safetensors.xz "$A"/class-names.json "$A"/photo.jpg "$D"/
cp "$E"/gpu_bench.xz "$E"/inferscope.xz "$D"/
for f in "$D"/*.xz; do python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}"; done
chmod +x "$D"/gpu_bench "$D"/inferscope
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu"
"$D"/gpu_bench onnx --dir "$D" --models "$D/models"
cp "$D/class-names.json" "$D/models/labels.json"
SPECS="${SPECS:-kserve-u8:64 kserve-u8:256}" DUR=8 WARM=8 timeout 200 bash "$A/served.sh" "$D" "$OUT" resnet50-int8="$D/models" 2>&1 | tail -40
tar -C "$OUT" -czf "$OUT/served.tgz" served 2>/dev/null && rm -rf "$OUT/served"
