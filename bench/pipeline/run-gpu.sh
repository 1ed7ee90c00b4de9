#!/usr/bin/env bash
# The GPU pipeline run in one go, on the GPU machine from the repo root, after packing here into $D:
#   GPU_DIR=.gpu-pipe bash scripts/gpu-pack.sh && npx tsc -p .gpu-pipe/tsconfig.json (a config that adds bench/pipeline)
#   and sharp (not in the GPU pack) as $D/sharp.txz, for the CPU side of check-gpu:
#   tar cJf $D/sharp.txz node_modules/sharp node_modules/@img/{sharp-linux-x64,sharp-libvips-linux-x64,colour} \
#     node_modules/detect-libc node_modules/semver
# Makes the images with PIL, runs check-gpu (PASS/FAIL), the torchvision peer and Kiln's end-to-end benchmark.
# CHECK_ONLY=1 N=4 stops after the check (N: benchmark images to make).
set -uo pipefail
D=${D:-.gpu-pipe}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
xz -dc "$D/node.xz" > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
tar xJf "$D/sharp.txz" -C "$D"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
lib=$(find /usr/local/cuda*/ /opt /usr/lib /usr/local/lib -name 'libnvjpeg*.so*' 2>/dev/null | grep -v stub | head -1)
echo "nvjpeg library: ${lib:-none found}"
# torchvision's copy or the toolkit's: under its usual name in a folder of its own, found through KILN_CUDA_PATH
if [ -n "$lib" ]; then mkdir -p /tmp/nvj && ln -sf "$lib" /tmp/nvj/libnvjpeg.so && export KILN_CUDA_PATH=/tmp/nvj; fi
python3 bench/pipeline/make-images.py /tmp/pimg "${N:-512}"
(cd "$D/build" && timeout "${CHECK_S:-60}" node bench/pipeline/check-gpu.js /tmp/pimg/check) 2>&1 | tee "$OUT/check.txt"
[ "${CHECK_ONLY:-0}" = 1 ] && exit 0
PYTHONUNBUFFERED=1 timeout "${PEER_S:-300}" python3 bench/pipeline/torchvision-peer.py /tmp/pimg/bench /tmp/resnet50.onnx "${BATCHES:-32,64,128}" "${REPS:-3}" 2>"$OUT/peer.err" | tee "$OUT/peer.jsonl"
tail -3 "$OUT/peer.err"
(cd "$D/build" && timeout "${KILN_S:-120}" node bench/pipeline/gpu-e2e.js /tmp/resnet50.onnx /tmp/pimg/bench "${BATCHES:-32,64,128}" "${REPS:-3}") 2>&1 | tee "$OUT/kiln.jsonl"
