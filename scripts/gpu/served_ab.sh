#!/usr/bin/env bash
# One device call (issue 12, 2026-12-01a): served INT8 with two server binaries side by side,
# interleaved (OLD = before, NEW = after), plus where the host time goes (the new server's
# INFERSCOPE_STAGE_TIMES log, process CPU of server and client from /proc, perf where it exists).
# From the checkout's root with the carried folder $CARRY (inferscope-old.xz, inferscope-new.xz,
# resnet50-int8.onnx.xz, labels.json, photo.jpg). OUT is set by the device tool.
# RUNS: list of "bin:executors:clients:maxb[:instances[:taskset-server/taskset-client]]" (instances
# `-` or absent: the server's default). BINS: the binaries carried (default "old new"). CHECK=1 also
# compares the served logits of a fixed set of random images between the binaries
# (scripts/gpu/served_logits.py). Everything but go.log ends in all.tgz (the tool returns few files).
set -uo pipefail
exec > >(tee "$OUT/go.log") 2>&1
C=${CARRY:-.gpu/c}; D=/tmp/gab; mkdir -p "$D/models" /tmp/gpu-site
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
el "unpack"
for b in ${BINS:-old new}; do [ -x "$D/inferscope-$b" ] || xz -dc "$C/inferscope-$b.xz" > "$D/inferscope-$b"; chmod +x "$D/inferscope-$b"; done
[ -f "$D/models/resnet50-int8.onnx" ] || xz -dc "$C/resnet50-int8.onnx.xz" > "$D/models/resnet50-int8.onnx"
cp "$C/labels.json" "$D/models/"; cp "$C/photo.jpg" "$D/"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; nvidia-smi | head -4;
  ls /usr/lib/x86_64-linux-gnu/libcudnn.so.* /usr/local/cuda-13.0/targets/x86_64-linux/lib/libnvrtc.so.* 2>/dev/null;
  nproc; lscpu | grep -E "Model name|NUMA node\(s\)|^CPU\(s\)"; uname -r; which perf || echo "no perf"; } | tee "$OUT/env.txt"
if [ -f "$C/cuda_tests.xz" ] && [ "${TESTS:-}" = 1 ]; then
  el "GPU tests"
  xz -dc "$C/cuda_tests.xz" > "$D/cuda_tests"; chmod +x "$D/cuda_tests"
  timeout ${TESTS_TIMEOUT_S:-200} "$D/cuda_tests" --test-threads=1 > "$OUT/tests.log" 2>&1; echo "tests rc=$?"
  grep -E "^test |test result" "$OUT/tests.log"
fi
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
WARM=${WARM:-4}; DUR=${DUR:-8}
RUNS=${RUNS:-"old:1:256:64 new:1:256:64 old:2:256:64 new:2:256:64 new:2:256:64 old:2:256:64 new:1:256:64 old:1:256:64"}
n=0
for r in $RUNS; do
  IFS=: read -r bin ex c maxb inst ts <<< "$r"
  [ "$inst" = "-" ] && inst=""
  n=$((n+1)); tag="$n-$bin-x$ex-c$c-b$maxb${inst:+-i$inst}${ts:+-ts}"
  [ $(( $(date +%s) - T0 )) -gt ${BUDGET_S:-500} ] && { echo "no time left for $tag"; continue; }
  sts=""; cts=""; if [ -n "$ts" ]; then sts="taskset -c ${ts%%/*}"; cts="taskset -c ${ts##*/}"; fi
  place=""; [ "$ex" -gt 1 ] && place="--gpus 0 --executors-per-gpu $ex"
  INFERSCOPE_STAGE_TIMES=2 $sts "$D/inferscope-$bin" serve --backend cuda --models-dir "$D/models" --site-root /tmp/gpu-site \
    --addr 127.0.0.1:3000 --max-batch-size "$maxb" --queue-capacity 2048 --max-queue-delay-us 2000 --max-connections 1024 $place ${inst:+--instances $inst} \
    > "$OUT/serve-$tag.log" 2>&1 &
  srv=$!
  for i in $(seq 1 240); do curl -sf http://127.0.0.1:3000/v2/models/resnet50-int8/ready >/dev/null && break; sleep 0.25; done
  el "#### $tag ready"
  $cts "$D/inferscope-${CLIENT:-new}" bench --url http://127.0.0.1:3000 --model resnet50-int8 --protocol kserve-u8 --concurrency "$c" \
    --duration "$DUR" --warmup "$WARM" --photo "$D/photo.jpg" --label "$tag" --json "$OUT/bench-$tag.json" > "$OUT/bench-$tag.log" 2>&1 &
  cli=$!
  sleep "$WARM"; sleep 0.5
  s0=$(ticks $srv); c0=$(ticks $cli); t0=$(date +%s.%N)
  if [ "${PERF:-}" = "$n" ] && command -v perf >/dev/null; then
    perf record -F 499 -g -p $srv -o "$D/perf-$tag.data" -- sleep 4 > /dev/null 2>&1
    perf report -i "$D/perf-$tag.data" --stdio --no-children --sort dso,sym 2>/dev/null | grep -v "^$" | grep -E "^ +[0-9]" | head -60 > "$OUT/perf-$tag.txt"
    perf report -i "$D/perf-$tag.data" --stdio --no-children --sort comm 2>/dev/null | grep -E "^ +[0-9]" | head -30 >> "$OUT/perf-$tag.txt"
  fi
  sleep $(python3 -c "print(max(0.5, $DUR - 1.5 - ($(date +%s.%N) - $t0)))")
  s1=$(ticks $srv); c1=$(ticks $cli); t1=$(date +%s.%N)
  wait $cli
  python3 - "$OUT/bench-$tag.json" <<PY
import json,sys
j=json.load(open(sys.argv[1])); l=j["latency_ms"]; w=$t1-$t0
print(f"RESULT $tag img/s={j['images_per_s']:.0f} p50={l['p50']:.1f} p99={l['p99']:.1f} errors={j['errors']} "
      f"server_cpu={($s1-$s0)/$HZ/w:.2f} cores client_cpu={($c1-$c0)/$HZ/w:.2f} cores")
PY
  curl -s http://127.0.0.1:3000/metrics | grep -E "^inferscope_batch_size_(sum|count)" | tr '\n' ' '; echo
  kill $srv; wait $srv 2>/dev/null
  grep "stage times" "$OUT/serve-$tag.log" | tail -3 | sed 's/^.*stage times/  stage times/'
done
if [ "${CHECK:-}" = 1 ]; then
  for bin in ${BINS:-old new}; do
    "$D/inferscope-$bin" serve --backend cuda --models-dir "$D/models" --site-root /tmp/gpu-site --addr 127.0.0.1:3000 \
      --max-batch-size 64 --queue-capacity 2048 ${CHECK_ARGS:-} > "$OUT/serve-check-$bin.log" 2>&1 &
    srv=$!
    for i in $(seq 1 240); do curl -sf http://127.0.0.1:3000/v2/models/resnet50-int8/ready >/dev/null && break; sleep 0.25; done
    python3 "$C/served_logits.py" http://127.0.0.1:3000 resnet50-int8 "$OUT/logits-$bin.f32" 192 48
    curl -s http://127.0.0.1:3000/metrics | grep -E "^inferscope_batch_size_(sum|count)" | tr '\n' ' '; echo
    kill $srv; wait $srv 2>/dev/null
  done
  set -- ${BINS:-old new}; for b in "$@"; do [ "$b" = "$1" ] || { echo -n "served logits $1 vs $b: "; python3 "$C/served_logits.py" compare "$OUT/logits-$1.f32" "$OUT/logits-$b.f32"; }; done
fi
(cd "$OUT" && tar czf all.tgz --exclude go.log --exclude all.tgz . && find . -type f ! -name go.log ! -name all.tgz ! -name 'tests.log' -delete)
el "done"
