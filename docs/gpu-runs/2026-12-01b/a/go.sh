#!/usr/bin/env bash
# gpu13 call a: INT8 engine after (split-K + device-time search) / after with split-K off / before,
# then the GPU tests. From /work/main's root; carried folder .gpu/a; OUT set by the device tool.
set -uo pipefail
exec > >(tee "$OUT/go.log") 2>&1
H=.gpu/a; D=/tmp/g; mkdir -p "$D"
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for f in "$H"/*.xz; do python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$D/$(basename "${f%.xz}")"; done
cp "$H"/ref-resnet50-int8.f32 "$H"/labels.json "$D"/; chmod +x "$D"/gpu_bench* "$D"/cuda_tests 2>/dev/null
{ date -u +%Y-%m-%dT%H:%M:%SZ; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader; nvcc --version | tail -2 | head -1; ls /usr/lib/x86_64-linux-gnu/libcudnn.so.9.* /usr/local/cuda-13.0/targets/x86_64-linux/lib/libcublasLt.so.13.*; uname -r; } 2>&1
run() { # name binary [env]
  local name=$1 bin=$2; shift 2
  el "engine $name"; mkdir -p "$OUT/$name"
  env "$@" timeout 200 "$D/$bin" run --dir "$D" --out "$OUT/$name" --variants resnet50-int8 --batches 1,8,32,256 > "$OUT/$name/engine.log" 2>&1
  grep -E "^(==|correct|u8 input|graph vs|batch|  per step|end to end run_u8|candidates)" "$OUT/$name/engine.log" | cut -c1-400
}
run after gpu_bench
run before gpu_bench-before
run nosplit gpu_bench INFERSCOPE_INT8_SPLITK=0
if [ -x "$D/cuda_tests" ]; then el tests; timeout 150 "$D"/cuda_tests --test-threads=1 > "$OUT/tests.log" 2>&1; tail -22 "$OUT/tests.log"; fi
el done
cd "$OUT" && for n in after before nosplit; do [ -d $n ] && mv $n/gpu_bench.json gpu_bench-$n.json && mv $n/engine.log engine-$n.log && rmdir $n 2>/dev/null; done; ls
