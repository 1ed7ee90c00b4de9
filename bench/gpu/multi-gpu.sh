#!/usr/bin/env bash
# Multi-GPU check (issue 12), on a GPU machine with 2+ GPUs, from the repo root, after packing here:
#   GPU_DIR=.gpu-x2 bash scripts/gpu-pack.sh && tar -cJf .gpu-x2/mods.txz node_modules/<server deps>  (see below)
# 1. `kiln bench --devices 0` vs `--devices 0,1`: ResNet-50 fp16 bs32, one engine per GPU, aggregate throughput.
# 2. `kiln serve` with instance_group KIND_GPU gpus [0,1] (then [0] alone) under load from serve-gpus.js; its
#    /metrics show the batches landing on each GPU.
set -uo pipefail
D=${GPU_DIR:-.gpu-x2}
xz -dc "$D/node.xz" > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
[ -f "$D/mods.txz" ] && tar -xJf "$D/mods.txz" -C "$D"   # the server's dependencies (fastify, grpc, prom-client, ...)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SECS=${SECS:-20}
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader | tee "$OUT/gpus.txt"
python3 bench/gpu/export-resnet.py /tmp/r50.onnx 2> "$OUT/export.err"
K="node $D/build/src/cli/main.js"
$K build --onnx /tmp/r50.onnx --device cuda --fp16 --shapes input:32x3x224x224 --save-engine /tmp/r50.plan 2>&1 | tail -3
SUM='let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log(JSON.stringify({aggregateItemsPerS:+r.aggregate.itemsPerS.toFixed(1),perDevice:r.perDevice.map(p=>({id:p.deviceId,itemsPerS:+p.summary.throughput.itemsPerS.toFixed(1),medianMs:+p.summary.latency.median.toFixed(3),computeMs:+p.summary.compute.median.toFixed(3)}))}))})'
for extra in "" "--streams 2" "--no-data-transfers"; do
  for devs in 0 1 0,1; do
    echo "== kiln bench --devices $devs $extra"
    $K bench --load-engine /tmp/r50.plan --device cuda --devices $devs $extra --duration ${BENCH_SECS:-6} --json 2>/dev/null | tee "$OUT/bench-${devs/,/+}${extra// /}.json" | node -e "$SUM"
  done
done
for gpus in "0,1" "0"; do
  R=/tmp/repo-$gpus; mkdir -p "$R/resnet50/1"; cp /tmp/r50.onnx "$R/resnet50/1/model.onnx"
  cat > "$R/resnet50/config.json" <<CFG
{ "max_batch_size": 32, "precision": "fp16",
  "dynamic_batching": { "preferred_batch_size": [16, 32], "max_queue_delay_microseconds": 2000 },
  "instance_group": [{ "count": 1, "kind": "KIND_GPU", "gpus": [$gpus] }] }
CFG
  $K serve --model-repository "$R" --http-port 8000 --grpc-port -1 --metrics-port 8002 > "$OUT/serve-${gpus/,/+}.log" 2>&1 &
  S=$!
  for i in $(seq 1 240); do curl -sf localhost:8000/v2/models/resnet50/ready > /dev/null && break; sleep 0.5; done
  echo "== kiln serve, gpus [$gpus], 64 clients, ${SECS}s"
  node "$D/build/bench/gpu/serve-gpus.js" 8000 8002 resnet50 input 1x3x224x224 64 "$SECS" | tee "$OUT/serve-${gpus/,/+}.txt"
  kill -INT $S; wait $S
done
