#!/usr/bin/env bash
# gpu13 call c: INT8 engine: after (split-K kernels of their own, device-time search; no PDL), before,
# after without split-K; ncu per-kernel durations inside the batch-1 graph (after, after without
# split-K); PyTorch fp16 + graphs on the same pack; GPU tests. Carried .gpu/c; OUT by the device tool.
set -uo pipefail
exec > >(tee "$OUT/go.log") 2>&1
H=.gpu/c; D=/tmp/g; mkdir -p "$D" "$OUT/j"
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
run after gpu_bench GPU_BENCH_INT8_ONLY=1
run before gpu_bench-before
run base gpu_bench GPU_BENCH_INT8_ONLY=1 INFERSCOPE_INT8_SPLITK=0
run after2 gpu_bench GPU_BENCH_INT8_ONLY=1
for v in after base; do
  el "ncu $v"
  e=(GPU_BENCH_INT8_ONLY=1 GPU_BENCH_NCU_BATCH=1); [ $v = base ] && e+=(INFERSCOPE_INT8_SPLITK=0)
  env "${e[@]}" timeout 150 ncu --profile-from-start off --graph-profiling node --cache-control none --clock-control none \
    --metrics gpu__time_duration.sum --csv "$D/gpu_bench" run --dir "$D" --out /tmp/ncu-$v --variants resnet50-int8 --batches 1 \
    > "$OUT/j/ncu-$v.csv" 2> /tmp/ncu-$v.err; tail -3 /tmp/ncu-$v.err
  python3 - "$OUT/j/ncu-$v.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
if not rows: print("no ncu rows"); sys.exit()
h = rows[0]; rows = rows[1:]
ki, vi, ui = h.index("Kernel Name"), h.index("Metric Value"), h.index("Metric Unit")
d = [(r[ki], float(r[vi].replace(",", "")) * (1e-3 if r[ui] == "nsecond" else 1.0)) for r in rows]
n = len(d) // 3 if len(d) >= 3 else len(d)
print(f"{len(d)} kernel nodes profiled; per replay {n}; sum of durations per replay (us):",
      [round(sum(x[1] for x in d[i*n:(i+1)*n]), 1) for i in range(len(d) // n)])
PY
done
el torch
env -u LD_LIBRARY_PATH timeout 200 python3 scripts/gpu/torch_ref.py --dir "$D" --out "$OUT/j/torch" --batches 1,8,32,256 --budget-s 150 2>&1 | grep -vE "^\s*$" | tail -12
el tests; timeout 150 "$D"/cuda_tests --test-threads=1 > "$OUT/tests.log" 2>&1; tail -4 "$OUT/tests.log"
el done
cd "$OUT/j" && tar czf ../json.tgz . && cd .. && rm -rf j; ls
