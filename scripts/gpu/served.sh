#!/usr/bin/env bash
# Served path on the GPU machine: inferscope serve --backend cuda + inferscope bench (binary KServe).
# Usage: served.sh DIR OUT VARIANT=MODELSDIR...  (DIR holds inferscope and photo.jpg; MODELSDIR the ONNX
# file and labels.json). SPECS: protocol:concurrency list; DUR/WARM seconds; MAXB, DELAY_US batching.
set -uo pipefail
DIR=$1; OUT=$2; shift 2
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$OUT/served" /tmp/gpu-site
for arg in "$@"; do
  v=${arg%%=*}; src=${arg##*=}; tag=$v-$(basename "$src")
  mdir=/tmp/served-$tag; rm -rf "$mdir"; mkdir -p "$mdir"
  ln -s "$src/$v.onnx" "$mdir/$v.onnx"; cp "$src/labels.json" "$mdir/"
  t0=$(date +%s.%N)
  "$DIR"/inferscope serve --backend cuda --models-dir "$mdir" --site-root /tmp/gpu-site --addr 127.0.0.1:3000 \
    --max-batch-size "${MAXB:-64}" --queue-capacity 1024 --max-queue-delay-us "${DELAY_US:-2000}" \
    > "$OUT/served/serve-$tag.log" 2>&1 &
  srv=$!
  for i in $(seq 1 240); do
    curl -sf "http://127.0.0.1:3000/v2/models/$v/ready" >/dev/null && break; sleep 0.5
  done
  echo "== $tag ready after $(python3 -c "import time;print(round(time.time()-$t0,1))") s"
  curl -s "http://127.0.0.1:3000/v2/models/$v" | head -c 600; echo
  for spec in ${SPECS:-kserve-u8:64 kserve-u8:256 kserve:64}; do
    proto=${spec%%:*}; c=${spec##*:}
    "$DIR"/inferscope bench --url http://127.0.0.1:3000 --model "$v" --protocol "$proto" --concurrency "$c" \
      --duration "${DUR:-8}" --warmup "${WARM:-12}" --photo "$DIR/photo.jpg" --label "$tag-$proto-c$c" \
      --json "$OUT/served/bench-$tag-$proto-c$c.json" 2>&1 | tee "$OUT/served/bench-$tag-$proto-c$c.log" | tail -12
  done
  curl -s http://127.0.0.1:3000/metrics | grep -E "inferscope_batch_size_(sum|count)|inferscope_requests_total" > "$OUT/served/metrics-$tag.txt"
  cat "$OUT/served/metrics-$tag.txt"
  kill $srv; wait $srv 2>/dev/null
done
