#!/usr/bin/env bash
# Session 9: served INT8 against the server's batching settings (max batch, executors, clients), no new code.
set -uo pipefail
G=/tmp/g9; mkdir -p $G
for f in inferscope.xz resnet50-int8.safetensors.xz gpu_bench.xz; do
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' .gpu/fa/$f $G/${f%.xz}
done
cp .gpu/fa/class-names.json .gpu/fa/photo.jpg $G/
chmod +x $G/inferscope $G/gpu_bench
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; nproc; } > $OUT/env.txt; cat $OUT/env.txt
$G/gpu_bench onnx --dir $G --models $G/models > $OUT/onnx.log 2>&1; ls $G/models
cp $G/class-names.json $G/models/labels.json
export INFERSCOPE_MAX_CONNECTIONS=1100 INFERSCOPE_GPUS=0
for cfg in "64 1 kserve-u8:256" "128 2 kserve-u8:512" "256 2 kserve-u8:512"; do
  set -- $cfg; mb=$1; ex=$2; shift 2
  echo "#### max batch $mb, executors $ex, specs $*"
  mkdir -p $OUT/mb$mb-ex$ex
  INFERSCOPE_EXECUTORS_PER_GPU=$ex MAXB=$mb SPECS="$*" DUR=8 WARM=6 timeout 150 bash scripts/gpu/served.sh $G $OUT/mb$mb-ex$ex resnet50-int8=$G/models 2>&1 | grep -E "==|img/s|p50|p99|throughput|error|batch_size" | head -30
  tail -3 $OUT/mb$mb-ex$ex/served/serve-*.log
done
cd $OUT && tar czf all.tgz mb* && rm -rf mb*
