#!/usr/bin/env bash
# The GPU benchmark in one run (on the GPU machine, from the repo root, after scripts/gpu-pack.sh here):
# exports the models and times the PyTorch peers, then builds and times Kiln on the same machine.
set -uo pipefail
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
PYTHONUNBUFFERED=1 python3 bench/gpu/peers.py /tmp/kiln-models 2>"$OUT/peers.err" | tee "$OUT/peers.jsonl"
cd .gpu/build
node bench/gpu/bench.js /tmp/kiln-models/resnet50.onnx resnet50 input:1x3x224x224 input:4x3x224x224 input:32x3x224x224 2>&1 | tee "$OUT/kiln.jsonl"
node bench/gpu/bench.js /tmp/kiln-models/bert.onnx bert-base input_ids:1x128,attention_mask:1x128 input_ids:8x128,attention_mask:8x128 2>&1 | tee -a "$OUT/kiln.jsonl"
