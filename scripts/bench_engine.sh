#!/usr/bin/env bash
# The engine benchmarks the engine issue asks for, on the default tiny-v3 model, 2 threads,
# each comparison side by side in one process (settings interleaved over 3 runs, medians):
#   1. concurrency 1 vs 16: aggregate generated tokens/s (128-token prompts, 128 new tokens);
#   2. prefix share 0 vs 0.5: prompt tokens/s (prompt-bound: 1 new token), 128- and 512-token
#      prompts.
# Extra arguments go to every `dserve bench` call (e.g. --threads 4).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
scripts/build.sh >/dev/null
model=".cache/models/tiny-v3-seed0"
if [ ! -f "$model/model.safetensors.index.json" ]; then
  build/dserve make-model --preset tiny-v3 --seed 0 --out "$model" >&2
fi
run() { build/dserve bench --model "$model" --threads 2 --runs 3 "$@" 2>/dev/null; }
echo "== concurrency 1 vs 16 =="
run --num-prompts 32 --input-len 128 --output-len 128 --concurrency 1,16 "$@"
for spec in 128:128 512:64; do
  len=${spec%:*} prompts=${spec#*:}
  echo
  echo "== prefix share 0 vs 0.5, ${len}-token prompts =="
  run --num-prompts "$prompts" --input-len "$len" --output-len 1 --concurrency 16 --prefix-share 0,0.5 "$@"
done
