#!/usr/bin/env bash
# gpu13 call b: INT8 engine: after (split-K kernels of their own + PDL), before, after without PDL,
# after without PDL and split-K; GPU tests. From /work/main's root; carried .gpu/b; OUT by the device tool.
set -uo pipefail
exec > >(tee "$OUT/go.log") 2>&1
H=.gpu/b; D=/tmp/g; mkdir -p "$D"
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for f in "$H"/*.xz; do python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$D/$(basename "${f%.xz}")"; done
cp "$H"/ref-resnet50-int8.f32 "$H"/labels.json "$D"/; chmod +x "$D"/gpu_bench* "$D"/cuda_tests
{ date -u +%Y-%m-%dT%H:%M:%SZ; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader; uname -r; } 2>&1
run() { # name binary [env...]
  local name=$1 bin=$2; shift 2
  el "engine $name"; mkdir -p "$OUT/j/$name"
  env "$@" timeout 200 "$D/$bin" run --dir "$D" --out "$OUT/j/$name" --variants resnet50-int8 --batches 1,8,32,256 > "$OUT/engine-$name.log" 2>&1
  grep -E "^(==|correct|u8 input|graph vs|batch|  per step|end to end run_u8|candidates)|WARN|rror" "$OUT/engine-$name.log" | cut -c1-330
}
run after gpu_bench GPU_BENCH_INT8_ONLY=1
if grep -qE "unavailable|NVRTC|igemm differs" "$OUT/engine-after.log"; then echo "KERNEL PROBLEM"; grep -E "unavailable|NVRTC|igemm" "$OUT/engine-after.log" | head -20 | cut -c1-2000; fi
run before gpu_bench-before
run nopdl gpu_bench GPU_BENCH_INT8_ONLY=1 INFERSCOPE_INT8_PDL=0
run base gpu_bench GPU_BENCH_INT8_ONLY=1 INFERSCOPE_INT8_PDL=0 INFERSCOPE_INT8_SPLITK=0
el tests; timeout 150 "$D"/cuda_tests --test-threads=1 > "$OUT/tests.log" 2>&1; tail -5 "$OUT/tests.log"
el done
cd "$OUT/j" && tar czf ../json.tgz */gpu_bench.json && cd .. && rm -rf j; ls
