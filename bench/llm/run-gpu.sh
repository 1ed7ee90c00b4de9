#!/usr/bin/env bash
# The LLM runtime's GPU session, run on the GPU machine from the repository root after
# `GPU_DIR=.gpu-llm bash scripts/gpu-pack.sh` here (node on PATH there). Phases, in the order given:
#   check   bench/llm/check-gpu.ts (PASS/FAIL lines)
#   make    random-weight GPT-2-medium-size and ~1B Llama models under $MODELS (bench-hf.py make)
#   kiln    kiln bench --llm's benchmark (bench-kiln.ts) on both models, fp16, concurrency 1 and 32 (JSON under $OUT)
#   hf      transformers generate() eager and static cache + torch.compile on both models (JSON under $OUT)
set -uo pipefail
B=${GPU_DIR:-.gpu-llm}/build
MODELS=${MODELS:-/tmp/llm-models}
OUT=${OUT:-/tmp/llm-out}
# LLM_MODELS: which models (default both); HF_MODES: eager and/or compile (default both)
LIST=${LLM_MODELS:-gpt2-medium-random llama-1b-random}
MODES=${HF_MODES:-eager compile}
mkdir -p "$OUT"
for phase in "$@"; do
  echo "=== $phase $(date +%T)"
  case $phase in
    check) node "$B/bench/llm/check-gpu.js" test/fixtures/llm 2>&1 | tee "$OUT/check.txt" ;;
    make) python3 bench/llm/bench-hf.py make "$MODELS" ;;
    kiln)
      for m in $LIST; do
        t0=$(date +%s)
        # the in-process path of `kiln bench --llm DIR --device cuda --dtype float16 --concurrency 1,32`
        KILN_LLM_PROFILE=1 node "$B/bench/llm/bench-kiln.js" "$MODELS/$m" float16 1,32 128 128 2>"$OUT/kiln-$m.err" | tee "$OUT/kiln-$m.json"
        echo "kiln $m: $(( $(date +%s) - t0 )) s in all (load, build, bench)"; tail -25 "$OUT/kiln-$m.err"
      done ;;
    hf)
      for m in $LIST; do
        for mode in $MODES; do python3 bench/llm/bench-hf.py time "$MODELS/$m" "--$mode" | tee -a "$OUT/hf.jsonl"; done
      done ;;
  esac
done
echo "=== done $(date +%T)"
