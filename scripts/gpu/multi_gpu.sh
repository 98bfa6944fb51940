#!/usr/bin/env bash
# Served throughput with replicas on several GPUs / several executors per GPU (issue 13 item 5,
# issue 12's two executors), on the GPU machine: `inferscope serve --backend cuda --gpus G
# --executors-per-gpu E` on one variant, loaded by `inferscope bench` over loopback (binary KServe,
# u8 pixels). Usage: multi_gpu.sh DIR OUT VARIANT=MODELSDIR:G:E ...  (DIR holds inferscope and
# photo.jpg; MODELSDIR the variant's ONNX file and labels.json; G `all` or `0,1`; E executors per GPU).
# SPECS: protocol:concurrency list (default "kserve-u8:64 kserve-u8:256"); DUR/WARM seconds; MAXB;
# MAXCONN the server's --max-connections (default 256: more clients than that get 503); TAG a suffix.
set -uo pipefail
DIR=$1; OUT=$2; shift 2
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$OUT/served" /tmp/gpu-site
for arg in "$@"; do
  v=${arg%%=*}; rest=${arg#*=}; src=${rest%%:*}; rest=${rest#*:}; gpus=${rest%%:*}; per=${rest#*:}
  tag=$v-$(basename "$src")-g${gpus//,/_}-e$per${TAG:-}
  mdir=/tmp/served-$v-$(basename "$src"); rm -rf "$mdir"; mkdir -p "$mdir"
  ln -s "$src/$v.onnx" "$mdir/$v.onnx"; cp "$src/labels.json" "$mdir/"
  t0=$(date +%s.%N)
  "$DIR"/inferscope serve --backend cuda --gpus "$gpus" --executors-per-gpu "$per" --models-dir "$mdir" \
    --site-root /tmp/gpu-site --addr 127.0.0.1:3000 --max-batch-size "${MAXB:-64}" --queue-capacity 2048 \
    --max-connections "${MAXCONN:-256}" --max-queue-delay-us "${DELAY_US:-2000}" > "$OUT/served/serve-$tag.log" 2>&1 &
  srv=$!
  for i in $(seq 1 400); do
    curl -sf "http://127.0.0.1:3000/v2/models/$v/ready" >/dev/null && break
    kill -0 $srv 2>/dev/null || break
    sleep 0.25
  done
  echo "== $tag ready after $(python3 -c "import time;print(round(time.time()-$t0,1))") s"
  curl -s "http://127.0.0.1:3000/v2/models/$v" > "$OUT/served/meta-$tag.json"; head -c 400 "$OUT/served/meta-$tag.json"; echo
  for spec in ${SPECS:-kserve-u8:64 kserve-u8:256}; do
    proto=${spec%%:*}; c=${spec##*:}
    "$DIR"/inferscope bench --url http://127.0.0.1:3000 --model "$v" --protocol "$proto" --concurrency "$c" \
      --duration "${DUR:-8}" --warmup "${WARM:-4}" --photo "$DIR/photo.jpg" --label "$tag-$proto-c$c" \
      --json "$OUT/served/bench-$tag-$proto-c$c.json" > "$OUT/served/bench-$tag-$proto-c$c.log" 2>&1
    grep -iE "img/s|throughput|p50|error" "$OUT/served/bench-$tag-$proto-c$c.log" | head -4
  done
  curl -s http://127.0.0.1:3000/metrics | grep -E "inferscope_batch_size_(sum|count)|inferscope_requests_total" > "$OUT/served/metrics-$tag.txt"
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader >> "$OUT/served/metrics-$tag.txt"
  cat "$OUT/served/metrics-$tag.txt"
  kill $srv; wait $srv 2>/dev/null
done
