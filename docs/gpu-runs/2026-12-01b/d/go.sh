#!/usr/bin/env bash
# gpu13 call d: INT8 engine: before; after (device-time search: spin kernel) twice; the search timing candidates as CUDA graphs,
# with and without split-K; PyTorch fp16 + graphs on the same pack; GPU tests.
# Carried .gpu/d; OUT by the device tool.
set -uo pipefail
exec > >(tee "$OUT/go.log") 2>&1
H=.gpu/d; D=/tmp/g; mkdir -p "$D" "$OUT/j"
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for f in "$H"/*.xz; do python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$D/$(basename "${f%.xz}")"; done
cp "$H"/ref-resnet50-int8.f32 "$H"/labels.json "$D"/; chmod +x "$D"/gpu_bench* "$D"/cuda_tests
{ date -u +%Y-%m-%dT%H:%M:%SZ; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader; uname -r; which ncu; } 2>&1
run() { # name binary [env...]
  local name=$1 bin=$2; shift 2
  el "engine $name"; mkdir -p "$OUT/j/$name"
  env "$@" timeout 200 "$D/$bin" run --dir "$D" --out "$OUT/j/$name" --variants resnet50-int8 --batches 1,8,32,256 > "$OUT/engine-$name.log" 2>&1
  grep -E "^(==|correct|u8 input|graph vs|batch|  per step|end to end run_u8|candidates)|WARN|rror|unavailable" "$OUT/engine-$name.log" | cut -c1-300
}
run before gpu_bench-before
run after gpu_bench GPU_BENCH_INT8_ONLY=1
run graph gpu_bench GPU_BENCH_INT8_ONLY=1 INFERSCOPE_INT8_TIMING=graph
run graphsk gpu_bench GPU_BENCH_INT8_ONLY=1 INFERSCOPE_INT8_TIMING=graph INFERSCOPE_INT8_SPLITK=1
run after2 gpu_bench GPU_BENCH_INT8_ONLY=1
el torch
env -u LD_LIBRARY_PATH timeout 200 python3 scripts/gpu/torch_ref.py --dir "$D" --out "$OUT/j" --batches 1,8,32,256 --budget-s 150 2>&1 | grep -vE "^\s*$" | tail -12
el tests; timeout 150 "$D"/cuda_tests --test-threads=1 > "$OUT/tests.log" 2>&1; tail -4 "$OUT/tests.log"
el done
cd "$OUT/j" && tar czf ../json.tgz . && cd .. && rm -rf j; ls
